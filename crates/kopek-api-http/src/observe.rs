//! Every HTTP request is counted, timed and logged once: `kopek_requests_total` and
//! `kopek_request_duration_seconds` by route template (never by raw path, so the number of
//! series stays bounded), and one info line with the method, route, status, latency and the
//! request id (`X-Request-Id` from the caller, or a fresh one, echoed in the response).
//!
//! Each request runs in a span `http.request` that continues the caller's trace when it
//! sends W3C `traceparent`; the commands it sends, and so their outbox events, carry it on.

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use kopek_telemetry::trace::TRACEPARENT;
use std::time::Instant;
use tracing::Instrument;

pub const REQUEST_ID: &str = "x-request-id";

/// The method as a label: the standard ones by name, anything else as `OTHER`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

pub async fn observe(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let request_id = kopek_telemetry::trace::request_id(
        request.headers().get(REQUEST_ID).and_then(|value| value.to_str().ok()),
    );
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        request.headers_mut().insert(REQUEST_ID, value);
    }
    let label = format!("{method} {route}");
    let span = tracing::info_span!(
        "http.request",
        otel.name = %label,
        otel.kind = "server",
        request_id = %request_id,
        http.status_code = tracing::field::Empty,
    );
    let traceparent = request.headers().get(TRACEPARENT).and_then(|value| value.to_str().ok());
    kopek_telemetry::trace::continue_from(&span, traceparent);
    let mut response = next.run(request).instrument(span.clone()).await;
    let seconds = started.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    span.record("http.status_code", status);
    let metrics = kopek_telemetry::metrics();
    metrics.requests.with_label_values(&["http", &label, &status.to_string()]).inc();
    metrics.request_seconds.with_label_values(&["http", &label]).observe(seconds);
    span.in_scope(|| {
        tracing::info!(
            surface = "http",
            method,
            route = %route,
            status,
            latency_ms = seconds * 1e3,
            request_id = %request_id,
            trace_id = %kopek_telemetry::trace::trace_id(&span),
            "request"
        );
    });
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}
