//! The payload of one journal frame: a batch's decided outcome, as records.
//!
//! A payload is a format byte (`FORMAT_V1`), then records one after another. A record is a
//! tag byte and its values; a value is a type byte (null, integer, text) and its bytes
//! (integers as 8 little-endian bytes, text as a 4-byte length and UTF-8). Row records carry
//! the columns of their table in the order of `kopek_store::rows` (`ACCOUNT_COLUMNS`, ...), so
//! they decode through the same `Raw*` conversions every backend reads rows with, and the
//! projection writes them with the same statements the SQLite store always used.
//!
//! An event is a record of its own: its header values, its subject (a tag and that record's
//! row) and its balances.
//!
//! The payload is checked by the journal's checksums before it is decoded; a payload that
//! still does not decode is a bug or a frame from another program, and fails the open with
//! what was wrong.

use kopek_core::{
    Account, AccountId, BalanceSnapshot, Currency, Entry, Event, EventId, EventKind, FxRate,
    InboxMark, Order, Outcome, Overdraft, Quote, Subject, Tenant, Timestamp, Transfer,
};
use kopek_store::codec::metadata_to_json;
use kopek_store::rows::{
    Columns, RawAccount, RawEntry, RawOrder, RawQuote, RawRate, RawTransfer, RawUser,
    transfer_fx_columns,
};

/// The only payload format so far.
const FORMAT_V1: u8 = 1;

const ACCOUNT_OPENED: u8 = 1;
const ACCOUNT_CHANGED: u8 = 2;
const TRANSFER_INSERTED: u8 = 3;
const TRANSFER_UPDATED: u8 = 4;
const ENTRY: u8 = 5;
const EVENT: u8 = 6;
const USER_CREATED: u8 = 7;
const LAST_USER_NUMBER: u8 = 8;
const ORDER_CREATED: u8 = 9;
const ORDER_CHANGED: u8 = 10;
const INBOX: u8 = 11;
const RATE_SET: u8 = 12;
const QUOTE_CREATED: u8 = 13;
const QUOTE_USED: u8 = 14;

const SUBJECT_ACCOUNT: u8 = 1;
const SUBJECT_TRANSFER: u8 = 2;
const SUBJECT_USER: u8 = 3;
const SUBJECT_ORDER: u8 = 4;
const SUBJECT_RATE: u8 = 5;
const SUBJECT_QUOTE: u8 = 6;

const NULL: u8 = 0;
const INTEGER: u8 = 1;
const TEXT: u8 = 2;

/// Encodes what `outcome` decided (everything but the callers' results) into `out`.
pub fn encode(outcome: &Outcome, out: &mut Vec<u8>) {
    let mut e = Encoder(out);
    e.0.push(FORMAT_V1);
    for account in &outcome.accounts_opened {
        e.record(ACCOUNT_OPENED, 13);
        e.account(account);
    }
    for account in &outcome.accounts_changed {
        e.record(ACCOUNT_CHANGED, 13);
        e.account(account);
    }
    for transfer in &outcome.transfers_inserted {
        e.record(TRANSFER_INSERTED, 24);
        e.transfer(transfer);
    }
    for transfer in &outcome.transfers_updated {
        e.record(TRANSFER_UPDATED, 24);
        e.transfer(transfer);
    }
    for entry in &outcome.entries {
        e.record(ENTRY, 8);
        e.entry(entry);
    }
    for event in &outcome.events {
        e.0.push(EVENT);
        e.event(event);
    }
    for user in &outcome.users_created {
        e.record(USER_CREATED, 4);
        e.text(user.id.as_str());
        e.text(&user.name);
        e.time(user.created_at);
        e.text(user.tenant.as_str());
    }
    if let Some(number) = outcome.last_user_number {
        e.record(LAST_USER_NUMBER, 1);
        e.integer(i64::try_from(number).unwrap_or(i64::MAX));
    }
    for order in &outcome.orders_created {
        e.record(ORDER_CREATED, 11);
        e.order(order);
    }
    for order in &outcome.orders_changed {
        e.record(ORDER_CHANGED, 11);
        e.order(order);
    }
    for mark in &outcome.inbox {
        e.record(INBOX, 2);
        e.text(&mark.consumer);
        e.text(&mark.event_id);
    }
    for rate in &outcome.rates_set {
        e.record(RATE_SET, 7);
        e.rate(rate);
    }
    for quote in &outcome.quotes_created {
        e.record(QUOTE_CREATED, 8);
        e.quote(quote);
    }
    for quote in &outcome.quotes_used {
        e.record(QUOTE_USED, 8);
        e.quote(quote);
    }
}

