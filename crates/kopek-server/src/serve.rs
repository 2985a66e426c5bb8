//! `kopek serve`: opens the store, starts the write path and the listeners, and drains them
//! on SIGTERM or Ctrl-C.

use crate::cli::{AuthFlag, Role, ServeArgs, StoreArgs};
use anyhow::{Context, bail};
use kopek_api_grpc::GrpcConfig;
use kopek_auth::{AuthMode, Authenticator, RateLimit, RateLimiter, Scope};
use kopek_engine::{Engine, EngineConfig};
use kopek_store::Store;
use kopek_store_postgres::PostgresStore;
use kopek_store_sqlite::{JournalStore, SqliteStore};
use kopek_testkit::startup::{self, Listener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

/// Where the ledger lives (`--data-dir` or `--database`): an embedded SQLite directory, or a
/// PostgreSQL server.
pub enum Backend {
    Embedded(PathBuf),
    Postgres(String),
}

/// `--database` (or `DATABASE_URL`) when given, else `--data-dir`.
pub fn backend(args: &StoreArgs) -> anyhow::Result<Backend> {
    let url = args
        .database
        .clone()
        .or_else(|| std::env::var("DATABASE_URL").ok().filter(|url| !url.is_empty()));
    match url.as_deref() {
        None => Ok(Backend::Embedded(args.data_dir.clone())),
        Some(url) => match url.split_once(':') {
            Some(("sqlite", path)) => {
                Ok(Backend::Embedded(PathBuf::from(path.trim_start_matches("//"))))
            }
            Some(("postgres" | "postgresql", _)) => Ok(Backend::Postgres(url.to_owned())),
            _ => bail!("--database must be a postgres://... or sqlite:DIR URL"),
        },
    }
}

/// Opens the store for serving (migrating it first).
pub async fn open_store(args: &StoreArgs) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match backend(args)? {
        Backend::Embedded(dir) if args.journal || kopek_store_sqlite::has_journal(&dir) => {
            Arc::new(
                JournalStore::open(&dir).with_context(|| {
                    format!("open the journal-first ledger in {}", dir.display())
                })?,
            )
        }
        Backend::Embedded(dir) => Arc::new(
            SqliteStore::open(&dir)
                .with_context(|| format!("open the ledger in {}", dir.display()))?,
        ),
        Backend::Postgres(url) => Arc::new(
            PostgresStore::connect(&url).await.context("connect to PostgreSQL and migrate")?,
        ),
    })
}

/// Opens the store for `kopek keys` and `kopek audit`, which may run beside a live server.
pub async fn open_admin_store(args: &StoreArgs) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match backend(args)? {
        Backend::Embedded(dir) => Arc::new(
            SqliteStore::open_beside_server(&dir)
                .with_context(|| format!("open the ledger in {}", dir.display()))?,
        ),
        Backend::Postgres(url) => Arc::new(
            PostgresStore::connect(&url).await.context("connect to PostgreSQL and migrate")?,
        ),
    })
}

/// A description of the backend for logs, without credentials.
pub fn describe(args: &StoreArgs) -> String {
    match backend(args) {
        Ok(Backend::Embedded(dir)) if args.journal || kopek_store_sqlite::has_journal(&dir) => {
            format!("journal-first {}", dir.display())
        }
        Ok(Backend::Embedded(dir)) => format!("sqlite {}", dir.display()),
        Ok(Backend::Postgres(url)) => {
            let host = url.rsplit_once('@').map_or(url.as_str(), |(_, host)| host);
            format!(
                "postgres {}",
                host.trim_start_matches("postgres://").trim_start_matches("postgresql://")
            )
        }
        Err(_) => "unknown".to_owned(),
    }
}

