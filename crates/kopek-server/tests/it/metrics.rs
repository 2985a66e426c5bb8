//! `/metrics` after a scripted load: exact counts for requests, batches, rejections and
//! refusals, the latency histograms, the separate metrics listener, and request ids.

use crate::support::{Server, http};

/// The value of one series (`name{labels}`) in a Prometheus text page.
fn value(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|number| number.trim().parse().ok())
}

#[tokio::test]
async fn metrics_count_a_scripted_load_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(
        dir.path(),
        &["--metrics-listen", "127.0.0.1:0", "--rate-limit", "1000", "--rate-limit-burst", "1000"],
    );
    let address = &server.http_address;
    let post = |key: &'static str, body: &'static str, path: &'static str| async move {
        http(address, "POST", path, &[("Idempotency-Key", key)], Some(body)).await.status
    };
    assert_eq!(post("a", r#"{"id":"m-a","currency":"USD"}"#, "/v1/accounts").await, 201);
    assert_eq!(post("b", r#"{"id":"m-b","currency":"USD"}"#, "/v1/accounts").await, 201);
    for n in 0..3 {
        let key: &'static str = ["d0", "d1", "d2"][n];
        assert_eq!(
            post(
                key,
                r#"{"kind":"deposit","credit_account_id":"m-a","amount":"10.00","currency":"USD"}"#,
                "/v1/transfers"
            )
            .await,
            201
        );
    }
    // Two declines: insufficient funds, and an unknown account.
    assert_eq!(post("x1", r#"{"debit_account_id":"m-b","credit_account_id":"m-a","amount":"1.00","currency":"USD"}"#, "/v1/transfers").await, 402);
    assert_eq!(post("x2", r#"{"debit_account_id":"nobody","credit_account_id":"m-a","amount":"1.00","currency":"USD"}"#, "/v1/transfers").await, 404);
    // A replay is answered, not counted as a new rejection.
    assert_eq!(post("x1", r#"{"debit_account_id":"m-b","credit_account_id":"m-a","amount":"1.00","currency":"USD"}"#, "/v1/transfers").await, 402);
    let ids =
        http(address, "GET", "/v1/accounts/m-a", &[("X-Request-Id", "trace-me-1")], None).await;
    assert_eq!(
        ids.header("x-request-id"),
        Some("trace-me-1"),
        "the caller's request id comes back"
    );
    let fresh = http(address, "GET", "/v1/accounts/m-a", &[], None).await;
    assert!(fresh.header("x-request-id").is_some_and(|id| id.len() == 32), "one is made otherwise");

    // The separate listener serves the same page, and nothing else.
    let metrics_address = server.metrics_address.clone().expect("kopek: metrics listening on ...");
    assert_eq!(http(&metrics_address, "GET", "/v1/accounts", &[], None).await.status, 404);
    let page = http(&metrics_address, "GET", "/metrics", &[], None).await;
    assert_eq!(page.status, 200);
    let page = page.body;
    let requests = |method: &str, status: u16| {
        value(
            &page,
            &format!(
                r#"kopek_requests_total{{method="{method}",status="{status}",surface="http"}}"#
            ),
        )
    };
    assert_eq!(requests("POST /v1/accounts", 201), Some(2.0), "{page}");
    assert_eq!(requests("POST /v1/transfers", 201), Some(3.0));
    assert_eq!(requests("POST /v1/transfers", 402), Some(2.0));
    assert_eq!(requests("POST /v1/transfers", 404), Some(1.0));
    assert_eq!(requests("GET /v1/accounts/{id}", 200), Some(2.0));
    assert_eq!(value(&page, r#"kopek_rejections_total{code="INSUFFICIENT_FUNDS"}"#), Some(1.0));
    assert_eq!(value(&page, r#"kopek_rejections_total{code="ACCOUNT_NOT_FOUND"}"#), Some(1.0));
    // One batch per request here (they came one at a time): 2 accounts, 3 deposits, 2
    // declines and the replay, which the writer answers from the stored record.
    assert_eq!(value(&page, "kopek_batches_total"), Some(8.0));
    assert_eq!(value(&page, "kopek_batch_items_count"), Some(8.0));
    assert_eq!(value(&page, "kopek_batch_items_sum"), Some(8.0));
    assert_eq!(value(&page, "kopek_commit_duration_seconds_count"), Some(8.0));
    assert_eq!(
        value(
            &page,
            r#"kopek_request_duration_seconds_count{method="POST /v1/transfers",surface="http"}"#
        ),
        Some(6.0)
    );
    assert_eq!(value(&page, "kopek_queue_depth"), Some(0.0));
    assert!(value(&page, "process_resident_memory_bytes").is_some_and(|bytes| bytes > 0.0));
    assert_eq!(value(&page, "kopek_store_connections_max"), Some(8.0));

    // Refusals by reason, on a server that requires keys.
    drop(server);
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(dir.path(), &["--auth", "required"]);
    for _ in 0..3 {
        assert_eq!(http(&server.http_address, "GET", "/v1/accounts", &[], None).await.status, 401);
    }
    let bogus = format!("Bearer kopek_{}_{}", "1".repeat(16), "2".repeat(64));
    assert_eq!(
        http(&server.http_address, "GET", "/v1/accounts", &[("Authorization", &bogus)], None)
            .await
            .status,
        401
    );
    let page = http(&server.http_address, "GET", "/metrics", &[], None).await.body;
    assert_eq!(
        value(&page, r#"kopek_refusals_total{reason="missing_key",surface="http"}"#),
        Some(3.0),
        "{page}"
    );
    assert_eq!(
        value(&page, r#"kopek_refusals_total{reason="invalid_key",surface="http"}"#),
        Some(1.0)
    );
}
