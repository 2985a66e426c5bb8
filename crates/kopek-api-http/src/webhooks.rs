//! `/v1/webhooks`: subscriptions to events by type, their delivery log and manual
//! redelivery. The notifier consumer queues one delivery per subscription and event; the
//! sender signs and posts them (`kopek_outbox::webhooks`).

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, Body, ErrorBody, Params, Segments};
use crate::rest::idempotency_key;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kopek_core::ErrorCode;
use kopek_events::subscriptions::{NewWebhook, SubscribeError, subscribe};
use kopek_store::{Attempt, Delivery, Webhook};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewWebhookDto {
    /// Where deliveries are POSTed: an http:// or https:// URL.
    pub url: String,
    /// Event types to deliver (`TransferPosted`, ...); absent or empty: every type.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// The HMAC-SHA256 signing secret (16 to 256 bytes); kopek makes one when absent.
    pub secret: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDto {
    pub id: String,
    pub url: String,
    /// Empty: every type.
    pub event_types: Vec<String>,
    /// Only in the answer to the creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookListDto {
    pub webhooks: Vec<WebhookDto>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptDto {
    pub attempt: u32,
    pub at: String,
    /// The receiver's HTTP status, if it answered.
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryDto {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    /// `pending`, `delivered` or `dead` (out of attempts: redeliver it by hand).
    pub status: String,
    pub attempts: u32,
    pub next_attempt_at: Option<String>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Every attempt, in order (on the single-delivery route).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt_log: Option<Vec<AttemptDto>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryListDto {
    pub deliveries: Vec<DeliveryDto>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct DeliveryQuery {
    /// At most this many, newest first (default 100).
    pub limit: Option<usize>,
}

fn webhook_dto(hook: &Webhook, with_secret: bool) -> WebhookDto {
    WebhookDto {
        id: hook.id.clone(),
        url: hook.url.clone(),
        event_types: hook.event_types.clone(),
        secret: with_secret.then(|| hook.secret.clone()),
        created_at: hook.created_at.to_rfc3339(),
    }
}

fn delivery_dto(delivery: &Delivery, attempts: Option<&[Attempt]>) -> DeliveryDto {
    DeliveryDto {
        id: delivery.id.clone(),
        event_id: delivery.event_id.clone(),
        event_type: delivery.event_type.clone(),
        status: delivery.status.as_str().to_owned(),
        attempts: delivery.attempts,
        next_attempt_at: (delivery.status == kopek_store::DeliveryStatus::Pending)
            .then(|| delivery.next_attempt_at.to_rfc3339()),
        last_status_code: delivery.last_status_code,
        last_error: delivery.last_error.clone(),
        created_at: delivery.created_at.to_rfc3339(),
        updated_at: delivery.updated_at.to_rfc3339(),
        attempt_log: attempts.map(|attempts| {
            attempts
                .iter()
                .map(|attempt| AttemptDto {
                    attempt: attempt.attempt,
                    at: attempt.at.to_rfc3339(),
                    status_code: attempt.status_code,
                    error: attempt.error.clone(),
                    duration_ms: attempt.duration_ms,
                })
                .collect()
        }),
    }
}

async fn find(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Webhook> {
    state
        .engine
        .store()
        .webhooks(Some(caller.tenant().as_str()))
        .await?
        .into_iter()
        .find(|hook| hook.id == id)
        .ok_or_else(|| ApiError::not_found(format!("webhook {id} not found")))
}

/// Subscribes a URL to events. Deliveries are POSTs of the event document, signed with
/// `Kopek-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, with
/// `Kopek-Event-Id` to drop repeats by; failures are retried with exponential backoff, then
/// dead-lettered.
#[utoipa::path(
    post, path = "/v1/webhooks", tag = "webhooks", request_body = NewWebhookDto,
    params(("Idempotency-Key" = String, Header, description = "Makes a retry answer the first creation")),
    responses((status = 201, body = WebhookDto), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn create_webhook(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Body(request): Body<NewWebhookDto>,
) -> ApiResult<Response> {
    let key = idempotency_key(&headers)?;
    let tenant = caller.tenant().clone();
    let subscribed = subscribe(
        state.engine.store().as_ref(),
        NewWebhook {
            tenant: tenant.as_str(),
            idempotency_key: key.as_str(),
            url: &request.url,
            event_types: &request.event_types,
            secret: request.secret.as_deref(),
            targets: state.webhook_targets,
        },
    )
    .await;
    let (hook, created) = match subscribed {
        Ok(subscribed) => subscribed,
        Err(SubscribeError::Invalid(message)) => return Err(ApiError::invalid(message)),
        Err(error @ SubscribeError::KeyReused) => {
            return Err(ApiError::new(ErrorCode::IdempotencyKeyReused, error.to_string()));
        }
        Err(SubscribeError::Store(error)) => return Err(error.into()),
    };
    let mut response = (StatusCode::CREATED, Json(webhook_dto(&hook, true))).into_response();
    if !created {
        response.headers_mut().insert(crate::rest::REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

#[utoipa::path(
    get, path = "/v1/webhooks", tag = "webhooks",
    responses((status = 200, body = WebhookListDto), (status = 503, body = ErrorBody))
)]
pub async fn list_webhooks(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<WebhookListDto>> {
    let hooks = state.engine.store().webhooks(Some(caller.tenant().as_str())).await?;
    Ok(Json(WebhookListDto {
        webhooks: hooks.iter().map(|hook| webhook_dto(hook, false)).collect(),
    }))
}

#[utoipa::path(
    get, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id")),
    responses((status = 200, body = WebhookDto), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn get_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<String>,
) -> ApiResult<Json<WebhookDto>> {
    Ok(Json(webhook_dto(&find(&state, &caller, &id).await?, false)))
}

/// Stops deliveries to the subscription; its delivery log stays readable by delivery id.
#[utoipa::path(
    delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id")),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn delete_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<String>,
) -> ApiResult<StatusCode> {
    let deleted = state
        .engine
        .store()
        .delete_webhook(caller.tenant().as_str(), &id, kopek_store::wall_clock())
        .await?;
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("webhook {id} not found")))
    }
}

/// The delivery log of a subscription, newest first.
#[utoipa::path(
    get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id"), DeliveryQuery),
    responses((status = 200, body = DeliveryListDto), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn list_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<String>,
    Params(query): Params<DeliveryQuery>,
) -> ApiResult<Json<DeliveryListDto>> {
    let hook = find(&state, &caller, &id).await?;
    let limit = query.limit.unwrap_or(100).clamp(1, kopek_core::limits::PAGE_SIZE_MAX);
    let deliveries = state.engine.store().deliveries(&hook.id, limit).await?;
    Ok(Json(DeliveryListDto {
        deliveries: deliveries.iter().map(|delivery| delivery_dto(delivery, None)).collect(),
    }))
}

async fn find_delivery(
    state: &AppState,
    caller: &Caller,
    hook: &str,
    id: &str,
) -> ApiResult<Delivery> {
    let hook = find(state, caller, hook).await?;
    state
        .engine
        .store()
        .delivery(id)
        .await?
        .filter(|delivery| delivery.subscription_id == hook.id)
        .ok_or_else(|| ApiError::not_found(format!("delivery {id} not found")))
}

/// One delivery with every attempt.
#[utoipa::path(
    get, path = "/v1/webhooks/{id}/deliveries/{delivery_id}", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id"), ("delivery_id" = String, Path, description = "Delivery id")),
    responses((status = 200, body = DeliveryDto), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn get_delivery(
    State(state): State<AppState>,
    caller: Caller,
    Segments((hook, id)): Segments<(String, String)>,
) -> ApiResult<Json<DeliveryDto>> {
    let delivery = find_delivery(&state, &caller, &hook, &id).await?;
    let attempts = state.engine.store().delivery_attempts(&delivery.id).await?;
    Ok(Json(delivery_dto(&delivery, Some(&attempts))))
}

/// Sends a delivery again now, whatever its status, with a fresh set of attempts.
#[utoipa::path(
    post, path = "/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id"), ("delivery_id" = String, Path, description = "Delivery id")),
    responses((status = 202, body = DeliveryDto), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn redeliver(
    State(state): State<AppState>,
    caller: Caller,
    Segments((hook, id)): Segments<(String, String)>,
) -> ApiResult<Response> {
    let delivery = find_delivery(&state, &caller, &hook, &id).await?;
    let store = state.engine.store();
    store
        .redeliver(
            &delivery.subscription_id,
            &delivery.id,
            state.webhook_max_attempts,
            kopek_store::wall_clock(),
        )
        .await?;
    let delivery = store
        .delivery(&delivery.id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("delivery {id} not found")))?;
    Ok((StatusCode::ACCEPTED, Json(delivery_dto(&delivery, None))).into_response())
}
