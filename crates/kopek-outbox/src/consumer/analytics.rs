//! Spending analytics: every `TransferPosted` whose debit account belongs to a user adds the
//! amount to that user's total for the transfer's category (empty when it had none) and
//! currency. Deposits credit a user and are not spending; payments, transfers out and
//! withdrawals are. Totals commit with the inbox marks in one transaction; a transfer that
//! is no user's spending changes nothing and leaves no mark.

use super::{ConsumerError, Handler, Incoming};
use async_trait::async_trait;
use kopek_core::{AccountId, AccountKind, EventKind, Tenant};
use kopek_store::{Consumed, Effect, Store};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub const NAME: &str = "analytics";
/// Account owners remembered; an account's owner never changes.
const OWNERS_CACHED_MAX: usize = 100_000;

pub struct Analytics {
    store: Arc<dyn Store>,
    /// Account id -> its user owner (`None`: not a user's account).
    owners: Mutex<HashMap<String, Option<String>>>,
}

impl Analytics {
    pub fn new(store: Arc<dyn Store>) -> Analytics {
        Analytics { store, owners: Mutex::new(HashMap::new()) }
    }

    /// The owner of the account a document names, in the event's tenant.
    async fn owner(&self, tenant: &str, account: &str) -> Result<Option<String>, ConsumerError> {
        let (Ok(tenant), Ok(id)) = (Tenant::parse(tenant), AccountId::parse(account)) else {
            return Ok(None);
        };
        let id = id.in_tenant(&tenant);
        let account = id.as_str();
        if let Some(owner) = self.owners.lock().ok().and_then(|owners| owners.get(account).cloned())
        {
            return Ok(owner);
        }
        let found =
            self.store.account(&id).await.map_err(|error| ConsumerError(error.to_string()))?;
        let owner = found
            .filter(|account| account.kind == AccountKind::User)
            .and_then(|account| account.owner)
            .filter(|owner| !owner.is_empty());
        if let Ok(mut owners) = self.owners.lock() {
            if owners.len() >= OWNERS_CACHED_MAX {
                owners.clear();
            }
            owners.insert(account.to_owned(), owner.clone());
        }
        Ok(owner)
    }
}

#[async_trait]
impl Handler for Analytics {
    fn name(&self) -> &'static str {
        NAME
    }

    fn wants(&self) -> &'static [EventKind] {
        &[EventKind::TransferPosted]
    }

    async fn handle(&self, events: &[Incoming]) -> Result<(), ConsumerError> {
        let mut items = Vec::with_capacity(events.len());
        for event in events {
            let text = |name: &str| event.subject_field(name).and_then(Value::as_str);
            if let (Some(debit), Some(currency), Some(amount)) = (
                text("debit_account_id"),
                text("currency"),
                event.subject_field("amount_minor").and_then(Value::as_i64),
            ) && let Some(user) = self.owner(&event.tenant, debit).await?
            {
                let spend = Effect::Spend {
                    tenant: event.tenant.clone(),
                    user,
                    category: text("category").unwrap_or_default().to_owned(),
                    currency: currency.to_owned(),
                    amount_minor: amount,
                };
                items.push(Consumed { event_id: event.id.clone(), effects: vec![spend] });
            }
        }
        super::consume(self.store.as_ref(), NAME, items).await
    }
}
