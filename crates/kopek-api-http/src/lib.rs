//! kopek-api-http: the HTTP surface over the engine. The canonical REST API under `/v1`
//! (its OpenAPI 3.1 document at `/openapi.json`, browsable at `/docs`), the HTTP contracts of
//! `shared/spec/http-compat.md`, WebSocket feeds, the embedded web UI at `/`, and the probes
//! `/healthz` and `/readyz`.

mod archive;
pub mod auth;
pub mod compat;
pub mod dto;
pub mod error;
pub mod fx;
pub mod observe;
pub mod rest;
pub mod serve;
pub mod ui;
pub mod webhooks;
pub mod ws;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use error::{ApiError, ErrorBody};
use kopek_core::{Currency, ErrorCode};
use kopek_engine::Engine;
use kopek_events::Feed;
use kopek_events::relay_status::{RelayMonitor, RelayState};
use kopek_intake::Intake;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

/// What every handler needs.
#[derive(Clone)]
pub struct AppState {
    /// The front door to the write path: every transfer is read and submitted through it.
    pub intake: Intake,
    /// The intake's engine, for reads and the commands not yet behind the intake.
    pub engine: Engine,
    pub feed: Feed,
    /// The currency of contract amounts that carry none.
    pub default_currency: Currency,
    /// Cancelled when the server starts draining: `/readyz` answers 503, feeds close.
    pub draining: CancellationToken,
    /// One permit per open WebSocket; past `WEBSOCKETS_MAX` a new one is refused with 503.
    pub sockets: std::sync::Arc<tokio::sync::Semaphore>,
    /// The broker relays this process runs, for `/readyz` and `/metrics`.
    pub relays: Vec<RelayMonitor>,
    /// The attempts a manual redelivery gives a webhook delivery.
    pub webhook_max_attempts: u32,
    /// Which addresses webhook URLs may reach.
    pub webhook_targets: kopek_events::targets::Targets,
    /// Turns a request's key into its principal (or everyone into the anonymous admin when
    /// auth is off).
    pub auth: kopek_auth::Authenticator,
    /// Per-key request budget.
    pub limiter: kopek_auth::RateLimiter,
}

/// Open WebSockets per process, all routes together.
pub const WEBSOCKETS_MAX: usize = 1_024;
/// Largest request body (a batch of `TRANSFERS_PER_REQUEST_MAX` transfers with full metadata
/// fits); past it, 413.
pub const BODY_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Largest message a WebSocket client may send (the feeds only push; clients need not talk).
pub const WEBSOCKET_MESSAGE_BYTES_MAX: usize = 64 * 1024;

/// The permits of `WEBSOCKETS_MAX` open WebSockets, for `AppState::sockets`.
pub fn websocket_permits() -> std::sync::Arc<tokio::sync::Semaphore> {
    std::sync::Arc::new(tokio::sync::Semaphore::new(WEBSOCKETS_MAX))
}

#[derive(Clone, Debug, Default)]
pub struct HttpConfig {
    /// Origins allowed to call from a browser, besides loopback ones (always allowed).
    pub cors_origins: Vec<String>,
}

/// Every route but the probes takes `Authorization: Bearer kopek_...` when auth is on.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("kopek_<id>_<secret>")
                    .build(),
            ),
        );
        openapi.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
    }
}

#[derive(OpenApi)]
#[openapi(
    modifiers(&BearerAuth),
    info(
        title = "kopek",
        description = "A double-entry payment ledger. Amounts are decimal strings in major units with \
                       integer minor units beside them; every write takes an Idempotency-Key header.",
    ),
    tags(
        (name = "accounts", description = "Accounts, balances and statements"),
        (name = "transfers", description = "Transfers, deposits, withdrawals and holds"),
        (name = "users", description = "Users and their accounts"),
        (name = "events", description = "The outbox event log"),
        (name = "fx", description = "Exchange rates, quotes, price checks, liquidity positions and spread"),
        (name = "health", description = "Liveness and readiness"),
        (name = "operations", description = "Backups of the embedded store"),
    )
)]
struct ApiDoc;

