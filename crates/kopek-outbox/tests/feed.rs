//! The feed and the order saga against the real engine on a SQLite file.

use kopek_core::*;
use kopek_engine::{Engine, EngineConfig};
use kopek_events::Feed;
use kopek_outbox::consumer::feed_source::FeedSource;
use kopek_outbox::consumer::payments::{NAME, Payments};
use kopek_outbox::consumer::{self, Handler, Incoming};
use kopek_store::Store;
use kopek_store_sqlite::SqliteStore;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn usd() -> Currency {
    Currency::parse("USD").expect("USD")
}

fn open(name: &str) -> CommandBody {
    CommandBody::CreateAccounts(vec![NewAccount::user(AccountId::parse(name).expect("id"), usd())])
}

/// One transfer of `amount` USD cents as a command of its own.
fn transfer(
    key: &str,
    kind: TransferKind,
    debit: AccountId,
    credit: AccountId,
    amount: i64,
) -> CommandBody {
    let request = TransferRequest {
        idempotency_key: IdempotencyKey::parse(key).expect("key"),
        kind,
        movement: Movement::Move {
            debit_account: debit,
            credit_account: credit,
            amount,
            currency: usd(),
            hold: None,
        },
        details: Details::default(),
        effective_at: None,
        open_if_missing: Vec::new(),
        fingerprint_extra: String::new(),
    };
    CommandBody::CreateTransfers { transfers: vec![request], linking: Linking::Independent }
}

