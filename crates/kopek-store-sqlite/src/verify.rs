//! `verify`: recomputes the books from the rows, in one read snapshot. Sums are taken in
//! i128 in Rust (SQLite's `SUM` fails on an intermediate overflow), and every pass streams
//! rows in index order, so memory stays flat however large the ledger is.
//!
//! Checked: each account's entries (running balance-after, currency, final sum = posted);
//! every posting names an account and a transfer; each idempotency key names one transfer and
//! is found by its stored hash;
//! per currency, debits = credits and posted balances sum to zero; each transfer's entries
//! (a posting has exactly its debit and credit, anything else has none); holds against
//! their captures and voids and against pending balances; overdraft limits; one outbox event
//! per account, transfer, expiry and order, and a paid order's posted payment.

use crate::rows::sql_error;
use kopek_store::{StoreError, StoreResult, VerifyReport};
use rusqlite::Connection;
use std::collections::BTreeMap;

pub fn verify_books(connection: &Connection) -> StoreResult<VerifyReport> {
    connection.execute_batch("BEGIN").map_err(sql_error)?;
    let report = verify_in_snapshot(connection);
    connection.execute_batch("COMMIT").map_err(sql_error)?;
    report
}

fn verify_in_snapshot(connection: &Connection) -> StoreResult<VerifyReport> {
    let mut report = VerifyReport::default();
    let accounts = accounts(connection, &mut report)?;
    entries_by_account(connection, &accounts, &mut report)?;
    entries_by_transfer(connection, &mut report)?;
    // The `entries` view joins a posting to its account and its transfer: one that names
    // neither is in no statement and no check above, and one on a side of a transfer that
    // has no balance after it (a hold, a decline) has no balance to check.
    let orphans = count(
        connection,
        "SELECT COUNT(*) FROM postings p \
         WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.number = p.account) \
         OR NOT EXISTS (SELECT 1 FROM transfers t WHERE t.number = p.sequence / 2)",
    )?;
    if orphans > 0 {
        report.problems.push(format!("{orphans} postings name no account or no transfer"));
    }
    let unbalanced = count(
        connection,
        "SELECT COUNT(*) FROM postings p JOIN transfers t ON t.number = p.sequence / 2 \
         WHERE CASE p.sequence % 2 WHEN 0 THEN t.debit_balance_after \
         ELSE t.credit_balance_after END IS NULL",
    )?;
    if unbalanced > 0 {
        report.problems.push(format!(
            "{unbalanced} postings are on a side of a transfer that has no balance after it"
        ));
    }
    idempotency_keys(connection, &mut report)?;
    holds(connection, &mut report)?;
    sql_checks(connection, &mut report)?;
    carried_events(connection, &mut report)?;
    report.events = count(connection, "SELECT COUNT(*) FROM events")?;
    Ok(report)
}

/// A transfers row carries an event (migration 0014) only as a posted transfer with both
/// balances after it, and an event's sequence and id are in one table only.
fn carried_events(connection: &Connection, report: &mut VerifyReport) -> StoreResult<()> {
    let unfit = count(
        connection,
        "SELECT COUNT(*) FROM transfers WHERE event_sequence IS NOT NULL AND (status != 'posted' \
         OR event_id IS NULL OR debit_balance_after IS NULL OR credit_balance_after IS NULL \
         OR debit_pending_out IS NULL OR debit_pending_in IS NULL \
         OR credit_pending_out IS NULL OR credit_pending_in IS NULL)",
    )?;
    if unfit > 0 {
        report.problems.push(format!(
            "{unfit} transfers carry an event they cannot render (not posted, or a balance missing)"
        ));
    }
    let twice = count(
        connection,
        "SELECT COUNT(*) FROM outbox o JOIN transfers t ON t.event_sequence = o.sequence",
    )?;
    if twice > 0 {
        report
            .problems
            .push(format!("{twice} event sequences are both an outbox row and a transfer's event"));
    }
    let ids = count(
        connection,
        "SELECT COUNT(*) FROM transfers t JOIN outbox o ON o.id = t.event_id \
         WHERE t.event_sequence IS NOT NULL",
    )?;
    if ids > 0 {
        report.problems.push(format!("{ids} event ids are both an outbox row's and a transfer's"));
    }
    Ok(())
}

