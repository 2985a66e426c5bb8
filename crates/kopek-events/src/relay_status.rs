//! What the broker relay is doing, readable by the surfaces that report it (`/readyz`,
//! `/metrics`) without depending on the relay or its broker clients.

use crate::Feed;
use kopek_core::Timestamp;
use std::time::Duration;
use tokio::sync::watch;

/// What a relay is doing, for `/readyz` and `/metrics`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayState {
    /// Claiming the lease.
    Starting,
    /// Holds the lease and the broker confirms.
    Publishing,
    /// Holds the lease; the broker does not answer (the reason). Retrying with backoff.
    Down(String),
    /// Another relay holds the lease; this one takes over if it lapses.
    Standby,
    Stopped,
}

impl RelayState {
    pub fn as_str(&self) -> &'static str {
        match self {
            RelayState::Starting => "starting",
            RelayState::Publishing => "publishing",
            RelayState::Down(_) => "down",
            RelayState::Standby => "standby",
            RelayState::Stopped => "stopped",
        }
    }
}

#[derive(Clone, Debug)]
pub struct RelayStatus {
    pub sink: String,
    pub broker: String,
    pub state: RelayState,
    /// The last sequence the broker confirmed (as last read from the store when on standby).
    pub cursor: u64,
    /// Events this process published and saw confirmed.
    pub published: u64,
    /// Publish attempts that failed.
    pub failures: u64,
    /// The commit time of the oldest event waiting for the broker's confirmation.
    pub waiting_since: Option<Timestamp>,
}

/// A read-only view of a running relay.
#[derive(Clone)]
pub struct RelayMonitor {
    status: watch::Receiver<RelayStatus>,
    feed: Feed,
}

impl RelayMonitor {
    /// A view of the relay that sends its status on `status` and reads from `feed`.
    pub fn new(status: watch::Receiver<RelayStatus>, feed: Feed) -> RelayMonitor {
        RelayMonitor { status, feed }
    }

    pub fn status(&self) -> RelayStatus {
        self.status.borrow().clone()
    }

    /// Committed events the broker has not confirmed yet.
    pub fn lag_events(&self) -> u64 {
        self.feed.published().saturating_sub(self.status.borrow().cursor)
    }

    /// How long the oldest unconfirmed event has waited, in seconds (0 when none waits).
    pub fn lag_seconds(&self) -> f64 {
        let waiting_since = self.status.borrow().waiting_since;
        match waiting_since {
            Some(at) if self.lag_events() > 0 => {
                let micros =
                    kopek_store::wall_clock().as_unix_micros().saturating_sub(at.as_unix_micros());
                Duration::from_micros(u64::try_from(micros).unwrap_or(0)).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}
