//! Relay figures against a real broker:
//!
//! ```text
//! cargo build --release -p kopek-server --bin kopek --example relay
//! target/release/examples/relay 'nats://127.0.0.1:4222' [TRANSFERS]
//! target/release/examples/relay 'amqp://guest:guest@127.0.0.1:5672/%2f' [TRANSFERS]
//! target/release/examples/relay 'kafka://127.0.0.1:19092' [TRANSFERS]
//! ```
//!
//! 1. Throughput: a fresh ledger (SQLite in a temp dir) takes TRANSFERS transfers while its
//!    relay points at a port where nothing listens, so every event waits in the outbox; then
//!    the server restarts with the real broker and the time until `kopek_outbox_lag_events`
//!    is 0 gives the events per second the relay publishes with confirmations.
//! 2. Latency: a consumer on the broker receives the events of a steady 2,000 transfers/s for
//!    20 s; for each, the time from its commit (`at`) to its arrival.
//!
//! It uses a stream, exchange or topic prefix of its own and deletes the stream or exchange
//! afterwards (Kafka topics stay).

use futures_util::StreamExt;
use kopek_proto::kopek::v1 as pb;
use kopek_proto::kopek::v1::ledger_client::LedgerClient;
use kopek_testkit::fixtures::post;
use kopek_testkit::process::{Launch, ServerProcess};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A `kopek serve` with the broker, stopped with SIGTERM when dropped.
struct Server {
    process: ServerProcess,
    grpc: String,
    http: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.process.terminate();
    }
}

fn start(kopek: &str, dir: &std::path::Path, broker: &str) -> Server {
    let mut launch = Launch::new(kopek, dir);
    launch.args.extend(["--broker".to_owned(), broker.to_owned()]);
    launch.env.push(("RUST_LOG".to_owned(), "error".to_owned()));
    let process = ServerProcess::start(&launch);
    let grpc = format!("http://{}", process.listeners.grpc.clone().unwrap_or_default());
    let http = process.listeners.http[0].clone();
    Server { process, grpc, http }
}

async fn metric(http: &str, name: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(http).await.ok()?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.ok()?;
    let mut body = String::new();
    socket.read_to_string(&mut body).await.ok()?;
    // The response head comes along; none of its lines names a kopek series.
    kopek_testkit::Scrape::parse(&body).one(name)
}

async fn load(
    client: &mut LedgerClient<tonic::transport::Channel>,
    tag: &str,
    from: usize,
    count: usize,
) -> Result<(), Error> {
    for chunk in (from..from + count).collect::<Vec<_>>().chunks(1_000) {
        let transfers = chunk
            .iter()
            .map(|index| {
                post(
                    &format!("{tag}-{index}"),
                    &format!("a{}", index % 100),
                    &format!("a{}", (index + 1) % 100),
                    1,
                )
            })
            .collect();
        client.create_transfers(pb::CreateTransfersRequest { transfers, linked: false }).await?;
    }
    Ok(())
}

