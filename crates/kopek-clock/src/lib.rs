//! kopek-clock: the wall clock, the one place kopek reads the system time. Everything else
//! asks here (the engine's commit clock, reads "as of now", leases, metrics, seeds), so a test
//! that needs time to pass can be given a clock instead of waiting for one; a tidy test keeps
//! `SystemTime::now` out of every other file. The core reads no clock: time reaches `apply`
//! as an argument.

use kopek_core::Timestamp;
use std::future::Future;
use std::pin::Pin;
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

    /// Resolves once this clock has reached `at`, for a task that waits for a time on it (the
    /// writer waiting for a hold's expiry). The wall clock waits on a timer, so a caller reads
    /// `now` again when it resolves (the clock may have stepped); a clock moved by hand
    /// resolves when it is moved there.
    fn sleep_until(&self, at: Timestamp) -> Sleep;
}

/// What `Clock::sleep_until` answers.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        now()
    }

    fn sleep_until(&self, at: Timestamp) -> Sleep {
        let left = at.as_unix_micros().saturating_sub(now().as_unix_micros());
        let left = Duration::from_micros(u64::try_from(left).unwrap_or(0));
        Box::pin(tokio::time::sleep(left))
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

    fn sleep_until(&self, at: Timestamp) -> Sleep {
        // Listen first, then look: a move between the two is not missed.
        let mut moves = self.moved.subscribe();
        let clock = self.clone();
        Box::pin(async move {
            while clock.now() < at {
                if moves.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        })
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
    }

    /// A wait on a hand-moved clock ends when the clock is moved to its time, and not before:
    /// not on a move short of it, nor on a step back.
    #[tokio::test]
    async fn a_wait_on_a_manual_clock_ends_when_it_is_moved_there() {
        let clock = ManualClock::at(Timestamp::from_unix_micros(0));
        let mut wait = clock.sleep_until(Timestamp::from_unix_micros(1_000_000));
        let not_yet = Duration::from_millis(20);
        assert!(tokio::time::timeout(not_yet, &mut wait).await.is_err(), "ended unmoved");
        clock.advance(Duration::from_millis(999));
        assert!(tokio::time::timeout(not_yet, &mut wait).await.is_err(), "ended short of it");
        clock.set(Timestamp::from_unix_micros(5));
        assert!(tokio::time::timeout(not_yet, &mut wait).await.is_err(), "ended stepping back");
        clock.set(Timestamp::from_unix_micros(1_000_000));
        tokio::time::timeout(Duration::from_secs(5), &mut wait).await.expect("ended when there");
        let past = clock.sleep_until(Timestamp::from_unix_micros(3));
        tokio::time::timeout(Duration::from_secs(5), past).await.expect("a past time is reached");
    }

    #[tokio::test]
    async fn a_wait_on_the_wall_clock_ends_on_its_timer() {
        let soon = Timestamp::from_unix_micros(now().as_unix_micros() + 30_000);
        tokio::time::timeout(Duration::from_secs(5), SystemClock.sleep_until(soon))
            .await
            .expect("the timer fired");
        assert!(now() >= soon, "not before its time");
    }
}
