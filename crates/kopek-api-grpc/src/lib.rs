//! kopek-api-grpc: the gRPC surface over the engine: `kopek.v1.Ledger`, the contracts existing
//! clients speak (`transaction.TransactionService`, `payment.v1.PaymentService`),
//! `grpc.health.v1.Health` and server reflection (v1 and v1alpha).

pub mod auth;
pub mod convert;
pub mod ledger;
pub mod payment;
pub mod pipeline;
pub mod status;
pub mod transaction;

use kopek_engine::Engine;
use kopek_proto::kopek::v1::ledger_server::LedgerServer;
use kopek_proto::payment::v1::payment_service_server::PaymentServiceServer;
use kopek_proto::transaction::transaction_service_server::TransactionServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Largest gRPC message accepted, by default; `--grpc-message-bytes-max` raises it.
pub const MESSAGE_BYTES_DEFAULT: usize = 4 * 1024 * 1024;
/// The most a message may be configured to.
pub const MESSAGE_BYTES_MAX: usize = 50 * 1024 * 1024;

/// Every gRPC service name kopek serves, as health and reflection report them.
pub const SERVICE_NAMES: &[&str] =
    &["kopek.v1.Ledger", "transaction.TransactionService", "payment.v1.PaymentService"];

#[derive(Clone, Debug)]
pub struct GrpcConfig {
    pub message_bytes_max: usize,
    /// The attempts a redelivered webhook delivery gets.
    pub webhook_max_attempts: u32,
}

impl Default for GrpcConfig {
    fn default() -> GrpcConfig {
        GrpcConfig {
            message_bytes_max: MESSAGE_BYTES_DEFAULT,
            webhook_max_attempts: kopek_outbox::webhooks::NotifierConfig::default().max_attempts,
        }
    }
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
    pub engine: Engine,
    pub feed: kopek_outbox::Feed,
    pub gate: auth::Gate,
}

/// Serves every gRPC service on `listener` until `shutdown` is cancelled, then lets in-flight
/// calls finish; open streams stop reading and end after answering what they read.
pub async fn serve(
    listener: TcpListener,
    Ledger { engine, feed, gate }: Ledger,
    config: GrpcConfig,
    reporter: HealthReporter,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let message_bytes_max = config.message_bytes_max.min(MESSAGE_BYTES_MAX);
    let ledger = LedgerServer::new(ledger::LedgerService::new(
        engine.clone(),
        feed,
        config.webhook_max_attempts,
        shutdown.clone(),
    ))
    .max_decoding_message_size(message_bytes_max)
    .max_encoding_message_size(message_bytes_max);
    let transactions = TransactionServiceServer::new(transaction::TransactionService::new(
        engine.clone(),
        shutdown.clone(),
    ))
    .max_decoding_message_size(message_bytes_max)
    .max_encoding_message_size(message_bytes_max);
    let payments = PaymentServiceServer::new(payment::PaymentService::new(
        engine.clone(),
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
    Server::builder()
        .layer(auth::AuthLayer { gate })
        .add_service(health)
        .add_service(ledger)
        .add_service(transactions)
        .add_service(payments)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled_owned())
        .await?;
    Ok(())
}
