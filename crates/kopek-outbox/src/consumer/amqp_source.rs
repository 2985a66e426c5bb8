//! Events from RabbitMQ: a durable queue `<exchange>.<consumer>` bound to the relay's
//! exchange for the event types wanted, consumed with manual acks (one multiple-ack per
//! batch). The queue exists from the consumer's first start; what was published before that
//! is not in it.

use super::{BATCH_EVENTS, ConsumerError, Incoming, Source, take_ready};
use crate::sink::SinkError;
use crate::sink::amqp::{declare_exchange, open_channel};
use async_trait::async_trait;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};

/// The durable queue of a consumer, bound to the exchange for each of `routing_keys`.
pub async fn declare_queue(
    channel: &Channel,
    exchange: &str,
    queue: &str,
    routing_keys: &[&str],
) -> Result<(), SinkError> {
    let failed = |what: &'static str| {
        move |error: lapin::Error| SinkError(format!("{what} {queue}: {error}"))
    };
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() },
            FieldTable::default(),
        )
        .await
        .map_err(failed("declare the queue"))?;
    for key in routing_keys {
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                (*key).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(failed("bind the queue"))?;
    }
    Ok(())
}

/// The queue a consumer reads on `exchange`.
pub fn queue_name(exchange: &str, consumer: &str) -> String {
    format!("{exchange}.{consumer}")
}

pub struct AmqpSource {
    uri: String,
    exchange: String,
    queue: String,
    routing_keys: Vec<String>,
    open: Option<(Connection, Channel, Consumer)>,
    last_tag: Option<u64>,
}

impl AmqpSource {
    pub fn new(uri: String, exchange: String, consumer: &str, types: &[&str]) -> AmqpSource {
        AmqpSource {
            queue: queue_name(&exchange, consumer),
            uri,
            exchange,
            routing_keys: types.iter().map(|kind| (*kind).to_owned()).collect(),
            open: None,
            last_tag: None,
        }
    }

    async fn connect(&self) -> Result<(Connection, Channel, Consumer), ConsumerError> {
        let failed = |what: &'static str| {
            move |error: lapin::Error| ConsumerError(format!("{what}: {error}"))
        };
        let (connection, channel) =
            open_channel(&self.uri, false).await.map_err(|error| ConsumerError(error.0))?;
        declare_exchange(&channel, &self.exchange).await.map_err(|error| ConsumerError(error.0))?;
        let keys: Vec<&str> = self.routing_keys.iter().map(String::as_str).collect();
        declare_queue(&channel, &self.exchange, &self.queue, &keys)
            .await
            .map_err(|error| ConsumerError(error.0))?;
        let prefetch = u16::try_from(BATCH_EVENTS * 2).unwrap_or(u16::MAX);
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
            .map_err(failed("consume the queue"))?;
        Ok((connection, channel, consumer))
    }
}

#[async_trait]
impl Source for AmqpSource {
    async fn next(&mut self) -> Result<Option<Vec<Incoming>>, ConsumerError> {
        let (connection, channel, mut consumer) = match self.open.take() {
            Some(open) => open,
            None => {
                // Delivery tags belong to a channel: nothing from the old one can be acked.
                self.last_tag = None;
                self.connect().await?
            }
        };
        // On an error the connection is dropped (unacked deliveries return to the queue) and
        // made again on the next call.
        let deliveries = match take_ready(&mut consumer, BATCH_EVENTS).await {
            Ok(deliveries) => deliveries,
            Err(error) => {
                self.last_tag = None;
                return Err(match error {
                    Some(error) => ConsumerError(format!("RabbitMQ delivery: {error}")),
                    None => ConsumerError("the RabbitMQ consumer was cancelled".to_owned()),
                });
            }
        };
        let mut batch = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            self.last_tag = Some(delivery.delivery_tag);
            match Incoming::from_document(&delivery.data) {
                Ok(event) => batch.push(event),
                Err(reason) => {
                    tracing::warn!(queue = %self.queue, %reason, "dropping a message that is not an event document");
                }
            }
        }
        self.open = Some((connection, channel, consumer));
        Ok(Some(batch))
    }

    async fn ack(&mut self) -> Result<(), ConsumerError> {
        let (Some((_, channel, _)), Some(tag)) = (self.open.as_ref(), self.last_tag.take()) else {
            return Ok(());
        };
        channel
            .basic_ack(tag, BasicAckOptions { multiple: true })
            .await
            .map_err(|error| ConsumerError(format!("RabbitMQ ack: {error}")))
    }
}
