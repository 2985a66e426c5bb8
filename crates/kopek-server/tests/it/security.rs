//! Regression tests for the holes a black-box attack found (issue 19), each against the real
//! binary with auth required, over REST and gRPC.

use crate::auth::{bearer, create_key, create_key_with, get_as, post_json, secured, with_key};
use crate::support::{cli, deposit, error_code, http};
use futures_util::StreamExt;
use kopek_proto::kopek::v1 as pb;
use kopek_proto::kopek::v1::ledger_client::LedgerClient;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tonic::Code;

/// Finding 1: no key but an admin's gives itself credit. A key bound to a user, and a plain
/// write key, are refused an overdraft limit and a system account on both surfaces, nothing
/// is opened, and no transfer can then pay out of such an account.
#[tokio::test]
async fn only_an_admin_key_opens_accounts_with_credit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, admin) = secured(dir.path(), &[]);
    let address = &server.http_address;
    let created = post_json(
        address,
        &admin,
        "/v1/users",
        "u-ua1",
        r#"{"id":"ua1","name":"ua1","currency":"USD"}"#,
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let bound = create_key_with(dir.path(), "write", &["--user", "ua1"]);
    let writer = create_key_with(dir.path(), "write", &[]);

    let attempts = [
        ("od1", r#"{"id":"od1","currency":"USD","overdraft_limit":"1000000.00"}"#),
        ("od2", r#"{"id":"od2","currency":"USD","overdraft_limit_minor":1}"#),
        ("od3", r#"{"id":"od3","currency":"USD","kind":"system"}"#),
        ("od4", r#"{"id":"od4","currency":"USD","kind":"system","unbounded_overdraft":true}"#),
    ];
    for key in [&bound, &writer] {
        for (id, body) in attempts {
            let refused = post_json(address, key, "/v1/accounts", &format!("k-{id}"), body).await;
            assert_eq!(refused.status, 403, "{id}: {}", refused.body);
            assert_eq!(refused.json()["error"]["code"], "PERMISSION_DENIED", "{id}");
            let missing = get_as(address, &admin, &format!("/v1/accounts/{id}")).await;
            assert_eq!(missing.status, 404, "{id} was opened: {}", missing.body);
        }
    }
    let spent = post_json(
        address,
        &bound,
        "/v1/transfers",
        "spend-od1",
        r#"{"debit_account_id":"od1","credit_account_id":"user:ua1:USD","amount":"5000.00","currency":"USD"}"#,
    )
    .await;
    assert_eq!(spent.status, 404, "{}", spent.body);

    let mut ledger = LedgerClient::new(server.channel().await);
    for key in [&bound, &writer] {
        let accounts = vec![
            pb::NewAccount {
                id: "god1".into(),
                currency: "USD".into(),
                overdraft_limit_minor: 1_000_000_000_000,
                ..Default::default()
            },
            pb::NewAccount {
                id: "gsys".into(),
                currency: "USD".into(),
                kind: pb::AccountKind::System as i32,
                unbounded_overdraft: true,
                ..Default::default()
            },
        ];
        let request = with_key(pb::CreateAccountsRequest { accounts }, Some(key));
        let results = ledger.create_accounts(request).await.expect("answered").into_inner();
        for result in &results.results {
            let code = result.error.as_ref().map(|error| error.code);
            assert_eq!(code, Some(pb::ErrorCode::PermissionDenied as i32), "{result:?}");
            assert!(result.account.is_none(), "{result:?}");
        }
    }
    let request = pb::CreateTransfersRequest {
        transfers: vec![crate::support::post(
            "spend-god1",
            "god1",
            "user:ua1:USD",
            100_000_000_000,
        )],
        linked: false,
    };
    let results = ledger.create_transfers(with_key(request, Some(&bound))).await.expect("answer");
    let result = &results.into_inner().results[0];
    assert_eq!(error_code(result), Some(pb::ErrorCode::AccountNotFound), "{result:?}");

    // An admin key still gives credit.
    let granted = post_json(
        address,
        &admin,
        "/v1/accounts",
        "k-credit",
        r#"{"id":"credit","currency":"USD","overdraft_limit":"100.00"}"#,
    )
    .await;
    assert_eq!(granted.status, 201, "{}", granted.body);
}

/// Finding 3: gRPC `CreateAccounts` honours a key's user binding as REST does: the owner is the
/// key's user when none is named, another owner is refused, and so is a system account.
#[tokio::test]
async fn grpc_opens_accounts_only_for_the_keys_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, admin) = secured(dir.path(), &[]);
    for user in ["ua1", "ua2"] {
        let body = format!(r#"{{"id":"{user}","name":"{user}","currency":"USD"}}"#);
        let created =
            post_json(&server.http_address, &admin, "/v1/users", &format!("u-{user}"), &body).await;
        assert_eq!(created.status, 201, "{}", created.body);
    }
    let bound = create_key_with(dir.path(), "write", &["--user", "ua1"]);
    let mut ledger = LedgerClient::new(server.channel().await);
    let open = |id: &str, owner: &str, kind: pb::AccountKind| pb::NewAccount {
        id: id.into(),
        currency: "USD".into(),
        owner: owner.into(),
        kind: kind as i32,
        ..Default::default()
    };
    let accounts = vec![
        open("theirs", "ua2", pb::AccountKind::User),
        open("ownerless-system", "", pb::AccountKind::System),
        open("mine", "", pb::AccountKind::User),
        open("mine-named", "ua1", pb::AccountKind::User),
    ];
    let request = with_key(pb::CreateAccountsRequest { accounts }, Some(&bound));
    let results = ledger.create_accounts(request).await.expect("answered").into_inner().results;
    let codes: Vec<Option<i32>> =
        results.iter().map(|result| result.error.as_ref().map(|error| error.code)).collect();
    let denied = Some(pb::ErrorCode::PermissionDenied as i32);
    assert_eq!(codes, [denied, denied, None, None], "{results:?}");
    for result in &results[2..] {
        assert_eq!(result.account.as_ref().expect("opened").owner, "ua1", "{result:?}");
    }
    for id in ["theirs", "ownerless-system"] {
        let missing = get_as(&server.http_address, &admin, &format!("/v1/accounts/{id}")).await;
        assert_eq!(missing.status, 404, "{id} was opened: {}", missing.body);
    }
}

/// Finding 2: streams opened before `kopek keys revoke` end once the server notices (at its
/// next key recheck, as unary calls; 100 ms here): `StreamTransfers` and `StreamEvents` with
/// `UNAUTHENTICATED`, `/v1/ws` with a close frame 1008 that says why.
#[tokio::test]
async fn a_revoked_key_ends_its_open_streams() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, admin) = secured(dir.path(), &["--key-recheck-ms", "100"]);
    let address = &server.http_address;
    let opened =
        post_json(address, &admin, "/v1/accounts", "o-acc", r#"{"id":"acc","currency":"USD"}"#)
            .await;
    assert_eq!(opened.status, 201, "{}", opened.body);
    let writer = create_key(dir.path(), "write");
    let mut ledger = LedgerClient::new(server.channel().await);
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    let outbound = tokio_stream::wrappers::ReceiverStream::new(receiver);
    let mut answers = ledger
        .stream_transfers(with_key(outbound, Some(&writer)))
        .await
        .expect("stream opened")
        .into_inner();
    let request = pb::StreamEventsRequest { from_now: true, ..Default::default() };
    let mut events =
        ledger.stream_events(with_key(request, Some(&writer))).await.expect("events").into_inner();
    let url = format!("ws://{address}/v1/ws?access_token={writer}");
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("websocket");

    let deposit = |n: u64| pb::StreamTransfersRequest {
        request_id: n,
        transfers: vec![deposit(&format!("d{n}"), "acc", 100)],
        linked: false,
        compact: false,
    };
    sender.send(deposit(0)).await.expect("send");
    let first = answers.message().await.expect("answer").expect("one");
    assert_eq!(first.results.len(), 1);
    assert!(first.results[0].error.is_none(), "{first:?}");

    let data = dir.path().to_str().expect("utf-8");
    let (code, _, err) = cli(&["keys", "revoke", "--data-dir", data, &writer]);
    assert_eq!(code, 0, "{err}");
    let deadline = Instant::now() + Duration::from_secs(12);
    let mut sent = 1;
    let ended = loop {
        assert!(Instant::now() < deadline, "StreamTransfers still posts 12 s after the revoke");
        if sender.send(deposit(sent)).await.is_ok() {
            sent += 1;
        }
        match tokio::time::timeout(Duration::from_millis(300), answers.message()).await {
            Err(_) | Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => panic!("the stream ended without a status"),
            Ok(Err(status)) => break status,
        }
    };
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    assert!(ended.message().contains("revoked"), "{ended:?}");

    let ended = loop {
        match tokio::time::timeout_at(deadline.into(), events.message()).await {
            Err(_) => panic!("StreamEvents still delivers 12 s after the revoke"),
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => panic!("the event stream ended without a status"),
            Ok(Err(status)) => break status,
        }
    };
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");

    let close = loop {
        match tokio::time::timeout_at(deadline.into(), socket.next()).await {
            Err(_) => panic!("/v1/ws still open 12 s after the revoke"),
            Ok(Some(Ok(Message::Close(frame)))) => break frame.expect("a close frame with why"),
            Ok(Some(Ok(_))) => continue,
            Ok(other) => panic!("the socket ended without a close frame: {other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), 1008, "{close:?}");
    assert_eq!(close.reason.as_str(), "the API key was revoked");
}

/// Finding 6: `/ws/orders/{id}` answers another tenant's order exactly as a missing one: the
/// upgrade, then `{"detail": "Order not found"}`.
#[tokio::test]
async fn another_tenants_order_looks_missing_on_the_order_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, admin) = secured(dir.path(), &[]);
    let address = &server.http_address;
    let acme = bearer(&create_key_with(dir.path(), "gateway", &["--tenant", "acme"]));
    let as_acme = |path: &'static str, body: &'static str| {
        let headers = [("Authorization", acme.as_str()), ("X-User-ID", "42")];
        async move { http(address, "POST", path, &headers, Some(body)).await }
    };
    assert_eq!(as_acme("/payments/account", "{}").await.status, 200);
    let order = as_acme("/orders/orders", r#"{"amount": 100}"#).await;
    assert!(order.status < 300, "{}", order.body);
    let theirs = order.json()["id"].as_str().expect("id").to_owned();

    let mut answers = Vec::new();
    for id in [theirs.as_str(), "00000000-0000-4000-8000-000000000000"] {
        for route in ["/ws/orders", "/orders/ws/orders"] {
            let url = format!("ws://{address}{route}/{id}?access_token={admin}");
            let (mut socket, response) =
                tokio_tungstenite::connect_async(url).await.expect("upgraded");
            let first = tokio::time::timeout(Duration::from_secs(10), socket.next())
                .await
                .expect("in time")
                .expect("a message")
                .expect("ok");
            answers.push((response.status().as_u16(), first.into_text().expect("text")));
        }
    }
    let missing = (101, r#"{"detail":"Order not found"}"#.into());
    assert!(answers.iter().all(|answer| *answer == missing), "{answers:?}");
}

/// Finding 8: the Authorization header takes `Bearer <key>` only; a bare key is refused on
/// both surfaces (a WebSocket's `access_token` is the bare key, as before).
#[tokio::test]
async fn a_key_without_the_bearer_scheme_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, admin) = secured(dir.path(), &[]);
    let bare = [("Authorization", admin.as_str())];
    let refused = http(&server.http_address, "GET", "/v1/accounts", &bare, None).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(refused.body.contains("Bearer"), "{}", refused.body);
    let lower = format!("bearer {admin}");
    let headers = [("Authorization", lower.as_str())];
    let accepted = http(&server.http_address, "GET", "/v1/accounts", &headers, None).await;
    assert_eq!(accepted.status, 200, "the scheme is case-insensitive: {}", accepted.body);

    let mut ledger = LedgerClient::new(server.channel().await);
    let mut request = tonic::Request::new(pb::GetAccountRequest { id: "nope".into() });
    request.metadata_mut().insert("authorization", admin.parse().expect("ascii"));
    let status = ledger.get_account(request).await.expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}

/// A `GetAccountRequest` whose id is raw bytes, so the test can send what no client library
/// would: a string that is not UTF-8.
#[derive(Clone, PartialEq, prost::Message)]
struct RawIdRequest {
    #[prost(bytes = "vec", tag = "1")]
    id: Vec<u8>,
}

/// Finding 8: a message that does not decode (a string that is not UTF-8, a truncated
/// field) is the client's mistake: `INVALID_ARGUMENT`, not `INTERNAL`, on unary calls and on
/// streams.
#[tokio::test]
async fn undecodable_protobuf_is_invalid_argument() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = crate::support::Server::start(dir.path());
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    for id in [vec![0xff, 0xfe, 0x41], vec![0xc3]] {
        grpc.ready().await.expect("ready");
        let path =
            tonic::codegen::http::uri::PathAndQuery::from_static("/kopek.v1.Ledger/GetAccount");
        let codec = kopek_proto::codec::Codec::<RawIdRequest, pb::GetAccountResponse>::default();
        let request = tonic::Request::new(RawIdRequest { id: id.clone() });
        let status = grpc.unary(request, path, codec).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{id:?}: {status:?}");
    }
    // Garbage on a stream: field 2 (transfers) says 100 bytes follow, and 1 does.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Garbage {
        #[prost(bytes = "vec", tag = "2")]
        transfers: Vec<u8>,
    }
    let mut ledger = LedgerClient::new(server.channel().await);
    grpc.ready().await.expect("ready");
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/kopek.v1.Ledger/StreamTransfers");
    let codec = kopek_proto::codec::Codec::<Garbage, pb::StreamTransfersResponse>::default();
    let outbound = tokio_stream::iter([Garbage { transfers: vec![0x0a, 0x64, 0x01] }]);
    let answered = grpc.streaming(tonic::Request::new(outbound), path, codec).await;
    let status = match answered {
        Err(status) => status,
        Ok(response) => {
            let mut stream = response.into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("the stream ended without an error"),
                    Err(status) => break status,
                }
            }
        }
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // The server is unharmed.
    let status =
        ledger.get_account(pb::GetAccountRequest { id: "nope".into() }).await.expect_err("missing");
    assert_eq!(status.code(), Code::NotFound);
}

