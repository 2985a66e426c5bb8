//! Rows as plain values, and their one conversion into core types, shared by every backend:
//! a backend reads columns into these structs and calls `decode`; a value that does not parse
//! is an error naming it, never a panic.

use crate::codec::{
    fx_leg_from_json, fx_leg_json, metadata_from_json, terms_from_json, terms_json,
};
use kopek_core::{
    Account, AccountId, AccountKind, AccountStatus, Action, Balance, Currency, Details, Direction,
    Entry, ErrorCode, Fingerprint, FxRate, IdempotencyKey, Order, OrderId, OrderStatus, Overdraft,
    Quote, QuoteId, Rate, Rejection, Tenant, Timestamp, Transfer, TransferId, TransferKind,
    TransferStatus, User, UserId,
};

type Decoded<T> = Result<T, String>;

/// The columns each row is selected with, in the order `read` takes them.
pub const ACCOUNT_COLUMNS: &str = "id, currency, owner, kind, overdraft_limit, status, metadata, posted, \
     pending_out, pending_in, created_at, updated_at, tenant";
pub const TRANSFER_COLUMNS: &str = "id, tenant, idempotency_key, fingerprint, kind, action, debit_account, \
     credit_account, amount, currency, pending_id, status, error_code, error_message, expires_at, \
     captured_amount, category, description, metadata, effective_at, committed_at, updated_at, quote_id, fx";
/// How many columns `TRANSFER_COLUMNS` names: a query may select more after them.
pub const TRANSFER_COLUMN_COUNT: usize = 24;
pub const ENTRY_COLUMNS: &str = "sequence, account_id, transfer_id, direction, amount, currency, balance_after, effective_at, committed_at";
pub const USER_COLUMNS: &str = "id, name, created_at, tenant";
pub const EVENT_COLUMNS: &str = "sequence, id, tenant, kind, subject_id, at, payload, traceparent";
pub const RATE_COLUMNS: &str = "tenant, base, quote, rate, source, valid_from, set_at";
pub const QUOTE_COLUMNS: &str =
    "id, tenant, idempotency_key, terms, created_at, expires_at, used_by, used_at";
pub const ORDER_COLUMNS: &str = "id, tenant, user_id, amount, currency, status, failure_code, failure_message, \
     payment_id, created_at, updated_at";

/// One result row, column by column: each backend implements it for its row type, and the
/// `read` functions below take the columns in the order of the `*_COLUMNS` lists.
pub trait Columns {
    type Error;
    fn text(&self, index: usize) -> Result<String, Self::Error>;
    fn optional_text(&self, index: usize) -> Result<Option<String>, Self::Error>;
    fn integer(&self, index: usize) -> Result<i64, Self::Error>;
    fn optional_integer(&self, index: usize) -> Result<Option<i64>, Self::Error>;
}

fn parse<T>(what: &str, text: &str, parser: impl FnOnce(&str) -> Option<T>) -> Decoded<T> {
    parser(text).ok_or_else(|| format!("{what} '{text}' is not valid"))
}

fn rejected<T>(result: Result<T, Rejection>) -> Decoded<T> {
    result.map_err(|rejection| rejection.message)
}

fn at(micros: i64) -> Timestamp {
    Timestamp::from_unix_micros(micros)
}

fn failure(code: Option<String>, message: Option<String>) -> Decoded<Option<Rejection>> {
    code.map(|code| {
        Ok(Rejection::new(
            parse("error code", &code, ErrorCode::parse)?,
            message.unwrap_or_default(),
        ))
    })
    .transpose()
}

pub struct RawAccount {
    pub id: String,
    pub currency: String,
    pub owner: Option<String>,
    pub kind: String,
    pub overdraft_limit: Option<i64>,
    pub status: String,
    pub metadata: String,
    pub posted: i64,
    pub pending_out: i64,
    pub pending_in: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub tenant: String,
}

impl RawAccount {
    /// Reads a row selected with `ACCOUNT_COLUMNS`.
    pub fn read<C: Columns>(row: &C) -> Result<RawAccount, C::Error> {
        Ok(RawAccount {
            id: row.text(0)?,
            currency: row.text(1)?,
            owner: row.optional_text(2)?,
            kind: row.text(3)?,
            overdraft_limit: row.optional_integer(4)?,
            status: row.text(5)?,
            metadata: row.text(6)?,
            posted: row.integer(7)?,
            pending_out: row.integer(8)?,
            pending_in: row.integer(9)?,
            created_at: row.integer(10)?,
            updated_at: row.integer(11)?,
            tenant: row.text(12)?,
        })
    }

