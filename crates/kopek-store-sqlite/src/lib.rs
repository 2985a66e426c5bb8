//! kopek-store-sqlite: the embedded default backend. One SQLite file in WAL mode with
//! `synchronous=FULL`: a commit returns only after its WAL frames are on disk.
//!
//! One dedicated thread owns the only write connection, so batches never contend for the
//! write lock; reads run on a small pool of read-only connections in blocking tasks and, in
//! WAL mode, never wait for the writer.

mod carried;
mod journal;
mod payload;
mod rows;
mod verify;

pub use journal::{JOURNAL_DIR_NAME, JournalStore};

use async_trait::async_trait;
use carried::CARRIED_COLUMNS;
use kopek_core::{
    Account, AccountId, Currency, Direction, Entry, Event, EventKind, FINGERPRINT_STORED_LEN,
    FxRate, IdempotencyKey, Keys, Order, OrderId, Outcome, Overdraft, Quote, QuoteId, State,
    Subject, Tenant, Timestamp, Transfer, TransferId, Ulid, User, UserId,
};
use kopek_journal::Position;
use kopek_store::codec::metadata_to_json;
use kopek_store::keys::{API_KEY_COLUMNS, AUDIT_COLUMNS};
use kopek_store::rows::transfer_fx_columns;
use kopek_store::webhooks::{ATTEMPT_COLUMNS, DELIVERY_COLUMNS, WEBHOOK_COLUMNS};
use kopek_store::{
    ApiKey, Attempt, AttemptResult, AuditEntry, AuditQuery, Committed, Consumed, Decide, Delivery,
    Effect, FxRevenue, Page, SpendingTotal, Store, StoreError, StoreResult, StoredEntry,
    StoredEvent, VerifyReport, Watermark, Webhook,
};
use rows::*;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;
use tokio::sync::{Semaphore, oneshot};
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

/// The database file inside the data directory.
pub const DATABASE_FILE_NAME: &str = "kopek.sqlite3";
/// Read connections kept open at most.
const READ_CONNECTIONS_MAX: usize = 8;
/// How long a connection waits for a lock before it reports the database busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// WAL pages past which the writer checkpoints on its own: the checkpoint thread fell behind.
const WAL_PAGES_BEFORE_WRITER_CHECKPOINTS: i64 = 16_384;
/// The checkpoint thread's rest between two checkpoints.
const CHECKPOINT_PAUSE: Duration = Duration::from_millis(50);
/// How long a read-only open of a journal-first ledger waits for its tables to catch up.
const READ_ONLY_PROJECTION_WAIT_MAX: Duration = Duration::from_secs(10);

/// Schema migrations, applied in order; the version is the position plus one.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_ledger.sql"),
    include_str!("../migrations/0002_users_orders.sql"),
    include_str!("../migrations/0003_relay.sql"),
    include_str!("../migrations/0004_consumers.sql"),
    include_str!("../migrations/0005_webhooks.sql"),
    include_str!("../migrations/0006_security.sql"),
    include_str!("../migrations/0007_tracing.sql"),
    include_str!("../migrations/0008_fx.sql"),
    include_str!("../migrations/0009_tenant_ids.sql"),
    include_str!("../migrations/0010_projection.sql"),
    include_str!("../migrations/0011_fewer_indexes.sql"),
    include_str!("../migrations/0012_projection_position.sql"),
    include_str!("../migrations/0013_postings.sql"),
    include_str!("../migrations/0014_carried_events.sql"),
];

type WriteJob = Box<dyn FnOnce(&mut Connection) + Send>;

#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// Held while the store is open for writing, so a second process cannot write too.
    _lock: Option<std::fs::File>,
    writer: Mutex<Option<mpsc::Sender<WriteJob>>>,
    idle_readers: Mutex<Vec<Connection>>,
    read_permits: Arc<Semaphore>,
}

impl SqliteStore {
    /// Opens (creating if needed) the ledger in `data_dir`, applies pending migrations and
    /// starts the writer thread. A ledger with a journal is refused: its tables may lack the
    /// journal's last frames, so only `JournalStore` may open it.
    pub fn open(data_dir: &Path) -> StoreResult<SqliteStore> {
        if has_journal(data_dir) {
            return Err(StoreError::Unavailable(format!(
                "the ledger in {} is journal-first (it has a {JOURNAL_DIR_NAME}/ directory): \
                 open it with --journal",
                data_dir.display()
            )));
        }
        SqliteStore::open_projection(data_dir)
    }

    /// Opens the tables of a ledger for `JournalStore`, which keeps them as its projection.
    fn open_projection(data_dir: &Path) -> StoreResult<SqliteStore> {
        std::fs::create_dir_all(data_dir).map_err(|error| {
            StoreError::Unavailable(format!("create data dir {}: {error}", data_dir.display()))
        })?;
        let lock = lock_data_dir(data_dir)?;
        let path = data_dir.join(DATABASE_FILE_NAME);
        let mut connection = open_writer(&path)?;
        migrate_connection(&mut connection)?;
        // Checkpoints run on a thread of their own; the writer starts one itself only if
        // that thread falls behind.
        connection
            .pragma_update(None, "wal_autocheckpoint", WAL_PAGES_BEFORE_WRITER_CHECKPOINTS)
            .map_err(sql_error)?;
        let nudge = start_checkpointer(&path)?;
        let (sender, receiver) = mpsc::channel::<WriteJob>();
        std::thread::Builder::new()
            .name("kopek-sqlite-writer".to_owned())
            .spawn(move || {
                // The thread ends when every sender is gone: the store was dropped. The
                // checkpointer ends with it.
                for job in receiver {
                    job(&mut connection);
                    // A checkpoint already due covers this commit too.
                    let _ = nudge.try_send(());
                }
            })
            .map_err(|error| StoreError::Unavailable(format!("start writer thread: {error}")))?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                _lock: Some(lock),
                writer: Mutex::new(Some(sender)),
                idle_readers: Mutex::new(Vec::new()),
                read_permits: Arc::new(Semaphore::new(READ_CONNECTIONS_MAX)),
            }),
        })
    }

    /// Opens the ledger for the admin commands (`kopek keys`, `kopek audit`), which may run
    /// next to a live server: like `open` when no server holds the ledger; otherwise without
    /// the lock and without migrating (the server did), writing through SQLite's own locking.
    /// Only key rows are written this way; ledger writes stay with the server's writer.
    pub fn open_beside_server(data_dir: &Path) -> StoreResult<SqliteStore> {
        let path = data_dir.join(DATABASE_FILE_NAME);
        if !path.is_file() {
            return SqliteStore::open(data_dir);
        }
        let lock = lock_data_dir(data_dir).ok();
        if has_journal(data_dir) {
            // Reads (`kopek audit`) see what the journal held when they started.
            await_projection(&open_reader(&path)?, data_dir)?;
        }
        let mut connection = open_writer(&path)?;
        if lock.is_some() {
            migrate_connection(&mut connection)?;
        } else {
            let version: i64 = connection
                .query_row("SELECT COUNT(*) FROM schema_migrations", [], |row| row.get(0))
                .map_err(sql_error)?;
            if usize::try_from(version).unwrap_or(0) < MIGRATIONS.len() {
                return Err(StoreError::Unavailable(format!(
                    "the ledger in {} has an older schema and a server is using it: upgrade that server first",
                    data_dir.display()
                )));
            }
        }
        let (sender, receiver) = mpsc::channel::<WriteJob>();
        std::thread::Builder::new()
            .name("kopek-sqlite-admin".to_owned())
            .spawn(move || {
                for job in receiver {
                    job(&mut connection);
                }
            })
            .map_err(|error| StoreError::Unavailable(format!("start writer thread: {error}")))?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                _lock: lock,
                writer: Mutex::new(Some(sender)),
                idle_readers: Mutex::new(Vec::new()),
                read_permits: Arc::new(Semaphore::new(READ_CONNECTIONS_MAX)),
            }),
        })
    }

    /// Opens an existing ledger for reading only (`kopek verify` next to a running server).
    /// Writes answer `Unavailable`.
    pub fn open_read_only(data_dir: &Path) -> StoreResult<SqliteStore> {
        let path = data_dir.join(DATABASE_FILE_NAME);
        if !path.is_file() {
            return Err(StoreError::Unavailable(format!("no ledger found at {}", path.display())));
        }
        // Fails early on a file that is not a kopek database.
        let reader = open_reader(&path)?;
        reader
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |row| row.get::<_, i64>(0))
            .map_err(|error| {
                StoreError::Unavailable(format!(
                    "{} is not a kopek ledger: {error}",
                    path.display()
                ))
            })?;
        if has_journal(data_dir) {
            await_projection(&reader, data_dir)?;
        }
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                _lock: None,
                writer: Mutex::new(None),
                idle_readers: Mutex::new(Vec::new()),
                read_permits: Arc::new(Semaphore::new(READ_CONNECTIONS_MAX)),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Stops the writer thread after the work already sent to it; later writes fail.
    pub fn close_writer(&self) {
        if let Ok(mut writer) = self.inner.writer.lock() {
            writer.take();
        }
    }

    async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        self.send(Box::new(move |connection| {
            // The caller may have gone away; the work is committed either way.
            let _ = reply.send(work(connection));
        }))?;
        answer.await.map_err(|_| {
            StoreError::Unavailable("the sqlite writer stopped mid-batch".to_owned())
        })?
    }

    /// Hands `job` to the writer thread.
    fn send(&self, job: WriteJob) -> StoreResult<()> {
        let sent = match self.inner.writer.lock() {
            Ok(writer) => writer.as_ref().is_some_and(|sender| sender.send(job).is_ok()),
            Err(_) => false,
        };
        if sent {
            Ok(())
        } else {
            Err(StoreError::Unavailable("the sqlite writer is stopped".to_owned()))
        }
    }

    /// Runs `work` on the writer thread and waits for it, off any async runtime    /// Runs `work` on the writer thread and waits for it, off any async runtime: what the
    /// journal's projector and its start-up replay use.
    fn write_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Box::new(move |connection| {
            let _ = reply.send(work(connection));
        }))?;
        answer.recv().map_err(|_| {
            StoreError::Unavailable("the sqlite writer stopped mid-batch".to_owned())
        })?
    }

    /// Writes committed journal frames into the tables in one transaction, with the last
    /// frame's sequence and place in the journal as the projection's mark.
    fn project(&self, frames: Vec<(Position, Arc<Outcome>)>) -> StoreResult<()> {
        let Some(last) = frames.last().map(|(position, _)| *position) else {
            return Ok(());
        };
        self.write_blocking(move |connection| {
            // The journal holds these frames durably and replays whatever the tables lose,
            // so their commit need not wait for the disk: the WAL is synced by the next
            // checkpoint or by the next commit of a row only the tables hold (keys,
            // webhooks, relay cursors), which stays `synchronous = FULL`.
            connection.pragma_update(None, "synchronous", "NORMAL").map_err(sql_error)?;
            let projected = (|| {
                let db_transaction = connection
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(sql_error)?;
                // An account several of these frames change is written once, as the last
                // of them left it: its row holds only its newest state.
                let mut last_change: std::collections::HashMap<&AccountId, usize> =
                    std::collections::HashMap::new();
                for (place, (_, outcome)) in frames.iter().enumerate() {
                    for account in &outcome.accounts_changed {
                        last_change.insert(&account.id, place);
                    }
                }
                for (place, (_, outcome)) in frames.iter().enumerate() {
                    write_outcome(&db_transaction, outcome, |id| {
                        last_change.get(id) == Some(&place)
                    })?;
                }
                let integer = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
                db_transaction
                    .execute(
                        "UPDATE projection SET frame = ?1, segment = ?2, frame_offset = ?3, \
                         checksum = ?4 WHERE id = 1",
                        rusqlite::params![
                            integer(last.sequence),
                            integer(last.segment),
                            integer(last.offset),
                            last.checksum.to_le_bytes().to_vec(),
                        ],
                    )
                    .map_err(sql_error)?;
                db_transaction.commit().map_err(sql_error)
            })();
            connection.pragma_update(None, "synchronous", "FULL").map_err(sql_error)?;
            projected
        })
    }

    /// The last journal frame the tables hold (0: none, or a ledger without a journal), and
    /// where it lies in the journal when that was recorded with it.
    fn projection_mark(&self) -> StoreResult<(u64, Option<Position>)> {
        let (frame, segment, offset, checksum): (i64, Option<i64>, Option<i64>, Option<Vec<u8>>) =
            open_reader(&self.inner.path)?
                .query_row(
                    "SELECT frame, segment, frame_offset, checksum FROM projection WHERE id = 1",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
                )
                .map_err(sql_error)?;
        let sequence = u64::try_from(frame).map_err(|_| {
            StoreError::Corrupt(format!("the projection's mark {frame} is negative"))
        })?;
        let position = match (segment, offset, checksum) {
            (Some(segment), Some(offset), Some(checksum)) if sequence > 0 => Some(Position {
                sequence,
                segment: u64::try_from(segment).unwrap_or(0),
                offset: u64::try_from(offset).unwrap_or(0),
                checksum: u128::from_le_bytes(checksum.try_into().map_err(|_| {
                    StoreError::Corrupt("the projection's journal checksum is not 16 bytes".into())
                })?),
            }),
            _ => None,
        };
        Ok((sequence, position))
    }

    /// Every account and the projection's mark, read in one transaction, for
    /// `JournalStore::verify`.
    async fn accounts_at_mark(&self) -> StoreResult<(u64, Vec<Account>)> {
        self.read(|connection| {
            let snapshot = connection.unchecked_transaction().map_err(sql_error)?;
            let mark: i64 = snapshot
                .query_row("SELECT frame FROM projection WHERE id = 1", [], |row| row.get(0))
                .map_err(sql_error)?;
            let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts");
            let mut statement = snapshot.prepare(&sql).map_err(sql_error)?;
            let rows = statement.query_map([], account_from_row).map_err(sql_error)?;
            let accounts = rows.map(decoded).collect::<StoreResult<Vec<_>>>()?;
            Ok((u64::try_from(mark).unwrap_or(0), accounts))
        })
        .await
    }

    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let permit = self
            .inner
            .read_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("read pool closed".to_owned()))?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let idle = inner.idle_readers.lock().ok().and_then(|mut idle| idle.pop());
            let connection = match idle {
                Some(connection) => connection,
                None => open_reader(&inner.path)?,
            };
            let result = work(&connection);
            if let Ok(mut idle) = inner.idle_readers.lock() {
                idle.push(connection);
            }
            result
        })
        .await
        .map_err(|error| StoreError::Unavailable(format!("read task failed: {error}")))?
    }
}

