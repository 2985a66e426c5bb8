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

mod verify;

use async_trait::async_trait;
use kopek_core::{
    Account, AccountId, Currency, FxRate, IdempotencyKey, Keys, Order, OrderId, Outcome, Overdraft,
    Quote, QuoteId, State, Tenant, Timestamp, Transfer, TransferId, Ulid, User, UserId,
};
use kopek_store::codec::{event_json, metadata_to_json};
use kopek_store::keys::{API_KEY_COLUMNS, AUDIT_COLUMNS};
use kopek_store::rows::{
    ACCOUNT_COLUMNS, Columns, ENTRY_COLUMNS, EVENT_COLUMNS, ORDER_COLUMNS, QUOTE_COLUMNS,
    RATE_COLUMNS, RawAccount, RawEntry, RawOrder, RawQuote, RawRate, RawTransfer, RawUser,
    TRANSFER_COLUMNS, USER_COLUMNS, transfer_fx_columns,
};
use kopek_store::webhooks::{ATTEMPT_COLUMNS, DELIVERY_COLUMNS, WEBHOOK_COLUMNS};
use kopek_store::{
    ApiKey, Attempt, AttemptResult, AuditEntry, AuditQuery, Committed, Consumed, Decide, Delivery,
    Effect, FxRevenue, Page, SpendingTotal, Store, StoreError, StoreResult, StoredEntry,
    StoredEvent, VerifyReport, Watermark, Webhook,
};
pub use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::time::Duration;

const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_ledger.sql"),
    include_str!("../migrations/0002_relay.sql"),
    include_str!("../migrations/0003_consumers.sql"),
    include_str!("../migrations/0004_webhooks.sql"),
    include_str!("../migrations/0005_security.sql"),
    include_str!("../migrations/0006_tracing.sql"),
    include_str!("../migrations/0007_fx.sql"),
    include_str!("../migrations/0008_tenant_ids.sql"),
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

fn account_from(row: &PgRow) -> StoreResult<Account> {
    RawAccount::read(&PgColumns(row))?.decode().map_err(corrupt)
}

fn transfer_from(row: &PgRow) -> StoreResult<Transfer> {
    RawTransfer::read(&PgColumns(row))?.decode().map_err(corrupt)
}

fn entry_from(row: &PgRow) -> StoreResult<StoredEntry> {
    RawEntry::read(&PgColumns(row))?.decode().map_err(corrupt)
}

fn user_from(row: &PgRow) -> StoreResult<User> {
    RawUser::read(&PgColumns(row))?.decode().map_err(corrupt)
}

fn order_from(row: &PgRow) -> StoreResult<Order> {
    RawOrder::read(&PgColumns(row))?.decode().map_err(corrupt)
}

fn webhook_from(row: &PgRow) -> StoreResult<Webhook> {
    Webhook::read(&PgColumns(row))
}

fn api_key_from(row: &PgRow) -> StoreResult<ApiKey> {
    ApiKey::read(&PgColumns(row))
}

fn delivery_from(row: &PgRow) -> StoreResult<Delivery> {
    Delivery::read(&PgColumns(row))?.map_err(corrupt)
}

/// A PostgreSQL row as `kopek_store::rows::Columns`.
struct PgColumns<'a>(&'a PgRow);

impl Columns for PgColumns<'_> {
    type Error = StoreError;

    fn text(&self, index: usize) -> StoreResult<String> {
        self.0.try_get(index).map_err(sql_error)
    }

    fn optional_text(&self, index: usize) -> StoreResult<Option<String>> {
        self.0.try_get(index).map_err(sql_error)
    }

    fn integer(&self, index: usize) -> StoreResult<i64> {
        self.0.try_get(index).map_err(sql_error)
    }

    fn optional_integer(&self, index: usize) -> StoreResult<Option<i64>> {
        self.0.try_get(index).map_err(sql_error)
    }
}

fn event_from(row: &PgRow) -> StoreResult<StoredEvent> {
    let sequence: i64 = row.try_get(0).map_err(sql_error)?;
    let at: i64 = row.try_get(5).map_err(sql_error)?;
    let kind: String = row.try_get(3).map_err(sql_error)?;
    let subject: String = row.try_get(4).map_err(sql_error)?;
    Ok(StoredEvent {
        sequence: u64::try_from(sequence)
            .map_err(|_| corrupt(format!("event sequence {sequence} is negative")))?,
        id: row.try_get(1).map_err(sql_error)?,
        tenant: row.try_get(2).map_err(sql_error)?,
        subject_id: kopek_core::event::subject_name(&kind, &subject).to_owned(),
        kind,
        at: Timestamp::from_unix_micros(at),
        payload: row.try_get(6).map_err(sql_error)?,
        traceparent: row.try_get(7).map_err(sql_error)?,
    })
}

