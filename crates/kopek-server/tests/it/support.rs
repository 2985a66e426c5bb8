//! `Server`: one `kopek serve` process on random loopback ports, and helpers for requests.
//! In the `it_postgres` binary (`crate::ON_POSTGRES`) every server runs on a PostgreSQL
//! database of its own instead of SQLite; a server started again on the same data directory
//! finds the same database.

use kopek_proto::kopek::v1 as pb;
use kopek_proto::kopek::v1::ledger_client::LedgerClient;
pub use kopek_store::Store;
use kopek_testkit::process::{Launch, ServerProcess};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::Channel;

pub const KOPEK: &str = env!("CARGO_BIN_EXE_kopek");

/// A `kopek serve` process (`kopek_testkit::process`) with the addresses tests use.
pub struct Server {
    process: ServerProcess,
    pub grpc_address: String,
    pub http_address: String,
    /// Every HTTP listener, in the order they were given.
    pub http_addresses: Vec<String>,
    /// The admin key a first start with auth required printed.
    pub admin_key: Option<String>,
    /// The `--metrics-listen` listener, when there is one.
    pub metrics_address: Option<String>,
}

impl Server {
    /// Starts `kopek serve` on `data_dir` and waits until it prints its listeners.
    pub fn start(data_dir: &Path) -> Server {
        Server::start_with(data_dir, &[])
    }

    /// Starts `kopek serve` with extra flags.
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Server {
        Server::start_with_env(data_dir, extra, &[])
    }

    /// Starts `kopek serve` with extra flags and environment variables.
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Server::spawn(data_dir, extra, env, false)
    }

    /// Starts `kopek serve` with extra flags, logging at info, and keeps its stderr.
    pub fn start_logging(data_dir: &Path, extra: &[&str]) -> Server {
        Server::spawn(data_dir, extra, &[("RUST_LOG", "info")], true)
    }

    fn spawn(data_dir: &Path, extra: &[&str], env: &[(&str, &str)], capture: bool) -> Server {
        let mut launch = Launch::new(KOPEK, data_dir);
        if crate::ON_POSTGRES {
            launch
                .args
                .extend(["--database".to_owned(), PgDatabase::for_dir(data_dir).url.clone()]);
        }
        launch.args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        // The tests' webhook receivers listen on loopback; a test of the default rule sets it
        // back to "false".
        launch.env.push(("KOPEK_WEBHOOKS_ALLOW_PRIVATE_TARGETS".to_owned(), "true".to_owned()));
        launch
            .env
            .extend(env.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())));
        launch.capture_stderr = capture;
        let process = ServerProcess::start(&launch);
        let listeners = process.listeners.clone();
        Server {
            process,
            grpc_address: listeners.grpc.unwrap_or_default(),
            http_address: listeners.http[0].clone(),
            http_addresses: listeners.http,
            admin_key: listeners.admin_key,
            metrics_address: listeners.metrics,
        }
    }

    /// The stderr lines captured so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.process.log_lines()
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc_address)
    }

    pub async fn client(&self) -> LedgerClient<Channel> {
        LedgerClient::connect(self.grpc_url()).await.expect("connect to kopek")
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.grpc_url()).expect("url").connect().await.expect("connect")
    }

    /// Waits for the process to end on its own.
    pub fn wait_for_exit(&mut self, within: Duration) -> ExitStatus {
        self.process.wait_for_exit(within)
    }

    /// SIGKILL: no chance to flush or drain anything.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// SIGTERM, then wait for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.process.terminate()
    }
}

/// The ledger a server on `data_dir` wrote, opened directly: the SQLite file read-only, or the
/// PostgreSQL database in the PostgreSQL run.
pub async fn open_ledger(data_dir: &Path) -> Arc<dyn Store> {
    if crate::ON_POSTGRES {
        let url = PgDatabase::for_dir(data_dir).url.clone();
        Arc::new(kopek_store_postgres::PostgresStore::connect(&url).await.expect("connect"))
    } else {
        Arc::new(
            kopek_store_sqlite::SqliteStore::open_read_only(data_dir).expect("read the ledger"),
        )
    }
}

/// A throwaway database on the server of KOPEK_TEST_DATABASE_URL, one per data directory. It
/// lives while its directory does (a test may stop a server and start another on the same
/// directory); databases of directories that are gone are dropped on the next start, and ones
/// an interrupted run left behind are dropped after an hour.
pub struct PgDatabase {
    admin: String,
    name: String,
    url: String,
}