/// Each transfer's `key_hash` is its key's (or a retry would not find it), and no key names
/// two transfers (the index on the hash is not unique: the writer keeps keys unique).
fn idempotency_keys(connection: &Connection, report: &mut VerifyReport) -> StoreResult<()> {
    let mut statement = connection
        .prepare("SELECT id, tenant, idempotency_key, key_hash FROM transfers")
        .map_err(sql_error)?;
    let mut rows = statement.query([]).map_err(sql_error)?;
    while let Some(row) = rows.next().map_err(sql_error)? {
        let tenant: String = row.get(1).map_err(sql_error)?;
        let key: String = row.get(2).map_err(sql_error)?;
        let stored: i64 = row.get(3).map_err(sql_error)?;
        if stored != crate::key_hash_column(&tenant, &key) {
            let id: String = row.get(0).map_err(sql_error)?;
            report
                .problems
                .push(format!("transfer {id} has a key hash that is not its idempotency key's"));
        }
    }
    let mut statement = connection
        .prepare(
            "SELECT tenant, idempotency_key, COUNT(*) FROM transfers WHERE key_hash IN \
             (SELECT key_hash FROM transfers GROUP BY key_hash HAVING COUNT(*) > 1) \
             GROUP BY tenant, idempotency_key HAVING COUNT(*) > 1",
        )
        .map_err(sql_error)?;
    let mut rows = statement.query([]).map_err(sql_error)?;
    while let Some(row) = rows.next().map_err(sql_error)? {
        let tenant: String = row.get(0).map_err(sql_error)?;
        let key: String = row.get(1).map_err(sql_error)?;
        let count: i64 = row.get(2).map_err(sql_error)?;
        report
            .problems
            .push(format!("idempotency key {key} of tenant {tenant} names {count} transfers"));
    }
    Ok(())
}

struct AccountRow {
    currency: String,
    posted: i64,
    pending_out: i64,
    limit: Option<i64>,
}

fn count(connection: &Connection, sql: &str) -> StoreResult<u64> {
    let value: i64 = connection.query_row(sql, [], |row| row.get(0)).map_err(sql_error)?;
    Ok(u64::try_from(value).unwrap_or(0))
}

fn accounts(
    connection: &Connection,
    report: &mut VerifyReport,
) -> StoreResult<BTreeMap<String, AccountRow>> {
    let mut statement = connection
        .prepare(
            "SELECT id, currency, posted, pending_out, overdraft_limit FROM accounts ORDER BY id",
        )
        .map_err(sql_error)?;
    let rows = statement
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                AccountRow {
                    currency: row.get(1)?,
                    posted: row.get(2)?,
                    pending_out: row.get(3)?,
                    limit: row.get(4)?,
                },
            ))
        })
        .map_err(sql_error)?;
    let mut accounts = BTreeMap::new();
    let mut posted_by_currency: BTreeMap<String, i128> = BTreeMap::new();
    for row in rows {
        let (id, account) = row.map_err(sql_error)?;
        *posted_by_currency.entry(account.currency.clone()).or_default() +=
            i128::from(account.posted);
        if let Some(limit) = account.limit {
            let available =
                i128::from(account.posted) - i128::from(account.pending_out) + i128::from(limit);
            if available < 0 {
                report.problems.push(format!(
                    "account {id} is past its overdraft limit (available {available})"
                ));
            }
        }
        accounts.insert(id, account);
    }
    for (currency, total) in posted_by_currency {
        if total != 0 {
            report.problems.push(format!("posted balances in {currency} sum to {total}, not 0"));
        }
    }
    report.accounts = accounts.len() as u64;
    Ok(accounts)
}

/// How far after its commit an entry may take effect, in microseconds.
const EFFECTIVE_AT_AHEAD_MICROS_MAX: i64 =
    kopek_core::limits::EFFECTIVE_AT_AHEAD_SECONDS_MAX * 1_000_000;

