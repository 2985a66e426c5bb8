//! One transfer request, as every surface reads it. A surface decodes its wire shape into a
//! [`TransferInput`] (its own enums and key header are its business) and the rules below turn
//! it into the core's request, the same way for REST, kopek.v1 gRPC, the CLI and the broker.

use crate::{Intake, fields};
use kopek_core::fx::{Side, Terms};
use kopek_core::{
    AccountId, Amount, Currency, Details, ErrorCode, FxTerms, Hold, IdempotencyKey, Movement,
    Quote, QuoteId, Rejection, Tenant, TransferId, TransferKind, TransferRequest, format_minor,
};
use std::collections::BTreeMap;

/// What the request does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Move the amount now.
    Post,
    /// Reserve the amount (capture or void later); `None`: until captured or voided.
    Hold { timeout_seconds: Option<u32> },
    /// Capture a hold: all of it, or the amount given (the rest is released).
    Capture { pending_id: String },
    /// Release a hold.
    Void { pending_id: String },
}

/// A transfer request in the surfaces' common words: text as the caller sent it, parsed
/// here. Absent and empty text mean the same.
#[derive(Clone, Debug)]
pub struct TransferInput {
    pub idempotency_key: IdempotencyKey,
    pub kind: TransferKind,
    pub action: Action,
    pub debit_account_id: Option<String>,
    pub credit_account_id: Option<String>,
    /// Decimal in major units, e.g. `"12.50"`.
    pub amount: Option<String>,
    pub amount_minor: Option<i64>,
    pub currency: Option<String>,
    pub category: Option<String>,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// RFC 3339; absent: the commit time.
    pub effective_at: Option<String>,
    /// Convert at this quote's terms.
    pub quote_id: Option<String>,
    /// Convert into this currency at the rate in force now, if the server allows it.
    pub to_currency: Option<String>,
}

impl TransferInput {
    /// A request to post with every optional field absent.
    pub fn new(idempotency_key: IdempotencyKey) -> TransferInput {
        TransferInput {
            idempotency_key,
            kind: TransferKind::Transfer,
            action: Action::Post,
            debit_account_id: None,
            credit_account_id: None,
            amount: None,
            amount_minor: None,
            currency: None,
            category: None,
            description: None,
            metadata: BTreeMap::new(),
            effective_at: None,
            quote_id: None,
            to_currency: None,
        }
    }
}

/// What the ledger knows that a request's rules need; `Found::default()` is a ledger that
/// knows nothing and prices nothing (an unknown quote is then the ledger's to decline).
#[derive(Clone, Debug, Default)]
pub struct Found {
    /// The quote the request names, if it is the tenant's.
    pub quote: Option<Quote>,
    /// The currency of the hold a capture names.
    pub hold_currency: Option<Currency>,
    /// The terms of a conversion priced now (`to_currency`), when the server allows it.
    pub market: Option<Terms>,
}

impl Intake {
    /// The core's request for `input` in `tenant` (whose world account a deposit or a
    /// withdrawal goes through). It reads the store only when the rules need to: a quote whose
    /// currency or amount the request also states, a capture given in decimal (the hold's
    /// currency), or a conversion priced now.
    pub async fn transfer(
        &self,
        tenant: &Tenant,
        input: TransferInput,
    ) -> Result<TransferRequest, Rejection> {
        let found = self.look_up(tenant, &input).await?;
        transfer_request(tenant, input, &found)
    }

    async fn look_up(&self, tenant: &Tenant, input: &TransferInput) -> Result<Found, Rejection> {
        let unavailable = crate::access::unavailable;
        let mut found = Found::default();
        match &input.action {
            Action::Capture { pending_id } if fields::given(input.amount.as_deref()).is_some() => {
                if let Ok(id) = TransferId::parse(pending_id) {
                    let hold = self.engine.store().transfer(id).await.map_err(unavailable)?;
                    // Another tenant's hold is no hold here: its currency says nothing.
                    found.hold_currency =
                        hold.filter(|hold| hold.tenant == *tenant).and_then(|hold| hold.currency);
                }
            }
            Action::Capture { .. } | Action::Void { .. } => {}
            Action::Post | Action::Hold { .. } => {
                let quote_id = fields::given(input.quote_id.as_deref());
                if let Some(id) = quote_id.and_then(|text| QuoteId::parse(text).ok())
                    && stated(input)
                {
                    let quote = self.engine.store().quote(id).await.map_err(unavailable)?;
                    found.quote = quote.filter(|quote| quote.tenant == *tenant);
                }
                let to = fields::given(input.to_currency.as_deref());
                if let (None, Some(to)) = (quote_id, to)
                    && self.fx.config().implicit_quotes
                    && let Ok(currency) = fields::currency(input.currency.as_deref())
                    && let Ok(Some(amount)) =
                        fields::money(input.amount_minor, input.amount.as_deref(), currency)
                    && let Ok(to) = Currency::parse(to)
                {
                    found.market =
                        Some(self.fx.price(tenant, currency, to, Side::Sell, amount, None).await?);
                }
            }
        }
        Ok(found)
    }
}

