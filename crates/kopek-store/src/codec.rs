//! Text forms shared by every backend: metadata as a JSON object, events as JSON documents.

use kopek_core::{
    Account, Currency, Event, FxLeg, FxRate, LegRole, Metadata, Order, Quote, QuoteId, Rate, Side,
    Subject, Terms, Transfer, User, format_minor,
};
use serde_json::{Map, Value, json};

pub fn metadata_to_json(metadata: &Metadata) -> String {
    let object: Map<String, Value> =
        metadata.iter().map(|(key, value)| (key.clone(), Value::String(value.clone()))).collect();
    Value::Object(object).to_string()
}

pub fn metadata_from_json(text: &str) -> Result<Metadata, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|error| format!("metadata is not JSON: {error}"))?;
    let Value::Object(object) = value else {
        return Err("metadata is not a JSON object".to_owned());
    };
    object
        .into_iter()
        .map(|(key, value)| match value {
            Value::String(text) => Ok((key, text)),
            other => Err(format!("metadata value of '{key}' is not a string: {other}")),
        })
        .collect()
}

pub fn account_json(account: &Account) -> Value {
    json!({
        "id": account.id.as_str(),
        "currency": account.currency.code(),
        "owner": account.owner,
        "kind": account.kind.as_str(),
        "overdraft_limit_minor": match account.overdraft {
            kopek_core::Overdraft::Limited(limit) => Value::from(limit),
            kopek_core::Overdraft::Unbounded => Value::Null,
        },
        "status": account.status.as_str(),
        "metadata": account.metadata,
        "created_at": account.created_at.to_rfc3339(),
        "updated_at": account.updated_at.to_rfc3339(),
    })
}

pub fn transfer_json(transfer: &Transfer) -> Value {
    let amount = transfer.currency.map(|currency| format_minor(transfer.amount, currency));
    json!({
        "id": transfer.id.to_string(),
        "idempotency_key": transfer.idempotency_key.as_str(),
        "kind": transfer.kind.as_str(),
        "action": transfer.action.as_str(),
        "status": transfer.status.as_str(),
        "debit_account_id": transfer.debit_account.as_ref().map(|id| id.as_str()),
        "credit_account_id": transfer.credit_account.as_ref().map(|id| id.as_str()),
        "amount_minor": transfer.amount,
        "amount": amount,
        "currency": transfer.currency.map(|currency| currency.code().to_owned()),
        "pending_id": transfer.pending_id.map(|id| id.to_string()),
        "error_code": transfer.error.as_ref().map(|error| error.code.as_str()),
        "error_message": transfer.error.as_ref().map(|error| error.message.as_str()),
        "expires_at": transfer.expires_at.map(|at| at.to_rfc3339()),
        "captured_amount_minor": transfer.captured_amount,
        "category": transfer.details.category,
        "description": transfer.details.description,
        "metadata": transfer.details.metadata,
        "effective_at": transfer.effective_at.to_rfc3339(),
        "committed_at": transfer.committed_at.to_rfc3339(),
        "fx": transfer.fx.as_deref().map(fx_leg_json),
    })
}

/// Rates in documents: a decimal rounded half-even to 18 places, and the exact fraction.
const RATE_PLACES: u32 = 18;

/// A conversion's terms; the same document is stored with each leg and sent in events.
pub fn terms_json(terms: &Terms) -> Value {
    json!({
        "from": terms.from.code(),
        "to": terms.to.code(),
        "side": terms.side.as_str(),
        "sell_amount_minor": terms.sell_amount,
        "sell_amount": format_minor(terms.sell_amount, terms.from),
        "buy_amount_minor": terms.buy_amount,
        "buy_amount": format_minor(terms.buy_amount, terms.to),
        "mid_amount_minor": terms.mid_amount,
        "spread_amount_minor": terms.spread_amount,
        "spread_amount": format_minor(terms.spread_amount, terms.to),
        "spread_bp": terms.spread_bp,
        "rate": terms.rate.to_decimal(RATE_PLACES),
        "rate_exact": terms.rate.to_fraction_text(),
        "mid_rate": terms.mid_rate.to_decimal(RATE_PLACES),
        "mid_rate_exact": terms.mid_rate.to_fraction_text(),
        "rate_path": terms.path,
        "rounding": "half_even",
    })
}

