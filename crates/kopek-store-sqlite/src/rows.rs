//! Row <-> domain conversions for SQLite. Every value read back is parsed into its core type;
//! a value that does not parse is a `Corrupt` error, never a panic.

use kopek_core::{
    Account, AccountId, AccountKind, AccountStatus, Action, Balance, Currency, Details, Direction,
    Entry, ErrorCode, Fingerprint, IdempotencyKey, Order, OrderId, OrderStatus, Overdraft,
    Rejection, Tenant, Timestamp, Transfer, TransferId, TransferKind, TransferStatus, User, UserId,
};
use kopek_store::codec::{metadata_from_json, metadata_to_json};
use kopek_store::{StoreError, StoredEntry, StoredEvent};
use rusqlite::types::Value;
use rusqlite::{Row, ToSql};

pub const ACCOUNT_COLUMNS: &str = "id, currency, owner, kind, overdraft_limit, status, metadata, posted, \
     pending_out, pending_in, created_at, updated_at";

pub const TRANSFER_COLUMNS: &str = "id, tenant, idempotency_key, fingerprint, kind, action, debit_account, \
     credit_account, amount, currency, pending_id, status, error_code, error_message, expires_at, \
     captured_amount, category, description, metadata, effective_at, committed_at, updated_at";

pub const ENTRY_COLUMNS: &str = "sequence, account_id, transfer_id, direction, amount, currency, balance_after, effective_at, committed_at";

pub const EVENT_COLUMNS: &str = "sequence, id, tenant, kind, subject_id, at, payload";

/// A row decoded into a domain value, or why it could not be.
pub type Decoded<T> = Result<T, String>;

pub fn sql_error(error: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("sqlite: {error}"))
}

/// Flattens the two failure layers of a query that decodes rows.
pub fn decoded<T>(result: rusqlite::Result<Decoded<T>>) -> Result<T, StoreError> {
    result.map_err(sql_error)?.map_err(StoreError::Corrupt)
}

fn parse<T>(what: &str, text: &str, parser: impl FnOnce(&str) -> Option<T>) -> Decoded<T> {
    parser(text).ok_or_else(|| format!("{what} '{text}' is not valid"))
}

fn rejected<T>(result: Result<T, Rejection>) -> Decoded<T> {
    result.map_err(|rejection| rejection.message)
}

pub fn account_from_row(row: &Row) -> rusqlite::Result<Decoded<Account>> {
    let id: String = row.get(0)?;
    let currency: String = row.get(1)?;
    let owner: Option<String> = row.get(2)?;
    let kind: String = row.get(3)?;
    let overdraft: Option<i64> = row.get(4)?;
    let status: String = row.get(5)?;
    let metadata: String = row.get(6)?;
    let balance =
        Balance { posted: row.get(7)?, pending_out: row.get(8)?, pending_in: row.get(9)? };
    let created_at: i64 = row.get(10)?;
    let updated_at: i64 = row.get(11)?;
    Ok((|| {
        Ok(Account {
            id: rejected(AccountId::parse(&id))?,
            currency: rejected(Currency::parse(&currency))?,
            owner,
            kind: parse("account kind", &kind, AccountKind::parse)?,
            overdraft: overdraft.map_or(Overdraft::Unbounded, Overdraft::Limited),
            status: parse("account status", &status, AccountStatus::parse)?,
            metadata: metadata_from_json(&metadata)?,
            balance,
            created_at: Timestamp::from_unix_micros(created_at),
            updated_at: Timestamp::from_unix_micros(updated_at),
        })
    })())
}

pub fn account_params(account: &Account) -> Vec<Value> {
    vec![
        Value::Text(account.id.to_string()),
        Value::Text(account.currency.code().to_owned()),
        account.owner.clone().map_or(Value::Null, Value::Text),
        Value::Text(account.kind.as_str().to_owned()),
        overdraft_value(account.overdraft),
        Value::Text(account.status.as_str().to_owned()),
        Value::Text(metadata_to_json(&account.metadata)),
        Value::Integer(account.balance.posted),
        Value::Integer(account.balance.pending_out),
        Value::Integer(account.balance.pending_in),
        Value::Integer(account.created_at.as_unix_micros()),
        Value::Integer(account.updated_at.as_unix_micros()),
    ]
}

pub fn overdraft_value(overdraft: Overdraft) -> Value {
    match overdraft {
        Overdraft::Limited(limit) => Value::Integer(limit),
        Overdraft::Unbounded => Value::Null,
    }
}

