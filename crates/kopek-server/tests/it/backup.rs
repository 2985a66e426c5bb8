//! Backup and restore of the embedded store, as an operator runs them: `kopek backup` beside a
//! server that keeps taking transfers (from its data directory, and over HTTP with `--addr`),
//! `kopek restore` into an empty directory, `kopek verify` on the result, and every balance
//! of the restored ledger against the transfers it holds.

use crate::support::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const ACCOUNTS: usize = 6;

/// A transfer the load sent and the server acknowledged: key, payer, payee, minor units.
type Sent = (String, usize, usize, i64);
const FUNDING_MINOR: i64 = 1_000_000;

async fn post(address: &str, path: &str, key: &str, body: Value) -> HttpResponse {
    let headers = [("Idempotency-Key", key)];
    http(address, "POST", path, &headers, Some(&body.to_string())).await
}

fn account(index: usize) -> String {
    format!("acct-{index}")
}

/// Every transfer a server holds, by idempotency key: (debit, credit, minor amount).
async fn transfers_held(address: &str) -> BTreeMap<String, (String, String, i64)> {
    let mut held = BTreeMap::new();
    let mut cursor = String::new();
    loop {
        let path = format!("/v1/transfers?limit=1000&order=asc{cursor}");
        let page = http(address, "GET", &path, &[], None).await.json();
        for transfer in page["transfers"].as_array().expect("transfers") {
            let side = |name: &str| transfer[name].as_str().unwrap_or_default().to_owned();
            let key = side("idempotency_key");
            let amount = transfer["amount_minor"].as_i64().expect("amount");
            held.insert(key, (side("debit_account_id"), side("credit_account_id"), amount));
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return held,
        }
    }
}

/// Restores `backup` into a new directory, checks it with `kopek verify`, serves it, and
/// compares every account's balance with the transfers the restored ledger holds. Returns the
/// keys of the load's transfers it holds.
async fn restore_and_compare(
    backup: &Path,
    acknowledged: &[(String, usize, usize, i64)],
) -> BTreeSet<String> {
    let restored = tempfile::tempdir().expect("temp dir");
    let data_dir = restored.path().join("data");
    let (backup, data) = (backup.to_str().expect("utf-8"), data_dir.to_str().expect("utf-8"));
    let (code, out, err) = cli(&["restore", backup, "--data-dir", data]);
    assert_eq!(code, 0, "restore: {out}{err}");
    assert!(out.contains("journal-first"), "{out}");
    let (code, out, err) = cli(&["verify", "--data-dir", data]);
    assert_eq!(code, 0, "verify after restore: {out}{err}");
    assert!(out.contains("ok: the books balance"), "{out}");

    let server = Server::start(&data_dir);
    settled(&server).await;
    let held = transfers_held(&server.http_address).await;
    let by_key: BTreeMap<&str, &Sent> =
        acknowledged.iter().map(|entry| (entry.0.as_str(), entry)).collect();
    let mut expected = [FUNDING_MINOR; ACCOUNTS];
    let mut from_load = BTreeSet::new();
    for (key, (debit, credit, amount)) in &held {
        if key.starts_with("fund-") {
            continue;
        }
        let (_, payer, payee, minor) = by_key.get(key.as_str()).unwrap_or_else(|| {
            panic!("the restored ledger holds {key}, which the load never sent")
        });
        assert_eq!((debit, credit, amount), (&account(*payer), &account(*payee), minor), "{key}");
        expected[*payer] -= minor;
        expected[*payee] += minor;
        from_load.insert(key.clone());
    }
    for (index, balance) in expected.iter().enumerate() {
        let found = http(
            &server.http_address,
            "GET",
            &format!("/v1/accounts/{}", account(index)),
            &[],
            None,
        )
        .await
        .json();
        assert_eq!(found["balance"]["posted_minor"], json!(balance), "{}", account(index));
    }
    from_load
}

