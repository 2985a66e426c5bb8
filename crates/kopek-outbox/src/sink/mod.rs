//! Sinks: the brokers the relay publishes to. A sink connects lazily, publishes a batch in
//! order and answers only once the broker has confirmed every message; after an error it
//! drops its connection and connects again on the next call.

pub mod amqp;
pub mod kafka;
pub mod nats;

use async_trait::async_trait;
use kopek_store::StoredEvent;
use std::sync::Arc;
use std::time::Duration;

/// How long a connection attempt or a confirmation may take before the batch counts as failed.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

#[async_trait]
pub trait Sink: Send + Sync {
    /// Publishes `events` in order; `Ok` only when the broker has confirmed all of them.
    /// On `Err` some may have been published: the relay sends the batch again and the event
    /// id lets the broker and consumers drop the repeats.
    async fn publish(&mut self, events: &[Arc<StoredEvent>]) -> Result<(), SinkError>;
}

/// Runs `work`, failing it after `CONFIRM_TIMEOUT`.
async fn within<T>(
    what: &str,
    work: impl Future<Output = Result<T, SinkError>>,
) -> Result<T, SinkError> {
    tokio::time::timeout(CONFIRM_TIMEOUT, work)
        .await
        .map_err(|_| SinkError(format!("{what}: no answer within {CONFIRM_TIMEOUT:?}")))?
}
