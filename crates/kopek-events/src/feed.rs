//! The live event feed of one process: tails committed events in sequence order and hands them
//! to in-process subscribers (WebSockets, the relay, the order saga). A subscriber can resume
//! after any sequence and misses nothing: history comes from the store, then the live tail,
//! without gaps or repeats. It needs only the store port and the writer's commit signal.

use kopek_store::{Store, StoredEvent};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Events the live tail buffers per subscriber before a slow one falls back to the store.
const LIVE_BUFFER_EVENTS: usize = 4_096;
/// Events read from the store at a time.
const PAGE_EVENTS: usize = 500;
/// The tail also looks every so often without a commit signal (another process may write).
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The live event feed of one process. Cheap to clone.
#[derive(Clone)]
pub struct Feed {
    live: broadcast::Sender<Arc<StoredEvent>>,
    store: Arc<dyn Store>,
    /// The sequence the tail has published up to.
    published: watch::Receiver<u64>,
}

impl Feed {
    /// Starts tailing the events after their current end; the task stops with `shutdown`.
    /// `commits` is the writer's commit signal (the engine's `commits()`): the tail looks as
    /// soon as it changes, and every so often without it (another process may write).
    pub async fn start(
        store: Arc<dyn Store>,
        commits: watch::Receiver<u64>,
        shutdown: CancellationToken,
    ) -> Result<Feed, kopek_store::StoreError> {
        let start = store.last_event_sequence().await?;
        let (live, _) = broadcast::channel(LIVE_BUFFER_EVENTS);
        let (publish, published) = watch::channel(start);
        let tail =
            Tail { store: store.clone(), live: live.clone(), publish, commits, cursor: start };
        tokio::spawn(tail.run(shutdown));
        Ok(Feed { live, store, published })
    }

    /// The sequence of the newest event published so far.
    pub fn published(&self) -> u64 {
        *self.published.borrow()
    }

    /// Every event after `after` (exclusive), in order: stored history first, then live events
    /// as they commit. The receiver ends when the feed stops or the subscriber drops it.
    pub fn subscribe_after(&self, after: u64) -> mpsc::Receiver<Arc<StoredEvent>> {
        let (sender, receiver) = mpsc::channel(PAGE_EVENTS);
        let feed = self.clone();
        tokio::spawn(async move { feed.forward(after, sender).await });
        receiver
    }

    /// Events from now on (after the newest published one).
    pub fn subscribe_live(&self) -> mpsc::Receiver<Arc<StoredEvent>> {
        self.subscribe_after(self.published())
    }

    async fn forward(self, mut cursor: u64, sender: mpsc::Sender<Arc<StoredEvent>>) {
        loop {
            // Subscribe before reading history, so nothing committed in between is lost.
            let mut live = self.live.subscribe();
            // Catch up from the store to its end: anything the tail broadcast before this
            // subscription is already stored, anything after it arrives live.
            loop {
                if sender.is_closed() {
                    return;
                }
                let page = match self.store.events_after(None, cursor, PAGE_EVENTS).await {
                    Ok(page) => page,
                    Err(error) => {
                        tracing::warn!(%error, "feed could not read history; retrying");
                        tokio::time::sleep(POLL_INTERVAL).await;
                        continue;
                    }
                };
                if page.is_empty() {
                    break;
                }
                for event in page {
                    cursor = event.sequence;
                    if sender.send(Arc::new(event)).await.is_err() {
                        return;
                    }
                }
            }
            // Then live, skipping what history already delivered.
            loop {
                // Ends as soon as the subscriber is gone, even on an idle ledger.
                let received = tokio::select! {
                    received = live.recv() => received,
                    () = sender.closed() => return,
                };
                match received {
                    Ok(event) if event.sequence <= cursor => continue,
                    Ok(event) => {
                        cursor = event.sequence;
                        if sender.send(event).await.is_err() {
                            return;
                        }
                    }
                    // Too slow for the live buffer: go back to the store from the cursor.
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    }
}

struct Tail {
    store: Arc<dyn Store>,
    live: broadcast::Sender<Arc<StoredEvent>>,
    publish: watch::Sender<u64>,
    commits: watch::Receiver<u64>,
    cursor: u64,
}

impl Tail {
    async fn run(mut self, shutdown: CancellationToken) {
        loop {
            loop {
                let page = match self.store.events_after(None, self.cursor, PAGE_EVENTS).await {
                    Ok(page) => page,
                    Err(error) => {
                        tracing::warn!(%error, "outbox tail could not read; retrying");
                        break;
                    }
                };
                let full = page.len() == PAGE_EVENTS;
                for event in page {
                    self.cursor = event.sequence;
                    // No subscriber is fine: history is in the store.
                    let _ = self.live.send(Arc::new(event));
                }
                self.publish.send_replace(self.cursor);
                if !full {
                    break;
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = self.commits.changed() => {
                    if changed.is_err() {
                        // The engine is gone: one last look, then stop.
                        if shutdown.is_cancelled() {
                            return;
                        }
                        tokio::time::sleep(POLL_INTERVAL).await;
                    }
                }
                () = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    }
}