    pub fn decode(self) -> Decoded<Account> {
        Ok(Account {
            id: rejected(AccountId::from_key(&self.id))?,
            tenant: rejected(Tenant::parse(&self.tenant))?,
            currency: rejected(Currency::parse(&self.currency))?,
            owner: self.owner,
            kind: parse("account kind", &self.kind, AccountKind::parse)?,
            overdraft: self.overdraft_limit.map_or(Overdraft::Unbounded, Overdraft::Limited),
            status: parse("account status", &self.status, AccountStatus::parse)?,
            metadata: metadata_from_json(&self.metadata)?,
            balance: Balance {
                posted: self.posted,
                pending_out: self.pending_out,
                pending_in: self.pending_in,
            },
            created_at: at(self.created_at),
            updated_at: at(self.updated_at),
        })
    }
}

pub struct RawTransfer {
    pub id: String,
    pub tenant: String,
    pub idempotency_key: String,
    pub fingerprint: String,
    pub kind: String,
    pub action: String,
    pub debit_account: Option<String>,
    pub credit_account: Option<String>,
    pub amount: i64,
    pub currency: Option<String>,
    pub pending_id: Option<String>,
    pub status: String,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub expires_at: Option<i64>,
    pub captured_amount: i64,
    pub category: String,
    pub description: String,
    pub metadata: String,
    pub effective_at: i64,
    pub committed_at: i64,
    pub updated_at: i64,
    /// The conversion, as `codec::fx_leg_json` (the quote id is also a column of its own).
    pub fx: Option<String>,
}

impl RawTransfer {
    /// Reads a row selected with `TRANSFER_COLUMNS`.
    pub fn read<C: Columns>(row: &C) -> Result<RawTransfer, C::Error> {
        Ok(RawTransfer {
            id: row.text(0)?,
            tenant: row.text(1)?,
            idempotency_key: row.text(2)?,
            fingerprint: row.text(3)?,
            kind: row.text(4)?,
            action: row.text(5)?,
            debit_account: row.optional_text(6)?,
            credit_account: row.optional_text(7)?,
            amount: row.integer(8)?,
            currency: row.optional_text(9)?,
            pending_id: row.optional_text(10)?,
            status: row.text(11)?,
            error_code: row.optional_text(12)?,
            error_message: row.optional_text(13)?,
            expires_at: row.optional_integer(14)?,
            captured_amount: row.integer(15)?,
            category: row.text(16)?,
            description: row.text(17)?,
            metadata: row.text(18)?,
            effective_at: row.integer(19)?,
            committed_at: row.integer(20)?,
            updated_at: row.integer(21)?,
            fx: row.optional_text(23)?,
        })
    }

    pub fn decode(self) -> Decoded<Transfer> {
        // Declined payments keep what the client sent: references and codes no account has.
        let account =
            |id: Option<String>| id.map(|id| rejected(AccountId::from_key(&id))).transpose();
        let tenant = rejected(Tenant::parse(&self.tenant))?;
        Ok(Transfer {
            id: rejected(TransferId::parse(&self.id))?,
            fx: self.fx.map(|text| fx_leg_from_json(&text, &tenant).map(Box::new)).transpose()?,
            tenant,
            idempotency_key: rejected(stored_key(&self.idempotency_key))?,
            fingerprint: Fingerprint::from_stored(&self.fingerprint),
            kind: parse("transfer kind", &self.kind, TransferKind::parse)?,
            action: parse("transfer action", &self.action, Action::parse)?,
            debit_account: account(self.debit_account)?,
            credit_account: account(self.credit_account)?,
            amount: self.amount,
            currency: self
                .currency
                .map(|code| rejected(Currency::parse_code(&code)))
                .transpose()?,
            pending_id: self.pending_id.map(|id| rejected(TransferId::parse(&id))).transpose()?,
            status: parse("transfer status", &self.status, TransferStatus::parse)?,
            error: failure(self.error_code, self.error_message)?,
            expires_at: self.expires_at.map(at),
            captured_amount: self.captured_amount,
            details: Details {
                category: self.category,
                description: self.description,
                metadata: metadata_from_json(&self.metadata)?,
            },
            effective_at: at(self.effective_at),
            committed_at: at(self.committed_at),
            updated_at: at(self.updated_at),
        })
    }
}

