//! Command ingestion from the machine's NATS JetStream and RabbitMQ: 10,000 transfer commands
//! in both shapes (kopek.v1 transfers and the streaming contract's transactions), as JSON and
//! protobuf, a tenth of them published twice, and one poison message; the server is killed
//! with SIGKILL once it has begun applying them and started again. Every command is applied
//! exactly once (balances add up), every command gets a verdict, and the poison message is
//! dead-lettered with its reason. Outside CI a test skips, loudly, when its broker is not
//! there; with `CI=true` it must run.

use crate::events::{NATS, nats_or_skip, unique};
use crate::support::*;
use async_nats::jetstream;
use futures_util::StreamExt;
use kopek_proto::kopek::v1 as pb;
use kopek_proto::transaction as contract;
use prost::Message;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const COMMANDS: usize = 10_000;
const ACCOUNTS: usize = 10;

/// One command message: body, content type, correlation id.
struct Published {
    body: Vec<u8>,
    content_type: &'static str,
    correlation: String,
}

/// The commands, in publication order (duplicates included, the poison message last), and
/// the balance each account must end with.
fn commands(prefix: &str) -> (Vec<Published>, BTreeMap<String, i64>) {
    let mut published = Vec::new();
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for index in 0..COMMANDS {
        let minor = i64::try_from(index % 97 + 1).expect("small");
        let key = format!("{prefix}-k{index}");
        let account = format!("{prefix}-a{}", index % ACCOUNTS);
        let user = format!("{prefix}-u{}", index % ACCOUNTS);
        let (body, content_type, credited) = match index % 4 {
            0 => {
                let body = serde_json::json!({"idempotency_key": key, "kind": "deposit", "credit_account_id": account, "amount_minor": minor, "currency": "USD"});
                (body.to_string().into_bytes(), "application/json", account)
            }
            1 => {
                let request = pb::TransferRequest {
                    idempotency_key: key,
                    kind: pb::TransferKind::Deposit as i32,
                    credit_account_id: account.clone(),
                    amount_minor: minor,
                    currency: "USD".to_owned(),
                    ..Default::default()
                };
                (request.encode_to_vec(), "application/x-protobuf", account)
            }
            2 => {
                let body = serde_json::json!({"transactionId": key, "userId": user, "category": "deposit", "amount": minor as f64 / 100.0, "currency": "USD"});
                (body.to_string().into_bytes(), "application/json", format!("user:{user}:USD"))
            }
            _ => {
                let transaction = contract::Transaction {
                    transaction_id: key,
                    user_id: user.clone(),
                    category: "deposit".to_owned(),
                    amount: minor as f32 / 100.0,
                    currency: "USD".to_owned(),
                    timestamp: String::new(),
                };
                (
                    transaction.encode_to_vec(),
                    "application/x-protobuf; messageType=transaction.Transaction",
                    format!("user:{user}:USD"),
                )
            }
        };
        *expected.entry(credited).or_default() += minor;
        let correlation = format!("corr-{index}");
        // A tenth are published twice, as a sender that retried would.
        let copies = if index % 10 == 7 { 2 } else { 1 };
        for _ in 0..copies {
            published.push(Published {
                body: body.clone(),
                content_type,
                correlation: correlation.clone(),
            });
        }
    }
    published.push(Published {
        body: b"{this is not a command".to_vec(),
        content_type: "application/json",
        correlation: "corr-poison".to_owned(),
    });
    (published, expected)
}