/// Starts the thread that copies committed pages from the WAL into the database file, so
/// the writer does not: it runs a passive checkpoint (one that never blocks the writer or
/// readers) after commits, at most once per `CHECKPOINT_PAUSE`. Nudge it through the
/// returned sender; it ends when the sender is dropped.
fn start_checkpointer(path: &Path) -> StoreResult<mpsc::SyncSender<()>> {
    let connection = open_writer(path)?;
    let (nudge, nudged) = mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("kopek-sqlite-ckpt".to_owned())
        .spawn(move || {
            while nudged.recv().is_ok() {
                let checkpoint =
                    connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                if let Err(error) = checkpoint {
                    tracing::warn!(%error, "WAL checkpoint failed; the next commit tries again");
                }
                std::thread::sleep(CHECKPOINT_PAUSE);
            }
        })
        .map_err(|error| StoreError::Unavailable(format!("start checkpoint thread: {error}")))?;
    Ok(nudge)
}

/// Takes the data directory's lock file, or fails if another process holds it.
/// Waits (at most `READ_ONLY_PROJECTION_WAIT_MAX`) until the tables hold every frame the
/// journal in `data_dir` holds now, so a read-only view opened beside a running journal-first
/// server sees every write acknowledged before it opened. A journal whose last frame never
/// reaches the tables (a torn frame the next start cuts off) only delays the open.
fn await_projection(reader: &Connection, data_dir: &Path) -> StoreResult<()> {
    let journal = kopek_journal::last_sequence(&data_dir.join(JOURNAL_DIR_NAME))
        .map_err(|error| StoreError::Unavailable(format!("read the journal: {error}")))?;
    let started = std::time::Instant::now();
    loop {
        let mark: i64 = reader
            .query_row("SELECT frame FROM projection WHERE id = 1", [], |row| row.get(0))
            .map_err(sql_error)?;
        if u64::try_from(mark).unwrap_or(0) >= journal {
            return Ok(());
        }
        if started.elapsed() > READ_ONLY_PROJECTION_WAIT_MAX {
            tracing::warn!(
                mark,
                journal,
                "the tables are behind the journal; reading them as they are"
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `data_dir` holds a journal (`JournalStore`'s): then only `JournalStore` opens it
/// for writing.
pub fn has_journal(data_dir: &Path) -> bool {
    std::fs::read_dir(data_dir.join(JOURNAL_DIR_NAME))
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false)
}

fn lock_data_dir(data_dir: &Path) -> StoreResult<std::fs::File> {
    let path = data_dir.join("kopek.lock");
    let file =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(
            |error| StoreError::Unavailable(format!("open {}: {error}", path.display())),
        )?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Unavailable(format!(
            "the ledger in {} is in use by another kopek process",
            data_dir.display()
        ))),
        Err(std::fs::TryLockError::Error(error)) => {
            Err(StoreError::Unavailable(format!("lock {}: {error}", path.display())))
        }
    }
}

/// Applies pending migrations to the ledger in `data_dir`; returns the versions applied.
pub fn migrate(data_dir: &Path) -> StoreResult<Vec<usize>> {
    std::fs::create_dir_all(data_dir).map_err(|error| {
        StoreError::Unavailable(format!("create data dir {}: {error}", data_dir.display()))
    })?;
    let _lock = lock_data_dir(data_dir)?;
    let mut connection = open_writer(&data_dir.join(DATABASE_FILE_NAME))?;
    migrate_connection(&mut connection)
}

fn open_writer(path: &Path) -> StoreResult<Connection> {
    let connection = Connection::open(path).map_err(sql_error)?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(sql_error)?;
    connection
        .execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = OFF;
             PRAGMA cache_size = -65536;
             PRAGMA temp_store = MEMORY;",
        )
        .map_err(sql_error)?;
    connection.set_prepared_statement_cache_capacity(64);
    Ok(connection)
}

fn open_reader(path: &Path) -> StoreResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let connection = Connection::open_with_flags(path, flags).map_err(sql_error)?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(sql_error)?;
    connection.execute_batch("PRAGMA cache_size = -16384;").map_err(sql_error)?;
    Ok(connection)
}

fn migrate_connection(connection: &mut Connection) -> StoreResult<Vec<usize>> {
    register_key_hash(connection)?;
    let db_transaction =
        connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_error)?;
    db_transaction
        .execute_batch("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
        .map_err(sql_error)?;
    let current: i64 = db_transaction
        .query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |row| row.get(0))
        .map_err(sql_error)?;
    let current = usize::try_from(current)
        .map_err(|_| StoreError::Corrupt("negative schema version".to_owned()))?;
    if current > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "the database has schema version {current}, newer than this kopek knows ({})",
            MIGRATIONS.len()
        )));
    }
    let mut applied = Vec::new();
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let version = index + 1;
        db_transaction.execute_batch(sql).map_err(sql_error)?;
        db_transaction
            .execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, strftime('%s', 'now'))",
                [version as i64],
            )
            .map_err(sql_error)?;
        applied.push(version);
    }
    db_transaction.commit().map_err(sql_error)?;
    Ok(applied)
}

/// A 64-bit hash of a transfer's idempotency key in its tenant: the journal store's filter of
/// keys that left memory (so a fresh key costs no projection read), and the `key_hash` column
/// of `transfers` by which the projection finds a key (migration 0013).
pub(crate) fn key_hash(tenant: &Tenant, key: &IdempotencyKey) -> u64 {
    key_hash_of(tenant.as_str().as_bytes(), key.as_str().as_bytes())
}

/// `key_hash` of a tenant and key as stored. They are joined on the stack and hashed in one
/// call (a streaming hasher sets up half a kilobyte of state per key); only an unusually long
/// pair streams.
pub(crate) fn key_hash_of(tenant: &[u8], key: &[u8]) -> u64 {
    let mut joined = [0u8; 256];
    let length = tenant.len() + 1 + key.len();
    if length <= joined.len() {
        joined[..tenant.len()].copy_from_slice(tenant);
        joined[tenant.len()] = 0xff;
        joined[tenant.len() + 1..length].copy_from_slice(key);
        return xxh3_64(&joined[..length]);
    }
    let mut hasher = Xxh3::new();
    hasher.update(tenant);
    hasher.update(&[0xff]);
    hasher.update(key);
    hasher.digest()
}

/// `key_hash` as the `transfers.key_hash` column stores it (the same 64 bits, signed).
fn key_hash_column(tenant: &str, key: &str) -> i64 {
    key_hash_column_of(tenant.as_bytes(), key.as_bytes())
}

fn key_hash_column_of(tenant: &[u8], key: &[u8]) -> i64 {
    i64::from_ne_bytes(key_hash_of(tenant, key).to_ne_bytes())
}

/// Registers `kopek_key_hash(tenant, key)`, `key_hash_column` in SQL, on a connection that
/// migrates: migration 0013 fills the column with it.
fn register_key_hash(connection: &Connection) -> StoreResult<()> {
    use rusqlite::functions::FunctionFlags;
    connection
        .create_scalar_function(
            "kopek_key_hash",
            2,
            FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
            |context| {
                let tenant = context.get_raw(0).as_bytes().map_err(|error| {
                    rusqlite::Error::UserFunctionError(format!("tenant: {error}").into())
                })?;
                let key = context.get_raw(1).as_bytes().map_err(|error| {
                    rusqlite::Error::UserFunctionError(format!("key: {error}").into())
                })?;
                Ok(key_hash_column_of(tenant, key))
            },
        )
        .map_err(sql_error)
}

/// The transfer a tenant's idempotency key names: found by the key's hash, compared in full.
fn transfer_by_key_in(
    connection: &Connection,
    tenant: &str,
    key: &str,
) -> StoreResult<Option<Transfer>> {
    let sql = format!(
        "SELECT {TRANSFER_COLUMNS} FROM transfers \
         WHERE key_hash = ?1 AND tenant = ?2 AND idempotency_key = ?3"
    );
    let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
    let row = statement
        .query_row(rusqlite::params![key_hash_column(tenant, key), tenant, key], transfer_from_row)
        .optional()
        .map_err(sql_error)?;
    row.map(|decoded| decoded.map_err(StoreError::Corrupt)).transpose()
}

fn load_state(connection: &Connection, keys: &Keys) -> StoreResult<State> {
    let mut transfers = BTreeMap::new();
    for (tenant, key) in &keys.idempotency_keys {
        if let Some(transfer) = transfer_by_key_in(connection, tenant.as_str(), key.as_str())? {
            transfers.insert(transfer.id, transfer);
        }
    }
    {
        let sql = format!("SELECT {TRANSFER_COLUMNS} FROM transfers WHERE id = ?1");
        let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
        for id in &keys.transfer_ids {
            let row = statement.query_row([id.to_string()], transfer_from_row).optional();
            if let Some(transfer) =
                row.map_err(sql_error)?.map(|decoded| decoded.map_err(StoreError::Corrupt))
            {
                let transfer = transfer?;
                transfers.insert(transfer.id, transfer);
            }
        }
    }
    // The other records of every conversion a loaded transfer belongs to.
    let conversions: BTreeSet<String> = transfers
        .values()
        .filter_map(|transfer: &Transfer| transfer.fx.as_ref().map(|fx| fx.quote_id.to_string()))
        .collect();
    if !conversions.is_empty() {
        let sql = format!("SELECT {TRANSFER_COLUMNS} FROM transfers WHERE quote_id = ?1");
        let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
        for quote in &conversions {
            let rows = statement.query_map([quote], transfer_from_row).map_err(sql_error)?;
            for transfer in rows {
                let transfer = decoded(transfer)?;
                transfers.insert(transfer.id, transfer);
            }
        }
    }
    let mut quotes = BTreeMap::new();
    {
        let sql = format!("SELECT {QUOTE_COLUMNS} FROM fx_quotes WHERE id = ?1");
        let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
        for id in &keys.quotes {
            if let Some(row) = statement
                .query_row([id.to_string()], quote_from_row)
                .optional()
                .map_err(sql_error)?
            {
                let quote = row.map_err(StoreError::Corrupt)?;
                quotes.insert(quote.id, quote);
            }
        }
        let sql = format!(
            "SELECT {QUOTE_COLUMNS} FROM fx_quotes WHERE tenant = ?1 AND idempotency_key = ?2"
        );
        let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
        for (tenant, key) in &keys.quote_keys {
            if let Some(row) = statement
                .query_row([tenant.as_str(), key.as_str()], quote_from_row)
                .optional()
                .map_err(sql_error)?
            {
                let quote = row.map_err(StoreError::Corrupt)?;
                quotes.insert(quote.id, quote);
            }
        }
    }
    let mut account_ids = keys.accounts.clone();
    for quote in quotes.values() {
        account_ids.extend(Keys::quote_accounts(quote));
    }
    for transfer in transfers.values() {
        account_ids.extend(transfer.debit_account.iter().cloned());
        account_ids.extend(transfer.credit_account.iter().cloned());
    }
    let last_user_number = if keys.allocated_users.is_empty() {
        0
    } else {
        let value: i64 = connection
            .prepare_cached("SELECT value FROM counters WHERE name = 'user_number'")
            .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
            .map_err(sql_error)?;
        let last = u64::try_from(value)
            .map_err(|_| StoreError::Corrupt("negative user counter".to_owned()))?;
        for (offset, (tenant, currency)) in keys.allocated_users.iter().enumerate() {
            let user = UserId::from_number(last + 1 + offset as u64).in_tenant(tenant);
            account_ids.insert(user.account(*currency));
        }
        last
    };
    let mut accounts = Vec::with_capacity(account_ids.len());
    let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1");
    let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
    for id in &account_ids {
        if let Some(decoded) =
            statement.query_row([id.as_str()], account_from_row).optional().map_err(sql_error)?
        {
            accounts.push(decoded.map_err(StoreError::Corrupt)?);
        }
    }
    let mut state = State::new(accounts, transfers.into_values());
    state.last_user_number = last_user_number;
    state.quotes = quotes;
    {
        let sql = format!(
            "SELECT {RATE_COLUMNS} FROM fx_rates WHERE tenant = ?1 AND base = ?2 AND quote = ?3 \
             ORDER BY valid_from DESC LIMIT 1"
        );
        let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
        for (tenant, base, quote) in &keys.rate_pairs {
            if let Some(row) = statement
                .query_row([tenant.as_str(), base.code(), quote.code()], rate_from_row)
                .optional()
                .map_err(sql_error)?
            {
                let rate = row.map_err(StoreError::Corrupt)?;
                state.rates.insert((tenant.clone(), *base, *quote), rate);
            }
        }
    }
    {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1");
        let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
        for id in &keys.users {
            if let Some(decoded) =
                statement.query_row([id.as_str()], user_from_row).optional().map_err(sql_error)?
            {
                let user = decoded.map_err(StoreError::Corrupt)?;
                state.users.insert(user.id.clone(), user);
            }
        }
    }
    {
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?1");
        let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
        for id in &keys.orders {
            if let Some(decoded) =
                statement.query_row([id.as_str()], order_from_row).optional().map_err(sql_error)?
            {
                let order = decoded.map_err(StoreError::Corrupt)?;
                state.orders.insert(order.id.clone(), order);
            }
        }
    }
    Ok(state)
}

