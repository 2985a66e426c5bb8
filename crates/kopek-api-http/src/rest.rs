//! The canonical REST API under `/v1`, documented by OpenAPI from these handlers.
//!
//! Every write takes an `Idempotency-Key` header (a batch takes one key per transfer in the
//! body). The same key with the same request answers the original status and body again with
//! `Idempotent-Replayed: true`; with another request it is 422 `IDEMPOTENCY_KEY_REUSED`.

use crate::AppState;
use crate::auth::Caller;
use crate::dto::{self, *};
use crate::error::{ApiError, ApiResult, Body, ErrorBody, Params, Segments};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kopek_core::{
    AccountId, AccountResult, AccountUpdate, Currency, ErrorCode, IdempotencyKey, Linking, NewUser,
    Rejection, Tenant, Timestamp, TransferId, TransferRequest, TransferResult, UserId, UserResult,
    limits,
};
use kopek_intake::access::{self, TransferLookup};
use kopek_intake::account::{AccountInput, account_request};
use kopek_intake::search::SearchInput;
use kopek_intake::{Action, Batch, TransferInput, fields};
use serde::Deserialize;
use std::collections::HashMap;
use utoipa::IntoParams;

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
pub const REPLAYED: &str = "idempotent-replayed";

pub fn idempotency_key(headers: &HeaderMap) -> ApiResult<IdempotencyKey> {
    let value = headers
        .get(IDEMPOTENCY_KEY)
        .ok_or_else(|| ApiError::invalid("the Idempotency-Key header is required on writes"))?;
    let text =
        value.to_str().map_err(|_| ApiError::invalid("the Idempotency-Key header must be text"))?;
    Ok(IdempotencyKey::parse_client(text)?)
}

/// An id made from an idempotency key, for creations that name none: the same key gives the
/// same id, so a retry finds what the first try created.
fn derived_id(prefix: &str, key: &IdempotencyKey) -> String {
    // FNV-1a, 64 bits: stable across versions and platforms.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.as_str().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{prefix}_{hash:016x}")
}

