//! The command line: every flag has a `KOPEK_...` environment twin.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "kopek",
    version,
    about = "kopek: a double-entry payment ledger server",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the ledger server (gRPC and HTTP).
    Serve(Box<ServeArgs>),
    /// Create or upgrade the database schema, then exit.
    Migrate(StoreArgs),
    /// Recompute the books from the stored rows; exit 1 with a report on any mismatch.
    Verify(VerifyArgs),
    /// Take a consistent backup of the embedded store into OUT_DIR while the server runs:
    /// from the data directory beside it, or from the server at `--addr` over HTTP.
    Backup(BackupArgs),
    /// Restore a backup into an empty data directory; `kopek verify` then checks it.
    Restore(RestoreArgs),
    /// Write the ledger's accounts, transfers (with their entries) and events as JSON Lines,
    /// or its transfers as CSV: from the server at `--addr`, or from a store on this machine.
    Export(ExportArgs),
    /// Load a file `kopek export` wrote (JSON Lines), refusing one whose books do not
    /// balance; loading it again changes nothing.
    Import(ImportArgs),
    /// Manage accounts on a running server.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Find transfers on a running server.
    #[command(subcommand)]
    Transfers(Box<TransfersCommand>),
    /// Move AMOUNT from the outside world (world:<CUR>) into ACCOUNT.
    Deposit(MoneyArgs),
    /// Move AMOUNT out of ACCOUNT to the outside world (world:<CUR>).
    Withdraw(MoneyArgs),
    /// Move AMOUNT from one account to another.
    Transfer(TransferArgs),
    /// Show an account's balances.
    Balance(BalanceArgs),
    /// Manage API keys, in the database directly (the server need not run).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// List what API keys did: every event their writes caused, newest last.
    Audit(AuditArgs),
    /// One screen about a running server: health, throughput, errors, lag, the books.
    Status(StatusArgs),
    /// Exchange rates on a running server: set one, import a file, list those in force.
    #[command(subcommand)]
    Rates(RatesCommand),
    /// Load generator: drive transfers through a surface and report throughput, latencies,
    /// memory and file size, then check the ledger (docs/performance.md).
    Bench(Box<BenchArgs>),
}

#[derive(Subcommand, Debug)]
pub enum RatesCommand {
    /// Set how many QUOTE one BASE buys, e.g. `kopek rates set USD EUR 0.9234` (admin key).
    Set(RatesSetArgs),
    /// Set every rate of a CSV (base,quote,rate[,source[,valid_from]]) or JSON file (admin key).
    Import(RatesImportArgs),
    /// The rates in force, one per pair.
    List(RatesArgs),
}

#[derive(Args, Debug)]
pub struct RatesArgs {
    /// Address of a running kopek server's HTTP listener.
    #[arg(long, env = "KOPEK_HTTP_ADDR", default_value = "http://127.0.0.1:8000")]
    pub addr: String,
    /// API key (`kopek_...`); setting rates needs an admin key.
    #[arg(long, env = "KOPEK_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RatesSetArgs {
    pub base: String,
    pub quote: String,
    /// A decimal: how many QUOTE one BASE buys.
    pub rate: String,
    /// Who gave the rate (default: manual).
    #[arg(long)]
    pub source: Option<String>,
    /// RFC 3339: from when the rate applies (default: now).
    #[arg(long)]
    pub valid_from: Option<String>,
    #[command(flatten)]
    pub api: RatesArgs,
}

#[derive(Args, Debug)]
pub struct RatesImportArgs {
    pub file: PathBuf,
    /// The source of rates whose line names none (default: manual).
    #[arg(long)]
    pub source: Option<String>,
    #[command(flatten)]
    pub api: RatesArgs,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Address of a running kopek server's HTTP listener.
    #[arg(long, env = "KOPEK_HTTP_ADDR", default_value = "http://127.0.0.1:8000")]
    pub addr: String,
    /// Where `/metrics` is served, when it is on `--metrics-listen` (default: `--addr`).
    #[arg(long, env = "KOPEK_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Seconds between the two reads of `/metrics` that rates are measured over.
    #[arg(long, default_value_t = 1.0)]
    pub interval_seconds: f64,
    /// Print JSON instead of the summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key and print it once: only its hash is kept.
    Create(CreateKeyArgs),
    /// List keys (ids, tenants, scopes, users; never secrets).
    List(ListKeysArgs),
    /// Revoke a key: it stops working at once here, and on a running server within its
    /// --key-recheck-ms (5 s unless set).
    Revoke(RevokeKeyArgs),
}

