//! Row <-> domain conversions for SQLite. Rows are read into `kopek_store::rows` values and
//! decoded there, as every backend does; a value that does not parse is a `Corrupt` error,
//! never a panic.

use kopek_core::{Account, FxRate, Order, Overdraft, Quote, Timestamp, Transfer, User};
use kopek_store::codec::metadata_to_json;
pub use kopek_store::rows::{
    ACCOUNT_COLUMNS, ENTRY_COLUMNS, EVENT_COLUMNS, ORDER_COLUMNS, QUOTE_COLUMNS, RATE_COLUMNS,
    TRANSFER_COLUMNS, USER_COLUMNS,
};
use kopek_store::rows::{
    Columns, RawAccount, RawEntry, RawOrder, RawQuote, RawRate, RawTransfer, RawUser,
};
use kopek_store::{StoreError, StoredEntry, StoredEvent};
use rusqlite::types::Value;
use rusqlite::{Row, ToSql};

/// A row decoded into a domain value, or why it could not be.
pub type Decoded<T> = Result<T, String>;

/// An insert's error: a broken unique constraint is `Conflict` ("<what> exists"), anything
/// else a plain database error.
pub fn taken(what: String) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |error| match error {
        rusqlite::Error::SqliteFailure(failure, _)
            if failure.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Conflict(format!("{what} exists"))
        }
        other => sql_error(other),
    }
}

pub fn sql_error(error: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("sqlite: {error}"))
}

/// Flattens the two failure layers of a query that decodes rows.
pub fn decoded<T>(result: rusqlite::Result<Decoded<T>>) -> Result<T, StoreError> {
    result.map_err(sql_error)?.map_err(StoreError::Corrupt)
}

pub fn account_from_row(row: &Row) -> rusqlite::Result<Decoded<Account>> {
    Ok(RawAccount::read(&SqliteColumns(row))?.decode())
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
        Value::Text(account.tenant.to_string()),
    ]
}

pub fn overdraft_value(overdraft: Overdraft) -> Value {
    match overdraft {
        Overdraft::Limited(limit) => Value::Integer(limit),
        Overdraft::Unbounded => Value::Null,
    }
}

pub fn transfer_from_row(row: &Row) -> rusqlite::Result<Decoded<Transfer>> {
    Ok(RawTransfer::read(&SqliteColumns(row))?.decode())
}

pub fn rate_from_row(row: &Row) -> rusqlite::Result<Decoded<FxRate>> {
    Ok(RawRate::read(&SqliteColumns(row))?.decode())
}

pub fn rate_params(rate: &FxRate) -> Vec<Value> {
    let raw = RawRate::of(rate);
    vec![
        Value::Text(raw.tenant),
        Value::Text(raw.base),
        Value::Text(raw.quote),
        Value::Text(raw.rate),
        Value::Text(raw.source),
        Value::Integer(raw.valid_from),
        Value::Integer(raw.set_at),
    ]
}

pub fn quote_from_row(row: &Row) -> rusqlite::Result<Decoded<Quote>> {
    Ok(RawQuote::read(&SqliteColumns(row))?.decode())
}

pub fn quote_params(quote: &Quote) -> Vec<Value> {
    let raw = RawQuote::of(quote);
    vec![
        Value::Text(raw.id),
        Value::Text(raw.tenant),
        raw.idempotency_key.map_or(Value::Null, Value::Text),
        Value::Text(raw.terms),
        Value::Integer(raw.created_at),
        Value::Integer(raw.expires_at),
        raw.used_by.map_or(Value::Null, Value::Text),
        raw.used_at.map_or(Value::Null, Value::Integer),
    ]
}

pub fn entry_from_row(row: &Row) -> rusqlite::Result<Decoded<StoredEntry>> {
    Ok(RawEntry::read(&SqliteColumns(row))?.decode())
}