/// Writes what a batch decided; of the accounts it changed, only those `write_change` names
/// (the projection leaves out accounts a later frame of the same transaction changes again).
/// Its events take the next sequences in their order; a posted transfer's `TransferPosted`
/// is carried by its transfers row when it renders back exactly (`carried`), every other
/// event is an outbox row.
fn write_outcome(
    connection: &Connection,
    outcome: &Outcome,
    write_change: impl Fn(&AccountId) -> bool,
) -> StoreResult<()> {
    let first = last_event_sequence_in(connection)? + 1;
    // The events a transfers row of this batch might carry: the first `TransferPosted` about
    // each transfer, with its sequence.
    let mut candidates: HashMap<TransferId, (usize, &Event)> = HashMap::new();
    for (place, event) in outcome.events.iter().enumerate() {
        if let (EventKind::TransferPosted, Subject::Transfer(transfer)) =
            (event.kind, &event.subject)
        {
            candidates.entry(transfer.id).or_insert((place, event));
        }
    }
    let mut carried = vec![false; outcome.events.len()];
    write_rows(connection, outcome, write_change, first, &candidates, &mut carried)?;
    write_events(connection, outcome, first, &carried)
}

/// The transfers row that carries the last event it holds (migration 0014), through the
/// `transfers_by_event` index: `SELECT <columns> {LAST_CARRIED}`.
const LAST_CARRIED: &str =
    "FROM transfers WHERE event_sequence IS NOT NULL ORDER BY event_sequence DESC LIMIT 1";

/// The last event's sequence in either table (0: none).
fn last_event_sequence_in(connection: &Connection) -> StoreResult<i64> {
    connection
        .prepare_cached(&format!(
            "SELECT MAX(COALESCE((SELECT MAX(sequence) FROM outbox), 0), \
             COALESCE((SELECT event_sequence {LAST_CARRIED}), 0))"
        ))
        .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
        .map_err(sql_error)
}