#[derive(Args, Debug)]
pub struct CreateKeyArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// read, write, gateway (write, and acting for any user through X-User-ID) or admin.
    #[arg(long)]
    pub scope: String,
    /// Bind the key to this user: it sees and moves only the user's accounts.
    #[arg(long)]
    pub user: Option<String>,
    /// The tenant the key acts in.
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// What the key is for.
    #[arg(long, default_value = "")]
    pub name: String,
    /// Print JSON instead of a readable line.
    #[arg(long, env = "KOPEK_JSON")]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ListKeysArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Only this tenant's keys.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, env = "KOPEK_JSON")]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RevokeKeyArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The key's id (the part after `kopek_`, before the second `_`), or the whole key.
    pub id: String,
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Only what this key did (its id).
    #[arg(long)]
    pub key: Option<String>,
    /// Only events at or after this RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Only events before this RFC 3339 time.
    #[arg(long)]
    pub until: Option<String>,
    /// At most this many lines.
    #[arg(long, default_value_t = 1_000)]
    pub limit: usize,
    /// Print JSON lines instead of a table.
    #[arg(long, env = "KOPEK_JSON")]
    pub json: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFlag {
    Required,
    Off,
}

#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Directory of the embedded SQLite database (created if missing).
    #[arg(long, env = "KOPEK_DATA_DIR", default_value = "./kopek-data")]
    pub data_dir: PathBuf,
    /// Database URL instead of --data-dir: `postgres://user@host:5432/db` (several kopek
    /// processes may share it) or `sqlite:DIR`. `DATABASE_URL` is read too.
    #[arg(long, env = "KOPEK_DATABASE")]
    pub database: Option<String>,
    /// Run the embedded store journal-first (`docs/storage.md`): a batch commits as one frame
    /// of an append-only journal, decided from state in memory, and the SQLite tables are the
    /// journal's projection for queries. `--journal false` keeps a ledger of the SQLite layout
    /// as it is (every batch one SQLite transaction); a data directory that has a journal
    /// always opens journal-first.
    #[arg(
        long,
        env = "KOPEK_JOURNAL",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub journal: bool,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// gRPC listener (kopek.v1.Ledger, health, reflection).
    #[arg(long, env = "KOPEK_GRPC_LISTEN", default_value = "127.0.0.1:50051")]
    pub grpc_listen: SocketAddr,
    /// HTTP listener (REST API, HTTP contracts, WebSockets, web UI); may be given several times.
    #[arg(
        long,
        env = "KOPEK_HTTP_LISTEN",
        default_value = "127.0.0.1:8000",
        value_delimiter = ','
    )]
    pub http_listen: Vec<SocketAddr>,
    /// Browser origins allowed to call the HTTP API (CORS), besides loopback ones, which are
    /// always allowed; may be given several times, or comma-separated in the variable.
    #[arg(long, env = "KOPEK_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origin: Vec<String>,
    /// Currency of APIs whose amounts carry none.
    #[arg(long, env = "KOPEK_DEFAULT_CURRENCY", default_value = "USD")]
    pub default_currency: String,
    /// Largest gRPC message in bytes (at most 50 MiB).
    #[arg(long, env = "KOPEK_GRPC_MESSAGE_BYTES_MAX", default_value_t = 4 * 1024 * 1024)]
    pub grpc_message_bytes_max: usize,
    /// Commands that may wait for the writer before new ones are refused with OVERLOADED.
    #[arg(long, env = "KOPEK_QUEUE_CAPACITY", default_value_t = 65_536)]
    pub queue_capacity: usize,
    /// Transfers the writer commits in one database transaction at most.
    #[arg(long, env = "KOPEK_BATCH_TRANSFERS_MAX", default_value_t = 8_192)]
    pub batch_transfers_max: usize,
    /// Seconds kopek keeps serving after SIGTERM or Ctrl-C while health says NOT_SERVING and
    /// /readyz says draining, so load balancers stop sending work before listeners close.
    #[arg(long, env = "KOPEK_SHUTDOWN_GRACE_SECONDS", default_value_t = 1)]
    pub shutdown_grace_seconds: u64,
    /// Seconds in-flight requests get to finish after SIGTERM or Ctrl-C.
    #[arg(long, env = "KOPEK_SHUTDOWN_TIMEOUT_SECONDS", default_value_t = 10)]
    pub shutdown_timeout_seconds: u64,
    /// Log format on stderr.
    #[arg(long, env = "KOPEK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What this process does. `all`: everything. With several processes on PostgreSQL,
    /// `api` processes serve the APIs and write; `worker` processes expire holds, pay orders
    /// and relay events to the broker; `relay` processes only relay; `ingest` processes apply
    /// transfer commands from the broker (`--broker`). Workers, relays and ingesters serve only
    /// /healthz, /readyz and /metrics and may run side by side: one relay at a time holds the
    /// lease, the others stand by.
    #[arg(long, env = "KOPEK_ROLE", value_enum, default_value_t = Role::All)]
    pub role: Role,
    /// Publish every event, in order, to this broker: nats://HOST:PORT (JetStream; options
    /// ?stream=KOPEK&subject_prefix=kopek) or amqp://USER:PASS@HOST:PORT/VHOST (RabbitMQ;
    /// options ?exchange=kopek.events&queue=NAME).
    #[arg(long, env = "KOPEK_BROKER")]
    pub broker: Option<String>,
    /// With `--role all`: also apply transfer commands from the broker, as `--role ingest`
    /// does (docs/events.md, "Command ingestion").
    #[arg(long, env = "KOPEK_INGEST")]
    pub ingest: bool,
    /// Attempts at a webhook delivery before it is dead-lettered (and after a redelivery).
    #[arg(long, env = "KOPEK_WEBHOOK_MAX_ATTEMPTS", default_value_t = 10)]
    pub webhook_max_attempts: u32,
    /// Milliseconds before the first webhook retry; each further wait doubles (with jitter:
    /// between half and all of it), up to an hour.
    #[arg(long, env = "KOPEK_WEBHOOK_BACKOFF_MS", default_value_t = 1_000)]
    pub webhook_backoff_ms: u64,
    /// Let webhooks reach loopback, private, link-local and metadata addresses (refused by
    /// default, at subscription and again at each delivery after DNS resolution): for
    /// receivers on the operator's own network.
    #[arg(long, env = "KOPEK_WEBHOOKS_ALLOW_PRIVATE_TARGETS")]
    pub webhooks_allow_private_targets: bool,
    /// Seconds a webhook receiver may take to answer.
    #[arg(long, env = "KOPEK_WEBHOOK_TIMEOUT_SECONDS", default_value_t = 10)]
    pub webhook_timeout_seconds: u64,
    /// Whether callers need an API key. Default: off when every listener is on loopback,
    /// required otherwise; kopek refuses to start with auth off on a non-loopback listener.
    #[arg(long, env = "KOPEK_AUTH", value_enum)]
    pub auth: Option<AuthFlag>,
    /// How long a checked API key is trusted before the store is read again: a key revoked
    /// by another process (`kopek keys revoke`, another server) stops working here within
    /// this time. Shorter means more key reads.
    #[arg(long, env = "KOPEK_KEY_RECHECK_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub key_recheck_ms: u64,
    /// With auth required and no admin key yet: the first admin key (`kopek_<16 hex>_<64
    /// hex>`, e.g. from a secret store). Without it kopek makes one and prints it once.
    #[arg(long, env = "KOPEK_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Requests per second each key may make on average (0: no limit).
    #[arg(long, env = "KOPEK_RATE_LIMIT", default_value_t = 0.0)]
    pub rate_limit: f64,
    /// Requests a key may make at once above its average (default: one second's worth).
    #[arg(long, env = "KOPEK_RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<f64>,
    /// Share rate limits, and cache exchange rates, between processes through this Redis
    /// (redis://HOST:PORT/DB).
    #[arg(long, env = "KOPEK_REDIS")]
    pub redis: Option<String>,
    /// Cross rates go through this currency when no pair or inverse is stored.
    #[arg(long, env = "KOPEK_FX_BASE", default_value = "USD")]
    pub fx_base: String,
    /// Spread taken from what a converting customer receives, in basis points (1 bp = 0.01%),
    /// booked to fx-revenue:<CUR>; at most 1000.
    #[arg(long, env = "KOPEK_FX_SPREAD_BP", default_value_t = 0)]
    pub fx_spread_bp: u32,
    /// How long a quote locks its rate, in seconds.
    #[arg(long, env = "KOPEK_FX_QUOTE_TTL_SECONDS", default_value_t = 30)]
    pub fx_quote_ttl_seconds: u32,
    /// Let a cross-currency transfer without a quote convert at the rate in force
    /// (`to_currency`); otherwise it needs a quote.
    #[arg(long, env = "KOPEK_FX_IMPLICIT_QUOTES")]
    pub fx_implicit_quotes: bool,
    /// Serve gRPC and HTTP over TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "KOPEK_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "KOPEK_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// With TLS: gRPC clients must present a certificate signed by this CA (PEM): mutual TLS.
    #[arg(long, env = "KOPEK_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Also serve `/metrics` (only) on this address, e.g. one only Prometheus reaches.
    #[arg(long, env = "KOPEK_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Send traces to this OpenTelemetry collector (OTLP over gRPC, e.g.
    /// `http://127.0.0.1:4317`). Off by default: trace context still flows through requests,
    /// events and broker messages.
    #[arg(long, env = "KOPEK_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Check the books (what `kopek verify` does) this often, in a process that does
    /// background work, and report the result in `/metrics` and the log; 0 turns it off.
    #[arg(long, env = "KOPEK_VERIFY_EVERY_SECONDS", default_value_t = 3600)]
    pub verify_every_seconds: u64,
    /// Open connections per listener; past it new ones are closed at once.
    #[arg(long, env = "KOPEK_CONNECTIONS_MAX", default_value_t = 4_096)]
    pub connections_max: usize,
    /// Seconds a client gets to start a request on a new connection, to send a request's
    /// head and to finish a TLS handshake, before its connection is closed (both listeners);
    /// also the grace before a request body must arrive at 1 KiB a second.
    #[arg(long, env = "KOPEK_CLIENT_TIMEOUT_SECONDS", default_value_t = 10)]
    pub client_timeout_seconds: u64,
    /// Seconds a connection may go without a request in flight (HTTP/1 keep-alive, HTTP/2
    /// and gRPC channels) before it is closed; open streams and WebSockets count as requests.
    #[arg(long, env = "KOPEK_IDLE_TIMEOUT_SECONDS", default_value_t = 60)]
    pub idle_timeout_seconds: u64,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    All,
    Api,
    Worker,
    Relay,
    Ingest,
}

