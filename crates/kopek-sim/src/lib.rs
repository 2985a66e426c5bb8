//! kopek-sim: a seeded, deterministic simulation of the ledger. A random workload (deposits,
//! transfers, holds, captures, voids, linked batches, freezes, replays and key reuse) runs
//! through the real write path on a real embedded store (journal-first by default, or the
//! SQLite layout); a naive auditor predicts every verdict.
//! Between waves the engine is restarted, gracefully or abruptly (in-flight work abandoned and
//! resent, as a client would after a crash; journal-first, the projection is abandoned too, so
//! the next open replays the frames it lacked). After each wave the balances must match the
//! auditor's, and `verify` must find the books consistent. Some waves run one request at a
//! time over a store that injects failures before the write or after the commit; the client
//! resends until it gets an answer, and the answer must be the auditor's.
//!
//! Every run prints its seed; `cargo run -p kopek-sim -- --seed N` replays its workload (how far
//! an abrupt crash lets the writer get is the scheduler's, not the seed's).

pub mod auditor;
pub mod faulty;

use auditor::{Auditor, Leg, Op, Verdict};
use faulty::{Faults, FaultyStore};
use kopek_core::*;
use kopek_engine::{Engine, EngineConfig, Ticket};
use kopek_store::Store;
use kopek_store_sqlite::{JournalStore, SqliteStore};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub steps: usize,
    pub accounts: usize,
    pub layout: Layout,
}

/// Which embedded store the simulation runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layout {
    /// `JournalStore`, what `kopek serve` runs.
    #[default]
    Journal,
    /// `SqliteStore`, `kopek serve --journal false`.
    Sqlite,
}

#[derive(Clone, Debug, Default)]
pub struct SimReport {
    pub requests: u64,
    pub applied: u64,
    pub declined: u64,
    pub replays: u64,
    pub restarts: u64,
    pub abrupt_restarts: u64,
    pub faults_before_write: u64,
    pub faults_after_commit: u64,
}

/// The simulator's seeded generator: a seed names a run.
pub use kopek_testkit::SplitMix as Rng;

struct Sim {
    rng: Rng,
    auditor: Auditor,
    accounts: Vec<(String, &'static str)>,
    history: Vec<Op>,
    hold_keys: Vec<String>,
    hold_ids: BTreeMap<String, TransferId>,
    next_key: u64,
    report: SimReport,
}

fn fail(message: String) -> Result<(), String> {
    Err(message)
}

impl Sim {
    fn key(&mut self) -> String {
        self.next_key += 1;
        format!("k{}", self.next_key)
    }

    fn account(&mut self) -> (String, &'static str) {
        // One time in twenty, an account that does not exist.
        if self.rng.chance(5) {
            return ("ghost".to_owned(), "USD");
        }
        self.rng.pick(&self.accounts).clone()
    }

    fn leg(&mut self) -> Leg {
        let (debit, currency) = self.account();
        let (credit, _) = self.account();
        let currency = if self.rng.chance(5) { "JPY" } else { currency };
        Leg { debit, credit, amount: 1 + self.rng.below(3_000) as i64, currency }
    }

