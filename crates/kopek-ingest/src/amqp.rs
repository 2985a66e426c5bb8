//! Commands through RabbitMQ: the durable queue `<exchange>.commands`, consumed with manual
//! acks; verdicts go to the durable queue `<exchange>.commands.verdicts` and dead letters to
//! `<exchange>.commands.dead`, persistent, with publisher confirms.

use crate::{BATCH_COMMANDS, CommandMessage, CommandSource, IngestError, Verdict};
use async_trait::async_trait;
use kopek_outbox::consumer::take_ready;
use kopek_outbox::sink::amqp::{Outgoing, open_channel, publish_confirmed};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, Consumer};
use std::time::Duration;

const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

pub struct AmqpCommands {
    uri: String,
    queue: String,
    open: Option<(Connection, Channel, Consumer)>,
    last_tag: Option<u64>,
}

impl AmqpCommands {
    pub fn new(uri: String, exchange: &str) -> AmqpCommands {
        AmqpCommands { uri, queue: format!("{exchange}.commands"), open: None, last_tag: None }
    }

    async fn connect(&self) -> Result<(Connection, Channel, Consumer), IngestError> {
        let failed =
            |what: &'static str| move |error: lapin::Error| IngestError(format!("{what}: {error}"));
        let (connection, channel) =
            open_channel(&self.uri, true).await.map_err(|error| IngestError(error.0))?;
        for queue in
            [self.queue.clone(), format!("{}.verdicts", self.queue), format!("{}.dead", self.queue)]
        {
            channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() },
                    FieldTable::default(),
                )
                .await
                .map_err(failed("declare a queue"))?;
        }
        let prefetch = u16::try_from(BATCH_COMMANDS * 2).unwrap_or(u16::MAX);
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(failed("set prefetch"))?;
        let consumer = channel
            .basic_consume(
                self.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(failed("consume the commands queue"))?;
        Ok((connection, channel, consumer))
    }

    fn channel(&self) -> Result<&Channel, IngestError> {
        self.open
            .as_ref()
            .map(|(_, channel, _)| channel)
            .ok_or_else(|| IngestError("not connected to RabbitMQ".to_owned()))
    }

    /// Publishes to queues through the default exchange and waits for the confirms.
    async fn publish(
        &self,
        messages: Vec<(String, Vec<u8>, BasicProperties)>,
    ) -> Result<(), IngestError> {
        let channel = self.channel()?;
        let messages = messages
            .into_iter()
            .map(|(queue, body, properties)| Outgoing {
                exchange: String::new(),
                routing_key: queue,
                body,
                properties,
            })
            .collect();
        tokio::time::timeout(CONFIRM_TIMEOUT * 3, publish_confirmed(channel, messages))
            .await
            .map_err(|_| IngestError("RabbitMQ did not confirm in time".to_owned()))?
            .map_err(|error| IngestError(error.0))
    }
}

#[async_trait]
impl CommandSource for AmqpCommands {
    async fn next(&mut self) -> Result<Vec<CommandMessage>, IngestError> {
        let (connection, channel, mut consumer) = match self.open.take() {
            Some(open) => open,
            None => {
                self.last_tag = None;
                self.connect().await?
            }
        };
        // On an error the connection is dropped: unacked commands go back to the queue.
        let deliveries =
            take_ready(&mut consumer, BATCH_COMMANDS).await.map_err(|error| match error {
                Some(error) => IngestError(format!("RabbitMQ delivery: {error}")),
                None => IngestError("the RabbitMQ consumer was cancelled".to_owned()),
            })?;
        let mut batch = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            self.last_tag = Some(delivery.delivery_tag);
            let properties = &delivery.properties;
            batch.push(CommandMessage {
                content_type: properties
                    .content_type()
                    .as_ref()
                    .map(|value| value.as_str().to_owned()),
                correlation_id: properties
                    .correlation_id()
                    .as_ref()
                    .map(|value| value.as_str().to_owned()),
                body: delivery.data,
            });
        }
        self.open = Some((connection, channel, consumer));
        Ok(batch)
    }

    async fn dead_letter(
        &mut self,
        message: &CommandMessage,
        reason: &str,
    ) -> Result<(), IngestError> {
        let mut headers = FieldTable::default();
        headers.insert("kopek-dead-letter-reason".into(), AMQPValue::LongString(reason.into()));
        let mut properties = BasicProperties::default().with_delivery_mode(2).with_headers(headers);
        if let Some(content_type) = &message.content_type {
            properties = properties.with_content_type(content_type.as_str().into());
        }
        if let Some(correlation) = &message.correlation_id {
            properties = properties.with_correlation_id(correlation.as_str().into());
        }
        self.publish(vec![(format!("{}.dead", self.queue), message.body.clone(), properties)]).await
    }

    async fn publish_verdicts(&mut self, verdicts: &[Verdict]) -> Result<(), IngestError> {
        let queue = format!("{}.verdicts", self.queue);
        let messages = verdicts
            .iter()
            .map(|verdict| {
                let correlation = verdict.document["correlation_id"].as_str().unwrap_or_default();
                let properties = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into())
                    .with_message_id(verdict.id.as_str().into())
                    .with_correlation_id(correlation.into())
                    .with_type("CommandVerdict".into());
                (queue.clone(), verdict.document.to_string().into_bytes(), properties)
            })
            .collect();
        self.publish(messages).await
    }

    async fn abandon(&mut self) {
        // Closing the channel returns every unacknowledged delivery to the queue.
        self.open = None;
        self.last_tag = None;
    }

    async fn ack(&mut self) -> Result<(), IngestError> {
        let Some(tag) = self.last_tag.take() else { return Ok(()) };
        self.channel()?
            .basic_ack(tag, BasicAckOptions { multiple: true })
            .await
            .map_err(|error| IngestError(format!("RabbitMQ ack: {error}")))
    }
}
