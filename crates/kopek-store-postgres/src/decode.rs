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
    let id: String = row.try_get(1).map_err(sql_error)?;
    Ok(StoredEvent {
        sequence: u64::try_from(sequence)
            .map_err(|_| corrupt(format!("event sequence {sequence} is negative")))?,
        tenant: row.try_get(2).map_err(sql_error)?,
        subject_id: kopek_core::event::subject_name(&kind, &subject).to_owned(),
        kind,
        at: Timestamp::from_unix_micros(at),
        body: event_body(row.try_get(8).map_err(sql_error)?, row.try_get(6).map_err(sql_error)?)
            .map_err(|problem| corrupt(format!("event {id}: {problem}")))?,
        traceparent: row.try_get(7).map_err(sql_error)?,
        id,
    })
}

/// The columns an outbox row is selected with: `EVENT_COLUMNS` and the record (migration 9).
pub(crate) fn event_columns() -> String {
    format!("{EVENT_COLUMNS}, record")
}

/// The first byte of an outbox row's `record`: the event in `kopek_store::record`'s encoding
/// follows. A change to that encoding needs a new byte here.
const RECORD_FORMAT_V1: u8 = 1;

/// What an outbox row's `record` holds for `event`.
pub(crate) fn event_record(event: &Event) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(256);
    bytes.push(RECORD_FORMAT_V1);
    kopek_store::record::encode_event(event, None, &mut bytes);
    bytes
}

/// The event a row keeps: its record, or the document a row written before migration 9 holds.
fn event_body(record: Option<Vec<u8>>, payload: Option<String>) -> Result<EventBody, String> {
    match (record, payload) {
        (Some(record), _) => match record.split_first() {
            Some((&RECORD_FORMAT_V1, bytes)) => kopek_store::record::decode_event(bytes, None)
                .map(|event| EventBody::Record(Box::new(event))),
            Some((format, _)) => Err(format!("event record has unknown format {format}")),
            None => Err("event record is empty".to_owned()),
        },
        (None, Some(document)) => Ok(EventBody::Document(document)),
        (None, None) => Err("the row keeps neither a record nor a document".to_owned()),
    }
}