    fn op(&mut self) -> Op {
        let roll = self.rng.below(100);
        match roll {
            0..=19 => {
                let (account, currency) = self.account();
                Op::Deposit {
                    key: self.key(),
                    account,
                    amount: 1 + self.rng.below(20_000) as i64,
                    currency,
                }
            }
            20..=44 => Op::Post { key: self.key(), leg: self.leg() },
            45..=54 => Op::Hold { key: self.key(), leg: self.leg() },
            55..=62 if !self.hold_keys.is_empty() => {
                let hold_key = self.rng.pick(&self.hold_keys).clone();
                let amount = self.rng.chance(50).then(|| 1 + self.rng.below(2_000) as i64);
                Op::Capture { key: self.key(), hold_key, amount }
            }
            63..=67 if !self.hold_keys.is_empty() => {
                Op::Void { key: self.key(), hold_key: self.rng.pick(&self.hold_keys).clone() }
            }
            68..=69 => {
                Op::Void { key: self.key(), hold_key: format!("no-such-hold-{}", self.next_key) }
            }
            70..=77 => {
                let count = 2 + self.rng.below(3) as usize;
                let keys = (0..count).map(|_| self.key()).collect();
                let legs = (0..count).map(|_| self.leg()).collect();
                Op::Linked { keys, legs }
            }
            78..=80 => {
                let (account, _) = self.rng.pick(&self.accounts).clone();
                Op::Freeze { account, frozen: self.rng.chance(25) }
            }
            81..=92 if !self.history.is_empty() => self.rng.pick(&self.history).clone(),
            93..=99 if !self.history.is_empty() => match self.rng.pick(&self.history).clone() {
                Op::Post { key, mut leg } => {
                    leg.amount += 1;
                    Op::Post { key, leg }
                }
                other => other,
            },
            _ => Op::Post { key: self.key(), leg: self.leg() },
        }
    }

    fn command(&mut self, op: &Op) -> CommandBody {
        let request = |key: &str, kind, movement| TransferRequest {
            idempotency_key: IdempotencyKey::parse(key).expect("sim keys are valid"),
            kind,
            movement,
            details: Details::default(),
            effective_at: None,
            open_if_missing: Vec::new(),
            fingerprint_extra: String::new(),
        };
        let single = |request| CommandBody::CreateTransfers {
            transfers: vec![request],
            linking: Linking::Independent,
        };
        match op {
            Op::Deposit { key, account, amount, currency } => {
                let leg = Leg {
                    debit: format!("world:{currency}"),
                    credit: account.clone(),
                    amount: *amount,
                    currency,
                };
                single(request(key, TransferKind::Deposit, movement(&leg, false)))
            }
            Op::Post { key, leg } => {
                single(request(key, TransferKind::Transfer, movement(leg, false)))
            }
            Op::Hold { key, leg } => {
                single(request(key, TransferKind::Payment, movement(leg, true)))
            }
            Op::Capture { key, hold_key, amount } => {
                let pending_id = self.hold_id(hold_key);
                let amount = amount.map(|minor| Amount::new(minor).expect("positive"));
                single(request(
                    key,
                    TransferKind::Payment,
                    Movement::Capture { pending_id, amount },
                ))
            }
            Op::Void { key, hold_key } => {
                let pending_id = self.hold_id(hold_key);
                single(request(key, TransferKind::Payment, Movement::Void { pending_id }))
            }
            Op::Linked { keys, legs } => CommandBody::CreateTransfers {
                transfers: keys
                    .iter()
                    .zip(legs)
                    .map(|(key, leg)| request(key, TransferKind::Transfer, movement(leg, false)))
                    .collect(),
                linking: Linking::Linked,
            },
            Op::Freeze { account, frozen } => CommandBody::UpdateAccount(AccountUpdate {
                id: AccountId::parse(account).expect("sim ids are valid"),
                overdraft: None,
                status: Some(if *frozen { AccountStatus::Frozen } else { AccountStatus::Active }),
            }),
        }
    }

    fn hold_id(&self, hold_key: &str) -> TransferId {
        // A hold the ledger never saw gets an id no transfer has.
        self.hold_ids.get(hold_key).copied().unwrap_or(TransferId(Ulid::from_u128(1)))
    }