/// Checks the books every `every`, give or take a tenth so that workers started together do
/// not scan together (the first time about one period after start), and reports in
/// `/metrics` (`kopek_verify_*`) and the log: an error line for every problem found.
fn check_books(
    store: Arc<dyn Store>,
    every: Duration,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let metrics = kopek_telemetry::metrics();
        loop {
            let spread = u32::try_from(uuid::Uuid::new_v4().as_u128() % 200).unwrap_or(100);
            let wait = every * 9 / 10 + every * spread / 1_000;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            let started = std::time::Instant::now();
            match store.verify().await {
                Ok(report) => {
                    metrics
                        .verify_problems
                        .set(i64::try_from(report.problems.len()).unwrap_or(i64::MAX));
                    metrics.verify_accounts.set(i64::try_from(report.accounts).unwrap_or(i64::MAX));
                    if report.is_ok() {
                        metrics.verify_runs.with_label_values(&["ok"]).inc();
                        metrics.verify_last_ok.set(kopek_telemetry::unix_now());
                        tracing::info!(
                            accounts = report.accounts,
                            transfers = report.transfers,
                            events = report.events,
                            seconds = started.elapsed().as_secs_f64(),
                            "books verified"
                        );
                    } else {
                        metrics.verify_runs.with_label_values(&["failed"]).inc();
                        for problem in &report.problems {
                            tracing::error!(%problem, "the books do not verify");
                        }
                    }
                }
                Err(error) => {
                    metrics.verify_runs.with_label_values(&["error"]).inc();
                    tracing::warn!(%error, "could not check the books; trying again next period");
                }
            }
        }
    })
}

/// Serves until SIGINT or SIGTERM, then drains and stops.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let app = build(args).await?;
    app.announce();
    app.run_until(wait_for_signal()).await
}

/// A built server: every listener bound and serving, the background work running, until
/// `run_until` drains and stops it.
pub struct App {
    pub grpc_address: Option<std::net::SocketAddr>,
    pub http_addresses: Vec<std::net::SocketAddr>,
    pub metrics_address: Option<std::net::SocketAddr>,
    /// The role, store and auth mode, as the start-up log line says them.
    role: Role,
    store: String,
    auth: AuthMode,
    servers: tokio::task::JoinSet<anyhow::Result<()>>,
    background: Vec<tokio::task::JoinHandle<()>>,
    relay: Option<tokio::task::JoinHandle<()>>,
    engine: Engine,
    writer: tokio::task::JoinHandle<()>,
    http_state: kopek_api_http::AppState,
    reporter: tonic_health::server::HealthReporter,
    draining: CancellationToken,
    shutdown: CancellationToken,
    /// How long NOT_SERVING is said before the listeners stop.
    grace: Duration,
    /// How long each stage of stopping may take.
    timeout: Duration,
}

