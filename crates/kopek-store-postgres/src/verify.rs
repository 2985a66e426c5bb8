//! `verify` on PostgreSQL: the same checks as the embedded store, as SQL in one repeatable-read
//! snapshot. `SUM` over bigint is numeric here, so no sum can overflow.

use crate::sql_error;
use kopek_store::{StoreResult, VerifyReport};
use sqlx::{PgPool, Row};

/// Each check: a query whose every row is a problem, and how to say it.
const CHECKS: &[(&str, &str)] = &[
    (
        "SELECT a.id, a.posted::text, COALESCE(s.total, 0)::text FROM accounts a LEFT JOIN (SELECT account_id, \
         SUM(CASE direction WHEN 'credit' THEN amount ELSE -amount END) AS total FROM entries GROUP BY account_id) s \
         ON s.account_id = a.id WHERE a.posted <> COALESCE(s.total, 0)",
        "account {0} has posted balance {1} but its entries sum to {2}",
    ),
    (
        "SELECT currency, SUM(posted)::text, '' FROM accounts GROUP BY currency HAVING SUM(posted) <> 0",
        "posted balances in {0} sum to {1}, not 0",
    ),
    (
        "SELECT currency, SUM(CASE direction WHEN 'debit' THEN amount ELSE 0 END)::text, \
         SUM(CASE direction WHEN 'credit' THEN amount ELSE 0 END)::text FROM entries GROUP BY currency \
         HAVING SUM(CASE direction WHEN 'debit' THEN amount ELSE -amount END) <> 0",
        "debits in {0} total {1} but credits total {2}",
    ),
    (
        "SELECT sequence::text, account_id, balance_after::text FROM (SELECT sequence, account_id, balance_after, \
         SUM(CASE direction WHEN 'credit' THEN amount ELSE -amount END) OVER (PARTITION BY account_id ORDER BY sequence) \
         AS running FROM entries) x WHERE balance_after <> running",
        "entry {0} of account {1} says balance {2}, not its running total",
    ),
    (
        "SELECT e.sequence::text, e.currency, a.id FROM entries e JOIN accounts a ON a.id = e.account_id \
         WHERE e.currency <> a.currency OR e.amount <= 0",
        "entry {0} in {1} does not fit account {2}",
    ),
    (
        "SELECT t.id, (SELECT COUNT(*) FROM entries e WHERE e.transfer_id = t.id)::text, t.status FROM transfers t \
         WHERE (t.status = 'posted' AND NOT ((SELECT COUNT(*) FROM entries e WHERE e.transfer_id = t.id) = 2 \
           AND EXISTS (SELECT 1 FROM entries e WHERE e.transfer_id = t.id AND e.direction = 'debit' \
             AND e.account_id = t.debit_account AND e.amount = t.amount AND e.currency = t.currency) \
           AND EXISTS (SELECT 1 FROM entries e WHERE e.transfer_id = t.id AND e.direction = 'credit' \
             AND e.account_id = t.credit_account AND e.amount = t.amount AND e.currency = t.currency))) \
         OR (t.status <> 'posted' AND EXISTS (SELECT 1 FROM entries e WHERE e.transfer_id = t.id))",
        "{2} transfer {0} has {1} entries that are not exactly its debit and credit",
    ),
    (
        "SELECT h.id, h.status, (SELECT COUNT(*) FROM transfers r WHERE r.pending_id = h.id \
         AND r.status <> 'declined')::text FROM transfers h WHERE h.action = 'hold' AND h.status <> 'declined' AND NOT ( \
           (h.status IN ('pending', 'expired') AND h.captured_amount = 0 AND NOT EXISTS (SELECT 1 FROM transfers r \
             WHERE r.pending_id = h.id AND r.status <> 'declined')) \
           OR (h.status = 'captured' AND h.captured_amount <= h.amount AND (SELECT COUNT(*) FROM transfers r \
             WHERE r.pending_id = h.id AND r.status <> 'declined') = 1 AND EXISTS (SELECT 1 FROM transfers r \
             WHERE r.pending_id = h.id AND r.action = 'capture' AND r.status <> 'declined' AND r.amount = h.captured_amount)) \
           OR (h.status = 'voided' AND (SELECT COUNT(*) FROM transfers r WHERE r.pending_id = h.id \
             AND r.status <> 'declined') = 1 AND EXISTS (SELECT 1 FROM transfers r WHERE r.pending_id = h.id \
             AND r.action = 'void' AND r.status <> 'declined' AND r.amount = h.amount)))",
        "hold {0} is {1} but has {2} resolutions that do not match",
    ),
    (
        "SELECT a.id, a.pending_out::text, a.pending_in::text FROM accounts a WHERE a.pending_out <> COALESCE((SELECT \
         SUM(amount) FROM transfers t WHERE t.status = 'pending' AND t.debit_account = a.id), 0) OR a.pending_in <> \
         COALESCE((SELECT SUM(amount) FROM transfers t WHERE t.status = 'pending' AND t.credit_account = a.id), 0)",
        "account {0} holds {1} out / {2} in, not what its pending holds sum to",
    ),
    (
        "SELECT id, (posted - pending_out + overdraft_limit)::text, '' FROM accounts WHERE overdraft_limit IS NOT NULL \
         AND posted::numeric - pending_out + overdraft_limit < 0",
        "account {0} is past its overdraft limit (available {1})",
    ),
    (
        "SELECT a.id, (SELECT COUNT(*) FROM outbox o WHERE o.subject_id = a.id AND o.kind = 'AccountOpened')::text, '' \
         FROM accounts a WHERE (SELECT COUNT(*) FROM outbox o WHERE o.subject_id = a.id AND o.kind = 'AccountOpened') <> 1",
        "account {0} has {1} AccountOpened events, not 1",
    ),
    (
        "SELECT t.id, (SELECT COUNT(*) FROM outbox o WHERE o.subject_id = t.id AND o.kind IN ('TransferPosted', \
         'TransferDeclined', 'HoldPlaced', 'HoldCaptured', 'HoldVoided'))::text, '' FROM transfers t WHERE (SELECT \
         COUNT(*) FROM outbox o WHERE o.subject_id = t.id AND o.kind IN ('TransferPosted', 'TransferDeclined', \
         'HoldPlaced', 'HoldCaptured', 'HoldVoided')) <> 1",
        "transfer {0} has {1} creation events, not 1",
    ),
    (
        "SELECT t.id, n::text, '' FROM (SELECT t.id, t.status, (SELECT COUNT(*) FROM outbox o WHERE o.subject_id = t.id \
         AND o.kind = 'HoldExpired') AS n FROM transfers t) t WHERE (t.status = 'expired') <> (n = 1) OR n > 1",
        "hold {0} has {1} HoldExpired events for its status",
    ),
    (
        "SELECT o.id, (SELECT COUNT(*) FROM outbox e WHERE e.subject_id = o.id AND e.kind = 'OrderCreated')::text, '' \
         FROM orders o WHERE (SELECT COUNT(*) FROM outbox e WHERE e.subject_id = o.id AND e.kind = 'OrderCreated') <> 1",
        "order {0} has {1} OrderCreated events, not 1",
    ),
    (
        "SELECT o.id, o.status, '' FROM orders o WHERE ((o.status = 'PENDING') <> ((SELECT COUNT(*) FROM outbox e \
         WHERE e.subject_id = o.id AND e.kind IN ('OrderPaid', 'OrderFailed')) = 0)) OR (SELECT COUNT(*) FROM outbox e \
         WHERE e.subject_id = o.id AND e.kind IN ('OrderPaid', 'OrderFailed')) > 1 OR (o.status = 'PAID' AND NOT EXISTS \
         (SELECT 1 FROM transfers t WHERE t.id = o.payment_id AND t.status = 'posted' AND t.amount = o.amount))",
        "order {0} ({1}) has settlement events or a payment that do not match it",
    ),
];

