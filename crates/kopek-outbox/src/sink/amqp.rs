//! RabbitMQ (AMQP 0-9-1): a durable topic exchange, routing key = event type, persistent
//! messages with `message_id` = event id, and publisher confirms: the batch is sent, then
//! every confirm awaited; a nack fails the batch.

use super::{Sink, SinkError, within};
use async_trait::async_trait;
use kopek_events::envelope;
use kopek_store::StoredEvent;
use kopek_telemetry::trace::TRACEPARENT;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::sync::Arc;

/// A connection and a channel on it, in publisher-confirm mode when `confirms`.
pub async fn open_channel(uri: &str, confirms: bool) -> Result<(Connection, Channel), SinkError> {
    let failed =
        |what: &'static str| move |error: lapin::Error| SinkError(format!("{what}: {error}"));
    let connection = Connection::connect(uri, ConnectionProperties::default())
        .await
        .map_err(failed("connect to RabbitMQ"))?;
    let channel = connection.create_channel().await.map_err(failed("open a channel"))?;
    if confirms {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(failed("enable publisher confirms"))?;
    }
    Ok((connection, channel))
}

/// The exchange the relay publishes to and consumers bind to; whichever starts first makes it.
pub async fn declare_exchange(channel: &Channel, exchange: &str) -> Result<(), SinkError> {
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() },
            FieldTable::default(),
        )
        .await
        .map_err(|error| SinkError(format!("declare the exchange {exchange}: {error}")))
}

pub struct AmqpSink {
    uri: String,
    exchange: String,
    queue: Option<String>,
    open: Option<(Connection, Channel)>,
}

impl AmqpSink {
    pub fn new(uri: String, exchange: String, queue: Option<String>) -> AmqpSink {
        AmqpSink { uri, exchange, queue, open: None }
    }

    async fn connect(&self) -> Result<(Connection, Channel), SinkError> {
        let failed = |what: &str| {
            let what = what.to_owned();
            move |error: lapin::Error| SinkError(format!("{what}: {error}"))
        };
        let (connection, channel) = open_channel(&self.uri, true).await?;
        declare_exchange(&channel, &self.exchange).await?;
        // Consumers' queues exist before the first event is published, so none misses one.
        for (consumer, kinds) in crate::consumer::CONSUMERS {
            let keys: Vec<&str> = kinds.iter().map(|kind| kind.as_str()).collect();
            let queue = crate::consumer::amqp_source::queue_name(&self.exchange, consumer);
            crate::consumer::amqp_source::declare_queue(&channel, &self.exchange, &queue, &keys)
                .await?;
        }
        if let Some(queue) = &self.queue {
            channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() },
                    FieldTable::default(),
                )
                .await
                .map_err(failed("declare the queue"))?;
            channel
                .queue_bind(
                    queue.as_str().into(),
                    self.exchange.as_str().into(),
                    "#".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(failed("bind the queue"))?;
        }
        Ok((connection, channel))
    }
}

#[async_trait]
impl Sink for AmqpSink {
    async fn publish(&mut self, events: &[Arc<StoredEvent>]) -> Result<(), SinkError> {
        let channel = match &self.open {
            Some((_, channel)) if channel.status().connected() => channel.clone(),
            _ => {
                self.open = None;
                let open = within("connect to RabbitMQ", self.connect()).await?;
                let channel = open.1.clone();
                self.open = Some(open);
                channel
            }
        };
        let messages = events
            .iter()
            .map(|event| {
                let mut headers = FieldTable::default();
                headers.insert("kopek-sequence".into(), AMQPValue::LongLongInt(sequence(event)));
                headers.insert(
                    "kopek-tenant".into(),
                    AMQPValue::LongString(event.tenant.as_str().into()),
                );
                if let Some(traceparent) = &event.traceparent {
                    headers.insert(
                        TRACEPARENT.into(),
                        AMQPValue::LongString(traceparent.as_str().into()),
                    );
                }
                let properties = BasicProperties::default()
                    .with_message_id(event.id.as_str().into())
                    .with_type(event.kind.as_str().into())
                    .with_content_type("application/json".into())
                    .with_delivery_mode(2)
                    .with_timestamp(
                        u64::try_from(event.at.as_unix_micros() / 1_000_000).unwrap_or(0),
                    )
                    .with_headers(headers);
                Outgoing {
                    exchange: self.exchange.clone(),
                    routing_key: event.kind.clone(),
                    body: envelope::document(event),
                    properties,
                }
            })
            .collect();
        let result = within("RabbitMQ confirms", publish_confirmed(&channel, messages)).await;
        if result.is_err() {
            self.open = None;
        }
        result
    }
}

/// One message to publish.
pub struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    pub properties: BasicProperties,
}

/// Publishes every message on a channel in confirm mode, then waits for every confirm; a
/// nack fails the whole call.
pub async fn publish_confirmed(
    channel: &Channel,
    messages: Vec<Outgoing>,
) -> Result<(), SinkError> {
    let mut confirms = Vec::with_capacity(messages.len());
    for message in messages {
        let confirm = channel
            .basic_publish(
                message.exchange.as_str().into(),
                message.routing_key.as_str().into(),
                BasicPublishOptions::default(),
                &message.body,
                message.properties,
            )
            .await
            .map_err(|error| SinkError(format!("publish to RabbitMQ: {error}")))?;
        confirms.push(confirm);
    }
    for confirm in confirms {
        let confirmation =
            confirm.await.map_err(|error| SinkError(format!("RabbitMQ confirm: {error}")))?;
        if !confirmation.is_ack() {
            return Err(SinkError("RabbitMQ refused a message (nack)".to_owned()));
        }
    }
    Ok(())
}

fn sequence(event: &StoredEvent) -> i64 {
    i64::try_from(event.sequence).unwrap_or(i64::MAX)
}
