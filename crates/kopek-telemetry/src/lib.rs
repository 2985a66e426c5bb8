//! kopek-telemetry: the process's Prometheus metrics. Every crate records into [`metrics()`];
//! `/metrics` renders them with [`render`], after the families only the serving crate knows
//! (relays, queue depth).

pub mod trace;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
    TextEncoder,
};
use std::sync::LazyLock;

/// Request and commit latencies, in seconds: 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Items per committed batch.
const BATCH_BUCKETS: &[f64] =
    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0];

pub struct Metrics {
    registry: Registry,
    /// Requests answered, by surface (`http`, `grpc`), method (route or RPC) and status.
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    /// Transfers (and other items) per committed batch.
    pub batch_items: Histogram,
    pub commit_seconds: Histogram,
    pub batches_failed: IntCounter,
    /// Commands the ledger refused or declined, by error code.
    pub rejections: IntCounterVec,
    /// Requests refused before any work: unauthenticated, forbidden, rate limited.
    pub refusals: IntCounterVec,
    /// Webhook delivery attempts, by outcome (`delivered`, `failed`, `dead`).
    pub webhook_attempts: IntCounterVec,
    /// Events each consumer handled, and batches it had to retry.
    pub consumed: IntCounterVec,
    pub consumer_retries: IntCounterVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let counter = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric");
    registry.register(Box::new(counter.clone())).expect("registered once");
    counter
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    let histogram = Histogram::with_opts(opts).expect("a valid metric");
    registry.register(Box::new(histogram.clone())).expect("registered once");
    histogram
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        {
            let process = prometheus::process_collector::ProcessCollector::for_self();
            let _ = registry.register(Box::new(process));
        }
        let request_seconds = HistogramVec::new(
            HistogramOpts::new("kopek_request_duration_seconds", "Time to answer a request.")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["surface", "method"],
        )
        .expect("a valid metric");
        registry.register(Box::new(request_seconds.clone())).expect("registered once");
        let batches_failed =
            IntCounter::new("kopek_batches_failed_total", "Batches the store did not commit.")
                .expect("a valid metric");
        registry.register(Box::new(batches_failed.clone())).expect("registered once");
        Metrics {
            requests: counter(
                &registry,
                "kopek_requests_total",
                "Requests answered, by surface, method and status.",
                &["surface", "method", "status"],
            ),
            request_seconds,
            batch_items: histogram(
                &registry,
                "kopek_batch_items",
                "Items (transfers, accounts, ...) per committed batch.",
                BATCH_BUCKETS,
            ),
            commit_seconds: histogram(
                &registry,
                "kopek_commit_duration_seconds",
                "Time to load, decide, write and commit one batch.",
                LATENCY_BUCKETS,
            ),
            batches_failed,
            rejections: counter(
                &registry,
                "kopek_rejections_total",
                "Commands refused or transfers declined, by error code.",
                &["code"],
            ),
            refusals: counter(
                &registry,
                "kopek_refusals_total",
                "Requests refused before any work, by reason.",
                &["surface", "reason"],
            ),
            webhook_attempts: counter(
                &registry,
                "kopek_webhook_attempts_total",
                "Webhook delivery attempts, by outcome.",
                &["outcome"],
            ),
            consumed: counter(
                &registry,
                "kopek_consumer_events_total",
                "Events a consumer handled (new or already in its inbox).",
                &["consumer"],
            ),
            consumer_retries: counter(
                &registry,
                "kopek_consumer_retries_total",
                "Batches a consumer failed to handle and will take again.",
                &["consumer"],
            ),
            registry,
        }
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// The registry in the Prometheus text format.
pub fn render() -> String {
    let mut buffer = Vec::new();
    let families = METRICS.registry.gather();
    if TextEncoder::new().encode(&families, &mut buffer).is_err() {
        return String::new();
    }
    String::from_utf8(buffer).unwrap_or_default()
}
