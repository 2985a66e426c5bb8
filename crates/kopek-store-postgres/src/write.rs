//! The write path: loading a batch's state under row locks, and writing its outcome in the
//! same transaction.

use crate::*;

/// Loads and locks the state of a batch, in the global lock order.
pub(crate) async fn load_state(
    db: &mut Transaction<'_, Postgres>,
    keys: &Keys,
) -> StoreResult<State> {
    let mut transfers = BTreeMap::new();
    let hold_ids: Vec<String> = keys.transfer_ids.iter().map(ToString::to_string).collect();
    if !hold_ids.is_empty() {
        let query = format!(
            "SELECT {TRANSFER_COLUMNS} FROM transfers WHERE id = ANY($1) ORDER BY id FOR UPDATE"
        );
        for row in
            sqlx::query(&query).bind(&hold_ids).fetch_all(&mut **db).await.map_err(sql_error)?
        {
            let transfer = transfer_from(&row)?;
            transfers.insert(transfer.id, transfer);
        }
    }
    if !keys.idempotency_keys.is_empty() {
        let (tenants, idempotency_keys): (Vec<String>, Vec<String>) = keys
            .idempotency_keys
            .iter()
            .map(|(tenant, key)| (tenant.to_string(), key.to_string()))
            .unzip();
        let query = format!(
            "SELECT {TRANSFER_COLUMNS} FROM transfers WHERE (tenant, idempotency_key) IN \
             (SELECT * FROM UNNEST($1::text[], $2::text[]))"
        );
        let rows = sqlx::query(&query)
            .bind(&tenants)
            .bind(&idempotency_keys)
            .fetch_all(&mut **db)
            .await
            .map_err(sql_error)?;
        for row in rows {
            let transfer = transfer_from(&row)?;
            transfers.insert(transfer.id, transfer);
        }
    }
    // The other records of every conversion a loaded transfer belongs to.
    let conversions: BTreeSet<String> = transfers
        .values()
        .filter_map(|transfer: &Transfer| transfer.fx.as_ref().map(|fx| fx.quote_id.to_string()))
        .collect();
    if !conversions.is_empty() {
        let quote_ids: Vec<String> = conversions.into_iter().collect();
        let query = format!(
            "SELECT {TRANSFER_COLUMNS} FROM transfers WHERE quote_id = ANY($1) ORDER BY id FOR UPDATE"
        );
        for row in
            sqlx::query(&query).bind(&quote_ids).fetch_all(&mut **db).await.map_err(sql_error)?
        {
            let transfer = transfer_from(&row)?;
            transfers.insert(transfer.id, transfer);
        }
    }
    // Quotes are locked, so two processes cannot both use one.
    let mut quotes = BTreeMap::new();
    if !keys.quotes.is_empty() || !keys.quote_keys.is_empty() {
        let ids: Vec<String> = keys.quotes.iter().map(ToString::to_string).collect();
        let (tenants, quote_keys): (Vec<String>, Vec<String>) = keys
            .quote_keys
            .iter()
            .map(|(tenant, key)| (tenant.to_string(), key.to_string()))
            .unzip();
        let query = format!(
            "SELECT {QUOTE_COLUMNS} FROM fx_quotes WHERE id = ANY($1) OR (tenant, idempotency_key) IN \
             (SELECT * FROM UNNEST($2::text[], $3::text[])) ORDER BY id FOR UPDATE"
        );
        let rows = sqlx::query(&query)
            .bind(&ids)
            .bind(&tenants)
            .bind(&quote_keys)
            .fetch_all(&mut **db)
            .await
            .map_err(sql_error)?;
        for row in rows {
            let quote = RawQuote::read(&PgColumns(&row))?.decode().map_err(corrupt)?;
            quotes.insert(quote.id, quote);
        }
    }
    let mut account_ids: BTreeSet<AccountId> = keys.accounts.clone();
    for quote in quotes.values() {
        account_ids.extend(Keys::quote_accounts(quote));
    }
    for transfer in transfers.values() {
        account_ids.extend(transfer.debit_account.iter().cloned());
        account_ids.extend(transfer.credit_account.iter().cloned());
    }
    let mut last_user_number = 0;
    if !keys.allocated_users.is_empty() {
        let value: i64 =
            sqlx::query_scalar("SELECT value FROM counters WHERE name = 'user_number' FOR UPDATE")
                .fetch_one(&mut **db)
                .await
                .map_err(sql_error)?;
        last_user_number =
            u64::try_from(value).map_err(|_| corrupt("negative user counter".to_owned()))?;
        for (offset, (tenant, currency)) in keys.allocated_users.iter().enumerate() {
            account_ids.insert(
                UserId::from_number(last_user_number + 1 + offset as u64)
                    .in_tenant(tenant)
                    .account(*currency),
            );
        }
    }
    let ids: Vec<String> = account_ids.iter().map(ToString::to_string).collect();
    let query =
        format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE");
    let accounts = sqlx::query(&query)
        .bind(&ids)
        .fetch_all(&mut **db)
        .await
        .map_err(sql_error)?
        .iter()
        .map(account_from)
        .collect::<StoreResult<Vec<_>>>()?;
    let mut state = State::new(accounts, transfers.into_values());
    state.last_user_number = last_user_number;
    state.quotes = quotes;
    for (tenant, base, quote) in &keys.rate_pairs {
        let query = format!(
            "SELECT {RATE_COLUMNS} FROM fx_rates WHERE tenant = $1 AND base = $2 AND quote = $3 \
             ORDER BY valid_from DESC LIMIT 1"
        );
        let row = sqlx::query(&query)
            .bind(tenant.as_str())
            .bind(base.code())
            .bind(quote.code())
            .fetch_optional(&mut **db)
            .await
            .map_err(sql_error)?;
        if let Some(row) = row {
            let rate = RawRate::read(&PgColumns(&row))?.decode().map_err(corrupt)?;
            state.rates.insert((tenant.clone(), *base, *quote), rate);
        }
    }
    if !keys.users.is_empty() {
        let ids: Vec<String> = keys.users.iter().map(ToString::to_string).collect();
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = ANY($1)");
        for row in sqlx::query(&sql).bind(&ids).fetch_all(&mut **db).await.map_err(sql_error)? {
            let user = user_from(&row)?;
            state.users.insert(user.id.clone(), user);
        }
    }
    if !keys.orders.is_empty() {
        let ids: Vec<String> = keys.orders.iter().map(ToString::to_string).collect();
        let query =
            format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ANY($1) ORDER BY id FOR UPDATE");
        for row in sqlx::query(&query).bind(&ids).fetch_all(&mut **db).await.map_err(sql_error)? {
            let order = order_from(&row)?;
            state.orders.insert(order.id.clone(), order);
        }
    }
    Ok(state)
}

