//! The outbox relay against real brokers: the machine's NATS JetStream (127.0.0.1:4222) and
//! RabbitMQ (127.0.0.1:5672), and a NATS server of the test's own that it stops and starts
//! again. Each test uses a stream, subject prefix, exchange and queue of its own, and deletes
//! them at the end. Outside CI a test skips, loudly, when its broker is not there; with
//! `CI=true` it must run.

use crate::support::*;
use async_nats::jetstream;
use futures_util::StreamExt;
use kopek_proto::kopek::v1 as pb;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const NATS: &str = "nats://127.0.0.1:4222";
const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const ACCOUNTS: usize = 20;
const TRANSFERS: usize = 10_000;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true" || value == "1")
}

/// `None` (a skip) only outside CI.
fn skip(reason: String) -> Option<()> {
    assert!(!in_ci(), "this test must run in CI: {reason}");
    eprintln!("SKIPPED: {reason}");
    None
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Opens `ACCOUNTS` accounts with money, then posts `count` transfers among them in batches.
/// Answers how many events that committed: an `AccountOpened` per account, a `TransferPosted`
/// per deposit and transfer (plus one `AccountOpened` for the world account on the ledger's
/// first deposit, which callers add once).
async fn write_load(server: &Server, prefix: &str, count: usize) -> usize {
    let mut client = server.client().await;
    let ids: Vec<String> = (0..ACCOUNTS).map(|index| format!("{prefix}-{index}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    open_accounts(&mut client, &id_refs).await;
    let deposits = ids.iter().map(|id| deposit(&format!("{id}-d"), id, 1_000_000)).collect();
    for result in transfers(&mut client, deposits, false).await {
        assert_eq!(error_code(&result), None);
    }
    for chunk in (0..count).collect::<Vec<_>>().chunks(500) {
        let batch: Vec<pb::TransferRequest> = chunk
            .iter()
            .map(|index| {
                let debit = &ids[index % ACCOUNTS];
                let credit = &ids[(index * 7 + 3) % ACCOUNTS];
                let credit = if credit == debit { &ids[(index + 1) % ACCOUNTS] } else { credit };
                post(&format!("{prefix}-t{index}"), debit, credit, 1)
            })
            .collect();
        for result in transfers(&mut client, batch, false).await {
            assert_eq!(error_code(&result), None);
        }
    }
    ACCOUNTS + ACCOUNTS + count
}

/// The value of an unlabelled or single-sink metric on the server's `/metrics`.
async fn metric(server: &Server, name: &str) -> Option<f64> {
    let response = http(&server.http_address, "GET", "/metrics", &[], None).await;
    assert_eq!(response.status, 200);
    kopek_testkit::Scrape::parse(&response.body).one(name)
}

/// Waits until the relay has had every committed event confirmed.
async fn wait_for_no_lag(server: &Server, events: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let sequence = metric(server, "kopek_outbox_sequence").await.unwrap_or(0.0);
        let lag = metric(server, "kopek_outbox_lag_events").await;
        if sequence as usize >= events && lag == Some(0.0) {
            return;
        }
        assert!(Instant::now() < deadline, "relay still behind: sequence {sequence}, lag {lag:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Checks what a consumer received: after dropping repeats by event id, exactly `events`
/// documents with sequences 1..=events in order, each account's events in sequence order,
/// and `posted` of them `TransferPosted`.
fn check_delivery(documents: &[Value], events: usize, posted: usize) {
    let mut seen = HashSet::new();
    let unique: Vec<&Value> = documents
        .iter()
        .filter(|document| seen.insert(document["id"].as_str().expect("id").to_owned()))
        .collect();
    assert_eq!(unique.len(), events, "distinct events delivered");
    let sequences: Vec<u64> =
        unique.iter().map(|document| document["sequence"].as_u64().expect("sequence")).collect();
    assert_eq!(sequences, (1..=events as u64).collect::<Vec<_>>(), "no gaps, in order");
    let mut last_per_account: BTreeMap<String, u64> = BTreeMap::new();
    for document in &unique {
        assert_eq!(document["schema_version"], 1);
        let sequence = document["sequence"].as_u64().expect("sequence");
        for balance in document["balances"].as_array().expect("balances") {
            let account = balance["account_id"].as_str().expect("account").to_owned();
            let last = last_per_account.insert(account.clone(), sequence);
            assert!(last.is_none_or(|last| last < sequence), "{account} out of order");
        }
    }
    let posted_events =
        unique.iter().filter(|document| document["type"] == "TransferPosted").count();
    assert_eq!(posted_events, posted, "TransferPosted events (transfers and deposits)");
}

pub async fn nats_or_skip(url: &str) -> Option<async_nats::Client> {
    match async_nats::connect(url).await {
        Ok(client) => Some(client),
        Err(error) => skip(format!("no NATS at {url}: {error}")).and(None),
    }
}

/// Every message in `stream`, in stream order, as JSON documents.
async fn read_stream(client: &async_nats::Client, stream: &str, expected: usize) -> Vec<Value> {
    let context = jetstream::new(client.clone());
    let stream = context.get_stream(stream).await.expect("the relay created the stream");
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            ack_policy: jetstream::consumer::AckPolicy::None,
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut documents = Vec::new();
    while documents.len() < expected {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {expected} messages arrived", documents.len()))
            .expect("stream open")
            .expect("message");
        let document: Value = serde_json::from_slice(&message.payload).expect("JSON document");
        let headers = message.headers.as_ref().expect("headers");
        assert_eq!(
            headers.get("Nats-Msg-Id").map(|value| value.as_str()),
            document["id"].as_str(),
            "Nats-Msg-Id is the event id"
        );
        assert!(
            message
                .subject
                .as_str()
                .ends_with(&format!(".default.{}", document["type"].as_str().expect("type"))),
            "{}",
            message.subject
        );
        documents.push(document);
    }
    // Nothing beyond: the stream holds no repeats.
    let more = tokio::time::timeout(Duration::from_millis(500), messages.next()).await;
    assert!(more.is_err(), "an extra message arrived: {more:?}");
    documents
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_receives_every_event_once_in_order_across_kill9s() {
    let Some(client) = nats_or_skip(NATS).await else { return };
    let stream = unique("KT");
    let prefix = unique("kt");
    let broker = format!("{NATS}?stream={stream}&subject_prefix={prefix}");
    let dir = tempfile::tempdir().expect("temp dir");

    // (a) Killed between commit and publish: the broker's address leads nowhere, so every
    // committed event is still only in the outbox when the process dies.
    let nowhere =
        format!("nats://127.0.0.1:{}?stream={stream}&subject_prefix={prefix}", free_port());
    let mut server = Server::start_with(dir.path(), &["--broker", &nowhere]);
    let first = write_load(&server, "a", TRANSFERS / 2).await;
    assert_eq!(metric(&server, "kopek_relay_published_events_total").await, Some(0.0));
    server.kill9();

    // (b) Killed mid-publish: as soon as the restarted relay has had some of the backlog
    // confirmed, and not all of it.
    let mut server = Server::start_with(dir.path(), &["--broker", &broker]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let published = metric(&server, "kopek_relay_published_events_total").await.unwrap_or(0.0);
        if published > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the relay published nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill9();

    let server = Server::start_with(dir.path(), &["--broker", &broker]);
    let second = write_load(&server, "b", TRANSFERS / 2).await;
    let events = 1 + first + second;
    wait_for_no_lag(&server, events, Duration::from_secs(60)).await;
    let documents = read_stream(&client, &stream, events).await;
    check_delivery(&documents, events, TRANSFERS + 2 * ACCOUNTS);
    jetstream::new(client).delete_stream(&stream).await.expect("delete the test stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_receives_every_event_once_in_order() {
    use lapin::options::{BasicConsumeOptions, ExchangeDeleteOptions, QueueDeleteOptions};
    use lapin::types::FieldTable;
    let connection =
        match lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default()).await {
            Ok(connection) => connection,
            Err(error) => {
                skip(format!("no RabbitMQ at {AMQP}: {error}"));
                return;
            }
        };
    let exchange = unique("kt.events.");
    let queue = unique("kt.all.");
    let broker = format!("{AMQP}?exchange={exchange}&queue={queue}");
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_with(dir.path(), &["--broker", &broker]);
    let events = 1 + write_load(&server, "r", TRANSFERS).await;
    wait_for_no_lag(&server, events, Duration::from_secs(60)).await;

    let channel = connection.create_channel().await.expect("channel");
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "kopek-test".into(),
            BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut documents = Vec::new();
    while documents.len() < events {
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {events} messages arrived", documents.len()))
            .expect("consumer open")
            .expect("delivery");
        let document: Value = serde_json::from_slice(&delivery.data).expect("JSON document");
        let properties = &delivery.properties;
        assert_eq!(
            properties.message_id().as_ref().map(|id| id.as_str()),
            document["id"].as_str(),
            "message_id is the event id"
        );
        assert_eq!(properties.delivery_mode(), &Some(2), "persistent");
        assert_eq!(delivery.routing_key.as_str(), document["type"].as_str().expect("type"));
        documents.push(document);
    }
    let more = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await;
    assert!(more.is_err(), "an extra message arrived");
    check_delivery(&documents, events, TRANSFERS + ACCOUNTS);
    // The test's queue and the consumers' queues the relay declared on this exchange.
    for queue in [queue.clone(), format!("{exchange}.payments"), format!("{exchange}.analytics")] {
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .expect("delete queue");
    }
    channel
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .expect("delete exchange");
}

/// A NATS server of the test's own, with JetStream, on a free port; it keeps its store in
/// `dir`, so it comes back with its messages.
struct OwnNats {
    child: Child,
    port: u16,
}

impl OwnNats {
    fn start(dir: &std::path::Path, port: u16) -> Option<OwnNats> {
        let binary =
            ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"]
                .into_iter()
                .find(|path| std::path::Path::new(path).exists());
        let Some(binary) = binary else {
            return skip("no nats-server binary to start a broker of the test's own".to_owned())
                .and(None);
        };
        let child = Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(OwnNats { child, port })
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_on_while_the_broker_is_down_and_the_relay_catches_up() {
    let nats_dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let Some(mut nats) = OwnNats::start(nats_dir.path(), port) else { return };
    let broker = format!("{}?stream=OUTAGE", nats.url());
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_with(dir.path(), &["--broker", &broker]);
    let before = 1 + write_load(&server, "u", 1_000).await;
    wait_for_no_lag(&server, before, Duration::from_secs(30)).await;

    nats.stop();
    // 30 s without a broker, under load: every write still commits.
    let outage = Instant::now();
    let mut client = server.client().await;
    let mut during = 0;
    let mut round = 0;
    while outage.elapsed() < Duration::from_secs(30) {
        let batch = (0..100)
            .map(|index| post(&format!("u-out-{round}-{index}"), "u-0", "u-1", 1))
            .collect();
        for result in transfers(&mut client, batch, false).await {
            assert_eq!(error_code(&result), None);
            during += 1;
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events = before + during;
    let lag = metric(&server, "kopek_outbox_lag_events").await.expect("lag metric");
    assert!(lag > 0.0, "the outbox holds what the broker has not confirmed");
    assert!(metric(&server, "kopek_outbox_lag_seconds").await.expect("lag seconds") > 1.0);
    assert_eq!(metric(&server, "kopek_relay_up").await, Some(0.0));
    let ready = http(&server.http_address, "GET", "/readyz", &[], None).await;
    assert_eq!(ready.status, 200, "an outage does not take the API out of service");
    assert!(ready.body.contains("relay nats/OUTAGE down"), "{}", ready.body);

    let nats = OwnNats::start(nats_dir.path(), port).expect("restart nats-server");
    wait_for_no_lag(&server, events, Duration::from_secs(60)).await;
    assert_eq!(metric(&server, "kopek_relay_up").await, Some(1.0));
    assert_eq!(metric(&server, "kopek_outbox_lag_seconds").await, Some(0.0));
    let client = nats_or_skip(&nats.url()).await.expect("own NATS");
    let documents = read_stream(&client, "OUTAGE", events).await;
    check_delivery(&documents, events, 1_000 + during + ACCOUNTS);
}

async fn next_event(stream: &mut tonic::Streaming<pb::Event>) -> pb::Event {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an event in time")
        .expect("stream ok")
        .expect("stream open")
}

#[tokio::test]
async fn stream_events_replays_history_then_follows_live_with_filters() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    open_accounts(&mut client, &["se-a", "se-b", "se-c"]).await;
    for result in transfers(
        &mut client,
        vec![deposit("se-d1", "se-a", 500), post("se-t1", "se-a", "se-b", 100)],
        false,
    )
    .await
    {
        assert_eq!(error_code(&result), None);
    }

    // Everything from the start: history in sequence order.
    let request = pb::StreamEventsRequest::default();
    let mut all = client.stream_events(request).await.expect("stream").into_inner();
    let mut kinds = Vec::new();
    let mut last = 0;
    for _ in 0..6 {
        let event = next_event(&mut all).await;
        assert_eq!(event.sequence, last + 1, "gap-free and in order");
        last = event.sequence;
        kinds.push(event.r#type);
    }
    assert_eq!(
        kinds,
        [
            "AccountOpened",
            "AccountOpened",
            "AccountOpened",
            "AccountOpened",
            "TransferPosted",
            "TransferPosted"
        ]
    );

    // Only TransferPosted on se-b, from the start, then live.
    let request = pb::StreamEventsRequest {
        types: vec!["TransferPosted".to_owned()],
        account_id: "se-b".to_owned(),
        ..Default::default()
    };
    let mut on_b = client.stream_events(request).await.expect("stream").into_inner();
    let history = next_event(&mut on_b).await;
    let document: Value = serde_json::from_str(&history.document_json).expect("document");
    assert_eq!(document["subject"]["idempotency_key"], "se-t1");
    assert_eq!(history.subject_type, "transfer");
    let b = history.balances.iter().find(|balance| balance.account_id == "se-b").expect("b");
    assert_eq!((b.posted_minor, b.currency.as_str()), (100, "USD"));

    // A transfer that does not touch se-b is filtered out; the next one that does arrives.
    one(&mut client, post("se-t2", "se-a", "se-c", 10)).await;
    one(&mut client, post("se-t3", "se-a", "se-b", 20)).await;
    let live = next_event(&mut on_b).await;
    let document: Value = serde_json::from_str(&live.document_json).expect("document");
    assert_eq!(document["subject"]["idempotency_key"], "se-t3");
    assert!(live.sequence > history.sequence + 1, "se-t2 was skipped");

    // Resuming after a sequence sends exactly what followed it.
    let request =
        pb::StreamEventsRequest { after_sequence: history.sequence, ..Default::default() };
    let mut resumed = client.stream_events(request).await.expect("stream").into_inner();
    assert_eq!(next_event(&mut resumed).await.sequence, history.sequence + 1);

    // An unknown type is refused up front.
    let request =
        pb::StreamEventsRequest { types: vec!["Posted".to_owned()], ..Default::default() };
    let refused = client.stream_events(request).await.expect_err("unknown type");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("unknown event type"), "{}", refused.message());
}

#[tokio::test]
async fn spending_totals_follow_posted_transfers_per_user_category_and_currency() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    let owned = |id: &str, owner: &str, currency: &str| pb::NewAccount {
        owner: owner.to_owned(),
        kind: pb::AccountKind::User as i32,
        ..new_account(id, currency)
    };
    let accounts = vec![
        owned("alice-usd", "alice", "USD"),
        owned("alice-eur", "alice", "EUR"),
        owned("bob-usd", "bob", "USD"),
        new_account("shop-usd", "USD"),
        new_account("shop-eur", "EUR"),
    ];
    let created = client
        .create_accounts(pb::CreateAccountsRequest { accounts })
        .await
        .expect("accounts")
        .into_inner();
    assert!(created.results.iter().all(|result| result.error.is_none()), "{created:?}");
    let spend = |key: &str, debit: &str, credit: &str, minor: i64, category: &str| {
        let currency = if debit.ends_with("eur") { "EUR" } else { "USD" };
        pb::TransferRequest {
            category: category.to_owned(),
            currency: currency.to_owned(),
            ..post(key, debit, credit, minor)
        }
    };
    let eur_deposit =
        pb::TransferRequest { currency: "EUR".to_owned(), ..deposit("sp-d2", "alice-eur", 5_000) };
    let requests = vec![
        // Money in is not spending.
        deposit("sp-d1", "alice-usd", 10_000),
        eur_deposit,
        spend("sp-1", "alice-usd", "shop-usd", 1_250, "food"),
        spend("sp-2", "alice-usd", "shop-usd", 750, "food"),
        spend("sp-3", "alice-usd", "bob-usd", 500, ""),
        spend("sp-4", "alice-eur", "shop-eur", 999, "food"),
        // bob pays the shop back out of what alice sent him.
        spend("sp-5", "bob-usd", "shop-usd", 200, "travel"),
        // Declined: not spending either.
        spend("sp-6", "bob-usd", "shop-usd", 1_000_000, "travel"),
    ];
    let results = transfers(&mut client, requests, false).await;
    assert_eq!(error_code(&results[7]), Some(pb::ErrorCode::InsufficientFunds));

    // The consumer runs a moment after the commits.
    let expected = serde_json::json!([
        {"category": "", "currency": "USD", "total_minor": 500, "total": "5.00", "transfers": 1},
        {"category": "food", "currency": "EUR", "total_minor": 999, "total": "9.99", "transfers": 1},
        {"category": "food", "currency": "USD", "total_minor": 2_000, "total": "20.00", "transfers": 2},
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = http(&server.http_address, "GET", "/v1/users/alice/spending", &[], None).await;
        assert_eq!(body.status, 200);
        let mut totals = body.json()["totals"].clone();
        for total in totals.as_array_mut().expect("totals") {
            total.as_object_mut().expect("object").remove("updated_at");
        }
        if totals == expected {
            break;
        }
        assert!(Instant::now() < deadline, "alice's spending is {totals}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bob = client
        .get_spending(pb::GetSpendingRequest { user_id: "bob".to_owned() })
        .await
        .expect("spending")
        .into_inner();
    let bob: Vec<(&str, &str, i64, u64)> = bob
        .totals
        .iter()
        .map(|total| {
            (total.category.as_str(), total.total.as_str(), total.total_minor, total.transfers)
        })
        .collect();
    assert_eq!(bob, [("travel", "2.00", 200, 1)]);
    let nobody = http(&server.http_address, "GET", "/v1/users/nobody/spending", &[], None).await;
    assert_eq!(nobody.json()["totals"], serde_json::json!([]));
    let refused = client
        .get_spending(pb::GetSpendingRequest { user_id: String::new() })
        .await
        .expect_err("empty user");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
}

/// The Kafka-protocol broker the tests use: `KOPEK_TEST_KAFKA` (host:port), by default the
/// one `.ci/run` starts on 127.0.0.1:19092. `None` (a skip) only outside CI.
pub fn kafka_or_skip() -> Option<String> {
    let address =
        std::env::var("KOPEK_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:19092".to_owned());
    match std::net::TcpStream::connect(&address) {
        Ok(_) => Some(address),
        Err(error) => skip(format!("no Kafka-protocol broker at {address}: {error}")).and(None),
    }
}

/// Reads `topics` from the start until `expected` distinct messages (by `kopek-event-id` or
/// `kopek-verdict-id` header, else by position) arrived; answers every message read, in the
/// order each topic holds them, with its topic and headers.
pub async fn read_kafka(
    bootstrap: &str,
    topics: &[String],
    expected: usize,
) -> Vec<(String, HashMap<String, String>, Vec<u8>)> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::{Headers, Message};
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("kopek-test-"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names).expect("subscribe");
    let mut read = Vec::new();
    let mut distinct = HashSet::new();
    while distinct.len() < expected {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {expected} messages arrived", distinct.len()))
            .expect("message");
        let headers: HashMap<String, String> = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .filter_map(|header| {
                        Some((
                            header.key.to_owned(),
                            String::from_utf8_lossy(header.value?).into_owned(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let id = headers
            .get("kopek-event-id")
            .or_else(|| headers.get("kopek-verdict-id"))
            .cloned()
            .unwrap_or_else(|| format!("{}:{}", message.topic(), message.offset()));
        distinct.insert(id);
        read.push((
            message.topic().to_owned(),
            headers,
            message.payload().unwrap_or_default().to_vec(),
        ));
    }
    read
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_receives_every_event_once_per_family_topic_in_order_across_a_kill9() {
    let Some(bootstrap) = kafka_or_skip() else { return };
    let prefix = unique("kt");
    let broker = format!("kafka://{bootstrap}?topic_prefix={prefix}");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start_with(dir.path(), &["--broker", &broker]);
    let first = write_load(&server, "a", TRANSFERS / 2).await;
    server.kill9();
    let server = Server::start_with(dir.path(), &["--broker", &broker]);
    let second = write_load(&server, "b", TRANSFERS / 2).await;
    let events = 1 + first + second;
    wait_for_no_lag(&server, events, Duration::from_secs(120)).await;

    let topics: Vec<String> = ["accounts", "transfers", "users", "orders"]
        .iter()
        .map(|family| format!("{prefix}.{family}"))
        .collect();
    let read = read_kafka(&bootstrap, &topics, events).await;
    // Repeats (a relay restart may publish its unconfirmed tail again) dropped by event id.
    let mut seen = HashSet::new();
    let mut last_in_topic: HashMap<String, u64> = HashMap::new();
    let mut sequences = Vec::new();
    let mut posted = 0;
    for (topic, headers, body) in &read {
        let document: Value = serde_json::from_slice(body).expect("document");
        assert_eq!(headers.get("kopek-event-id").map(String::as_str), document["id"].as_str());
        if !seen.insert(document["id"].as_str().expect("id").to_owned()) {
            continue;
        }
        let sequence = document["sequence"].as_u64().expect("sequence");
        let last = last_in_topic.insert(topic.clone(), sequence);
        assert!(last.is_none_or(|last| last < sequence), "{topic} out of order at {sequence}");
        sequences.push(sequence);
        if document["type"] == "TransferPosted" {
            assert_eq!(topic, &format!("{prefix}.transfers"));
            posted += 1;
        }
    }
    sequences.sort_unstable();
    assert_eq!(sequences, (1..=events as u64).collect::<Vec<_>>(), "every event, no gaps");
    assert_eq!(posted, TRANSFERS + 2 * ACCOUNTS);
}
