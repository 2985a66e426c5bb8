//! kopek-net: what every listener does to its connections, so that a client without a key
//! cannot hold the connection limit by opening connections and doing nothing with them.
//!
//! - A connection must start a request within `first_request` (the client timeout), or it is
//!   closed: a silent TCP connection, a TLS handshake or an HTTP/2 preface with nothing after.
//! - A connection with no request in flight for `idle` is closed (HTTP/1 keep-alive, HTTP/2
//!   channels). A request is in flight from its head to the end of its response body, and a
//!   WebSocket or a stream counts as one for as long as it is open ([`Activity::busy`]).
//! - A request body must arrive at [`BODY_BYTES_PER_SECOND_MIN`] after a grace of the client
//!   timeout ([`SlowBodyGuard`]), so a body trickled a byte a second ends in an error.
//!
//! The listener wraps each accepted stream in [`Watched`], whose watchdog task expires the
//! connection: every read and write after that fails, and the server drops it.

use bytes::Buf;
use futures_util::task::AtomicWaker;
use http_body::{Body, Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// A connection with no request in flight for this long is closed, by default.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The slowest a request body may arrive, after the client timeout's grace: 1 KiB a second.
pub const BODY_BYTES_PER_SECOND_MIN: u64 = 1_024;

/// The deadlines of one listener's connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// The time a new connection gets to start its first request.
    pub first_request: Duration,
    /// The time a connection may go without a request in flight.
    pub idle: Duration,
}

struct Shared {
    opened: Instant,
    /// Milliseconds after `opened` when the last request ended (0: none yet).
    idle_since_ms: AtomicU64,
    in_flight: AtomicUsize,
    requested: AtomicBool,
    expired: AtomicBool,
    closed: AtomicBool,
    read_waker: AtomicWaker,
    write_waker: AtomicWaker,
}

impl Shared {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn expire(&self) {
        self.expired.store(true, Ordering::SeqCst);
        self.read_waker.wake();
        self.write_waker.wake();
    }
}

/// A connection's record of its requests, for the layers that see requests.
#[derive(Clone)]
pub struct Activity(Arc<Shared>);

impl Activity {
    /// Marks a request in flight until the returned guard drops.
    pub fn busy(&self) -> Busy {
        self.0.requested.store(true, Ordering::SeqCst);
        self.0.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(self.0.clone())
    }
}

impl std::fmt::Debug for Activity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activity")
            .field("in_flight", &self.0.in_flight.load(Ordering::SeqCst))
            .finish()
    }
}

