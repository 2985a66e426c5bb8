//! The journal-first embedded store (`docs/storage.md`): a batch is decided from state held
//! in memory and committed by one frame in the journal; SQLite is the projection that
//! answers queries, written behind the journal in large transactions.
//!
//! Three threads share the work:
//! - the **journal writer** owns the journal and the working state. For each batch it loads
//!   the state from memory (the projection only for records old enough to have left memory),
//!   runs the decision, appends the outcome as one frame, `fdatasync`s it, updates memory and
//!   only then answers. A failed sync stops the process: nothing after it is acknowledged.
//! - the **projector** writes the records of committed frames (shared with the writer, so
//!   nothing is decoded), many frames at a time, through the SQLite store's writer, with the last frame's sequence (the projection's mark) in the same
//!   transaction. It needs no durability of its own: a restart replays the frames after the
//!   mark. At most `PROJECTION_FRAMES_BEHIND_MAX` frames wait for it; beyond that the journal
//!   writer waits, so a sustained load runs at the rate the projection sustains.
//! - the SQLite store's own writer, which the projector and the side tables (keys, webhooks,
//!   relay cursors, consumers) share.
//!
//! Reads see every acknowledged write: an account is read from memory; any other read first
//! waits until the projection's mark reaches the last frame acknowledged when the read
//! started (at most `READ_WAIT_MAX`, then `Unavailable`).

pub mod keys;

use crate::rows::{
    ACCOUNT_COLUMNS, ENTRY_COLUMNS, RATE_COLUMNS, TRANSFER_COLUMNS, account_from_row, decoded,
    entry_from_row, rate_from_row, sql_error, transfer_from_row,
};
use crate::{SqliteStore, key_hash, load_state, open_reader};
use async_trait::async_trait;
use keys::{KEY_FILTER_FILE_NAME, KeyFilter};
use kopek_core::{
    Account, AccountId, Currency, FxRate, IdempotencyKey, Keys, Order, OrderId, Outcome, Quote,
    QuoteId, State, Tenant, Timestamp, Transfer, TransferId, TransferStatus, User, UserId,
};
use kopek_journal::{Journal, JournalError, Options, Position, SyncPoint};
use kopek_store::record as frame;
use kopek_store::{
    ApiKey, Attempt, AttemptResult, AuditEntry, AuditQuery, Committed, Consumed, Decide, Delivery,
    FxRevenue, JournalProgress, Page, PendingCommit, SpendingTotal, Store, StoreError, StoreResult,
    StoredEntry, StoredEvent, TransferQuery, VerifyReport, Watermark, Webhook,
};
use rusqlite::Connection;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, mpsc};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// The journal's directory inside the data directory.
pub const JOURNAL_DIR_NAME: &str = "journal";
/// Batches the journal writer may decide and append before the syncer made the first of
/// them durable.
const SYNC_QUEUE_MAX: usize = 4;
/// Committed frames that may wait for the projector before the journal writer waits too.
const PROJECTION_FRAMES_BEHIND_MAX: usize = 8;
/// Payload bytes the projector writes in one SQLite transaction at most.
const PROJECTION_BYTES_PER_TRANSACTION_MAX: usize = 4 * 1024 * 1024;
/// How long a read waits for the projection to reach the last acknowledged frame.
const READ_WAIT_MAX: Duration = Duration::from_secs(10);
/// Problems `verify_journal` lists at most.
const VERIFY_PROBLEMS_MAX: usize = 100;
/// Tries `verify` makes to find memory and the projection at the same frame.
const VERIFY_ATTEMPTS_MAX: usize = 20;
/// The projector's pause before it tries a failed projection again.
const PROJECTION_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// New keys after which the journal writer snapshots the key filter (and once more when the
/// store closes): a start after a crash decodes at most about this many transfers' frames to
/// add their keys (about 7 µs each here: under 2 s for 2^18), and a snapshot costs a copy of
/// the filter (8 bytes a slot: 128 MiB at 10,000,000 keys) and writing it out on the
/// snapshot thread.
const SNAPSHOT_KEYS_EVERY: usize = 1 << 18;
/// How long the snapshot thread waits for a snapshot's frame to become durable.
const SNAPSHOT_DURABLE_WAIT_MAX: Duration = Duration::from_secs(30);

/// The embedded store, journal first. See the module documentation.
pub struct JournalStore {
    projection: SqliteStore,
    journal_dir: PathBuf,
    writer: Mutex<Option<mpsc::Sender<WriteJob>>>,
    shared: Arc<Shared>,
    /// The journal writer, the syncer, the projector and the snapshot thread, joined on
    /// drop.
    threads: Vec<std::thread::JoinHandle<()>>,
    started: Started,
}

/// How the last open went: what it could skip and what it read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Started {
    /// The frame the journal was read on from (the projection's mark or the key filter's
    /// snapshot, whichever is earlier); `None`: the whole journal was read.
    pub resumed_after: Option<u64>,
    /// The frames read and checked.
    pub frames_read: u64,
    /// The frame the key filter's snapshot was taken after, when the filter came from it;
    /// `None`: every key was read from the tables.
    pub filter_snapshot: Option<u64>,
}

/// What the journal writer shares with readers and the projector.
struct Shared {
    /// Every account, as of the last acknowledged frame.
    accounts: RwLock<HashMap<AccountId, Account>>,
    /// The last frame made durable and acknowledged; stored while `accounts` is locked for
    /// writing, so the two are read together.
    committed: AtomicU64,
    /// The last frame the projection holds.
    projected: watch::Sender<u64>,
    /// When each frame the projection does not hold yet was committed, oldest first.
    unprojected: Mutex<VecDeque<(u64, Instant)>>,
    /// The largest projection lag seen, in microseconds.
    lag_max_micros: AtomicU64,
    /// Set while the projector's last attempt failed (a full disk, say): the journal writer
    /// then refuses new batches instead of letting memory grow.
    projection_failing: AtomicBool,
    /// Signalled whenever the projection moves or fails: the journal writer waits on it when
    /// too many frames wait for the projector.
    progress: (Mutex<()>, Condvar),
    /// Why the projector stopped for good (a frame that does not decode or a row the tables
    /// refuse every time): writes are refused and reads do not wait for it.
    projector_stopped: Mutex<Option<String>>,
    /// Set by `Drop`: the projector stops retrying and ends.
    closing: AtomicBool,
    /// Set by `abandon_projection`: the projector ends without writing what waits for it.
    abandoned: AtomicBool,
}

impl Shared {
    /// Shows readers the accounts of frame `sequence`, which is durable now.
    fn publish(&self, sequence: u64, records: &Outcome) {
        let mut accounts = self.accounts.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        for account in records.accounts_opened.iter().chain(&records.accounts_changed) {
            accounts.insert(account.id.clone(), account.clone());
        }
        // Under the same lock, so a reader sees the accounts and their frame together.
        self.committed.store(sequence, Ordering::Release);
    }

    /// With `accounts` as of frame `last`, which the projection holds.
    fn new(accounts: HashMap<AccountId, Account>, last: u64) -> Shared {
        let (projected, _) = watch::channel(last);
        Shared {
            accounts: RwLock::new(accounts),
            committed: AtomicU64::new(last),
            projected,
            unprojected: Mutex::new(VecDeque::new()),
            lag_max_micros: AtomicU64::new(0),
            projection_failing: AtomicBool::new(false),
            progress: (Mutex::new(()), Condvar::new()),
            projector_stopped: Mutex::new(None),
            closing: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
        }
    }

    /// How long the oldest frame the projection does not hold has waited.
    fn lag(&self) -> Duration {
        let unprojected = self.unprojected.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        unprojected.front().map_or(Duration::ZERO, |(_, committed)| committed.elapsed())
    }

    /// Notes that the projection holds every frame up to `last`.
    fn projected_up_to(&self, last: u64) {
        let lag = {
            let mut unprojected =
                self.unprojected.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let lag = unprojected.front().map_or(Duration::ZERO, |(_, at)| at.elapsed());
            while unprojected.front().is_some_and(|(sequence, _)| *sequence <= last) {
                unprojected.pop_front();
            }
            lag
        };
        let micros = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
        self.lag_max_micros.fetch_max(micros, Ordering::Relaxed);
        self.projected.send_replace(last);
        self.projection_failing.store(false, Ordering::Release);
        self.wake_writer();
    }

    /// Notes that the projector's last attempt failed.
    fn projection_failed(&self) {
        self.projection_failing.store(true, Ordering::Release);
        self.wake_writer();
    }