/// The outbox rows: each event no transfers row carries, at its sequence, in the record
/// encoding (payload format 2 or 3); its JSON document is rendered when read.
fn write_events(
    connection: &Connection,
    outcome: &Outcome,
    first: i64,
    carried: &[bool],
) -> StoreResult<()> {
    let mut statement = connection
        .prepare_cached(
            "INSERT INTO outbox (sequence, id, tenant, kind, subject_id, at, payload, actor, \
             traceparent) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .map_err(sql_error)?;
    let stored = |place: usize| !carried.get(place).copied().unwrap_or(false);
    // The transfers rows as this batch leaves them: an event about one of them refers to it
    // (payload format 3) rather than writing the transfer again.
    let rows: HashMap<TransferId, &Transfer> = if outcome
        .events
        .iter()
        .enumerate()
        .any(|(place, event)| stored(place) && matches!(event.subject, Subject::Transfer(_)))
    {
        outcome
            .transfers_inserted
            .iter()
            .chain(&outcome.transfers_updated)
            .map(|transfer| (transfer.id, transfer))
            .collect()
    } else {
        HashMap::new()
    };
    for (place, event) in outcome.events.iter().enumerate().filter(|(place, _)| stored(*place)) {
        let row = match &event.subject {
            Subject::Transfer(transfer) => rows.get(&transfer.id).copied(),
            _ => None,
        };
        let payload = payload::encode_event(event, row);
        // In the store's tests every event also reads back as the document it stands for.
        #[cfg(test)]
        assert_eq!(
            payload::decode(rusqlite::types::ValueRef::Blob(&payload), row.cloned()),
            Ok(kopek_store::codec::event_json(event)),
            "an outbox payload renders its event's document"
        );
        statement
            .execute(rusqlite::params![
                first + to_sql_int(place),
                event.id.to_string(),
                event.tenant.as_str(),
                event.kind.as_str(),
                event.subject_id(),
                event.at.as_unix_micros(),
                payload,
                event.actor,
                event.trace,
            ])
            .map_err(sql_error)?;
    }
    Ok(())
}

/// Every row of a batch but its outbox events (`write_outcome`); a transfers row carries the
/// event of `candidates` about it when it can, and marks it in `carried`.
fn write_rows(
    connection: &Connection,
    outcome: &Outcome,
    write_change: impl Fn(&AccountId) -> bool,
    first_event: i64,
    candidates: &HashMap<TransferId, (usize, &Event)>,
    carried: &mut [bool],
) -> StoreResult<()> {
    let run = |sql: &str, values: Vec<Value>| -> StoreResult<usize> {
        let mut statement = connection.prepare_cached(sql).map_err(sql_error)?;
        statement.execute(params(&values).as_slice()).map_err(sql_error)
    };
    let insert_account = format!(
        "INSERT INTO accounts ({ACCOUNT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
    );
    for account in &outcome.accounts_opened {
        run(&insert_account, account_params(account))?;
    }
    let mut update_account = connection
        .prepare_cached(
            "UPDATE accounts SET overdraft_limit = ?1, status = ?2, posted = ?3, pending_out = ?4, \
             pending_in = ?5, updated_at = ?6 WHERE id = ?7",
        )
        .map_err(sql_error)?;
    for account in outcome.accounts_changed.iter().filter(|account| write_change(&account.id)) {
        let limit = match account.overdraft {
            Overdraft::Limited(limit) => Some(limit),
            Overdraft::Unbounded => None,
        };
        let changed = update_account
            .execute(rusqlite::params![
                limit,
                account.status.as_str(),
                account.balance.posted,
                account.balance.pending_out,
                account.balance.pending_in,
                account.updated_at.as_unix_micros(),
                account.id.as_str(),
            ])
            .map_err(sql_error)?;
        if changed != 1 {
            return Err(StoreError::Invariant(format!(
                "account {} to update is missing",
                account.id
            )));
        }
    }
    if !outcome.transfers_inserted.is_empty() || !outcome.entries.is_empty() {
        let events = Candidates { first: first_event, candidates, carried };
        insert_transfers(connection, &outcome.transfers_inserted, &outcome.entries, events)?;
    }
    for transfer in &outcome.transfers_updated {
        let values = vec![
            Value::Text(transfer.status.as_str().to_owned()),
            Value::Integer(transfer.captured_amount),
            Value::Integer(transfer.updated_at.as_unix_micros()),
            Value::Text(transfer.id.to_string()),
        ];
        run(
            "UPDATE transfers SET status = ?1, captured_amount = ?2, updated_at = ?3 WHERE id = ?4",
            values,
        )?;
    }
    for user in &outcome.users_created {
        let values = vec![
            Value::Text(user.id.to_string()),
            Value::Text(user.name.clone()),
            Value::Integer(user.created_at.as_unix_micros()),
            Value::Text(user.tenant.to_string()),
        ];
        run("INSERT INTO users (id, name, created_at, tenant) VALUES (?1, ?2, ?3, ?4)", values)?;
    }
    if let Some(number) = outcome.last_user_number {
        let value = i64::try_from(number)
            .map_err(|_| StoreError::Invariant("user counter overflow".to_owned()))?;
        run(
            "UPDATE counters SET value = ?1 WHERE name = 'user_number'",
            vec![Value::Integer(value)],
        )?;
    }
    let insert_order = format!(
        "INSERT INTO orders ({ORDER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
    );
    for order in &outcome.orders_created {
        run(&insert_order, order_params(order))?;
    }
    for order in &outcome.orders_changed {
        let mut values = order_params(order);
        // Everything but the id goes in the SET; the id is the last parameter.
        let id = values.remove(0);
        values.push(id);
        run(
            "UPDATE orders SET tenant = ?1, user_id = ?2, amount = ?3, currency = ?4, status = ?5, \
             failure_code = ?6, failure_message = ?7, payment_id = ?8, created_at = ?9, updated_at = ?10 \
             WHERE id = ?11",
            values,
        )?;
    }
    let insert_rate =
        format!("INSERT INTO fx_rates ({RATE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
    for rate in &outcome.rates_set {
        connection
            .prepare_cached(&insert_rate)
            .and_then(|mut statement| statement.execute(params(&rate_params(rate)).as_slice()))
            .map_err(taken(format!("rate {}/{} valid from that time", rate.base, rate.quote)))?;
    }
    let insert_quote =
        format!("INSERT INTO fx_quotes ({QUOTE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
    for quote in &outcome.quotes_created {
        connection
            .prepare_cached(&insert_quote)
            .and_then(|mut statement| statement.execute(params(&quote_params(quote)).as_slice()))
            .map_err(taken(format!("quote {}", quote.id)))?;
    }
    for quote in &outcome.quotes_used {
        let changed = run(
            "UPDATE fx_quotes SET used_by = ?1, used_at = ?2 WHERE id = ?3 AND used_by IS NULL",
            vec![
                quote.used_by.map_or(Value::Null, |id| Value::Text(id.to_string())),
                quote.used_at.map_or(Value::Null, |at| Value::Integer(at.as_unix_micros())),
                Value::Text(quote.id.to_string()),
            ],
        )?;
        if changed != 1 {
            return Err(StoreError::Conflict(format!("quote {} was used meanwhile", quote.id)));
        }
    }
    for mark in &outcome.inbox {
        run(
            "INSERT OR IGNORE INTO inbox (consumer, event_id, processed_at) \
             VALUES (?1, ?2, CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER))",
            vec![Value::Text(mark.consumer.clone()), Value::Text(mark.event_id.clone())],
        )?;
    }
    Ok(())
}

/// The events a batch's transfers rows may carry (`write_outcome`).
struct Candidates<'a, 'e> {
    /// The sequence of the batch's first event.
    first: i64,
    /// By transfer: the place of its `TransferPosted` among the batch's events, and the event.
    candidates: &'a HashMap<TransferId, (usize, &'e Event)>,
    /// By place: whether a row carries the event.
    carried: &'a mut [bool],
}

/// Inserts transfers, each with the balances after its entries and the event it carries (if
/// any), and a posting per entry (migrations 0013 and 0014): the most numerous rows, bound
/// from borrowed values with no list of owned values built per row.
fn insert_transfers(
    connection: &Connection,
    transfers: &[Transfer],
    entries: &[Entry],
    events: Candidates<'_, '_>,
) -> StoreResult<()> {
    let side = |entry: &Entry| usize::from(entry.direction == Direction::Credit);
    let mut balances: HashMap<TransferId, [Option<i64>; 2]> =
        HashMap::with_capacity(entries.len() / 2);
    for entry in entries {
        balances.entry(entry.transfer_id).or_default()[side(entry)] = Some(entry.balance_after);
    }
    let placeholders: Vec<String> = (1..=37).map(|index| format!("?{index}")).collect();
    let sql = format!(
        "INSERT INTO transfers ({TRANSFER_COLUMNS}, {CARRIED_COLUMNS}, key_hash) VALUES ({})",
        placeholders.join(", ")
    );
    let mut insert = connection.prepare_cached(&sql).map_err(sql_error)?;
    let mut numbers: HashMap<TransferId, i64> = HashMap::with_capacity(balances.len());
    for transfer in transfers {
        // Most transfers have no metadata, and `{}` needs no rendering.
        let metadata = if transfer.details.metadata.is_empty() {
            std::borrow::Cow::Borrowed("{}")
        } else {
            std::borrow::Cow::Owned(metadata_to_json(&transfer.details.metadata))
        };
        let (quote_id, fx) = transfer_fx_columns(transfer);
        let mut fingerprint = [0; FINGERPRINT_STORED_LEN];
        let after = balances.get(&transfer.id).copied().unwrap_or_default();
        let carried = events.candidates.get(&transfer.id).and_then(|(place, event)| {
            let carried =
                carried::carry(event, transfer, after, events.first + to_sql_int(*place))?;
            if let Some(mark) = events.carried.get_mut(*place) {
                *mark = true;
            }
            Some(carried)
        });
        let side = |index: usize| carried.as_ref().map(|carried| carried.sides[index]);
        let [debit, credit] = [side(0), side(1)];
        let (mut id, mut event_id) = ([0; 26], [0; 26]);
        let event_id = carried.as_ref().map(|carried| carried.id.0.text(&mut event_id));
        insert
            .execute(rusqlite::params![
                transfer.id.0.text(&mut id),
                transfer.tenant.as_str(),
                transfer.idempotency_key.as_str(),
                transfer.fingerprint.stored(&mut fingerprint),
                transfer.kind.as_str(),
                transfer.action.as_str(),
                transfer.debit_account.as_ref().map(AccountId::as_str),
                transfer.credit_account.as_ref().map(AccountId::as_str),
                transfer.amount,
                transfer.currency.as_ref().map(Currency::code),
                transfer.pending_id.map(|id| id.to_string()),
                transfer.status.as_str(),
                transfer.error.as_ref().map(|error| error.code.as_str()),
                transfer.error.as_ref().map(|error| error.message.as_str()),
                transfer.expires_at.map(Timestamp::as_unix_micros),
                transfer.captured_amount,
                transfer.details.category.as_str(),
                transfer.details.description.as_str(),
                &*metadata,
                transfer.effective_at.as_unix_micros(),
                transfer.committed_at.as_unix_micros(),
                transfer.updated_at.as_unix_micros(),
                quote_id,
                fx,
                after[0],
                after[1],
                carried.as_ref().map(|carried| carried.sequence),
                event_id,
                carried.as_ref().and_then(|carried| carried.actor.as_deref()),
                carried.as_ref().and_then(|carried| carried.trace.as_deref()),
                debit.map(|side| side.pending_out),
                debit.map(|side| side.pending_in),
                debit.and_then(|side| side.limit),
                credit.map(|side| side.pending_out),
                credit.map(|side| side.pending_in),
                credit.and_then(|side| side.limit),
                key_hash_column(transfer.tenant.as_str(), transfer.idempotency_key.as_str()),
            ])
            .map_err(sql_error)?;
        if after[0].is_some() || after[1].is_some() {
            numbers.insert(transfer.id, connection.last_insert_rowid());
        }
    }
    let mut account_number = connection
        .prepare_cached("SELECT number FROM accounts WHERE id = ?1")
        .map_err(sql_error)?;
    let mut insert_posting = connection
        .prepare_cached("INSERT INTO postings (account, sequence) VALUES (?1, ?2)")
        .map_err(sql_error)?;
    for entry in entries {
        let Some(number) = numbers.get(&entry.transfer_id) else {
            return Err(StoreError::Invariant(format!(
                "an entry names transfer {}, which this batch does not insert",
                entry.transfer_id
            )));
        };
        let account: i64 = account_number
            .query_row([entry.account_id.as_str()], |row| row.get(0))
            .optional()
            .map_err(sql_error)?
            .ok_or_else(|| {
                StoreError::Invariant(format!(
                    "an entry names account {}, which is missing",
                    entry.account_id
                ))
            })?;
        let sequence = number * 2 + i64::try_from(side(entry)).unwrap_or(0);
        insert_posting.execute([account, sequence]).map_err(sql_error)?;
    }
    Ok(())
}

/// One consumer effect, inside the consumer's transaction. Totals use checked arithmetic:
/// SQLite would silently turn an overflowing integer into a float.
fn apply_effect(connection: &Connection, effect: &Effect, now: Timestamp) -> StoreResult<()> {
    match effect {
        Effect::Deliver {
            delivery_id,
            subscription_id,
            event_id,
            event_type,
            body,
            max_attempts,
        } => {
            connection
                .prepare_cached(
                    "INSERT OR IGNORE INTO webhook_deliveries (id, subscription_id, event_id, event_type, body, \
                     status, attempts, dead_after, next_attempt_at, claimed_until, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?7, 0, ?7, ?7)",
                )
                .and_then(|mut statement| {
                    statement.execute(rusqlite::params![
                        delivery_id,
                        subscription_id,
                        event_id,
                        event_type,
                        body,
                        i64::from(*max_attempts),
                        now.as_unix_micros()
                    ])
                })
                .map_err(sql_error)?;
            Ok(())
        }
        Effect::Spend { tenant, user, category, currency, amount_minor } => {
            let current: Option<(i64, i64)> = connection
                .prepare_cached(
                    "SELECT total_minor, transfers FROM spending \
                     WHERE tenant = ?1 AND user_id = ?2 AND category = ?3 AND currency = ?4",
                )
                .and_then(|mut statement| {
                    statement
                        .query_row([tenant, user, category, currency], |row| {
                            Ok((row.get(0)?, row.get(1)?))
                        })
                        .optional()
                })
                .map_err(sql_error)?;
            let (total, transfers) = current.unwrap_or((0, 0));
            let total = total.checked_add(*amount_minor).ok_or_else(|| {
                StoreError::Invariant(format!(
                    "the spending total of {user} in {category:?} {currency} would pass the largest amount"
                ))
            })?;
            connection
                .prepare_cached(
                    "INSERT INTO spending (tenant, user_id, category, currency, total_minor, transfers, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (tenant, user_id, category, currency) \
                     DO UPDATE SET total_minor = excluded.total_minor, transfers = excluded.transfers, \
                     updated_at = excluded.updated_at",
                )
                .and_then(|mut statement| {
                    statement.execute(rusqlite::params![
                        tenant,
                        user,
                        category,
                        currency,
                        total,
                        transfers.saturating_add(1),
                        now.as_unix_micros()
                    ])
                })
                .map_err(sql_error)?;
            Ok(())
        }
    }
}

fn to_sql_int(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The first `limit` of two lists that are each in order of `key`, in that order.
fn merged<T>(first: Vec<T>, second: Vec<T>, limit: usize, key: impl Fn(&T) -> u64) -> Vec<T> {
    let mut merged = Vec::with_capacity(limit.min(first.len() + second.len()));
    let (mut first, mut second) = (first.into_iter().peekable(), second.into_iter().peekable());
    while merged.len() < limit {
        let take_first = match (first.peek(), second.peek()) {
            (Some(a), Some(b)) => key(a) <= key(b),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        merged.extend(if take_first { first.next() } else { second.next() });
    }
    merged
}

#[async_trait]
impl Store for SqliteStore {
    async fn write_batch(&self, keys: Keys, decide: Decide) -> StoreResult<Committed> {
        self.write(move |connection| {
            let db_transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql_error)?;
            let state = load_state(&db_transaction, &keys)?;
            let outcome = decide(state).map_err(StoreError::Invariant)?;
            write_outcome(&db_transaction, &outcome, |_| true)?;
            db_transaction.commit().map_err(sql_error)?;
            Ok(Committed::new(outcome))
        })
        .await
    }

    async fn account(&self, id: &AccountId) -> StoreResult<Option<Account>> {
        let id = id.to_string();
        self.read(move |connection| {
            let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1");
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            let row = statement.query_row([id], account_from_row).optional().map_err(sql_error)?;
            row.map(|decoded| decoded.map_err(StoreError::Corrupt)).transpose()
        })
        .await
    }

    async fn list_accounts(
        &self,
        tenant: Option<&str>,
        owner: Option<&str>,
        after: Option<&AccountId>,
        limit: usize,
    ) -> StoreResult<Vec<Account>> {
        let tenant = tenant.map(str::to_owned);
        let owner = owner.map(str::to_owned);
        let after = after.map(ToString::to_string).unwrap_or_default();
        let limit = to_sql_int(limit.min(kopek_core::limits::PAGE_SIZE_MAX));
        self.read(move |connection| {
            let sql = format!(
                "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE (?1 IS NULL OR owner = ?1) AND id > ?2 \
                 AND (?4 IS NULL OR tenant = ?4) ORDER BY id LIMIT ?3"
            );
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            let rows = statement
                .query_map(rusqlite::params![owner, after, limit, tenant], account_from_row)
                .map_err(sql_error)?;
            rows.map(decoded).collect()
        })
        .await
    }

    async fn transfer(&self, id: TransferId) -> StoreResult<Option<Transfer>> {
        self.read(move |connection| {
            let sql = format!("SELECT {TRANSFER_COLUMNS} FROM transfers WHERE id = ?1");
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            let row = statement
                .query_row([id.to_string()], transfer_from_row)
                .optional()
                .map_err(sql_error)?;
            row.map(|decoded| decoded.map_err(StoreError::Corrupt)).transpose()
        })
        .await
    }

    async fn transfer_by_key(
        &self,
        tenant: &Tenant,
        key: &IdempotencyKey,
    ) -> StoreResult<Option<Transfer>> {
        let (tenant, key) = (tenant.to_string(), key.to_string());
        self.read(move |connection| transfer_by_key_in(connection, &tenant, &key)).await
    }

    async fn entries(
        &self,
        account: &AccountId,
        after: Option<u64>,
        limit: usize,
    ) -> StoreResult<Page<StoredEntry>> {
        let account = account.to_string();
        let after = i64::try_from(after.unwrap_or(0)).unwrap_or(i64::MAX);
        let limit = limit.clamp(1, kopek_core::limits::PAGE_SIZE_MAX);
        self.read(move |connection| {
            let sql = format!(
                "SELECT {ENTRY_COLUMNS} FROM entries WHERE account_id = ?1 AND sequence > ?2 ORDER BY sequence LIMIT ?3"
            );
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            // One extra row tells whether another page follows.
            let rows = statement
                .query_map(rusqlite::params![account, after, to_sql_int(limit + 1)], entry_from_row)
                .map_err(sql_error)?;
            let mut items = rows.map(decoded).collect::<StoreResult<Vec<_>>>()?;
            let next_cursor = if items.len() > limit {
                items.truncate(limit);
                items.last().map(|entry| entry.sequence)
            } else {
                None
            };
            Ok(Page { items, next_cursor })
        })
        .await
    }

    async fn balance_before(
        &self,
        account: &AccountId,
        before: Timestamp,
    ) -> StoreResult<Option<i64>> {
        let account = account.to_string();
        self.read(move |connection| {
            let exists = connection
                .prepare_cached("SELECT 1 FROM accounts WHERE id = ?1")
                .and_then(|mut statement| statement.query_row([&account], |_| Ok(())).optional())
                .map_err(sql_error)?;
            if exists.is_none() {
                return Ok(None);
            }
            // The newest balance, less what took effect at or after `before`. An entry takes
            // effect at most `EFFECTIVE_AT_AHEAD_SECONDS_MAX` after its commit, and commit
            // times only grow with the sequence: the walk back stops at the first entry
            // committed before `before` less that bound.
            let before = before.as_unix_micros();
            let committed_since = before
                .saturating_sub(kopek_core::limits::EFFECTIVE_AT_AHEAD_SECONDS_MAX * 1_000_000);
            let mut statement = connection
                .prepare_cached(
                    "SELECT direction, amount, balance_after, effective_at, committed_at \
                     FROM entries WHERE account_id = ?1 ORDER BY sequence DESC",
                )
                .map_err(sql_error)?;
            let mut rows = statement.query([&account]).map_err(sql_error)?;
            let mut balance: Option<i128> = None;
            let mut later: i128 = 0;
            while let Some(row) = rows.next().map_err(sql_error)? {
                let balance_after: i64 = row.get(2).map_err(sql_error)?;
                balance.get_or_insert(i128::from(balance_after));
                let committed_at: i64 = row.get(4).map_err(sql_error)?;
                if committed_at < committed_since {
                    break;
                }
                let effective_at: i64 = row.get(3).map_err(sql_error)?;
                if effective_at >= before {
                    let direction: String = row.get(0).map_err(sql_error)?;
                    let amount = i128::from(row.get::<_, i64>(1).map_err(sql_error)?);
                    later += if direction == "credit" { amount } else { -amount };
                }
            }
            let sum = balance.unwrap_or(0) - later;
            i64::try_from(sum).map(Some).map_err(|_| {
                StoreError::Corrupt(format!(
                    "the balance of {account} before a time is out of range"
                ))
            })
        })
        .await
    }

    async fn holds_due(&self, now: Timestamp, limit: usize) -> StoreResult<Vec<TransferId>> {
        self.read(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT id FROM transfers WHERE status = 'pending' AND expires_at <= ?1 ORDER BY expires_at LIMIT ?2",
                )
                .map_err(sql_error)?;
            let rows = statement
                .query_map(rusqlite::params![now.as_unix_micros(), to_sql_int(limit)], |row| row.get::<_, String>(0))
                .map_err(sql_error)?;
            rows.map(|row| {
                let text = row.map_err(sql_error)?;
                TransferId::parse(&text).map_err(|rejection| StoreError::Corrupt(rejection.message))
            })
            .collect()
        })
        .await
    }

    async fn next_hold_expiry(&self) -> StoreResult<Option<Timestamp>> {
        self.read(|connection| {
            let micros: Option<i64> = connection
                .query_row(
                    "SELECT MIN(expires_at) FROM transfers WHERE status = 'pending'",
                    [],
                    |row| row.get(0),
                )
                .map_err(sql_error)?;
            Ok(micros.map(Timestamp::from_unix_micros))
        })
        .await
    }

    async fn events_after(
        &self,
        tenant: Option<&str>,
        sequence: u64,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        let after = i64::try_from(sequence).unwrap_or(i64::MAX);
        let tenant = tenant.map(str::to_owned);
        self.read(move |connection| {
            // One snapshot for both tables: two statements outside a transaction could see
            // two commits apart, and a page would skip an outbox event committed between them.
            let snapshot = connection.unchecked_transaction().map_err(sql_error)?;
            // Two statements per table rather than one with `?3 IS NULL OR`: each keeps its
            // own index (the sequence for the feed, tenant and sequence for one tenant's page).
            let filter = if tenant.is_some() { "tenant = ?3 AND" } else { "?3 IS NULL AND" };
            // The page ends at the `limit`-th sequence of the two tables together, found from
            // their indexes alone; only the events it keeps are then read and rendered.
            let sequences = |sql: &str| -> StoreResult<Vec<u64>> {
                let mut statement = snapshot.prepare_cached(sql).map_err(sql_error)?;
                let rows = statement
                    .query_map(rusqlite::params![after, to_sql_int(limit), tenant], |row| {
                        row.get::<_, i64>(0)
                    })
                    .map_err(sql_error)?;
                rows.map(|row| Ok(u64::try_from(row.map_err(sql_error)?).unwrap_or(0))).collect()
            };
            let stored = sequences(&format!(
                "SELECT sequence FROM outbox WHERE {filter} sequence > ?1 ORDER BY sequence LIMIT ?2"
            ))?;
            let carried = sequences(&format!(
                "SELECT event_sequence FROM transfers WHERE {filter} event_sequence > ?1 \
                 ORDER BY event_sequence LIMIT ?2"
            ))?;
            let Some(&last) = merged(stored, carried, limit, |sequence| *sequence).last() else {
                return Ok(Vec::new());
            };
            let parameters = rusqlite::params![after, i64::try_from(last).unwrap_or(i64::MAX), tenant];
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM outbox WHERE {filter} sequence > ?1 \
                 AND sequence <= ?2 ORDER BY sequence"
            );
            let mut statement = snapshot.prepare_cached(&sql).map_err(sql_error)?;
            let sql = format!("SELECT {TRANSFER_COLUMNS} FROM transfers WHERE id = ?1");
            let mut transfer = snapshot.prepare_cached(&sql).map_err(sql_error)?;
            let mut transfer_row =
                |id: &str| transfer.query_row([id], transfer_from_row).optional();
            let mut rows = statement.query(parameters).map_err(sql_error)?;
            let mut stored = Vec::new();
            while let Some(row) = rows.next().map_err(sql_error)? {
                stored.push(decoded(event_from_row(row, &mut transfer_row))?);
            }
            // The events transfers rows carry (migration 0014), in the same order.
            let sql = format!(
                "SELECT {TRANSFER_COLUMNS}, {CARRIED_COLUMNS} FROM transfers \
                 WHERE {filter} event_sequence > ?1 AND event_sequence <= ?2 \
                 ORDER BY event_sequence"
            );
            let mut statement = snapshot.prepare_cached(&sql).map_err(sql_error)?;
            let mut rows = statement.query(parameters).map_err(sql_error)?;
            let mut carried = Vec::new();
            while let Some(row) = rows.next().map_err(sql_error)? {
                carried.push(decoded(carried_event_from_row(row))?);
            }
            Ok(merged(stored, carried, limit, |event| event.sequence))
        })
        .await
    }

    async fn last_event_sequence(&self) -> StoreResult<u64> {
        self.read(|connection| Ok(u64::try_from(last_event_sequence_in(connection)?).unwrap_or(0)))
            .await
    }

    async fn watermark(&self) -> StoreResult<Watermark> {
        self.read(|connection| {
            // Every change has its event, written in commit order with ids from the one
            // generator: the last event's time and id (in the outbox or on the transfer row
            // that carries it) are the newest of theirs. Transfers are asked too (their ids
            // come from the same generator, at the edges) through their primary key; no part
            // of this scans a table.
            let micros: Option<i64> = connection
                .query_row(
                    &format!(
                        "SELECT MAX(t) FROM (SELECT at AS t FROM outbox WHERE sequence = (SELECT MAX(sequence) FROM outbox) \
                         UNION ALL SELECT MAX(updated_at) FROM accounts \
                         UNION ALL SELECT * FROM (SELECT committed_at {LAST_CARRIED}))"
                    ),
                    [],
                    |row| row.get(0),
                )
                .map_err(sql_error)?;
            let id: Option<String> = connection
                .query_row(
                    &format!(
                        "SELECT MAX(i) FROM (SELECT MAX(id) AS i FROM transfers \
                         UNION ALL SELECT id FROM outbox WHERE sequence = (SELECT MAX(sequence) FROM outbox) \
                         UNION ALL SELECT * FROM (SELECT event_id {LAST_CARRIED}))"
                    ),
                    [],
                    |row| row.get(0),
                )
                .map_err(sql_error)?;
            let largest_id = id
                .map(|text| Ulid::parse(&text).map_err(|rejection| StoreError::Corrupt(rejection.message)))
                .transpose()?;
            Ok(Watermark { committed_at: micros.map(Timestamp::from_unix_micros), largest_id })
        })
        .await
    }

    async fn user(&self, id: &UserId) -> StoreResult<Option<User>> {
        let id = id.to_string();
        self.read(move |connection| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1");
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            let row = statement.query_row([id], user_from_row).optional().map_err(sql_error)?;
            row.map(|decoded| decoded.map_err(StoreError::Corrupt)).transpose()
        })
        .await
    }

    async fn order(&self, id: &OrderId) -> StoreResult<Option<Order>> {
        let id = id.to_string();
        self.read(move |connection| {
            let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?1");
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            let row = statement.query_row([id], order_from_row).optional().map_err(sql_error)?;
            row.map(|decoded| decoded.map_err(StoreError::Corrupt)).transpose()
        })
        .await
    }

    async fn orders_of_user(&self, user: &UserId, limit: usize) -> StoreResult<Vec<Order>> {
        let user = user.to_string();
        let limit = to_sql_int(limit.min(kopek_core::limits::PAGE_SIZE_MAX));
        self.read(move |connection| {
            let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = ?1 ORDER BY created_at, id LIMIT ?2");
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            let rows = statement.query_map(rusqlite::params![user, limit], order_from_row).map_err(sql_error)?;
            rows.map(decoded).collect()
        })
        .await
    }

    async fn pending_orders(&self, limit: usize) -> StoreResult<Vec<Order>> {
        let limit = to_sql_int(limit);
        self.read(move |connection| {
            let sql =
                format!("SELECT {ORDER_COLUMNS} FROM orders WHERE status = 'PENDING' ORDER BY created_at LIMIT ?1");
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            let rows = statement.query_map([limit], order_from_row).map_err(sql_error)?;
            rows.map(decoded).collect()
        })
        .await
    }

    async fn verify(&self) -> StoreResult<VerifyReport> {
        self.read(verify::verify_books).await
    }

    async fn relay_claim(
        &self,
        sink: &str,
        holder: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> StoreResult<Option<u64>> {
        let (sink, holder) = (sink.to_owned(), holder.to_owned());
        self.write(move |connection| {
            let sequence: Option<i64> = connection
                .query_row(
                    "INSERT INTO relay_cursors (sink, sequence, holder, lease_until) VALUES (?1, 0, ?2, ?4) \
                     ON CONFLICT (sink) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until \
                     WHERE relay_cursors.holder = excluded.holder OR relay_cursors.lease_until < ?3 \
                     RETURNING sequence",
                    rusqlite::params![sink, holder, now.as_unix_micros(), until.as_unix_micros()],
                    |row| row.get(0),
                )
                .optional()
                .map_err(sql_error)?;
            Ok(sequence.map(|sequence| u64::try_from(sequence).unwrap_or(0)))
        })
        .await
    }

    async fn relay_advance(
        &self,
        sink: &str,
        holder: &str,
        sequence: u64,
        until: Timestamp,
    ) -> StoreResult<bool> {
        let (sink, holder) = (sink.to_owned(), holder.to_owned());
        let sequence = i64::try_from(sequence).unwrap_or(i64::MAX);
        self.write(move |connection| {
            let changed = connection
                .execute(
                    "UPDATE relay_cursors SET sequence = MAX(sequence, ?3), lease_until = ?4 \
                     WHERE sink = ?1 AND holder = ?2",
                    rusqlite::params![sink, holder, sequence, until.as_unix_micros()],
                )
                .map_err(sql_error)?;
            Ok(changed == 1)
        })
        .await
    }

    async fn inbox_contains(&self, consumer: &str, event_id: &str) -> StoreResult<bool> {
        let (consumer, event_id) = (consumer.to_owned(), event_id.to_owned());
        self.read(move |connection| {
            let mut statement = connection
                .prepare_cached("SELECT 1 FROM inbox WHERE consumer = ?1 AND event_id = ?2")
                .map_err(sql_error)?;
            statement.exists([consumer, event_id]).map_err(sql_error)
        })
        .await
    }

    async fn consume(
        &self,
        consumer: &str,
        items: Vec<Consumed>,
        now: Timestamp,
    ) -> StoreResult<usize> {
        let consumer = consumer.to_owned();
        self.write(move |connection| {
            let db_transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql_error)?;
            let mut new = 0;
            for item in &items {
                let inserted = db_transaction
                    .prepare_cached(
                        "INSERT OR IGNORE INTO inbox (consumer, event_id, processed_at) VALUES (?1, ?2, ?3)",
                    )
                    .and_then(|mut statement| {
                        statement.execute(rusqlite::params![
                            consumer,
                            item.event_id,
                            now.as_unix_micros()
                        ])
                    })
                    .map_err(sql_error)?;
                if inserted == 0 {
                    continue;
                }
                new += 1;
                for effect in &item.effects {
                    apply_effect(&db_transaction, effect, now)?;
                }
            }
            db_transaction.commit().map_err(sql_error)?;
            Ok(new)
        })
        .await
    }

    async fn spending(&self, tenant: &str, user: &str) -> StoreResult<Vec<SpendingTotal>> {
        let (tenant, user) = (tenant.to_owned(), user.to_owned());
        self.read(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT category, currency, total_minor, transfers, updated_at FROM spending \
                     WHERE tenant = ?1 AND user_id = ?2 ORDER BY category, currency",
                )
                .map_err(sql_error)?;
            let rows = statement
                .query_map([tenant, user], |row| {
                    Ok(SpendingTotal {
                        category: row.get(0)?,
                        currency: row.get(1)?,
                        total_minor: row.get(2)?,
                        transfers: u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
                        updated_at: Timestamp::from_unix_micros(row.get(4)?),
                    })
                })
                .map_err(sql_error)?;
            rows.map(|row| row.map_err(sql_error)).collect()
        })
        .await
    }

    async fn create_webhook(&self, webhook: &Webhook) -> StoreResult<()> {
        let webhook = webhook.clone();
        self.write(move |connection| {
            connection
                .execute(
                    "INSERT INTO webhook_subscriptions (id, tenant, url, event_types, secret, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    rusqlite::params![
                        webhook.id,
                        webhook.tenant,
                        webhook.url,
                        webhook.event_types.join(","),
                        webhook.secret,
                        webhook.created_at.as_unix_micros()
                    ],
                )
                // The id is taken: the caller tells a replay from a reused key.
                .map_err(taken(format!("webhook {}", webhook.id)))?;
            Ok(())
        })
        .await
    }

    async fn webhooks(&self, tenant: Option<&str>) -> StoreResult<Vec<Webhook>> {
        let tenant = tenant.map(str::to_owned);
        self.read(move |connection| {
            let sql = format!(
                "SELECT {WEBHOOK_COLUMNS} FROM webhook_subscriptions \
                 WHERE deleted_at IS NULL AND (?1 IS NULL OR tenant = ?1) ORDER BY created_at, id"
            );
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            let rows = statement.query_map([tenant], webhook_from_row).map_err(sql_error)?;
            rows.map(|row| row.map_err(sql_error)).collect()
        })
        .await
    }

    async fn delete_webhook(&self, tenant: &str, id: &str, now: Timestamp) -> StoreResult<bool> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.write(move |connection| {
            let changed = connection
                .execute(
                    "UPDATE webhook_subscriptions SET deleted_at = ?3 \
                     WHERE tenant = ?1 AND id = ?2 AND deleted_at IS NULL",
                    rusqlite::params![tenant, id, now.as_unix_micros()],
                )
                .map_err(sql_error)?;
            Ok(changed == 1)
        })
        .await
    }

    async fn claim_deliveries(
        &self,
        now: Timestamp,
        until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        let limit = to_sql_int(limit);
        self.write(move |connection| {
            let db_transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql_error)?;
            let ids: Vec<String> = {
                let mut statement = db_transaction
                    .prepare_cached(
                        "UPDATE webhook_deliveries SET claimed_until = ?2 WHERE id IN (\
                         SELECT d.id FROM webhook_deliveries d JOIN webhook_subscriptions s ON s.id = d.subscription_id \
                         WHERE d.status = 'pending' AND d.next_attempt_at <= ?1 AND d.claimed_until <= ?1 \
                         AND s.deleted_at IS NULL ORDER BY d.next_attempt_at LIMIT ?3) RETURNING id",
                    )
                    .map_err(sql_error)?;
                let rows = statement
                    .query_map(
                        rusqlite::params![now.as_unix_micros(), until.as_unix_micros(), limit],
                        |row| row.get(0),
                    )
                    .map_err(sql_error)?;
                rows.collect::<rusqlite::Result<_>>().map_err(sql_error)?
            };
            let mut deliveries = Vec::with_capacity(ids.len());
            {
                let sql = format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = ?1");
                let mut statement = db_transaction.prepare_cached(&sql).map_err(sql_error)?;
                for id in ids {
                    let delivery =
                        statement.query_row([id], delivery_from_row).map_err(sql_error)?;
                    deliveries.push(delivery.map_err(StoreError::Corrupt)?);
                }
            }
            db_transaction.commit().map_err(sql_error)?;
            deliveries.sort_by_key(|delivery| delivery.next_attempt_at);
            Ok(deliveries)
        })
        .await
    }

    async fn record_attempt(&self, result: &AttemptResult) -> StoreResult<bool> {
        let result = result.clone();
        self.write(move |connection| {
            let db_transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql_error)?;
            let attempt = &result.attempt;
            let changed = db_transaction
                .execute(
                    "UPDATE webhook_deliveries SET status = ?2, attempts = ?3, next_attempt_at = ?4, \
                     claimed_until = 0, last_status_code = ?5, last_error = ?6, updated_at = ?7 \
                     WHERE id = ?1 AND claimed_until = ?8",
                    rusqlite::params![
                        attempt.delivery_id,
                        result.status.as_str(),
                        i64::from(attempt.attempt),
                        result.next_attempt_at.as_unix_micros(),
                        attempt.status_code.map(i64::from),
                        attempt.error,
                        attempt.at.as_unix_micros(),
                        result.claimed_until.as_unix_micros()
                    ],
                )
                .map_err(sql_error)?;
            if changed == 0 {
                return Ok(false);
            }
            db_transaction
                .execute(
                    "INSERT OR REPLACE INTO webhook_attempts (delivery_id, attempt, at, status_code, error, duration_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    rusqlite::params![
                        attempt.delivery_id,
                        i64::from(attempt.attempt),
                        attempt.at.as_unix_micros(),
                        attempt.status_code.map(i64::from),
                        attempt.error,
                        i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX)
                    ],
                )
                .map_err(sql_error)?;
            db_transaction.commit().map_err(sql_error)?;
            Ok(true)
        })
        .await
    }

    async fn deliveries(&self, subscription_id: &str, limit: usize) -> StoreResult<Vec<Delivery>> {
        let subscription_id = subscription_id.to_owned();
        let limit = to_sql_int(limit.min(kopek_core::limits::PAGE_SIZE_MAX));
        self.read(move |connection| {
            let sql = format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE subscription_id = ?1 \
                 ORDER BY created_at DESC, id DESC LIMIT ?2"
            );
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            let rows = statement
                .query_map(rusqlite::params![subscription_id, limit], delivery_from_row)
                .map_err(sql_error)?;
            rows.map(|row| row.map_err(sql_error)?.map_err(StoreError::Corrupt)).collect()
        })
        .await
    }

    async fn delivery(&self, id: &str) -> StoreResult<Option<Delivery>> {
        let id = id.to_owned();
        self.read(move |connection| {
            let sql = format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = ?1");
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            let row = statement.query_row([id], delivery_from_row).optional().map_err(sql_error)?;
            row.map(|decoded| decoded.map_err(StoreError::Corrupt)).transpose()
        })
        .await
    }

    async fn delivery_attempts(&self, delivery_id: &str) -> StoreResult<Vec<Attempt>> {
        let delivery_id = delivery_id.to_owned();
        self.read(move |connection| {
            let sql = format!(
                "SELECT {ATTEMPT_COLUMNS} FROM webhook_attempts WHERE delivery_id = ?1 ORDER BY attempt"
            );
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            let rows = statement.query_map([delivery_id], attempt_from_row).map_err(sql_error)?;
            rows.map(|row| row.map_err(sql_error)).collect()
        })
        .await
    }

    async fn redeliver(
        &self,
        subscription_id: &str,
        delivery_id: &str,
        max_attempts: u32,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let (subscription_id, delivery_id) = (subscription_id.to_owned(), delivery_id.to_owned());
        self.write(move |connection| {
            let changed = connection
                .execute(
                    "UPDATE webhook_deliveries SET status = 'pending', dead_after = attempts + ?3, \
                     next_attempt_at = ?4, claimed_until = 0, updated_at = ?4 \
                     WHERE id = ?2 AND subscription_id = ?1",
                    rusqlite::params![
                        subscription_id,
                        delivery_id,
                        i64::from(max_attempts),
                        now.as_unix_micros()
                    ],
                )
                .map_err(sql_error)?;
            Ok(changed == 1)
        })
        .await
    }

    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        let key = key.clone();
        self.write(move |connection| {
            connection
                .execute(
                    "INSERT INTO api_keys (id, tenant, scope, user_id, name, secret_hash, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    rusqlite::params![
                        key.id,
                        key.tenant,
                        key.scope,
                        key.user_id,
                        key.name,
                        key.secret_hash,
                        key.created_at.as_unix_micros()
                    ],
                )
                .map_err(taken(format!("API key {}", key.id)))?;
            Ok(())
        })
        .await
    }

    async fn api_key(&self, id: &str) -> StoreResult<Option<ApiKey>> {
        let id = id.to_owned();
        self.read(move |connection| {
            let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = ?1");
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            statement.query_row([id], api_key_from_row).optional().map_err(sql_error)
        })
        .await
    }

    async fn api_keys(&self, tenant: Option<&str>) -> StoreResult<Vec<ApiKey>> {
        let tenant = tenant.map(str::to_owned);
        self.read(move |connection| {
            let sql = format!(
                "SELECT {API_KEY_COLUMNS} FROM api_keys \
                 WHERE (?1 IS NULL OR tenant = ?1) ORDER BY created_at, id"
            );
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            let rows = statement.query_map([tenant], api_key_from_row).map_err(sql_error)?;
            rows.map(|row| row.map_err(sql_error)).collect()
        })
        .await
    }

    async fn revoke_api_key(&self, id: &str, now: Timestamp) -> StoreResult<bool> {
        let id = id.to_owned();
        self.write(move |connection| {
            let changed = connection
                .execute(
                    "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                    rusqlite::params![id, now.as_unix_micros()],
                )
                .map_err(sql_error)?;
            Ok(changed == 1)
        })
        .await
    }

    async fn fx_rates(&self, tenant: &Tenant, at: Timestamp) -> StoreResult<Vec<FxRate>> {
        let tenant = tenant.to_string();
        self.read(move |connection| {
            let sql = format!(
                "SELECT {RATE_COLUMNS} FROM fx_rates r WHERE tenant = ?1 AND valid_from = \
                 (SELECT MAX(valid_from) FROM fx_rates WHERE tenant = r.tenant AND base = r.base \
                 AND quote = r.quote AND valid_from <= ?2) ORDER BY base, quote"
            );
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            let rows = statement
                .query_map(rusqlite::params![tenant, at.as_unix_micros()], rate_from_row)
                .map_err(sql_error)?;
            rows.map(decoded).collect()
        })
        .await
    }

    async fn quote(&self, id: QuoteId) -> StoreResult<Option<Quote>> {
        self.read(move |connection| {
            let sql = format!("SELECT {QUOTE_COLUMNS} FROM fx_quotes WHERE id = ?1");
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            let row = statement
                .query_row([id.to_string()], quote_from_row)
                .optional()
                .map_err(sql_error)?;
            row.map(|decoded| decoded.map_err(StoreError::Corrupt)).transpose()
        })
        .await
    }

    async fn fx_accounts(&self, tenant: &Tenant) -> StoreResult<Vec<Account>> {
        let (prefix, tenant) = (tenant.key_prefix(), tenant.to_string());
        self.read(move |connection| {
            // Names start after the tenant's key prefix (?2).
            let sql = format!(
                "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE tenant = ?1 \
                 AND (substr(id, length(?2) + 1, 3) = 'fx:' \
                 OR substr(id, length(?2) + 1, 11) = 'fx-revenue:') ORDER BY id"
            );
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            let rows =
                statement.query_map([tenant, prefix], account_from_row).map_err(sql_error)?;
            rows.map(decoded).collect()
        })
        .await
    }

    async fn fx_revenue(
        &self,
        tenant: &Tenant,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<Vec<FxRevenue>> {
        let (prefix, tenant) = (tenant.key_prefix(), tenant.to_string());
        self.read(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT e.currency, SUM(CASE WHEN e.direction = 'credit' THEN e.amount ELSE -e.amount END), \
                     COUNT(*) FROM entries e JOIN accounts a ON a.id = e.account_id \
                     WHERE a.tenant = ?1 AND substr(a.id, length(?4) + 1, 11) = 'fx-revenue:' \
                     AND e.committed_at >= ?2 AND e.committed_at < ?3 GROUP BY e.currency ORDER BY e.currency",
                )
                .map_err(sql_error)?;
            let rows = statement
                .query_map(
                    rusqlite::params![tenant, from.as_unix_micros(), to.as_unix_micros(), prefix],
                    |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?)),
                )
                .map_err(sql_error)?;
            rows.map(|row| {
                let (currency, total_minor, entries) = row.map_err(sql_error)?;
                Ok(FxRevenue {
                    currency: Currency::parse(&currency)
                        .map_err(|rejection| StoreError::Corrupt(rejection.message))?,
                    total_minor,
                    entries: u64::try_from(entries).unwrap_or(0),
                })
            })
            .collect()
        })
        .await
    }

    fn pool_usage(&self) -> (usize, usize) {
        let readers = READ_CONNECTIONS_MAX - self.inner.read_permits.available_permits();
        (readers, READ_CONNECTIONS_MAX)
    }

    async fn audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        let query = query.clone();
        self.read(move |connection| {
            // One snapshot for both tables, as in `events_after`.
            let snapshot = connection.unchecked_transaction().map_err(sql_error)?;
            let parameters = rusqlite::params![
                query.actor,
                query.since.as_unix_micros(),
                query.until.as_unix_micros(),
                to_sql_int(query.limit)
            ];
            let entries = |sql: &str| -> StoreResult<Vec<AuditEntry>> {
                let mut statement = snapshot.prepare_cached(sql).map_err(sql_error)?;
                let rows = statement.query_map(parameters, audit_from_row).map_err(sql_error)?;
                rows.map(|row| row.map_err(sql_error)).collect()
            };
            let stored = entries(&format!(
                "SELECT {AUDIT_COLUMNS} FROM outbox WHERE actor IS NOT NULL \
                 AND (?1 IS NULL OR actor = ?1) AND at >= ?2 AND at < ?3 ORDER BY sequence LIMIT ?4"
            ))?;
            // The `TransferPosted` events transfers rows carry (migration 0014).
            let carried = entries(
                "SELECT event_sequence, committed_at, event_actor, tenant, 'TransferPosted', id \
                 FROM transfers WHERE event_sequence IS NOT NULL AND event_actor IS NOT NULL \
                 AND (?1 IS NULL OR event_actor = ?1) AND committed_at >= ?2 AND committed_at < ?3 \
                 ORDER BY event_sequence LIMIT ?4",
            )?;
            Ok(merged(stored, carried, query.limit, |entry| entry.sequence))
        })
        .await
    }

    async fn relay_cursors(&self) -> StoreResult<Vec<(String, u64)>> {
        self.read(|connection| {
            let mut statement = connection
                .prepare_cached("SELECT sink, sequence FROM relay_cursors ORDER BY sink")
                .map_err(sql_error)?;
            let rows = statement
                .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))
                .map_err(sql_error)?;
            rows.map(|row| {
                row.map(|(sink, sequence)| (sink, u64::try_from(sequence).unwrap_or(0)))
                    .map_err(sql_error)
            })
            .collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kopek_core::memory::SequentialIds;
    use kopek_core::*;

    /// Decides `batch` at a fixed time and commits it.
    async fn commit(store: &SqliteStore, batch: Batch) {
        let now = Timestamp::from_unix_micros(1_700_000_000_000_000);
        let keys = batch.keys();
        store
            .write_batch(
                keys,
                Box::new(move |state| Ok(apply(state, &batch, now, &mut SequentialIds::default()))),
            )
            .await
            .expect("commit");
    }

    /// The layout before migration 0013: entries a table of their own again (with the rows the
    /// view shows), no postings, and accounts and transfers keyed by their text ids with plain
    /// rowids, the accounts' in another order than their numbers. The upgrade then runs 0013
    /// on them as on a ledger written before it.
    /// Outbox rows for the events transfers rows carry (migration 0014) must be written
    /// first (`uncarry`).
    const LAYOUT_BEFORE_POSTINGS: &str = "\
        DROP VIEW events;
        CREATE TABLE entries_v12 AS SELECT * FROM entries;
        DROP VIEW entries;
        DROP TABLE postings;
        CREATE TABLE accounts_v12 (id TEXT PRIMARY KEY, currency TEXT NOT NULL, owner TEXT, \
            kind TEXT NOT NULL, overdraft_limit INTEGER, status TEXT NOT NULL, \
            metadata TEXT NOT NULL, posted INTEGER NOT NULL, pending_out INTEGER NOT NULL, \
            pending_in INTEGER NOT NULL, created_at INTEGER NOT NULL, \
            updated_at INTEGER NOT NULL, tenant TEXT NOT NULL DEFAULT 'default');
        INSERT INTO accounts_v12 SELECT id, currency, owner, kind, overdraft_limit, status, \
            metadata, posted, pending_out, pending_in, created_at, updated_at, tenant \
            FROM accounts ORDER BY number DESC;
        DROP TABLE accounts;
        ALTER TABLE accounts_v12 RENAME TO accounts;
        CREATE TABLE transfers_v12 (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, \
            idempotency_key TEXT NOT NULL, fingerprint TEXT NOT NULL, kind TEXT NOT NULL, \
            action TEXT NOT NULL, debit_account TEXT, credit_account TEXT, \
            amount INTEGER NOT NULL, currency TEXT, pending_id TEXT, status TEXT NOT NULL, \
            error_code TEXT, error_message TEXT, expires_at INTEGER, \
            captured_amount INTEGER NOT NULL, category TEXT NOT NULL, \
            description TEXT NOT NULL, metadata TEXT NOT NULL, effective_at INTEGER NOT NULL, \
            committed_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, quote_id TEXT, fx TEXT, \
            UNIQUE (tenant, idempotency_key));
        INSERT INTO transfers_v12 SELECT id, tenant, idempotency_key, fingerprint, kind, \
            action, debit_account, credit_account, amount, currency, pending_id, status, \
            error_code, error_message, expires_at, captured_amount, category, description, \
            metadata, effective_at, committed_at, updated_at, quote_id, fx \
            FROM transfers ORDER BY number;
        DROP TABLE transfers;
        ALTER TABLE transfers_v12 RENAME TO transfers;
        CREATE TABLE entries (sequence INTEGER PRIMARY KEY, account_id TEXT NOT NULL, \
            transfer_id TEXT NOT NULL, direction TEXT NOT NULL, amount INTEGER NOT NULL, \
            currency TEXT NOT NULL, balance_after INTEGER NOT NULL, \
            effective_at INTEGER NOT NULL, committed_at INTEGER NOT NULL);
        INSERT INTO entries SELECT * FROM entries_v12;
        DROP TABLE entries_v12;
        CREATE INDEX entries_by_account ON entries (account_id, sequence)";

    /// Writes the events transfers rows carry as outbox rows, with their documents as TEXT
    /// payloads (as before payload formats), the layout before migration 0014.
    fn uncarry(connection: &Connection, events: &[StoredEvent]) {
        for event in events {
            connection
                .execute(
                    "INSERT INTO outbox (sequence, id, tenant, kind, subject_id, at, payload, \
                     actor, traceparent) SELECT event_sequence, event_id, tenant, \
                     'TransferPosted', id, committed_at, ?2, event_actor, event_trace \
                     FROM transfers WHERE event_sequence = ?1",
                    rusqlite::params![event.sequence as i64, event.payload],
                )
                .expect("an outbox row");
        }
    }

    /// One batch of the default tenant: open `accounts`, then make `transfers`.
    fn open_then_transfer(accounts: Vec<NewAccount>, transfers: Vec<TransferRequest>) -> Batch {
        let tenant = Tenant::default_tenant();
        Batch {
            commands: vec![
                Command::new(
                    tenant.clone(),
                    kopek_core::Authority::Ledger,
                    CommandBody::CreateAccounts(accounts),
                ),
                Command::new(
                    tenant,
                    kopek_core::Authority::Ledger,
                    CommandBody::CreateTransfers { transfers, linking: Linking::Independent },
                ),
            ],
        }
    }

    /// A request of `amount` USD minor units from `debit` to `credit`.
    fn usd_request(
        kind: TransferKind,
        key: &str,
        debit: &AccountId,
        credit: &AccountId,
        amount: i64,
        hold: Option<Hold>,
    ) -> TransferRequest {
        TransferRequest {
            idempotency_key: IdempotencyKey::parse(key).expect("key"),
            kind,
            movement: Movement::Move {
                debit_account: debit.clone(),
                credit_account: credit.clone(),
                amount,
                currency: Currency::parse("USD").expect("USD"),
                hold,
            },
            details: Details::default(),
            effective_at: None,
            open_if_missing: Vec::new(),
            fingerprint_extra: String::new(),
        }
    }

    /// Issue 19, finding 5: a data directory written before ids belonged to their tenant
    /// (another tenant's rows keyed by their bare ids) is upgraded on open: the rows move to
    /// their tenant's keys, every reference follows, and the books verify before and after.
    #[tokio::test]
    async fn another_tenants_rows_move_to_their_keys_on_upgrade() {
        use kopek_store::conformance;
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path()).expect("open");
        conformance::other_tenant_before_upgrade(&store).await;
        let events = store.events_after(None, 0, 10_000).await.expect("events");
        drop(store);
        {
            let connection = Connection::open(dir.path().join(DATABASE_FILE_NAME)).expect("open");
            uncarry(&connection, &events);
            connection
                .execute_batch(&format!(
                    "{LAYOUT_BEFORE_POSTINGS};\n{};\nDROP TABLE projection",
                    conformance::old_layout_statements(9).join(";\n")
                ))
                .expect("the old layout");
            let bare: i64 = connection
                .query_row("SELECT COUNT(*) FROM accounts WHERE id = 'alice'", [], |row| row.get(0))
                .expect("count");
            assert_eq!(bare, 1, "the old layout keys acme's alice bare");
            let numbered: i64 = connection
                .query_row(
                    "SELECT COUNT(*) FROM pragma_table_info('transfers') WHERE name = 'number'",
                    [],
                    |row| row.get(0),
                )
                .expect("columns");
            assert_eq!(numbered, 0, "the old layout's transfers have no number");
        }
        let store = SqliteStore::open(dir.path()).expect("the upgrade runs on open");
        conformance::other_tenant_after_upgrade(&store).await;
    }

    #[tokio::test]
    async fn one_process_writes_a_data_dir_at_a_time() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = SqliteStore::open(dir.path()).expect("open");
        let second =
            SqliteStore::open(dir.path()).err().map(|error| error.to_string()).unwrap_or_default();
        assert!(second.contains("in use by another kopek process"), "{second}");
        let reader =
            SqliteStore::open_read_only(dir.path()).expect("a reader may open beside the writer");
        assert!(reader.verify().await.expect("verify").is_ok());
        let keys = Batch::default().keys();
        let refused = reader.write_batch(keys, Box::new(|_| Err("unreachable".to_owned()))).await;
        assert!(
            matches!(refused, Err(StoreError::Unavailable(_))),
            "a read-only store never writes"
        );
        drop(first);
        SqliteStore::open(dir.path()).expect("the lock is released with the store");
        let missing =
            SqliteStore::open_read_only(&dir.path().join("nowhere")).err().map(|e| e.to_string());
        assert!(missing.unwrap_or_default().contains("no ledger found"));
    }

    /// A large batch stores each event with its own row, in order and smaller than its
    /// document; the checkpoint thread empties the WAL.
    #[tokio::test]
    async fn a_large_batch_stores_every_event_document_with_its_row() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let usd = Currency::parse("USD").expect("USD");
        let count = 300;
        let accounts: Vec<NewAccount> = (0..count)
            .map(|index| {
                NewAccount::user(AccountId::parse(&format!("big-{index:04}")).expect("id"), usd)
            })
            .collect();
        let batch = Batch {
            commands: vec![Command::new(
                Tenant::default_tenant(),
                kopek_core::Authority::Ledger,
                CommandBody::CreateAccounts(accounts),
            )],
        };
        let size_before = std::fs::metadata(store.path()).expect("file").len();
        commit(&store, batch).await;
        let events = store.events_after(None, 0, 1_000).await.expect("events");
        assert_eq!(events.len(), count);
        for (index, event) in events.iter().enumerate() {
            let document: serde_json::Value =
                serde_json::from_str(&event.payload).expect("a JSON document");
            assert_eq!(document["subject"]["id"], format!("big-{index:04}"));
            assert_eq!(document["id"], event.id.as_str());
        }
        let raw = Connection::open(store.path()).expect("open file");
        let stored: Vec<u8> = raw
            .query_row("SELECT payload FROM outbox ORDER BY sequence LIMIT 1", [], |row| row.get(0))
            .expect("a blob payload");
        assert_eq!(stored[0], 2, "format 2");
        assert!(stored.len() < events[0].payload.len() / 2, "{} bytes", stored.len());
        // Only a checkpoint moves the committed pages from the WAL into the database file,
        // and the writer leaves that to the checkpoint thread.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(store.path()).expect("file").len() < size_before + 100_000 {
            assert!(std::time::Instant::now() < deadline, "no checkpoint copied the batch");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// An event about a settled transfer keeps only a reference to the transfer's row
    /// (payload format 3) and reads back as the same document; a pending hold's event, whose
    /// row changes later, keeps its transfer (format 2); a row that went missing is an error,
    /// not a wrong document.
    #[tokio::test]
    async fn an_event_about_a_settled_transfer_refers_to_its_row() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let usd = Currency::parse("USD").expect("USD");
        let (a, b) = (AccountId::parse("a").expect("id"), AccountId::parse("b").expect("id"));
        let deposit =
            usd_request(TransferKind::Deposit, "d1", &AccountId::world(usd), &a, 120, None);
        let hold = Some(Hold { timeout_seconds: None });
        let batch = open_then_transfer(
            vec![NewAccount::user(a.clone(), usd), NewAccount::user(b.clone(), usd)],
            vec![
                deposit,
                usd_request(TransferKind::Transfer, "h1", &a, &b, 120, hold),
                usd_request(TransferKind::Transfer, "x1", &a, &b, 500, None),
            ],
        );
        commit(&store, batch).await;
        let events = store.events_after(None, 0, 100).await.expect("events");
        let raw = Connection::open(store.path()).expect("open file");
        let formats: Vec<(String, u8)> = raw
            .prepare("SELECT kind, payload FROM outbox ORDER BY sequence")
            .expect("prepare")
            .query_map([], |row| Ok((row.get(0)?, row.get::<_, Vec<u8>>(1)?[0])))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        let format =
            |kind: &str| formats.iter().find(|(stored, _)| stored == kind).map(|row| row.1);
        assert_eq!(format("TransferDeclined"), Some(3), "refers to its row: {formats:?}");
        assert_eq!(format("HoldPlaced"), Some(2), "a pending hold is written out: {formats:?}");
        assert_eq!(format("TransferPosted"), None, "its transfer row carries it: {formats:?}");
        let declined =
            events.iter().find(|event| event.kind == "TransferDeclined").expect("declined");
        let document: serde_json::Value = serde_json::from_str(&declined.payload).expect("JSON");
        assert_eq!(document["subject"]["amount_minor"], 500);
        assert_eq!(document["subject"]["status"], "declined");
        assert_eq!(document["subject"]["id"], declined.subject_id.as_str());
        raw.execute("DELETE FROM transfers WHERE id = ?1", [declined.subject_id.as_str()])
            .expect("lose the row");
        let problem = store.events_after(None, 0, 100).await.expect_err("row missing");
        assert!(problem.to_string().contains("row, which is missing"), "{problem}");
    }

    /// A posted transfer's `TransferPosted` is carried by its transfers row, not an outbox row
    /// (migration 0014): the events of both tables read back in one order with no gap, each
    /// the document `apply` decided, for the feed, one tenant, the audit trail and the
    /// watermark; a second batch continues the order; `verify` reports a carried event on a
    /// row that cannot render it, and a sequence in both tables.
    #[tokio::test]
    async fn a_posted_transfer_carries_its_event() {
        assert_eq!(
            TRANSFER_COLUMNS.split(',').count(),
            TRANSFER_COLUMN_COUNT,
            "carried columns' place"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let usd = Currency::parse("USD").expect("USD");
        let (a, b) = (AccountId::parse("a").expect("id"), AccountId::parse("b").expect("id"));
        let world = AccountId::world(usd);
        let hold = Some(Hold { timeout_seconds: None });
        let mut batches = vec![
            open_then_transfer(
                vec![NewAccount::user(a.clone(), usd), NewAccount::user(b.clone(), usd)],
                vec![
                    usd_request(TransferKind::Deposit, "d1", &world, &a, 300, None),
                    usd_request(TransferKind::Transfer, "h1", &a, &b, 100, hold),
                    usd_request(TransferKind::Transfer, "t1", &a, &b, 50, None),
                ],
            ),
            open_then_transfer(
                Vec::new(),
                vec![
                    usd_request(TransferKind::Transfer, "x1", &b, &a, 9_000, None),
                    usd_request(TransferKind::Transfer, "t2", &b, &a, 20, None),
                ],
            ),
        ];
        // The second batch's commands come from a key in a trace: its events name both.
        for command in &mut batches[1].commands {
            command.actor = Some("key-1".to_owned());
            command.trace =
                Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned());
        }
        /// Ids from `.0` on, so that the batches' ids differ.
        struct IdsFrom(u128);
        impl IdSource for IdsFrom {
            fn next_ulid(&mut self) -> Ulid {
                self.0 += 1;
                Ulid::from_u128(self.0)
            }
        }
        let mut decided = Vec::new();
        let mut transfer_ids = Vec::new();
        for (index, batch) in batches.into_iter().enumerate() {
            let keys = batch.keys();
            let now = Timestamp::from_unix_micros(1_700_000_000_000_000 + to_sql_int(index));
            let mut ids = IdsFrom(1_000 * (index as u128 + 1));
            let committed = store
                .write_batch(keys, Box::new(move |state| Ok(apply(state, &batch, now, &mut ids))))
                .await
                .expect("commit");
            decided.extend(committed.records.events.iter().cloned());
            transfer_ids.extend(committed.records.transfers_inserted.iter().map(|t| t.id.0));
        }
        let events = store.events_after(None, 0, 100).await.expect("events");
        let documents: Vec<String> = decided.iter().map(kopek_store::codec::event_json).collect();
        let read: Vec<&str> = events.iter().map(|event| event.payload.as_str()).collect();
        assert_eq!(read, documents.iter().map(String::as_str).collect::<Vec<_>>());
        let sequences: Vec<u64> = events.iter().map(|event| event.sequence).collect();
        assert_eq!(sequences, (1..=decided.len() as u64).collect::<Vec<_>>(), "one order");
        let raw = Connection::open(store.path()).expect("open file");
        let count = |sql: &str| -> i64 { raw.query_row(sql, [], |row| row.get(0)).expect(sql) };
        let carried = count("SELECT COUNT(*) FROM transfers WHERE event_sequence IS NOT NULL");
        assert_eq!(carried, 3, "d1, t1 and t2 carry their TransferPosted");
        assert_eq!(count("SELECT COUNT(*) FROM outbox WHERE kind = 'TransferPosted'"), 0);

        // Pages cut across both tables, and one tenant's read sees the same.
        let mut paged = Vec::new();
        let mut after = 0;
        loop {
            let page = store.events_after(Some("default"), after, 2).await.expect("page");
            let Some(last) = page.last() else { break };
            after = last.sequence;
            paged.extend(page.into_iter().map(|event| event.payload));
        }
        assert_eq!(paged, documents);
        assert!(store.events_after(Some("acme"), 0, 100).await.expect("acme").is_empty());
        assert_eq!(store.last_event_sequence().await.expect("last"), decided.len() as u64);

        // The audit trail: the second batch's two events, the carried one among them, in
        // order; a limit and a time window apply to both tables.
        let second = Timestamp::from_unix_micros(1_700_000_000_000_001);
        let trail = |since: Timestamp, limit: usize| {
            let query = AuditQuery {
                actor: Some("key-1".to_owned()),
                since,
                until: Timestamp::from_unix_micros(i64::MAX),
                limit,
            };
            let store = store.clone();
            async move {
                let trail = store.audit(&query).await.expect("audit");
                trail.into_iter().map(|entry| (entry.kind, entry.sequence)).collect::<Vec<_>>()
            }
        };
        let last = decided.len() as u64;
        let everything = trail(Timestamp::from_unix_micros(0), 100).await;
        assert_eq!(
            everything,
            [("TransferDeclined".to_owned(), last - 1), ("TransferPosted".to_owned(), last)]
        );
        assert_eq!(trail(second, 1).await, everything[..1]);
        let after_second = Timestamp::from_unix_micros(second.as_unix_micros() + 1);
        assert!(trail(after_second, 100).await.is_empty(), "the window applies to both");
        // The last event is carried: the watermark is its time and the newest id.
        let watermark = store.watermark().await.expect("watermark");
        let newest = decided.iter().map(|event| event.id.0).chain(transfer_ids).max();
        assert_eq!(watermark.largest_id, newest);
        assert_eq!(watermark.committed_at, Some(second));
        assert!(store.verify().await.expect("verify").is_ok());

        store.close_writer();
        raw.execute("UPDATE transfers SET status = 'declined' WHERE idempotency_key = 't1'", [])
            .expect("tamper status");
        raw.execute(
            "UPDATE outbox SET sequence = (SELECT event_sequence FROM transfers \
             WHERE idempotency_key = 't2') WHERE kind = 'TransferDeclined'",
            [],
        )
        .expect("tamper sequence");
        let problems = store.verify().await.expect("verify").problems.join("\n");
        assert!(problems.contains("1 transfers carry an event they cannot render"), "{problems}");
        assert!(problems.contains("1 event sequences are both an outbox row"), "{problems}");
    }

    /// A key is found by its 64-bit hash and compared in full: with another transfer's row
    /// under the same hash (a collision, simulated), each key still finds its own transfer,
    /// and `verify` reports the hash that is not its key's.
    #[tokio::test]
    async fn a_key_is_found_by_its_hash_and_compared_in_full() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let usd = Currency::parse("USD").expect("USD");
        let a = AccountId::parse("a").expect("id");
        let world = AccountId::world(usd);
        let deposit = |key: &str, amount: i64| {
            usd_request(TransferKind::Deposit, key, &world, &a, amount, None)
        };
        let tenant = Tenant::default_tenant();
        let batch = open_then_transfer(
            vec![NewAccount::user(a.clone(), usd)],
            vec![deposit("d1", 100), deposit("d2", 200)],
        );
        commit(&store, batch).await;
        assert!(store.verify().await.expect("verify").is_ok());
        let raw = Connection::open(store.path()).expect("open file");
        raw.execute(
            "UPDATE transfers SET key_hash = \
             (SELECT key_hash FROM transfers WHERE idempotency_key = 'd2') \
             WHERE idempotency_key = 'd1'",
            [],
        )
        .expect("two rows under d2's hash");
        let amount = |key: &str| {
            let store = &store;
            let tenant = tenant.clone();
            let key = IdempotencyKey::parse(key).expect("key");
            async move { store.transfer_by_key(&tenant, &key).await.expect("read").map(|t| t.amount) }
        };
        assert_eq!(amount("d2").await, Some(200), "d2 finds its own row, not d1's");
        assert_eq!(amount("d1").await, None, "d1's row is no longer under d1's hash");
        let problems = store.verify().await.expect("verify").problems.join("\n");
        assert!(
            problems.contains("has a key hash that is not its idempotency key's"),
            "{problems}"
        );
        raw.execute("UPDATE transfers SET idempotency_key = 'd2' WHERE idempotency_key = 'd1'", [])
            .expect("one key, two transfers");
        let problems = store.verify().await.expect("verify").problems.join("\n");
        assert!(
            problems.contains("idempotency key d2 of tenant default names 2 transfers"),
            "{problems}"
        );
    }

    /// `verify` must notice books that no longer add up, whoever changed the rows.
    #[tokio::test]
    async fn verify_reports_tampered_rows() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let usd = Currency::parse("USD").expect("USD");
        let a = AccountId::parse("a").expect("id");
        let deposit =
            usd_request(TransferKind::Deposit, "d1", &AccountId::world(usd), &a, 500, None);
        let batch = open_then_transfer(vec![NewAccount::user(a, usd)], vec![deposit]);
        commit(&store, batch).await;
        assert!(store.verify().await.expect("verify").is_ok());
        let path = store.path().to_owned();
        store.close_writer();
        let tamper = Connection::open(&path).expect("open file");
        tamper
            .execute("UPDATE accounts SET posted = posted + 1 WHERE id = 'a'", [])
            .expect("tamper balance");
        tamper
            .execute("UPDATE transfers SET event_sequence = NULL, event_id = NULL", [])
            .expect("lose the event the deposit's row carries");
        let report = store.verify().await.expect("verify");
        let problems = report.problems.join("\n");
        assert!(
            problems.contains("account a has posted balance 501 but its entries sum to 500"),
            "{problems}"
        );
        assert!(problems.contains("posted balances in USD sum to 1, not 0"), "{problems}");
        assert!(problems.contains("creation events, not 1"), "{problems}");

        // Account a posted on the debit side of its deposit too, with its balance moved to
        // match: its sum still agrees, so only the per-transfer and running-balance checks
        // can see it.
        tamper.execute("UPDATE accounts SET posted = 0 WHERE id = 'a'", []).expect("undo");
        tamper
            .execute(
                "INSERT INTO postings (account, sequence) SELECT account, sequence - 1 \
                 FROM postings WHERE sequence % 2 = 1 \
                 AND account = (SELECT number FROM accounts WHERE id = 'a')",
                [],
            )
            .expect("a posting too many");
        let problems = store.verify().await.expect("verify").problems.join("\n");
        assert!(!problems.contains("entries sum to"), "the sums alone agree: {problems}");
        assert!(
            problems.contains("has 3 entries that are not exactly its debit and credit"),
            "{problems}"
        );
        assert!(problems.contains("its running total is"), "the running balance: {problems}");

        // A posting of no account or of no transfer is not in any statement: verify counts it.
        tamper
            .execute("INSERT INTO postings (account, sequence) VALUES (999, 2), (1, 999)", [])
            .expect("orphan postings");
        let problems = store.verify().await.expect("verify").problems.join("\n");
        assert!(problems.contains("2 postings name no account or no transfer"), "{problems}");

        // A posting on a side that has no balance after it reads as no entry: reported, and
        // verify still runs to the end.
        tamper.execute("UPDATE transfers SET credit_balance_after = NULL", []).expect("unset");
        let problems = store.verify().await.expect("verify").problems.join("\n");
        assert!(
            problems
                .contains("1 postings are on a side of a transfer that has no balance after it"),
            "{problems}"
        );
    }

    kopek_store::conformance_tests!(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = crate::SqliteStore::open(dir.path()).expect("open store");
        Some((store, dir))
    });
}