async fn next(
    receiver: &mut tokio::sync::mpsc::Receiver<Arc<kopek_store::StoredEvent>>,
) -> Arc<kopek_store::StoredEvent> {
    tokio::time::timeout(Duration::from_secs(10), receiver.recv())
        .await
        .expect("an event in time")
        .expect("open feed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_get_history_then_live_events_in_order_without_gaps() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("open"));
    let (engine, _writer) = Engine::start(store, EngineConfig::default());
    let tenant = Tenant::default_tenant();
    for name in ["a", "b", "c"] {
        engine.submit_as_ledger(tenant.clone(), open(name)).await.expect("commit");
    }
    let shutdown = CancellationToken::new();
    let feed = Feed::start(engine.store().clone(), engine.commits(), shutdown.clone())
        .await
        .expect("feed");
    assert_eq!(feed.published(), 3, "the tail starts at the outbox's end");
    let mut everything = feed.subscribe_after(0);
    let mut from_second = feed.subscribe_after(1);
    let mut live = feed.subscribe_live();
    for name in ["d", "e"] {
        engine.submit_as_ledger(tenant.clone(), open(name)).await.expect("commit");
    }
    let mut sequences = Vec::new();
    for _ in 0..5 {
        sequences.push(next(&mut everything).await.sequence);
    }
    assert_eq!(sequences, [1, 2, 3, 4, 5]);
    assert_eq!(next(&mut from_second).await.sequence, 2, "resuming after 1 starts at 2");
    let first_live = next(&mut live).await;
    assert_eq!((first_live.sequence, first_live.subject_id.as_str()), (4, "d"));
    assert_eq!(next(&mut live).await.sequence, 5);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payments_consumer_pays_each_order_once_however_often_it_is_delivered() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("open"));
    let (engine, _writer) = Engine::start(store, EngineConfig::default());
    let tenant = Tenant::default_tenant();
    let buyer = UserId::parse("buyer").expect("id");
    engine
        .submit_as_ledger(
            tenant.clone(),
            CommandBody::CreateAccounts(vec![buyer.new_account(usd())]),
        )
        .await
        .expect("account");
    let deposit = transfer(
        "fund",
        TransferKind::Deposit,
        AccountId::world(usd()),
        buyer.account(usd()),
        1_000,
    );
    engine.submit_as_ledger(tenant.clone(), deposit).await.expect("fund");
    let order = |name: &str, amount: i64| NewOrder {
        id: OrderId::parse(name).expect("id"),
        user: buyer.clone(),
        amount,
        currency: usd(),
    };
    // Created before the consumer runs: it starts from the first event.
    engine
        .submit_as_ledger(tenant.clone(), CommandBody::CreateOrder(order("early", 300)))
        .await
        .expect("order");

    let shutdown = CancellationToken::new();
    let feed = Feed::start(engine.store().clone(), engine.commits(), shutdown.clone())
        .await
        .expect("feed");
    let fx = kopek_fx::Fx::local(engine.store().clone(), kopek_fx::FxConfig::default());
    let intake = kopek_intake::Intake::new(engine.clone(), fx);
    let payments = Arc::new(Payments::new(intake));
    let source = FeedSource::new(engine.store().clone(), feed.clone(), NAME, "test".to_owned());
    let _consumer = consumer::run(payments.clone(), Box::new(source), shutdown.clone());
    engine
        .submit_as_ledger(tenant.clone(), CommandBody::CreateOrder(order("paid", 500)))
        .await
        .expect("order");
    engine
        .submit_as_ledger(tenant.clone(), CommandBody::CreateOrder(order("too-much", 5_000)))
        .await
        .expect("order");

    let status = |name: &'static str| {
        let store = engine.store().clone();
        async move {
            store
                .order(&OrderId::parse(name).expect("id"))
                .await
                .expect("read")
                .map(|order| order.status)
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let statuses = (status("early").await, status("paid").await, status("too-much").await);
        if statuses == (Some(OrderStatus::Paid), Some(OrderStatus::Paid), Some(OrderStatus::Failed))
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "orders still {statuses:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let buyer_account =
        engine.store().account(&buyer.account(usd())).await.expect("read").expect("account");
    assert_eq!(buyer_account.balance.posted, 200, "two orders paid once each");

    // Every OrderCreated delivered again (a consumer crashed before its ack): the inbox
    // knows them all and nothing moves.
    let created: Vec<Incoming> = engine
        .store()
        .events_after(None, 0, 1_000)
        .await
        .expect("events")
        .into_iter()
        .filter(|event| event.kind == "OrderCreated")
        .map(|event| Incoming::from_stored(Arc::new(event)))
        .collect();
    assert_eq!(created.len(), 3);
    for event in &created {
        assert!(engine.store().inbox_contains(NAME, &event.id).await.expect("inbox"));
    }
    payments.handle(&created).await.expect("redelivery");
    let buyer_account =
        engine.store().account(&buyer.account(usd())).await.expect("read").expect("account");
    assert_eq!(buyer_account.balance.posted, 200, "a redelivery pays nothing again");
    assert!(engine.store().verify().await.expect("verify").is_ok());
    shutdown.cancel();
}

/// The analytics and notifier consumers mark only the events they acted on: the others
/// change nothing however often they come, so they cost no inbox row and no transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_mark_only_the_events_they_acted_on() {
    use kopek_outbox::consumer::analytics::{self, Analytics};
    use kopek_outbox::consumer::notifier::{self, Notifier};
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("open"));
    let (engine, _writer) = Engine::start(store.clone(), EngineConfig::default());
    let tenant = Tenant::default_tenant();
    let buyer = UserId::parse("spender").expect("id");
    engine
        .submit_as_ledger(
            tenant.clone(),
            CommandBody::CreateAccounts(vec![buyer.new_account(usd())]),
        )
        .await
        .expect("account");
    engine.submit_as_ledger(tenant.clone(), open("shop")).await.expect("shop");
    let shop = AccountId::parse("shop").expect("id");
    let deposit =
        transfer("in", TransferKind::Deposit, AccountId::world(usd()), buyer.account(usd()), 700);
    let purchase = transfer("buy", TransferKind::Payment, buyer.account(usd()), shop, 700);
    engine.submit_as_ledger(tenant.clone(), deposit).await.expect("deposit");
    engine.submit_as_ledger(tenant.clone(), purchase).await.expect("purchase");
    let events: Vec<Incoming> = store
        .events_after(None, 0, 1_000)
        .await
        .expect("events")
        .into_iter()
        .map(|event| Incoming::from_stored(Arc::new(event)))
        .collect();
    let posted: Vec<Incoming> =
        events.iter().filter(|event| event.kind == "TransferPosted").cloned().collect();
    assert_eq!(posted.len(), 2);
    let marked = |consumer: &'static str, event: &Incoming| {
        let (store, id) = (store.clone(), event.id.clone());
        async move { store.inbox_contains(consumer, &id).await.expect("inbox") }
    };

    // The deposit is no user's spending; the purchase is, once however often it comes.
    let spending = Analytics::new(store.clone());
    for _ in 0..2 {
        spending.handle(&posted).await.expect("analytics");
    }
    let totals = store.spending("default", "spender").await.expect("spending");
    assert_eq!(
        totals.iter().map(|total| (total.total_minor, total.transfers)).collect::<Vec<_>>(),
        [(700, 1)]
    );
    assert!(!marked(analytics::NAME, &posted[0]).await, "the deposit left no mark");
    assert!(marked(analytics::NAME, &posted[1]).await, "the purchase is marked");

    // With no webhook nothing is queued or marked; once one exists, what it wants is queued
    // once and marked.
    let notifier = Notifier::new(store.clone(), 3);
    notifier.handle(&events).await.expect("notifier");
    for event in &events {
        assert!(!marked(notifier::NAME, event).await, "{} left no mark", event.kind);
    }
    let hook = kopek_store::Webhook {
        id: "wh_1".to_owned(),
        tenant: "default".to_owned(),
        url: "http://127.0.0.1:9/".to_owned(),
        event_types: vec!["TransferPosted".to_owned()],
        secret: "s".to_owned(),
        created_at: Timestamp::from_unix_micros(0),
    };
    store.create_webhook(&hook).await.expect("webhook");
    for _ in 0..2 {
        notifier.handle(&events).await.expect("notifier");
    }
    let mut queued: Vec<String> = store
        .deliveries("wh_1", 100)
        .await
        .expect("deliveries")
        .into_iter()
        .map(|delivery| delivery.event_id)
        .collect();
    queued.sort();
    let mut wanted: Vec<String> = posted.iter().map(|event| event.id.clone()).collect();
    wanted.sort();
    assert_eq!(queued, wanted, "each posted transfer queued once");
    for event in &events {
        let is_posted = event.kind == "TransferPosted";
        assert_eq!(marked(notifier::NAME, event).await, is_posted, "{}", event.kind);
    }
}
