//! Outbox events: one per committed change, produced by `apply` as data.

use crate::account::Account;
use crate::fx::{FxRate, Quote};
use crate::ids::{AccountId, EventId, Tenant};
use crate::money::Currency;
use crate::party::{Order, User};
use crate::time::Timestamp;
use crate::transfer::Transfer;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    AccountOpened,
    AccountUpdated,
    TransferPosted,
    TransferDeclined,
    HoldPlaced,
    HoldCaptured,
    HoldVoided,
    HoldExpired,
    UserCreated,
    OrderCreated,
    PaymentCompleted,
    PaymentFailed,
    OrderPaid,
    OrderFailed,
    RateUpdated,
    QuoteCreated,
}

impl EventKind {
    pub const ALL: [EventKind; 16] = [
        EventKind::AccountOpened,
        EventKind::AccountUpdated,
        EventKind::TransferPosted,
        EventKind::TransferDeclined,
        EventKind::HoldPlaced,
        EventKind::HoldCaptured,
        EventKind::HoldVoided,
        EventKind::HoldExpired,
        EventKind::UserCreated,
        EventKind::OrderCreated,
        EventKind::PaymentCompleted,
        EventKind::PaymentFailed,
        EventKind::OrderPaid,
        EventKind::OrderFailed,
        EventKind::RateUpdated,
        EventKind::QuoteCreated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::AccountOpened => "AccountOpened",
            EventKind::AccountUpdated => "AccountUpdated",
            EventKind::TransferPosted => "TransferPosted",
            EventKind::TransferDeclined => "TransferDeclined",
            EventKind::HoldPlaced => "HoldPlaced",
            EventKind::HoldCaptured => "HoldCaptured",
            EventKind::HoldVoided => "HoldVoided",
            EventKind::HoldExpired => "HoldExpired",
            EventKind::UserCreated => "UserCreated",
            EventKind::OrderCreated => "OrderCreated",
            EventKind::PaymentCompleted => "PaymentCompleted",
            EventKind::PaymentFailed => "PaymentFailed",
            EventKind::OrderPaid => "OrderPaid",
            EventKind::OrderFailed => "OrderFailed",
            EventKind::RateUpdated => "RateUpdated",
            EventKind::QuoteCreated => "QuoteCreated",
        }
    }

    pub fn parse(text: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// True for the event that records a transfer row's creation (every row has exactly one).
    pub fn creates_transfer(self) -> bool {
        matches!(
            self,
            EventKind::TransferPosted
                | EventKind::TransferDeclined
                | EventKind::HoldPlaced
                | EventKind::HoldCaptured
                | EventKind::HoldVoided
        )
    }
}

/// What the event is about, as it was right after the change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    Account(Account),
    Transfer(Transfer),
    User(User),
    Order(Order),
    Rate(FxRate),
    Quote(Quote),
}

/// An account's balances right after the change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BalanceSnapshot {
    pub account_id: AccountId,
    pub currency: Currency,
    pub posted: i64,
    pub pending_out: i64,
    pub pending_in: i64,
    /// `None` for an unbounded overdraft.
    pub available: Option<i128>,
}

/// The balances an event carries: those of at most two accounts (a movement's debit and
/// credit), held inline, so that an event allocates nothing for them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Balances([Option<BalanceSnapshot>; 2]);

impl Balances {
    /// How many an event carries at most.
    pub const MAX: usize = 2;

    /// Adds one after those already there; gives it back if there are `MAX` already.
    pub fn push(&mut self, balance: BalanceSnapshot) -> Result<(), BalanceSnapshot> {
        match self.0.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => {
                *slot = Some(balance);
                Ok(())
            }
            None => Err(balance),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &BalanceSnapshot> {
        self.0.iter().flatten()
    }

    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.0[0].is_none()
    }
}

impl<'a> IntoIterator for &'a Balances {
    type Item = &'a BalanceSnapshot;
    type IntoIter = std::iter::Flatten<std::slice::Iter<'a, Option<BalanceSnapshot>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().flatten()
    }
}

impl BalanceSnapshot {
    pub fn of(account: &Account) -> BalanceSnapshot {
        BalanceSnapshot {
            account_id: account.id.clone(),
            currency: account.currency,
            posted: account.balance.posted,
            pending_out: account.balance.pending_out,
            pending_in: account.balance.pending_in,
            available: account.available(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub id: EventId,
    pub tenant: Tenant,
    /// The API key whose command caused the event (`None`: kopek itself, or auth off).
    pub actor: Option<String>,
    /// The W3C `traceparent` of the span whose command caused the event.
    pub trace: Option<String>,
    pub kind: EventKind,
    pub at: Timestamp,
    pub subject: Subject,
    pub balances: Balances,
}

/// The subject id clients see, from the one a store keeps: an account, user or order is
/// stored by its key (its tenant's, see `ids`), and seen by its name.
pub fn subject_name<'a>(kind: &str, stored: &'a str) -> &'a str {
    let keyed = matches!(
        EventKind::parse(kind),
        Some(
            EventKind::AccountOpened
                | EventKind::AccountUpdated
                | EventKind::UserCreated
                | EventKind::OrderCreated
                | EventKind::PaymentCompleted
                | EventKind::PaymentFailed
                | EventKind::OrderPaid
                | EventKind::OrderFailed
        )
    );
    if keyed { crate::ids::name_of(stored) } else { stored }
}

impl Event {
    /// The id of the thing the event is about, as stores keep it: an account, user or order
    /// by its key ([`subject_name`] gives what clients see).
    pub fn subject_id(&self) -> String {
        match &self.subject {
            Subject::Account(account) => account.id.as_str().to_owned(),
            Subject::Transfer(transfer) => transfer.id.to_string(),
            Subject::User(user) => user.id.as_str().to_owned(),
            Subject::Order(order) => order.id.as_str().to_owned(),
            Subject::Rate(rate) => format!("{}/{}", rate.base, rate.quote),
            Subject::Quote(quote) => quote.id.to_string(),
        }
    }
}
