//! `kopek bench` on the real binary: each surface and distribution on a small run, with the
//! report's numbers and the check of every balance afterwards; against a running server with
//! `--addr`; on PostgreSQL; and bad options refused. Small runs check that it works, not how
//! fast: throughput is measured by hand and written down in docs/performance.md.

use crate::support::{KOPEK, Server, postgres_or_skip};
use serde_json::Value;
use std::process::Command;

const TRANSFERS: u64 = 1_500;

fn bench(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(KOPEK)
        .arg("bench")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run kopek bench");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs a small bench with `--json` and checks what every run must show.
fn bench_json(args: &[&str]) -> Value {
    let transfers = TRANSFERS.to_string();
    let mut all =
        vec!["--json", "--accounts", "200", "--transfers", &transfers, "--batch-size", "100"];
    all.extend_from_slice(args);
    let (code, out, err) = bench(&all);
    assert_eq!(code, 0, "kopek bench {args:?} failed:\n{out}\n{err}");
    let report: Value = serde_json::from_str(out.trim()).expect("one JSON report");
    assert_eq!(report["accepted"], TRANSFERS, "{report}");
    assert_eq!(report["problems"], Value::Array(Vec::new()), "{report}");
    let rate = report["accepted_per_second"].as_f64().expect("rate");
    assert!(rate > 0.0, "{report}");
    for set in ["batch_latency_ms", "request_latency_ms"] {
        let at = |p: &str| report[set][p].as_f64().expect("latency");
        assert!(0.0 < at("p1") && at("p1") <= at("p50"), "{set}: {report}");
        assert!(at("p50") <= at("p99") && at("p99") <= at("p100"), "{set}: {report}");
    }
    assert!(report["rss_bytes"].as_u64().expect("rss") > 1_000_000, "{report}");
    report
}

#[test]
fn every_surface_moves_what_it_sent_and_the_books_balance() {
    let cases = [
        ("stream", "uniform"),
        ("transactions", "zipf"),
        ("authorize", "hot"),
        ("http", "uniform"),
    ];
    for (surface, distribution) in cases {
        let report = bench_json(&["--surface", surface, "--distribution", distribution]);
        assert_eq!(report["surface"], surface);
        // Our own server, so the books check ran on its store. The transactions contract
        // adds one deposit per user before the load.
        let deposits = if surface == "transactions" { 200 } else { 0 };
        assert_eq!(report["verified"]["ok"], true, "{report}");
        assert_eq!(report["verified"]["transfers"], TRANSFERS + deposits, "{report}");
        assert!(report["datafile_bytes"].as_u64().expect("datafile") > 0, "{report}");
        // One latency per request: a stream request carries 100 transfers.
        let batches = if surface == "stream" { TRANSFERS / 100 } else { TRANSFERS };
        assert_eq!(report["batch_latency_ms"]["samples"], batches, "{surface}: {report}");
    }
}

#[test]
fn the_report_reads_as_documented() {
    let (code, out, err) =
        bench(&["--accounts", "100", "--transfers", "500", "--batch-size", "50", "--seed", "3"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    let starts = [
        "load accepted = ",
        "batch latency p1 = ",
        "request latency p50 = ",
        "query latency p50 = ",
        "rss = ",
    ];
    for (line, start) in lines.iter().zip(starts) {
        assert!(line.starts_with(start), "{line:?} should start with {start:?}:\n{out}");
    }
    assert!(lines[0].ends_with(" tx/s"), "{out}");
    assert!(out.contains("verified: every balance matches the plan; the books balance"), "{out}");
}

#[tokio::test]
async fn a_running_server_is_loaded_with_addr() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let http = format!("http://{}", server.http_address);
    let report = bench_json(&[
        "--addr",
        &server.grpc_url(),
        "--http-addr",
        &http,
        "--surface",
        "http",
        "--concurrency",
        "8",
    ]);
    // No store to check from here: the balances were checked over the API, memory came from
    // the server's /metrics.
    assert_eq!(report["verified"], Value::Null, "{report}");
    assert_eq!(report["datafile_bytes"], Value::Null, "{report}");
    // The same seed twice against one server: a run's ids are its own, nothing replays.
    let stream = ["--addr", &server.grpc_url(), "--http-addr", &http, "--seed", "9"];
    assert_eq!(bench_json(&stream)["accepted"], TRANSFERS);
    assert_eq!(bench_json(&stream)["accepted"], TRANSFERS);
}

#[test]
fn postgres_backend() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(database) = postgres_or_skip(dir.path()) else { return };
    let report = bench_json(&["--database", &database, "--distribution", "zipf"]);
    assert_eq!(report["verified"]["ok"], true, "{report}");
    assert_eq!(report["datafile_bytes"], Value::Null, "{report}");
}

#[test]
fn bad_options_are_refused_before_anything_runs() {
    for (args, says) in [
        (vec!["--batch-size", "2000"], "--batch-size must be 1 to 1024"),
        (vec!["--accounts", "2"], "--accounts must be at least 3"),
        (vec!["--addr", "http://127.0.0.1:1", "--transfers", "10"], "cannot reach kopek"),
    ] {
        let (code, out, err) = bench(&args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
