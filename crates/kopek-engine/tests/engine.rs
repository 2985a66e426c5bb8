//! The write path against a real SQLite file: group commit, backpressure, hold expiry and
//! shutdown.

use kopek_core::*;
use kopek_engine::{Engine, EngineConfig, EngineError};
use kopek_store::Store;
use kopek_store_sqlite::SqliteStore;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn usd() -> Currency {
    Currency::parse("USD").expect("USD")
}

fn id(text: &str) -> AccountId {
    AccountId::parse(text).expect("id")
}

fn open(ids: &[&str]) -> CommandBody {
    CommandBody::CreateAccounts(ids.iter().map(|name| NewAccount::user(id(name), usd())).collect())
}

fn transfer(
    key: &str,
    debit: AccountId,
    credit: &str,
    minor: i64,
    kind: TransferKind,
    hold: Option<Hold>,
) -> CommandBody {
    CommandBody::CreateTransfers {
        transfers: vec![TransferRequest {
            idempotency_key: IdempotencyKey::parse(key).expect("key"),
            kind,
            movement: Movement::Move {
                debit_account: debit,
                credit_account: id(credit),
                amount: minor,
                currency: usd(),
                hold,
            },
            details: Details::default(),
            effective_at: None,
            open_if_missing: Vec::new(),
            fingerprint_extra: String::new(),
        }],
        linking: Linking::Independent,
    }
}

fn start(dir: &tempfile::TempDir, config: EngineConfig) -> (Engine, tokio::task::JoinHandle<()>) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("open store"));
    Engine::start(store, config)
}

