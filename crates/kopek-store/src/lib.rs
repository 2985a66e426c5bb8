//! kopek-store: the storage port. `Store` is what the engine and the APIs need from a
//! database; each backend crate implements it and runs the shared conformance suite.
//!
//! The write side is one call per batch, `write_batch`: load the state the batch needs, let
//! the pure `decide` function (the core's `apply`) choose every effect, write all of them and
//! commit, in one database transaction. The read side never waits for that transaction.

pub mod codec;
pub mod conformance;
pub mod keys;
pub mod record;
pub mod rows;
pub mod search;
pub mod webhooks;

pub use keys::{ApiKey, AuditEntry, AuditQuery};
pub use search::{SortOrder, TimeRange, TransferQuery};
pub use webhooks::{Attempt, AttemptResult, Delivery, DeliveryStatus, Webhook};

use async_trait::async_trait;
use kopek_core::{
    Account, AccountId, CommandResult, Currency, Entry, FxRate, IdempotencyKey, Keys, Order,
    OrderId, Outcome, Quote, QuoteId, State, Tenant, Timestamp, Transfer, TransferId, Ulid, User,
    UserId,
};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or refused the work; nothing was written. Retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Another process wrote a row this batch also wrote (or a deadlock was broken); nothing
    /// was written and running the batch again sees the other's rows.
    #[error("write conflict: {0}")]
    Conflict(String),
    /// The decision function found a broken invariant; the transaction was rolled back.
    #[error("invariant violated: {0}")]
    Invariant(String),
    /// A stored row could not be read back into its type.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The wall clock as a ledger time, for reads "as of now" and leases; commits take theirs from
/// the engine's clock, which never goes back.
pub fn wall_clock() -> Timestamp {
    kopek_clock::now()
}

/// Decides a batch's effects from its loaded state; an `Err` is a broken invariant.
pub type Decide = Box<dyn FnOnce(State) -> Result<Outcome, String> + Send>;

/// The answer `Store::submit_batch` gives once the batch is committed.
pub type PendingCommit =
    std::pin::Pin<Box<dyn std::future::Future<Output = StoreResult<Committed>> + Send>>;

/// A committed batch: each command's result, and the records it wrote (its outcome without
/// the results). The records are shared, not copied, with what else reads them (the journal
/// store's projector writes its tables from the same records).
#[derive(Debug)]
pub struct Committed {
    pub results: Vec<CommandResult>,
    pub records: Arc<Outcome>,
}

impl Committed {
    pub fn new(mut outcome: Outcome) -> Committed {
        Committed { results: std::mem::take(&mut outcome.results), records: Arc::new(outcome) }
    }

    /// The whole outcome again (records copied only if they are still shared).
    pub fn into_outcome(self) -> Outcome {
        let mut outcome = Arc::unwrap_or_clone(self.records);
        outcome.results = self.results;
        outcome
    }
}

/// An entry with its position in the ledger-wide entry order (the statement cursor).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEntry {
    pub sequence: u64,
    pub entry: Entry,
}

/// An outbox row: an event with its global sequence. The store keeps the event as the ledger
/// recorded it; its document, the wire contract of `docs/events.md`, is the events side's
/// (`kopek_events::EventDocument`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    pub sequence: u64,
    pub id: String,
    pub tenant: String,
    pub kind: String,
    pub subject_id: String,
    pub at: Timestamp,
    pub body: EventBody,
    /// The W3C `traceparent` of the span whose command caused the event, if it was traced.
    pub traceparent: Option<String>,
}

/// What an outbox row holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventBody {
    /// The event as the ledger recorded it: what every row written now holds.
    Record(Box<kopek_core::Event>),
    /// The JSON document a row written by an earlier version holds instead (the embedded
    /// store's first outbox formats, PostgreSQL before migration 0009): read as it was sent.
    Document(String),
}

