//! What a command message says. Two shapes, each as JSON or protobuf:
//!
//! - the kopek.v1 transfer: JSON as `POST /v1/transfers` takes it, with `idempotency_key` in
//!   the body; protobuf `kopek.v1.TransferRequest`;
//! - the streaming contract's `transaction.Transaction` (JSON with its proto field names,
//!   `transactionId`, `userId`, ...); its idempotency key is `txn:<transactionId>`, shared with
//!   `StreamTransactions`.
//!
//! Protobuf is chosen by the content type `application/x-protobuf` (or `application/protobuf`),
//! with `; messageType=transaction.Transaction` for the contract's message; anything else is
//! read as JSON and told apart by its fields.

use kopek_core::{
    Amount, Currency, ErrorCode, IdempotencyKey, Movement, Rejection, TransferRequest,
};
use kopek_intake::Intake;
use kopek_intake::contract::{self as rules, Transaction};
use kopek_intake::json::NewTransferDto;
use kopek_intake::wire;
use kopek_proto::kopek::v1 as pb;
use kopek_proto::transaction as contract;
use prost::Message;
use serde::Deserialize;

/// A command that can be answered: its key, and the transfer or why it is refused.
#[derive(Debug)]
pub struct Decoded {
    pub idempotency_key: String,
    pub request: Result<TransferRequest, Rejection>,
}

/// The contract's `Transaction` in JSON, with the proto field names.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TransactionJson {
    transaction_id: String,
    #[serde(default)]
    user_id: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    amount: f64,
    #[serde(default)]
    currency: String,
    #[serde(default)]
    timestamp: String,
}

/// `Err`: the message is poison (it cannot be read as a command at all), with the reason. A
/// readable command is read by the intake's rules, as the API would read it.
pub async fn decode(
    intake: &Intake,
    body: &[u8],
    content_type: Option<&str>,
) -> Result<Decoded, String> {
    let content_type = content_type.unwrap_or_default().to_ascii_lowercase();
    if content_type.starts_with("application/x-protobuf")
        || content_type.starts_with("application/protobuf")
    {
        let message_type = content_type
            .split(';')
            .skip(1)
            .filter_map(|param| param.trim().split_once('='))
            .find(|(name, _)| *name == "messagetype")
            .map(|(_, value)| value.trim_matches('"').to_owned())
            .unwrap_or_else(|| "kopek.v1.transferrequest".to_owned());
        return match message_type.as_str() {
            "transaction.transaction" => {
                let transaction = contract::Transaction::decode(body)
                    .map_err(|error| format!("not a protobuf transaction.Transaction: {error}"))?;
                Ok(from_transaction(wire::transaction(transaction)))
            }
            "kopek.v1.transferrequest" => {
                let request = pb::TransferRequest::decode(body)
                    .map_err(|error| format!("not a protobuf kopek.v1.TransferRequest: {error}"))?;
                if request.idempotency_key.is_empty() {
                    return Err("the transfer has no idempotency_key".to_owned());
                }
                let idempotency_key = request.idempotency_key.clone();
                let request = match wire::transfer_input(request) {
                    Ok(input) => intake.transfer(&ingested_tenant(), input).await,
                    Err(rejection) => Err(rejection),
                };
                Ok(Decoded { idempotency_key, request })
            }
            other => Err(format!(
                "unknown messageType {other:?} (kopek.v1.TransferRequest or transaction.Transaction)"
            )),
        };
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|error| format!("not JSON: {error}"))?;
    if value.get("transactionId").is_some() {
        let transaction: TransactionJson = serde_json::from_value(value)
            .map_err(|error| format!("not a transaction.Transaction: {error}"))?;
        let exact = transaction.amount;
        let currency = transaction.currency.clone();
        let mut decoded = from_transaction(Transaction {
            transaction_id: transaction.transaction_id,
            user_id: transaction.user_id,
            category: transaction.category,
            // The contract's amount is a 32-bit float...
            amount: exact as f32,
            currency: transaction.currency,
            timestamp: transaction.timestamp,
        });
        // ...but JSON carries more: never book a rounded amount in its place.
        if let Ok(request) = &decoded.request
            && let Movement::Move { amount, .. } = request.movement
        {
            let intended = Currency::parse(&currency)
                .and_then(|currency| Amount::from_f64_major(exact, currency));
            if intended.map(Amount::minor) != Ok(amount) {
                decoded.request = Err(Rejection::new(
                    ErrorCode::InvalidAmount,
                    format!(
                        "amount {exact} does not survive the contract's 32-bit float; send it as a kopek.v1 transfer"
                    ),
                ));
            }
        }
        return Ok(decoded);
    }
    let transfer: NewTransferDto = serde_json::from_value(value)
        .map_err(|error| format!("not a kopek.v1 transfer: {error}"))?;
    let Some(key) = transfer.idempotency_key.clone() else {
        return Err("the transfer has no idempotency_key".to_owned());
    };
    let request = match IdempotencyKey::parse_client(&key).and_then(|key| transfer.into_input(key))
    {
        Ok(input) => intake.transfer(&ingested_tenant(), input).await,
        Err(rejection) => Err(rejection),
    };
    Ok(Decoded { idempotency_key: key, request })
}