/// Decodes a payload into the outcome it recorded (with no results).
pub fn decode(payload: &[u8]) -> Result<Outcome, String> {
    let mut d = Decoder { bytes: payload, at: 0 };
    let format = d.u8()?;
    if format != FORMAT_V1 {
        return Err(format!("payload format {format} is unknown"));
    }
    let mut outcome = Outcome::default();
    while d.at < payload.len() {
        let tag = d.u8()?;
        match tag {
            ACCOUNT_OPENED => outcome.accounts_opened.push(d.account()?),
            ACCOUNT_CHANGED => outcome.accounts_changed.push(d.account()?),
            TRANSFER_INSERTED => outcome.transfers_inserted.push(d.transfer()?),
            TRANSFER_UPDATED => outcome.transfers_updated.push(d.transfer()?),
            ENTRY => {
                // The stored entry's sequence is the projection's; the row carries none.
                let mut row = vec![Value::Integer(0)];
                row.extend(d.row()?);
                outcome.entries.push(RawEntry::read(&Row(&row))?.decode()?.entry);
            }
            EVENT => outcome.events.push(d.event()?),
            USER_CREATED => outcome.users_created.push(RawUser::read(&Row(&d.row()?))?.decode()?),
            LAST_USER_NUMBER => {
                let number = Row(&d.row()?).integer(0)?;
                outcome.last_user_number = Some(
                    u64::try_from(number).map_err(|_| "the user counter is negative".to_owned())?,
                );
            }
            ORDER_CREATED => outcome.orders_created.push(d.order()?),
            ORDER_CHANGED => outcome.orders_changed.push(d.order()?),
            INBOX => {
                let row = d.row()?;
                let row = Row(&row);
                outcome.inbox.push(InboxMark { consumer: row.text(0)?, event_id: row.text(1)? });
            }
            RATE_SET => outcome.rates_set.push(RawRate::read(&Row(&d.row()?))?.decode()?),
            QUOTE_CREATED => outcome.quotes_created.push(d.quote()?),
            QUOTE_USED => outcome.quotes_used.push(d.quote()?),
            other => return Err(format!("record type {other} at byte {} is unknown", d.at - 1)),
        }
    }
    Ok(outcome)
}

struct Encoder<'a>(&'a mut Vec<u8>);

