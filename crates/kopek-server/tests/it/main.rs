//! Integration tests: the real `kopek` binary on random ports with a temp data dir, driven
//! by tonic clients and the CLI.

mod auth;
mod backup;
mod bank;
mod bench;
mod bounds;
mod browser;
mod cli;
mod crash;
mod disk;
mod events;
mod export;
mod fx;
mod health;
mod http;
mod ingest;
mod isolation;
mod ledger;
mod metrics;
mod payment;
mod python;
mod readme;
mod schemathesis;
mod search;
mod security;
mod stream;
mod support;
mod surfaces;
mod sync;
mod tls;
mod traces;
mod transactions;
mod webhooks;

/// This binary runs every server on SQLite; `it_postgres` runs the store-facing modules again
/// on PostgreSQL.
pub const ON_POSTGRES: bool = false;