    /// Notes that the projector stopped for good, and why.
    fn projector_stopped(&self, reason: String) {
        tracing::error!(%reason, "the projector stopped: writes are refused until a restart");
        *self.projector_stopped.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Some(reason);
        self.wake_writer();
    }

    /// Why the projector stopped, if it did.
    fn stopped(&self) -> Option<String> {
        self.projector_stopped.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Wakes a journal writer waiting in `await_projection` (under its lock, so the wake-up
    /// cannot fall between its check and its wait).
    fn wake_writer(&self) {
        let _guard = self.progress.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.progress.1.notify_all();
    }
}

struct WriteJob {
    keys: Keys,
    decide: Decide,
    reply: oneshot::Sender<StoreResult<Committed>>,
}

impl JournalStore {
    /// Opens (creating if needed) the ledger in `data_dir`: migrates the projection, replays
    /// the journal's frames it does not hold yet, loads the working state and starts the
    /// journal writer and the projector. A data directory of the SQLite layout (no journal)
    /// opens as it is: its tables are the projection of an empty journal.
    pub fn open(data_dir: &Path) -> StoreResult<JournalStore> {
        let projection = SqliteStore::open_projection(data_dir)?;
        let (mark, mark_position) = projection.projection_mark()?;
        let journal_dir = data_dir.join(JOURNAL_DIR_NAME);
        let filter_path = data_dir.join(KEY_FILTER_FILE_NAME);
        let snapshot = KeyFilter::load(&filter_path).unwrap_or_else(|reason| {
            tracing::warn!(
                path = %filter_path.display(),
                %reason,
                "the key filter's snapshot does not check out; building the filter from the tables"
            );
            None
        });
        // The journal is read on from the earlier of the projection's mark and the
        // snapshot's frame: frames after the mark go into the tables, frames after the
        // snapshot add their keys to the filter. Without a recorded place, all of it.
        let snapshot_position = snapshot.as_ref().map(|(taken, _)| *taken);
        let resume_after = match (mark_position, &snapshot) {
            // At the snapshot's frame when it is not after the mark: the open then checks
            // that frame itself; a later one is checked as the replay passes it.
            (Some(mark), Some((taken, _))) => {
                Some(if taken.sequence <= mark.sequence { *taken } else { mark })
            }
            (Some(mark), None) => Some(mark),
            (None, _) => None,
        };
        // The projection holds every frame up to its mark, so each was acknowledged: none of
        // them may be cut as a torn tail.
        let options = Options { acknowledged_through: mark, resume_after, ..Options::default() };
        let open_journal = |options: Options, replayed: &mut Replay| {
            Journal::open(&journal_dir, options, |frame| replayed.frame(frame))
        };
        let mut replayed = Replay::new(&projection, mark, snapshot);
        let mut resumed_after = resume_after;
        let opened = match open_journal(options, &mut replayed) {
            Err(JournalError::NotAtPosition { sequence, reason }) => {
                tracing::warn!(
                    sequence,
                    %reason,
                    "the journal does not hold the frame the projection or the key filter's \
                     snapshot names; reading it from the start"
                );
                replayed = Replay::new(&projection, mark, None);
                resumed_after = None;
                open_journal(Options { resume_after: None, ..options }, &mut replayed)
            }
            other => other,
        };
        let (journal, recovery) = opened.map_err(|error| match error {
            JournalError::Damaged { .. } => StoreError::Corrupt(error.to_string()),
            other => StoreError::Unavailable(format!("open the journal: {other}")),
        })?;
        let frames_read = replayed.frames_read;
        let filter = replayed.finish(resumed_after)?;
        let resumed_after = resumed_after.map(|position| position.sequence);
        // The snapshot the filter came from, if it did.
        let snapshot_position = snapshot_position.filter(|_| filter.is_some());
        let started = Started {
            resumed_after,
            frames_read,
            filter_snapshot: snapshot_position.map(|taken| taken.sequence),
        };
        tracing::info!(?started, "journal opened");
        if recovery.last_sequence < mark {
            return Err(StoreError::Corrupt(format!(
                "the projection holds frames up to {mark} but the journal in {} ends at {}: \
                 journal segments are missing",
                journal_dir.display(),
                recovery.last_sequence
            )));
        }
        if let Some((segment, offset)) = &recovery.torn_tail {
            tracing::warn!(
                segment = %segment.display(),
                offset,
                "cut a torn frame off the journal's end (it was never acknowledged)"
            );
        }
        let last = recovery.last_sequence;
        let reader = open_reader(projection.path())?;
        let (accounts, memory) = Memory::load(&reader, filter)?;
        let shared = Arc::new(Shared::new(accounts, last));
        // Unbounded: the bound is kept before a batch is decided (`Writer::await_projection`),
        // so a frame already durable is never held up on its way to the projector.
        let (to_projector, frames) = mpsc::channel();
        let projector = {
            let projection = projection.clone();
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("kopek-projector".to_owned())
                .spawn(move || project(&frames, &projection, &shared))
                .map_err(|error| StoreError::Unavailable(format!("start the projector: {error}")))?
        };
        let (to_syncer, appended) = mpsc::sync_channel::<Appended>(SYNC_QUEUE_MAX);
        let syncer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("kopek-sync".to_owned())
                .spawn(move || sync_and_answer(&appended, &shared, &to_projector))
                .map_err(|error| StoreError::Unavailable(format!("start the syncer: {error}")))?
        };
        let (to_snapshotter, snapshots) = mpsc::sync_channel::<(Position, KeyFilter)>(1);
        let snapshot_busy = Arc::new(AtomicBool::new(false));
        let snapshotter = {
            let (shared, busy) = (shared.clone(), snapshot_busy.clone());
            std::thread::Builder::new()
                .name("kopek-snapshot".to_owned())
                .spawn(move || save_snapshots(&snapshots, &filter_path, &shared, &busy))
                .map_err(|error| {
                    StoreError::Unavailable(format!("start the snapshot thread: {error}"))
                })?
        };
        let (sender, jobs) = mpsc::channel::<WriteJob>();
        let snapshot_taken = (memory.seen.len(), snapshot_position);
        let mut writer = Writer {
            journal,
            memory,
            shared: shared.clone(),
            reader,
            snapshots: to_snapshotter,
            snapshot_busy,
            snapshot_taken,
        };
        let journal_writer = std::thread::Builder::new()
            .name("kopek-journal".to_owned())
            .spawn(move || {
                for job in jobs {
                    let appended = writer.write(&job.keys, job.decide, job.reply);
                    if to_syncer.send(appended).is_err() {
                        break; // the syncer is gone: the process is stopping
                    }
                }
                // The store is closing: the next start loads the filter instead of reading
                // every key.
                writer.snapshot(true);
            })
            .map_err(|error| {
                StoreError::Unavailable(format!("start the journal writer: {error}"))
            })?;
        Ok(JournalStore {
            projection,
            journal_dir,
            writer: Mutex::new(Some(sender)),
            shared,
            threads: vec![journal_writer, syncer, projector, snapshotter],
            started,
        })
    }

    /// Makes the projector stop at once, as a killed process would: frames it has not
    /// written stay unprojected, and the next open replays them from the journal. For the
    /// simulator and tests of recovery; a store that is merely dropped projects every frame
    /// first.
    pub fn abandon_projection(&self) {
        self.shared.abandoned.store(true, Ordering::Release);
    }

    /// How the open went (what it read, what it skipped).
    pub fn started(&self) -> Started {
        self.started
    }

    /// Hands a batch to the journal writer now (batches are decided in the order they are
    /// queued); the future answers once its frame is durable.
    fn queue(
        &self,
        keys: Keys,
        decide: Decide,
    ) -> impl std::future::Future<Output = StoreResult<Committed>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let sent = match self.writer.lock() {
            Ok(writer) => writer
                .as_ref()
                .is_some_and(|sender| sender.send(WriteJob { keys, decide, reply }).is_ok()),
            Err(_) => false,
        };
        async move {
            if !sent {
                return Err(StoreError::Unavailable("the journal writer is stopped".to_owned()));
            }
            answer.await.map_err(|_| {
                StoreError::Unavailable("the journal writer stopped mid-batch".to_owned())
            })?
        }
    }

    /// The last frame acknowledged, and the last the projection holds.
    pub fn marks(&self) -> (u64, u64) {
        (self.shared.committed.load(Ordering::Acquire), *self.shared.projected.borrow())
    }