/// Builds the server `args` describe: opens the store, starts the write path and the
/// background work, and binds and serves every listener (a taken port fails here).
pub async fn build(args: ServeArgs) -> anyhow::Result<App> {
    let plan = Plan::of(&args)?;
    let auth_mode = auth_mode(&args)?;
    let (grpc_tls, http_tls) = tls(&args)?;
    let limiter = rate_limiter(&args).await?;
    let store = open_store(&args.store).await?;
    if auth_mode == AuthMode::Required && args.role.serves_api() {
        first_admin_key(store.as_ref(), args.admin_key.as_deref()).await?;
    }
    // One clock for the process: commit times, hold expiry and key rechecks read it.
    let clock = kopek_clock::system();
    let key_recheck = Duration::from_millis(args.key_recheck_ms);
    let authenticator = Authenticator::new(store.clone(), auth_mode, key_recheck, clock.clone());
    let mut config = engine_config(args.role, clock);
    config.queue_capacity = args.queue_capacity.max(1);
    config.batch_transfers_max = args.batch_transfers_max.max(1);
    let (engine, writer) = Engine::start(store.clone(), config);
    let listeners = Listeners::bind(&args).await?;

    let shutdown = CancellationToken::new();
    let draining = CancellationToken::new();
    let (reporter, health) = tonic_health::server::health_reporter();
    let mut servers = tokio::task::JoinSet::new();
    let feed =
        kopek_events::Feed::start(engine.store().clone(), engine.commits(), shutdown.clone())
            .await
            .context("start the outbox feed")?;
    let fx = exchange_rates(&args, store.clone()).await?;
    // The one front door every surface submits through, with the process's one rate cache.
    let intake = kopek_intake::Intake::new(engine.clone(), fx.clone());
    let grpc_address = listeners.grpc.as_ref().map(TcpListener::local_addr).transpose()?;
    if let Some(grpc_listener) = listeners.grpc {
        let grpc_config = GrpcConfig {
            message_bytes_max: args.grpc_message_bytes_max,
            webhook_max_attempts: args.webhook_max_attempts.max(1),
            webhook_targets: webhook_targets(&args),
            connections_max: args.connections_max.max(1),
            connection_limits: connection_limits(&args),
            tls: grpc_tls.clone(),
        };
        let ledger = kopek_api_grpc::Ledger {
            intake: intake.clone(),
            feed: feed.clone(),
            gate: kopek_api_grpc::auth::Gate {
                auth: authenticator.clone(),
                limiter: limiter.clone(),
            },
        };
        let (grpc_reporter, grpc_shutdown) = (reporter.clone(), shutdown.clone());
        servers.spawn(async move {
            kopek_api_grpc::serve(
                grpc_listener,
                ledger,
                grpc_config,
                grpc_reporter,
                health,
                grpc_shutdown,
            )
            .await
            .context("gRPC server")
        });
    }
    let notifier = kopek_outbox::webhooks::NotifierConfig {
        max_attempts: args.webhook_max_attempts.max(1),
        backoff_first: Duration::from_millis(args.webhook_backoff_ms.max(1)),
        timeout: Duration::from_secs(args.webhook_timeout_seconds.max(1)),
        targets: webhook_targets(&args),
        ..kopek_outbox::webhooks::NotifierConfig::default()
    };
    let parts = Parts { store, intake, feed, fx, limiter, shutdown };
    let background = start_background(&args, &plan, &parts, &notifier);
    let Parts { intake, feed, limiter, shutdown, .. } = parts;
    let http_state = kopek_api_http::AppState {
        engine: intake.engine().clone(),
        intake,
        feed,
        default_currency: plan.default_currency,
        draining: draining.clone(),
        sockets: kopek_api_http::websocket_permits(),
        relays: background.relays,
        webhook_max_attempts: notifier.max_attempts,
        webhook_targets: notifier.targets,
        auth: authenticator,
        limiter,
    };
    let listening = (listeners.http, listeners.metrics);
    let (http_addresses, metrics_address) =
        serve_http(&args, &mut servers, listening, &http_state, http_tls, &shutdown)?;
    Ok(App {
        grpc_address,
        http_addresses,
        metrics_address,
        role: args.role,
        store: describe(&args.store),
        auth: auth_mode,
        servers,
        background: background.tasks,
        relay: background.relay,
        engine,
        writer,
        http_state,
        reporter,
        draining,
        shutdown,
        grace: Duration::from_secs(args.shutdown_grace_seconds),
        timeout: Duration::from_secs(args.shutdown_timeout_seconds),
    })
}

/// Serves the HTTP listeners (the APIs, or only the probes for a role that serves none) and
/// the metrics listener, until `shutdown`; their bound addresses.
fn serve_http(
    args: &ServeArgs,
    servers: &mut tokio::task::JoinSet<anyhow::Result<()>>,
    (http, metrics): (Vec<TcpListener>, Option<TcpListener>),
    http_state: &kopek_api_http::AppState,
    http_tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Vec<std::net::SocketAddr>, Option<std::net::SocketAddr>)> {
    let http_config = kopek_api_http::HttpConfig { cors_origins: args.cors_origin.clone() };
    let mut http_addresses = Vec::new();
    for listener in http {
        http_addresses.push(listener.local_addr()?);
        let app = if args.role.serves_api() {
            kopek_api_http::router(http_state.clone(), &http_config)
        } else {
            kopek_api_http::probes_router(http_state.clone())
        };
        let options = kopek_api_http::serve::ServeOptions {
            tls: http_tls.clone(),
            connections_max: args.connections_max.max(1),
            header_timeout: Duration::from_secs(args.client_timeout_seconds.max(1)),
            idle_timeout: connection_limits(args).idle,
        };
        let stop = shutdown.clone();
        servers.spawn(async move {
            kopek_api_http::serve::serve(listener, app, options, stop).await.context("HTTP server")
        });
    }
    let metrics_address = metrics.as_ref().map(TcpListener::local_addr).transpose()?;
    if let Some(listener) = metrics {
        let app = kopek_api_http::metrics_router(http_state.clone());
        let options = kopek_api_http::serve::ServeOptions::default();
        let stop = shutdown.clone();
        servers.spawn(async move {
            kopek_api_http::serve::serve(listener, app, options, stop)
                .await
                .context("metrics server")
        });
    }
    Ok((http_addresses, metrics_address))
}

/// What `args` ask for beyond single flags, checked together before anything starts.
struct Plan {
    default_currency: kopek_core::Currency,
    /// The embedded store: one process, which does every role.
    embedded: bool,
    broker: Option<kopek_outbox::broker::Broker>,
    /// Whether this process applies transfer commands from the broker.
    ingests: bool,
}

