//! Tests of `SqliteStore` on real SQLite files: batches, events, the carried event, verify
//! and upgrades from older layouts.

use super::*;
use kopek_core::memory::SequentialIds;
use kopek_core::*;

/// Decides `batch` at a fixed time and commits it.
async fn commit(store: &SqliteStore, batch: Batch) {
    let now = Timestamp::from_unix_micros(1_700_000_000_000_000);
    let keys = batch.keys();
    store
        .write_batch(
            keys,
            Box::new(move |state| Ok(apply(state, &batch, now, &mut SequentialIds::default()))),
        )
        .await
        .expect("commit");
}

/// The layout before migration 0013: entries a table of their own again (with the rows the
/// view shows), no postings, and accounts and transfers keyed by their text ids with plain
/// rowids, the accounts' in another order than their numbers. The upgrade then runs 0013
/// on them as on a ledger written before it.
/// Outbox rows for the events transfers rows carry (migration 0014) must be written
/// first (`uncarry`).
const LAYOUT_BEFORE_POSTINGS: &str = "\
    DROP TABLE transfer_tags;
    DROP TABLE mentions;
    DROP VIEW events;
    CREATE TABLE entries_v12 AS SELECT * FROM entries;
    DROP VIEW entries;
    DROP TABLE postings;
    CREATE TABLE accounts_v12 (id TEXT PRIMARY KEY, currency TEXT NOT NULL, owner TEXT, \
        kind TEXT NOT NULL, overdraft_limit INTEGER, status TEXT NOT NULL, \
        metadata TEXT NOT NULL, posted INTEGER NOT NULL, pending_out INTEGER NOT NULL, \
        pending_in INTEGER NOT NULL, created_at INTEGER NOT NULL, \
        updated_at INTEGER NOT NULL, tenant TEXT NOT NULL DEFAULT 'default');
    INSERT INTO accounts_v12 SELECT id, currency, owner, kind, overdraft_limit, status, \
        metadata, posted, pending_out, pending_in, created_at, updated_at, tenant \
        FROM accounts ORDER BY number DESC;
    DROP TABLE accounts;
    ALTER TABLE accounts_v12 RENAME TO accounts;
    CREATE TABLE transfers_v12 (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, \
        idempotency_key TEXT NOT NULL, fingerprint TEXT NOT NULL, kind TEXT NOT NULL, \
        action TEXT NOT NULL, debit_account TEXT, credit_account TEXT, \
        amount INTEGER NOT NULL, currency TEXT, pending_id TEXT, status TEXT NOT NULL, \
        error_code TEXT, error_message TEXT, expires_at INTEGER, \
        captured_amount INTEGER NOT NULL, category TEXT NOT NULL, \
        description TEXT NOT NULL, metadata TEXT NOT NULL, effective_at INTEGER NOT NULL, \
        committed_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, quote_id TEXT, fx TEXT, \
        UNIQUE (tenant, idempotency_key));
    INSERT INTO transfers_v12 SELECT id, tenant, idempotency_key, fingerprint, kind, \
        action, debit_account, credit_account, amount, currency, pending_id, status, \
        error_code, error_message, expires_at, captured_amount, category, description, \
        metadata, effective_at, committed_at, updated_at, quote_id, fx \
        FROM transfers ORDER BY number;
    DROP TABLE transfers;
    ALTER TABLE transfers_v12 RENAME TO transfers;
    CREATE TABLE entries (sequence INTEGER PRIMARY KEY, account_id TEXT NOT NULL, \
        transfer_id TEXT NOT NULL, direction TEXT NOT NULL, amount INTEGER NOT NULL, \
        currency TEXT NOT NULL, balance_after INTEGER NOT NULL, \
        effective_at INTEGER NOT NULL, committed_at INTEGER NOT NULL);
    INSERT INTO entries SELECT * FROM entries_v12;
    DROP TABLE entries_v12;
    CREATE INDEX entries_by_account ON entries (account_id, sequence)";

