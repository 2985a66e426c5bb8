//! The conformance suite every backend runs: `conformance_tests!` stamps out one test per
//! case. It takes an async expression giving `Option<(store, guard)>` for each test: `None`
//! skips (a backend whose server is not configured outside CI); the guard, such as a temp dir
//! or a throwaway database, lives as long as the test.

use crate::search::{SortOrder, TimeRange, TransferQuery};
use crate::{EventBody, Store, StoreError, StoredEntry};
use kopek_core::memory::SequentialIds;
use kopek_core::*;

#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@cases $make;
            writes_and_reads_back_a_batch,
            failed_decision_writes_nothing,
            replays_come_from_stored_keys,
            statements_page_with_a_cursor,
            balance_before_counts_strictly_earlier_entries,
            holds_due_and_next_expiry,
            accounts_list_by_owner_in_pages,
            events_come_in_sequence,
            verify_passes_on_consistent_books,
            users_get_numbers_that_survive_batches,
            orders_are_paid_once_and_listed,
            relay_lease_fences_the_cursor,
            consumers_apply_each_event_once,
            webhook_deliveries_are_claimed_retried_and_logged,
            api_keys_are_kept_listed_and_revoked,
            tenants_keep_accounts_users_and_events_apart,
            conversions_keep_rates_quotes_and_their_legs,
            transfers_are_found_by_every_filter,
            search_pages_stay_stable_while_transfers_commit,
            a_rare_match_is_found_past_the_scan_budget,
            an_account_opened_later_finds_the_transfer_declined_before,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some((store, _guard)) = $make.await else { return };
                $crate::conformance::$case(&store).await;
            }
        )*
    };
}

fn usd() -> Currency {
    Currency::parse("USD").expect("USD")
}

fn id(text: &str) -> AccountId {
    AccountId::parse(text).expect("account id")
}

fn key(text: &str) -> IdempotencyKey {
    IdempotencyKey::parse(text).expect("key")
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_unix_micros(1_700_000_000_000_000 + seconds * 1_000_000)
}

/// Runs one batch through `write_batch` with the real `apply`.
async fn run(
    store: &dyn Store,
    now: Timestamp,
    first_id: u128,
    bodies: Vec<CommandBody>,
) -> Outcome {
    let tenant = Tenant::default_tenant();
    let commands = bodies
        .into_iter()
        .map(|body| Command::new(tenant.clone(), kopek_core::Authority::Ledger, body))
        .collect();
    run_commands(store, now, first_id, commands).await
}

/// `run` with whole commands: any tenant, any sender.
async fn run_commands(
    store: &dyn Store,
    now: Timestamp,
    first_id: u128,
    commands: Vec<Command>,
) -> Outcome {
    let batch = Batch { commands };
    let keys = batch.keys();
    store
        .write_batch(
            keys,
            Box::new(move |state| {
                let mut ids = SequentialIds::default();
                for _ in 0..first_id {
                    ids.next_ulid();
                }
                Ok(apply(state, &batch, now, &mut ids))
            }),
        )
        .await
        .expect("batch commits")
        .into_outcome()
}

fn open(accounts: &[(&str, Option<&str>)]) -> CommandBody {
    CommandBody::CreateAccounts(
        accounts
            .iter()
            .map(|(name, owner)| {
                let mut account = NewAccount::user(id(name), usd());
                account.owner = owner.map(str::to_owned);
                account
            })
            .collect(),
    )
}

fn movement(
    kind: TransferKind,
    key_text: &str,
    debit: AccountId,
    credit: &str,
    minor: i64,
    hold: Option<Hold>,
    effective: Option<Timestamp>,
) -> TransferRequest {
    TransferRequest {
        idempotency_key: key(key_text),
        kind,
        movement: Movement::Move {
            debit_account: debit,
            credit_account: id(credit),
            amount: minor,
            currency: usd(),
            hold,
        },
        details: Details {
            category: "test".to_owned(),
            description: "conformance".to_owned(),
            metadata: Default::default(),
        },
        effective_at: effective,
        open_if_missing: Vec::new(),
        fingerprint_extra: String::new(),
    }
}

fn deposit(key_text: &str, account: &str, minor: i64, effective: Option<Timestamp>) -> CommandBody {
    let request = movement(
        TransferKind::Deposit,
        key_text,
        AccountId::world(usd()),
        account,
        minor,
        None,
        effective,
    );
    CommandBody::CreateTransfers { transfers: vec![request], linking: Linking::Independent }
}

fn transfer(
    key_text: &str,
    debit: &str,
    credit: &str,
    minor: i64,
    hold: Option<Hold>,
) -> CommandBody {
    let request = movement(TransferKind::Transfer, key_text, id(debit), credit, minor, hold, None);
    CommandBody::CreateTransfers { transfers: vec![request], linking: Linking::Independent }
}

fn committed(outcome: &Outcome, index: usize) -> Transfer {
    match &outcome.results[index] {
        CommandResult::Transfers(results) => match &results[0] {
            TransferResult::Committed(transfer) => transfer.clone(),
            other => panic!("expected a committed transfer, got {other:?}"),
        },
        other => panic!("expected transfer results, got {other:?}"),
    }
}

pub async fn writes_and_reads_back_a_batch(store: &dyn Store) {
    let outcome = run(
        store,
        at(1),
        0,
        vec![open(&[("a", Some("u1")), ("b", None)]), deposit("d1", "a", 1_000, None)],
    )
    .await;
    let posted = committed(&outcome, 1);
    assert_eq!(posted.status, TransferStatus::Posted);
    let a = store.account(&id("a")).await.expect("read").expect("a exists");
    assert_eq!((a.balance.posted, a.owner.as_deref(), a.currency), (1_000, Some("u1"), usd()));
    let world = store.account(&AccountId::world(usd())).await.expect("read").expect("world opened");
    assert_eq!(
        (world.balance.posted, world.kind, world.overdraft),
        (-1_000, AccountKind::System, Overdraft::Unbounded)
    );
    let read = store.transfer(posted.id).await.expect("read").expect("transfer stored");
    assert_eq!(read, posted, "a transfer reads back exactly as written");
    let by_key = store.transfer_by_key(&Tenant::default_tenant(), &key("d1")).await.expect("read");
    assert_eq!(by_key.map(|transfer| transfer.id), Some(posted.id));
    let other_tenant = Tenant::parse("other").expect("tenant");
    assert_eq!(
        store.transfer_by_key(&other_tenant, &key("d1")).await.expect("read"),
        None,
        "keys are per tenant"
    );
    let page = store.entries(&id("a"), None, 10).await.expect("read");
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].entry, outcome.entries[1]);
    assert_eq!(store.account(&id("nobody")).await.expect("read"), None);
}

pub async fn failed_decision_writes_nothing(store: &dyn Store) {
    let keys = Batch { commands: vec![] }.keys();
    let result = store.write_batch(keys, Box::new(|_state| Err("boom".to_owned()))).await;
    assert!(matches!(result, Err(StoreError::Invariant(message)) if message == "boom"));
    run(store, at(1), 0, vec![open(&[("a", None)])]).await;
    let tenant = Tenant::default_tenant();
    let batch = Batch {
        commands: vec![Command::new(
            tenant,
            kopek_core::Authority::Ledger,
            deposit("d1", "a", 500, None),
        )],
    };
    let result = store
        .write_batch(
            batch.keys(),
            Box::new(move |state| {
                let _effects = apply(state, &batch, at(2), &mut SequentialIds::default());
                Err("refused after deciding".to_owned())
            }),
        )
        .await;
    assert!(result.is_err());
    let a = store.account(&id("a")).await.expect("read").expect("a exists");
    assert_eq!(a.balance.posted, 0, "a failed batch leaves balances alone");
    assert_eq!(
        store.transfer_by_key(&Tenant::default_tenant(), &key("d1")).await.expect("read"),
        None
    );
    assert_eq!(store.verify().await.expect("verify").problems, Vec::<String>::new());
}

