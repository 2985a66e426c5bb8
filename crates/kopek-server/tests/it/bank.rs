//! The bank test: three `kopek serve` processes on one PostgreSQL database, 32 concurrent
//! clients doing transfers among 100 accounts (a fifth of them on 2 hot accounts), deposits,
//! holds and captures, each retried on the same idempotency key until answered. Mid-load one
//! process is killed with SIGKILL and restarted, and later PostgreSQL itself is restarted.
//! Afterwards: every acknowledged transfer is found under its key with the id it was answered
//! with, each account's balance is its funding moved by exactly the acknowledged posted
//! transfers (nothing applied twice or lost), and `kopek verify` passes.
//!
//! Needs KOPEK_TEST_DATABASE_URL (a server URL); without it the test skips, loudly, except in
//! CI where it must run.

use crate::support::*;
use kopek_proto::kopek::v1 as pb;
use kopek_proto::kopek::v1::ledger_client::LedgerClient;
use kopek_store_postgres::PgPool;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The bank test restarts PostgreSQL: the other tests on it here wait their turn.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const ACCOUNTS: u64 = 100;
const CLIENTS: u64 = 32;
const FUNDING_MINOR: i64 = 1_000_000;

/// A database of its own on the test server, dropped at the end.
struct Database {
    admin: String,
    name: String,
    url: String,
}

impl Database {
    async fn create() -> Option<Database> {
        let Ok(admin) = std::env::var("KOPEK_TEST_DATABASE_URL") else {
            assert!(std::env::var("CI").is_err(), "CI must set KOPEK_TEST_DATABASE_URL");
            eprintln!("SKIPPED bank test: KOPEK_TEST_DATABASE_URL is not set");
            return None;
        };
        let name = format!("kopek_bank_{}", uuid::Uuid::new_v4().simple());
        // A plain pool: the server database itself gets no kopek tables.
        let pool = PgPool::connect(&admin).await.expect("connect to the test server");
        kopek_store_postgres::execute(&pool, &format!("CREATE DATABASE {name}"))
            .await
            .expect("create the database");
        pool.close().await;
        let url = format!("{}/{name}", admin.rsplit_once('/').expect("a URL with a database").0);
        Some(Database { admin, name, url })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build()
            {
                runtime.block_on(async move {
                    if let Ok(pool) = PgPool::connect(&admin).await {
                        let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                        let _ = kopek_store_postgres::execute(&pool, &drop).await;
                    }
                });
            }
        })
        .join();
    }
}

/// What a client saw acknowledged, by key.
#[derive(Clone)]
struct Ack {
    id: String,
    status: i32,
    debit: String,
    credit: String,
    amount: i64,
}

type Acknowledged = Arc<Mutex<BTreeMap<String, Ack>>>;

fn account(n: u64) -> String {
    format!("bank{n}")
}