pub(crate) fn overdraft_value(overdraft: Overdraft) -> Option<i64> {
    match overdraft {
        Overdraft::Limited(limit) => Some(limit),
        Overdraft::Unbounded => None,
    }
}

pub(crate) async fn insert_accounts(
    db: &mut Transaction<'_, Postgres>,
    accounts: &[Account],
) -> StoreResult<()> {
    if accounts.is_empty() {
        return Ok(());
    }
    let column = |f: &dyn Fn(&Account) -> String| accounts.iter().map(f).collect::<Vec<String>>();
    let numbers = |f: &dyn Fn(&Account) -> i64| accounts.iter().map(f).collect::<Vec<i64>>();
    sqlx::query(
        "INSERT INTO accounts (id, currency, owner, kind, overdraft_limit, status, metadata, posted, pending_out, \
         pending_in, created_at, updated_at, tenant) SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
         $5::bigint[], $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], \
         $13::text[])",
    )
    .bind(column(&|a| a.id.to_string()))
    .bind(column(&|a| a.currency.code().to_owned()))
    .bind(accounts.iter().map(|a| a.owner.clone()).collect::<Vec<Option<String>>>())
    .bind(column(&|a| a.kind.as_str().to_owned()))
    .bind(accounts.iter().map(|a| overdraft_value(a.overdraft)).collect::<Vec<Option<i64>>>())
    .bind(column(&|a| a.status.as_str().to_owned()))
    .bind(column(&|a| metadata_to_json(&a.metadata)))
    .bind(numbers(&|a| a.balance.posted))
    .bind(numbers(&|a| a.balance.pending_out))
    .bind(numbers(&|a| a.balance.pending_in))
    .bind(numbers(&|a| a.created_at.as_unix_micros()))
    .bind(numbers(&|a| a.updated_at.as_unix_micros()))
    .bind(column(&|a| a.tenant.to_string()))
    .execute(&mut **db)
    .await
    .map_err(sql_error)?;
    Ok(())
}

