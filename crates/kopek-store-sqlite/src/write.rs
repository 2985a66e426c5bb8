//! The write path: loading a batch's state, and writing its outcome (rows, postings,
//! events and the carried events) in one SQLite transaction.

use crate::*;

/// `key_hash` as the `transfers.key_hash` column stores it (the same 64 bits, signed).
pub(crate) fn key_hash_column(tenant: &str, key: &str) -> i64 {
    key_hash_column_of(tenant.as_bytes(), key.as_bytes())
}

pub(crate) fn key_hash_column_of(tenant: &[u8], key: &[u8]) -> i64 {
    i64::from_ne_bytes(key_hash_of(tenant, key).to_ne_bytes())
}

/// Registers `kopek_key_hash(tenant, key)`, `key_hash_column` in SQL, on a connection that
/// migrates: migration 0013 fills the column with it.
pub(crate) fn register_key_hash(connection: &Connection) -> StoreResult<()> {
    use rusqlite::functions::FunctionFlags;
    connection
        .create_scalar_function(
            "kopek_key_hash",
            2,
            FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
            |context| {
                let tenant = context.get_raw(0).as_bytes().map_err(|error| {
                    rusqlite::Error::UserFunctionError(format!("tenant: {error}").into())
                })?;
                let key = context.get_raw(1).as_bytes().map_err(|error| {
                    rusqlite::Error::UserFunctionError(format!("key: {error}").into())
                })?;
                Ok(key_hash_column_of(tenant, key))
            },
        )
        .map_err(sql_error)
}

/// The transfer a tenant's idempotency key names: found by the key's hash, compared in full.
pub(crate) fn transfer_by_key_in(
    connection: &Connection,
    tenant: &str,
    key: &str,
) -> StoreResult<Option<Transfer>> {
    let sql = format!(
        "SELECT {TRANSFER_COLUMNS} FROM transfers \
         WHERE key_hash = ?1 AND tenant = ?2 AND idempotency_key = ?3"
    );
    let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
    let row = statement
        .query_row(rusqlite::params![key_hash_column(tenant, key), tenant, key], transfer_from_row)
        .optional()
        .map_err(sql_error)?;
    row.map(|decoded| decoded.map_err(StoreError::Corrupt)).transpose()
}

