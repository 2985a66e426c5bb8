//! kopek-engine: the write path. Callers put commands on a bounded queue; one writer task
//! drains whatever is queued (up to a batch limit, with no timer when idle), applies the
//! batch with `kopek_core::apply` inside one store transaction, and answers every caller
//! only after the commit. Throughput comes from this group commit: one transaction and one
//! fsync for the whole batch.
//!
//! On a store that is `pipelined` (the journal store), the writer hands over the next batch
//! while the one before is made durable: the store queues it at once and decides it from
//! what the one before decided; answers still go out in batch order, each after its commit.
//!
//! The writer also expires holds: it sleeps until the earliest hold expiry it knows of.
//! `Engine::close` stops intake; the writer answers what is queued, then stops.

mod clock;

pub use clock::{CommitClock, UlidGenerator};

use kopek_core::{
    AccountResult, Authority, Batch, Command, CommandBody, CommandResult, OrderResult, Outcome,
    Tenant, Timestamp, TransferId, TransferResult, TransferStatus, UserResult, limits,
};
use kopek_store::{Committed, PendingCommit, Store, StoreError, StoreResult};
use std::collections::{BTreeSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Commands that may wait for the writer; one more is answered `OVERLOADED` at once.
    pub queue_capacity: usize,
    /// Commands in one batch (one database transaction).
    pub batch_commands_max: usize,
    /// Transfers in one batch; the writer stops draining once a batch holds this many.
    pub batch_transfers_max: usize,
    /// Whether this writer expires holds whose timeout passed. Off in `--role api`
    /// processes, where a worker process does it.
    pub expire_holds: bool,
    /// How often the writer asks the store for the earliest hold expiry even when it knows of
    /// none due: holds placed by other processes are found this way.
    pub expiry_recheck: Duration,
    /// What commit times and hold expiry read: the wall clock, or a test's `ManualClock`.
    pub clock: Arc<dyn kopek_clock::Clock>,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            queue_capacity: 65_536,
            batch_commands_max: limits::COMMANDS_PER_BATCH_MAX,
            batch_transfers_max: 8_192,
            expire_holds: true,
            expiry_recheck: Duration::from_secs(60),
            clock: kopek_clock::system(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The queue is full: the caller should back off and retry.
    #[error("the write queue is full")]
    Overloaded,
    /// The engine is stopping and takes no new commands.
    #[error("the ledger is shutting down")]
    ShuttingDown,
    /// The store failed; nothing of the batch was written. Retrying is safe.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// A broken invariant stopped the batch; nothing of it was written.
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    /// What a caller is told, the same on every surface: a code and a sentence. Details of
    /// store and internal failures stay in the log.
    pub fn rejection(&self) -> kopek_core::Rejection {
        use kopek_core::{ErrorCode, Rejection};
        match self {
            EngineError::Overloaded => {
                Rejection::new(ErrorCode::Overloaded, "the write queue is full; retry shortly")
            }
            EngineError::ShuttingDown => {
                Rejection::new(ErrorCode::Unavailable, "the ledger is shutting down; retry later")
            }
            EngineError::Unavailable(_) => {
                Rejection::new(ErrorCode::Unavailable, "the request was not applied; retry it")
            }
            EngineError::Internal(_) => {
                Rejection::new(ErrorCode::Internal, "the request was not applied; retry it")
            }
        }
    }
}

/// Counters of the write path since start.
#[derive(Debug, Default)]
pub struct EngineStats {
    pub batches: AtomicU64,
    pub commands: AtomicU64,
    pub transfers: AtomicU64,
    pub failed_batches: AtomicU64,
}

/// Counts, by code, what the batch refused or declined (replays are not counted again).
fn count_rejections(committed: &Committed) {
    let rejections = &kopek_telemetry::metrics().rejections;
    let count = |code: kopek_core::ErrorCode| rejections.with_label_values(&[code.as_str()]).inc();
    for result in &committed.results {
        match result {
            CommandResult::Transfers(results) => {
                for result in results {
                    match result {
                        TransferResult::Committed(transfer) => {
                            if let Some(error) = &transfer.error {
                                count(error.code);
                            }
                        }
                        TransferResult::Rejected(rejection) => count(rejection.code),
                        TransferResult::Replayed(_) => {}
                    }
                }
            }
            CommandResult::Accounts(results) => {
                for result in results {
                    if let AccountResult::Rejected(rejection) = result {
                        count(rejection.code);
                    }
                }
            }
            CommandResult::Account(AccountResult::Rejected(rejection))
            | CommandResult::User(UserResult::Rejected(rejection))
            | CommandResult::Order(OrderResult::Rejected(rejection)) => count(rejection.code),
            _ => {}
        }
    }
}

struct Job {
    command: Command,
    reply: oneshot::Sender<Result<CommandResult, EngineError>>,
    /// The span that queued the command: the batch links to it and records its id on it.
    span: Span,
}

impl Job {
    /// A job for `command`, sent from the current span. A command that names no trace of its
    /// own joins that span's: its events carry the span's `traceparent`.
    fn new(mut command: Command) -> (Job, Ticket) {
        let (reply, answer) = oneshot::channel();
        let span = Span::current();
        if command.trace.is_none() {
            command.trace = kopek_telemetry::trace::traceparent(&span);
        }
        (Job { command, reply, span }, Ticket(answer))
    }
}

/// A handle to the write path; cheap to clone. The writer stops once every handle is gone
/// and the queue is empty.
#[derive(Clone)]
pub struct Engine {
    sender: mpsc::Sender<Job>,
    store: Arc<dyn Store>,
    stats: Arc<EngineStats>,
    closed: CancellationToken,
    commits: watch::Receiver<u64>,
}

/// The answer to one enqueued command, ready after its batch commits.
pub struct Ticket(oneshot::Receiver<Result<CommandResult, EngineError>>);

impl Ticket {
    pub async fn wait(self) -> Result<CommandResult, EngineError> {
        self.0.await.unwrap_or(Err(EngineError::ShuttingDown))
    }
}

impl Engine {
    /// Starts the writer task on the current tokio runtime.
    pub fn start(store: Arc<dyn Store>, config: EngineConfig) -> (Engine, JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(config.queue_capacity.max(1));
        let stats = Arc::new(EngineStats::default());
        let closed = CancellationToken::new();
        let (committed, commits) = watch::channel(0);
        let recheck_at = tokio::time::Instant::now() + config.expiry_recheck;
        let clock = CommitClock::after(config.clock.clone(), None);
        let writer = Writer {
            clock,
            committed,
            receiver,
            store: store.clone(),
            config,
            ids: Arc::new(Mutex::new(UlidGenerator::default())),
            stats: stats.clone(),
            next_expiry: None,
            recheck_at,
            unexpirable: BTreeSet::new(),
            closed: closed.clone(),
            batches: 0,
        };
        let handle = tokio::spawn(writer.run());
        (Engine { sender, store, stats, closed, commits }, handle)
    }

    /// Queues kopek's own command (`Authority::Ledger`) without waiting; `OVERLOADED` at once
    /// when the queue is full. The APIs never use it: they send the caller's command
    /// (`enqueue_now`, `submit_command`) with the authority of the caller's key.
    pub fn enqueue_as_ledger(
        &self,
        tenant: Tenant,
        body: CommandBody,
    ) -> Result<Ticket, EngineError> {
        self.enqueue_now(Command::new(tenant, Authority::Ledger, body))
    }

    /// Queues a whole command (with its sender, for the audit trail) without waiting.
    pub fn enqueue_now(&self, command: Command) -> Result<Ticket, EngineError> {
        let (job, ticket) = Job::new(command);
        self.sender.try_send(job).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => EngineError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => EngineError::ShuttingDown,
        })?;
        Ok(ticket)
    }

    /// Queues `command` (which may carry an inbox mark), waiting for room in the queue: what
    /// a consumer answering events uses.
    pub async fn enqueue_command(&self, command: Command) -> Result<Ticket, EngineError> {
        let (job, ticket) = Job::new(command);
        self.sender.send(job).await.map_err(|_| EngineError::ShuttingDown)?;
        Ok(ticket)
    }

    /// Queues a whole command without waiting (`OVERLOADED` at once when the queue is full)
    /// and waits for its committed result: what the APIs use, with the caller's tenant.
    /// The span `ledger.submit` covers the wait in the queue, the batch and the commit; the
    /// writer records the batch's id on it.
    pub async fn submit_command(&self, command: Command) -> Result<CommandResult, EngineError> {
        let span = Engine::submit_span(&command);
        async { self.enqueue_now(command)?.wait().await }.instrument(span).await
    }

    /// The span `ledger.submit` of a caller's command: enqueue the command inside it (its
    /// events then carry the span's trace) and wait for the answer in it.
    pub fn submit_span(command: &Command) -> tracing::Span {
        tracing::info_span!(
            "ledger.submit",
            idempotency_key = command.idempotency_key(),
            items = command.body.size(),
            batch_id = tracing::field::Empty,
        )
    }

    /// Queues kopek's own command (`Authority::Ledger`) and waits for its committed result.
    pub async fn submit_as_ledger(
        &self,
        tenant: Tenant,
        body: CommandBody,
    ) -> Result<CommandResult, EngineError> {
        self.submit_command(Command::new(tenant, Authority::Ledger, body)).await
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Stops taking commands (they answer `SHUTTING_DOWN`); the writer answers everything
    /// already queued and then stops, even while other handles are still alive.
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Counts committed batches: a change means new rows (and outbox events) in the store.
    /// The outbox tailer waits on it instead of polling.
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.commits.clone()
    }

    /// Commands waiting for the writer right now.
    pub fn queue_depth(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }

    /// Commands the queue holds before `OVERLOADED`.
    pub fn queue_capacity(&self) -> usize {
        self.sender.max_capacity()
    }
}