pub(crate) async fn update_accounts(
    db: &mut Transaction<'_, Postgres>,
    accounts: &[Account],
) -> StoreResult<()> {
    if accounts.is_empty() {
        return Ok(());
    }
    let numbers = |f: &dyn Fn(&Account) -> i64| accounts.iter().map(f).collect::<Vec<i64>>();
    let result = sqlx::query(
        "UPDATE accounts a SET overdraft_limit = u.overdraft_limit, status = u.status, posted = u.posted, \
         pending_out = u.pending_out, pending_in = u.pending_in, updated_at = u.updated_at \
         FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[]) \
         AS u(id, overdraft_limit, status, posted, pending_out, pending_in, updated_at) WHERE a.id = u.id",
    )
    .bind(accounts.iter().map(|a| a.id.to_string()).collect::<Vec<String>>())
    .bind(accounts.iter().map(|a| overdraft_value(a.overdraft)).collect::<Vec<Option<i64>>>())
    .bind(accounts.iter().map(|a| a.status.as_str().to_owned()).collect::<Vec<String>>())
    .bind(numbers(&|a| a.balance.posted))
    .bind(numbers(&|a| a.balance.pending_out))
    .bind(numbers(&|a| a.balance.pending_in))
    .bind(numbers(&|a| a.updated_at.as_unix_micros()))
    .execute(&mut **db)
    .await
    .map_err(sql_error)?;
    if result.rows_affected() != accounts.len() as u64 {
        return Err(StoreError::Invariant("an account to update is missing".to_owned()));
    }
    Ok(())
}

pub(crate) async fn insert_transfers(
    db: &mut Transaction<'_, Postgres>,
    transfers: &[Transfer],
) -> StoreResult<()> {
    if transfers.is_empty() {
        return Ok(());
    }
    let text = |f: &dyn Fn(&Transfer) -> String| transfers.iter().map(f).collect::<Vec<String>>();
    let optional = |f: &dyn Fn(&Transfer) -> Option<String>| {
        transfers.iter().map(f).collect::<Vec<Option<String>>>()
    };
    let numbers = |f: &dyn Fn(&Transfer) -> i64| transfers.iter().map(f).collect::<Vec<i64>>();
    let (quote_ids, conversions): (Vec<Option<String>>, Vec<Option<String>>) =
        transfers.iter().map(transfer_fx_columns).unzip();
    sqlx::query(
        "INSERT INTO transfers (id, tenant, idempotency_key, fingerprint, kind, action, debit_account, credit_account, \
         amount, currency, pending_id, status, error_code, error_message, expires_at, captured_amount, category, \
         description, metadata, effective_at, committed_at, updated_at, quote_id, fx) SELECT * FROM UNNEST($1::text[], $2::text[], \
         $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bigint[], $10::text[], $11::text[], \
         $12::text[], $13::text[], $14::text[], $15::bigint[], $16::bigint[], $17::text[], $18::text[], $19::text[], \
         $20::bigint[], $21::bigint[], $22::bigint[], $23::text[], $24::text[])",
    )
    .bind(text(&|t| t.id.to_string()))
    .bind(text(&|t| t.tenant.to_string()))
    .bind(text(&|t| t.idempotency_key.to_string()))
    .bind(text(&|t| t.fingerprint.to_string()))
    .bind(text(&|t| t.kind.as_str().to_owned()))
    .bind(text(&|t| t.action.as_str().to_owned()))
    .bind(optional(&|t| t.debit_account.as_ref().map(ToString::to_string)))
    .bind(optional(&|t| t.credit_account.as_ref().map(ToString::to_string)))
    .bind(numbers(&|t| t.amount))
    .bind(optional(&|t| t.currency.map(|c| c.code().to_owned())))
    .bind(optional(&|t| t.pending_id.map(|id| id.to_string())))
    .bind(text(&|t| t.status.as_str().to_owned()))
    .bind(optional(&|t| t.error.as_ref().map(|e| e.code.as_str().to_owned())))
    .bind(optional(&|t| t.error.as_ref().map(|e| e.message.clone())))
    .bind(transfers.iter().map(|t| t.expires_at.map(Timestamp::as_unix_micros)).collect::<Vec<Option<i64>>>())
    .bind(numbers(&|t| t.captured_amount))
    .bind(text(&|t| t.details.category.clone()))
    .bind(text(&|t| t.details.description.clone()))
    .bind(text(&|t| metadata_to_json(&t.details.metadata)))
    .bind(numbers(&|t| t.effective_at.as_unix_micros()))
    .bind(numbers(&|t| t.committed_at.as_unix_micros()))
    .bind(numbers(&|t| t.updated_at.as_unix_micros()))
    .bind(quote_ids)
    .bind(conversions)
    .execute(&mut **db)
    .await
    .map_err(sql_error)?;
    Ok(())
}