impl Plan {
    fn of(args: &ServeArgs) -> anyhow::Result<Plan> {
        let default_currency = kopek_core::Currency::parse(&args.default_currency)
            .map_err(|rejection| anyhow::anyhow!("--default-currency: {}", rejection.message))?;
        if args.grpc_message_bytes_max > kopek_api_grpc::MESSAGE_BYTES_MAX {
            bail!("--grpc-message-bytes-max must be at most {}", kopek_api_grpc::MESSAGE_BYTES_MAX);
        }
        let embedded = matches!(backend(&args.store)?, Backend::Embedded(_));
        if args.role != Role::All && embedded {
            bail!(
                "--role api, worker, relay or ingest needs --database postgres://...: the embedded store is one process"
            );
        }
        let broker = args
            .broker
            .as_deref()
            .map(kopek_outbox::broker::Broker::parse)
            .transpose()
            .map_err(|message| anyhow::anyhow!("--broker: {message}"))?;
        let ingests = args.role == Role::Ingest || (args.role == Role::All && args.ingest);
        if args.role == Role::Relay && broker.is_none() {
            bail!(
                "--role relay publishes events to a broker: give --broker nats://, amqp:// or kafka://"
            );
        }
        if ingests && broker.is_none() {
            bail!(
                "ingestion reads commands from a broker: give --broker nats://, amqp:// or kafka://"
            );
        }
        Ok(Plan { default_currency, embedded, broker, ingests })
    }
}

/// Every listener, bound before any is announced, so a taken port fails the start.
struct Listeners {
    grpc: Option<TcpListener>,
    metrics: Option<TcpListener>,
    http: Vec<TcpListener>,
}

impl Listeners {
    async fn bind(args: &ServeArgs) -> anyhow::Result<Listeners> {
        let grpc = if args.role.serves_api() {
            let listener = TcpListener::bind(args.grpc_listen)
                .await
                .with_context(|| format!("listen for gRPC on {}", args.grpc_listen))?;
            Some(listener)
        } else {
            None
        };
        let metrics = match args.metrics_listen {
            Some(address) => Some(
                TcpListener::bind(address)
                    .await
                    .with_context(|| format!("listen for metrics on {address}"))?,
            ),
            None => None,
        };
        let mut http = Vec::new();
        for address in &args.http_listen {
            http.push(
                TcpListener::bind(address)
                    .await
                    .with_context(|| format!("listen for HTTP on {address}"))?,
            );
        }
        Ok(Listeners { grpc, metrics, http })
    }
}

/// What the background work is started with.
struct Parts {
    store: Arc<dyn Store>,
    intake: kopek_intake::Intake,
    feed: kopek_events::Feed,
    fx: kopek_fx::Fx,
    limiter: RateLimiter,
    shutdown: CancellationToken,
}

/// The background work started: its tasks, the relay's task, and what the relay reports.
struct Background {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    relay: Option<tokio::task::JoinHandle<()>>,
    relays: Vec<kopek_events::relay_status::RelayMonitor>,
}

