//! kopek.v1 wire messages <-> core types. Every field from the network is parsed here, once;
//! a field that does not parse becomes a `Rejection` with a clear code and message.

use kopek_core::fx::{RATE_DIGITS_MAX, Side, Terms};
use kopek_core::{
    Account, AccountId, AccountKind, AccountStatus, Action, Balance, Currency, Direction,
    ErrorCode, Overdraft, Rejection, Timestamp, Transfer, TransferKind, TransferStatus,
    format_minor,
};
use kopek_core::{FxLeg, FxRate, Quote};
use kopek_proto::kopek::v1 as pb;
use kopek_store::StoredEntry;

pub fn side(value: i32) -> Result<Side, Rejection> {
    match pb::ConversionSide::try_from(value) {
        Ok(pb::ConversionSide::Unspecified | pb::ConversionSide::Sell) => Ok(Side::Sell),
        Ok(pb::ConversionSide::Buy) => Ok(Side::Buy),
        Err(_) => Err(Rejection::invalid(format!("unknown conversion side {value}"))),
    }
}

pub fn conversion_terms(terms: &Terms) -> pb::ConversionTerms {
    pb::ConversionTerms {
        from: terms.from.to_string(),
        to: terms.to.to_string(),
        side: match terms.side {
            Side::Sell => pb::ConversionSide::Sell,
            Side::Buy => pb::ConversionSide::Buy,
        } as i32,
        sell_amount_minor: terms.sell_amount,
        sell_amount: format_minor(terms.sell_amount, terms.from),
        buy_amount_minor: terms.buy_amount,
        buy_amount: format_minor(terms.buy_amount, terms.to),
        spread_amount_minor: terms.spread_amount,
        spread_amount: format_minor(terms.spread_amount, terms.to),
        spread_bp: terms.spread_bp,
        rate: terms.rate.to_decimal(RATE_DIGITS_MAX),
        rate_exact: terms.rate.to_fraction_text(),
        mid_rate: terms.mid_rate.to_decimal(RATE_DIGITS_MAX),
        rate_path: terms.path.clone(),
    }
}

fn transfer_conversion(leg: &FxLeg) -> pb::TransferConversion {
    pb::TransferConversion {
        quote_id: leg.quote_id.to_string(),
        leg: leg.role.as_str().to_owned(),
        payer_account_id: leg.payer.name().to_owned(),
        payee_account_id: leg.payee.name().to_owned(),
        terms: Some(conversion_terms(&leg.terms)),
    }
}

pub fn exchange_rate(rate: &FxRate) -> pb::ExchangeRate {
    pb::ExchangeRate {
        base: rate.base.to_string(),
        quote: rate.quote.to_string(),
        rate: rate.rate.to_decimal(RATE_DIGITS_MAX),
        rate_exact: rate.rate.to_fraction_text(),
        source: rate.source.clone(),
        valid_from: rate.valid_from.to_rfc3339(),
        set_at: rate.set_at.to_rfc3339(),
    }
}

pub fn quote(quote: &Quote) -> pb::Quote {
    pb::Quote {
        id: quote.id.to_string(),
        terms: Some(conversion_terms(&quote.terms)),
        created_at: quote.created_at.to_rfc3339(),
        expires_at: quote.expires_at.to_rfc3339(),
        used_by_transfer_id: quote.used_by.map(|id| id.to_string()).unwrap_or_default(),
    }
}

pub fn error_code(code: ErrorCode) -> pb::ErrorCode {
    match code {
        ErrorCode::InvalidAmount => pb::ErrorCode::InvalidAmount,
        ErrorCode::AccountNotFound => pb::ErrorCode::AccountNotFound,
        ErrorCode::InsufficientFunds => pb::ErrorCode::InsufficientFunds,
        ErrorCode::SameAccount => pb::ErrorCode::SameAccount,
        ErrorCode::CurrencyMismatch => pb::ErrorCode::CurrencyMismatch,
        ErrorCode::RateLimited => pb::ErrorCode::RateLimited,
        ErrorCode::IdempotencyKeyReused => pb::ErrorCode::IdempotencyKeyReused,
        ErrorCode::AccountFrozen => pb::ErrorCode::AccountFrozen,
        ErrorCode::AccountClosed => pb::ErrorCode::AccountClosed,
        ErrorCode::PendingNotFound => pb::ErrorCode::PendingNotFound,
        ErrorCode::PendingAlreadyResolved => pb::ErrorCode::PendingAlreadyResolved,
        ErrorCode::PendingExpired => pb::ErrorCode::PendingExpired,
        ErrorCode::LinkedEventFailed => pb::ErrorCode::LinkedEventFailed,
        ErrorCode::UnknownCurrency => pb::ErrorCode::UnknownCurrency,
        ErrorCode::QuoteExpired => pb::ErrorCode::QuoteExpired,
        ErrorCode::Overloaded => pb::ErrorCode::Overloaded,
        ErrorCode::AccountExists => pb::ErrorCode::AccountExists,
        ErrorCode::AccountNotEmpty => pb::ErrorCode::AccountNotEmpty,
        ErrorCode::BalanceOverflow => pb::ErrorCode::BalanceOverflow,
        ErrorCode::InvalidArgument => pb::ErrorCode::InvalidArgument,
        ErrorCode::Unavailable => pb::ErrorCode::Unavailable,
        ErrorCode::Internal => pb::ErrorCode::Internal,
        ErrorCode::NotFound => pb::ErrorCode::NotFound,
        ErrorCode::Unauthenticated => pb::ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied => pb::ErrorCode::PermissionDenied,
    }
}

