//! Webhooks against receivers the test runs on loopback: deliveries are signed, retried with
//! the configured backoff, dead-lettered after the last attempt, and sent again by hand.

use crate::support::*;
use hmac::{Hmac, Mac};
use kopek_proto::kopek::v1 as pb;
use serde_json::Value;
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request a receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HashMap<String, String>,
    pub body: String,
}

/// A webhook receiver: answers 500 to the first `failures` requests of each event, then 200
/// (or 503 to everything while `refuse` is set), and keeps every request.
pub struct Receiver {
    pub address: String,
    received: Arc<Mutex<Vec<Received>>>,
    refuse: Arc<AtomicBool>,
}

impl Receiver {
    pub async fn start(failures: usize) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let refuse = Arc::new(AtomicBool::new(false));
        let (log, refusing) = (received.clone(), refuse.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                let (log, refusing) = (log.clone(), refusing.clone());
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut socket).await else { return };
                    let event = request.headers.get("kopek-event-id").cloned().unwrap_or_default();
                    let seen = {
                        let mut log = log.lock().expect("log");
                        log.push(request);
                        log.iter()
                            .filter(|earlier| earlier.headers.get("kopek-event-id") == Some(&event))
                            .count()
                    };
                    let status = if refusing.load(Ordering::SeqCst) {
                        "503 Service Unavailable"
                    } else if seen <= failures {
                        "500 Internal Server Error"
                    } else {
                        "200 OK"
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
        Receiver { address: format!("http://{address}/hook"), received, refuse }
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().expect("log").clone()
    }
}

