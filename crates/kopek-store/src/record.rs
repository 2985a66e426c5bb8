//! The record encoding: what a batch decided, or one event, as compact bytes. The embedded
//! store's journal frames hold a batch's outcome in it (`encode`, `decode`), and both
//! backends' outbox rows hold each event in it (`encode_event`, `decode_event`): the store
//! keeps the event as the ledger recorded it, and the events side (`kopek-events`) renders
//! its document when a reader asks. Stored bytes depend on this encoding: a change to it
//! needs a new format byte where the bytes are kept.
//!
//! An encoding is a format byte (`FORMAT`, journal frames only), a base time, then records
//! one after another, each a tag byte and its fields. Fields are:
//! - integers as LEB128 varints (signed ones zigzag-encoded first); times as the signed
//!   distance in microseconds from the base time, so most take one byte;
//! - ULIDs (transfer, event and quote ids) as 16 raw bytes;
//! - text either *shared* or *plain*. Shared text (account ids, tenants, currencies, kinds,
//!   statuses, categories, metadata documents: what repeats within a batch) goes through the
//!   frame's table: a varint `n`, where 0 means "new text follows, as a varint length and
//!   UTF-8; it becomes the next entry" and `n > 0` refers to entry `n - 1`. Plain text
//!   (idempotency keys, fingerprints, messages) is a length and UTF-8.
//!
//! An event whose subject is a transfer or account the same frame records (a transfer posted,
//! an account opened) refers to that record by its position instead of repeating it.
//!
//! Records decode through the same `rows` conversions every backend reads rows with. A
//! journal payload is checked by the journal's checksums before it is decoded; bytes that
//! still do not decode are a bug or another program's, and fail with what was wrong.

use crate::codec::metadata_to_json;
use crate::rows::{
    RawAccount, RawEntry, RawOrder, RawQuote, RawRate, RawTransfer, RawUser, transfer_fx_columns,
};
use kopek_core::{
    Account, BalanceSnapshot, Balances, Entry, Event, EventId, EventKind, FINGERPRINT_STORED_LEN,
    FxRate, InboxMark, Metadata, Order, Outcome, Overdraft, Quote, QuoteId, Subject, Tenant,
    Timestamp, Transfer, TransferId, Ulid, User,
};
use std::collections::HashMap;
use std::sync::LazyLock;
use xxhash_rust::xxh3::Xxh3Builder;

/// The compact format. (Format 1, rows of tagged values, never left development builds.)
const FORMAT: u8 = 2;

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

/// How an event's subject is written: inline, or as a record of the same frame.
const SUBJECT_ACCOUNT: u8 = 1;
const SUBJECT_TRANSFER: u8 = 2;
const SUBJECT_USER: u8 = 3;
const SUBJECT_ORDER: u8 = 4;
const SUBJECT_RATE: u8 = 5;
const SUBJECT_QUOTE: u8 = 6;
const SUBJECT_ACCOUNT_RECORD: u8 = 7;
const SUBJECT_TRANSFER_RECORD: u8 = 8;