pub fn error(rejection: &Rejection) -> pb::Error {
    pb::Error { code: error_code(rejection.code) as i32, message: rejection.message.clone() }
}

pub fn account_id(text: &str) -> Result<AccountId, Rejection> {
    AccountId::parse(text)
}

fn kind_to_proto(kind: TransferKind) -> pb::TransferKind {
    match kind {
        TransferKind::Transfer => pb::TransferKind::Transfer,
        TransferKind::Deposit => pb::TransferKind::Deposit,
        TransferKind::Withdrawal => pb::TransferKind::Withdrawal,
        TransferKind::Payment => pb::TransferKind::Payment,
        TransferKind::Purchase => pb::TransferKind::Purchase,
        TransferKind::Fee => pb::TransferKind::Fee,
        TransferKind::Reversal => pb::TransferKind::Reversal,
        TransferKind::FxLeg => pb::TransferKind::FxLeg,
    }
}

pub fn status(value: i32) -> Result<AccountStatus, Rejection> {
    match pb::AccountStatus::try_from(value) {
        Ok(pb::AccountStatus::Active) => Ok(AccountStatus::Active),
        Ok(pb::AccountStatus::Frozen) => Ok(AccountStatus::Frozen),
        Ok(pb::AccountStatus::Closed) => Ok(AccountStatus::Closed),
        _ => Err(Rejection::invalid(format!("status {value} is not ACTIVE, FROZEN or CLOSED"))),
    }
}

fn status_to_proto(status: AccountStatus) -> pb::AccountStatus {
    match status {
        AccountStatus::Active => pb::AccountStatus::Active,
        AccountStatus::Frozen => pb::AccountStatus::Frozen,
        AccountStatus::Closed => pb::AccountStatus::Closed,
    }
}

pub fn balance(account: &Account) -> pb::Balance {
    balance_of(account.balance, account.currency, account.available())
}

fn balance_of(balance: Balance, currency: Currency, available: Option<i128>) -> pb::Balance {
    let available = available
        .map(|value| i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX }));
    pb::Balance {
        posted_minor: balance.posted,
        pending_out_minor: balance.pending_out,
        pending_in_minor: balance.pending_in,
        available_minor: available,
        posted: format_minor(balance.posted, currency),
        available: available.map(|value| format_minor(value, currency)).unwrap_or_default(),
    }
}

/// A historical balance: only the posted part is known at a past time.
pub fn posted_balance(posted: i64, currency: Currency) -> pb::Balance {
    pb::Balance {
        posted_minor: posted,
        posted: format_minor(posted, currency),
        ..Default::default()
    }
}

pub fn account(account: &Account) -> pb::Account {
    pb::Account {
        id: account.id.name().to_owned(),
        currency: account.currency.code().to_owned(),
        owner: account.owner.clone().unwrap_or_default(),
        kind: match account.kind {
            AccountKind::User => pb::AccountKind::User,
            AccountKind::System => pb::AccountKind::System,
        } as i32,
        overdraft_limit_minor: match account.overdraft {
            Overdraft::Limited(limit) => Some(limit),
            Overdraft::Unbounded => None,
        },
        status: status_to_proto(account.status) as i32,
        metadata: account.metadata.clone().into_iter().collect(),
        balance: Some(balance(account)),
        created_at: account.created_at.to_rfc3339(),
        updated_at: account.updated_at.to_rfc3339(),
    }
}

/// A search's kind filter as the intake reads it: none for UNSPECIFIED, the kind's name, or
/// the unknown number (which the intake refuses, naming it).
pub fn kind_filter(value: i32) -> Option<String> {
    if value == pb::TransferKind::Unspecified as i32 {
        return None;
    }
    let kind = TransferKind::ALL.into_iter().find(|kind| kind_to_proto(*kind) as i32 == value);
    Some(kind.map_or_else(|| value.to_string(), |kind| kind.as_str().to_owned()))
}

/// A search's status filter as the intake reads it (as `kind_filter`).
pub fn status_filter(value: i32) -> Option<String> {
    if value == pb::TransferStatus::Unspecified as i32 {
        return None;
    }
    let status =
        TransferStatus::ALL.into_iter().find(|status| transfer_status(*status) as i32 == value);
    Some(status.map_or_else(|| value.to_string(), |status| status.as_str().to_owned()))
}

