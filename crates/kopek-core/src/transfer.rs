//! Transfers (requests to move money), their stored records, entries and fingerprints.

use crate::account::{Metadata, NewAccount, validate_metadata};
use crate::error::{ErrorCode, Rejection};
use crate::fx::{FxLeg, FxTerms};
use crate::ids::{AccountId, IdempotencyKey, Tenant, TransferId};
use crate::limits;
use crate::money::{Amount, Currency};
use crate::time::Timestamp;

/// What a transfer is for. It never changes the rules of a movement except that deposits
/// and withdrawals must go through `world:<CUR>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TransferKind {
    Transfer,
    Deposit,
    Withdrawal,
    Payment,
    Purchase,
    Fee,
    Reversal,
    FxLeg,
}

impl TransferKind {
    pub const ALL: [TransferKind; 8] = [
        TransferKind::Transfer,
        TransferKind::Deposit,
        TransferKind::Withdrawal,
        TransferKind::Payment,
        TransferKind::Purchase,
        TransferKind::Fee,
        TransferKind::Reversal,
        TransferKind::FxLeg,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TransferKind::Transfer => "transfer",
            TransferKind::Deposit => "deposit",
            TransferKind::Withdrawal => "withdrawal",
            TransferKind::Payment => "payment",
            TransferKind::Purchase => "purchase",
            TransferKind::Fee => "fee",
            TransferKind::Reversal => "reversal",
            TransferKind::FxLeg => "fx_leg",
        }
    }

    pub fn parse(text: &str) -> Option<TransferKind> {
        TransferKind::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// The money movement a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Movement {
    /// Move `amount` from the debit account to the credit account; with `hold`, only reserve
    /// it until captured, voided or expired.
    Move {
        debit_account: AccountId,
        credit_account: AccountId,
        /// The requested amount in minor units; not positive is a recorded `INVALID_AMOUNT`.
        amount: i64,
        currency: Currency,
        hold: Option<Hold>,
    },
    /// Move money between accounts of two currencies at the terms of `terms`: a linked set
    /// of legs through the liquidity accounts (see `apply`). With `hold`, every leg is held.
    Exchange {
        debit_account: AccountId,
        credit_account: AccountId,
        terms: FxTerms,
        hold: Option<Hold>,
    },
    /// Post a held transfer, fully (`amount: None`) or partially; the rest is released.
    Capture { pending_id: TransferId, amount: Option<Amount> },
    /// Release a held transfer without moving money.
    Void { pending_id: TransferId },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hold {
    /// Seconds until the hold expires; `None` holds until captured or voided.
    pub timeout_seconds: Option<u32>,
}

/// Free text that travels with a transfer but does not decide the movement.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Details {
    pub category: String,
    pub description: String,
    pub metadata: Metadata,
}

