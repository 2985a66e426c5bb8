//! Commands through NATS JetStream: the stream `<STREAM>_COMMANDS` over `<prefix>_commands.>`
//! (created if missing), a durable pull consumer `kopek-ingest` on `<prefix>_commands.in.>`
//! with explicit acks; verdicts and dead letters are published into the same stream.

use crate::{BATCH_COMMANDS, CommandMessage, CommandSource, IngestError, Verdict};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer::pull, message::PublishMessage, stream};
use async_trait::async_trait;
use kopek_outbox::consumer::take_ready;
use std::time::Duration;

/// How long JetStream waits for an ack before it delivers a command again.
const ACK_WAIT: Duration = Duration::from_secs(30);
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

pub struct NatsCommands {
    server: String,
    stream: String,
    prefix: String,
    open: Option<(jetstream::Context, pull::Stream)>,
    unacked: Vec<jetstream::Message>,
}

impl NatsCommands {
    pub fn new(server: String, stream: &str, subject_prefix: &str) -> NatsCommands {
        NatsCommands {
            server,
            stream: format!("{stream}_COMMANDS"),
            prefix: format!("{subject_prefix}_commands"),
            open: None,
            unacked: Vec::new(),
        }
    }

    async fn connect(&self) -> Result<(jetstream::Context, pull::Stream), IngestError> {
        let failed =
            |what: &'static str| move |error: String| IngestError(format!("{what}: {error}"));
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(CONFIRM_TIMEOUT)
            .connect(self.server.as_str())
            .await
            .map_err(|error| failed("connect to NATS")(error.to_string()))?;
        let context = jetstream::new(client);
        let stream = context
            .get_or_create_stream(stream::Config {
                name: self.stream.clone(),
                subjects: vec![format!("{}.>", self.prefix)],
                storage: stream::StorageType::File,
                duplicate_window: Duration::from_secs(120),
                ..stream::Config::default()
            })
            .await
            .map_err(|error| failed("open the commands stream")(error.to_string()))?;
        let consumer = stream
            .get_or_create_consumer(
                "kopek-ingest",
                pull::Config {
                    durable_name: Some("kopek-ingest".to_owned()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    deliver_policy: jetstream::consumer::DeliverPolicy::All,
                    filter_subject: format!("{}.in.>", self.prefix),
                    ack_wait: ACK_WAIT,
                    max_ack_pending: i64::try_from(BATCH_COMMANDS * 4).unwrap_or(2_048),
                    ..pull::Config::default()
                },
            )
            .await
            .map_err(|error| failed("create the ingest consumer")(error.to_string()))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|error| failed("pull commands")(error.to_string()))?;
        Ok((context, messages))
    }

    fn context(&self) -> Result<&jetstream::Context, IngestError> {
        self.open
            .as_ref()
            .map(|(context, _)| context)
            .ok_or_else(|| IngestError("not connected to NATS".to_owned()))
    }

    /// Publishes and waits for the stream's acks.
    async fn publish(&self, messages: Vec<(String, PublishMessage)>) -> Result<(), IngestError> {
        let context = self.context()?;
        let publish = async {
            let mut acks = Vec::with_capacity(messages.len());
            for (subject, message) in messages {
                let ack = context
                    .send_publish(subject, message)
                    .await
                    .map_err(|error| IngestError(format!("publish to JetStream: {error}")))?;
                acks.push(ack);
            }
            for ack in acks {
                ack.await.map_err(|error| IngestError(format!("JetStream ack: {error}")))?;
            }
            Ok(())
        };
        tokio::time::timeout(CONFIRM_TIMEOUT * 3, publish)
            .await
            .map_err(|_| IngestError("JetStream did not confirm in time".to_owned()))?
    }
}

#[async_trait]
impl CommandSource for NatsCommands {
    async fn next(&mut self) -> Result<Vec<CommandMessage>, IngestError> {
        let (context, mut messages) = match self.open.take() {
            Some(open) => open,
            None => self.connect().await?,
        };
        // The pull is made again on the next call; what it handed out comes again.
        let pulled =
            take_ready(&mut messages, BATCH_COMMANDS).await.map_err(|error| match error {
                Some(error) => IngestError(format!("JetStream pull: {error}")),
                None => IngestError("the JetStream pull ended".to_owned()),
            })?;
        let mut batch = Vec::with_capacity(pulled.len());
        for message in pulled {
            let header = |name: &str| {
                message
                    .headers
                    .as_ref()
                    .and_then(|headers| headers.get(name))
                    .map(|value| value.as_str().to_owned())
            };
            batch.push(CommandMessage {
                body: message.payload.to_vec(),
                content_type: header("Content-Type"),
                correlation_id: header("Kopek-Correlation-Id"),
            });
            self.unacked.push(message);
        }
        self.open = Some((context, messages));
        Ok(batch)
    }

    async fn dead_letter(
        &mut self,
        message: &CommandMessage,
        reason: &str,
    ) -> Result<(), IngestError> {
        let mut headers = HeaderMap::new();
        headers.insert("Kopek-Dead-Letter-Reason", reason.replace(['\r', '\n'], " ").as_str());
        if let Some(content_type) = &message.content_type {
            headers.insert("Content-Type", content_type.as_str());
        }
        if let Some(correlation) = &message.correlation_id {
            headers.insert("Kopek-Correlation-Id", correlation.as_str());
        }
        let publish = PublishMessage::build().payload(message.body.clone().into()).headers(headers);
        self.publish(vec![(format!("{}.dead", self.prefix), publish)]).await
    }

    async fn publish_verdicts(&mut self, verdicts: &[Verdict]) -> Result<(), IngestError> {
        let messages = verdicts
            .iter()
            .map(|verdict| {
                let correlation =
                    verdict.document["correlation_id"].as_str().unwrap_or_default().to_owned();
                let message = PublishMessage::build()
                    .payload(verdict.document.to_string().into())
                    .message_id(&verdict.id)
                    .header("Kopek-Correlation-Id", correlation.as_str());
                (format!("{}.verdicts.{}", self.prefix, verdict.tenant), message)
            })
            .collect();
        self.publish(messages).await
    }

    async fn abandon(&mut self) {
        for message in self.unacked.drain(..) {
            // A nak asks for redelivery now; if it is lost, the ack wait does the same later.
            let _ = message.ack_with(jetstream::AckKind::Nak(None)).await;
        }
        self.open = None;
    }

    async fn ack(&mut self) -> Result<(), IngestError> {
        for message in self.unacked.drain(..) {
            message.ack().await.map_err(|error| IngestError(format!("JetStream ack: {error}")))?;
        }
        Ok(())
    }
}