/// Encodes what `outcome` decided (everything but the callers' results) into `out`.
pub fn encode(outcome: &Outcome, out: &mut Vec<u8>) {
    let base = outcome
        .transfers_inserted
        .first()
        .map(|transfer| transfer.committed_at)
        .or_else(|| outcome.events.first().map(|event| event.at))
        .unwrap_or(Timestamp::from_unix_micros(0));
    let mut e = Encoder { out, base, table: text_table() };
    e.out.push(FORMAT);
    e.signed(base.as_unix_micros());
    for account in &outcome.accounts_opened {
        e.out.push(ACCOUNT_OPENED);
        e.account(account);
    }
    for account in &outcome.accounts_changed {
        e.out.push(ACCOUNT_CHANGED);
        e.account(account);
    }
    for transfer in &outcome.transfers_inserted {
        e.out.push(TRANSFER_INSERTED);
        e.transfer(transfer);
    }
    for transfer in &outcome.transfers_updated {
        e.out.push(TRANSFER_UPDATED);
        e.transfer(transfer);
    }
    for entry in &outcome.entries {
        e.out.push(ENTRY);
        e.entry(entry);
    }
    if !outcome.events.is_empty() {
        let records = Records::of(outcome);
        for event in &outcome.events {
            e.out.push(EVENT);
            e.event(event, &records);
        }
    }
    for user in &outcome.users_created {
        e.out.push(USER_CREATED);
        e.user(user);
    }
    if let Some(number) = outcome.last_user_number {
        e.out.push(LAST_USER_NUMBER);
        e.unsigned(number);
    }
    for order in &outcome.orders_created {
        e.out.push(ORDER_CREATED);
        e.order(order);
    }
    for order in &outcome.orders_changed {
        e.out.push(ORDER_CHANGED);
        e.order(order);
    }
    for mark in &outcome.inbox {
        e.out.push(INBOX);
        e.shared(&mark.consumer);
        e.plain(&mark.event_id);
    }
    for rate in &outcome.rates_set {
        e.out.push(RATE_SET);
        e.rate(rate);
    }
    for quote in &outcome.quotes_created {
        e.out.push(QUOTE_CREATED);
        e.quote(quote);
    }
    for quote in &outcome.quotes_used {
        e.out.push(QUOTE_USED);
        e.quote(quote);
    }
}

/// Encodes one event on its own, its subject written inline: an outbox row's record. With `row`, a subject equal
/// to that transfer is written as a reference to it (record 0) instead of inline: the reader
/// supplies the transfer again to `decode_event`.
pub fn encode_event(event: &Event, row: Option<&Transfer>, out: &mut Vec<u8>) {
    let mut e = Encoder { out, base: event.at, table: text_table() };
    e.signed(event.at.as_unix_micros());
    let transfers = row.map(|transfer| (transfer.id, (0, transfer))).into_iter().collect();
    e.event(event, &Records { transfers, accounts: HashMap::new() });
}

/// Decodes what `encode_event` wrote; `row` is the transfer it was given, if any.
pub fn decode_event(bytes: &[u8], row: Option<Transfer>) -> Result<Event, String> {
    let mut d = Decoder { bytes, at: 0, base: 0, table: Vec::new() };
    d.base = d.signed()?;
    let records = Outcome { transfers_inserted: row.into_iter().collect(), ..Outcome::default() };
    let event = d.event(&records)?;
    if d.at != bytes.len() {
        return Err(format!("{} bytes follow the event", bytes.len() - d.at));
    }
    Ok(event)
}

/// Decodes a payload into the outcome it recorded (with no results).
pub fn decode(payload: &[u8]) -> Result<Outcome, String> {
    let mut d = Decoder { bytes: payload, at: 0, base: 0, table: Vec::new() };
    let format = d.byte()?;
    if format != FORMAT {
        return Err(format!("payload format {format} is unknown"));
    }
    d.base = d.signed()?;
    let mut outcome = Outcome::default();
    while d.at < payload.len() {
        let tag = d.byte()?;
        match tag {
            ACCOUNT_OPENED => outcome.accounts_opened.push(d.account()?),
            ACCOUNT_CHANGED => outcome.accounts_changed.push(d.account()?),
            TRANSFER_INSERTED => outcome.transfers_inserted.push(d.transfer()?),
            TRANSFER_UPDATED => outcome.transfers_updated.push(d.transfer()?),
            ENTRY => outcome.entries.push(d.entry()?),
            EVENT => {
                let event = d.event(&outcome)?;
                outcome.events.push(event);
            }
            USER_CREATED => outcome.users_created.push(d.user()?),
            LAST_USER_NUMBER => outcome.last_user_number = Some(d.unsigned()?),
            ORDER_CREATED => outcome.orders_created.push(d.order()?),
            ORDER_CHANGED => outcome.orders_changed.push(d.order()?),
            INBOX => {
                let consumer = d.shared()?.to_owned();
                outcome.inbox.push(InboxMark { consumer, event_id: d.plain()? });
            }
            RATE_SET => outcome.rates_set.push(d.rate()?),
            QUOTE_CREATED => outcome.quotes_created.push(d.quote()?),
            QUOTE_USED => outcome.quotes_used.push(d.quote()?),
            other => return Err(format!("record type {other} at byte {} is unknown", d.at - 1)),
        }
    }
    Ok(outcome)
}

