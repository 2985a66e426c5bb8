//! The relay: publishes every outbox event, in sequence order, to one broker, and moves the
//! sink's durable cursor only after the broker confirmed. A crash anywhere re-publishes at
//! most the unconfirmed tail; the event id lets the broker and consumers drop the repeats.
//!
//! One relay per sink at a time: it holds a lease in the store, renewed while it runs and
//! released when it stops; a relay that finds the lease taken stands by and takes over when
//! the lease lapses (the holder crashed). A broker outage only delays publishing: the relay
//! retries with exponential backoff and jitter while the API keeps committing, and catches up
//! from its cursor when the broker returns.

use crate::broker::Broker;
use crate::sink::Sink;
use kopek_core::Timestamp;
use kopek_events::Feed;
use kopek_events::relay_status::{RelayMonitor, RelayState, RelayStatus};
use kopek_store::{Store, StoredEvent};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a lease lasts without renewal: a crashed relay's successor waits this long.
const LEASE: Duration = Duration::from_secs(15);
/// How often the holder renews its lease (and a standby relay looks again).
pub(crate) const RENEW_EVERY: Duration = Duration::from_secs(3);
/// Events published per batch at most (one cursor write per batch).
const BATCH_EVENTS: usize = 1_000;
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Starts relaying to `broker`. `holder` names this process in the lease: processes that
/// cannot run side by side (the embedded store) may use a fixed name, so a restart resumes
/// at once instead of waiting for its own old lease to lapse.
pub fn start(
    store: Arc<dyn Store>,
    feed: Feed,
    broker: &Broker,
    holder: String,
    shutdown: CancellationToken,
) -> (RelayMonitor, JoinHandle<()>) {
    let sink_name = broker.sink_name();
    let (status, receiver) = watch::channel(RelayStatus {
        sink: sink_name.clone(),
        broker: broker.describe(),
        state: RelayState::Starting,
        cursor: 0,
        published: 0,
        failures: 0,
        waiting_since: None,
    });
    let relay = Relay {
        store,
        feed: feed.clone(),
        sink: broker.sink(),
        sink_name,
        holder,
        status,
        shutdown,
    };
    let handle = tokio::spawn(relay.run());
    (RelayMonitor::new(receiver, feed), handle)
}

enum Exit {
    Shutdown,
    LostLease,
}

struct Relay {
    store: Arc<dyn Store>,
    feed: Feed,
    sink: Box<dyn Sink>,
    sink_name: String,
    holder: String,
    status: watch::Sender<RelayStatus>,
    shutdown: CancellationToken,
}

impl Relay {
    async fn run(mut self) {
        loop {
            let Some(cursor) = self.claim().await else { break };
            tracing::info!(sink = %self.sink_name, cursor, "relay holds the lease; publishing");
            match self.relay_from(cursor).await {
                Exit::Shutdown => break,
                Exit::LostLease => {
                    tracing::warn!(sink = %self.sink_name, "relay lost its lease to another process");
                }
            }
        }
        // Hand over at once rather than after the lease lapses.
        let cursor = self.status.borrow().cursor;
        let released = self
            .store
            .relay_advance(&self.sink_name, &self.holder, cursor, Timestamp::from_unix_micros(0))
            .await;
        if let Err(error) = released {
            tracing::warn!(%error, "relay could not release its lease; it lapses on its own");
        }
        self.status.send_modify(|status| status.state = RelayState::Stopped);
    }

    /// Waits for the lease; `None` on shutdown.
    async fn claim(&mut self) -> Option<u64> {
        loop {
            let now = kopek_store::wall_clock();
            match self.store.relay_claim(&self.sink_name, &self.holder, now, lease_end(now)).await {
                Ok(Some(cursor)) => {
                    self.status.send_modify(|status| {
                        status.state = RelayState::Publishing;
                        status.cursor = cursor;
                    });
                    return Some(cursor);
                }
                Ok(None) => {
                    let cursor = self.store.relay_cursors().await.ok().and_then(|cursors| {
                        cursors.into_iter().find(|(sink, _)| *sink == self.sink_name)
                    });
                    self.status.send_modify(|status| {
                        status.state = RelayState::Standby;
                        if let Some((_, cursor)) = cursor {
                            status.cursor = cursor;
                        }
                    });
                }
                Err(error) => tracing::warn!(%error, "relay could not claim its lease; retrying"),
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return None,
                () = tokio::time::sleep(RENEW_EVERY) => {}
            }
        }
    }

