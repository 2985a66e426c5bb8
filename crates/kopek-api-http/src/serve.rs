//! The HTTP listener: accepts connections (at most `connections_max` at once: more are closed
//! at once), speaks TLS when configured, gives a client `header_timeout` to start a request
//! and to send its head, closes connections with no request in flight for `idle_timeout`
//! (HTTP/1 keep-alive and HTTP/2 alike) and request bodies that arrive slower than
//! `kopek_net::BODY_BYTES_PER_SECOND_MIN` (see `kopek-net`), serves HTTP/1.1 with WebSocket
//! upgrades and HTTP/2, and on shutdown stops accepting and lets open requests finish.

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use kopek_net::{Activity, BusyBody, ConnectionLimits, SlowBodyGuard, Watched};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Open connections per HTTP listener, by default.
pub const CONNECTIONS_MAX: usize = 4_096;
/// Largest request head (request line and headers); past it, 431.
pub const HEADER_BYTES_MAX: usize = 64 * 1024;
/// Time a client gets to send a request's head, and to finish a TLS handshake.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct ServeOptions {
    /// Serve HTTPS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub connections_max: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            tls: None,
            connections_max: CONNECTIONS_MAX,
            header_timeout: HEADER_TIMEOUT,
            idle_timeout: kopek_net::IDLE_TIMEOUT,
        }
    }
}

/// A rustls server configuration from PEM files: the certificate chain and its private key.
pub fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| format!("read certificates from {}: {error}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|error| format!("read the private key from {}: {error}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| format!("the certificate and key do not make a TLS identity: {error}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves `app` on `listener` until `shutdown`, then waits for open connections to finish
/// their requests (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(options.connections_max.max(1)));
    let acceptor = options.tls.clone().map(TlsAcceptor::from);
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors or a connection reset before accept: keep serving.
                Err(error) => {
                    tracing::warn!(%error, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Over the limit: closing at once costs less than queueing the client.
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let limits =
            ConnectionLimits { first_request: options.header_timeout, idle: options.idle_timeout };
        let stream = Watched::new(stream, limits);
        let service = watched_service(app.clone(), stream.activity(), options.header_timeout);
        let watcher = graceful.watcher();
        let (acceptor, header_timeout) = (acceptor.clone(), options.header_timeout);
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(HEADER_BYTES_MAX);
            builder.http2().max_header_list_size(HEADER_BYTES_MAX as u32);
            match acceptor {
                None => {
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    let _ = watcher.watch(connection.into_owned()).await;
                }
                Some(acceptor) => {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(header_timeout, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    let _ = watcher.watch(connection.into_owned()).await;
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The app as one connection serves it: each request is in flight (for the idle rule) until
/// its response body ends, carries the connection's `Activity` (a WebSocket holds it busy
/// while open), and has its body read under the minimum rate, after `grace`.
fn watched_service(
    app: Router,
    activity: Activity,
    grace: Duration,
) -> TowerToHyperService<
    impl tower::Service<
        axum::http::Request<hyper::body::Incoming>,
        Response = axum::http::Response<axum::body::Body>,
        Error = std::convert::Infallible,
        Future = impl Send,
    > + Clone,
> {
    TowerToHyperService::new(tower::service_fn(
        move |request: axum::http::Request<hyper::body::Incoming>| {
            let busy = activity.busy();
            let mut request =
                request.map(|body| axum::body::Body::new(SlowBodyGuard::new(body, grace)));
            request.extensions_mut().insert(activity.clone());
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await?;
                Ok(response.map(|body| axum::body::Body::new(BusyBody::new(body, Some(busy)))))
            }
        },
    ))
}