fn from_transaction(transaction: Transaction) -> Decoded {
    Decoded {
        idempotency_key: format!("txn:{}", transaction.transaction_id),
        request: rules::transfer_request(&transaction, &ingested_tenant()),
    }
}

/// Commands from the broker carry no key: they are the default tenant's.
fn ingested_tenant() -> kopek_core::Tenant {
    kopek_core::Tenant::default_tenant()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kopek_engine::{Engine, EngineConfig};
    use std::sync::Arc;

    /// An intake over a fresh ledger in `dir`.
    fn intake(dir: &tempfile::TempDir) -> Intake {
        let store: Arc<dyn kopek_store::Store> =
            Arc::new(kopek_store_sqlite::SqliteStore::open(dir.path()).expect("open"));
        let fx = kopek_fx::Fx::local(store.clone(), kopek_fx::FxConfig::default());
        let (engine, _writer) = Engine::start(store, EngineConfig::default());
        Intake::new(engine, fx)
    }

    #[tokio::test]
    async fn both_shapes_decode_from_json_and_protobuf() {
        let dir = tempfile::tempdir().expect("temp dir");
        let intake = intake(&dir);
        let transfer = br#"{"idempotency_key": "k1", "kind": "deposit", "credit_account_id": "a", "amount": "1.50", "currency": "USD"}"#;
        let decoded = decode(&intake, transfer, Some("application/json")).await.expect("transfer");
        assert_eq!(decoded.idempotency_key, "k1");
        assert_eq!(decoded.request.expect("valid").idempotency_key.as_str(), "k1");

        let transaction = br#"{"transactionId": "t1", "userId": "u1", "category": "Food", "amount": 2.5, "currency": "USD", "timestamp": "2026-11-21T10:00:00Z"}"#;
        let decoded = decode(&intake, transaction, None).await.expect("transaction");
        assert_eq!(decoded.idempotency_key, "txn:t1");
        assert!(decoded.request.is_ok());

        let proto = pb::TransferRequest {
            idempotency_key: "k2".to_owned(),
            kind: pb::TransferKind::Deposit as i32,
            credit_account_id: "a".to_owned(),
            amount_minor: 5,
            currency: "USD".to_owned(),
            ..Default::default()
        };
        let decoded = decode(&intake, &proto.encode_to_vec(), Some("application/x-protobuf"))
            .await
            .expect("proto");
        assert_eq!(decoded.idempotency_key, "k2");
        assert!(decoded.request.is_ok());

        let contract = contract::Transaction {
            transaction_id: "t2".to_owned(),
            user_id: "u1".to_owned(),
            category: "Food".to_owned(),
            amount: 1.0,
            currency: "USD".to_owned(),
            timestamp: "2026-11-21T10:00:00Z".to_owned(),
        };
        let decoded = decode(
            &intake,
            &contract.encode_to_vec(),
            Some("application/x-protobuf; messageType=transaction.Transaction"),
        )
        .await
        .expect("contract proto");
        assert_eq!(decoded.idempotency_key, "txn:t2");
    }

    #[tokio::test]
    async fn a_readable_command_with_bad_fields_is_refused_not_poison() {
        let dir = tempfile::tempdir().expect("temp dir");
        let intake = intake(&dir);
        let bad = br#"{"idempotency_key": "k3", "credit_account_id": "a", "debit_account_id": "b", "amount": "-1", "currency": "USD"}"#;
        let decoded = decode(&intake, bad, None).await.expect("readable");
        assert!(decoded.request.is_err());
    }

    #[tokio::test]
    async fn a_json_amount_a_float_would_round_is_refused_not_rounded() {
        let dir = tempfile::tempdir().expect("temp dir");
        let intake = intake(&dir);
        let body = br#"{"transactionId": "t9", "userId": "u1", "category": "deposit", "amount": 1234567.81, "currency": "USD"}"#;
        let refused =
            decode(&intake, body, None).await.expect("readable").request.expect_err("refused");
        assert_eq!(refused.code, ErrorCode::InvalidAmount);
        let body = br#"{"transactionId": "t10", "userId": "u1", "category": "deposit", "amount": 19.99, "currency": "USD"}"#;
        assert!(decode(&intake, body, None).await.expect("readable").request.is_ok());
    }

    #[tokio::test]
    async fn poison_says_why() {
        let dir = tempfile::tempdir().expect("temp dir");
        let intake = intake(&dir);
        for (body, content_type, says) in [
            (&b"{not json"[..], None, "not JSON"),
            (&br#"{"kind": "deposit", "currency": "USD"}"#[..], None, "no idempotency_key"),
            (
                &br#"{"surprise": 1, "currency": "USD", "idempotency_key": "x"}"#[..],
                None,
                "not a kopek.v1 transfer",
            ),
            (&b"\xff\xff\xff"[..], Some("application/x-protobuf"), "not a protobuf"),
            (&b""[..], Some("application/x-protobuf; messageType=foo.Bar"), "unknown messageType"),
        ] {
            let reason = decode(&intake, body, content_type).await.expect_err("poison");
            assert!(reason.contains(says), "{reason}");
        }
    }
}