/// Writes the events transfers rows carry as outbox rows, with their documents as TEXT
/// payloads (as before payload formats), the layout before migration 0014.
fn uncarry(connection: &Connection, events: &[StoredEvent]) {
    for event in events {
        connection
            .execute(
                "INSERT INTO outbox (sequence, id, tenant, kind, subject_id, at, payload, \
                 actor, traceparent) SELECT event_sequence, event_id, tenant, \
                 'TransferPosted', id, committed_at, ?2, event_actor, event_trace \
                 FROM transfers WHERE event_sequence = ?1",
                rusqlite::params![event.sequence as i64, document_text(event)],
            )
            .expect("an outbox row");
    }
}

/// An event's document, as the events side renders it for readers.
fn document(event: &StoredEvent) -> serde_json::Value {
    serde_json::to_value(kopek_events::EventDocument::of_stored(event)).expect("a document")
}

fn document_text(event: &StoredEvent) -> String {
    kopek_events::EventDocument::of_stored(event).to_json()
}

/// What a row keeps of an event the ledger decided: the event itself.
fn record(event: &kopek_core::Event) -> kopek_store::EventBody {
    kopek_store::EventBody::Record(Box::new(event.clone()))
}

/// One batch of the default tenant: open `accounts`, then make `transfers`.
fn open_then_transfer(accounts: Vec<NewAccount>, transfers: Vec<TransferRequest>) -> Batch {
    let tenant = Tenant::default_tenant();
    Batch {
        commands: vec![
            Command::new(
                tenant.clone(),
                kopek_core::Authority::Ledger,
                CommandBody::CreateAccounts(accounts),
            ),
            Command::new(
                tenant,
                kopek_core::Authority::Ledger,
                CommandBody::CreateTransfers { transfers, linking: Linking::Independent },
            ),
        ],
    }
}

/// A request of `amount` USD minor units from `debit` to `credit`.
fn usd_request(
    kind: TransferKind,
    key: &str,
    debit: &AccountId,
    credit: &AccountId,
    amount: i64,
    hold: Option<Hold>,
) -> TransferRequest {
    TransferRequest {
        idempotency_key: IdempotencyKey::parse(key).expect("key"),
        kind,
        movement: Movement::Move {
            debit_account: debit.clone(),
            credit_account: credit.clone(),
            amount,
            currency: Currency::parse("USD").expect("USD"),
            hold,
        },
        details: Details::default(),
        effective_at: None,
        open_if_missing: Vec::new(),
        fingerprint_extra: String::new(),
    }
}

/// Issue 19, finding 5: a data directory written before ids belonged to their tenant
/// (another tenant's rows keyed by their bare ids) is upgraded on open: the rows move to
/// their tenant's keys, every reference follows, and the books verify before and after.
#[tokio::test]
async fn another_tenants_rows_move_to_their_keys_on_upgrade() {
    use kopek_store::conformance;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path()).expect("open");
    conformance::other_tenant_before_upgrade(&store).await;
    let events = store.events_after(None, 0, 10_000).await.expect("events");
    drop(store);
    {
        let connection = Connection::open(dir.path().join(DATABASE_FILE_NAME)).expect("open");
        uncarry(&connection, &events);
        connection
            .execute_batch(&format!(
                "{LAYOUT_BEFORE_POSTINGS};\n{};\nDROP TABLE projection",
                conformance::old_layout_statements(9).join(";\n")
            ))
            .expect("the old layout");
        let bare: i64 = connection
            .query_row("SELECT COUNT(*) FROM accounts WHERE id = 'alice'", [], |row| row.get(0))
            .expect("count");
        assert_eq!(bare, 1, "the old layout keys acme's alice bare");
        let numbered: i64 = connection
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('transfers') WHERE name = 'number'",
                [],
                |row| row.get(0),
            )
            .expect("columns");
        assert_eq!(numbered, 0, "the old layout's transfers have no number");
    }
    let store = SqliteStore::open(dir.path()).expect("the upgrade runs on open");
    conformance::other_tenant_after_upgrade(&store).await;
}