/// Walks every account's entries in commit order.
fn entries_by_account(
    connection: &Connection,
    accounts: &BTreeMap<String, AccountRow>,
    report: &mut VerifyReport,
) -> StoreResult<()> {
    let mut statement = connection
        .prepare(
            "SELECT account_id, sequence, direction, amount, currency, balance_after, effective_at, \
             committed_at FROM entries ORDER BY account_id, sequence",
        )
        .map_err(sql_error)?;
    let mut rows = statement.query([]).map_err(sql_error)?;
    let mut totals_by_currency: BTreeMap<String, (i128, i128)> = BTreeMap::new();
    let mut current: Option<(String, i128)> = None;
    let mut seen_accounts = std::collections::BTreeSet::new();
    let finish =
        |account: &str, running: i128, report: &mut VerifyReport| match accounts.get(account) {
            Some(row) if i128::from(row.posted) != running => report.problems.push(format!(
                "account {account} has posted balance {} but its entries sum to {running}",
                row.posted
            )),
            Some(_) => {}
            None => report
                .problems
                .push(format!("entries name account {account}, which does not exist")),
        };
    while let Some(row) = rows.next().map_err(sql_error)? {
        let account: String = row.get(0).map_err(sql_error)?;
        let sequence: i64 = row.get(1).map_err(sql_error)?;
        let direction: String = row.get(2).map_err(sql_error)?;
        let amount: i64 = row.get(3).map_err(sql_error)?;
        // A posting on a transfer that moved nothing (a hold, a decline) has neither: the
        // check of postings below reports it.
        let (Some(currency), Some(balance_after)) = (
            row.get::<_, Option<String>>(4).map_err(sql_error)?,
            row.get::<_, Option<i64>>(5).map_err(sql_error)?,
        ) else {
            continue;
        };
        let effective_at: i64 = row.get(6).map_err(sql_error)?;
        let committed_at: i64 = row.get(7).map_err(sql_error)?;
        report.entries += 1;
        // Balances at an effective time rely on it (`balance_before`).
        if effective_at > committed_at.saturating_add(EFFECTIVE_AT_AHEAD_MICROS_MAX) {
            report.problems.push(format!(
                "entry {sequence} takes effect more than {} s after its commit",
                kopek_core::limits::EFFECTIVE_AT_AHEAD_SECONDS_MAX
            ));
        }
        if current.as_ref().is_none_or(|(id, _)| *id != account) {
            if let Some((id, running)) = current.take() {
                finish(&id, running, report);
            }
            seen_accounts.insert(account.clone());
            current = Some((account.clone(), 0));
        }
        let Some((_, running)) = current.as_mut() else {
            return Err(StoreError::Invariant("verify lost its place in the entries".to_owned()));
        };
        let totals = totals_by_currency.entry(currency.clone()).or_default();
        match direction.as_str() {
            "debit" => {
                *running -= i128::from(amount);
                totals.0 += i128::from(amount);
            }
            "credit" => {
                *running += i128::from(amount);
                totals.1 += i128::from(amount);
            }
            other => report.problems.push(format!("entry {sequence} has direction '{other}'")),
        }
        if amount <= 0 {
            report.problems.push(format!("entry {sequence} has a non-positive amount {amount}"));
        }
        if i128::from(balance_after) != *running {
            report.problems.push(format!(
                "entry {sequence} of account {account} says balance {balance_after}, its running total is {running}"
            ));
        }
        if accounts.get(&account).is_some_and(|row| row.currency != currency) {
            report
                .problems
                .push(format!("entry {sequence} is in {currency}, its account {account} is not"));
        }
    }
    if let Some((id, running)) = current.take() {
        finish(&id, running, report);
    }
    for (id, row) in accounts {
        if !seen_accounts.contains(id) && row.posted != 0 {
            report
                .problems
                .push(format!("account {id} has posted balance {} but no entries", row.posted));
        }
    }
    for (currency, (debits, credits)) in totals_by_currency {
        if debits != credits {
            report
                .problems
                .push(format!("debits in {currency} total {debits} but credits total {credits}"));
        }
    }
    Ok(())
}

struct EntryOfTransfer {
    account: String,
    direction: String,
    amount: i64,
    currency: String,
}