    /// Compares one request's real results with the auditor's verdicts.
    fn check(&mut self, op: &Op, result: &CommandResult, resent: bool) -> Result<(), String> {
        let expected = self.auditor.apply(op);
        let results = match result {
            CommandResult::Transfers(results) => results,
            CommandResult::Account(AccountResult::Updated(_))
                if matches!(op, Op::Freeze { .. }) =>
            {
                return Ok(());
            }
            other => return fail(format!("{op:?}: unexpected result {other:?}")),
        };
        if results.len() != expected.len() {
            return fail(format!(
                "{op:?}: {} results for {} expected verdicts",
                results.len(),
                expected.len()
            ));
        }
        for (index, (verdict, actual)) in expected.iter().zip(results).enumerate() {
            if !agrees(verdict, actual, resent) {
                return fail(format!(
                    "{op:?} #{index}: auditor expected {verdict:?}, ledger answered {actual:?}"
                ));
            }
            match actual {
                TransferResult::Committed(transfer) => {
                    if transfer.status == TransferStatus::Declined {
                        self.report.declined += 1;
                    } else {
                        self.report.applied += 1;
                    }
                    if transfer.status == TransferStatus::Pending
                        && let Op::Hold { key, .. } = op
                    {
                        self.hold_keys.push(key.clone());
                        self.hold_ids.insert(key.clone(), transfer.id);
                    }
                }
                TransferResult::Replayed(transfer) => {
                    self.report.replays += 1;
                    if let Op::Hold { key, .. } = op
                        && transfer.action == Action::Hold
                        && transfer.status != TransferStatus::Declined
                        && !self.hold_ids.contains_key(key)
                    {
                        self.hold_keys.push(key.clone());
                        self.hold_ids.insert(key.clone(), transfer.id);
                    }
                }
                TransferResult::Rejected(_) => {}
            }
        }
        if !matches!(op, Op::Freeze { .. }) {
            self.history.push(op.clone());
        }
        Ok(())
    }

    async fn check_balances(&self, store: &dyn Store) -> Result<(), String> {
        for (id, expected) in &self.auditor.accounts {
            let account_id = AccountId::parse(id).map_err(|r| r.message)?;
            let actual = store.account(&account_id).await.map_err(|e| e.to_string())?;
            let Some(actual) = actual else {
                return fail(format!("account {id} is missing"));
            };
            let real =
                (actual.balance.posted, actual.balance.pending_out, actual.balance.pending_in);
            if real != (expected.posted, expected.held_out, expected.held_in) {
                return fail(format!(
                    "account {id}: ledger has posted/held_out/held_in {real:?}, auditor {:?}",
                    (expected.posted, expected.held_out, expected.held_in)
                ));
            }
        }
        Ok(())
    }
}

fn movement(leg: &Leg, hold: bool) -> Movement {
    Movement::Move {
        debit_account: AccountId::parse(&leg.debit).expect("sim ids are valid"),
        credit_account: AccountId::parse(&leg.credit).expect("sim ids are valid"),
        amount: leg.amount,
        currency: Currency::parse(leg.currency).expect("known currency"),
        hold: hold.then_some(Hold { timeout_seconds: None }),
    }
}

/// Does the ledger's answer match the auditor's verdict? After an abrupt restart a request is
/// resent, and any of it that committed before the crash comes back as a replay.
fn agrees(verdict: &Verdict, actual: &TransferResult, resent: bool) -> bool {
    match (verdict, actual) {
        (Verdict::Replay(inner), TransferResult::Replayed(transfer)) => {
            recorded_as(inner, transfer, true)
        }
        (Verdict::Rejected(code), TransferResult::Rejected(rejection)) => rejection.code == *code,
        (verdict, TransferResult::Committed(transfer)) => recorded_as(verdict, transfer, false),
        (verdict, TransferResult::Replayed(transfer)) if resent => {
            recorded_as(verdict, transfer, true)
        }
        _ => false,
    }
}

fn recorded_as(verdict: &Verdict, transfer: &Transfer, later: bool) -> bool {
    match verdict {
        Verdict::Applied { pending: true } if later => {
            transfer.action == Action::Hold && transfer.status != TransferStatus::Declined
        }
        Verdict::Applied { pending: true } => transfer.status == TransferStatus::Pending,
        Verdict::Applied { pending: false } => {
            matches!(transfer.status, TransferStatus::Posted | TransferStatus::Voided)
        }
        Verdict::Declined(code) => {
            transfer.status == TransferStatus::Declined && transfer.error_code() == Some(*code)
        }
        Verdict::Rejected(_) | Verdict::Replay(_) => false,
    }
}

/// A running engine on the simulation's store, and the journal store under it (to abandon
/// its projection in a crash).
struct Running {
    engine: Engine,
    writer: tokio::task::JoinHandle<()>,
    journal: Option<Arc<JournalStore>>,
}

impl Running {
    /// Stops as a crash would: the write path dies mid-work, and a journal store's projector
    /// stops without writing what waits for it.
    async fn crash(self) {
        if let Some(journal) = &self.journal {
            journal.abandon_projection();
        }
        self.writer.abort();
        drop(self.engine);
        drop(self.journal);
        let _ = self.writer.await;
    }

