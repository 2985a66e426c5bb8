//! The pipelined stream shared by `StreamTransfers` and `StreamTransactions`. A reader task
//! takes each message, enqueues its work on the write path at once and passes the pending
//! answer on; a responder task sends the answers in arrival order as their batches commit.
//! One stream can so keep a whole batch's worth of requests in flight.

use futures_util::Stream;
use kopek_auth::{Ended, Ending};
use std::future::Future;
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use tracing::Instrument;

/// Requests of one stream that may be committing at once. Past this the server stops reading
/// the stream until answers go out, and HTTP/2 flow control slows the client down.
pub const STREAM_IN_FLIGHT_MAX: usize = 1_024;

/// The answer to one message, ready once its work has committed; an error ends the stream.
pub type Answer<T> = Pin<Box<dyn Future<Output = Result<T, Status>> + Send>>;

/// Starting one message's work: resolves once it is queued (waiting for room if the write
/// path is full), to the future of its answer.
pub type Started<T> = Pin<Box<dyn Future<Output = Answer<T>> + Send>>;

pub type AnswerStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Runs `start` on every message in arrival order and streams the answers in that order.
/// When the server shuts down, or the call's key is revoked (`ending`), the reader stops
/// reading, what it read is still answered, and the stream ends with `UNAVAILABLE` (resend
/// what got no answer) or `UNAUTHENTICATED`. A client that goes away leaves nothing half
/// done: what was queued commits once.
pub fn pipelined<In, Out>(
    mut inbound: Streaming<In>,
    ending: Ending,
    mut start: impl FnMut(In) -> Started<Out> + Send + 'static,
) -> AnswerStream<Out>
where
    In: Send + 'static,
    Out: Send + 'static,
{
    let (responses, outbound) = mpsc::channel(STREAM_IN_FLIGHT_MAX);
    let (pipeline, mut in_flight) =
        mpsc::channel::<Result<Answer<Out>, Status>>(STREAM_IN_FLIGHT_MAX);
    tokio::spawn(
        async move {
            let stopped = |why: Ended| match why {
                Ended::Shutdown => {
                    Status::unavailable("the server is shutting down: resend what was not answered")
                }
                Ended::Revoked => revoked_status(),
            };
            loop {
                let message = tokio::select! {
                    message = inbound.message() => message,
                    why = ending.ended() => Err(stopped(why)),
                };
                let item = match message {
                    Ok(Some(message)) => {
                        tokio::select! {
                            answer = start(message) => Ok(answer),
                            why = ending.ended() => Err(stopped(why)),
                        }
                    }
                    Ok(None) => break,
                    Err(status) => Err(status),
                };
                let failed = item.is_err();
                if pipeline.send(item).await.is_err() || failed {
                    break;
                }
            }
            ending.finish();
        }
        // The stream's commands join the call's trace.
        .in_current_span(),
    );
    tokio::spawn(async move {
        while let Some(item) = in_flight.recv().await {
            let response = match item {
                Ok(answer) => answer.await,
                Err(status) => Err(status),
            };
            let failed = response.is_err();
            if responses.send(response).await.is_err() || failed {
                // The client is gone, or the stream ended with an error; what was queued
                // still commits, exactly once.
                break;
            }
        }
    });
    Box::pin(ReceiverStream::new(outbound))
}

/// How a stream ends once its key is revoked.
pub fn revoked_status() -> Status {
    Status::unauthenticated(
        "UNAUTHENTICATED: the API key was revoked; open a new stream with a valid key",
    )
}