impl Role {
    pub fn serves_api(self) -> bool {
        matches!(self, Role::All | Role::Api)
    }

    /// Hold expiry and the order saga.
    pub fn does_background_work(self) -> bool {
        matches!(self, Role::All | Role::Worker)
    }

    pub fn relays(self) -> bool {
        matches!(self, Role::All | Role::Worker | Role::Relay)
    }
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// gRPC address of a running server to load; absent, the bench starts its own `kopek
    /// serve` on a temporary data directory and stops it afterwards.
    #[arg(long)]
    pub addr: Option<String>,
    /// HTTP address of that server (the `http` surface and its memory from `/metrics`).
    #[arg(long, requires = "addr")]
    pub http_addr: Option<String>,
    /// With `--addr`: the server's API key, if it needs one.
    #[arg(long, env = "KOPEK_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Our own server on PostgreSQL at this URL instead of SQLite.
    #[arg(long, conflicts_with = "addr")]
    pub database: Option<String>,
    /// Our own server's data directory, kept afterwards; absent, a temporary one.
    #[arg(long, conflicts_with = "addr")]
    pub data_dir: Option<PathBuf>,
    /// More flags for our own server, e.g. `--server-arg=--batch-transfers-max=16384`.
    #[arg(long, conflicts_with = "addr", allow_hyphen_values = true)]
    pub server_arg: Vec<String>,
    #[arg(long, default_value_t = 10_000)]
    pub accounts: usize,
    #[arg(long, default_value_t = 1_000_000)]
    pub transfers: u64,
    /// Transfers per request on `stream` (at most 1,024); on `transactions`, messages in
    /// flight are `--window` x this.
    #[arg(long, default_value_t = 1_024)]
    pub batch_size: usize,
    /// Streams (`stream`, `transactions`; default 1) or concurrent unary callers and HTTP
    /// clients (`authorize`, `http`; default 64).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Requests each stream keeps in flight.
    #[arg(long, default_value_t = 8)]
    pub window: usize,
    /// `stream`: ask for the short answer (`StreamTransfersRequest.compact`: id and status of
    /// each transfer that applied, failures in full), as TigerBeetle's own benchmark is told
    /// only what failed; `false` asks for every transfer in full.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub compact: bool,
    #[arg(long, value_enum, default_value_t = Surface::Stream)]
    pub surface: Surface,
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    pub distribution: Distribution,
    /// The same seed makes the same transfers; absent, from the clock.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Check every bench balance against the plan and run the books check afterwards.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub verify: bool,
    /// While the load runs, also search transfers (`ListTransfers`, pages of 100) one at a
    /// time and report their latency (docs/performance.md, "Search under load").
    #[arg(long)]
    pub search: bool,
    #[arg(long)]
    pub json: bool,
}

