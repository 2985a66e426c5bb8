//! Which events a subscriber wants: the event stream API (gRPC `StreamEvents`, WebSocket
//! `/v1/ws`) passes each event through one `EventFilter`.

use crate::EventDocument;
use kopek_core::EventKind;
use kopek_store::StoredEvent;

/// An event passes when it is of the tenant, its type is one of `types` (any type if empty)
/// and, when any of `account`, `user` and `order` is given, it concerns at least one of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this tenant's events (`None`: every tenant's, for the ledger's own use).
    pub tenant: Option<String>,
    pub types: Vec<EventKind>,
    /// Events whose subject is this account or that changed its balance.
    pub account: Option<String>,
    /// Events about this user, their orders or any of their accounts (`user:<id>:<CUR>`).
    pub user: Option<String>,
    /// Events about this order.
    pub order: Option<String>,
}

impl EventFilter {
    /// Parses type names (`TransferPosted`, ...), each given alone or comma-separated.
    pub fn parse_types<'a>(
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<EventKind>, String> {
        let mut types = Vec::new();
        for name in names.into_iter().flat_map(|names| names.split(',')) {
            let name = name.trim();
            if name.is_empty() {
                continue;
            }
            let kind = EventKind::ALL
                .into_iter()
                .find(|kind| kind.as_str() == name)
                .ok_or_else(|| format!("unknown event type {name:?}"))?;
            if !types.contains(&kind) {
                types.push(kind);
            }
        }
        Ok(types)
    }

    /// `document` is the event's document (`EventDocument::of_stored`).
    pub fn matches(&self, event: &StoredEvent, document: &EventDocument) -> bool {
        if self.tenant.as_ref().is_some_and(|tenant| *tenant != event.tenant) {
            return false;
        }
        if !self.types.is_empty() && !self.types.iter().any(|kind| kind.as_str() == event.kind) {
            return false;
        }
        if self.account.is_none() && self.user.is_none() && self.order.is_none() {
            return true;
        }
        let touches = |id: &str| {
            event.subject_id == id || document.balances.iter().any(|b| b.account_id == id)
        };
        let account_hit = self.account.as_deref().is_some_and(touches);
        let user_hit = self.user.as_deref().is_some_and(|user| {
            // Exactly this user's accounts, `user:<user>:<CUR>`: user "a" is not user "a:b".
            let owned = |id: &str| {
                id.strip_prefix("user:")
                    .and_then(|rest| rest.rsplit_once(':'))
                    .is_some_and(|(owner, currency)| owner == user && currency.len() == 3)
            };
            document.subject_text("owner") == Some(user)
                || document.subject_text("user_id") == Some(user)
                || (document.subject_type == "user" && event.subject_id == user)
                || document.balances.iter().any(|balance| owned(&balance.account_id))
        });
        let order_hit = self.order.as_deref().is_some_and(|order| event.subject_id == order);
        account_hit || user_hit || order_hit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kopek_store::EventBody;
    use serde_json::{Value, json};

    fn event(kind: &str, subject: &str, accounts: &[&str]) -> (StoredEvent, EventDocument) {
        let balances: Vec<Value> = accounts
            .iter()
            .map(|id| {
                json!({"account_id": id, "available_minor": null, "currency": "USD",
                       "pending_in_minor": 0, "pending_out_minor": 0, "posted_minor": 0})
            })
            .collect();
        let text = json!({"at": "1970-01-01T00:00:00Z", "balances": balances, "id": "e",
                          "subject": {}, "subject_type": "transfer", "tenant": "default",
                          "type": kind});
        let stored = StoredEvent {
            sequence: 1,
            id: "e".into(),
            tenant: "default".into(),
            kind: kind.into(),
            subject_id: subject.into(),
            at: kopek_core::Timestamp::EPOCH,
            body: EventBody::Document(text.to_string()),
            traceparent: None,
        };
        let document = EventDocument::of_stored(&stored);
        assert_eq!(document.balances.len(), accounts.len(), "the test's document reads");
        (stored, document)
    }

    #[test]
    fn a_user_follows_exactly_their_own_accounts() {
        let follow = EventFilter { user: Some("a".into()), ..EventFilter::default() };
        let (mine, payload) = event("TransferPosted", "t1", &["user:a:USD", "world:USD"]);
        assert!(follow.matches(&mine, &payload));
        let (theirs, payload) = event("TransferPosted", "t2", &["user:a:b:USD", "world:USD"]);
        assert!(!follow.matches(&theirs, &payload), "user a must not see user a:b");
        let account = EventFilter { account: Some("world:USD".into()), ..EventFilter::default() };
        assert!(account.matches(&theirs, &payload));
    }

    #[test]
    fn types_narrow_every_other_filter() {
        let types =
            EventFilter::parse_types(["HoldPlaced,TransferPosted", "HoldPlaced"]).expect("types");
        assert_eq!(types, [EventKind::HoldPlaced, EventKind::TransferPosted]);
        let posted = EventFilter { types: types.clone(), ..EventFilter::default() };
        let (transfer, payload) = event("TransferPosted", "t1", &["x"]);
        let (opened, opened_payload) = event("AccountOpened", "x", &["x"]);
        assert!(posted.matches(&transfer, &payload));
        assert!(!posted.matches(&opened, &opened_payload));
        let on_y = EventFilter { types, account: Some("y".into()), ..EventFilter::default() };
        assert!(!on_y.matches(&transfer, &payload));
        assert!(EventFilter::default().matches(&opened, &opened_payload), "no filter: everything");
        let mine = EventFilter { tenant: Some("default".into()), ..EventFilter::default() };
        let theirs = EventFilter { tenant: Some("other".into()), ..EventFilter::default() };
        assert!(mine.matches(&opened, &opened_payload));
        assert!(!theirs.matches(&opened, &opened_payload), "another tenant's events never pass");
        assert_eq!(
            EventFilter::parse_types(["Transfer"]).expect_err("unknown"),
            "unknown event type \"Transfer\""
        );
    }
}