/// A JSON response, marked as a replay when it is one.
fn respond<T: serde::Serialize>(status: StatusCode, body: &T, replayed: bool) -> Response {
    let mut response = (status, Json(body)).into_response();
    if replayed {
        response.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

fn page_size(limit: Option<usize>) -> usize {
    fields::page_size(limit)
}

// ---- accounts ----

#[utoipa::path(
    post, path = "/v1/accounts", tag = "accounts",
    request_body = NewAccountDto,
    params(("Idempotency-Key" = String, Header, description = "Makes the request safe to retry")),
    responses(
        (status = 201, description = "Opened, or already open with these fields (a replay, marked Idempotent-Replayed)", body = AccountDto),
        (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn create_account(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Body(request): Body<NewAccountDto>,
) -> ApiResult<Response> {
    let key = idempotency_key(&headers)?;
    let derived = request.id.is_none();
    let kind = dto::account_kind(request.kind.as_deref())
        .ok_or_else(|| ApiError::invalid("kind must be user or system"))?;
    let input = AccountInput {
        id: request.id.unwrap_or_else(|| derived_id("acct", &key)),
        currency: Some(request.currency),
        owner: request.owner,
        kind,
        overdraft_limit: request.overdraft_limit,
        overdraft_limit_minor: request.overdraft_limit_minor,
        unbounded_overdraft: request.unbounded_overdraft,
        metadata: request.metadata,
    };
    let new = account_request(&caller.0, input)?;
    match state.intake.create_account(&caller.0, new).await? {
        AccountResult::Created(account) => {
            Ok(respond(StatusCode::CREATED, &dto::account(&account), false))
        }
        // The original answer was 201: a replay answers it again, marked as a replay.
        AccountResult::Existed(account) | AccountResult::Updated(account) => {
            Ok(respond(StatusCode::CREATED, &dto::account(&account), true))
        }
        AccountResult::Rejected(rejection)
            if derived && rejection.code == ErrorCode::AccountExists =>
        {
            Err(ApiError::new(
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key opened an account with other fields",
            ))
        }
        AccountResult::Rejected(rejection) => Err(rejection.into()),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListAccountsQuery {
    /// Only this user's accounts.
    pub owner: Option<String>,
    /// The `next_cursor` of the previous page.
    pub after: Option<String>,
    /// At most 1000; default 100.
    pub limit: Option<usize>,
}

#[utoipa::path(
    get, path = "/v1/accounts", tag = "accounts", params(ListAccountsQuery),
    responses((status = 200, body = AccountListDto), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn list_accounts(
    State(state): State<AppState>,
    caller: Caller,
    Params(query): Params<ListAccountsQuery>,
) -> ApiResult<Json<AccountListDto>> {
    let after = query.after.as_deref().map(AccountId::parse_reference).transpose()?;
    let size = page_size(query.limit);
    let accounts = state.intake.list_accounts(&caller.0, query.owner, after.as_ref(), size).await?;
    let next_cursor =
        (accounts.len() == size).then(|| accounts.last().map(|a| a.id.name().to_owned())).flatten();
    Ok(Json(AccountListDto { accounts: accounts.iter().map(dto::account).collect(), next_cursor }))
}

/// The account, if the caller sees it (its tenant's, its user's); `ACCOUNT_NOT_FOUND` else.
async fn load_account(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> ApiResult<kopek_core::Account> {
    let account_id = AccountId::parse_reference(id)?;
    Ok(state.intake.visible_account(&caller.0, &account_id).await?)
}

#[utoipa::path(
    get, path = "/v1/accounts/{id}", tag = "accounts",
    params(("id" = String, Path, description = "Account id")),
    responses((status = 200, body = AccountDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn get_account(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<String>,
) -> ApiResult<Json<AccountDto>> {
    Ok(Json(dto::account(&load_account(&state, &caller, &id).await?)))
}

#[utoipa::path(
    patch, path = "/v1/accounts/{id}", tag = "accounts", request_body = AccountUpdateDto,
    params(("id" = String, Path, description = "Account id")),
    responses(
        (status = 200, body = AccountDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
pub async fn update_account(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<String>,
    Body(request): Body<AccountUpdateDto>,
) -> ApiResult<Json<AccountDto>> {
    let account = load_account(&state, &caller, &id).await?;
    let overdraft = fields::overdraft(
        request.overdraft_limit.as_deref(),
        request.overdraft_limit_minor,
        account.currency,
    )?;
    let status = request
        .status
        .as_deref()
        .map(|text| {
            dto::account_status(text)
                .ok_or_else(|| ApiError::invalid("status must be active, frozen or closed"))
        })
        .transpose()?;
    let update = AccountUpdate { id: account.id, overdraft, status };
    let account = state.intake.update_account(&caller.0, update).await?;
    Ok(Json(dto::account(&account)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BalanceQuery {
    /// RFC 3339: the posted balance from entries effective at or before this time.
    pub as_of: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/accounts/{id}/balance", tag = "accounts",
    params(("id" = String, Path, description = "Account id"), BalanceQuery),
    responses((status = 200, body = BalanceAtDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn get_balance(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<String>,
    Params(query): Params<BalanceQuery>,
) -> ApiResult<Json<BalanceAtDto>> {
    let account = load_account(&state, &caller, &id).await?;
    let as_of = fields::timestamp(query.as_of.as_deref(), "as_of")?;
    let balance = match as_of {
        None => dto::balance(&account),
        Some(at) => {
            let before = Timestamp::from_unix_micros(at.as_unix_micros().saturating_add(1));
            let posted =
                state.engine.store().balance_before(&account.id, before).await?.unwrap_or(0);
            dto::posted_only(posted, account.currency)
        }
    };
    Ok(Json(BalanceAtDto {
        account_id: account.id.name().to_owned(),
        currency: account.currency.code().to_owned(),
        balance,
        as_of: as_of.map(Timestamp::to_rfc3339),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The `next_cursor` of the previous page.
    pub after: Option<u64>,
    /// At most 1000; default 100.
    pub limit: Option<usize>,
}

#[utoipa::path(
    get, path = "/v1/accounts/{id}/entries", tag = "accounts",
    params(("id" = String, Path, description = "Account id"), PageQuery),
    responses((status = 200, body = StatementDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn list_entries(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<String>,
    Params(query): Params<PageQuery>,
) -> ApiResult<Json<StatementDto>> {
    let account = load_account(&state, &caller, &id).await?;
    let page =
        state.engine.store().entries(&account.id, query.after, page_size(query.limit)).await?;
    Ok(Json(StatementDto {
        entries: page.items.iter().map(dto::entry).collect(),
        next_cursor: page.next_cursor,
    }))
}

// ---- transfers ----

/// A JSON transfer as the core's request, by the intake's rules; `key` comes from the header
/// or the batch item.
async fn transfer_request(
    state: &AppState,
    request: NewTransferDto,
    key: IdempotencyKey,
    tenant: &Tenant,
) -> Result<TransferRequest, Rejection> {
    state.intake.transfer(tenant, request.into_input(key)?).await
}

/// The HTTP answer to one transfer: 201 with the transfer, or the error status with the
/// declined record; a replay answers the same with `Idempotent-Replayed: true`.
fn transfer_response(result: TransferResult) -> ApiResult<Response> {
    let (transfer, replayed) = match result {
        TransferResult::Committed(transfer) => (transfer, false),
        TransferResult::Replayed(transfer) => (transfer, true),
        TransferResult::Rejected(rejection) => return Err(rejection.into()),
    };
    match &transfer.error {
        None => Ok(respond(StatusCode::CREATED, &dto::transfer(&transfer), replayed)),
        Some(rejection) => {
            let body = ErrorBody {
                error: ApiError::body(rejection).error,
                transfer: Some(dto::transfer(&transfer)),
            };
            Ok(respond(crate::error::status(rejection.code), &body, replayed))
        }
    }
}

async fn submit_one(
    state: &AppState,
    caller: &Caller,
    transfer: TransferRequest,
) -> ApiResult<Response> {
    transfer_response(state.intake.submit_one(&caller.0, transfer).await?)
}

#[utoipa::path(
    post, path = "/v1/transfers", tag = "transfers", request_body = NewTransferDto,
    params(("Idempotency-Key" = String, Header, description = "Makes the request safe to retry")),
    responses(
        (status = 201, description = "Posted, or held when `hold` is given", body = TransferDto),
        (status = 400, description = "Malformed, or declined (INVALID_AMOUNT, SAME_ACCOUNT, CURRENCY_MISMATCH)", body = ErrorBody),
        (status = 402, description = "Declined: INSUFFICIENT_FUNDS", body = ErrorBody),
        (status = 404, description = "Declined: ACCOUNT_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "Declined: frozen or closed account, overflow", body = ErrorBody),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED", body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn create_transfer(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Body(request): Body<NewTransferDto>,
) -> ApiResult<Response> {
    let key = idempotency_key(&headers)?;
    if fields::given(request.idempotency_key.as_deref())
        .is_some_and(|body_key| body_key != key.as_str())
    {
        return Err(ApiError::invalid(
            "idempotency_key in the body differs from the Idempotency-Key header",
        ));
    }
    let transfer = transfer_request(&state, request, key, caller.tenant()).await?;
    submit_one(&state, &caller, transfer).await
}

#[utoipa::path(
    post, path = "/v1/transfers/batch", tag = "transfers", request_body = TransferBatchDto,
    responses(
        (status = 200, description = "One result per transfer, in order", body = TransferBatchResultDto),
        (status = 400, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
pub async fn create_batch(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<TransferBatchDto>,
) -> ApiResult<Json<TransferBatchResultDto>> {
    Batch::check_size(request.transfers.len())?;
    let mut parsed: Vec<Result<TransferRequest, Rejection>> = Vec::new();
    for item in request.transfers {
        let key = item
            .idempotency_key
            .as_deref()
            .ok_or_else(|| Rejection::invalid("each transfer of a batch needs its idempotency_key"))
            .and_then(IdempotencyKey::parse_client);
        parsed.push(match key {
            Ok(key) => transfer_request(&state, item, key, caller.tenant()).await,
            Err(rejection) => Err(rejection),
        });
    }
    let linking = if request.linked { Linking::Linked } else { Linking::Independent };
    let results = state.intake.submit(&caller.0, Batch::new(parsed, linking)?).await?;
    let results = results
        .into_iter()
        .map(|result| match result {
            TransferResult::Committed(transfer) => TransferResultDto {
                error: transfer.error.as_ref().map(|error| ApiError::body(error).error),
                transfer: Some(dto::transfer(&transfer)),
                replayed: false,
            },
            TransferResult::Replayed(transfer) => TransferResultDto {
                error: transfer.error.as_ref().map(|error| ApiError::body(error).error),
                transfer: Some(dto::transfer(&transfer)),
                replayed: true,
            },
            TransferResult::Rejected(rejection) => TransferResultDto {
                transfer: None,
                replayed: false,
                error: Some(ApiError::body(&rejection).error),
            },
        })
        .collect();
    Ok(Json(TransferBatchResultDto { results }))
}

async fn resolve_hold(
    state: &AppState,
    caller: &Caller,
    id: &str,
    key: IdempotencyKey,
    capture: Option<CaptureDto>,
) -> ApiResult<Response> {
    let mut input = TransferInput::new(key);
    match capture {
        None => input.action = Action::Void { pending_id: id.to_owned() },
        Some(capture) => {
            input.action = Action::Capture { pending_id: id.to_owned() };
            input.amount = capture.amount;
            input.amount_minor = capture.amount_minor;
        }
    }
    let transfer = state.intake.transfer(caller.tenant(), input).await?;
    submit_one(state, caller, transfer).await
}

#[utoipa::path(
    post, path = "/v1/transfers/{id}/capture", tag = "transfers", request_body = CaptureDto,
    params(("id" = String, Path, description = "The hold's transfer id"), ("Idempotency-Key" = String, Header, description = "Makes the request safe to retry")),
    responses(
        (status = 201, description = "Captured: the capture transfer", body = TransferDto),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
pub async fn capture(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<String>,
    headers: HeaderMap,
    Body(request): Body<CaptureDto>,
) -> ApiResult<Response> {
    let key = idempotency_key(&headers)?;
    resolve_hold(&state, &caller, &id, key, Some(request)).await
}

#[utoipa::path(
    post, path = "/v1/transfers/{id}/void", tag = "transfers",
    params(("id" = String, Path, description = "The hold's transfer id"), ("Idempotency-Key" = String, Header, description = "Makes the request safe to retry")),
    responses(
        (status = 201, description = "Voided: the void transfer", body = TransferDto),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
pub async fn void(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let key = idempotency_key(&headers)?;
    resolve_hold(&state, &caller, &id, key, None).await
}

#[utoipa::path(
    get, path = "/v1/transfers/{id}", tag = "transfers",
    params(("id" = String, Path, description = "Transfer id (ULID)")),
    responses((status = 200, body = TransferDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn get_transfer(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<String>,
) -> ApiResult<Json<TransferDto>> {
    let not_found = || ApiError::not_found(format!("transfer {id} not found"));
    let transfer_id = TransferId::parse(&id).map_err(|_| not_found())?;
    let lookup = TransferLookup::Id(transfer_id);
    let transfer = state.intake.visible_transfer(&caller.0, lookup).await?.ok_or_else(not_found)?;
    Ok(Json(dto::transfer(&transfer)))
}

#[utoipa::path(
    get, path = "/v1/transfers/{id}/events", tag = "transfers",
    params(("id" = String, Path, description = "Transfer id (ULID)")),
    responses((status = 200, description = "The events about the transfer, in order: TransferPosted or TransferDeclined; a hold's HoldPlaced and HoldExpired; a capture's HoldCaptured, a void's HoldVoided", body = EventPageDto), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn transfer_events(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<String>,
) -> ApiResult<Json<EventPageDto>> {
    let not_found = || ApiError::not_found(format!("transfer {id} not found"));
    let transfer_id = TransferId::parse(&id).map_err(|_| not_found())?;
    let events =
        state.intake.transfer_events(&caller.0, transfer_id).await?.ok_or_else(not_found)?;
    let events = events
        .iter()
        .map(|event| dto::event(event, &kopek_events::EventDocument::of_stored(event)))
        .collect();
    Ok(Json(EventPageDto { events, next_cursor: None }))
}

/// The filters of a transfer search (`docs/api.md`, "Searching transfers"); every one is
/// optional and they combine with AND. Metadata filters are `metadata.KEY=VALUE`, any number.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the parameters; the handler reads the pairs themselves
pub struct SearchTransfersQuery {
    /// Debited or credited (holds, voids and declined transfers name it too).
    pub account: Option<String>,
    /// The key the transfer was created with.
    pub idempotency_key: Option<String>,
    /// Committed at or after this time (RFC 3339).
    pub after: Option<String>,
    /// Committed strictly before this time.
    pub before: Option<String>,
    /// Effective at or after this time.
    pub effective_after: Option<String>,
    /// Effective strictly before this time.
    pub effective_before: Option<String>,
    /// transfer, deposit, withdrawal, payment, purchase, fee, reversal or fx_leg.
    pub kind: Option<String>,
    /// posted, pending, captured, voided, expired or declined.
    pub status: Option<String>,
    pub currency: Option<String>,
    /// At least this amount, in `currency` (required with it).
    pub min_amount: Option<String>,
    /// At most this amount, in `currency`.
    pub max_amount: Option<String>,
    /// `desc` (newest first, the default) or `asc`.
    pub order: Option<String>,
    /// At most 1000; default 100. A page may hold fewer while `next_cursor` is set.
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// `entries`: each transfer comes with its debit and credit entries.
    pub include: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/transfers", tag = "transfers", params(SearchTransfersQuery),
    responses((status = 200, body = TransferListDto), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn search_transfers(
    State(state): State<AppState>,
    caller: Caller,
    Params(pairs): Params<Vec<(String, String)>>,
) -> ApiResult<Json<TransferListDto>> {
    let input =
        SearchInput::from_pairs(pairs.iter().map(|(name, value)| (name.as_str(), value.as_str())))?;
    let page = state.intake.search_transfers(&caller.0, &input).await?;
    let mut entries: Option<HashMap<TransferId, Vec<EntryDto>>> = page.entries.map(|entries| {
        let mut of_transfer: HashMap<TransferId, Vec<EntryDto>> = HashMap::new();
        for stored in &entries {
            of_transfer.entry(stored.entry.transfer_id).or_default().push(dto::entry(stored));
        }
        of_transfer
    });
    let transfers = page
        .transfers
        .iter()
        .map(|transfer| TransferDto {
            entries: entries
                .as_mut()
                .map(|entries| entries.remove(&transfer.id).unwrap_or_default()),
            ..dto::transfer(transfer)
        })
        .collect();
    Ok(Json(TransferListDto { transfers, next_cursor: page.next_cursor }))
}

// ---- users ----

#[utoipa::path(
    post, path = "/v1/users", tag = "users", request_body = NewUserDto,
    params(("Idempotency-Key" = String, Header, description = "Makes the request safe to retry")),
    responses(
        (status = 201, description = "Created (again on a replay, marked Idempotent-Replayed)", body = UserDto),
        (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Body(request): Body<NewUserDto>,
) -> ApiResult<Response> {
    let key = idempotency_key(&headers)?;
    let derived = request.id.is_none();
    let id = match &request.id {
        Some(id) => UserId::parse(id)?,
        None => UserId::parse(&derived_id("user", &key))?,
    };
    let currency = match &request.currency {
        Some(code) => Currency::parse(code)?,
        None => state.default_currency,
    };
    let new = NewUser { id: Some(id.clone()), name: request.name, currency };
    match state.intake.create_user(&caller.0, new).await? {
        UserResult::Created(user, account) => Ok(respond(
            StatusCode::CREATED,
            &dto::user(Some(&user), user.id.name(), &[account]),
            false,
        )),
        UserResult::Existed(user) => {
            let owner = Some(user.id.name().to_owned());
            let accounts =
                state.intake.list_accounts(&caller.0, owner, None, limits::PAGE_SIZE_MAX).await?;
            Ok(respond(
                StatusCode::CREATED,
                &dto::user(Some(&user), user.id.name(), &accounts),
                true,
            ))
        }
        UserResult::Rejected(rejection)
            if derived && rejection.code == ErrorCode::AccountExists =>
        {
            Err(ApiError::new(
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key created a user with another name",
            ))
        }
        UserResult::Rejected(rejection) => Err(rejection.into()),
    }
}

#[utoipa::path(
    get, path = "/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = UserDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<String>,
) -> ApiResult<Json<UserDto>> {
    let not_found = || ApiError::not_found(format!("user {id} not found"));
    let user_id = UserId::parse(&id).map_err(|_| not_found())?;
    let user = state.intake.visible_user(&caller.0, &user_id).await?;
    let owner = Some(user_id.name().to_owned());
    let accounts =
        state.intake.list_accounts(&caller.0, owner, None, limits::PAGE_SIZE_MAX).await?;
    if user.is_none() && accounts.is_empty() {
        return Err(not_found());
    }
    Ok(Json(dto::user(user.as_ref(), user_id.name(), &accounts)))
}

/// Longest owner id the spending route looks up.
const OWNER_BYTES_MAX: usize = 256;

/// What a user has spent, per category and currency: every posted transfer out of one of
/// the user's accounts (payments, transfers, withdrawals), kept by the analytics consumer a
/// moment after the transfers commit. A user who spent nothing has no totals.
#[utoipa::path(
    get, path = "/v1/users/{id}/spending", tag = "users",
    params(("id" = String, Path, description = "User id (the owner of the accounts)")),
    responses((status = 200, body = SpendingDto), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn get_spending(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<String>,
) -> ApiResult<Json<SpendingDto>> {
    if id.is_empty() || id.len() > OWNER_BYTES_MAX {
        return Err(ApiError::invalid(format!("a user id is 1 to {OWNER_BYTES_MAX} bytes")));
    }
    let totals = state.intake.spending(&caller.0, &id).await?;
    Ok(Json(dto::spending(&id, &totals)))
}

// ---- events ----

#[utoipa::path(
    get, path = "/v1/events", tag = "events", params(PageQuery),
    responses((status = 200, description = "Outbox events in order", body = EventPageDto), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn list_events(
    State(state): State<AppState>,
    caller: Caller,
    Params(query): Params<PageQuery>,
) -> ApiResult<Json<EventPageDto>> {
    access::may_read_event_log(&caller.0)?;
    let size = page_size(query.limit);
    let tenant = caller.tenant().as_str();
    let events =
        state.engine.store().events_after(Some(tenant), query.after.unwrap_or(0), size).await?;
    let next_cursor =
        (events.len() == size).then(|| events.last().map(|event| event.sequence)).flatten();
    let events = events
        .iter()
        .map(|event| dto::event(event, &kopek_events::EventDocument::of_stored(event)))
        .collect();
    Ok(Json(EventPageDto { events, next_cursor }))
}

// ---- orders ----

#[utoipa::path(
    get, path = "/v1/orders/{id}", tag = "users",
    params(("id" = String, Path, description = "Order id")),
    responses((status = 200, body = OrderDto), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn get_order(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<String>,
) -> ApiResult<Json<OrderDto>> {
    let not_found = || ApiError::not_found(format!("order {id} not found"));
    let order_id = kopek_core::OrderId::parse(&id).map_err(|_| not_found())?;
    let order = state.intake.visible_order(&caller.0, &order_id).await?.ok_or_else(not_found)?;
    Ok(Json(dto::order(&order)))
}

// ---- operations ----

/// A call of `POST /v1/admin/import`: records as `kopek export` writes them, one per line
/// of its file (`{"account": {...}}`, `{"transfer": {...}}`), replayed in order.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportDto {
    /// At most 1000.
    pub records: Vec<kopek_intake::import::ImportRecord>,
}

/// What became of one record: `created`, `existing` (the same is here already), `skipped`
/// (with the reason) or `failed` (with the error); `id` is its id in this ledger.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ImportedDto {
    pub outcome: &'static str,
    pub id: Option<String>,
    pub reason: Option<String>,
    pub error: Option<crate::error::ErrorDetail>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ImportResultDto {
    pub results: Vec<ImportedDto>,
}

#[utoipa::path(
    post, path = "/v1/admin/import", tag = "operations", request_body = ImportDto,
    responses(
        (status = 200, description = "One result per record, in order; a record that failed does not stop the others (docs/storage.md, \"Export and import\")", body = ImportResultDto),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
pub async fn import(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<ImportDto>,
) -> ApiResult<Json<ImportResultDto>> {
    use kopek_intake::import::Imported;
    let answers = state.intake.import(&caller.0, request.records).await?;
    let results = answers
        .into_iter()
        .map(|answer| {
            let (outcome, id, reason, error) = match answer {
                Imported::Created(id) => ("created", Some(id), None, None),
                Imported::Existing(id) => ("existing", Some(id), None, None),
                Imported::Skipped(reason) => ("skipped", None, Some(reason), None),
                Imported::Failed(rejection) => {
                    let detail = crate::error::ErrorDetail {
                        code: rejection.code.to_string(),
                        message: rejection.message,
                    };
                    ("failed", None, None, Some(detail))
                }
            };
            ImportedDto { outcome, id, reason, error }
        })
        .collect();
    Ok(Json(ImportResultDto { results }))
}

#[utoipa::path(
    get, path = "/v1/admin/backup", tag = "operations",
    responses(
        (status = 200, description = "A tar archive of a consistent backup of the embedded store, manifest last (restore it with `kopek restore`)", content_type = "application/x-tar"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
pub async fn backup(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    let taken = state.intake.backup(&caller.0).await?;
    let (sender, receiver) = tokio::sync::mpsc::channel(8);
    tokio::task::spawn_blocking(move || crate::archive::stream_tar(taken, sender));
    let body = axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(receiver));
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/x-tar"),
            (axum::http::header::CONTENT_DISPOSITION, "attachment; filename=\"kopek-backup.tar\""),
        ],
        body,
    )
        .into_response())
}
