//! The live event stream.

use super::*;

/// Events a `StreamEvents` call buffers for a slow reader; past it the feed waits.
const STREAM_EVENTS_BUFFER: usize = 256;

/// An outbox event as the gRPC `Event`: the balances typed, the whole document as JSON.
fn event_message(event: &StoredEvent, document: &EventDocument) -> pb::Event {
    let balances = document
        .balances
        .iter()
        .map(|balance| pb::EventBalance {
            account_id: balance.account_id.clone(),
            currency: balance.currency.clone(),
            posted_minor: balance.posted_minor,
            pending_out_minor: balance.pending_out_minor,
            pending_in_minor: balance.pending_in_minor,
            available_minor: balance.available_minor,
        })
        .collect();
    pb::Event {
        sequence: event.sequence,
        id: event.id.clone(),
        r#type: event.kind.clone(),
        tenant: event.tenant.clone(),
        at: event.at.to_rfc3339(),
        subject_type: document.subject_type.clone(),
        subject_id: event.subject_id.clone(),
        balances,
        document_json: kopek_events::envelope::enveloped(event, document).to_string(),
    }
}

pub(super) async fn stream_events(
    service: &LedgerService,
    request: Request<pb::StreamEventsRequest>,
) -> Result<Response<EventStream>, Status> {
    let caller = principal(&request)?;
    access::may_follow_events(&caller).map_err(|r| rejection_status(&r))?;
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
                    let document = EventDocument::of_stored(&event);
                    if filter.matches(&event, &document)
                        && sender.send(Ok(event_message(&event, &document))).await.is_err()
                    {
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
