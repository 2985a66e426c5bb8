//! `transaction.TransactionService/StreamTransactions`, the streaming contract of
//! `shared/spec/transaction.proto` and `shared/spec/README.md`.
//!
//! Each transaction becomes one transfer on the customer's account `user:<userId>:<CUR>`:
//! - `deposit` / `topup` (any case): credit the customer from `world:<CUR>`; the customer's
//!   account opens with their first deposit;
//! - `withdrawal`: debit the customer to `world:<CUR>`;
//! - anything else is a purchase: debit the customer, credit the system account
//!   `category:<slug>:<CUR>` (the slug is the category in lower case with characters outside
//!   `a-z 0-9 _ . -` as `_`), so spending per category is that account's balance.
//!
//! `transactionId` is the idempotency key. Answers come in order, one per transaction, each
//! after its durable commit; a malformed transaction fails alone.

use crate::ledger::engine_rejection;
use crate::pipeline::{Answer, AnswerStream, pipelined};
use kopek_core::{
    AccountId, AccountKind, Amount, CommandBody, CommandResult, Currency, Details, ErrorCode,
    IdempotencyKey, Linking, Movement, NewAccount, Overdraft, Rejection, Tenant, Timestamp,
    TransferKind, TransferRequest, TransferResult, TransferStatus,
};
use kopek_engine::Engine;
use kopek_proto::transaction as pb;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

pub struct TransactionService {
    engine: Engine,
    shutdown: CancellationToken,
}

impl TransactionService {
    pub fn new(engine: Engine, shutdown: CancellationToken) -> TransactionService {
        TransactionService { engine, shutdown }
    }
}

/// The customer's account in one currency, the same id on every surface.
pub fn user_account(user_id: &str, currency: Currency) -> Result<AccountId, Rejection> {
    AccountId::parse(&format!("user:{user_id}:{currency}")).map_err(|_| {
        Rejection::invalid(format!(
            "userId '{}' must be 1 to 119 characters of A-Z a-z 0-9 _ . : -",
            user_id.chars().take(64).collect::<String>()
        ))
    })
}

/// The system account that collects one spending category.
fn category_account(category: &str, currency: Currency) -> Result<AccountId, Rejection> {
    let slug: String = category
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '_' })
        .collect();
    AccountId::parse(&format!("category:{slug}:{currency}"))
        .map_err(|_| Rejection::invalid("category must be at most 110 characters"))
}

/// Parses one transaction into the transfer it asks for.
pub fn transfer_request(transaction: &pb::Transaction) -> Result<TransferRequest, Rejection> {
    if transaction.transaction_id.is_empty() {
        return Err(Rejection::invalid("transactionId is required"));
    }
    let idempotency_key = IdempotencyKey::parse(&transaction.transaction_id)?;
    if transaction.user_id.is_empty() {
        return Err(Rejection::invalid("userId is required"));
    }
    if transaction.currency.is_empty() {
        return Err(Rejection::invalid("currency is required"));
    }
    let currency = Currency::parse(&transaction.currency)?;
    let amount = Amount::from_f32_major(transaction.amount, currency)?;
    let user = user_account(&transaction.user_id, currency)?;
    let effective_at = match transaction.timestamp.as_str() {
        "" => None,
        text => Some(
            Timestamp::parse_rfc3339(text)
                .map_err(|error| Rejection::invalid(format!("timestamp: {error}")))?,
        ),
    };
    let category = transaction.category.trim();
    let world = AccountId::world(currency);
    let (kind, debit_account, credit_account, open_if_missing) =
        match category.to_lowercase().as_str() {
            "" => return Err(Rejection::invalid("category is required")),
            "deposit" | "topup" => {
                let mut account = NewAccount::user(user.clone(), currency);
                account.owner = Some(transaction.user_id.clone());
                (TransferKind::Deposit, world, user, vec![account])
            }
            "withdrawal" => (TransferKind::Withdrawal, user, world, Vec::new()),
            _ => {
                let collector = category_account(category, currency)?;
                let account = NewAccount {
                    id: collector.clone(),
                    currency,
                    owner: None,
                    kind: AccountKind::System,
                    overdraft: Overdraft::NONE,
                    metadata: Default::default(),
                };
                (TransferKind::Purchase, user, collector, vec![account])
            }
        };
    let request = TransferRequest {
        idempotency_key,
        kind,
        movement: Movement::Move {
            debit_account,
            credit_account,
            amount: amount.minor(),
            currency,
            hold: None,
        },
        details: Details {
            category: category.to_owned(),
            description: String::new(),
            metadata: Default::default(),
        },
        effective_at,
        open_if_missing,
    };
    request.validate()?;
    Ok(request)
}

fn success(transaction_id: String, replay: bool) -> pb::TransactionResponse {
    let message = if replay { "processed (replay)" } else { "processed" };
    pb::TransactionResponse {
        transaction_id,
        status: "success".to_owned(),
        message: message.to_owned(),
    }
}

/// `"CODE: sentence"`, the stable code first.
fn failure(transaction_id: String, rejection: &Rejection, replay: bool) -> pb::TransactionResponse {
    let suffix = if replay { " (replay)" } else { "" };
    pb::TransactionResponse {
        transaction_id,
        status: "failure".to_owned(),
        message: format!("{}: {}{suffix}", rejection.code, rejection.message),
    }
}