pub async fn replays_come_from_stored_keys(store: &dyn Store) {
    run(store, at(1), 0, vec![open(&[("a", None), ("b", None)]), deposit("d1", "a", 100, None)])
        .await;
    let first = run(store, at(2), 100, vec![transfer("t1", "a", "b", 500, None)]).await;
    let declined = committed(&first, 0);
    assert_eq!(declined.error_code(), Some(ErrorCode::InsufficientFunds));
    let again = run(
        store,
        at(3),
        200,
        vec![transfer("t1", "a", "b", 500, None), transfer("t1", "a", "b", 7, None)],
    )
    .await;
    match &again.results[..] {
        [CommandResult::Transfers(replay), CommandResult::Transfers(reuse)] => {
            assert_eq!(
                replay[0],
                TransferResult::Replayed(declined.clone()),
                "the stored verdict replays"
            );
            assert!(
                matches!(&reuse[0], TransferResult::Rejected(r) if r.code == ErrorCode::IdempotencyKeyReused)
            );
        }
        other => panic!("unexpected results {other:?}"),
    }
    assert!(again.events.is_empty(), "replays write no events");
}

pub async fn statements_page_with_a_cursor(store: &dyn Store) {
    run(store, at(1), 0, vec![open(&[("a", None)])]).await;
    let deposits = (0..7).map(|n| deposit(&format!("d{n}"), "a", 10 + n, None)).collect();
    run(store, at(2), 100, deposits).await;
    let mut cursor = None;
    let mut seen = Vec::new();
    loop {
        let page = store.entries(&id("a"), cursor, 3).await.expect("read");
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|item| (item.entry.amount, item.entry.balance_after)));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let expected: Vec<(i64, i64)> =
        (0..7).map(|n| (10 + n, (0..=n).map(|k| 10 + k).sum())).collect();
    assert_eq!(seen, expected, "every entry once, in order, with its running balance");
}

pub async fn balance_before_counts_strictly_earlier_entries(store: &dyn Store) {
    run(store, at(1), 0, vec![open(&[("a", None)])]).await;
    run(
        store,
        at(100),
        100,
        vec![
            deposit("late", "a", 5, Some(at(50))),
            deposit("early", "a", 7, Some(at(10))),
            deposit("now", "a", 11, None),
        ],
    )
    .await;
    let a = id("a");
    let before = |seconds| store.balance_before(&a, at(seconds));
    assert_eq!(
        before(10).await.expect("read"),
        Some(0),
        "an entry at the instant is not before it"
    );
    assert_eq!(before(11).await.expect("read"), Some(7));
    assert_eq!(before(51).await.expect("read"), Some(12));
    assert_eq!(before(101).await.expect("read"), Some(23));
    assert_eq!(store.balance_before(&id("ghost"), at(1)).await.expect("read"), None);

    // An entry may take effect up to a day after its commit; entries committed days later
    // come after it in the account's history.
    run(store, at(200), 200, vec![deposit("ahead", "a", 17, Some(at(200 + 3_600)))]).await;
    let days = 3 * 86_400;
    run(store, at(days), 300, vec![deposit("days later", "a", 13, None)]).await;
    assert_eq!(before(3_800).await.expect("read"), Some(23), "not yet in effect");
    assert_eq!(before(3_801).await.expect("read"), Some(40));
    assert_eq!(before(days).await.expect("read"), Some(40));
    assert_eq!(before(days + 1).await.expect("read"), Some(53));
    assert_eq!(before(days - 50).await.expect("read"), Some(40));
}

pub async fn holds_due_and_next_expiry(store: &dyn Store) {
    run(store, at(1), 0, vec![open(&[("a", None), ("b", None)]), deposit("d1", "a", 1_000, None)])
        .await;
    assert_eq!(store.next_hold_expiry().await.expect("read"), None);
    let holds = run(
        store,
        at(2),
        100,
        vec![
            transfer("h1", "a", "b", 10, Some(Hold { timeout_seconds: Some(60) })),
            transfer("h2", "a", "b", 10, Some(Hold { timeout_seconds: Some(30) })),
            transfer("h3", "a", "b", 10, Some(Hold { timeout_seconds: None })),
        ],
    )
    .await;
    let (h1, h2) = (committed(&holds, 0), committed(&holds, 1));
    assert_eq!(store.next_hold_expiry().await.expect("read"), Some(at(32)));
    assert_eq!(store.holds_due(at(31), 10).await.expect("read"), Vec::<TransferId>::new());
    assert_eq!(store.holds_due(at(62), 10).await.expect("read"), vec![h2.id, h1.id]);
    run(store, at(63), 200, vec![CommandBody::ExpireHolds(vec![h1.id, h2.id])]).await;
    assert_eq!(store.holds_due(at(100), 10).await.expect("read"), Vec::<TransferId>::new());
    assert_eq!(store.next_hold_expiry().await.expect("read"), None);
    let a = store.account(&id("a")).await.expect("read").expect("a");
    assert_eq!(a.balance.pending_out, 10, "only the hold without timeout still reserves");
    assert_eq!(
        store.transfer(h1.id).await.expect("read").map(|t| t.status),
        Some(TransferStatus::Expired)
    );
    assert_eq!(store.verify().await.expect("verify").problems, Vec::<String>::new());
}

pub async fn accounts_list_by_owner_in_pages(store: &dyn Store) {
    run(
        store,
        at(1),
        0,
        vec![open(&[("a1", Some("u1")), ("a2", Some("u2")), ("a3", Some("u1")), ("a4", None)])],
    )
    .await;
    let page = store.list_accounts(Some("default"), Some("u1"), None, 10).await.expect("read");
    let ids: Vec<String> = page.iter().map(|account| account.id.to_string()).collect();
    assert_eq!(ids, ["a1", "a3"]);
    let first = store.list_accounts(None, None, None, 2).await.expect("read");
    let rest = store.list_accounts(None, None, Some(&first[1].id), 10).await.expect("read");
    let all: Vec<String> =
        first.iter().chain(&rest).map(|account| account.id.to_string()).collect();
    assert_eq!(all, ["a1", "a2", "a3", "a4"]);
}

pub async fn events_come_in_sequence(store: &dyn Store) {
    assert_eq!(store.last_event_sequence().await.expect("read"), 0, "no events yet");
    let outcome =
        run(store, at(1), 0, vec![open(&[("a", None)]), deposit("d1", "a", 5, None)]).await;
    let events = store.events_after(None, 0, 100).await.expect("read");
    assert_eq!(events.len(), outcome.events.len());
    assert!(events.windows(2).all(|pair| pair[0].sequence < pair[1].sequence));
    let kinds: Vec<&str> = events.iter().map(|event| event.kind.as_str()).collect();
    assert_eq!(kinds, ["AccountOpened", "AccountOpened", "TransferPosted"]);
    let later = store.events_after(None, events[0].sequence, 100).await.expect("read");
    assert_eq!(later.len(), events.len() - 1);
    // Each row keeps the event the ledger recorded, not a rendering of it.
    let bodies: Vec<&EventBody> = events.iter().map(|event| &event.body).collect();
    let recorded: Vec<EventBody> =
        outcome.events.iter().map(|event| EventBody::Record(Box::new(event.clone()))).collect();
    assert_eq!(bodies, recorded.iter().collect::<Vec<_>>());
    assert_eq!(store.last_event_sequence().await.expect("read"), events[2].sequence);
}

