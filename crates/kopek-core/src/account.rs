//! Accounts: one currency, a kind, an overdraft limit, a status, metadata and balances.

use crate::error::Rejection;
use crate::ids::{AccountId, Tenant};
use crate::limits;
use crate::money::Currency;
use crate::time::Timestamp;
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountKind {
    User,
    System,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::User => "user",
            AccountKind::System => "system",
        }
    }

    pub fn parse(text: &str) -> Option<AccountKind> {
        [AccountKind::User, AccountKind::System].into_iter().find(|kind| kind.as_str() == text)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountStatus {
    Active,
    /// Neither debited nor credited until unfrozen; holds may still be voided or expire.
    Frozen,
    /// Final: closed accounts are never debited, credited or reopened.
    Closed,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Frozen => "frozen",
            AccountStatus::Closed => "closed",
        }
    }

    pub fn parse(text: &str) -> Option<AccountStatus> {
        [AccountStatus::Active, AccountStatus::Frozen, AccountStatus::Closed]
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

/// How far below zero the posted balance may go, net of holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overdraft {
    /// At most this many minor units below zero (0: no overdraft).
    Limited(i64),
    /// No limit: system accounts such as `world:<CUR>` that stand for money outside the ledger.
    Unbounded,
}

impl Overdraft {
    pub const NONE: Overdraft = Overdraft::Limited(0);

    pub fn limited(minor: i64) -> Result<Overdraft, Rejection> {
        if minor < 0 {
            return Err(Rejection::invalid("overdraft limit must not be negative"));
        }
        Ok(Overdraft::Limited(minor))
    }
}

/// Balances in minor units. Credits raise `posted`, debits lower it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Balance {
    pub posted: i64,
    /// Reserved by holds where this account pays.
    pub pending_out: i64,
    /// Promised by holds where this account is paid.
    pub pending_in: i64,
}

pub type Metadata = BTreeMap<String, String>;

/// Checks metadata against its bounds.
pub fn validate_metadata(metadata: &Metadata) -> Result<(), Rejection> {
    if metadata.len() > limits::METADATA_ENTRIES_MAX {
        return Err(Rejection::invalid(format!(
            "metadata has more than {} entries",
            limits::METADATA_ENTRIES_MAX
        )));
    }
    for (key, value) in metadata {
        if key.is_empty() || key.len() > limits::METADATA_KEY_BYTES_MAX {
            return Err(Rejection::invalid(format!(
                "metadata keys must be 1 to {} bytes",
                limits::METADATA_KEY_BYTES_MAX
            )));
        }
        if value.len() > limits::METADATA_VALUE_BYTES_MAX {
            return Err(Rejection::invalid(format!(
                "metadata values must be at most {} bytes",
                limits::METADATA_VALUE_BYTES_MAX
            )));
        }
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    /// Account ids are global; an account is seen and moved only by its own tenant.
    pub tenant: Tenant,
    pub currency: Currency,
    pub owner: Option<String>,
    pub kind: AccountKind,
    pub overdraft: Overdraft,
    pub status: AccountStatus,
    pub metadata: Metadata,
    pub balance: Balance,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Account {
    /// `posted - pending_out + overdraft limit`; `None` when the overdraft is unbounded.
    pub fn available(&self) -> Option<i128> {
        match self.overdraft {
            Overdraft::Unbounded => None,
            Overdraft::Limited(limit) => Some(
                i128::from(self.balance.posted) - i128::from(self.balance.pending_out)
                    + i128::from(limit),
            ),
        }
    }

    /// `posted - pending_out`, the spendable balance before any overdraft.
    pub fn available_without_overdraft(&self) -> i128 {
        i128::from(self.balance.posted) - i128::from(self.balance.pending_out)
    }

    pub fn can_spend(&self, amount: i64) -> bool {
        self.available().is_none_or(|available| available >= i128::from(amount))
    }
}

/// A request to open an account. Its id is its idempotency key: opening the same account
/// twice answers the existing one, opening it with other fields fails with `ACCOUNT_EXISTS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAccount {
    pub id: AccountId,
    pub currency: Currency,
    pub owner: Option<String>,
    pub kind: AccountKind,
    pub overdraft: Overdraft,
    pub metadata: Metadata,
}

impl NewAccount {
    pub fn user(id: AccountId, currency: Currency) -> NewAccount {
        NewAccount {
            id,
            currency,
            owner: None,
            kind: AccountKind::User,
            overdraft: Overdraft::NONE,
            metadata: Metadata::new(),
        }
    }

    pub fn validate(&self) -> Result<(), Rejection> {
        if let Some(owner) = &self.owner
            && (owner.is_empty() || owner.len() > limits::OWNER_BYTES_MAX)
        {
            return Err(Rejection::invalid(format!(
                "owner must be 1 to {} bytes",
                limits::OWNER_BYTES_MAX
            )));
        }
        if self.kind == AccountKind::User && self.overdraft == Overdraft::Unbounded {
            return Err(Rejection::invalid("only system accounts may have an unbounded overdraft"));
        }
        validate_metadata(&self.metadata)
    }

    /// True when `account` is what this request would have opened. Only fields that never
    /// change are compared: the overdraft limit and status may have been updated since, and
    /// retrying the original request must still answer the account.
    pub fn matches(&self, account: &Account) -> bool {
        self.id == account.id
            && self.currency == account.currency
            && self.owner == account.owner
            && self.kind == account.kind
            && self.metadata == account.metadata
    }
}

/// A change of an account's overdraft limit or status; `None` leaves a field as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountUpdate {
    pub id: AccountId,
    pub overdraft: Option<Overdraft>,
    pub status: Option<AccountStatus>,
}