/// A transfer's conversion as its two columns: the quote id and the document.
pub fn transfer_fx_columns(transfer: &Transfer) -> (Option<String>, Option<String>) {
    match transfer.fx.as_deref() {
        Some(leg) => (Some(leg.quote_id.to_string()), Some(fx_leg_json(leg).to_string())),
        None => (None, None),
    }
}

pub struct RawRate {
    pub tenant: String,
    pub base: String,
    pub quote: String,
    pub rate: String,
    pub source: String,
    pub valid_from: i64,
    pub set_at: i64,
}

impl RawRate {
    /// Reads a row selected with `RATE_COLUMNS`.
    pub fn read<C: Columns>(row: &C) -> Result<RawRate, C::Error> {
        Ok(RawRate {
            tenant: row.text(0)?,
            base: row.text(1)?,
            quote: row.text(2)?,
            rate: row.text(3)?,
            source: row.text(4)?,
            valid_from: row.integer(5)?,
            set_at: row.integer(6)?,
        })
    }

    pub fn decode(self) -> Decoded<FxRate> {
        Ok(FxRate {
            tenant: rejected(Tenant::parse(&self.tenant))?,
            base: rejected(Currency::parse(&self.base))?,
            quote: rejected(Currency::parse(&self.quote))?,
            rate: parse("rate", &self.rate, Rate::parse_stored)?,
            source: self.source,
            valid_from: at(self.valid_from),
            set_at: at(self.set_at),
        })
    }

    /// The row of a rate, in `RATE_COLUMNS` order.
    pub fn of(rate: &FxRate) -> RawRate {
        RawRate {
            tenant: rate.tenant.to_string(),
            base: rate.base.code().to_owned(),
            quote: rate.quote.code().to_owned(),
            rate: rate.rate.to_fraction_text(),
            source: rate.source.clone(),
            valid_from: rate.valid_from.as_unix_micros(),
            set_at: rate.set_at.as_unix_micros(),
        }
    }
}

pub struct RawQuote {
    pub id: String,
    pub tenant: String,
    pub idempotency_key: Option<String>,
    pub terms: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_by: Option<String>,
    pub used_at: Option<i64>,
}

impl RawQuote {
    /// Reads a row selected with `QUOTE_COLUMNS`.
    pub fn read<C: Columns>(row: &C) -> Result<RawQuote, C::Error> {
        Ok(RawQuote {
            id: row.text(0)?,
            tenant: row.text(1)?,
            idempotency_key: row.optional_text(2)?,
            terms: row.text(3)?,
            created_at: row.integer(4)?,
            expires_at: row.integer(5)?,
            used_by: row.optional_text(6)?,
            used_at: row.optional_integer(7)?,
        })
    }

    pub fn decode(self) -> Decoded<Quote> {
        let terms: serde_json::Value = serde_json::from_str(&self.terms)
            .map_err(|error| format!("quote terms are not JSON: {error}"))?;
        Ok(Quote {
            id: rejected(QuoteId::parse(&self.id))?,
            tenant: rejected(Tenant::parse(&self.tenant))?,
            idempotency_key: self
                .idempotency_key
                .map(|key| rejected(IdempotencyKey::parse(&key)))
                .transpose()?,
            terms: terms_from_json(&terms)?,
            created_at: at(self.created_at),
            expires_at: at(self.expires_at),
            used_by: self.used_by.map(|id| rejected(TransferId::parse(&id))).transpose()?,
            used_at: self.used_at.map(at),
        })
    }

    /// The row of a quote, in `QUOTE_COLUMNS` order.
    pub fn of(quote: &Quote) -> RawQuote {
        RawQuote {
            id: quote.id.to_string(),
            tenant: quote.tenant.to_string(),
            idempotency_key: quote.idempotency_key.as_ref().map(ToString::to_string),
            terms: terms_json(&quote.terms).to_string(),
            created_at: quote.created_at.as_unix_micros(),
            expires_at: quote.expires_at.as_unix_micros(),
            used_by: quote.used_by.map(|id| id.to_string()),
            used_at: quote.used_at.map(Timestamp::as_unix_micros),
        }
    }
}