/// Where each transfer and account record of a frame is, for events that refer to them.
struct Records<'a> {
    transfers: HashMap<TransferId, (usize, &'a Transfer)>,
    accounts: HashMap<&'a str, (usize, &'a Account)>,
}

impl<'a> Records<'a> {
    /// Positions count the inserted records, then the updated (changed) ones.
    fn of(outcome: &'a Outcome) -> Records<'a> {
        let transfers = outcome
            .transfers_inserted
            .iter()
            .chain(&outcome.transfers_updated)
            .enumerate()
            .map(|(position, transfer)| (transfer.id, (position, transfer)))
            .collect();
        let accounts = outcome
            .accounts_opened
            .iter()
            .chain(&outcome.accounts_changed)
            .enumerate()
            .map(|(position, account)| (account.id.as_str(), (position, account)))
            .collect();
        Records { transfers, accounts }
    }
}

/// The encoder's shared texts by their entry. Hashed with XXH3 rather than SipHash (the
/// largest part of encoding a frame): seeded per process, so that texts chosen by callers
/// cannot be made to collide.
type TextTable = HashMap<String, usize, Xxh3Builder>;

static TEXT_SEED: LazyLock<u64> =
    LazyLock::new(|| std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), 0u64));

fn text_table() -> TextTable {
    HashMap::with_hasher(Xxh3Builder::new().with_seed(*TEXT_SEED))
}

struct Encoder<'a> {
    out: &'a mut Vec<u8>,
    base: Timestamp,
    /// Shared text written so far, by its entry.
    table: TextTable,
}