/// An outbox row (`EVENT_COLUMNS`) as its event; `transfer_row` finds the transfers row a
/// format-3 payload refers to, by the event's subject id.
pub fn event_from_row(
    row: &Row,
    transfer_row: &mut dyn FnMut(&str) -> rusqlite::Result<Option<Decoded<Transfer>>>,
) -> rusqlite::Result<Decoded<StoredEvent>> {
    let sequence: i64 = row.get(0)?;
    let id: String = row.get(1)?;
    let kind: String = row.get(3)?;
    let subject: String = row.get(4)?;
    let column = row.get_ref(6)?;
    let subject_row = if crate::payload::refers_to_row(column) {
        match transfer_row(&subject)? {
            Some(Ok(transfer)) => Some(transfer),
            Some(Err(problem)) => return Ok(Err(format!("event {id}: {problem}"))),
            None => None,
        }
    } else {
        None
    };
    let body = match crate::payload::decode(column, subject_row) {
        Ok(body) => body,
        Err(problem) => return Ok(Err(format!("event {id}: {problem}"))),
    };
    let Ok(sequence) = u64::try_from(sequence) else {
        return Ok(Err(format!("event sequence {sequence} is negative")));
    };
    Ok(Ok(StoredEvent {
        sequence,
        id,
        tenant: row.get(2)?,
        subject_id: kopek_core::event::subject_name(&kind, &subject).to_owned(),
        kind,
        at: Timestamp::from_unix_micros(row.get(5)?),
        body,
        traceparent: row.get(7)?,
    }))
}

/// How many columns `TRANSFER_COLUMNS` names.
pub const TRANSFER_COLUMN_COUNT: usize = 24;

/// A transfers row selected with `TRANSFER_COLUMNS, CARRIED_COLUMNS` as the event it carries
/// (migration 0014; the query selects only rows that carry one).
pub fn carried_event_from_row(row: &Row) -> rusqlite::Result<Decoded<StoredEvent>> {
    let transfer = match transfer_from_row(row)? {
        Ok(transfer) => transfer,
        Err(problem) => return Ok(Err(problem)),
    };
    let (after, carried) = crate::carried::read(row, TRANSFER_COLUMN_COUNT)?;
    let Some(carried) = carried else {
        return Ok(Err(format!("transfer {} carries no event", transfer.id)));
    };
    let Some(event) = crate::carried::rendered(&transfer, after, &carried) else {
        return Ok(Err(format!(
            "event {}: transfer {} cannot carry it (no accounts, currency or balances after it)",
            carried.id, transfer.id
        )));
    };
    let Ok(sequence) = u64::try_from(carried.sequence) else {
        return Ok(Err(format!("event sequence {} is negative", carried.sequence)));
    };
    Ok(Ok(StoredEvent {
        sequence,
        id: carried.id.to_string(),
        tenant: transfer.tenant.to_string(),
        kind: event.kind.as_str().to_owned(),
        subject_id: transfer.id.to_string(),
        at: event.at,
        body: kopek_store::EventBody::Record(Box::new(event)),
        traceparent: carried.trace,
    }))
}

/// A rusqlite row as `kopek_store::rows::Columns`.
struct SqliteColumns<'a, 'row>(&'a Row<'row>);

impl Columns for SqliteColumns<'_, '_> {
    type Error = rusqlite::Error;

    fn text(&self, index: usize) -> rusqlite::Result<String> {
        self.0.get(index)
    }

    fn optional_text(&self, index: usize) -> rusqlite::Result<Option<String>> {
        self.0.get(index)
    }

    fn integer(&self, index: usize) -> rusqlite::Result<i64> {
        self.0.get(index)
    }

    fn optional_integer(&self, index: usize) -> rusqlite::Result<Option<i64>> {
        self.0.get(index)
    }
}

/// Borrows a parameter list for rusqlite.
pub fn params(values: &[Value]) -> Vec<&dyn ToSql> {
    values.iter().map(|value| value as &dyn ToSql).collect()
}

pub fn user_from_row(row: &Row) -> rusqlite::Result<Decoded<User>> {
    Ok(RawUser::read(&SqliteColumns(row))?.decode())
}

pub fn order_from_row(row: &Row) -> rusqlite::Result<Decoded<Order>> {
    Ok(RawOrder::read(&SqliteColumns(row))?.decode())
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

pub fn webhook_from_row(row: &Row) -> rusqlite::Result<kopek_store::Webhook> {
    kopek_store::Webhook::read(&SqliteColumns(row))
}

pub fn delivery_from_row(row: &Row) -> rusqlite::Result<Decoded<kopek_store::Delivery>> {
    kopek_store::Delivery::read(&SqliteColumns(row))
}

pub fn attempt_from_row(row: &Row) -> rusqlite::Result<kopek_store::Attempt> {
    kopek_store::Attempt::read(&SqliteColumns(row))
}

pub fn api_key_from_row(row: &Row) -> rusqlite::Result<kopek_store::ApiKey> {
    kopek_store::ApiKey::read(&SqliteColumns(row))
}

pub fn audit_from_row(row: &Row) -> rusqlite::Result<kopek_store::AuditEntry> {
    kopek_store::AuditEntry::read(&SqliteColumns(row))
}
