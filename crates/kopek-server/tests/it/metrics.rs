//! `/metrics` after a scripted load: exact counts for requests, batches, rejections and
//! refusals, the latency histograms, the separate metrics listener, and request ids.

use crate::support::{Server, http};

/// The value of one series (`name{labels}`) in a Prometheus text page.
fn value(page: &str, series: &str) -> Option<f64> {
    kopek_testkit::Scrape::parse(page).get(series)
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

/// The metric families a PromQL expression reads: every `kopek_*` and `process_*` name, with
/// a histogram's `_bucket`/`_sum`/`_count` series named by their family.
fn families_in(expr: &str, page: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|token| token.starts_with("kopek_") || token.starts_with("process_"))
        .map(|name| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|suffix| name.strip_suffix(suffix))
                .find(|base| page.contains(&format!("# TYPE {base} histogram\n")))
                .unwrap_or(name)
                .to_owned()
        })
        .collect()
}

/// Every `expr` in a Grafana dashboard, rows' panels included.
fn dashboard_queries(value: &serde_json::Value, into: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(fields) => {
            for (key, value) in fields {
                match value {
                    serde_json::Value::String(expr) if key == "expr" => into.push(expr.clone()),
                    _ => dashboard_queries(value, into),
                }
            }
        }
        serde_json::Value::Array(items) => {
            items.iter().for_each(|item| dashboard_queries(item, into));
        }
        _ => {}
    }
}

#[tokio::test]
async fn dashboards_and_alert_rules_read_only_metrics_a_live_server_exports() {
    let Some(_nats) = crate::events::nats_or_skip(crate::events::NATS).await else { return };
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy.join("grafana/kopek-dashboard.json")).expect("dashboard"),
    )
    .expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "kopek-overview");
    let mut queries = Vec::new();
    dashboard_queries(&dashboard["panels"], &mut queries);
    assert!(queries.len() >= 20, "the dashboard has its panels: {}", queries.len());

    let rules: serde_norway::Value = serde_norway::from_str(
        &std::fs::read_to_string(deploy.join("prometheus/kopek-alerts.yml")).expect("rules"),
    )
    .expect("the alert rules are YAML");
    let mut alerts = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("every rule is an alert").to_owned();
            assert!(rule["labels"]["severity"].as_str().is_some(), "{name} has a severity");
            assert!(rule["annotations"]["summary"].as_str().is_some(), "{name} has a summary");
            queries.push(rule["expr"].as_str().expect("every rule has an expr").to_owned());
            alerts.push(name);
        }
    }
    for wanted in
        ["KopekOutboxLagHigh", "KopekErrorRateHigh", "KopekBooksDoNotVerify", "KopekQueueSaturated"]
    {
        assert!(alerts.iter().any(|alert| alert == wanted), "{wanted} is among {alerts:?}");
    }

    // A server with a broker, a webhook-free load, and its books checked every second.
    let run = uuid::Uuid::new_v4().simple().to_string();
    let broker = format!(
        "{}?stream=DASH{}&subject_prefix=dash{}",
        crate::events::NATS,
        &run[..8],
        &run[..8]
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let server =
        Server::start_with(dir.path(), &["--broker", &broker, "--verify-every-seconds", "1"]);
    let address = &server.http_address;
    let post = |key: &'static str, body: &'static str, path: &'static str| async move {
        http(address, "POST", path, &[("Idempotency-Key", key)], Some(body)).await.status
    };
    assert_eq!(post("a", r#"{"id":"d-a","currency":"USD"}"#, "/v1/accounts").await, 201);
    let deposit =
        r#"{"kind":"deposit","credit_account_id":"d-a","amount":"1.00","currency":"USD"}"#;
    assert_eq!(post("d", deposit, "/v1/transfers").await, 201);
    let decline = r#"{"debit_account_id":"d-a","credit_account_id":"world:USD","amount":"9.00","currency":"USD"}"#;
    assert_eq!(post("x", decline, "/v1/transfers").await, 402);

    // Wait for a good check of the books and for the consumers and the relay to catch up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let page = loop {
        let page = http(address, "GET", "/metrics", &[], None).await.body;
        let settled = value(&page, "kopek_verify_runs_total{result=\"ok\"}")
            .is_some_and(|n| n >= 1.0)
            && value(&page, "kopek_consumer_sequence{consumer=\"analytics\"}")
                .is_some_and(|n| n >= 3.0)
            && value(&page, "kopek_consumer_lag_seconds{consumer=\"analytics\"}")
                .is_some_and(|s| s < 30.0)
            && page
                .lines()
                .any(|line| line.starts_with("kopek_outbox_lag_events{") && line.ends_with(" 0"));
        if settled {
            break page;
        }
        assert!(std::time::Instant::now() < deadline, "the server did not settle:\n{page}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(value(&page, "kopek_verify_accounts_checked").is_some_and(|n| n >= 2.0), "{page}");
    assert_eq!(value(&page, "kopek_verify_problems"), Some(0.0));
    assert!(value(&page, "kopek_verify_last_ok_timestamp_seconds").is_some_and(|t| t > 1.7e9));
    assert_eq!(value(&page, "kopek_verify_runs_total{result=\"failed\"}"), Some(0.0));

    let mut checked = std::collections::BTreeSet::new();
    for query in &queries {
        let families = families_in(query, &page);
        assert!(!families.is_empty(), "a query that reads no kopek metric: {query}");
        for family in families {
            assert!(
                page.contains(&format!("# TYPE {family} ")),
                "{family} (in `{query}`) is not on /metrics"
            );
            let sampled = page.lines().any(|line| {
                line.strip_prefix(family.as_str())
                    .is_some_and(|rest| rest.starts_with(['{', ' ', '_']))
            });
            assert!(sampled, "{family} (in `{query}`) has no sample on a live server");
            checked.insert(family);
        }
    }
    assert!(checked.len() >= 25, "the dashboards cover the metrics: {checked:?}");
}