impl Encoder<'_> {
    fn record(&mut self, tag: u8, values: u8) {
        self.0.push(tag);
        self.0.push(values);
    }

    fn null(&mut self) {
        self.0.push(NULL);
    }

    fn integer(&mut self, value: i64) {
        self.0.push(INTEGER);
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    fn time(&mut self, at: Timestamp) {
        self.integer(at.as_unix_micros());
    }

    fn text(&mut self, value: &str) {
        self.0.push(TEXT);
        // Every text kopek stores is bounded far below 4 GiB (`limits`).
        let length = u32::try_from(value.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&length.to_le_bytes());
        self.0.extend_from_slice(&value.as_bytes()[..length as usize]);
    }

    fn optional_text(&mut self, value: Option<&str>) {
        match value {
            Some(value) => self.text(value),
            None => self.null(),
        }
    }

    fn optional_integer(&mut self, value: Option<i64>) {
        match value {
            Some(value) => self.integer(value),
            None => self.null(),
        }
    }

    /// `ACCOUNT_COLUMNS`.
    fn account(&mut self, account: &Account) {
        self.text(account.id.as_str());
        self.text(account.currency.code());
        self.optional_text(account.owner.as_deref());
        self.text(account.kind.as_str());
        self.optional_integer(match account.overdraft {
            Overdraft::Limited(limit) => Some(limit),
            Overdraft::Unbounded => None,
        });
        self.text(account.status.as_str());
        self.text(&metadata_to_json(&account.metadata));
        self.integer(account.balance.posted);
        self.integer(account.balance.pending_out);
        self.integer(account.balance.pending_in);
        self.time(account.created_at);
        self.time(account.updated_at);
        self.text(account.tenant.as_str());
    }

    /// `TRANSFER_COLUMNS`.
    fn transfer(&mut self, transfer: &Transfer) {
        let (quote_id, fx) = transfer_fx_columns(transfer);
        self.text(&transfer.id.to_string());
        self.text(transfer.tenant.as_str());
        self.text(transfer.idempotency_key.as_str());
        self.text(&transfer.fingerprint.0);
        self.text(transfer.kind.as_str());
        self.text(transfer.action.as_str());
        self.optional_text(transfer.debit_account.as_ref().map(AccountId::as_str));
        self.optional_text(transfer.credit_account.as_ref().map(AccountId::as_str));
        self.integer(transfer.amount);
        self.optional_text(transfer.currency.as_ref().map(Currency::code));
        self.optional_text(transfer.pending_id.map(|id| id.to_string()).as_deref());
        self.text(transfer.status.as_str());
        self.optional_text(transfer.error.as_ref().map(|error| error.code.as_str()));
        self.optional_text(transfer.error.as_ref().map(|error| error.message.as_str()));
        self.optional_integer(transfer.expires_at.map(Timestamp::as_unix_micros));
        self.integer(transfer.captured_amount);
        self.text(&transfer.details.category);
        self.text(&transfer.details.description);
        self.text(&metadata_to_json(&transfer.details.metadata));
        self.time(transfer.effective_at);
        self.time(transfer.committed_at);
        self.time(transfer.updated_at);
        self.optional_text(quote_id.as_deref());
        self.optional_text(fx.as_deref());
    }

    /// `ENTRY_COLUMNS` without the sequence.
    fn entry(&mut self, entry: &Entry) {
        self.text(entry.account_id.as_str());
        self.text(&entry.transfer_id.to_string());
        self.text(entry.direction.as_str());
        self.integer(entry.amount);
        self.text(entry.currency.code());
        self.integer(entry.balance_after);
        self.time(entry.effective_at);
        self.time(entry.committed_at);
    }

    /// `ORDER_COLUMNS`.
    fn order(&mut self, order: &Order) {
        self.text(order.id.as_str());
        self.text(order.tenant.as_str());
        self.text(order.user.as_str());
        self.integer(order.amount);
        self.text(order.currency.code());
        self.text(order.status.as_str());
        self.optional_text(order.failure.as_ref().map(|failure| failure.code.as_str()));
        self.optional_text(order.failure.as_ref().map(|failure| failure.message.as_str()));
        self.optional_text(order.payment_id.map(|id| id.to_string()).as_deref());
        self.time(order.created_at);
        self.time(order.updated_at);
    }

    /// `RATE_COLUMNS`.
    fn rate(&mut self, rate: &FxRate) {
        let raw = RawRate::of(rate);
        self.text(&raw.tenant);
        self.text(&raw.base);
        self.text(&raw.quote);
        self.text(&raw.rate);
        self.text(&raw.source);
        self.integer(raw.valid_from);
        self.integer(raw.set_at);
    }

    /// `QUOTE_COLUMNS`.
    fn quote(&mut self, quote: &Quote) {
        let raw = RawQuote::of(quote);
        self.text(&raw.id);
        self.text(&raw.tenant);
        self.optional_text(raw.idempotency_key.as_deref());
        self.text(&raw.terms);
        self.integer(raw.created_at);
        self.integer(raw.expires_at);
        self.optional_text(raw.used_by.as_deref());
        self.optional_integer(raw.used_at);
    }

    fn event(&mut self, event: &Event) {
        self.text(&event.id.to_string());
        self.text(event.tenant.as_str());
        self.optional_text(event.actor.as_deref());
        self.optional_text(event.trace.as_deref());
        self.text(event.kind.as_str());
        self.time(event.at);
        match &event.subject {
            Subject::Account(account) => {
                self.record(SUBJECT_ACCOUNT, 13);
                self.account(account);
            }
            Subject::Transfer(transfer) => {
                self.record(SUBJECT_TRANSFER, 24);
                self.transfer(transfer);
            }
            Subject::User(user) => {
                self.record(SUBJECT_USER, 4);
                self.text(user.id.as_str());
                self.text(&user.name);
                self.time(user.created_at);
                self.text(user.tenant.as_str());
            }
            Subject::Order(order) => {
                self.record(SUBJECT_ORDER, 11);
                self.order(order);
            }
            Subject::Rate(rate) => {
                self.record(SUBJECT_RATE, 7);
                self.rate(rate);
            }
            Subject::Quote(quote) => {
                self.record(SUBJECT_QUOTE, 8);
                self.quote(quote);
            }
        }
        let balances = u32::try_from(event.balances.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&balances.to_le_bytes());
        for balance in &event.balances {
            self.text(balance.account_id.as_str());
            self.text(balance.currency.code());
            self.integer(balance.posted);
            self.integer(balance.pending_out);
            self.integer(balance.pending_in);
            match balance.available {
                Some(available) => {
                    self.0.push(TEXT);
                    self.0.extend_from_slice(&16u32.to_le_bytes());
                    self.0.extend_from_slice(&available.to_le_bytes());
                }
                None => self.null(),
            }
        }
    }
}

