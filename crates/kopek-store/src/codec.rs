//! Text forms shared by every backend: metadata as a JSON object, events as JSON documents.

use kopek_core::{Account, Event, Metadata, Order, Subject, Transfer, User, format_minor};
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
