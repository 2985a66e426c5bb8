//! Transfers: create (through the intake), read, and the pipelined stream.

use super::*;

/// Reads a transfers request through the intake: one answer per transfer, in request order.
async fn read_batch(
    intake: &Intake,
    caller: &Principal,
    requests: Vec<pb::TransferRequest>,
    linked: bool,
) -> Result<Batch, Rejection> {
    Batch::check_size(requests.len())?;
    let mut parsed = Vec::with_capacity(requests.len());
    for request in requests {
        parsed.push(match wire::transfer_input(request) {
            Ok(input) => intake.transfer(&caller.tenant, input).await,
            Err(rejection) => Err(rejection),
        });
    }
    let linking = if linked { Linking::Linked } else { Linking::Independent };
    Batch::new(parsed, linking)
}

/// Every answer of a batch as the wire's `TransferResult`, each committed one converted by
/// `convert` (the full or the compact answer).
fn wire_results(
    results: Vec<kopek_core::TransferResult>,
    convert: fn(kopek_core::TransferResult) -> pb::TransferResult,
) -> Vec<pb::TransferResult> {
    results
        .into_iter()
        .map(|result| match result {
            kopek_core::TransferResult::Rejected(rejection) => pb::TransferResult {
                transfer: None,
                replayed: false,
                error: Some(convert::error(&rejection)),
            },
            result => convert(result),
        })
        .collect()
}

pub(super) async fn create_transfers(
    service: &LedgerService,
    request: Request<pb::CreateTransfersRequest>,
) -> Result<Response<pb::CreateTransfersResponse>, Status> {
    let caller = principal(&request)?;
    let request = request.into_inner();
    let batch = read_batch(&service.intake, &caller, request.transfers, request.linked)
        .await
        .map_err(|r| rejection_status(&r))?;
    // Queued from the call's own span, which the batch links to.
    let results = service
        .intake
        .enqueue(&caller, batch)
        .map_err(|r| rejection_status(&r))?
        .results()
        .await
        .map_err(|r| rejection_status(&r))?;
    Ok(Response::new(pb::CreateTransfersResponse {
        results: wire_results(results, convert::transfer_result),
    }))
}

pub(super) async fn get_transfer(
    service: &LedgerService,
    request: Request<pb::GetTransferRequest>,
) -> Result<Response<pb::GetTransferResponse>, Status> {
    let caller = principal(&request)?;
    let key;
    let lookup = match request.into_inner().lookup {
        Some(pb::get_transfer_request::Lookup::Id(id)) => TransferLookup::Id(
            kopek_core::TransferId::parse(&id).map_err(|r| rejection_status(&r))?,
        ),
        Some(pb::get_transfer_request::Lookup::IdempotencyKey(text)) => {
            key = kopek_core::IdempotencyKey::parse(&text).map_err(|r| rejection_status(&r))?;
            TransferLookup::Key(&key)
        }
        None => return Err(Status::invalid_argument("give id or idempotency_key")),
    };
    let found = service.intake.visible_transfer(&caller, lookup).await;
    match found.map_err(|r| rejection_status(&r))? {
        Some(transfer) => Ok(Response::new(pb::GetTransferResponse {
            transfer: Some(convert::transfer(&transfer)),
        })),
        None => Err(Status::not_found("transfer not found")),
    }
}

pub(super) async fn list_transfers(
    service: &LedgerService,
    request: Request<pb::ListTransfersRequest>,
) -> Result<Response<pb::ListTransfersResponse>, Status> {
    let caller = principal(&request)?;
    let request = request.into_inner();
    let text = |value: String| (!value.is_empty()).then_some(value);
    let mut metadata: Vec<(String, String)> = request.metadata.into_iter().collect();
    metadata.sort();
    let input = SearchInput {
        account: text(request.account_id),
        idempotency_key: text(request.idempotency_key),
        after: text(request.committed_after),
        before: text(request.committed_before),
        effective_after: text(request.effective_after),
        effective_before: text(request.effective_before),
        kind: convert::kind_filter(request.kind),
        status: convert::status_filter(request.status),
        currency: text(request.currency),
        min_amount: text(request.min_amount),
        max_amount: text(request.max_amount),
        metadata,
        order: Some(if request.ascending { "asc" } else { "desc" }.to_owned()),
        limit: usize::try_from(request.page_size).ok(),
        cursor: text(request.page_token),
        include: None,
    };
    let page = service.intake.search_transfers(&caller, &input).await;
    let page = page.map_err(|r| rejection_status(&r))?;
    Ok(Response::new(pb::ListTransfersResponse {
        transfers: page.transfers.iter().map(convert::transfer).collect(),
        next_page_token: page.next_cursor.unwrap_or_default(),
    }))
}

#[expect(
    clippy::async_yields_async,
    reason = "starting a message's work resolves to the future of its answer (pipeline::Started)"
)]
pub(super) async fn stream_transfers(
    service: &LedgerService,
    request: Request<Streaming<pb::StreamTransfersRequest>>,
) -> Result<Response<AnswerStream<pb::StreamTransfersResponse>>, Status> {
    let caller = principal(&request)?;
    let intake = service.intake.clone();
    let start = move |message: pb::StreamTransfersRequest| -> Started<pb::StreamTransfersResponse> {
        let (intake, caller) = (intake.clone(), caller.clone());
        Box::pin(async move {
            let request_id = message.request_id;
            let answer_as = if message.compact {
                convert::compact_transfer_result
            } else {
                convert::transfer_result
            };
            let pending =
                match read_batch(&intake, &caller, message.transfers, message.linked).await {
                    Ok(batch) => intake.enqueue_waiting(&caller, batch).await,
                    Err(rejection) => Err(rejection),
                };
            let answer: Answer<pb::StreamTransfersResponse> = Box::pin(async move {
                let results = match pending {
                    Ok(pending) => {
                        pending.results().await.map(|results| wire_results(results, answer_as))
                    }
                    Err(rejection) => Err(rejection),
                };
                Ok(match results {
                    Ok(results) => pb::StreamTransfersResponse { request_id, results, error: None },
                    Err(rejection) => refused(request_id, &rejection),
                })
            });
            answer
        })
    };
    let ending = Ending::new(&service.shutdown, key_watch(&request));
    Ok(Response::new(pipelined(request.into_inner(), ending, start)))
}

fn refused(request_id: u64, rejection: &Rejection) -> pb::StreamTransfersResponse {
    pb::StreamTransfersResponse {
        request_id,
        results: Vec::new(),
        error: Some(convert::error(rejection)),
    }
}