/// Finding 8: REST refuses amounts with whitespace and effective times outside their window,
/// records nothing, and takes currency codes in any case, as gRPC and the CLI do.
#[tokio::test]
async fn rest_applies_the_input_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = crate::support::Server::start(dir.path());
    let address = &server.http_address;
    let post = |key: &'static str, body: String| async move {
        let headers = [("Idempotency-Key", key)];
        http(address, "POST", "/v1/transfers", &headers, Some(&body)).await
    };
    let headers = [("Idempotency-Key", "open-a")];
    let opened =
        http(address, "POST", "/v1/accounts", &headers, Some(r#"{"id":"a","currency":"usd"}"#))
            .await;
    assert_eq!(opened.status, 201, "{}", opened.body);
    assert_eq!(opened.json()["currency"], "USD");
    let deposit = |amount: &str, extra: &str| {
        format!(
            r#"{{"kind":"deposit","credit_account_id":"a","amount":{amount},"currency":"USD"{extra}}}"#
        )
    };
    for (key, body, code) in [
        ("ws-lead", deposit(r#"" 1.00""#, ""), "INVALID_AMOUNT"),
        ("ws-tail", deposit(r#""1.00\n""#, ""), "INVALID_AMOUNT"),
        (
            "year-1",
            deposit(r#""1.00""#, r#","effective_at":"0001-01-01T00:00:00Z""#),
            "INVALID_ARGUMENT",
        ),
        (
            "far",
            deposit(r#""1.00""#, r#","effective_at":"2999-01-01T00:00:00Z""#),
            "INVALID_ARGUMENT",
        ),
    ] {
        let refused = post(key, body).await;
        assert_eq!(refused.status, 400, "{key}: {}", refused.body);
        assert_eq!(refused.json()["error"]["code"], code, "{key}: {}", refused.body);
        let lookup = format!("/v1/transfers?idempotency_key={key}");
        let recorded = http(address, "GET", &lookup, &[], None).await;
        assert_eq!(recorded.status, 200, "{}", recorded.body);
        assert_eq!(recorded.json()["transfers"], serde_json::json!([]), "{key} was recorded");
    }
    let body = r#"{"kind":"deposit","credit_account_id":"a","amount":"1.00","currency":"usd"}"#;
    let posted = post("fine", body.to_owned()).await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    assert_eq!(posted.json()["currency"], "USD");
}

/// One `GET /healthz` on a new connection; `None` when the server closed it unanswered.
async fn healthz(address: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(address).await.ok()?;
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), socket.read_to_end(&mut raw)).await.ok()?.ok()?;
    String::from_utf8_lossy(&raw).split(' ').nth(1)?.parse().ok()
}

/// Whether the server closed `socket` within `within` (end of stream or a reset).
async fn closed_by_server(socket: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buffer = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, socket.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Opens an HTTP/2 connection to `address`, makes one request on it, keeps it open and quiet,
/// and returns once the server has closed it (panics after 10 s).
async fn idle_connection_closed(address: &str) {
    let tcp = tokio::net::TcpStream::connect(address).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("an HTTP/2 connection");
    let closed = tokio::spawn(connection);
    let request =
        hyper::Request::get(format!("http://{address}/")).body(String::new()).expect("a request");
    // Whatever the answer (this is no gRPC call), the request is over and the connection idle.
    let _answer = sender.send_request(request).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), closed).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection stayed open 10 s");
    drop(sender);
}

/// Finding 4: silent connections, bodies trickled in and idle connections are closed on both
/// listeners, so sockets without a key cannot hold the connection limit; a stream and a
/// WebSocket that are open but quiet are requests in flight, and stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_slow_and_idle_connections_are_closed_and_open_streams_stay() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = crate::support::Server::start_with(
        dir.path(),
        &["--connections-max", "8", "--client-timeout-seconds", "1", "--idle-timeout-seconds", "2"],
    );
    let address = server.http_address.clone();
    let mut ledger = LedgerClient::new(server.channel().await);
    let request = pb::StreamEventsRequest { from_now: true, ..Default::default() };
    let mut events = ledger.stream_events(request).await.expect("events").into_inner();
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{address}/v1/ws")).await.expect("ws");

    // Fill both listeners past their cap with connections that say nothing.
    let mut silent = Vec::new();
    for listener in [&address, &server.grpc_address] {
        for _ in 0..8 {
            silent.push(tokio::net::TcpStream::connect(listener).await.expect("connect"));
        }
    }
    // A body that trickles in a byte every 200 ms.
    let mut trickle = tokio::net::TcpStream::connect(&address).await.expect("connect");
    let head = "POST /v1/accounts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                Idempotency-Key: slow\r\nContent-Length: 1000\r\n\r\n";
    trickle.write_all(head.as_bytes()).await.expect("head");
    let trickling = tokio::spawn(async move {
        for _ in 0..100 {
            if trickle.write_all(b" ").await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    });

    let deadline = Instant::now() + Duration::from_secs(10);
    while healthz(&address).await != Some(200) {
        assert!(Instant::now() < deadline, "/healthz unreachable while silent sockets are open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every silent socket is closed (the gRPC listener's may go a moment after the HTTP
    // one's on a busy machine), and then a new gRPC connection is served.
    for socket in &mut silent {
        assert!(closed_by_server(socket, Duration::from_secs(3)).await, "a silent socket stayed");
    }
    let channel = tonic::transport::Channel::from_shared(server.grpc_url()).expect("url");
    let channel = channel.connect().await.expect("a gRPC connection is accepted again");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let check = tonic_health::pb::HealthCheckRequest { service: String::new() };
    assert_eq!(health.check(check).await.expect("health").into_inner().status, 1, "SERVING");
    assert!(trickling.await.expect("joined"), "a trickled body was still read after 20 s");

    // Quiet for longer than the idle timeout, the stream and the socket still deliver. The
    // test does not wait a set time: it waits for the server to close an HTTP/2 connection
    // that made one request after the stream and the socket went quiet, which the server does
    // once that connection has been idle for the timeout.
    idle_connection_closed(&server.grpc_address).await;
    crate::support::open_accounts(&mut ledger, &["after-quiet"]).await;
    let event = tokio::time::timeout(Duration::from_secs(5), events.message())
        .await
        .expect("in time")
        .expect("the stream is open")
        .expect("an event");
    assert_eq!(event.r#type, "AccountOpened", "{event:?}");
    let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("in time")
        .expect("the socket is open")
        .expect("a message");
    assert!(message.into_text().expect("text").contains("after-quiet"));
}

/// Finding 5 (the derived accounts): a tenant cannot open the accounts kopek derives for
/// another (`orders:<tenant>:<CUR>`, `category:<name>:<CUR>`, `world:`, `fx:`), so another
/// tenant's orders and purchases keep working.
#[tokio::test]
async fn no_tenant_takes_the_accounts_kopek_derives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, _admin) = secured(dir.path(), &[]);
    let address = &server.http_address;
    let acme = create_key_with(dir.path(), "admin", &["--tenant", "acme"]);
    for (n, id) in
        ["orders:tc:USD", "orders:USD", "category:Gadgets:USD", "world:tc:USD", "fx:tc:USD"]
            .iter()
            .enumerate()
    {
        let body = format!(r#"{{"id":"{id}","currency":"USD","kind":"system"}}"#);
        let refused = post_json(address, &acme, "/v1/accounts", &format!("r-{n}"), &body).await;
        assert_eq!(refused.status, 400, "{id}: {}", refused.body);
        assert_eq!(refused.json()["error"]["code"], "INVALID_ARGUMENT", "{id}");
    }
    let tc = bearer(&create_key_with(dir.path(), "gateway", &["--tenant", "tc"]));
    let headers = [("Authorization", tc.as_str()), ("X-User-ID", "7")];
    let opened = http(address, "POST", "/payments/account", &headers, Some("{}")).await;
    assert_eq!(opened.status, 200, "{}", opened.body);
    let topped =
        http(address, "POST", "/payments/account/topup", &headers, Some(r#"{"amount": 5}"#)).await;
    assert_eq!(topped.status, 200, "{}", topped.body);
    let order = http(address, "POST", "/orders/orders", &headers, Some(r#"{"amount": 2}"#)).await;
    let id = order.json()["id"].as_str().expect("order id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = http(address, "GET", &format!("/orders/orders/{id}"), &headers, None).await;
        if status.json()["status"] == "PAID" {
            break;
        }
        assert_ne!(status.json()["status"], "FAILED", "{}", status.body);
        assert!(Instant::now() < deadline, "tc's order was not paid: {}", status.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Finding 5: ids belong to their tenant. Two tenants both open an account `alice` and a user
/// `u42`, and both serve a contract user `b42`; each moves and sees only its own, by name.
#[tokio::test]
async fn two_tenants_use_the_same_ids_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, _admin) = secured(dir.path(), &[]);
    let address = &server.http_address;
    let mut tenants = Vec::new();
    for (tenant, amount, units) in [("acme", "5.00", 2), ("globex", "7.00", 3)] {
        let admin = create_key_with(dir.path(), "admin", &["--tenant", tenant]);
        let body = r#"{"id":"alice","currency":"USD"}"#;
        let opened = post_json(address, &admin, "/v1/accounts", "o-alice", body).await;
        assert_eq!(opened.status, 201, "{tenant}: {}", opened.body);
        let body = r#"{"id":"u42","name":"n"}"#;
        let user = post_json(address, &admin, "/v1/users", "u-42", body).await;
        assert_eq!(user.status, 201, "{tenant}: {}", user.body);
        assert_eq!(user.json()["accounts"][0]["id"], "user:u42:USD", "{tenant}: names, not keys");
        let body = format!(
            r#"{{"kind":"deposit","credit_account_id":"alice","amount":"{amount}","currency":"USD"}}"#
        );
        let deposit = post_json(address, &admin, "/v1/transfers", "d-1", &body).await;
        assert_eq!(deposit.status, 201, "{tenant}: {}", deposit.body);
        assert_eq!(deposit.json()["credit_account_id"], "alice");
        let gateway = bearer(&create_key_with(dir.path(), "gateway", &["--tenant", tenant]));
        let headers = [("Authorization", gateway.as_str()), ("X-User-ID", "b42")];
        let opened = http(address, "POST", "/payments/account", &headers, Some("{}")).await;
        assert_eq!(opened.status, 200, "{tenant}: {}", opened.body);
        let body = format!(r#"{{"amount": {units}}}"#);
        let topped = http(address, "POST", "/payments/account/topup", &headers, Some(&body)).await;
        assert_eq!(topped.status, 200, "{tenant}: {}", topped.body);
        tenants.push((admin, gateway, amount, units));
    }
    for (admin, gateway, amount, units) in &tenants {
        let account = get_as(address, admin, "/v1/accounts/alice").await.json();
        assert_eq!(account["balance"]["posted"], *amount, "{account}");
        let headers = [("Authorization", gateway.as_str()), ("X-User-ID", "b42")];
        let balance = http(address, "GET", "/payments/account/balance", &headers, None).await;
        assert_eq!(balance.json(), serde_json::json!({"balance": units}));
        let listed = get_as(address, admin, "/v1/accounts").await.body;
        assert!(!listed.contains("acme/") && !listed.contains("globex/"), "keys leaked: {listed}");
        let events = get_as(address, admin, "/v1/events").await.body;
        assert!(!events.contains("acme/") && !events.contains("globex/"), "keys leaked: {events}");
        let mut ledger = LedgerClient::new(server.channel().await);
        let request = with_key(pb::ListAccountsRequest::default(), Some(admin));
        let listed = ledger.list_accounts(request).await.expect("listed").into_inner();
        let ids: Vec<&str> = listed.accounts.iter().map(|account| account.id.as_str()).collect();
        assert!(ids.contains(&"alice") && ids.contains(&"user:u42:USD"), "{ids:?}");
        assert!(ids.iter().all(|id| !id.contains('/')), "keys leaked over gRPC: {ids:?}");
        let request = with_key(
            pb::GetBalanceRequest { account_id: "alice".into(), as_of: String::new() },
            Some(admin),
        );
        let balance = ledger.get_balance(request).await.expect("balance").into_inner();
        assert_eq!(balance.account_id, "alice");
    }
}