/// Merges transfers (by id) with their entries (sorted by transfer id): a posting has exactly
/// its debit and its credit, everything else has no entries.
fn entries_by_transfer(connection: &Connection, report: &mut VerifyReport) -> StoreResult<()> {
    let mut transfer_statement = connection
        .prepare(
            "SELECT id, status, debit_account, credit_account, amount, currency FROM transfers ORDER BY id",
        )
        .map_err(sql_error)?;
    let mut entry_statement = connection
        .prepare("SELECT transfer_id, account_id, direction, amount, currency FROM entries ORDER BY transfer_id")
        .map_err(sql_error)?;
    let mut transfers = transfer_statement.query([]).map_err(sql_error)?;
    let mut entries = entry_statement.query([]).map_err(sql_error)?;
    let mut pending_entry: Option<(String, EntryOfTransfer)> = next_entry(&mut entries)?;
    while let Some(row) = transfers.next().map_err(sql_error)? {
        report.transfers += 1;
        let id: String = row.get(0).map_err(sql_error)?;
        let status: String = row.get(1).map_err(sql_error)?;
        let debit: Option<String> = row.get(2).map_err(sql_error)?;
        let credit: Option<String> = row.get(3).map_err(sql_error)?;
        let amount: i64 = row.get(4).map_err(sql_error)?;
        let currency: Option<String> = row.get(5).map_err(sql_error)?;
        // Entries whose transfer id sorts before this one belong to no transfer.
        while let Some((transfer_id, _)) = &pending_entry
            && *transfer_id < id
        {
            report
                .problems
                .push(format!("an entry names transfer {transfer_id}, which does not exist"));
            pending_entry = next_entry(&mut entries)?;
        }
        let mut own = Vec::new();
        while let Some((transfer_id, _)) = &pending_entry
            && *transfer_id == id
        {
            if let Some((_, entry)) = pending_entry.take() {
                own.push(entry);
            }
            pending_entry = next_entry(&mut entries)?;
        }
        if status == "posted" {
            let is = |entry: &EntryOfTransfer, direction: &str, account: &Option<String>| {
                entry.direction == direction
                    && Some(&entry.account) == account.as_ref()
                    && entry.amount == amount
                    && Some(&entry.currency) == currency.as_ref()
            };
            let well_formed = own.len() == 2
                && own.iter().any(|entry| is(entry, "debit", &debit))
                && own.iter().any(|entry| is(entry, "credit", &credit));
            if !well_formed {
                report.problems.push(format!(
                    "posted transfer {id} has {} entries that are not exactly its debit and credit of {amount}",
                    own.len()
                ));
            }
        } else if !own.is_empty() {
            report.problems.push(format!(
                "{status} transfer {id} has {} entries; it should have none",
                own.len()
            ));
        }
    }
    while let Some((transfer_id, _)) = pending_entry {
        report
            .problems
            .push(format!("an entry names transfer {transfer_id}, which does not exist"));
        pending_entry = next_entry(&mut entries)?;
    }
    Ok(())
}

fn next_entry(rows: &mut rusqlite::Rows) -> StoreResult<Option<(String, EntryOfTransfer)>> {
    let Some(row) = rows.next().map_err(sql_error)? else {
        return Ok(None);
    };
    let transfer_id: String = row.get(0).map_err(sql_error)?;
    let entry = EntryOfTransfer {
        account: row.get(1).map_err(sql_error)?,
        direction: row.get(2).map_err(sql_error)?,
        amount: row.get(3).map_err(sql_error)?,
        currency: row.get(4).map_err(sql_error)?,
    };
    Ok(Some((transfer_id, entry)))
}

struct Resolution {
    action: String,
    amount: i64,
}