/// Where `kopek bench` sends its transfers.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    /// `kopek.v1.Ledger/StreamTransfers`, `--batch-size` transfers per request.
    Stream,
    /// `transaction.TransactionService/StreamTransactions`, one purchase per message.
    Transactions,
    /// `payment.v1.PaymentService/AuthorizePayment`, unary.
    Authorize,
    /// `POST /v1/transfers` over keep-alive HTTP/1.1.
    Http,
}

/// Which accounts the transfers touch.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distribution {
    /// Payer and payee uniformly at random.
    Uniform,
    /// Zipf's law (exponent 1): a few accounts take most transfers.
    Zipf,
    /// Every transfer pays or is paid by one of two accounts.
    Hot,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Where the backup goes: a new or empty directory.
    pub out_dir: PathBuf,
    /// Take it from the server whose HTTP listener is at this URL (e.g.
    /// `http://127.0.0.1:8080`; needs an admin key with `--auth required`) instead of
    /// reading `--data-dir` on this machine.
    #[arg(long)]
    pub addr: Option<String>,
    /// API key for `--addr`.
    #[arg(long, env = "KOPEK_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The embedded store's directory, read beside a running server.
    #[arg(long, env = "KOPEK_DATA_DIR", default_value = "./kopek-data")]
    pub data_dir: PathBuf,
}

