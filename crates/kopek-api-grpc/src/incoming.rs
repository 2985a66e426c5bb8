//! The gRPC listener's connections, at most `max` open at once: past it a new connection is
//! closed at once instead of queueing. Each accepted connection holds a permit until it closes,
//! and lives under `kopek-net`'s deadlines: it must start a call within the client timeout and
//! is closed after going idle (no call in flight) for the idle timeout. Its `Activity` reaches
//! the auth layer through the connect info, which counts every call in flight.

use futures_util::Stream;
use kopek_net::{Activity, ConnectionLimits, Watched};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// A connection and its place among the open ones.
pub struct Limited {
    stream: Watched<TcpStream>,
    _permit: OwnedSemaphorePermit,
}

/// What tonic puts in every request's extensions about its connection.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    pub tcp: TcpConnectInfo,
    pub activity: Activity,
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(context, buffer)
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(context, buffer)
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(context)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl Connected for Limited {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        ConnectionInfo {
            tcp: self.stream.get_ref().connect_info(),
            activity: self.stream.activity(),
        }
    }
}

/// Accepted connections of `listener`, at most `max` open at once, under `limits`.
pub fn limited(
    listener: TcpListener,
    max: usize,
    limits: ConnectionLimits,
) -> impl Stream<Item = io::Result<Limited>> {
    let permits = Arc::new(Semaphore::new(max.max(1)));
    futures_util::stream::unfold((listener, permits), move |(listener, permits)| async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        drop(stream);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let stream = Watched::new(stream, limits);
                    let item = Ok(Limited { stream, _permit: permit });
                    return Some((item, (listener, permits)));
                }
                Err(error) => {
                    // A reset before accept, or out of descriptors: report it (tonic logs and
                    // goes on) after a breath, so a full table does not spin a core.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    return Some((Err(error), (listener, permits)));
                }
            }
        }
    })
}