/// Starts what the role does besides serving: webhook deliveries, the order saga and sweep,
/// the consumers and the book check (workers), the rate cache's watch, the rate-limit sweep,
/// broker ingestion, and the relay.
fn start_background(
    args: &ServeArgs,
    plan: &Plan,
    parts: &Parts,
    notifier: &kopek_outbox::webhooks::NotifierConfig,
) -> Background {
    let Parts { store, intake, feed, fx, limiter, shutdown } = parts;
    // The embedded store has one process at a time: its relay and consumers take their lease
    // back at once after a crash. Processes sharing PostgreSQL each get their own name.
    let holder = if plan.embedded {
        "embedded".to_owned()
    } else {
        format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple())
    };
    let mut tasks = Vec::new();
    if args.role.does_background_work() {
        tasks.push(kopek_outbox::webhooks::start(
            store.clone(),
            notifier.clone(),
            shutdown.clone(),
        ));
        // Several workers may pay orders side by side: a payment is keyed by its order.
        tasks.push(kopek_outbox::orders::start(intake.clone(), shutdown.clone()));
        let handlers: [Arc<dyn kopek_outbox::consumer::Handler>; 3] = [
            Arc::new(kopek_outbox::consumer::payments::Payments::new(intake.clone())),
            Arc::new(kopek_outbox::consumer::analytics::Analytics::new(store.clone())),
            Arc::new(kopek_outbox::consumer::notifier::Notifier::new(
                store.clone(),
                notifier.max_attempts,
            )),
        ];
        for handler in handlers {
            let types: Vec<&str> = handler.wants().iter().map(|kind| kind.as_str()).collect();
            // From the broker when there is one, so consumers run wherever workers run;
            // otherwise from this process's feed.
            let source: Box<dyn kopek_outbox::consumer::Source> = match &plan.broker {
                Some(broker) => broker.source(handler.name(), &types, &holder),
                None => Box::new(kopek_outbox::consumer::feed_source::FeedSource::new(
                    store.clone(),
                    feed.clone(),
                    handler.name(),
                    holder.clone(),
                )),
            };
            tasks.push(kopek_outbox::consumer::run(handler, source, shutdown.clone()));
        }
        if args.verify_every_seconds > 0 {
            let every = Duration::from_secs(args.verify_every_seconds);
            tasks.push(check_books(store.clone(), every, shutdown.clone()));
        }
    }
    tasks.push(tokio::spawn(fx.clone().watch(feed.subscribe_live())));
    if !limiter.is_unlimited() {
        tasks.push(sweep_buckets(limiter.clone(), shutdown.clone()));
    }
    if let Some(broker) = plan.broker.as_ref().filter(|_| plan.ingests) {
        let source = kopek_ingest::source(broker, &holder);
        tasks.push(kopek_ingest::start(intake.clone(), source, shutdown.clone()));
        tracing::info!(broker = %broker.describe(), "applying transfer commands from the broker");
    }
    let mut relay = None;
    let mut relays = Vec::new();
    if let Some(broker) = plan.broker.as_ref().filter(|_| args.role.relays()) {
        let (monitor, task) = kopek_outbox::relay::start(
            store.clone(),
            feed.clone(),
            broker,
            holder.clone(),
            shutdown.clone(),
        );
        tracing::info!(broker = %broker.describe(), sink = %broker.sink_name(), "relaying events");
        relays.push(monitor);
        relay = Some(task);
    }
    Background { tasks, relay, relays }
}

impl App {
    /// Prints the start-up lines, the contract scripts and tests read the bound addresses
    /// from.
    pub fn announce(&self) {
        if let Some(grpc_address) = self.grpc_address {
            println!("{}", startup::line(Listener::Grpc, grpc_address));
        }
        for address in &self.http_addresses {
            println!("{}", startup::line(Listener::Http, address));
        }
        if let Some(address) = self.metrics_address {
            println!("{}", startup::line(Listener::Metrics, address));
        }
        tracing::info!(grpc = ?self.grpc_address, http = ?self.http_addresses, role = ?self.role, store = %self.store, auth = ?self.auth, "kopek serving");
    }

    /// Serves until `stop` completes (or a listener fails), then drains: NOT_SERVING for the
    /// grace period, the listeners finish what is in flight, background work and the relay
    /// stop, and the writer answers every queued command before it stops.
    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let App {
            mut servers,
            background,
            relay,
            engine,
            writer,
            http_state,
            reporter,
            draining,
            shutdown,
            grace,
            timeout,
            ..
        } = self;
        tokio::select! {
            () = stop => tracing::info!("shutdown requested; draining"),
            Some(result) = servers.join_next() => {
                // A listener stopped on its own: that is fatal for the process.
                shutdown.cancel();
                flatten(result)?;
                bail!("a listener stopped unexpectedly");
            }
        }
        // Drain: say NOT_SERVING (gRPC health, /readyz) while still serving for the grace period,
        // then end health watches and stop the listeners, which finish what is in flight.
        draining.cancel();
        kopek_api_grpc::set_health(&reporter, ServingStatus::NotServing).await;
        tokio::time::sleep(grace).await;
        kopek_api_grpc::close_health(&reporter).await;
        shutdown.cancel();
        let drain = async {
            while let Some(result) = servers.join_next().await {
                flatten(result)?;
            }
            anyhow::Ok(())
        };
        match tokio::time::timeout(timeout, drain).await {
            Ok(result) => result?,
            Err(_) => {
                tracing::warn!(
                    seconds = timeout.as_secs(),
                    "listeners did not drain in time; closing them"
                );
                servers.abort_all();
            }
        }
        // Consumers, the sweep and ingestion end on the shutdown signal (a consumer releases its
        // lease); whatever is still running after a moment is stopped.
        for task in background {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), task).await.is_err() {
                abort.abort();
            }
        }
        // The relay stops after its current batch and hands its lease over. The writer answers
        // every queued command, then stops.
        if let Some(relay) = relay
            && tokio::time::timeout(timeout, relay).await.is_err()
        {
            tracing::warn!("the relay did not stop in time");
        }
        engine.close();
        drop(engine);
        drop(http_state);
        if tokio::time::timeout(timeout, writer).await.is_err() {
            tracing::warn!("the write path did not stop in time");
        }
        tracing::info!("kopek stopped");
        Ok(())
    }
}

