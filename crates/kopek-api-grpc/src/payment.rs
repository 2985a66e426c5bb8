//! `payment.v1.PaymentService`, the authorisation contract of `shared/spec/payment.proto` and
//! `shared/spec/README.md`. A payment is a transfer of kind `payment` from payer to payee;
//! its id is the transfer's ULID, declined payments included.

use crate::auth::principal;
use crate::status::rejection_status;
use kopek_auth::Verdict;
use kopek_core::{
    AccountId, Currency, Details, ErrorCode, IdempotencyKey, Movement, Rejection, Transfer,
    TransferId, TransferKind, TransferRequest, TransferResult, TransferStatus, limits,
};
use kopek_intake::Intake;
use kopek_intake::access::TransferLookup;
use kopek_proto::payment::v1 as pb;
use tonic::{Request, Response, Status};

pub struct PaymentService {
    intake: Intake,
    limiter: kopek_auth::RateLimiter,
}

impl PaymentService {
    pub fn new(intake: Intake, limiter: kopek_auth::RateLimiter) -> PaymentService {
        PaymentService { intake, limiter }
    }
}

fn invalid(message: impl Into<String>) -> Status {
    rejection_status(&Rejection::invalid(message))
}

/// A required account id: missing or over its length limit is `INVALID_ARGUMENT` and records
/// nothing. Any other text is a reference: an account that cannot exist is declined later
/// with `ACCOUNT_NOT_FOUND`, and that decline is recorded like any other.
fn required_account(text: &str, field: &str) -> Result<AccountId, Status> {
    if text.is_empty() {
        return Err(invalid(format!("{field} is required")));
    }
    AccountId::parse_reference(text)
        .map_err(|rejection| invalid(format!("{field}: {}", rejection.message)))
}

/// The request as a transfer; only missing or oversized fields fail here (`INVALID_ARGUMENT`).
fn transfer_request(request: pb::AuthorizePaymentRequest) -> Result<TransferRequest, Status> {
    if request.idempotency_key.is_empty() {
        return Err(invalid("idempotency_key is required"));
    }
    // Payments have a key space of their own: "1" here is not the streaming contract's "1".
    let idempotency_key = IdempotencyKey::scoped("pay", &request.idempotency_key)
        .map_err(|rejection| invalid(format!("idempotency_key: {}", rejection.message)))?;
    let payer = required_account(&request.payer_account_id, "payer_account_id")?;
    let payee = required_account(&request.payee_account_id, "payee_account_id")?;
    if request.currency.is_empty() {
        return Err(invalid("currency is required"));
    }
    // A three-letter code outside ISO 4217 matches no account: CURRENCY_MISMATCH, recorded.
    let currency = Currency::parse_code(&request.currency)
        .map_err(|rejection| invalid(format!("currency: {}", rejection.message)))?;
    if request.description.len() > limits::DESCRIPTION_BYTES_MAX {
        return Err(invalid(format!(
            "description must be at most {} bytes",
            limits::DESCRIPTION_BYTES_MAX
        )));
    }
    Ok(TransferRequest {
        idempotency_key,
        kind: TransferKind::Payment,
        // A non-positive amount goes on: the ledger records it, declined with INVALID_AMOUNT.
        movement: Movement::Move {
            debit_account: payer,
            credit_account: payee,
            amount: request.amount_cents,
            currency,
            hold: None,
        },
        details: Details {
            category: String::new(),
            description: request.description,
            metadata: Default::default(),
        },
        effective_at: None,
        open_if_missing: Vec::new(),
        fingerprint_extra: String::new(),
    })
}

fn error_code(code: ErrorCode) -> pb::PaymentErrorCode {
    match code {
        ErrorCode::InsufficientFunds => pb::PaymentErrorCode::InsufficientFunds,
        ErrorCode::AccountNotFound => pb::PaymentErrorCode::AccountNotFound,
        ErrorCode::InvalidAmount => pb::PaymentErrorCode::InvalidAmount,
        ErrorCode::SameAccount => pb::PaymentErrorCode::SameAccount,
        ErrorCode::CurrencyMismatch => pb::PaymentErrorCode::CurrencyMismatch,
        ErrorCode::RateLimited => pb::PaymentErrorCode::RateLimited,
        // The contract has no code for these; the message starts with ours.
        ErrorCode::IdempotencyKeyReused
        | ErrorCode::AccountFrozen
        | ErrorCode::AccountClosed
        | ErrorCode::PendingNotFound
        | ErrorCode::PendingAlreadyResolved
        | ErrorCode::PendingExpired
        | ErrorCode::LinkedEventFailed
        | ErrorCode::UnknownCurrency
        | ErrorCode::QuoteExpired
        | ErrorCode::Overloaded
        | ErrorCode::AccountExists
        | ErrorCode::AccountNotEmpty
        | ErrorCode::BalanceOverflow
        | ErrorCode::InvalidArgument
        | ErrorCode::Unavailable
        | ErrorCode::Internal
        | ErrorCode::NotFound
        | ErrorCode::Unauthenticated
        | ErrorCode::PermissionDenied => pb::PaymentErrorCode::Unspecified,
    }
}

fn payment_error(rejection: &Rejection) -> pb::PaymentError {
    let code = error_code(rejection.code);
    let message = if code == pb::PaymentErrorCode::Unspecified {
        format!("{}: {}", rejection.code, rejection.message)
    } else {
        rejection.message.clone()
    };
    pb::PaymentError { code: code as i32, message }
}