/// Loads and locks the state of a batch, in the global lock order.
async fn load_state(db: &mut Transaction<'_, Postgres>, keys: &Keys) -> StoreResult<State> {
    let mut transfers = BTreeMap::new();
    let hold_ids: Vec<String> = keys.transfer_ids.iter().map(ToString::to_string).collect();
    if !hold_ids.is_empty() {
        let query = format!(
            "SELECT {TRANSFER_COLUMNS} FROM transfers WHERE id = ANY($1) ORDER BY id FOR UPDATE"
        );
        for row in
            sqlx::query(&query).bind(&hold_ids).fetch_all(&mut **db).await.map_err(sql_error)?
        {
            let transfer = transfer_from(&row)?;
            transfers.insert(transfer.id, transfer);
        }
    }
    if !keys.idempotency_keys.is_empty() {
        let (tenants, idempotency_keys): (Vec<String>, Vec<String>) = keys
            .idempotency_keys
            .iter()
            .map(|(tenant, key)| (tenant.to_string(), key.to_string()))
            .unzip();
        let query = format!(
            "SELECT {TRANSFER_COLUMNS} FROM transfers WHERE (tenant, idempotency_key) IN \
             (SELECT * FROM UNNEST($1::text[], $2::text[]))"
        );
        let rows = sqlx::query(&query)
            .bind(&tenants)
            .bind(&idempotency_keys)
            .fetch_all(&mut **db)
            .await
            .map_err(sql_error)?;
        for row in rows {
            let transfer = transfer_from(&row)?;
            transfers.insert(transfer.id, transfer);
        }
    }
    // The other records of every conversion a loaded transfer belongs to.
    let conversions: BTreeSet<String> = transfers
        .values()
        .filter_map(|transfer: &Transfer| transfer.fx.as_ref().map(|fx| fx.quote_id.to_string()))
        .collect();
    if !conversions.is_empty() {
        let quote_ids: Vec<String> = conversions.into_iter().collect();
        let query = format!(
            "SELECT {TRANSFER_COLUMNS} FROM transfers WHERE quote_id = ANY($1) ORDER BY id FOR UPDATE"
        );
        for row in
            sqlx::query(&query).bind(&quote_ids).fetch_all(&mut **db).await.map_err(sql_error)?
        {
            let transfer = transfer_from(&row)?;
            transfers.insert(transfer.id, transfer);
        }
    }
    // Quotes are locked, so two processes cannot both use one.
    let mut quotes = BTreeMap::new();
    if !keys.quotes.is_empty() || !keys.quote_keys.is_empty() {
        let ids: Vec<String> = keys.quotes.iter().map(ToString::to_string).collect();
        let (tenants, quote_keys): (Vec<String>, Vec<String>) = keys
            .quote_keys
            .iter()
            .map(|(tenant, key)| (tenant.to_string(), key.to_string()))
            .unzip();
        let query = format!(
            "SELECT {QUOTE_COLUMNS} FROM fx_quotes WHERE id = ANY($1) OR (tenant, idempotency_key) IN \
             (SELECT * FROM UNNEST($2::text[], $3::text[])) ORDER BY id FOR UPDATE"
        );
        let rows = sqlx::query(&query)
            .bind(&ids)
            .bind(&tenants)
            .bind(&quote_keys)
            .fetch_all(&mut **db)
            .await
            .map_err(sql_error)?;
        for row in rows {
            let quote = RawQuote::read(&PgColumns(&row))?.decode().map_err(corrupt)?;
            quotes.insert(quote.id, quote);
        }
    }
    let mut account_ids: BTreeSet<AccountId> = keys.accounts.clone();
    for quote in quotes.values() {
        account_ids.extend(Keys::quote_accounts(quote));
    }
    for transfer in transfers.values() {
        account_ids.extend(transfer.debit_account.iter().cloned());
        account_ids.extend(transfer.credit_account.iter().cloned());
    }
    let mut last_user_number = 0;
    if !keys.allocated_users.is_empty() {
        let value: i64 =
            sqlx::query_scalar("SELECT value FROM counters WHERE name = 'user_number' FOR UPDATE")
                .fetch_one(&mut **db)
                .await
                .map_err(sql_error)?;
        last_user_number =
            u64::try_from(value).map_err(|_| corrupt("negative user counter".to_owned()))?;
        for (offset, (tenant, currency)) in keys.allocated_users.iter().enumerate() {
            account_ids.insert(
                UserId::from_number(last_user_number + 1 + offset as u64)
                    .in_tenant(tenant)
                    .account(*currency),
            );
        }
    }
    let ids: Vec<String> = account_ids.iter().map(ToString::to_string).collect();
    let query =
        format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE");
    let accounts = sqlx::query(&query)
        .bind(&ids)
        .fetch_all(&mut **db)
        .await
        .map_err(sql_error)?
        .iter()
        .map(account_from)
        .collect::<StoreResult<Vec<_>>>()?;
    let mut state = State::new(accounts, transfers.into_values());
    state.last_user_number = last_user_number;
    state.quotes = quotes;
    for (tenant, base, quote) in &keys.rate_pairs {
        let query = format!(
            "SELECT {RATE_COLUMNS} FROM fx_rates WHERE tenant = $1 AND base = $2 AND quote = $3 \
             ORDER BY valid_from DESC LIMIT 1"
        );
        let row = sqlx::query(&query)
            .bind(tenant.as_str())
            .bind(base.code())
            .bind(quote.code())
            .fetch_optional(&mut **db)
            .await
            .map_err(sql_error)?;
        if let Some(row) = row {
            let rate = RawRate::read(&PgColumns(&row))?.decode().map_err(corrupt)?;
            state.rates.insert((tenant.clone(), *base, *quote), rate);
        }
    }
    if !keys.users.is_empty() {
        let ids: Vec<String> = keys.users.iter().map(ToString::to_string).collect();
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = ANY($1)");
        for row in sqlx::query(&sql).bind(&ids).fetch_all(&mut **db).await.map_err(sql_error)? {
            let user = user_from(&row)?;
            state.users.insert(user.id.clone(), user);
        }
    }
    if !keys.orders.is_empty() {
        let ids: Vec<String> = keys.orders.iter().map(ToString::to_string).collect();
        let query =
            format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ANY($1) ORDER BY id FOR UPDATE");
        for row in sqlx::query(&query).bind(&ids).fetch_all(&mut **db).await.map_err(sql_error)? {
            let order = order_from(&row)?;
            state.orders.insert(order.id.clone(), order);
        }
    }
    Ok(state)
}

fn overdraft_value(overdraft: Overdraft) -> Option<i64> {
    match overdraft {
        Overdraft::Limited(limit) => Some(limit),
        Overdraft::Unbounded => None,
    }
}

async fn insert_accounts(
    db: &mut Transaction<'_, Postgres>,
    accounts: &[Account],
) -> StoreResult<()> {
    if accounts.is_empty() {
        return Ok(());
    }
    let column = |f: &dyn Fn(&Account) -> String| accounts.iter().map(f).collect::<Vec<String>>();
    let numbers = |f: &dyn Fn(&Account) -> i64| accounts.iter().map(f).collect::<Vec<i64>>();
    sqlx::query(
        "INSERT INTO accounts (id, currency, owner, kind, overdraft_limit, status, metadata, posted, pending_out, \
         pending_in, created_at, updated_at, tenant) SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
         $5::bigint[], $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], \
         $13::text[])",
    )
    .bind(column(&|a| a.id.to_string()))
    .bind(column(&|a| a.currency.code().to_owned()))
    .bind(accounts.iter().map(|a| a.owner.clone()).collect::<Vec<Option<String>>>())
    .bind(column(&|a| a.kind.as_str().to_owned()))
    .bind(accounts.iter().map(|a| overdraft_value(a.overdraft)).collect::<Vec<Option<i64>>>())
    .bind(column(&|a| a.status.as_str().to_owned()))
    .bind(column(&|a| metadata_to_json(&a.metadata)))
    .bind(numbers(&|a| a.balance.posted))
    .bind(numbers(&|a| a.balance.pending_out))
    .bind(numbers(&|a| a.balance.pending_in))
    .bind(numbers(&|a| a.created_at.as_unix_micros()))
    .bind(numbers(&|a| a.updated_at.as_unix_micros()))
    .bind(column(&|a| a.tenant.to_string()))
    .execute(&mut **db)
    .await
    .map_err(sql_error)?;
    Ok(())
}