#[tokio::test]
async fn a_backup_taken_under_load_restores_with_every_balance() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let server = Server::start(&data_dir);
    let address = server.http_address.clone();
    for index in 0..ACCOUNTS {
        let id = account(index);
        let opened = post(
            &address,
            "/v1/accounts",
            &format!("open-{index}"),
            json!({"id": id, "currency": "USD"}),
        )
        .await;
        assert_eq!(opened.status, 201, "{}", opened.body);
        let body = json!({"kind": "deposit", "credit_account_id": id, "amount_minor": FUNDING_MINOR, "currency": "USD"});
        assert_eq!(
            post(&address, "/v1/transfers", &format!("fund-{index}"), body).await.status,
            201
        );
    }

    // The load: transfers one after another, each recorded once the server acknowledged it.
    let acknowledged: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (acknowledged, stop, address) = (acknowledged.clone(), stop.clone(), address.clone());
        tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let (payer, payee) = (n % ACCOUNTS, (n * 7 + 1) % ACCOUNTS);
                let (payee, minor) = (
                    if payee == payer { (payee + 1) % ACCOUNTS } else { payee },
                    1 + (n as i64 % 97),
                );
                let key = format!("load-{n}");
                let body = json!({"debit_account_id": account(payer), "credit_account_id": account(payee), "amount_minor": minor, "currency": "USD"});
                let answer = post(&address, "/v1/transfers", &key, body).await;
                assert_eq!(answer.status, 201, "{}", answer.body);
                acknowledged.lock().expect("log").push((key, payer, payee, minor));
                n += 1;
            }
        })
    };
    let wait_for = |count: usize| {
        let acknowledged = acknowledged.clone();
        async move {
            while acknowledged.lock().expect("log").len() < count {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    };
    wait_for(300).await;

    // From the data directory, beside the server.
    let beside = dir.path().join("beside");
    let before_beside = acknowledged.lock().expect("log").len();
    let data = data_dir.to_str().expect("utf-8");
    let (code, out, err) = cli(&["backup", beside.to_str().expect("utf-8"), "--data-dir", data]);
    assert_eq!(code, 0, "backup: {out}{err}");
    assert!(out.starts_with("backup ") && out.contains("journal-first"), "{out}");
    wait_for(before_beside + 200).await;

    // From the server over HTTP.
    let over_http = dir.path().join("over-http");
    let before_http = acknowledged.lock().expect("log").len();
    let (code, out, err) = cli(&[
        "backup",
        over_http.to_str().expect("utf-8"),
        "--addr",
        &format!("http://{address}"),
    ]);
    assert_eq!(code, 0, "backup --addr: {out}{err}");
    wait_for(before_http + 100).await;
    stop.store(true, Ordering::Relaxed);
    load.await.expect("load");
    let acknowledged = acknowledged.lock().expect("log").clone();
    assert!(
        std::fs::read_dir(&data_dir).expect("data dir").all(|entry| {
            !entry.expect("entry").file_name().to_string_lossy().starts_with(".backup-")
        }),
        "the server removes its copy once it has sent it"
    );

    for (backup, before) in [(&beside, before_beside), (&over_http, before_http)] {
        let held = restore_and_compare(backup, &acknowledged).await;
        let missing: Vec<&str> = acknowledged[..before]
            .iter()
            .map(|entry| entry.0.as_str())
            .filter(|key| !held.contains(*key))
            .collect();
        assert!(
            missing.is_empty(),
            "{}: acknowledged before the backup, yet missing: {missing:?}",
            backup.display()
        );
        assert!(held.len() < acknowledged.len(), "the load went on after the backup");
    }

    // A backup whose files were changed is refused, and restores nothing.
    let segment = std::fs::read_dir(beside.join("journal"))
        .expect("journal")
        .map(|entry| entry.expect("entry").path())
        .next()
        .expect("a segment");
    let mut bytes = std::fs::read(&segment).expect("read");
    bytes[100] ^= 0xff;
    std::fs::write(&segment, bytes).expect("write");
    let target = dir.path().join("never");
    let (code, _, err) = cli(&[
        "restore",
        beside.to_str().expect("utf-8"),
        "--data-dir",
        target.to_str().expect("utf-8"),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("does not match its manifest"), "{err}");
    assert!(!target.join("kopek.sqlite3").exists(), "nothing restored");
    // Nor is a backup restored over a ledger.
    let (code, _, err) = cli(&["restore", over_http.to_str().expect("utf-8"), "--data-dir", data]);
    assert_ne!(code, 0);
    assert!(err.contains("already holds a ledger"), "{err}");
}