/// The core's request for `input` in `tenant`, given what the ledger knows (`found`). Pure:
/// the same input and knowledge give the same answer on every surface.
pub fn transfer_request(
    tenant: &Tenant,
    input: TransferInput,
    found: &Found,
) -> Result<TransferRequest, Rejection> {
    let details = Details {
        category: input.category.clone().unwrap_or_default(),
        description: input.description.clone().unwrap_or_default(),
        metadata: input.metadata.clone(),
    };
    let effective_at = fields::timestamp(input.effective_at.as_deref(), "effective_at")?;
    let movement = match &input.action {
        Action::Capture { pending_id } => {
            let pending_id = pending(pending_id)?;
            let minor = match fields::given(input.amount.as_deref()) {
                None => input.amount_minor,
                Some(_) => {
                    // A decimal needs the hold's currency.
                    let currency = found.hold_currency.ok_or_else(|| {
                        Rejection::new(
                            ErrorCode::PendingNotFound,
                            format!("no hold with id {pending_id}"),
                        )
                    })?;
                    fields::money(input.amount_minor, input.amount.as_deref(), currency)?
                }
            };
            Movement::Capture { pending_id, amount: minor.map(Amount::new).transpose()? }
        }
        Action::Void { pending_id } => Movement::Void { pending_id: pending(pending_id)? },
        Action::Post | Action::Hold { .. } => movement(tenant, &input, found)?,
    };
    let request = TransferRequest {
        idempotency_key: input.idempotency_key,
        kind: input.kind,
        movement,
        details,
        effective_at,
        open_if_missing: Vec::new(),
        fingerprint_extra: String::new(),
    };
    request.validate()?;
    Ok(request)
}

fn movement(tenant: &Tenant, input: &TransferInput, found: &Found) -> Result<Movement, Rejection> {
    let hold = match input.action {
        Action::Hold { timeout_seconds } => Some(Hold { timeout_seconds }),
        _ => None,
    };
    let quote_id = fields::given(input.quote_id.as_deref());
    let to_currency = fields::given(input.to_currency.as_deref());
    if quote_id.is_some() && to_currency.is_some() {
        return Err(Rejection::invalid("give quote_id or to_currency, not both"));
    }
    if let Some(text) = quote_id {
        return quoted(input, text, hold, found.quote.as_ref());
    }
    let currency = fields::currency(input.currency.as_deref())?;
    let amount = fields::required_money(input.amount_minor, input.amount.as_deref(), currency)?;
    let (debit_account, credit_account) = sides(tenant, input, currency)?;
    match to_currency {
        None => Ok(Movement::Move { debit_account, credit_account, amount, currency, hold }),
        Some(text) => {
            Currency::parse(text)?;
            let terms = found.market.clone().ok_or_else(|| {
                Rejection::invalid(
                    "this server converts only at quoted rates: take a quote and send its quote_id",
                )
            })?;
            Ok(Movement::Exchange {
                debit_account,
                credit_account,
                terms: FxTerms::Market(Box::new(terms)),
                hold,
            })
        }
    }
}

/// A conversion at a quote's terms. The quote fixes both currencies and amounts: the request
/// may leave them out, and what it states must be what the quote sells. Payer and payee are
/// both named (no world account stands for two currencies). An unknown or expired quote is
/// the ledger's to decline (and record).
fn quoted(
    input: &TransferInput,
    text: &str,
    hold: Option<Hold>,
    quote: Option<&Quote>,
) -> Result<Movement, Rejection> {
    let id = QuoteId::parse(text)
        .map_err(|_| Rejection::invalid(format!("quote_id '{text}' is not a quote id")))?;
    let currency = fields::given(input.currency.as_deref()).map(Currency::parse).transpose()?;
    if let Some(quote) = quote {
        let sells = quote.terms.from;
        if let Some(currency) = currency.filter(|currency| *currency != sells) {
            return Err(Rejection::new(
                ErrorCode::CurrencyMismatch,
                format!("quote {id} sells {sells}, not {currency}"),
            ));
        }
        let amount = fields::money(input.amount_minor, input.amount.as_deref(), sells)?;
        if amount.is_some_and(|amount| amount != quote.terms.sell_amount) {
            return Err(Rejection::new(
                ErrorCode::InvalidAmount,
                format!(
                    "quote {id} sells {} {sells}; leave the amount out or send that",
                    format_minor(quote.terms.sell_amount, sells)
                ),
            ));
        }
    }
    Ok(Movement::Exchange {
        debit_account: required_side(input.debit_account_id.as_deref(), "debit_account_id")?,
        credit_account: required_side(input.credit_account_id.as_deref(), "credit_account_id")?,
        terms: FxTerms::Quote(id),
        hold,
    })
}

/// The request states an amount (which a quote must agree with).
fn stated(input: &TransferInput) -> bool {
    fields::given(input.currency.as_deref()).is_some()
        || fields::given(input.amount.as_deref()).is_some()
        || input.amount_minor.is_some()
}

fn pending(text: &str) -> Result<TransferId, Rejection> {
    TransferId::parse(text)
        .map_err(|_| Rejection::invalid(format!("pending_id '{text}' is not a transfer id")))
}

/// Both sides of a move in `currency`: a deposit's payer and a withdrawal's payee default to
/// the tenant's world account; every other side must be named.
fn sides(
    tenant: &Tenant,
    input: &TransferInput,
    currency: Currency,
) -> Result<(AccountId, AccountId), Rejection> {
    let world = || AccountId::world_in(tenant, currency);
    let side = |text: Option<&str>, default: bool, name: &str| match fields::given(text) {
        Some(text) => fields::account_id(text),
        None if default => Ok(world()),
        None => Err(Rejection::invalid(format!("{name} is required"))),
    };
    Ok((
        side(
            input.debit_account_id.as_deref(),
            input.kind == TransferKind::Deposit,
            "debit_account_id",
        )?,
        side(
            input.credit_account_id.as_deref(),
            input.kind == TransferKind::Withdrawal,
            "credit_account_id",
        )?,
    ))
}

fn required_side(text: Option<&str>, name: &str) -> Result<AccountId, Rejection> {
    fields::given(text)
        .ok_or_else(|| Rejection::invalid(format!("{name} is required")))
        .and_then(fields::account_id)
}
