//! A request of several transfers: each is read on its own, and the linked-batch rule decides
//! what the rest answer when one cannot be read. The answers come back in request order, one
//! `TransferResult` per transfer, whichever surface asked.

use crate::Intake;
use kopek_auth::Principal;
use kopek_core::{
    CommandBody, CommandResult, ErrorCode, Linking, Rejection, TransferRequest, TransferResult,
    limits, linked_failed,
};
use kopek_engine::{Engine, EngineError, Ticket};
use tracing::Instrument;

/// A read request: per transfer, the request or why it was refused, in request order.
#[derive(Debug)]
pub struct Batch {
    slots: Vec<Result<(), Rejection>>,
    transfers: Vec<TransferRequest>,
    linking: Linking,
}

impl Batch {
    /// Applies the linked-batch rule to what the surface read. A linked request with a
    /// transfer that cannot be read commits nothing: that transfer answers its refusal, every
    /// other one `LINKED_EVENT_FAILED` naming it (the sentence `apply` uses when one fails
    /// in the ledger). More than `TRANSFERS_PER_REQUEST_MAX` transfers is refused whole.
    pub fn new(
        parsed: Vec<Result<TransferRequest, Rejection>>,
        linking: Linking,
    ) -> Result<Batch, Rejection> {
        Batch::check_size(parsed.len())?;
        if linking == Linking::Linked
            && let Some(culprit) = parsed.iter().position(Result::is_err)
        {
            let failed = parsed[culprit]
                .as_ref()
                .err()
                .cloned()
                .unwrap_or_else(|| Rejection::invalid("the transfer could not be read"));
            let slots = (0..parsed.len())
                .map(|index| {
                    Err(if index == culprit {
                        failed.clone()
                    } else {
                        linked_failed(culprit, &failed)
                    })
                })
                .collect();
            return Ok(Batch { slots, transfers: Vec::new(), linking });
        }
        let mut slots = Vec::with_capacity(parsed.len());
        let mut transfers = Vec::with_capacity(parsed.len());
        for item in parsed {
            slots.push(item.map(|request| transfers.push(request)));
        }
        Ok(Batch { slots, transfers, linking })
    }

    /// Refuses a request of more than `TRANSFERS_PER_REQUEST_MAX` transfers, before reading
    /// any of them.
    pub fn check_size(count: usize) -> Result<(), Rejection> {
        if count > limits::TRANSFERS_PER_REQUEST_MAX {
            return Err(Rejection::invalid(format!(
                "a request holds at most {} transfers, not {count}",
                limits::TRANSFERS_PER_REQUEST_MAX,
            )));
        }
        Ok(())
    }

    fn body(&mut self) -> Option<CommandBody> {
        (!self.transfers.is_empty()).then(|| CommandBody::CreateTransfers {
            transfers: std::mem::take(&mut self.transfers),
            linking: self.linking,
        })
    }
}

/// A batch in the write queue: its answers are ready once its commit is.
pub struct Pending {
    slots: Vec<Result<(), Rejection>>,
    ticket: Option<Ticket>,
    /// The caller's `ledger.submit` span, which the wait belongs to.
    span: Option<tracing::Span>,
}

impl Pending {
    /// Waits for the commit and answers every transfer in request order.
    pub async fn results(self) -> Result<Vec<TransferResult>, Rejection> {
        let committed = match self.ticket {
            None => Vec::new(),
            Some(ticket) => {
                let span = self.span.unwrap_or_else(tracing::Span::current);
                transfers(ticket.wait().instrument(span).await)?
            }
        };
        let mut committed = committed.into_iter();
        self.slots
            .into_iter()
            .map(|slot| match slot {
                Err(rejection) => Ok(TransferResult::Rejected(rejection)),
                Ok(()) => committed.next().ok_or_else(|| {
                    Rejection::new(ErrorCode::Internal, "a committed result is missing")
                }),
            })
            .collect()
    }
}

/// The transfers' answers of a commit; any other answer is a broken invariant.
fn transfers(answer: Result<CommandResult, EngineError>) -> Result<Vec<TransferResult>, Rejection> {
    match answer.map_err(|error| error.rejection())? {
        CommandResult::Transfers(results) => Ok(results),
        other => Err(Rejection::new(
            ErrorCode::Internal,
            format!("a transfers command was answered with {other:?}"),
        )),
    }
}

impl Intake {
    /// Queues the batch without waiting for room (a full queue is `OVERLOADED` at once), from
    /// the current span: a stream or a call that waits for the answer itself.
    pub fn enqueue(&self, caller: &Principal, mut batch: Batch) -> Result<Pending, Rejection> {
        let ticket = batch
            .body()
            .map(|body| self.engine.enqueue_now(caller.command(body)))
            .transpose()
            .map_err(|error| error.rejection())?;
        Ok(Pending { slots: batch.slots, ticket, span: None })
    }

    /// Queues the batch, waiting for room in the queue: what streams and consumers use.
    pub async fn enqueue_waiting(
        &self,
        caller: &Principal,
        mut batch: Batch,
    ) -> Result<Pending, Rejection> {
        let ticket = match batch.body() {
            None => None,
            Some(body) => Some(
                self.engine
                    .enqueue_command(caller.command(body))
                    .await
                    .map_err(|error| error.rejection())?,
            ),
        };
        Ok(Pending { slots: batch.slots, ticket, span: None })
    }

    /// Queues the batch (a full queue is `OVERLOADED`) and answers it once committed, in the
    /// span `ledger.submit`: the command's events carry that span's trace.
    pub async fn submit(
        &self,
        caller: &Principal,
        mut batch: Batch,
    ) -> Result<Vec<TransferResult>, Rejection> {
        let Some(body) = batch.body() else {
            return Pending { slots: batch.slots, ticket: None, span: None }.results().await;
        };
        let command = caller.command(body);
        let span = Engine::submit_span(&command);
        let ticket = span
            .in_scope(|| self.engine.enqueue_now(command))
            .map_err(|error| error.rejection())?;
        Pending { slots: batch.slots, ticket: Some(ticket), span: Some(span) }.results().await
    }

    /// One transfer, queued and answered.
    pub async fn submit_one(
        &self,
        caller: &Principal,
        request: TransferRequest,
    ) -> Result<TransferResult, Rejection> {
        let batch = Batch::new(vec![Ok(request)], Linking::Independent)?;
        let mut results = self.submit(caller, batch).await?;
        results.pop().ok_or_else(|| Rejection::new(ErrorCode::Internal, "a result is missing"))
    }
}
