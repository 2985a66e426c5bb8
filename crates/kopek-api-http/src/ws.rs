//! WebSocket feeds. `/v1/ws` streams the events of an account, a user or an order as JSON,
//! one message per event with the balances after it; `?after=<sequence>` resumes after the
//! last event a client saw, so a reconnect misses nothing. The order-status route of the HTTP
//! contract sends `{"status": ...}` once the order settles.

use crate::AppState;
use crate::auth::Caller;
use crate::dto;
use crate::error::{ApiError, Params};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use axum::extract::{Extension, State, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use kopek_auth::{Ended, Ending, FinishOnDrop, KeyWatch, Principal};
use kopek_core::{OrderId, OrderStatus};
use kopek_events::EventDocument;
use kopek_events::filter::EventFilter;
use serde::Deserialize;
use serde_json::json;

/// What one connection follows: `type` (comma-separated event types), and `account`,
/// `user` or `order`; with none of the three, every event of the ledger.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct WsQuery {
    pub account: Option<String>,
    pub user: Option<String>,
    pub order: Option<String>,
    #[serde(rename = "type")]
    pub types: Option<String>,
    /// Resume after this event sequence; absent: from now on.
    pub after: Option<u64>,
}

impl WsQuery {
    fn filter(&self, tenant: &kopek_core::Tenant) -> Result<EventFilter, String> {
        Ok(EventFilter {
            tenant: Some(tenant.as_str().to_owned()),
            types: EventFilter::parse_types(self.types.as_deref())?,
            account: self.account.clone(),
            user: self.user.clone(),
            order: self.order.clone(),
        })
    }
}

pub async fn events_ws(
    State(state): State<AppState>,
    caller: Caller,
    key: Option<Extension<KeyWatch>>,
    connection: Option<Extension<kopek_net::Activity>>,
    Params(query): Params<WsQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Err(rejection) = kopek_intake::access::may_follow_events(&caller.0) {
        return ApiError::from(rejection).into_response();
    }
    // A bad filter is reported as such, even to a request that is no WebSocket handshake.
    let filter = match query.filter(caller.tenant()) {
        Ok(filter) => filter,
        Err(message) => return ApiError::invalid(message).into_response(),
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let Ok(permit) = state.sockets.clone().try_acquire_owned() else {
        return ApiError::new(
            kopek_core::ErrorCode::Overloaded,
            "too many open WebSockets; retry later",
        )
        .into_response();
    };
    let upgrade = upgrade
        .max_message_size(crate::WEBSOCKET_MESSAGE_BYTES_MAX)
        .max_frame_size(crate::WEBSOCKET_MESSAGE_BYTES_MAX);
    let ending = Ending::new(&state.draining, key.map(|Extension(key)| key));
    // Finished when the socket ends, or with the callback if the upgrade never completes.
    let finish = FinishOnDrop(ending.clone());
    upgrade.on_upgrade(move |socket| async move {
        let _permit = permit;
        // An open socket is a request in flight: its connection is not idle.
        let _busy = connection.map(|Extension(activity)| activity.busy());
        let _finish = finish;
        follow(state, query.after, filter, ending, socket).await;
    })
}

/// The frame that closes a socket: a normal close when the server drains, 1008 (policy
/// violation) with the reason when the socket's key was revoked.
pub fn close_frame(why: Ended) -> Message {
    match why {
        Ended::Shutdown => Message::Close(None),
        Ended::Revoked => Message::Close(Some(CloseFrame {
            code: close_code::POLICY,
            reason: Utf8Bytes::from_static("the API key was revoked"),
        })),
    }
}

async fn follow(
    state: AppState,
    after: Option<u64>,
    filter: EventFilter,
    ending: Ending,
    mut socket: WebSocket,
) {
    let mut events = match after {
        Some(after) => state.feed.subscribe_after(after),
        None => state.feed.subscribe_live(),
    };
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { return };
                let document = EventDocument::of_stored(&event);
                if !filter.matches(&event, &document) {
                    continue;
                }
                let message = match serde_json::to_string(&dto::event(&event, &document)) {
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
            why = ending.ended() => {
                let _ = socket.send(close_frame(why)).await;
                return;
            }
        }
    }
}

fn settled(status: OrderStatus) -> bool {
    matches!(status, OrderStatus::Paid | OrderStatus::Failed)
}

/// Sends the order's final status once, then closes. Another tenant's order, or another
/// user's for a key bound to a user, answers exactly as a missing one does.
pub async fn order_status(
    state: AppState,
    caller: Principal,
    id: String,
    ending: Ending,
    mut socket: WebSocket,
) {
    let Ok(order_id) = OrderId::parse(&id).map(|id| id.in_tenant(&caller.tenant)) else {
        let _ = socket
            .send(Message::Text(Utf8Bytes::from(json!({"detail": "Order not found"}).to_string())))
            .await;
        return;
    };
    // Subscribe first, then look: a settlement between the two is seen either way.
    let mut events = state.feed.subscribe_live();
    let status = match state.intake.visible_order(&caller, &order_id).await {
        Ok(Some(order)) if settled(order.status) => Some(order.status),
        Ok(Some(_)) => loop {
            tokio::select! {
                event = events.recv() => {
                    let Some(event) = event else { break None };
                    if event.subject_id == id && event.tenant == caller.tenant.as_str() && (event.kind == "OrderPaid" || event.kind == "OrderFailed") {
                        break Some(if event.kind == "OrderPaid" { OrderStatus::Paid } else { OrderStatus::Failed });
                    }
                }
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => {}
                },
                why = ending.ended() => {
                    let _ = socket.send(close_frame(why)).await;
                    return;
                }
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
        Err(rejection) => {
            tracing::warn!(reason = %rejection.message, "order status read failed");
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