fn authorization(transfer: &Transfer, replayed: bool) -> pb::AuthorizePaymentResponse {
    let status = match (replayed, transfer.status) {
        (true, _) => pb::PaymentStatus::Duplicate,
        (false, TransferStatus::Posted) => pb::PaymentStatus::Authorized,
        (false, _) => pb::PaymentStatus::Declined,
    };
    pb::AuthorizePaymentResponse {
        payment_id: transfer.id.to_string(),
        status: status as i32,
        error: transfer.error.as_ref().map(payment_error),
        processed_at: transfer.committed_at.to_rfc3339(),
    }
}

fn rate_limited(message: &str) -> pb::AuthorizePaymentResponse {
    pb::AuthorizePaymentResponse {
        payment_id: String::new(),
        status: pb::PaymentStatus::Declined as i32,
        error: Some(pb::PaymentError {
            code: pb::PaymentErrorCode::RateLimited as i32,
            message: message.to_owned(),
        }),
        processed_at: kopek_clock::now().to_rfc3339(),
    }
}

fn payment(transfer: &Transfer) -> pb::Payment {
    let status = if transfer.status == TransferStatus::Posted {
        pb::PaymentStatus::Authorized
    } else {
        pb::PaymentStatus::Declined
    };
    pb::Payment {
        payment_id: transfer.id.to_string(),
        payer_account_id: transfer
            .debit_account
            .as_ref()
            .map(|id| id.name().to_owned())
            .unwrap_or_default(),
        payee_account_id: transfer
            .credit_account
            .as_ref()
            .map(|id| id.name().to_owned())
            .unwrap_or_default(),
        amount_cents: transfer.amount,
        currency: transfer.currency.map(|currency| currency.code().to_owned()).unwrap_or_default(),
        status: status as i32,
        description: transfer.details.description.clone(),
        created_at: transfer.committed_at.to_rfc3339(),
        updated_at: transfer.updated_at.to_rfc3339(),
    }
}

fn not_found(what: &str, id: &str) -> Status {
    Status::not_found(format!("{what} '{}' not found", id.chars().take(64).collect::<String>()))
}

#[tonic::async_trait]
impl pb::payment_service_server::PaymentService for PaymentService {
    async fn authorize_payment(
        &self,
        request: Request<pb::AuthorizePaymentRequest>,
    ) -> Result<Response<pb::AuthorizePaymentResponse>, Status> {
        let caller = principal(&request)?;
        // The contract's answer to a key over its budget, or to load: a decline the client
        // retries with the same key (nothing was recorded, so the retry is applied, not
        // replayed).
        if let Verdict::Limited { retry_after } = self.limiter.check(caller.bucket()).await {
            let message = format!(
                "too many requests for this key; retry in {} ms with the same idempotency key",
                retry_after.as_millis().max(1)
            );
            return Ok(Response::new(rate_limited(&message)));
        }
        let transfer = transfer_request(request.into_inner())?;
        let result = match self.intake.submit_one(&caller, transfer).await {
            Ok(result) => result,
            Err(rejection) if rejection.code == ErrorCode::Overloaded => {
                let message = "the ledger is at capacity; retry with the same idempotency key";
                return Ok(Response::new(rate_limited(message)));
            }
            Err(rejection) => return Err(rejection_status(&rejection)),
        };
        match result {
            TransferResult::Committed(transfer) => {
                Ok(Response::new(authorization(&transfer, false)))
            }
            TransferResult::Replayed(transfer) => Ok(Response::new(authorization(&transfer, true))),
            TransferResult::Rejected(rejection) => Err(rejection_status(&rejection)),
        }
    }

    async fn get_payment(
        &self,
        request: Request<pb::GetPaymentRequest>,
    ) -> Result<Response<pb::GetPaymentResponse>, Status> {
        let caller = principal(&request)?;
        let id = request.into_inner().payment_id;
        if id.is_empty() {
            return Err(invalid("payment_id is required"));
        }
        let Ok(transfer_id) = TransferId::parse(&id) else {
            return Err(not_found("payment", &id));
        };
        let found = self.intake.visible_transfer(&caller, TransferLookup::Id(transfer_id)).await;
        match found.map_err(|r| rejection_status(&r))? {
            Some(transfer)
                if transfer.kind == TransferKind::Payment
                    && transfer.action == kopek_core::Action::Post =>
            {
                Ok(Response::new(pb::GetPaymentResponse { payment: Some(payment(&transfer)) }))
            }
            _ => Err(not_found("payment", &id)),
        }
    }

    async fn get_account_balance(
        &self,
        request: Request<pb::GetAccountBalanceRequest>,
    ) -> Result<Response<pb::GetAccountBalanceResponse>, Status> {
        let caller = principal(&request)?;
        let id = request.into_inner().account_id;
        if id.is_empty() {
            return Err(invalid("account_id is required"));
        }
        let Ok(account_id) = AccountId::parse(&id) else {
            return Err(not_found("account", &id));
        };
        let account = self.intake.account_seen(&caller, &account_id).await;
        let Some(account) = account.map_err(|r| rejection_status(&r))? else {
            return Err(not_found("account", &id));
        };
        let balance = account.balance;
        Ok(Response::new(pb::GetAccountBalanceResponse {
            account_id: account.id.name().to_owned(),
            // The contract's available balance leaves the overdraft limit out: posted - held.
            available_balance_cents: balance.posted.saturating_sub(balance.pending_out),
            pending_balance_cents: balance.pending_out,
            currency: account.currency.code().to_owned(),
        }))
    }
}