/// What a consumer does for one event besides the inbox mark: `Store::consume` applies the
/// effects only if the event is new to the consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consumed {
    pub event_id: String,
    pub effects: Vec<Effect>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Adds `amount_minor` and one transfer to a user's total for a category and currency.
    Spend { tenant: String, user: String, category: String, currency: String, amount_minor: i64 },
    /// Queues a webhook delivery of the event, due at once, dead after `max_attempts`; a
    /// subscription gets each event once.
    Deliver {
        delivery_id: String,
        subscription_id: String,
        event_id: String,
        event_type: String,
        body: String,
        max_attempts: u32,
    },
}

/// A user's spending in one category and currency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpendingTotal {
    pub category: String,
    pub currency: String,
    pub total_minor: i64,
    pub transfers: u64,
    pub updated_at: Timestamp,
}

/// One page of a list and the cursor of the next page (`None` on the last page).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<u64>,
}

/// The newest commit time and the largest ULID the ledger has written. A restarted writer
/// starts after both, so commit times and ids never go back even if the wall clock did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Watermark {
    pub committed_at: Option<Timestamp>,
    pub largest_id: Option<Ulid>,
}

/// Spread revenue in one currency over a period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FxRevenue {
    pub currency: Currency,
    /// Net credits to the revenue account, in minor units.
    pub total_minor: i64,
    /// Entries that made it up.
    pub entries: u64,
}

/// A backup a store took into a directory of its own (`Store::backup`), as the files in it
/// (relative paths, the manifest last). The directory is removed when this is dropped: the
/// caller copies or streams the files first.
#[derive(Debug)]
pub struct TakenBackup {
    pub dir: std::path::PathBuf,
    pub files: Vec<String>,
}

impl Drop for TakenBackup {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), %error, "could not remove a backup's copy");
        }
    }
}