fn single(result: CommandResult) -> TransferResult {
    match result {
        CommandResult::Transfers(mut results) => results.remove(0),
        other => panic!("expected transfer results, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_batches_and_all_commit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (engine, _writer) = start(&dir, EngineConfig::default());
    let tenant = Tenant::default_tenant();
    engine.submit_as_ledger(tenant.clone(), open(&["a", "b"])).await.expect("accounts");
    let world = AccountId::world(usd());
    engine
        .submit_as_ledger(
            tenant.clone(),
            transfer("fund", world, "a", 1_000_000, TransferKind::Deposit, None),
        )
        .await
        .expect("fund");

    let callers = 64;
    let per_caller = 50;
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let engine = engine.clone();
            let tenant = tenant.clone();
            tokio::spawn(async move {
                for n in 0..per_caller {
                    let body = transfer(&format!("t-{caller}-{n}"), id("a"), "b", 1, TransferKind::Transfer, None);
                    let result = engine.submit_as_ledger(tenant.clone(), body).await.expect("committed");
                    assert!(matches!(single(result), TransferResult::Committed(t) if t.status == TransferStatus::Posted));
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("caller finished");
    }
    let b = engine.store().account(&id("b")).await.expect("read").expect("b");
    assert_eq!(b.balance.posted, callers * per_caller);
    let stats = engine.stats();
    let (batches, commands) =
        (stats.batches.load(Ordering::Relaxed), stats.commands.load(Ordering::Relaxed));
    assert_eq!(commands, 2 + (callers * per_caller) as u64);
    assert!(
        batches < commands,
        "concurrent commands must share batches ({batches} batches for {commands} commands)"
    );
    assert!(engine.store().verify().await.expect("verify").is_ok());
}

#[tokio::test]
async fn a_full_queue_answers_overloaded_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = EngineConfig { queue_capacity: 2, ..EngineConfig::default() };
    let (engine, _writer) = start(&dir, config);
    let tenant = Tenant::default_tenant();
    // On this single-threaded runtime the writer cannot run between these calls.
    let first = engine.enqueue_as_ledger(tenant.clone(), open(&["a"])).expect("queued");
    let second = engine.enqueue_as_ledger(tenant.clone(), open(&["b"])).expect("queued");
    let third = engine.enqueue_as_ledger(tenant.clone(), open(&["c"]));
    assert!(matches!(third, Err(EngineError::Overloaded)));
    // Every surface tells the caller the same code and sentence for it.
    let told = third.err().map(|error| error.rejection());
    assert_eq!(
        told,
        Some(Rejection::new(ErrorCode::Overloaded, "the write queue is full; retry shortly"))
    );
    assert!(first.wait().await.is_ok());
    assert!(second.wait().await.is_ok());
    assert!(
        engine.store().account(&id("c")).await.expect("read").is_none(),
        "the refused command left no trace"
    );
    assert!(
        engine.submit_as_ledger(tenant, open(&["c"])).await.is_ok(),
        "space frees up once the writer drains"
    );
}

/// Opens `a` and `b`, funds `a` with 500 and places a hold of 200 from `a` to `b` that times
/// out after `seconds`: the hold.
async fn funded_hold(engine: &Engine, seconds: u32) -> Transfer {
    let tenant = Tenant::default_tenant();
    engine.submit_as_ledger(tenant.clone(), open(&["a", "b"])).await.expect("accounts");
    let fund = transfer("fund", AccountId::world(usd()), "a", 500, TransferKind::Deposit, None);
    engine.submit_as_ledger(tenant.clone(), fund).await.expect("fund");
    let hold = Some(Hold { timeout_seconds: Some(seconds) });
    let hold = transfer("h1", id("a"), "b", 200, TransferKind::Payment, hold);
    let result = engine.submit_as_ledger(tenant, hold).await.expect("hold");
    let TransferResult::Committed(hold) = single(result) else { panic!("hold not committed") };
    assert_eq!(hold.status, TransferStatus::Pending);
    hold
}

/// A `--role api` writer on `store`, reading `clock`: it expires no hold.
fn api_writer(store: &Arc<dyn Store>, clock: &kopek_clock::ManualClock) -> Engine {
    let config = EngineConfig {
        expire_holds: false,
        clock: Arc::new(clock.clone()),
        ..EngineConfig::default()
    };
    Engine::start(store.clone(), config).0
}

/// Waits until `engine`'s store shows transfer `id` expired; panics after 10 s with `why`.
async fn expired(engine: &Engine, id: TransferId, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = engine.store().transfer(id).await.expect("read").map(|t| t.status);
        if status == Some(TransferStatus::Expired) {
            return;
        }
        assert!(Instant::now() < deadline, "{why}: the hold is {status:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The writer wakes for a hold's expiry by itself, with nothing else to do: on a clock the
/// test moves, so the hold's hour passes at once instead of being waited for. (A writer that
/// only slept until its next minutely recheck would miss the deadline below.)
#[tokio::test]
async fn holds_expire_on_time_without_any_other_traffic() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = kopek_clock::ManualClock::starting_now();
    let config = EngineConfig { clock: Arc::new(clock.clone()), ..EngineConfig::default() };
    let (engine, _writer) = start(&dir, config);
    let hold = funded_hold(&engine, 3_600).await;
    // (That the writer leaves a hold alone before its expiry is the busy-writer test below.)
    clock.set(hold.expires_at.expect("a hold with a timeout expires"));
    expired(&engine, hold.id, "the writer did not wake for the hold's expiry").await;
    let a = engine.store().account(&id("a")).await.expect("read").expect("a");
    assert_eq!(
        (a.balance.posted, a.balance.pending_out),
        (500, 0),
        "the expired hold released its funds"
    );
    assert!(engine.store().verify().await.expect("verify").is_ok());
}

#[tokio::test]
async fn dropping_every_handle_drains_the_queue_and_stops_the_writer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (engine, writer) = start(&dir, EngineConfig::default());
    let tenant = Tenant::default_tenant();
    let tickets: Vec<_> = (0..10)
        .map(|n| {
            engine.enqueue_as_ledger(tenant.clone(), open(&[&format!("acct{n}")])).expect("queued")
        })
        .collect();
    let store = engine.store().clone();
    drop(engine);
    for ticket in tickets {
        assert!(ticket.wait().await.is_ok(), "queued work is finished, not dropped");
    }
    tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .expect("writer stops")
        .expect("writer did not panic");
    assert_eq!(store.list_accounts(None, None, None, 100).await.expect("read").len(), 10);
}

#[tokio::test]
async fn close_answers_what_is_queued_and_stops_while_handles_live_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (engine, writer) = start(&dir, EngineConfig::default());
    let other_handle = engine.clone();
    let tenant = Tenant::default_tenant();
    let tickets: Vec<_> = (0..5)
        .map(|n| {
            engine.enqueue_as_ledger(tenant.clone(), open(&[&format!("acct{n}")])).expect("queued")
        })
        .collect();
    engine.close();
    for ticket in tickets {
        assert!(ticket.wait().await.is_ok(), "commands queued before close are answered");
    }
    tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .expect("writer stops")
        .expect("no panic");
    let late = other_handle.enqueue_as_ledger(tenant, open(&["late"]));
    assert!(matches!(late, Err(EngineError::ShuttingDown)), "a closed engine takes nothing new");
}

#[tokio::test]
async fn a_restarted_writer_commits_after_everything_already_stored() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("open store"));
    // A commit an hour ahead of this machine's clock, as if the clock stepped back since.
    let ahead = Timestamp::from_unix_micros(kopek_clock::now().as_unix_micros() + 3_600_000_000);
    let batch = Batch {
        commands: vec![Command::new(
            Tenant::default_tenant(),
            kopek_core::Authority::Ledger,
            open(&["early"]),
        )],
    };
    let keys = batch.keys();
    let mut ids = kopek_core::memory::SequentialIds::default();
    store
        .write_batch(keys, Box::new(move |state| Ok(apply(state, &batch, ahead, &mut ids))))
        .await
        .expect("commit");

    let (engine, _writer) = Engine::start(store, EngineConfig::default());
    let result =
        engine.submit_as_ledger(Tenant::default_tenant(), open(&["later"])).await.expect("commit");
    let CommandResult::Accounts(results) = result else { panic!("accounts expected") };
    let AccountResult::Created(account) = &results[0] else { panic!("created expected") };
    assert!(account.created_at > ahead, "commit time went back: {} <= {ahead}", account.created_at);
}