/// One decoded value: what a row's column holds.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Value {
    Null,
    Integer(i64),
    Text(Vec<u8>),
}

struct Decoder<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Decoder<'_> {
    fn take(&mut self, count: usize) -> Result<&[u8], String> {
        let end = self.at.checked_add(count).filter(|end| *end <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!("the payload ends inside a value at byte {}", self.at));
        };
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn value(&mut self) -> Result<Value, String> {
        match self.u8()? {
            NULL => Ok(Value::Null),
            INTEGER => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(self.take(8)?);
                Ok(Value::Integer(i64::from_le_bytes(bytes)))
            }
            TEXT => {
                let length = self.u32()? as usize;
                Ok(Value::Text(self.take(length)?.to_vec()))
            }
            other => Err(format!("value type {other} at byte {} is unknown", self.at - 1)),
        }
    }

    /// A row: its count of values, then the values.
    fn row(&mut self) -> Result<Vec<Value>, String> {
        let count = self.u8()?;
        (0..count).map(|_| self.value()).collect()
    }

    /// A subject's row after its tag, checking the tag.
    fn tagged_row(&mut self, expected: u8) -> Result<Vec<Value>, String> {
        let tag = self.u8()?;
        if tag != expected {
            return Err(format!("expected record type {expected}, found {tag}"));
        }
        self.row()
    }

    fn account(&mut self) -> Result<Account, String> {
        RawAccount::read(&Row(&self.row()?))?.decode()
    }

    fn transfer(&mut self) -> Result<Transfer, String> {
        RawTransfer::read(&Row(&self.row()?))?.decode()
    }

    fn order(&mut self) -> Result<Order, String> {
        RawOrder::read(&Row(&self.row()?))?.decode()
    }

    fn quote(&mut self) -> Result<Quote, String> {
        RawQuote::read(&Row(&self.row()?))?.decode()
    }

    fn event(&mut self) -> Result<Event, String> {
        let header: Vec<Value> = (0..6).map(|_| self.value()).collect::<Result<_, _>>()?;
        let header = Row(&header);
        let id = EventId::parse(&header.text(0)?).map_err(|rejection| rejection.message)?;
        let tenant = Tenant::parse(&header.text(1)?).map_err(|rejection| rejection.message)?;
        let kind_text = header.text(4)?;
        let kind = EventKind::parse(&kind_text)
            .ok_or_else(|| format!("event kind '{kind_text}' is not valid"))?;
        let subject_tag = self.bytes.get(self.at).copied().unwrap_or(0);
        let subject = match subject_tag {
            SUBJECT_ACCOUNT => Subject::Account(
                RawAccount::read(&Row(&self.tagged_row(SUBJECT_ACCOUNT)?))?.decode()?,
            ),
            SUBJECT_TRANSFER => Subject::Transfer(
                RawTransfer::read(&Row(&self.tagged_row(SUBJECT_TRANSFER)?))?.decode()?,
            ),
            SUBJECT_USER => {
                Subject::User(RawUser::read(&Row(&self.tagged_row(SUBJECT_USER)?))?.decode()?)
            }
            SUBJECT_ORDER => {
                Subject::Order(RawOrder::read(&Row(&self.tagged_row(SUBJECT_ORDER)?))?.decode()?)
            }
            SUBJECT_RATE => {
                Subject::Rate(RawRate::read(&Row(&self.tagged_row(SUBJECT_RATE)?))?.decode()?)
            }
            SUBJECT_QUOTE => {
                Subject::Quote(RawQuote::read(&Row(&self.tagged_row(SUBJECT_QUOTE)?))?.decode()?)
            }
            other => return Err(format!("event subject type {other} is unknown")),
        };
        let count = self.u32()?;
        let mut balances = Vec::with_capacity(count.min(1_024) as usize);
        for _ in 0..count {
            let values: Vec<Value> = (0..6).map(|_| self.value()).collect::<Result<_, _>>()?;
            let available = match &values[5] {
                Value::Null => None,
                Value::Text(bytes) if bytes.len() == 16 => {
                    let mut raw = [0u8; 16];
                    raw.copy_from_slice(bytes);
                    Some(i128::from_le_bytes(raw))
                }
                other => return Err(format!("an available balance is {other:?}")),
            };
            let row = Row(&values);
            balances.push(BalanceSnapshot {
                account_id: AccountId::from_key(&row.text(0)?)
                    .map_err(|rejection| rejection.message)?,
                currency: Currency::parse(&row.text(1)?).map_err(|rejection| rejection.message)?,
                posted: row.integer(2)?,
                pending_out: row.integer(3)?,
                pending_in: row.integer(4)?,
                available,
            });
        }
        Ok(Event {
            id,
            tenant,
            actor: header.optional_text(2)?,
            trace: header.optional_text(3)?,
            kind,
            at: Timestamp::from_unix_micros(header.integer(5)?),
            subject,
            balances,
        })
    }
}

