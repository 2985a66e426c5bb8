//! Text forms shared by every backend: metadata as a JSON object, events as JSON documents.

use kopek_core::{
    Account, Currency, Event, FxLeg, FxRate, LegRole, Metadata, Order, Quote, QuoteId, Rate, Side,
    Subject, Terms, Transfer, User, format_minor,
};
use serde::Serialize;
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
        "id": account.id.name(),
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
    serde_json::to_value(TransferDocument::of(transfer)).unwrap_or(Value::Null)
}

/// A transfer as documents show it, serialised straight from borrowed fields: the outbox
/// writes one per transfer on the hot path, so no `Value` tree is built. Fields are in key
/// order, the order a `Value` map would print them in.
#[derive(Serialize)]
struct TransferDocument<'a> {
    action: &'static str,
    amount: Option<String>,
    amount_minor: i64,
    captured_amount_minor: i64,
    category: &'a str,
    committed_at: String,
    credit_account_id: Option<&'a str>,
    currency: Option<String>,
    debit_account_id: Option<&'a str>,
    description: &'a str,
    effective_at: String,
    error_code: Option<&'static str>,
    error_message: Option<&'a str>,
    expires_at: Option<String>,
    fx: Option<Value>,
    id: String,
    idempotency_key: &'a str,
    kind: &'static str,
    metadata: &'a kopek_core::Metadata,
    pending_id: Option<String>,
    status: &'static str,
}

