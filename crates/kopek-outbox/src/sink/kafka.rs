//! Kafka: one topic per event family (`<prefix>.accounts`, `.transfers`, `.users`, `.orders`),
//! created if missing, each message keyed by the account it concerns (the first account whose
//! balance it changed, else its subject) so an account's events keep their order within a
//! partition. The producer is idempotent (`enable.idempotence`, `acks=all`): its own retries
//! never duplicate; a relay restart may publish the unconfirmed tail again, and consumers drop
//! repeats by the `kopek-event-id` header (the document's `id`).

use super::{CONFIRM_TIMEOUT, Sink, SinkError, within};
use async_trait::async_trait;
use kopek_core::EventKind;
use kopek_events::envelope;
use kopek_store::StoredEvent;
use kopek_telemetry::trace::TRACEPARENT;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The families, and the event types each topic carries.
pub const FAMILIES: [(&str, &[EventKind]); 5] = [
    ("accounts", &[EventKind::AccountOpened, EventKind::AccountUpdated]),
    (
        "transfers",
        &[
            EventKind::TransferPosted,
            EventKind::TransferDeclined,
            EventKind::HoldPlaced,
            EventKind::HoldCaptured,
            EventKind::HoldVoided,
            EventKind::HoldExpired,
        ],
    ),
    ("users", &[EventKind::UserCreated]),
    (
        "orders",
        &[
            EventKind::OrderCreated,
            EventKind::PaymentCompleted,
            EventKind::PaymentFailed,
            EventKind::OrderPaid,
            EventKind::OrderFailed,
        ],
    ),
    ("fx", &[EventKind::RateUpdated, EventKind::QuoteCreated]),
];

/// The topic of an event type.
pub fn topic_of(prefix: &str, kind: &str) -> String {
    let family = FAMILIES
        .iter()
        .find(|(_, kinds)| kinds.iter().any(|candidate| candidate.as_str() == kind))
        .map_or("other", |(family, _)| family);
    format!("{prefix}.{family}")
}

/// The topics that carry `kinds`.
pub fn topics_for(prefix: &str, kinds: &[&str]) -> Vec<String> {
    let mut topics: Vec<String> = kinds.iter().map(|kind| topic_of(prefix, kind)).collect();
    topics.sort();
    topics.dedup();
    topics
}

pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("socket.timeout.ms", "10000")
        .set("log_level", "3");
    config
}

/// A consumer in group `group`: offsets committed by hand, a new group starts at the
/// earliest offset, and a member that stops heartbeating (a crashed process) loses its
/// partitions after seconds instead of librdkafka's default minutes.
///
/// `member` names this process within the group across its restarts (static membership):
/// a process that comes back after a crash takes its partitions back at once instead of
/// waiting for the broker to notice the old member is gone.
pub fn consumer_config(bootstrap: &str, group: &str, member: &str) -> ClientConfig {
    let mut config = client_config(bootstrap);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        // Answer within 50 ms when little is waiting, rather than librdkafka's 500 ms.
        .set("fetch.wait.max.ms", "50")
        // Also how long a rebalance waits for members to rejoin: a crashed member holds up
        // its successor at most this long. A batch takes far less between two polls.
        .set("max.poll.interval.ms", "10000")
        .set("group.instance.id", format!("{group}.{member}"));
    config
}

pub fn producer(bootstrap: &str) -> Result<FutureProducer, SinkError> {
    client_config(bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", CONFIRM_TIMEOUT.as_millis().to_string())
        .create()
        .map_err(|error| SinkError(format!("create the Kafka producer: {error}")))
}

/// Creates the topics that do not exist yet (one partition each unless `partitions` says).
pub async fn ensure_topics(
    bootstrap: &str,
    topics: &[String],
    partitions: i32,
) -> Result<(), SinkError> {
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap)
        .create()
        .map_err(|error| SinkError(format!("create the Kafka admin client: {error}")))?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|topic| NewTopic::new(topic, partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(CONFIRM_TIMEOUT));
    let results = admin
        .create_topics(&new, &options)
        .await
        .map_err(|error| SinkError(format!("create Kafka topics: {error}")))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(SinkError(format!("create Kafka topic {topic}: {code}")));
            }
        }
    }
    Ok(())
}

