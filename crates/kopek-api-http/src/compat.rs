//! The HTTP contracts existing clients call (`shared/spec/http-compat.md`), over the same
//! ledger. Amounts carry no currency: they are in the server's default currency.
//!
//! Part A: integer user ids, deposit/withdraw transactions keyed by their `uid`, balances as
//! of a date. Part B: the caller's account (`X-User-ID` or `?user_id=`), top-ups and orders
//! paid asynchronously, with the order's status over a WebSocket.

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kopek_auth::Scope;
use kopek_core::{
    AccountId, AccountResult, Amount, Currency, Details, ErrorCode, IdempotencyKey, Movement,
    NewOrder, NewUser, Order, OrderId, OrderResult, Rejection, Timestamp, TransferKind,
    TransferRequest, TransferResult, TransferStatus, UserId, UserResult, format_minor,
};
use kopek_intake::access::TransferLookup;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;

// ---- Part A ----

/// `{"error": {...}}` with a status, the shape Part A answers errors in.
fn part_a_error(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError { status, rejection: Rejection::new(code, message) }
}

/// A time as Part A's clients write it: RFC 3339 in UTC without needless fractions.
fn compact_time(at: Timestamp) -> String {
    at.to_rfc3339().replace(".000000Z", "Z")
}

/// Parses a date that may carry up to 9 fractional digits; a fraction finer than a microsecond
/// rounds up, so "strictly before" keeps every entry before the exact instant.
fn parse_date_ceiling(text: &str) -> Result<Timestamp, Rejection> {
    let at =
        Timestamp::parse_rfc3339(text).map_err(|error| Rejection::invalid(error.to_string()))?;
    let sub_micro = text
        .split_once('.')
        .map(|(_, rest)| {
            rest.chars().take_while(char::is_ascii_digit).skip(6).any(|digit| digit != '0')
        })
        .unwrap_or(false);
    Ok(if sub_micro { Timestamp::from_unix_micros(at.as_unix_micros() + 1) } else { at })
}

fn user_json(id: u64, name: &str, balance_minor: i64, currency: Currency) -> Value {
    json!({"id": id, "name": name, "balance": format_minor(balance_minor, currency)})
}

#[derive(Deserialize)]
pub struct NewUserA {
    name: String,
}

pub async fn create_user_a(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<NewUserA>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(body) = body.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
    let new = NewUser { id: None, name: body.name, currency: state.default_currency };
    match state.intake.create_user(&caller.0, new).await? {
        UserResult::Created(user, account) => {
            let number = user.id.number().unwrap_or_default();
            Ok((
                StatusCode::CREATED,
                Json(user_json(number, &user.name, account.balance.posted, account.currency)),
            )
                .into_response())
        }
        UserResult::Rejected(rejection) => Err(rejection.into()),
        // A user created without an id gets a new number: it cannot exist already.
        UserResult::Existed(user) => Err(ApiError::new(
            ErrorCode::Internal,
            format!("a new user was answered as existing user {}", user.id),
        )),
    }
}

#[derive(Deserialize)]
pub struct DateQuery {
    date: Option<String>,
}

pub async fn get_user_a(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<DateQuery>,
) -> ApiResult<Response> {
    let not_found =
        || part_a_error(StatusCode::NOT_FOUND, ErrorCode::NotFound, format!("user {id} not found"));
    let number: u64 = id.parse().map_err(|_| not_found())?;
    let user_id = UserId::from_number(number).in_tenant(caller.tenant());
    let store = state.engine.store().as_ref();
    let user = state.intake.visible_user(&caller.0, &user_id).await?.ok_or_else(not_found)?;
    let account_id = user_id.account(state.default_currency);
    // The user's account, if it is there and the caller's to see.
    let account = state.intake.account_seen(&caller.0, &account_id).await?;
    let balance = match (account, query.date.as_deref()) {
        (None, _) => None,
        (Some(account), None) => Some(account.balance.posted),
        (Some(_), Some(date)) => {
            let before = parse_date_ceiling(date)?;
            store.balance_before(&account_id, before).await?
        }
    }
    .unwrap_or(0);
    Ok(Json(user_json(number, &user.name, balance, state.default_currency)).into_response())
}

#[derive(Deserialize)]
pub struct TransactionA {
    uid: String,
    #[serde(rename = "type")]
    kind: String,
    amount: Value,
    user_id: Value,
    timestamp: Option<String>,
}

fn transaction_json(
    uid: &str,
    kind: TransferKind,
    amount: i64,
    user: u64,
    at: Timestamp,
    currency: Currency,
) -> Value {
    let kind = if kind == TransferKind::Deposit { "DEPOSIT" } else { "WITHDRAW" };
    json!({"uid": uid, "type": kind, "amount": format_minor(amount, currency), "user_id": user, "timestamp": compact_time(at)})
}