/// A key as stored: a client's key, possibly inside a scope (`txn:...`), so longer than a
/// client may send.
fn stored_key(text: &str) -> Result<IdempotencyKey, Rejection> {
    match text.split_once(':') {
        Some((scope, key))
            if !scope.is_empty() && scope.bytes().all(|b| b.is_ascii_lowercase()) =>
        {
            IdempotencyKey::scoped(scope, key).or_else(|_| IdempotencyKey::parse(text))
        }
        _ => IdempotencyKey::parse(text),
    }
}

pub struct RawEntry {
    pub sequence: i64,
    pub account_id: String,
    pub transfer_id: String,
    pub direction: String,
    pub amount: i64,
    pub currency: String,
    pub balance_after: i64,
    pub effective_at: i64,
    pub committed_at: i64,
}

impl RawEntry {
    /// Reads a row selected with `ENTRY_COLUMNS`.
    pub fn read<C: Columns>(row: &C) -> Result<RawEntry, C::Error> {
        Ok(RawEntry {
            sequence: row.integer(0)?,
            account_id: row.text(1)?,
            transfer_id: row.text(2)?,
            direction: row.text(3)?,
            amount: row.integer(4)?,
            currency: row.text(5)?,
            balance_after: row.integer(6)?,
            effective_at: row.integer(7)?,
            committed_at: row.integer(8)?,
        })
    }

    pub fn decode(self) -> Decoded<crate::StoredEntry> {
        Ok(crate::StoredEntry {
            sequence: u64::try_from(self.sequence)
                .map_err(|_| format!("entry sequence {} is negative", self.sequence))?,
            entry: Entry {
                transfer_id: rejected(TransferId::parse(&self.transfer_id))?,
                account_id: rejected(AccountId::from_key(&self.account_id))?,
                direction: parse("direction", &self.direction, Direction::parse)?,
                amount: self.amount,
                currency: rejected(Currency::parse(&self.currency))?,
                balance_after: self.balance_after,
                effective_at: at(self.effective_at),
                committed_at: at(self.committed_at),
            },
        })
    }
}

pub struct RawUser {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub tenant: String,
}

impl RawUser {
    /// Reads a row selected with `USER_COLUMNS`.
    pub fn read<C: Columns>(row: &C) -> Result<RawUser, C::Error> {
        Ok(RawUser {
            id: row.text(0)?,
            name: row.text(1)?,
            created_at: row.integer(2)?,
            tenant: row.text(3)?,
        })
    }

    pub fn decode(self) -> Decoded<User> {
        Ok(User {
            id: rejected(UserId::from_key(&self.id))?,
            tenant: rejected(Tenant::parse(&self.tenant))?,
            name: self.name,
            created_at: at(self.created_at),
        })
    }
}

pub struct RawOrder {
    pub id: String,
    pub tenant: String,
    pub user_id: String,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub payment_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl RawOrder {
    /// Reads a row selected with `ORDER_COLUMNS`.
    pub fn read<C: Columns>(row: &C) -> Result<RawOrder, C::Error> {
        Ok(RawOrder {
            id: row.text(0)?,
            tenant: row.text(1)?,
            user_id: row.text(2)?,
            amount: row.integer(3)?,
            currency: row.text(4)?,
            status: row.text(5)?,
            failure_code: row.optional_text(6)?,
            failure_message: row.optional_text(7)?,
            payment_id: row.optional_text(8)?,
            created_at: row.integer(9)?,
            updated_at: row.integer(10)?,
        })
    }

    pub fn decode(self) -> Decoded<Order> {
        Ok(Order {
            id: rejected(OrderId::from_key(&self.id))?,
            tenant: rejected(Tenant::parse(&self.tenant))?,
            user: rejected(UserId::from_key(&self.user_id))?,
            amount: self.amount,
            currency: rejected(Currency::parse(&self.currency))?,
            status: parse("order status", &self.status, OrderStatus::parse)?,
            failure: failure(self.failure_code, self.failure_message)?,
            payment_id: self.payment_id.map(|id| rejected(TransferId::parse(&id))).transpose()?,
            created_at: at(self.created_at),
            updated_at: at(self.updated_at),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_transfer_column_count_is_the_columns_named() {
        assert_eq!(super::TRANSFER_COLUMNS.split(',').count(), super::TRANSFER_COLUMN_COUNT);
    }
}
