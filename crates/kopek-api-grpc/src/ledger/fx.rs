//! Exchange rates, quotes and price checks.

use super::*;

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
                valid_from: convert::timestamp(&input.valid_from, "valid_from")?,
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
    let priced = async {
        let key = IdempotencyKey::parse_client(&request.idempotency_key)?;
        let (from, to) = (Currency::parse(&request.from)?, Currency::parse(&request.to)?);
        let side = convert::side(request.side)?;
        let currency = if side == Side::Sell { from } else { to };
        let amount = convert::money(request.amount_minor, &request.amount, currency)?;
        let config = service.fx().config();
        if request.spread_bp.is_some_and(|spread| spread > config.spread_bp) {
            return Err(Rejection::invalid(format!(
                "spread_bp may only lower the server's spread of {} basis points",
                config.spread_bp
            )));
        }
        let ttl_seconds =
            if request.ttl_seconds == 0 { config.quote_ttl_seconds } else { request.ttl_seconds };
        let terms =
            service.fx().price(&caller.tenant, from, to, side, amount, request.spread_bp).await?;
        Ok(NewQuote { idempotency_key: key, terms, ttl_seconds })
    };
    let new_quote = priced.await.map_err(|r: Rejection| rejection_status(&r))?;
    let result =
        service.intake.create_quote(&caller, new_quote).await.map_err(|r| rejection_status(&r))?;
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
    let priced = async {
        let from = Currency::parse(&request.from_currency)?;
        let to = Currency::parse(&request.to_currency)?;
        let side = convert::side(request.side)?;
        let currency = if side == Side::Sell { from } else { to };
        let amount = convert::money(request.amount_minor, &request.amount, currency)?;
        service.fx().price(&caller.tenant, from, to, side, amount, None).await
    };
    let terms = priced.await.map_err(|r: Rejection| rejection_status(&r))?;
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
