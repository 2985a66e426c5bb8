//! The one mapping from error codes to gRPC status codes. A new `ErrorCode` fails to compile
//! here until it has a status.

use kopek_core::{ErrorCode, Rejection};
use kopek_engine::EngineError;
use kopek_store::StoreError;
use tonic::{Code, Status};

pub fn code(error: ErrorCode) -> Code {
    match error {
        ErrorCode::InvalidAmount
        | ErrorCode::SameAccount
        | ErrorCode::CurrencyMismatch
        | ErrorCode::UnknownCurrency
        | ErrorCode::InvalidArgument => Code::InvalidArgument,
        ErrorCode::AccountNotFound | ErrorCode::PendingNotFound | ErrorCode::NotFound => {
            Code::NotFound
        }
        ErrorCode::InsufficientFunds
        | ErrorCode::IdempotencyKeyReused
        | ErrorCode::AccountFrozen
        | ErrorCode::AccountClosed
        | ErrorCode::PendingAlreadyResolved
        | ErrorCode::PendingExpired
        | ErrorCode::QuoteExpired
        | ErrorCode::AccountNotEmpty => Code::FailedPrecondition,
        ErrorCode::RateLimited | ErrorCode::Overloaded => Code::ResourceExhausted,
        ErrorCode::LinkedEventFailed => Code::Aborted,
        ErrorCode::AccountExists => Code::AlreadyExists,
        ErrorCode::BalanceOverflow => Code::OutOfRange,
        ErrorCode::Unavailable => Code::Unavailable,
        ErrorCode::Internal => Code::Internal,
        ErrorCode::Unauthenticated => Code::Unauthenticated,
        ErrorCode::PermissionDenied => Code::PermissionDenied,
    }
}

/// A status whose message starts with the stable code: `INSUFFICIENT_FUNDS: balance ...`.
pub fn rejection_status(rejection: &Rejection) -> Status {
    Status::new(code(rejection.code), format!("{}: {}", rejection.code, rejection.message))
}

pub fn engine_status(error: EngineError) -> Status {
    rejection_status(&error.rejection())
}

pub fn store_status(error: StoreError) -> Status {
    rejection_status(&kopek_intake::access::unavailable(error))
}