pub(crate) fn load_state(connection: &Connection, keys: &Keys) -> StoreResult<State> {
    let mut transfers = BTreeMap::new();
    for (tenant, key) in &keys.idempotency_keys {
        if let Some(transfer) = transfer_by_key_in(connection, tenant.as_str(), key.as_str())? {
            transfers.insert(transfer.id, transfer);
        }
    }
    {
        let sql = format!("SELECT {TRANSFER_COLUMNS} FROM transfers WHERE id = ?1");
        let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
        for id in &keys.transfer_ids {
            let row = statement.query_row([id.to_string()], transfer_from_row).optional();
            if let Some(transfer) =
                row.map_err(sql_error)?.map(|decoded| decoded.map_err(StoreError::Corrupt))
            {
                let transfer = transfer?;
                transfers.insert(transfer.id, transfer);
            }
        }
    }
    // The other records of every conversion a loaded transfer belongs to.
    let conversions: BTreeSet<String> = transfers
        .values()
        .filter_map(|transfer: &Transfer| transfer.fx.as_ref().map(|fx| fx.quote_id.to_string()))
        .collect();
    if !conversions.is_empty() {
        let sql = format!("SELECT {TRANSFER_COLUMNS} FROM transfers WHERE quote_id = ?1");
        let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
        for quote in &conversions {
            let rows = statement.query_map([quote], transfer_from_row).map_err(sql_error)?;
            for transfer in rows {
                let transfer = decoded(transfer)?;
                transfers.insert(transfer.id, transfer);
            }
        }
    }
    let mut quotes = BTreeMap::new();
    {
        let sql = format!("SELECT {QUOTE_COLUMNS} FROM fx_quotes WHERE id = ?1");
        let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
        for id in &keys.quotes {
            if let Some(row) = statement
                .query_row([id.to_string()], quote_from_row)
                .optional()
                .map_err(sql_error)?
            {
                let quote = row.map_err(StoreError::Corrupt)?;
                quotes.insert(quote.id, quote);
            }
        }
        let sql = format!(
            "SELECT {QUOTE_COLUMNS} FROM fx_quotes WHERE tenant = ?1 AND idempotency_key = ?2"
        );
        let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
        for (tenant, key) in &keys.quote_keys {
            if let Some(row) = statement
                .query_row([tenant.as_str(), key.as_str()], quote_from_row)
                .optional()
                .map_err(sql_error)?
            {
                let quote = row.map_err(StoreError::Corrupt)?;
                quotes.insert(quote.id, quote);
            }
        }
    }
    let mut account_ids = keys.accounts.clone();
    for quote in quotes.values() {
        account_ids.extend(Keys::quote_accounts(quote));
    }
    for transfer in transfers.values() {
        account_ids.extend(transfer.debit_account.iter().cloned());
        account_ids.extend(transfer.credit_account.iter().cloned());
    }
    let last_user_number = if keys.allocated_users.is_empty() {
        0
    } else {
        let value: i64 = connection
            .prepare_cached("SELECT value FROM counters WHERE name = 'user_number'")
            .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
            .map_err(sql_error)?;
        let last = u64::try_from(value)
            .map_err(|_| StoreError::Corrupt("negative user counter".to_owned()))?;
        for (offset, (tenant, currency)) in keys.allocated_users.iter().enumerate() {
            let user = UserId::from_number(last + 1 + offset as u64).in_tenant(tenant);
            account_ids.insert(user.account(*currency));
        }
        last
    };
    let mut accounts = Vec::with_capacity(account_ids.len());
    let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1");
    let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
    for id in &account_ids {
        if let Some(decoded) =
            statement.query_row([id.as_str()], account_from_row).optional().map_err(sql_error)?
        {
            accounts.push(decoded.map_err(StoreError::Corrupt)?);
        }
    }
    let mut state = State::new(accounts, transfers.into_values());
    state.last_user_number = last_user_number;
    state.quotes = quotes;
    {
        let sql = format!(
            "SELECT {RATE_COLUMNS} FROM fx_rates WHERE tenant = ?1 AND base = ?2 AND quote = ?3 \
             ORDER BY valid_from DESC LIMIT 1"
        );
        let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
        for (tenant, base, quote) in &keys.rate_pairs {
            if let Some(row) = statement
                .query_row([tenant.as_str(), base.code(), quote.code()], rate_from_row)
                .optional()
                .map_err(sql_error)?
            {
                let rate = row.map_err(StoreError::Corrupt)?;
                state.rates.insert((tenant.clone(), *base, *quote), rate);
            }
        }
    }
    {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1");
        let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
        for id in &keys.users {
            if let Some(decoded) =
                statement.query_row([id.as_str()], user_from_row).optional().map_err(sql_error)?
            {
                let user = decoded.map_err(StoreError::Corrupt)?;
                state.users.insert(user.id.clone(), user);
            }
        }
    }
    {
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?1");
        let mut statement = connection.prepare_cached(&sql).map_err(sql_error)?;
        for id in &keys.orders {
            if let Some(decoded) =
                statement.query_row([id.as_str()], order_from_row).optional().map_err(sql_error)?
            {
                let order = decoded.map_err(StoreError::Corrupt)?;
                state.orders.insert(order.id.clone(), order);
            }
        }
    }
    Ok(state)
}

/// Writes what a batch decided; of the accounts it changed, only those `write_change` names
/// (the projection leaves out accounts a later frame of the same transaction changes again).
/// Its events take the next sequences in their order; a posted transfer's `TransferPosted`
/// is carried by its transfers row when it renders back exactly (`carried`), every other
/// event is an outbox row.
pub(crate) fn write_outcome(
    connection: &Connection,
    outcome: &Outcome,
    write_change: impl Fn(&AccountId) -> bool,
) -> StoreResult<()> {
    let first = last_event_sequence_in(connection)? + 1;
    // The events a transfers row of this batch might carry: the first `TransferPosted` about
    // each transfer, with its sequence.
    let mut candidates: HashMap<TransferId, (usize, &Event)> = HashMap::new();
    for (place, event) in outcome.events.iter().enumerate() {
        if let (EventKind::TransferPosted, Subject::Transfer(transfer)) =
            (event.kind, &event.subject)
        {
            candidates.entry(transfer.id).or_insert((place, event));
        }
    }
    let mut carried = vec![false; outcome.events.len()];
    write_rows(connection, outcome, write_change, first, &candidates, &mut carried)?;
    write_events(connection, outcome, first, &carried)
}

