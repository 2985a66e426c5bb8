//! `kopek status`: one screen about a running server, from what it serves anyway: `/readyz`
//! (health and relays) and `/metrics` read twice, `--interval` apart, for rates.

use crate::cli::StatusArgs;
use kopek_testkit::Scrape;
use serde_json::{Value, json};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The value of `label` in a `{a="x",b="y"}` label set.
fn label<'a>(labels: &'a str, label: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{label}=\""))? + label.len() + 2;
    let rest = &labels[start..];
    Some(&rest[..rest.find('"')?])
}

/// A gRPC status or an HTTP status that means the server failed, not the caller.
fn server_error(status: &str) -> bool {
    status.starts_with('5') || matches!(status, "Internal" | "Unknown" | "DataLoss" | "Unavailable")
}

/// The `q` quantile of a histogram over the interval, from bucket counts before and after,
/// over all its series (every route, every surface): the counts are summed by bucket first.
fn quantile(before: &Scrape, after: &Scrape, name: &str, q: f64) -> Option<f64> {
    let bucket = format!("{name}_bucket");
    let mut by_bound: Vec<(f64, f64)> = Vec::new();
    for (labels, count) in after.family(&bucket) {
        let Some(bound) = label(labels, "le") else { continue };
        let bound = if bound == "+Inf" { f64::INFINITY } else { bound.parse().unwrap_or(f64::NAN) };
        if bound.is_nan() {
            continue;
        }
        let earlier = before.get(&format!("{bucket}{labels}")).unwrap_or(0.0);
        match by_bound.iter_mut().find(|(known, _)| *known == bound) {
            Some((_, total)) => *total += count - earlier,
            None => by_bound.push((bound, count - earlier)),
        }
    }
    let mut buckets = by_bound;
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut previous = (0.0, 0.0);
    for (bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(previous.0);
            }
            // Linear within the bucket, as Prometheus' histogram_quantile does.
            let within =
                if count > previous.1 { (rank - previous.1) / (count - previous.1) } else { 1.0 };
            return Some(previous.0 + (bound - previous.0) * within);
        }
        previous = (bound, count);
    }
    None
}

fn milliseconds(seconds: Option<f64>) -> String {
    seconds.map_or_else(|| "-".to_owned(), |seconds| format!("{:.1} ms", seconds * 1e3))
}

fn ago(seconds: f64) -> String {
    let seconds = seconds.max(0.0) as u64;
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3600 => format!("{} min", seconds / 60),
        _ => format!("{} h {} min", seconds / 3600, seconds % 3600 / 60),
    }
}

async fn get(client: &reqwest::Client, url: &str) -> Result<(u16, String), String> {
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|error| format!("GET {url}: {}", error.without_url()))?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|error| format!("GET {url}: {error}"))?;
    Ok((status, body))
}

