//! `ErrorCode`: every rejection the ledger can answer, public API for all surfaces.
//!
//! Codes are stable: add new ones at the end, never rename or renumber. Each API crate maps
//! them in one exhaustive `match`, so a new code fails to compile until every surface has it.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorCode {
    InvalidAmount,
    AccountNotFound,
    InsufficientFunds,
    SameAccount,
    CurrencyMismatch,
    RateLimited,
    IdempotencyKeyReused,
    AccountFrozen,
    AccountClosed,
    PendingNotFound,
    PendingAlreadyResolved,
    PendingExpired,
    LinkedEventFailed,
    UnknownCurrency,
    QuoteExpired,
    Overloaded,
    /// An account with this id exists with other fields (currency, kind, owner, limit).
    AccountExists,
    /// Closing an account needs a zero balance and no holds.
    AccountNotEmpty,
    /// The change would push a balance past the 64-bit range.
    BalanceOverflow,
    /// A field is malformed or out of its bounds.
    InvalidArgument,
    /// The store could not be reached; nothing was written and a retry is safe.
    Unavailable,
    /// A broken invariant stopped the request; nothing was written.
    Internal,
    /// The transfer, user, order or route named does not exist.
    NotFound,
    /// No API key, or one that is not valid or was revoked.
    Unauthenticated,
    /// The key's scope does not allow this.
    PermissionDenied,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 25] = [
        ErrorCode::InvalidAmount,
        ErrorCode::AccountNotFound,
        ErrorCode::InsufficientFunds,
        ErrorCode::SameAccount,
        ErrorCode::CurrencyMismatch,
        ErrorCode::RateLimited,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::AccountFrozen,
        ErrorCode::AccountClosed,
        ErrorCode::PendingNotFound,
        ErrorCode::PendingAlreadyResolved,
        ErrorCode::PendingExpired,
        ErrorCode::LinkedEventFailed,
        ErrorCode::UnknownCurrency,
        ErrorCode::QuoteExpired,
        ErrorCode::Overloaded,
        ErrorCode::AccountExists,
        ErrorCode::AccountNotEmpty,
        ErrorCode::BalanceOverflow,
        ErrorCode::InvalidArgument,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::NotFound,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidAmount => "INVALID_AMOUNT",
            ErrorCode::AccountNotFound => "ACCOUNT_NOT_FOUND",
            ErrorCode::InsufficientFunds => "INSUFFICIENT_FUNDS",
            ErrorCode::SameAccount => "SAME_ACCOUNT",
            ErrorCode::CurrencyMismatch => "CURRENCY_MISMATCH",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            ErrorCode::AccountFrozen => "ACCOUNT_FROZEN",
            ErrorCode::AccountClosed => "ACCOUNT_CLOSED",
            ErrorCode::PendingNotFound => "PENDING_NOT_FOUND",
            ErrorCode::PendingAlreadyResolved => "PENDING_ALREADY_RESOLVED",
            ErrorCode::PendingExpired => "PENDING_EXPIRED",
            ErrorCode::LinkedEventFailed => "LINKED_EVENT_FAILED",
            ErrorCode::UnknownCurrency => "UNKNOWN_CURRENCY",
            ErrorCode::QuoteExpired => "QUOTE_EXPIRED",
            ErrorCode::Overloaded => "OVERLOADED",
            ErrorCode::AccountExists => "ACCOUNT_EXISTS",
            ErrorCode::AccountNotEmpty => "ACCOUNT_NOT_EMPTY",
            ErrorCode::BalanceOverflow => "BALANCE_OVERFLOW",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
        }
    }

    pub fn parse(text: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|code| code.as_str() == text)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An expected refusal: a stable code and a sentence for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
}

impl Rejection {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Rejection {
        Rejection { code, message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Rejection {
        Rejection::new(ErrorCode::InvalidArgument, message)
    }

    /// An account that is not there, or not there for the one asking: the same sentence.
    pub fn account_not_found(id: &crate::AccountId) -> Rejection {
        Rejection::new(ErrorCode::AccountNotFound, format!("account {} not found", id.name()))
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        let mut names: Vec<_> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }
}