async fn update_accounts(
    db: &mut Transaction<'_, Postgres>,
    accounts: &[Account],
) -> StoreResult<()> {
    if accounts.is_empty() {
        return Ok(());
    }
    let numbers = |f: &dyn Fn(&Account) -> i64| accounts.iter().map(f).collect::<Vec<i64>>();
    let result = sqlx::query(
        "UPDATE accounts a SET overdraft_limit = u.overdraft_limit, status = u.status, posted = u.posted, \
         pending_out = u.pending_out, pending_in = u.pending_in, updated_at = u.updated_at \
         FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[]) \
         AS u(id, overdraft_limit, status, posted, pending_out, pending_in, updated_at) WHERE a.id = u.id",
    )
    .bind(accounts.iter().map(|a| a.id.to_string()).collect::<Vec<String>>())
    .bind(accounts.iter().map(|a| overdraft_value(a.overdraft)).collect::<Vec<Option<i64>>>())
    .bind(accounts.iter().map(|a| a.status.as_str().to_owned()).collect::<Vec<String>>())
    .bind(numbers(&|a| a.balance.posted))
    .bind(numbers(&|a| a.balance.pending_out))
    .bind(numbers(&|a| a.balance.pending_in))
    .bind(numbers(&|a| a.updated_at.as_unix_micros()))
    .execute(&mut **db)
    .await
    .map_err(sql_error)?;
    if result.rows_affected() != accounts.len() as u64 {
        return Err(StoreError::Invariant("an account to update is missing".to_owned()));
    }
    Ok(())
}

async fn insert_transfers(
    db: &mut Transaction<'_, Postgres>,
    transfers: &[Transfer],
) -> StoreResult<()> {
    if transfers.is_empty() {
        return Ok(());
    }
    let text = |f: &dyn Fn(&Transfer) -> String| transfers.iter().map(f).collect::<Vec<String>>();
    let optional = |f: &dyn Fn(&Transfer) -> Option<String>| {
        transfers.iter().map(f).collect::<Vec<Option<String>>>()
    };
    let numbers = |f: &dyn Fn(&Transfer) -> i64| transfers.iter().map(f).collect::<Vec<i64>>();
    let (quote_ids, conversions): (Vec<Option<String>>, Vec<Option<String>>) =
        transfers.iter().map(transfer_fx_columns).unzip();
    sqlx::query(
        "INSERT INTO transfers (id, tenant, idempotency_key, fingerprint, kind, action, debit_account, credit_account, \
         amount, currency, pending_id, status, error_code, error_message, expires_at, captured_amount, category, \
         description, metadata, effective_at, committed_at, updated_at, quote_id, fx) SELECT * FROM UNNEST($1::text[], $2::text[], \
         $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bigint[], $10::text[], $11::text[], \
         $12::text[], $13::text[], $14::text[], $15::bigint[], $16::bigint[], $17::text[], $18::text[], $19::text[], \
         $20::bigint[], $21::bigint[], $22::bigint[], $23::text[], $24::text[])",
    )
    .bind(text(&|t| t.id.to_string()))
    .bind(text(&|t| t.tenant.to_string()))
    .bind(text(&|t| t.idempotency_key.to_string()))
    .bind(text(&|t| t.fingerprint.to_string()))
    .bind(text(&|t| t.kind.as_str().to_owned()))
    .bind(text(&|t| t.action.as_str().to_owned()))
    .bind(optional(&|t| t.debit_account.as_ref().map(ToString::to_string)))
    .bind(optional(&|t| t.credit_account.as_ref().map(ToString::to_string)))
    .bind(numbers(&|t| t.amount))
    .bind(optional(&|t| t.currency.map(|c| c.code().to_owned())))
    .bind(optional(&|t| t.pending_id.map(|id| id.to_string())))
    .bind(text(&|t| t.status.as_str().to_owned()))
    .bind(optional(&|t| t.error.as_ref().map(|e| e.code.as_str().to_owned())))
    .bind(optional(&|t| t.error.as_ref().map(|e| e.message.clone())))
    .bind(transfers.iter().map(|t| t.expires_at.map(Timestamp::as_unix_micros)).collect::<Vec<Option<i64>>>())
    .bind(numbers(&|t| t.captured_amount))
    .bind(text(&|t| t.details.category.clone()))
    .bind(text(&|t| t.details.description.clone()))
    .bind(text(&|t| metadata_to_json(&t.details.metadata)))
    .bind(numbers(&|t| t.effective_at.as_unix_micros()))
    .bind(numbers(&|t| t.committed_at.as_unix_micros()))
    .bind(numbers(&|t| t.updated_at.as_unix_micros()))
    .bind(quote_ids)
    .bind(conversions)
    .execute(&mut **db)
    .await
    .map_err(sql_error)?;
    Ok(())
}

