//! gRPC health for every service name, reflection v1 and v1alpha, and the HTTP probes.

use crate::support::*;
use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn health_reports_serving_for_every_service_and_reflection_lists_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let mut health = HealthClient::new(server.channel().await);
    for service in
        ["", "kopek.v1.Ledger", "transaction.TransactionService", "payment.v1.PaymentService"]
    {
        let response =
            health.check(HealthCheckRequest { service: service.to_owned() }).await.expect("health");
        assert_eq!(response.into_inner().status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest { service: "no.Such".to_owned() })
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let expected = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "kopek.v1.Ledger",
        "payment.v1.PaymentService",
        "transaction.TransactionService",
    ];
    {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let mut client = ServerReflectionClient::new(server.channel().await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("reflection")
            .into_inner();
        let response = responses.next().await.expect("one response").expect("ok");
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("not a service list")
        };
        let mut names: Vec<String> = list.service.into_iter().map(|service| service.name).collect();
        names.sort();
        assert_eq!(names, expected);
    }
    {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let mut client = ServerReflectionClient::new(server.channel().await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("reflection")
            .into_inner();
        let response = responses.next().await.expect("one response").expect("ok");
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("not a service list")
        };
        let mut names: Vec<String> = list.service.into_iter().map(|service| service.name).collect();
        names.sort();
        assert_eq!(names, expected);
    }
}

#[tokio::test]
async fn http_probes_answer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    for (path, body) in [("/healthz", "ok\n"), ("/readyz", "ready\n")] {
        let (status, text) = http_get(&server.http_address, path).await;
        assert_eq!((status, text.as_str()), (200, body), "{path}");
    }
}

/// A minimal HTTP/1.1 GET, enough for the probes.
async fn http_get(address: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(address).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    socket.read_to_string(&mut response).await.expect("read");
    let status =
        response.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("status line");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

#[tokio::test]
async fn draining_reports_not_serving_then_ends_health_watches() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A long drain allowance: an open Watch must not hold the shutdown for it.
    let mut server = Server::start_with(
        dir.path(),
        &["--shutdown-timeout-seconds", "120", "--shutdown-grace-seconds", "2"],
    );
    let mut health = HealthClient::new(server.channel().await);
    let mut watch = health
        .watch(HealthCheckRequest { service: String::new() })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.next().await.expect("a status").expect("ok");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let exited = tokio::task::spawn_blocking(move || server.terminate());
    let next = watch.next().await.expect("a status").expect("ok");
    assert_eq!(next.status, ServingStatus::NotServing as i32, "NOT_SERVING while draining");
    let rest: Vec<_> = watch.collect().await;
    assert!(rest.iter().all(Result::is_ok), "the watch ends cleanly: {rest:?}");
    assert!(exited.await.expect("join").success());
}