async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<Received> {
    let mut raw = Vec::new();
    let mut buffer = [0u8; 8192];
    let head_end = loop {
        let read = socket.read(&mut buffer).await.ok()?;
        if read == 0 {
            return None;
        }
        raw.extend_from_slice(&buffer[..read]);
        if let Some(end) = raw.windows(4).position(|window| window == b"\r\n\r\n") {
            break end;
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let headers: HashMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = raw[head_end + 4..].to_vec();
    while body.len() < length {
        let read = socket.read(&mut buffer).await.ok()?;
        if read == 0 {
            return None;
        }
        body.extend_from_slice(&buffer[..read]);
    }
    Some(Received { headers, body: String::from_utf8_lossy(&body).into_owned() })
}

/// Checks `Kopek-Signature` the way a receiver would.
pub fn signature_verifies(secret: &str, received: &Received) -> bool {
    let Some(header) = received.headers.get("kopek-signature") else { return false };
    let Some((t, v1)) = header.split_once(',') else { return false };
    let (Some(t), Some(v1)) = (t.strip_prefix("t="), v1.strip_prefix("v1=")) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{t}.{}", received.body).as_bytes());
    let expected: String =
        mac.finalize().into_bytes().iter().map(|byte| format!("{byte:02x}")).collect();
    expected == v1
}

async fn get_json(server: &Server, path: &str) -> Value {
    let response = http(&server.http_address, "GET", path, &[], None).await;
    assert_eq!(response.status, 200, "{path}: {}", response.body);
    response.json()
}

/// Waits until `check` holds for the JSON at `path`.
async fn until(server: &Server, path: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value = get_json(server, path).await;
        if check(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: {value}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn millis_between(earlier: &Value, later: &Value) -> i64 {
    let at = |value: &Value| {
        let text = value["at"].as_str().expect("at");
        kopek_core::Timestamp::parse_rfc3339(text).expect("time").as_unix_micros()
    };
    (at(later) - at(earlier)) / 1_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_with_backoff_dead_lettered_and_redelivered() {
    let flaky = Receiver::start(2).await;
    let refusing = Receiver::start(0).await;
    refusing.refuse.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_with(
        dir.path(),
        &["--webhook-backoff-ms", "200", "--webhook-max-attempts", "3"],
    );
    let secret = "a-secret-of-at-least-16-bytes";
    let body = serde_json::json!({"url": flaky.address, "event_types": ["TransferPosted"], "secret": secret}).to_string();
    let key = [("Idempotency-Key", "hook-a")];
    let created = http(&server.http_address, "POST", "/v1/webhooks", &key, Some(&body)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let hook_a = created.json()["id"].as_str().expect("id").to_owned();
    assert_eq!(created.json()["secret"], secret);
    let again = http(&server.http_address, "POST", "/v1/webhooks", &key, Some(&body)).await;
    assert_eq!((again.status, again.json()["id"].as_str()), (201, Some(hook_a.as_str())));
    assert_eq!(again.header("Idempotent-Replayed"), Some("true"));
    let bad = serde_json::json!({"url": "ftp://x", "event_types": []}).to_string();
    let refused = http(
        &server.http_address,
        "POST",
        "/v1/webhooks",
        &[("Idempotency-Key", "bad")],
        Some(&bad),
    )
    .await;
    assert_eq!(refused.status, 400, "{}", refused.body);

    let mut client = server.client().await;
    let hook_b = client
        .create_webhook(pb::CreateWebhookRequest {
            idempotency_key: "hook-b".to_owned(),
            url: refusing.address.clone(),
            event_types: Vec::new(),
            secret: String::new(),
        })
        .await
        .expect("create over gRPC")
        .into_inner();
    assert!(hook_b.created);
    let hook_b = hook_b.webhook.expect("webhook");
    assert!(hook_b.secret.starts_with("whsec_"), "kopek made a secret");

    open_accounts(&mut client, &["wh-a", "wh-b"]).await;
    one(&mut client, deposit("wh-d", "wh-a", 500)).await;

    // A: one TransferPosted, refused twice, then delivered on the third attempt.
    let deliveries_a = format!("/v1/webhooks/{hook_a}/deliveries");
    let list = until(&server, &deliveries_a, "A delivered", |list| {
        list["deliveries"][0]["status"] == "delivered"
    })
    .await;
    assert_eq!(list["deliveries"].as_array().expect("list").len(), 1, "only TransferPosted");
    let delivery = &list["deliveries"][0];
    assert_eq!(delivery["event_type"], "TransferPosted");
    assert_eq!(delivery["attempts"], 3);
    let id = delivery["id"].as_str().expect("delivery id");
    let detail = get_json(&server, &format!("{deliveries_a}/{id}")).await;
    let log = detail["attempt_log"].as_array().expect("attempt log").clone();
    let codes: Vec<i64> =
        log.iter().map(|attempt| attempt["status_code"].as_i64().unwrap_or(0)).collect();
    assert_eq!(codes, [500, 500, 200]);
    // The waits follow the schedule: between half and all of 200 ms, then of 400 ms.
    assert!(millis_between(&log[0], &log[1]) >= 100, "{log:?}");
    assert!(millis_between(&log[1], &log[2]) >= 200, "{log:?}");
    let requests = flaky.requests();
    assert_eq!(requests.len(), 3);
    for request in &requests {
        assert!(signature_verifies(secret, request), "{request:?}");
        assert!(!signature_verifies("another-secret-16b", request));
        let document: Value = serde_json::from_str(&request.body).expect("document");
        assert_eq!(document["type"], "TransferPosted");
        assert_eq!(
            request.headers.get("kopek-event-id").map(String::as_str),
            document["id"].as_str()
        );
    }
    // The receiver drops repeats by event id: three requests, one event.
    let events: std::collections::HashSet<_> =
        requests.iter().map(|request| request.headers["kopek-event-id"].clone()).collect();
    assert_eq!(events.len(), 1);

    // B: every event (three AccountOpened, one TransferPosted), each dead after 3 attempts.
    let deliveries_b = format!("/v1/webhooks/{}/deliveries", hook_b.id);
    let list = until(&server, &deliveries_b, "B dead-lettered", |list| {
        let deliveries = list["deliveries"].as_array().cloned().unwrap_or_default();
        deliveries.len() == 4 && deliveries.iter().all(|delivery| delivery["status"] == "dead")
    })
    .await;
    for delivery in list["deliveries"].as_array().expect("list") {
        assert_eq!(delivery["attempts"], 3);
        assert_eq!(delivery["last_status_code"], 503);
    }
    assert_eq!(refusing.requests().len(), 12);

    // The receiver is fixed; one delivery sent again by hand arrives.
    refusing.refuse.store(false, Ordering::SeqCst);
    let dead = list["deliveries"][0]["id"].as_str().expect("id").to_owned();
    let redelivered = client
        .redeliver_webhook(pb::RedeliverWebhookRequest {
            webhook_id: hook_b.id.clone(),
            delivery_id: dead.clone(),
        })
        .await
        .expect("redeliver")
        .into_inner()
        .delivery
        .expect("delivery");
    assert_eq!(redelivered.status, "pending");
    until(&server, &format!("{deliveries_b}/{dead}"), "redelivered", |delivery| {
        delivery["status"] == "delivered"
    })
    .await;
    let listed = client
        .list_webhook_deliveries(pb::ListWebhookDeliveriesRequest {
            webhook_id: hook_b.id.clone(),
            limit: 0,
        })
        .await
        .expect("list")
        .into_inner();
    let fixed = listed.deliveries.iter().find(|delivery| delivery.id == dead).expect("delivery");
    assert_eq!((fixed.attempts, fixed.attempt_log.len()), (4, 4));
    assert_eq!(fixed.attempt_log[3].status_code, 200);

    // Deleted: gone from the list, and its route answers 404.
    let deleted =
        http(&server.http_address, "DELETE", &format!("/v1/webhooks/{hook_a}"), &[], None).await;
    assert_eq!(deleted.status, 204);
    let gone =
        http(&server.http_address, "GET", &format!("/v1/webhooks/{hook_a}"), &[], None).await;
    assert_eq!(gone.status, 404);
    // Its idempotency key stays spent: the same key again is a reuse, not a new webhook.
    let again = http(&server.http_address, "POST", "/v1/webhooks", &key, Some(&body)).await;
    assert_eq!(again.status, 422, "{}", again.body);
    let listed = client.list_webhooks(pb::ListWebhooksRequest {}).await.expect("list").into_inner();
    let ids: Vec<&str> = listed.webhooks.iter().map(|hook| hook.id.as_str()).collect();
    assert_eq!(ids, [hook_b.id.as_str()]);
    assert!(listed.webhooks[0].secret.is_empty(), "the secret is shown only at creation");
}

/// Regression for issue 19, finding 7: by default a webhook reaches only public addresses.
/// Loopback, private, link-local and metadata URLs are refused at subscription on both
/// surfaces, and a name that resolves inward (the machine's own name: DNS rebinding looks the
/// same) is refused at delivery, after resolution, so the receiver behind it gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_reach_only_public_addresses_by_default() {
    let receiver = Receiver::start(0).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_with_env(
        dir.path(),
        &["--webhook-max-attempts", "1"],
        &[("KOPEK_WEBHOOKS_ALLOW_PRIVATE_TARGETS", "false")],
    );
    let internal = [
        receiver.address.as_str(),
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:9/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.1/hook",
        "http://[::1]:9/hook",
        "http://[::ffff:127.0.0.1]:9/hook",
    ];
    for (n, url) in internal.iter().enumerate() {
        let body = serde_json::json!({"url": url}).to_string();
        let key = format!("internal-{n}");
        let refused = http(
            &server.http_address,
            "POST",
            "/v1/webhooks",
            &[("Idempotency-Key", &key)],
            Some(&body),
        )
        .await;
        assert_eq!(refused.status, 400, "{url}: {}", refused.body);
        assert!(refused.body.contains("public address"), "{url}: {}", refused.body);
    }
    let mut client = server.client().await;
    let status = client
        .create_webhook(pb::CreateWebhookRequest {
            idempotency_key: "grpc-internal".into(),
            url: "http://169.254.169.254/".into(),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let host = host.trim();
    let resolved: Vec<_> =
        tokio::net::lookup_host((host, 0)).await.expect("the machine's name resolves").collect();
    assert!(
        resolved.iter().all(|address| address.ip().is_loopback()),
        "this test needs the machine's name to resolve to loopback: {resolved:?}"
    );
    let port = receiver.address.rsplit(':').next().expect("port");
    let url = format!("http://{host}:{port}");
    let body = serde_json::json!({"url": url}).to_string();
    let created = http(
        &server.http_address,
        "POST",
        "/v1/webhooks",
        &[("Idempotency-Key", "name")],
        Some(&body),
    )
    .await;
    assert_eq!(created.status, 201, "a name is resolved at delivery: {}", created.body);
    let hook = created.json()["id"].as_str().expect("id").to_owned();
    open_accounts(&mut client, &["hooked"]).await;
    let list = until(&server, &format!("/v1/webhooks/{hook}/deliveries"), "refused", |list| {
        list["deliveries"][0]["status"] == "dead"
    })
    .await;
    let error = list["deliveries"][0]["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("no public address"), "{list}");
    assert!(receiver.requests().is_empty(), "the delivery reached loopback");
}