pub async fn verify_passes_on_consistent_books(store: &dyn Store) {
    run(store, at(1), 0, vec![open(&[("a", None), ("b", None)]), deposit("d1", "a", 1_000, None)])
        .await;
    let hold = run(
        store,
        at(2),
        100,
        vec![transfer("h1", "a", "b", 300, Some(Hold { timeout_seconds: None }))],
    )
    .await;
    let hold = committed(&hold, 0);
    let capture = TransferRequest {
        idempotency_key: key("c1"),
        kind: TransferKind::Transfer,
        movement: Movement::Capture {
            pending_id: hold.id,
            amount: Some(Amount::new(100).expect("positive")),
        },
        details: Details::default(),
        effective_at: None,
        open_if_missing: Vec::new(),
        fingerprint_extra: String::new(),
    };
    run(
        store,
        at(3),
        200,
        vec![
            CommandBody::CreateTransfers {
                transfers: vec![capture],
                linking: Linking::Independent,
            },
            transfer("t1", "a", "b", 5_000, None),
        ],
    )
    .await;
    let report = store.verify().await.expect("verify");
    assert_eq!(report.problems, Vec::<String>::new());
    assert_eq!((report.accounts, report.transfers, report.entries), (3, 4, 4));
}

fn new_user(name: &str) -> CommandBody {
    CommandBody::CreateUser(NewUser { id: None, name: name.to_owned(), currency: usd() })
}