#[tokio::test]
async fn one_process_writes_a_data_dir_at_a_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = SqliteStore::open(dir.path()).expect("open");
    let second =
        SqliteStore::open(dir.path()).err().map(|error| error.to_string()).unwrap_or_default();
    assert!(second.contains("in use by another kopek process"), "{second}");
    let reader =
        SqliteStore::open_read_only(dir.path()).expect("a reader may open beside the writer");
    assert!(reader.verify().await.expect("verify").is_ok());
    let keys = Batch::default().keys();
    let refused = reader.write_batch(keys, Box::new(|_| Err("unreachable".to_owned()))).await;
    assert!(matches!(refused, Err(StoreError::Unavailable(_))), "a read-only store never writes");
    drop(first);
    SqliteStore::open(dir.path()).expect("the lock is released with the store");
    let missing =
        SqliteStore::open_read_only(&dir.path().join("nowhere")).err().map(|e| e.to_string());
    assert!(missing.unwrap_or_default().contains("no ledger found"));
}

/// A large batch stores each event with its own row, in order and smaller than its
/// document; the checkpoint thread empties the WAL.
#[tokio::test]
async fn a_large_batch_stores_every_event_document_with_its_row() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path()).expect("open");
    let usd = Currency::parse("USD").expect("USD");
    let count = 300;
    let accounts: Vec<NewAccount> = (0..count)
        .map(|index| {
            NewAccount::user(AccountId::parse(&format!("big-{index:04}")).expect("id"), usd)
        })
        .collect();
    let batch = Batch {
        commands: vec![Command::new(
            Tenant::default_tenant(),
            kopek_core::Authority::Ledger,
            CommandBody::CreateAccounts(accounts),
        )],
    };
    let size_before = std::fs::metadata(store.path()).expect("file").len();
    commit(&store, batch).await;
    let events = store.events_after(None, 0, 1_000).await.expect("events");
    assert_eq!(events.len(), count);
    for (index, event) in events.iter().enumerate() {
        let document = document(event);
        assert_eq!(document["subject"]["id"], format!("big-{index:04}"));
        assert_eq!(document["id"], event.id.as_str());
    }
    let raw = Connection::open(store.path()).expect("open file");
    let stored: Vec<u8> = raw
        .query_row("SELECT payload FROM outbox ORDER BY sequence LIMIT 1", [], |row| row.get(0))
        .expect("a blob payload");
    assert_eq!(stored[0], 2, "format 2");
    let rendered = document_text(&events[0]).len();
    assert!(stored.len() < rendered / 2, "{} bytes stored, {rendered} rendered", stored.len());
    // Only a checkpoint moves the committed pages from the WAL into the database file,
    // and the writer leaves that to the checkpoint thread.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(store.path()).expect("file").len() < size_before + 100_000 {
        assert!(std::time::Instant::now() < deadline, "no checkpoint copied the batch");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An event about a settled transfer keeps only a reference to the transfer's row
/// (payload format 3) and reads back as the same document; a pending hold's event, whose
/// row changes later, keeps its transfer (format 2); a row that went missing is an error,
/// not a wrong document.
#[tokio::test]
async fn an_event_about_a_settled_transfer_refers_to_its_row() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path()).expect("open");
    let usd = Currency::parse("USD").expect("USD");
    let (a, b) = (AccountId::parse("a").expect("id"), AccountId::parse("b").expect("id"));
    let deposit = usd_request(TransferKind::Deposit, "d1", &AccountId::world(usd), &a, 120, None);
    let hold = Some(Hold { timeout_seconds: None });
    let batch = open_then_transfer(
        vec![NewAccount::user(a.clone(), usd), NewAccount::user(b.clone(), usd)],
        vec![
            deposit,
            usd_request(TransferKind::Transfer, "h1", &a, &b, 120, hold),
            usd_request(TransferKind::Transfer, "x1", &a, &b, 500, None),
        ],
    );
    commit(&store, batch).await;
    let events = store.events_after(None, 0, 100).await.expect("events");
    let raw = Connection::open(store.path()).expect("open file");
    let formats: Vec<(String, u8)> = raw
        .prepare("SELECT kind, payload FROM outbox ORDER BY sequence")
        .expect("prepare")
        .query_map([], |row| Ok((row.get(0)?, row.get::<_, Vec<u8>>(1)?[0])))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let format = |kind: &str| formats.iter().find(|(stored, _)| stored == kind).map(|row| row.1);
    assert_eq!(format("TransferDeclined"), Some(3), "refers to its row: {formats:?}");
    assert_eq!(format("HoldPlaced"), Some(2), "a pending hold is written out: {formats:?}");
    assert_eq!(format("TransferPosted"), None, "its transfer row carries it: {formats:?}");
    let declined = events.iter().find(|event| event.kind == "TransferDeclined").expect("declined");
    let document = document(declined);
    assert_eq!(document["subject"]["amount_minor"], 500);
    assert_eq!(document["subject"]["status"], "declined");
    assert_eq!(document["subject"]["id"], declined.subject_id.as_str());
    raw.execute("DELETE FROM transfers WHERE id = ?1", [declined.subject_id.as_str()])
        .expect("lose the row");
    let problem = store.events_after(None, 0, 100).await.expect_err("row missing");
    assert!(problem.to_string().contains("row, which is missing"), "{problem}");
}