    async fn relay_from(&mut self, mut cursor: u64) -> Exit {
        let mut events = self.feed.subscribe_after(cursor);
        let mut renew = tokio::time::interval(RENEW_EVERY);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renew.tick().await;
        loop {
            let first = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return Exit::Shutdown,
                event = events.recv() => match event {
                    Some(event) => event,
                    // The feed stopped: the process is shutting down.
                    None => return Exit::Shutdown,
                },
                _ = renew.tick() => match self.advance(cursor).await {
                    Some(true) => continue,
                    Some(false) => return Exit::LostLease,
                    None => return Exit::Shutdown,
                },
            };
            let mut batch = vec![first];
            while batch.len() < BATCH_EVENTS {
                match events.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(_) => break,
                }
            }
            self.status.send_modify(|status| status.waiting_since = Some(batch[0].at));
            if let Some(exit) = self.publish(&batch, cursor, &mut renew).await {
                return exit;
            }
            cursor = batch.last().map_or(cursor, |event| event.sequence);
            match self.advance(cursor).await {
                Some(true) => {}
                Some(false) => return Exit::LostLease,
                None => return Exit::Shutdown,
            }
            self.status.send_modify(|status| {
                status.state = RelayState::Publishing;
                status.cursor = cursor;
                status.published += batch.len() as u64;
                status.waiting_since = None;
            });
        }
    }

    /// Publishes `batch` until the broker confirms it, renewing the lease meanwhile.
    async fn publish(
        &mut self,
        batch: &[Arc<StoredEvent>],
        cursor: u64,
        renew: &mut tokio::time::Interval,
    ) -> Option<Exit> {
        let mut backoff = BACKOFF_FIRST;
        loop {
            // Renew the lease while an attempt runs: a slow broker must not let it lapse and
            // a second relay publish beside this one.
            let attempt = {
                let publish = self.sink.publish(batch);
                tokio::pin!(publish);
                loop {
                    tokio::select! {
                        result = &mut publish => break result,
                        _ = renew.tick() => {
                            let held = advance_cursor(
                                self.store.as_ref(),
                                &self.sink_name,
                                &self.holder,
                                &self.shutdown,
                                cursor,
                            )
                            .await;
                            match held {
                                Some(true) => {}
                                Some(false) => return Some(Exit::LostLease),
                                None => return Some(Exit::Shutdown),
                            }
                        }
                    }
                }
            };
            let error = match attempt {
                Ok(()) => {
                    if matches!(self.status.borrow().state, RelayState::Down(_)) {
                        tracing::info!(sink = %self.sink_name, "broker is back; relay catching up");
                    }
                    return None;
                }
                Err(error) => error,
            };
            let first_failure = !matches!(self.status.borrow().state, RelayState::Down(_));
            if first_failure {
                tracing::warn!(sink = %self.sink_name, %error, "broker unavailable; the outbox keeps the events and the relay retries");
            } else {
                tracing::debug!(sink = %self.sink_name, %error, "broker still unavailable");
            }
            self.status.send_modify(|status| {
                status.state = RelayState::Down(error.to_string());
                status.failures += 1;
            });
            tokio::select! {
                () = self.shutdown.cancelled() => return Some(Exit::Shutdown),
                () = tokio::time::sleep(jittered(backoff)) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
            // Keep the lease while the broker is away; `tick` is ready once it is due.
            let due = tokio::time::timeout(Duration::ZERO, renew.tick()).await.is_ok();
            if due {
                match self.advance(cursor).await {
                    Some(true) => {}
                    Some(false) => return Some(Exit::LostLease),
                    None => return Some(Exit::Shutdown),
                }
            }
        }
    }

    async fn advance(&self, cursor: u64) -> Option<bool> {
        advance_cursor(self.store.as_ref(), &self.sink_name, &self.holder, &self.shutdown, cursor)
            .await
    }
}

/// Moves the cursor and renews the lease, retrying while the store is unavailable.
/// `Some(false)`: the lease is lost; `None`: shutdown.
async fn advance_cursor(
    store: &dyn Store,
    sink: &str,
    holder: &str,
    shutdown: &CancellationToken,
    cursor: u64,
) -> Option<bool> {
    let mut backoff = BACKOFF_FIRST;
    loop {
        let now = kopek_store::wall_clock();
        match store.relay_advance(sink, holder, cursor, lease_end(now)).await {
            Ok(held) => return Some(held),
            Err(error) => {
                tracing::warn!(%error, "relay could not save its cursor; retrying");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(jittered(backoff)) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

pub(crate) fn lease_end(now: Timestamp) -> Timestamp {
    let lease = i64::try_from(LEASE.as_micros()).unwrap_or(i64::MAX);
    Timestamp::from_unix_micros(now.as_unix_micros().saturating_add(lease))
}

/// Between half and all of `delay`, so relays that failed together do not retry together.
pub(crate) fn jittered(delay: Duration) -> Duration {
    let random = (uuid::Uuid::new_v4().as_u128() % 1_000) as u32;
    delay / 2 + delay / 2 * random / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_between_half_and_the_whole_delay() {
        for _ in 0..1_000 {
            let delay = jittered(Duration::from_secs(4));
            assert!(
                delay >= Duration::from_secs(2) && delay <= Duration::from_secs(4),
                "{delay:?}"
            );
        }
    }
}