impl<'a> TransferDocument<'a> {
    fn of(transfer: &'a Transfer) -> TransferDocument<'a> {
        TransferDocument {
            action: transfer.action.as_str(),
            amount: transfer.currency.map(|currency| format_minor(transfer.amount, currency)),
            amount_minor: transfer.amount,
            captured_amount_minor: transfer.captured_amount,
            category: &transfer.details.category,
            committed_at: transfer.committed_at.to_rfc3339(),
            credit_account_id: transfer.credit_account.as_ref().map(|id| id.name()),
            currency: transfer.currency.map(|currency| currency.code().to_owned()),
            debit_account_id: transfer.debit_account.as_ref().map(|id| id.name()),
            description: &transfer.details.description,
            effective_at: transfer.effective_at.to_rfc3339(),
            error_code: transfer.error.as_ref().map(|error| error.code.as_str()),
            error_message: transfer.error.as_ref().map(|error| error.message.as_str()),
            expires_at: transfer.expires_at.map(|at| at.to_rfc3339()),
            fx: transfer.fx.as_deref().map(fx_leg_json),
            id: transfer.id.to_string(),
            idempotency_key: transfer.idempotency_key.as_str(),
            kind: transfer.kind.as_str(),
            metadata: &transfer.details.metadata,
            pending_id: transfer.pending_id.map(|id| id.to_string()),
            status: transfer.status.as_str(),
        }
    }
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
    json!({"id": user.id.name(), "name": user.name, "created_at": user.created_at.to_rfc3339()})
}

pub fn order_json(order: &Order) -> Value {
    json!({
        "id": order.id.name(),
        "user_id": order.user.name(),
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
        Subject::Account(account) => ("account", SubjectDocument::Value(account_json(account))),
        Subject::Transfer(transfer) => {
            ("transfer", SubjectDocument::Transfer(Box::new(TransferDocument::of(transfer))))
        }
        Subject::User(user) => ("user", SubjectDocument::Value(user_json(user))),
        Subject::Order(order) => ("order", SubjectDocument::Value(order_json(order))),
        Subject::Rate(rate) => ("rate", SubjectDocument::Value(rate_json(rate))),
        Subject::Quote(quote) => ("quote", SubjectDocument::Value(quote_json(quote))),
    };
    let document = EventDocument {
        at: event.at.to_rfc3339(),
        balances: event
            .balances
            .iter()
            .map(|balance| BalanceDocument {
                account_id: balance.account_id.name(),
                available_minor: balance
                    .available
                    .and_then(|available| i64::try_from(available).ok()),
                currency: balance.currency.code(),
                pending_in_minor: balance.pending_in,
                pending_out_minor: balance.pending_out,
                posted_minor: balance.posted,
            })
            .collect(),
        id: event.id.to_string(),
        subject,
        subject_type,
        tenant: event.tenant.as_str(),
        kind: event.kind.as_str(),
    };
    serde_json::to_string(&document).unwrap_or_default()
}

/// The event document, serialised from borrowed fields in key order (see `TransferDocument`).
#[derive(Serialize)]
struct EventDocument<'a> {
    at: String,
    balances: Vec<BalanceDocument<'a>>,
    id: String,
    subject: SubjectDocument<'a>,
    subject_type: &'static str,
    tenant: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum SubjectDocument<'a> {
    Transfer(Box<TransferDocument<'a>>),
    Value(Value),
}

#[derive(Serialize)]
struct BalanceDocument<'a> {
    account_id: &'a str,
    available_minor: Option<i64>,
    currency: &'a str,
    pending_in_minor: i64,
    pending_out_minor: i64,
    posted_minor: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kopek_core::memory::{MemoryLedger, SequentialIds};
    use kopek_core::{
        AccountId, Batch, Command, CommandBody, Currency, Details, IdempotencyKey, Linking,
        Movement, NewAccount, Tenant, Timestamp, TransferKind, TransferRequest,
    };

    /// Documents are written straight from typed fields; they must read exactly as a
    /// `Value` map prints them (keys in order), which is what consumers have always seen.
    #[test]
    fn event_documents_print_as_value_maps_do() {
        let usd = Currency::parse("USD").expect("currency");
        let mut ledger = MemoryLedger::default();
        let tenant = Tenant::default_tenant();
        let alice = AccountId::parse("alice").expect("id");
        let mut details = Details { category: "food".to_owned(), ..Details::default() };
        details.metadata.insert("order".to_owned(), "o-1 \"quoted\"".to_owned());
        let deposit = TransferRequest {
            idempotency_key: IdempotencyKey::parse("d-1").expect("key"),
            kind: TransferKind::Deposit,
            movement: Movement::Move {
                debit_account: AccountId::world(usd),
                credit_account: alice.clone(),
                amount: 1_250,
                currency: usd,
                hold: None,
            },
            details,
            effective_at: None,
            open_if_missing: Vec::new(),
            fingerprint_extra: String::new(),
        };
        let batch = Batch {
            commands: vec![
                Command::new(
                    tenant.clone(),
                    kopek_core::Authority::Ledger,
                    CommandBody::CreateAccounts(vec![NewAccount::user(alice, usd)]),
                ),
                Command::new(
                    tenant,
                    kopek_core::Authority::Ledger,
                    CommandBody::CreateTransfers {
                        transfers: vec![deposit],
                        linking: Linking::Independent,
                    },
                ),
            ],
        };
        let outcome = ledger.execute(
            &batch,
            Timestamp::from_unix_micros(1_000_000),
            &mut SequentialIds::default(),
        );
        let mut kinds = Vec::new();
        for event in &outcome.events {
            let text = event_json(event);
            let value: Value = serde_json::from_str(&text).expect("json");
            assert_eq!(value.to_string(), text, "keys in order, nothing else printed differently");
            kinds.push(value["subject_type"].as_str().expect("subject type").to_owned());
            if value["subject_type"] == "transfer" {
                let subject = &value["subject"];
                assert_eq!(
                    subject,
                    &transfer_json(match &event.subject {
                        Subject::Transfer(transfer) => transfer,
                        other => panic!("{other:?}"),
                    })
                );
                assert_eq!(
                    (subject["amount"].as_str(), subject["amount_minor"].as_i64()),
                    (Some("12.50"), Some(1_250))
                );
                assert_eq!(subject["metadata"]["order"], "o-1 \"quoted\"");
                assert_eq!(subject["error_code"], Value::Null);
                assert_eq!(value["balances"][0]["posted_minor"], json!(-1_250));
            }
        }
        assert!(
            kinds.contains(&"transfer".to_owned()) && kinds.contains(&"account".to_owned()),
            "{kinds:?}"
        );
    }
}