pub fn transfer_from_row(row: &Row) -> rusqlite::Result<Decoded<Transfer>> {
    let text = |index| row.get::<_, String>(index);
    let optional = |index| row.get::<_, Option<String>>(index);
    let (id, tenant, key, fingerprint, kind, action) =
        (text(0)?, text(1)?, text(2)?, text(3)?, text(4)?, text(5)?);
    let (debit, credit, currency, pending_id) =
        (optional(6)?, optional(7)?, optional(9)?, optional(10)?);
    let amount: i64 = row.get(8)?;
    let status = text(11)?;
    let (error_code, error_message) = (optional(12)?, optional(13)?);
    let expires_at: Option<i64> = row.get(14)?;
    let captured_amount: i64 = row.get(15)?;
    let (category, description, metadata) = (text(16)?, text(17)?, text(18)?);
    let (effective_at, committed_at, updated_at): (i64, i64, i64) =
        (row.get(19)?, row.get(20)?, row.get(21)?);
    Ok((|| {
        // Declined payments keep what the client sent: ids and codes no account has.
        let account =
            |id: Option<String>| id.map(|id| rejected(AccountId::parse_reference(&id))).transpose();
        let error = match error_code {
            None => None,
            Some(code) => Some(Rejection::new(
                parse("error code", &code, ErrorCode::parse)?,
                error_message.unwrap_or_default(),
            )),
        };
        Ok(Transfer {
            id: rejected(TransferId::parse(&id))?,
            tenant: rejected(Tenant::parse(&tenant))?,
            idempotency_key: rejected(IdempotencyKey::parse(&key))?,
            fingerprint: Fingerprint(fingerprint),
            kind: parse("transfer kind", &kind, TransferKind::parse)?,
            action: parse("transfer action", &action, Action::parse)?,
            debit_account: account(debit)?,
            credit_account: account(credit)?,
            amount,
            currency: currency.map(|code| rejected(Currency::parse_code(&code))).transpose()?,
            pending_id: pending_id.map(|id| rejected(TransferId::parse(&id))).transpose()?,
            status: parse("transfer status", &status, TransferStatus::parse)?,
            error,
            expires_at: expires_at.map(Timestamp::from_unix_micros),
            captured_amount,
            details: Details { category, description, metadata: metadata_from_json(&metadata)? },
            effective_at: Timestamp::from_unix_micros(effective_at),
            committed_at: Timestamp::from_unix_micros(committed_at),
            updated_at: Timestamp::from_unix_micros(updated_at),
        })
    })())
}

pub fn transfer_params(transfer: &Transfer) -> Vec<Value> {
    let text = |value: &str| Value::Text(value.to_owned());
    let optional = |value: Option<String>| value.map_or(Value::Null, Value::Text);
    vec![
        Value::Text(transfer.id.to_string()),
        text(transfer.tenant.as_str()),
        text(transfer.idempotency_key.as_str()),
        text(&transfer.fingerprint.0),
        text(transfer.kind.as_str()),
        text(transfer.action.as_str()),
        optional(transfer.debit_account.as_ref().map(ToString::to_string)),
        optional(transfer.credit_account.as_ref().map(ToString::to_string)),
        Value::Integer(transfer.amount),
        optional(transfer.currency.map(|currency| currency.code().to_owned())),
        optional(transfer.pending_id.map(|id| id.to_string())),
        text(transfer.status.as_str()),
        optional(transfer.error.as_ref().map(|error| error.code.as_str().to_owned())),
        optional(transfer.error.as_ref().map(|error| error.message.clone())),
        transfer.expires_at.map_or(Value::Null, |at| Value::Integer(at.as_unix_micros())),
        Value::Integer(transfer.captured_amount),
        text(&transfer.details.category),
        text(&transfer.details.description),
        Value::Text(metadata_to_json(&transfer.details.metadata)),
        Value::Integer(transfer.effective_at.as_unix_micros()),
        Value::Integer(transfer.committed_at.as_unix_micros()),
        Value::Integer(transfer.updated_at.as_unix_micros()),
    ]
}