impl Encoder<'_> {
    fn unsigned(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.out.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.out.push(value as u8);
    }

    fn signed(&mut self, value: i64) {
        self.unsigned(((value << 1) ^ (value >> 63)) as u64);
    }

    fn time(&mut self, at: Timestamp) {
        self.signed(at.as_unix_micros().wrapping_sub(self.base.as_unix_micros()));
    }

    fn optional_time(&mut self, at: Option<Timestamp>) {
        self.flag(at.is_some());
        if let Some(at) = at {
            self.time(at);
        }
    }

    fn flag(&mut self, set: bool) {
        self.out.push(u8::from(set));
    }

    fn ulid(&mut self, id: Ulid) {
        self.out.extend_from_slice(&id.as_u128().to_le_bytes());
    }

    fn optional_ulid(&mut self, id: Option<Ulid>) {
        self.flag(id.is_some());
        if let Some(id) = id {
            self.ulid(id);
        }
    }

    fn plain(&mut self, text: &str) {
        self.unsigned(text.len() as u64);
        self.out.extend_from_slice(text.as_bytes());
    }

    fn shared(&mut self, text: &str) {
        match self.table.get(text) {
            Some(entry) => {
                let reference = *entry as u64 + 1;
                self.unsigned(reference);
            }
            None => {
                self.unsigned(0);
                self.plain(text);
                let entry = self.table.len();
                self.table.insert(text.to_owned(), entry);
            }
        }
    }

    /// Metadata as its JSON text; most transfers have none, and `{}` needs no rendering.
    fn metadata(&mut self, metadata: &Metadata) {
        if metadata.is_empty() {
            self.shared("{}");
        } else {
            self.shared(&metadata_to_json(metadata));
        }
    }

    fn optional_shared(&mut self, text: Option<&str>) {
        self.flag(text.is_some());
        if let Some(text) = text {
            self.shared(text);
        }
    }

    fn optional_plain(&mut self, text: Option<&str>) {
        self.flag(text.is_some());
        if let Some(text) = text {
            self.plain(text);
        }
    }

    fn account(&mut self, account: &Account) {
        self.shared(account.id.as_str());
        self.shared(account.tenant.as_str());
        self.shared(account.currency.code());
        self.optional_shared(account.owner.as_deref());
        self.shared(account.kind.as_str());
        match account.overdraft {
            Overdraft::Limited(limit) => {
                self.flag(true);
                self.signed(limit);
            }
            Overdraft::Unbounded => self.flag(false),
        }
        self.shared(account.status.as_str());
        self.metadata(&account.metadata);
        self.signed(account.balance.posted);
        self.signed(account.balance.pending_out);
        self.signed(account.balance.pending_in);
        self.time(account.created_at);
        self.time(account.updated_at);
    }

    fn transfer(&mut self, transfer: &Transfer) {
        self.ulid(transfer.id.0);
        self.shared(transfer.tenant.as_str());
        self.plain(transfer.idempotency_key.as_str());
        self.plain(transfer.fingerprint.stored(&mut [0; FINGERPRINT_STORED_LEN]));
        self.shared(transfer.kind.as_str());
        self.shared(transfer.action.as_str());
        self.optional_shared(transfer.debit_account.as_ref().map(|id| id.as_str()));
        self.optional_shared(transfer.credit_account.as_ref().map(|id| id.as_str()));
        self.signed(transfer.amount);
        self.optional_shared(transfer.currency.as_ref().map(|currency| currency.code()));
        self.optional_ulid(transfer.pending_id.map(|id| id.0));
        self.shared(transfer.status.as_str());
        self.optional_shared(transfer.error.as_ref().map(|error| error.code.as_str()));
        self.optional_plain(transfer.error.as_ref().map(|error| error.message.as_str()));
        self.optional_time(transfer.expires_at);
        self.signed(transfer.captured_amount);
        self.shared(&transfer.details.category);
        self.shared(&transfer.details.description);
        self.metadata(&transfer.details.metadata);
        self.time(transfer.effective_at);
        self.time(transfer.committed_at);
        self.time(transfer.updated_at);
        let (_, fx) = transfer_fx_columns(transfer);
        self.optional_plain(fx.as_deref());
    }

    fn entry(&mut self, entry: &Entry) {
        self.ulid(entry.transfer_id.0);
        self.shared(entry.account_id.as_str());
        self.shared(entry.direction.as_str());
        self.signed(entry.amount);
        self.shared(entry.currency.code());
        self.signed(entry.balance_after);
        self.time(entry.effective_at);
        self.time(entry.committed_at);
    }

    fn user(&mut self, user: &User) {
        self.shared(user.id.as_str());
        self.shared(user.tenant.as_str());
        self.plain(&user.name);
        self.time(user.created_at);
    }

    fn order(&mut self, order: &Order) {
        self.shared(order.id.as_str());
        self.shared(order.tenant.as_str());
        self.shared(order.user.as_str());
        self.signed(order.amount);
        self.shared(order.currency.code());
        self.shared(order.status.as_str());
        self.optional_shared(order.failure.as_ref().map(|failure| failure.code.as_str()));
        self.optional_plain(order.failure.as_ref().map(|failure| failure.message.as_str()));
        self.optional_ulid(order.payment_id.map(|id| id.0));
        self.time(order.created_at);
        self.time(order.updated_at);
    }

    fn rate(&mut self, rate: &FxRate) {
        let raw = RawRate::of(rate);
        self.shared(&raw.tenant);
        self.shared(&raw.base);
        self.shared(&raw.quote);
        self.plain(&raw.rate);
        self.shared(&raw.source);
        self.signed(raw.valid_from);
        self.signed(raw.set_at);
    }

    fn quote(&mut self, quote: &Quote) {
        let raw = RawQuote::of(quote);
        self.ulid(quote.id.0);
        self.shared(&raw.tenant);
        self.optional_plain(raw.idempotency_key.as_deref());
        self.plain(&raw.terms);
        self.signed(raw.created_at);
        self.signed(raw.expires_at);
        self.optional_ulid(quote.used_by.map(|id| id.0));
        self.flag(raw.used_at.is_some());
        if let Some(at) = raw.used_at {
            self.signed(at);
        }
    }

    fn event(&mut self, event: &Event, records: &Records<'_>) {
        self.ulid(event.id.0);
        self.shared(event.tenant.as_str());
        self.optional_shared(event.actor.as_deref());
        self.optional_shared(event.trace.as_deref());
        self.shared(event.kind.as_str());
        self.time(event.at);
        match &event.subject {
            Subject::Transfer(transfer) => match records.transfers.get(&transfer.id) {
                Some((position, recorded)) if *recorded == transfer => {
                    self.out.push(SUBJECT_TRANSFER_RECORD);
                    self.unsigned(*position as u64);
                }
                _ => {
                    self.out.push(SUBJECT_TRANSFER);
                    self.transfer(transfer);
                }
            },
            Subject::Account(account) => match records.accounts.get(account.id.as_str()) {
                Some((position, recorded)) if *recorded == account => {
                    self.out.push(SUBJECT_ACCOUNT_RECORD);
                    self.unsigned(*position as u64);
                }
                _ => {
                    self.out.push(SUBJECT_ACCOUNT);
                    self.account(account);
                }
            },
            Subject::User(user) => {
                self.out.push(SUBJECT_USER);
                self.user(user);
            }
            Subject::Order(order) => {
                self.out.push(SUBJECT_ORDER);
                self.order(order);
            }
            Subject::Rate(rate) => {
                self.out.push(SUBJECT_RATE);
                self.rate(rate);
            }
            Subject::Quote(quote) => {
                self.out.push(SUBJECT_QUOTE);
                self.quote(quote);
            }
        }
        self.unsigned(event.balances.len() as u64);
        for balance in &event.balances {
            self.shared(balance.account_id.as_str());
            self.shared(balance.currency.code());
            self.signed(balance.posted);
            self.signed(balance.pending_out);
            self.signed(balance.pending_in);
            match balance.available {
                None => self.out.push(0),
                Some(available) => match i64::try_from(available) {
                    Ok(small) => {
                        self.out.push(1);
                        self.signed(small);
                    }
                    Err(_) => {
                        self.out.push(2);
                        self.out.extend_from_slice(&available.to_le_bytes());
                    }
                },
            }
        }
    }
}