async fn write_outcome(db: &mut Transaction<'_, Postgres>, outcome: &Outcome) -> StoreResult<()> {
    insert_accounts(db, &outcome.accounts_opened).await?;
    update_accounts(db, &outcome.accounts_changed).await?;
    insert_transfers(db, &outcome.transfers_inserted).await?;
    if !outcome.transfers_updated.is_empty() {
        let updated = &outcome.transfers_updated;
        sqlx::query(
            "UPDATE transfers t SET status = u.status, captured_amount = u.captured_amount, updated_at = u.updated_at \
             FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS u(id, status, captured_amount, updated_at) \
             WHERE t.id = u.id",
        )
        .bind(updated.iter().map(|t| t.id.to_string()).collect::<Vec<String>>())
        .bind(updated.iter().map(|t| t.status.as_str().to_owned()).collect::<Vec<String>>())
        .bind(updated.iter().map(|t| t.captured_amount).collect::<Vec<i64>>())
        .bind(updated.iter().map(|t| t.updated_at.as_unix_micros()).collect::<Vec<i64>>())
        .execute(&mut **db)
        .await
        .map_err(sql_error)?;
    }
    if !outcome.entries.is_empty() {
        let entries = &outcome.entries;
        sqlx::query(
            "INSERT INTO entries (account_id, transfer_id, direction, amount, currency, balance_after, effective_at, \
             committed_at) SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], \
             $6::bigint[], $7::bigint[], $8::bigint[])",
        )
        .bind(entries.iter().map(|e| e.account_id.to_string()).collect::<Vec<String>>())
        .bind(entries.iter().map(|e| e.transfer_id.to_string()).collect::<Vec<String>>())
        .bind(entries.iter().map(|e| e.direction.as_str().to_owned()).collect::<Vec<String>>())
        .bind(entries.iter().map(|e| e.amount).collect::<Vec<i64>>())
        .bind(entries.iter().map(|e| e.currency.code().to_owned()).collect::<Vec<String>>())
        .bind(entries.iter().map(|e| e.balance_after).collect::<Vec<i64>>())
        .bind(entries.iter().map(|e| e.effective_at.as_unix_micros()).collect::<Vec<i64>>())
        .bind(entries.iter().map(|e| e.committed_at.as_unix_micros()).collect::<Vec<i64>>())
        .execute(&mut **db)
        .await
        .map_err(sql_error)?;
    }
    if !outcome.users_created.is_empty() {
        let users = &outcome.users_created;
        sqlx::query("INSERT INTO users (id, name, created_at, tenant) SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[])")
            .bind(users.iter().map(|u| u.id.to_string()).collect::<Vec<String>>())
            .bind(users.iter().map(|u| u.name.clone()).collect::<Vec<String>>())
            .bind(users.iter().map(|u| u.created_at.as_unix_micros()).collect::<Vec<i64>>())
            .bind(users.iter().map(|u| u.tenant.to_string()).collect::<Vec<String>>())
            .execute(&mut **db)
            .await
            .map_err(sql_error)?;
    }
    if let Some(number) = outcome.last_user_number {
        let value = i64::try_from(number)
            .map_err(|_| StoreError::Invariant("user counter overflow".to_owned()))?;
        sqlx::query("UPDATE counters SET value = $1 WHERE name = 'user_number'")
            .bind(value)
            .execute(&mut **db)
            .await
            .map_err(sql_error)?;
    }
    for (orders, insert) in [(&outcome.orders_created, true), (&outcome.orders_changed, false)] {
        if orders.is_empty() {
            continue;
        }
        let statement = if insert {
            "INSERT INTO orders (id, tenant, user_id, amount, currency, status, failure_code, failure_message, \
             payment_id, created_at, updated_at) SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], \
             $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[], $11::bigint[])"
        } else {
            "UPDATE orders o SET tenant = u.tenant, user_id = u.user_id, amount = u.amount, currency = u.currency, \
             status = u.status, failure_code = u.failure_code, failure_message = u.failure_message, \
             payment_id = u.payment_id, created_at = u.created_at, updated_at = u.updated_at \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[], \
             $8::text[], $9::text[], $10::bigint[], $11::bigint[]) AS u(id, tenant, user_id, amount, currency, status, \
             failure_code, failure_message, payment_id, created_at, updated_at) WHERE o.id = u.id"
        };
        sqlx::query(statement)
            .bind(orders.iter().map(|o| o.id.to_string()).collect::<Vec<String>>())
            .bind(orders.iter().map(|o| o.tenant.to_string()).collect::<Vec<String>>())
            .bind(orders.iter().map(|o| o.user.to_string()).collect::<Vec<String>>())
            .bind(orders.iter().map(|o| o.amount).collect::<Vec<i64>>())
            .bind(orders.iter().map(|o| o.currency.code().to_owned()).collect::<Vec<String>>())
            .bind(orders.iter().map(|o| o.status.as_str().to_owned()).collect::<Vec<String>>())
            .bind(
                orders
                    .iter()
                    .map(|o| o.failure.as_ref().map(|f| f.code.as_str().to_owned()))
                    .collect::<Vec<Option<String>>>(),
            )
            .bind(
                orders
                    .iter()
                    .map(|o| o.failure.as_ref().map(|f| f.message.clone()))
                    .collect::<Vec<Option<String>>>(),
            )
            .bind(
                orders
                    .iter()
                    .map(|o| o.payment_id.map(|id| id.to_string()))
                    .collect::<Vec<Option<String>>>(),
            )
            .bind(orders.iter().map(|o| o.created_at.as_unix_micros()).collect::<Vec<i64>>())
            .bind(orders.iter().map(|o| o.updated_at.as_unix_micros()).collect::<Vec<i64>>())
            .execute(&mut **db)
            .await
            .map_err(sql_error)?;
    }
    if !outcome.inbox.is_empty() {
        sqlx::query(
            "INSERT INTO inbox (consumer, event_id, processed_at) SELECT consumer, event_id, \
             (extract(epoch FROM clock_timestamp()) * 1000000)::bigint FROM UNNEST($1::text[], $2::text[]) \
             AS marks (consumer, event_id) ON CONFLICT DO NOTHING",
        )
        .bind(outcome.inbox.iter().map(|mark| mark.consumer.clone()).collect::<Vec<String>>())
        .bind(outcome.inbox.iter().map(|mark| mark.event_id.clone()).collect::<Vec<String>>())
        .execute(&mut **db)
        .await
        .map_err(sql_error)?;
    }
    write_fx(db, outcome).await?;
    if !outcome.events.is_empty() {
        // Take the outbox lock last and hold it to commit: sequences are then in commit order.
        sqlx::query("SELECT value FROM counters WHERE name = 'outbox' FOR UPDATE")
            .execute(&mut **db)
            .await
            .map_err(sql_error)?;
        let events = &outcome.events;
        sqlx::query(
            "INSERT INTO outbox (id, tenant, kind, subject_id, at, payload, actor, traceparent) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], \
             $6::text[], $7::text[], $8::text[])",
        )
        .bind(events.iter().map(|e| e.id.to_string()).collect::<Vec<String>>())
        .bind(events.iter().map(|e| e.tenant.to_string()).collect::<Vec<String>>())
        .bind(events.iter().map(|e| e.kind.as_str().to_owned()).collect::<Vec<String>>())
        .bind(events.iter().map(|e| e.subject_id()).collect::<Vec<String>>())
        .bind(events.iter().map(|e| e.at.as_unix_micros()).collect::<Vec<i64>>())
        .bind(events.iter().map(event_json).collect::<Vec<String>>())
        .bind(events.iter().map(|e| e.actor.clone()).collect::<Vec<Option<String>>>())
        .bind(events.iter().map(|e| e.trace.clone()).collect::<Vec<Option<String>>>())
        .execute(&mut **db)
        .await
        .map_err(sql_error)?;
    }
    Ok(())
}

/// Rates and quotes a batch set, created or used.
async fn write_fx(db: &mut Transaction<'_, Postgres>, outcome: &Outcome) -> StoreResult<()> {
    if !outcome.rates_set.is_empty() {
        let rows: Vec<RawRate> = outcome.rates_set.iter().map(RawRate::of).collect();
        let text = |f: &dyn Fn(&RawRate) -> String| rows.iter().map(f).collect::<Vec<String>>();
        sqlx::query(&format!(
            "INSERT INTO fx_rates ({RATE_COLUMNS}) SELECT * FROM UNNEST($1::text[], $2::text[], \
             $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[])"
        ))
        .bind(text(&|r| r.tenant.clone()))
        .bind(text(&|r| r.base.clone()))
        .bind(text(&|r| r.quote.clone()))
        .bind(text(&|r| r.rate.clone()))
        .bind(text(&|r| r.source.clone()))
        .bind(rows.iter().map(|r| r.valid_from).collect::<Vec<i64>>())
        .bind(rows.iter().map(|r| r.set_at).collect::<Vec<i64>>())
        .execute(&mut **db)
        .await
        .map_err(sql_error)?;
    }
    if !outcome.quotes_created.is_empty() {
        let rows: Vec<RawQuote> = outcome.quotes_created.iter().map(RawQuote::of).collect();
        sqlx::query(&format!(
            "INSERT INTO fx_quotes ({QUOTE_COLUMNS}) SELECT * FROM UNNEST($1::text[], $2::text[], \
             $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::text[], $8::bigint[])"
        ))
        .bind(rows.iter().map(|r| r.id.clone()).collect::<Vec<String>>())
        .bind(rows.iter().map(|r| r.tenant.clone()).collect::<Vec<String>>())
        .bind(rows.iter().map(|r| r.idempotency_key.clone()).collect::<Vec<Option<String>>>())
        .bind(rows.iter().map(|r| r.terms.clone()).collect::<Vec<String>>())
        .bind(rows.iter().map(|r| r.created_at).collect::<Vec<i64>>())
        .bind(rows.iter().map(|r| r.expires_at).collect::<Vec<i64>>())
        .bind(rows.iter().map(|r| r.used_by.clone()).collect::<Vec<Option<String>>>())
        .bind(rows.iter().map(|r| r.used_at).collect::<Vec<Option<i64>>>())
        .execute(&mut **db)
        .await
        .map_err(sql_error)?;
    }
    if !outcome.quotes_used.is_empty() {
        let rows: Vec<RawQuote> = outcome.quotes_used.iter().map(RawQuote::of).collect();
        let result = sqlx::query(
            "UPDATE fx_quotes q SET used_by = u.used_by, used_at = u.used_at FROM UNNEST($1::text[], \
             $2::text[], $3::bigint[]) AS u(id, used_by, used_at) WHERE q.id = u.id AND q.used_by IS NULL",
        )
        .bind(rows.iter().map(|r| r.id.clone()).collect::<Vec<String>>())
        .bind(rows.iter().map(|r| r.used_by.clone()).collect::<Vec<Option<String>>>())
        .bind(rows.iter().map(|r| r.used_at).collect::<Vec<Option<i64>>>())
        .execute(&mut **db)
        .await
        .map_err(sql_error)?;
        if result.rows_affected() != rows.len() as u64 {
            return Err(StoreError::Conflict("a quote was used meanwhile".to_owned()));
        }
    }
    Ok(())
}