/// One record to send.
pub struct Outgoing {
    pub topic: String,
    pub key: String,
    pub body: Vec<u8>,
    pub headers: OwnedHeaders,
}

/// Queues every record, then waits until the broker confirmed all of them.
pub async fn send_all(producer: &FutureProducer, records: &[Outgoing]) -> Result<(), SinkError> {
    let mut deliveries = Vec::with_capacity(records.len());
    for record in records {
        let future = FutureRecord::to(&record.topic)
            .key(&record.key)
            .payload(&record.body)
            .headers(record.headers.clone());
        let delivery = producer
            .send_result(future)
            .map_err(|(error, _)| SinkError(format!("queue a Kafka message: {error}")))?;
        deliveries.push(delivery);
    }
    for delivery in deliveries {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((error, _))) => return Err(SinkError(format!("Kafka delivery: {error}"))),
            Err(_) => return Err(SinkError("the Kafka producer went away".to_owned())),
        }
    }
    Ok(())
}

/// Commits, for each topic and partition, the offset after the last message handled.
pub fn commit(
    consumer: &StreamConsumer,
    next_offsets: &BTreeMap<(String, i32), i64>,
) -> Result<(), SinkError> {
    if next_offsets.is_empty() {
        return Ok(());
    }
    let mut offsets = TopicPartitionList::new();
    for ((topic, partition), offset) in next_offsets {
        offsets
            .add_partition_offset(topic, *partition, Offset::Offset(*offset))
            .map_err(|error| SinkError(format!("Kafka offsets: {error}")))?;
    }
    consumer
        .commit(&offsets, CommitMode::Sync)
        .map_err(|error| SinkError(format!("Kafka commit: {error}")))
}

pub struct KafkaSink {
    bootstrap: String,
    prefix: String,
    partitions: i32,
    producer: Option<Arc<FutureProducer>>,
}

impl KafkaSink {
    pub fn new(bootstrap: String, prefix: String, partitions: i32) -> KafkaSink {
        KafkaSink { bootstrap, prefix, partitions, producer: None }
    }
}

/// The account a message is keyed by: the first whose balance it changed, else its subject.
fn key_of(event: &StoredEvent, document: &serde_json::Value) -> String {
    document["balances"][0]["account_id"]
        .as_str()
        .map_or_else(|| event.subject_id.clone(), str::to_owned)
}

#[async_trait]
impl Sink for KafkaSink {
    async fn publish(&mut self, events: &[Arc<StoredEvent>]) -> Result<(), SinkError> {
        let producer = match &self.producer {
            Some(producer) => producer.clone(),
            None => {
                let topics: Vec<String> = FAMILIES
                    .iter()
                    .map(|(family, _)| format!("{}.{family}", self.prefix))
                    .collect();
                within(
                    "create Kafka topics",
                    ensure_topics(&self.bootstrap, &topics, self.partitions),
                )
                .await?;
                let producer = Arc::new(producer(&self.bootstrap)?);
                self.producer = Some(producer.clone());
                producer
            }
        };
        let records: Vec<Outgoing> = events
            .iter()
            .map(|event| {
                let sequence = event.sequence.to_string();
                let mut headers = OwnedHeaders::new()
                    .insert(Header { key: "kopek-event-id", value: Some(event.id.as_str()) })
                    .insert(Header { key: "kopek-event-type", value: Some(event.kind.as_str()) })
                    .insert(Header { key: "kopek-sequence", value: Some(sequence.as_str()) })
                    .insert(Header { key: "content-type", value: Some("application/json") });
                if let Some(traceparent) = &event.traceparent {
                    headers = headers
                        .insert(Header { key: TRACEPARENT, value: Some(traceparent.as_str()) });
                }
                let document = envelope::document_value(event);
                Outgoing {
                    topic: topic_of(&self.prefix, &event.kind),
                    key: key_of(event, &document),
                    body: document.to_string().into_bytes(),
                    headers,
                }
            })
            .collect();
        let result = within("Kafka deliveries", send_all(&producer, &records)).await;
        if result.is_err() {
            self.producer = None;
        }
        result
    }
}