/// The whole HTTP surface.
pub fn router(state: AppState, config: &HttpConfig) -> Router {
    let default_currency = state.default_currency;
    let (rest, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(rest::create_account, rest::list_accounts))
        .routes(routes!(rest::get_account, rest::update_account))
        .routes(routes!(rest::get_balance))
        .routes(routes!(rest::list_entries))
        .routes(routes!(rest::create_transfer, rest::search_transfers))
        .routes(routes!(rest::create_batch))
        .routes(routes!(rest::capture))
        .routes(routes!(rest::void))
        .routes(routes!(rest::get_transfer))
        .routes(routes!(rest::create_user))
        .routes(routes!(rest::get_user))
        .routes(routes!(rest::get_spending))
        .routes(routes!(webhooks::create_webhook, webhooks::list_webhooks))
        .routes(routes!(webhooks::get_webhook, webhooks::delete_webhook))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(webhooks::get_delivery))
        .routes(routes!(webhooks::redeliver))
        .routes(routes!(rest::list_events))
        .routes(routes!(fx::list_rates, fx::import_rates))
        .routes(routes!(fx::put_rate))
        .routes(routes!(fx::create_quote))
        .routes(routes!(fx::get_quote))
        .routes(routes!(fx::convert))
        .routes(routes!(fx::positions))
        .routes(routes!(fx::spread))
        .routes(routes!(rest::get_order))
        .routes(routes!(rest::backup))
        .routes(routes!(rest::import))
        .routes(routes!(rest::transfer_events))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .with_state(state.clone())
        .split_for_parts();
    let guard = axum::middleware::from_fn_with_state(state.clone(), auth::guard);
    let rest = rest.route_layer(guard.clone());
    let compat = Router::new()
        .route("/v1/user", post(compat::create_user_a))
        .route("/v1/user/{id}", get(compat::get_user_a))
        .route("/v1/transaction", post(compat::create_transaction_a))
        .route("/v1/transaction/{uid}", get(compat::get_transaction_a))
        .route("/payments/account", post(compat::open_account_b))
        .route("/payments/account/topup", post(compat::top_up_b))
        .route("/payments/account/balance", get(compat::balance_b))
        .route("/orders/orders", post(compat::create_order_b).get(compat::list_orders_b))
        .route("/orders/orders/{id}", get(compat::get_order_b))
        .route("/ws/orders/{id}", get(compat::order_status_ws))
        .route("/orders/ws/orders/{id}", get(compat::order_status_ws))
        .route("/v1/ws", get(ws::events_ws))
        .route("/metrics", get(metrics))
        .route_layer(guard)
        .with_state(state);
    Router::new()
        .merge(rest)
        .merge(compat)
        .merge(ui::router_for(default_currency))
        .merge(SwaggerUi::new("/docs").url("/openapi.json", api))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(cors(config))
        .layer(axum::middleware::from_fn(observe::observe))
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// Browsers may call from the configured origins and from any loopback origin.
fn cors(config: &HttpConfig) -> CorsLayer {
    let configured: Vec<String> =
        config.cors_origins.iter().map(|origin| origin.trim_end_matches('/').to_owned()).collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            let Ok(origin) = origin.to_str() else { return false };
            configured.iter().any(|allowed| allowed == origin || allowed == "*")
                || is_loopback_origin(origin)
        }))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("x-user-id"),
            HeaderName::from_static(rest::IDEMPOTENCY_KEY),
        ])
        .expose_headers([HeaderName::from_static(rest::REPLAYED)])
        .max_age(Duration::from_secs(600))
}

fn is_loopback_origin(origin: &str) -> bool {
    let Some(rest) = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = match rest.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => rest.split(':').next().unwrap_or_default(),
    };
    matches!(host, "localhost" | "127.0.0.1" | "::1")
}