fn to_i64(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[async_trait]
impl Store for PostgresStore {
    async fn write_batch(&self, keys: Keys, decide: Decide) -> StoreResult<Committed> {
        let mut db = self.pool.begin().await.map_err(sql_error)?;
        let state = load_state(&mut db, &keys).await?;
        let outcome = decide(state).map_err(StoreError::Invariant)?;
        write_outcome(&mut db, &outcome).await?;
        db.commit().await.map_err(sql_error)?;
        Ok(Committed::new(outcome))
    }

    async fn account(&self, id: &AccountId) -> StoreResult<Option<Account>> {
        let query = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1");
        let row = sqlx::query(&query)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error)?;
        row.as_ref().map(account_from).transpose()
    }

    async fn list_accounts(
        &self,
        tenant: Option<&str>,
        owner: Option<&str>,
        after: Option<&AccountId>,
        limit: usize,
    ) -> StoreResult<Vec<Account>> {
        let query = format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE ($1::text IS NULL OR owner = $1) AND id > $2 \
             AND ($4::text IS NULL OR tenant = $4) ORDER BY id LIMIT $3"
        );
        sqlx::query(&query)
            .bind(owner)
            .bind(after.map(ToString::to_string).unwrap_or_default())
            .bind(to_i64(limit.min(kopek_core::limits::PAGE_SIZE_MAX)))
            .bind(tenant)
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?
            .iter()
            .map(account_from)
            .collect()
    }

    async fn transfer(&self, id: TransferId) -> StoreResult<Option<Transfer>> {
        let query = format!("SELECT {TRANSFER_COLUMNS} FROM transfers WHERE id = $1");
        let row = sqlx::query(&query)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error)?;
        row.as_ref().map(transfer_from).transpose()
    }

    async fn transfer_by_key(
        &self,
        tenant: &Tenant,
        key: &IdempotencyKey,
    ) -> StoreResult<Option<Transfer>> {
        let query = format!(
            "SELECT {TRANSFER_COLUMNS} FROM transfers WHERE tenant = $1 AND idempotency_key = $2"
        );
        let row = sqlx::query(&query)
            .bind(tenant.as_str())
            .bind(key.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error)?;
        row.as_ref().map(transfer_from).transpose()
    }

    async fn entries(
        &self,
        account: &AccountId,
        after: Option<u64>,
        limit: usize,
    ) -> StoreResult<Page<StoredEntry>> {
        let limit = limit.clamp(1, kopek_core::limits::PAGE_SIZE_MAX);
        let query = format!(
            "SELECT {ENTRY_COLUMNS} FROM entries WHERE account_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3"
        );
        let mut items = sqlx::query(&query)
            .bind(account.as_str())
            .bind(i64::try_from(after.unwrap_or(0)).unwrap_or(i64::MAX))
            .bind(to_i64(limit + 1))
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?
            .iter()
            .map(entry_from)
            .collect::<StoreResult<Vec<_>>>()?;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|entry| entry.sequence)
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn balance_before(
        &self,
        account: &AccountId,
        before: Timestamp,
    ) -> StoreResult<Option<i64>> {
        // SUM over bigint is numeric in PostgreSQL: no intermediate overflow.
        let row = sqlx::query(
            "SELECT (SELECT COALESCE(SUM(CASE direction WHEN 'credit' THEN amount ELSE -amount END), 0)::bigint \
             FROM entries WHERE account_id = a.id AND effective_at < $2) FROM accounts a WHERE a.id = $1",
        )
        .bind(account.as_str())
        .bind(before.as_unix_micros())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql_error)?;
        row.map(|row| row.try_get::<i64, _>(0).map_err(sql_error)).transpose()
    }

    async fn holds_due(&self, now: Timestamp, limit: usize) -> StoreResult<Vec<TransferId>> {
        let rows = sqlx::query(
            "SELECT id FROM transfers WHERE status = 'pending' AND expires_at <= $1 ORDER BY expires_at LIMIT $2",
        )
        .bind(now.as_unix_micros())
        .bind(to_i64(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error)?;
        rows.iter()
            .map(|row| {
                let text: String = row.try_get(0).map_err(sql_error)?;
                TransferId::parse(&text).map_err(|rejection| corrupt(rejection.message))
            })
            .collect()
    }

    async fn next_hold_expiry(&self) -> StoreResult<Option<Timestamp>> {
        let micros: Option<i64> =
            sqlx::query_scalar("SELECT MIN(expires_at) FROM transfers WHERE status = 'pending'")
                .fetch_one(&self.pool)
                .await
                .map_err(sql_error)?;
        Ok(micros.map(Timestamp::from_unix_micros))
    }

    async fn events_after(
        &self,
        tenant: Option<&str>,
        sequence: u64,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        // Two statements rather than one with `$3 IS NULL OR`: each keeps its own index.
        let filter = if tenant.is_some() { "tenant = $3" } else { "$3::text IS NULL" };
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM outbox WHERE {filter} AND sequence > $1 \
             ORDER BY sequence LIMIT $2"
        );
        sqlx::query(&sql)
            .bind(i64::try_from(sequence).unwrap_or(i64::MAX))
            .bind(to_i64(limit))
            .bind(tenant)
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?
            .iter()
            .map(event_from)
            .collect()
    }

    async fn last_event_sequence(&self) -> StoreResult<u64> {
        let sequence: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(sequence), 0) FROM outbox")
            .fetch_one(&self.pool)
            .await
            .map_err(sql_error)?;
        Ok(u64::try_from(sequence).unwrap_or(0))
    }

    async fn watermark(&self) -> StoreResult<Watermark> {
        let row = sqlx::query(
            "SELECT GREATEST((SELECT MAX(updated_at) FROM transfers), (SELECT MAX(updated_at) FROM accounts), \
             (SELECT MAX(at) FROM outbox)), GREATEST((SELECT MAX(id) FROM transfers), (SELECT MAX(id) FROM outbox))",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(sql_error)?;
        let micros: Option<i64> = row.try_get(0).map_err(sql_error)?;
        let id: Option<String> = row.try_get(1).map_err(sql_error)?;
        let largest_id = id
            .map(|text| Ulid::parse(&text).map_err(|rejection| corrupt(rejection.message)))
            .transpose()?;
        Ok(Watermark { committed_at: micros.map(Timestamp::from_unix_micros), largest_id })
    }

    async fn user(&self, id: &UserId) -> StoreResult<Option<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error)?;
        row.as_ref().map(user_from).transpose()
    }

    async fn order(&self, id: &OrderId) -> StoreResult<Option<Order>> {
        let query = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1");
        let row = sqlx::query(&query)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error)?;
        row.as_ref().map(order_from).transpose()
    }

    async fn orders_of_user(&self, user: &UserId, limit: usize) -> StoreResult<Vec<Order>> {
        let query = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1 ORDER BY created_at, id LIMIT $2"
        );
        sqlx::query(&query)
            .bind(user.as_str())
            .bind(to_i64(limit.min(kopek_core::limits::PAGE_SIZE_MAX)))
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?
            .iter()
            .map(order_from)
            .collect()
    }

    async fn pending_orders(&self, limit: usize) -> StoreResult<Vec<Order>> {
        let query = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE status = 'PENDING' ORDER BY created_at LIMIT $1"
        );
        sqlx::query(&query)
            .bind(to_i64(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?
            .iter()
            .map(order_from)
            .collect()
    }

    async fn verify(&self) -> StoreResult<VerifyReport> {
        verify::verify_books(&self.pool).await
    }

    async fn relay_claim(
        &self,
        sink: &str,
        holder: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> StoreResult<Option<u64>> {
        let row = sqlx::query(
            "INSERT INTO relay_cursors (sink, sequence, holder, lease_until) VALUES ($1, 0, $2, $4) \
             ON CONFLICT (sink) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until \
             WHERE relay_cursors.holder = excluded.holder OR relay_cursors.lease_until < $3 \
             RETURNING sequence",
        )
        .bind(sink)
        .bind(holder)
        .bind(now.as_unix_micros())
        .bind(until.as_unix_micros())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql_error)?;
        row.map(|row| {
            let sequence: i64 = row.try_get(0).map_err(sql_error)?;
            Ok(u64::try_from(sequence).unwrap_or(0))
        })
        .transpose()
    }

    async fn relay_advance(
        &self,
        sink: &str,
        holder: &str,
        sequence: u64,
        until: Timestamp,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE relay_cursors SET sequence = GREATEST(sequence, $3), lease_until = $4 \
             WHERE sink = $1 AND holder = $2",
        )
        .bind(sink)
        .bind(holder)
        .bind(i64::try_from(sequence).unwrap_or(i64::MAX))
        .bind(until.as_unix_micros())
        .execute(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn inbox_contains(&self, consumer: &str, event_id: &str) -> StoreResult<bool> {
        let row = sqlx::query("SELECT 1 FROM inbox WHERE consumer = $1 AND event_id = $2")
            .bind(consumer)
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error)?;
        Ok(row.is_some())
    }

    async fn consume(
        &self,
        consumer: &str,
        items: Vec<Consumed>,
        now: Timestamp,
    ) -> StoreResult<usize> {
        let mut db = self.pool.begin().await.map_err(sql_error)?;
        let mut new = 0;
        for item in &items {
            let inserted = sqlx::query(
                "INSERT INTO inbox (consumer, event_id, processed_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(consumer)
            .bind(&item.event_id)
            .bind(now.as_unix_micros())
            .execute(&mut *db)
            .await
            .map_err(sql_error)?;
            if inserted.rows_affected() == 0 {
                continue;
            }
            new += 1;
            for effect in &item.effects {
                match effect {
                    Effect::Deliver {
                        delivery_id,
                        subscription_id,
                        event_id,
                        event_type,
                        body,
                        max_attempts,
                    } => {
                        sqlx::query(
                            "INSERT INTO webhook_deliveries (id, subscription_id, event_id, event_type, body, status, \
                             attempts, dead_after, next_attempt_at, claimed_until, created_at, updated_at) \
                             VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $7, 0, $7, $7) \
                             ON CONFLICT (subscription_id, event_id) DO NOTHING",
                        )
                        .bind(delivery_id)
                        .bind(subscription_id)
                        .bind(event_id)
                        .bind(event_type)
                        .bind(body)
                        .bind(i64::from(*max_attempts))
                        .bind(now.as_unix_micros())
                        .execute(&mut *db)
                        .await
                        .map_err(sql_error)?;
                    }
                    // PostgreSQL refuses a bigint past its range ("out of range"): the call
                    // fails instead of wrapping.
                    Effect::Spend { tenant, user, category, currency, amount_minor } => {
                        sqlx::query(
                            "INSERT INTO spending (tenant, user_id, category, currency, total_minor, transfers, updated_at) \
                             VALUES ($1, $2, $3, $4, $5, 1, $6) ON CONFLICT (tenant, user_id, category, currency) \
                             DO UPDATE SET total_minor = spending.total_minor + excluded.total_minor, \
                             transfers = spending.transfers + 1, updated_at = excluded.updated_at",
                        )
                        .bind(tenant)
                        .bind(user)
                        .bind(category)
                        .bind(currency)
                        .bind(amount_minor)
                        .bind(now.as_unix_micros())
                        .execute(&mut *db)
                        .await
                        .map_err(sql_error)?;
                    }
                }
            }
        }
        db.commit().await.map_err(sql_error)?;
        Ok(new)
    }

    async fn spending(&self, tenant: &str, user: &str) -> StoreResult<Vec<SpendingTotal>> {
        sqlx::query(
            "SELECT category, currency, total_minor, transfers, updated_at FROM spending \
             WHERE tenant = $1 AND user_id = $2 ORDER BY category, currency",
        )
        .bind(tenant)
        .bind(user)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error)?
        .iter()
        .map(|row| {
            let transfers: i64 = row.try_get(3).map_err(sql_error)?;
            Ok(SpendingTotal {
                category: row.try_get(0).map_err(sql_error)?,
                currency: row.try_get(1).map_err(sql_error)?,
                total_minor: row.try_get(2).map_err(sql_error)?,
                transfers: u64::try_from(transfers).unwrap_or(0),
                updated_at: Timestamp::from_unix_micros(row.try_get(4).map_err(sql_error)?),
            })
        })
        .collect()
    }

    async fn create_webhook(&self, webhook: &Webhook) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO webhook_subscriptions (id, tenant, url, event_types, secret, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&webhook.id)
        .bind(&webhook.tenant)
        .bind(&webhook.url)
        .bind(webhook.event_types.join(","))
        .bind(&webhook.secret)
        .bind(webhook.created_at.as_unix_micros())
        .execute(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(())
    }

    async fn webhooks(&self, tenant: Option<&str>) -> StoreResult<Vec<Webhook>> {
        let sql = format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhook_subscriptions \
             WHERE deleted_at IS NULL AND ($1::text IS NULL OR tenant = $1) ORDER BY created_at, id"
        );
        sqlx::query(&sql)
            .bind(tenant)
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?
            .iter()
            .map(webhook_from)
            .collect()
    }

    async fn delete_webhook(&self, tenant: &str, id: &str, now: Timestamp) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE webhook_subscriptions SET deleted_at = $3 WHERE tenant = $1 AND id = $2 AND deleted_at IS NULL",
        )
        .bind(tenant)
        .bind(id)
        .bind(now.as_unix_micros())
        .execute(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn claim_deliveries(
        &self,
        now: Timestamp,
        until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        // SKIP LOCKED: senders in other processes take other deliveries instead of waiting.
        let sql = format!(
            "UPDATE webhook_deliveries SET claimed_until = $2 WHERE id IN (\
             SELECT d.id FROM webhook_deliveries d JOIN webhook_subscriptions s ON s.id = d.subscription_id \
             WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND d.claimed_until <= $1 \
             AND s.deleted_at IS NULL ORDER BY d.next_attempt_at LIMIT $3 FOR UPDATE OF d SKIP LOCKED) \
             RETURNING {DELIVERY_COLUMNS}"
        );
        let mut deliveries = sqlx::query(&sql)
            .bind(now.as_unix_micros())
            .bind(until.as_unix_micros())
            .bind(to_i64(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?
            .iter()
            .map(delivery_from)
            .collect::<StoreResult<Vec<Delivery>>>()?;
        deliveries.sort_by_key(|delivery| delivery.next_attempt_at);
        Ok(deliveries)
    }

    async fn record_attempt(&self, result: &AttemptResult) -> StoreResult<bool> {
        let attempt = &result.attempt;
        let mut db = self.pool.begin().await.map_err(sql_error)?;
        let updated = sqlx::query(
            "UPDATE webhook_deliveries SET status = $2, attempts = $3, next_attempt_at = $4, claimed_until = 0, \
             last_status_code = $5, last_error = $6, updated_at = $7 WHERE id = $1 AND claimed_until = $8",
        )
        .bind(&attempt.delivery_id)
        .bind(result.status.as_str())
        .bind(i64::from(attempt.attempt))
        .bind(result.next_attempt_at.as_unix_micros())
        .bind(attempt.status_code.map(i64::from))
        .bind(&attempt.error)
        .bind(attempt.at.as_unix_micros())
        .bind(result.claimed_until.as_unix_micros())
        .execute(&mut *db)
        .await
        .map_err(sql_error)?;
        if updated.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code, error, duration_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (delivery_id, attempt) DO UPDATE SET \
             at = excluded.at, status_code = excluded.status_code, error = excluded.error, duration_ms = excluded.duration_ms",
        )
        .bind(&attempt.delivery_id)
        .bind(i64::from(attempt.attempt))
        .bind(attempt.at.as_unix_micros())
        .bind(attempt.status_code.map(i64::from))
        .bind(&attempt.error)
        .bind(i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX))
        .execute(&mut *db)
        .await
        .map_err(sql_error)?;
        db.commit().await.map_err(sql_error)?;
        Ok(true)
    }

    async fn deliveries(&self, subscription_id: &str, limit: usize) -> StoreResult<Vec<Delivery>> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE subscription_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2"
        );
        sqlx::query(&sql)
            .bind(subscription_id)
            .bind(to_i64(limit.min(kopek_core::limits::PAGE_SIZE_MAX)))
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?
            .iter()
            .map(delivery_from)
            .collect()
    }

    async fn delivery(&self, id: &str) -> StoreResult<Option<Delivery>> {
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await.map_err(sql_error)?;
        row.as_ref().map(delivery_from).transpose()
    }

    async fn delivery_attempts(&self, delivery_id: &str) -> StoreResult<Vec<Attempt>> {
        let sql = format!(
            "SELECT {ATTEMPT_COLUMNS} FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempt"
        );
        sqlx::query(&sql)
            .bind(delivery_id)
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?
            .iter()
            .map(|row| Attempt::read(&PgColumns(row)))
            .collect()
    }

    async fn redeliver(
        &self,
        subscription_id: &str,
        delivery_id: &str,
        max_attempts: u32,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', dead_after = attempts + $3, next_attempt_at = $4, \
             claimed_until = 0, updated_at = $4 WHERE id = $2 AND subscription_id = $1",
        )
        .bind(subscription_id)
        .bind(delivery_id)
        .bind(i64::from(max_attempts))
        .bind(now.as_unix_micros())
        .execute(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn fx_rates(&self, tenant: &Tenant, at: Timestamp) -> StoreResult<Vec<FxRate>> {
        let query = format!(
            "SELECT {RATE_COLUMNS} FROM fx_rates r WHERE tenant = $1 AND valid_from = \
             (SELECT MAX(valid_from) FROM fx_rates WHERE tenant = r.tenant AND base = r.base \
             AND quote = r.quote AND valid_from <= $2) ORDER BY base, quote"
        );
        sqlx::query(&query)
            .bind(tenant.as_str())
            .bind(at.as_unix_micros())
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?
            .iter()
            .map(|row| RawRate::read(&PgColumns(row))?.decode().map_err(corrupt))
            .collect()
    }

    async fn quote(&self, id: QuoteId) -> StoreResult<Option<Quote>> {
        let query = format!("SELECT {QUOTE_COLUMNS} FROM fx_quotes WHERE id = $1");
        let row = sqlx::query(&query)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error)?;
        row.map(|row| RawQuote::read(&PgColumns(&row))?.decode().map_err(corrupt)).transpose()
    }

    async fn fx_accounts(&self, tenant: &Tenant) -> StoreResult<Vec<Account>> {
        let query = format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE tenant = $1 \
             AND (substr(id, length($2) + 1, 3) = 'fx:' \
             OR substr(id, length($2) + 1, 11) = 'fx-revenue:') ORDER BY id"
        );
        sqlx::query(&query)
            .bind(tenant.as_str())
            .bind(tenant.key_prefix())
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?
            .iter()
            .map(account_from)
            .collect()
    }

    async fn fx_revenue(
        &self,
        tenant: &Tenant,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<Vec<FxRevenue>> {
        let rows = sqlx::query(
            "SELECT e.currency, SUM(CASE WHEN e.direction = 'credit' THEN e.amount ELSE -e.amount END)::bigint, \
             COUNT(*) FROM entries e JOIN accounts a ON a.id = e.account_id \
             WHERE a.tenant = $1 AND substr(a.id, length($4) + 1, 11) = 'fx-revenue:' \
             AND e.committed_at >= $2 AND e.committed_at < $3 GROUP BY e.currency ORDER BY e.currency",
        )
        .bind(tenant.as_str())
        .bind(from.as_unix_micros())
        .bind(to.as_unix_micros())
        .bind(tenant.key_prefix())
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error)?;
        rows.iter()
            .map(|row| {
                let currency: String = row.try_get(0).map_err(sql_error)?;
                let entries: i64 = row.try_get(2).map_err(sql_error)?;
                Ok(FxRevenue {
                    currency: Currency::parse(&currency).map_err(|r| corrupt(r.message))?,
                    total_minor: row.try_get(1).map_err(sql_error)?,
                    entries: u64::try_from(entries).unwrap_or(0),
                })
            })
            .collect()
    }

    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, tenant, scope, user_id, name, secret_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&key.id)
        .bind(&key.tenant)
        .bind(&key.scope)
        .bind(&key.user_id)
        .bind(&key.name)
        .bind(&key.secret_hash)
        .bind(key.created_at.as_unix_micros())
        .execute(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(())
    }

    async fn api_key(&self, id: &str) -> StoreResult<Option<ApiKey>> {
        let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await.map_err(sql_error)?;
        row.as_ref().map(api_key_from).transpose()
    }

    async fn api_keys(&self, tenant: Option<&str>) -> StoreResult<Vec<ApiKey>> {
        let sql = format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys \
             WHERE ($1::text IS NULL OR tenant = $1) ORDER BY created_at, id"
        );
        sqlx::query(&sql)
            .bind(tenant)
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?
            .iter()
            .map(api_key_from)
            .collect()
    }

    async fn revoke_api_key(&self, id: &str, now: Timestamp) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(now.as_unix_micros())
                .execute(&self.pool)
                .await
                .map_err(sql_error)?;
        Ok(done.rows_affected() == 1)
    }

    fn pool_usage(&self) -> (usize, usize) {
        let open = usize::try_from(self.pool.size()).unwrap_or(0);
        (open.saturating_sub(self.pool.num_idle()), POOL_CONNECTIONS_MAX as usize)
    }

    async fn audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM outbox WHERE actor IS NOT NULL \
             AND ($1::text IS NULL OR actor = $1) AND at >= $2 AND at < $3 ORDER BY sequence LIMIT $4"
        );
        sqlx::query(&sql)
            .bind(&query.actor)
            .bind(query.since.as_unix_micros())
            .bind(query.until.as_unix_micros())
            .bind(i64::try_from(query.limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?
            .iter()
            .map(|row| AuditEntry::read(&PgColumns(row)))
            .collect()
    }

    async fn relay_cursors(&self) -> StoreResult<Vec<(String, u64)>> {
        sqlx::query("SELECT sink, sequence FROM relay_cursors ORDER BY sink")
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?
            .iter()
            .map(|row| {
                let sink: String = row.try_get(0).map_err(sql_error)?;
                let sequence: i64 = row.try_get(1).map_err(sql_error)?;
                Ok((sink, u64::try_from(sequence).unwrap_or(0)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    //! The conformance suite on the machine's real PostgreSQL: each test gets a database of
    //! its own. It needs KOPEK_TEST_DATABASE_URL (a server URL, e.g.
    //! postgres://postgres@127.0.0.1:5432/postgres); without it the tests skip, loudly,
    //! except in CI where they must run.

    use super::PostgresStore;

    pub struct TestDatabase {
        admin: String,
        name: String,
    }

    impl Drop for TestDatabase {
        fn drop(&mut self) {
            let (admin, name) = (self.admin.clone(), self.name.clone());
            // Best effort: the database is a throwaway either way.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
                if let Ok(runtime) = runtime {
                    runtime.block_on(async move {
                        if let Ok(pool) = sqlx::PgPool::connect(&admin).await {
                            let statement = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                            let _ = sqlx::query(&statement).execute(&pool).await;
                        }
                    });
                }
            })
            .join();
        }
    }

    /// A fresh database on the test server, or `None` (skip) outside CI without one.
    pub async fn fresh_store() -> Option<(PostgresStore, TestDatabase)> {
        let Ok(admin) = std::env::var("KOPEK_TEST_DATABASE_URL") else {
            assert!(
                std::env::var("CI").is_err(),
                "CI must set KOPEK_TEST_DATABASE_URL for the PostgreSQL tests"
            );
            eprintln!("SKIPPED: KOPEK_TEST_DATABASE_URL is not set; PostgreSQL tests do not run");
            return None;
        };
        let name = format!("kopek_test_{}", uuid::Uuid::new_v4().simple());
        let pool = sqlx::PgPool::connect(&admin).await.expect("connect to the test server");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await
            .expect("create database");
        pool.close().await;
        let url = match admin.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => panic!("KOPEK_TEST_DATABASE_URL must end with a database name"),
        };
        let store = PostgresStore::connect(&url).await.expect("connect and migrate");
        Some((store, TestDatabase { admin, name }))
    }

    kopek_store::conformance_tests!(fresh_store());

    /// Issue 19, finding 5: a database written before ids belonged to their tenant (another
    /// tenant's rows keyed by their bare ids) is upgraded by the migration: the rows move to
    /// their tenant's keys, every reference follows, and the books verify.
    #[tokio::test]
    async fn another_tenants_rows_move_to_their_keys_on_upgrade() {
        use kopek_core::{AccountId, Tenant};
        use kopek_store::{Store, conformance};
        let Some((store, _database)) = fresh_store().await else { return };
        conformance::other_tenant_before_upgrade(&store).await;
        for statement in conformance::old_layout_statements(8) {
            crate::execute(store.pool(), &statement).await.expect("the old layout");
        }
        let alice = AccountId::parse("alice").expect("id");
        let acme = Tenant::parse("acme").expect("tenant");
        assert_eq!(store.account(&alice).await.expect("read").map(|a| a.tenant), Some(acme));
        assert_eq!(store.migrate().await.expect("upgrade"), [8]);
        conformance::other_tenant_after_upgrade(&store).await;
    }

    #[tokio::test]
    async fn processes_starting_together_on_an_empty_database_all_start() {
        let Some((store, _database)) = fresh_store().await else { return };
        // A second, empty database: fresh_store's own is migrated already.
        let name = format!("kopek_test_{}", uuid::Uuid::new_v4().simple());
        crate::execute(store.pool(), &format!("CREATE DATABASE {name}")).await.expect("create");
        let admin = std::env::var("KOPEK_TEST_DATABASE_URL").expect("set");
        let url = format!("{}/{name}", admin.rsplit_once('/').expect("a database name").0);
        let _empty = TestDatabase { admin, name };
        let starts = (0..6).map(|_| PostgresStore::connect(&url));
        for started in futures_util::future::join_all(starts).await {
            started.expect("every process starts");
        }
    }
}
