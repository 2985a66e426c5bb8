//! JSON shapes of the canonical `/v1` API and their conversion from core types. Money is a
//! decimal string in major units (`"12.50"`) next to integer minor units (`amount_minor`).

use kopek_core::{
    Account, AccountKind, AccountStatus, Currency, Direction, Overdraft, Timestamp, Transfer, User,
    format_minor,
};
use kopek_store::{StoredEntry, StoredEvent};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct BalanceDto {
    pub posted: String,
    pub posted_minor: i64,
    /// Reserved by holds this account pays.
    pub pending_out_minor: i64,
    /// Promised by holds this account receives.
    pub pending_in_minor: i64,
    /// `posted - pending_out + overdraft limit`; null when the overdraft is unbounded.
    pub available: Option<String>,
    pub available_minor: Option<i64>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AccountDto {
    pub id: String,
    pub currency: String,
    pub owner: Option<String>,
    /// `user` or `system`.
    pub kind: String,
    /// Null: unbounded (system accounts only).
    pub overdraft_limit_minor: Option<i64>,
    /// `active`, `frozen` or `closed`.
    pub status: String,
    pub metadata: BTreeMap<String, String>,
    pub balance: BalanceDto,
    pub created_at: String,
    pub updated_at: String,
}

fn clamp(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

pub fn balance(account: &Account) -> BalanceDto {
    let available = account.available().map(clamp);
    BalanceDto {
        posted: format_minor(account.balance.posted, account.currency),
        posted_minor: account.balance.posted,
        pending_out_minor: account.balance.pending_out,
        pending_in_minor: account.balance.pending_in,
        available: available.map(|value| format_minor(value, account.currency)),
        available_minor: available,
    }
}

pub fn account(account: &Account) -> AccountDto {
    AccountDto {
        id: account.id.name().to_owned(),
        currency: account.currency.code().to_owned(),
        owner: account.owner.clone(),
        kind: account.kind.as_str().to_owned(),
        overdraft_limit_minor: match account.overdraft {
            Overdraft::Limited(limit) => Some(limit),
            Overdraft::Unbounded => None,
        },
        status: account.status.as_str().to_owned(),
        metadata: account.metadata.clone(),
        balance: balance(account),
        created_at: account.created_at.to_rfc3339(),
        updated_at: account.updated_at.to_rfc3339(),
    }
}

#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccountDto {
    /// `[A-Za-z0-9_.:-]{1,128}`; when absent the id is made from the Idempotency-Key.
    pub id: Option<String>,
    pub currency: String,
    pub owner: Option<String>,
    /// `user` (default) or `system`.
    pub kind: Option<String>,
    /// How far below zero the balance may go, in major units (e.g. `"100.00"`).
    pub overdraft_limit: Option<String>,
    pub overdraft_limit_minor: Option<i64>,
    /// System accounts only: no overdraft limit at all.
    #[serde(default)]
    pub unbounded_overdraft: bool,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountUpdateDto {
    pub overdraft_limit: Option<String>,
    pub overdraft_limit_minor: Option<i64>,
    /// `active`, `frozen` or `closed`.
    pub status: Option<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AccountListDto {
    pub accounts: Vec<AccountDto>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A page of a transfer search.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TransferListDto {
    pub transfers: Vec<TransferDto>,
    /// Pass as `cursor` for the next page; null once no transfer can follow.
    pub next_cursor: Option<String>,
}

pub use kopek_intake::json::{HoldDto, NewTransferDto};

#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureDto {
    /// Capture part of the hold (the rest is released); absent: all of it.
    pub amount: Option<String>,
    pub amount_minor: Option<i64>,
}

#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferBatchDto {
    pub transfers: Vec<NewTransferDto>,
    /// All commit or none does.
    #[serde(default)]
    pub linked: bool,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TransferDto {
    /// ULID.
    pub id: String,
    pub idempotency_key: String,
    pub kind: String,
    /// `post`, `hold`, `capture` or `void`.
    pub action: String,
    /// `posted`, `pending`, `captured`, `voided`, `expired` or `declined`.
    pub status: String,
    pub debit_account_id: Option<String>,
    pub credit_account_id: Option<String>,
    pub amount: Option<String>,
    pub amount_minor: i64,
    pub currency: Option<String>,
    /// The hold a capture or void resolves.
    pub pending_id: Option<String>,
    pub error: Option<crate::error::ErrorDetail>,
    pub expires_at: Option<String>,
    pub captured_amount_minor: i64,
    pub category: String,
    pub description: String,
    pub metadata: BTreeMap<String, String>,
    pub effective_at: String,
    pub committed_at: String,
    pub updated_at: String,
    /// For a leg of a cross-currency transfer: its conversion (quote, terms, rate, path).
    pub fx: Option<crate::fx::TransferFxDto>,
    /// Only when asked for (`include=entries`): the debit and credit entries, in commit
    /// order; none for a hold, a void or a declined transfer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<Vec<EntryDto>>,
}

pub fn transfer(transfer: &Transfer) -> TransferDto {
    let money = |minor: i64| transfer.currency.map(|currency| format_minor(minor, currency));
    TransferDto {
        id: transfer.id.to_string(),
        idempotency_key: transfer.idempotency_key.to_string(),
        kind: transfer.kind.as_str().to_owned(),
        action: transfer.action.as_str().to_owned(),
        status: transfer.status.as_str().to_owned(),
        debit_account_id: transfer.debit_account.as_ref().map(|id| id.name().to_owned()),
        credit_account_id: transfer.credit_account.as_ref().map(|id| id.name().to_owned()),
        amount: money(transfer.amount),
        amount_minor: transfer.amount,
        currency: transfer.currency.map(|currency| currency.code().to_owned()),
        pending_id: transfer.pending_id.map(|id| id.to_string()),
        error: transfer.error.as_ref().map(|error| crate::error::ErrorDetail {
            code: error.code.to_string(),
            message: error.message.clone(),
        }),
        expires_at: transfer.expires_at.map(Timestamp::to_rfc3339),
        captured_amount_minor: transfer.captured_amount,
        category: transfer.details.category.clone(),
        description: transfer.details.description.clone(),
        metadata: transfer.details.metadata.clone(),
        effective_at: transfer.effective_at.to_rfc3339(),
        committed_at: transfer.committed_at.to_rfc3339(),
        updated_at: transfer.updated_at.to_rfc3339(),
        fx: transfer.fx.as_deref().map(crate::fx::transfer_fx_dto),
        entries: None,
    }
}

/// One item of a batch: the transfer if recorded, whether it replayed, and the error if it
/// did not apply.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TransferResultDto {
    pub transfer: Option<TransferDto>,
    pub replayed: bool,
    pub error: Option<crate::error::ErrorDetail>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TransferBatchResultDto {
    pub results: Vec<TransferResultDto>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct EntryDto {
    /// Ledger-wide commit order; the statement cursor.
    pub sequence: u64,
    pub transfer_id: String,
    pub account_id: String,
    /// `debit` or `credit`.
    pub direction: String,
    pub amount: String,
    pub amount_minor: i64,
    pub currency: String,
    pub balance_after: String,
    pub balance_after_minor: i64,
    pub effective_at: String,
    pub committed_at: String,
}

pub fn entry(stored: &StoredEntry) -> EntryDto {
    let entry = &stored.entry;
    EntryDto {
        sequence: stored.sequence,
        transfer_id: entry.transfer_id.to_string(),
        account_id: entry.account_id.name().to_owned(),
        direction: match entry.direction {
            Direction::Debit => "debit",
            Direction::Credit => "credit",
        }
        .to_owned(),
        amount: format_minor(entry.amount, entry.currency),
        amount_minor: entry.amount,
        currency: entry.currency.code().to_owned(),
        balance_after: format_minor(entry.balance_after, entry.currency),
        balance_after_minor: entry.balance_after,
        effective_at: entry.effective_at.to_rfc3339(),
        committed_at: entry.committed_at.to_rfc3339(),
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct StatementDto {
    pub entries: Vec<EntryDto>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_cursor: Option<u64>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct BalanceAtDto {
    pub account_id: String,
    pub currency: String,
    /// Now, or `as_of`: then only `posted` is historical and holds are left out.
    pub balance: BalanceDto,
    pub as_of: Option<String>,
}

pub fn posted_only(posted: i64, currency: Currency) -> BalanceDto {
    BalanceDto {
        posted: format_minor(posted, currency),
        posted_minor: posted,
        pending_out_minor: 0,
        pending_in_minor: 0,
        available: None,
        available_minor: None,
    }
}

#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserDto {
    /// Absent: made from the Idempotency-Key.
    pub id: Option<String>,
    pub name: String,
    /// The currency of the account opened with the user; default: the server's.
    pub currency: Option<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct UserDto {
    pub id: String,
    pub name: Option<String>,
    pub created_at: Option<String>,
    /// The user's accounts, one per currency.
    pub accounts: Vec<AccountDto>,
}

pub fn user(user: Option<&User>, id: &str, accounts: &[Account]) -> UserDto {
    UserDto {
        id: id.to_owned(),
        name: user.map(|user| user.name.clone()),
        created_at: user.map(|user| user.created_at.to_rfc3339()),
        accounts: accounts.iter().map(account).collect(),
    }
}

/// An order (placed through the HTTP contract's Part B) as kopek's own API shows it: with its
/// currency, its payment and, once it FAILED, why.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct OrderDto {
    pub id: String,
    pub user_id: String,
    pub amount: String,
    pub amount_minor: i64,
    pub currency: String,
    /// PENDING, PAID or FAILED.
    pub status: String,
    /// Why the payment failed, e.g. `INSUFFICIENT_FUNDS`; null unless FAILED.
    pub failure: Option<crate::error::ErrorDetail>,
    /// The payment transfer: posted when PAID, declined (and recorded) when FAILED.
    pub payment_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

pub fn order(order: &kopek_core::Order) -> OrderDto {
    OrderDto {
        id: order.id.name().to_owned(),
        user_id: order.user.name().to_owned(),
        amount: kopek_core::format_minor(order.amount, order.currency),
        amount_minor: order.amount,
        currency: order.currency.code().to_owned(),
        status: order.status.as_str().to_owned(),
        failure: order.failure.as_ref().map(|failure| crate::error::ErrorDetail {
            code: failure.code.to_string(),
            message: failure.message.clone(),
        }),
        payment_id: order.payment_id.map(|id| id.to_string()),
        created_at: order.created_at.to_rfc3339(),
        updated_at: order.updated_at.to_rfc3339(),
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SpendingTotalDto {
    /// The transfers' category; empty for transfers without one.
    pub category: String,
    pub currency: String,
    pub total_minor: i64,
    /// The same total as a decimal in major units.
    pub total: String,
    /// How many transfers make up the total.
    pub transfers: u64,
    pub updated_at: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SpendingDto {
    pub user_id: String,
    pub totals: Vec<SpendingTotalDto>,
}

pub fn spending(user: &str, totals: &[kopek_store::SpendingTotal]) -> SpendingDto {
    SpendingDto {
        user_id: user.to_owned(),
        totals: totals
            .iter()
            .map(|total| SpendingTotalDto {
                category: total.category.clone(),
                currency: total.currency.clone(),
                total_minor: total.total_minor,
                total: kopek_core::Currency::parse(&total.currency)
                    .map(|currency| kopek_core::format_minor(total.total_minor, currency))
                    .unwrap_or_default(),
                transfers: total.transfers,
                updated_at: total.updated_at.to_rfc3339(),
            })
            .collect(),
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct EventDto {
    /// Global order of events; resume after it.
    pub sequence: u64,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub subject_id: String,
    pub at: String,
    /// The event document: subject, balances after the change, and more.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

/// An outbox row with its document (`kopek_events::EventDocument::of_stored`).
pub fn event(event: &StoredEvent, document: &kopek_events::EventDocument) -> EventDto {
    EventDto {
        sequence: event.sequence,
        id: event.id.clone(),
        kind: event.kind.clone(),
        subject_id: event.subject_id.clone(),
        at: event.at.to_rfc3339(),
        payload: serde_json::to_value(document).unwrap_or(serde_json::Value::Null),
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct EventPageDto {
    pub events: Vec<EventDto>,
    pub next_cursor: Option<u64>,
}

/// Parsers of the words the API uses for core enums.
pub fn account_kind(text: Option<&str>) -> Option<AccountKind> {
    match text {
        None => Some(AccountKind::User),
        Some(text) => AccountKind::parse(text),
    }
}

pub fn account_status(text: &str) -> Option<AccountStatus> {
    AccountStatus::parse(text)
}