/// A posted transfer's `TransferPosted` is carried by its transfers row, not an outbox row
/// (migration 0014): the events of both tables read back in one order with no gap, each
/// the document `apply` decided, for the feed, one tenant, the audit trail and the
/// watermark; a second batch continues the order; `verify` reports a carried event on a
/// row that cannot render it, and a sequence in both tables.
#[tokio::test]
async fn a_posted_transfer_carries_its_event() {
    assert_eq!(
        TRANSFER_COLUMNS.split(',').count(),
        TRANSFER_COLUMN_COUNT,
        "carried columns' place"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path()).expect("open");
    let usd = Currency::parse("USD").expect("USD");
    let (a, b) = (AccountId::parse("a").expect("id"), AccountId::parse("b").expect("id"));
    let world = AccountId::world(usd);
    let hold = Some(Hold { timeout_seconds: None });
    let mut batches = vec![
        open_then_transfer(
            vec![NewAccount::user(a.clone(), usd), NewAccount::user(b.clone(), usd)],
            vec![
                usd_request(TransferKind::Deposit, "d1", &world, &a, 300, None),
                usd_request(TransferKind::Transfer, "h1", &a, &b, 100, hold),
                usd_request(TransferKind::Transfer, "t1", &a, &b, 50, None),
            ],
        ),
        open_then_transfer(
            Vec::new(),
            vec![
                usd_request(TransferKind::Transfer, "x1", &b, &a, 9_000, None),
                usd_request(TransferKind::Transfer, "t2", &b, &a, 20, None),
            ],
        ),
    ];
    // The second batch's commands come from a key in a trace: its events name both.
    for command in &mut batches[1].commands {
        command.actor = Some("key-1".to_owned());
        command.trace = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned());
    }
    /// Ids from `.0` on, so that the batches' ids differ.
    struct IdsFrom(u128);
    impl IdSource for IdsFrom {
        fn next_ulid(&mut self) -> Ulid {
            self.0 += 1;
            Ulid::from_u128(self.0)
        }
    }
    let mut decided = Vec::new();
    let mut transfer_ids = Vec::new();
    for (index, batch) in batches.into_iter().enumerate() {
        let keys = batch.keys();
        let now = Timestamp::from_unix_micros(1_700_000_000_000_000 + to_sql_int(index));
        let mut ids = IdsFrom(1_000 * (index as u128 + 1));
        let committed = store
            .write_batch(keys, Box::new(move |state| Ok(apply(state, &batch, now, &mut ids))))
            .await
            .expect("commit");
        decided.extend(committed.records.events.iter().cloned());
        transfer_ids.extend(committed.records.transfers_inserted.iter().map(|t| t.id.0));
    }
    let events = store.events_after(None, 0, 100).await.expect("events");
    let records: Vec<_> = decided.iter().map(record).collect();
    let read: Vec<_> = events.iter().map(|event| event.body.clone()).collect();
    assert_eq!(read, records);
    let sequences: Vec<u64> = events.iter().map(|event| event.sequence).collect();
    assert_eq!(sequences, (1..=decided.len() as u64).collect::<Vec<_>>(), "one order");
    let raw = Connection::open(store.path()).expect("open file");
    let count = |sql: &str| -> i64 { raw.query_row(sql, [], |row| row.get(0)).expect(sql) };
    let carried = count("SELECT COUNT(*) FROM transfers WHERE event_sequence IS NOT NULL");
    assert_eq!(carried, 3, "d1, t1 and t2 carry their TransferPosted");
    assert_eq!(count("SELECT COUNT(*) FROM outbox WHERE kind = 'TransferPosted'"), 0);

    // Pages cut across both tables, and one tenant's read sees the same.
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = store.events_after(Some("default"), after, 2).await.expect("page");
        let Some(last) = page.last() else { break };
        after = last.sequence;
        paged.extend(page.into_iter().map(|event| event.body));
    }
    assert_eq!(paged, records);
    assert!(store.events_after(Some("acme"), 0, 100).await.expect("acme").is_empty());
    assert_eq!(store.last_event_sequence().await.expect("last"), decided.len() as u64);

    // The audit trail: the second batch's two events, the carried one among them, in
    // order; a limit and a time window apply to both tables.
    let second = Timestamp::from_unix_micros(1_700_000_000_000_001);
    let trail = |since: Timestamp, limit: usize| {
        let query = AuditQuery {
            actor: Some("key-1".to_owned()),
            since,
            until: Timestamp::from_unix_micros(i64::MAX),
            limit,
        };
        let store = store.clone();
        async move {
            let trail = store.audit(&query).await.expect("audit");
            trail.into_iter().map(|entry| (entry.kind, entry.sequence)).collect::<Vec<_>>()
        }
    };
    let last = decided.len() as u64;
    let everything = trail(Timestamp::from_unix_micros(0), 100).await;
    assert_eq!(
        everything,
        [("TransferDeclined".to_owned(), last - 1), ("TransferPosted".to_owned(), last)]
    );
    assert_eq!(trail(second, 1).await, everything[..1]);
    let after_second = Timestamp::from_unix_micros(second.as_unix_micros() + 1);
    assert!(trail(after_second, 100).await.is_empty(), "the window applies to both");
    // The last event is carried: the watermark is its time and the newest id.
    let watermark = store.watermark().await.expect("watermark");
    let newest = decided.iter().map(|event| event.id.0).chain(transfer_ids).max();
    assert_eq!(watermark.largest_id, newest);
    assert_eq!(watermark.committed_at, Some(second));
    assert!(store.verify().await.expect("verify").is_ok());

    store.close_writer();
    raw.execute("UPDATE transfers SET status = 'declined' WHERE idempotency_key = 't1'", [])
        .expect("tamper status");
    raw.execute(
        "UPDATE outbox SET sequence = (SELECT event_sequence FROM transfers \
         WHERE idempotency_key = 't2') WHERE kind = 'TransferDeclined'",
        [],
    )
    .expect("tamper sequence");
    let problems = store.verify().await.expect("verify").problems.join("\n");
    assert!(problems.contains("1 transfers carry an event they cannot render"), "{problems}");
    assert!(problems.contains("1 event sequences are both an outbox row"), "{problems}");
}