impl Details {
    pub fn validate(&self) -> Result<(), Rejection> {
        if self.category.len() > limits::CATEGORY_BYTES_MAX {
            return Err(Rejection::invalid(format!(
                "category must be at most {} bytes",
                limits::CATEGORY_BYTES_MAX
            )));
        }
        if self.description.len() > limits::DESCRIPTION_BYTES_MAX {
            return Err(Rejection::invalid(format!(
                "description must be at most {} bytes",
                limits::DESCRIPTION_BYTES_MAX
            )));
        }
        validate_metadata(&self.metadata)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferRequest {
    pub idempotency_key: IdempotencyKey,
    pub kind: TransferKind,
    pub movement: Movement,
    pub details: Details,
    /// When the movement happened for the client; `None` is the commit time.
    pub effective_at: Option<Timestamp>,
    /// Accounts of this movement to open if they do not exist yet, atomically with it (a
    /// customer's account opened by their first deposit). At most two; not in the fingerprint.
    pub open_if_missing: Vec<NewAccount>,
    /// Request content a surface counts as part of the request beyond the movement (the
    /// streaming contract's timestamp and category text): it must match too for a replay.
    /// Empty for most requests.
    pub fingerprint_extra: String,
}

impl TransferRequest {
    /// Bounds on the request's own fields; a failure here is bad input and is not recorded.
    pub fn validate(&self) -> Result<(), Rejection> {
        let hold = match &self.movement {
            Movement::Move { hold, .. } | Movement::Exchange { hold, .. } => *hold,
            Movement::Capture { .. } | Movement::Void { .. } => None,
        };
        if let Some(Hold { timeout_seconds: Some(seconds) }) = hold
            && (seconds == 0 || seconds > limits::HOLD_TIMEOUT_SECONDS_MAX)
        {
            return Err(Rejection::invalid(format!(
                "hold timeout must be 1 to {} seconds",
                limits::HOLD_TIMEOUT_SECONDS_MAX
            )));
        }
        if !self.open_if_missing.is_empty() {
            let Movement::Move { debit_account, credit_account, .. } = &self.movement else {
                return Err(Rejection::invalid("only a move can open accounts"));
            };
            if self.open_if_missing.len() > 2 {
                return Err(Rejection::invalid("a transfer opens at most its two accounts"));
            }
            for account in &self.open_if_missing {
                account.validate()?;
                let own = account.id == *debit_account || account.id == *credit_account;
                if !own || account.id.is_world() {
                    return Err(Rejection::invalid(format!(
                        "a transfer cannot open account {}",
                        account.id.name()
                    )));
                }
            }
        }
        self.details.validate()
    }

    /// The fingerprint of this request as a member of a linked request: a key used alone
    /// and then inside a linked request (or the other way round) is a reuse, not a replay.
    pub fn fingerprint_linked(&self) -> Fingerprint {
        let mut text = self.fingerprint_text();
        text.push_str("|linked");
        Fingerprint(text.into())
    }

    /// The canonical text of the fields that decide the money movement. Two requests with one
    /// idempotency key are the same request exactly when their fingerprints are equal. Free
    /// text, metadata and the effective time are left out, as Stripe and the contracts do.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint(self.fingerprint_text().into())
    }

    /// The text of `fingerprint`.
    fn fingerprint_text(&self) -> String {
        let kind = self.kind.as_str();
        let mut text = match &self.movement {
            // Accounts by name: the key scope is the tenant already, and fingerprints recorded
            // before ids belonged to tenants name them so.
            Movement::Move { debit_account, credit_account, amount, currency, hold } => {
                let hold = hold_text(*hold);
                let (debit_account, credit_account) = (debit_account.name(), credit_account.name());
                format!("v1|{kind}|{hold}|{debit_account}|{credit_account}|{amount}|{currency}")
            }
            Movement::Exchange { debit_account, credit_account, terms, hold } => {
                let hold = hold_text(*hold);
                // A market-priced request is the same request whatever the rate did since.
                let terms = match terms {
                    FxTerms::Quote(id) => format!("quote:{id}"),
                    FxTerms::Market(terms) => format!(
                        "market:{}:{}:{}:{}",
                        terms.side.as_str(),
                        terms.requested_amount(),
                        terms.from,
                        terms.to
                    ),
                };
                let (debit_account, credit_account) = (debit_account.name(), credit_account.name());
                format!("v1|{kind}|{hold}|{debit_account}|{credit_account}|fx:{terms}")
            }
            Movement::Capture { pending_id, amount } => {
                let amount =
                    amount.map_or_else(|| "full".to_owned(), |amount| amount.minor().to_string());
                format!("v1|{kind}|capture|{pending_id}|{amount}")
            }
            Movement::Void { pending_id } => format!("v1|{kind}|void|{pending_id}"),
        };
        if !self.fingerprint_extra.is_empty() {
            text.push_str("|x:");
            text.push_str(&self.fingerprint_extra);
        }
        text
    }
}

fn hold_text(hold: Option<Hold>) -> std::borrow::Cow<'static, str> {
    match hold {
        None => "post".into(),
        Some(Hold { timeout_seconds: None }) => "hold".into(),
        Some(Hold { timeout_seconds: Some(seconds) }) => format!("hold:{seconds}").into(),
    }
}

/// See [`TransferRequest::fingerprint`]. Stored verbatim, so equality is exact. Shared, not
/// copied: every copy of a transfer record carries it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint(pub std::sync::Arc<str>);

