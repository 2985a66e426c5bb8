//! kopek-testkit: what the tests, `kopek bench`, the simulator and the examples share, so each
//! is written once:
//!
//! - `random`: the seeded generator (SplitMix64) that makes a workload repeatable from its
//!   seed;
//! - `startup`: the lines `kopek serve` prints when it is listening (the start-up contract
//!   scripts and tests read the bound addresses from), written and read by the same code;
//! - `fixtures`: the kopek.v1 requests tests and examples build (an account, a transfer, a
//!   deposit);
//! - `process`: a `kopek serve` on random ports, started, stopped and killed;
//! - `scrape`: a `/metrics` page read into its series.

pub mod fixtures;
pub mod process;
pub mod random;
pub mod scrape;
pub mod startup;

pub use random::SplitMix;
pub use scrape::Scrape;
pub use startup::Listeners;
