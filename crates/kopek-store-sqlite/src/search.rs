//! Transfer search on the SQLite tables (`kopek_store::search` says what it answers).
//!
//! A transfer's position is its row's `number`, which is commit order: one writer numbers the
//! rows as it commits, and commit times never go back (`Watermark`). A search reads its
//! candidates in position order from the narrowest index its filters allow, at most
//! `SCAN_ROWS_MAX` of them, and checks every filter on each candidate's row:
//! - an idempotency key: `transfers_by_key_hash`;
//! - a metadata pair: `transfer_tags (tag, number)`, one row per pair (migration 0015);
//! - an account: its `postings`, and its `mentions` for the transfers that moved nothing
//!   (holds, voids, declines), merged in position order;
//! - otherwise the table itself, in number order.
//!
//! A commit-time range becomes a range of positions first (one descent of
//! `transfers_by_commit_time`, since `committed_at` grows with `number`); an effective-time
//! range does too at its lower end, because a transfer takes effect at most
//! `EFFECTIVE_AT_AHEAD_SECONDS_MAX` after its commit. The table is read in one statement that
//! stops at the page's end; an index's candidates are looked up one by one until it does.

use crate::*;
use kopek_core::limits::EFFECTIVE_AT_AHEAD_SECONDS_MAX;
use kopek_store::search::{SCAN_ROWS_MAX, SortOrder, TransferQuery, metadata_tag};

/// Writes the index rows of newly inserted transfers: a metadata pair's tag, and the accounts
/// of a transfer that has no postings. `number` is the transfer's row number.
pub(crate) fn index_transfer(
    connection: &Connection,
    transfer: &Transfer,
    number: i64,
    posted: bool,
) -> StoreResult<()> {
    if !transfer.details.metadata.is_empty() {
        let mut insert = connection
            .prepare_cached("INSERT OR IGNORE INTO transfer_tags (tag, number) VALUES (?1, ?2)")
            .map_err(sql_error)?;
        for (key, value) in &transfer.details.metadata {
            let tag = metadata_tag(transfer.tenant.as_str(), key, value);
            insert.execute([tag, number]).map_err(sql_error)?;
        }
    }
    if !posted {
        let mut insert = connection
            .prepare_cached("INSERT OR IGNORE INTO mentions (account, sequence) VALUES (?1, ?2)")
            .map_err(sql_error)?;
        for account in [&transfer.debit_account, &transfer.credit_account].into_iter().flatten() {
            insert.execute([account_tag(account), number * 2]).map_err(sql_error)?;
        }
    }
    Ok(())
}

/// How `mentions` names an account: the hash of its id (a key in its tenant), which needs no
/// account row: a transfer declined because the account did not exist yet names it too.
fn account_tag(account: &AccountId) -> i64 {
    key_hash_column("", account.as_str())
}

/// Registers `kopek_metadata_tag(tenant, key, value)` on a connection that migrates:
/// migration 0015 tags the transfers written before it.
pub(crate) fn register_metadata_tag(connection: &Connection) -> StoreResult<()> {
    use rusqlite::functions::FunctionFlags;
    connection
        .create_scalar_function(
            "kopek_metadata_tag",
            3,
            FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
            |context| {
                let text = |index: usize| context.get::<String>(index);
                Ok(metadata_tag(&text(0)?, &text(1)?, &text(2)?))
            },
        )
        .map_err(sql_error)
}

/// The positions a search may examine: `[low, high)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    low: i64,
    high: i64,
}

impl Span {
    fn is_empty(self) -> bool {
        self.low >= self.high
    }
}

/// The smallest position whose transfer committed at or after `at` (one past the last row if
/// none did), from `transfers_by_commit_time`: commit times grow with positions, so it is the
/// first row of that index at or after `at`.
fn first_position_at(connection: &Connection, at: Timestamp, span: Span) -> StoreResult<i64> {
    let first: Option<i64> = connection
        .prepare_cached(
            "SELECT number FROM transfers INDEXED BY transfers_by_commit_time \
             WHERE committed_at >= ?1 ORDER BY committed_at, number LIMIT 1",
        )
        .and_then(|mut statement| {
            statement.query_row([at.as_unix_micros()], |row| row.get(0)).optional()
        })
        .map_err(sql_error)?;
    Ok(first.unwrap_or(span.high).clamp(span.low, span.high))
}