pub(crate) async fn write_outcome(
    db: &mut Transaction<'_, Postgres>,
    outcome: &Outcome,
) -> StoreResult<()> {
    insert_accounts(db, &outcome.accounts_opened).await?;
    update_accounts(db, &outcome.accounts_changed).await?;
    if !outcome.entries.is_empty() {
        let entries = &outcome.entries;
        sqlx::query(
            "INSERT INTO entries (account_id, transfer_id, direction, amount, currency, balance_after, effective_at, \
             committed_at) SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], \
             $6::bigint[], $7::bigint[], $8::bigint[])",
        )
        .bind(entries.iter().map(|e| e.account_id.to_string()).collect::<Vec<String>>())
        .bind(entries.iter().map(|e| e.transfer_id.to_string()).collect::<Vec<String>>())
        .bind(entries.iter().map(|e| e.direction.as_str().to_owned()).collect::<Vec<String>>())
        .bind(entries.iter().map(|e| e.amount).collect::<Vec<i64>>())
        .bind(entries.iter().map(|e| e.currency.code().to_owned()).collect::<Vec<String>>())
        .bind(entries.iter().map(|e| e.balance_after).collect::<Vec<i64>>())
        .bind(entries.iter().map(|e| e.effective_at.as_unix_micros()).collect::<Vec<i64>>())
        .bind(entries.iter().map(|e| e.committed_at.as_unix_micros()).collect::<Vec<i64>>())
        .execute(&mut **db)
        .await
        .map_err(sql_error)?;
    }
    if !outcome.users_created.is_empty() {
        let users = &outcome.users_created;
        sqlx::query("INSERT INTO users (id, name, created_at, tenant) SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[])")
            .bind(users.iter().map(|u| u.id.to_string()).collect::<Vec<String>>())
            .bind(users.iter().map(|u| u.name.clone()).collect::<Vec<String>>())
            .bind(users.iter().map(|u| u.created_at.as_unix_micros()).collect::<Vec<i64>>())
            .bind(users.iter().map(|u| u.tenant.to_string()).collect::<Vec<String>>())
            .execute(&mut **db)
            .await
            .map_err(sql_error)?;
    }
    if let Some(number) = outcome.last_user_number {
        let value = i64::try_from(number)
            .map_err(|_| StoreError::Invariant("user counter overflow".to_owned()))?;
        sqlx::query("UPDATE counters SET value = $1 WHERE name = 'user_number'")
            .bind(value)
            .execute(&mut **db)
            .await
            .map_err(sql_error)?;
    }
    for (orders, insert) in [(&outcome.orders_created, true), (&outcome.orders_changed, false)] {
        if orders.is_empty() {
            continue;
        }
        let statement = if insert {
            "INSERT INTO orders (id, tenant, user_id, amount, currency, status, failure_code, failure_message, \
             payment_id, created_at, updated_at) SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], \
             $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[], $11::bigint[])"
        } else {
            "UPDATE orders o SET tenant = u.tenant, user_id = u.user_id, amount = u.amount, currency = u.currency, \
             status = u.status, failure_code = u.failure_code, failure_message = u.failure_message, \
             payment_id = u.payment_id, created_at = u.created_at, updated_at = u.updated_at \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[], \
             $8::text[], $9::text[], $10::bigint[], $11::bigint[]) AS u(id, tenant, user_id, amount, currency, status, \
             failure_code, failure_message, payment_id, created_at, updated_at) WHERE o.id = u.id"
        };
        sqlx::query(statement)
            .bind(orders.iter().map(|o| o.id.to_string()).collect::<Vec<String>>())
            .bind(orders.iter().map(|o| o.tenant.to_string()).collect::<Vec<String>>())
            .bind(orders.iter().map(|o| o.user.to_string()).collect::<Vec<String>>())
            .bind(orders.iter().map(|o| o.amount).collect::<Vec<i64>>())
            .bind(orders.iter().map(|o| o.currency.code().to_owned()).collect::<Vec<String>>())
            .bind(orders.iter().map(|o| o.status.as_str().to_owned()).collect::<Vec<String>>())
            .bind(
                orders
                    .iter()
                    .map(|o| o.failure.as_ref().map(|f| f.code.as_str().to_owned()))
                    .collect::<Vec<Option<String>>>(),
            )
            .bind(
                orders
                    .iter()
                    .map(|o| o.failure.as_ref().map(|f| f.message.clone()))
                    .collect::<Vec<Option<String>>>(),
            )
            .bind(
                orders
                    .iter()
                    .map(|o| o.payment_id.map(|id| id.to_string()))
                    .collect::<Vec<Option<String>>>(),
            )
            .bind(orders.iter().map(|o| o.created_at.as_unix_micros()).collect::<Vec<i64>>())
            .bind(orders.iter().map(|o| o.updated_at.as_unix_micros()).collect::<Vec<i64>>())
            .execute(&mut **db)
            .await
            .map_err(sql_error)?;
    }
    if !outcome.inbox.is_empty() {
        sqlx::query(
            "INSERT INTO inbox (consumer, event_id, processed_at) SELECT consumer, event_id, \
             (extract(epoch FROM clock_timestamp()) * 1000000)::bigint FROM UNNEST($1::text[], $2::text[]) \
             AS marks (consumer, event_id) ON CONFLICT DO NOTHING",
        )
        .bind(outcome.inbox.iter().map(|mark| mark.consumer.clone()).collect::<Vec<String>>())
        .bind(outcome.inbox.iter().map(|mark| mark.event_id.clone()).collect::<Vec<String>>())
        .execute(&mut **db)
        .await
        .map_err(sql_error)?;
    }
    write_fx(db, outcome).await?;
    if !outcome.events.is_empty() {
        // Take the outbox lock last and hold it to commit: event sequences and the positions
        // new transfers take (`transfers.position`, migration 0010) are then in commit order.
        sqlx::query("SELECT value FROM counters WHERE name = 'outbox' FOR UPDATE")
            .execute(&mut **db)
            .await
            .map_err(sql_error)?;
    } else if !outcome.transfers_inserted.is_empty() {
        return Err(StoreError::Invariant("new transfers without their events".to_owned()));
    }
    insert_transfers(db, &outcome.transfers_inserted).await?;
    if !outcome.transfers_updated.is_empty() {
        let updated = &outcome.transfers_updated;
        sqlx::query(
            "UPDATE transfers t SET status = u.status, captured_amount = u.captured_amount, updated_at = u.updated_at \
             FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS u(id, status, captured_amount, updated_at) \
             WHERE t.id = u.id",
        )
        .bind(updated.iter().map(|t| t.id.to_string()).collect::<Vec<String>>())
        .bind(updated.iter().map(|t| t.status.as_str().to_owned()).collect::<Vec<String>>())
        .bind(updated.iter().map(|t| t.captured_amount).collect::<Vec<i64>>())
        .bind(updated.iter().map(|t| t.updated_at.as_unix_micros()).collect::<Vec<i64>>())
        .execute(&mut **db)
        .await
        .map_err(sql_error)?;
    }
    if !outcome.events.is_empty() {
        let events = &outcome.events;
        sqlx::query(
            "INSERT INTO outbox (id, tenant, kind, subject_id, at, record, actor, traceparent) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], \
             $6::bytea[], $7::text[], $8::text[])",
        )
        .bind(events.iter().map(|e| e.id.to_string()).collect::<Vec<String>>())
        .bind(events.iter().map(|e| e.tenant.to_string()).collect::<Vec<String>>())
        .bind(events.iter().map(|e| e.kind.as_str().to_owned()).collect::<Vec<String>>())
        .bind(events.iter().map(|e| e.subject_id()).collect::<Vec<String>>())
        .bind(events.iter().map(|e| e.at.as_unix_micros()).collect::<Vec<i64>>())
        .bind(events.iter().map(crate::decode::event_record).collect::<Vec<Vec<u8>>>())
        .bind(events.iter().map(|e| e.actor.clone()).collect::<Vec<Option<String>>>())
        .bind(events.iter().map(|e| e.trace.clone()).collect::<Vec<Option<String>>>())
        .execute(&mut **db)
        .await
        .map_err(sql_error)?;
    }
    Ok(())
}