async fn open_targets(server: &Server, prefix: &str) {
    let mut client = server.client().await;
    let ids: Vec<String> = (0..ACCOUNTS).map(|index| format!("{prefix}-a{index}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    open_accounts(&mut client, &refs).await;
}

/// Kills the server with SIGKILL as soon as it has applied some commands, then starts it
/// again on the same data.
async fn kill_once_applying(server: &mut Server, prefix: &str) {
    let mut client = server.client().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if posted(&mut client, &format!("{prefix}-a0")).await > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "nothing was applied");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill9();
}

/// Every account ends with exactly the sum of its commands.
async fn check_balances(server: &Server, expected: &BTreeMap<String, i64>) {
    let mut client = server.client().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    for (account, sum) in expected {
        loop {
            let request =
                pb::GetBalanceRequest { account_id: account.clone(), as_of: String::new() };
            let balance = match client.get_balance(request).await {
                Ok(response) => response.into_inner().balance.expect("balance").posted_minor,
                Err(_) => 0,
            };
            if balance == *sum {
                break;
            }
            assert!(balance < *sum, "{account} has {balance}, more than {sum}: applied twice");
            assert!(Instant::now() < deadline, "{account} has {balance} of {sum}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Verdicts, one per command at least: every correlation id answered, each key's verdicts
/// agreeing on the transfer.
fn check_verdicts(verdicts: &[Value]) {
    let mut by_key: HashMap<String, Vec<&Value>> = HashMap::new();
    for verdict in verdicts {
        assert_eq!(verdict["type"], "CommandVerdict");
        let status = verdict["status"].as_str().expect("status");
        assert!(matches!(status, "committed" | "replayed"), "{verdict}");
        by_key
            .entry(verdict["idempotency_key"].as_str().expect("key").to_owned())
            .or_default()
            .push(verdict);
    }
    assert_eq!(by_key.len(), COMMANDS, "one verdict per command");
    for (key, answers) in &by_key {
        let transfers: Vec<&Value> = answers.iter().map(|answer| &answer["transfer_id"]).collect();
        assert!(transfers.windows(2).all(|pair| pair[0] == pair[1]), "{key}: {answers:?}");
        let index: usize = key.rsplit('k').next().and_then(|n| n.parse().ok()).expect("index");
        assert_eq!(answers[0]["correlation_id"], format!("corr-{index}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_commands_apply_once_with_verdicts_and_a_dead_letter_across_a_kill9() {
    let Some(client) = nats_or_skip(NATS).await else { return };
    let (stream, prefix) = (unique("KI"), unique("ki"));
    let broker = format!("{NATS}?stream={stream}&subject_prefix={prefix}");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start_with(dir.path(), &["--broker", &broker, "--ingest"]);
    open_targets(&server, &prefix).await;
    let context = jetstream::new(client);
    let commands_stream = format!("{stream}_COMMANDS");
    let deadline = Instant::now() + Duration::from_secs(30);
    while context.get_stream(&commands_stream).await.is_err() {
        assert!(Instant::now() < deadline, "kopek did not create {commands_stream}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (published, expected) = commands(&prefix);
    let mut acks = Vec::new();
    for (index, message) in published.iter().enumerate() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Content-Type", message.content_type);
        headers.insert("Kopek-Correlation-Id", message.correlation.as_str());
        // Each publication is its own message: JetStream must not drop the duplicates.
        headers.insert("Nats-Msg-Id", format!("m{index}").as_str());
        let subject = format!("{prefix}_commands.in.bank");
        let ack = context
            .publish_with_headers(subject, headers, message.body.clone().into())
            .await
            .expect("publish");
        acks.push(ack);
        // The client allows a few thousand unconfirmed publishes; collect the acks as we go.
        if acks.len() == 1_000 {
            for ack in acks.drain(..) {
                ack.await.expect("JetStream stored the command");
            }
        }
    }
    for ack in acks {
        ack.await.expect("JetStream stored the command");
    }
    kill_once_applying(&mut server, &prefix).await;
    let server = Server::start_with(dir.path(), &["--broker", &broker, "--ingest"]);
    check_balances(&server, &expected).await;

    let read = |filter: String, expected: usize| {
        let context = context.clone();
        let commands_stream = commands_stream.clone();
        async move {
            let stream = context.get_stream(&commands_stream).await.expect("stream");
            let consumer = stream
                .create_consumer(jetstream::consumer::pull::Config {
                    ack_policy: jetstream::consumer::AckPolicy::None,
                    filter_subject: filter,
                    ..Default::default()
                })
                .await
                .expect("consumer");
            let mut messages = consumer.messages().await.expect("messages");
            let mut read = Vec::new();
            while read.len() < expected {
                let message = tokio::time::timeout(Duration::from_secs(30), messages.next())
                    .await
                    .unwrap_or_else(|_| panic!("only {} of {expected} messages", read.len()))
                    .expect("open")
                    .expect("message");
                read.push(message);
            }
            read
        }
    };
    let verdicts: Vec<Value> = read(format!("{prefix}_commands.verdicts.>"), COMMANDS)
        .await
        .iter()
        .map(|message| serde_json::from_slice(&message.payload).expect("verdict JSON"))
        .collect();
    check_verdicts(&verdicts);
    let dead = read(format!("{prefix}_commands.dead"), 1).await;
    let reason = dead[0]
        .headers
        .as_ref()
        .and_then(|headers| headers.get("Kopek-Dead-Letter-Reason"))
        .expect("reason");
    assert!(reason.as_str().contains("not JSON"), "{reason:?}");
    assert_eq!(dead[0].payload.as_ref(), b"{this is not a command");
    for name in [stream.clone(), commands_stream] {
        context.delete_stream(&name).await.expect("delete the test stream");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_commands_apply_once_with_verdicts_and_a_dead_letter_across_a_kill9() {
    use lapin::options::{
        BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions,
        QueueDeclareOptions, QueueDeleteOptions,
    };
    use lapin::types::FieldTable;
    let connection =
        match lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default()).await {
            Ok(connection) => connection,
            Err(error) => {
                assert!(std::env::var("CI").is_err(), "this test must run in CI: {error}");
                eprintln!("SKIPPED: no RabbitMQ at {AMQP}: {error}");
                return;
            }
        };
    let exchange = unique("ki.events.");
    let prefix = unique("ki");
    let commands_queue = format!("{exchange}.commands");
    let channel = connection.create_channel().await.expect("channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    for queue in [
        commands_queue.clone(),
        format!("{commands_queue}.verdicts"),
        format!("{commands_queue}.dead"),
    ] {
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() },
                FieldTable::default(),
            )
            .await
            .expect("declare");
    }
    let (published, expected) = commands(&prefix);
    let mut confirms = Vec::new();
    for message in &published {
        let properties = lapin::BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(message.content_type.into())
            .with_correlation_id(message.correlation.as_str().into());
        let confirm = channel
            .basic_publish(
                "".into(),
                commands_queue.as_str().into(),
                BasicPublishOptions::default(),
                &message.body,
                properties,
            )
            .await
            .expect("publish");
        confirms.push(confirm);
    }
    for confirm in confirms {
        assert!(confirm.await.expect("confirm").is_ack());
    }

    let broker = format!("{AMQP}?exchange={exchange}");
    let dir = tempfile::tempdir().expect("temp dir");
    // The accounts exist before ingestion starts: open them on a server without it first.
    let opener = Server::start(dir.path());
    open_targets(&opener, &prefix).await;
    drop(opener);
    let mut server = Server::start_with(dir.path(), &["--broker", &broker, "--ingest"]);
    kill_once_applying(&mut server, &prefix).await;
    let server = Server::start_with(dir.path(), &["--broker", &broker, "--ingest"]);
    check_balances(&server, &expected).await;

    let read = |queue: String, expected_distinct: usize| {
        let channel = channel.clone();
        async move {
            let mut consumer = channel
                .basic_consume(
                    queue.as_str().into(),
                    "".into(),
                    BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() },
                    FieldTable::default(),
                )
                .await
                .expect("consume");
            let mut by_id: HashMap<String, lapin::message::Delivery> = HashMap::new();
            let mut anonymous = Vec::new();
            while by_id.len() + anonymous.len() < expected_distinct {
                let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
                    .await
                    .unwrap_or_else(|_| panic!("only {} of {expected_distinct}", by_id.len()))
                    .expect("open")
                    .expect("delivery");
                match delivery.properties.message_id().as_ref().map(|id| id.as_str().to_owned()) {
                    // A verdict published again after the crash: drop it by its id.
                    Some(id) => {
                        by_id.entry(id).or_insert(delivery);
                    }
                    None => anonymous.push(delivery),
                }
            }
            by_id.into_values().chain(anonymous).collect::<Vec<_>>()
        }
    };
    let verdicts: Vec<Value> = read(format!("{commands_queue}.verdicts"), COMMANDS)
        .await
        .iter()
        .map(|delivery| serde_json::from_slice(&delivery.data).expect("verdict JSON"))
        .collect();
    check_verdicts(&verdicts);
    let dead = read(format!("{commands_queue}.dead"), 1).await;
    let reason = dead[0]
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get("kopek-dead-letter-reason").cloned())
        .expect("reason");
    let lapin::types::AMQPValue::LongString(reason) = reason else {
        panic!("the reason is text: {reason:?}")
    };
    let reason = String::from_utf8_lossy(reason.as_bytes()).into_owned();
    assert!(reason.contains("not JSON"), "{reason}");
    drop(server);
    for queue in [
        commands_queue.clone(),
        format!("{commands_queue}.verdicts"),
        format!("{commands_queue}.dead"),
        format!("{exchange}.payments"),
        format!("{exchange}.analytics"),
        format!("{exchange}.notifier"),
    ] {
        let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    }
    let _ =
        channel.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_commands_apply_once_with_verdicts_and_a_dead_letter_across_a_kill9() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let Some(bootstrap) = crate::events::kafka_or_skip() else { return };
    let prefix = unique("ki");
    let broker = format!("kafka://{bootstrap}?topic_prefix={prefix}");
    let topic = format!("{prefix}_commands");
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .expect("producer");
    let (published, expected) = commands(&prefix);
    for chunk in published.chunks(1_000) {
        let mut deliveries = Vec::new();
        for message in chunk {
            let headers = OwnedHeaders::new()
                .insert(Header { key: "content-type", value: Some(message.content_type) })
                .insert(Header {
                    key: "kopek-correlation-id",
                    value: Some(message.correlation.as_str()),
                });
            let record = FutureRecord::to(&topic)
                .key(message.correlation.as_str())
                .payload(&message.body)
                .headers(headers);
            deliveries
                .push(producer.send_result(record).map_err(|(error, _)| error).expect("queue"));
        }
        for delivery in deliveries {
            delivery.await.expect("delivered").expect("stored");
        }
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let opener = Server::start(dir.path());
    open_targets(&opener, &prefix).await;
    drop(opener);
    let mut server = Server::start_with(dir.path(), &["--broker", &broker, "--ingest"]);
    kill_once_applying(&mut server, &prefix).await;
    let server = Server::start_with(dir.path(), &["--broker", &broker, "--ingest"]);
    check_balances(&server, &expected).await;

    let verdicts: Vec<Value> =
        crate::events::read_kafka(&bootstrap, &[format!("{topic}.verdicts")], COMMANDS)
            .await
            .iter()
            .map(|(_, _, body)| serde_json::from_slice(body).expect("verdict JSON"))
            .collect();
    check_verdicts(&verdicts);
    let dead = crate::events::read_kafka(&bootstrap, &[format!("{topic}.dead")], 1).await;
    let reason = dead[0].1.get("kopek-dead-letter-reason").expect("reason");
    assert!(reason.contains("not JSON"), "{reason}");
    assert_eq!(dead[0].2, b"{this is not a command");
}