fn span_of(connection: &Connection, query: &TransferQuery) -> StoreResult<Span> {
    let (first, last): (Option<i64>, Option<i64>) = connection
        // Two subqueries: SQLite reads a lone min() or max() of the key from the B-tree's
        // edge, but both in one select scan the whole table.
        .prepare_cached(
            "SELECT (SELECT min(number) FROM transfers), (SELECT max(number) FROM transfers)",
        )
        .and_then(|mut statement| statement.query_row([], |row| Ok((row.get(0)?, row.get(1)?))))
        .map_err(sql_error)?;
    let (Some(first), Some(last)) = (first, last) else {
        return Ok(Span { low: 0, high: 0 });
    };
    let mut span = Span { low: first, high: last + 1 };
    if let Some(cursor) = query.cursor {
        let cursor = i64::try_from(cursor).unwrap_or(i64::MAX);
        match query.order {
            SortOrder::Ascending => span.low = span.low.max(cursor.saturating_add(1)),
            SortOrder::Descending => span.high = span.high.min(cursor),
        }
    }
    let ahead = EFFECTIVE_AT_AHEAD_SECONDS_MAX * 1_000_000;
    let earliest_commit = [
        query.committed.from,
        query
            .effective
            .from
            .map(|from| Timestamp::from_unix_micros(from.as_unix_micros().saturating_sub(ahead))),
    ]
    .into_iter()
    .flatten()
    .max();
    if span.is_empty() {
        return Ok(span);
    }
    if let Some(from) = earliest_commit {
        span.low = span.low.max(first_position_at(connection, from, span)?);
    }
    if let Some(until) = query.committed.until
        && !span.is_empty()
    {
        span.high = span.high.min(first_position_at(connection, until, span)?);
    }
    Ok(span)
}

/// A statement and its parameters, built up clause by clause.
#[derive(Default)]
struct Sql {
    text: String,
    params: Vec<Value>,
}

impl Sql {
    fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    fn bind(&mut self, value: impl Into<Value>) -> &mut Self {
        self.params.push(value.into());
        self.text.push_str(&format!("?{}", self.params.len()));
        self
    }
}

/// Which index a search reads its candidates from.
enum Driver {
    /// The rows themselves, in number order.
    Table,
    /// The numbers an index gives, in order (at most `SCAN_ROWS_MAX`).
    Index(Vec<i64>),
}

/// The candidates of `query` within `span`, from the narrowest index its filters allow.
fn driver(connection: &Connection, query: &TransferQuery, span: Span) -> StoreResult<Driver> {
    let direction = direction(query.order);
    let budget = to_sql_int(SCAN_ROWS_MAX);
    let (sql, params): (String, Vec<Value>) = if let Some(key) = &query.idempotency_key {
        (
            format!(
                "SELECT number FROM transfers WHERE key_hash = ?1 AND number >= ?2 AND number < ?3 \
                 ORDER BY number {direction} LIMIT ?4"
            ),
            vec![
                key_hash_column(query.tenant.as_str(), key.as_str()).into(),
                span.low.into(),
                span.high.into(),
                budget.into(),
            ],
        )
    } else if let Some((key, value)) = query.metadata.first() {
        (
            format!(
                "SELECT number FROM transfer_tags WHERE tag = ?1 AND number >= ?2 AND number < ?3 \
                 ORDER BY number {direction} LIMIT ?4"
            ),
            vec![
                metadata_tag(query.tenant.as_str(), key, value).into(),
                span.low.into(),
                span.high.into(),
                budget.into(),
            ],
        )
    } else if let Some(account) = &query.account {
        // An account that does not exist has no postings, but declined transfers may name it.
        let number: Option<i64> = connection
            .prepare_cached("SELECT number FROM accounts WHERE id = ?1")
            .and_then(|mut statement| {
                statement.query_row([account.as_str()], |row| row.get(0)).optional()
            })
            .map_err(sql_error)?;
        // Both arms are read in `sequence` order (a mention's sequence is its transfer's number
        // times two, a posting's that plus its side), so SQLite merges them and stops at the
        // limit.
        (
            format!(
                "SELECT sequence / 2 FROM (SELECT sequence FROM postings WHERE account = ?1 \
                 AND sequence >= ?2 AND sequence < ?3 UNION ALL SELECT sequence FROM mentions \
                 WHERE account = ?5 AND sequence >= ?2 AND sequence < ?3 \
                 ORDER BY sequence {direction} LIMIT ?4)"
            ),
            vec![
                number.map_or(Value::Null, Value::Integer),
                span.low.saturating_mul(2).into(),
                span.high.saturating_mul(2).into(),
                budget.into(),
                account_tag(account).into(),
            ],
        )
    } else {
        return Ok(Driver::Table);
    };
    let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
    let numbers = statement
        .query_map(rusqlite::params_from_iter(params), |row| row.get(0))
        .map_err(sql_error)?
        .collect::<Result<Vec<i64>, _>>()
        .map_err(sql_error)?;
    Ok(Driver::Index(numbers))
}