/// What a stored transfer record did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Post,
    Hold,
    Capture,
    Void,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Post => "post",
            Action::Hold => "hold",
            Action::Capture => "capture",
            Action::Void => "void",
        }
    }

    pub fn parse(text: &str) -> Option<Action> {
        [Action::Post, Action::Hold, Action::Capture, Action::Void]
            .into_iter()
            .find(|action| action.as_str() == text)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TransferStatus {
    /// Money moved (a post, or a capture).
    Posted,
    /// A hold that still reserves funds.
    Pending,
    /// A hold that a capture resolved.
    Captured,
    /// A hold that a void resolved (also the status of the void record itself).
    Voided,
    /// A hold whose timeout passed before it was resolved.
    Expired,
    /// Rejected; kept so that a retry answers the same verdict.
    Declined,
}

impl TransferStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferStatus::Posted => "posted",
            TransferStatus::Pending => "pending",
            TransferStatus::Captured => "captured",
            TransferStatus::Voided => "voided",
            TransferStatus::Expired => "expired",
            TransferStatus::Declined => "declined",
        }
    }

    pub fn parse(text: &str) -> Option<TransferStatus> {
        [
            TransferStatus::Posted,
            TransferStatus::Pending,
            TransferStatus::Captured,
            TransferStatus::Voided,
            TransferStatus::Expired,
            TransferStatus::Declined,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }
}

/// A transfer as the ledger keeps it, declined ones included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub id: TransferId,
    pub tenant: Tenant,
    pub idempotency_key: IdempotencyKey,
    pub fingerprint: Fingerprint,
    pub kind: TransferKind,
    pub action: Action,
    /// `None` only for a declined capture or void whose hold was not found.
    pub debit_account: Option<AccountId>,
    pub credit_account: Option<AccountId>,
    /// Minor units: moved (post, capture), reserved (hold), released (void) or asked (declined).
    pub amount: i64,
    pub currency: Option<Currency>,
    /// The hold a capture or void resolves.
    pub pending_id: Option<TransferId>,
    pub status: TransferStatus,
    pub error: Option<Rejection>,
    /// For holds: when the hold lapses.
    pub expires_at: Option<Timestamp>,
    /// For holds: the amount a capture posted (0 until captured).
    pub captured_amount: i64,
    pub details: Details,
    pub effective_at: Timestamp,
    pub committed_at: Timestamp,
    /// Last change of `status`.
    pub updated_at: Timestamp,
    /// For a leg of a cross-currency transfer: its conversion.
    pub fx: Option<Box<FxLeg>>,
}

impl Transfer {
    /// The transfer as its request was first answered. Only holds change after that (they are
    /// captured, voided or expire); a replay answers the original outcome, as Stripe does.
    pub fn as_first_recorded(&self) -> Transfer {
        let mut original = self.clone();
        if self.action == Action::Hold && self.status != TransferStatus::Declined {
            original.status = TransferStatus::Pending;
            original.captured_amount = 0;
            original.updated_at = self.committed_at;
        }
        original
    }

    pub fn error_code(&self) -> Option<ErrorCode> {
        self.error.as_ref().map(|rejection| rejection.code)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Debit,
    Credit,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Debit => "debit",
            Direction::Credit => "credit",
        }
    }

    pub fn parse(text: &str) -> Option<Direction> {
        [Direction::Debit, Direction::Credit]
            .into_iter()
            .find(|direction| direction.as_str() == text)
    }
}

/// One line of an account's statement: a posted debit or credit with the balance after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub transfer_id: TransferId,
    pub account_id: AccountId,
    pub direction: Direction,
    pub amount: i64,
    pub currency: Currency,
    /// The account's posted balance right after this entry, in commit order.
    pub balance_after: i64,
    pub effective_at: Timestamp,
    pub committed_at: Timestamp,
}

impl Entry {
    /// The entry's effect on the posted balance: credits add, debits subtract.
    pub fn signed_amount(&self) -> i64 {
        match self.direction {
            Direction::Credit => self.amount,
            Direction::Debit => -self.amount,
        }
    }
}
