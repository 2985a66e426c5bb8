//! Events from the in-process feed, for consumers when no broker is configured. The
//! consumer's place is a durable cursor under the same kind of lease as the relay's, so one
//! process at a time runs each consumer and a successor resumes after the last batch
//! acknowledged.

use super::{BATCH_EVENTS, ConsumerError, Incoming, Source};
use crate::relay::{RENEW_EVERY, lease_end};
use async_trait::async_trait;
use kopek_core::Timestamp;
use kopek_events::Feed;
use kopek_store::wall_clock as now;
use kopek_store::{Store, StoredEvent};
use std::sync::Arc;
use tokio::sync::mpsc;

pub struct FeedSource {
    store: Arc<dyn Store>,
    feed: Feed,
    /// The cursor's name: `consumer/<name>`.
    key: String,
    holder: String,
    events: Option<mpsc::Receiver<Arc<StoredEvent>>>,
    /// The last sequence acknowledged.
    cursor: u64,
    /// The last sequence handed out.
    handed_out: u64,
}

impl FeedSource {
    pub fn new(store: Arc<dyn Store>, feed: Feed, consumer: &str, holder: String) -> FeedSource {
        FeedSource {
            store,
            feed,
            key: format!("consumer/{consumer}"),
            holder,
            events: None,
            cursor: 0,
            handed_out: 0,
        }
    }

    fn store_error(error: kopek_store::StoreError) -> ConsumerError {
        ConsumerError(error.to_string())
    }
}

#[async_trait]
impl Source for FeedSource {
    async fn next(&mut self) -> Result<Option<Vec<Incoming>>, ConsumerError> {
        loop {
            let Some(events) = self.events.as_mut() else {
                let now = now();
                match self
                    .store
                    .relay_claim(&self.key, &self.holder, now, lease_end(now))
                    .await
                    .map_err(Self::store_error)?
                {
                    Some(cursor) => {
                        self.cursor = cursor;
                        self.handed_out = cursor;
                        self.events = Some(self.feed.subscribe_after(cursor));
                    }
                    // Another process runs this consumer; look again later.
                    None => tokio::time::sleep(RENEW_EVERY).await,
                }
                continue;
            };
            match tokio::time::timeout(RENEW_EVERY, events.recv()).await {
                Ok(Some(first)) => {
                    let mut batch = vec![Incoming::from_stored(first)];
                    while batch.len() < BATCH_EVENTS {
                        match events.try_recv() {
                            Ok(event) => batch.push(Incoming::from_stored(event)),
                            Err(_) => break,
                        }
                    }
                    self.handed_out = batch.last().map_or(self.handed_out, |event| event.sequence);
                    return Ok(Some(batch));
                }
                Ok(None) => return Ok(None),
                // Idle: keep the lease.
                Err(_) => {
                    let now = now();
                    let held = self
                        .store
                        .relay_advance(&self.key, &self.holder, self.cursor, lease_end(now))
                        .await
                        .map_err(Self::store_error)?;
                    if !held {
                        self.events = None;
                    }
                }
            }
        }
    }

    async fn close(&mut self) {
        if self.events.take().is_some() {
            // Hand the consumer over at once instead of after the lease lapses.
            let released = self
                .store
                .relay_advance(&self.key, &self.holder, self.cursor, Timestamp::from_unix_micros(0))
                .await;
            if let Err(error) = released {
                tracing::warn!(%error, "consumer could not release its lease; it lapses on its own");
            }
        }
    }

    async fn ack(&mut self) -> Result<(), ConsumerError> {
        let now = now();
        let held = self
            .store
            .relay_advance(&self.key, &self.holder, self.handed_out, lease_end(now))
            .await
            .map_err(Self::store_error)?;
        if held {
            self.cursor = self.handed_out;
        } else {
            // Another process took over; it resumes from the stored cursor.
            self.events = None;
        }
        Ok(())
    }
}