/// The TLS configurations of the gRPC and HTTP listeners, from `--tls-cert` and `--tls-key`
/// (and `--tls-client-ca` for gRPC); none without them. Bad files fail the start.
type TlsConfigs = (Option<tonic::transport::ServerTlsConfig>, Option<Arc<rustls::ServerConfig>>);

fn tls(args: &ServeArgs) -> anyhow::Result<TlsConfigs> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok((None, None));
    };
    let http = kopek_api_http::serve::tls_config(cert, key)
        .map_err(|message| anyhow::anyhow!("--tls-cert/--tls-key: {message}"))?;
    let grpc = kopek_api_grpc::tls_config(cert, key, args.tls_client_ca.as_deref())
        .map_err(|message| anyhow::anyhow!("--tls-cert/--tls-key/--tls-client-ca: {message}"))?;
    Ok((Some(grpc), Some(Arc::new(http))))
}

/// `--auth`, or its default: off when every API listener is on loopback, required otherwise.
/// Off on a listener others can reach is refused.
fn auth_mode(args: &ServeArgs) -> anyhow::Result<AuthMode> {
    let mut listeners = args.http_listen.clone();
    if args.role.serves_api() {
        listeners.push(args.grpc_listen);
    } else {
        // Without the API a process serves only probes and metrics.
        listeners.clear();
    }
    let exposed: Vec<String> = listeners
        .iter()
        .filter(|address| !address.ip().is_loopback())
        .map(ToString::to_string)
        .collect();
    match (args.auth, exposed.is_empty()) {
        (Some(AuthFlag::Required), _) | (None, false) => Ok(AuthMode::Required),
        (Some(AuthFlag::Off), true) | (None, true) => Ok(AuthMode::Off),
        (Some(AuthFlag::Off), false) => bail!(
            "--auth off would let anyone who reaches {} move money: listen on loopback only, or use --auth required",
            exposed.join(", ")
        ),
    }
}

/// With auth required, the API needs an admin key to be useful: `--admin-key` is stored if it
/// is not yet; with no active admin key at all, one is made and printed once.
async fn first_admin_key(store: &dyn Store, given: Option<&str>) -> anyhow::Result<()> {
    let now = kopek_clock::now();
    let tenant = kopek_core::Tenant::DEFAULT_NAME;
    if let Some(token) = given {
        let minted = kopek_auth::adopt(token, tenant, Scope::Admin, "--admin-key", now)?.context(
            "--admin-key must look like kopek_<16 hex>_<64 hex> (kopek keys create makes one)",
        )?;
        if store.api_key(&minted.key.id).await?.is_none() {
            store.create_api_key(&minted.key).await.context("store --admin-key")?;
            tracing::info!(key = %minted.key.id, "stored the admin key from --admin-key");
        }
        return Ok(());
    }
    let keys = store.api_keys(None).await?;
    let admins = keys.iter().filter(|key| key.scope == "admin" && key.revoked_at.is_none());
    if admins.count() > 0 {
        return Ok(());
    }
    let minted = kopek_auth::mint(tenant, Scope::Admin, None, "first start", now)?;
    store.create_api_key(&minted.key).await.context("store the first admin key")?;
    println!("kopek: admin key (shown once; keep it, only its hash is stored): {}", minted.token);
    Ok(())
}

