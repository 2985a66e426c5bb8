//! kopek-store-postgres: the scale-out backend. Several kopek processes may write one database
//! at once: each batch locks what it touches with `SELECT ... FOR UPDATE`, always in the same
//! order (holds by id, the user counter, accounts by id, orders by id), so batches of different
//! processes wait for each other instead of deadlocking; the rows of a batch are written with
//! multi-row `UNNEST` statements; one commit per batch. A conflict between processes (two
//! inserting the same idempotency key or account at once, or a rare deadlock) fails the batch
//! with `Conflict` and the engine retries it, when it sees the other's row and replays.
//!
//! Outbox sequences are taken under a lock on one counter row held until commit, so their order
//! is commit order: a tailer reading "after sequence N" never skips a row committed later.

mod decode;
mod port;
mod search;
mod verify;
mod write;

use async_trait::async_trait;
use decode::*;
use kopek_core::{
    Account, AccountId, Currency, Event, FxRate, IdempotencyKey, Keys, Order, OrderId, Outcome,
    Overdraft, Quote, QuoteId, State, Tenant, Timestamp, Transfer, TransferId, Ulid, User, UserId,
};
use kopek_store::codec::metadata_to_json;
use kopek_store::keys::{API_KEY_COLUMNS, AUDIT_COLUMNS};
use kopek_store::rows::{
    ACCOUNT_COLUMNS, Columns, ENTRY_COLUMNS, EVENT_COLUMNS, ORDER_COLUMNS, QUOTE_COLUMNS,
    RATE_COLUMNS, RawAccount, RawEntry, RawOrder, RawQuote, RawRate, RawTransfer, RawUser,
    TRANSFER_COLUMNS, USER_COLUMNS, transfer_fx_columns,
};
use kopek_store::webhooks::{ATTEMPT_COLUMNS, DELIVERY_COLUMNS, WEBHOOK_COLUMNS};
use kopek_store::{
    ApiKey, Attempt, AttemptResult, AuditEntry, AuditQuery, Committed, Consumed, Decide, Delivery,
    Effect, EventBody, FxRevenue, Page, SpendingTotal, Store, StoreError, StoreResult, StoredEntry,
    StoredEvent, TransferQuery, VerifyReport, Watermark, Webhook,
};
pub use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::time::Duration;
use write::*;

const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_ledger.sql"),
    include_str!("../migrations/0002_relay.sql"),
    include_str!("../migrations/0003_consumers.sql"),
    include_str!("../migrations/0004_webhooks.sql"),
    include_str!("../migrations/0005_security.sql"),
    include_str!("../migrations/0006_tracing.sql"),
    include_str!("../migrations/0007_fx.sql"),
    include_str!("../migrations/0008_tenant_ids.sql"),
    include_str!("../migrations/0009_event_records.sql"),
    include_str!("../migrations/0010_search.sql"),
];
/// Connections per process: the writer uses one at a time; reads use the rest.
const POOL_CONNECTIONS_MAX: u32 = 16;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Tries at migrating when processes starting together collide on the first one.
const MIGRATE_ATTEMPTS: u64 = 5;

#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

fn sql_error(error: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(database) = &error
        && let Some(code) = database.code()
        // unique_violation, serialization_failure, deadlock_detected: another process got
        // there first; the batch is retried and sees its rows.
        && matches!(code.as_ref(), "23505" | "40001" | "40P01")
    {
        return StoreError::Conflict(format!("postgres: {error}"));
    }
    StoreError::Unavailable(format!("postgres: {error}"))
}

fn corrupt(message: String) -> StoreError {
    StoreError::Corrupt(message)
}

impl PostgresStore {
    /// Connects and applies pending migrations; a database that is down now fails the start
    /// (later, the pool reconnects on its own).
    pub async fn connect(url: &str) -> StoreResult<PostgresStore> {
        let store = PostgresStore::open(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects without touching the schema: for `kopek migrate` (which reports what it
    /// applies) and `kopek verify` (which must not create a ledger where there was none).
    pub async fn open(url: &str) -> StoreResult<PostgresStore> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|error| StoreError::Unavailable(format!("database URL: {error}")))?
            .application_name("kopek");
        let pool = PgPoolOptions::new()
            .max_connections(POOL_CONNECTIONS_MAX)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(sql_error)?;
        Ok(PostgresStore { pool })
    }

    /// Applies pending migrations under a lock, so processes starting together are safe.
    pub async fn migrate(&self) -> StoreResult<Vec<usize>> {
        // Two processes creating the bookkeeping table at once may both pass `IF NOT EXISTS`,
        // and one then fails on a unique index: the table exists by then, so a retry goes on.
        let mut attempt = 0;
        loop {
            match self.migrate_once().await {
                Err(StoreError::Conflict(_)) if attempt < MIGRATE_ATTEMPTS => attempt += 1,
                result => return result,
            }
            tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
        }
    }

    async fn migrate_once(&self) -> StoreResult<Vec<usize>> {
        let mut db_transaction = self.pool.begin().await.map_err(sql_error)?;
        // "relation already exists, skipping" is not worth an operator's look. Set here, not
        // as a startup option, which connection poolers such as PgBouncer refuse.
        sqlx::query("SET LOCAL client_min_messages = warning")
            .execute(&mut *db_transaction)
            .await
            .map_err(sql_error)?;
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)")
            .execute(&mut *db_transaction)
            .await
            .map_err(sql_error)?;
        // A table lock, not an advisory lock: portable to CockroachDB and YugabyteDB.
        sqlx::query("LOCK TABLE schema_migrations IN EXCLUSIVE MODE")
            .execute(&mut *db_transaction)
            .await
            .map_err(sql_error)?;
        let current: Option<i32> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
            .fetch_one(&mut *db_transaction)
            .await
            .map_err(sql_error)?;
        let current = usize::try_from(current.unwrap_or(0)).unwrap_or(0);
        if current > MIGRATIONS.len() {
            return Err(corrupt(format!(
                "the database has schema version {current}, newer than this kopek knows ({})",
                MIGRATIONS.len()
            )));
        }
        let mut applied = Vec::new();
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
            sqlx::raw_sql(sql).execute(&mut *db_transaction).await.map_err(sql_error)?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(i32::try_from(index + 1).unwrap_or(i32::MAX))
                .bind(kopek_core::Timestamp::EPOCH.as_unix_micros())
                .execute(&mut *db_transaction)
                .await
                .map_err(sql_error)?;
            applied.push(index + 1);
        }
        db_transaction.commit().await.map_err(sql_error)?;
        Ok(applied)
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Runs one administrative statement (such as `CREATE DATABASE`) outside a transaction. For
/// operators' tools and tests, never for ledger writes.
pub async fn execute(pool: &PgPool, statement: &str) -> StoreResult<()> {
    sqlx::raw_sql(statement).execute(pool).await.map_err(sql_error)?;
    Ok(())
}

#[cfg(test)]
mod tests;