/// A `--role api` writer (`expire_holds: false`) leaves a hold alone long past its expiry,
/// however much it writes; a worker started on the same store then expires it at once. The
/// clock is moved, not waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_writer_leaves_expired_holds_to_a_worker() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("open store"));
    let clock = kopek_clock::ManualClock::starting_now();
    let api = api_writer(&store, &clock);
    let tenant = Tenant::default_tenant();
    let hold = funded_hold(&api, 1).await;

    clock.advance(Duration::from_secs(3_600));
    for n in 0..20 {
        let key = format!("api-{n}");
        let work = transfer(&key, id("a"), "b", 1, TransferKind::Transfer, None);
        api.submit_as_ledger(tenant.clone(), work).await.expect("api work");
    }
    let status = api.store().transfer(hold.id).await.expect("read").map(|t| t.status);
    assert_eq!(status, Some(TransferStatus::Pending), "an api writer expired a hold");

    let worker = EngineConfig { clock: Arc::new(clock.clone()), ..EngineConfig::default() };
    let (worker, _worker_writer) = Engine::start(store, worker);
    expired(&worker, hold.id, "the worker left the hold").await;
}

/// Two writers on one store stand for two processes: the one that placed a hold does not
/// expire holds (`--role api`); the other knows of no hold and is kept busy, yet its periodic
/// recheck finds the hold and expires it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_writer_still_finds_and_expires_holds_placed_elsewhere() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("open store"));
    // Both processes read one clock that moves only when the test says: the hold's second
    // passes at once instead of being waited for.
    let clock = kopek_clock::ManualClock::starting_now();
    let api = api_writer(&store, &clock);
    let worker = EngineConfig {
        expiry_recheck: Duration::from_millis(300),
        clock: Arc::new(clock.clone()),
        ..EngineConfig::default()
    };
    let (worker, _worker_writer) = Engine::start(store, worker);
    let tenant = Tenant::default_tenant();
    let hold = funded_hold(&api, 1).await;

    // (That a recheck before the timeout finds nothing due is the store's
    // `holds_due_and_next_expiry` conformance test.)
    clock.advance(Duration::from_secs(2));

    // The worker gets a command every 20 ms, far more often than its recheck period.
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in 0.. {
        let key = format!("busy-{n}");
        worker
            .submit_as_ledger(
                tenant.clone(),
                transfer(&key, id("a"), "b", 1, TransferKind::Transfer, None),
            )
            .await
            .expect("busy work");
        let status = worker.store().transfer(hold.id).await.expect("read").map(|t| t.status);
        if status == Some(TransferStatus::Expired) {
            break;
        }
        assert!(Instant::now() < deadline, "hold still {status:?}: the busy writer never looked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// On the journal store the writer hands over the next batch before the one before is
/// durable (it is decided from what that one decided): one command per batch, each moving the
/// money the one before just moved, all queued at once. A batch decided without the one
/// before would find an empty account and decline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_batches_each_see_the_batch_before() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(kopek_store_sqlite::JournalStore::open(dir.path()).expect("open"));
    assert!(store.pipelined(), "the journal store takes batches in order before answering");
    let config = EngineConfig { batch_commands_max: 1, ..EngineConfig::default() };
    let (engine, writer) = Engine::start(store, config);
    let hops = 200;
    let names: Vec<String> = (0..=hops).map(|hop| format!("hop{hop}")).collect();
    let ids: Vec<&str> = names.iter().map(String::as_str).collect();
    engine.submit_as_ledger(Tenant::default_tenant(), open(&ids)).await.expect("open");
    let mut tickets = vec![
        engine
            .enqueue_as_ledger(
                Tenant::default_tenant(),
                transfer("fund", AccountId::world(usd()), "hop0", 5, TransferKind::Deposit, None),
            )
            .expect("queued"),
    ];
    for hop in 0..hops {
        let body = transfer(
            &format!("hop-{hop}"),
            id(&names[hop]),
            &names[hop + 1],
            5,
            TransferKind::Transfer,
            None,
        );
        tickets.push(engine.enqueue_as_ledger(Tenant::default_tenant(), body).expect("queued"));
    }
    for (index, ticket) in tickets.into_iter().enumerate() {
        let result = single(ticket.wait().await.expect("answered"));
        assert!(
            matches!(&result, TransferResult::Committed(t) if t.status == TransferStatus::Posted),
            "batch {index} did not see the one before: {result:?}"
        );
    }
    let last = engine.store().account(&id(&names[hops])).await.expect("read").expect("exists");
    assert_eq!(last.balance.posted, 5);
    assert!(engine.stats().batches.load(Ordering::Relaxed) > hops as u64, "one command a batch");
    drop(engine);
    writer.await.expect("writer");
}
