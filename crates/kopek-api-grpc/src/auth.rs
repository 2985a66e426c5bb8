//! Who calls, and may they: a tower layer in front of every gRPC service. It reads the key
//! from the `authorization` metadata (`Bearer kopek_...`), checks the method's scope from
//! [`required_scope`], takes a token from the key's rate-limit bucket, and leaves the
//! [`Principal`] in the request's extensions for the handler ([`principal`]).

use crate::incoming::ConnectionInfo;
use futures_util::future::BoxFuture;
use kopek_auth::{AuthError, Authenticator, KeyWatch, Principal, RateLimiter, Scope, Verdict};
use kopek_net::{Activity, BusyBody};
use std::task::{Context, Poll};
use tonic::Status;
use tracing::Instrument;

/// The method AuthorizePayment answers a rate limit inside its response, as its contract
/// says (`PAYMENT_ERROR_CODE_RATE_LIMITED`), so the layer leaves that check to the handler.
pub const AUTHORIZE_PAYMENT: &str = "/payment.v1.PaymentService/AuthorizePayment";

/// The scope a method (`/package.Service/Method`) needs; `None`: public (health,
/// reflection). Unknown methods need `admin`, so a method added without a line here fails
/// closed.
pub fn required_scope(path: &str) -> Option<Scope> {
    let (service, method) = path.trim_start_matches('/').split_once('/')?;
    match (service, method) {
        ("grpc.health.v1.Health", _)
        | ("grpc.reflection.v1.ServerReflection", _)
        | ("grpc.reflection.v1alpha.ServerReflection", _) => None,
        (
            "kopek.v1.Ledger",
            "GetAccount" | "GetAccounts" | "ListAccounts" | "GetTransfer" | "ListTransfers"
            | "ListEntries" | "GetBalance" | "StreamEvents" | "GetSpending" | "ListRates"
            | "GetQuote" | "Convert",
        )
        | ("payment.v1.PaymentService", "GetPayment" | "GetAccountBalance") => Some(Scope::Read),
        (
            "kopek.v1.Ledger",
            "CreateAccounts" | "CreateTransfers" | "StreamTransfers" | "CreateQuote",
        )
        | ("payment.v1.PaymentService", "AuthorizePayment")
        | ("transaction.TransactionService", "StreamTransactions") => Some(Scope::Write),
        _ => Some(Scope::Admin),
    }
}

/// What the layer needs: the authenticator and the rate limiter of the process.
#[derive(Clone)]
pub struct Gate {
    pub auth: Authenticator,
    pub limiter: RateLimiter,
}

