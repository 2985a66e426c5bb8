//! The CLI against a running server: readable lines, JSON, exit codes, SIGTERM.

use crate::support::*;
use kopek_testkit::Scrape;

#[tokio::test]
async fn client_commands_move_money_and_exit_with_the_error_code() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start(dir.path());
    let url = server.grpc_url();
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--addr", url.as_str()]);
        cli(&all)
    };
    let (code, stdout, _) =
        run(&["accounts", "create", "alice", "--currency", "USD", "--owner", "u-1"]);
    assert_eq!((code, stdout.trim()), (0, "opened account alice (USD)"));
    let (code, _, _) =
        run(&["accounts", "create", "bob", "--currency", "usd", "--overdraft-limit", "5.00"]);
    assert_eq!(code, 0);
    let (code, _, stderr) = run(&["accounts", "create", "alice", "--currency", "EUR"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("ACCOUNT_EXISTS"), "{stderr}");

    let (code, stdout, _) = run(&["deposit", "alice", "100.00", "--idempotency-key", "dep-1"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("posted 100.00 USD world:USD -> alice"), "{stdout}");
    let (code, stdout, _) = run(&["deposit", "alice", "100.00", "--idempotency-key", "dep-1"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("replayed"), "{stdout}");
    let (code, _, _) = run(&["transfer", "alice", "bob", "30.50"]);
    assert_eq!(code, 0);
    let (code, _, stderr) = run(&["transfer", "bob", "alice", "1000"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("INSUFFICIENT_FUNDS: balance 35.50 USD is less than 1000.00 USD"),
        "{stderr}"
    );
    let (code, _, stderr) = run(&["withdraw", "alice", "1.001"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("INVALID_AMOUNT"), "{stderr}");
    let (code, stdout, _) = run(&["withdraw", "alice", "9.50", "--json"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON output");
    assert_eq!(json["transfer"]["amount_minor"], 950);
    let (code, stdout, _) = run(&["balance", "alice"]);
    assert_eq!(
        (code, stdout.trim()),
        (0, "alice: posted 60.00 USD, available 60.00 USD, held 0.00 USD")
    );
    let (code, stdout, _) = run(&["balance", "bob", "--json"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON output");
    assert_eq!(
        (json["balance"]["posted_minor"].as_i64(), json["balance"]["available_minor"].as_i64()),
        (Some(3_050), Some(3_550))
    );
    let (code, _, stderr) = run(&["balance", "ghost"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("ACCOUNT_NOT_FOUND"), "{stderr}");

    let data = dir.path().to_str().expect("utf-8 path");
    let (code, stderr) = serve_refused(data, "127.0.0.1:0", &[]);
    assert_eq!(code, 2, "a second server on the same ledger must refuse to start");
    assert!(stderr.contains("in use by another kopek process"), "{stderr}");
    let (code, stdout, _) = cli(&["verify", "--data-dir", data]);
    assert_eq!(
        (code, stdout.contains("ok: the books balance")),
        (0, true),
        "verify runs beside a live server: {stdout}"
    );

    assert!(server.terminate().success(), "SIGTERM drains and exits 0");
    let (code, stdout, _) =
        cli(&["verify", "--json", "--data-dir", dir.path().to_str().expect("utf-8 path")]);
    assert_eq!(code, 0);
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    assert_eq!((report["ok"].as_bool(), report["transfers"].as_u64()), (Some(true), Some(4)));
}

#[test]
fn migrate_creates_the_schema_once_and_a_dead_server_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8 path");
    let (code, stdout, _) = cli(&["migrate", "--data-dir", data]);
    assert_eq!((code, stdout.contains("applied migrations 1")), (0, true), "{stdout}");
    let (code, stdout, _) = cli(&["migrate", "--data-dir", data]);
    assert_eq!((code, stdout.contains("up to date")), (0, true), "{stdout}");
    let (code, _, stderr) =
        cli(&["verify", "--data-dir", dir.path().join("typo").to_str().expect("utf-8 path")]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no ledger found"), "{stderr}");
    assert!(!dir.path().join("typo").exists(), "verify creates nothing");
    let (code, _, stderr) = cli(&["balance", "a", "--addr", "http://127.0.0.1:1"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot reach kopek"), "{stderr}");
    let unreachable = "postgres://kopek@127.0.0.1:1/nowhere";
    let (code, _, stderr) = cli(&["serve", "--database", unreachable, "--data-dir", data]);
    assert_eq!(code, 2, "an unreachable database fails the start clearly");
    assert!(stderr.contains("connect to PostgreSQL"), "{stderr}");
    let (code, _, stderr) = cli(&["verify", "--database", "mysql://somewhere"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("postgres://"), "{stderr}");
}

/// Broker settings that cannot work are refused at start, with the reason, exit 2.
#[test]
fn bad_broker_settings_are_refused_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_str().expect("a UTF-8 path");
    let listen = ["--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"];
    for (extra, says) in [
        (&["--ingest"][..], "ingestion reads commands from a broker"),
        (
            &["--broker", "http://127.0.0.1:1"][..],
            "--broker: must be a nats://, amqp:// or kafka:// URL",
        ),
        (&["--broker", "kafka://127.0.0.1:1?bogus=1"][..], "unknown Kafka broker parameter"),
        (&["--broker", "nats://127.0.0.1:1?stream=a.b"][..], "stream name"),
    ] {
        let mut args = vec!["serve", "--data-dir", data];
        args.extend(listen);
        args.extend(extra);
        let (code, _, stderr) = cli(&args);
        assert_eq!(code, 2, "{extra:?}: {stderr}");
        assert!(stderr.contains(says), "{extra:?}: {stderr}");
    }
}

#[tokio::test]
async fn status_summarises_a_running_server_under_load() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_with(dir.path(), &["--verify-every-seconds", "1"]);
    let address = server.http_address.clone();
    let open = r#"{"id":"busy","currency":"USD"}"#;
    let opened = http(&address, "POST", "/v1/accounts", &[("Idempotency-Key", "o")], Some(open));
    assert_eq!(opened.await.status, 201);
    // Deposits and one decline while status measures.
    let load = {
        let address = address.clone();
        tokio::spawn(async move {
            let deposit =
                r#"{"kind":"deposit","credit_account_id":"busy","amount":"1.00","currency":"USD"}"#;
            let too_much = r#"{"debit_account_id":"busy","credit_account_id":"world:USD","amount":"999999.00","currency":"USD"}"#;
            let started = std::time::Instant::now();
            let mut n = 0;
            while started.elapsed() < std::time::Duration::from_secs(4) {
                let key = format!("load-{n}");
                let body = if n % 10 == 5 { too_much } else { deposit };
                let headers = [("Idempotency-Key", key.as_str())];
                http(&address, "POST", "/v1/transfers", &headers, Some(body)).await;
                n += 1;
            }
            n
        })
    };
    // Status runs once the server has committed some of the load and checked its books (the
    // check runs every second): waited for in the metrics, not for a set time.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let metrics = Scrape::parse(&http(&address, "GET", "/metrics", &[], None).await.body);
        let checked = metrics.get("kopek_verify_runs_total{result=\"ok\"}").unwrap_or(0.0);
        if checked >= 1.0 && metrics.sum("kopek_transfers_total", |_| true) > 0.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no transfer or book check in 15 s");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let url = format!("http://{address}");
    let run = |json: bool| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let mut args = vec!["status", "--addr", url.as_str(), "--interval-seconds", "1.5"];
            if json {
                args.push("--json");
            }
            cli(&args)
        })
    };
    let (code, stdout, stderr) = run(false).await.expect("status ran");
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with(&format!("kopek at {url}: ready\n")), "{stdout}");
    let throughput = stdout.lines().find(|l| l.contains("throughput")).expect("a throughput line");
    let per_second: f64 =
        throughput.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("transfers/s");
    assert!(per_second > 0.0, "the load shows: {stdout}");
    assert!(stdout.contains("declined: INSUFFICIENT_FUNDS "), "{stdout}");
    assert!(stdout.contains(" / 65536, commit p99 "), "{stdout}");
    assert!(stdout.contains("relay       none (no --broker)"), "{stdout}");
    assert!(stdout.contains("consumers   analytics"), "{stdout}");
    assert!(stdout.contains("books       verified"), "{stdout}");
    assert!(stdout.contains("rss "), "{stdout}");
    let sent = load.await.expect("load");
    assert!(sent > 5, "the load ran: {sent}");

    let (code, stdout, _) = run(true).await.expect("status ran");
    assert_eq!(code, 0);
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON status");
    assert_eq!(report["ready"], true);
    assert_eq!(report["queue"]["capacity"], 65536.0);
    assert!(report["books"]["checks_ok"].as_f64().is_some_and(|n| n >= 1.0), "{report}");
    assert_eq!(report["books"]["problems"], 0.0);
    assert!(report["process"]["rss_bytes"].as_f64().is_some_and(|n| n > 1e6), "{report}");

    // Nothing listening: exit 2 with the reason.
    drop(server);
    let (code, _, stderr) = run(false).await.expect("status ran");
    assert_eq!(code, 2);
    assert!(stderr.contains("/readyz"), "{stderr}");
}

#[tokio::test]
async fn json_output_is_the_rest_shape() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let url = server.grpc_url();
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--addr", url.as_str(), "--json"]);
        let (code, stdout, stderr) = cli(&all);
        assert_eq!(code, 0, "{args:?}: {stdout}{stderr}");
        serde_json::from_str::<serde_json::Value>(&stdout).expect("JSON output")
    };
    let rest = |path: String| {
        let address = server.http_address.clone();
        async move {
            let response = http(&address, "GET", &path, &[], None).await;
            assert_eq!(response.status, 200, "{path}: {}", response.body);
            response.json()
        }
    };

    let created = run(&["accounts", "create", "alice", "--currency", "USD"]);
    assert_eq!(created["created"], true);
    assert_eq!(created["account"], rest("/v1/accounts/alice".to_owned()).await);
    assert_eq!(created["account"]["kind"], "user", "{created}");
    assert_eq!(created["account"]["owner"], serde_json::Value::Null, "{created}");
    run(&["accounts", "create", "bob", "--currency", "USD"]);

    let deposit = run(&["deposit", "alice", "25.00", "--idempotency-key", "json-dep"]);
    let id = deposit["transfer"]["id"].as_str().expect("transfer id").to_owned();
    assert_eq!(deposit["transfer"], rest(format!("/v1/transfers/{id}")).await);
    assert_eq!(
        (deposit["transfer"]["status"].as_str(), deposit["transfer"]["kind"].as_str()),
        (Some("posted"), Some("deposit"))
    );
    let moved = run(&["transfer", "alice", "bob", "5.00"]);
    let id = moved["transfer"]["id"].as_str().expect("transfer id").to_owned();
    assert_eq!(moved["transfer"], rest(format!("/v1/transfers/{id}")).await);

    assert_eq!(run(&["accounts", "get", "alice"]), rest("/v1/accounts/alice".to_owned()).await);
    assert_eq!(run(&["balance", "bob"]), rest("/v1/accounts/bob/balance".to_owned()).await);
}
