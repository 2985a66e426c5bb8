//! API keys, scopes, auth modes, rate limits and the audit trail, against the real binary.
//! The Redis test needs the machine's Redis (`KOPEK_TEST_REDIS`, default
//! redis://127.0.0.1:6379): outside CI it skips, loudly, when none answers; with `CI=true` it
//! must run.

use crate::support::{Server, cli, http, redis_or_skip, serve_refused};
use kopek_proto::kopek::v1 as pb;
use kopek_proto::kopek::v1::ledger_client::LedgerClient;
use kopek_proto::payment::v1 as payment;
use kopek_proto::payment::v1::payment_service_client::PaymentServiceClient;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use tonic::Code;

pub(crate) fn with_key<T>(message: T, key: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(key) = key {
        let value = format!("Bearer {key}").parse().expect("ascii key");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

pub(crate) fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// `kopek keys create` on the server's own data dir, while it runs.
pub(crate) fn create_key(dir: &Path, scope: &str) -> String {
    create_key_with(dir, scope, &[])
}

/// `kopek keys create` with more flags (`--tenant`, `--user`).
pub(crate) fn create_key_with(dir: &Path, scope: &str, extra: &[&str]) -> String {
    let dir = dir.to_str().expect("utf-8 path");
    let args = [&["keys", "create", "--data-dir", dir, "--scope", scope][..], extra].concat();
    let (code, out, err) = cli(&args);
    assert_eq!(code, 0, "keys create {scope} {extra:?}: {err}");
    let token = out.trim().to_owned();
    assert!(token.starts_with("kopek_"), "{out}");
    token
}

pub(crate) fn key_id(token: &str) -> String {
    token.trim_start_matches("kopek_").split('_').next().expect("id").to_owned()
}

pub(crate) fn secured(dir: &Path, extra: &[&str]) -> (Server, String) {
    let mut args = vec!["--auth", "required"];
    args.extend_from_slice(extra);
    let server = Server::start_with(dir, &args);
    let admin = server.admin_key.clone().expect("the first start prints an admin key");
    (server, admin)
}

#[test]
fn auth_off_on_a_listener_others_can_reach_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8");
    let (code, err) = serve_refused(data, "0.0.0.0:0", &["--auth", "off"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--auth off would let anyone who reaches 0.0.0.0:0"), "{err}");
    // Without --auth, a public listener turns auth on (and makes the first admin key).
    let server = Server::start_with(dir.path(), &["--http-listen", "0.0.0.0:0"]);
    assert!(server.admin_key.is_some(), "auth is on by default off loopback");
}

/// (method, path, body, the scope the route needs).
const ROUTES: &[(&str, &str, Option<&str>, &str)] = &[
    ("GET", "/v1/accounts", None, "read"),
    ("GET", "/v1/accounts/alice", None, "read"),
    ("GET", "/v1/accounts/alice/balance", None, "read"),
    ("GET", "/v1/accounts/alice/entries", None, "read"),
    ("GET", "/v1/transfers?idempotency_key=nope", None, "read"),
    ("GET", "/v1/transfers/01ARZ3NDEKTSV4RRFFQ69G5FAV", None, "read"),
    ("GET", "/v1/users/u1", None, "read"),
    ("GET", "/v1/users/u1/spending", None, "read"),
    ("GET", "/v1/events", None, "read"),
    ("GET", "/v1/user/1", None, "read"),
    ("GET", "/v1/transaction/nope", None, "read"),
    ("GET", "/orders/orders/nope", None, "read"),
    ("POST", "/v1/accounts", Some(r#"{"id":"k-acct","currency":"USD"}"#), "write"),
    (
        "POST",
        "/v1/transfers",
        Some(r#"{"kind":"deposit","credit_account_id":"alice","amount":"1.00","currency":"USD"}"#),
        "write",
    ),
    ("POST", "/v1/transfers/batch", Some(r#"{"transfers":[]}"#), "write"),
    ("POST", "/v1/transfers/01ARZ3NDEKTSV4RRFFQ69G5FAV/void", None, "write"),
    ("POST", "/v1/users", Some(r#"{"id":"u-new","name":"N","currency":"USD"}"#), "write"),
    ("POST", "/v1/user", Some(r#"{"name":"N"}"#), "write"),
    ("PATCH", "/v1/accounts/alice", Some(r#"{"status":"active"}"#), "admin"),
    ("GET", "/v1/webhooks", None, "admin"),
    ("POST", "/v1/webhooks", Some(r#"{"url":"http://127.0.0.1:9/hook"}"#), "admin"),
    ("DELETE", "/v1/webhooks/nope", None, "admin"),
];

#[tokio::test]
async fn every_route_and_method_checks_the_key_and_its_scope() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, admin) = secured(dir.path(), &[]);
    let keys: Vec<(&str, String)> = ["read", "write", "gateway"]
        .into_iter()
        .map(|scope| (scope, create_key(dir.path(), scope)))
        .chain([("admin", admin.clone())])
        .collect();
    let rank = |scope: &str| ["read", "write", "gateway", "admin"].iter().position(|s| *s == scope);
    let address = &server.http_address;
    let opened = http(
        address,
        "POST",
        "/v1/accounts",
        &[("Authorization", &bearer(&admin)), ("Idempotency-Key", "open-alice")],
        Some(r#"{"id":"alice","currency":"USD"}"#),
    )
    .await;
    assert_eq!(opened.status, 201, "{}", opened.body);

    for (n, (method, path, body, needs)) in ROUTES.iter().enumerate() {
        let idempotency = format!("scope-{n}-{}", path.len());
        // No key, and a key that is not one: 401 with the error shape and a challenge.
        for authorization in
            [None, Some("Bearer kopek_0000000000000000_".to_owned() + &"0".repeat(64))]
        {
            let mut headers = vec![("Idempotency-Key", idempotency.as_str())];
            if let Some(value) = &authorization {
                headers.push(("Authorization", value));
            }
            let response = http(address, method, path, &headers, *body).await;
            assert_eq!(
                response.status, 401,
                "{method} {path} with {authorization:?}: {}",
                response.body
            );
            assert_eq!(response.header("www-authenticate"), Some("Bearer"));
            let code = if path.starts_with("/orders/") {
                assert_eq!(response.json()["detail"], "Not authenticated");
                continue;
            } else {
                response.json()["error"]["code"].clone()
            };
            assert_eq!(code, "UNAUTHENTICATED", "{method} {path}");
        }
        for (scope, key) in &keys {
            let key_header = bearer(key);
            let headers =
                [("Authorization", key_header.as_str()), ("Idempotency-Key", idempotency.as_str())];
            let response = http(address, method, path, &headers, *body).await;
            if rank(scope) >= rank(needs) {
                assert!(
                    response.status != 401 && response.status != 403,
                    "{method} {path} needs {needs}; a {scope} key got {}: {}",
                    response.status,
                    response.body
                );
            } else {
                assert_eq!(
                    response.status, 403,
                    "{method} {path} needs {needs}; a {scope} key: {}",
                    response.body
                );
                if !path.starts_with("/orders/") {
                    assert_eq!(response.json()["error"]["code"], "PERMISSION_DENIED");
                }
            }
        }
    }
    // Probes and metrics need no key.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(http(address, "GET", path, &[], None).await.status, 200, "{path}");
    }

    // gRPC: the same scopes through the `authorization` metadata.
    let channel = server.channel().await;
    let mut ledger = LedgerClient::new(channel.clone());
    let mut payments = PaymentServiceClient::new(channel.clone());
    for (scope, key) in
        keys.iter().map(|(scope, key)| (Some(*scope), Some(key.as_str()))).chain([(None, None)])
    {
        let expect = |needs: &str, code: Code, what: &str| match scope {
            None => assert_eq!(code, Code::Unauthenticated, "{what} without a key"),
            Some(scope) if rank(scope) >= rank(needs) => assert!(
                code != Code::Unauthenticated && code != Code::PermissionDenied,
                "{what} needs {needs}; a {scope} key got {code:?}"
            ),
            Some(scope) => {
                assert_eq!(code, Code::PermissionDenied, "{what} needs {needs}; a {scope} key")
            }
        };
        let code =
            |result: Result<Code, tonic::Status>| result.unwrap_or_else(|status| status.code());
        let got = ledger
            .get_account(with_key(pb::GetAccountRequest { id: "alice".into() }, key))
            .await
            .map(|_| Code::Ok);
        expect("read", code(got), "GetAccount");
        let got =
            ledger.list_webhooks(with_key(pb::ListWebhooksRequest {}, key)).await.map(|_| Code::Ok);
        expect("admin", code(got), "ListWebhooks");
        let got = ledger
            .update_account(with_key(
                pb::UpdateAccountRequest { id: "alice".into(), ..Default::default() },
                key,
            ))
            .await
            .map(|_| Code::Ok);
        expect("admin", code(got), "UpdateAccount");
        let request = pb::CreateTransfersRequest {
            transfers: vec![crate::support::deposit(&format!("grpc-{scope:?}"), "alice", 100)],
            linked: false,
        };
        let got = ledger.create_transfers(with_key(request, key)).await.map(|_| Code::Ok);
        expect("write", code(got), "CreateTransfers");
        let got = payments
            .get_payment(with_key(payment::GetPaymentRequest { payment_id: "nope".into() }, key))
            .await
            .map(|_| Code::Ok);
        expect("read", code(got), "GetPayment");
    }
    // Health answers without a key.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let serving =
        health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await;
    assert!(serving.is_ok(), "{serving:?}");
}

#[tokio::test]
async fn revoked_keys_stop_working_and_the_first_key_is_shown_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    // This server reads a key again 100 ms after checking it (5 s unless told).
    let (mut server, admin) = secured(dir.path(), &["--key-recheck-ms", "100"]);
    let key = create_key(dir.path(), "read");
    let authorization = bearer(&key);
    let headers = [("Authorization", authorization.as_str())];
    assert_eq!(http(&server.http_address, "GET", "/v1/accounts", &headers, None).await.status, 200);
    let data = dir.path().to_str().expect("utf-8");
    let (code, out, err) = cli(&["keys", "revoke", "--data-dir", data, &key]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("revoked key {}", key_id(&key)));
    // Another process revoked it: this one notices at its next recheck. (That a key is
    // trusted for exactly the period and no longer is kopek-auth's `tests/recheck.rs`, with
    // a clock the test moves.)
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let status = http(&server.http_address, "GET", "/v1/accounts", &headers, None).await.status;
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(Instant::now() < deadline, "the revoked key still works after 8 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (code, _, err) = cli(&["keys", "revoke", "--data-dir", data, &key_id(&key)]);
    assert_eq!(code, 2, "revoking twice is an error");
    assert!(err.contains("revoked already"), "{err}");
    let (code, out, _) = cli(&["keys", "list", "--data-dir", data, "--json"]);
    assert_eq!(code, 0);
    let listed: serde_json::Value = serde_json::from_str(&out).expect("json");
    let listed = listed.as_array().expect("array");
    assert_eq!(listed.len(), 2, "{out}");
    assert!(!out.contains(key.rsplit('_').next().expect("secret")), "list never shows a secret");
    assert!(
        listed.iter().any(|k| k["id"] == key_id(&admin)
            && k["scope"] == "admin"
            && k["revoked_at"].is_null())
    );
    assert!(listed.iter().any(|k| k["id"] == key_id(&key) && !k["revoked_at"].is_null()));

    // Later starts make no new admin key, and the first one still works.
    server.terminate();
    let server = Server::start_with(dir.path(), &["--auth", "required"]);
    assert_eq!(server.admin_key, None);
    let authorization = bearer(&admin);
    let headers = [("Authorization", authorization.as_str())];
    assert_eq!(http(&server.http_address, "GET", "/v1/accounts", &headers, None).await.status, 200);

    // A key bound to a user acts only as that user: never as a gateway or an admin.
    let (code, _, err) =
        cli(&["keys", "create", "--data-dir", data, "--scope", "gateway", "--user", "u1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("scope read or write"), "{err}");
    let (code, _, err) = cli(&["keys", "create", "--data-dir", data, "--scope", "owner"]);
    assert_eq!(code, 2);
    assert!(err.contains("use read, write, gateway or admin"), "{err}");
}

#[tokio::test]
async fn only_a_gateway_key_names_the_user_of_the_http_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, _admin) = secured(dir.path(), &[]);
    let write = bearer(&create_key(dir.path(), "write"));
    let gateway = bearer(&create_key(dir.path(), "gateway"));
    let address = &server.http_address;
    let response = http(
        address,
        "POST",
        "/payments/account",
        &[("Authorization", &write), ("X-User-ID", "7")],
        None,
    )
    .await;
    assert_eq!(response.status, 403, "{}", response.body);
    assert_eq!(response.json(), serde_json::json!({"detail": "Forbidden"}));
    let response =
        http(address, "POST", "/payments/account?user_id=7", &[("Authorization", &write)], None)
            .await;
    assert_eq!(response.status, 403, "the query parameter is held to the same rule");
    let response =
        http(address, "POST", "/payments/account", &[("Authorization", &write)], None).await;
    assert_eq!(response.status, 422, "a key bound to no user must name one: {}", response.body);
    let response = http(
        address,
        "POST",
        "/payments/account",
        &[("Authorization", &gateway), ("X-User-ID", "7")],
        None,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json(), serde_json::json!({"balance": 0}));
}

#[tokio::test]
async fn a_key_over_its_rate_is_refused_on_every_surface() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, _admin) = secured(dir.path(), &["--rate-limit", "0.2", "--rate-limit-burst", "3"]);
    let (http_key, grpc_key, pay_key) = (
        create_key(dir.path(), "read"),
        create_key(dir.path(), "read"),
        create_key(dir.path(), "write"),
    );
    let authorization = bearer(&http_key);
    let headers = [("Authorization", authorization.as_str())];
    for _ in 0..3 {
        assert_eq!(
            http(&server.http_address, "GET", "/v1/accounts", &headers, None).await.status,
            200
        );
    }
    let limited = http(&server.http_address, "GET", "/v1/accounts", &headers, None).await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert_eq!(limited.json()["error"]["code"], "RATE_LIMITED");
    let retry: u64 = limited.header("retry-after").expect("Retry-After").parse().expect("seconds");
    assert!((1..=5).contains(&retry), "a token comes back within 5 s at 0.2/s: {retry}");
    // Other keys have their own buckets; probes are never limited.
    assert_eq!(http(&server.http_address, "GET", "/healthz", &[], None).await.status, 200);

    let mut ledger = LedgerClient::new(server.channel().await);
    for _ in 0..3 {
        let answer = ledger
            .list_accounts(with_key(pb::ListAccountsRequest::default(), Some(&grpc_key)))
            .await;
        assert!(answer.is_ok(), "{answer:?}");
    }
    let status = ledger
        .list_accounts(with_key(pb::ListAccountsRequest::default(), Some(&grpc_key)))
        .await
        .expect_err("the fourth call in a burst of three");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().starts_with("RATE_LIMITED: "), "{}", status.message());

    // The payment contract answers a decline with its RATE_LIMITED code.
    let mut payments = PaymentServiceClient::new(server.channel().await);
    let mut codes = Vec::new();
    for n in 0..4 {
        let request = payment::AuthorizePaymentRequest {
            idempotency_key: format!("pay-{n}"),
            payer_account_id: "nobody".into(),
            payee_account_id: "nobody-else".into(),
            amount_cents: 100,
            currency: "USD".into(),
            description: String::new(),
        };
        let answer = payments.authorize_payment(with_key(request, Some(&pay_key))).await;
        codes.push(
            answer
                .map(|response| response.into_inner().error.map(|error| error.code))
                .map_err(|status| status.code()),
        );
    }
    assert!(
        codes[..3]
            .iter()
            .all(|code| *code != Ok(Some(payment::PaymentErrorCode::RateLimited as i32))),
        "{codes:?}"
    );
    assert_eq!(codes[3], Ok(Some(payment::PaymentErrorCode::RateLimited as i32)), "{codes:?}");
}

#[tokio::test]
async fn two_processes_share_one_limit_through_redis() {
    let Some(redis) = redis_or_skip() else { return };
    // The same key on two ledgers (each adopts it with --admin-key): one bucket in Redis.
    let key = kopek_auth::mint(
        "default",
        kopek_auth::Scope::Admin,
        None,
        "test",
        kopek_core::Timestamp::from_unix_micros(0),
    )
    .expect("mint")
    .token;
    let (first_dir, second_dir) =
        (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let flags = [
        "--auth",
        "required",
        "--admin-key",
        &key,
        "--redis",
        &redis,
        "--rate-limit",
        "0.001",
        "--rate-limit-burst",
        "10",
    ];
    let (first, second) = (
        Server::start_with(first_dir.path(), &flags),
        Server::start_with(second_dir.path(), &flags),
    );
    let authorization = bearer(&key);
    let headers = [("Authorization", authorization.as_str())];
    let mut statuses = Vec::new();
    for _ in 0..8 {
        for server in [&first, &second] {
            statuses.push(
                http(&server.http_address, "GET", "/v1/accounts", &headers, None).await.status,
            );
        }
    }
    let allowed = statuses.iter().filter(|status| **status == 200).count();
    let limited = statuses.iter().filter(|status| **status == 429).count();
    assert_eq!((allowed, limited), (10, 6), "one burst of 10 across both processes: {statuses:?}");
}

#[tokio::test]
async fn the_audit_trail_names_the_key_behind_every_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, admin) = secured(dir.path(), &[]);
    let writer = create_key(dir.path(), "write");
    let address = &server.http_address;
    let as_admin = bearer(&admin);
    let as_writer = bearer(&writer);
    let opened = http(
        address,
        "POST",
        "/v1/accounts",
        &[("Authorization", &as_admin), ("Idempotency-Key", "a1")],
        Some(r#"{"id":"audited","currency":"USD"}"#),
    )
    .await;
    assert_eq!(opened.status, 201, "{}", opened.body);
    let deposited = http(
        address,
        "POST",
        "/v1/transfers",
        &[("Authorization", &as_writer), ("Idempotency-Key", "d1")],
        Some(
            r#"{"kind":"deposit","credit_account_id":"audited","amount":"5.00","currency":"USD"}"#,
        ),
    )
    .await;
    assert_eq!(deposited.status, 201, "{}", deposited.body);
    let transfer_id = deposited.json()["id"].as_str().expect("id").to_owned();
    let mut ledger = LedgerClient::new(server.channel().await);
    let request = pb::CreateTransfersRequest {
        transfers: vec![crate::support::deposit("g1", "audited", 100)],
        linked: false,
    };
    ledger.create_transfers(with_key(request, Some(&writer))).await.expect("gRPC deposit");

    let data = dir.path().to_str().expect("utf-8");
    let (code, out, err) = cli(&["audit", "--data-dir", data, "--key", &key_id(&writer), "--json"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> =
        out.lines().map(|line| serde_json::from_str(line).expect("json line")).collect();
    let events: Vec<(&str, &str)> = lines
        .iter()
        .map(|line| (line["event"].as_str().expect("event"), line["key"].as_str().expect("key")))
        .collect();
    let writer_id = key_id(&writer);
    // The first deposit opens world:USD too: its AccountOpened is the writer's.
    assert_eq!(
        events,
        [
            ("AccountOpened", writer_id.as_str()),
            ("TransferPosted", writer_id.as_str()),
            ("TransferPosted", writer_id.as_str())
        ],
        "{out}"
    );
    assert_eq!(lines[1]["subject"], transfer_id.as_str());
    let (_, everyone, _) = cli(&["audit", "--data-dir", data]);
    assert!(
        everyone.lines().next().is_some_and(
            |line| line.contains(&key_id(&admin)) && line.contains("AccountOpened audited")
        ),
        "{everyone}"
    );
    let (_, later, _) = cli(&["audit", "--data-dir", data, "--since", "2999-01-01T00:00:00Z"]);
    assert_eq!(later, "");
}

pub(crate) async fn post_json(
    address: &str,
    key: &str,
    path: &str,
    idempotency: &str,
    body: &str,
) -> crate::support::HttpResponse {
    let authorization = bearer(key);
    http(
        address,
        "POST",
        path,
        &[("Authorization", &authorization), ("Idempotency-Key", idempotency)],
        Some(body),
    )
    .await
}

pub(crate) async fn get_as(address: &str, key: &str, path: &str) -> crate::support::HttpResponse {
    let authorization = bearer(key);
    http(address, "GET", path, &[("Authorization", &authorization)], None).await
}

#[tokio::test]
async fn a_tenant_sees_and_moves_only_its_own_ledger() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, _admin) = secured(dir.path(), &[]);
    let acme = create_key_with(dir.path(), "admin", &["--tenant", "acme"]);
    let globex = create_key_with(dir.path(), "admin", &["--tenant", "globex"]);
    let address = &server.http_address;

    assert_eq!(
        post_json(address, &acme, "/v1/accounts", "o1", r#"{"id":"acme-1","currency":"USD"}"#)
            .await
            .status,
        201
    );
    assert_eq!(
        post_json(address, &globex, "/v1/accounts", "o1", r#"{"id":"globex-1","currency":"USD"}"#)
            .await
            .status,
        201
    );
    let deposit = post_json(
        address,
        &acme,
        "/v1/transfers",
        "shared-key",
        r#"{"kind":"deposit","credit_account_id":"acme-1","amount":"100.00","currency":"USD"}"#,
    )
    .await;
    assert_eq!(deposit.status, 201, "{}", deposit.body);
    let acme_transfer = deposit.json()["id"].as_str().expect("id").to_owned();
    assert_eq!(
        deposit.json()["debit_account_id"],
        "world:acme:USD",
        "each tenant has its own world account"
    );

    // Reads of the other tenant's account, transfer or key answer "not found".
    for path in [
        "/v1/accounts/acme-1",
        "/v1/accounts/acme-1/balance",
        "/v1/accounts/acme-1/entries",
        "/v1/accounts/world:acme:USD",
    ] {
        let response = get_as(address, &globex, path).await;
        assert_eq!(response.status, 404, "{path}: {}", response.body);
        assert_eq!(response.json()["error"]["code"], "ACCOUNT_NOT_FOUND", "{path}");
    }
    assert_eq!(
        get_as(address, &globex, &format!("/v1/transfers/{acme_transfer}")).await.status,
        404
    );
    let probe = get_as(address, &globex, "/v1/transfers?idempotency_key=shared-key").await;
    assert_eq!(probe.status, 200, "{}", probe.body);
    assert_eq!(probe.json()["transfers"], serde_json::json!([]), "no replay probe");
    let listed = get_as(address, &globex, "/v1/accounts").await.json();
    let ids: Vec<&str> = listed["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .map(|a| a["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["globex-1"]);
    let events = get_as(address, &globex, "/v1/events").await;
    assert!(!events.body.contains("acme"), "another tenant's events: {}", events.body);
    assert!(events.body.contains("globex-1"));

    // Moving the other tenant's money: not found, nothing moves.
    let theft = post_json(address, &globex, "/v1/transfers", "t1", r#"{"debit_account_id":"acme-1","credit_account_id":"globex-1","amount":"1.00","currency":"USD"}"#).await;
    assert_eq!(theft.status, 404, "{}", theft.body);
    assert_eq!(theft.json()["error"]["code"], "ACCOUNT_NOT_FOUND");
    let gift = post_json(
        address,
        &globex,
        "/v1/transfers",
        "t2",
        r#"{"kind":"deposit","credit_account_id":"acme-1","amount":"1.00","currency":"USD"}"#,
    )
    .await;
    assert_eq!(gift.status, 404, "{}", gift.body);
    // The same idempotency key in another tenant is another transfer, not a replay.
    let own = post_json(
        address,
        &globex,
        "/v1/transfers",
        "shared-key",
        r#"{"kind":"deposit","credit_account_id":"globex-1","amount":"7.00","currency":"USD"}"#,
    )
    .await;
    assert_eq!(own.status, 201, "{}", own.body);
    assert_ne!(own.header("idempotent-replayed"), Some("true"));
    assert_ne!(own.json()["id"], acme_transfer.as_str());

    // gRPC: the same walls.
    let mut ledger = LedgerClient::new(server.channel().await);
    let status = ledger
        .get_account(with_key(pb::GetAccountRequest { id: "acme-1".into() }, Some(&globex)))
        .await
        .expect_err("hidden");
    assert_eq!(status.code(), Code::NotFound);
    let request = pb::CreateTransfersRequest {
        transfers: vec![crate::support::post("g-theft", "acme-1", "globex-1", 100)],
        linked: false,
    };
    let results = ledger
        .create_transfers(with_key(request, Some(&globex)))
        .await
        .expect("answered")
        .into_inner()
        .results;
    assert_eq!(crate::support::error_code(&results[0]), Some(pb::ErrorCode::AccountNotFound));
    let lookup = pb::GetTransferRequest {
        lookup: Some(pb::get_transfer_request::Lookup::IdempotencyKey("shared-key".into())),
    };
    let found =
        ledger.get_transfer(with_key(lookup, Some(&globex))).await.expect("its own").into_inner();
    assert_eq!(found.transfer.expect("transfer").credit_account_id, "globex-1");
    // The event stream from the start holds only the tenant's own events.
    let stream = ledger
        .stream_events(with_key(
            pb::StreamEventsRequest { after_sequence: 0, ..Default::default() },
            Some(&globex),
        ))
        .await
        .expect("stream")
        .into_inner();
    let seen: Vec<pb::Event> = tokio_stream::StreamExt::take(stream, 3)
        .timeout(Duration::from_secs(3))
        .take_while(Result::is_ok)
        .filter_map(|item| item.ok().and_then(Result::ok))
        .collect()
        .await;
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|event| event.tenant == "globex"), "{seen:?}");

    // The WebSocket feed from the start: the tenant's own events only, then acme's new
    // transfer never arrives.
    let url = format!("ws://{address}/v1/ws?after=0&access_token={globex}");
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("ws with a key");
    let moved = post_json(
        address,
        &acme,
        "/v1/transfers",
        "later",
        r#"{"kind":"deposit","credit_account_id":"acme-1","amount":"1.00","currency":"USD"}"#,
    )
    .await;
    assert_eq!(moved.status, 201);
    let mut texts = Vec::new();
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_secs(2), socket.next()).await
    {
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            texts.push(text.to_string());
        }
    }
    assert!(texts.len() >= 2, "the tenant's history arrives: {texts:?}");
    // (Its own declined attempts name acme-1, as it sent them; nothing of acme's arrives.)
    assert!(
        texts
            .iter()
            .all(|text| text.contains(r#""tenant":"globex""#)
                && !text.contains(r#""tenant":"acme""#)),
        "{texts:?}"
    );
    assert!(!texts.iter().any(|text| text.contains("later")), "acme's new transfer arrived");
    let refused = tokio_tungstenite::connect_async(format!("ws://{address}/v1/ws")).await;
    assert!(refused.is_err(), "a WebSocket without a key was accepted");

    // Ids belong to their tenant (issue 19, finding 5): globex opens an acme-1 of its own,
    // which is not acme's, and learns nothing of acme's.
    let own =
        post_json(address, &globex, "/v1/accounts", "o2", r#"{"id":"acme-1","currency":"EUR"}"#)
            .await;
    assert_eq!(own.status, 201, "{}", own.body);
    assert_eq!(
        (own.json()["id"].clone(), own.json()["currency"].clone()),
        ("acme-1".into(), "EUR".into())
    );
    let theirs = get_as(address, &globex, "/v1/accounts/acme-1").await.json();
    assert_eq!(
        (theirs["currency"].clone(), theirs["balance"]["posted"].clone()),
        ("EUR".into(), "0.00".into())
    );
    let balance = get_as(address, &acme, "/v1/accounts/acme-1/balance").await.json();
    assert_eq!(balance["balance"]["posted"], "101.00", "acme's acme-1 is untouched: {balance}");
    let account = ledger
        .get_account(with_key(pb::GetAccountRequest { id: "acme-1".into() }, Some(&acme)))
        .await
        .expect("acme's own")
        .into_inner()
        .account
        .expect("account");
    assert_eq!((account.id.as_str(), account.currency.as_str()), ("acme-1", "USD"));
}

#[tokio::test]
async fn a_key_bound_to_a_user_sees_and_moves_only_that_users_accounts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, admin) = secured(dir.path(), &[]);
    let address = &server.http_address;
    for user in ["alice", "bob"] {
        let created = post_json(
            address,
            &admin,
            "/v1/users",
            &format!("u-{user}"),
            &format!(r#"{{"id":"{user}","name":"{user}","currency":"USD"}}"#),
        )
        .await;
        assert_eq!(created.status, 201, "{}", created.body);
        let funded = post_json(address, &admin, "/v1/transfers", &format!("fund-{user}"), &format!(r#"{{"kind":"deposit","credit_account_id":"user:{user}:USD","amount":"50.00","currency":"USD"}}"#)).await;
        assert_eq!(funded.status, 201, "{}", funded.body);
    }
    let alice = create_key_with(dir.path(), "write", &["--user", "alice"]);

    assert_eq!(get_as(address, &alice, "/v1/accounts/user:alice:USD").await.status, 200);
    let hidden = get_as(address, &alice, "/v1/accounts/user:bob:USD").await;
    assert_eq!(hidden.status, 404, "{}", hidden.body);
    let listed = get_as(address, &alice, "/v1/accounts").await.json();
    let ids: Vec<&str> = listed["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .map(|a| a["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["user:alice:USD"]);
    assert_eq!(
        get_as(address, &alice, "/v1/accounts?owner=bob").await.json()["accounts"],
        serde_json::json!([])
    );

    let paid = post_json(address, &alice, "/v1/transfers", "a-pays-b", r#"{"debit_account_id":"user:alice:USD","credit_account_id":"user:bob:USD","amount":"10.00","currency":"USD"}"#).await;
    assert_eq!(paid.status, 201, "paying someone else is fine: {}", paid.body);
    let paid_id = paid.json()["id"].as_str().expect("id").to_owned();
    assert_eq!(get_as(address, &alice, &format!("/v1/transfers/{paid_id}")).await.status, 200);
    let pulled = post_json(address, &alice, "/v1/transfers", "b-pays-a", r#"{"debit_account_id":"user:bob:USD","credit_account_id":"user:alice:USD","amount":"10.00","currency":"USD"}"#).await;
    assert_eq!(pulled.status, 404, "{}", pulled.body);
    assert_eq!(pulled.json()["error"]["code"], "ACCOUNT_NOT_FOUND");
    let minted = post_json(address, &alice, "/v1/transfers", "mint", r#"{"kind":"deposit","credit_account_id":"user:alice:USD","amount":"10.00","currency":"USD"}"#).await;
    assert_eq!(minted.status, 403, "{}", minted.body);
    let bobs = post_json(address, &admin, "/v1/transfers", "b-out", r#"{"kind":"withdrawal","debit_account_id":"user:bob:USD","amount":"1.00","currency":"USD"}"#).await;
    let bobs_id = bobs.json()["id"].as_str().expect("id").to_owned();
    assert_eq!(get_as(address, &alice, &format!("/v1/transfers/{bobs_id}")).await.status, 404);
    assert_eq!(get_as(address, &alice, "/v1/users/bob").await.status, 404);
    assert_eq!(get_as(address, &alice, "/v1/users/bob/spending").await.status, 404);
    assert_eq!(get_as(address, &alice, "/v1/users/alice").await.status, 200);
    assert_eq!(get_as(address, &alice, "/v1/events").await.status, 403);
    assert_eq!(
        post_json(address, &alice, "/v1/users", "u-c", r#"{"id":"carol","name":"c"}"#).await.status,
        403
    );
    let opened = post_json(
        address,
        &alice,
        "/v1/accounts",
        "o-a2",
        r#"{"id":"alice-savings","currency":"USD"}"#,
    )
    .await;
    assert_eq!(opened.status, 201, "{}", opened.body);
    assert_eq!(opened.json()["owner"], "alice", "opened for the key's user");

    // Part B acts as the key's user, and refuses another.
    let authorization = bearer(&alice);
    let balance = http(
        address,
        "GET",
        "/payments/account/balance",
        &[("Authorization", &authorization)],
        None,
    )
    .await;
    assert_eq!(balance.json(), serde_json::json!({"balance": 40}));
    let other = http(
        address,
        "GET",
        "/payments/account/balance",
        &[("Authorization", &authorization), ("X-User-ID", "bob")],
        None,
    )
    .await;
    assert_eq!(other.status, 403);

    let mut ledger = LedgerClient::new(server.channel().await);
    let status = ledger
        .get_account(with_key(pb::GetAccountRequest { id: "user:bob:USD".into() }, Some(&alice)))
        .await
        .expect_err("hidden");
    assert_eq!(status.code(), Code::NotFound);
    let request = pb::CreateTransfersRequest {
        transfers: vec![crate::support::post("g-pull", "user:bob:USD", "user:alice:USD", 100)],
        linked: false,
    };
    // The core refuses it like any other transfer, in the transfer's own result.
    let results = ledger.create_transfers(with_key(request, Some(&alice))).await.expect("answered");
    let refused = &results.into_inner().results[0];
    assert_eq!(crate::support::error_code(refused), Some(pb::ErrorCode::AccountNotFound));
    assert!(refused.transfer.is_none(), "a refusal is not recorded: {refused:?}");
    let status = ledger
        .stream_events(with_key(pb::StreamEventsRequest::default(), Some(&alice)))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn a_key_bound_to_a_user_searches_transfers_through_its_accounts_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    crate::search::ledger(&server).await;
    drop(server);
    let bound = create_key_with(dir.path(), "read", &["--user", "u1"]);
    let admin = create_key_with(dir.path(), "admin", &[]);
    let server = Server::start_with(dir.path(), &["--auth", "required"]);
    let as_key = |key: &str| format!("Bearer {key}");
    let opened = http(
        &server.http_address,
        "POST",
        "/v1/accounts",
        &[("Idempotency-Key", "u1a"), ("Authorization", &as_key(&admin))],
        Some(&serde_json::json!({"id": "u1-wallet", "currency": "USD", "owner": "u1"}).to_string()),
    )
    .await;
    assert_eq!(opened.status, 201, "{}", opened.body);
    let funded = http(
        &server.http_address,
        "POST",
        "/v1/transfers",
        &[("Idempotency-Key", "u1d"), ("Authorization", &as_key(&admin))],
        Some(&serde_json::json!({"kind": "deposit", "credit_account_id": "u1-wallet", "amount": "3.00", "currency": "USD"}).to_string()),
    )
    .await;
    assert_eq!(funded.status, 201, "{}", funded.body);
    crate::support::settled(&server).await;
    let get = |path: &str| {
        let authorization = as_key(&bound);
        let address = server.http_address.clone();
        let path = path.to_owned();
        async move { http(&address, "GET", &path, &[("Authorization", &authorization)], None).await }
    };
    let everything = get("/v1/transfers").await;
    assert_eq!(everything.status, 403, "{}", everything.body);
    assert_eq!(everything.json()["error"]["code"], "PERMISSION_DENIED");
    let others = get("/v1/transfers?account=alice").await;
    assert_eq!(
        (others.status, others.json()["transfers"].clone()),
        (200, serde_json::json!([])),
        "not its user's"
    );
    let own = get("/v1/transfers?account=u1-wallet").await.json();
    let keys: Vec<&str> = own["transfers"]
        .as_array()
        .expect("transfers")
        .iter()
        .map(|t| t["idempotency_key"].as_str().expect("key"))
        .collect();
    assert_eq!(keys, ["u1d"]);
    // With its entries: its own account's, not the other side's balance after.
    let with_entries = get("/v1/transfers?account=u1-wallet&include=entries").await.json();
    let entries = with_entries["transfers"][0]["entries"].as_array().expect("entries").clone();
    let accounts: Vec<&str> =
        entries.iter().map(|e| e["account_id"].as_str().expect("account")).collect();
    assert_eq!(accounts, ["u1-wallet"], "{with_entries}");
    assert_eq!(entries[0]["balance_after"], "3.00");
    // An admin sees both.
    let authorization = as_key(&admin);
    let path = "/v1/transfers?account=u1-wallet&include=entries";
    let headers = [("Authorization", authorization.as_str())];
    let all = http(&server.http_address, "GET", path, &headers, None).await.json();
    assert_eq!(all["transfers"][0]["entries"].as_array().map(Vec::len), Some(2), "{all}");
}
