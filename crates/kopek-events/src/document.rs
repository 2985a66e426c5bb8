//! The event document (`docs/events.md`): what every reader of an event receives, on the
//! brokers, in webhooks, on `StreamEvents`, `/v1/ws` and `/v1/events`. The store keeps the
//! event as the ledger recorded it (`EventBody::Record`); this module is the one place it
//! becomes a document. A row written before the store kept records holds its document
//! (`EventBody::Document`), which is read back as it was written.

use kopek_core::{
    Account, Event, Order, Overdraft, Quote, Subject, Timestamp, Transfer, User, format_minor,
};
use kopek_store::codec::{RATE_PLACES, fx_leg_json, terms_json};
use kopek_store::{EventBody, StoredEvent};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// An event's document. Fields are declared in key order, the order consumers have always
/// seen them printed in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventDocument {
    pub at: String,
    #[serde(default)]
    pub balances: Vec<BalanceDocument>,
    pub id: String,
    /// The subject's own document, whose fields `subject_type` decides (`docs/events.md`).
    #[serde(default)]
    pub subject: Value,
    #[serde(default)]
    pub subject_type: String,
    pub tenant: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// An account's balances after the change the event records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceDocument {
    pub account_id: String,
    /// What the account may still spend; `None` for an account without a limit.
    pub available_minor: Option<i64>,
    pub currency: String,
    pub pending_in_minor: i64,
    pub pending_out_minor: i64,
    pub posted_minor: i64,
}

impl EventDocument {
    /// The document of an event the ledger recorded.
    pub fn of(event: &Event) -> EventDocument {
        let (subject_type, subject) = match &event.subject {
            Subject::Account(account) => ("account", account_json(account)),
            Subject::Transfer(transfer) => ("transfer", transfer_json(transfer)),
            Subject::User(user) => ("user", user_json(user)),
            Subject::Order(order) => ("order", order_json(order)),
            Subject::Rate(rate) => ("rate", rate_json(rate)),
            Subject::Quote(quote) => ("quote", quote_json(quote)),
        };
        EventDocument {
            at: event.at.to_rfc3339(),
            balances: event
                .balances
                .iter()
                .map(|balance| BalanceDocument {
                    account_id: balance.account_id.name().to_owned(),
                    available_minor: balance
                        .available
                        .and_then(|available| i64::try_from(available).ok()),
                    currency: balance.currency.code().to_owned(),
                    pending_in_minor: balance.pending_in,
                    pending_out_minor: balance.pending_out,
                    posted_minor: balance.posted,
                })
                .collect(),
            id: event.id.to_string(),
            subject,
            subject_type: subject_type.to_owned(),
            tenant: event.tenant.as_str().to_owned(),
            kind: event.kind.as_str().to_owned(),
        }
    }

    /// The document of an outbox row. A stored document that does not read (never seen in a
    /// healthy store) still gives what the row's own columns say, with a warning: a reader
    /// is told the event happened rather than stopped.
    pub fn of_stored(stored: &StoredEvent) -> EventDocument {
        match &stored.body {
            EventBody::Record(event) => EventDocument::of(event),
            EventBody::Document(text) => serde_json::from_str(text).unwrap_or_else(|error| {
                tracing::warn!(event = %stored.id, %error, "a stored event document does not read");
                EventDocument::bare(stored)
            }),
        }
    }

    /// What the row's columns say: id, type, tenant and time.
    fn bare(stored: &StoredEvent) -> EventDocument {
        EventDocument {
            at: stored.at.to_rfc3339(),
            balances: Vec::new(),
            id: stored.id.clone(),
            subject: Value::Null,
            subject_type: String::new(),
            tenant: stored.tenant.clone(),
            kind: stored.kind.clone(),
        }
    }

    /// A text field of the subject (`owner`, `user_id`, `status`, ...).
    pub fn subject_text(&self, field: &str) -> Option<&str> {
        self.subject.get(field).and_then(Value::as_str)
    }

    /// The document as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn account_json(account: &Account) -> Value {
    json!({
        "id": account.id.name(),
        "currency": account.currency.code(),
        "owner": account.owner,
        "kind": account.kind.as_str(),
        "overdraft_limit_minor": match account.overdraft {
            Overdraft::Limited(limit) => Value::from(limit),
            Overdraft::Unbounded => Value::Null,
        },
        "status": account.status.as_str(),
        "metadata": account.metadata,
        "created_at": account.created_at.to_rfc3339(),
        "updated_at": account.updated_at.to_rfc3339(),
    })
}

