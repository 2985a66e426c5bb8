//! Text forms shared by every backend: metadata as a JSON object, a conversion's terms and
//! legs as JSON (the same terms document events carry; `kopek-events` renders the rest of an
//! event's document).

use kopek_core::{Currency, FxLeg, LegRole, Metadata, QuoteId, Rate, Side, Terms, format_minor};
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

/// Rates in documents: a decimal rounded half-even to 18 places, and the exact fraction.
pub const RATE_PLACES: u32 = 18;

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
        "payer_account_id": leg.payer.name(),
        "payee_account_id": leg.payee.name(),
        "terms": terms_json(&leg.terms),
    })
}

/// A leg's conversion from its JSON, its accounts in `tenant` (the JSON names them).
pub fn fx_leg_from_json(text: &str, tenant: &kopek_core::Tenant) -> Result<FxLeg, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|error| format!("fx is not JSON: {error}"))?;
    let field = |name: &str| {
        value.get(name).and_then(Value::as_str).ok_or_else(|| format!("fx lacks '{name}'"))
    };
    let account = |name: &str| {
        field(name).and_then(|id| {
            kopek_core::AccountId::parse(id)
                .map(|id| id.in_tenant(tenant))
                .map_err(|rejection| rejection.message)
        })
    };
    Ok(FxLeg {
        quote_id: QuoteId::parse(field("quote_id")?).map_err(|rejection| rejection.message)?,
        role: LegRole::parse(field("leg")?).ok_or("fx leg is not debit, credit or spread")?,
        payer: account("payer_account_id")?,
        payee: account("payee_account_id")?,
        terms: terms_from_json(value.get("terms").ok_or("fx lacks its terms")?)?,
    })
}
