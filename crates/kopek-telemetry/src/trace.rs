//! Tracing: `tracing` spans with OpenTelemetry ids, W3C trace context in and out, logs on
//! stderr (text or JSON), and OTLP export when asked.
//!
//! Every span of a kopek crate gets a trace id and a span id, exported or not: the ids are
//! what carries a request's trace into the outbox (`outbox.traceparent`), onto broker
//! messages and webhooks (`traceparent` header), and to the consumers that act on the event.
//! Spans of other crates (hyper, sqlx, tonic) are not traced; their log lines still print.

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use std::time::Duration;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

/// The header (HTTP, broker messages, webhooks) and metadata key (gRPC) of W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// How often finished spans are sent to the OTLP collector.
const EXPORT_EVERY: Duration = Duration::from_secs(1);

/// Keeps the tracer alive; [`Tracing::shutdown`] sends the spans not yet exported.
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Flushes and stops the exporter. Call once, before the process exits.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("kopek: could not flush traces: {error}");
        }
    }
}

/// Installs the process's subscriber: log lines on stderr (JSON when `json`), filtered by
/// `RUST_LOG` (default `info`), and spans (at info, whatever `RUST_LOG` says) with trace context for kopek's own crates, sent to
/// `otlp_endpoint` (an OTLP/gRPC collector, `http://host:4317`) when given. Must run inside
/// the tokio runtime when exporting.
pub fn init(json: bool, otlp_endpoint: Option<&str>) -> Result<Tracing, String> {
    let mut builder = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name("kopek").build());
    if let Some(endpoint) = otlp_endpoint {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|error| format!("--otlp-endpoint {endpoint}: {error}"))?;
        let batches = BatchConfigBuilder::default().with_scheduled_delay(EXPORT_EVERY).build();
        builder = builder.with_span_processor(
            BatchSpanProcessor::builder(exporter).with_batch_config(batches).build(),
        );
    }
    let provider = builder.build();
    // Traced whatever RUST_LOG says: the ids must flow even when only warnings are logged.
    // Spans only (log lines go to stderr, not into spans), and a level hint, so nothing below
    // info is ever built for this layer.
    let ours = filter_fn(|metadata| {
        metadata.is_span()
            && metadata.target().starts_with("kopek")
            && *metadata.level() <= tracing::Level::INFO
    })
    .with_max_level_hint(LevelFilter::INFO);
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("kopek"))
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(ours);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = fmt::layer().with_writer(std::io::stderr);
    let logs = if json { logs.json().boxed() } else { logs.boxed() };
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(spans)
        .try_init()
        .map_err(|error| format!("install the log subscriber: {error}"))?;
    Ok(Tracing { provider })
}

/// The id a request goes by in log lines and spans: the caller's `x-request-id` when it is
/// 1 to 128 printable characters, else a fresh one.
pub fn request_id(given: Option<&str>) -> String {
    given
        .filter(|id| !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_owned)
}

/// Parses a W3C `traceparent` value (`00-<trace id>-<parent id>-<flags>`); `None` when it is
/// malformed or names no trace, which the spec says to treat as absent.
pub fn parse(traceparent: &str) -> Option<SpanContext> {
    let mut parts = traceparent.trim().split('-');
    let version = parts.next()?;
    let (trace_id, span_id, flags) = (parts.next()?, parts.next()?, parts.next()?);
    let hex = |text: &str, len: usize| {
        text.len() == len && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    // Version 00 has exactly four parts; a later version may append more, never fewer.
    if !hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if !hex(trace_id, 32) || !hex(span_id, 16) || !hex(flags, 2) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace_id).ok()?;
    let span_id = SpanId::from_hex(span_id).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let context = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

/// The W3C `traceparent` of `span`: its trace and its own id as the parent of whatever it
/// causes. `None` when spans are not traced (no subscriber installed, or a filtered span).
pub fn traceparent(span: &Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

/// The trace id of `span`, for log lines; empty when spans are not traced.
pub fn trace_id(span: &Span) -> String {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() { span_context.trace_id().to_string() } else { String::new() }
}

/// Makes `span`, just created, a child of the remote span `traceparent` names (a caller's
/// request, the command behind an event). A missing or malformed value leaves `span` the
/// root of a new trace.
pub fn continue_from(span: &Span, traceparent: Option<&str>) {
    if let Some(remote) = traceparent.and_then(parse) {
        let parent = opentelemetry::Context::new().with_remote_span_context(remote);
        // Fails only when spans are not traced or `span` was already started: then it keeps
        // its own trace, which is all that can be done.
        let _ = span.set_parent(parent);
    }
}

/// Links `span` to the remote span `traceparent` names: a batch span to the requests whose
/// commands it commits, a consumer's span to the requests behind its events.
pub fn link_to(span: &Span, traceparent: &str) {
    if let Some(remote) = parse(traceparent) {
        span.add_link(remote);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_w3c_examples_and_refuses_malformed_values() {
        let example = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = parse(example).expect("the spec's example parses");
        assert_eq!(context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.span_id().to_string(), "00f067aa0ba902b7");
        assert!(context.is_sampled());
        assert!(context.is_remote());
        let unsampled = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert!(!unsampled.expect("unsampled parses").is_sampled());
        // A later version may carry more fields after the four it shares with 00.
        assert!(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what").is_some());
        for malformed in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
        ] {
            assert!(parse(malformed).is_none(), "{malformed:?} must be refused");
        }
    }

    #[test]
    fn a_span_continues_the_callers_trace_and_hands_on_its_own_id() {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            let span = tracing::info_span!("request");
            continue_from(&span, Some(caller));
            let ours = traceparent(&span).expect("a traced span has a traceparent");
            assert!(ours.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{ours}");
            assert!(!ours.contains("00f067aa0ba902b7"), "the span has an id of its own: {ours}");
            assert!(ours.ends_with("-01"), "sampled like its caller: {ours}");
            assert_eq!(trace_id(&span), "4bf92f3577b34da6a3ce929d0e0e4736");
            // A child inherits the trace; a fresh root starts a new one.
            let child = span.in_scope(|| tracing::info_span!("child"));
            assert_eq!(trace_id(&child), "4bf92f3577b34da6a3ce929d0e0e4736");
            let root = tracing::info_span!(parent: None, "root");
            continue_from(&root, Some("garbage"));
            let fresh = trace_id(&root);
            assert_eq!(fresh.len(), 32);
            assert_ne!(fresh, "4bf92f3577b34da6a3ce929d0e0e4736");
        });
    }

    #[test]
    fn untraced_spans_have_no_traceparent() {
        // No subscriber is installed in this test: spans are disabled and carry no context.
        let span = tracing::info_span!("nothing");
        assert_eq!(traceparent(&span), None);
        assert_eq!(trace_id(&span), "");
    }
}
