//! Currency conversion over REST: rates (`/v1/fx/rates`, set by admins), quotes, read-only
//! price checks (`/v1/fx/convert`), the liquidity positions and the spread earned. A
//! cross-currency transfer is an ordinary `POST /v1/transfers` with `quote_id` (or
//! `to_currency`, priced at the current rate when the server allows it): see `rest`.
//!
//! Amounts round half-even in the minor units of the currency they are in; rates are shown
//! rounded half-even to 18 places, with the exact fraction beside them.

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, Body, ErrorBody, ErrorDetail, Params, Segments};
use crate::rest::idempotency_key;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kopek_core::fx::{DEFAULT_RATE_SOURCE, RATE_DIGITS_MAX, Side, Terms};
use kopek_core::{
    Currency, ErrorCode, FxLeg, FxRate, Quote, QuoteId, QuoteResult, Rate, RateResult, RateSet,
    Rejection, Timestamp, format_minor, limits,
};
use kopek_intake::conversion::{ConversionInput, QuoteInput};
use kopek_intake::fields::timestamp;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRateDto {
    /// How many units of the quote currency one unit of the base buys, as a decimal:
    /// `"0.9234"` (at most 18 places and 30 significant digits).
    pub rate: String,
    /// Who gave the rate, e.g. `ecb`; default `manual`.
    pub source: Option<String>,
    /// RFC 3339: from when the rate applies; absent, from now. Rates of a pair are set in
    /// time order.
    pub valid_from: Option<String>,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRateDto {
    pub base: String,
    pub quote: String,
    #[serde(flatten)]
    pub rate: SetRateDto,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RatesImportDto {
    pub rates: Vec<NewRateDto>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RateDto {
    pub base: String,
    pub quote: String,
    /// Rounded half-even to 18 places.
    pub rate: String,
    /// The exact rate as a fraction, `numerator/denominator`.
    pub rate_exact: String,
    pub source: String,
    pub valid_from: String,
    pub set_at: String,
}

fn rate_dto(rate: &FxRate) -> RateDto {
    RateDto {
        base: rate.base.to_string(),
        quote: rate.quote.to_string(),
        rate: rate.rate.to_decimal(RATE_DIGITS_MAX),
        rate_exact: rate.rate.to_fraction_text(),
        source: rate.source.clone(),
        valid_from: rate.valid_from.to_rfc3339(),
        set_at: rate.set_at.to_rfc3339(),
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RateSetResultDto {
    /// The pair's rate after the request (the one it set, or the one already there).
    pub rate: Option<RateDto>,
    /// False when the pair already had this rate and source: nothing was written.
    pub changed: bool,
    pub error: Option<ErrorDetail>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RatesImportResultDto {
    pub results: Vec<RateSetResultDto>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RatesDto {
    /// Cross rates are derived through this currency.
    pub base_currency: String,
    /// The stored rates in force now, one per pair.
    pub rates: Vec<RateDto>,
}

fn rate_set(base: &str, quote: &str, request: SetRateDto) -> Result<RateSet, Rejection> {
    Ok(RateSet {
        base: Currency::parse(base)?,
        quote: Currency::parse(quote)?,
        rate: Rate::parse(&request.rate)?,
        source: request.source.unwrap_or_else(|| DEFAULT_RATE_SOURCE.to_owned()),
        valid_from: timestamp(request.valid_from.as_deref(), "valid_from")?,
    })
}

/// Sets rates through the intake, which drops the tenant's cached rates: the next price here
/// sees them at once (other processes drop theirs on the `RateUpdated` event).
async fn set_rates(
    state: &AppState,
    caller: &Caller,
    rates: Vec<RateSet>,
) -> ApiResult<Vec<RateResult>> {
    Ok(state.intake.set_rates(&caller.0, rates).await?)
}

fn rate_result_dto(result: RateResult) -> RateSetResultDto {
    match result {
        RateResult::Set(rate) => {
            RateSetResultDto { rate: Some(rate_dto(&rate)), changed: true, error: None }
        }
        RateResult::Unchanged(rate) => {
            RateSetResultDto { rate: Some(rate_dto(&rate)), changed: false, error: None }
        }
        RateResult::Rejected(rejection) => RateSetResultDto {
            rate: None,
            changed: false,
            error: Some(ApiError::body(&rejection).error),
        },
    }
}

#[utoipa::path(
    put, path = "/v1/fx/rates/{base}/{quote}", tag = "fx", request_body = SetRateDto,
    params(("base" = String, Path, description = "ISO 4217 code"), ("quote" = String, Path, description = "ISO 4217 code")),
    responses(
        (status = 200, description = "Set, or already this rate (`changed: false`); a RateUpdated event when set", body = RateSetResultDto),
        (status = 400, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
pub async fn put_rate(
    State(state): State<AppState>,
    caller: Caller,
    Segments((base, quote)): Segments<(String, String)>,
    Body(request): Body<SetRateDto>,
) -> ApiResult<Json<RateSetResultDto>> {
    let request = rate_set(&base, &quote, request)?;
    match set_rates(&state, &caller, vec![request]).await?.pop() {
        Some(RateResult::Rejected(rejection)) => Err(rejection.into()),
        Some(result) => Ok(Json(rate_result_dto(result))),
        None => Err(ApiError::new(ErrorCode::Internal, "a result is missing")),
    }
}

#[utoipa::path(
    post, path = "/v1/fx/rates", tag = "fx", request_body = RatesImportDto,
    responses(
        (status = 200, description = "One result per rate, in order; each set rate commits with its RateUpdated event", body = RatesImportResultDto),
        (status = 400, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
pub async fn import_rates(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<RatesImportDto>,
) -> ApiResult<Json<RatesImportResultDto>> {
    if request.rates.is_empty() || request.rates.len() > limits::TRANSFERS_PER_REQUEST_MAX {
        return Err(ApiError::invalid(format!(
            "an import holds 1 to {} rates",
            limits::TRANSFERS_PER_REQUEST_MAX
        )));
    }
    let parsed: Vec<Result<RateSet, Rejection>> = request
        .rates
        .into_iter()
        .map(|rate| rate_set(&rate.base, &rate.quote, rate.rate))
        .collect();
    let valid: Vec<RateSet> =
        parsed.iter().filter_map(|item| item.as_ref().ok().cloned()).collect();
    let mut committed =
        if valid.is_empty() { Vec::new() } else { set_rates(&state, &caller, valid).await? }
            .into_iter();
    let results = parsed
        .into_iter()
        .map(|item| match item {
            Err(rejection) => rate_result_dto(RateResult::Rejected(rejection)),
            Ok(_) => rate_result_dto(committed.next().unwrap_or_else(|| {
                RateResult::Rejected(Rejection::new(ErrorCode::Internal, "a result is missing"))
            })),
        })
        .collect();
    Ok(Json(RatesImportResultDto { results }))
}

#[utoipa::path(
    get, path = "/v1/fx/rates", tag = "fx",
    responses((status = 200, body = RatesDto), (status = 503, body = ErrorBody))
)]
pub async fn list_rates(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<RatesDto>> {
    let rates = state.intake.fx().rates(caller.tenant()).await?;
    Ok(Json(RatesDto {
        base_currency: state.intake.fx().config().base.to_string(),
        rates: rates.iter().map(rate_dto).collect(),
    }))
}

/// A conversion's terms as the API shows them.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TermsDto {
    pub from: String,
    pub to: String,
    /// `sell`: the amount asked is what the payer gives; `buy`: what the payee receives.
    pub side: String,
    pub sell_amount: String,
    pub sell_amount_minor: i64,
    pub buy_amount: String,
    pub buy_amount_minor: i64,
    /// What the spread takes, in the target currency, booked to `fx-revenue:<TO>`.
    pub spread_amount: String,
    pub spread_amount_minor: i64,
    pub spread_bp: u32,
    /// The rate the customer gets (after the spread), rounded half-even to 18 places.
    pub rate: String,
    pub rate_exact: String,
    /// The rate from the stored rates, before the spread.
    pub mid_rate: String,
    /// How the rate was found: `USDEUR` (stored), `1/EURUSD` (inverse), `EURUSD * USDJPY`.
    pub rate_path: String,
    /// Always `half_even`, in the minor units of each amount's currency.
    pub rounding: String,
}

pub fn terms_dto(terms: &Terms) -> TermsDto {
    TermsDto {
        from: terms.from.to_string(),
        to: terms.to.to_string(),
        side: terms.side.as_str().to_owned(),
        sell_amount: format_minor(terms.sell_amount, terms.from),
        sell_amount_minor: terms.sell_amount,
        buy_amount: format_minor(terms.buy_amount, terms.to),
        buy_amount_minor: terms.buy_amount,
        spread_amount: format_minor(terms.spread_amount, terms.to),
        spread_amount_minor: terms.spread_amount,
        spread_bp: terms.spread_bp,
        rate: terms.rate.to_decimal(RATE_DIGITS_MAX),
        rate_exact: terms.rate.to_fraction_text(),
        mid_rate: terms.mid_rate.to_decimal(RATE_DIGITS_MAX),
        rate_path: terms.path.clone(),
        rounding: "half_even".to_owned(),
    }
}

/// The conversion a leg of a cross-currency transfer belongs to.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TransferFxDto {
    pub quote_id: String,
    /// `debit` (payer -> `fx:<FROM>`), `credit` (`fx:<TO>` -> payee) or `spread`.
    pub leg: String,
    pub payer_account_id: String,
    pub payee_account_id: String,
    #[serde(flatten)]
    pub terms: TermsDto,
}

pub fn transfer_fx_dto(leg: &FxLeg) -> TransferFxDto {
    TransferFxDto {
        quote_id: leg.quote_id.to_string(),
        leg: leg.role.as_str().to_owned(),
        payer_account_id: leg.payer.name().to_owned(),
        payee_account_id: leg.payee.name().to_owned(),
        terms: terms_dto(&leg.terms),
    }
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewQuoteDto {
    /// The currency the payer gives.
    pub from: String,
    /// The currency the payee receives.
    pub to: String,
    /// Decimal in major units of `from` (sell) or `to` (buy); or give `amount_minor`.
    pub amount: Option<String>,
    pub amount_minor: Option<i64>,
    /// `sell` (default) or `buy`.
    pub side: Option<String>,
    /// Less than the server's spread, in basis points; absent: the server's.
    pub spread_bp: Option<u32>,
    /// How long the quote lives, 1 to 86,400 s; absent: the server's (30 s by default).
    pub ttl_seconds: Option<u32>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct QuoteDto {
    pub id: String,
    #[serde(flatten)]
    pub terms: TermsDto,
    pub created_at: String,
    /// After this a transfer naming the quote is declined with `QUOTE_EXPIRED`.
    pub expires_at: String,
    /// The transfer that used the quote (a quote is used once).
    pub used_by_transfer_id: Option<String>,
}

fn quote_dto(quote: &Quote) -> QuoteDto {
    QuoteDto {
        id: quote.id.to_string(),
        terms: terms_dto(&quote.terms),
        created_at: quote.created_at.to_rfc3339(),
        expires_at: quote.expires_at.to_rfc3339(),
        used_by_transfer_id: quote.used_by.map(|id| id.to_string()),
    }
}

/// The side a request names; `None` (sell) when it names none.
fn side(text: Option<&str>) -> Result<Option<Side>, Rejection> {
    text.map(|text| Side::parse(text).ok_or_else(|| Rejection::invalid("side must be sell or buy")))
        .transpose()
}

#[utoipa::path(
    post, path = "/v1/fx/quotes", tag = "fx", request_body = NewQuoteDto,
    params(("Idempotency-Key" = String, Header, description = "Makes the request safe to retry")),
    responses(
        (status = 201, description = "Locked until `expires_at`; the same key answers the same quote (Idempotent-Replayed)", body = QuoteDto),
        (status = 400, body = ErrorBody), (status = 404, description = "No rate between the currencies", body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
pub async fn create_quote(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Body(request): Body<NewQuoteDto>,
) -> ApiResult<Response> {
    let input = QuoteInput {
        idempotency_key: idempotency_key(&headers)?,
        conversion: ConversionInput {
            from: request.from,
            to: request.to,
            side: side(request.side.as_deref())?,
            amount: request.amount,
            amount_minor: request.amount_minor,
        },
        spread_bp: request.spread_bp,
        ttl_seconds: request.ttl_seconds,
    };
    let (quote, replayed) = match state.intake.quote(&caller.0, input).await? {
        QuoteResult::Created(quote) => (quote, false),
        QuoteResult::Existed(quote) => (quote, true),
        QuoteResult::Rejected(rejection) => return Err(rejection.into()),
    };
    let mut response = (StatusCode::CREATED, Json(quote_dto(&quote))).into_response();
    if replayed {
        response
            .headers_mut()
            .insert(crate::rest::REPLAYED, axum::http::HeaderValue::from_static("true"));
    }
    Ok(response)
}

#[utoipa::path(
    get, path = "/v1/fx/quotes/{id}", tag = "fx",
    params(("id" = String, Path, description = "Quote id (ULID)")),
    responses((status = 200, body = QuoteDto), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn get_quote(
    State(state): State<AppState>,
    caller: Caller,
    Segments(id): Segments<String>,
) -> ApiResult<Json<QuoteDto>> {
    let not_found = || ApiError::not_found(format!("no quote {id}"));
    let quote_id = QuoteId::parse(&id).map_err(|_| not_found())?;
    let quote = state.engine.store().quote(quote_id).await?.ok_or_else(not_found)?;
    if quote.tenant != *caller.tenant() {
        return Err(not_found());
    }
    Ok(Json(quote_dto(&quote)))
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConvertDto {
    /// Decimal in major units of `from_currency` (sell) or `to_currency` (buy); or give
    /// `amount_minor`.
    pub amount: Option<String>,
    pub amount_minor: Option<i64>,
    pub from_currency: String,
    pub to_currency: String,
    /// `sell` (default) or `buy`.
    pub side: Option<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ConversionDto {
    /// The other side of the conversion: what `amount` buys (sell) or costs (buy), at the
    /// rate a quote would lock now.
    pub converted_amount: String,
    pub converted_amount_minor: i64,
    #[serde(flatten)]
    pub terms: TermsDto,
}

#[utoipa::path(
    post, path = "/v1/fx/convert", tag = "fx", request_body = ConvertDto,
    responses(
        (status = 200, description = "A price check: nothing is locked or written", body = ConversionDto),
        (status = 400, body = ErrorBody), (status = 404, description = "No rate between the currencies", body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn convert(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<ConvertDto>,
) -> ApiResult<Json<ConversionDto>> {
    let input = ConversionInput {
        from: request.from_currency,
        to: request.to_currency,
        side: side(request.side.as_deref())?,
        amount: request.amount,
        amount_minor: request.amount_minor,
    };
    let terms = state.intake.price(caller.tenant(), &input).await?;
    let (converted, currency) = match terms.side {
        Side::Sell => (terms.buy_amount, terms.to),
        Side::Buy => (terms.sell_amount, terms.from),
    };
    Ok(Json(ConversionDto {
        converted_amount: format_minor(converted, currency),
        converted_amount_minor: converted,
        terms: terms_dto(&terms),
    }))
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PositionDto {
    pub account_id: String,
    /// `liquidity` (`fx:<CUR>`) or `revenue` (`fx-revenue:<CUR>`).
    pub role: String,
    pub currency: String,
    /// What conversions left in the account: positive, the ledger holds more of the
    /// currency than it paid out; negative, it owes it to whoever provides the liquidity.
    pub posted: String,
    pub posted_minor: i64,
    /// Reserved by held conversions.
    pub pending_out_minor: i64,
    pub pending_in_minor: i64,
    /// How far the account may go below zero; absent: no limit.
    pub overdraft_limit_minor: Option<i64>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PositionsDto {
    pub positions: Vec<PositionDto>,
}

#[utoipa::path(
    get, path = "/v1/fx/positions", tag = "fx",
    responses((status = 200, description = "The liquidity and revenue accounts of conversions", body = PositionsDto), (status = 503, body = ErrorBody))
)]
pub async fn positions(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<PositionsDto>> {
    let accounts = state.engine.store().fx_accounts(caller.tenant()).await?;
    let positions = accounts
        .iter()
        .map(|account| PositionDto {
            account_id: account.id.name().to_owned(),
            role: if account.id.name().starts_with("fx-revenue:") {
                "revenue"
            } else {
                "liquidity"
            }
            .to_owned(),
            currency: account.currency.to_string(),
            posted: format_minor(account.balance.posted, account.currency),
            posted_minor: account.balance.posted,
            pending_out_minor: account.balance.pending_out,
            pending_in_minor: account.balance.pending_in,
            overdraft_limit_minor: match account.overdraft {
                kopek_core::Overdraft::Limited(limit) => Some(limit),
                kopek_core::Overdraft::Unbounded => None,
            },
        })
        .collect();
    Ok(Json(PositionsDto { positions }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SpreadQuery {
    /// RFC 3339, inclusive; absent: the beginning.
    pub from: Option<String>,
    /// RFC 3339, exclusive; absent: now.
    pub to: Option<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SpreadTotalDto {
    pub currency: String,
    pub amount: String,
    pub amount_minor: i64,
    /// Entries to the revenue account that make it up (one per conversion or capture).
    pub entries: u64,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SpreadDto {
    pub from: Option<String>,
    /// Absent: up to now.
    pub to: Option<String>,
    /// Spread booked to `fx-revenue:<CUR>` over the period, per currency.
    pub totals: Vec<SpreadTotalDto>,
}

#[utoipa::path(
    get, path = "/v1/fx/spread", tag = "fx", params(SpreadQuery),
    responses((status = 200, description = "The spread conversions earned over a period, by commit time", body = SpreadDto), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn spread(
    State(state): State<AppState>,
    caller: Caller,
    Params(query): Params<SpreadQuery>,
) -> ApiResult<Json<SpreadDto>> {
    let from = timestamp(query.from.as_deref(), "from")?;
    let to = timestamp(query.to.as_deref(), "to")?;
    let totals = state
        .engine
        .store()
        .fx_revenue(
            caller.tenant(),
            from.unwrap_or(Timestamp::from_unix_micros(0)),
            to.unwrap_or(Timestamp::from_unix_micros(i64::MAX)),
        )
        .await?
        .into_iter()
        .map(|total| SpreadTotalDto {
            currency: total.currency.to_string(),
            amount: format_minor(total.total_minor, total.currency),
            amount_minor: total.total_minor,
            entries: total.entries,
        })
        .collect();
    Ok(Json(SpreadDto {
        from: from.map(Timestamp::to_rfc3339),
        to: to.map(Timestamp::to_rfc3339),
        totals,
    }))
}