fn direction(order: SortOrder) -> &'static str {
    match order {
        SortOrder::Ascending => "ASC",
        SortOrder::Descending => "DESC",
    }
}

/// Appends every filter, checked on the candidate's row `t`, after a `WHERE` clause.
fn filters(query: &TransferQuery, sql: &mut Sql) {
    sql.push(" AND t.tenant = ").bind(query.tenant.to_string());
    if let Some(account) = &query.account {
        sql.push(" AND (t.debit_account = ")
            .bind(account.to_string())
            .push(" OR t.credit_account = ")
            .bind(account.to_string())
            .push(")");
    }
    if let Some(key) = &query.idempotency_key {
        sql.push(" AND t.idempotency_key = ").bind(key.to_string());
    }
    for (column, range) in [("committed_at", query.committed), ("effective_at", query.effective)] {
        if let Some(from) = range.from {
            sql.push(&format!(" AND t.{column} >= ")).bind(from.as_unix_micros());
        }
        if let Some(until) = range.until {
            sql.push(&format!(" AND t.{column} < ")).bind(until.as_unix_micros());
        }
    }
    if let Some(kind) = query.kind {
        sql.push(" AND t.kind = ").bind(kind.as_str().to_owned());
    }
    if let Some(status) = query.status {
        sql.push(" AND t.status = ").bind(status.as_str().to_owned());
    }
    if let Some(currency) = query.currency {
        sql.push(" AND t.currency = ").bind(currency.code().to_owned());
    }
    if let Some(min) = query.amount_min {
        sql.push(" AND t.amount >= ").bind(min);
    }
    if let Some(max) = query.amount_max {
        sql.push(" AND t.amount <= ").bind(max);
    }
    for (key, value) in &query.metadata {
        sql.push(" AND EXISTS (SELECT 1 FROM json_each(t.metadata) AS m WHERE m.key = ")
            .bind(key.clone())
            .push(" AND m.value = ")
            .bind(value.clone())
            .push(")");
    }
}

/// One page of `query` (see the module's comment).
pub(crate) fn search_transfers(
    connection: &Connection,
    query: &TransferQuery,
) -> StoreResult<Page<Transfer>> {
    let empty = Page { items: Vec::new(), next_cursor: None };
    let limit = query.limit.clamp(1, kopek_core::limits::PAGE_SIZE_MAX);
    let span = span_of(connection, query)?;
    if span.is_empty() {
        return Ok(empty);
    }
    let (found, scanned_to) = match driver(connection, query, span)? {
        Driver::Table => table_scan(connection, query, span, limit)?,
        Driver::Index(numbers) => index_lookups(connection, query, &numbers, limit)?,
    };
    let mut found = found;
    let next_cursor = if found.len() > limit {
        found.truncate(limit);
        found.last().map(|(_, number)| *number)
    } else {
        // Fewer than a page matched: another page follows only if the scan stopped at its
        // budget, and then it starts after the last candidate read.
        scanned_to
    };
    Ok(Page {
        items: found.into_iter().map(|(transfer, _)| transfer).collect(),
        next_cursor: next_cursor.and_then(|number| u64::try_from(number).ok()),
    })
}

/// Up to `limit + 1` matching rows, with their numbers.
type Found = Vec<(Transfer, i64)>;

/// The rows of `span` in number order, at most `SCAN_ROWS_MAX` of them, in one statement that
/// stops at the page's end. Numbers are given one after another, so the `SCAN_ROWS_MAX`
/// numbers next to the cursor hold at most that many rows. Also the last number read when
/// the budget ended the scan before the span did.
fn table_scan(
    connection: &Connection,
    query: &TransferQuery,
    span: Span,
    limit: usize,
) -> StoreResult<(Found, Option<i64>)> {
    let budget = to_sql_int(SCAN_ROWS_MAX);
    let (low, high, cut) = match query.order {
        SortOrder::Ascending => {
            let high = span.high.min(span.low.saturating_add(budget));
            (span.low, high, (high < span.high).then_some(high - 1))
        }
        SortOrder::Descending => {
            let low = span.low.max(span.high.saturating_sub(budget));
            (low, span.high, (low > span.low).then_some(low))
        }
    };
    let mut sql = Sql::default();
    sql.push(&format!(
        "SELECT {}, t.number FROM transfers AS t WHERE t.number >= ",
        prefixed_transfer_columns()
    ))
    .bind(low)
    .push(" AND t.number < ")
    .bind(high);
    filters(query, &mut sql);
    sql.push(&format!(" ORDER BY t.number {} LIMIT ", direction(query.order)))
        .bind(to_sql_int(limit + 1));
    let found = rows(connection, &sql)?;
    Ok((found, cut))
}

