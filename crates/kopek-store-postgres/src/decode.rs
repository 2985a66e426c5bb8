//! Rows as core records: each `PgRow` read through the shared `kopek_store::rows` decoders.

use crate::*;

pub(crate) fn account_from(row: &PgRow) -> StoreResult<Account> {
    RawAccount::read(&PgColumns(row))?.decode().map_err(corrupt)
}

pub(crate) fn transfer_from(row: &PgRow) -> StoreResult<Transfer> {
    RawTransfer::read(&PgColumns(row))?.decode().map_err(corrupt)
}

pub(crate) fn entry_from(row: &PgRow) -> StoreResult<StoredEntry> {
    RawEntry::read(&PgColumns(row))?.decode().map_err(corrupt)
}

pub(crate) fn user_from(row: &PgRow) -> StoreResult<User> {
    RawUser::read(&PgColumns(row))?.decode().map_err(corrupt)
}

pub(crate) fn order_from(row: &PgRow) -> StoreResult<Order> {
    RawOrder::read(&PgColumns(row))?.decode().map_err(corrupt)
}

pub(crate) fn webhook_from(row: &PgRow) -> StoreResult<Webhook> {
    Webhook::read(&PgColumns(row))
}

pub(crate) fn api_key_from(row: &PgRow) -> StoreResult<ApiKey> {
    ApiKey::read(&PgColumns(row))
}

pub(crate) fn delivery_from(row: &PgRow) -> StoreResult<Delivery> {
    Delivery::read(&PgColumns(row))?.map_err(corrupt)
}

/// A PostgreSQL row as `kopek_store::rows::Columns`.
pub(crate) struct PgColumns<'a>(pub(crate) &'a PgRow);

impl Columns for PgColumns<'_> {
    type Error = StoreError;

    fn text(&self, index: usize) -> StoreResult<String> {
        self.0.try_get(index).map_err(sql_error)
    }

    fn optional_text(&self, index: usize) -> StoreResult<Option<String>> {
        self.0.try_get(index).map_err(sql_error)
    }

    fn integer(&self, index: usize) -> StoreResult<i64> {
        self.0.try_get(index).map_err(sql_error)
    }

    fn optional_integer(&self, index: usize) -> StoreResult<Option<i64>> {
        self.0.try_get(index).map_err(sql_error)
    }
}

pub(crate) fn event_from(row: &PgRow) -> StoreResult<StoredEvent> {
    let sequence: i64 = row.try_get(0).map_err(sql_error)?;
    let at: i64 = row.try_get(5).map_err(sql_error)?;
    let kind: String = row.try_get(3).map_err(sql_error)?;
    let subject: String = row.try_get(4).map_err(sql_error)?;
    Ok(StoredEvent {
        sequence: u64::try_from(sequence)
            .map_err(|_| corrupt(format!("event sequence {sequence} is negative")))?,
        id: row.try_get(1).map_err(sql_error)?,
        tenant: row.try_get(2).map_err(sql_error)?,
        subject_id: kopek_core::event::subject_name(&kind, &subject).to_owned(),
        kind,
        at: Timestamp::from_unix_micros(at),
        payload: row.try_get(6).map_err(sql_error)?,
        traceparent: row.try_get(7).map_err(sql_error)?,
    })
}
