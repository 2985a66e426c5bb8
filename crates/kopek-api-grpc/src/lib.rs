//! kopek-api-grpc: the gRPC surface over the engine: `kopek.v1.Ledger`, the contracts existing
//! clients speak (`transaction.TransactionService`, `payment.v1.PaymentService`),
//! `grpc.health.v1.Health` and server reflection (v1 and v1alpha).

pub mod auth;
pub mod convert;
pub mod incoming;
pub mod ledger;
pub mod payment;
pub mod pipeline;
pub mod status;
pub mod transaction;

use kopek_proto::kopek::v1::ledger_server::LedgerServer;
use kopek_proto::payment::v1::payment_service_server::PaymentServiceServer;
use kopek_proto::transaction::transaction_service_server::TransactionServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Largest gRPC message accepted, by default; `--grpc-message-bytes-max` raises it.
pub const MESSAGE_BYTES_DEFAULT: usize = 4 * 1024 * 1024;
/// The most a message may be configured to.
pub const MESSAGE_BYTES_MAX: usize = 50 * 1024 * 1024;

/// Every gRPC service name kopek serves, as health and reflection report them.
pub const SERVICE_NAMES: &[&str] =
    &["kopek.v1.Ledger", "transaction.TransactionService", "payment.v1.PaymentService"];

/// Open gRPC connections, by default.
pub const CONNECTIONS_MAX: usize = 4_096;
/// Concurrent calls (streams) on one connection.
pub const STREAMS_PER_CONNECTION_MAX: u32 = 1_024;
/// Request metadata (headers) per call, in bytes.
pub const METADATA_BYTES_MAX: u32 = 16 * 1024;

#[derive(Clone, Debug)]
pub struct GrpcConfig {
    pub message_bytes_max: usize,
    /// The attempts a redelivered webhook delivery gets.
    pub webhook_max_attempts: u32,
    /// Which addresses webhook URLs may reach.
    pub webhook_targets: kopek_events::targets::Targets,
    pub connections_max: usize,
    /// The time a connection gets to start a call, and may then go without one in flight.
    pub connection_limits: kopek_net::ConnectionLimits,
    /// Serve over TLS (and verify client certificates, if it says so).
    pub tls: Option<ServerTlsConfig>,
}

/// TLS from PEM files; with `client_ca`, every client must present a certificate it signed
/// (mutual TLS).
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
    client_ca: Option<&std::path::Path>,
) -> Result<ServerTlsConfig, String> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|error| format!("read {}: {error}", path.display()))
    };
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    if let Some(ca) = client_ca {
        config =
            config.client_ca_root(Certificate::from_pem(read(ca)?)).client_auth_optional(false);
    }
    Ok(config.timeout(std::time::Duration::from_secs(10)))
}

/// Reports SERVING for `""` and every service, or NOT_SERVING for all while draining.
pub async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in SERVICE_NAMES {
        reporter.set_service_status(*name, status).await;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("build reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("serve gRPC: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Ends every open health `Watch` stream (their status senders go away), so draining does not
/// wait on them. Call it last, just before the listener stops.
pub async fn close_health(reporter: &HealthReporter) {
    let mut reporter = reporter.clone();
    reporter.clear_service_status("").await;
    for name in SERVICE_NAMES {
        reporter.clear_service_status(name).await;
    }
}

/// What the services answer from: the write path, the event feed, and who may call.
pub struct Ledger {
    /// The front door to the write path (the engine and the rates it prices with).
    pub intake: kopek_intake::Intake,
    pub feed: kopek_events::Feed,
    pub gate: auth::Gate,
}

/// Serves every gRPC service on `listener` until `shutdown` is cancelled, then lets in-flight
/// calls finish; open streams stop reading and end after answering what they read.
pub async fn serve(
    listener: TcpListener,
    Ledger { intake, feed, gate }: Ledger,
    config: GrpcConfig,
    reporter: HealthReporter,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let message_bytes_max = config.message_bytes_max.min(MESSAGE_BYTES_MAX);
    let ledger = LedgerServer::new(ledger::LedgerService::new(
        intake.clone(),
        feed,
        config.webhook_max_attempts,
        config.webhook_targets,
        shutdown.clone(),
    ))
    .max_decoding_message_size(message_bytes_max)
    .max_encoding_message_size(message_bytes_max);
    let transactions = TransactionServiceServer::new(transaction::TransactionService::new(
        intake.clone(),
        shutdown.clone(),
    ))
    .max_decoding_message_size(message_bytes_max)
    .max_encoding_message_size(message_bytes_max);
    let payments = PaymentServiceServer::new(payment::PaymentService::new(
        intake.clone(),
        gate.limiter.clone(),
    ))
    .max_decoding_message_size(message_bytes_max)
    .max_encoding_message_size(message_bytes_max);
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(kopek_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    set_health(&reporter, ServingStatus::Serving).await;
    let mut builder = Server::builder();
    if let Some(tls) = config.tls.clone() {
        builder = builder.tls_config(tls)?;
    }
    builder
        .max_concurrent_streams(STREAMS_PER_CONNECTION_MAX)
        .http2_max_header_list_size(METADATA_BYTES_MAX)
        // Dead peers are noticed and their connections closed.
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .layer(auth::AuthLayer { gate })
        .add_service(health)
        .add_service(ledger)
        .add_service(transactions)
        .add_service(payments)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(
            incoming::limited(listener, config.connections_max, config.connection_limits),
            shutdown.cancelled_owned(),
        )
        .await?;
    Ok(())
}
