//! kopek-clock: the wall clock, the one place kopek reads the system time. Everything else
//! asks here (the engine's commit clock, reads "as of now", leases, metrics, seeds), so a test
//! that needs time to pass can be given a clock instead of waiting for one; a tidy test keeps
//! `SystemTime::now` out of every other file. The core reads no clock: time reaches `apply`
//! as an argument.

use kopek_core::Timestamp;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// The wall clock now, as a ledger time (microseconds since the Unix epoch; the epoch itself
/// if the system clock is set before it).
pub fn now() -> Timestamp {
    let micros = since_epoch().as_micros();
    Timestamp::from_unix_micros(i64::try_from(micros).unwrap_or(i64::MAX))
}

/// Nanoseconds since the Unix epoch, for what needs a value that differs from run to run
/// (a random seed, a unique name), not a ledger time.
pub fn unix_nanos() -> u128 {
    since_epoch().as_nanos()
}

/// Seconds since the Unix epoch with their fraction, the unit of Prometheus timestamps.
pub fn unix_seconds() -> f64 {
    since_epoch().as_secs_f64()
}

#[expect(clippy::disallowed_methods, reason = "this is the one place the system clock is read")]
fn since_epoch() -> std::time::Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// A source of the current time: the wall clock in production, a clock a test moves.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Timestamp;

    /// Where to hear that the clock was moved by hand, for a task that sleeps until a time on
    /// this clock (the writer waiting for a hold's expiry): a timer measures how far the wall
    /// clock runs, but not a test's jump. `None` for a clock that only runs.
    fn moves(&self) -> Option<watch::Receiver<Timestamp>> {
        None
    }
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        now()
    }
}

/// The wall clock, shared: what a component reads unless it is given another clock.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// A clock that moves only when told: tests of hold expiry, quotes and leases pass time with
/// `advance` instead of waiting for it. Clones share one time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    micros: Arc<AtomicI64>,
    moved: Arc<watch::Sender<Timestamp>>,
}

impl ManualClock {
    /// A clock standing at `at`.
    pub fn at(at: Timestamp) -> ManualClock {
        ManualClock {
            micros: Arc::new(AtomicI64::new(at.as_unix_micros())),
            moved: Arc::new(watch::Sender::new(at)),
        }
    }

    /// A clock standing at the wall clock's now.
    pub fn starting_now() -> ManualClock {
        ManualClock::at(now())
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let micros = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        let after = self.micros.fetch_add(micros, Ordering::SeqCst).saturating_add(micros);
        self.moved.send_replace(Timestamp::from_unix_micros(after));
    }

    /// Sets the clock to `at`, earlier or later: a system clock stepped back is one of the
    /// things a test of time must try.
    pub fn set(&self, at: Timestamp) {
        self.micros.store(at.as_unix_micros(), Ordering::SeqCst);
        self.moved.send_replace(at);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_micros(self.micros.load(Ordering::SeqCst))
    }

    fn moves(&self) -> Option<watch::Receiver<Timestamp>> {
        Some(self.moved.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_readings_agree() {
        let before = unix_nanos();
        let at = now();
        let seconds = unix_seconds();
        let after = unix_nanos();
        let micros = u128::try_from(at.as_unix_micros()).expect("after 1970");
        assert!(before / 1_000 <= micros && micros <= after / 1_000);
        assert!((seconds - micros as f64 / 1e6).abs() < 1.0);
    }

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let start = Timestamp::from_unix_micros(1_700_000_000_000_000);
        let clock = ManualClock::at(start);
        let shared = clock.clone();
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_millis(1_500));
        assert_eq!(shared.now().as_unix_micros(), start.as_unix_micros() + 1_500_000);
        assert!(SystemClock.now() > start, "the wall clock is past 2023");
        assert!(SystemClock.moves().is_none(), "the wall clock is never moved by hand");
    }

    #[test]
    fn whoever_listens_hears_that_a_manual_clock_moved() {
        let clock = ManualClock::at(Timestamp::from_unix_micros(0));
        let mut moves = clock.moves().expect("a manual clock tells");
        assert!(!moves.has_changed().expect("open"), "nothing moved yet");
        clock.advance(Duration::from_secs(1));
        assert!(moves.has_changed().expect("open"));
        assert_eq!(*moves.borrow_and_update(), Timestamp::from_unix_micros(1_000_000));
        clock.set(Timestamp::from_unix_micros(5));
        assert!(moves.has_changed().expect("open"), "a step back is a move too");
    }
}