pub async fn create_transaction_a(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<TransactionA>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(body) = body.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
    let currency = state.default_currency;
    if body.uid.is_empty() {
        return Err(ApiError::invalid("uid is required"));
    }
    let key = IdempotencyKey::scoped("usertxn", &body.uid)?;
    let kind = match body.kind.to_ascii_uppercase().as_str() {
        "DEPOSIT" => TransferKind::Deposit,
        "WITHDRAW" | "WITHDRAWAL" => TransferKind::Withdrawal,
        _ => return Err(ApiError::invalid("type must be DEPOSIT or WITHDRAW")),
    };
    let amount = match &body.amount {
        Value::String(text) => Amount::parse_major(text, currency)?,
        // The number's own text, parsed exactly: integers past 2^53 keep every digit.
        Value::Number(number) if number.is_i64() || number.is_u64() => {
            Amount::parse_major(&number.to_string(), currency)?
        }
        Value::Number(number) => {
            let value = number
                .as_f64()
                .ok_or_else(|| ApiError::new(ErrorCode::InvalidAmount, "amount is not a number"))?;
            Amount::from_f64_major(value, currency)?
        }
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidAmount,
                "amount must be a decimal string or a number",
            ));
        }
    };
    let user_number = body
        .user_id
        .as_u64()
        .or_else(|| body.user_id.as_str().and_then(|text| text.parse().ok()))
        .filter(|number| *number > 0)
        .ok_or_else(|| ApiError::invalid("user_id must be a positive integer"))?;
    let effective_at = body
        .timestamp
        .as_deref()
        .map(|text| {
            Timestamp::parse_rfc3339(text)
                .map_err(|error| Rejection::invalid(format!("timestamp: {error}")))
        })
        .transpose()?;
    let user_id = UserId::from_number(user_number).in_tenant(caller.tenant());
    if state.intake.visible_user(&caller.0, &user_id).await?.is_none() {
        return Err(part_a_error(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("user {user_number} not found"),
        ));
    }
    let account = user_id.account(currency);
    let world = AccountId::world_in(caller.tenant(), currency);
    let (debit_account, credit_account) = if kind == TransferKind::Deposit {
        (world, account.clone())
    } else {
        (account.clone(), world)
    };
    let request = TransferRequest {
        idempotency_key: key,
        kind,
        movement: Movement::Move {
            debit_account,
            credit_account,
            amount: amount.minor(),
            currency,
            hold: None,
        },
        details: Details::default(),
        effective_at,
        // Users open their account on creation; if the default currency changed since, the
        // first deposit opens the account in the new one.
        open_if_missing: vec![user_id.new_account(currency)],
        // The timestamp is content: resending the uid with another one is a different request.
        fingerprint_extra: format!(
            "ts={}",
            effective_at.map(Timestamp::to_rfc3339).unwrap_or_default()
        ),
    };
    let body_uid = body.uid.clone();
    let result = state.intake.submit_one(&caller.0, request).await?;
    let (transfer, replayed) = match result {
        TransferResult::Committed(transfer) => (transfer, false),
        TransferResult::Replayed(transfer) => (transfer, true),
        TransferResult::Rejected(rejection) => return Err(rejection.into()),
    };
    if let Some(rejection) = &transfer.error {
        return Err(rejection.clone().into());
    }
    let mut response = Json(transaction_json(
        &body_uid,
        kind,
        transfer.amount,
        user_number,
        transfer.effective_at,
        currency,
    ))
    .into_response();
    if replayed {
        response.headers_mut().insert(crate::rest::REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

pub async fn get_transaction_a(
    State(state): State<AppState>,
    caller: Caller,
    Path(uid): Path<String>,
) -> ApiResult<Response> {
    let not_found = || {
        part_a_error(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("transaction {uid} not found"),
        )
    };
    let key = IdempotencyKey::scoped("usertxn", &uid).map_err(|_| not_found())?;
    let transfer = state.intake.visible_transfer(&caller.0, TransferLookup::Key(&key)).await?;
    let transfer = transfer.ok_or_else(not_found)?;
    if transfer.status != TransferStatus::Posted {
        return Err(not_found());
    }
    let account = if transfer.kind == TransferKind::Deposit {
        &transfer.credit_account
    } else {
        &transfer.debit_account
    };
    let user = account
        .as_ref()
        .and_then(|id| id.name().split(':').nth(1).and_then(|number| number.parse().ok()))
        .unwrap_or_default();
    let currency = transfer.currency.unwrap_or(state.default_currency);
    Ok(Json(transaction_json(
        &uid,
        transfer.kind,
        transfer.amount,
        user,
        transfer.effective_at,
        currency,
    ))
    .into_response())
}

// ---- Part B ----

/// `{"detail": "..."}` with a status, the shape Part B answers errors in.
pub struct Detail {
    status: StatusCode,
    message: String,
}

impl IntoResponse for Detail {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"detail": self.message}))).into_response()
    }
}