pub async fn users_get_numbers_that_survive_batches(store: &dyn Store) {
    run(store, at(1), 0, vec![new_user("petya"), new_user("vasya")]).await;
    let later = run(store, at(2), 100, vec![new_user("masha")]).await;
    match &later.results[0] {
        CommandResult::User(UserResult::Created(user, account)) => {
            assert_eq!(
                (user.id.as_str(), account.id.as_str()),
                ("3", "user:3:USD"),
                "numbers continue across batches"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    let petya = store.user(&UserId::parse("1").expect("id")).await.expect("read").expect("user 1");
    assert_eq!(petya.name, "petya");
    let account =
        store.account(&id("user:2:USD")).await.expect("read").expect("opened with the user");
    assert_eq!(account.owner.as_deref(), Some("2"));
    assert_eq!(store.user(&UserId::parse("9").expect("id")).await.expect("read"), None);
    assert!(store.verify().await.expect("verify").is_ok());
}

pub async fn orders_are_paid_once_and_listed(store: &dyn Store) {
    let buyer = UserId::parse("buyer").expect("id");
    let order = |name: &str, minor: i64| NewOrder {
        id: OrderId::parse(name).expect("order id"),
        user: buyer.clone(),
        amount: minor,
        currency: usd(),
    };
    let open_buyer = CommandBody::CreateAccounts(vec![buyer.new_account(usd())]);
    run(store, at(1), 0, vec![open_buyer, deposit("fund", "user:buyer:USD", 500, None)]).await;
    run(
        store,
        at(2),
        100,
        vec![
            CommandBody::CreateOrder(order("o1", 300)),
            CommandBody::CreateOrder(order("o2", 300)),
        ],
    )
    .await;
    assert_eq!(store.pending_orders(10).await.expect("read").len(), 2);
    let paid = run(
        store,
        at(3),
        200,
        vec![
            CommandBody::PayOrder(order("o1", 300)),
            CommandBody::PayOrder(order("o2", 300)),
            CommandBody::PayOrder(order("o1", 300)),
        ],
    )
    .await;
    let statuses: Vec<&str> = paid
        .results
        .iter()
        .map(|result| match result {
            CommandResult::Order(OrderResult::Settled(order)) => order.status.as_str(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(statuses, ["PAID", "FAILED", "PAID"]);
    let o1 = store.order(&OrderId::parse("o1").expect("id")).await.expect("read").expect("o1");
    let payment =
        store.transfer(o1.payment_id.expect("a payment")).await.expect("read").expect("payment");
    assert_eq!((payment.amount, payment.kind), (300, TransferKind::Payment));
    let o2 = store.order(&OrderId::parse("o2").expect("id")).await.expect("read").expect("o2");
    assert_eq!(o2.failure.map(|failure| failure.code), Some(ErrorCode::InsufficientFunds));
    let listed: Vec<String> = store
        .orders_of_user(&buyer, 10)
        .await
        .expect("read")
        .iter()
        .map(|o| o.id.to_string())
        .collect();
    assert_eq!(listed, ["o1", "o2"]);
    assert!(store.pending_orders(10).await.expect("read").is_empty());
    let shop = store
        .account(&Order::shop_account(&Tenant::default_tenant(), usd()))
        .await
        .expect("read")
        .expect("shop account");
    assert_eq!(shop.balance.posted, 300, "paid once, though paid twice");
    assert_eq!(store.verify().await.expect("verify").problems, Vec::<String>::new());
}

pub async fn relay_lease_fences_the_cursor(store: &dyn Store) {
    // A new sink starts at the first event.
    assert_eq!(store.relay_claim("nats/A", "one", at(10), at(20)).await.expect("claim"), Some(0));
    // A second relay waits while the lease is live, and the holder may claim again.
    assert_eq!(store.relay_claim("nats/A", "two", at(15), at(25)).await.expect("claim"), None);
    assert_eq!(store.relay_claim("nats/A", "one", at(15), at(25)).await.expect("claim"), Some(0));
    assert!(store.relay_advance("nats/A", "one", 7, at(30)).await.expect("advance"));
    assert!(!store.relay_advance("nats/A", "two", 9, at(30)).await.expect("advance"));
    // The cursor never goes back.
    assert!(store.relay_advance("nats/A", "one", 5, at(30)).await.expect("advance"));
    // Sinks are independent.
    assert_eq!(store.relay_claim("amqp/B", "two", at(15), at(25)).await.expect("claim"), Some(0));
    // Once the lease lapses another relay takes over where the first one confirmed, and the
    // first can no longer move the cursor.
    assert_eq!(store.relay_claim("nats/A", "two", at(31), at(40)).await.expect("claim"), Some(7));
    assert!(!store.relay_advance("nats/A", "one", 8, at(50)).await.expect("advance"));
    let mut cursors = store.relay_cursors().await.expect("cursors");
    cursors.sort();
    assert_eq!(cursors, [("amqp/B".to_owned(), 0), ("nats/A".to_owned(), 7)]);
}

pub async fn consumers_apply_each_event_once(store: &dyn Store) {
    use crate::{Consumed, Effect};
    let spend = |event: &str, category: &str, amount: i64| Consumed {
        event_id: event.to_owned(),
        effects: vec![Effect::Spend {
            tenant: "default".to_owned(),
            user: "u1".to_owned(),
            category: category.to_owned(),
            currency: "USD".to_owned(),
            amount_minor: amount,
        }],
    };
    let items = vec![spend("e1", "food", 250), spend("e2", "food", 100), spend("e3", "", 7)];
    assert_eq!(store.consume("analytics", items.clone(), at(5)).await.expect("consume"), 3);
    // Redelivered, alone or mixed with a new one: only the new one counts.
    assert_eq!(store.consume("analytics", items, at(6)).await.expect("consume"), 0);
    let mixed = vec![spend("e2", "food", 100), spend("e4", "food", 1), spend("e4", "food", 1)];
    assert_eq!(store.consume("analytics", mixed, at(7)).await.expect("consume"), 1);
    // Another consumer has an inbox of its own.
    assert!(store.inbox_contains("analytics", "e1").await.expect("read"));
    assert!(!store.inbox_contains("other", "e1").await.expect("read"));
    let totals = store.spending("default", "u1").await.expect("spending");
    let summary: Vec<(&str, i64, u64)> = totals
        .iter()
        .map(|total| (total.category.as_str(), total.total_minor, total.transfers))
        .collect();
    assert_eq!(summary, [("", 7, 1), ("food", 351, 3)]);
    assert!(store.spending("default", "u2").await.expect("spending").is_empty());
    // A total past i64 fails the whole call and records nothing.
    let huge = vec![spend("e5", "food", 1), spend("e6", "food", i64::MAX)];
    assert!(store.consume("analytics", huge, at(8)).await.is_err());
    assert!(!store.inbox_contains("analytics", "e5").await.expect("read"));

    // A ledger command run for an event records its mark in the batch's transaction; the
    // same mark again is no error.
    for _ in 0..2 {
        let mut command = Command::new(
            Tenant::default_tenant(),
            kopek_core::Authority::Ledger,
            open(&[("inbox-a", None)]),
        );
        command.inbox =
            Some(InboxMark { consumer: "payments".to_owned(), event_id: "order-1".to_owned() });
        let batch = Batch { commands: vec![command] };
        let keys = batch.keys();
        let now = at(9);
        store
            .write_batch(
                keys,
                Box::new(move |state| {
                    Ok(kopek_core::apply(state, &batch, now, &mut SequentialIds::default()))
                }),
            )
            .await
            .expect("write");
    }
    assert!(store.inbox_contains("payments", "order-1").await.expect("read"));
}

pub async fn webhook_deliveries_are_claimed_retried_and_logged(store: &dyn Store) {
    use crate::{Attempt, AttemptResult, Consumed, DeliveryStatus, Effect, Webhook};
    let hook = |id: &str, tenant: &str, types: &[&str]| Webhook {
        id: id.to_owned(),
        tenant: tenant.to_owned(),
        url: format!("http://127.0.0.1:9/{id}"),
        event_types: types.iter().map(|kind| (*kind).to_owned()).collect(),
        secret: "0123456789abcdef".to_owned(),
        created_at: at(1),
    };
    store.create_webhook(&hook("h1", "default", &["TransferPosted"])).await.expect("create");
    store.create_webhook(&hook("h2", "other", &[])).await.expect("create");
    let mine = store.webhooks(Some("default")).await.expect("list");
    assert_eq!(mine, [hook("h1", "default", &["TransferPosted"])]);
    assert_eq!(store.webhooks(None).await.expect("list").len(), 2);

    let deliver = |delivery: &str, event: &str| Consumed {
        event_id: event.to_owned(),
        effects: vec![Effect::Deliver {
            delivery_id: delivery.to_owned(),
            subscription_id: "h1".to_owned(),
            event_id: event.to_owned(),
            event_type: "TransferPosted".to_owned(),
            body: "{}".to_owned(),
            max_attempts: 2,
        }],
    };
    assert_eq!(
        store.consume("notifier", vec![deliver("d1", "e1")], at(10)).await.expect("queue"),
        1
    );
    // The same event again queues nothing more.
    assert_eq!(
        store.consume("notifier", vec![deliver("d9", "e1")], at(10)).await.expect("queue"),
        0
    );
    assert_eq!(store.deliveries("h1", 10).await.expect("log").len(), 1);

    let claimed = store.claim_deliveries(at(10), at(20), 10).await.expect("claim");
    assert_eq!(claimed.iter().map(|delivery| delivery.id.as_str()).collect::<Vec<_>>(), ["d1"]);
    assert_eq!((claimed[0].attempts, claimed[0].dead_after), (0, 2));
    assert!(store.claim_deliveries(at(11), at(21), 10).await.expect("claim").is_empty(), "taken");

    let failed =
        |attempt: u32, when: i64, status: DeliveryStatus, next: i64, claim: i64| AttemptResult {
            attempt: Attempt {
                delivery_id: "d1".to_owned(),
                attempt,
                at: at(when),
                status_code: Some(500),
                error: Some("the receiver answered HTTP 500".to_owned()),
                duration_ms: 3,
            },
            status,
            next_attempt_at: at(next),
            claimed_until: at(claim),
        };
    // An attempt under another claim than the delivery's changes nothing.
    let stale = failed(1, 12, DeliveryStatus::Dead, 12, 999);
    assert!(!store.record_attempt(&stale).await.expect("record"));
    assert!(
        store
            .record_attempt(&failed(1, 12, DeliveryStatus::Pending, 30, 20))
            .await
            .expect("record")
    );
    let delivery = store.delivery("d1").await.expect("read").expect("delivery");
    assert_eq!(
        (delivery.status, delivery.attempts, delivery.next_attempt_at),
        (DeliveryStatus::Pending, 1, at(30))
    );
    assert_eq!(delivery.last_status_code, Some(500));
    assert!(store.claim_deliveries(at(25), at(35), 10).await.expect("claim").is_empty(), "not due");
    assert_eq!(store.claim_deliveries(at(30), at(40), 10).await.expect("claim").len(), 1);
    assert!(
        store.record_attempt(&failed(2, 31, DeliveryStatus::Dead, 31, 40)).await.expect("record")
    );
    assert!(store.claim_deliveries(at(100), at(110), 10).await.expect("claim").is_empty(), "dead");
    let attempts = store.delivery_attempts("d1").await.expect("attempts");
    assert_eq!(attempts.iter().map(|attempt| attempt.attempt).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(attempts[0].error.as_deref(), Some("the receiver answered HTTP 500"));

    // Sent again by hand: pending now, with two more attempts.
    assert!(store.redeliver("h1", "d1", 2, at(200)).await.expect("redeliver"));
    assert!(!store.redeliver("h2", "d1", 2, at(200)).await.expect("redeliver"), "not h2's");
    let delivery = store.delivery("d1").await.expect("read").expect("delivery");
    assert_eq!((delivery.status, delivery.dead_after), (DeliveryStatus::Pending, 4));
    assert_eq!(store.claim_deliveries(at(200), at(210), 10).await.expect("claim").len(), 1);

    // A deleted subscription's deliveries are no longer taken.
    assert!(store.redeliver("h1", "d1", 2, at(300)).await.expect("redeliver"));
    assert!(store.delete_webhook("default", "h1", at(300)).await.expect("delete"));
    assert!(!store.delete_webhook("default", "h1", at(300)).await.expect("delete"));
    assert!(!store.delete_webhook("default", "h2", at(300)).await.expect("delete"), "other tenant");
    assert!(store.claim_deliveries(at(300), at(310), 10).await.expect("claim").is_empty());
    assert_eq!(store.webhooks(Some("default")).await.expect("list"), []);
}

pub async fn api_keys_are_kept_listed_and_revoked(store: &dyn Store) {
    let key = |id: &str, tenant: &str, micros: i64| crate::ApiKey {
        id: id.to_owned(),
        tenant: tenant.to_owned(),
        scope: "write".to_owned(),
        user_id: (tenant == "acme").then(|| "u-1".to_owned()),
        name: format!("key {id}"),
        secret_hash: format!("$argon2id$hash-of-{id}"),
        created_at: Timestamp::from_unix_micros(micros),
        revoked_at: None,
    };
    assert_eq!(store.api_key("k1").await.expect("read"), None);
    store.create_api_key(&key("k1", "default", 1)).await.expect("create");
    store.create_api_key(&key("k2", "acme", 2)).await.expect("create");
    assert!(matches!(
        store.create_api_key(&key("k1", "acme", 3)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.api_key("k2").await.expect("read"), Some(key("k2", "acme", 2)));
    let all: Vec<String> =
        store.api_keys(None).await.expect("list").into_iter().map(|key| key.id).collect();
    assert_eq!(all, ["k1", "k2"]);
    assert_eq!(store.api_keys(Some("acme")).await.expect("list"), [key("k2", "acme", 2)]);

    let now = Timestamp::from_unix_micros(10);
    assert!(store.revoke_api_key("k2", now).await.expect("revoke"));
    assert!(!store.revoke_api_key("k2", now).await.expect("revoke twice"));
    assert!(!store.revoke_api_key("nope", now).await.expect("revoke unknown"));
    let revoked = store.api_key("k2").await.expect("read").expect("still listed");
    assert_eq!(revoked.revoked_at, Some(now));
}

const TRACED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

pub async fn tenants_keep_accounts_users_and_events_apart(store: &dyn Store) {
    let acme = Tenant::parse("acme").expect("tenant");
    let user = NewUser {
        id: Some(UserId::parse("ann").expect("id")),
        name: "Ann".into(),
        currency: usd(),
    };
    let commands = vec![
        Command::new(acme.clone(), kopek_core::Authority::Ledger, open(&[("acme-1", None)]))
            .by(Some("key-a")),
        // Ids belong to their tenant: both may have a `shared` account and a user `ann`.
        Command::new(acme.clone(), kopek_core::Authority::Ledger, open(&[("shared", None)])),
        Command::new(acme.clone(), kopek_core::Authority::Ledger, CommandBody::CreateUser(user)),
        Command {
            trace: Some(TRACED.to_owned()),
            ..Command::new(
                Tenant::default_tenant(),
                kopek_core::Authority::Ledger,
                open(&[("home-1", None), ("shared", None)]),
            )
            .by(Some("key-d"))
        },
        Command::new(
            Tenant::default_tenant(),
            kopek_core::Authority::Ledger,
            CommandBody::CreateUser(NewUser {
                id: Some(UserId::parse("ann").expect("id")),
                name: "Ann at home".into(),
                currency: usd(),
            }),
        ),
    ];
    run_commands(store, at(1), 0, commands).await;
    let in_acme = |name: &str| id(name).in_tenant(&acme);
    let account = store.account(&in_acme("acme-1")).await.expect("read").expect("opened");
    assert_eq!(account.tenant, acme);
    assert_eq!(store.account(&id("acme-1")).await.expect("read"), None, "acme's, not ours");
    let theirs = store.account(&in_acme("shared")).await.expect("read").expect("acme's");
    let ours = store.account(&id("shared")).await.expect("read").expect("ours");
    assert_eq!((theirs.tenant, ours.tenant), (acme.clone(), Tenant::default_tenant()));
    let ann = UserId::parse("ann").expect("id");
    let acme_ann = store.user(&ann.in_tenant(&acme)).await.expect("read").expect("user");
    assert_eq!((acme_ann.tenant.clone(), acme_ann.name.as_str()), (acme.clone(), "Ann"));
    let home_ann = store.user(&ann).await.expect("read").expect("user");
    assert_eq!(home_ann.name, "Ann at home");
    let user_account =
        store.account(&in_acme("user:ann:USD")).await.expect("read").expect("opened");
    assert_eq!(user_account.tenant, acme, "a user's account is in the user's tenant");
    assert_eq!(user_account.owner.as_deref(), Some("ann"), "owners are named, not keyed");
    let ids = |accounts: Vec<Account>| {
        accounts.into_iter().map(|a| a.id.name().to_owned()).collect::<Vec<_>>()
    };
    let listed = store.list_accounts(Some("default"), None, None, 10).await.expect("list");
    assert_eq!(ids(listed), ["home-1", "shared", "user:ann:USD"]);
    let listed = store.list_accounts(Some("acme"), None, None, 10).await.expect("list");
    assert_eq!(ids(listed), ["acme-1", "shared", "user:ann:USD"]);
    assert_eq!(store.list_accounts(None, None, None, 10).await.expect("list").len(), 6);

    let acme_events = store.events_after(Some("acme"), 0, 10).await.expect("events");
    assert_eq!(acme_events.len(), 4, "AccountOpened x3, UserCreated");
    assert!(acme_events.iter().all(|event| event.tenant == "acme"));
    let subjects: Vec<&str> = acme_events.iter().map(|e| e.subject_id.as_str()).collect();
    assert_eq!(subjects, ["acme-1", "shared", "user:ann:USD", "ann"], "subjects by name");
    let home = store.events_after(Some("default"), 0, 10).await.expect("events");
    assert_eq!(
        home.iter().map(|e| e.subject_id.as_str()).collect::<Vec<_>>(),
        ["home-1", "shared", "user:ann:USD", "ann"]
    );
    assert!(store.verify().await.expect("verify").is_ok(), "the books of both tenants verify");
    // The command's trace context is kept with its events, and only there.
    assert_eq!(home[0].traceparent.as_deref(), Some(TRACED));
    assert_eq!(home[1].traceparent.as_deref(), Some(TRACED));
    assert!(acme_events.iter().all(|event| event.traceparent.is_none()));

    // The audit trail: the events of commands that carried a key, by key and time.
    let query = |actor: Option<&str>, since: i64| crate::AuditQuery {
        actor: actor.map(str::to_owned),
        since: at(since),
        until: at(1_000),
        limit: 10,
    };
    let mine = store.audit(&query(Some("key-a"), 0)).await.expect("audit");
    assert_eq!(mine.len(), 1);
    assert_eq!(
        (mine[0].actor.as_str(), mine[0].kind.as_str(), mine[0].subject_id.as_str()),
        ("key-a", "AccountOpened", "acme-1")
    );
    assert_eq!(mine[0].tenant, "acme");
    let everyone = store.audit(&query(None, 0)).await.expect("audit");
    assert_eq!(
        everyone.iter().map(|e| e.actor.as_str()).collect::<Vec<_>>(),
        ["key-a", "key-d", "key-d"],
        "keyless events are not listed"
    );
    assert!(store.audit(&query(None, 2)).await.expect("audit").is_empty(), "nothing since");
}

fn rate_set(base: &str, quote: &str, rate: &str, valid_from: Option<Timestamp>) -> RateSet {
    RateSet {
        base: Currency::parse(base).expect("currency"),
        quote: Currency::parse(quote).expect("currency"),
        rate: Rate::parse(rate).expect("rate"),
        source: "conformance".to_owned(),
        valid_from,
    }
}

fn only_transfer(outcome: &Outcome) -> Transfer {
    match outcome.results.last() {
        Some(CommandResult::Transfers(results)) => match &results[0] {
            TransferResult::Committed(transfer) | TransferResult::Replayed(transfer) => {
                transfer.clone()
            }
            TransferResult::Rejected(rejection) => panic!("rejected: {rejection}"),
        },
        other => panic!("unexpected {other:?}"),
    }
}

pub async fn conversions_keep_rates_quotes_and_their_legs(store: &dyn Store) {
    let (eur, tenant) = (Currency::parse("EUR").expect("EUR"), Tenant::default_tenant());
    run(
        store,
        at(1),
        0,
        vec![
            open(&[("alice", None)]),
            CommandBody::CreateAccounts(vec![NewAccount::user(id("bob"), eur)]),
            deposit("fund", "alice", 100_000, None),
            CommandBody::SetRates(vec![
                rate_set("USD", "EUR", "0.9234", None),
                rate_set("USD", "JPY", "151.37", None),
            ]),
        ],
    )
    .await;
    // A rate valid from later does not apply before then; the newest one wins after.
    run(
        store,
        at(2),
        100,
        vec![CommandBody::SetRates(vec![rate_set("USD", "EUR", "0.95", Some(at(100)))])],
    )
    .await;
    let rates = store.fx_rates(&tenant, at(3)).await.expect("rates");
    let pairs: Vec<(String, String, String)> = rates
        .iter()
        .map(|rate| (rate.base.to_string(), rate.quote.to_string(), rate.rate.to_string()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("USD".to_owned(), "EUR".to_owned(), "0.9234".to_owned()),
            ("USD".to_owned(), "JPY".to_owned(), "151.37".to_owned())
        ]
    );
    let later = store.fx_rates(&tenant, at(100)).await.expect("rates");
    assert_eq!(later[0].rate.to_string(), "0.95");
    assert!(
        store
            .fx_rates(&Tenant::parse("other").expect("tenant"), at(100))
            .await
            .expect("rates")
            .is_empty()
    );
    // Setting a pair back in time is refused against the stored rate.
    let refused = run(
        store,
        at(4),
        200,
        vec![CommandBody::SetRates(vec![rate_set("USD", "EUR", "1", Some(at(50)))])],
    )
    .await;
    assert!(
        matches!(&refused.results[0], CommandResult::Rates(r) if matches!(r[0], RateResult::Rejected(_)))
    );

    let mid = fx::derive(usd(), eur, usd(), |a, b| {
        rates.iter().find(|rate| rate.base == a && rate.quote == b).map(|rate| rate.rate)
    })
    .expect("a rate");
    let terms = fx::price(usd(), eur, Side::Sell, 10_000, &mid, 50).expect("priced");
    let new_quote = NewQuote { idempotency_key: key("q1"), terms: terms.clone(), ttl_seconds: 30 };
    let outcome = run(store, at(5), 300, vec![CommandBody::CreateQuote(new_quote.clone())]).await;
    let CommandResult::Quote(QuoteResult::Created(quote)) = &outcome.results[0] else {
        panic!("{:?}", outcome.results)
    };
    assert_eq!(store.quote(quote.id).await.expect("quote").as_ref(), Some(quote));
    // The key again, in a later batch: the stored quote.
    let again = run(store, at(6), 400, vec![CommandBody::CreateQuote(new_quote)]).await;
    assert!(
        matches!(&again.results[0], CommandResult::Quote(QuoteResult::Existed(q)) if q.id == quote.id)
    );

    let exchange = |key_text: &str, movement: Movement| CommandBody::CreateTransfers {
        transfers: vec![TransferRequest {
            idempotency_key: key(key_text),
            kind: TransferKind::Transfer,
            movement,
            details: Details::default(),
            effective_at: None,
            open_if_missing: Vec::new(),
            fingerprint_extra: String::new(),
        }],
        linking: Linking::Independent,
    };
    let held = Movement::Exchange {
        debit_account: id("alice"),
        credit_account: id("bob"),
        terms: FxTerms::Quote(quote.id),
        hold: Some(Hold { timeout_seconds: None }),
    };
    let hold = only_transfer(&run(store, at(7), 500, vec![exchange("x1", held.clone())]).await);
    assert_eq!(hold.status, TransferStatus::Pending);
    let stored = store.transfer(hold.id).await.expect("read").expect("stored");
    assert_eq!(stored, hold, "the conversion round-trips with its leg");
    assert_eq!(store.quote(quote.id).await.expect("quote").and_then(|q| q.used_by), Some(hold.id));
    // The used quote, loaded from the store, cannot be used again.
    let reuse = Movement::Exchange {
        debit_account: id("alice"),
        credit_account: id("bob"),
        terms: FxTerms::Quote(quote.id),
        hold: None,
    };
    let declined = only_transfer(&run(store, at(8), 600, vec![exchange("x2", reuse)]).await);
    assert_eq!(declined.error_code(), Some(ErrorCode::QuoteExpired));
    // The capture names only the debit leg: the store loads the other legs with it.
    let capture = Movement::Capture { pending_id: hold.id, amount: None };
    let captured = only_transfer(&run(store, at(9), 700, vec![exchange("c1", capture)]).await);
    assert_eq!((captured.status, captured.amount), (TransferStatus::Posted, 10_000));
    let bob = store.account(&id("bob")).await.expect("read").expect("bob");
    assert_eq!((bob.balance.posted, bob.balance.pending_in), (9_188, 0));
    let fx_accounts: Vec<(String, i64)> = store
        .fx_accounts(&tenant)
        .await
        .expect("fx accounts")
        .iter()
        .map(|account| (account.id.to_string(), account.balance.posted))
        .collect();
    assert_eq!(
        fx_accounts,
        [
            ("fx-revenue:EUR".to_owned(), 46),
            ("fx:EUR".to_owned(), -9_234),
            ("fx:USD".to_owned(), 10_000)
        ]
    );
    let revenue = store.fx_revenue(&tenant, at(0), at(10)).await.expect("revenue");
    assert_eq!(revenue, vec![crate::FxRevenue { currency: eur, total_minor: 46, entries: 1 }]);
    assert!(store.fx_revenue(&tenant, at(10), at(20)).await.expect("revenue").is_empty());
    let report = store.verify().await.expect("verify");
    assert_eq!(report.problems, Vec::<String>::new());
    let kinds: Vec<String> = store
        .events_after(None, 0, 100)
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds.iter().filter(|kind| *kind == "RateUpdated").count(), 3);
    assert_eq!(kinds.iter().filter(|kind| *kind == "QuoteCreated").count(), 1);
}

// ---- the upgrade to tenant keys (issue 19, finding 5), run by each backend's own test ----

fn acme() -> Tenant {
    Tenant::parse("acme").expect("tenant")
}

/// Writes tenant `acme`'s things for an upgrade test: accounts `alice` and `bob`, user `ann`,
/// and a deposit to `alice` and to `ann`'s account.
pub async fn other_tenant_before_upgrade(store: &dyn Store) {
    let acme = acme();
    // Ids are taken in the command's tenant (`Command::new`), so plain names do.
    let deposit = |key_text: &str, account: &str, minor: i64| {
        let world = AccountId::world_in(&acme, usd());
        movement(TransferKind::Deposit, key_text, world, account, minor, None, None)
    };
    let ann = UserId::parse("ann").expect("id");
    let bodies = vec![
        open(&[("alice", None), ("bob", None)]),
        CommandBody::CreateUser(NewUser { id: Some(ann), name: "Ann".into(), currency: usd() }),
        CommandBody::CreateTransfers {
            transfers: vec![deposit("d1", "alice", 500), deposit("d2", "user:ann:USD", 300)],
            linking: Linking::Independent,
        },
    ];
    let commands = bodies
        .into_iter()
        .map(|body| Command::new(acme.clone(), kopek_core::Authority::Ledger, body))
        .collect();
    run_commands(store, at(1), 0, commands).await;
    assert!(store.verify().await.expect("verify").is_ok());
}

/// Portable SQL that puts tenant `acme` back into the layout from before ids belonged to
/// their tenant (its rows and every reference to them keyed by bare ids), and forgets the
/// migration `version` that moves them and every later one, so the next open runs them again.
pub fn old_layout_statements(version: usize) -> Vec<String> {
    vec![
        "UPDATE accounts SET id = substr(id, 6) WHERE tenant = 'acme'".to_owned(),
        "UPDATE entries SET account_id = substr(account_id, 6) WHERE account_id LIKE 'acme/%'"
            .to_owned(),
        "UPDATE transfers SET debit_account = substr(debit_account, 6), \
         credit_account = substr(credit_account, 6) WHERE tenant = 'acme'"
            .to_owned(),
        "UPDATE users SET id = substr(id, 6) WHERE tenant = 'acme'".to_owned(),
        "UPDATE outbox SET subject_id = substr(subject_id, 6) WHERE subject_id LIKE 'acme/%'"
            .to_owned(),
        format!("DELETE FROM schema_migrations WHERE version >= {version}"),
    ]
}

/// After the upgrade: `acme`'s rows are found by their keys and no longer bare, the entries
/// and transfers follow them, the books verify, and the default tenant may have its own
/// `alice`.
pub async fn other_tenant_after_upgrade(store: &dyn Store) {
    let acme = acme();
    let alice = id("alice");
    let ann = UserId::parse("ann").expect("id");
    let account = store.account(&alice.in_tenant(&acme)).await.expect("read").expect("moved");
    assert_eq!((account.tenant.clone(), account.balance.posted), (acme.clone(), 500));
    assert_eq!(store.account(&alice).await.expect("read"), None, "no longer bare");
    let user = store.user(&ann.in_tenant(&acme)).await.expect("read").expect("moved");
    assert_eq!(user.name, "Ann");
    let theirs = store.account(&ann.in_tenant(&acme).account(usd())).await.expect("read");
    assert_eq!(theirs.map(|account| account.balance.posted), Some(300));
    let page = store.entries(&alice.in_tenant(&acme), None, 10).await.expect("entries");
    assert_eq!(page.items.len(), 1, "the entries follow their account");
    let transfer = store.transfer_by_key(&acme, &key("d1")).await.expect("read").expect("there");
    assert_eq!(transfer.credit_account, Some(alice.in_tenant(&acme)));
    assert_eq!(transfer.debit_account, Some(AccountId::world_in(&acme, usd())));
    let report = store.verify().await.expect("verify");
    assert!(report.is_ok(), "{:?}", report.problems);
    run(store, at(2), 100, vec![open(&[("alice", None)])]).await;
    assert!(store.account(&alice).await.expect("read").is_some(), "ours, beside acme's");
}

/// Every page of `query`, followed to the end: the ids found, in order. Each page holds at
/// most `limit` transfers and each one matches.
async fn search_all(store: &dyn Store, query: &TransferQuery) -> Vec<TransferId> {
    let mut query = query.clone();
    let mut found = Vec::new();
    store.settle().await.expect("settle");
    for _ in 0..10_000 {
        let page = store.search_transfers(&query).await.expect("search");
        assert!(page.items.len() <= query.limit, "a page holds at most its limit");
        for transfer in &page.items {
            assert!(query.matches(transfer), "{query:?} answered {transfer:?}");
        }
        found.extend(page.items.iter().map(|transfer| transfer.id));
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => return found,
        }
    }
    panic!("the search never ended: {query:?}");
}

fn tagged(request: TransferRequest, pairs: &[(&str, &str)]) -> TransferRequest {
    let mut request = request;
    request.details.metadata =
        pairs.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect();
    request
}

fn independent(transfers: Vec<TransferRequest>) -> CommandBody {
    CommandBody::CreateTransfers { transfers, linking: Linking::Independent }
}

pub async fn transfers_are_found_by_every_filter(store: &dyn Store) {
    let acme = Tenant::parse("acme").expect("tenant");
    run(store, at(1), 0, vec![open(&[("a", None), ("b", None), ("c", None)])]).await;
    run_commands(
        store,
        at(1),
        10,
        vec![Command::new(acme.clone(), kopek_core::Authority::Ledger, open(&[("a", None)]))],
    )
    .await;
    let world = AccountId::world(usd());
    let post = |kind, key_text: &str, debit: &AccountId, credit: &str, minor| {
        movement(kind, key_text, debit.clone(), credit, minor, None, None)
    };
    // Commit times 2..=7, one batch each; effective times differ from commit times for two.
    let batches = vec![
        vec![tagged(post(TransferKind::Deposit, "d1", &world, "a", 1_000), &[("order", "o-1")])],
        vec![
            tagged(post(TransferKind::Deposit, "d2", &world, "b", 500), &[("order", "o-2")]),
            tagged(
                post(TransferKind::Payment, "p1", &id("a"), "b", 120),
                &[("order", "o-1"), ("channel", "web")],
            ),
        ],
        vec![movement(TransferKind::Transfer, "t1", id("b"), "c", 70, None, Some(at(0)))],
        vec![movement(
            TransferKind::Transfer,
            "h1",
            id("a"),
            "c",
            300,
            Some(Hold { timeout_seconds: None }),
            None,
        )],
        // Declined: more than `c` holds. It names its accounts all the same.
        vec![post(TransferKind::Withdrawal, "w1", &id("c"), "a", 1_000_000)],
        vec![tagged(post(TransferKind::Fee, "f1", &id("a"), "b", 5), &[("channel", "web")])],
    ];
    let mut created = Vec::new();
    for (index, transfers) in batches.into_iter().enumerate() {
        let seconds = i64::try_from(index).expect("small") + 2;
        let first_id = 100 * (seconds as u128);
        let outcome = run(store, at(seconds), first_id, vec![independent(transfers)]).await;
        let CommandResult::Transfers(results) = &outcome.results[0] else { panic!("transfers") };
        for result in results {
            match result {
                TransferResult::Committed(transfer) => created.push(transfer.id),
                other => panic!("expected a recorded transfer, got {other:?}"),
            }
        }
    }
    let hold = created[4];
    let capture = run(
        store,
        at(8),
        900,
        vec![independent(vec![TransferRequest {
            movement: Movement::Capture { pending_id: hold, amount: None },
            ..movement(TransferKind::Transfer, "c1", id("a"), "c", 0, None, None)
        }])],
    )
    .await;
    created.push(committed(&capture, 0).id);
    // The other tenant's transfer, with the same metadata and accounts of the same names.
    let acme_deposit = independent(vec![tagged(
        post(TransferKind::Deposit, "d1", &world, "a", 1_000),
        &[("order", "o-1")],
    )]);
    let acme_outcome = run_commands(
        store,
        at(9),
        1_000,
        vec![Command::new(acme.clone(), kopek_core::Authority::Ledger, acme_deposit)],
    )
    .await;

    let mut every = Vec::new();
    for id in created.iter().chain([&committed(&acme_outcome, 0).id]) {
        every.push(store.transfer(*id).await.expect("read").expect("recorded"));
    }
    assert_eq!(every[5].status, TransferStatus::Declined, "w1 is declined");
    assert_eq!(every[4].status, TransferStatus::Captured, "h1 is captured");
    let base = TransferQuery::all(Tenant::default_tenant(), 2);
    let check = |query: TransferQuery| {
        let expected: Vec<TransferId> =
            every.iter().filter(|transfer| query.matches(transfer)).map(|t| t.id).collect();
        (query, expected)
    };
    let cases = vec![
        base.clone(),
        TransferQuery { account: Some(id("a")), ..base.clone() },
        TransferQuery { account: Some(id("c")), ..base.clone() },
        TransferQuery { account: Some(id("nobody")), ..base.clone() },
        TransferQuery { metadata: vec![("order".into(), "o-1".into())], ..base.clone() },
        TransferQuery {
            metadata: vec![("order".into(), "o-1".into()), ("channel".into(), "web".into())],
            ..base.clone()
        },
        TransferQuery {
            metadata: vec![("channel".into(), "web".into())],
            account: Some(id("b")),
            ..base.clone()
        },
        TransferQuery { metadata: vec![("order".into(), "o-9".into())], ..base.clone() },
        TransferQuery { idempotency_key: Some(key("p1")), ..base.clone() },
        TransferQuery {
            committed: TimeRange { from: Some(at(3)), until: Some(at(6)) },
            ..base.clone()
        },
        TransferQuery { committed: TimeRange { from: Some(at(7)), until: None }, ..base.clone() },
        TransferQuery { effective: TimeRange { from: None, until: Some(at(1)) }, ..base.clone() },
        TransferQuery { effective: TimeRange { from: Some(at(4)), until: None }, ..base.clone() },
        TransferQuery { kind: Some(TransferKind::Deposit), ..base.clone() },
        TransferQuery { status: Some(TransferStatus::Declined), ..base.clone() },
        TransferQuery {
            status: Some(TransferStatus::Captured),
            account: Some(id("c")),
            ..base.clone()
        },
        TransferQuery { currency: Some(usd()), ..base.clone() },
        TransferQuery { amount_min: Some(100), amount_max: Some(500), ..base.clone() },
        TransferQuery { order: SortOrder::Ascending, ..base.clone() },
        TransferQuery {
            order: SortOrder::Ascending,
            account: Some(id("a")),
            limit: 1,
            ..base.clone()
        },
        TransferQuery { limit: 100, ..base.clone() },
        TransferQuery {
            metadata: vec![("order".into(), "o-1".into())],
            ..TransferQuery::all(acme.clone(), 5)
        },
        TransferQuery {
            account: Some(id("a").in_tenant(&acme)),
            ..TransferQuery::all(acme.clone(), 5)
        },
    ];
    for query in cases {
        let (query, mut expected) = check(query);
        if query.order == SortOrder::Descending {
            expected.reverse();
        }
        assert_eq!(search_all(store, &query).await, expected, "{query:?}");
    }
    // The cases above are not vacuous: each kind of filter found something and left something.
    let deposits = TransferQuery { kind: Some(TransferKind::Deposit), ..base.clone() };
    assert_eq!(search_all(store, &deposits).await.len(), 2);
    let tagged_o1 =
        TransferQuery { metadata: vec![("order".into(), "o-1".into())], ..base.clone() };
    assert_eq!(search_all(store, &tagged_o1).await, vec![created[2], created[0]]);
    let of_c = TransferQuery { account: Some(id("c")), ..base.clone() };
    assert_eq!(
        search_all(store, &of_c).await,
        vec![created[7], created[5], created[4], created[3]],
        "c's capture, the declined withdrawal, the hold and the transfer it received"
    );
    let acme_all = search_all(store, &TransferQuery::all(acme.clone(), 10)).await;
    assert_eq!(acme_all.len(), 1, "a tenant sees its own transfers only");
    assert_eq!(search_all(store, &base).await.len(), created.len());

    // A transfer's entries are those its accounts' statements hold for it.
    let mut statements = Vec::new();
    for name in ["a", "b", "c", "world:USD"] {
        statements.extend(store.entries(&id(name), None, 100).await.expect("statement").items);
    }
    for transfer in &every[..created.len()] {
        let mut expected: Vec<StoredEntry> = statements
            .iter()
            .filter(|entry| entry.entry.transfer_id == transfer.id)
            .cloned()
            .collect();
        expected.sort_by_key(|entry| entry.sequence);
        let found = store.transfer_entries(&[transfer.id]).await.expect("entries");
        assert_eq!(found, expected, "entries of {}", transfer.idempotency_key);
        let moved = matches!(transfer.status, TransferStatus::Posted)
            || transfer.action == kopek_core::Action::Capture;
        assert_eq!(found.len(), if moved { 2 } else { 0 }, "{}", transfer.idempotency_key);
    }
    // And its events: a posted transfer's one, a hold's placing and resolving.
    let default = Tenant::default_tenant();
    for transfer in &every[..created.len()] {
        let id = transfer.id.to_string();
        let events = store.events_of(default.as_str(), &id, 10).await.expect("events");
        assert!(!events.is_empty(), "{} has events", transfer.idempotency_key);
        assert!(events.iter().all(|event| event.subject_id == id), "{events:?}");
        assert!(events.windows(2).all(|pair| pair[0].sequence < pair[1].sequence));
        assert!(store.events_of("acme", &id, 10).await.expect("events").is_empty(), "tenant");
    }
    let posted = store.events_of(default.as_str(), &created[0].to_string(), 10).await;
    let kinds: Vec<String> = posted.expect("events").into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["TransferPosted"]);
    let both = store.transfer_entries(&[created[7], created[0]]).await.expect("entries");
    assert_eq!(both.len(), 4, "two transfers' entries in one call");
    assert!(both.windows(2).all(|pair| pair[0].sequence < pair[1].sequence), "commit order");
}

pub async fn search_pages_stay_stable_while_transfers_commit(store: &dyn Store) {
    run(store, at(1), 0, vec![open(&[("a", None)])]).await;
    let deposits = |from: i64, count: i64| {
        (from..from + count).map(|n| deposit(&format!("d{n}"), "a", 10 + n, None)).collect()
    };
    run(store, at(2), 100, deposits(0, 7)).await;
    let before = search_all(store, &TransferQuery::all(Tenant::default_tenant(), 100)).await;
    assert_eq!(before.len(), 7);
    for order in [SortOrder::Descending, SortOrder::Ascending] {
        let mut query = TransferQuery {
            order,
            account: Some(id("a")),
            ..TransferQuery::all(Tenant::default_tenant(), 3)
        };
        let mut found = Vec::new();
        let mut round = 0_i64;
        loop {
            store.settle().await.expect("settle");
            let page = store.search_transfers(&query).await.expect("search");
            found.extend(page.items.iter().map(|transfer| transfer.id));
            // Two more transfers commit between every two pages.
            round += 1;
            let first = 100 + round * 2 + if order == SortOrder::Ascending { 50 } else { 0 };
            run(store, at(2 + first), 1_000 * (first as u128), deposits(first, 2)).await;
            match page.next_cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => break,
            }
            assert!(round < 50, "paging ends");
        }
        let unique: std::collections::BTreeSet<_> = found.iter().collect();
        assert_eq!(unique.len(), found.len(), "no transfer twice ({order:?})");
        match order {
            SortOrder::Descending => {
                let mut expected = before.clone();
                expected.sort_by(|a, b| b.cmp(a));
                assert_eq!(found, before, "newest first, none of those committed meanwhile");
            }
            SortOrder::Ascending => {
                let mut oldest_first = before.clone();
                oldest_first.reverse();
                assert_eq!(&found[..7], &oldest_first[..], "every transfer there before, in order");
                assert!(found.len() > 7, "those committed meanwhile follow");
            }
        }
    }
}

/// More transfers than a search reads per call (`SCAN_ROWS_MAX`), with one rare match at each
/// end: every page's answer together is still exactly the matches, in order, both ways, from
/// the table and from an account's index. Returns how many pages the rare search took.
pub async fn a_rare_match_is_found_past_the_scan_budget(store: &dyn Store) -> usize {
    run(store, at(1), 0, vec![open(&[("a", None), ("b", None)])]).await;
    let fee = |key_text: &str| {
        let request =
            movement(TransferKind::Fee, key_text, AccountId::world(usd()), "b", 1, None, None);
        CommandBody::CreateTransfers { transfers: vec![request], linking: Linking::Independent }
    };
    run(store, at(2), 10, vec![fee("first-fee")]).await;
    let count = crate::search::SCAN_ROWS_MAX + 2_000;
    for (round, chunk) in (0..count).collect::<Vec<_>>().chunks(4_000).enumerate() {
        let deposits = chunk.iter().map(|n| deposit(&format!("bulk-{n}"), "a", 1, None)).collect();
        let seconds = 3 + i64::try_from(round).expect("small");
        run(store, at(seconds), 1_000_000 * (round as u128 + 1), deposits).await;
    }
    run(store, at(60), 90_000_000, vec![fee("last-fee")]).await;
    let tenant = Tenant::default_tenant();
    let fees = |order| TransferQuery {
        kind: Some(TransferKind::Fee),
        order,
        ..TransferQuery::all(tenant.clone(), 100)
    };
    let keys = |ids: Vec<TransferId>| async move {
        let mut keys = Vec::new();
        for id in ids {
            keys.push(
                store.transfer(id).await.expect("read").expect("found").idempotency_key.to_string(),
            );
        }
        keys
    };
    assert_eq!(
        keys(search_all(store, &fees(SortOrder::Descending)).await).await,
        ["last-fee", "first-fee"]
    );
    assert_eq!(
        keys(search_all(store, &fees(SortOrder::Ascending)).await).await,
        ["first-fee", "last-fee"]
    );
    let of_b = TransferQuery { account: Some(id("b")), ..fees(SortOrder::Descending) };
    assert_eq!(keys(search_all(store, &of_b).await).await, ["last-fee", "first-fee"]);
    let of_a = TransferQuery {
        account: Some(id("a")),
        limit: 1_000,
        ..TransferQuery::all(tenant.clone(), 1_000)
    };
    assert_eq!(search_all(store, &of_a).await.len(), count, "every deposit once");
    // How many calls the rare search took: one where nothing bounds the scan.
    let mut query = fees(SortOrder::Descending);
    let mut pages = 0;
    loop {
        pages += 1;
        let page = store.search_transfers(&query).await.expect("search");
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => return pages,
        }
    }
}

/// A transfer declined because its account did not exist yet names that account: once the
/// account is opened, a search by it finds the decline with its own transfers.
pub async fn an_account_opened_later_finds_the_transfer_declined_before(store: &dyn Store) {
    run(store, at(1), 0, vec![open(&[("a", None)]), deposit("d1", "a", 100, None)]).await;
    let declined = run(store, at(2), 100, vec![transfer("early", "a", "later", 10, None)]).await;
    let declined = committed(&declined, 0);
    assert_eq!(declined.status, TransferStatus::Declined, "the account does not exist yet");
    let of_later = TransferQuery {
        account: Some(id("later")),
        ..TransferQuery::all(Tenant::default_tenant(), 10)
    };
    assert_eq!(search_all(store, &of_later).await, vec![declined.id], "before it opens");
    run(store, at(3), 200, vec![open(&[("later", None)]), deposit("d2", "later", 5, None)]).await;
    let found = search_all(store, &of_later).await;
    assert_eq!(found.len(), 2, "its deposit and the decline: {found:?}");
    assert_eq!(found[1], declined.id);
}