impl Gate {
    /// The principal for a call to `path` with these headers; `Ok(None)` for public methods.
    pub async fn admit(
        &self,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Result<Option<Principal>, Status> {
        let Some(scope) = required_scope(path) else { return Ok(None) };
        let credential = headers.get("authorization").and_then(|value| value.to_str().ok());
        let principal = self.auth.authenticate(credential).await.map_err(|error| match error {
            AuthError::Missing | AuthError::Invalid | AuthError::NotBearer => {
                refused(if error == AuthError::Missing { "missing_key" } else { "invalid_key" });
                Status::unauthenticated(format!("UNAUTHENTICATED: {error}"))
            }
            AuthError::Unavailable(_) => Status::unavailable(format!("UNAVAILABLE: {error}")),
        })?;
        if !principal.may(scope) {
            refused("forbidden");
            return Err(Status::permission_denied(format!(
                "PERMISSION_DENIED: this key's scope is {}; the method needs {}",
                principal.scope.as_str(),
                scope.as_str()
            )));
        }
        if path != AUTHORIZE_PAYMENT
            && let Verdict::Limited { retry_after } = self.limiter.check(principal.bucket()).await
        {
            refused("rate_limited");
            return Err(rate_limited(retry_after));
        }
        Ok(Some(principal))
    }
}

fn refused(reason: &str) {
    kopek_telemetry::metrics().refusals.with_label_values(&["grpc", reason]).inc();
}

/// The method as a metric label: ours by name, anything else as `unknown`, so a client
/// cannot make up series.
fn method_label(path: &str) -> &str {
    let service = path.trim_start_matches('/').split('/').next().unwrap_or_default();
    let known = crate::SERVICE_NAMES.contains(&service)
        || matches!(
            service,
            "grpc.health.v1.Health"
                | "grpc.reflection.v1.ServerReflection"
                | "grpc.reflection.v1alpha.ServerReflection"
        );
    if known { path } else { "unknown" }
}

/// Counts, times and logs one call as its response starts: the status is the one in the
/// headers (a refusal or an early error), else OK (a stream's final status comes later).
fn observe<B>(
    path: &str,
    response: &http::Response<B>,
    started: std::time::Instant,
    span: &tracing::Span,
    request_id: &str,
) {
    let status = response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|code| code.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32);
    let seconds = started.elapsed().as_secs_f64();
    let method = method_label(path);
    let metrics = kopek_telemetry::metrics();
    let code = format!("{status:?}");
    metrics.requests.with_label_values(&["grpc", method, &code]).inc();
    metrics.request_seconds.with_label_values(&["grpc", method]).observe(seconds);
    span.record("rpc.grpc.status_code", status as i32);
    span.in_scope(|| {
        tracing::info!(
            surface = "grpc",
            method,
            status = %code,
            latency_ms = seconds * 1e3,
            request_id,
            trace_id = %kopek_telemetry::trace::trace_id(span),
            "request"
        );
    });
}

/// The call's span: named by its method, continuing the caller's trace when the metadata
/// carries W3C `traceparent`, with the caller's `x-request-id` or a fresh one.
fn call_span(path: &str, headers: &http::HeaderMap) -> (tracing::Span, String) {
    let request_id = kopek_telemetry::trace::request_id(
        headers.get("x-request-id").and_then(|value| value.to_str().ok()),
    );
    let span = tracing::info_span!(
        "grpc.request",
        otel.name = method_label(path),
        otel.kind = "server",
        request_id = %request_id,
        rpc.grpc.status_code = tracing::field::Empty,
    );
    let traceparent =
        headers.get(kopek_telemetry::trace::TRACEPARENT).and_then(|value| value.to_str().ok());
    kopek_telemetry::trace::continue_from(&span, traceparent);
    (span, request_id)
}

pub fn rate_limited(retry_after: std::time::Duration) -> Status {
    let millis = retry_after.as_millis().max(1);
    let mut status = Status::resource_exhausted(format!(
        "RATE_LIMITED: too many requests for this key; retry in {millis} ms"
    ));
    if let Ok(value) = millis.to_string().parse() {
        status.metadata_mut().insert("retry-after-ms", value);
    }
    status
}

/// The principal the layer admitted. Only a service served without the layer lacks one.
pub fn principal<T>(request: &tonic::Request<T>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("UNAUTHENTICATED: the call was not authenticated"))
}

/// The watch on the call's key, for streams that must end once it is revoked; a call the
/// layer did not admit (auth off, or no layer) has none, and nothing revokes it.
pub fn key_watch<T>(request: &tonic::Request<T>) -> Option<KeyWatch> {
    request.extensions().get::<KeyWatch>().cloned()
}

/// The longest a unary call may take, reading its request included.
pub const UNARY_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The calls that stay open (a stream on either side), read from the descriptors of every
/// service served, so a new streaming method is known without a list to keep.
fn is_streaming(path: &str) -> bool {
    static STREAMING: std::sync::LazyLock<std::collections::HashSet<String>> =
        std::sync::LazyLock::new(|| {
            [
                kopek_proto::FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            ]
            .into_iter()
            .filter_map(|bytes| {
                <prost_types::FileDescriptorSet as prost::Message>::decode(bytes).ok()
            })
            .flat_map(|set| set.file)
            .flat_map(|file| {
                let package = file.package.clone().unwrap_or_default();
                file.service.into_iter().flat_map(move |service| {
                    let full = format!("{package}.{}", service.name());
                    service
                        .method
                        .into_iter()
                        .filter(|method| method.client_streaming() || method.server_streaming())
                        .map(move |method| format!("/{full}/{}", method.name()))
                })
            })
            .collect()
        });
    STREAMING.contains(path)
}

