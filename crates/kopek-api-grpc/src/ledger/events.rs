//! The live event stream.

use super::*;

/// Events a `StreamEvents` call buffers for a slow reader; past it the feed waits.
const STREAM_EVENTS_BUFFER: usize = 256;

/// An outbox event as the gRPC `Event`: the balances typed, the whole document as JSON.
fn event_message(event: &StoredEvent, payload: &Value) -> pb::Event {
    let text = |value: &Value, name: &str| {
        value.get(name).and_then(Value::as_str).unwrap_or_default().to_owned()
    };
    let integer = |value: &Value, name: &str| value.get(name).and_then(Value::as_i64);
    let balances = payload
        .get("balances")
        .and_then(Value::as_array)
        .map(|balances| {
            balances
                .iter()
                .map(|balance| pb::EventBalance {
                    account_id: text(balance, "account_id"),
                    currency: text(balance, "currency"),
                    posted_minor: integer(balance, "posted_minor").unwrap_or(0),
                    pending_out_minor: integer(balance, "pending_out_minor").unwrap_or(0),
                    pending_in_minor: integer(balance, "pending_in_minor").unwrap_or(0),
                    available_minor: integer(balance, "available_minor"),
                })
                .collect()
        })
        .unwrap_or_default();
    pb::Event {
        sequence: event.sequence,
        id: event.id.clone(),
        r#type: event.kind.clone(),
        tenant: event.tenant.clone(),
        at: event.at.to_rfc3339(),
        subject_type: text(payload, "subject_type"),
        subject_id: event.subject_id.clone(),
        balances,
        document_json: String::from_utf8(kopek_events::envelope::document(event))
            .unwrap_or_default(),
    }
}

pub(super) async fn stream_events(
    service: &LedgerService,
    request: Request<pb::StreamEventsRequest>,
) -> Result<Response<EventStream>, Status> {
    let caller = principal(&request)?;
    caller.refuse_bound("follow the tenant's event stream").map_err(|r| rejection_status(&r))?;
    let key = key_watch(&request);
    let tenant = caller.tenant.clone();
    let request = request.into_inner();
    let types = EventFilter::parse_types(request.types.iter().map(String::as_str))
        .map_err(Status::invalid_argument)?;
    let given = |text: String| (!text.is_empty()).then_some(text);
    let filter = EventFilter {
        tenant: Some(tenant.as_str().to_owned()),
        types,
        account: given(request.account_id),
        user: given(request.user_id),
        order: given(request.order_id),
    };
    let mut events = if request.from_now {
        service.feed.subscribe_live()
    } else {
        service.feed.subscribe_after(request.after_sequence)
    };
    let (sender, receiver) = tokio::sync::mpsc::channel(STREAM_EVENTS_BUFFER);
    // Made once the request checked out, and finished with the task that serves it.
    let ending = Ending::new(&service.shutdown, key);
    let finish = FinishOnDrop(ending.clone());
    tokio::spawn(async move {
        let _finish = finish;
        loop {
            tokio::select! {
                event = events.recv() => {
                    let Some(event) = event else { return };
                    let payload: Value = serde_json::from_str(&event.payload).unwrap_or(Value::Null);
                    if filter.matches(&event, &payload) && sender.send(Ok(event_message(&event, &payload))).await.is_err() {
                        return;
                    }
                }
                () = sender.closed() => return,
                why = ending.ended() => {
                    let status = match why {
                        Ended::Shutdown => Status::unavailable(
                            "the server is shutting down; resume after the last sequence received",
                        ),
                        Ended::Revoked => revoked_status(),
                    };
                    let _ = sender.send(Err(status)).await;
                    return;
                }
            }
        }
    });
    Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))))
}
