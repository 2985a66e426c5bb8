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
//! A commit-time range becomes a range of positions first (a binary search on the rows, since
//! `committed_at` grows with `number`); an effective-time range does too at its lower end,
//! because a transfer takes effect at most `EFFECTIVE_AT_AHEAD_SECONDS_MAX` after its commit.

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
            .prepare_cached(
                "INSERT OR IGNORE INTO mentions (account, sequence) \
                 SELECT number, ?2 FROM accounts WHERE id = ?1",
            )
            .map_err(sql_error)?;
        for account in [&transfer.debit_account, &transfer.credit_account].into_iter().flatten() {
            insert.execute(rusqlite::params![account.as_str(), number * 2]).map_err(sql_error)?;
        }
    }
    Ok(())
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
/// none did). Commit times grow with positions, so a binary search over the rows finds it.
fn first_position_at(connection: &Connection, at: Timestamp, span: Span) -> StoreResult<i64> {
    let mut probe = connection
        .prepare_cached(
            "SELECT number, committed_at FROM transfers WHERE number >= ?1 ORDER BY number LIMIT 1",
        )
        .map_err(sql_error)?;
    let (mut low, mut high) = (span.low, span.high);
    while low < high {
        let middle = low + (high - low) / 2;
        let found: Option<(i64, i64)> = probe
            .query_row([middle], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()
            .map_err(sql_error)?;
        match found {
            Some((number, committed)) if committed < at.as_unix_micros() => low = number + 1,
            _ => high = middle,
        }
    }
    Ok(low)
}

fn span_of(connection: &Connection, query: &TransferQuery) -> StoreResult<Span> {
    let (first, last): (Option<i64>, Option<i64>) = connection
        .prepare_cached("SELECT min(number), max(number) FROM transfers")
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

/// Appends the select of at most `SCAN_ROWS_MAX` candidate positions, as column `n`, in the
/// query's order. `None` when a named account does not exist: nothing can match.
fn candidates(
    connection: &Connection,
    query: &TransferQuery,
    span: Span,
    sql: &mut Sql,
) -> StoreResult<Option<()>> {
    let direction = match query.order {
        SortOrder::Ascending => "ASC",
        SortOrder::Descending => "DESC",
    };
    let budget = to_sql_int(SCAN_ROWS_MAX);
    if let Some(key) = &query.idempotency_key {
        sql.push("SELECT number AS n FROM transfers WHERE key_hash = ")
            .bind(key_hash_column(query.tenant.as_str(), key.as_str()))
            .push(" AND number >= ")
            .bind(span.low)
            .push(" AND number < ")
            .bind(span.high)
            .push(&format!(" ORDER BY number {direction} LIMIT "))
            .bind(budget);
    } else if let Some((key, value)) = query.metadata.first() {
        sql.push("SELECT number AS n FROM transfer_tags WHERE tag = ")
            .bind(metadata_tag(query.tenant.as_str(), key, value))
            .push(" AND number >= ")
            .bind(span.low)
            .push(" AND number < ")
            .bind(span.high)
            .push(&format!(" ORDER BY number {direction} LIMIT "))
            .bind(budget);
    } else if let Some(account) = &query.account {
        let number: Option<i64> = connection
            .prepare_cached("SELECT number FROM accounts WHERE id = ?1")
            .and_then(|mut statement| {
                statement.query_row([account.as_str()], |row| row.get(0)).optional()
            })
            .map_err(sql_error)?;
        let Some(number) = number else { return Ok(None) };
        // Both arms are read in `sequence` order (a mention's sequence is its number times two,
        // a posting's that plus its side), so SQLite merges them and stops at the limit.
        sql.push("SELECT sequence / 2 AS n FROM (SELECT sequence FROM postings WHERE account = ")
            .bind(number)
            .push(" AND sequence >= ")
            .bind(span.low.saturating_mul(2))
            .push(" AND sequence < ")
            .bind(span.high.saturating_mul(2))
            .push(" UNION ALL SELECT sequence FROM mentions WHERE account = ")
            .bind(number)
            .push(" AND sequence >= ")
            .bind(span.low.saturating_mul(2))
            .push(" AND sequence < ")
            .bind(span.high.saturating_mul(2))
            .push(&format!(" ORDER BY sequence {direction} LIMIT "))
            .bind(budget)
            .push(")");
    } else {
        sql.push("SELECT number AS n FROM transfers WHERE number >= ")
            .bind(span.low)
            .push(" AND number < ")
            .bind(span.high)
            .push(&format!(" ORDER BY number {direction} LIMIT "))
            .bind(budget);
    }
    Ok(Some(()))
}

/// Appends every filter, checked on the candidate's row `t`.
fn filters(query: &TransferQuery, sql: &mut Sql) {
    sql.push(" WHERE t.tenant = ").bind(query.tenant.to_string());
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
    let mut scan = Sql::default();
    if candidates(connection, query, span, &mut scan)?.is_none() {
        return Ok(empty);
    }
    let direction = match query.order {
        SortOrder::Ascending => "ASC",
        SortOrder::Descending => "DESC",
    };
    let mut sql = Sql { text: format!("WITH c AS ({}) ", scan.text), params: scan.params.clone() };
    sql.push(&format!(
        "SELECT {}, t.number FROM c JOIN transfers AS t ON t.number = c.n",
        prefixed_transfer_columns()
    ));
    filters(query, &mut sql);
    // One extra row tells whether another page follows.
    sql.push(&format!(" ORDER BY c.n {direction} LIMIT ")).bind(to_sql_int(limit + 1));
    let mut statement = connection.prepare_cached(&sql.text).map_err(sql_error)?;
    let rows = statement
        .query_map(rusqlite::params_from_iter(&sql.params), |row| {
            let number: i64 = row.get(TRANSFER_COLUMN_COUNT)?;
            Ok((transfer_from_row(row)?, number))
        })
        .map_err(sql_error)?;
    let mut found = Vec::with_capacity(limit + 1);
    for row in rows {
        let (transfer, number) = row.map_err(sql_error)?;
        found.push((transfer.map_err(StoreError::Corrupt)?, number));
    }
    let next_cursor = if found.len() > limit {
        found.truncate(limit);
        found.last().map(|(_, number)| *number)
    } else {
        // Fewer than a page matched: another page follows only if the scan stopped at its
        // budget, and then it starts after the last candidate read.
        let mut statement = connection
            .prepare_cached(&format!(
                "WITH c AS ({}) SELECT count(*), {} FROM c",
                scan.text,
                match query.order {
                    SortOrder::Ascending => "max(n)",
                    SortOrder::Descending => "min(n)",
                }
            ))
            .map_err(sql_error)?;
        let (read, last): (i64, Option<i64>) = statement
            .query_row(rusqlite::params_from_iter(&scan.params), |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .map_err(sql_error)?;
        if read >= to_sql_int(SCAN_ROWS_MAX) { last } else { None }
    };
    Ok(Page {
        items: found.into_iter().map(|(transfer, _)| transfer).collect(),
        next_cursor: next_cursor.and_then(|number| u64::try_from(number).ok()),
    })
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