    /// Stops gracefully: the engine drains its queue.
    async fn stop(self) -> Result<(), String> {
        drop(self.engine);
        drop(self.journal);
        self.writer.await.map_err(|e| format!("writer: {e}"))
    }
}

fn start(data_dir: &Path, faults: &Arc<Faults>, layout: Layout) -> Result<Running, String> {
    // After an abrupt stop a blocking read of the old store may still be finishing; it holds
    // the data dir's lock until then, as a dying process does until it exits.
    let mut attempts = 0;
    let (inner, journal): (Arc<dyn Store>, Option<Arc<JournalStore>>) = loop {
        let opened = match layout {
            Layout::Journal => JournalStore::open(data_dir).map(|store| {
                let store = Arc::new(store);
                (store.clone() as Arc<dyn Store>, Some(store))
            }),
            Layout::Sqlite => {
                SqliteStore::open(data_dir).map(|store| (Arc::new(store) as Arc<dyn Store>, None))
            }
        };
        match opened {
            Ok(opened) => break opened,
            Err(error) if attempts < 500 && error.to_string().contains("in use") => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(error) => return Err(format!("open store: {error}")),
        }
    };
    let store: Arc<dyn Store> = Arc::new(FaultyStore { inner, faults: faults.clone() });
    let (engine, writer) = Engine::start(store, EngineConfig::default());
    Ok(Running { engine, writer, journal })
}

/// Sends one command and, like a careful client, resends it while the store is unavailable.
/// Returns the answer and whether it took more than one try.
async fn submit_until_answered(
    engine: &Engine,
    body: &CommandBody,
) -> Result<(CommandResult, bool), String> {
    for attempt in 0..100 {
        match engine.submit_as_ledger(Tenant::default_tenant(), body.clone()).await {
            Ok(result) => return Ok((result, attempt > 0)),
            Err(kopek_engine::EngineError::Unavailable(_)) => continue,
            Err(error) => return Err(format!("submit: {error}")),
        }
    }
    Err("the store stayed unavailable for 100 tries".to_owned())
}

fn enqueue_all(engine: &Engine, commands: &[CommandBody]) -> Result<Vec<Ticket>, String> {
    commands
        .iter()
        .map(|body| {
            engine
                .enqueue_as_ledger(Tenant::default_tenant(), body.clone())
                .map_err(|e| format!("enqueue: {e}"))
        })
        .collect()
}

/// Runs the simulation in `data_dir`; the first disagreement or broken invariant is an `Err`.
pub async fn run(config: &SimConfig, data_dir: &Path) -> Result<SimReport, String> {
    let mut sim = Sim {
        rng: Rng::new(config.seed),
        auditor: Auditor::default(),
        accounts: Vec::new(),
        history: Vec::new(),
        hold_keys: Vec::new(),
        hold_ids: BTreeMap::new(),
        next_key: 0,
        report: SimReport::default(),
    };
    let faults = Faults::new(config.seed ^ 0xFA17, 30);
    let mut running = start(data_dir, &faults, config.layout)?;
    let mut new_accounts = Vec::new();
    for index in 0..config.accounts.max(2) {
        let currency: &'static str = if index % 5 == 4 { "JPY" } else { "USD" };
        let limit = if sim.rng.chance(30) { 1 + sim.rng.below(5_000) as i64 } else { 0 };
        let id = format!("acct{index}");
        sim.auditor.open(&id, currency, Some(limit));
        sim.accounts.push((id.clone(), currency));
        let mut account = NewAccount::user(
            AccountId::parse(&id).map_err(|r| r.message)?,
            Currency::parse(currency).map_err(|r| r.message)?,
        );
        account.overdraft = Overdraft::Limited(limit);
        new_accounts.push(account);
    }
    running
        .engine
        .submit_as_ledger(Tenant::default_tenant(), CommandBody::CreateAccounts(new_accounts))
        .await
        .map_err(|e| e.to_string())?;

    for step in 0..config.steps {
        let wave_size = 1 + sim.rng.below(24) as usize;
        let ops: Vec<Op> = (0..wave_size).map(|_| sim.op()).collect();
        let commands: Vec<CommandBody> = ops.iter().map(|op| sim.command(op)).collect();
        if sim.rng.chance(15) {
            // A faulty wave: one request at a time, each resent until it gets an answer.
            faults.set_enabled(true);
            for (op, body) in ops.iter().zip(&commands) {
                let (result, resent) = submit_until_answered(&running.engine, body)
                    .await
                    .map_err(|e| format!("step {step}: {e}"))?;
                sim.report.requests += 1;
                sim.check(op, &result, resent)
                    .map_err(|message| format!("step {step}: {message}"))?;
            }
            faults.set_enabled(false);
        } else {
            let mut tickets = enqueue_all(&running.engine, &commands)?;
            let abrupt = sim.rng.chance(4);
            if abrupt {
                // Crash with the wave in flight: the writer is stopped mid-work, whatever was
                // queued is lost, and the client resends every request it got no answer to.
                // How far the writer got first is up to the scheduler: the checks hold for any
                // prefix.
                for _ in 0..sim.rng.below(8) {
                    tokio::task::yield_now().await;
                }
                drop(tickets);
                running.crash().await;
                running = start(data_dir, &faults, config.layout)?;
                tickets = enqueue_all(&running.engine, &commands)?;
                sim.report.abrupt_restarts += 1;
            }
            for (op, ticket) in ops.iter().zip(tickets) {
                let result =
                    ticket.wait().await.map_err(|e| format!("step {step}: {op:?}: {e}"))?;
                sim.report.requests += 1;
                sim.check(op, &result, abrupt)
                    .map_err(|message| format!("step {step}: {message}"))?;
            }
        }
        sim.check_balances(running.engine.store().as_ref())
            .await
            .map_err(|message| format!("step {step}: {message}"))?;
        if step % 10 == 9 || step + 1 == config.steps {
            let store = running.engine.store();
            let report = store.verify().await.map_err(|e| e.to_string())?;
            if !report.is_ok() {
                return Err(format!("step {step}: verify: {}", report.problems.join("; ")));
            }
            // Journal-first: the projection must equal the journal, record by record.
            let problems = store.verify_history().await.map_err(|e| e.to_string())?;
            if !problems.is_empty() {
                return Err(format!("step {step}: journal check: {}", problems.join("; ")));
            }
        }
        if sim.rng.chance(5) {
            running.stop().await?;
            running = start(data_dir, &faults, config.layout)?;
            sim.report.restarts += 1;
        }
    }
    running.stop().await?;
    sim.report.faults_before_write = faults.before_write.load(std::sync::atomic::Ordering::Relaxed);
    sim.report.faults_after_commit = faults.after_commit.load(std::sync::atomic::Ordering::Relaxed);
    Ok(sim.report)
}