/// A key is found by its 64-bit hash and compared in full: with another transfer's row
/// under the same hash (a collision, simulated), each key still finds its own transfer,
/// and `verify` reports the hash that is not its key's.
#[tokio::test]
async fn a_key_is_found_by_its_hash_and_compared_in_full() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path()).expect("open");
    let usd = Currency::parse("USD").expect("USD");
    let a = AccountId::parse("a").expect("id");
    let world = AccountId::world(usd);
    let deposit =
        |key: &str, amount: i64| usd_request(TransferKind::Deposit, key, &world, &a, amount, None);
    let tenant = Tenant::default_tenant();
    let batch = open_then_transfer(
        vec![NewAccount::user(a.clone(), usd)],
        vec![deposit("d1", 100), deposit("d2", 200)],
    );
    commit(&store, batch).await;
    assert!(store.verify().await.expect("verify").is_ok());
    let raw = Connection::open(store.path()).expect("open file");
    raw.execute(
        "UPDATE transfers SET key_hash = \
         (SELECT key_hash FROM transfers WHERE idempotency_key = 'd2') \
         WHERE idempotency_key = 'd1'",
        [],
    )
    .expect("two rows under d2's hash");
    let amount = |key: &str| {
        let store = &store;
        let tenant = tenant.clone();
        let key = IdempotencyKey::parse(key).expect("key");
        async move { store.transfer_by_key(&tenant, &key).await.expect("read").map(|t| t.amount) }
    };
    assert_eq!(amount("d2").await, Some(200), "d2 finds its own row, not d1's");
    assert_eq!(amount("d1").await, None, "d1's row is no longer under d1's hash");
    let problems = store.verify().await.expect("verify").problems.join("\n");
    assert!(problems.contains("has a key hash that is not its idempotency key's"), "{problems}");
    raw.execute("UPDATE transfers SET idempotency_key = 'd2' WHERE idempotency_key = 'd1'", [])
        .expect("one key, two transfers");
    let problems = store.verify().await.expect("verify").problems.join("\n");
    assert!(
        problems.contains("idempotency key d2 of tenant default names 2 transfers"),
        "{problems}"
    );
}

