//! Who calls, and may they: the middleware in front of every API route. It reads the key
//! (`Authorization: Bearer`, or `?access_token=` on WebSocket routes, which browsers cannot
//! give headers), checks the route's scope from [`required_scope`], takes a token from the
//! key's rate-limit bucket, and hands the handler a [`Caller`].

use crate::AppState;
use crate::error::ApiError;
use axum::Json;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kopek_auth::{AuthError, Principal, Scope, Verdict};
use kopek_core::{ErrorCode, Tenant};
use serde_json::json;

/// The scope a route needs; `None`: public (probes, metrics). Unknown routes need `admin`,
/// so a route added without a line here fails closed.
pub fn required_scope(method: &Method, route: &str) -> Option<Scope> {
    let read = method == Method::GET;
    match route {
        "/healthz" | "/readyz" | "/metrics" => None,
        "/v1/webhooks"
        | "/v1/webhooks/{id}"
        | "/v1/webhooks/{id}/deliveries"
        | "/v1/webhooks/{id}/deliveries/{delivery_id}"
        | "/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver" => Some(Scope::Admin),
        // Rates are set by operators; everyone with a key reads them and asks for prices.
        "/v1/fx/rates" | "/v1/fx/rates/{base}/{quote}" if !read => Some(Scope::Admin),
        "/v1/fx/convert" => Some(Scope::Read),
        // Freezing, unfreezing, closing and changing limits are operator acts.
        "/v1/accounts/{id}" if method == Method::PATCH => Some(Scope::Admin),
        "/v1/accounts"
        | "/v1/accounts/{id}"
        | "/v1/accounts/{id}/balance"
        | "/v1/accounts/{id}/entries"
        | "/v1/transfers"
        | "/v1/transfers/batch"
        | "/v1/transfers/{id}"
        | "/v1/transfers/{id}/events"
        | "/v1/transfers/{id}/capture"
        | "/v1/transfers/{id}/void"
        | "/v1/users"
        | "/v1/users/{id}"
        | "/v1/users/{id}/spending"
        | "/v1/orders/{id}"
        | "/v1/events"
        | "/v1/fx/rates"
        | "/v1/fx/quotes"
        | "/v1/fx/quotes/{id}"
        | "/v1/fx/positions"
        | "/v1/fx/spread"
        | "/v1/ws"
        | "/v1/user"
        | "/v1/user/{id}"
        | "/v1/transaction"
        | "/v1/transaction/{uid}"
        | "/payments/account"
        | "/payments/account/topup"
        | "/payments/account/balance"
        | "/orders/orders"
        | "/orders/orders/{id}"
        | "/ws/orders/{id}"
        | "/orders/ws/orders/{id}" => Some(if read { Scope::Read } else { Scope::Write }),
        _ => Some(Scope::Admin),
    }
}

/// Part B of the HTTP contract answers `{"detail": ...}`; everything else the error shape.
fn is_part_b(route: &str) -> bool {
    route.starts_with("/payments/") || route.starts_with("/orders/") || route.starts_with("/ws/")
}

fn is_websocket(route: &str) -> bool {
    route == "/v1/ws" || route.ends_with("/ws/orders/{id}")
}

/// The middleware: every matched API route passes here (`route_layer`).
pub async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_default();
    let Some(scope) = required_scope(request.method(), &route) else {
        return next.run(request).await;
    };
    let header = request.headers().get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or(""));
    let query_token = is_websocket(&route).then(|| access_token(request.uri().query())).flatten();
    let admitted = match (header, query_token) {
        (None, Some(token)) => state.auth.authenticate_token(Some(&token)).await,
        (header, _) => state.auth.authenticate(header).await,
    };
    let principal = match admitted {
        Ok(principal) => principal,
        Err(error) => {
            refused(if error == AuthError::Missing { "missing_key" } else { "invalid_key" });
            return refuse(&route, auth_error(&error));
        }
    };
    if !principal.may(scope) {
        let message = format!(
            "this key's scope is {}; the route needs {}",
            principal.scope.as_str(),
            scope.as_str()
        );
        refused("forbidden");
        return refuse(&route, (ErrorCode::PermissionDenied, message, None));
    }
    if let Verdict::Limited { retry_after } = state.limiter.check(principal.bucket()).await {
        let message = format!(
            "too many requests for this key; retry in {} ms",
            retry_after.as_millis().max(1)
        );
        refused("rate_limited");
        return refuse(&route, (ErrorCode::RateLimited, message, Some(retry_after)));
    }
    request.extensions_mut().insert(state.auth.watch(&principal));
    request.extensions_mut().insert(principal);
    next.run(request).await
}

fn refused(reason: &str) {
    kopek_telemetry::metrics().refusals.with_label_values(&["http", reason]).inc();
}

type Refusal = (ErrorCode, String, Option<std::time::Duration>);

fn auth_error(error: &AuthError) -> Refusal {
    let code = match error {
        AuthError::Missing | AuthError::Invalid | AuthError::NotBearer => {
            ErrorCode::Unauthenticated
        }
        AuthError::Unavailable(_) => ErrorCode::Unavailable,
    };
    (code, error.to_string(), None)
}

fn refuse(route: &str, (code, message, retry_after): Refusal) -> Response {
    let mut response = if is_part_b(route) {
        let status = crate::error::status(code);
        let text = match code {
            ErrorCode::PermissionDenied => "Forbidden".to_owned(),
            ErrorCode::Unauthenticated => "Not authenticated".to_owned(),
            _ => message,
        };
        (status, Json(json!({ "detail": text }))).into_response()
    } else {
        ApiError::new(code, message).into_response()
    };
    let headers = response.headers_mut();
    if code == ErrorCode::Unauthenticated {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let Some(wait) = retry_after {
        // Whole seconds, rounded up: a client that waits this long finds a token.
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    }
    response
}

fn access_token(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name == "access_token").then(|| value.to_owned())
    })
}

/// The principal of the request, as the guard left it.
#[derive(Clone, Debug)]
pub struct Caller(pub Principal);

impl Caller {
    pub fn tenant(&self) -> &Tenant {
        &self.0.tenant
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, ApiError> {
        // Only a route without the guard lacks one: refuse rather than act as nobody.
        parts.extensions.get::<Principal>().cloned().map(Caller).ok_or_else(|| {
            ApiError::new(ErrorCode::Unauthenticated, "the request was not authenticated")
        })
    }
}