struct Decoder<'a> {
    bytes: &'a [u8],
    at: usize,
    base: i64,
    /// Shared text read so far, by entry.
    table: Vec<String>,
}

impl Decoder<'_> {
    fn take(&mut self, count: usize) -> Result<&[u8], String> {
        let end = self.at.checked_add(count).filter(|end| *end <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!("the payload ends inside a field at byte {}", self.at));
        };
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn flag(&mut self) -> Result<bool, String> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(format!("a flag is {other} at byte {}", self.at - 1)),
        }
    }

    fn unsigned(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(format!("a varint runs past 64 bits at byte {}", self.at))
    }

    fn signed(&mut self) -> Result<i64, String> {
        let zigzag = self.unsigned()?;
        Ok(((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64))
    }

    fn time(&mut self) -> Result<i64, String> {
        Ok(self.base.wrapping_add(self.signed()?))
    }

    fn optional_time(&mut self) -> Result<Option<i64>, String> {
        if self.flag()? { self.time().map(Some) } else { Ok(None) }
    }

    fn ulid(&mut self) -> Result<Ulid, String> {
        let mut raw = [0u8; 16];
        raw.copy_from_slice(self.take(16)?);
        Ok(Ulid::from_u128(u128::from_le_bytes(raw)))
    }

    fn optional_ulid(&mut self) -> Result<Option<Ulid>, String> {
        if self.flag()? { self.ulid().map(Some) } else { Ok(None) }
    }

    fn plain(&mut self) -> Result<String, String> {
        let length = usize::try_from(self.unsigned()?).map_err(|_| "a text is too long")?;
        let at = self.at;
        let bytes = self.take(length)?.to_vec();
        String::from_utf8(bytes).map_err(|_| format!("the text at byte {at} is not UTF-8"))
    }

    fn optional_plain(&mut self) -> Result<Option<String>, String> {
        if self.flag()? { self.plain().map(Some) } else { Ok(None) }
    }

    fn shared(&mut self) -> Result<&str, String> {
        let reference = self.unsigned()?;
        let entry = if reference == 0 {
            let text = self.plain()?;
            self.table.push(text);
            self.table.len() - 1
        } else {
            usize::try_from(reference - 1).map_err(|_| "a text reference is too large")?
        };
        self.table
            .get(entry)
            .map(String::as_str)
            .ok_or_else(|| format!("text entry {entry} is not in the frame's table"))
    }

    fn shared_owned(&mut self) -> Result<String, String> {
        self.shared().map(str::to_owned)
    }

    fn optional_shared(&mut self) -> Result<Option<String>, String> {
        if self.flag()? { self.shared_owned().map(Some) } else { Ok(None) }
    }

    fn account(&mut self) -> Result<Account, String> {
        let id = self.shared_owned()?;
        let tenant = self.shared_owned()?;
        RawAccount {
            id,
            tenant,
            currency: self.shared_owned()?,
            owner: self.optional_shared()?,
            kind: self.shared_owned()?,
            overdraft_limit: if self.flag()? { Some(self.signed()?) } else { None },
            status: self.shared_owned()?,
            metadata: self.shared_owned()?,
            posted: self.signed()?,
            pending_out: self.signed()?,
            pending_in: self.signed()?,
            created_at: self.time()?,
            updated_at: self.time()?,
        }
        .decode()
    }

    fn transfer(&mut self) -> Result<Transfer, String> {
        let id = self.ulid()?;
        RawTransfer {
            id: id.to_string(),
            tenant: self.shared_owned()?,
            idempotency_key: self.plain()?,
            fingerprint: self.plain()?,
            kind: self.shared_owned()?,
            action: self.shared_owned()?,
            debit_account: self.optional_shared()?,
            credit_account: self.optional_shared()?,
            amount: self.signed()?,
            currency: self.optional_shared()?,
            pending_id: self.optional_ulid()?.map(|id| id.to_string()),
            status: self.shared_owned()?,
            error_code: self.optional_shared()?,
            error_message: self.optional_plain()?,
            expires_at: self.optional_time()?,
            captured_amount: self.signed()?,
            category: self.shared_owned()?,
            description: self.shared_owned()?,
            metadata: self.shared_owned()?,
            effective_at: self.time()?,
            committed_at: self.time()?,
            updated_at: self.time()?,
            fx: self.optional_plain()?,
        }
        .decode()
    }

    fn entry(&mut self) -> Result<Entry, String> {
        let transfer = self.ulid()?;
        let raw = RawEntry {
            // The stored entry's sequence is the projection's; the frame carries none.
            sequence: 0,
            transfer_id: transfer.to_string(),
            account_id: self.shared_owned()?,
            direction: self.shared_owned()?,
            amount: self.signed()?,
            currency: self.shared_owned()?,
            balance_after: self.signed()?,
            effective_at: self.time()?,
            committed_at: self.time()?,
        };
        Ok(raw.decode()?.entry)
    }

    fn user(&mut self) -> Result<User, String> {
        let id = self.shared_owned()?;
        let tenant = self.shared_owned()?;
        RawUser { id, tenant, name: self.plain()?, created_at: self.time()? }.decode()
    }

    fn order(&mut self) -> Result<Order, String> {
        let id = self.shared_owned()?;
        RawOrder {
            id,
            tenant: self.shared_owned()?,
            user_id: self.shared_owned()?,
            amount: self.signed()?,
            currency: self.shared_owned()?,
            status: self.shared_owned()?,
            failure_code: self.optional_shared()?,
            failure_message: self.optional_plain()?,
            payment_id: self.optional_ulid()?.map(|id| id.to_string()),
            created_at: self.time()?,
            updated_at: self.time()?,
        }
        .decode()
    }

    fn rate(&mut self) -> Result<FxRate, String> {
        let tenant = self.shared_owned()?;
        RawRate {
            tenant,
            base: self.shared_owned()?,
            quote: self.shared_owned()?,
            rate: self.plain()?,
            source: self.shared_owned()?,
            valid_from: self.signed()?,
            set_at: self.signed()?,
        }
        .decode()
    }

    fn quote(&mut self) -> Result<Quote, String> {
        let id = QuoteId(self.ulid()?);
        RawQuote {
            id: id.to_string(),
            tenant: self.shared_owned()?,
            idempotency_key: self.optional_plain()?,
            terms: self.plain()?,
            created_at: self.signed()?,
            expires_at: self.signed()?,
            used_by: self.optional_ulid()?.map(|id| id.to_string()),
            used_at: if self.flag()? { Some(self.signed()?) } else { None },
        }
        .decode()
    }

    /// An event; one that refers to a record of the frame finds it in `outcome`, which holds
    /// every record before the events.
    fn event(&mut self, outcome: &Outcome) -> Result<Event, String> {
        let id = EventId(self.ulid()?);
        let tenant = Tenant::parse(self.shared()?).map_err(|rejection| rejection.message)?;
        let actor = self.optional_shared()?;
        let trace = self.optional_shared()?;
        let kind_text = self.shared()?;
        let kind = EventKind::parse(kind_text)
            .ok_or_else(|| format!("event kind '{kind_text}' is not valid"))?;
        let at = Timestamp::from_unix_micros(self.time()?);
        let subject = match self.byte()? {
            SUBJECT_TRANSFER_RECORD => {
                let position = usize::try_from(self.unsigned()?).unwrap_or(usize::MAX);
                let recorded = outcome
                    .transfers_inserted
                    .iter()
                    .chain(&outcome.transfers_updated)
                    .nth(position)
                    .ok_or_else(|| format!("an event refers to transfer record {position}"))?;
                Subject::Transfer(recorded.clone())
            }
            SUBJECT_ACCOUNT_RECORD => {
                let position = usize::try_from(self.unsigned()?).unwrap_or(usize::MAX);
                let recorded = outcome
                    .accounts_opened
                    .iter()
                    .chain(&outcome.accounts_changed)
                    .nth(position)
                    .ok_or_else(|| format!("an event refers to account record {position}"))?;
                Subject::Account(recorded.clone())
            }
            SUBJECT_TRANSFER => Subject::Transfer(self.transfer()?),
            SUBJECT_ACCOUNT => Subject::Account(self.account()?),
            SUBJECT_USER => Subject::User(self.user()?),
            SUBJECT_ORDER => Subject::Order(self.order()?),
            SUBJECT_RATE => Subject::Rate(self.rate()?),
            SUBJECT_QUOTE => Subject::Quote(self.quote()?),
            other => return Err(format!("event subject type {other} is unknown")),
        };
        let count = usize::try_from(self.unsigned()?).unwrap_or(usize::MAX);
        if count > Balances::MAX {
            return Err(format!("an event carries {count} balances, at most {}", Balances::MAX));
        }
        let mut balances = Balances::default();
        for _ in 0..count {
            let account_id = kopek_core::AccountId::from_key(self.shared()?)
                .map_err(|rejection| rejection.message)?;
            let currency = kopek_core::Currency::parse(self.shared()?)
                .map_err(|rejection| rejection.message)?;
            let posted = self.signed()?;
            let pending_out = self.signed()?;
            let pending_in = self.signed()?;
            let available = match self.byte()? {
                0 => None,
                1 => Some(i128::from(self.signed()?)),
                2 => {
                    let mut raw = [0u8; 16];
                    raw.copy_from_slice(self.take(16)?);
                    Some(i128::from_le_bytes(raw))
                }
                other => return Err(format!("an available balance has form {other}")),
            };
            // Within `MAX`, checked above.
            let _ = balances.push(BalanceSnapshot {
                account_id,
                currency,
                posted,
                pending_out,
                pending_in,
                available,
            });
        }
        Ok(Event { id, tenant, actor, trace, kind, at, subject, balances })
    }
}