/// Prints the summary; exit 0 when the server is ready, 1 when it answers but is not ready,
/// 2 when it cannot be reached.
pub async fn run(args: StatusArgs) -> ExitCode {
    match summary(&args).await {
        Ok((ready, report, text)) => {
            if args.json {
                println!("{report}");
            } else {
                print!("{text}");
            }
            ExitCode::from(if ready { 0 } else { 1 })
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

async fn summary(args: &StatusArgs) -> Result<(bool, Value, String), String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|error| format!("an HTTP client: {error}"))?;
    let base = args.addr.trim_end_matches('/');
    let metrics_url =
        format!("{}/metrics", args.metrics_addr.as_deref().unwrap_or(base).trim_end_matches('/'));
    let (ready_status, ready_body) = get(&client, &format!("{base}/readyz")).await?;
    let started = Instant::now();
    let (status, first) = get(&client, &metrics_url).await?;
    if status != 200 {
        return Err(format!("GET {metrics_url}: HTTP {status}"));
    }
    let interval = if args.interval_seconds.is_finite() {
        args.interval_seconds.clamp(0.1, 3_600.0)
    } else {
        1.0
    };
    tokio::time::sleep(Duration::from_secs_f64(interval)).await;
    let (_, second) = get(&client, &metrics_url).await?;
    let seconds = started.elapsed().as_secs_f64();
    let (before, after) = (Scrape::parse(&first), Scrape::parse(&second));
    let rate = |name: &str, keep: &dyn Fn(&str) -> bool| {
        ((after.sum(name, keep) - before.sum(name, keep)) / seconds).max(0.0)
    };
    let everything = |_: &str| true;

    let ready = ready_status == 200;
    let health = ready_body.lines().next().unwrap_or_default().to_owned();
    let relays: Vec<String> =
        ready_body.lines().skip(1).filter(|line| !line.is_empty()).map(str::to_owned).collect();
    let transfers = rate("kopek_transfers_total", &everything);
    let requests = rate("kopek_requests_total", &everything);
    let errors =
        rate("kopek_requests_total", &|labels| label(labels, "status").is_some_and(server_error));
    let mut rejections: Vec<(String, f64)> = after
        .family("kopek_rejections_total")
        .filter_map(|(labels, now)| {
            let code = label(labels, "code")?.to_owned();
            let earlier = before.get(&format!("kopek_rejections_total{labels}")).unwrap_or(0.0);
            Some((code, (now - earlier) / seconds)).filter(|(_, rate)| *rate > 0.0)
        })
        .collect();
    rejections.sort_by(|a, b| b.1.total_cmp(&a.1));
    let refused = rate("kopek_refusals_total", &everything);
    let queue = after.get("kopek_queue_depth").unwrap_or(0.0);
    let capacity = after.get("kopek_queue_capacity").unwrap_or(0.0);
    let commit_p99 = quantile(&before, &after, "kopek_commit_duration_seconds", 0.99);
    let request_p99 = quantile(&before, &after, "kopek_request_duration_seconds", 0.99);
    let consumers: Vec<(String, f64, f64)> = after
        .family("kopek_consumer_lag_seconds")
        .filter_map(|(labels, lag)| {
            let name = label(labels, "consumer")?.to_owned();
            let sequence = after.get(&format!("kopek_consumer_sequence{labels}")).unwrap_or(0.0);
            Some((name, lag, sequence))
        })
        .collect();
    let webhooks: Vec<(String, f64)> = ["delivered", "failed", "dead"]
        .iter()
        .map(|outcome| {
            let keep = |labels: &str| label(labels, "outcome") == Some(outcome);
            ((*outcome).to_owned(), rate("kopek_webhook_attempts_total", &keep))
        })
        .collect();
    let now = kopek_telemetry::unix_now();
    let verify_ok = after.get("kopek_verify_runs_total{result=\"ok\"}").unwrap_or(0.0);
    let failed_series = "kopek_verify_runs_total{result=\"failed\"}";
    let verify_failed = after.get(failed_series).unwrap_or(0.0);
    let failed_now = verify_failed - before.get(failed_series).unwrap_or(0.0);
    let last_ok = after.get("kopek_verify_last_ok_timestamp_seconds").unwrap_or(0.0);
    let problems = after.get("kopek_verify_problems").unwrap_or(0.0);
    let accounts_checked = after.get("kopek_verify_accounts_checked").unwrap_or(0.0);
    let rss = after.get("process_resident_memory_bytes");
    let cpu = rate("process_cpu_seconds_total", &everything);
    let uptime = after.get("process_start_time_seconds").map(|start| now - start);
    let outbox = after.get("kopek_outbox_sequence").unwrap_or(0.0);
    let journal = after.get("kopek_journal_frames_total").map(|frames| {
        (
            frames,
            after.get("kopek_projection_frame").unwrap_or(0.0),
            after.get("kopek_projection_lag_seconds").unwrap_or(0.0),
            after.get("kopek_projection_lag_seconds_max").unwrap_or(0.0),
        )
    });

    let report = json!({
        "address": base,
        "ready": ready,
        "health": health,
        "interval_seconds": seconds,
        "transfers_per_second": transfers,
        "requests_per_second": requests,
        "server_errors_per_second": errors,
        "refusals_per_second": refused,
        "rejections_per_second": rejections.iter().map(|(code, rate)| (code.clone(), json!(rate))).collect::<serde_json::Map<_, _>>(),
        "queue": {"depth": queue, "capacity": capacity},
        "commit_p99_seconds": commit_p99,
        "request_p99_seconds": request_p99,
        "outbox_sequence": outbox,
        "journal": journal.map(|(frames, projected, lag, lag_max)| json!({
            "frames": frames,
            "projected": projected,
            "lag_seconds": lag,
            "lag_seconds_max": lag_max,
        })),
        "relays": relays,
        "consumers": consumers.iter().map(|(name, lag, sequence)| json!({"name": name, "lag_seconds": lag, "sequence": sequence})).collect::<Vec<_>>(),
        "webhook_attempts_per_second": webhooks.iter().map(|(outcome, rate)| (outcome.clone(), json!(rate))).collect::<serde_json::Map<_, _>>(),
        "books": {
            "checks_ok": verify_ok,
            "checks_failed": verify_failed,
            "last_ok_seconds_ago": (last_ok > 0.0).then_some(now - last_ok),
            "problems": problems,
            "accounts_checked": accounts_checked,
        },
        "process": {"rss_bytes": rss, "cpu_cores": cpu, "uptime_seconds": uptime},
    });

    let mut text = format!("kopek at {base}: {health}\n");
    text.push_str(&format!(
        "  throughput  {transfers:.0} transfers/s, {requests:.0} requests/s (over {seconds:.1} s)\n"
    ));
    let share = if requests > 0.0 { errors / requests * 100.0 } else { 0.0 };
    let declined = if rejections.is_empty() {
        "none".to_owned()
    } else {
        rejections
            .iter()
            .map(|(code, rate)| format!("{code} {rate:.1}/s"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    text.push_str(&format!(
        "  errors      {share:.1}% server errors, {refused:.1}/s refused; declined: {declined}\n"
    ));
    text.push_str(&format!(
        "  write path  queue {queue:.0} / {capacity:.0}, commit p99 {}, request p99 {}, outbox at {outbox:.0}\n",
        milliseconds(commit_p99),
        milliseconds(request_p99)
    ));
    if let Some((frames, projected, lag, lag_max)) = journal {
        text.push_str(&format!(
            "  journal     frame {frames:.0}, projection at {projected:.0} ({:.0} behind, lag {}, largest {})\n",
            frames - projected,
            milliseconds(Some(lag)),
            milliseconds(Some(lag_max))
        ));
    }
    if relays.is_empty() {
        text.push_str("  relay       none (no --broker)\n");
    }
    for relay in &relays {
        text.push_str(&format!("  {relay}\n"));
    }
    if consumers.is_empty() {
        text.push_str("  consumers   none in this process\n");
    } else {
        let list: Vec<String> = consumers
            .iter()
            .map(|(name, lag, sequence)| format!("{name} {lag:.1} s behind (at {sequence:.0})"))
            .collect();
        text.push_str(&format!("  consumers   {}\n", list.join(", ")));
    }
    let hooks: Vec<String> =
        webhooks.iter().map(|(outcome, rate)| format!("{outcome} {rate:.1}/s")).collect();
    text.push_str(&format!("  webhooks    {}\n", hooks.join(", ")));
    // The last check's problems (and any check that failed while status watched).
    let books = if failed_now > 0.0 || problems > 0.0 {
        format!("DO NOT VERIFY: {problems:.0} problems in the last check (see the server log)")
    } else if last_ok > 0.0 {
        format!(
            "verified {} ago, {accounts_checked:.0} accounts, no problems ({verify_ok:.0} checks)",
            ago(now - last_ok)
        )
    } else {
        "not checked yet (--verify-every-seconds)".to_owned()
    };
    text.push_str(&format!("  books       {books}\n"));
    text.push_str(&format!(
        "  process     rss {}, cpu {:.0}%, up {}\n",
        rss.map_or_else(|| "-".to_owned(), |bytes| format!("{:.1} MB", bytes / 1e6)),
        cpu * 100.0,
        uptime.map_or_else(|| "-".to_owned(), ago)
    ));
    Ok((ready, report, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_bucket_counts_of_the_interval() {
        let before = Scrape::parse(
            "h_bucket{le=\"0.1\"} 10\nh_bucket{le=\"1\"} 10\nh_bucket{le=\"+Inf\"} 10\n",
        );
        let after = Scrape::parse(
            "h_bucket{le=\"0.1\"} 60\nh_bucket{le=\"1\"} 110\nh_bucket{le=\"+Inf\"} 110\n",
        );
        // 100 new observations: 50 up to 0.1, 50 in (0.1, 1].
        let p50 = quantile(&before, &after, "h", 0.5).expect("p50");
        assert!((p50 - 0.1).abs() < 1e-9, "{p50}");
        let p99 = quantile(&before, &after, "h", 0.99).expect("p99");
        assert!((p99 - (0.1 + 0.9 * 49.0 / 50.0)).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(&after, &after, "h", 0.5), None, "nothing observed");
    }

    #[test]
    fn quantiles_sum_every_series_by_bucket() {
        // Two routes: one slow request on /a, nine fast ones on /b.
        let before = Scrape::parse("");
        let after = Scrape::parse(
            "h_bucket{m=\"/a\",le=\"0.1\"} 0\nh_bucket{m=\"/a\",le=\"1\"} 1\nh_bucket{m=\"/a\",le=\"+Inf\"} 1\n\
             h_bucket{m=\"/b\",le=\"0.1\"} 9\nh_bucket{m=\"/b\",le=\"1\"} 9\nh_bucket{m=\"/b\",le=\"+Inf\"} 9\n",
        );
        let p50 = quantile(&before, &after, "h", 0.5).expect("p50");
        assert!(p50 <= 0.1, "half of ten requests were fast: {p50}");
        let p99 = quantile(&before, &after, "h", 0.99).expect("p99");
        assert!(p99 > 0.1, "the slow one is in the top 1%: {p99}");
    }

    #[test]
    fn labels_and_families_are_read_from_the_text_format() {
        let scrape = Scrape::parse(
            "# TYPE a counter\na{code=\"X\",s=\"5\"} 2\na_total 9\na 1\nb{code=\"Y\"} 3\n",
        );
        assert_eq!(scrape.sum("a", |_| true), 3.0, "a_total is another family");
        assert_eq!(label("{code=\"X\",s=\"5\"}", "s"), Some("5"));
        assert_eq!(label("{code=\"X\"}", "le"), None);
        assert!(server_error("503") && server_error("Internal") && !server_error("404"));
    }
}
