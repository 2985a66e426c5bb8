//! The engine's sources of time and ids, the only places the write path reads the clock or
//! randomness. Both only move forward. The clock itself is given (`EngineConfig::clock`).

use kopek_core::{Timestamp, Ulid};
use std::sync::Arc;

/// Commit times: the source clock's time (the wall clock, or a test's), but strictly
/// increasing, so every batch has its own instant and a clock step back never reorders
/// commits.
#[derive(Debug)]
pub struct CommitClock {
    source: Arc<dyn kopek_clock::Clock>,
    last: Option<Timestamp>,
}

impl CommitClock {
    /// A clock reading `source` whose first tick is after `last` (the newest commit the store
    /// holds).
    pub fn after(source: Arc<dyn kopek_clock::Clock>, last: Option<Timestamp>) -> CommitClock {
        CommitClock { source, last }
    }

    pub fn tick(&mut self) -> Timestamp {
        let wall = self.source.now();
        let next = match self.last {
            Some(last) if wall <= last => Timestamp::from_unix_micros(last.as_unix_micros() + 1),
            _ => wall,
        };
        self.last = Some(next);
        next
    }
}

/// Monotonic ULIDs: the millisecond of `now` and 80 random bits; within one millisecond (or
/// when the clock steps back) the previous id plus one. The random bits are drawn once per
/// millisecond, so a batch of thousands of transfers costs one call to the OS's random source,
/// not one per transfer.
#[derive(Debug, Default)]
pub struct UlidGenerator {
    last: u128,
}

impl UlidGenerator {
    /// A generator whose ids are all larger than `largest` (the largest id the store holds).
    pub fn after(largest: Option<Ulid>) -> UlidGenerator {
        UlidGenerator { last: largest.map_or(0, Ulid::as_u128) }
    }

    pub fn next(&mut self, now: Timestamp) -> Ulid {
        let millis = u64::try_from(now.as_unix_micros() / 1_000).unwrap_or(0);
        let next = if u128::from(millis) > self.last >> 80 {
            Ulid::from_parts(millis, uuid::Uuid::new_v4().as_u128()).as_u128()
        } else {
            self.last + 1
        };
        self.last = next;
        Ulid::from_u128(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_and_ids_only_move_forward() {
        let mut clock = CommitClock::after(kopek_clock::system(), None);
        let mut ids = UlidGenerator::default();
        let mut last_time = clock.tick();
        let mut last_id = ids.next(last_time);
        for _ in 0..10_000 {
            let time = clock.tick();
            let id = ids.next(time);
            assert!(time > last_time);
            assert!(id > last_id);
            assert_eq!(id.to_string().len(), 26);
            (last_time, last_id) = (time, id);
        }
        // Within one millisecond ids count up from one random draw.
        let instant = Timestamp::from_unix_micros(last_time.as_unix_micros() + 5_000);
        let first = ids.next(instant);
        let second = ids.next(instant);
        assert_eq!(second.as_u128(), first.as_u128() + 1);
        assert_eq!(
            first.unix_millis(),
            u64::try_from(instant.as_unix_micros() / 1_000).expect("ms")
        );
        last_id = second;
        let stepped_back = ids.next(Timestamp::EPOCH);
        assert!(stepped_back > last_id, "a clock step back still gives a larger id");

        let far_future = Timestamp::from_unix_micros(last_time.as_unix_micros() + 3_600_000_000);
        let mut restarted = CommitClock::after(kopek_clock::system(), Some(far_future));
        assert!(restarted.tick() > far_future, "a restart continues after the stored commits");
        let mut restarted_ids = UlidGenerator::after(Some(stepped_back));
        assert!(restarted_ids.next(Timestamp::EPOCH) > stepped_back);
    }
}
