//! Traces and logs: a request's W3C trace context reaches the broker message and the span of
//! the consumer that acts on its event, exported over OTLP to a collector the test runs;
//! `--log-format json` writes one parseable line per request carrying its request id.

use crate::events::{NATS, nats_or_skip};
use crate::support::{Server, deposit, http};
use futures_util::StreamExt;
use kopek_proto::kopek::v1 as pb;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An OTLP/gRPC trace receiver on a free port that keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().expect("spans");
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|attribute| attribute.key == "service.name")
                .and_then(|attribute| attribute.value.as_ref())
                .map(|value| format!("{value:?}"));
            assert!(
                service.as_deref().is_some_and(|name| name.contains("kopek")),
                "spans name their service: {service:?}"
            );
            spans.extend(resource.scope_spans.into_iter().flat_map(|scope| scope.spans));
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Collector {
    /// Starts the receiver; the URL is what `--otlp-endpoint` takes.
    async fn start() -> (Collector, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let collector = Collector::default();
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (collector, url)
    }

    /// Waits until some received span satisfies `wanted`.
    async fn wait_for(&self, what: &str, wanted: impl Fn(&Span) -> bool) -> Span {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(span) = self.spans.lock().expect("spans").iter().find(|s| wanted(s)) {
                return span.clone();
            }
            assert!(Instant::now() < deadline, "no span {what} reached the collector: {:#?}", {
                let spans = self.spans.lock().expect("spans");
                spans.iter().map(|span| span.name.clone()).collect::<Vec<_>>()
            });
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A fresh trace id for this run, so spans of other runs never match.
fn new_trace_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[tokio::test]
async fn a_requests_trace_reaches_the_broker_message_and_the_consumer_span() {
    let Some(nats) = nats_or_skip(NATS).await else { return };
    let (collector, collector_url) = Collector::start().await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let (stream, prefix) = (format!("TRACE{}", &run[..8]), format!("trace{}", &run[..8]));
    let mut messages = nats.subscribe(format!("{prefix}.>")).await.expect("subscribe");
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = format!("{NATS}?stream={stream}&subject_prefix={prefix}");
    let server =
        Server::start_with(dir.path(), &["--broker", &broker, "--otlp-endpoint", &collector_url]);
    let address = &server.http_address;

    let trace_id = new_trace_id();
    let caller_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    let headers =
        |key: &'static str| [("Idempotency-Key", key), ("traceparent", traceparent.as_str())];
    let opened = http(
        address,
        "POST",
        "/v1/accounts",
        &headers("open"),
        Some(r#"{"id":"traced","currency":"USD"}"#),
    )
    .await;
    assert_eq!(opened.status, 201, "{}", opened.body);
    let body =
        r#"{"kind":"deposit","credit_account_id":"traced","amount":"5.00","currency":"USD"}"#;
    let posted = http(address, "POST", "/v1/transfers", &headers("pay"), Some(body)).await;
    assert_eq!(posted.status, 201, "{}", posted.body);

    // The broker message of the deposit carries the trace, in its header and its document.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let message = loop {
        let message = tokio::time::timeout_at(deadline, messages.next())
            .await
            .expect("the TransferPosted event reached NATS in time")
            .expect("subscription open");
        let kind = message.headers.as_ref().and_then(|h| h.get("Kopek-Event-Type"));
        if kind.map(|kind| kind.as_str()) == Some("TransferPosted") {
            break message;
        }
    };
    let header = message
        .headers
        .as_ref()
        .and_then(|headers| headers.get("traceparent"))
        .map(|value| value.as_str().to_owned())
        .expect("the broker message has a traceparent header");
    let document: Value = serde_json::from_slice(&message.payload).expect("a JSON document");
    assert_eq!(document["traceparent"], header.as_str(), "the document carries the same trace");
    let parts: Vec<&str> = header.split('-').collect();
    assert_eq!(parts.len(), 4, "{header}");
    assert_eq!((parts[0], parts[1], parts[3]), ("00", trace_id.as_str(), "01"), "{header}");
    let event_parent = parts[2].to_owned();
    assert_ne!(event_parent, caller_span, "the event names kopek's span, not the caller's");

    // The collector got the request's span as a child of the caller's, the span the event
    // names inside the same trace, the batch linked to it, and the consumer's span that
    // handled the event (through NATS) in that trace or linked to it.
    let request = collector
        .wait_for("POST /v1/transfers", |span| {
            span.name == "POST /v1/transfers" && hex(&span.trace_id) == trace_id
        })
        .await;
    assert_eq!(hex(&request.parent_span_id), caller_span, "the request continues the caller");
    let submit = collector
        .wait_for("ledger.submit named by the event", |span| {
            span.name == "ledger.submit" && hex(&span.span_id) == event_parent
        })
        .await;
    assert_eq!(hex(&submit.trace_id), trace_id);
    assert_eq!(submit.parent_span_id, request.span_id, "the submit span is the request's child");
    let idempotency_key = submit.attributes.iter().find(|a| a.key == "idempotency_key");
    assert!(format!("{idempotency_key:?}").contains("pay"), "{:?}", submit.attributes);
    collector
        .wait_for("ledger.batch linked to the request", |span| {
            span.name == "ledger.batch"
                && span.links.iter().any(|link| hex(&link.span_id) == event_parent)
        })
        .await;
    let in_trace =
        |span: &Span| hex(&span.trace_id) == trace_id && hex(&span.parent_span_id) == event_parent;
    let linked = |span: &Span| {
        span.links
            .iter()
            .any(|link| hex(&link.trace_id) == trace_id && hex(&link.span_id) == event_parent)
    };
    let consumer = collector
        .wait_for("consume analytics", |span| {
            span.name == "consume analytics" && (in_trace(span) || linked(span))
        })
        .await;
    assert!(linked(&consumer), "the consumer's span links to the request's: {consumer:?}");

    // gRPC metadata carries trace context the same way.
    let grpc_trace = new_trace_id();
    let mut client = server.client().await;
    let mut request = tonic::Request::new(pb::CreateTransfersRequest {
        transfers: vec![deposit("grpc-traced", "traced", 100)],
        linked: false,
    });
    let value = format!("00-{grpc_trace}-{caller_span}-01");
    request.metadata_mut().insert("traceparent", value.parse().expect("metadata"));
    let results = client.create_transfers(request).await.expect("create").into_inner().results;
    assert!(results[0].error.is_none(), "{results:?}");
    let call = collector
        .wait_for("the gRPC call", |span| {
            span.name == "/kopek.v1.Ledger/CreateTransfers" && hex(&span.trace_id) == grpc_trace
        })
        .await;
    assert_eq!(hex(&call.parent_span_id), caller_span);
    collector
        .wait_for("the batch linked to the gRPC call", |span| {
            span.name == "ledger.batch"
                && span.links.iter().any(|link| link.span_id == call.span_id)
        })
        .await;
}

#[tokio::test]
async fn json_logs_parse_and_carry_the_request_id_and_no_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_logging(dir.path(), &["--log-format", "json", "--auth", "required"]);
    let key = server.admin_key.clone().expect("the first start printed an admin key");
    let bearer = format!("Bearer {key}");
    let trace_id = new_trace_id();
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let response = http(
        &server.http_address,
        "POST",
        "/v1/accounts",
        &[
            ("Authorization", &bearer),
            ("Idempotency-Key", "open-logged"),
            ("X-Request-Id", "req-logged-1"),
            ("traceparent", &traceparent),
        ],
        Some(r#"{"id":"logged","currency":"EUR"}"#),
    )
    .await;
    assert_eq!(response.status, 201, "{}", response.body);
    let refused = http(&server.http_address, "GET", "/v1/accounts", &[], None).await;
    assert_eq!(refused.status, 401);

    // Wait for both request lines: the one with our id, and the refused one.
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let lines = server.log_lines();
        let parsed: Vec<Value> =
            lines.iter().filter_map(|line| serde_json::from_str(line).ok()).collect();
        let found = parsed.iter().find(|value| value["fields"]["request_id"] == "req-logged-1");
        let refusal = parsed.iter().any(|value| {
            value["fields"]["status"] == 401 && value["fields"]["route"] == "/v1/accounts"
        });
        if let (Some(found), true) = (found, refusal) {
            break found.clone();
        }
        assert!(Instant::now() < deadline, "no request lines in the logs: {lines:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["fields"]["message"], "request");
    assert_eq!(line["fields"]["method"], "POST");
    assert_eq!(line["fields"]["route"], "/v1/accounts");
    assert_eq!(line["fields"]["status"], 201);
    assert!(line["fields"]["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{line}");
    assert_eq!(line["fields"]["trace_id"], trace_id.as_str());
    assert!(line["timestamp"].is_string(), "{line}");

    // Every line is JSON; none holds the key's secret or the Authorization header.
    let lines = server.log_lines();
    let secret = key.rsplit('_').next().expect("a secret part");
    for line in &lines {
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("not a JSON log line ({error}): {line}"));
        assert!(value.is_object(), "{line}");
        assert!(!line.contains(secret), "a log line holds the key's secret: {line}");
        assert!(!line.contains("Bearer"), "a log line holds the Authorization header: {line}");
    }
}