/// What `verify` checked and every problem it found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub accounts: u64,
    pub transfers: u64,
    pub entries: u64,
    pub events: u64,
    pub problems: Vec<String>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Loads the state for `keys` (and the accounts of every transfer loaded), runs `decide`,
    /// writes the outcome and commits, all in one database transaction. On any error nothing
    /// is written.
    async fn write_batch(&self, keys: Keys, decide: Decide) -> StoreResult<Committed>;

    /// Whether `submit_batch` queues the batch before it returns: batches submitted one after
    /// another are then decided and committed in that order, each seeing the ones before,
    /// even while none is answered yet, so a writer may hand over the next batch without
    /// waiting (the journal store decides it while the one before is made durable).
    fn pipelined(&self) -> bool {
        false
    }

    /// `write_batch` as a future that owns what it needs. The batch may be queued only when
    /// the future is first polled, unless the store is `pipelined`.
    fn submit_batch(self: Arc<Self>, keys: Keys, decide: Decide) -> PendingCommit {
        Box::pin(async move { self.write_batch(keys, decide).await })
    }

    async fn account(&self, id: &AccountId) -> StoreResult<Option<Account>>;
    /// Accounts in id order, after `after` (exclusive), optionally only one owner's.
    /// Accounts by id, after `after`: one tenant's (or every tenant's), optionally only one
    /// owner's.
    async fn list_accounts(
        &self,
        tenant: Option<&str>,
        owner: Option<&str>,
        after: Option<&AccountId>,
        limit: usize,
    ) -> StoreResult<Vec<Account>>;
    async fn transfer(&self, id: TransferId) -> StoreResult<Option<Transfer>>;
    async fn transfer_by_key(
        &self,
        tenant: &Tenant,
        key: &IdempotencyKey,
    ) -> StoreResult<Option<Transfer>>;
    /// One page of the transfers `query` selects, in commit order or its reverse; the cursor
    /// is a position (`search` says what a page may hold). A store whose queries run behind
    /// its commits (the journal store's projection) answers without waiting for them, unless
    /// the query names an idempotency key; `settle` waits.
    async fn search_transfers(&self, query: &TransferQuery) -> StoreResult<Page<Transfer>>;
    /// Waits until every read, searches included, sees every write acknowledged so far. Only a
    /// store whose queries run behind its commits waits.
    async fn settle(&self) -> StoreResult<()> {
        Ok(())
    }
    /// An account's entries in commit order, after the cursor `after` (exclusive).
    async fn entries(
        &self,
        account: &AccountId,
        after: Option<u64>,
        limit: usize,
    ) -> StoreResult<Page<StoredEntry>>;
    /// The entries of these transfers (a posted transfer's debit and credit; none for a hold,
    /// a void or a declined transfer), in commit order. Unknown ids have none.
    async fn transfer_entries(&self, ids: &[TransferId]) -> StoreResult<Vec<StoredEntry>>;
    /// The posted balance from entries effective strictly before `before`; `None` if the
    /// account does not exist.
    async fn balance_before(
        &self,
        account: &AccountId,
        before: Timestamp,
    ) -> StoreResult<Option<i64>>;
    /// Pending holds whose expiry time is at or before `now`, oldest first.
    async fn holds_due(&self, now: Timestamp, limit: usize) -> StoreResult<Vec<TransferId>>;
    /// The earliest expiry time of any pending hold.
    async fn next_hold_expiry(&self) -> StoreResult<Option<Timestamp>>;
    /// Outbox events after `sequence` (exclusive), in order.
    /// Events after `sequence`, in order, at most `limit`: one tenant's, or every tenant's.
    async fn events_after(
        &self,
        tenant: Option<&str>,
        sequence: u64,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>>;
    /// The first `limit` events about one subject of `tenant` (a transfer by its id; an
    /// account, user or order by its key), in sequence order.
    async fn events_of(
        &self,
        tenant: &str,
        subject: &str,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>>;
    /// The sequence of the newest event (0: none), from the index: no event is read.
    async fn last_event_sequence(&self) -> StoreResult<u64>;
    async fn watermark(&self) -> StoreResult<Watermark>;
    async fn user(&self, id: &UserId) -> StoreResult<Option<User>>;
    async fn order(&self, id: &OrderId) -> StoreResult<Option<Order>>;
    /// A user's orders, oldest first, at most `limit`.
    async fn orders_of_user(&self, user: &UserId, limit: usize) -> StoreResult<Vec<Order>>;
    /// Orders still waiting for their payment, oldest first.
    async fn pending_orders(&self, limit: usize) -> StoreResult<Vec<Order>>;
    /// Recomputes the books from the rows: see `VerifyReport`.
    async fn verify(&self) -> StoreResult<VerifyReport>;
    /// Takes a consistent backup of the whole ledger, every tenant's, while it serves. The
    /// embedded store does (`kopek backup`); a database server is backed up with its own
    /// tools (`docs/storage.md`).
    async fn backup(&self) -> StoreResult<TakenBackup> {
        Err(StoreError::Unavailable(
            "this store is backed up with its database's own tools (docs/storage.md)".to_owned(),
        ))
    }
    /// The checks too long for the periodic books check, for `kopek verify`: a journal-first
    /// store's journal against its projection. Answers the problems found.
    async fn verify_history(&self) -> StoreResult<Vec<String>> {
        Ok(Vec::new())
    }

    /// Claims the relay lease of `sink` for `holder` until `until`, when it is free, lapsed
    /// (its `lease_until` is before `now`) or already `holder`'s, and answers the sink's
    /// cursor: the last sequence the sink confirmed (0 for a new sink, which starts from the
    /// first event). `None` while another holder's lease is live.
    async fn relay_claim(
        &self,
        sink: &str,
        holder: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> StoreResult<Option<u64>>;
    /// Moves the cursor of `sink` forward to `sequence` (never back) and extends the lease to
    /// `until`, only while `holder` holds it. `false` when the lease was lost to another relay.
    async fn relay_advance(
        &self,
        sink: &str,
        holder: &str,
        sequence: u64,
        until: Timestamp,
    ) -> StoreResult<bool>;
    /// The cursor of every sink, by name.
    async fn relay_cursors(&self) -> StoreResult<Vec<(String, u64)>>;

    /// Whether `consumer` has handled the event.
    async fn inbox_contains(&self, consumer: &str, event_id: &str) -> StoreResult<bool>;
    /// In one transaction: for each item whose event `consumer` has not handled yet, records
    /// the inbox mark and applies the effects. Answers how many items were new. An effect
    /// that cannot apply (a total past i64) fails the whole call.
    async fn consume(
        &self,
        consumer: &str,
        items: Vec<Consumed>,
        now: Timestamp,
    ) -> StoreResult<usize>;
    /// A user's spending totals, by category then currency.
    async fn spending(&self, tenant: &str, user: &str) -> StoreResult<Vec<SpendingTotal>>;

    /// `Conflict` when the id is taken (by a live or a deleted subscription).
    async fn create_webhook(&self, webhook: &Webhook) -> StoreResult<()>;
    /// Subscriptions not deleted, oldest first: one tenant's, or every tenant's.
    async fn webhooks(&self, tenant: Option<&str>) -> StoreResult<Vec<Webhook>>;
    /// Deletes a subscription; its deliveries stay in the log, undelivered ones are no longer
    /// sent. `false` if there was none.
    async fn delete_webhook(&self, tenant: &str, id: &str, now: Timestamp) -> StoreResult<bool>;
    /// Takes up to `limit` pending deliveries due at `now` (of subscriptions not deleted) for
    /// one sender until `until`: no other sender takes them meanwhile.
    async fn claim_deliveries(
        &self,
        now: Timestamp,
        until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>>;
    /// Logs an attempt and moves its delivery to the attempt's outcome, if the delivery is
    /// still under the attempt's claim; `false` (nothing written) if it is not.
    async fn record_attempt(&self, result: &AttemptResult) -> StoreResult<bool>;
    /// A subscription's deliveries, newest first, at most `limit`.
    async fn deliveries(&self, subscription_id: &str, limit: usize) -> StoreResult<Vec<Delivery>>;
    async fn delivery(&self, id: &str) -> StoreResult<Option<Delivery>>;
    /// A delivery's attempts, in order.
    async fn delivery_attempts(&self, delivery_id: &str) -> StoreResult<Vec<Attempt>>;
    /// Sends a delivery again (whatever its status) from `now`, with `max_attempts` more
    /// attempts. `false` if the subscription has no such delivery.
    async fn redeliver(
        &self,
        subscription_id: &str,
        delivery_id: &str,
        max_attempts: u32,
        now: Timestamp,
    ) -> StoreResult<bool>;

    /// `Conflict` when the id is taken.
    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()>;
    /// A key by id, revoked or not.
    async fn api_key(&self, id: &str) -> StoreResult<Option<ApiKey>>;
    /// Every key, revoked ones too, oldest first: one tenant's, or every tenant's.
    async fn api_keys(&self, tenant: Option<&str>) -> StoreResult<Vec<ApiKey>>;
    /// Revokes a key at `now`; `false` if there is no such key or it was revoked already.
    async fn revoke_api_key(&self, id: &str, now: Timestamp) -> StoreResult<bool>;
    /// The events caused by keys' writes, in sequence order.
    async fn audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>>;

    /// Every pair's rate in force at `at` (the newest `valid_from` at or before it), by pair.
    async fn fx_rates(&self, tenant: &Tenant, at: Timestamp) -> StoreResult<Vec<FxRate>>;
    async fn quote(&self, id: QuoteId) -> StoreResult<Option<Quote>>;
    /// The tenant's liquidity (`fx:`) and revenue (`fx-revenue:`) accounts, by id.
    async fn fx_accounts(&self, tenant: &Tenant) -> StoreResult<Vec<Account>>;
    /// What the tenant's revenue accounts took in from spreads over `[from, to)` of commit
    /// time, per currency.
    async fn fx_revenue(
        &self,
        tenant: &Tenant,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<Vec<FxRevenue>>;

    /// Connections in use, and at most, for `/metrics`.
    fn pool_usage(&self) -> (usize, usize);

    /// How far the journal and its projection are, for a store that has a journal.
    fn journal_progress(&self) -> Option<JournalProgress> {
        None
    }
}

/// The journal-first store's progress (`/metrics`, `kopek status`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct JournalProgress {
    /// The last frame made durable and acknowledged.
    pub committed: u64,
    /// The last frame the query projection holds.
    pub projected: u64,
    /// How long the oldest frame the projection does not hold has been committed (0 when it
    /// holds every frame).
    pub lag_seconds: f64,
    /// The largest `lag_seconds` seen since start.
    pub lag_seconds_max: f64,
}
