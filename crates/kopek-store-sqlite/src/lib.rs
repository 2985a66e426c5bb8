//! kopek-store-sqlite: the embedded default backend. One SQLite file in WAL mode with
//! `synchronous=FULL`: a commit returns only after its WAL frames are on disk.
//!
//! One dedicated thread owns the only write connection, so batches never contend for the
//! write lock; reads run on a small pool of read-only connections in blocking tasks and, in
//! WAL mode, never wait for the writer.

pub mod backup;
mod carried;
mod journal;
mod open;
mod payload;
mod port;
mod rows;
mod search;
mod verify;
mod write;

pub use journal::{JOURNAL_DIR_NAME, JournalStore};
pub use open::{has_journal, migrate};

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
    StoredEvent, TransferQuery, VerifyReport, Watermark, Webhook,
};
use open::*;
use rows::*;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;
use tokio::sync::{Semaphore, oneshot};
use write::*;
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
    include_str!("../migrations/0015_search.sql"),
    include_str!("../migrations/0016_events_by_subject.sql"),
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

#[cfg(test)]
mod tests;
