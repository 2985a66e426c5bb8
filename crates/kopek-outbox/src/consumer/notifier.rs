//! The notifier consumer: for every event, one webhook delivery per subscription of the
//! event's tenant that wants its type, queued with the inbox mark in one transaction. An
//! event no subscription wants is neither parsed nor marked. The sender (`crate::webhooks`)
//! does the HTTP.

use super::{ConsumerError, Handler, Incoming};
use async_trait::async_trait;
use kopek_core::EventKind;
use kopek_store::{Consumed, Effect, Store};
use std::sync::Arc;

pub const NAME: &str = "notifier";

pub struct Notifier {
    store: Arc<dyn Store>,
    max_attempts: u32,
}

impl Notifier {
    pub fn new(store: Arc<dyn Store>, max_attempts: u32) -> Notifier {
        Notifier { store, max_attempts: max_attempts.max(1) }
    }
}

#[async_trait]
impl Handler for Notifier {
    fn name(&self) -> &'static str {
        NAME
    }

    fn wants(&self) -> &'static [EventKind] {
        &EventKind::ALL
    }

    async fn handle(&self, events: &[Incoming]) -> Result<(), ConsumerError> {
        let hooks =
            self.store.webhooks(None).await.map_err(|error| ConsumerError(error.to_string()))?;
        let items: Vec<Consumed> = events
            .iter()
            .filter_map(|event| {
                let mut wanting = hooks
                    .iter()
                    .filter(|hook| hook.tenant == event.tenant && hook.wants(&event.kind))
                    .peekable();
                // No subscription wants it: nothing to queue, so no inbox mark either.
                wanting.peek()?;
                let body = event.document().to_string();
                let effects = wanting
                    .map(|hook| Effect::Deliver {
                        delivery_id: format!("dl_{}", uuid::Uuid::new_v4().simple()),
                        subscription_id: hook.id.clone(),
                        event_id: event.id.clone(),
                        event_type: event.kind.clone(),
                        body: body.clone(),
                        max_attempts: self.max_attempts,
                    })
                    .collect();
                Some(Consumed { event_id: event.id.clone(), effects })
            })
            .collect();
        super::consume(self.store.as_ref(), NAME, items).await
    }
}