    /// Fails once the projection stopped: its tables will not take in another frame.
    fn projection_running(&self) -> StoreResult<()> {
        match self.shared.stopped() {
            None => Ok(()),
            Some(reason) => Err(StoreError::Unavailable(format!(
                "the query projection stopped ({reason}); restart kopek: the journal holds every \
                 acknowledged write"
            ))),
        }
    }

    /// Waits until the projection holds every frame acknowledged before the call.
    async fn caught_up(&self) -> StoreResult<()> {
        let target = self.shared.committed.load(Ordering::Acquire);
        let mut projected = self.shared.projected.subscribe();
        if *projected.borrow() >= target {
            return Ok(());
        }
        self.projection_running()?;
        match tokio::time::timeout(READ_WAIT_MAX, projected.wait_for(|mark| *mark >= target)).await
        {
            Ok(Ok(_)) => Ok(()),
            _ => Err(StoreError::Unavailable(format!(
                "the query projection has not reached frame {target} within {} s",
                READ_WAIT_MAX.as_secs()
            ))),
        }
    }
}

impl JournalStore {
    /// Checks the journal against the projection, for `kopek verify`: the chain holds to its
    /// end, the projection's mark is the journal's last frame, and the projection's newest rows
    /// are the journal's records in order: every transfer (in its last state), every entry with
    /// its balance-after, every event. It reads the whole journal, so the periodic books check
    /// does not run it.
    pub async fn verify_journal(&self) -> StoreResult<Vec<String>> {
        self.caught_up().await?;
        let dir = self.journal_dir.clone();
        let database = self.projection.path().to_owned();
        tokio::task::spawn_blocking(move || verify_journal(&dir, &database))
            .await
            .map_err(|error| StoreError::Unavailable(format!("journal check failed: {error}")))?
    }
}

