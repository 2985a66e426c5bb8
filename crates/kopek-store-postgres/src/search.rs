//! Transfer search in SQL (`kopek_store::search` says what it answers). A transfer's position
//! is `transfers.position` (migration 0010), taken under the outbox lock held to commit; the
//! planner picks the index (position, an account's side, the metadata GIN index, the key).

use crate::*;
use kopek_store::search::{SortOrder, TransferQuery};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;

/// A parameter of the search statement, in the order of its `$n`.
enum Param {
    Text(String),
    Integer(i64),
}

#[derive(Default)]
struct Sql {
    text: String,
    params: Vec<Param>,
}

impl Sql {
    fn clause(&mut self, text: &str, param: Param) {
        self.params.push(param);
        self.text.push_str(&text.replace('$', &format!("${}", self.params.len())));
    }

    fn bound(&self) -> Query<'_, Postgres, PgArguments> {
        self.params.iter().fold(sqlx::query(&self.text), |query, param| match param {
            Param::Text(text) => query.bind(text.as_str()),
            Param::Integer(number) => query.bind(*number),
        })
    }
}

pub(crate) async fn search_transfers(
    store: &PostgresStore,
    query: &TransferQuery,
) -> StoreResult<Page<Transfer>> {
    let limit = query.limit.clamp(1, kopek_core::limits::PAGE_SIZE_MAX);
    let mut sql = Sql {
        text: format!("SELECT {TRANSFER_COLUMNS}, position FROM transfers WHERE true"),
        params: Vec::new(),
    };
    sql.clause(" AND tenant = $", Param::Text(query.tenant.to_string()));
    if let Some(cursor) = query.cursor {
        let cursor = i64::try_from(cursor).unwrap_or(i64::MAX);
        match query.order {
            SortOrder::Ascending => sql.clause(" AND position > $", Param::Integer(cursor)),
            SortOrder::Descending => sql.clause(" AND position < $", Param::Integer(cursor)),
        }
    }
    if let Some(account) = &query.account {
        // Two clauses, so each side's index is usable (a bitmap OR of the two).
        sql.clause(" AND (debit_account = $", Param::Text(account.to_string()));
        sql.clause(" OR credit_account = $)", Param::Text(account.to_string()));
    }
    if let Some(key) = &query.idempotency_key {
        sql.clause(" AND idempotency_key = $", Param::Text(key.to_string()));
    }
    for (column, range) in [("committed_at", query.committed), ("effective_at", query.effective)] {
        if let Some(from) = range.from {
            sql.clause(&format!(" AND {column} >= $"), Param::Integer(from.as_unix_micros()));
        }
        if let Some(until) = range.until {
            sql.clause(&format!(" AND {column} < $"), Param::Integer(until.as_unix_micros()));
        }
    }
    if let Some(kind) = query.kind {
        sql.clause(" AND kind = $", Param::Text(kind.as_str().to_owned()));
    }
    if let Some(status) = query.status {
        sql.clause(" AND status = $", Param::Text(status.as_str().to_owned()));
    }
    if let Some(currency) = query.currency {
        sql.clause(" AND currency = $", Param::Text(currency.code().to_owned()));
    }
    if let Some(min) = query.amount_min {
        sql.clause(" AND amount >= $", Param::Integer(min));
    }
    if let Some(max) = query.amount_max {
        sql.clause(" AND amount <= $", Param::Integer(max));
    }
    if !query.metadata.is_empty() {
        let pairs: kopek_core::Metadata = query.metadata.iter().cloned().collect();
        let document = metadata_to_json(&pairs);
        sql.clause(" AND metadata::jsonb @> $::jsonb", Param::Text(document));
    }
    let direction = match query.order {
        SortOrder::Ascending => "ASC",
        SortOrder::Descending => "DESC",
    };
    sql.clause(
        &format!(" ORDER BY position {direction} LIMIT $"),
        Param::Integer(to_i64(limit + 1)),
    );
    let rows = sql.bound().fetch_all(&store.pool).await.map_err(sql_error)?;
    let mut found = rows
        .iter()
        .map(|row| Ok((transfer_from(row)?, row.try_get::<i64, _>("position").map_err(sql_error)?)))
        .collect::<StoreResult<Vec<(Transfer, i64)>>>()?;
    let next_cursor = if found.len() > limit {
        found.truncate(limit);
        found.last().and_then(|(_, position)| u64::try_from(*position).ok())
    } else {
        None
    };
    Ok(Page { items: found.into_iter().map(|(transfer, _)| transfer).collect(), next_cursor })
}