struct Writer {
    /// Bumped after every commit.
    committed: watch::Sender<u64>,
    receiver: mpsc::Receiver<Job>,
    store: Arc<dyn Store>,
    config: EngineConfig,
    clock: CommitClock,
    ids: Arc<Mutex<UlidGenerator>>,
    stats: Arc<EngineStats>,
    /// The earliest hold expiry known; the writer wakes then to expire holds.
    next_expiry: Option<Timestamp>,
    /// When the writer next asks the store for due holds regardless of what it knows.
    recheck_at: tokio::time::Instant,
    /// Holds whose expiry failed on its own; skipped until the next start.
    unexpirable: BTreeSet<TransferId>,
    /// Cancelled by `Engine::close`.
    closed: CancellationToken,
    /// Batches formed since start: the id of the last one, for spans and log lines.
    batches: u64,
}

/// A batch handed to the store and not answered yet.
struct InFlight {
    batch: Arc<Batch>,
    replies: Vec<oneshot::Sender<Result<CommandResult, EngineError>>>,
    span: Span,
    started: Started,
    answer: PendingCommit,
}

/// When a batch was handed to the store, and the commit time it was decided at.
struct Started {
    now: Timestamp,
    at: std::time::Instant,
}

/// Batches a pipelined store holds at once, the first being made durable while the next
/// are decided.
const PIPELINE_DEPTH: usize = 2;
/// Requests a batch's span links to at most.
const LINKS_MAX: usize = 32;
/// Times a batch is run again after a write conflict with another process.
const CONFLICT_RETRIES: u64 = 8;
/// Holds expired per batch of the expiry pass.
const EXPIRY_BATCH_MAX: usize = 1_024;