/// Where `kopek export` reads and `kopek import` writes: a running server, or a store on this
/// machine that no server has open.
#[derive(Args, Debug, Clone)]
pub struct LedgerArgs {
    /// The server whose HTTP listener is at this URL (e.g. `http://127.0.0.1:8080`; needs an
    /// admin key with `--auth required`), instead of opening the store here.
    #[arg(long)]
    pub addr: Option<String>,
    /// API key for `--addr`.
    #[arg(long, env = "KOPEK_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON object a line: the header, accounts, transfers, events, the end.
    Jsonl,
    /// Transfers only, one a row, with a header row.
    Csv,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// The file to write (replaced); default: standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
    pub format: ExportFormat,
    /// Only transfers and events committed at or after this time (RFC 3339).
    #[arg(long)]
    pub after: Option<String>,
    /// Only transfers and events committed strictly before this time (RFC 3339).
    #[arg(long)]
    pub before: Option<String>,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// A JSON Lines file `kopek export` wrote.
    pub file: PathBuf,
    #[command(flatten)]
    pub ledger: LedgerArgs,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// A directory `kopek backup` wrote.
    pub backup_dir: PathBuf,
    /// The data directory to restore into: it must hold no ledger.
    #[arg(long, env = "KOPEK_DATA_DIR")]
    pub data_dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print the report as JSON.
    #[arg(long, env = "KOPEK_JSON")]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Address of a running kopek server's gRPC listener.
    #[arg(long, env = "KOPEK_ADDR", default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// Print JSON instead of a readable line.
    #[arg(long, env = "KOPEK_JSON")]
    pub json: bool,
    /// API key, when the server requires one.
    #[arg(long, env = "KOPEK_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum AccountsCommand {
    /// Open an account (opening the same account again changes nothing).
    Create(CreateAccountArgs),
    /// Show an account.
    Get(BalanceArgs),
}

