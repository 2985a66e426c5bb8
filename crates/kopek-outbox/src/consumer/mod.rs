//! Consumers: code that reacts to events with effects of its own (pay an order, add to a
//! spending total), exactly once per event however often the event is delivered.
//!
//! A `Source` delivers events at least once, in order: the in-process feed (no broker) or
//! the broker the relay publishes to (a NATS durable consumer, a RabbitMQ queue). A
//! `Handler` applies a batch's effects together with the consumer's inbox marks in one
//! database transaction; only then is the batch acknowledged. A crash between the effect and
//! the acknowledgement redelivers the batch, and the inbox recognises every event in it.

pub mod amqp_source;
pub mod analytics;
pub mod feed_source;
pub mod kafka_source;
pub mod nats_source;
pub mod notifier;
pub mod payments;

use async_trait::async_trait;
use kopek_core::{EventKind, Timestamp};
use kopek_store::{Consumed, Store, StoredEvent};
use serde_json::Value;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Every consumer kopek runs, with the event types it reads. A broker sink that needs
/// subscriptions to exist before it publishes (RabbitMQ queues) declares them from this.
pub const CONSUMERS: [(&str, &[EventKind]); 3] = [
    (payments::NAME, &[EventKind::OrderCreated]),
    (analytics::NAME, &[EventKind::TransferPosted]),
    (notifier::NAME, &EventKind::ALL),
];

const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Events handed to a handler at once at most.
pub const BATCH_EVENTS: usize = 256;
/// Requests a consumer batch's span links to at most.
const LINKS_MAX: usize = 32;

/// One event as a consumer sees it, from the feed or from a broker's document.
#[derive(Clone, Debug, PartialEq)]
pub struct Incoming {
    pub sequence: u64,
    pub id: String,
    pub kind: String,
    pub tenant: String,
    pub subject_id: String,
    /// When the event was committed.
    pub at: Option<Timestamp>,
    /// The W3C trace context of the command that caused the event, if it was traced.
    pub traceparent: Option<String>,
    /// The outbox row, when the event came from the feed: its document is parsed from it
    /// only if a handler asks, so events a consumer skips cost no parse.
    stored: Option<Arc<StoredEvent>>,
    /// The whole event document (`docs/events.md`), once parsed.
    document: OnceLock<Value>,
}

impl Incoming {
    pub fn from_stored(event: Arc<StoredEvent>) -> Incoming {
        Incoming {
            sequence: event.sequence,
            id: event.id.clone(),
            kind: event.kind.clone(),
            tenant: event.tenant.clone(),
            subject_id: event.subject_id.clone(),
            at: Some(event.at),
            traceparent: event.traceparent.clone(),
            stored: Some(event),
            document: OnceLock::new(),
        }
    }

    /// The whole event document: the same one a broker carries, sequence and schema version
    /// included.
    pub fn document(&self) -> &Value {
        self.document.get_or_init(|| match &self.stored {
            Some(event) => kopek_events::envelope::document_value(event),
            None => Value::Null,
        })
    }

