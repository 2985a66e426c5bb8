//! Events from Kafka: a consumer group `<prefix>.<consumer>` on the topics of the event types
//! wanted, from the earliest offset for a new group, offsets committed only when a batch is
//! acknowledged.

use super::{BATCH_EVENTS, ConsumerError, Incoming, Source, take_ready};
use crate::sink::kafka::{commit, consumer_config, ensure_topics, topics_for};
use async_trait::async_trait;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use std::collections::BTreeMap;

pub struct KafkaSource {
    bootstrap: String,
    group: String,
    topics: Vec<String>,
    partitions: i32,
    member: String,
    consumer: Option<StreamConsumer>,
    /// The next offset to commit per topic and partition.
    pending: BTreeMap<(String, i32), i64>,
}

impl KafkaSource {
    pub fn new(
        bootstrap: String,
        prefix: &str,
        partitions: i32,
        consumer: &str,
        types: &[&str],
        member: &str,
    ) -> KafkaSource {
        KafkaSource {
            bootstrap,
            group: format!("{prefix}.{consumer}"),
            topics: topics_for(prefix, types),
            partitions,
            member: member.to_owned(),
            consumer: None,
            pending: BTreeMap::new(),
        }
    }

    async fn connect(&self) -> Result<StreamConsumer, ConsumerError> {
        ensure_topics(&self.bootstrap, &self.topics, self.partitions)
            .await
            .map_err(|error| ConsumerError(error.0))?;
        let consumer: StreamConsumer = consumer_config(&self.bootstrap, &self.group, &self.member)
            .create()
            .map_err(|error| ConsumerError(format!("create the Kafka consumer: {error}")))?;
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|error| ConsumerError(format!("subscribe to Kafka topics: {error}")))?;
        Ok(consumer)
    }
}

#[async_trait]
impl Source for KafkaSource {
    async fn next(&mut self) -> Result<Option<Vec<Incoming>>, ConsumerError> {
        let consumer = match self.consumer.take() {
            Some(consumer) => consumer,
            None => self.connect().await?,
        };
        let batch = {
            // On an error the consumer is made again and resumes from the committed offsets.
            let received = match take_ready(&mut consumer.stream(), BATCH_EVENTS).await {
                Ok(received) => received,
                Err(error) => {
                    self.pending.clear();
                    return Err(match error {
                        Some(error) => ConsumerError(format!("Kafka receive: {error}")),
                        None => ConsumerError("the Kafka stream ended".to_owned()),
                    });
                }
            };
            let mut batch = Vec::with_capacity(received.len());
            for message in received {
                self.pending.insert(
                    (message.topic().to_owned(), message.partition()),
                    message.offset() + 1,
                );
                match Incoming::from_document(message.payload().unwrap_or_default()) {
                    Ok(event) => batch.push(event),
                    Err(reason) => {
                        tracing::warn!(topic = message.topic(), %reason, "dropping a message that is not an event document");
                    }
                }
            }
            batch
        };
        self.consumer = Some(consumer);
        Ok(Some(batch))
    }

    async fn ack(&mut self) -> Result<(), ConsumerError> {
        let Some(consumer) = &self.consumer else { return Ok(()) };
        commit(consumer, &self.pending).map_err(|error| ConsumerError(error.0))?;
        self.pending.clear();
        Ok(())
    }
}