impl Writer {
    async fn run(mut self) {
        self.start_after_watermark().await;
        if self.config.expire_holds {
            self.next_expiry = self.store.next_hold_expiry().await.unwrap_or_else(|error| {
                tracing::warn!(%error, "could not read hold expiries at start; retrying soon");
                Some(self.config.clock.now())
            });
        }
        let expire_holds = self.config.expire_holds;
        // A pipelined store takes the next batches while one is made durable; answers still
        // go out in batch order.
        let depth = if self.store.pipelined() { PIPELINE_DEPTH } else { 1 };
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let mut closing = false;
        let mut drained = false;
        loop {
            if drained && in_flight.is_empty() {
                break;
            }
            let expiry = self.next_expiry.filter(|_| expire_holds && !drained);
            let clock = &self.config.clock;
            tokio::select! {
                biased;
                answer = async { in_flight.front_mut().expect("a batch in flight").answer.as_mut().await },
                    if !in_flight.is_empty() =>
                {
                    let done = in_flight.pop_front().expect("a batch in flight");
                    let span = done.span.clone();
                    self.finish(done, answer).instrument(span).await;
                }
                job = self.receiver.recv(), if !drained && in_flight.len() < depth => match job {
                    Some(first) => {
                        let jobs = self.drain(first);
                        in_flight.push_back(self.begin(jobs));
                    }
                    None => drained = true,
                },
                () = self.closed.cancelled(), if !closing => {
                    // Take no new commands; what is queued is still answered.
                    self.receiver.close();
                    closing = true;
                }
                // The earliest hold it knows of is due, by the engine's clock.
                () = until_due(clock.as_ref(), expiry), if expiry.is_some() => {
                    self.expire_due().await;
                }
                // With no hold due it still looks now and then: another process may have
                // placed holds. The recheck time is fixed when set, so a busy writer still
                // gets to it.
                () = tokio::time::sleep_until(self.recheck_at), if expire_holds && !drained => {
                    self.expire_due().await;
                }
            }
        }
        tracing::info!("write path stopped: queue closed and drained");
    }