/// Sends one request until it is answered, reconnecting to the client's process as needed.
async fn until_answered(
    addresses: &Arc<Mutex<Vec<String>>>,
    process: usize,
    request: pb::TransferRequest,
) -> pb::TransferResult {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let address = addresses.lock().expect("lock")[process].clone();
        if let Ok(mut client) = LedgerClient::connect(format!("http://{address}")).await {
            let call =
                pb::CreateTransfersRequest { transfers: vec![request.clone()], linked: false };
            if let Ok(Ok(response)) =
                tokio::time::timeout(Duration::from_secs(10), client.create_transfers(call)).await
            {
                return response.into_inner().results.remove(0);
            }
        }
        assert!(
            Instant::now() < deadline,
            "request {} got no answer in time",
            request.idempotency_key
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn client(
    addresses: Arc<Mutex<Vec<String>>>,
    number: u64,
    operations: u64,
    acked: Acknowledged,
    phase: &'static str,
) {
    let process = (number % 3) as usize;
    let phase_seed = phase.bytes().fold(0u64, |hash, byte| hash.wrapping_mul(31) + u64::from(byte));
    let mut random = kopek_testkit::SplitMix::new((number + 1) ^ phase_seed);
    let mut next = move |bound: u64| random.below(bound);
    let record = |key: String, result: &pb::TransferResult| {
        let transfer = result.transfer.as_ref().expect("a recorded transfer");
        let entry = Ack {
            id: transfer.id.clone(),
            status: transfer.status,
            debit: transfer.debit_account_id.clone(),
            credit: transfer.credit_account_id.clone(),
            amount: transfer.amount_minor,
        };
        let mut acked = acked.lock().expect("lock");
        assert!(acked.insert(key.clone(), entry).is_none(), "key {key} recorded twice");
    };
    for op in 0..operations {
        let key = format!("{phase}-{number}-{op}");
        let (debit, credit) = if next(5) == 0 {
            (account(next(2)), account(2 + next(ACCOUNTS - 2)))
        } else {
            let debit = next(ACCOUNTS);
            (account(debit), account((debit + 1 + next(ACCOUNTS - 1)) % ACCOUNTS))
        };
        let amount = 1 + next(500) as i64;
        match next(10) {
            0 => {
                let deposit = pb::TransferRequest {
                    kind: pb::TransferKind::Deposit as i32,
                    ..post(&key, "", &credit, amount)
                };
                let result = until_answered(&addresses, process, deposit.clone()).await;
                record(key.clone(), &result);
                // A client that lost the answer retries: the retry replays.
                let again = until_answered(&addresses, process, deposit).await;
                assert!(again.replayed, "a retried deposit replays");
                assert_eq!(
                    again.transfer.map(|transfer| transfer.id),
                    result.transfer.map(|transfer| transfer.id),
                    "the replay answers the first deposit"
                );
            }
            1 => {
                let hold = pb::TransferRequest {
                    action: pb::TransferAction::Hold as i32,
                    ..post(&key, &debit, &credit, amount)
                };
                let result = until_answered(&addresses, process, hold).await;
                record(key.clone(), &result);
                if result.error.is_none() {
                    let hold_id =
                        result.transfer.as_ref().map(|t| t.id.clone()).unwrap_or_default();
                    let capture_key = format!("{key}-capture");
                    let capture = pb::TransferRequest {
                        idempotency_key: capture_key.clone(),
                        action: pb::TransferAction::Capture as i32,
                        pending_id: hold_id,
                        amount_minor: 1 + amount / 2,
                        ..Default::default()
                    };
                    let captured = until_answered(&addresses, process, capture).await;
                    record(capture_key, &captured);
                }
            }
            _ => {
                let transfer = post(&key, &debit, &credit, amount);
                let result = until_answered(&addresses, process, transfer).await;
                record(key, &result);
            }
        }
    }
}

fn restart_postgres() {
    let version = std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|mut entries| entries.next())
        .and_then(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .expect("a PostgreSQL cluster under /etc/postgresql");
    let status = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", "restart", "--mode", "fast"])
        .status()
        .expect("run pg_ctlcluster");
    assert!(status.success(), "PostgreSQL restarted");
}

/// When the database server last started, as it says.
async fn postmaster_start(url: &str) -> String {
    let pool = PgPool::connect(url).await.expect("connect");
    let started: String = sqlx::query_scalar("SELECT pg_postmaster_start_time()::text")
        .fetch_one(&pool)
        .await
        .expect("postmaster start time");
    pool.close().await;
    started
}

fn start(dir: &Path, url: &str) -> Server {
    Server::start_with(dir, &["--database", url])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_survive_a_killed_process_and_a_database_restart() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(database) = Database::create().await else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut servers: Vec<Server> = (0..3).map(|_| start(dir.path(), &database.url)).collect();
    let addresses = Arc::new(Mutex::new(
        servers.iter().map(|server| server.grpc_address.clone()).collect::<Vec<_>>(),
    ));
    let mut ledger = servers[0].client().await;
    let ids: Vec<String> = (0..ACCOUNTS).map(account).collect();
    open_accounts(&mut ledger, &ids.iter().map(String::as_str).collect::<Vec<_>>()).await;
    for id in &ids {
        one(&mut ledger, deposit(&format!("fund-{id}"), id, FUNDING_MINOR)).await;
    }
    let acked: Acknowledged = Arc::new(Mutex::new(BTreeMap::new()));

    // Phase 1: load, with process 1 killed and restarted in the middle.
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|number| tokio::spawn(client(addresses.clone(), number, 60, acked.clone(), "one")))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().expect("lock").len() < 300 {
        assert!(Instant::now() < deadline, "phase one did not get going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    servers[1].kill9();
    servers[1] = start(dir.path(), &database.url);
    addresses.lock().expect("lock")[1] = servers[1].grpc_address.clone();
    for task in tasks {
        task.await.expect("a phase-one client");
    }

    // Phase 2: load, with PostgreSQL restarted in the middle.
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|number| tokio::spawn(client(addresses.clone(), number, 40, acked.clone(), "two")))
        .collect();
    let before = acked.lock().expect("lock").len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().expect("lock").len() < before + 200 {
        assert!(Instant::now() < deadline, "phase two did not get going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started_before = postmaster_start(&database.url).await;
    tokio::task::spawn_blocking(restart_postgres).await.expect("restart");
    for task in tasks {
        task.await.expect("a phase-two client");
    }

    assert_ne!(
        postmaster_start(&database.url).await,
        started_before,
        "the PostgreSQL the ledger uses was the one restarted"
    );

    // Every acknowledged transfer is there, wherever it is asked, and each account holds
    // exactly its funding moved by the posted transfers acknowledged to clients: a transfer
    // applied twice, or lost, shows as a wrong balance.
    let acked = acked.lock().expect("lock").clone();
    let mut expected: BTreeMap<String, i64> =
        ids.iter().map(|id| (id.clone(), FUNDING_MINOR)).collect();
    for (index, (key, ack)) in acked.iter().enumerate() {
        let mut client = servers[index % 3].client().await;
        let lookup = pb::GetTransferRequest {
            lookup: Some(pb::get_transfer_request::Lookup::IdempotencyKey(key.clone())),
        };
        let found = client
            .get_transfer(lookup)
            .await
            .expect("an acknowledged transfer exists")
            .into_inner()
            .transfer
            .expect("transfer");
        assert_eq!(found.id, ack.id, "{key}");
        if ack.status == pb::TransferStatus::Posted as i32 {
            if let Some(debit) = expected.get_mut(&ack.debit) {
                *debit -= ack.amount;
            }
            if let Some(credit) = expected.get_mut(&ack.credit) {
                *credit += ack.amount;
            }
        }
    }
    for (id, balance) in &expected {
        assert_eq!(posted(&mut ledger, id).await, *balance, "account {id}");
    }
    for server in &mut servers {
        assert!(server.terminate().success());
    }
    let (code, stdout, stderr) = cli(&["verify", "--database", &database.url]);
    assert_eq!(code, 0, "kopek verify on PostgreSQL:\n{stdout}\n{stderr}");
    println!("bank: {} acknowledged transfers across 3 processes; {stdout}", acked.len());
}

/// `--role api` processes serve and write but leave background work to `--role worker`
/// processes: an order stays pending until a worker starts; then it is paid and the hold
/// expired, once, with two workers side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_processes_leave_hold_expiry_and_order_payment_to_workers() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(database) = Database::create().await else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let api = Server::start_with(dir.path(), &["--database", &database.url, "--role", "api"]);
    let mut ledger = api.client().await;
    open_accounts(&mut ledger, &["payer", "payee"]).await;
    one(&mut ledger, deposit("fund", "payer", 1_000)).await;
    let hold = pb::TransferRequest {
        action: pb::TransferAction::Hold as i32,
        timeout_seconds: 1,
        ..post("short-hold", "payer", "payee", 300)
    };
    let hold = one(&mut ledger, hold).await.transfer.expect("hold");
    let user = [("X-User-ID", "77")];
    let address = api.http_address.as_str();
    let opened = http(address, "POST", "/payments/account", &user, Some("{}")).await;
    assert_eq!(opened.json(), serde_json::json!({"balance": 0}));
    let topped =
        http(address, "POST", "/payments/account/topup", &user, Some(r#"{"amount": 50}"#)).await;
    assert_eq!(topped.json(), serde_json::json!({"balance": 50}));
    let order =
        http(address, "POST", "/orders/orders", &user, Some(r#"{"amount": 20}"#)).await.json();
    let order_path = format!("/orders/orders/{}", order["id"].as_str().expect("order id"));

    let transfer_status = |id: String| {
        let mut ledger = ledger.clone();
        async move {
            let lookup =
                pb::GetTransferRequest { lookup: Some(pb::get_transfer_request::Lookup::Id(id)) };
            ledger
                .get_transfer(lookup)
                .await
                .expect("the hold")
                .into_inner()
                .transfer
                .expect("transfer")
                .status
        }
    };
    // These processes read the wall clock, so this test does not wait out the hold's second
    // to show that an api process leaves it alone: `serve`'s
    // `only_the_roles_that_do_background_work_expire_holds` shows `--role api` configures a
    // writer that does not expire holds, and kopek-engine's
    // `an_api_writer_leaves_expired_holds_to_a_worker` that such a writer leaves them, on a
    // clock the test moves.
    assert_eq!(
        transfer_status(hold.id.clone()).await,
        pb::TransferStatus::Pending as i32,
        "placed as a hold"
    );
    let pending = http(address, "GET", &order_path, &user, None).await.json();
    assert_eq!(pending["status"], "PENDING", "no worker, no payment");

    let worker_args = ["--database", database.url.as_str(), "--role", "worker"];
    let workers = [
        Server::start_with(dir.path(), &worker_args),
        Server::start_with(dir.path(), &worker_args),
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let expired = transfer_status(hold.id.clone()).await == pb::TransferStatus::Expired as i32;
        let paid = http(address, "GET", &order_path, &user, None).await.json()["status"] == "PAID";
        if expired && paid {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "workers did not expire the hold ({expired}) or pay the order ({paid})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let balance = http(address, "GET", "/payments/account/balance", &user, None).await.json();
    assert_eq!(balance["balance"], 30, "the order was paid once: {balance}");
    // A worker answers probes and nothing else.
    let probe = http(&workers[0].http_address, "GET", "/readyz", &[], None).await;
    assert_eq!(probe.status, 200);
    let not_api = http(&workers[0].http_address, "GET", "/v1/accounts/payer", &[], None).await;
    assert_eq!(not_api.status, 404);
    // The split needs a shared database.
    let embedded = tempfile::tempdir().expect("temp dir");
    let embedded = embedded.path().to_str().expect("a UTF-8 path");
    let (code, _, stderr) = cli(&["serve", "--role", "api", "--data-dir", embedded]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--role api, worker, relay or ingest needs --database postgres://"),
        "{stderr}"
    );
}

/// `kopek migrate` on PostgreSQL says what it applied, then that the schema is up to date;
/// `kopek verify` on a database with no ledger fails clearly instead of creating one.
#[tokio::test]
async fn migrate_reports_what_it_applies_and_verify_creates_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(database) = Database::create().await else { return };
    let (code, _, stderr) = cli(&["verify", "--database", &database.url]);
    assert_eq!(code, 2, "no ledger to verify: {stderr}");
    let (code, stdout, stderr) = cli(&["migrate", "--database", &database.url]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("applied migrations 1, 2, "), "{stdout}");
    assert!(stdout.contains(" to postgres "), "{stdout}");
    let (code, stdout, _) = cli(&["migrate", "--database", &database.url]);
    assert_eq!(code, 0);
    assert!(stdout.contains("is up to date"), "{stdout}");
    let (code, stdout, stderr) = cli(&["verify", "--database", &database.url]);
    assert_eq!(code, 0, "an empty ledger verifies: {stdout} {stderr}");
}

/// The payment saga across processes through NATS JetStream: an api process takes orders; a
/// worker relays the events and pays the orders from the broker. The first worker aborts
/// between a batch's effects and its acknowledgement (`KOPEK_FAULT`); the next one gets the
/// batch again and the inbox recognises every event in it: each order is settled once and
/// each buyer debited once, and a webhook receiver gets every order's result at least once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_saga_runs_across_processes_through_nats_and_survives_a_consumer_crash() {
    use crate::events::{NATS, nats_or_skip, unique};
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(database) = Database::create().await else { return };
    let Some(nats) = nats_or_skip(NATS).await else { return };
    let stream = unique("KS");
    let broker = format!("{NATS}?stream={stream}&subject_prefix={}", unique("ks"));
    let dir = tempfile::tempdir().expect("temp dir");
    let api = Server::start_with(dir.path(), &["--database", &database.url, "--role", "api"]);
    let address = api.http_address.as_str();

    const USERS: u32 = 10;
    let mut orders = Vec::new();
    for user in 1..=USERS {
        let header = [("X-User-ID", &*user.to_string())];
        http(address, "POST", "/payments/account", &header, Some("{}")).await;
        let topped =
            http(address, "POST", "/payments/account/topup", &header, Some(r#"{"amount": 100}"#))
                .await;
        assert_eq!(topped.json()["balance"], 100);
    }
    // Four orders of 30 each: three fit in 100, the fourth fails.
    for _ in 0..4 {
        for user in 1..=USERS {
            let header = [("X-User-ID", &*user.to_string())];
            let order =
                http(address, "POST", "/orders/orders", &header, Some(r#"{"amount": 30}"#)).await;
            orders.push((user, order.json()["id"].as_str().expect("order id").to_owned()));
        }
    }

    // Order results go to a webhook too; its receiver fails the first try of each event.
    let receiver = crate::webhooks::Receiver::start(1).await;
    let secret = "saga-secret-0123456789";
    let subscription = serde_json::json!({"url": receiver.address, "event_types": ["OrderPaid", "OrderFailed"], "secret": secret});
    let created = http(
        address,
        "POST",
        "/v1/webhooks",
        &[("Idempotency-Key", "saga-hook")],
        Some(&subscription.to_string()),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);

    let worker_args = [
        "--database",
        database.url.as_str(),
        "--role",
        "worker",
        "--broker",
        &broker,
        "--webhook-backoff-ms",
        "100",
    ];
    let mut crashing = Server::start_with_env(
        dir.path(),
        &worker_args,
        &[("KOPEK_FAULT", "crash-after-effect:payments")],
    );
    let status = crashing.wait_for_exit(Duration::from_secs(60));
    assert!(!status.success(), "the fault aborts the worker: {status:?}");
    let pool = PgPool::connect(&database.url).await.expect("connect");
    let marked: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inbox WHERE consumer = 'payments'")
        .fetch_one(&pool)
        .await
        .expect("count inbox");
    assert!(marked > 0, "the crashed batch's effects and marks committed");

    let _worker = Server::start_with(dir.path(), &worker_args);
    let deadline = Instant::now() + Duration::from_secs(60);
    for (user, id) in &orders {
        let header = [("X-User-ID", &*user.to_string())];
        loop {
            let order = http(address, "GET", &format!("/orders/orders/{id}"), &header, None).await;
            if order.json()["status"] != "PENDING" {
                break;
            }
            assert!(Instant::now() < deadline, "order {id} still pending");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for user in 1..=USERS {
        let header = [("X-User-ID", &*user.to_string())];
        let balance = http(address, "GET", "/payments/account/balance", &header, None).await;
        assert_eq!(balance.json()["balance"], 10, "user {user} paid three orders, once each");
        let mut statuses = Vec::new();
        for (_, id) in orders.iter().filter(|(owner, _)| *owner == user) {
            let order = http(address, "GET", &format!("/orders/orders/{id}"), &header, None).await;
            statuses.push(order.json()["status"].as_str().expect("status").to_owned());
        }
        assert_eq!(statuses, ["PAID", "PAID", "PAID", "FAILED"], "user {user}");
    }
    // Every OrderCreated was handled, once: the crashed batch came again after JetStream's
    // ack wait and the inbox recognised what had committed.
    let marked: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inbox WHERE consumer = 'payments'")
        .fetch_one(&pool)
        .await
        .expect("count inbox");
    assert_eq!(marked, i64::from(USERS) * 4);
    let payments: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM transfers WHERE kind = 'payment' AND status = 'posted'",
    )
    .fetch_one(&pool)
    .await
    .expect("count payments");
    assert_eq!(payments, i64::from(USERS) * 3, "each paid order debited once");
    // Every order's result reached the webhook at least once, signed; deduplicated by event
    // id the receiver saw each exactly once.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let requests = receiver.requests();
        let delivered: std::collections::HashSet<&str> = requests
            .iter()
            .filter_map(|request| request.headers.get("kopek-event-id").map(String::as_str))
            .collect();
        if delivered.len() == orders.len() && requests.len() >= 2 * orders.len() {
            assert!(
                requests.iter().all(|request| crate::webhooks::signature_verifies(secret, request))
            );
            let kinds: std::collections::HashSet<&str> = requests
                .iter()
                .filter_map(|request| request.headers.get("kopek-event-type").map(String::as_str))
                .collect();
            assert_eq!(kinds, ["OrderFailed", "OrderPaid"].into_iter().collect());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "webhooks: {} distinct of {}",
            delivered.len(),
            orders.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pool.close().await;
    async_nats::jetstream::new(nats).delete_stream(&stream).await.expect("delete the stream");
}