fn transfer_json(transfer: &Transfer) -> Value {
    let time = |at: Timestamp| at.to_rfc3339();
    json!({
        "action": transfer.action.as_str(),
        "amount": transfer.currency.map(|currency| format_minor(transfer.amount, currency)),
        "amount_minor": transfer.amount,
        "captured_amount_minor": transfer.captured_amount,
        "category": transfer.details.category,
        "committed_at": time(transfer.committed_at),
        "credit_account_id": transfer.credit_account.as_ref().map(|id| id.name()),
        "currency": transfer.currency.as_ref().map(|currency| currency.code()),
        "debit_account_id": transfer.debit_account.as_ref().map(|id| id.name()),
        "description": transfer.details.description,
        "effective_at": time(transfer.effective_at),
        "error_code": transfer.error.as_ref().map(|error| error.code.as_str()),
        "error_message": transfer.error.as_ref().map(|error| error.message.as_str()),
        "expires_at": transfer.expires_at.map(time),
        "fx": transfer.fx.as_deref().map(fx_leg_json),
        "id": transfer.id.to_string(),
        "idempotency_key": transfer.idempotency_key.as_str(),
        "kind": transfer.kind.as_str(),
        "metadata": transfer.details.metadata,
        "pending_id": transfer.pending_id.map(|id| id.to_string()),
        "status": transfer.status.as_str(),
    })
}

fn quote_json(quote: &Quote) -> Value {
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

fn rate_json(rate: &kopek_core::FxRate) -> Value {
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

fn user_json(user: &User) -> Value {
    json!({"id": user.id.name(), "name": user.name, "created_at": user.created_at.to_rfc3339()})
}

fn order_json(order: &Order) -> Value {
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

#[cfg(test)]
mod tests {
    use super::*;
    use kopek_core::memory::{MemoryLedger, SequentialIds};
    use kopek_core::{
        AccountId, Batch, Command, CommandBody, Currency, Details, IdempotencyKey, Linking,
        Movement, NewAccount, Tenant, TransferKind, TransferRequest,
    };

    fn events() -> Vec<Event> {
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
        outcome.events
    }

    /// A document prints exactly as a `Value` map prints it (keys in order), which is what
    /// consumers have always seen, and reads back as itself.
    #[test]
    fn documents_print_in_key_order_and_read_back() {
        let mut types = Vec::new();
        for event in events() {
            let document = EventDocument::of(&event);
            let text = document.to_json();
            let value: Value = serde_json::from_str(&text).expect("json");
            assert_eq!(value.to_string(), text, "keys in order, nothing printed differently");
            let stored = StoredEvent {
                sequence: 1,
                id: event.id.to_string(),
                tenant: "default".to_owned(),
                kind: event.kind.as_str().to_owned(),
                subject_id: event.subject_id().to_owned(),
                at: event.at,
                body: EventBody::Document(text.clone()),
                traceparent: None,
            };
            assert_eq!(EventDocument::of_stored(&stored), document, "a stored document reads");
            types.push(document.subject_type.clone());
            if document.subject_type == "transfer" {
                let subject = &value["subject"];
                assert_eq!(
                    (subject["amount"].as_str(), subject["amount_minor"].as_i64()),
                    (Some("12.50"), Some(1_250))
                );
                assert_eq!(subject["metadata"]["order"], "o-1 \"quoted\"");
                assert_eq!(subject["error_code"], Value::Null);
                assert_eq!(document.subject_text("status"), Some("posted"));
                assert_eq!(value["balances"][0]["posted_minor"], json!(-1_250));
                assert_eq!(document.balances[0].account_id, "world:USD");
            }
        }
        assert_eq!(
            types,
            ["account", "account", "transfer"],
            "alice, the world account, the deposit"
        );
    }

    /// The document of a row written before the store kept records: the exact text a
    /// format-1 row of the embedded store holds (its golden test), read field by field.
    #[test]
    fn a_document_an_earlier_version_stored_still_reads() {
        let text = r#"{"at":"2026-11-21T19:30:42.061192Z","balances":[{"account_id":"bbd37e3cf-0009466","available_minor":999999999582,"currency":"USD","pending_in_minor":0,"pending_out_minor":0,"posted_minor":-418}],"id":"01M7ZSDSRD9ZZ8FJXH6REYFMR0","subject":{"action":"post","amount":"0.56","amount_minor":56,"category":"","currency":"USD","description":"","id":"01M7ZSDSRD9ZZ8FJXH6REYFMQZ","metadata":{"note":"ünïcode"},"status":"posted"},"subject_type":"transfer","tenant":"default","type":"TransferPosted"}"#;
        let stored = StoredEvent {
            sequence: 9,
            id: "01M7ZSDSRD9ZZ8FJXH6REYFMR0".to_owned(),
            tenant: "default".to_owned(),
            kind: "TransferPosted".to_owned(),
            subject_id: "01M7ZSDSRD9ZZ8FJXH6REYFMQZ".to_owned(),
            at: Timestamp::from_unix_micros(0),
            body: EventBody::Document(text.to_owned()),
            traceparent: None,
        };
        let document = EventDocument::of_stored(&stored);
        assert_eq!(document.kind, "TransferPosted");
        assert_eq!(document.balances[0].available_minor, Some(999_999_999_582));
        assert_eq!(document.subject_text("amount"), Some("0.56"));
        assert_eq!(document.to_json(), text, "read back as it was written");

        let broken = StoredEvent { body: EventBody::Document("not json".to_owned()), ..stored };
        let bare = EventDocument::of_stored(&broken);
        assert_eq!((bare.id.as_str(), bare.kind.as_str()), (broken.id.as_str(), "TransferPosted"));
        assert!(bare.balances.is_empty() && bare.subject.is_null());
    }
}