static DATABASES: Mutex<BTreeMap<PathBuf, Arc<PgDatabase>>> = Mutex::new(BTreeMap::new());
static LEFTOVERS: std::sync::Once = std::sync::Once::new();
const DATABASE_PREFIX: &str = "kopek_it_";

impl PgDatabase {
    fn for_dir(data_dir: &Path) -> Arc<PgDatabase> {
        let admin = std::env::var("KOPEK_TEST_DATABASE_URL")
            .expect("the PostgreSQL run needs KOPEK_TEST_DATABASE_URL");
        LEFTOVERS.call_once(|| drop_leftovers(&admin));
        let mut databases = DATABASES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Databases of finished tests (their directory is gone) are dropped after the lock is
        // released, so a slow drop does not hold up other tests.
        let finished: Vec<Arc<PgDatabase>> = databases
            .extract_if(.., |dir, _| !dir.exists())
            .map(|(_, database)| database)
            .collect();
        if let Some(database) = databases.get(data_dir) {
            let database = database.clone();
            drop(databases);
            drop(finished);
            return database;
        }
        let now = kopek_clock::now().as_unix_micros() / 1_000_000;
        let name = format!("{DATABASE_PREFIX}{now}_{}", uuid::Uuid::new_v4().simple());
        admin_statement(&admin, format!("CREATE DATABASE {name}"));
        let server = admin.rsplit_once('/').expect("a URL ending with a database name").0;
        let url = format!("{server}/{name}");
        let database = Arc::new(PgDatabase { admin, name, url });
        databases.insert(data_dir.to_owned(), database.clone());
        drop(databases);
        drop(finished);
        database
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(error) = try_admin_statement(&self.admin, statement) {
            eprintln!("could not drop test database {}: {error}", self.name);
        }
    }
}

/// Drops the databases an interrupted earlier run left, if more than an hour old (a run going
/// on at the same time keeps its own).
fn drop_leftovers(admin: &str) {
    let server = admin.to_owned();
    let names: Vec<String> = on_own_runtime(async move {
        let pool = sqlx::PgPool::connect(&server).await.expect("connect");
        let pattern = format!("{DATABASE_PREFIX}%");
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE $1")
            .bind(pattern)
            .fetch_all(&pool)
            .await
            .expect("list databases")
    });
    let hour_ago = u64::try_from(kopek_clock::now().as_unix_micros() / 1_000_000)
        .unwrap_or(0)
        .saturating_sub(3_600);
    for name in names {
        let created = name
            .strip_prefix(DATABASE_PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .and_then(|(secs, _)| secs.parse::<u64>().ok());
        if created.is_some_and(|created| created < hour_ago) {
            admin_statement(admin, format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

/// Runs a statement on the test server.
fn admin_statement(admin: &str, statement: String) {
    try_admin_statement(admin, statement).expect("admin statement");
}

fn try_admin_statement(admin: &str, statement: String) -> Result<(), sqlx::Error> {
    let admin = admin.to_owned();
    on_own_runtime(async move {
        let pool = sqlx::PgPool::connect(&admin).await?;
        sqlx::query(&statement).execute(&pool).await?;
        pool.close().await;
        Ok(())
    })
}

/// Runs a future to completion from any context: on a thread and runtime of its own, since
/// servers start inside async tests.
fn on_own_runtime<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(work)
    })
    .join()
    .expect("admin thread")
}

/// Runs the CLI; returns exit code, stdout and stderr.
pub fn cli(args: &[&str]) -> (i32, String, String) {
    let output =
        Command::new(KOPEK).args(args).env("RUST_LOG", "warn").output().expect("run kopek");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `kopek serve` on `data` with gRPC on a free loopback port, HTTP on `http_listen` and
/// `extra` flags, for a start that must fail: the exit code and stderr.
pub fn serve_refused(data: &str, http_listen: &str, extra: &[&str]) -> (i32, String) {
    let mut args = vec![
        "serve",
        "--data-dir",
        data,
        "--grpc-listen",
        "127.0.0.1:0",
        "--http-listen",
        http_listen,
    ];
    args.extend_from_slice(extra);
    let (code, _, stderr) = cli(&args);
    (code, stderr)
}

pub use kopek_testkit::fixtures::{deposit, new_account, post};

pub async fn open_accounts(client: &mut LedgerClient<Channel>, ids: &[&str]) {
    let accounts = ids.iter().map(|id| new_account(id, "USD")).collect();
    let response = client
        .create_accounts(pb::CreateAccountsRequest { accounts })
        .await
        .expect("create accounts");
    for result in response.into_inner().results {
        assert!(result.error.is_none(), "{:?}", result.error);
    }
}

pub async fn transfers(
    client: &mut LedgerClient<Channel>,
    transfers: Vec<pb::TransferRequest>,
    linked: bool,
) -> Vec<pb::TransferResult> {
    let request = pb::CreateTransfersRequest { transfers, linked };
    client.create_transfers(request).await.expect("create transfers").into_inner().results
}

pub async fn one(
    client: &mut LedgerClient<Channel>,
    transfer: pb::TransferRequest,
) -> pb::TransferResult {
    transfers(client, vec![transfer], false).await.remove(0)
}

pub async fn posted(client: &mut LedgerClient<Channel>, account: &str) -> i64 {
    let request = pb::GetBalanceRequest { account_id: account.to_owned(), as_of: String::new() };
    let response = client.get_balance(request).await.expect("balance").into_inner();
    response.balance.expect("balance").posted_minor
}

pub fn error_code(result: &pb::TransferResult) -> Option<pb::ErrorCode> {
    result.error.as_ref().map(|error| pb::ErrorCode::try_from(error.code).expect("known code"))
}

pub fn status(result: &pb::TransferResult) -> pb::TransferStatus {
    let transfer = result.transfer.as_ref().expect("a recorded transfer");
    pb::TransferStatus::try_from(transfer.status).expect("known status")
}

/// A response of the test HTTP client.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }
}

/// A minimal HTTP/1.1 client (one request per connection), enough to test every route
/// without another HTTP stack.
pub async fn http(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(address).await.expect("connect");
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or_default());
    socket.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    socket.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| {
            line.split_once(':')
                .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        })
        .collect();
    let chunked = headers.iter().any(|(key, value)| {
        key.eq_ignore_ascii_case("transfer-encoding") && value.contains("chunked")
    });
    let body = if chunked { dechunk(rest) } else { rest.to_owned() };
    HttpResponse { status, headers, body }
}

fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 {
            break;
        }
        body.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    body
}

/// The Redis of KOPEK_TEST_REDIS (default redis://127.0.0.1:6379/0): outside CI `None`, with a
/// loud line, when none answers; with `CI=true` a missing Redis fails the test.
pub fn redis_or_skip() -> Option<String> {
    let url =
        std::env::var("KOPEK_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned());
    let address =
        url.trim_start_matches("redis://").split('/').next().unwrap_or_default().to_owned();
    if std::net::TcpStream::connect_timeout(
        &address.parse().expect("KOPEK_TEST_REDIS is redis://IP:PORT/DB"),
        Duration::from_secs(1),
    )
    .is_ok()
    {
        return Some(url);
    }
    let in_ci = std::env::var("CI").is_ok_and(|value| value == "true" || value == "1");
    assert!(!in_ci, "CI must have Redis at {url}");
    eprintln!("SKIPPED: no Redis answers at {url}; set KOPEK_TEST_REDIS or start redis-server");
    None
}

/// A throwaway PostgreSQL database for `data_dir` on the server of KOPEK_TEST_DATABASE_URL, for
/// tests that start several processes on one database: outside CI `None`, loudly, without the
/// variable; with `CI=true` its absence fails the test.
pub fn postgres_or_skip(data_dir: &Path) -> Option<String> {
    if std::env::var("KOPEK_TEST_DATABASE_URL").is_err() {
        let in_ci = std::env::var("CI").is_ok_and(|value| value == "true" || value == "1");
        assert!(!in_ci, "CI must set KOPEK_TEST_DATABASE_URL");
        eprintln!("SKIPPED: KOPEK_TEST_DATABASE_URL is not set; this test needs PostgreSQL");
        return None;
    }
    Some(PgDatabase::for_dir(data_dir).url.clone())
}

/// Waits until the server's searches see every write it acknowledged: a journal-first
/// server's projection has taken in every committed frame (`kopek_projection_lag_frames` is
/// 0). A server without a projection has nothing to wait for.
pub async fn settled(server: &Server) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let page = http(&server.http_address, "GET", "/metrics", &[], None).await.body;
        match kopek_testkit::Scrape::parse(&page).get("kopek_projection_lag_frames") {
            None => return,
            Some(0.0) => return,
            Some(lag) => assert!(
                std::time::Instant::now() < deadline,
                "the projection is still {lag} frames behind after 30 s"
            ),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
