//! `Store` for `SqliteStore`: the storage port, every read and write.

use crate::*;

#[async_trait]
impl Store for SqliteStore {
    async fn write_batch(&self, keys: Keys, decide: Decide) -> StoreResult<Committed> {
        self.write(move |connection| {
            let db_transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql_error)?;
            let state = load_state(&db_transaction, &keys)?;
            let outcome = decide(state).map_err(StoreError::Invariant)?;
            write_outcome(&db_transaction, &outcome, |_| true)?;
            db_transaction.commit().map_err(sql_error)?;
            Ok(Committed::new(outcome))
        })
        .await
    }

    async fn account(&self, id: &AccountId) -> StoreResult<Option<Account>> {
        let id = id.to_string();
        self.read(move |connection| {
            let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1");
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            let row = statement.query_row([id], account_from_row).optional().map_err(sql_error)?;
            row.map(|decoded| decoded.map_err(StoreError::Corrupt)).transpose()
        })
        .await
    }

    async fn list_accounts(
        &self,
        tenant: Option<&str>,
        owner: Option<&str>,
        after: Option<&AccountId>,
        limit: usize,
    ) -> StoreResult<Vec<Account>> {
        let tenant = tenant.map(str::to_owned);
        let owner = owner.map(str::to_owned);
        let after = after.map(ToString::to_string).unwrap_or_default();
        let limit = to_sql_int(limit.min(kopek_core::limits::PAGE_SIZE_MAX));
        self.read(move |connection| {
            let sql = format!(
                "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE (?1 IS NULL OR owner = ?1) AND id > ?2 \
                 AND (?4 IS NULL OR tenant = ?4) ORDER BY id LIMIT ?3"
            );
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            let rows = statement
                .query_map(rusqlite::params![owner, after, limit, tenant], account_from_row)
                .map_err(sql_error)?;
            rows.map(decoded).collect()
        })
        .await
    }

    async fn transfer(&self, id: TransferId) -> StoreResult<Option<Transfer>> {
        self.read(move |connection| {
            let sql = format!("SELECT {TRANSFER_COLUMNS} FROM transfers WHERE id = ?1");
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            let row = statement
                .query_row([id.to_string()], transfer_from_row)
                .optional()
                .map_err(sql_error)?;
            row.map(|decoded| decoded.map_err(StoreError::Corrupt)).transpose()
        })
        .await
    }

    async fn transfer_by_key(
        &self,
        tenant: &Tenant,
        key: &IdempotencyKey,
    ) -> StoreResult<Option<Transfer>> {
        let (tenant, key) = (tenant.to_string(), key.to_string());
        self.read(move |connection| transfer_by_key_in(connection, &tenant, &key)).await
    }

    async fn backup(&self) -> StoreResult<kopek_store::TakenBackup> {
        crate::backup::take_beside(self.path()).await
    }

    async fn search_transfers(&self, query: &TransferQuery) -> StoreResult<Page<Transfer>> {
        let query = query.clone();
        self.read(move |connection| crate::search::search_transfers(connection, &query)).await
    }

    async fn entries(
        &self,
        account: &AccountId,
        after: Option<u64>,
        limit: usize,
    ) -> StoreResult<Page<StoredEntry>> {
        let account = account.to_string();
        let after = i64::try_from(after.unwrap_or(0)).unwrap_or(i64::MAX);
        let limit = limit.clamp(1, kopek_core::limits::PAGE_SIZE_MAX);
        self.read(move |connection| {
            let sql = format!(
                "SELECT {ENTRY_COLUMNS} FROM entries WHERE account_id = ?1 AND sequence > ?2 ORDER BY sequence LIMIT ?3"
            );
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            // One extra row tells whether another page follows.
            let rows = statement
                .query_map(rusqlite::params![account, after, to_sql_int(limit + 1)], entry_from_row)
                .map_err(sql_error)?;
            let mut items = rows.map(decoded).collect::<StoreResult<Vec<_>>>()?;
            let next_cursor = if items.len() > limit {
                items.truncate(limit);
                items.last().map(|entry| entry.sequence)
            } else {
                None
            };
            Ok(Page { items, next_cursor })
        })
        .await
    }

    async fn transfer_entries(&self, ids: &[TransferId]) -> StoreResult<Vec<StoredEntry>> {
        let ids: Vec<String> = ids.iter().map(TransferId::to_string).collect();
        self.read(move |connection| {
            // A transfer row carries both its entries (migration 0013): the view `entries`
            // would find them only through `postings`, which is keyed by account.
            let mut statement = connection
                .prepare_cached(
                    "SELECT number * 2, debit_account, id, 'debit', amount, currency, \
                            debit_balance_after, effective_at, committed_at \
                     FROM transfers WHERE id = ?1 AND debit_balance_after IS NOT NULL \
                     UNION ALL \
                     SELECT number * 2 + 1, credit_account, id, 'credit', amount, currency, \
                            credit_balance_after, effective_at, committed_at \
                     FROM transfers WHERE id = ?1 AND credit_balance_after IS NOT NULL",
                )
                .map_err(sql_error)?;
            let mut entries = Vec::with_capacity(ids.len() * 2);
            for id in &ids {
                let rows = statement.query_map([id], entry_from_row).map_err(sql_error)?;
                for row in rows {
                    entries.push(decoded(row)?);
                }
            }
            entries.sort_by_key(|entry| entry.sequence);
            Ok(entries)
        })
        .await
    }

    async fn balance_before(
        &self,
        account: &AccountId,
        before: Timestamp,
    ) -> StoreResult<Option<i64>> {
        let account = account.to_string();
        self.read(move |connection| {
            let exists = connection
                .prepare_cached("SELECT 1 FROM accounts WHERE id = ?1")
                .and_then(|mut statement| statement.query_row([&account], |_| Ok(())).optional())
                .map_err(sql_error)?;
            if exists.is_none() {
                return Ok(None);
            }
            // The newest balance, less what took effect at or after `before`. An entry takes
            // effect at most `EFFECTIVE_AT_AHEAD_SECONDS_MAX` after its commit, and commit
            // times only grow with the sequence: the walk back stops at the first entry
            // committed before `before` less that bound.
            let before = before.as_unix_micros();
            let committed_since = before
                .saturating_sub(kopek_core::limits::EFFECTIVE_AT_AHEAD_SECONDS_MAX * 1_000_000);
            let mut statement = connection
                .prepare_cached(
                    "SELECT direction, amount, balance_after, effective_at, committed_at \
                     FROM entries WHERE account_id = ?1 ORDER BY sequence DESC",
                )
                .map_err(sql_error)?;
            let mut rows = statement.query([&account]).map_err(sql_error)?;
            let mut balance: Option<i128> = None;
            let mut later: i128 = 0;
            while let Some(row) = rows.next().map_err(sql_error)? {
                let balance_after: i64 = row.get(2).map_err(sql_error)?;
                balance.get_or_insert(i128::from(balance_after));
                let committed_at: i64 = row.get(4).map_err(sql_error)?;
                if committed_at < committed_since {
                    break;
                }
                let effective_at: i64 = row.get(3).map_err(sql_error)?;
                if effective_at >= before {
                    let direction: String = row.get(0).map_err(sql_error)?;
                    let amount = i128::from(row.get::<_, i64>(1).map_err(sql_error)?);
                    later += if direction == "credit" { amount } else { -amount };
                }
            }
            let sum = balance.unwrap_or(0) - later;
            i64::try_from(sum).map(Some).map_err(|_| {
                StoreError::Corrupt(format!(
                    "the balance of {account} before a time is out of range"
                ))
            })
        })
        .await
    }

    async fn holds_due(&self, now: Timestamp, limit: usize) -> StoreResult<Vec<TransferId>> {
        self.read(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT id FROM transfers WHERE status = 'pending' AND expires_at <= ?1 ORDER BY expires_at LIMIT ?2",
                )
                .map_err(sql_error)?;
            let rows = statement
                .query_map(rusqlite::params![now.as_unix_micros(), to_sql_int(limit)], |row| row.get::<_, String>(0))
                .map_err(sql_error)?;
            rows.map(|row| {
                let text = row.map_err(sql_error)?;
                TransferId::parse(&text).map_err(|rejection| StoreError::Corrupt(rejection.message))
            })
            .collect()
        })
        .await
    }

    async fn next_hold_expiry(&self) -> StoreResult<Option<Timestamp>> {
        self.read(|connection| {
            let micros: Option<i64> = connection
                .query_row(
                    "SELECT MIN(expires_at) FROM transfers WHERE status = 'pending'",
                    [],
                    |row| row.get(0),
                )
                .map_err(sql_error)?;
            Ok(micros.map(Timestamp::from_unix_micros))
        })
        .await
    }

    async fn events_after(
        &self,
        tenant: Option<&str>,
        sequence: u64,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        let after = i64::try_from(sequence).unwrap_or(i64::MAX);
        let tenant = tenant.map(str::to_owned);
        self.read(move |connection| {
            // One snapshot for both tables: two statements outside a transaction could see
            // two commits apart, and a page would skip an outbox event committed between them.
            let snapshot = connection.unchecked_transaction().map_err(sql_error)?;
            // Two statements per table rather than one with `?3 IS NULL OR`: each keeps its
            // own index (the sequence for the feed, tenant and sequence for one tenant's page).
            let filter = if tenant.is_some() { "tenant = ?3 AND" } else { "?3 IS NULL AND" };
            // The page ends at the `limit`-th sequence of the two tables together, found from
            // their indexes alone; only the events it keeps are then read and rendered.
            let sequences = |sql: &str| -> StoreResult<Vec<u64>> {
                let mut statement = snapshot.prepare_cached(sql).map_err(sql_error)?;
                let rows = statement
                    .query_map(rusqlite::params![after, to_sql_int(limit), tenant], |row| {
                        row.get::<_, i64>(0)
                    })
                    .map_err(sql_error)?;
                rows.map(|row| Ok(u64::try_from(row.map_err(sql_error)?).unwrap_or(0))).collect()
            };
            let stored = sequences(&format!(
                "SELECT sequence FROM outbox WHERE {filter} sequence > ?1 ORDER BY sequence LIMIT ?2"
            ))?;
            let carried = sequences(&format!(
                "SELECT event_sequence FROM transfers WHERE {filter} event_sequence > ?1 \
                 ORDER BY event_sequence LIMIT ?2"
            ))?;
            let Some(&last) = merged(stored, carried, limit, |sequence| *sequence).last() else {
                return Ok(Vec::new());
            };
            let parameters = rusqlite::params![after, i64::try_from(last).unwrap_or(i64::MAX), tenant];
            events_in_both_tables(
                &snapshot,
                &format!("{filter} sequence > ?1 AND sequence <= ?2 ORDER BY sequence"),
                &format!(
                    "{filter} event_sequence > ?1 AND event_sequence <= ?2 ORDER BY event_sequence"
                ),
                parameters,
                limit,
            )
        })
        .await
    }

    async fn events_of(
        &self,
        tenant: &str,
        subject: &str,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        let (tenant, subject) = (tenant.to_owned(), subject.to_owned());
        self.read(move |connection| {
            let snapshot = connection.unchecked_transaction().map_err(sql_error)?;
            // A posted transfer's event is carried by its row, found by the transfer's id.
            events_in_both_tables(
                &snapshot,
                "subject_id = ?1 AND tenant = ?2 ORDER BY sequence LIMIT ?3",
                "id = ?1 AND tenant = ?2 AND event_sequence IS NOT NULL \
                 ORDER BY event_sequence LIMIT ?3",
                rusqlite::params![subject, tenant, to_sql_int(limit)],
                limit,
            )
        })
        .await
    }

    async fn last_event_sequence(&self) -> StoreResult<u64> {
        self.read(|connection| Ok(u64::try_from(last_event_sequence_in(connection)?).unwrap_or(0)))
            .await
    }

    async fn watermark(&self) -> StoreResult<Watermark> {
        self.read(|connection| {
            // Every change has its event, written in commit order with ids from the one
            // generator: the last event's time and id (in the outbox or on the transfer row
            // that carries it) are the newest of theirs. Transfers are asked too (their ids
            // come from the same generator, at the edges) through their primary key; no part
            // of this scans a table.
            let micros: Option<i64> = connection
                .query_row(
                    &format!(
                        "SELECT MAX(t) FROM (SELECT at AS t FROM outbox WHERE sequence = (SELECT MAX(sequence) FROM outbox) \
                         UNION ALL SELECT MAX(updated_at) FROM accounts \
                         UNION ALL SELECT * FROM (SELECT committed_at {LAST_CARRIED}))"
                    ),
                    [],
                    |row| row.get(0),
                )
                .map_err(sql_error)?;
            let id: Option<String> = connection
                .query_row(
                    &format!(
                        "SELECT MAX(i) FROM (SELECT MAX(id) AS i FROM transfers \
                         UNION ALL SELECT id FROM outbox WHERE sequence = (SELECT MAX(sequence) FROM outbox) \
                         UNION ALL SELECT * FROM (SELECT event_id {LAST_CARRIED}))"
                    ),
                    [],
                    |row| row.get(0),
                )
                .map_err(sql_error)?;
            let largest_id = id
                .map(|text| Ulid::parse(&text).map_err(|rejection| StoreError::Corrupt(rejection.message)))
                .transpose()?;
            Ok(Watermark { committed_at: micros.map(Timestamp::from_unix_micros), largest_id })
        })
        .await
    }

    async fn user(&self, id: &UserId) -> StoreResult<Option<User>> {
        let id = id.to_string();
        self.read(move |connection| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1");
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            let row = statement.query_row([id], user_from_row).optional().map_err(sql_error)?;
            row.map(|decoded| decoded.map_err(StoreError::Corrupt)).transpose()
        })
        .await
    }

    async fn order(&self, id: &OrderId) -> StoreResult<Option<Order>> {
        let id = id.to_string();
        self.read(move |connection| {
            let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?1");
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            let row = statement.query_row([id], order_from_row).optional().map_err(sql_error)?;
            row.map(|decoded| decoded.map_err(StoreError::Corrupt)).transpose()
        })
        .await
    }

    async fn orders_of_user(&self, user: &UserId, limit: usize) -> StoreResult<Vec<Order>> {
        let user = user.to_string();
        let limit = to_sql_int(limit.min(kopek_core::limits::PAGE_SIZE_MAX));
        self.read(move |connection| {
            let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = ?1 ORDER BY created_at, id LIMIT ?2");
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            let rows = statement.query_map(rusqlite::params![user, limit], order_from_row).map_err(sql_error)?;
            rows.map(decoded).collect()
        })
        .await
    }

    async fn pending_orders(&self, limit: usize) -> StoreResult<Vec<Order>> {
        let limit = to_sql_int(limit);
        self.read(move |connection| {
            let sql =
                format!("SELECT {ORDER_COLUMNS} FROM orders WHERE status = 'PENDING' ORDER BY created_at LIMIT ?1");
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            let rows = statement.query_map([limit], order_from_row).map_err(sql_error)?;
            rows.map(decoded).collect()
        })
        .await
    }

    async fn verify(&self) -> StoreResult<VerifyReport> {
        self.read(verify::verify_books).await
    }

    async fn relay_claim(
        &self,
        sink: &str,
        holder: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> StoreResult<Option<u64>> {
        let (sink, holder) = (sink.to_owned(), holder.to_owned());
        self.write(move |connection| {
            let sequence: Option<i64> = connection
                .query_row(
                    "INSERT INTO relay_cursors (sink, sequence, holder, lease_until) VALUES (?1, 0, ?2, ?4) \
                     ON CONFLICT (sink) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until \
                     WHERE relay_cursors.holder = excluded.holder OR relay_cursors.lease_until < ?3 \
                     RETURNING sequence",
                    rusqlite::params![sink, holder, now.as_unix_micros(), until.as_unix_micros()],
                    |row| row.get(0),
                )
                .optional()
                .map_err(sql_error)?;
            Ok(sequence.map(|sequence| u64::try_from(sequence).unwrap_or(0)))
        })
        .await
    }

    async fn relay_advance(
        &self,
        sink: &str,
        holder: &str,
        sequence: u64,
        until: Timestamp,
    ) -> StoreResult<bool> {
        let (sink, holder) = (sink.to_owned(), holder.to_owned());
        let sequence = i64::try_from(sequence).unwrap_or(i64::MAX);
        self.write(move |connection| {
            let changed = connection
                .execute(
                    "UPDATE relay_cursors SET sequence = MAX(sequence, ?3), lease_until = ?4 \
                     WHERE sink = ?1 AND holder = ?2",
                    rusqlite::params![sink, holder, sequence, until.as_unix_micros()],
                )
                .map_err(sql_error)?;
            Ok(changed == 1)
        })
        .await
    }

    async fn inbox_contains(&self, consumer: &str, event_id: &str) -> StoreResult<bool> {
        let (consumer, event_id) = (consumer.to_owned(), event_id.to_owned());
        self.read(move |connection| {
            let mut statement = connection
                .prepare_cached("SELECT 1 FROM inbox WHERE consumer = ?1 AND event_id = ?2")
                .map_err(sql_error)?;
            statement.exists([consumer, event_id]).map_err(sql_error)
        })
        .await
    }

    async fn consume(
        &self,
        consumer: &str,
        items: Vec<Consumed>,
        now: Timestamp,
    ) -> StoreResult<usize> {
        let consumer = consumer.to_owned();
        self.write(move |connection| {
            let db_transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql_error)?;
            let mut new = 0;
            for item in &items {
                let inserted = db_transaction
                    .prepare_cached(
                        "INSERT OR IGNORE INTO inbox (consumer, event_id, processed_at) VALUES (?1, ?2, ?3)",
                    )
                    .and_then(|mut statement| {
                        statement.execute(rusqlite::params![
                            consumer,
                            item.event_id,
                            now.as_unix_micros()
                        ])
                    })
                    .map_err(sql_error)?;
                if inserted == 0 {
                    continue;
                }
                new += 1;
                for effect in &item.effects {
                    apply_effect(&db_transaction, effect, now)?;
                }
            }
            db_transaction.commit().map_err(sql_error)?;
            Ok(new)
        })
        .await
    }

    async fn spending(&self, tenant: &str, user: &str) -> StoreResult<Vec<SpendingTotal>> {
        let (tenant, user) = (tenant.to_owned(), user.to_owned());
        self.read(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT category, currency, total_minor, transfers, updated_at FROM spending \
                     WHERE tenant = ?1 AND user_id = ?2 ORDER BY category, currency",
                )
                .map_err(sql_error)?;
            let rows = statement
                .query_map([tenant, user], |row| {
                    Ok(SpendingTotal {
                        category: row.get(0)?,
                        currency: row.get(1)?,
                        total_minor: row.get(2)?,
                        transfers: u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
                        updated_at: Timestamp::from_unix_micros(row.get(4)?),
                    })
                })
                .map_err(sql_error)?;
            rows.map(|row| row.map_err(sql_error)).collect()
        })
        .await
    }

    async fn create_webhook(&self, webhook: &Webhook) -> StoreResult<()> {
        let webhook = webhook.clone();
        self.write(move |connection| {
            connection
                .execute(
                    "INSERT INTO webhook_subscriptions (id, tenant, url, event_types, secret, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    rusqlite::params![
                        webhook.id,
                        webhook.tenant,
                        webhook.url,
                        webhook.event_types.join(","),
                        webhook.secret,
                        webhook.created_at.as_unix_micros()
                    ],
                )
                // The id is taken: the caller tells a replay from a reused key.
                .map_err(taken(format!("webhook {}", webhook.id)))?;
            Ok(())
        })
        .await
    }

    async fn webhooks(&self, tenant: Option<&str>) -> StoreResult<Vec<Webhook>> {
        let tenant = tenant.map(str::to_owned);
        self.read(move |connection| {
            let sql = format!(
                "SELECT {WEBHOOK_COLUMNS} FROM webhook_subscriptions \
                 WHERE deleted_at IS NULL AND (?1 IS NULL OR tenant = ?1) ORDER BY created_at, id"
            );
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            let rows = statement.query_map([tenant], webhook_from_row).map_err(sql_error)?;
            rows.map(|row| row.map_err(sql_error)).collect()
        })
        .await
    }

    async fn delete_webhook(&self, tenant: &str, id: &str, now: Timestamp) -> StoreResult<bool> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.write(move |connection| {
            let changed = connection
                .execute(
                    "UPDATE webhook_subscriptions SET deleted_at = ?3 \
                     WHERE tenant = ?1 AND id = ?2 AND deleted_at IS NULL",
                    rusqlite::params![tenant, id, now.as_unix_micros()],
                )
                .map_err(sql_error)?;
            Ok(changed == 1)
        })
        .await
    }

    async fn claim_deliveries(
        &self,
        now: Timestamp,
        until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        let limit = to_sql_int(limit);
        self.write(move |connection| {
            let db_transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql_error)?;
            let ids: Vec<String> = {
                let mut statement = db_transaction
                    .prepare_cached(
                        "UPDATE webhook_deliveries SET claimed_until = ?2 WHERE id IN (\
                         SELECT d.id FROM webhook_deliveries d JOIN webhook_subscriptions s ON s.id = d.subscription_id \
                         WHERE d.status = 'pending' AND d.next_attempt_at <= ?1 AND d.claimed_until <= ?1 \
                         AND s.deleted_at IS NULL ORDER BY d.next_attempt_at LIMIT ?3) RETURNING id",
                    )
                    .map_err(sql_error)?;
                let rows = statement
                    .query_map(
                        rusqlite::params![now.as_unix_micros(), until.as_unix_micros(), limit],
                        |row| row.get(0),
                    )
                    .map_err(sql_error)?;
                rows.collect::<rusqlite::Result<_>>().map_err(sql_error)?
            };
            let mut deliveries = Vec::with_capacity(ids.len());
            {
                let sql = format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = ?1");
                let mut statement = db_transaction.prepare_cached(&sql).map_err(sql_error)?;
                for id in ids {
                    let delivery =
                        statement.query_row([id], delivery_from_row).map_err(sql_error)?;
                    deliveries.push(delivery.map_err(StoreError::Corrupt)?);
                }
            }
            db_transaction.commit().map_err(sql_error)?;
            deliveries.sort_by_key(|delivery| delivery.next_attempt_at);
            Ok(deliveries)
        })
        .await
    }

    async fn record_attempt(&self, result: &AttemptResult) -> StoreResult<bool> {
        let result = result.clone();
        self.write(move |connection| {
            let db_transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql_error)?;
            let attempt = &result.attempt;
            let changed = db_transaction
                .execute(
                    "UPDATE webhook_deliveries SET status = ?2, attempts = ?3, next_attempt_at = ?4, \
                     claimed_until = 0, last_status_code = ?5, last_error = ?6, updated_at = ?7 \
                     WHERE id = ?1 AND claimed_until = ?8",
                    rusqlite::params![
                        attempt.delivery_id,
                        result.status.as_str(),
                        i64::from(attempt.attempt),
                        result.next_attempt_at.as_unix_micros(),
                        attempt.status_code.map(i64::from),
                        attempt.error,
                        attempt.at.as_unix_micros(),
                        result.claimed_until.as_unix_micros()
                    ],
                )
                .map_err(sql_error)?;
            if changed == 0 {
                return Ok(false);
            }
            db_transaction
                .execute(
                    "INSERT OR REPLACE INTO webhook_attempts (delivery_id, attempt, at, status_code, error, duration_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    rusqlite::params![
                        attempt.delivery_id,
                        i64::from(attempt.attempt),
                        attempt.at.as_unix_micros(),
                        attempt.status_code.map(i64::from),
                        attempt.error,
                        i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX)
                    ],
                )
                .map_err(sql_error)?;
            db_transaction.commit().map_err(sql_error)?;
            Ok(true)
        })
        .await
    }

    async fn deliveries(&self, subscription_id: &str, limit: usize) -> StoreResult<Vec<Delivery>> {
        let subscription_id = subscription_id.to_owned();
        let limit = to_sql_int(limit.min(kopek_core::limits::PAGE_SIZE_MAX));
        self.read(move |connection| {
            let sql = format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE subscription_id = ?1 \
                 ORDER BY created_at DESC, id DESC LIMIT ?2"
            );
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            let rows = statement
                .query_map(rusqlite::params![subscription_id, limit], delivery_from_row)
                .map_err(sql_error)?;
            rows.map(|row| row.map_err(sql_error)?.map_err(StoreError::Corrupt)).collect()
        })
        .await
    }

    async fn delivery(&self, id: &str) -> StoreResult<Option<Delivery>> {
        let id = id.to_owned();
        self.read(move |connection| {
            let sql = format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = ?1");
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            let row = statement.query_row([id], delivery_from_row).optional().map_err(sql_error)?;
            row.map(|decoded| decoded.map_err(StoreError::Corrupt)).transpose()
        })
        .await
    }

    async fn delivery_attempts(&self, delivery_id: &str) -> StoreResult<Vec<Attempt>> {
        let delivery_id = delivery_id.to_owned();
        self.read(move |connection| {
            let sql = format!(
                "SELECT {ATTEMPT_COLUMNS} FROM webhook_attempts WHERE delivery_id = ?1 ORDER BY attempt"
            );
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            let rows = statement.query_map([delivery_id], attempt_from_row).map_err(sql_error)?;
            rows.map(|row| row.map_err(sql_error)).collect()
        })
        .await
    }

    async fn redeliver(
        &self,
        subscription_id: &str,
        delivery_id: &str,
        max_attempts: u32,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let (subscription_id, delivery_id) = (subscription_id.to_owned(), delivery_id.to_owned());
        self.write(move |connection| {
            let changed = connection
                .execute(
                    "UPDATE webhook_deliveries SET status = 'pending', dead_after = attempts + ?3, \
                     next_attempt_at = ?4, claimed_until = 0, updated_at = ?4 \
                     WHERE id = ?2 AND subscription_id = ?1",
                    rusqlite::params![
                        subscription_id,
                        delivery_id,
                        i64::from(max_attempts),
                        now.as_unix_micros()
                    ],
                )
                .map_err(sql_error)?;
            Ok(changed == 1)
        })
        .await
    }

    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        let key = key.clone();
        self.write(move |connection| {
            connection
                .execute(
                    "INSERT INTO api_keys (id, tenant, scope, user_id, name, secret_hash, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    rusqlite::params![
                        key.id,
                        key.tenant,
                        key.scope,
                        key.user_id,
                        key.name,
                        key.secret_hash,
                        key.created_at.as_unix_micros()
                    ],
                )
                .map_err(taken(format!("API key {}", key.id)))?;
            Ok(())
        })
        .await
    }

    async fn api_key(&self, id: &str) -> StoreResult<Option<ApiKey>> {
        let id = id.to_owned();
        self.read(move |connection| {
            let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = ?1");
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            statement.query_row([id], api_key_from_row).optional().map_err(sql_error)
        })
        .await
    }

    async fn api_keys(&self, tenant: Option<&str>) -> StoreResult<Vec<ApiKey>> {
        let tenant = tenant.map(str::to_owned);
        self.read(move |connection| {
            let sql = format!(
                "SELECT {API_KEY_COLUMNS} FROM api_keys \
                 WHERE (?1 IS NULL OR tenant = ?1) ORDER BY created_at, id"
            );
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            let rows = statement.query_map([tenant], api_key_from_row).map_err(sql_error)?;
            rows.map(|row| row.map_err(sql_error)).collect()
        })
        .await
    }

    async fn revoke_api_key(&self, id: &str, now: Timestamp) -> StoreResult<bool> {
        let id = id.to_owned();
        self.write(move |connection| {
            let changed = connection
                .execute(
                    "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                    rusqlite::params![id, now.as_unix_micros()],
                )
                .map_err(sql_error)?;
            Ok(changed == 1)
        })
        .await
    }

    async fn fx_rates(&self, tenant: &Tenant, at: Timestamp) -> StoreResult<Vec<FxRate>> {
        let tenant = tenant.to_string();
        self.read(move |connection| {
            let sql = format!(
                "SELECT {RATE_COLUMNS} FROM fx_rates r WHERE tenant = ?1 AND valid_from = \
                 (SELECT MAX(valid_from) FROM fx_rates WHERE tenant = r.tenant AND base = r.base \
                 AND quote = r.quote AND valid_from <= ?2) ORDER BY base, quote"
            );
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            let rows = statement
                .query_map(rusqlite::params![tenant, at.as_unix_micros()], rate_from_row)
                .map_err(sql_error)?;
            rows.map(decoded).collect()
        })
        .await
    }

    async fn quote(&self, id: QuoteId) -> StoreResult<Option<Quote>> {
        self.read(move |connection| {
            let sql = format!("SELECT {QUOTE_COLUMNS} FROM fx_quotes WHERE id = ?1");
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            let row = statement
                .query_row([id.to_string()], quote_from_row)
                .optional()
                .map_err(sql_error)?;
            row.map(|decoded| decoded.map_err(StoreError::Corrupt)).transpose()
        })
        .await
    }

    async fn fx_accounts(&self, tenant: &Tenant) -> StoreResult<Vec<Account>> {
        let (prefix, tenant) = (tenant.key_prefix(), tenant.to_string());
        self.read(move |connection| {
            // Names start after the tenant's key prefix (?2).
            let sql = format!(
                "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE tenant = ?1 \
                 AND (substr(id, length(?2) + 1, 3) = 'fx:' \
                 OR substr(id, length(?2) + 1, 11) = 'fx-revenue:') ORDER BY id"
            );
            let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
            let rows =
                statement.query_map([tenant, prefix], account_from_row).map_err(sql_error)?;
            rows.map(decoded).collect()
        })
        .await
    }

    async fn fx_revenue(
        &self,
        tenant: &Tenant,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<Vec<FxRevenue>> {
        let (prefix, tenant) = (tenant.key_prefix(), tenant.to_string());
        self.read(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT e.currency, SUM(CASE WHEN e.direction = 'credit' THEN e.amount ELSE -e.amount END), \
                     COUNT(*) FROM entries e JOIN accounts a ON a.id = e.account_id \
                     WHERE a.tenant = ?1 AND substr(a.id, length(?4) + 1, 11) = 'fx-revenue:' \
                     AND e.committed_at >= ?2 AND e.committed_at < ?3 GROUP BY e.currency ORDER BY e.currency",
                )
                .map_err(sql_error)?;
            let rows = statement
                .query_map(
                    rusqlite::params![tenant, from.as_unix_micros(), to.as_unix_micros(), prefix],
                    |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?)),
                )
                .map_err(sql_error)?;
            rows.map(|row| {
                let (currency, total_minor, entries) = row.map_err(sql_error)?;
                Ok(FxRevenue {
                    currency: Currency::parse(&currency)
                        .map_err(|rejection| StoreError::Corrupt(rejection.message))?,
                    total_minor,
                    entries: u64::try_from(entries).unwrap_or(0),
                })
            })
            .collect()
        })
        .await
    }

    fn pool_usage(&self) -> (usize, usize) {
        let readers = READ_CONNECTIONS_MAX - self.inner.read_permits.available_permits();
        (readers, READ_CONNECTIONS_MAX)
    }

    async fn audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        let query = query.clone();
        self.read(move |connection| {
            // One snapshot for both tables, as in `events_after`.
            let snapshot = connection.unchecked_transaction().map_err(sql_error)?;
            let parameters = rusqlite::params![
                query.actor,
                query.since.as_unix_micros(),
                query.until.as_unix_micros(),
                to_sql_int(query.limit)
            ];
            let entries = |sql: &str| -> StoreResult<Vec<AuditEntry>> {
                let mut statement = snapshot.prepare_cached(sql).map_err(sql_error)?;
                let rows = statement.query_map(parameters, audit_from_row).map_err(sql_error)?;
                rows.map(|row| row.map_err(sql_error)).collect()
            };
            let stored = entries(&format!(
                "SELECT {AUDIT_COLUMNS} FROM outbox WHERE actor IS NOT NULL \
                 AND (?1 IS NULL OR actor = ?1) AND at >= ?2 AND at < ?3 ORDER BY sequence LIMIT ?4"
            ))?;
            // The `TransferPosted` events transfers rows carry (migration 0014).
            let carried = entries(
                "SELECT event_sequence, committed_at, event_actor, tenant, 'TransferPosted', id \
                 FROM transfers WHERE event_sequence IS NOT NULL AND event_actor IS NOT NULL \
                 AND (?1 IS NULL OR event_actor = ?1) AND committed_at >= ?2 AND committed_at < ?3 \
                 ORDER BY event_sequence LIMIT ?4",
            )?;
            Ok(merged(stored, carried, query.limit, |entry| entry.sequence))
        })
        .await
    }

    async fn relay_cursors(&self) -> StoreResult<Vec<(String, u64)>> {
        self.read(|connection| {
            let mut statement = connection
                .prepare_cached("SELECT sink, sequence FROM relay_cursors ORDER BY sink")
                .map_err(sql_error)?;
            let rows = statement
                .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))
                .map_err(sql_error)?;
            rows.map(|row| {
                row.map(|(sink, sequence)| (sink, u64::try_from(sequence).unwrap_or(0)))
                    .map_err(sql_error)
            })
            .collect()
        })
        .await
    }
}

