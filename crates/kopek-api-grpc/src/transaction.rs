//! `transaction.TransactionService/StreamTransactions`, the streaming contract of
//! `shared/spec/transaction.proto` and `shared/spec/README.md`.
//!
//! Each transaction becomes one transfer on the customer's account `user:<userId>:<CUR>`:
//! - `deposit` / `topup` (any case): credit the customer from `world:<CUR>`; the customer's
//!   account opens with their first deposit;
//! - `withdrawal`: debit the customer to `world:<CUR>`;
//! - anything else is a purchase: debit the customer, credit the system account
//!   `category:<category>:<CUR>` (bytes outside `A-Z a-z 0-9 . -` written `_XX`), so spending
//!   per category is that account's balance.
//!
//! `transactionId` is the idempotency key, in this contract's own key space (`txn:`); a resend
//! replays only when user, category, amount, currency and timestamp are all the same. Answers
//! come in order, one per transaction, each after its durable commit; a malformed transaction
//! fails alone. When the ledger cannot take work (shutting down, store unavailable) the stream
//! ends with gRPC `UNAVAILABLE`, and the client resends what got no answer.

use crate::pipeline::{Answer, AnswerStream, Started, pipelined};
use crate::status::rejection_status;
use kopek_core::{ErrorCode, Linking, Rejection, TransferResult, TransferStatus};
use kopek_intake::contract::transfer_request;
use kopek_intake::wire::transaction;
use kopek_intake::{Batch, Intake};
use kopek_proto::transaction as pb;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

pub struct TransactionService {
    intake: Intake,
    shutdown: CancellationToken,
}

impl TransactionService {
    pub fn new(intake: Intake, shutdown: CancellationToken) -> TransactionService {
        TransactionService { intake, shutdown }
    }
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

fn respond(transaction_id: String, result: TransferResult) -> pb::TransactionResponse {
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
        let caller = crate::auth::principal(&request)?;
        let intake = self.intake.clone();
        let start = move |message: pb::Transaction| -> Started<pb::TransactionResponse> {
            let (intake, caller) = (intake.clone(), caller.clone());
            Box::pin(async move {
                let transaction_id = message.transaction_id.clone();
                let parsed = transfer_request(&transaction(message), &caller.tenant);
                // Waits for room in the write queue: a stream slows down, it is never refused.
                let pending = match Batch::new(vec![parsed], Linking::Independent) {
                    Ok(batch) => intake.enqueue_waiting(&caller, batch).await,
                    Err(rejection) => Err(rejection),
                };
                let answer: Answer<pb::TransactionResponse> = Box::pin(async move {
                    // An `Err` is not a verdict: nothing was applied, so the stream ends here
                    // and the client resends from this transaction on.
                    let mut results = pending
                        .map_err(|rejection| rejection_status(&rejection))?
                        .results()
                        .await
                        .map_err(|rejection| rejection_status(&rejection))?;
                    Ok(match results.pop() {
                        Some(result) => respond(transaction_id, result),
                        None => failure(
                            transaction_id,
                            &Rejection::new(ErrorCode::Internal, "a result is missing"),
                            false,
                        ),
                    })
                });
                answer
            })
        };
        let ending = kopek_auth::Ending::new(&self.shutdown, crate::auth::key_watch(&request));
        Ok(Response::new(pipelined(request.into_inner(), ending, start)))
    }
}