/// The activity of the connection a call came on (plain or TLS).
fn connection_activity<B>(request: &http::Request<B>) -> Option<&Activity> {
    let extensions = request.extensions();
    extensions.get::<ConnectionInfo>().map(|info| &info.activity).or_else(|| {
        extensions
            .get::<tonic::transport::server::TlsConnectInfo<ConnectionInfo>>()
            .map(|info| &info.get_ref().activity)
    })
}

#[derive(Clone)]
pub struct AuthLayer {
    pub gate: Gate,
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService { inner, gate: self.gate.clone() }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    gate: Gate,
}

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone that was polled ready serves this call; the fresh one waits for the next.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let gate = self.gate.clone();
        Box::pin(async move {
            let started = std::time::Instant::now();
            let path = request.uri().path().to_owned();
            // The call is in flight on its connection until its response body ends.
            let busy = connection_activity(&request).map(Activity::busy);
            let (span, request_id) = call_span(&path, request.headers());
            let response = async {
                match gate.admit(&path, request.headers()).await {
                    Ok(principal) => {
                        if let Some(principal) = principal {
                            request.extensions_mut().insert(gate.auth.watch(&principal));
                            request.extensions_mut().insert(principal);
                        }
                        if is_streaming(&path) {
                            return inner.call(request).await;
                        }
                        // A unary call, its request body included, finishes in time: a body
                        // trickled in holds no connection for long.
                        match tokio::time::timeout(UNARY_CALL_TIMEOUT, inner.call(request)).await {
                            Ok(response) => response,
                            Err(_) => Ok(Status::deadline_exceeded(format!(
                                "DEADLINE_EXCEEDED: a unary call must finish within {} s",
                                UNARY_CALL_TIMEOUT.as_secs()
                            ))
                            .into_http()),
                        }
                    }
                    Err(status) => Ok(status.into_http()),
                }
            }
            .instrument(span.clone())
            .await;
            if let Ok(response) = &response {
                observe(&path, response, started, &span, &request_id);
            }
            response.map(|response| {
                response.map(|body| tonic::body::Body::new(BusyBody::new(body, busy)))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_methods_come_from_the_descriptors() {
        for path in [
            "/kopek.v1.Ledger/StreamTransfers",
            "/kopek.v1.Ledger/StreamEvents",
            "/transaction.TransactionService/StreamTransactions",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert!(is_streaming(path), "{path}");
        }
        for path in ["/kopek.v1.Ledger/CreateTransfers", "/grpc.health.v1.Health/Check", "/x/Y"] {
            assert!(!is_streaming(path), "{path}");
        }
    }

    #[test]
    fn every_method_of_every_service_has_its_scope() {
        let table = [
            ("/grpc.health.v1.Health/Check", None),
            ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", None),
            ("/kopek.v1.Ledger/GetAccount", Some(Scope::Read)),
            ("/kopek.v1.Ledger/StreamEvents", Some(Scope::Read)),
            ("/kopek.v1.Ledger/CreateTransfers", Some(Scope::Write)),
            ("/kopek.v1.Ledger/StreamTransfers", Some(Scope::Write)),
            ("/kopek.v1.Ledger/UpdateAccount", Some(Scope::Admin)),
            ("/kopek.v1.Ledger/CreateWebhook", Some(Scope::Admin)),
            ("/payment.v1.PaymentService/AuthorizePayment", Some(Scope::Write)),
            ("/payment.v1.PaymentService/GetPayment", Some(Scope::Read)),
            ("/transaction.TransactionService/StreamTransactions", Some(Scope::Write)),
            ("/kopek.v1.Ledger/SomethingNew", Some(Scope::Admin)),
        ];
        for (path, scope) in table {
            assert_eq!(required_scope(path), scope, "{path}");
        }
    }
}