fn detail(status: StatusCode, message: &str) -> Detail {
    Detail { status, message: message.to_owned() }
}

type PartB<T> = Result<T, Detail>;

fn from_api(error: ApiError) -> Detail {
    detail(error.status, &format!("{}: {}", error.rejection.code, error.rejection.message))
}

/// The user a Part B request acts for: `X-User-ID`, else `?user_id=`, which only a key of the
/// gateway scope (or anyone, with auth off) may set; else the user the key is bound to.
fn buyer(caller: &Caller, headers: &HeaderMap, query: &HashMap<String, String>) -> PartB<UserId> {
    let named = match headers.get("x-user-id") {
        Some(value) => Some(value.to_str().ok().map(str::to_owned).unwrap_or_default()),
        None => query.get("user_id").cloned(),
    };
    let bound = caller.0.user.clone();
    let Some(text) = named else {
        return bound.ok_or_else(|| {
            detail(StatusCode::UNPROCESSABLE_ENTITY, "X-User-ID header is required")
        });
    };
    let named = UserId::parse(text.trim())
        .map_err(|_| detail(StatusCode::UNPROCESSABLE_ENTITY, "X-User-ID is not a valid user id"))?
        .in_tenant(caller.tenant());
    match bound {
        Some(user) if user == named => Ok(named),
        None if caller.0.may(Scope::Gateway) => Ok(named),
        _ => Err(detail(StatusCode::FORBIDDEN, "Forbidden")),
    }
}

/// Whole units as a JSON integer; a balance with a fraction (moved by another API) as a
/// decimal number rather than a rounded one.
fn whole_units(minor: i64, currency: Currency) -> Value {
    let scale = 10i64.pow(currency.minor_digits());
    if minor % scale == 0 {
        json!(minor / scale)
    } else {
        format_minor(minor, currency)
            .parse::<f64>()
            .map(|value| json!(value))
            .unwrap_or(Value::Null)
    }
}

/// A positive whole number of units from `{"amount": ...}`, else 422.
fn positive_units(body: &Result<Json<Value>, JsonRejection>, currency: Currency) -> PartB<i64> {
    let invalid = || detail(StatusCode::UNPROCESSABLE_ENTITY, "amount must be a positive integer");
    let Ok(Json(body)) = body else { return Err(invalid()) };
    let units = body
        .get("amount")
        .and_then(Value::as_i64)
        .filter(|units| *units > 0)
        .ok_or_else(invalid)?;
    units.checked_mul(10i64.pow(currency.minor_digits())).ok_or_else(invalid)
}

async fn balance_of(state: &AppState, caller: &Caller, user: &UserId) -> PartB<Option<i64>> {
    let id = user.account(state.default_currency);
    let account = state.intake.account_seen(&caller.0, &id).await;
    let account = account.map_err(|rejection| from_api(rejection.into()))?;
    Ok(account.map(|account| account.balance.posted))
}

