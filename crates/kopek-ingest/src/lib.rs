//! kopek-ingest: the asynchronous front door. A bank's app publishes transfer commands to the
//! broker; ingestion applies them through the same write path as the APIs, keyed by each
//! command's idempotency key, publishes one verdict per command (carrying the command's
//! correlation id), and only then acknowledges the messages. A command delivered twice, or
//! published twice, is applied once: the second verdict is a replay of the first. A message
//! that cannot be read as a command goes to a dead-letter subject or queue with the reason,
//! and the stream moves on.
//!
//! Where (see `docs/events.md`): on NATS the stream `<STREAM>_COMMANDS` over
//! `<prefix>_commands.>`: commands in on `<prefix>_commands.in.<anything>`, verdicts out on
//! `<prefix>_commands.verdicts.<tenant>`, dead letters on `<prefix>_commands.dead`. On
//! RabbitMQ the durable queues `<exchange>.commands` (in), `<exchange>.commands.verdicts` and
//! `<exchange>.commands.dead`.

pub mod amqp;
pub mod decode;
pub mod kafka;
pub mod nats;

use async_trait::async_trait;
use kopek_auth::{Principal, Scope};
use kopek_core::{ErrorCode, Linking, Rejection, Tenant, TransferResult, TransferStatus};
use kopek_intake::{Batch, Intake, Pending};
use kopek_outbox::broker::Broker;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Commands taken from the broker at once at most.
pub const BATCH_COMMANDS: usize = 512;
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// One message off the broker.
#[derive(Clone, Debug)]
pub struct CommandMessage {
    pub body: Vec<u8>,
    pub content_type: Option<String>,
    /// From the message (`Kopek-Correlation-Id` header on NATS, `correlation_id` on AMQP);
    /// the idempotency key when absent.
    pub correlation_id: Option<String>,
}

/// What became of one command, as published.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// `verdict-<idempotency key>-<transfer id or error code>`: the broker drops a repeat of
    /// the same verdict.
    pub id: String,
    pub tenant: String,
    pub document: Value,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct IngestError(pub String);

#[async_trait]
pub trait CommandSource: Send {
    /// The next messages, at least one, waiting for them.
    async fn next(&mut self) -> Result<Vec<CommandMessage>, IngestError>;
    /// Stores a message that is no command, with the reason; confirmed by the broker.
    async fn dead_letter(
        &mut self,
        message: &CommandMessage,
        reason: &str,
    ) -> Result<(), IngestError>;
    /// Publishes verdicts, confirmed by the broker.
    async fn publish_verdicts(&mut self, verdicts: &[Verdict]) -> Result<(), IngestError>;
    /// Acknowledges every message `next` returned so far.
    async fn ack(&mut self) -> Result<(), IngestError>;
    /// Gives back every message `next` returned and not acknowledged (and drops the
    /// connection), so the broker delivers them again and no later ack covers them.
    async fn abandon(&mut self);
}

/// The command source of `broker`; `member` names this process among the readers.
pub fn source(broker: &Broker, member: &str) -> Box<dyn CommandSource> {
    match broker {
        Broker::Nats { server, stream, subject_prefix } => {
            Box::new(nats::NatsCommands::new(server.clone(), stream, subject_prefix))
        }
        Broker::Amqp { uri, exchange, .. } => {
            Box::new(amqp::AmqpCommands::new(uri.clone(), exchange))
        }
        Broker::Kafka { bootstrap, topic_prefix, partitions } => Box::new(
            kafka::KafkaCommands::new(bootstrap.clone(), topic_prefix, *partitions, member),
        ),
    }
}