fn respond(
    transaction_id: String,
    result: Result<CommandResult, Rejection>,
) -> pb::TransactionResponse {
    let result = match result {
        Ok(CommandResult::Transfers(mut results)) if results.len() == 1 => results.remove(0),
        Ok(other) => {
            let rejection =
                Rejection::new(ErrorCode::Internal, format!("unexpected result {other:?}"));
            return failure(transaction_id, &rejection, false);
        }
        Err(rejection) => return failure(transaction_id, &rejection, false),
    };
    let (transfer, replay) = match result {
        TransferResult::Committed(transfer) => (transfer, false),
        TransferResult::Replayed(transfer) => (transfer, true),
        TransferResult::Rejected(rejection) => return failure(transaction_id, &rejection, false),
    };
    match (&transfer.error, transfer.status) {
        (Some(rejection), _) => failure(transaction_id, rejection, replay),
        (None, TransferStatus::Posted) => success(transaction_id, replay),
        (None, status) => {
            let rejection = Rejection::new(
                ErrorCode::Internal,
                format!("unexpected status {}", status.as_str()),
            );
            failure(transaction_id, &rejection, replay)
        }
    }
}

#[tonic::async_trait]
impl pb::transaction_service_server::TransactionService for TransactionService {
    type StreamTransactionsStream = AnswerStream<pb::TransactionResponse>;

    async fn stream_transactions(
        &self,
        request: Request<Streaming<pb::Transaction>>,
    ) -> Result<Response<Self::StreamTransactionsStream>, Status> {
        let tenant = Tenant::default_tenant();
        let engine = self.engine.clone();
        let start = move |transaction: pb::Transaction| -> Answer<pb::TransactionResponse> {
            let transaction_id = transaction.transaction_id.clone();
            let ticket = transfer_request(&transaction).and_then(|request| {
                let body = CommandBody::CreateTransfers {
                    transfers: vec![request],
                    linking: Linking::Independent,
                };
                engine.enqueue(tenant.clone(), body).map_err(engine_rejection)
            });
            Box::pin(async move {
                let result = match ticket {
                    Ok(ticket) => ticket.wait().await.map_err(engine_rejection),
                    Err(rejection) => Err(rejection),
                };
                respond(transaction_id, result)
            })
        };
        Ok(Response::new(pipelined(request.into_inner(), self.shutdown.clone(), start)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transaction(category: &str, amount: f32, currency: &str) -> pb::Transaction {
        pb::Transaction {
            transaction_id: "t1".into(),
            user_id: "u-1".into(),
            category: category.into(),
            amount,
            currency: currency.into(),
            timestamp: String::new(),
        }
    }

    fn movement(request: &TransferRequest) -> (String, String, i64) {
        match &request.movement {
            Movement::Move { debit_account, credit_account, amount, .. } => {
                (debit_account.to_string(), credit_account.to_string(), *amount)
            }
            other => panic!("a move was expected, not {other:?}"),
        }
    }

    #[test]
    fn categories_decide_the_movement() {
        let deposit = transfer_request(&transaction("TopUp", 19.99, "usd")).expect("valid");
        assert_eq!(movement(&deposit), ("world:USD".into(), "user:u-1:USD".into(), 1_999));
        assert_eq!(deposit.open_if_missing.len(), 1, "the first deposit opens the account");
        let withdrawal = transfer_request(&transaction("WITHDRAWAL", 5.0, "EUR")).expect("valid");
        assert_eq!(movement(&withdrawal), ("user:u-1:EUR".into(), "world:EUR".into(), 500));
        assert!(withdrawal.open_if_missing.is_empty());
        let purchase = transfer_request(&transaction("Eating Out", 12.5, "USD")).expect("valid");
        assert_eq!(
            movement(&purchase),
            ("user:u-1:USD".into(), "category:eating_out:USD".into(), 1_250)
        );
        assert_eq!(purchase.details.category, "Eating Out");
    }

    #[test]
    fn malformed_transactions_fail_with_a_clear_code() {
        let code = |t: pb::Transaction| transfer_request(&t).err().map(|r| r.code);
        assert_eq!(code(transaction("Food", 19.995, "USD")), Some(ErrorCode::InvalidAmount));
        assert_eq!(code(transaction("Food", 0.0, "USD")), Some(ErrorCode::InvalidAmount));
        assert_eq!(code(transaction("Food", -1.0, "USD")), Some(ErrorCode::InvalidAmount));
        assert_eq!(code(transaction("Food", f32::NAN, "USD")), Some(ErrorCode::InvalidAmount));
        assert_eq!(code(transaction("Food", f32::INFINITY, "USD")), Some(ErrorCode::InvalidAmount));
        assert_eq!(code(transaction("Food", 1.5, "JPY")), Some(ErrorCode::InvalidAmount));
        assert_eq!(code(transaction("Food", 1.0, "XXX")), Some(ErrorCode::UnknownCurrency));
        assert_eq!(code(transaction("", 1.0, "USD")), Some(ErrorCode::InvalidArgument));
        assert_eq!(
            code(pb::Transaction { user_id: "a b".into(), ..transaction("Food", 1.0, "USD") }),
            Some(ErrorCode::InvalidArgument)
        );
        assert_eq!(
            code(pb::Transaction {
                transaction_id: String::new(),
                ..transaction("Food", 1.0, "USD")
            }),
            Some(ErrorCode::InvalidArgument)
        );
        assert_eq!(
            code(pb::Transaction { timestamp: "soon".into(), ..transaction("Food", 1.0, "USD") }),
            Some(ErrorCode::InvalidArgument)
        );
        let naive = pb::Transaction {
            timestamp: "2023-01-04T00:00:00".into(),
            ..transaction("Food", 1.0, "USD")
        };
        let parsed = transfer_request(&naive).expect("a naive time is UTC");
        assert_eq!(
            parsed.effective_at.map(Timestamp::to_rfc3339),
            Some("2023-01-04T00:00:00.000000Z".into())
        );
    }
}
