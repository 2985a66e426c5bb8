//! Exchange rates, quotes and price checks.

use super::*;
use kopek_intake::conversion::{ConversionInput, QuoteInput};

pub(super) async fn set_rates(
    service: &LedgerService,
    request: Request<pb::SetRatesRequest>,
) -> Result<Response<pb::SetRatesResponse>, Status> {
    let caller = principal(&request)?;
    let inputs = request.into_inner().rates;
    if inputs.is_empty() || inputs.len() > limits::TRANSFERS_PER_REQUEST_MAX {
        return Err(Status::invalid_argument(format!(
            "INVALID_ARGUMENT: a request sets 1 to {} rates",
            limits::TRANSFERS_PER_REQUEST_MAX
        )));
    }
    let parsed: Vec<Result<RateSet, Rejection>> = inputs
        .into_iter()
        .map(|input| {
            Ok(RateSet {
                base: Currency::parse(&input.base)?,
                quote: Currency::parse(&input.quote)?,
                rate: kopek_core::Rate::parse(&input.rate)?,
                source: if input.source.is_empty() {
                    kopek_core::fx::DEFAULT_RATE_SOURCE.to_owned()
                } else {
                    input.source
                },
                valid_from: fields::timestamp(Some(&input.valid_from), "valid_from")?,
            })
        })
        .collect();
    let valid: Vec<RateSet> =
        parsed.iter().filter_map(|item| item.as_ref().ok().cloned()).collect();
    let mut committed = if valid.is_empty() {
        Vec::new()
    } else {
        service.intake.set_rates(&caller, valid).await.map_err(|r| rejection_status(&r))?
    }
    .into_iter();
    let results = parsed
        .into_iter()
        .map(|item| {
            let result = match item {
                Err(rejection) => RateResult::Rejected(rejection),
                Ok(_) => committed.next().unwrap_or_else(|| {
                    RateResult::Rejected(Rejection::new(ErrorCode::Internal, "a result is missing"))
                }),
            };
            match result {
                RateResult::Set(rate) => pb::RateResult {
                    rate: Some(convert::exchange_rate(&rate)),
                    changed: true,
                    error: None,
                },
                RateResult::Unchanged(rate) => pb::RateResult {
                    rate: Some(convert::exchange_rate(&rate)),
                    changed: false,
                    error: None,
                },
                RateResult::Rejected(rejection) => pb::RateResult {
                    rate: None,
                    changed: false,
                    error: Some(convert::error(&rejection)),
                },
            }
        })
        .collect();
    Ok(Response::new(pb::SetRatesResponse { results }))
}

pub(super) async fn list_rates(
    service: &LedgerService,
    request: Request<pb::ListRatesRequest>,
) -> Result<Response<pb::ListRatesResponse>, Status> {
    let caller = principal(&request)?;
    let rates = service.fx().rates(&caller.tenant).await.map_err(|r| rejection_status(&r))?;
    Ok(Response::new(pb::ListRatesResponse {
        base_currency: service.fx().config().base.to_string(),
        rates: rates.iter().map(convert::exchange_rate).collect(),
    }))
}

pub(super) async fn create_quote(
    service: &LedgerService,
    request: Request<pb::CreateQuoteRequest>,
) -> Result<Response<pb::CreateQuoteResponse>, Status> {
    let caller = principal(&request)?;
    let request = request.into_inner();
    let input = async {
        Ok::<_, Rejection>(QuoteInput {
            idempotency_key: IdempotencyKey::parse_client(&request.idempotency_key)?,
            conversion: ConversionInput {
                from: request.from,
                to: request.to,
                side: Some(convert::side(request.side)?),
                amount: Some(request.amount),
                amount_minor: (request.amount_minor != 0).then_some(request.amount_minor),
            },
            spread_bp: request.spread_bp,
            ttl_seconds: Some(request.ttl_seconds),
        })
    };
    let input = input.await.map_err(|r| rejection_status(&r))?;
    let result = service.intake.quote(&caller, input).await.map_err(|r| rejection_status(&r))?;
    let (quote, replayed) = match result {
        QuoteResult::Created(quote) => (quote, false),
        QuoteResult::Existed(quote) => (quote, true),
        QuoteResult::Rejected(rejection) => return Err(rejection_status(&rejection)),
    };
    Ok(Response::new(pb::CreateQuoteResponse { quote: Some(convert::quote(&quote)), replayed }))
}

pub(super) async fn get_quote(
    service: &LedgerService,
    request: Request<pb::GetQuoteRequest>,
) -> Result<Response<pb::GetQuoteResponse>, Status> {
    let caller = principal(&request)?;
    let id = request.into_inner().id;
    let not_found = || Status::not_found(format!("NOT_FOUND: no quote {id}"));
    let quote_id = QuoteId::parse(&id).map_err(|_| not_found())?;
    let quote = service
        .engine()
        .store()
        .quote(quote_id)
        .await
        .map_err(store_status)?
        .filter(|quote| quote.tenant == caller.tenant)
        .ok_or_else(not_found)?;
    Ok(Response::new(pb::GetQuoteResponse { quote: Some(convert::quote(&quote)) }))
}

pub(super) async fn convert(
    service: &LedgerService,
    request: Request<pb::ConvertRequest>,
) -> Result<Response<pb::ConvertResponse>, Status> {
    let caller = principal(&request)?;
    let request = request.into_inner();
    let side = convert::side(request.side).map_err(|r| rejection_status(&r))?;
    let input = ConversionInput {
        from: request.from_currency,
        to: request.to_currency,
        side: Some(side),
        amount: Some(request.amount),
        amount_minor: (request.amount_minor != 0).then_some(request.amount_minor),
    };
    let terms =
        service.intake.price(&caller.tenant, &input).await.map_err(|r| rejection_status(&r))?;
    let (converted, currency) = match terms.side {
        Side::Sell => (terms.buy_amount, terms.to),
        Side::Buy => (terms.sell_amount, terms.from),
    };
    Ok(Response::new(pb::ConvertResponse {
        converted_amount_minor: converted,
        converted_amount: kopek_core::format_minor(converted, currency),
        terms: Some(convert::conversion_terms(&terms)),
    }))
}
