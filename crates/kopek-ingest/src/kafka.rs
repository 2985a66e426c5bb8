//! Commands through Kafka: the topic `<prefix>_commands` read by the consumer group
//! `<prefix>_commands.ingest` (offsets committed after a batch's verdicts are confirmed); verdicts go to
//! `<prefix>_commands.verdicts` keyed by idempotency key, dead letters to
//! `<prefix>_commands.dead`, through an idempotent producer. The content type and correlation
//! id come from the `content-type` and `kopek-correlation-id` headers.

use crate::{BATCH_COMMANDS, CommandMessage, CommandSource, IngestError, Verdict};
use async_trait::async_trait;
use kopek_outbox::consumer::take_ready;
use kopek_outbox::sink::kafka::{
    Outgoing, commit, consumer_config, ensure_topics, producer, send_all,
};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureProducer;
use std::collections::BTreeMap;
use std::time::Duration;

const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

pub struct KafkaCommands {
    bootstrap: String,
    topic: String,
    partitions: i32,
    member: String,
    open: Option<(StreamConsumer, FutureProducer)>,
    pending: BTreeMap<(String, i32), i64>,
}

impl KafkaCommands {
    pub fn new(
        bootstrap: String,
        topic_prefix: &str,
        partitions: i32,
        member: &str,
    ) -> KafkaCommands {
        KafkaCommands {
            bootstrap,
            topic: format!("{topic_prefix}_commands"),
            partitions,
            member: member.to_owned(),
            open: None,
            pending: BTreeMap::new(),
        }
    }

    async fn connect(&self) -> Result<(StreamConsumer, FutureProducer), IngestError> {
        let topics = [
            self.topic.clone(),
            format!("{}.verdicts", self.topic),
            format!("{}.dead", self.topic),
        ];
        ensure_topics(&self.bootstrap, &topics, self.partitions)
            .await
            .map_err(|error| IngestError(error.0))?;
        let group = format!("{}.ingest", self.topic);
        let consumer: StreamConsumer = consumer_config(&self.bootstrap, &group, &self.member)
            .create()
            .map_err(|error| IngestError(format!("create the Kafka consumer: {error}")))?;
        consumer
            .subscribe(&[self.topic.as_str()])
            .map_err(|error| IngestError(format!("subscribe to {}: {error}", self.topic)))?;
        let producer = producer(&self.bootstrap).map_err(|error| IngestError(error.0))?;
        Ok((consumer, producer))
    }

    async fn send(&self, records: Vec<Outgoing>) -> Result<(), IngestError> {
        let Some((_, producer)) = &self.open else {
            return Err(IngestError("not connected to Kafka".to_owned()));
        };
        tokio::time::timeout(CONFIRM_TIMEOUT, send_all(producer, &records))
            .await
            .map_err(|_| IngestError("Kafka did not confirm in time".to_owned()))?
            .map_err(|error| IngestError(error.0))
    }
}

#[async_trait]
impl CommandSource for KafkaCommands {
    async fn next(&mut self) -> Result<Vec<CommandMessage>, IngestError> {
        let (consumer, producer) = match self.open.take() {
            Some(open) => open,
            None => {
                self.pending.clear();
                self.connect().await?
            }
        };
        let batch = {
            // On an error the consumer is made again and resumes from the committed offsets.
            let received = match take_ready(&mut consumer.stream(), BATCH_COMMANDS).await {
                Ok(received) => received,
                Err(error) => {
                    self.pending.clear();
                    return Err(match error {
                        Some(error) => IngestError(format!("Kafka receive: {error}")),
                        None => IngestError("the Kafka stream ended".to_owned()),
                    });
                }
            };
            let mut batch = Vec::with_capacity(received.len());
            for message in received {
                let header = |name: &str| {
                    message.headers().and_then(|headers| {
                        headers
                            .iter()
                            .find(|header| header.key.eq_ignore_ascii_case(name))
                            .and_then(|header| {
                                header
                                    .value
                                    .map(|value| String::from_utf8_lossy(value).into_owned())
                            })
                    })
                };
                batch.push(CommandMessage {
                    body: message.payload().unwrap_or_default().to_vec(),
                    content_type: header("content-type"),
                    correlation_id: header("kopek-correlation-id"),
                });
                self.pending.insert(
                    (message.topic().to_owned(), message.partition()),
                    message.offset() + 1,
                );
            }
            batch
        };
        self.open = Some((consumer, producer));
        Ok(batch)
    }

    async fn dead_letter(
        &mut self,
        message: &CommandMessage,
        reason: &str,
    ) -> Result<(), IngestError> {
        let mut headers = OwnedHeaders::new()
            .insert(Header { key: "kopek-dead-letter-reason", value: Some(reason) });
        if let Some(content_type) = &message.content_type {
            headers =
                headers.insert(Header { key: "content-type", value: Some(content_type.as_str()) });
        }
        if let Some(correlation) = &message.correlation_id {
            headers = headers
                .insert(Header { key: "kopek-correlation-id", value: Some(correlation.as_str()) });
        }
        let key = message.correlation_id.clone().unwrap_or_default();
        self.send(vec![Outgoing {
            topic: format!("{}.dead", self.topic),
            key,
            body: message.body.clone(),
            headers,
        }])
        .await
    }

    async fn publish_verdicts(&mut self, verdicts: &[Verdict]) -> Result<(), IngestError> {
        let topic = format!("{}.verdicts", self.topic);
        let records = verdicts
            .iter()
            .map(|verdict| {
                let correlation = verdict.document["correlation_id"].as_str().unwrap_or_default();
                let headers = OwnedHeaders::new()
                    .insert(Header { key: "kopek-verdict-id", value: Some(verdict.id.as_str()) })
                    .insert(Header { key: "kopek-correlation-id", value: Some(correlation) })
                    .insert(Header { key: "content-type", value: Some("application/json") });
                let key =
                    verdict.document["idempotency_key"].as_str().unwrap_or_default().to_owned();
                Outgoing {
                    topic: topic.clone(),
                    key,
                    body: verdict.document.to_string().into_bytes(),
                    headers,
                }
            })
            .collect();
        self.send(records).await
    }

    async fn abandon(&mut self) {
        // A new consumer resumes from the committed offsets.
        self.open = None;
        self.pending.clear();
    }

    async fn ack(&mut self) -> Result<(), IngestError> {
        let Some((consumer, _)) = &self.open else { return Ok(()) };
        commit(consumer, &self.pending).map_err(|error| IngestError(error.0))?;
        self.pending.clear();
        Ok(())
    }
}