pub fn entry_from_row(row: &Row) -> rusqlite::Result<Decoded<StoredEntry>> {
    let sequence: i64 = row.get(0)?;
    let (account_id, transfer_id, direction, currency): (String, String, String, String) =
        (row.get(1)?, row.get(2)?, row.get(3)?, row.get(5)?);
    let (amount, balance_after, effective_at, committed_at): (i64, i64, i64, i64) =
        (row.get(4)?, row.get(6)?, row.get(7)?, row.get(8)?);
    Ok((|| {
        Ok(StoredEntry {
            sequence: u64::try_from(sequence)
                .map_err(|_| format!("entry sequence {sequence} is negative"))?,
            entry: Entry {
                transfer_id: rejected(TransferId::parse(&transfer_id))?,
                account_id: rejected(AccountId::parse(&account_id))?,
                direction: parse("direction", &direction, Direction::parse)?,
                amount,
                currency: rejected(Currency::parse(&currency))?,
                balance_after,
                effective_at: Timestamp::from_unix_micros(effective_at),
                committed_at: Timestamp::from_unix_micros(committed_at),
            },
        })
    })())
}

pub fn event_from_row(row: &Row) -> rusqlite::Result<Decoded<StoredEvent>> {
    let sequence: i64 = row.get(0)?;
    let at: i64 = row.get(5)?;
    let event = StoredEvent {
        sequence: 0,
        id: row.get(1)?,
        tenant: row.get(2)?,
        kind: row.get(3)?,
        subject_id: row.get(4)?,
        at: Timestamp::from_unix_micros(at),
        payload: row.get(6)?,
    };
    Ok(u64::try_from(sequence)
        .map(|sequence| StoredEvent { sequence, ..event })
        .map_err(|_| format!("event sequence {sequence} is negative")))
}

/// Borrows a parameter list for rusqlite.
pub fn params(values: &[Value]) -> Vec<&dyn ToSql> {
    values.iter().map(|value| value as &dyn ToSql).collect()
}

pub const USER_COLUMNS: &str = "id, name, created_at";

pub const ORDER_COLUMNS: &str = "id, tenant, user_id, amount, currency, status, failure_code, failure_message, \
     payment_id, created_at, updated_at";

pub fn user_from_row(row: &Row) -> rusqlite::Result<Decoded<User>> {
    let id: String = row.get(0)?;
    let name: String = row.get(1)?;
    let created_at: i64 = row.get(2)?;
    Ok(rejected(UserId::parse(&id)).map(|id| User {
        id,
        name,
        created_at: Timestamp::from_unix_micros(created_at),
    }))
}

pub fn order_from_row(row: &Row) -> rusqlite::Result<Decoded<Order>> {
    let text = |index| row.get::<_, String>(index);
    let (id, tenant, user, currency, status) = (text(0)?, text(1)?, text(2)?, text(4)?, text(5)?);
    let amount: i64 = row.get(3)?;
    let (failure_code, failure_message): (Option<String>, Option<String>) =
        (row.get(6)?, row.get(7)?);
    let payment_id: Option<String> = row.get(8)?;
    let (created_at, updated_at): (i64, i64) = (row.get(9)?, row.get(10)?);
    Ok((|| {
        let failure = match failure_code {
            None => None,
            Some(code) => Some(Rejection::new(
                parse("error code", &code, ErrorCode::parse)?,
                failure_message.unwrap_or_default(),
            )),
        };
        Ok(Order {
            id: rejected(OrderId::parse(&id))?,
            tenant: rejected(Tenant::parse(&tenant))?,
            user: rejected(UserId::parse(&user))?,
            amount,
            currency: rejected(Currency::parse(&currency))?,
            status: parse("order status", &status, OrderStatus::parse)?,
            failure,
            payment_id: payment_id.map(|id| rejected(TransferId::parse(&id))).transpose()?,
            created_at: Timestamp::from_unix_micros(created_at),
            updated_at: Timestamp::from_unix_micros(updated_at),
        })
    })())
}

pub fn order_params(order: &Order) -> Vec<Value> {
    let optional = |value: Option<String>| value.map_or(Value::Null, Value::Text);
    vec![
        Value::Text(order.id.to_string()),
        Value::Text(order.tenant.to_string()),
        Value::Text(order.user.to_string()),
        Value::Integer(order.amount),
        Value::Text(order.currency.code().to_owned()),
        Value::Text(order.status.as_str().to_owned()),
        optional(order.failure.as_ref().map(|failure| failure.code.as_str().to_owned())),
        optional(order.failure.as_ref().map(|failure| failure.message.clone())),
        optional(order.payment_id.map(|id| id.to_string())),
        Value::Integer(order.created_at.as_unix_micros()),
        Value::Integer(order.updated_at.as_unix_micros()),
    ]
}
