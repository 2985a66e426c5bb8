//! kopek-clock: the wall clock, the one place kopek reads the system time. Everything else
//! asks here (the engine's commit clock, reads "as of now", leases, metrics, seeds), so a test
//! that needs time to pass can be given a clock instead of waiting for one; a tidy test keeps
//! `SystemTime::now` out of every other file. The core reads no clock: time reaches `apply`
//! as an argument.

use kopek_core::Timestamp;
use std::time::{SystemTime, UNIX_EPOCH};

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

fn since_epoch() -> std::time::Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
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
}