/// Every hold agrees with its resolutions, and pending balances equal the open holds.
fn holds(connection: &Connection, report: &mut VerifyReport) -> StoreResult<()> {
    let mut resolutions: BTreeMap<String, Vec<Resolution>> = BTreeMap::new();
    {
        let mut statement = connection
            .prepare(
                "SELECT pending_id, action, amount FROM transfers \
                 WHERE pending_id IS NOT NULL AND status != 'declined'",
            )
            .map_err(sql_error)?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    Resolution { action: row.get(1)?, amount: row.get(2)? },
                ))
            })
            .map_err(sql_error)?;
        for row in rows {
            let (pending_id, resolution) = row.map_err(sql_error)?;
            resolutions.entry(pending_id).or_default().push(resolution);
        }
    }
    let mut held_out: BTreeMap<String, i128> = BTreeMap::new();
    let mut held_in: BTreeMap<String, i128> = BTreeMap::new();
    let mut statement = connection
        .prepare(
            "SELECT id, status, amount, captured_amount, debit_account, credit_account FROM transfers \
             WHERE action = 'hold' AND status != 'declined'",
        )
        .map_err(sql_error)?;
    let mut rows = statement.query([]).map_err(sql_error)?;
    while let Some(row) = rows.next().map_err(sql_error)? {
        let id: String = row.get(0).map_err(sql_error)?;
        let status: String = row.get(1).map_err(sql_error)?;
        let amount: i64 = row.get(2).map_err(sql_error)?;
        let captured: i64 = row.get(3).map_err(sql_error)?;
        let debit: String = row.get::<_, Option<String>>(4).map_err(sql_error)?.unwrap_or_default();
        let credit: String =
            row.get::<_, Option<String>>(5).map_err(sql_error)?.unwrap_or_default();
        let own = resolutions.remove(&id).unwrap_or_default();
        let agrees = match status.as_str() {
            "pending" | "expired" => own.is_empty() && captured == 0,
            "captured" => {
                matches!(&own[..], [only] if only.action == "capture" && only.amount == captured && captured <= amount)
            }
            "voided" => {
                matches!(&own[..], [only] if only.action == "void" && only.amount == amount)
            }
            _ => false,
        };
        if !agrees {
            report.problems.push(format!(
                "hold {id} is {status} but has {} resolutions that do not match",
                own.len()
            ));
        }
        if status == "pending" {
            *held_out.entry(debit).or_default() += i128::from(amount);
            *held_in.entry(credit).or_default() += i128::from(amount);
        }
    }
    for pending_id in resolutions.keys() {
        report
            .problems
            .push(format!("a capture or void names hold {pending_id}, which is not a hold"));
    }
    let mut statement = connection
        .prepare("SELECT id, pending_out, pending_in FROM accounts ORDER BY id")
        .map_err(sql_error)?;
    let mut rows = statement.query([]).map_err(sql_error)?;
    while let Some(row) = rows.next().map_err(sql_error)? {
        let id: String = row.get(0).map_err(sql_error)?;
        let pending_out: i64 = row.get(1).map_err(sql_error)?;
        let pending_in: i64 = row.get(2).map_err(sql_error)?;
        let out = held_out.get(&id).copied().unwrap_or(0);
        let into = held_in.get(&id).copied().unwrap_or(0);
        if i128::from(pending_out) != out || i128::from(pending_in) != into {
            report.problems.push(format!(
                "account {id} holds {pending_out} out / {pending_in} in but its pending holds sum to {out} / {into}"
            ));
        }
    }
    Ok(())
}

const CREATION_KINDS: &str =
    "'TransferPosted','TransferDeclined','HoldPlaced','HoldCaptured','HoldVoided'";

/// Event completeness: exactly one event per account, per transfer, per expiry. The events
/// of each kind per subject are counted in one pass over the events, in the outbox or carried
/// by transfers rows (there is no index by subject), then matched to the rows by the
/// subject's id.
fn sql_checks(connection: &Connection, report: &mut VerifyReport) -> StoreResult<()> {
    // The rows of `table` (as `r`, with `n` their events of `kinds`) for which `wrong` holds.
    let check = |table: &str, kinds: &str, wrong: &str| {
        format!(
            "SELECT id, n FROM (SELECT {table}.*, COALESCE(c.n, 0) AS n FROM {table} LEFT JOIN \
             (SELECT subject_id, COUNT(*) AS n FROM events WHERE kind IN ({kinds}) GROUP BY subject_id) c \
             ON c.subject_id = {table}.id) AS r WHERE {wrong}"
        )
    };
    let checks: [(String, &str); 5] = [
        (
            check("orders", "'OrderCreated'", "n != 1"),
            "order {id} has {n} OrderCreated events, not 1",
        ),
        (
            check(
                "orders",
                "'OrderPaid','OrderFailed'",
                "(r.status = 'PENDING') != (n = 0) OR n > 1 OR (r.status = 'PAID' AND NOT EXISTS \
                 (SELECT 1 FROM transfers t WHERE t.id = r.payment_id AND t.status = 'posted' \
                 AND t.amount = r.amount))",
            ),
            "order {id} has {n} settlement events for its status, or its payment does not match",
        ),
        (
            check("accounts", "'AccountOpened'", "n != 1"),
            "account {id} has {n} AccountOpened events, not 1",
        ),
        (
            check("transfers", "'HoldExpired'", "(r.status = 'expired') != (n = 1) OR n > 1"),
            "hold {id} has {n} HoldExpired events for its status",
        ),
        (
            check("transfers", CREATION_KINDS, "n != 1"),
            "transfer {id} has {n} creation events, not 1",
        ),
    ];
    for (sql, template) in checks {
        let mut statement = connection.prepare(&sql).map_err(sql_error)?;
        let rows = statement
            .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))
            .map_err(sql_error)?;
        for row in rows {
            let (id, n) = row.map_err(sql_error)?;
            report.problems.push(template.replace("{id}", &id).replace("{n}", &n.to_string()));
        }
    }
    Ok(())
}
