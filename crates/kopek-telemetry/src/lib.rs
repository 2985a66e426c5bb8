//! kopek-telemetry: the process's Prometheus metrics. Every crate records into [`metrics()`];
//! `/metrics` renders them with [`render`], after the families only the serving crate knows
//! (relays, queue depth).

pub mod trace;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};
use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};

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
    /// Checks of the books (every balance against its entries, every transfer balanced, the
    /// outbox without gaps), by result: `ok`, `failed` (problems found), `error` (could not
    /// run).
    pub verify_runs: IntCounterVec,
    /// Problems and accounts of the last check that ran.
    pub verify_problems: IntGauge,
    pub verify_accounts: IntGauge,
    /// Unix time of the last check that found the books in order.
    pub verify_last_ok: Gauge,
    /// How far behind each consumer of this process is.
    consumers: Mutex<BTreeMap<String, ConsumerProgress>>,
}

/// What one consumer is doing, for its lag.
#[derive(Clone, Copy, Debug, Default)]
struct ConsumerProgress {
    /// The outbox sequence of the newest event it handled.
    sequence: u64,
    /// While it handles a batch: when the batch's oldest event was committed (Unix seconds).
    handling_since: Option<f64>,
}

/// Seconds since the Unix epoch, now: the unit of Prometheus timestamps.
pub fn unix_now() -> f64 {
    kopek_clock::unix_seconds()
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
        let verify_runs = counter(
            &registry,
            "kopek_verify_runs_total",
            "Checks of the books, by result (ok, failed, error).",
            &["result"],
        );
        // Every result is a series from the start, so alerts on `failed` see a zero first.
        for result in ["ok", "failed", "error"] {
            verify_runs.with_label_values(&[result]);
        }
        let gauge = |name: &str, help: &str| {
            let gauge = IntGauge::new(name, help).expect("a valid metric");
            registry.register(Box::new(gauge.clone())).expect("registered once");
            gauge
        };
        let refusals = counter(
            &registry,
            "kopek_refusals_total",
            "Requests refused before any work, by reason.",
            &["surface", "reason"],
        );
        for surface in ["http", "grpc"] {
            for reason in ["missing_key", "invalid_key", "forbidden", "rate_limited"] {
                refusals.with_label_values(&[surface, reason]);
            }
        }
        let webhook_attempts = counter(
            &registry,
            "kopek_webhook_attempts_total",
            "Webhook delivery attempts, by outcome.",
            &["outcome"],
        );
        for outcome in ["delivered", "failed", "dead"] {
            webhook_attempts.with_label_values(&[outcome]);
        }
        let verify_problems =
            gauge("kopek_verify_problems", "Problems the last check of the books found.");
        let verify_accounts =
            gauge("kopek_verify_accounts_checked", "Accounts the last check of the books checked.");
        let verify_last_ok = Gauge::new(
            "kopek_verify_last_ok_timestamp_seconds",
            "Unix time of the last check that found the books in order (0: none yet).",
        )
        .expect("a valid metric");
        registry.register(Box::new(verify_last_ok.clone())).expect("registered once");
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
            refusals,
            webhook_attempts,
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
            verify_runs,
            verify_problems,
            verify_accounts,
            verify_last_ok,
            consumers: Mutex::new(BTreeMap::new()),
            registry,
        }
    }

    /// Notes that `consumer` took a batch whose oldest event was committed at `oldest`
    /// (Unix seconds): until the batch is done, its lag grows from there.
    pub fn consumer_took(&self, consumer: &str, oldest: f64) {
        if let Ok(mut consumers) = self.consumers.lock() {
            consumers.entry(consumer.to_owned()).or_default().handling_since = Some(oldest);
        }
    }

    /// Notes that `consumer` is done with a batch whose newest event is outbox `sequence`.
    pub fn consumer_done(&self, consumer: &str, sequence: u64) {
        if let Ok(mut consumers) = self.consumers.lock() {
            let progress = consumers.entry(consumer.to_owned()).or_default();
            progress.sequence = progress.sequence.max(sequence);
            progress.handling_since = None;
        }
    }

    /// Each consumer of this process: the sequence it has handled up to, and its lag in
    /// seconds: how long the oldest event of the batch it works on has waited since its
    /// commit; 0 while it waits for events (its source has none for it).
    pub fn consumer_lags(&self) -> Vec<(String, u64, f64)> {
        let now = unix_now();
        self.consumers
            .lock()
            .map(|consumers| {
                consumers
                    .iter()
                    .map(|(name, progress)| {
                        let lag =
                            progress.handling_since.map_or(0.0, |since| (now - since).max(0.0));
                        (name.clone(), progress.sequence, lag)
                    })
                    .collect()
            })
            .unwrap_or_default()
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