/// The transfers row that carries the last event it holds (migration 0014), through the
/// `transfers_by_event` index: `SELECT <columns> {LAST_CARRIED}`.
pub(crate) const LAST_CARRIED: &str =
    "FROM transfers WHERE event_sequence IS NOT NULL ORDER BY event_sequence DESC LIMIT 1";

/// The last event's sequence in either table (0: none).
pub(crate) fn last_event_sequence_in(connection: &Connection) -> StoreResult<i64> {
    connection
        .prepare_cached(&format!(
            "SELECT MAX(COALESCE((SELECT MAX(sequence) FROM outbox), 0), \
             COALESCE((SELECT event_sequence {LAST_CARRIED}), 0))"
        ))
        .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
        .map_err(sql_error)
}

/// The outbox rows: each event no transfers row carries, at its sequence, in the record
/// encoding (payload format 2 or 3); its JSON document is rendered when read.
pub(crate) fn write_events(
    connection: &Connection,
    outcome: &Outcome,
    first: i64,
    carried: &[bool],
) -> StoreResult<()> {
    let mut statement = connection
        .prepare_cached(
            "INSERT INTO outbox (sequence, id, tenant, kind, subject_id, at, payload, actor, \
             traceparent) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .map_err(sql_error)?;
    let stored = |place: usize| !carried.get(place).copied().unwrap_or(false);
    // The transfers rows as this batch leaves them: an event about one of them refers to it
    // (payload format 3) rather than writing the transfer again.
    let rows: HashMap<TransferId, &Transfer> = if outcome
        .events
        .iter()
        .enumerate()
        .any(|(place, event)| stored(place) && matches!(event.subject, Subject::Transfer(_)))
    {
        outcome
            .transfers_inserted
            .iter()
            .chain(&outcome.transfers_updated)
            .map(|transfer| (transfer.id, transfer))
            .collect()
    } else {
        HashMap::new()
    };
    for (place, event) in outcome.events.iter().enumerate().filter(|(place, _)| stored(*place)) {
        let row = match &event.subject {
            Subject::Transfer(transfer) => rows.get(&transfer.id).copied(),
            _ => None,
        };
        let payload = payload::encode_event(event, row);
        // In the store's tests every event also reads back as the event it stands for.
        #[cfg(test)]
        assert_eq!(
            payload::decode(rusqlite::types::ValueRef::Blob(&payload), row.cloned()),
            Ok(kopek_store::EventBody::Record(Box::new(event.clone()))),
            "an outbox payload reads back as its event"
        );
        statement
            .execute(rusqlite::params![
                first + to_sql_int(place),
                event.id.to_string(),
                event.tenant.as_str(),
                event.kind.as_str(),
                event.subject_id(),
                event.at.as_unix_micros(),
                payload,
                event.actor,
                event.trace,
            ])
            .map_err(sql_error)?;
    }
    Ok(())
}

/// Every row of a batch but its outbox events (`write_outcome`); a transfers row carries the
/// event of `candidates` about it when it can, and marks it in `carried`.
pub(crate) fn write_rows(
    connection: &Connection,
    outcome: &Outcome,
    write_change: impl Fn(&AccountId) -> bool,
    first_event: i64,
    candidates: &HashMap<TransferId, (usize, &Event)>,
    carried: &mut [bool],
) -> StoreResult<()> {
    let run = |sql: &str, values: Vec<Value>| -> StoreResult<usize> {
        let mut statement = connection.prepare_cached(sql).map_err(sql_error)?;
        statement.execute(params(&values).as_slice()).map_err(sql_error)
    };
    let insert_account = format!(
        "INSERT INTO accounts ({ACCOUNT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
    );
    for account in &outcome.accounts_opened {
        run(&insert_account, account_params(account))?;
    }
    let mut update_account = connection
        .prepare_cached(
            "UPDATE accounts SET overdraft_limit = ?1, status = ?2, posted = ?3, pending_out = ?4, \
             pending_in = ?5, updated_at = ?6 WHERE id = ?7",
        )
        .map_err(sql_error)?;
    for account in outcome.accounts_changed.iter().filter(|account| write_change(&account.id)) {
        let limit = match account.overdraft {
            Overdraft::Limited(limit) => Some(limit),
            Overdraft::Unbounded => None,
        };
        let changed = update_account
            .execute(rusqlite::params![
                limit,
                account.status.as_str(),
                account.balance.posted,
                account.balance.pending_out,
                account.balance.pending_in,
                account.updated_at.as_unix_micros(),
                account.id.as_str(),
            ])
            .map_err(sql_error)?;
        if changed != 1 {
            return Err(StoreError::Invariant(format!(
                "account {} to update is missing",
                account.id
            )));
        }
    }
    if !outcome.transfers_inserted.is_empty() || !outcome.entries.is_empty() {
        let events = Candidates { first: first_event, candidates, carried };
        insert_transfers(connection, &outcome.transfers_inserted, &outcome.entries, events)?;
    }
    for transfer in &outcome.transfers_updated {
        let values = vec![
            Value::Text(transfer.status.as_str().to_owned()),
            Value::Integer(transfer.captured_amount),
            Value::Integer(transfer.updated_at.as_unix_micros()),
            Value::Text(transfer.id.to_string()),
        ];
        run(
            "UPDATE transfers SET status = ?1, captured_amount = ?2, updated_at = ?3 WHERE id = ?4",
            values,
        )?;
    }
    for user in &outcome.users_created {
        let values = vec![
            Value::Text(user.id.to_string()),
            Value::Text(user.name.clone()),
            Value::Integer(user.created_at.as_unix_micros()),
            Value::Text(user.tenant.to_string()),
        ];
        run("INSERT INTO users (id, name, created_at, tenant) VALUES (?1, ?2, ?3, ?4)", values)?;
    }
    if let Some(number) = outcome.last_user_number {
        let value = i64::try_from(number)
            .map_err(|_| StoreError::Invariant("user counter overflow".to_owned()))?;
        run(
            "UPDATE counters SET value = ?1 WHERE name = 'user_number'",
            vec![Value::Integer(value)],
        )?;
    }
    let insert_order = format!(
        "INSERT INTO orders ({ORDER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
    );
    for order in &outcome.orders_created {
        run(&insert_order, order_params(order))?;
    }
    for order in &outcome.orders_changed {
        let mut values = order_params(order);
        // Everything but the id goes in the SET; the id is the last parameter.
        let id = values.remove(0);
        values.push(id);
        run(
            "UPDATE orders SET tenant = ?1, user_id = ?2, amount = ?3, currency = ?4, status = ?5, \
             failure_code = ?6, failure_message = ?7, payment_id = ?8, created_at = ?9, updated_at = ?10 \
             WHERE id = ?11",
            values,
        )?;
    }
    let insert_rate =
        format!("INSERT INTO fx_rates ({RATE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
    for rate in &outcome.rates_set {
        connection
            .prepare_cached(&insert_rate)
            .and_then(|mut statement| statement.execute(params(&rate_params(rate)).as_slice()))
            .map_err(taken(format!("rate {}/{} valid from that time", rate.base, rate.quote)))?;
    }
    let insert_quote =
        format!("INSERT INTO fx_quotes ({QUOTE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
    for quote in &outcome.quotes_created {
        connection
            .prepare_cached(&insert_quote)
            .and_then(|mut statement| statement.execute(params(&quote_params(quote)).as_slice()))
            .map_err(taken(format!("quote {}", quote.id)))?;
    }
    for quote in &outcome.quotes_used {
        let changed = run(
            "UPDATE fx_quotes SET used_by = ?1, used_at = ?2 WHERE id = ?3 AND used_by IS NULL",
            vec![
                quote.used_by.map_or(Value::Null, |id| Value::Text(id.to_string())),
                quote.used_at.map_or(Value::Null, |at| Value::Integer(at.as_unix_micros())),
                Value::Text(quote.id.to_string()),
            ],
        )?;
        if changed != 1 {
            return Err(StoreError::Conflict(format!("quote {} was used meanwhile", quote.id)));
        }
    }
    for mark in &outcome.inbox {
        run(
            "INSERT OR IGNORE INTO inbox (consumer, event_id, processed_at) \
             VALUES (?1, ?2, CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER))",
            vec![Value::Text(mark.consumer.clone()), Value::Text(mark.event_id.clone())],
        )?;
    }
    Ok(())
}

/// The events a batch's transfers rows may carry (`write_outcome`).
pub(crate) struct Candidates<'a, 'e> {
    /// The sequence of the batch's first event.
    first: i64,
    /// By transfer: the place of its `TransferPosted` among the batch's events, and the event.
    candidates: &'a HashMap<TransferId, (usize, &'e Event)>,
    /// By place: whether a row carries the event.
    carried: &'a mut [bool],
}

/// Inserts transfers, each with the balances after its entries and the event it carries (if
/// any), and a posting per entry (migrations 0013 and 0014): the most numerous rows, bound
/// from borrowed values with no list of owned values built per row.
pub(crate) fn insert_transfers(
    connection: &Connection,
    transfers: &[Transfer],
    entries: &[Entry],
    events: Candidates<'_, '_>,
) -> StoreResult<()> {
    let side = |entry: &Entry| usize::from(entry.direction == Direction::Credit);
    let mut balances: HashMap<TransferId, [Option<i64>; 2]> =
        HashMap::with_capacity(entries.len() / 2);
    for entry in entries {
        balances.entry(entry.transfer_id).or_default()[side(entry)] = Some(entry.balance_after);
    }
    let placeholders: Vec<String> = (1..=37).map(|index| format!("?{index}")).collect();
    let sql = format!(
        "INSERT INTO transfers ({TRANSFER_COLUMNS}, {CARRIED_COLUMNS}, key_hash) VALUES ({})",
        placeholders.join(", ")
    );
    let mut insert = connection.prepare_cached(&sql).map_err(sql_error)?;
    let mut numbers: HashMap<TransferId, i64> = HashMap::with_capacity(balances.len());
    for transfer in transfers {
        // Most transfers have no metadata, and `{}` needs no rendering.
        let metadata = if transfer.details.metadata.is_empty() {
            std::borrow::Cow::Borrowed("{}")
        } else {
            std::borrow::Cow::Owned(metadata_to_json(&transfer.details.metadata))
        };
        let (quote_id, fx) = transfer_fx_columns(transfer);
        let mut fingerprint = [0; FINGERPRINT_STORED_LEN];
        let after = balances.get(&transfer.id).copied().unwrap_or_default();
        let carried = events.candidates.get(&transfer.id).and_then(|(place, event)| {
            let carried =
                carried::carry(event, transfer, after, events.first + to_sql_int(*place))?;
            if let Some(mark) = events.carried.get_mut(*place) {
                *mark = true;
            }
            Some(carried)
        });
        let side = |index: usize| carried.as_ref().map(|carried| carried.sides[index]);
        let [debit, credit] = [side(0), side(1)];
        let (mut id, mut event_id) = ([0; 26], [0; 26]);
        let event_id = carried.as_ref().map(|carried| carried.id.0.text(&mut event_id));
        insert
            .execute(rusqlite::params![
                transfer.id.0.text(&mut id),
                transfer.tenant.as_str(),
                transfer.idempotency_key.as_str(),
                transfer.fingerprint.stored(&mut fingerprint),
                transfer.kind.as_str(),
                transfer.action.as_str(),
                transfer.debit_account.as_ref().map(AccountId::as_str),
                transfer.credit_account.as_ref().map(AccountId::as_str),
                transfer.amount,
                transfer.currency.as_ref().map(Currency::code),
                transfer.pending_id.map(|id| id.to_string()),
                transfer.status.as_str(),
                transfer.error.as_ref().map(|error| error.code.as_str()),
                transfer.error.as_ref().map(|error| error.message.as_str()),
                transfer.expires_at.map(Timestamp::as_unix_micros),
                transfer.captured_amount,
                transfer.details.category.as_str(),
                transfer.details.description.as_str(),
                &*metadata,
                transfer.effective_at.as_unix_micros(),
                transfer.committed_at.as_unix_micros(),
                transfer.updated_at.as_unix_micros(),
                quote_id,
                fx,
                after[0],
                after[1],
                carried.as_ref().map(|carried| carried.sequence),
                event_id,
                carried.as_ref().and_then(|carried| carried.actor.as_deref()),
                carried.as_ref().and_then(|carried| carried.trace.as_deref()),
                debit.map(|side| side.pending_out),
                debit.map(|side| side.pending_in),
                debit.and_then(|side| side.limit),
                credit.map(|side| side.pending_out),
                credit.map(|side| side.pending_in),
                credit.and_then(|side| side.limit),
                key_hash_column(transfer.tenant.as_str(), transfer.idempotency_key.as_str()),
            ])
            .map_err(sql_error)?;
        let number = connection.last_insert_rowid();
        let posted = after[0].is_some() || after[1].is_some();
        if posted {
            numbers.insert(transfer.id, number);
        }
        crate::search::index_transfer(connection, transfer, number, posted)?;
    }
    let mut account_number = connection
        .prepare_cached("SELECT number FROM accounts WHERE id = ?1")
        .map_err(sql_error)?;
    let mut insert_posting = connection
        .prepare_cached("INSERT INTO postings (account, sequence) VALUES (?1, ?2)")
        .map_err(sql_error)?;
    for entry in entries {
        let Some(number) = numbers.get(&entry.transfer_id) else {
            return Err(StoreError::Invariant(format!(
                "an entry names transfer {}, which this batch does not insert",
                entry.transfer_id
            )));
        };
        let account: i64 = account_number
            .query_row([entry.account_id.as_str()], |row| row.get(0))
            .optional()
            .map_err(sql_error)?
            .ok_or_else(|| {
                StoreError::Invariant(format!(
                    "an entry names account {}, which is missing",
                    entry.account_id
                ))
            })?;
        let sequence = number * 2 + i64::try_from(side(entry)).unwrap_or(0);
        insert_posting.execute([account, sequence]).map_err(sql_error)?;
    }
    Ok(())
}

/// One consumer effect, inside the consumer's transaction. Totals use checked arithmetic:
/// SQLite would silently turn an overflowing integer into a float.
pub(crate) fn apply_effect(
    connection: &Connection,
    effect: &Effect,
    now: Timestamp,
) -> StoreResult<()> {
    match effect {
        Effect::Deliver {
            delivery_id,
            subscription_id,
            event_id,
            event_type,
            body,
            max_attempts,
        } => {
            connection
                .prepare_cached(
                    "INSERT OR IGNORE INTO webhook_deliveries (id, subscription_id, event_id, event_type, body, \
                     status, attempts, dead_after, next_attempt_at, claimed_until, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?7, 0, ?7, ?7)",
                )
                .and_then(|mut statement| {
                    statement.execute(rusqlite::params![
                        delivery_id,
                        subscription_id,
                        event_id,
                        event_type,
                        body,
                        i64::from(*max_attempts),
                        now.as_unix_micros()
                    ])
                })
                .map_err(sql_error)?;
            Ok(())
        }
        Effect::Spend { tenant, user, category, currency, amount_minor } => {
            let current: Option<(i64, i64)> = connection
                .prepare_cached(
                    "SELECT total_minor, transfers FROM spending \
                     WHERE tenant = ?1 AND user_id = ?2 AND category = ?3 AND currency = ?4",
                )
                .and_then(|mut statement| {
                    statement
                        .query_row([tenant, user, category, currency], |row| {
                            Ok((row.get(0)?, row.get(1)?))
                        })
                        .optional()
                })
                .map_err(sql_error)?;
            let (total, transfers) = current.unwrap_or((0, 0));
            let total = total.checked_add(*amount_minor).ok_or_else(|| {
                StoreError::Invariant(format!(
                    "the spending total of {user} in {category:?} {currency} would pass the largest amount"
                ))
            })?;
            connection
                .prepare_cached(
                    "INSERT INTO spending (tenant, user_id, category, currency, total_minor, transfers, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (tenant, user_id, category, currency) \
                     DO UPDATE SET total_minor = excluded.total_minor, transfers = excluded.transfers, \
                     updated_at = excluded.updated_at",
                )
                .and_then(|mut statement| {
                    statement.execute(rusqlite::params![
                        tenant,
                        user,
                        category,
                        currency,
                        total,
                        transfers.saturating_add(1),
                        now.as_unix_micros()
                    ])
                })
                .map_err(sql_error)?;
            Ok(())
        }
    }
}

pub(crate) fn to_sql_int(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The first `limit` of two lists that are each in order of `key`, in that order.
pub(crate) fn merged<T>(
    first: Vec<T>,
    second: Vec<T>,
    limit: usize,
    key: impl Fn(&T) -> u64,
) -> Vec<T> {
    let mut merged = Vec::with_capacity(limit.min(first.len() + second.len()));
    let (mut first, mut second) = (first.into_iter().peekable(), second.into_iter().peekable());
    while merged.len() < limit {
        let take_first = match (first.peek(), second.peek()) {
            (Some(a), Some(b)) => key(a) <= key(b),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        merged.extend(if take_first { first.next() } else { second.next() });
    }
    merged
}
