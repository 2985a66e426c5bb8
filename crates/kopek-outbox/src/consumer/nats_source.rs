//! Events from NATS JetStream: a durable pull consumer `kopek-<consumer>` on the relay's
//! stream, filtered to one event type when the consumer wants only one, with explicit acks.
//! A new durable consumer starts at the stream's first message.

use super::{BATCH_EVENTS, ConsumerError, Incoming, Source, take_ready};
use crate::sink::nats::stream_config;
use async_nats::jetstream::{self, consumer::pull};
use async_trait::async_trait;
use std::time::Duration;

/// How long JetStream waits for an ack before it delivers a message again.
const ACK_WAIT: Duration = Duration::from_secs(10);

pub struct NatsSource {
    server: String,
    stream: String,
    subject_prefix: String,
    durable: String,
    filter: String,
    messages: Option<pull::Stream>,
    unacked: Vec<jetstream::Message>,
}

impl NatsSource {
    /// `types`: the event types wanted; one type becomes a subject filter on the server.
    pub fn new(
        server: String,
        stream: String,
        subject_prefix: String,
        consumer: &str,
        types: &[&str],
    ) -> NatsSource {
        let filter = match types {
            [only] => format!("{subject_prefix}.*.{only}"),
            _ => format!("{subject_prefix}.>"),
        };
        NatsSource {
            server,
            stream,
            subject_prefix,
            durable: format!("kopek-{consumer}"),
            filter,
            messages: None,
            unacked: Vec::new(),
        }
    }

    async fn connect(&self) -> Result<pull::Stream, ConsumerError> {
        let failed =
            |what: &'static str| move |error: String| ConsumerError(format!("{what}: {error}"));
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(crate::sink::CONFIRM_TIMEOUT)
            .connect(self.server.as_str())
            .await
            .map_err(|error| failed("connect to NATS")(error.to_string()))?;
        let context = jetstream::new(client);
        let stream = context
            .get_or_create_stream(stream_config(&self.stream, &self.subject_prefix))
            .await
            .map_err(|error| failed("open the JetStream stream")(error.to_string()))?;
        let consumer = stream
            .get_or_create_consumer(
                &self.durable,
                pull::Config {
                    durable_name: Some(self.durable.clone()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    deliver_policy: jetstream::consumer::DeliverPolicy::All,
                    filter_subject: self.filter.clone(),
                    ack_wait: ACK_WAIT,
                    max_ack_pending: i64::try_from(BATCH_EVENTS * 4).unwrap_or(1_024),
                    ..pull::Config::default()
                },
            )
            .await
            .map_err(|error| failed("create the durable consumer")(error.to_string()))?;
        consumer.messages().await.map_err(|error| failed("pull messages")(error.to_string()))
    }
}

#[async_trait]
impl Source for NatsSource {
    async fn next(&mut self) -> Result<Option<Vec<Incoming>>, ConsumerError> {
        let mut messages = match self.messages.take() {
            Some(messages) => messages,
            None => self.connect().await?,
        };
        // On an error the pull is dropped and made again on the next call; JetStream delivers
        // what it had handed out again after the ack wait.
        let pulled =
            take_ready(&mut messages, BATCH_EVENTS).await.map_err(|error| match error {
                Some(error) => ConsumerError(format!("JetStream pull: {error}")),
                None => ConsumerError("the JetStream pull ended".to_owned()),
            })?;
        let mut batch = Vec::with_capacity(pulled.len());
        for message in pulled {
            match Incoming::from_document(&message.payload) {
                Ok(event) => batch.push(event),
                Err(reason) => {
                    // Not one of ours: it can never be handled, so it must not block the rest.
                    tracing::warn!(subject = %message.subject, %reason, "dropping a message that is not an event document");
                }
            }
            self.unacked.push(message);
        }
        self.messages = Some(messages);
        Ok(Some(batch))
    }

    async fn ack(&mut self) -> Result<(), ConsumerError> {
        for message in self.unacked.drain(..) {
            message
                .ack()
                .await
                .map_err(|error| ConsumerError(format!("JetStream ack: {error}")))?;
        }
        Ok(())
    }
}