/// A decoded row as `Columns`, for the `Raw*` readers.
struct Row<'a>(&'a [Value]);

impl Columns for Row<'_> {
    type Error = String;

    fn text(&self, index: usize) -> Result<String, String> {
        self.optional_text(index)?.ok_or_else(|| format!("column {index} is null"))
    }

    fn optional_text(&self, index: usize) -> Result<Option<String>, String> {
        match self.0.get(index) {
            Some(Value::Null) => Ok(None),
            Some(Value::Text(bytes)) => String::from_utf8(bytes.clone())
                .map(Some)
                .map_err(|_| format!("column {index} is not UTF-8")),
            Some(Value::Integer(_)) => Err(format!("column {index} is an integer, not text")),
            None => Err(format!("the row has no column {index}")),
        }
    }

    fn integer(&self, index: usize) -> Result<i64, String> {
        self.optional_integer(index)?.ok_or_else(|| format!("column {index} is null"))
    }

    fn optional_integer(&self, index: usize) -> Result<Option<i64>, String> {
        match self.0.get(index) {
            Some(Value::Null) => Ok(None),
            Some(Value::Integer(value)) => Ok(Some(*value)),
            Some(Value::Text(_)) => Err(format!("column {index} is text, not an integer")),
            None => Err(format!("the row has no column {index}")),
        }
    }
}