/// Each candidate's row, looked up in order and checked against every filter, until a page
/// and one more match. Also the last candidate when every one was read and the index gave a
/// full budget: more may follow it.
fn index_lookups(
    connection: &Connection,
    query: &TransferQuery,
    numbers: &[i64],
    limit: usize,
) -> StoreResult<(Found, Option<i64>)> {
    let mut sql = Sql::default();
    sql.push(&format!(
        "SELECT {}, t.number FROM transfers AS t WHERE t.number = ",
        prefixed_transfer_columns()
    ))
    .bind(0_i64);
    filters(query, &mut sql);
    let mut statement = connection.prepare_cached(&sql.text).map_err(sql_error)?;
    let mut found = Vec::with_capacity(limit + 1);
    let mut params = sql.params.clone();
    for number in numbers {
        params[0] = Value::Integer(*number);
        let row = statement
            .query_row(rusqlite::params_from_iter(&params), |row| {
                Ok((transfer_from_row(row)?, row.get::<_, i64>(TRANSFER_COLUMN_COUNT)?))
            })
            .optional()
            .map_err(sql_error)?;
        if let Some((transfer, number)) = row {
            found.push((transfer.map_err(StoreError::Corrupt)?, number));
            if found.len() > limit {
                return Ok((found, None));
            }
        }
    }
    let cut = (numbers.len() >= SCAN_ROWS_MAX).then(|| numbers.last().copied()).flatten();
    Ok((found, cut))
}

fn rows(connection: &Connection, sql: &Sql) -> StoreResult<Found> {
    let mut statement = connection.prepare_cached(&sql.text).map_err(sql_error)?;
    let rows = statement
        .query_map(rusqlite::params_from_iter(&sql.params), |row| {
            Ok((transfer_from_row(row)?, row.get::<_, i64>(TRANSFER_COLUMN_COUNT)?))
        })
        .map_err(sql_error)?;
    let mut found = Vec::new();
    for row in rows {
        let (transfer, number) = row.map_err(sql_error)?;
        found.push((transfer.map_err(StoreError::Corrupt)?, number));
    }
    Ok(found)
}

/// `TRANSFER_COLUMNS`, each read from the row `t`.
fn prefixed_transfer_columns() -> &'static str {
    static COLUMNS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    COLUMNS.get_or_init(|| {
        TRANSFER_COLUMNS
            .split(',')
            .map(|column| format!("t.{}", column.trim()))
            .collect::<Vec<_>>()
            .join(", ")
    })
}

/// How many columns `TRANSFER_COLUMNS` names: the row number follows them.
const TRANSFER_COLUMN_COUNT: usize = kopek_store::rows::TRANSFER_COLUMN_COUNT;

#[cfg(test)]
mod tests {
    use super::*;

    /// Commit times that grow unevenly (bursts, plateaus of one batch, long pauses) and rows
    /// numbered with a few gaps: the index finds what a scan of every row finds.
    #[test]
    fn the_first_position_at_a_time_is_the_one_a_scan_finds() {
        let connection = Connection::open_in_memory().expect("open");
        connection
            .execute_batch(
                "CREATE TABLE transfers (number INTEGER PRIMARY KEY, committed_at INTEGER NOT NULL);
                 CREATE INDEX transfers_by_commit_time ON transfers (committed_at);",
            )
            .expect("table");
        let mut rows = Vec::new();
        let mut time = 1_000_i64;
        for number in 1..=5_000_i64 {
            if number % 997 == 0 {
                continue; // a gap in the numbers
            }
            time += match number {
                n if n % 50 != 0 => 0,       // one batch: one commit time
                n if n < 2_000 => 3,         // a burst
                n if n < 2_100 => 1_000_000, // long pauses
                n => n * n,                  // ever slower
            };
            rows.push((number, time));
        }
        for (number, committed) in &rows {
            connection
                .execute("INSERT INTO transfers VALUES (?1, ?2)", [number, committed])
                .expect("insert");
        }
        let span = Span { low: 1, high: 5_001 };
        let mut times: Vec<i64> = rows.iter().map(|(_, committed)| *committed).collect();
        times.extend([0, 999, 1_000, time, time + 1]);
        for at in times.into_iter().flat_map(|t| [t - 1, t, t + 1]) {
            let expected = rows
                .iter()
                .find(|(_, committed)| *committed >= at)
                .map_or(span.high, |(number, _)| *number);
            let found = first_position_at(&connection, Timestamp::from_unix_micros(at), span)
                .expect("search");
            // A gap before the first match answers as that match: nothing lies between.
            let first_at_or_after = rows.iter().map(|(n, _)| *n).find(|n| *n >= found);
            assert_eq!(first_at_or_after.unwrap_or(span.high), expected, "at {at}");
        }
    }
}
