//! `Store` for `PostgresStore`: the storage port, every read and write.

use crate::*;

#[async_trait]
impl Store for PostgresStore {
    async fn write_batch(&self, keys: Keys, decide: Decide) -> StoreResult<Committed> {
        let mut db = self.pool.begin().await.map_err(sql_error)?;
        let state = load_state(&mut db, &keys).await?;
        let outcome = decide(state).map_err(StoreError::Invariant)?;
        write_outcome(&mut db, &outcome).await?;
        db.commit().await.map_err(sql_error)?;
        Ok(Committed::new(outcome))
    }

    async fn account(&self, id: &AccountId) -> StoreResult<Option<Account>> {
        let query = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1");
        let row = sqlx::query(&query)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error)?;
        row.as_ref().map(account_from).transpose()
    }

    async fn list_accounts(
        &self,
        tenant: Option<&str>,
        owner: Option<&str>,
        after: Option<&AccountId>,
        limit: usize,
    ) -> StoreResult<Vec<Account>> {
        let query = format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE ($1::text IS NULL OR owner = $1) AND id > $2 \
             AND ($4::text IS NULL OR tenant = $4) ORDER BY id LIMIT $3"
        );
        sqlx::query(&query)
            .bind(owner)
            .bind(after.map(ToString::to_string).unwrap_or_default())
            .bind(to_i64(limit.min(kopek_core::limits::PAGE_SIZE_MAX)))
            .bind(tenant)
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?
            .iter()
            .map(account_from)
            .collect()
    }

    async fn transfer(&self, id: TransferId) -> StoreResult<Option<Transfer>> {
        let query = format!("SELECT {TRANSFER_COLUMNS} FROM transfers WHERE id = $1");
        let row = sqlx::query(&query)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error)?;
        row.as_ref().map(transfer_from).transpose()
    }

    async fn transfer_by_key(
        &self,
        tenant: &Tenant,
        key: &IdempotencyKey,
    ) -> StoreResult<Option<Transfer>> {
        let query = format!(
            "SELECT {TRANSFER_COLUMNS} FROM transfers WHERE tenant = $1 AND idempotency_key = $2"
        );
        let row = sqlx::query(&query)
            .bind(tenant.as_str())
            .bind(key.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error)?;
        row.as_ref().map(transfer_from).transpose()
    }

    async fn search_transfers(&self, query: &TransferQuery) -> StoreResult<Page<Transfer>> {
        crate::search::search_transfers(self, query).await
    }

    async fn entries(
        &self,
        account: &AccountId,
        after: Option<u64>,
        limit: usize,
    ) -> StoreResult<Page<StoredEntry>> {
        let limit = limit.clamp(1, kopek_core::limits::PAGE_SIZE_MAX);
        let query = format!(
            "SELECT {ENTRY_COLUMNS} FROM entries WHERE account_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3"
        );
        let mut items = sqlx::query(&query)
            .bind(account.as_str())
            .bind(i64::try_from(after.unwrap_or(0)).unwrap_or(i64::MAX))
            .bind(to_i64(limit + 1))
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?
            .iter()
            .map(entry_from)
            .collect::<StoreResult<Vec<_>>>()?;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|entry| entry.sequence)
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn transfer_entries(&self, ids: &[TransferId]) -> StoreResult<Vec<StoredEntry>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = ids.iter().map(TransferId::to_string).collect();
        let query = format!(
            "SELECT {ENTRY_COLUMNS} FROM entries WHERE transfer_id = ANY($1) ORDER BY sequence"
        );
        sqlx::query(&query)
            .bind(&ids)
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?
            .iter()
            .map(entry_from)
            .collect()
    }

    async fn balance_before(
        &self,
        account: &AccountId,
        before: Timestamp,
    ) -> StoreResult<Option<i64>> {
        // SUM over bigint is numeric in PostgreSQL: no intermediate overflow.
        let row = sqlx::query(
            "SELECT (SELECT COALESCE(SUM(CASE direction WHEN 'credit' THEN amount ELSE -amount END), 0)::bigint \
             FROM entries WHERE account_id = a.id AND effective_at < $2) FROM accounts a WHERE a.id = $1",
        )
        .bind(account.as_str())
        .bind(before.as_unix_micros())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql_error)?;
        row.map(|row| row.try_get::<i64, _>(0).map_err(sql_error)).transpose()
    }

    async fn holds_due(&self, now: Timestamp, limit: usize) -> StoreResult<Vec<TransferId>> {
        let rows = sqlx::query(
            "SELECT id FROM transfers WHERE status = 'pending' AND expires_at <= $1 ORDER BY expires_at LIMIT $2",
        )
        .bind(now.as_unix_micros())
        .bind(to_i64(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error)?;
        rows.iter()
            .map(|row| {
                let text: String = row.try_get(0).map_err(sql_error)?;
                TransferId::parse(&text).map_err(|rejection| corrupt(rejection.message))
            })
            .collect()
    }

    async fn next_hold_expiry(&self) -> StoreResult<Option<Timestamp>> {
        let micros: Option<i64> =
            sqlx::query_scalar("SELECT MIN(expires_at) FROM transfers WHERE status = 'pending'")
                .fetch_one(&self.pool)
                .await
                .map_err(sql_error)?;
        Ok(micros.map(Timestamp::from_unix_micros))
    }

    async fn events_after(
        &self,
        tenant: Option<&str>,
        sequence: u64,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        // Two statements rather than one with `$3 IS NULL OR`: each keeps its own index.
        let filter = if tenant.is_some() { "tenant = $3" } else { "$3::text IS NULL" };
        let sql = format!(
            "SELECT {} FROM outbox WHERE {filter} AND sequence > $1 \
             ORDER BY sequence LIMIT $2",
            event_columns()
        );
        sqlx::query(&sql)
            .bind(i64::try_from(sequence).unwrap_or(i64::MAX))
            .bind(to_i64(limit))
            .bind(tenant)
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?
            .iter()
            .map(event_from)
            .collect()
    }

    async fn events_of(
        &self,
        tenant: &str,
        subject: &str,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        let sql = format!(
            "SELECT {} FROM outbox WHERE subject_id = $1 AND tenant = $2 \
             ORDER BY sequence LIMIT $3",
            event_columns()
        );
        sqlx::query(&sql)
            .bind(subject)
            .bind(tenant)
            .bind(to_i64(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?
            .iter()
            .map(event_from)
            .collect()
    }

    async fn last_event_sequence(&self) -> StoreResult<u64> {
        let sequence: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(sequence), 0) FROM outbox")
            .fetch_one(&self.pool)
            .await
            .map_err(sql_error)?;
        Ok(u64::try_from(sequence).unwrap_or(0))
    }

    async fn watermark(&self) -> StoreResult<Watermark> {
        let row = sqlx::query(
            "SELECT GREATEST((SELECT MAX(updated_at) FROM transfers), (SELECT MAX(updated_at) FROM accounts), \
             (SELECT MAX(at) FROM outbox)), GREATEST((SELECT MAX(id) FROM transfers), (SELECT MAX(id) FROM outbox))",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(sql_error)?;
        let micros: Option<i64> = row.try_get(0).map_err(sql_error)?;
        let id: Option<String> = row.try_get(1).map_err(sql_error)?;
        let largest_id = id
            .map(|text| Ulid::parse(&text).map_err(|rejection| corrupt(rejection.message)))
            .transpose()?;
        Ok(Watermark { committed_at: micros.map(Timestamp::from_unix_micros), largest_id })
    }

    async fn user(&self, id: &UserId) -> StoreResult<Option<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error)?;
        row.as_ref().map(user_from).transpose()
    }

    async fn order(&self, id: &OrderId) -> StoreResult<Option<Order>> {
        let query = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1");
        let row = sqlx::query(&query)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error)?;
        row.as_ref().map(order_from).transpose()
    }

    async fn orders_of_user(&self, user: &UserId, limit: usize) -> StoreResult<Vec<Order>> {
        let query = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1 ORDER BY created_at, id LIMIT $2"
        );
        sqlx::query(&query)
            .bind(user.as_str())
            .bind(to_i64(limit.min(kopek_core::limits::PAGE_SIZE_MAX)))
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?
            .iter()
            .map(order_from)
            .collect()
    }

    async fn pending_orders(&self, limit: usize) -> StoreResult<Vec<Order>> {
        let query = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE status = 'PENDING' ORDER BY created_at LIMIT $1"
        );
        sqlx::query(&query)
            .bind(to_i64(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?
            .iter()
            .map(order_from)
            .collect()
    }

    async fn verify(&self) -> StoreResult<VerifyReport> {
        verify::verify_books(&self.pool).await
    }

    async fn relay_claim(
        &self,
        sink: &str,
        holder: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> StoreResult<Option<u64>> {
        let row = sqlx::query(
            "INSERT INTO relay_cursors (sink, sequence, holder, lease_until) VALUES ($1, 0, $2, $4) \
             ON CONFLICT (sink) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until \
             WHERE relay_cursors.holder = excluded.holder OR relay_cursors.lease_until < $3 \
             RETURNING sequence",
        )
        .bind(sink)
        .bind(holder)
        .bind(now.as_unix_micros())
        .bind(until.as_unix_micros())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql_error)?;
        row.map(|row| {
            let sequence: i64 = row.try_get(0).map_err(sql_error)?;
            Ok(u64::try_from(sequence).unwrap_or(0))
        })
        .transpose()
    }

    async fn relay_advance(
        &self,
        sink: &str,
        holder: &str,
        sequence: u64,
        until: Timestamp,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE relay_cursors SET sequence = GREATEST(sequence, $3), lease_until = $4 \
             WHERE sink = $1 AND holder = $2",
        )
        .bind(sink)
        .bind(holder)
        .bind(i64::try_from(sequence).unwrap_or(i64::MAX))
        .bind(until.as_unix_micros())
        .execute(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn inbox_contains(&self, consumer: &str, event_id: &str) -> StoreResult<bool> {
        let row = sqlx::query("SELECT 1 FROM inbox WHERE consumer = $1 AND event_id = $2")
            .bind(consumer)
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error)?;
        Ok(row.is_some())
    }

    async fn consume(
        &self,
        consumer: &str,
        items: Vec<Consumed>,
        now: Timestamp,
    ) -> StoreResult<usize> {
        let mut db = self.pool.begin().await.map_err(sql_error)?;
        let mut new = 0;
        for item in &items {
            let inserted = sqlx::query(
                "INSERT INTO inbox (consumer, event_id, processed_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(consumer)
            .bind(&item.event_id)
            .bind(now.as_unix_micros())
            .execute(&mut *db)
            .await
            .map_err(sql_error)?;
            if inserted.rows_affected() == 0 {
                continue;
            }
            new += 1;
            for effect in &item.effects {
                match effect {
                    Effect::Deliver {
                        delivery_id,
                        subscription_id,
                        event_id,
                        event_type,
                        body,
                        max_attempts,
                    } => {
                        sqlx::query(
                            "INSERT INTO webhook_deliveries (id, subscription_id, event_id, event_type, body, status, \
                             attempts, dead_after, next_attempt_at, claimed_until, created_at, updated_at) \
                             VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $7, 0, $7, $7) \
                             ON CONFLICT (subscription_id, event_id) DO NOTHING",
                        )
                        .bind(delivery_id)
                        .bind(subscription_id)
                        .bind(event_id)
                        .bind(event_type)
                        .bind(body)
                        .bind(i64::from(*max_attempts))
                        .bind(now.as_unix_micros())
                        .execute(&mut *db)
                        .await
                        .map_err(sql_error)?;
                    }
                    // PostgreSQL refuses a bigint past its range ("out of range"): the call
                    // fails instead of wrapping.
                    Effect::Spend { tenant, user, category, currency, amount_minor } => {
                        sqlx::query(
                            "INSERT INTO spending (tenant, user_id, category, currency, total_minor, transfers, updated_at) \
                             VALUES ($1, $2, $3, $4, $5, 1, $6) ON CONFLICT (tenant, user_id, category, currency) \
                             DO UPDATE SET total_minor = spending.total_minor + excluded.total_minor, \
                             transfers = spending.transfers + 1, updated_at = excluded.updated_at",
                        )
                        .bind(tenant)
                        .bind(user)
                        .bind(category)
                        .bind(currency)
                        .bind(amount_minor)
                        .bind(now.as_unix_micros())
                        .execute(&mut *db)
                        .await
                        .map_err(sql_error)?;
                    }
                }
            }
        }
        db.commit().await.map_err(sql_error)?;
        Ok(new)
    }

    async fn spending(&self, tenant: &str, user: &str) -> StoreResult<Vec<SpendingTotal>> {
        sqlx::query(
            "SELECT category, currency, total_minor, transfers, updated_at FROM spending \
             WHERE tenant = $1 AND user_id = $2 ORDER BY category, currency",
        )
        .bind(tenant)
        .bind(user)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error)?
        .iter()
        .map(|row| {
            let transfers: i64 = row.try_get(3).map_err(sql_error)?;
            Ok(SpendingTotal {
                category: row.try_get(0).map_err(sql_error)?,
                currency: row.try_get(1).map_err(sql_error)?,
                total_minor: row.try_get(2).map_err(sql_error)?,
                transfers: u64::try_from(transfers).unwrap_or(0),
                updated_at: Timestamp::from_unix_micros(row.try_get(4).map_err(sql_error)?),
            })
        })
        .collect()
    }

    async fn create_webhook(&self, webhook: &Webhook) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO webhook_subscriptions (id, tenant, url, event_types, secret, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&webhook.id)
        .bind(&webhook.tenant)
        .bind(&webhook.url)
        .bind(webhook.event_types.join(","))
        .bind(&webhook.secret)
        .bind(webhook.created_at.as_unix_micros())
        .execute(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(())
    }

    async fn webhooks(&self, tenant: Option<&str>) -> StoreResult<Vec<Webhook>> {
        let sql = format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhook_subscriptions \
             WHERE deleted_at IS NULL AND ($1::text IS NULL OR tenant = $1) ORDER BY created_at, id"
        );
        sqlx::query(&sql)
            .bind(tenant)
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?
            .iter()
            .map(webhook_from)
            .collect()
    }

    async fn delete_webhook(&self, tenant: &str, id: &str, now: Timestamp) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE webhook_subscriptions SET deleted_at = $3 WHERE tenant = $1 AND id = $2 AND deleted_at IS NULL",
        )
        .bind(tenant)
        .bind(id)
        .bind(now.as_unix_micros())
        .execute(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn claim_deliveries(
        &self,
        now: Timestamp,
        until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        // SKIP LOCKED: senders in other processes take other deliveries instead of waiting.
        let sql = format!(
            "UPDATE webhook_deliveries SET claimed_until = $2 WHERE id IN (\
             SELECT d.id FROM webhook_deliveries d JOIN webhook_subscriptions s ON s.id = d.subscription_id \
             WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND d.claimed_until <= $1 \
             AND s.deleted_at IS NULL ORDER BY d.next_attempt_at LIMIT $3 FOR UPDATE OF d SKIP LOCKED) \
             RETURNING {DELIVERY_COLUMNS}"
        );
        let mut deliveries = sqlx::query(&sql)
            .bind(now.as_unix_micros())
            .bind(until.as_unix_micros())
            .bind(to_i64(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?
            .iter()
            .map(delivery_from)
            .collect::<StoreResult<Vec<Delivery>>>()?;
        deliveries.sort_by_key(|delivery| delivery.next_attempt_at);
        Ok(deliveries)
    }

    async fn record_attempt(&self, result: &AttemptResult) -> StoreResult<bool> {
        let attempt = &result.attempt;
        let mut db = self.pool.begin().await.map_err(sql_error)?;
        let updated = sqlx::query(
            "UPDATE webhook_deliveries SET status = $2, attempts = $3, next_attempt_at = $4, claimed_until = 0, \
             last_status_code = $5, last_error = $6, updated_at = $7 WHERE id = $1 AND claimed_until = $8",
        )
        .bind(&attempt.delivery_id)
        .bind(result.status.as_str())
        .bind(i64::from(attempt.attempt))
        .bind(result.next_attempt_at.as_unix_micros())
        .bind(attempt.status_code.map(i64::from))
        .bind(&attempt.error)
        .bind(attempt.at.as_unix_micros())
        .bind(result.claimed_until.as_unix_micros())
        .execute(&mut *db)
        .await
        .map_err(sql_error)?;
        if updated.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code, error, duration_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (delivery_id, attempt) DO UPDATE SET \
             at = excluded.at, status_code = excluded.status_code, error = excluded.error, duration_ms = excluded.duration_ms",
        )
        .bind(&attempt.delivery_id)
        .bind(i64::from(attempt.attempt))
        .bind(attempt.at.as_unix_micros())
        .bind(attempt.status_code.map(i64::from))
        .bind(&attempt.error)
        .bind(i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX))
        .execute(&mut *db)
        .await
        .map_err(sql_error)?;
        db.commit().await.map_err(sql_error)?;
        Ok(true)
    }

    async fn deliveries(&self, subscription_id: &str, limit: usize) -> StoreResult<Vec<Delivery>> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE subscription_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2"
        );
        sqlx::query(&sql)
            .bind(subscription_id)
            .bind(to_i64(limit.min(kopek_core::limits::PAGE_SIZE_MAX)))
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?
            .iter()
            .map(delivery_from)
            .collect()
    }

    async fn delivery(&self, id: &str) -> StoreResult<Option<Delivery>> {
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await.map_err(sql_error)?;
        row.as_ref().map(delivery_from).transpose()
    }

    async fn delivery_attempts(&self, delivery_id: &str) -> StoreResult<Vec<Attempt>> {
        let sql = format!(
            "SELECT {ATTEMPT_COLUMNS} FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempt"
        );
        sqlx::query(&sql)
            .bind(delivery_id)
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?
            .iter()
            .map(|row| Attempt::read(&PgColumns(row)))
            .collect()
    }

    async fn redeliver(
        &self,
        subscription_id: &str,
        delivery_id: &str,
        max_attempts: u32,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', dead_after = attempts + $3, next_attempt_at = $4, \
             claimed_until = 0, updated_at = $4 WHERE id = $2 AND subscription_id = $1",
        )
        .bind(subscription_id)
        .bind(delivery_id)
        .bind(i64::from(max_attempts))
        .bind(now.as_unix_micros())
        .execute(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn fx_rates(&self, tenant: &Tenant, at: Timestamp) -> StoreResult<Vec<FxRate>> {
        let query = format!(
            "SELECT {RATE_COLUMNS} FROM fx_rates r WHERE tenant = $1 AND valid_from = \
             (SELECT MAX(valid_from) FROM fx_rates WHERE tenant = r.tenant AND base = r.base \
             AND quote = r.quote AND valid_from <= $2) ORDER BY base, quote"
        );
        sqlx::query(&query)
            .bind(tenant.as_str())
            .bind(at.as_unix_micros())
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?
            .iter()
            .map(|row| RawRate::read(&PgColumns(row))?.decode().map_err(corrupt))
            .collect()
    }

    async fn quote(&self, id: QuoteId) -> StoreResult<Option<Quote>> {
        let query = format!("SELECT {QUOTE_COLUMNS} FROM fx_quotes WHERE id = $1");
        let row = sqlx::query(&query)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error)?;
        row.map(|row| RawQuote::read(&PgColumns(&row))?.decode().map_err(corrupt)).transpose()
    }

    async fn fx_accounts(&self, tenant: &Tenant) -> StoreResult<Vec<Account>> {
        let query = format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE tenant = $1 \
             AND (substr(id, length($2) + 1, 3) = 'fx:' \
             OR substr(id, length($2) + 1, 11) = 'fx-revenue:') ORDER BY id"
        );
        sqlx::query(&query)
            .bind(tenant.as_str())
            .bind(tenant.key_prefix())
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?
            .iter()
            .map(account_from)
            .collect()
    }

    async fn fx_revenue(
        &self,
        tenant: &Tenant,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<Vec<FxRevenue>> {
        let rows = sqlx::query(
            "SELECT e.currency, SUM(CASE WHEN e.direction = 'credit' THEN e.amount ELSE -e.amount END)::bigint, \
             COUNT(*) FROM entries e JOIN accounts a ON a.id = e.account_id \
             WHERE a.tenant = $1 AND substr(a.id, length($4) + 1, 11) = 'fx-revenue:' \
             AND e.committed_at >= $2 AND e.committed_at < $3 GROUP BY e.currency ORDER BY e.currency",
        )
        .bind(tenant.as_str())
        .bind(from.as_unix_micros())
        .bind(to.as_unix_micros())
        .bind(tenant.key_prefix())
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error)?;
        rows.iter()
            .map(|row| {
                let currency: String = row.try_get(0).map_err(sql_error)?;
                let entries: i64 = row.try_get(2).map_err(sql_error)?;
                Ok(FxRevenue {
                    currency: Currency::parse(&currency).map_err(|r| corrupt(r.message))?,
                    total_minor: row.try_get(1).map_err(sql_error)?,
                    entries: u64::try_from(entries).unwrap_or(0),
                })
            })
            .collect()
    }

    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, tenant, scope, user_id, name, secret_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&key.id)
        .bind(&key.tenant)
        .bind(&key.scope)
        .bind(&key.user_id)
        .bind(&key.name)
        .bind(&key.secret_hash)
        .bind(key.created_at.as_unix_micros())
        .execute(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(())
    }

    async fn api_key(&self, id: &str) -> StoreResult<Option<ApiKey>> {
        let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await.map_err(sql_error)?;
        row.as_ref().map(api_key_from).transpose()
    }

    async fn api_keys(&self, tenant: Option<&str>) -> StoreResult<Vec<ApiKey>> {
        let sql = format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys \
             WHERE ($1::text IS NULL OR tenant = $1) ORDER BY created_at, id"
        );
        sqlx::query(&sql)
            .bind(tenant)
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?
            .iter()
            .map(api_key_from)
            .collect()
    }

    async fn revoke_api_key(&self, id: &str, now: Timestamp) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(now.as_unix_micros())
                .execute(&self.pool)
                .await
                .map_err(sql_error)?;
        Ok(done.rows_affected() == 1)
    }

    fn pool_usage(&self) -> (usize, usize) {
        let open = usize::try_from(self.pool.size()).unwrap_or(0);
        (open.saturating_sub(self.pool.num_idle()), POOL_CONNECTIONS_MAX as usize)
    }

    async fn audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM outbox WHERE actor IS NOT NULL \
             AND ($1::text IS NULL OR actor = $1) AND at >= $2 AND at < $3 ORDER BY sequence LIMIT $4"
        );
        sqlx::query(&sql)
            .bind(&query.actor)
            .bind(query.since.as_unix_micros())
            .bind(query.until.as_unix_micros())
            .bind(i64::try_from(query.limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?
            .iter()
            .map(|row| AuditEntry::read(&PgColumns(row)))
            .collect()
    }

    async fn relay_cursors(&self) -> StoreResult<Vec<(String, u64)>> {
        sqlx::query("SELECT sink, sequence FROM relay_cursors ORDER BY sink")
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?
            .iter()
            .map(|row| {
                let sink: String = row.try_get(0).map_err(sql_error)?;
                let sequence: i64 = row.try_get(1).map_err(sql_error)?;
                Ok((sink, u64::try_from(sequence).unwrap_or(0)))
            })
            .collect()
    }
}