/// Runs ingestion until shutdown.
pub fn start(
    intake: Intake,
    mut source: Box<dyn CommandSource>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = BACKOFF_FIRST;
        loop {
            let messages = tokio::select! {
                () = shutdown.cancelled() => return,
                messages = source.next() => messages,
            };
            let result = match messages {
                Ok(messages) => handle(&intake, source.as_mut(), &messages).await,
                Err(error) => Err(error),
            };
            match result {
                Ok(()) => backoff = BACKOFF_FIRST,
                Err(error) => {
                    // Let go of the batch without acknowledging it, so that no later ack
                    // covers it: the broker delivers it again, and the keys make the second
                    // application a replay.
                    source.abandon().await;
                    tracing::warn!(%error, "ingestion batch not finished; it will be delivered again");
                    let delay = backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    })
}

/// Applies a batch: queue every readable command (they share the writer's transactions),
/// wait for the verdicts, dead-letter the poison, publish the verdicts, then acknowledge.
async fn handle(
    intake: &Intake,
    source: &mut dyn CommandSource,
    messages: &[CommandMessage],
) -> Result<(), IngestError> {
    let tenant = Tenant::default_tenant();
    // A broker message moves money as a write key of the default tenant does: no credit.
    let sender =
        Principal { key_id: None, tenant: tenant.clone(), scope: Scope::Write, user: None };
    let mut pending: Vec<(String, String, Pending)> = Vec::new();
    let mut poison = Vec::new();
    for message in messages {
        match decode::decode(intake, &message.body, message.content_type.as_deref()).await {
            Err(reason) => poison.push((message, reason)),
            Ok(decoded) => {
                // The ledger could not be read while the command was read: not a verdict on
                // the command. The batch is let go unacknowledged and delivered again.
                if let Err(rejection) = &decoded.request
                    && matches!(rejection.code, ErrorCode::Unavailable | ErrorCode::Internal)
                {
                    return Err(IngestError(format!(
                        "reading a command: {}: {}",
                        rejection.code, rejection.message
                    )));
                }
                let correlation = message
                    .correlation_id
                    .clone()
                    .unwrap_or_else(|| decoded.idempotency_key.clone());
                let batch = Batch::new(vec![decoded.request], Linking::Independent)
                    .map_err(|rejection| IngestError(rejection.message))?;
                let queued = intake
                    .enqueue_waiting(&sender, batch)
                    .await
                    .map_err(|rejection| IngestError(rejection.message))?;
                pending.push((decoded.idempotency_key, correlation, queued));
            }
        }
    }
    let mut verdicts = Vec::with_capacity(pending.len());
    for (key, correlation, queued) in pending {
        let mut results =
            queued.results().await.map_err(|rejection| IngestError(rejection.message))?;
        let outcome = match results.pop() {
            Some(result) => Outcome::from(result),
            None => return Err(IngestError("a verdict is missing".to_owned())),
        };
        verdicts.push(verdict(&tenant, &key, &correlation, outcome));
    }
    for (message, reason) in &poison {
        tracing::warn!(%reason, "dead-lettering a message that is no command");
        source.dead_letter(message, reason).await?;
    }
    if !verdicts.is_empty() {
        source.publish_verdicts(&verdicts).await?;
    }
    source.ack().await
}

enum Outcome {
    Applied(Box<kopek_core::Transfer>, bool),
    Rejected(Rejection),
}

impl From<TransferResult> for Outcome {
    fn from(result: TransferResult) -> Outcome {
        match result {
            TransferResult::Committed(transfer) => Outcome::Applied(Box::new(transfer), false),
            TransferResult::Replayed(transfer) => Outcome::Applied(Box::new(transfer), true),
            TransferResult::Rejected(rejection) => Outcome::Rejected(rejection),
        }
    }
}

/// The verdict document (`docs/events.md`, "CommandVerdict").
fn verdict(tenant: &Tenant, key: &str, correlation: &str, outcome: Outcome) -> Verdict {
    let error = |rejection: &Rejection| json!({"code": rejection.code.as_str(), "message": rejection.message});
    let (status, transfer, failure) = match &outcome {
        Outcome::Applied(transfer, replayed) => {
            let status = match (transfer.status == TransferStatus::Declined, replayed) {
                (true, _) => "declined",
                (false, true) => "replayed",
                (false, false) => "committed",
            };
            (status, Some(transfer), transfer.error.as_ref().map(error))
        }
        Outcome::Rejected(rejection) => ("rejected", None, Some(error(rejection))),
    };
    // The same outcome again (a redelivery) has the same id, so the broker drops it; a key
    // refused and then sent again, fixed, gets a verdict of its own.
    let id = match &outcome {
        Outcome::Applied(transfer, _) => format!("verdict-{key}-{}", transfer.id),
        Outcome::Rejected(rejection) => format!("verdict-{key}-{}", rejection.code.as_str()),
    };
    let document = json!({
        "schema_version": 1,
        "type": "CommandVerdict",
        "id": id,
        "tenant": tenant.as_str(),
        "at": kopek_clock::now().to_rfc3339(),
        "correlation_id": correlation,
        "idempotency_key": key,
        "status": status,
        "replayed": matches!(outcome, Outcome::Applied(_, true)),
        "transfer_id": transfer.map(|transfer| transfer.id.to_string()),
        "transfer_status": transfer.map(|transfer| transfer.status.as_str()),
        "error": failure,
    });
    Verdict { id, tenant: tenant.as_str().to_owned(), document }
}