/// Rates and quotes a batch set, created or used.
pub(crate) async fn write_fx(
    db: &mut Transaction<'_, Postgres>,
    outcome: &Outcome,
) -> StoreResult<()> {
    if !outcome.rates_set.is_empty() {
        let rows: Vec<RawRate> = outcome.rates_set.iter().map(RawRate::of).collect();
        let text = |f: &dyn Fn(&RawRate) -> String| rows.iter().map(f).collect::<Vec<String>>();
        sqlx::query(&format!(
            "INSERT INTO fx_rates ({RATE_COLUMNS}) SELECT * FROM UNNEST($1::text[], $2::text[], \
             $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[])"
        ))
        .bind(text(&|r| r.tenant.clone()))
        .bind(text(&|r| r.base.clone()))
        .bind(text(&|r| r.quote.clone()))
        .bind(text(&|r| r.rate.clone()))
        .bind(text(&|r| r.source.clone()))
        .bind(rows.iter().map(|r| r.valid_from).collect::<Vec<i64>>())
        .bind(rows.iter().map(|r| r.set_at).collect::<Vec<i64>>())
        .execute(&mut **db)
        .await
        .map_err(sql_error)?;
    }
    if !outcome.quotes_created.is_empty() {
        let rows: Vec<RawQuote> = outcome.quotes_created.iter().map(RawQuote::of).collect();
        sqlx::query(&format!(
            "INSERT INTO fx_quotes ({QUOTE_COLUMNS}) SELECT * FROM UNNEST($1::text[], $2::text[], \
             $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::text[], $8::bigint[])"
        ))
        .bind(rows.iter().map(|r| r.id.clone()).collect::<Vec<String>>())
        .bind(rows.iter().map(|r| r.tenant.clone()).collect::<Vec<String>>())
        .bind(rows.iter().map(|r| r.idempotency_key.clone()).collect::<Vec<Option<String>>>())
        .bind(rows.iter().map(|r| r.terms.clone()).collect::<Vec<String>>())
        .bind(rows.iter().map(|r| r.created_at).collect::<Vec<i64>>())
        .bind(rows.iter().map(|r| r.expires_at).collect::<Vec<i64>>())
        .bind(rows.iter().map(|r| r.used_by.clone()).collect::<Vec<Option<String>>>())
        .bind(rows.iter().map(|r| r.used_at).collect::<Vec<Option<i64>>>())
        .execute(&mut **db)
        .await
        .map_err(sql_error)?;
    }
    if !outcome.quotes_used.is_empty() {
        let rows: Vec<RawQuote> = outcome.quotes_used.iter().map(RawQuote::of).collect();
        let result = sqlx::query(
            "UPDATE fx_quotes q SET used_by = u.used_by, used_at = u.used_at FROM UNNEST($1::text[], \
             $2::text[], $3::bigint[]) AS u(id, used_by, used_at) WHERE q.id = u.id AND q.used_by IS NULL",
        )
        .bind(rows.iter().map(|r| r.id.clone()).collect::<Vec<String>>())
        .bind(rows.iter().map(|r| r.used_by.clone()).collect::<Vec<Option<String>>>())
        .bind(rows.iter().map(|r| r.used_at).collect::<Vec<Option<i64>>>())
        .execute(&mut **db)
        .await
        .map_err(sql_error)?;
        if result.rows_affected() != rows.len() as u64 {
            return Err(StoreError::Conflict("a quote was used meanwhile".to_owned()));
        }
    }
    Ok(())
}

pub(crate) fn to_i64(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