/// Only `/healthz` and `/readyz`: what a process that serves no API (`--role worker`) answers.
pub fn probes_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

/// Only `/metrics`: the `--metrics-listen` listener, which Prometheus may reach when the API
/// listeners are private (or the other way round).
pub fn metrics_router(state: AppState) -> Router {
    Router::new().route("/metrics", get(metrics)).fallback(not_found).with_state(state)
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "Alive", body = String)))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: not draining, and the database answers a read.
#[utoipa::path(
    get, path = "/readyz", tag = "health",
    responses((status = 200, description = "Ready", body = String), (status = 503, description = "Draining or database unavailable", body = ErrorBody))
)]
pub async fn readyz(State(state): State<AppState>) -> axum::response::Response {
    if state.draining.is_cancelled() {
        return ApiError::new(ErrorCode::Unavailable, "draining").into_response();
    }
    match tokio::time::timeout(Duration::from_secs(2), state.engine.store().next_hold_expiry())
        .await
    {
        Ok(Ok(_)) => {
            (StatusCode::OK, format!("ready\n{}", relay_lines(&state.relays))).into_response()
        }
        _ => ApiError::new(ErrorCode::Unavailable, "the database does not answer").into_response(),
    }
}

/// One line per relay after "ready": a broker outage does not make the process unready (the
/// API keeps committing and the outbox keeps the events), but it shows here and in
/// `/metrics`.
fn relay_lines(relays: &[RelayMonitor]) -> String {
    let mut lines = String::new();
    for relay in relays {
        let status = relay.status();
        lines.push_str(&format!(
            "relay {} {}: lag {} events, {:.1} s",
            status.sink,
            status.state.as_str(),
            relay.lag_events(),
            relay.lag_seconds()
        ));
        if let RelayState::Down(reason) = &status.state {
            lines.push_str(&format!(" ({reason})"));
        }
        lines.push('\n');
    }
    lines
}