pub fn terms_from_json(value: &Value) -> Result<Terms, String> {
    let text = |field: &str| {
        value.get(field).and_then(Value::as_str).ok_or_else(|| format!("terms lack '{field}'"))
    };
    let number = |field: &str| {
        value.get(field).and_then(Value::as_i64).ok_or_else(|| format!("terms lack '{field}'"))
    };
    let currency = |field: &str| {
        text(field).and_then(|code| Currency::parse(code).map_err(|rejection| rejection.message))
    };
    let rate = |field: &str| {
        text(field).and_then(|exact| {
            Rate::parse_stored(exact)
                .ok_or_else(|| format!("terms' {field} '{exact}' is not a rate"))
        })
    };
    Ok(Terms {
        from: currency("from")?,
        to: currency("to")?,
        side: Side::parse(text("side")?).ok_or("terms' side is not sell or buy")?,
        sell_amount: number("sell_amount_minor")?,
        buy_amount: number("buy_amount_minor")?,
        mid_amount: number("mid_amount_minor")?,
        spread_amount: number("spread_amount_minor")?,
        mid_rate: rate("mid_rate_exact")?,
        rate: rate("rate_exact")?,
        spread_bp: u32::try_from(number("spread_bp")?)
            .map_err(|_| "terms' spread_bp is negative")?,
        path: text("rate_path")?.to_owned(),
    })
}

pub fn fx_leg_json(leg: &FxLeg) -> Value {
    json!({
        "quote_id": leg.quote_id.to_string(),
        "leg": leg.role.as_str(),
        "payer_account_id": leg.payer.as_str(),
        "payee_account_id": leg.payee.as_str(),
        "terms": terms_json(&leg.terms),
    })
}

pub fn fx_leg_from_json(text: &str) -> Result<FxLeg, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|error| format!("fx is not JSON: {error}"))?;
    let field = |name: &str| {
        value.get(name).and_then(Value::as_str).ok_or_else(|| format!("fx lacks '{name}'"))
    };
    let account = |name: &str| {
        field(name)
            .and_then(|id| kopek_core::AccountId::parse(id).map_err(|rejection| rejection.message))
    };
    Ok(FxLeg {
        quote_id: QuoteId::parse(field("quote_id")?).map_err(|rejection| rejection.message)?,
        role: LegRole::parse(field("leg")?).ok_or("fx leg is not debit, credit or spread")?,
        payer: account("payer_account_id")?,
        payee: account("payee_account_id")?,
        terms: terms_from_json(value.get("terms").ok_or("fx lacks its terms")?)?,
    })
}

pub fn quote_json(quote: &Quote) -> Value {
    json!({
        "id": quote.id.to_string(),
        "idempotency_key": quote.idempotency_key.as_ref().map(|key| key.as_str()),
        "terms": terms_json(&quote.terms),
        "created_at": quote.created_at.to_rfc3339(),
        "expires_at": quote.expires_at.to_rfc3339(),
        "used_by_transfer_id": quote.used_by.map(|id| id.to_string()),
        "used_at": quote.used_at.map(|at| at.to_rfc3339()),
    })
}

pub fn rate_json(rate: &FxRate) -> Value {
    json!({
        "base": rate.base.code(),
        "quote": rate.quote.code(),
        "rate": rate.rate.to_decimal(RATE_PLACES),
        "rate_exact": rate.rate.to_fraction_text(),
        "source": rate.source,
        "valid_from": rate.valid_from.to_rfc3339(),
        "set_at": rate.set_at.to_rfc3339(),
    })
}

pub fn user_json(user: &User) -> Value {
    json!({"id": user.id.as_str(), "name": user.name, "created_at": user.created_at.to_rfc3339()})
}

pub fn order_json(order: &Order) -> Value {
    json!({
        "id": order.id.as_str(),
        "user_id": order.user.as_str(),
        "amount_minor": order.amount,
        "amount": format_minor(order.amount, order.currency),
        "currency": order.currency.code(),
        "status": order.status.as_str(),
        "failure_code": order.failure.as_ref().map(|failure| failure.code.as_str()),
        "failure_message": order.failure.as_ref().map(|failure| failure.message.as_str()),
        "payment_id": order.payment_id.map(|id| id.to_string()),
        "created_at": order.created_at.to_rfc3339(),
        "updated_at": order.updated_at.to_rfc3339(),
    })
}

/// The event document published to consumers. The outbox sequence is added by the relay.
pub fn event_json(event: &Event) -> String {
    let (subject_type, subject) = match &event.subject {
        Subject::Account(account) => ("account", account_json(account)),
        Subject::Transfer(transfer) => ("transfer", transfer_json(transfer)),
        Subject::User(user) => ("user", user_json(user)),
        Subject::Order(order) => ("order", order_json(order)),
        Subject::Rate(rate) => ("rate", rate_json(rate)),
        Subject::Quote(quote) => ("quote", quote_json(quote)),
    };
    let balances: Vec<Value> = event
        .balances
        .iter()
        .map(|balance| {
            json!({
                "account_id": balance.account_id.as_str(),
                "currency": balance.currency.code(),
                "posted_minor": balance.posted,
                "pending_out_minor": balance.pending_out,
                "pending_in_minor": balance.pending_in,
                "available_minor": balance.available.and_then(|available| i64::try_from(available).ok()),
            })
        })
        .collect();
    json!({
        "id": event.id.to_string(),
        "type": event.kind.as_str(),
        "tenant": event.tenant.as_str(),
        "at": event.at.to_rfc3339(),
        "subject_type": subject_type,
        "subject": subject,
        "balances": balances,
    })
    .to_string()
}