/// `verify` must notice books that no longer add up, whoever changed the rows.
#[tokio::test]
async fn verify_reports_tampered_rows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path()).expect("open");
    let usd = Currency::parse("USD").expect("USD");
    let a = AccountId::parse("a").expect("id");
    let deposit = usd_request(TransferKind::Deposit, "d1", &AccountId::world(usd), &a, 500, None);
    let batch = open_then_transfer(vec![NewAccount::user(a, usd)], vec![deposit]);
    commit(&store, batch).await;
    assert!(store.verify().await.expect("verify").is_ok());
    let path = store.path().to_owned();
    store.close_writer();
    let tamper = Connection::open(&path).expect("open file");
    tamper
        .execute("UPDATE accounts SET posted = posted + 1 WHERE id = 'a'", [])
        .expect("tamper balance");
    tamper
        .execute("UPDATE transfers SET event_sequence = NULL, event_id = NULL", [])
        .expect("lose the event the deposit's row carries");
    let report = store.verify().await.expect("verify");
    let problems = report.problems.join("\n");
    assert!(
        problems.contains("account a has posted balance 501 but its entries sum to 500"),
        "{problems}"
    );
    assert!(problems.contains("posted balances in USD sum to 1, not 0"), "{problems}");
    assert!(problems.contains("creation events, not 1"), "{problems}");

    // Account a posted on the debit side of its deposit too, with its balance moved to
    // match: its sum still agrees, so only the per-transfer and running-balance checks
    // can see it.
    tamper.execute("UPDATE accounts SET posted = 0 WHERE id = 'a'", []).expect("undo");
    tamper
        .execute(
            "INSERT INTO postings (account, sequence) SELECT account, sequence - 1 \
             FROM postings WHERE sequence % 2 = 1 \
             AND account = (SELECT number FROM accounts WHERE id = 'a')",
            [],
        )
        .expect("a posting too many");
    let problems = store.verify().await.expect("verify").problems.join("\n");
    assert!(!problems.contains("entries sum to"), "the sums alone agree: {problems}");
    assert!(
        problems.contains("has 3 entries that are not exactly its debit and credit"),
        "{problems}"
    );
    assert!(problems.contains("its running total is"), "the running balance: {problems}");

    // A posting of no account or of no transfer is not in any statement: verify counts it.
    tamper
        .execute("INSERT INTO postings (account, sequence) VALUES (999, 2), (1, 999)", [])
        .expect("orphan postings");
    let problems = store.verify().await.expect("verify").problems.join("\n");
    assert!(problems.contains("2 postings name no account or no transfer"), "{problems}");

    // A posting on a side that has no balance after it reads as no entry: reported, and
    // verify still runs to the end.
    tamper.execute("UPDATE transfers SET credit_balance_after = NULL", []).expect("unset");
    let problems = store.verify().await.expect("verify").problems.join("\n");
    assert!(
        problems.contains("1 postings are on a side of a transfer that has no balance after it"),
        "{problems}"
    );
}

kopek_store::conformance_tests!(async {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = crate::SqliteStore::open(dir.path()).expect("open store");
    Some((store, dir))
});

/// The embedded store reads at most `SCAN_ROWS_MAX` candidates per call: a search for a kind
/// that only the newest and the oldest of `SCAN_ROWS_MAX` + 2,002 transfers have takes two calls, the first
/// answering one match and a cursor where its scan stopped.
#[tokio::test]
async fn a_rare_search_answers_in_calls_of_a_bounded_scan() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = crate::SqliteStore::open(dir.path()).expect("open store");
    let calls = kopek_store::conformance::a_rare_match_is_found_past_the_scan_budget(&store).await;
    assert_eq!(calls, 2);
}