fn micros_now() -> i64 {
    kopek_clock::now().as_unix_micros()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let base = args.first().cloned().unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned());
    let transfers: usize = args.get(1).and_then(|value| value.parse().ok()).unwrap_or(100_000);
    let kopek = std::env::current_exe()?
        .parent()
        .and_then(|dir| dir.parent())
        .map(|dir| dir.join("kopek"))
        .expect("target dir");
    let kopek = kopek.to_str().expect("path").to_owned();
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let nats = base.starts_with("nats://");
    let kafka = base.starts_with("kafka://");
    let (name, query) = if nats {
        (format!("RB{tag}"), format!("stream=RB{tag}&subject_prefix=rb{tag}"))
    } else if kafka {
        (format!("rb{tag}"), format!("topic_prefix=rb{tag}"))
    } else {
        (format!("rb{tag}"), format!("exchange=rb{tag}"))
    };
    let separator = if base.contains('?') { '&' } else { '?' };
    let broker = format!("{base}{separator}{query}");
    let scheme_end = base.find("://").expect("a URL") + 3;
    let host_end = base[scheme_end..].find(['/', '?']).map_or(base.len(), |end| scheme_end + end);
    let host_start =
        base[scheme_end..host_end].rfind('@').map_or(scheme_end, |at| scheme_end + at + 1);
    let nowhere =
        format!("{}127.0.0.1:1{}{separator}{query}", &base[..host_start], &base[host_end..]);
    let dir = tempfile::tempdir()?;

    // 1. Throughput of the relay catching up a backlog.
    let server = start(&kopek, dir.path(), &nowhere);
    let mut client = LedgerClient::connect(server.grpc.clone()).await?;
    let accounts = (0..100)
        .map(|index| pb::NewAccount {
            id: format!("a{index}"),
            currency: "USD".to_owned(),
            overdraft_limit_minor: 1_000_000_000,
            ..Default::default()
        })
        .collect();
    client.create_accounts(pb::CreateAccountsRequest { accounts }).await?;
    let loaded = Instant::now();
    load(&mut client, &tag, 0, transfers).await?;
    println!("loaded {transfers} transfers in {:.1} s", loaded.elapsed().as_secs_f64());
    let events = metric(&server.http, "kopek_outbox_sequence").await.unwrap_or(0.0);
    drop(client);
    drop(server);
    let started = Instant::now();
    let server = start(&kopek, dir.path(), &broker);
    loop {
        let lag = metric(&server.http, "kopek_outbox_lag_events").await;
        let sequence = metric(&server.http, "kopek_outbox_sequence").await.unwrap_or(0.0);
        if lag == Some(0.0) && sequence >= events {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "relay: {events} events published and confirmed in {elapsed:.2} s (start-up included): {:.0} events/s",
        events / elapsed
    );

    // 2. Commit-to-consumer latency under a steady load.
    let (arrivals, mut received) = mpsc::unbounded_channel::<i64>();
    let (nats_client, amqp) = if kafka {
        use rdkafka::consumer::{Consumer, StreamConsumer};
        use rdkafka::message::Message;
        let consumer: StreamConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", base.trim_start_matches("kafka://"))
            .set("group.id", format!("{name}.latency"))
            .set("auto.offset.reset", "latest")
            .set("fetch.wait.max.ms", "50")
            .create()?;
        let topics: Vec<String> = ["accounts", "transfers", "users", "orders"]
            .iter()
            .map(|family| format!("{name}.{family}"))
            .collect();
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        tokio::spawn(async move {
            while let Ok(message) = consumer.recv().await {
                let document: serde_json::Value =
                    serde_json::from_slice(message.payload().unwrap_or_default())
                        .unwrap_or_default();
                if let Some(at) = document["at"]
                    .as_str()
                    .and_then(|at| kopek_core::Timestamp::parse_rfc3339(at).ok())
                {
                    let _ = arrivals.send(micros_now() - at.as_unix_micros());
                }
            }
        });
        // The group's partitions are assigned a moment after subscribing.
        tokio::time::sleep(Duration::from_secs(3)).await;
        (None, None)
    } else if nats {
        let client = async_nats::connect(base.as_str()).await?;
        let context = async_nats::jetstream::new(client.clone());
        let stream = context.get_stream(&name).await?;
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
                deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::New,
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        tokio::spawn(async move {
            while let Some(Ok(message)) = messages.next().await {
                let document: serde_json::Value =
                    serde_json::from_slice(&message.payload).unwrap_or_default();
                if let Some(at) = document["at"]
                    .as_str()
                    .and_then(|at| kopek_core::Timestamp::parse_rfc3339(at).ok())
                {
                    let _ = arrivals.send(micros_now() - at.as_unix_micros());
                }
            }
        });
        (Some(client), None)
    } else {
        use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
        use lapin::types::FieldTable;
        let connection =
            lapin::Connection::connect(&base, lapin::ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        let queue = format!("{name}.latency");
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                name.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions { no_ack: true, ..Default::default() },
                FieldTable::default(),
            )
            .await?;
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let document: serde_json::Value =
                    serde_json::from_slice(&delivery.data).unwrap_or_default();
                if let Some(at) = document["at"]
                    .as_str()
                    .and_then(|at| kopek_core::Timestamp::parse_rfc3339(at).ok())
                {
                    let _ = arrivals.send(micros_now() - at.as_unix_micros());
                }
            }
        });
        (None, Some((connection, channel)))
    };
    let mut client = LedgerClient::connect(server.grpc.clone()).await?;
    let steady = Instant::now();
    let mut next = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while steady.elapsed() < Duration::from_secs(20) {
        tick.tick().await;
        load(&mut client, &format!("{tag}-steady"), next, 100).await?;
        next += 100;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut latencies = Vec::new();
    while let Ok(micros) = received.try_recv() {
        latencies.push(micros as f64 / 1_000.0);
    }
    latencies.sort_by(f64::total_cmp);
    if latencies.is_empty() {
        println!("latency: no events arrived");
    } else {
        println!(
            "latency commit -> consumer over {} events at 2,000 transfers/s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            latencies.len(),
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            latencies[latencies.len() - 1]
        );
    }
    drop(server);
    if let Some(client) = nats_client {
        async_nats::jetstream::new(client).delete_stream(&name).await?;
    }
    if let Some((_connection, channel)) = amqp {
        for consumer in ["payments", "analytics", "notifier"] {
            let _ = channel
                .queue_delete(format!("{name}.{consumer}").as_str().into(), Default::default())
                .await;
        }
        let _ = channel.exchange_delete(name.as_str().into(), Default::default()).await;
    }
    Ok(())
}