pub async fn verify_books(pool: &PgPool) -> StoreResult<VerifyReport> {
    let mut db = pool.begin().await.map_err(sql_error)?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *db)
        .await
        .map_err(sql_error)?;
    let count = |table: &'static str| format!("SELECT COUNT(*) FROM {table}");
    let mut counts = Vec::new();
    for table in ["accounts", "transfers", "entries", "outbox"] {
        let value: i64 =
            sqlx::query_scalar(&count(table)).fetch_one(&mut *db).await.map_err(sql_error)?;
        counts.push(u64::try_from(value).unwrap_or(0));
    }
    let mut report = VerifyReport {
        accounts: counts[0],
        transfers: counts[1],
        entries: counts[2],
        events: counts[3],
        problems: Vec::new(),
    };
    for (query, template) in CHECKS {
        for row in sqlx::query(query).fetch_all(&mut *db).await.map_err(sql_error)? {
            let field = |index: usize| {
                row.try_get::<Option<String>, _>(index).ok().flatten().unwrap_or_default()
            };
            report.problems.push(
                template
                    .replace("{0}", &field(0))
                    .replace("{1}", &field(1))
                    .replace("{2}", &field(2)),
            );
        }
    }
    db.commit().await.map_err(sql_error)?;
    Ok(report)
}
