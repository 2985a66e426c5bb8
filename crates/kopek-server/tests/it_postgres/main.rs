//! The integration tests that exercise the store, run again with every server on PostgreSQL:
//! the same files as `it`, with `ON_POSTGRES` set. Each server gets a database of its own on
//! the server of KOPEK_TEST_DATABASE_URL. Without that variable this binary is built empty
//! but for one test that says so (and fails in CI, where PostgreSQL must be tested).

#[cfg(kopek_postgres_tests)]
#[path = "../it/export.rs"]
mod export;
#[cfg(kopek_postgres_tests)]
#[path = "../it/http.rs"]
mod http;
#[cfg(kopek_postgres_tests)]
#[path = "../it/ledger.rs"]
mod ledger;
#[cfg(kopek_postgres_tests)]
#[path = "../it/payment.rs"]
mod payment;
#[cfg(kopek_postgres_tests)]
#[path = "../it/search.rs"]
mod search;
#[cfg(kopek_postgres_tests)]
#[path = "../it/stream.rs"]
mod stream;
// Shared with `it`, which uses all of it.
#[cfg(kopek_postgres_tests)]
#[allow(dead_code)]
#[path = "../it/support.rs"]
mod support;
#[cfg(kopek_postgres_tests)]
#[path = "../it/transactions.rs"]
mod transactions;

#[cfg(kopek_postgres_tests)]
pub const ON_POSTGRES: bool = true;

#[cfg(not(kopek_postgres_tests))]
#[test]
fn postgres_integration_tests_are_skipped_without_a_database() {
    assert!(
        std::env::var("CI").is_err(),
        "CI must set KOPEK_TEST_DATABASE_URL (at build time) for the PostgreSQL integration tests"
    );
    eprintln!(
        "SKIPPED: KOPEK_TEST_DATABASE_URL was not set when the tests were built; the integration \
         tests do not run on PostgreSQL"
    );
}