#[derive(Subcommand, Debug)]
pub enum TransfersCommand {
    /// List the transfers that match every filter given, newest first (docs/api.md,
    /// "Searching transfers"). Prints the next page's `--cursor` on stderr while more may
    /// follow.
    List(ListTransfersArgs),
}

#[derive(Args, Debug)]
pub struct ListTransfersArgs {
    /// Debited or credited by this account (holds and declined transfers too).
    #[arg(long)]
    pub account: Option<String>,
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Committed at or after this time (RFC 3339).
    #[arg(long)]
    pub after: Option<String>,
    /// Committed strictly before this time (RFC 3339).
    #[arg(long)]
    pub before: Option<String>,
    #[arg(long)]
    pub effective_after: Option<String>,
    #[arg(long)]
    pub effective_before: Option<String>,
    /// transfer, deposit, withdrawal, payment, purchase, fee, reversal or fx_leg.
    #[arg(long)]
    pub kind: Option<String>,
    /// posted, pending, captured, voided, expired or declined.
    #[arg(long)]
    pub status: Option<String>,
    #[arg(long)]
    pub currency: Option<String>,
    /// At least this amount, in major units of `--currency`.
    #[arg(long)]
    pub min_amount: Option<String>,
    /// At most this amount, in major units of `--currency`.
    #[arg(long)]
    pub max_amount: Option<String>,
    /// KEY=VALUE that must be in the transfer's metadata; repeat for more.
    #[arg(long = "metadata", value_name = "KEY=VALUE")]
    pub metadata: Vec<String>,
    /// Oldest first instead of newest first.
    #[arg(long)]
    pub ascending: bool,
    /// Transfers per page (default 100, at most 1000).
    #[arg(long)]
    pub limit: Option<u32>,
    /// The cursor a previous page printed.
    #[arg(long)]
    pub cursor: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args, Debug)]
pub struct CreateAccountArgs {
    /// Account id: 1 to 128 characters of A-Z a-z 0-9 _ . : -
    pub id: String,
    /// ISO 4217 currency code.
    #[arg(long)]
    pub currency: String,
    /// The user who owns the account.
    #[arg(long)]
    pub owner: Option<String>,
    /// How far below zero the balance may go, in major units (e.g. 100.00).
    #[arg(long)]
    pub overdraft_limit: Option<String>,
    /// A system account with no overdraft limit (money outside the ledger, revenue, ...).
    #[arg(long)]
    pub system: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args, Debug)]
pub struct MoneyArgs {
    pub account: String,
    /// Decimal in major units of the account's currency, e.g. 100.00.
    pub amount: String,
    /// Idempotency key; retrying with the same key never applies twice. Default: random.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args, Debug)]
pub struct TransferArgs {
    pub from: String,
    pub to: String,
    /// Decimal in major units of the accounts' currency, e.g. 12.50.
    pub amount: String,
    /// Idempotency key; retrying with the same key never applies twice. Default: random.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args, Debug)]
pub struct BalanceArgs {
    pub account: String,
    #[command(flatten)]
    pub client: ClientArgs,
}
