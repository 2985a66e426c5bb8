//! kopek-core: the double-entry state machine. Money, accounts, transfers, entries, events,
//! error codes, and `apply`, the one function that decides every verdict.
//!
//! No async, no I/O, no clock, no randomness: time and fresh ids arrive as arguments, so the
//! simulator, property tests and every store backend run exactly the same rules.

pub mod account;
pub mod apply;
pub mod authority;
pub mod error;
pub mod event;
pub mod fx;
pub mod ids;
pub mod limits;
pub mod memory;
pub mod money;
pub mod party;
pub mod time;
pub mod transfer;

pub use account::{
    Account, AccountKind, AccountStatus, AccountUpdate, Balance, Metadata, NewAccount, Overdraft,
};
pub use apply::{
    AccountResult, Batch, Command, CommandBody, CommandResult, InboxMark, Keys, Linking,
    OrderResult, Outcome, QuoteResult, RateResult, State, TransferResult, UserResult, apply,
    linked_failed,
};
pub use authority::Authority;
pub use error::{ErrorCode, Rejection};
pub use event::{BalanceSnapshot, Balances, Event, EventKind, Subject};
pub use fx::{
    DerivedRate, FxLeg, FxRate, FxTerms, LegRole, NewQuote, Quote, Rate, RateSet, RateStep, Side,
    Terms,
};
pub use ids::{AccountId, EventId, IdSource, IdempotencyKey, QuoteId, Tenant, TransferId, Ulid};
pub use money::{Amount, Currency, format_minor};
pub use party::{NewOrder, NewUser, Order, OrderId, OrderStatus, User, UserId};
pub use time::Timestamp;
pub use transfer::{
    Action, Details, Direction, Entry, FINGERPRINT_STORED_LEN, Fingerprint, Hold, Movement,
    Transfer, TransferKind, TransferRequest, TransferStatus,
};