/// One request in flight on a connection.
pub struct Busy(Arc<Shared>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.idle_since_ms.store(self.0.elapsed_ms(), Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An accepted stream under the listener's deadlines.
pub struct Watched<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Watched<S> {
    /// Wraps `inner` and starts its watchdog (on the current Tokio runtime).
    pub fn new(inner: S, limits: ConnectionLimits) -> Watched<S> {
        let shared = Arc::new(Shared {
            opened: Instant::now(),
            idle_since_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            requested: AtomicBool::new(false),
            expired: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            read_waker: AtomicWaker::new(),
            write_waker: AtomicWaker::new(),
        });
        tokio::spawn(watchdog(shared.clone(), limits));
        Watched { inner, shared }
    }

    pub fn activity(&self) -> Activity {
        Activity(self.shared.clone())
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn expired(&self) -> bool {
        self.shared.expired.load(Ordering::SeqCst)
    }
}

impl<S> Drop for Watched<S> {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the connection was idle past its deadline")
}

/// Expires the connection once it has gone `first_request` without starting a request, or
/// `idle` without one in flight; ends when the connection closes.
async fn watchdog(shared: Arc<Shared>, limits: ConnectionLimits) {
    tokio::time::sleep(limits.first_request).await;
    if !shared.requested.load(Ordering::SeqCst) && !shared.closed.load(Ordering::SeqCst) {
        shared.expire();
        return;
    }
    let idle_ms = u64::try_from(limits.idle.as_millis()).unwrap_or(u64::MAX);
    loop {
        if shared.closed.load(Ordering::SeqCst) {
            return;
        }
        let wait_ms = if shared.in_flight.load(Ordering::SeqCst) > 0 {
            idle_ms
        } else {
            let idle_for =
                shared.elapsed_ms().saturating_sub(shared.idle_since_ms.load(Ordering::SeqCst));
            if idle_for >= idle_ms {
                shared.expire();
                return;
            }
            idle_ms - idle_for
        };
        tokio::time::sleep(Duration::from_millis(wait_ms.max(1))).await;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.shared.read_waker.register(context.waker());
        if self.expired() {
            return Poll::Ready(Err(timed_out()));
        }
        Pin::new(&mut self.inner).poll_read(context, buffer)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.shared.write_waker.register(context.waker());
        if self.expired() {
            return Poll::Ready(Err(timed_out()));
        }
        Pin::new(&mut self.inner).poll_write(context, buffer)
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.shared.write_waker.register(context.waker());
        if self.expired() {
            return Poll::Ready(Err(timed_out()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A response body that keeps its request in flight until it ends or drops.
pub struct BusyBody<B> {
    inner: B,
    _busy: Option<Busy>,
}

impl<B> BusyBody<B> {
    pub fn new(inner: B, busy: Option<Busy>) -> BusyBody<B> {
        BusyBody { inner, _busy: busy }
    }
}

impl<B: Body + Unpin> Body for BusyBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(context)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The error a too-slow request body ends with.
#[derive(Debug)]
pub struct TooSlow {
    pub bytes_per_second_min: u64,
}

impl std::fmt::Display for TooSlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body arrived slower than {} bytes a second",
            self.bytes_per_second_min
        )
    }
}

impl std::error::Error for TooSlow {}

/// A request body that must keep up: by any moment `t` after `grace`, at least
/// `(t - grace) * BODY_BYTES_PER_SECOND_MIN` bytes (or all of it) have arrived; past that it
/// ends with [`TooSlow`]. A timer wakes it, so a body that sends nothing at all fails too.
pub struct SlowBodyGuard<B> {
    inner: B,
    started: Instant,
    grace: Duration,
    received: u64,
    /// Made the first time the body is waited for: a body that is there at once (most are
    /// small, or empty) costs no timer.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> SlowBodyGuard<B> {
    pub fn new(inner: B, grace: Duration) -> SlowBodyGuard<B> {
        SlowBodyGuard { inner, started: Instant::now(), grace, received: 0, timer: None }
    }

    /// When the body is late unless more arrives.
    fn due(&self) -> Instant {
        let seconds = self.received.saturating_add(1) as f64 / BODY_BYTES_PER_SECOND_MIN as f64;
        self.started + self.grace + Duration::from_secs_f64(seconds)
    }
}

impl<B> Body for SlowBodyGuard<B>
where
    B: Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(context) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.received = self.received.saturating_add(data.remaining() as u64);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let due = self.due();
                let too_slow = || {
                    Poll::Ready(Some(Err(Box::new(TooSlow {
                        bytes_per_second_min: BODY_BYTES_PER_SECOND_MIN,
                    }) as Self::Error)))
                };
                if Instant::now() >= due {
                    return too_slow();
                }
                let timer =
                    self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                if timer.deadline() != due {
                    timer.as_mut().reset(due);
                }
                match timer.as_mut().poll(context) {
                    Poll::Ready(()) => too_slow(),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits(first_request_ms: u64, idle_ms: u64) -> ConnectionLimits {
        ConnectionLimits {
            first_request: Duration::from_millis(first_request_ms),
            idle: Duration::from_millis(idle_ms),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_starts_no_request_expires() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut watched = Watched::new(ours, limits(1_000, 5_000));
        theirs.write_all(b"x").await.expect("write");
        let mut byte = [0u8; 1];
        watched.read_exact(&mut byte).await.expect("bytes read before the deadline");
        let error = watched.read(&mut byte).await.expect_err("expired");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_lives_and_an_idle_one_expires() {
        let (ours, _theirs) = tokio::io::duplex(64);
        let mut watched = Watched::new(ours, limits(1_000, 5_000));
        let busy = watched.activity().busy();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!watched.expired(), "a request in flight keeps the connection");
        drop(busy);
        tokio::time::sleep(Duration::from_millis(4_900)).await;
        assert!(!watched.expired(), "idle for less than the limit");
        let mut byte = [0u8; 1];
        let error = watched.read(&mut byte).await.expect_err("expired");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    /// A body made of the frames a channel sends.
    struct ChannelBody(tokio::sync::mpsc::Receiver<bytes::Bytes>);

    impl Body for ChannelBody {
        type Data = bytes::Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            context: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<bytes::Bytes>, Infallible>>> {
            self.0.poll_recv(context).map(|item| item.map(|data| Ok(Frame::data(data))))
        }
    }

    /// Reads `body` to its end; the number of frames, or the error.
    async fn drain<B: Body + Unpin>(mut body: B) -> Result<usize, B::Error> {
        let mut frames = 0;
        loop {
            match std::future::poll_fn(|context| Pin::new(&mut body).poll_frame(context)).await {
                Some(Ok(_)) => frames += 1,
                Some(Err(error)) => return Err(error),
                None => return Ok(frames),
            }
        }
    }

    /// Sends `count` frames of `size` bytes, one every `every`.
    fn sender(count: usize, size: usize, every: Duration) -> ChannelBody {
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            for _ in 0..count {
                tokio::time::sleep(every).await;
                let frame = bytes::Bytes::from(vec![b'x'; size]);
                if sender.send(frame).await.is_err() {
                    return;
                }
            }
        });
        ChannelBody(receiver)
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickled_body_fails_and_a_steady_one_passes() {
        let trickled =
            SlowBodyGuard::new(sender(100, 1, Duration::from_secs(1)), Duration::from_secs(2));
        let error = drain(trickled).await.expect_err("too slow");
        assert!(error.to_string().contains("slower than 1024 bytes a second"), "{error}");
        let silent =
            SlowBodyGuard::new(sender(1, 1, Duration::from_secs(3_600)), Duration::from_secs(2));
        assert!(drain(silent).await.is_err(), "a body that sends nothing fails too");
        let steady =
            SlowBodyGuard::new(sender(20, 4_096, Duration::from_secs(1)), Duration::from_secs(2));
        assert_eq!(drain(steady).await.expect("fast enough"), 20);
    }
}