fn transfer_status(status: TransferStatus) -> pb::TransferStatus {
    match status {
        TransferStatus::Posted => pb::TransferStatus::Posted,
        TransferStatus::Pending => pb::TransferStatus::Pending,
        TransferStatus::Captured => pb::TransferStatus::Captured,
        TransferStatus::Voided => pb::TransferStatus::Voided,
        TransferStatus::Expired => pb::TransferStatus::Expired,
        TransferStatus::Declined => pb::TransferStatus::Declined,
    }
}

pub fn transfer(transfer: &Transfer) -> pb::Transfer {
    let money = |minor: i64| {
        transfer.currency.map(|currency| format_minor(minor, currency)).unwrap_or_default()
    };
    let action = match transfer.action {
        Action::Post => pb::TransferAction::Post,
        Action::Hold => pb::TransferAction::Hold,
        Action::Capture => pb::TransferAction::Capture,
        Action::Void => pb::TransferAction::Void,
    };
    let status = transfer_status(transfer.status);
    pb::Transfer {
        id: transfer.id.to_string(),
        idempotency_key: transfer.idempotency_key.to_string(),
        kind: kind_to_proto(transfer.kind) as i32,
        action: action as i32,
        status: status as i32,
        debit_account_id: transfer
            .debit_account
            .as_ref()
            .map(|id| id.name().to_owned())
            .unwrap_or_default(),
        credit_account_id: transfer
            .credit_account
            .as_ref()
            .map(|id| id.name().to_owned())
            .unwrap_or_default(),
        amount_minor: transfer.amount,
        amount: money(transfer.amount),
        currency: transfer.currency.map(|currency| currency.code().to_owned()).unwrap_or_default(),
        pending_id: transfer.pending_id.map(|id| id.to_string()).unwrap_or_default(),
        error: transfer.error.as_ref().map(error),
        expires_at: transfer.expires_at.map(Timestamp::to_rfc3339).unwrap_or_default(),
        captured_amount_minor: transfer.captured_amount,
        category: transfer.details.category.clone(),
        description: transfer.details.description.clone(),
        metadata: transfer.details.metadata.clone().into_iter().collect(),
        effective_at: transfer.effective_at.to_rfc3339(),
        committed_at: transfer.committed_at.to_rfc3339(),
        fx: transfer.fx.as_deref().map(transfer_conversion),
        updated_at: transfer.updated_at.to_rfc3339(),
    }
}

pub fn transfer_result(result: kopek_core::TransferResult) -> pb::TransferResult {
    match result {
        kopek_core::TransferResult::Committed(recorded) => pb::TransferResult {
            error: recorded.error.as_ref().map(error),
            transfer: Some(transfer(&recorded)),
            replayed: false,
        },
        kopek_core::TransferResult::Replayed(recorded) => pb::TransferResult {
            error: recorded.error.as_ref().map(error),
            transfer: Some(transfer(&recorded)),
            replayed: true,
        },
        kopek_core::TransferResult::Rejected(rejection) => {
            pb::TransferResult { transfer: None, replayed: false, error: Some(error(&rejection)) }
        }
    }
}

/// `transfer_result`, short for a transfer recorded and not declined: its id and status only
/// (`StreamTransfersRequest.compact`). Declined and refused transfers keep their full result.
pub fn compact_transfer_result(result: kopek_core::TransferResult) -> pb::TransferResult {
    let (recorded, replayed) = match &result {
        kopek_core::TransferResult::Committed(recorded) => (recorded, false),
        kopek_core::TransferResult::Replayed(recorded) => (recorded, true),
        kopek_core::TransferResult::Rejected(_) => return transfer_result(result),
    };
    if recorded.error.is_some() || recorded.status == TransferStatus::Declined {
        return transfer_result(result);
    }
    pb::TransferResult {
        transfer: Some(pb::Transfer {
            id: recorded.id.to_string(),
            status: transfer_status(recorded.status) as i32,
            ..pb::Transfer::default()
        }),
        replayed,
        error: None,
    }
}

pub fn entry(stored: &StoredEntry) -> pb::Entry {
    let entry = &stored.entry;
    pb::Entry {
        sequence: stored.sequence,
        transfer_id: entry.transfer_id.to_string(),
        account_id: entry.account_id.name().to_owned(),
        direction: match entry.direction {
            Direction::Debit => pb::Direction::Debit,
            Direction::Credit => pb::Direction::Credit,
        } as i32,
        amount_minor: entry.amount,
        amount: format_minor(entry.amount, entry.currency),
        currency: entry.currency.code().to_owned(),
        balance_after_minor: entry.balance_after,
        balance_after: format_minor(entry.balance_after, entry.currency),
        effective_at: entry.effective_at.to_rfc3339(),
        committed_at: entry.committed_at.to_rfc3339(),
    }
}