    /// Continues the commit clock and the ids after what the store already holds, so neither
    /// goes back in time when the wall clock did between runs.
    async fn start_after_watermark(&mut self) {
        match self.store.watermark().await {
            Ok(watermark) => {
                self.clock = CommitClock::after(self.config.clock.clone(), watermark.committed_at);
                if let Ok(mut ids) = self.ids.lock() {
                    *ids = UlidGenerator::after(watermark.largest_id);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "could not read the store's watermark; using the wall clock")
            }
        }
    }

    /// Takes whatever else is queued, up to the batch limits, without waiting.
    fn drain(&mut self, first: Job) -> Vec<Job> {
        let mut transfers = first.command.body.size();
        let mut jobs = vec![first];
        while jobs.len() < self.config.batch_commands_max
            && transfers < self.config.batch_transfers_max
        {
            match self.receiver.try_recv() {
                Ok(job) => {
                    transfers += job.command.body.size();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        jobs
    }

    /// Forms a batch of `jobs` and hands it to the store.
    fn begin(&mut self, jobs: Vec<Job>) -> InFlight {
        self.batches = self.batches.wrapping_add(1);
        let batch_id = self.batches;
        let span = tracing::info_span!(
            "ledger.batch",
            batch_id,
            commands = jobs.len(),
            transfers = tracing::field::Empty,
        );
        for job in jobs.iter().take(LINKS_MAX) {
            if let Some(traceparent) = &job.command.trace {
                kopek_telemetry::trace::link_to(&span, traceparent);
            }
        }
        for job in &jobs {
            job.span.record("batch_id", batch_id);
        }
        let (commands, replies): (Vec<Command>, Vec<_>) =
            jobs.into_iter().map(|job| (job.command, job.reply)).unzip();
        let batch = Arc::new(Batch { commands });
        span.record("transfers", batch.transfer_count());
        let (started, answer) = span.in_scope(|| self.submit(&batch));
        InFlight { batch, replies, span, started, answer }
    }

    /// Answers a batch's callers once the store answered it.
    async fn finish(&mut self, done: InFlight, answer: StoreResult<Committed>) {
        let InFlight { batch, replies, started, .. } = done;
        match self.complete(&batch, started, answer).await {
            Ok(committed) => {
                self.note_holds(&committed.records);
                for (reply, result) in replies.into_iter().zip(committed.results) {
                    // A caller that went away still had its command committed.
                    let _ = reply.send(Ok(result));
                }
            }
            // One bad command must not fail its neighbours: retry each on its own.
            Err(EngineError::Internal(_)) if batch.commands.len() > 1 => {
                for (command, reply) in batch.commands.iter().zip(replies) {
                    let single = Arc::new(Batch { commands: vec![command.clone()] });
                    let result = self.commit(single).await;
                    if let Ok(committed) = &result {
                        self.note_holds(&committed.records);
                    }
                    let _ = reply.send(result.map(|mut committed| committed.results.remove(0)));
                }
            }
            Err(error) => {
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// Hands `batch` to the store at the next commit time.
    fn submit(&mut self, batch: &Arc<Batch>) -> (Started, PendingCommit) {
        let now = self.clock.tick();
        (Started { now, at: std::time::Instant::now() }, self.attempt(batch, now))
    }

    /// One attempt at committing `batch` at `now`.
    fn attempt(&self, batch: &Arc<Batch>, now: Timestamp) -> PendingCommit {
        let mut ids = SharedIds { generator: self.ids.clone(), now };
        let decided = batch.clone();
        Arc::clone(&self.store).submit_batch(
            batch.keys(),
            Box::new(move |state| {
                std::panic::catch_unwind(AssertUnwindSafe(|| {
                    kopek_core::apply(state, &decided, now, &mut ids)
                }))
                .map_err(panic_message)
            }),
        )
    }

    /// Commits `batch` on its own, waiting for the store.
    async fn commit(&mut self, batch: Arc<Batch>) -> Result<Committed, EngineError> {
        let (started, answer) = self.submit(&batch);
        let first = answer.await;
        self.complete(&batch, started, first).await
    }

    /// Runs `batch` again while another process conflicts with it, then counts the outcome
    /// and maps a store failure to what callers are told.
    async fn complete(
        &mut self,
        batch: &Arc<Batch>,
        started: Started,
        first: StoreResult<Committed>,
    ) -> Result<Committed, EngineError> {
        let Started { now, at: started } = started;
        let transfer_count = batch.transfer_count() as u64;
        let command_count = batch.commands.len() as u64;
        let mut attempt = 0;
        let span = tracing::info_span!("ledger.commit", attempts = tracing::field::Empty);
        let mut result = first;
        // Another process wrote the same key or account at the same moment: run the batch
        // again; it now sees those rows (a replay, an existing account).
        while let Err(StoreError::Conflict(message)) = &result {
            if attempt >= CONFLICT_RETRIES {
                break;
            }
            attempt += 1;
            tracing::debug!(%message, attempt, "write conflict; running the batch again");
            tokio::time::sleep(Duration::from_millis(attempt * 2)).await;
            result = self.attempt(batch, now).instrument(span.clone()).await;
        }
        span.record("attempts", attempt + 1);
        match result {
            Ok(committed) => {
                self.committed.send_modify(|count| *count += 1);
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
                self.stats.commands.fetch_add(command_count, Ordering::Relaxed);
                self.stats.transfers.fetch_add(transfer_count, Ordering::Relaxed);
                let metrics = kopek_telemetry::metrics();
                metrics.batch_items.observe(transfer_count as f64);
                metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
                count_rejections(&committed);
                tracing::debug!(
                    commands = command_count,
                    transfers = transfer_count,
                    commit_ms = started.elapsed().as_secs_f64() * 1e3,
                    "batch committed"
                );
                Ok(committed)
            }
            Err(error) => {
                self.stats.failed_batches.fetch_add(1, Ordering::Relaxed);
                kopek_telemetry::metrics().batches_failed.inc();
                // If the connection broke during the commit, the batch may have been written after all:
                // its callers are told "unavailable", and a retry on the same key replays.
                tracing::error!(%error, commands = command_count, "batch failed; callers may retry");
                Err(match error {
                    // A row that does not decode fails the same way on every retry: treat it
                    // like a broken invariant, so the batch is retried command by command.
                    StoreError::Invariant(message) | StoreError::Corrupt(message) => {
                        EngineError::Internal(message)
                    }
                    StoreError::Unavailable(message) | StoreError::Conflict(message) => {
                        EngineError::Unavailable(message)
                    }
                })
            }
        }
    }

    /// Keeps the next wake-up at the earliest expiry of any hold just placed.
    fn note_holds(&mut self, outcome: &Outcome) {
        let placed = outcome
            .transfers_inserted
            .iter()
            .filter(|transfer| transfer.status == TransferStatus::Pending)
            .filter_map(|transfer| transfer.expires_at);
        for expires_at in placed {
            self.next_expiry =
                Some(self.next_expiry.map_or(expires_at, |known| known.min(expires_at)));
        }
    }

    async fn expire_due(&mut self) {
        self.recheck_at = tokio::time::Instant::now() + self.config.expiry_recheck;
        let now = self.config.clock.now();
        let retry_soon = Some(Timestamp::from_unix_micros(now.as_unix_micros() + 1_000_000));
        loop {
            let due = match self.store.holds_due(now, EXPIRY_BATCH_MAX).await {
                Ok(due) => due,
                Err(error) => {
                    tracing::warn!(%error, "could not read due holds; retrying in a second");
                    self.next_expiry = retry_soon;
                    return;
                }
            };
            let full = due.len() == EXPIRY_BATCH_MAX;
            let due: Vec<TransferId> =
                due.into_iter().filter(|id| !self.unexpirable.contains(id)).collect();
            if due.is_empty() {
                break;
            }
            match self.commit(Arc::new(expire_batch(due.clone()))).await {
                Ok(_) => {}
                // One hold that cannot expire must not block the others: go one at a time and
                // set aside the ones that fail for an operator to look at.
                Err(EngineError::Internal(_)) => {
                    for id in due {
                        if let Err(error) = self.commit(Arc::new(expire_batch(vec![id]))).await {
                            tracing::error!(%error, hold = %id, "hold cannot expire; skipping it until restart");
                            self.unexpirable.insert(id);
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "hold expiry failed; retrying in a second");
                    self.next_expiry = retry_soon;
                    return;
                }
            }
            if !full {
                break;
            }
        }
        self.next_expiry = match self.store.next_hold_expiry().await {
            // Only holds set aside as unexpirable are still due: wait for the recheck instead
            // of waking again at once.
            Ok(Some(next)) if next <= now => None,
            Ok(next) => next,
            Err(_) => retry_soon,
        };
    }
}

fn expire_batch(ids: Vec<TransferId>) -> Batch {
    let command =
        Command::new(Tenant::default_tenant(), Authority::Ledger, CommandBody::ExpireHolds(ids));
    Batch { commands: vec![command] }
}

/// Resolves once `clock` reaches `expiry`; never without one.
async fn until_due(clock: &dyn kopek_clock::Clock, expiry: Option<Timestamp>) {
    match expiry {
        Some(at) => clock.sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    format!("apply panicked: {text}")
}

/// The engine's id generator, shared with the closure that runs on the store's thread.
struct SharedIds {
    generator: Arc<Mutex<UlidGenerator>>,
    now: Timestamp,
}

impl kopek_core::IdSource for SharedIds {
    fn next_ulid(&mut self) -> kopek_core::Ulid {
        match self.generator.lock() {
            Ok(mut generator) => generator.next(self.now),
            // A poisoned lock means a panic mid-generation; a fresh generator still gives
            // unique ids (80 random bits).
            Err(poisoned) => poisoned.into_inner().next(self.now),
        }
    }
}