/// Rates in force and prices: cached in Redis when `--redis` is given, in process otherwise.
async fn exchange_rates(
    args: &ServeArgs,
    store: Arc<dyn kopek_store::Store>,
) -> anyhow::Result<kopek_fx::Fx> {
    let base = kopek_core::Currency::parse(&args.fx_base)
        .map_err(|rejection| anyhow::anyhow!("--fx-base: {}", rejection.message))?;
    if args.fx_spread_bp > kopek_core::fx::SPREAD_BASIS_POINTS_MAX {
        anyhow::bail!("--fx-spread-bp must be at most {}", kopek_core::fx::SPREAD_BASIS_POINTS_MAX);
    }
    if args.fx_quote_ttl_seconds == 0
        || args.fx_quote_ttl_seconds > kopek_core::fx::QUOTE_TTL_SECONDS_MAX
    {
        anyhow::bail!(
            "--fx-quote-ttl-seconds must be 1 to {}",
            kopek_core::fx::QUOTE_TTL_SECONDS_MAX
        );
    }
    let config = kopek_fx::FxConfig {
        base,
        spread_bp: args.fx_spread_bp,
        quote_ttl_seconds: args.fx_quote_ttl_seconds,
        implicit_quotes: args.fx_implicit_quotes,
    };
    match &args.redis {
        None => Ok(kopek_fx::Fx::local(store, config)),
        Some(url) => kopek_fx::Fx::redis(store, config, url)
            .await
            .map_err(|message| anyhow::anyhow!("--redis: {message}")),
    }
}

/// `--rate-limit` per key, through Redis when `--redis` is given.
async fn rate_limiter(args: &ServeArgs) -> anyhow::Result<RateLimiter> {
    if !(args.rate_limit.is_finite() && args.rate_limit >= 0.0) {
        bail!("--rate-limit must be a number of requests per second, 0 for no limit");
    }
    if args.rate_limit == 0.0 {
        if args.redis.is_some() {
            tracing::warn!("--redis is set but --rate-limit is 0: nothing is limited");
        }
        return Ok(RateLimiter::unlimited());
    }
    let burst = args.rate_limit_burst.unwrap_or(args.rate_limit).max(1.0);
    let limit = RateLimit { rate: args.rate_limit, burst };
    match &args.redis {
        None => Ok(RateLimiter::local(limit)),
        Some(url) => RateLimiter::redis(limit, url)
            .await
            .map_err(|message| anyhow::anyhow!("--redis: {message}")),
    }
}

/// Forgets idle in-process buckets once a minute.
fn sweep_buckets(limiter: RateLimiter, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(60)) => limiter.sweep(),
            }
        }
    })
}

fn flatten(result: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    result.context("listener task failed")?
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

fn webhook_targets(args: &ServeArgs) -> kopek_events::targets::Targets {
    if args.webhooks_allow_private_targets {
        kopek_events::targets::Targets::Any
    } else {
        kopek_events::targets::Targets::PublicOnly
    }
}

/// The deadlines of both listeners' connections.
fn connection_limits(args: &ServeArgs) -> kopek_net::ConnectionLimits {
    kopek_net::ConnectionLimits {
        first_request: Duration::from_secs(args.client_timeout_seconds.max(1)),
        idle: Duration::from_secs(args.idle_timeout_seconds.max(1)),
    }
}

/// The writer a process of `role` runs: only the roles that do background work expire holds
/// (a `--role api` process leaves them to a worker), and a worker, which learns of holds only
/// from the store, looks for due ones every second.
fn engine_config(role: Role, clock: Arc<dyn kopek_clock::Clock>) -> EngineConfig {
    EngineConfig {
        expire_holds: role.does_background_work(),
        expiry_recheck: if role == Role::Worker {
            Duration::from_secs(1)
        } else {
            EngineConfig::default().expiry_recheck
        },
        clock,
        ..EngineConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `tests/it/bank.rs` no longer waits a hold's second to see: an api process's writer
    /// leaves holds alone (kopek-engine's `an_api_writer_leaves_expired_holds_to_a_worker` shows
    /// such a writer does), and the processes that do background work expire them.
    #[test]
    fn only_the_roles_that_do_background_work_expire_holds() {
        let expires = |role| engine_config(role, kopek_clock::system()).expire_holds;
        assert!(!expires(Role::Api), "an api process leaves holds to a worker");
        assert!(!expires(Role::Relay) && !expires(Role::Ingest));
        assert!(expires(Role::Worker) && expires(Role::All));
        let worker = engine_config(Role::Worker, kopek_clock::system());
        assert_eq!(worker.expiry_recheck, Duration::from_secs(1), "a worker looks every second");
    }
}