/// The first `limit` events, in sequence order, of the two tables that hold them: outbox rows
/// (`WHERE outbox_where`) and the `TransferPosted` events transfers rows carry (migration
/// 0014; `WHERE carried_where`), both selected with `parameters`, in one snapshot.
fn events_in_both_tables(
    snapshot: &rusqlite::Transaction<'_>,
    outbox_where: &str,
    carried_where: &str,
    parameters: &[&dyn rusqlite::ToSql],
    limit: usize,
) -> StoreResult<Vec<StoredEvent>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM outbox WHERE {outbox_where}");
    let mut statement = snapshot.prepare_cached(&sql).map_err(sql_error)?;
    let sql = format!("SELECT {TRANSFER_COLUMNS} FROM transfers WHERE id = ?1");
    let mut transfer = snapshot.prepare_cached(&sql).map_err(sql_error)?;
    let mut transfer_row = |id: &str| transfer.query_row([id], transfer_from_row).optional();
    let mut rows = statement.query(parameters).map_err(sql_error)?;
    let mut stored = Vec::new();
    while let Some(row) = rows.next().map_err(sql_error)? {
        stored.push(decoded(event_from_row(row, &mut transfer_row))?);
    }
    let sql = format!(
        "SELECT {TRANSFER_COLUMNS}, {CARRIED_COLUMNS} FROM transfers WHERE {carried_where}"
    );
    let mut statement = snapshot.prepare_cached(&sql).map_err(sql_error)?;
    let mut rows = statement.query(parameters).map_err(sql_error)?;
    let mut carried = Vec::new();
    while let Some(row) = rows.next().map_err(sql_error)? {
        carried.push(decoded(carried_event_from_row(row))?);
    }
    Ok(merged(stored, carried, limit, |event| event.sequence))
}
