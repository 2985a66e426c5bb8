//! NATS JetStream: one stream (created if missing) over `<prefix>.>`; each event goes to
//! `<prefix>.<tenant>.<event type>` with `Nats-Msg-Id` = event id, so the stream drops a
//! repeat within its duplicate window. The batch is sent pipelined, then every ack awaited.

use super::{Sink, SinkError, within};
use async_nats::jetstream::{self, message::PublishMessage, stream};
use async_trait::async_trait;
use kopek_events::envelope;
use kopek_store::StoredEvent;
use kopek_telemetry::trace::TRACEPARENT;
use std::sync::Arc;
use std::time::Duration;

/// How long JetStream remembers message ids to drop repeats.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The stream the relay publishes to and consumers read from; whichever starts first makes it.
pub fn stream_config(stream: &str, subject_prefix: &str) -> stream::Config {
    stream::Config {
        name: stream.to_owned(),
        subjects: vec![format!("{subject_prefix}.>")],
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        ..stream::Config::default()
    }
}

pub struct NatsSink {
    server: String,
    stream: String,
    subject_prefix: String,
    context: Option<jetstream::Context>,
}

impl NatsSink {
    pub fn new(server: String, stream: String, subject_prefix: String) -> NatsSink {
        NatsSink { server, stream, subject_prefix, context: None }
    }

    async fn connect(&self) -> Result<jetstream::Context, SinkError> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(super::CONFIRM_TIMEOUT)
            .connect(self.server.as_str())
            .await
            .map_err(|error| SinkError(format!("connect to NATS: {error}")))?;
        let context = jetstream::new(client);
        let config = stream_config(&self.stream, &self.subject_prefix);
        context.get_or_create_stream(config).await.map_err(|error| {
            SinkError(format!("create JetStream stream {}: {error}", self.stream))
        })?;
        Ok(context)
    }
}

#[async_trait]
impl Sink for NatsSink {
    async fn publish(&mut self, events: &[Arc<StoredEvent>]) -> Result<(), SinkError> {
        let context = match &self.context {
            Some(context) => context.clone(),
            None => {
                let context = within("connect to NATS", self.connect()).await?;
                self.context = Some(context.clone());
                context
            }
        };
        let prefix = self.subject_prefix.clone();
        let result = within("JetStream acks", async move {
            let mut acks = Vec::with_capacity(events.len());
            for event in events {
                let subject = format!("{prefix}.{}.{}", event.tenant, event.kind);
                let mut message = PublishMessage::build()
                    .payload(envelope::document(event).into())
                    .message_id(&event.id)
                    .header("Kopek-Event-Type", event.kind.as_str())
                    .header("Kopek-Sequence", event.sequence.to_string().as_str());
                if let Some(traceparent) = &event.traceparent {
                    message = message.header(TRACEPARENT, traceparent.as_str());
                }
                let ack = context
                    .send_publish(subject, message)
                    .await
                    .map_err(|error| SinkError(format!("publish to JetStream: {error}")))?;
                acks.push(ack);
            }
            for ack in acks {
                ack.await.map_err(|error| SinkError(format!("JetStream ack: {error}")))?;
            }
            Ok(())
        })
        .await;
        if result.is_err() {
            self.context = None;
        }
        result
    }
}
