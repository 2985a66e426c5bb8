//! WebSocket feeds. `/v1/ws` streams the events of an account, a user or an order as JSON,
//! one message per event with the balances after it; `?after=<sequence>` resumes after the
//! last event a client saw, so a reconnect misses nothing. The order-status route of the HTTP
//! contract sends `{"status": ...}` once the order settles.

use crate::AppState;
use crate::dto;
use crate::error::{ApiError, Params};
use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use axum::extract::{State, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use kopek_core::{OrderId, OrderStatus};
use kopek_store::StoredEvent;
use serde::Deserialize;
use serde_json::{Value, json};

/// What one connection follows; at least one of the three.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct WsQuery {
    pub account: Option<String>,
    pub user: Option<String>,
    pub order: Option<String>,
    /// Resume after this event sequence; absent: from now on.
    pub after: Option<u64>,
}

impl WsQuery {
    fn matches(&self, event: &StoredEvent, payload: &Value) -> bool {
        let balances = payload.get("balances").and_then(Value::as_array);
        let touches = |id: &str| {
            event.subject_id == id
                || balances.is_some_and(|balances| {
                    balances.iter().any(|balance| {
                        balance.get("account_id").and_then(Value::as_str) == Some(id)
                    })
                })
        };
        let subject = payload.get("subject");
        let field =
            |name: &str| subject.and_then(|subject| subject.get(name)).and_then(Value::as_str);
        let account_hit = self.account.as_deref().is_some_and(touches);
        let user_hit = self.user.as_deref().is_some_and(|user| {
            // Exactly this user's accounts, `user:<user>:<CUR>`: user "a" is not user "a:b".
            let owned = |id: &str| {
                id.strip_prefix("user:")
                    .and_then(|rest| rest.rsplit_once(':'))
                    .is_some_and(|(owner, currency)| owner == user && currency.len() == 3)
            };
            field("owner") == Some(user)
                || field("user_id") == Some(user)
                || (payload.get("subject_type").and_then(Value::as_str) == Some("user")
                    && event.subject_id == user)
                || balances.is_some_and(|balances| {
                    balances.iter().any(|balance| {
                        balance.get("account_id").and_then(Value::as_str).is_some_and(owned)
                    })
                })
        });
        let order_hit = self.order.as_deref().is_some_and(|order| event.subject_id == order);
        account_hit || user_hit || order_hit
    }
}

pub async fn events_ws(
    State(state): State<AppState>,
    Params(query): Params<WsQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if query.account.is_none() && query.user.is_none() && query.order.is_none() {
        return ApiError::invalid(
            "follow an account, a user or an order: ?account=, ?user= or ?order=",
        )
        .into_response();
    }
    let Ok(permit) = state.sockets.clone().try_acquire_owned() else {
        return ApiError::new(
            kopek_core::ErrorCode::Overloaded,
            "too many open WebSockets; retry later",
        )
        .into_response();
    };
    upgrade.on_upgrade(move |socket| async move {
        let _permit = permit;
        follow(state, query, socket).await;
    })
}

async fn follow(state: AppState, query: WsQuery, mut socket: WebSocket) {
    let mut events = match query.after {
        Some(after) => state.feed.subscribe_after(after),
        None => state.feed.subscribe_live(),
    };
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { return };
                let payload: Value = serde_json::from_str(&event.payload).unwrap_or(Value::Null);
                if !query.matches(&event, &payload) {
                    continue;
                }
                let message = match serde_json::to_string(&dto::event(&event)) {
                    Ok(text) => text,
                    Err(_) => continue,
                };
                if socket.send(Message::Text(Utf8Bytes::from(message))).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                // The feed is one-way; pings are answered by axum, anything else is ignored.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            () = state.draining.cancelled() => {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
        }
    }
}

fn settled(status: OrderStatus) -> bool {
    matches!(status, OrderStatus::Paid | OrderStatus::Failed)
}

/// Sends the order's final status once, then closes.
pub async fn order_status(state: AppState, id: String, mut socket: WebSocket) {
    let Ok(order_id) = OrderId::parse(&id) else {
        let _ = socket
            .send(Message::Text(Utf8Bytes::from(json!({"detail": "Order not found"}).to_string())))
            .await;
        return;
    };
    // Subscribe first, then look: a settlement between the two is seen either way.
    let mut events = state.feed.subscribe_live();
    let status = match state.engine.store().order(&order_id).await {
        Ok(Some(order)) if settled(order.status) => Some(order.status),
        Ok(Some(_)) => loop {
            tokio::select! {
                event = events.recv() => {
                    let Some(event) = event else { break None };
                    if event.subject_id == id && (event.kind == "OrderPaid" || event.kind == "OrderFailed") {
                        break Some(if event.kind == "OrderPaid" { OrderStatus::Paid } else { OrderStatus::Failed });
                    }
                }
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => {}
                },
                () = state.draining.cancelled() => break None,
            }
        },
        Ok(None) => {
            let _ = socket
                .send(Message::Text(Utf8Bytes::from(
                    json!({"detail": "Order not found"}).to_string(),
                )))
                .await;
            return;
        }
        Err(error) => {
            tracing::warn!(%error, "order status read failed");
            None
        }
    };
    if let Some(status) = status {
        let _ = socket
            .send(Message::Text(Utf8Bytes::from(json!({"status": status.as_str()}).to_string())))
            .await;
    }
    let _ = socket.send(Message::Close(None)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(subject: &str, accounts: &[&str]) -> (StoredEvent, Value) {
        let balances: Vec<Value> = accounts.iter().map(|id| json!({"account_id": id})).collect();
        let payload = json!({"subject_type": "transfer", "subject": {}, "balances": balances});
        let stored = StoredEvent {
            sequence: 1,
            id: "e".into(),
            tenant: "default".into(),
            kind: "TransferPosted".into(),
            subject_id: subject.into(),
            at: kopek_core::Timestamp::EPOCH,
            payload: payload.to_string(),
        };
        (stored, payload)
    }

    #[test]
    fn a_user_follows_exactly_their_own_accounts() {
        let follow = WsQuery { user: Some("a".into()), ..WsQuery::default() };
        let (mine, payload) = event("t1", &["user:a:USD", "world:USD"]);
        assert!(follow.matches(&mine, &payload));
        let (theirs, payload) = event("t2", &["user:a:b:USD", "world:USD"]);
        assert!(!follow.matches(&theirs, &payload), "user a must not see user a:b");
        let account = WsQuery { account: Some("world:USD".into()), ..WsQuery::default() };
        assert!(account.matches(&theirs, &payload));
    }
}