fn verify_journal(dir: &Path, database: &Path) -> StoreResult<Vec<String>> {
    let read_error =
        |error: JournalError| StoreError::Unavailable(format!("read the journal: {error}"));
    // One snapshot of the tables for the whole check, and only the frames it holds: writes
    // may go on meanwhile.
    let connection = open_reader(database)?;
    let snapshot = connection.unchecked_transaction().map_err(sql_error)?;
    let number = |sql: &str| -> StoreResult<u64> {
        let value: i64 = snapshot.query_row(sql, [], |row| row.get(0)).map_err(sql_error)?;
        Ok(u64::try_from(value).unwrap_or(0))
    };
    let mark = number("SELECT frame FROM projection WHERE id = 1")?;
    // First pass: how many records of each kind, and the last state of transfers updated.
    let (mut transfers, mut entries, mut events) = (0u64, 0u64, 0u64);
    let mut last_state: HashMap<TransferId, Transfer> = HashMap::new();
    let mut problems = Vec::new();
    let read = kopek_journal::read(dir, |frame| {
        // Frames after the snapshot's mark are not the projection's yet: not decoded at all.
        if frame.sequence > mark {
            return;
        }
        match frame::decode(&frame.payload) {
            Ok(outcome) => {
                transfers += outcome.transfers_inserted.len() as u64;
                entries += outcome.entries.len() as u64;
                events += outcome.events.len() as u64;
                for transfer in outcome.transfers_updated {
                    last_state.insert(transfer.id, transfer);
                }
            }
            Err(problem) => problems.push(format!("journal frame {}: {problem}", frame.sequence)),
        }
    })
    .map_err(read_error)?;
    if !problems.is_empty() {
        return Ok(problems);
    }
    if read.last_sequence < mark {
        // A start reads the journal only after the projection's mark, so damage below it is
        // found here.
        problems.push(match read.stopped {
            Some((segment, offset, reason)) => format!(
                "journal damaged in {} at offset {offset}: {reason}; the projection holds \
                 frames up to {mark}, the journal's chain ends at {}",
                segment.display(),
                read.last_sequence
            ),
            None => format!(
                "the projection holds frames up to {mark}, the journal {}",
                read.last_sequence
            ),
        });
        return Ok(problems);
    }
    let (stored_transfers, stored_entries, stored_events) = (
        number("SELECT COUNT(*) FROM transfers")?,
        number("SELECT COUNT(*) FROM entries")?,
        number("SELECT COUNT(*) FROM events")?,
    );
    for (what, journal, stored) in [
        ("transfers", transfers, stored_transfers),
        ("entries", entries, stored_entries),
        ("events", events, stored_events),
    ] {
        if stored < journal {
            problems.push(format!(
                "the journal records {journal} {what}, the projection holds {stored}"
            ));
        }
    }
    if !problems.is_empty() {
        return Ok(problems);
    }
    // Second pass: the newest rows of each table (rows from before the journal come first),
    // in the order they were written, against the journal's records in order.
    let offset = |stored: u64, journal: u64| i64::try_from(stored - journal).unwrap_or(i64::MAX);
    let sql = format!("SELECT {TRANSFER_COLUMNS} FROM transfers ORDER BY rowid LIMIT -1 OFFSET ?1");
    let mut transfer_rows = snapshot.prepare(&sql).map_err(sql_error)?;
    let mut transfer_rows = transfer_rows
        .query_map([offset(stored_transfers, transfers)], transfer_from_row)
        .map_err(sql_error)?;
    let sql = format!("SELECT {ENTRY_COLUMNS} FROM entries ORDER BY sequence LIMIT -1 OFFSET ?1");
    let mut entry_rows = snapshot.prepare(&sql).map_err(sql_error)?;
    let mut entry_rows = entry_rows
        .query_map([offset(stored_entries, entries)], entry_from_row)
        .map_err(sql_error)?;
    let mut event_rows = snapshot
        // The two tables' indexes merged by sequence (the `events` view would be sorted).
        .prepare(
            "SELECT id, kind, sequence FROM outbox UNION ALL \
             SELECT event_id, 'TransferPosted', event_sequence FROM transfers \
             WHERE event_sequence IS NOT NULL ORDER BY 3 LIMIT -1 OFFSET ?1",
        )
        .map_err(sql_error)?;
    let mut event_rows = event_rows
        .query_map([offset(stored_events, events)], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .map_err(sql_error)?;
    let mut failure: Option<StoreError> = None;
    kopek_journal::read(dir, |frame| {
        if failure.is_some() || problems.len() >= VERIFY_PROBLEMS_MAX || frame.sequence > mark {
            return;
        }
        let Ok(outcome) = frame::decode(&frame.payload) else { return };
        for transfer in &outcome.transfers_inserted {
            let expected = last_state.get(&transfer.id).unwrap_or(transfer);
            match transfer_rows.next().map(decoded) {
                Some(Ok(row)) if row == *expected => {}
                Some(Ok(row)) => problems.push(format!(
                    "frame {}: transfer {} differs in the projection (row {})",
                    frame.sequence, transfer.id, row.id
                )),
                Some(Err(error)) => failure = Some(error),
                None => problems
                    .push(format!("frame {}: transfer {} is missing", frame.sequence, transfer.id)),
            }
        }
        for entry in &outcome.entries {
            match entry_rows.next().map(decoded) {
                Some(Ok(row)) if row.entry == *entry => {}
                Some(Ok(row)) => problems.push(format!(
                    "frame {}: the entry of transfer {} on {} differs in the projection (entry {})",
                    frame.sequence, entry.transfer_id, entry.account_id, row.sequence
                )),
                Some(Err(error)) => failure = Some(error),
                None => problems.push(format!(
                    "frame {}: an entry of transfer {} is missing",
                    frame.sequence, entry.transfer_id
                )),
            }
        }
        for event in &outcome.events {
            match event_rows.next() {
                Some(Ok((id, kind)))
                    if id == event.id.to_string() && kind == event.kind.as_str() => {}
                Some(Ok((id, kind))) => problems.push(format!(
                    "frame {}: event {} ({}) is {id} ({kind}) in the projection",
                    frame.sequence,
                    event.id,
                    event.kind.as_str()
                )),
                Some(Err(error)) => failure = Some(sql_error(error)),
                None => problems
                    .push(format!("frame {}: event {} is missing", frame.sequence, event.id)),
            }
        }
    })
    .map_err(read_error)?;
    match failure {
        Some(error) => Err(error),
        None => Ok(problems),
    }
}

/// Dropping the store stops the journal writer after the batches sent to it and waits until
/// the projector has written every committed frame, so the data directory can be opened
/// again at once.
impl Drop for JournalStore {
    fn drop(&mut self) {
        if let Ok(mut writer) = self.writer.lock() {
            writer.take();
        }
        self.shared.closing.store(true, Ordering::Release);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Replays the frames the projection does not hold at open, many per transaction, and adds
/// the keys of the frames after the key filter's snapshot to the filter.
struct Replay<'a> {
    projection: &'a SqliteStore,
    mark: u64,
    /// The filter loaded from its snapshot and the frame the snapshot was taken after, and
    /// whether the replay met that frame where the snapshot says.
    filter: Option<(Position, KeyFilter)>,
    snapshot_frame_seen: bool,
    pending: Vec<(Position, Arc<Outcome>)>,
    bytes: usize,
    error: Option<StoreError>,
    /// Frames the journal gave it.
    frames_read: u64,
}

impl Replay<'_> {
    fn new(
        projection: &SqliteStore,
        mark: u64,
        snapshot: Option<(Position, KeyFilter)>,
    ) -> Replay<'_> {
        Replay {
            projection,
            mark,
            filter: snapshot,
            snapshot_frame_seen: false,
            pending: Vec::new(),
            bytes: 0,
            error: None,
            frames_read: 0,
        }
    }

    fn frame(&mut self, frame: kopek_journal::Frame) {
        self.frames_read += 1;
        if let Some((taken, _)) = &self.filter
            && frame.sequence == taken.sequence
        {
            self.snapshot_frame_seen = frame.position == *taken;
        }
        let for_keys =
            self.filter.as_ref().is_some_and(|(taken, _)| frame.sequence > taken.sequence);
        if self.error.is_some() || (frame.sequence <= self.mark && !for_keys) {
            return;
        }
        let outcome = match frame::decode(&frame.payload) {
            Ok(outcome) => outcome,
            Err(problem) => {
                self.error = Some(StoreError::Corrupt(format!(
                    "journal frame {} does not decode: {problem}",
                    frame.sequence
                )));
                return;
            }
        };
        if let Some((_, filter)) = self.filter.as_mut().filter(|_| for_keys) {
            for transfer in outcome.transfers_inserted.iter().chain(&outcome.transfers_updated) {
                filter.insert(key_hash(&transfer.tenant, &transfer.idempotency_key));
            }
        }
        if frame.sequence <= self.mark {
            return;
        }
        self.bytes += frame.payload.len();
        self.pending.push((frame.position, Arc::new(outcome)));
        if self.bytes >= PROJECTION_BYTES_PER_TRANSACTION_MAX {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.pending.is_empty() || self.error.is_some() {
            return;
        }
        let frames = std::mem::take(&mut self.pending);
        self.bytes = 0;
        if let Err(error) = self.projection.project(frames) {
            self.error = Some(error);
        }
    }

    /// Writes what is left; answers the filter, if it came from a snapshot whose frame this
    /// journal holds where the snapshot says: the open resumed right after that frame (and
    /// checked it first), or the replay met it. Otherwise (a journal that ends before that
    /// frame, cut by a crash, or another journal's snapshot) the filter is dropped and read
    /// from the tables, which hold every frame by now.
    fn finish(mut self, resumed_after: Option<Position>) -> StoreResult<Option<KeyFilter>> {
        self.flush();
        if let Some(error) = self.error {
            return Err(error);
        }
        let Some((taken, filter)) = self.filter else { return Ok(None) };
        if resumed_after == Some(taken) || self.snapshot_frame_seen {
            return Ok(Some(filter));
        }
        tracing::warn!(
            frame = taken.sequence,
            "the journal does not hold the key filter snapshot's frame; reading every key from \
             the tables"
        );
        Ok(None)
    }
}

/// The snapshot thread's loop: for each copy of the key filter the journal writer hands
/// over, waits until the frame it was taken after is durable (so that frame is never cut as
/// a torn tail), then writes the snapshot file. A snapshot that cannot be written is logged
/// and skipped: the next start reads the keys from an older snapshot's frames or the tables.
fn save_snapshots(
    snapshots: &mpsc::Receiver<(Position, KeyFilter)>,
    path: &Path,
    shared: &Shared,
    busy: &AtomicBool,
) {
    for (taken, filter) in snapshots {
        let started = Instant::now();
        while shared.committed.load(Ordering::Acquire) < taken.sequence
            && started.elapsed() < SNAPSHOT_DURABLE_WAIT_MAX
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        if shared.committed.load(Ordering::Acquire) < taken.sequence {
            tracing::warn!(frame = taken.sequence, "the key filter's frame never became durable");
        } else if let Err(error) = filter.save(path, &taken) {
            tracing::warn!(path = %path.display(), %error, "could not save the key filter");
        }
        busy.store(false, Ordering::Release);
    }
}

/// The projector's loop: takes every frame waiting (up to a transaction's worth), decodes
/// them and writes them in one transaction, then moves the mark. It ends when the journal
/// writer is gone and every frame sent is projected.
fn project(frames: &mpsc::Receiver<ToProject>, projection: &SqliteStore, shared: &Shared) {
    while let Ok(first) = frames.recv() {
        if shared.abandoned.load(Ordering::Acquire) {
            return;
        }
        let mut bytes = first.bytes;
        let mut batch = vec![(first.position, first.records)];
        while bytes < PROJECTION_BYTES_PER_TRANSACTION_MAX {
            match frames.try_recv() {
                Ok(next) => {
                    bytes += next.bytes;
                    batch.push((next.position, next.records));
                }
                Err(_) => break,
            }
        }
        let last = batch.last().map_or(0, |(position, _)| position.sequence);
        loop {
            // The records are shared with each attempt, not copied.
            match projection.project(batch.clone()) {
                Ok(()) => break,
                // The disk is full or the database busy: it may pass.
                Err(error @ StoreError::Unavailable(_)) => {
                    tracing::error!(%error, last, "projecting committed frames failed; retrying");
                    shared.projection_failed();
                    if shared.closing.load(Ordering::Acquire) {
                        return;
                    }
                    std::thread::sleep(PROJECTION_RETRY_PAUSE);
                }
                // A row the tables refuse every time: memory and the tables disagree.
                Err(error) => {
                    shared.projector_stopped(format!("frames up to {last}: {error}"));
                    return;
                }
            }
        }
        shared.projected_up_to(last);
    }
}

/// A committed frame on its way to the projector: the records it was encoded from (they
/// need no decoding) and the size of its payload, which bounds a projection transaction.
struct ToProject {
    position: Position,
    records: Arc<Outcome>,
    bytes: usize,
}

/// What the journal writer owns.
struct Writer {
    journal: Journal,
    memory: Memory,
    shared: Arc<Shared>,
    /// A read connection on the projection, for records that left memory.
    reader: Connection,
    /// Where copies of the key filter go to be saved, set while one is being saved, and the
    /// filter's size and frame at the last copy (or the snapshot loaded at open).
    snapshots: mpsc::SyncSender<(Position, KeyFilter)>,
    snapshot_busy: Arc<AtomicBool>,
    snapshot_taken: (usize, Option<Position>),
}

/// A batch the journal writer is done with, on its way to the syncer, which answers it once
/// its frame (and every frame before it) is durable: in order, so no answer overtakes a
/// frame it may depend on (a replay of a key an earlier frame took, say).
struct Appended {
    /// The frame's place and what to sync; `None` when the batch wrote no frame (it
    /// failed first).
    frame: Option<(Position, SyncPoint)>,
    bytes: usize,
    result: StoreResult<Committed>,
    reply: oneshot::Sender<StoreResult<Committed>>,
}

/// The syncer's loop: takes every appended batch waiting, syncs their frames with one
/// `fdatasync` per segment, then for each in order publishes its accounts to readers, hands
/// its records to the projector and answers. A failed sync stops the process.
fn sync_and_answer(
    appended: &mpsc::Receiver<Appended>,
    shared: &Shared,
    projector: &mpsc::Sender<ToProject>,
) {
    while let Ok(first) = appended.recv() {
        let mut batch = vec![first];
        while batch.len() < SYNC_QUEUE_MAX * 4 {
            match appended.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let mut points = batch.iter_mut().filter_map(|item| item.frame.as_mut());
        if let Some((_, first_point)) = points.next() {
            let mut point = std::mem::take(first_point);
            for (_, later) in points {
                point.merge(std::mem::take(later));
            }
            if let Err(error) = point.sync() {
                fail_stop(&error);
            }
        }
        for item in batch {
            if let (Some((position, _)), Ok(committed)) = (&item.frame, &item.result) {
                shared
                    .unprojected
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push_back((position.sequence, Instant::now()));
                shared.publish(position.sequence, &committed.records);
                let to_project = ToProject {
                    position: *position,
                    records: Arc::clone(&committed.records),
                    bytes: item.bytes,
                };
                if projector.send(to_project).is_err() {
                    tracing::error!("the projector stopped; reads will wait for it until restart");
                }
            }
            // The caller may have gone away; the batch is committed either way.
            let _ = item.reply.send(item.result);
        }
    }
}

impl Writer {
    /// Decides and appends one batch; the syncer makes it durable and answers.
    fn write(
        &mut self,
        keys: &Keys,
        decide: Decide,
        reply: oneshot::Sender<StoreResult<Committed>>,
    ) -> Appended {
        match self.decide_and_append(keys, decide) {
            Ok((position, point, bytes, committed)) => {
                Appended { frame: Some((position, point)), bytes, result: Ok(committed), reply }
            }
            Err(error) => Appended { frame: None, bytes: 0, result: Err(error), reply },
        }
    }

    fn decide_and_append(
        &mut self,
        keys: &Keys,
        decide: Decide,
    ) -> StoreResult<(Position, SyncPoint, usize, Committed)> {
        self.await_projection()?;
        self.memory.published_up_to(self.shared.committed.load(Ordering::Acquire));
        let state = self.load(keys)?;
        let outcome = decide(state).map_err(StoreError::Invariant)?;
        self.memory.check(&outcome)?;
        let mut payload = Vec::new();
        frame::encode(&outcome, &mut payload);
        // Every batch of the store's tests also checks that its frame decodes to what was
        // decided.
        #[cfg(test)]
        assert_eq!(
            frame::decode(&payload).as_ref(),
            Ok(&Outcome { results: Vec::new(), ..outcome.clone() }),
            "a frame decodes to the outcome it was encoded from"
        );
        let sequence = match self.journal.append(&payload) {
            Ok(sequence) => sequence,
            Err(JournalError::Full) => {
                tracing::error!("the journal's disk is full: writes are refused until restart");
                return Err(StoreError::Unavailable(
                    "the disk is full: the ledger takes no writes; reads go on".to_owned(),
                ));
            }
            Err(JournalError::TooLarge(bytes)) => {
                return Err(StoreError::Invariant(format!(
                    "the batch's frame of {bytes} bytes is larger than a journal segment"
                )));
            }
            Err(JournalError::Poisoned) => {
                return Err(StoreError::Unavailable(
                    "the journal failed earlier and takes no writes until restart".to_owned(),
                ));
            }
            Err(error) => fail_stop(&error),
        };
        let point = self.journal.sync_point();
        let position = self.journal.last_position().ok_or_else(|| {
            StoreError::Invariant(format!("frame {sequence} was appended but has no place"))
        })?;
        // The next batch is decided from this one's outcome while the syncer makes it
        // durable; readers see it only once it is.
        let committed = Committed::new(outcome);
        self.memory.remember(sequence, &committed.records);
        let projected = *self.shared.projected.borrow();
        self.memory.forget(projected);
        if self.memory.seen.len() >= self.snapshot_taken.0 + SNAPSHOT_KEYS_EVERY {
            self.snapshot(false);
        }
        Ok((position, point, payload.len(), committed))
    }

    /// Hands a copy of the key filter, as of the last frame appended, to the snapshot
    /// thread. Skipped while the last copy is still being saved, unless `closing` (the
    /// store's last one, taken unless the last snapshot is of this very frame, so the next
    /// start reads nothing for the filter).
    fn snapshot(&mut self, closing: bool) {
        let Some(taken) = self.journal.last_position() else { return };
        if closing && self.snapshot_taken.1 == Some(taken) {
            return;
        }
        let was_busy = self.snapshot_busy.swap(true, Ordering::AcqRel);
        if was_busy && !closing {
            return;
        }
        self.snapshot_taken = (self.memory.seen.len(), Some(taken));
        // Blocks only when closing with a snapshot still being saved.
        let _ = self.snapshots.send((taken, self.memory.seen.clone()));
    }

    /// Waits while `PROJECTION_FRAMES_BEHIND_MAX` frames wait for the projector, so a
    /// sustained load runs at the rate the projection sustains; refuses the batch while the
    /// projector is failing (a full disk), so memory does not grow without bound.
    fn await_projection(&self) -> StoreResult<()> {
        let shared = &self.shared;
        let mut guard = shared.progress.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        loop {
            if shared.abandoned.load(Ordering::Acquire) {
                return Err(StoreError::Unavailable(
                    "the store is closing: its projection was abandoned".to_owned(),
                ));
            }
            if let Some(reason) = shared.stopped() {
                return Err(StoreError::Unavailable(format!(
                    "the query projection stopped ({reason}): the ledger takes no writes until \
                     kopek restarts"
                )));
            }
            if shared.projection_failing.load(Ordering::Acquire) {
                return Err(StoreError::Unavailable(
                    "the query projection cannot be written (is the disk full?): the ledger \
                     takes no writes until it can; reads of balances go on"
                        .to_owned(),
                ));
            }
            let committed = shared.committed.load(Ordering::Acquire);
            let projected = *shared.projected.borrow();
            if committed.saturating_sub(projected) < PROJECTION_FRAMES_BEHIND_MAX as u64 {
                return Ok(());
            }
            guard = shared
                .progress
                .1
                .wait_timeout(guard, Duration::from_millis(50))
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// The state `keys` name: from memory, and from the projection for what left memory.
    fn load(&self, keys: &Keys) -> StoreResult<State> {
        let memory = &self.memory;
        let mut state = State::default();
        let mut older = Keys::default();
        for pair in &keys.idempotency_keys {
            let hash = key_hash(&pair.0, &pair.1);
            match memory.tail_transfer_by_key(hash, &pair.0, &pair.1) {
                Some(transfer) => {
                    state.transfers.insert(transfer.id, transfer.clone());
                }
                None if memory.seen.contains(hash) => {
                    older.idempotency_keys.insert(pair.clone());
                }
                None => {}
            }
        }
        for id in &keys.transfer_ids {
            match memory.transfer(*id) {
                Some(transfer) => {
                    state.transfers.insert(*id, transfer.clone());
                }
                None => {
                    older.transfer_ids.insert(*id);
                }
            }
        }
        for id in &keys.quotes {
            match memory.quotes.get(id) {
                Some((_, quote)) => {
                    state.quotes.insert(*id, quote.clone());
                }
                None => {
                    older.quotes.insert(*id);
                }
            }
        }
        for pair in &keys.quote_keys {
            match memory.quote_keys.get(pair).and_then(|id| memory.quotes.get(id)) {
                Some((_, quote)) => {
                    state.quotes.insert(quote.id, quote.clone());
                }
                None => {
                    older.quote_keys.insert(pair.clone());
                }
            }
        }
        for id in &keys.users {
            match memory.users.get(id) {
                Some((_, user)) => {
                    state.users.insert(id.clone(), user.clone());
                }
                None => {
                    older.users.insert(id.clone());
                }
            }
        }
        for id in &keys.orders {
            match memory.orders.get(id) {
                Some((_, order)) => {
                    state.orders.insert(id.clone(), order.clone());
                }
                None => {
                    older.orders.insert(id.clone());
                }
            }
        }
        if older != Keys::default() {
            // What memory does not hold is as the projection has it: memory holds every
            // record of the frames the projection does not.
            let stored = load_state(&self.reader, &older)?;
            for (id, transfer) in stored.transfers {
                state.transfers.entry(id).or_insert(transfer);
            }
            for (id, quote) in stored.quotes {
                state.quotes.entry(id).or_insert(quote);
            }
            state.users.extend(stored.users);
            state.orders.extend(stored.orders);
        }
        // Every other leg of a conversion a loaded transfer belongs to.
        let conversions: BTreeSet<QuoteId> = state
            .transfers
            .values()
            .filter_map(|transfer| transfer.fx.as_ref().map(|leg| leg.quote_id))
            .collect();
        for quote in conversions {
            for transfer in legs_of(&self.reader, quote)? {
                state.transfers.entry(transfer.id).or_insert(transfer);
            }
            for id in memory.by_quote.get(&quote).into_iter().flatten() {
                if let Some(transfer) = memory.transfer(*id) {
                    state.transfers.insert(*id, transfer.clone());
                }
            }
        }
        // Memory holds every account: the projection's may be older.
        let mut account_ids: BTreeSet<&AccountId> = keys.accounts.iter().collect();
        let mut derived = Vec::new();
        for quote in state.quotes.values() {
            derived.extend(Keys::quote_accounts(quote));
        }
        for (offset, (tenant, currency)) in keys.allocated_users.iter().enumerate() {
            let user =
                UserId::from_number(memory.last_user_number + 1 + offset as u64).in_tenant(tenant);
            derived.push(user.account(*currency));
        }
        account_ids.extend(&derived);
        for transfer in state.transfers.values() {
            account_ids.extend(transfer.debit_account.iter());
            account_ids.extend(transfer.credit_account.iter());
        }
        let accounts = self.shared.accounts.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.accounts = account_ids
            .into_iter()
            .filter_map(|id| {
                let account = memory.unpublished_account(id).or_else(|| accounts.get(id));
                account.map(|account| (id.clone(), account.clone()))
            })
            .collect();
        drop(accounts);
        state.last_user_number = memory.last_user_number;
        for pair in &keys.rate_pairs {
            if let Some(rate) = memory.rates.get(pair).and_then(|rates| rates.values().next_back())
            {
                state.rates.insert(pair.clone(), rate.clone());
            }
        }
        Ok(state)
    }
}

/// Every leg the projection holds of the conversion priced by `quote`.
fn legs_of(reader: &Connection, quote: QuoteId) -> StoreResult<Vec<Transfer>> {
    let sql = format!("SELECT {TRANSFER_COLUMNS} FROM transfers WHERE quote_id = ?1");
    let mut statement = reader.prepare_cached(&sql).map_err(sql_error)?;
    let rows = statement.query_map([quote.to_string()], transfer_from_row).map_err(sql_error)?;
    rows.map(decoded).collect()
}

/// Stops the process after the journal failed to write or sync: what was written since the
/// last sync may or may not be on disk, so nothing more may be acknowledged, and the only
/// safe way on is a restart that reads back what the disk holds (fail-stop).
fn fail_stop(error: &JournalError) -> ! {
    tracing::error!(%error, "the journal could not be made durable; stopping the process");
    eprintln!("kopek: {error}; stopping the process (fail-stop)");
    std::process::abort()
}

/// The working state besides the accounts (which readers share): every record of the frames
/// the projection does not hold yet (the tail), open holds, rates, the user counter and the
/// filter of every transfer key. Tail records carry the frame that wrote them last, and leave
/// once the projection holds that frame.
#[derive(Default)]
struct Memory {
    last_user_number: u64,
    /// Every rate, by pair and `valid_from`.
    rates: HashMap<(Tenant, Currency, Currency), BTreeMap<Timestamp, FxRate>>,
    /// Open holds.
    holds: HashMap<TransferId, Transfer>,
    /// The tail's transfers: the frame that wrote each last, its place among that frame's
    /// transfer records (inserted, then updated), and its key's `key_hash`. The records stay
    /// in `frames`.
    transfers: HashMap<TransferId, TailTransfer>,
    /// The tail's transfers by `key_hash` of their key. A hash two keys share (never seen
    /// yet, but possible) is settled by `tail_transfer_by_key`.
    keys: HashMap<u64, TransferId>,
    /// The legs of conversions in the tail or held.
    by_quote: HashMap<QuoteId, BTreeSet<TransferId>>,
    users: HashMap<UserId, (u64, User)>,
    orders: HashMap<OrderId, (u64, Order)>,
    quotes: HashMap<QuoteId, (u64, Quote)>,
    quote_keys: HashMap<(Tenant, IdempotencyKey), QuoteId>,
    /// `key_hash` of every transfer's key.
    seen: KeyFilter,
    /// Accounts of frames appended but not yet durable (readers do not see them yet): the
    /// frame that changed each last and its place among that frame's accounts (opened, then
    /// changed). The records stay in `frames`.
    unpublished: HashMap<AccountId, (u64, usize)>,
    /// The tail's frames in order, consecutive: the records each wrote (shared with the
    /// projector, not copied), and the users, orders and quotes among them.
    frames: VecDeque<(u64, Arc<Outcome>, Written)>,
}

/// Where the tail holds a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TailTransfer {
    sequence: u64,
    place: usize,
    key_hash: u64,
}

/// The users, orders and quotes one frame wrote (kept as copies: they are few).
#[derive(Default)]
struct Written {
    users: Vec<UserId>,
    orders: Vec<OrderId>,
    quotes: Vec<QuoteId>,
}

impl Memory {
    /// Loads the working state from a projection that holds every frame; the key filter is
    /// `filter` when it was loaded from a snapshot (and brought up to date), else it is read
    /// from the tables.
    fn load(
        reader: &Connection,
        filter: Option<KeyFilter>,
    ) -> StoreResult<(HashMap<AccountId, Account>, Memory)> {
        let mut memory = Memory::default();
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts");
        let mut statement = reader.prepare(&sql).map_err(sql_error)?;
        let accounts = statement
            .query_map([], account_from_row)
            .map_err(sql_error)?
            .map(|row| decoded(row).map(|account| (account.id.clone(), account)))
            .collect::<StoreResult<HashMap<_, _>>>()?;
        let sql = format!("SELECT {TRANSFER_COLUMNS} FROM transfers WHERE status = 'pending'");
        let mut statement = reader.prepare(&sql).map_err(sql_error)?;
        for row in statement.query_map([], transfer_from_row).map_err(sql_error)? {
            let hold = decoded(row)?;
            if let Some(leg) = &hold.fx {
                memory.by_quote.entry(leg.quote_id).or_default().insert(hold.id);
            }
            memory.holds.insert(hold.id, hold);
        }
        let sql = format!("SELECT {RATE_COLUMNS} FROM fx_rates");
        let mut statement = reader.prepare(&sql).map_err(sql_error)?;
        for row in statement.query_map([], rate_from_row).map_err(sql_error)? {
            let rate = decoded(row)?;
            memory
                .rates
                .entry((rate.tenant.clone(), rate.base, rate.quote))
                .or_default()
                .insert(rate.valid_from, rate);
        }
        let number: i64 = reader
            .query_row("SELECT value FROM counters WHERE name = 'user_number'", [], |row| {
                row.get(0)
            })
            .map_err(sql_error)?;
        memory.last_user_number = u64::try_from(number)
            .map_err(|_| StoreError::Corrupt("negative user counter".to_owned()))?;
        if let Some(filter) = filter {
            memory.seen = filter;
            return Ok((accounts, memory));
        }
        // Transfers are never deleted, so the largest rowid is their count (found in the
        // table's B-tree without a scan): the filter is sized once instead of growing.
        let transfers: i64 = reader
            .query_row("SELECT COALESCE(MAX(rowid), 0) FROM transfers", [], |row| row.get(0))
            .map_err(sql_error)?;
        memory.seen.reserve(usize::try_from(transfers).unwrap_or(0));
        let mut statement = reader.prepare("SELECT key_hash FROM transfers").map_err(sql_error)?;
        let mut rows = statement.query([]).map_err(sql_error)?;
        // The column is the filter's hash (migration 0013), read from its index alone.
        while let Some(row) = rows.next().map_err(sql_error)? {
            let hash: i64 = row.get(0).map_err(sql_error)?;
            memory.seen.insert(u64::from_ne_bytes(hash.to_ne_bytes()));
        }
        Ok((accounts, memory))
    }

    /// The newest transfer `id` memory holds.
    fn transfer(&self, id: TransferId) -> Option<&Transfer> {
        self.transfers
            .get(&id)
            .and_then(|tail| self.tail_record(tail.sequence, tail.place))
            .or_else(|| self.holds.get(&id))
    }

    /// The transfer record at `place` in the tail's frame `sequence`.
    fn tail_record(&self, sequence: u64, place: usize) -> Option<&Transfer> {
        transfer_record(self.tail_frame(sequence)?, place)
    }

    /// The records of the tail's frame `sequence`.
    fn tail_frame(&self, sequence: u64) -> Option<&Outcome> {
        let first = self.frames.front()?.0;
        let (_, records, _) =
            self.frames.get(usize::try_from(sequence.checked_sub(first)?).ok()?)?;
        Some(records)
    }

    /// Forgets the unpublished accounts of frames up to `published`: readers' map has them.
    fn published_up_to(&mut self, published: u64) {
        if !self.unpublished.is_empty() {
            self.unpublished.retain(|_, (sequence, _)| *sequence > published);
        }
    }

    /// The newest state of account `id` of a frame not yet durable, if one changed it.
    fn unpublished_account(&self, id: &AccountId) -> Option<&Account> {
        let (sequence, place) = *self.unpublished.get(id)?;
        let records = self.tail_frame(sequence)?;
        match place.checked_sub(records.accounts_opened.len()) {
            None => records.accounts_opened.get(place),
            Some(changed) => records.accounts_changed.get(changed),
        }
    }

    /// The tail's newest transfer with `tenant`'s `key`, whose `key_hash` is `hash`.
    fn tail_transfer_by_key(
        &self,
        hash: u64,
        tenant: &Tenant,
        key: &IdempotencyKey,
    ) -> Option<&Transfer> {
        let id = self.keys.get(&hash)?;
        let found = self.transfer(*id)?;
        if found.tenant == *tenant && found.idempotency_key == *key {
            return Some(found);
        }
        // Another key with the same hash: look through the tail, newest first.
        self.frames.iter().rev().find_map(|(_, records, _)| {
            records
                .transfers_updated
                .iter()
                .rev()
                .chain(records.transfers_inserted.iter().rev())
                .find(|transfer| transfer.tenant == *tenant && transfer.idempotency_key == *key)
                .and_then(|transfer| self.transfer(transfer.id))
        })
    }

    /// What the projection's constraints would refuse, refused before the frame is written.
    fn check(&self, outcome: &Outcome) -> StoreResult<()> {
        for rate in &outcome.rates_set {
            let pair = (rate.tenant.clone(), rate.base, rate.quote);
            if self.rates.get(&pair).is_some_and(|rates| rates.contains_key(&rate.valid_from)) {
                return Err(StoreError::Conflict(format!(
                    "rate {}/{} valid from that time exists",
                    rate.base, rate.quote
                )));
            }
        }
        Ok(())
    }

    /// Takes in what frame `sequence` decided, before it is durable: the next batch is
    /// decided from it.
    fn remember(&mut self, sequence: u64, records: &Arc<Outcome>) {
        let accounts = records.accounts_opened.iter().chain(&records.accounts_changed);
        for (place, account) in accounts.enumerate() {
            self.unpublished.insert(account.id.clone(), (sequence, place));
        }
        let transfers = records.transfers_inserted.iter().chain(&records.transfers_updated);
        for (place, transfer) in transfers.enumerate() {
            if let Some(leg) = &transfer.fx {
                self.by_quote.entry(leg.quote_id).or_default().insert(transfer.id);
            }
            if transfer.status == TransferStatus::Pending {
                self.holds.insert(transfer.id, transfer.clone());
            } else {
                self.holds.remove(&transfer.id);
            }
            let key_hash = key_hash(&transfer.tenant, &transfer.idempotency_key);
            self.keys.insert(key_hash, transfer.id);
            self.seen.insert(key_hash);
            self.transfers.insert(transfer.id, TailTransfer { sequence, place, key_hash });
        }
        let mut written = Written::default();
        for user in &records.users_created {
            self.users.insert(user.id.clone(), (sequence, user.clone()));
            written.users.push(user.id.clone());
        }
        for order in records.orders_created.iter().chain(&records.orders_changed) {
            self.orders.insert(order.id.clone(), (sequence, order.clone()));
            written.orders.push(order.id.clone());
        }
        for quote in records.quotes_created.iter().chain(&records.quotes_used) {
            if let Some(key) = &quote.idempotency_key {
                self.quote_keys.insert((quote.tenant.clone(), key.clone()), quote.id);
            }
            self.quotes.insert(quote.id, (sequence, quote.clone()));
            written.quotes.push(quote.id);
        }
        if let Some(number) = records.last_user_number {
            self.last_user_number = number;
        }
        for rate in &records.rates_set {
            self.rates
                .entry((rate.tenant.clone(), rate.base, rate.quote))
                .or_default()
                .insert(rate.valid_from, rate.clone());
        }
        self.frames.push_back((sequence, Arc::clone(records), written));
    }

    /// Lets go of the tail records of every frame up to `projected`, unless a later frame
    /// wrote them again.
    fn forget(&mut self, projected: u64) {
        while self.frames.front().is_some_and(|(sequence, _, _)| *sequence <= projected) {
            let Some((sequence, records, written)) = self.frames.pop_front() else { break };
            let transfers = records.transfers_inserted.iter().chain(&records.transfers_updated);
            for (place, transfer) in transfers.enumerate() {
                let id = transfer.id;
                let tail = match self.transfers.get(&id) {
                    Some(tail) if (tail.sequence, tail.place) == (sequence, place) => *tail,
                    _ => continue, // a later frame wrote it again
                };
                self.transfers.remove(&id);
                if self.keys.get(&tail.key_hash) == Some(&id) {
                    self.keys.remove(&tail.key_hash);
                }
                if let Some(leg) = &transfer.fx
                    && !self.holds.contains_key(&id)
                    && let Some(legs) = self.by_quote.get_mut(&leg.quote_id)
                {
                    legs.remove(&id);
                    if legs.is_empty() {
                        self.by_quote.remove(&leg.quote_id);
                    }
                }
            }
            for id in written.users {
                if self.users.get(&id).is_some_and(|(last, _)| *last == sequence) {
                    self.users.remove(&id);
                }
            }
            for id in written.orders {
                if self.orders.get(&id).is_some_and(|(last, _)| *last == sequence) {
                    self.orders.remove(&id);
                }
            }
            for id in written.quotes {
                if self.quotes.get(&id).is_some_and(|(last, _)| *last == sequence)
                    && let Some((_, quote)) = self.quotes.remove(&id)
                    && let Some(key) = quote.idempotency_key
                {
                    let pair = (quote.tenant, key);
                    if self.quote_keys.get(&pair) == Some(&id) {
                        self.quote_keys.remove(&pair);
                    }
                }
            }
        }
    }
}

/// The transfer record at `place` among a frame's inserted, then updated, transfers.
fn transfer_record(records: &Outcome, place: usize) -> Option<&Transfer> {
    match place.checked_sub(records.transfers_inserted.len()) {
        None => records.transfers_inserted.get(place),
        Some(updated) => records.transfers_updated.get(updated),
    }
}

#[async_trait]
impl Store for JournalStore {
    async fn write_batch(&self, keys: Keys, decide: Decide) -> StoreResult<Committed> {
        self.queue(keys, decide).await
    }

    fn pipelined(&self) -> bool {
        true
    }

    fn submit_batch(self: Arc<Self>, keys: Keys, decide: Decide) -> PendingCommit {
        Box::pin(self.queue(keys, decide))
    }

    async fn account(&self, id: &AccountId) -> StoreResult<Option<Account>> {
        let accounts = self.shared.accounts.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(accounts.get(id).cloned())
    }

    async fn list_accounts(
        &self,
        tenant: Option<&str>,
        owner: Option<&str>,
        after: Option<&AccountId>,
        limit: usize,
    ) -> StoreResult<Vec<Account>> {
        self.caught_up().await?;
        self.projection.list_accounts(tenant, owner, after, limit).await
    }

    async fn transfer(&self, id: TransferId) -> StoreResult<Option<Transfer>> {
        self.caught_up().await?;
        self.projection.transfer(id).await
    }

    async fn transfer_by_key(
        &self,
        tenant: &Tenant,
        key: &IdempotencyKey,
    ) -> StoreResult<Option<Transfer>> {
        self.caught_up().await?;
        self.projection.transfer_by_key(tenant, key).await
    }

    async fn backup(&self) -> StoreResult<kopek_store::TakenBackup> {
        crate::backup::take_beside(self.projection.path()).await
    }

    async fn settle(&self) -> StoreResult<()> {
        self.caught_up().await
    }

    async fn search_transfers(&self, query: &TransferQuery) -> StoreResult<Page<Transfer>> {
        // A search answers from the projection as it stands, without waiting for it: under a
        // full write load it runs seconds behind the last acknowledged frame, and an operator's
        // search should not wait that long. Positions are given in frame order as frames are
        // projected, so a cursor stays stable all the same. A lookup by idempotency key is the
        // read-after-write case (did my transfer commit?): it waits, as reads by id do.
        if query.idempotency_key.is_some() {
            self.caught_up().await?;
        } else {
            self.projection_running()?;
        }
        self.projection.search_transfers(query).await
    }

    async fn entries(
        &self,
        account: &AccountId,
        after: Option<u64>,
        limit: usize,
    ) -> StoreResult<Page<StoredEntry>> {
        self.caught_up().await?;
        self.projection.entries(account, after, limit).await
    }

    async fn transfer_entries(&self, ids: &[TransferId]) -> StoreResult<Vec<StoredEntry>> {
        self.caught_up().await?;
        self.projection.transfer_entries(ids).await
    }

    async fn balance_before(
        &self,
        account: &AccountId,
        before: Timestamp,
    ) -> StoreResult<Option<i64>> {
        self.caught_up().await?;
        self.projection.balance_before(account, before).await
    }

    async fn holds_due(&self, now: Timestamp, limit: usize) -> StoreResult<Vec<TransferId>> {
        self.caught_up().await?;
        self.projection.holds_due(now, limit).await
    }

    async fn next_hold_expiry(&self) -> StoreResult<Option<Timestamp>> {
        self.caught_up().await?;
        self.projection.next_hold_expiry().await
    }

    async fn events_after(
        &self,
        tenant: Option<&str>,
        sequence: u64,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        self.caught_up().await?;
        self.projection.events_after(tenant, sequence, limit).await
    }

    async fn events_of(
        &self,
        tenant: &str,
        subject: &str,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        self.caught_up().await?;
        self.projection.events_of(tenant, subject, limit).await
    }

    async fn last_event_sequence(&self) -> StoreResult<u64> {
        self.caught_up().await?;
        self.projection.last_event_sequence().await
    }

    async fn watermark(&self) -> StoreResult<Watermark> {
        self.caught_up().await?;
        self.projection.watermark().await
    }

    async fn user(&self, id: &UserId) -> StoreResult<Option<User>> {
        self.caught_up().await?;
        self.projection.user(id).await
    }

    async fn order(&self, id: &OrderId) -> StoreResult<Option<Order>> {
        self.caught_up().await?;
        self.projection.order(id).await
    }

    async fn orders_of_user(&self, user: &UserId, limit: usize) -> StoreResult<Vec<Order>> {
        self.caught_up().await?;
        self.projection.orders_of_user(user, limit).await
    }

    async fn pending_orders(&self, limit: usize) -> StoreResult<Vec<Order>> {
        self.caught_up().await?;
        self.projection.pending_orders(limit).await
    }

    /// The books as the projection has them, and every account in memory against its row
    /// at the same frame (while writes go on, a few tries find a moment when both agree on
    /// the frame; a ledger that never pauses skips that comparison).
    async fn verify(&self) -> StoreResult<VerifyReport> {
        self.caught_up().await?;
        let mut report = self.projection.verify().await?;
        for _ in 0..VERIFY_ATTEMPTS_MAX {
            let (committed, memory): (u64, Vec<Account>) = {
                let accounts =
                    self.shared.accounts.read().unwrap_or_else(|poisoned| poisoned.into_inner());
                // Stored under the write lock with the accounts: the two agree.
                let committed = self.shared.committed.load(Ordering::Acquire);
                (committed, accounts.values().cloned().collect())
            };
            self.caught_up().await?;
            let (mark, stored) = self.projection.accounts_at_mark().await?;
            if mark != committed {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            let stored: HashMap<&AccountId, &Account> =
                stored.iter().map(|account| (&account.id, account)).collect();
            for account in &memory {
                match stored.get(&account.id) {
                    None => report.problems.push(format!(
                        "account {} is in the journal but not in the projection",
                        account.id
                    )),
                    Some(row) if row.balance != account.balance || row.status != account.status => {
                        report.problems.push(format!(
                            "account {}: the projection has {:?} ({}), the journal {:?} ({})",
                            account.id,
                            row.balance,
                            row.status.as_str(),
                            account.balance,
                            account.status.as_str()
                        ));
                    }
                    Some(_) => {}
                }
            }
            if stored.len() != memory.len() {
                report.problems.push(format!(
                    "the projection has {} accounts, the journal {}",
                    stored.len(),
                    memory.len()
                ));
            }
            return Ok(report);
        }
        tracing::debug!("writes never paused; memory was not compared with the projection");
        Ok(report)
    }

    async fn verify_history(&self) -> StoreResult<Vec<String>> {
        self.verify_journal().await
    }

    async fn relay_claim(
        &self,
        sink: &str,
        holder: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> StoreResult<Option<u64>> {
        self.projection.relay_claim(sink, holder, now, until).await
    }

    async fn relay_advance(
        &self,
        sink: &str,
        holder: &str,
        sequence: u64,
        until: Timestamp,
    ) -> StoreResult<bool> {
        self.projection.relay_advance(sink, holder, sequence, until).await
    }

    async fn relay_cursors(&self) -> StoreResult<Vec<(String, u64)>> {
        self.projection.relay_cursors().await
    }

    async fn inbox_contains(&self, consumer: &str, event_id: &str) -> StoreResult<bool> {
        self.caught_up().await?;
        self.projection.inbox_contains(consumer, event_id).await
    }

    async fn consume(
        &self,
        consumer: &str,
        items: Vec<Consumed>,
        now: Timestamp,
    ) -> StoreResult<usize> {
        self.caught_up().await?;
        self.projection.consume(consumer, items, now).await
    }

    async fn spending(&self, tenant: &str, user: &str) -> StoreResult<Vec<SpendingTotal>> {
        self.projection.spending(tenant, user).await
    }

    async fn create_webhook(&self, webhook: &Webhook) -> StoreResult<()> {
        self.projection.create_webhook(webhook).await
    }

    async fn webhooks(&self, tenant: Option<&str>) -> StoreResult<Vec<Webhook>> {
        self.projection.webhooks(tenant).await
    }

    async fn delete_webhook(&self, tenant: &str, id: &str, now: Timestamp) -> StoreResult<bool> {
        self.projection.delete_webhook(tenant, id, now).await
    }

    async fn claim_deliveries(
        &self,
        now: Timestamp,
        until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        self.projection.claim_deliveries(now, until, limit).await
    }

    async fn record_attempt(&self, result: &AttemptResult) -> StoreResult<bool> {
        self.projection.record_attempt(result).await
    }

    async fn deliveries(&self, subscription_id: &str, limit: usize) -> StoreResult<Vec<Delivery>> {
        self.projection.deliveries(subscription_id, limit).await
    }

    async fn delivery(&self, id: &str) -> StoreResult<Option<Delivery>> {
        self.projection.delivery(id).await
    }

    async fn delivery_attempts(&self, delivery_id: &str) -> StoreResult<Vec<Attempt>> {
        self.projection.delivery_attempts(delivery_id).await
    }

    async fn redeliver(
        &self,
        subscription_id: &str,
        delivery_id: &str,
        max_attempts: u32,
        now: Timestamp,
    ) -> StoreResult<bool> {
        self.projection.redeliver(subscription_id, delivery_id, max_attempts, now).await
    }

    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        self.projection.create_api_key(key).await
    }

    async fn api_key(&self, id: &str) -> StoreResult<Option<ApiKey>> {
        self.projection.api_key(id).await
    }

    async fn api_keys(&self, tenant: Option<&str>) -> StoreResult<Vec<ApiKey>> {
        self.projection.api_keys(tenant).await
    }

    async fn revoke_api_key(&self, id: &str, now: Timestamp) -> StoreResult<bool> {
        self.projection.revoke_api_key(id, now).await
    }

    async fn audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        self.caught_up().await?;
        self.projection.audit(query).await
    }

    async fn fx_rates(&self, tenant: &Tenant, at: Timestamp) -> StoreResult<Vec<FxRate>> {
        self.caught_up().await?;
        self.projection.fx_rates(tenant, at).await
    }

    async fn quote(&self, id: QuoteId) -> StoreResult<Option<Quote>> {
        self.caught_up().await?;
        self.projection.quote(id).await
    }

    async fn fx_accounts(&self, tenant: &Tenant) -> StoreResult<Vec<Account>> {
        self.caught_up().await?;
        self.projection.fx_accounts(tenant).await
    }

    async fn fx_revenue(
        &self,
        tenant: &Tenant,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<Vec<FxRevenue>> {
        self.caught_up().await?;
        self.projection.fx_revenue(tenant, from, to).await
    }

    fn pool_usage(&self) -> (usize, usize) {
        self.projection.pool_usage()
    }

    fn journal_progress(&self) -> Option<JournalProgress> {
        let (committed, projected) = self.marks();
        Some(JournalProgress {
            committed,
            projected,
            lag_seconds: self.shared.lag().as_secs_f64(),
            lag_seconds_max: Duration::from_micros(
                self.shared.lag_max_micros.load(Ordering::Relaxed),
            )
            .as_secs_f64(),
        })
    }
}

#[cfg(test)]
mod tests;