pub async fn open_account_b(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> PartB<Json<Value>> {
    let user = buyer(&caller, &headers, &query)?;
    let account = user.new_account(state.default_currency);
    match state.intake.create_account(&caller.0, account).await.map_err(|e| from_api(e.into()))? {
        AccountResult::Created(account)
        | AccountResult::Existed(account)
        | AccountResult::Updated(account) => {
            Ok(Json(json!({"balance": whole_units(account.balance.posted, account.currency)})))
        }
        AccountResult::Rejected(rejection) => Err(from_api(rejection.into())),
    }
}

pub async fn top_up_b(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Result<Json<Value>, JsonRejection>,
) -> PartB<Json<Value>> {
    let user = buyer(&caller, &headers, &query)?;
    let currency = state.default_currency;
    let minor = positive_units(&body, currency)?;
    // The contract has no key; a client that sends Idempotency-Key gets safe retries anyway.
    let key = match headers.get(crate::rest::IDEMPOTENCY_KEY).and_then(|value| value.to_str().ok())
    {
        Some(key) => IdempotencyKey::scoped("topup", key).map_err(|e| from_api(e.into()))?,
        None => IdempotencyKey::scoped("topup", &uuid::Uuid::new_v4().to_string())
            .map_err(|e| from_api(e.into()))?,
    };
    let account = user.account(currency);
    let request = TransferRequest {
        idempotency_key: key,
        kind: TransferKind::Deposit,
        movement: Movement::Move {
            debit_account: AccountId::world_in(caller.tenant(), currency),
            credit_account: account,
            amount: minor,
            currency,
            hold: None,
        },
        details: Details::default(),
        effective_at: None,
        open_if_missing: vec![user.new_account(currency)],
        fingerprint_extra: String::new(),
    };
    let result =
        state.intake.submit_one(&caller.0, request).await.map_err(|e| from_api(e.into()))?;
    match result {
        TransferResult::Committed(transfer) | TransferResult::Replayed(transfer) => {
            if let Some(rejection) = transfer.error {
                return Err(from_api(rejection.into()));
            }
        }
        // A reused Idempotency-Key, or a refused request: never a silent 200.
        TransferResult::Rejected(rejection) => return Err(from_api(rejection.into())),
    }
    let balance = balance_of(&state, &caller, &user).await?.unwrap_or(0);
    Ok(Json(json!({"balance": whole_units(balance, currency)})))
}

pub async fn balance_b(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> PartB<Json<Value>> {
    let user = buyer(&caller, &headers, &query)?;
    match balance_of(&state, &caller, &user).await? {
        Some(balance) => Ok(Json(json!({"balance": whole_units(balance, state.default_currency)}))),
        None => Err(detail(StatusCode::NOT_FOUND, "Account not found")),
    }
}

fn order_json(order: &Order) -> Value {
    json!({"id": order.id.name(), "amount": whole_units(order.amount, order.currency), "status": order.status.as_str()})
}

pub async fn create_order_b(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Result<Json<Value>, JsonRejection>,
) -> PartB<Json<Value>> {
    let user = buyer(&caller, &headers, &query)?;
    let currency = state.default_currency;
    let minor = positive_units(&body, currency)?;
    let id = OrderId::parse(&uuid::Uuid::new_v4().to_string()).map_err(|e| from_api(e.into()))?;
    let order = NewOrder { id, user, amount: minor, currency };
    match state.intake.create_order(&caller.0, order).await.map_err(|e| from_api(e.into()))? {
        OrderResult::Created(order) | OrderResult::Existed(order) | OrderResult::Settled(order) => {
            Ok(Json(order_json(&order)))
        }
        OrderResult::Rejected(rejection) => Err(from_api(rejection.into())),
    }
}

pub async fn list_orders_b(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> PartB<Json<Value>> {
    let user = buyer(&caller, &headers, &query)?;
    let orders = state
        .engine
        .store()
        .orders_of_user(&user, kopek_core::limits::PAGE_SIZE_MAX)
        .await
        .map_err(|e| from_api(e.into()))?;
    let orders = orders.iter().filter(|order| order.tenant == *caller.tenant());
    Ok(Json(Value::Array(orders.map(order_json).collect())))
}

pub async fn get_order_b(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> PartB<Json<Value>> {
    let user = buyer(&caller, &headers, &query)?;
    let not_found = || detail(StatusCode::NOT_FOUND, "Order not found");
    let order_id = OrderId::parse(&id).map_err(|_| not_found())?.in_tenant(caller.tenant());
    let order = state
        .engine
        .store()
        .order(&order_id)
        .await
        .map_err(|e| from_api(e.into()))?
        .filter(|order| order.tenant == *caller.tenant())
        .ok_or_else(not_found)?;
    if order.user != user {
        return Err(detail(StatusCode::FORBIDDEN, "Forbidden"));
    }
    Ok(Json(order_json(&order)))
}

/// `{"status": "PAID"}` or `{"status": "FAILED"}` once the order settles (at once if it has).
/// Upgrades first and looks after (`ws::order_status`), so a missing order and one the caller
/// may not see (another tenant's, another user's) answer alike.
pub async fn order_status_ws(
    State(state): State<AppState>,
    caller: Caller,
    key: Option<axum::extract::Extension<kopek_auth::KeyWatch>>,
    connection: Option<axum::extract::Extension<kopek_net::Activity>>,
    Path(id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Ok(permit) = state.sockets.clone().try_acquire_owned() else {
        return detail(StatusCode::SERVICE_UNAVAILABLE, "too many open WebSockets; retry later")
            .into_response();
    };
    let upgrade = upgrade
        .max_message_size(crate::WEBSOCKET_MESSAGE_BYTES_MAX)
        .max_frame_size(crate::WEBSOCKET_MESSAGE_BYTES_MAX);
    let ending = kopek_auth::Ending::new(&state.draining, key.map(|extension| extension.0));
    // Finished when the socket ends, or with the callback if the upgrade never completes.
    let finish = kopek_auth::FinishOnDrop(ending.clone());
    upgrade.on_upgrade(move |socket| async move {
        let _permit = permit;
        // An open socket is a request in flight: its connection is not idle.
        let _busy = connection.map(|extension| extension.0.busy());
        let _finish = finish;
        crate::ws::order_status(state, caller.0, id, ending, socket).await;
    })
}
