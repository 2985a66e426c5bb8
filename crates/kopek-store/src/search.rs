//! What a transfer search selects, and how a backend pages through it.
//!
//! Transfers are listed in commit order (or its reverse), and a cursor is the *position* of the
//! last transfer a page examined: a number that only grows with commit order, so a transfer
//! committed while a client pages lands after every position it has been given and never
//! shifts a page it has not read yet. On the embedded store the position is the transfer
//! row's number; on PostgreSQL a number taken under the outbox lock held to commit.
//!
//! A backend may answer a page with fewer transfers than asked, even none, while it still
//! gives a `next_cursor`: the embedded store examines at most `SCAN_ROWS_MAX` candidates per
//! call, so a filter that matches rarely answers in bounded time. A client follows
//! `next_cursor` until it is `None`; the transfers it collects are exactly the ones that match,
//! each once, in order.

use kopek_core::{
    AccountId, Currency, IdempotencyKey, Tenant, Timestamp, TransferKind, TransferStatus,
};

/// Candidates the embedded store reads for one page before it answers with what it found.
pub const SCAN_ROWS_MAX: usize = 4_096;

/// Which way a search walks commit order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortOrder {
    /// Oldest first.
    Ascending,
    /// Newest first: what an operator looks at.
    #[default]
    Descending,
}

/// A half-open time range, `[from, until)`: ranges that meet tile time without a gap or an
/// overlap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub from: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

impl TimeRange {
    pub fn contains(&self, at: Timestamp) -> bool {
        self.from.is_none_or(|from| at >= from) && self.until.is_none_or(|until| at < until)
    }

    pub fn is_everything(&self) -> bool {
        self.from.is_none() && self.until.is_none()
    }
}

/// One tenant's transfers that match every filter given. Ids are keys in the tenant
/// (`kopek_intake::access` puts them there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferQuery {
    pub tenant: Tenant,
    /// Debited or credited (a hold, a void or a declined transfer names it too).
    pub account: Option<AccountId>,
    pub idempotency_key: Option<IdempotencyKey>,
    pub committed: TimeRange,
    pub effective: TimeRange,
    pub kind: Option<TransferKind>,
    pub status: Option<TransferStatus>,
    pub currency: Option<Currency>,
    /// Inclusive bounds on the amount, in minor units.
    pub amount_min: Option<i64>,
    pub amount_max: Option<i64>,
    /// Every pair must be in the transfer's metadata.
    pub metadata: Vec<(String, String)>,
    pub order: SortOrder,
    /// The `next_cursor` of the page before: the position of the last transfer it examined.
    pub cursor: Option<u64>,
    pub limit: usize,
}

impl TransferQuery {
    /// Every transfer of `tenant`, newest first, `limit` per page.
    pub fn all(tenant: Tenant, limit: usize) -> TransferQuery {
        TransferQuery {
            tenant,
            account: None,
            idempotency_key: None,
            committed: TimeRange::default(),
            effective: TimeRange::default(),
            kind: None,
            status: None,
            currency: None,
            amount_min: None,
            amount_max: None,
            metadata: Vec::new(),
            order: SortOrder::Descending,
            cursor: None,
            limit,
        }
    }

    /// Whether `transfer` passes every filter (the position aside). Backends filter in their
    /// query language; the conformance suite checks their answers against this.
    pub fn matches(&self, transfer: &kopek_core::Transfer) -> bool {
        let named = |account: &AccountId| {
            [&transfer.debit_account, &transfer.credit_account]
                .into_iter()
                .any(|side| side.as_ref() == Some(account))
        };
        transfer.tenant == self.tenant
            && self.account.as_ref().is_none_or(named)
            && self.idempotency_key.as_ref().is_none_or(|key| *key == transfer.idempotency_key)
            && self.committed.contains(transfer.committed_at)
            && self.effective.contains(transfer.effective_at)
            && self.kind.is_none_or(|kind| kind == transfer.kind)
            && self.status.is_none_or(|status| status == transfer.status)
            && self.currency.is_none_or(|currency| Some(currency) == transfer.currency)
            && self.amount_min.is_none_or(|min| transfer.amount >= min)
            && self.amount_max.is_none_or(|max| transfer.amount <= max)
            && self.metadata.iter().all(|(key, value)| {
                transfer.details.metadata.get(key).is_some_and(|found| found == value)
            })
    }
}

/// The 64 bits a metadata pair is indexed by on the embedded store: XXH3-64 of the tenant, the
/// key and the value, each but the last preceded by its length, so no two pairs share an
/// input. The index only narrows; the pair itself is compared on the row found.
pub fn metadata_tag(tenant: &str, key: &str, value: &str) -> i64 {
    let mut input = Vec::with_capacity(8 + tenant.len() + key.len() + value.len());
    for part in [tenant, key] {
        input.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_le_bytes());
        input.extend_from_slice(part.as_bytes());
    }
    input.extend_from_slice(value.as_bytes());
    i64::from_ne_bytes(xxhash_rust::xxh3::xxh3_64(&input).to_ne_bytes())
}
