//! A posted transfer's `TransferPosted` event carried by its `transfers` row (migration 0014)
//! instead of an outbox row of its own: the last step of the compact projection
//! (`docs/storage.md`). The row holds the transfer and both balances after it; the event adds
//! its place in the event order, its id, the API key and trace behind it, and of each
//! account's balance the pending amounts and the overdraft limit. Its document is rendered
//! from these when a reader asks.
//!
//! The writer carries an event only when the event rendered back from the row equals the one
//! `apply` decided (`carry`), so a carried event reads back exactly; any other event stays an
//! outbox row.

use kopek_core::{
    BalanceSnapshot, Balances, Event, EventId, EventKind, Subject, Transfer, TransferStatus,
};

/// The columns, after `TRANSFER_COLUMNS`, that `read` takes: the balances after the transfer,
/// then what the row adds to carry its event.
pub const CARRIED_COLUMNS: &str = "debit_balance_after, credit_balance_after, event_sequence, \
     event_id, event_actor, event_trace, debit_pending_out, debit_pending_in, debit_limit, \
     credit_pending_out, credit_pending_in, credit_limit";

/// What a row keeps of one account's balance beyond its posted balance after the transfer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Side {
    pub pending_out: i64,
    pub pending_in: i64,
    /// The overdraft limit; `None`: unbounded.
    pub limit: Option<i64>,
}

/// What a transfers row adds to carry its event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Carried {
    pub sequence: i64,
    pub id: EventId,
    pub actor: Option<String>,
    pub trace: Option<String>,
    /// The debit's, then the credit's.
    pub sides: [Side; 2],
}

/// What `event` is as a row carries it, when `row` (the transfer as this batch leaves it, with
/// `after`, the posted balances after it of its debit and credit) renders it back exactly.
pub fn carry(
    event: &Event,
    row: &Transfer,
    after: [Option<i64>; 2],
    sequence: i64,
) -> Option<Carried> {
    if event.kind != EventKind::TransferPosted
        || row.status != TransferStatus::Posted
        || event.tenant != row.tenant
        || event.at != row.committed_at
        || !matches!(&event.subject, Subject::Transfer(subject) if subject == row)
    {
        return None;
    }
    let mut sides = [Side::default(); 2];
    let mut snapshots = event.balances.iter();
    for side in &mut sides {
        let snapshot = snapshots.next()?;
        let limit = match snapshot.available {
            None => None,
            Some(available) => Some(
                i64::try_from(
                    available - i128::from(snapshot.posted) + i128::from(snapshot.pending_out),
                )
                .ok()?,
            ),
        };
        *side = Side { pending_out: snapshot.pending_out, pending_in: snapshot.pending_in, limit };
    }
    if snapshots.next().is_some() || balances(row, after, &sides)? != event.balances {
        return None;
    }
    let carried = Carried {
        sequence,
        id: event.id,
        actor: event.actor.clone(),
        trace: event.trace.clone(),
        sides,
    };
    debug_assert_eq!(rendered(row, after, &carried).as_ref(), Some(event));
    Some(carried)
}

/// The event a row carries, rendered back; `None` when the row cannot hold one (a transfer
/// with no accounts, currency or balances after it).
pub fn rendered(row: &Transfer, after: [Option<i64>; 2], carried: &Carried) -> Option<Event> {
    Some(Event {
        id: carried.id,
        tenant: row.tenant.clone(),
        actor: carried.actor.clone(),
        trace: carried.trace.clone(),
        kind: EventKind::TransferPosted,
        at: row.committed_at,
        subject: Subject::Transfer(row.clone()),
        balances: balances(row, after, &carried.sides)?,
    })
}

fn balances(row: &Transfer, after: [Option<i64>; 2], sides: &[Side; 2]) -> Option<Balances> {
    let currency = row.currency?;
    let mut balances = Balances::default();
    for ((account, posted), side) in
        [&row.debit_account, &row.credit_account].into_iter().zip(after).zip(sides)
    {
        let posted = posted?;
        let available = side
            .limit
            .map(|limit| i128::from(posted) - i128::from(side.pending_out) + i128::from(limit));
        balances
            .push(BalanceSnapshot {
                account_id: account.clone()?,
                currency,
                posted,
                pending_out: side.pending_out,
                pending_in: side.pending_in,
                available,
            })
            .ok()?;
    }
    Some(balances)
}

/// A row selected with `TRANSFER_COLUMNS, CARRIED_COLUMNS`: the balances after the transfer,
/// and what it adds to carry an event (`None`: it carries none).
pub fn read(
    row: &rusqlite::Row,
    first: usize,
) -> rusqlite::Result<([Option<i64>; 2], Option<Carried>)> {
    let after = [row.get(first)?, row.get(first + 1)?];
    let Some(sequence) = row.get::<_, Option<i64>>(first + 2)? else {
        return Ok((after, None));
    };
    let id: String = row.get(first + 3)?;
    let id = EventId::parse(&id).map_err(|rejection| {
        rusqlite::Error::FromSqlConversionFailure(
            first + 3,
            rusqlite::types::Type::Text,
            rejection.message.into(),
        )
    })?;
    let side = |at: usize| -> rusqlite::Result<Side> {
        Ok(Side {
            pending_out: row.get(at)?,
            pending_in: row.get(at + 1)?,
            limit: row.get(at + 2)?,
        })
    };
    let carried = Carried {
        sequence,
        id,
        actor: row.get(first + 4)?,
        trace: row.get(first + 5)?,
        sides: [side(first + 6)?, side(first + 9)?],
    };
    Ok((after, Some(carried)))
}