/// A relay metric: name, type, help, and its value for one relay.
type MetricFamily = (&'static str, &'static str, &'static str, fn(&RelayMonitor) -> String);

/// Prometheus text exposition: the process registry (requests, write path, rejections,
/// refusals, webhooks, consumers, process), then what only this state knows: the write
/// queue, open WebSockets, the store pool and the outbox relays.
pub async fn metrics(State(state): State<AppState>) -> axum::response::Response {
    let mut text = kopek_telemetry::render();
    let stats = state.engine.stats();
    let load =
        |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    let open_sockets = WEBSOCKETS_MAX - state.sockets.available_permits();
    let (reads_busy, reads_max) = state.engine.store().pool_usage();
    for (name, kind, help, value) in [
        (
            "kopek_queue_depth",
            "gauge",
            "Commands waiting for the writer.",
            state.engine.queue_depth() as u64,
        ),
        (
            "kopek_queue_capacity",
            "gauge",
            "Commands the write queue holds before OVERLOADED.",
            state.engine.queue_capacity() as u64,
        ),
        ("kopek_batches_total", "counter", "Batches committed.", load(&stats.batches)),
        ("kopek_commands_total", "counter", "Commands committed.", load(&stats.commands)),
        (
            "kopek_transfers_total",
            "counter",
            "Transfers (and other items) committed.",
            load(&stats.transfers),
        ),
        ("kopek_websockets_open", "gauge", "Open WebSockets.", open_sockets as u64),
        ("kopek_store_connections_busy", "gauge", "Store connections in use.", reads_busy as u64),
        ("kopek_store_connections_max", "gauge", "Store connections at most.", reads_max as u64),
    ] {
        text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
    }
    let families: [MetricFamily; 5] = [
        (
            "kopek_outbox_lag_events",
            "gauge",
            "Committed outbox events the sink has not confirmed yet.",
            |relay| relay.lag_events().to_string(),
        ),
        (
            "kopek_outbox_lag_seconds",
            "gauge",
            "Age of the oldest event waiting for the sink's confirmation.",
            |relay| format!("{:.3}", relay.lag_seconds()),
        ),
        (
            "kopek_relay_published_events_total",
            "counter",
            "Events this process published and the sink confirmed.",
            |relay| relay.status().published.to_string(),
        ),
        (
            "kopek_relay_publish_failures_total",
            "counter",
            "Publish attempts that failed (the relay retries them).",
            |relay| relay.status().failures.to_string(),
        ),
        (
            "kopek_relay_up",
            "gauge",
            "1 while this process holds the sink's lease and the broker confirms.",
            |relay| u8::from(relay.status().state == RelayState::Publishing).to_string(),
        ),
    ];
    for (name, kind, help, value) in families {
        text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for relay in &state.relays {
            text.push_str(&format!(
                "{name}{{sink=\"{}\"}} {}\n",
                relay.status().sink,
                value(relay)
            ));
        }
    }
    if let Some(journal) = state.engine.store().journal_progress() {
        let lag = journal.committed.saturating_sub(journal.projected);
        text.push_str(&format!(
            "# HELP kopek_journal_frames_total Journal frames made durable (one per batch).\n\
             # TYPE kopek_journal_frames_total counter\nkopek_journal_frames_total {}\n\
             # HELP kopek_projection_frame The last journal frame the query projection holds.\n\
             # TYPE kopek_projection_frame gauge\nkopek_projection_frame {}\n\
             # HELP kopek_projection_lag_frames Committed frames the query projection does not hold yet.\n\
             # TYPE kopek_projection_lag_frames gauge\nkopek_projection_lag_frames {lag}\n\
             # HELP kopek_projection_lag_seconds Age of the oldest committed frame the projection does not hold.\n\
             # TYPE kopek_projection_lag_seconds gauge\nkopek_projection_lag_seconds {:.6}\n\
             # HELP kopek_projection_lag_seconds_max The largest projection lag since start.\n\
             # TYPE kopek_projection_lag_seconds_max gauge\nkopek_projection_lag_seconds_max {:.6}\n",
            journal.committed, journal.projected, journal.lag_seconds, journal.lag_seconds_max
        ));
    }
    let newest = state.feed.published();
    text.push_str(&format!(
        "# HELP kopek_outbox_sequence The newest outbox sequence this process has seen.\n\
         # TYPE kopek_outbox_sequence gauge\nkopek_outbox_sequence {newest}\n"
    ));
    let consumers = kopek_telemetry::metrics().consumer_lags();
    text.push_str(
        "# HELP kopek_consumer_lag_seconds How long the event a consumer works on has waited \
         since its commit (while idle: how old its last event was when handled).\n\
         # TYPE kopek_consumer_lag_seconds gauge\n",
    );
    for (consumer, _, lag) in &consumers {
        text.push_str(&format!("kopek_consumer_lag_seconds{{consumer=\"{consumer}\"}} {lag:.3}\n"));
    }
    text.push_str(
        "# HELP kopek_consumer_sequence The outbox sequence of the newest event the consumer \
         handled.\n# TYPE kopek_consumer_sequence gauge\n",
    );
    for (consumer, sequence, _) in &consumers {
        text.push_str(&format!("kopek_consumer_sequence{{consumer=\"{consumer}\"}} {sequence}\n"));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_origins_are_recognised() {
        for origin in
            ["http://localhost:5173", "http://127.0.0.1", "https://[::1]:8443", "http://localhost"]
        {
            assert!(is_loopback_origin(origin), "{origin}");
        }
        for origin in
            ["http://localhost.evil.com", "http://10.0.0.1:80", "file://", "http://127.0.0.2"]
        {
            assert!(!is_loopback_origin(origin), "{origin}");
        }
    }
}