    /// Parses a broker message body; `Err` says why it is not an event document.
    pub fn from_document(body: &[u8]) -> Result<Incoming, String> {
        let document: Value =
            serde_json::from_slice(body).map_err(|error| format!("not JSON: {error}"))?;
        let text = |name: &str| {
            document
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("no {name:?} in the event document"))
        };
        let sequence = document
            .get("sequence")
            .and_then(Value::as_u64)
            .ok_or_else(|| "no \"sequence\" in the event document".to_owned())?;
        Ok(Incoming {
            sequence,
            id: text("id")?,
            kind: text("type")?,
            tenant: text("tenant")?,
            subject_id: text("subject_id")?,
            at: document
                .get("at")
                .and_then(Value::as_str)
                .and_then(|at| Timestamp::parse_rfc3339(at).ok()),
            traceparent: document.get("traceparent").and_then(Value::as_str).map(str::to_owned),
            stored: None,
            document: OnceLock::from(document),
        })
    }

    /// A field of the event's subject (the account, transfer, user or order).
    pub fn subject_field(&self, name: &str) -> Option<&Value> {
        self.document().get("subject").and_then(|subject| subject.get(name))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConsumerError(pub String);

/// Commits the effects of a handler's batch with their inbox marks. Only events with an
/// effect are marked: handling any other again changes nothing, so it needs no mark, and a
/// batch without effects needs no transaction at all.
async fn consume(
    store: &dyn Store,
    consumer: &str,
    items: Vec<Consumed>,
) -> Result<(), ConsumerError> {
    if items.is_empty() {
        return Ok(());
    }
    store
        .consume(consumer, items, kopek_store::wall_clock())
        .await
        .map(|_| ())
        .map_err(|error| ConsumerError(error.to_string()))
}

/// The next messages of a broker subscription: waits for the first, then takes what has
/// already arrived without waiting, up to `max`. `Err(Some(_))` on an error and `Err(None)`
/// when the subscription ended; what was taken before either is dropped (never acknowledged),
/// so the broker delivers it again.
pub async fn take_ready<S, T, E>(stream: &mut S, max: usize) -> Result<Vec<T>, Option<E>>
where
    S: futures_util::Stream<Item = Result<T, E>> + Unpin,
{
    use futures_util::{FutureExt, StreamExt};
    let mut taken = Vec::new();
    while taken.len() < max.max(1) {
        let next = if taken.is_empty() {
            stream.next().await
        } else {
            match stream.next().now_or_never() {
                Some(next) => next,
                None => break,
            }
        };
        match next {
            Some(Ok(item)) => taken.push(item),
            Some(Err(error)) => return Err(Some(error)),
            None => return Err(None),
        }
    }
    Ok(taken)
}

#[async_trait]
pub trait Source: Send {
    /// The next events, at least one, waiting for them; `Ok(None)` when the source ended.
    async fn next(&mut self) -> Result<Option<Vec<Incoming>>, ConsumerError>;
    /// Acknowledges every event `next` returned so far: they will not be delivered again.
    async fn ack(&mut self) -> Result<(), ConsumerError>;
    /// Lets go of whatever the source holds for this process (a lease) at shutdown.
    async fn close(&mut self) {}
}

#[async_trait]
pub trait Handler: Send + Sync {
    /// The consumer's name: its inbox, its durable broker subscription.
    fn name(&self) -> &'static str;
    /// The event types it reacts to; the source may deliver others, which it skips.
    fn wants(&self) -> &'static [EventKind];
    /// Applies the effects of `events` with their inbox marks; an event already in the inbox
    /// has no effect. `Err` leaves the batch unacknowledged: it is retried.
    async fn handle(&self, events: &[Incoming]) -> Result<(), ConsumerError>;
}

/// Test hook for the crash tests: with `KOPEK_FAULT=crash-after-effect:<consumer>` the
/// process aborts right after that consumer's first batch with an effect committed, before
/// it is acknowledged. Read once at start.
fn crash_after_effect(consumer: &str) -> bool {
    std::env::var("KOPEK_FAULT")
        .is_ok_and(|fault| fault.strip_prefix("crash-after-effect:") == Some(consumer))
}

/// Runs `handler` over `source` until shutdown.
pub fn run(
    handler: Arc<dyn Handler>,
    mut source: Box<dyn Source>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let crash = crash_after_effect(handler.name());
    tokio::spawn(async move {
        let name = handler.name();
        // The consumer's series exist from its start, at zero.
        kopek_telemetry::metrics().consumed.with_label_values(&[name]);
        kopek_telemetry::metrics().consumer_retries.with_label_values(&[name]);
        let mut backoff = BACKOFF_FIRST;
        loop {
            let batch = tokio::select! {
                () = shutdown.cancelled() => {
                    source.close().await;
                    return;
                }
                batch = source.next() => batch,
            };
            let batch = match batch {
                Ok(Some(batch)) => batch,
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(consumer = name, %error, "consumer could not read events; retrying");
                    if pause(&shutdown, &mut backoff).await {
                        return;
                    }
                    continue;
                }
            };
            let metrics = kopek_telemetry::metrics();
            if let Some(oldest) = batch.iter().filter_map(|event| event.at).min() {
                metrics.consumer_took(name, unix_seconds(oldest));
            }
            let newest = batch.iter().map(|event| event.sequence).max();
            let wanted: Vec<Incoming> = batch
                .into_iter()
                .filter(|event| handler.wants().iter().any(|kind| kind.as_str() == event.kind))
                .collect();
            let mut attempt_backoff = BACKOFF_FIRST;
            // A span only for batches with work in them.
            let span = if wanted.is_empty() { None } else { Some(consume_span(name, &wanted)) };
            while let Some(span) = &span {
                match handler.handle(&wanted).instrument(span.clone()).await {
                    Ok(()) => {
                        let handled = u64::try_from(wanted.len()).unwrap_or(u64::MAX);
                        metrics.consumed.with_label_values(&[name]).inc_by(handled);
                        break;
                    }
                    Err(error) => {
                        metrics.consumer_retries.with_label_values(&[name]).inc();
                        tracing::warn!(consumer = name, %error, "consumer effect failed; retrying the batch");
                        if pause(&shutdown, &mut attempt_backoff).await {
                            return;
                        }
                    }
                }
            }
            if crash && !wanted.is_empty() {
                tracing::error!(consumer = name, "KOPEK_FAULT: aborting between effect and ack");
                std::process::abort();
            }
            if let Some(sequence) = newest {
                metrics.consumer_done(name, sequence);
            }
            if let Err(error) = source.ack().await {
                // The events come again; the inbox knows them.
                tracing::warn!(consumer = name, %error, "consumer could not acknowledge; the batch will be redelivered");
            }
            backoff = BACKOFF_FIRST;
        }
    })
}

fn unix_seconds(at: Timestamp) -> f64 {
    at.as_unix_micros() as f64 / 1e6
}

/// Links a batch's span to the request behind each of its events (the first
/// `LINKS_MAX`); a batch of one event continues that request's trace.
fn consume_span(name: &str, events: &[Incoming]) -> tracing::Span {
    let span = tracing::info_span!(
        "consume",
        otel.name = %format!("consume {name}"),
        otel.kind = "consumer",
        consumer = name,
        events = events.len(),
    );
    if let [event] = events {
        kopek_telemetry::trace::continue_from(&span, event.traceparent.as_deref());
    }
    for traceparent in
        events.iter().filter_map(|event| event.traceparent.as_deref()).take(LINKS_MAX)
    {
        kopek_telemetry::trace::link_to(&span, traceparent);
    }
    span
}

/// Sleeps the backoff (with jitter) and doubles it; `true` on shutdown.
async fn pause(shutdown: &CancellationToken, backoff: &mut Duration) -> bool {
    let delay = crate::relay::jittered(*backoff);
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(delay) => false,
    }
}
