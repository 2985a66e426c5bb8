//! Export and import as an operator runs them: `kopek export` of a ledger that has been used
//! every way (deposits, payments with metadata, holds captured, voided, pending and expired,
//! a declined transfer, a contract's top-up and an order, a frozen account), `kopek import`
//! of the file into a new ledger (on PostgreSQL too), every balance and transfer compared,
//! a second import that changes nothing, an import into the ledger it came from, and files
//! that are cut short or whose books do not balance refused before anything is written.

use crate::support::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

async fn post(server: &Server, path: &str, key: &str, body: Value) -> Value {
    let headers = [("Idempotency-Key", key)];
    let response =
        http(&server.http_address, "POST", path, &headers, Some(&body.to_string())).await;
    let answer = response.json();
    // A declined transfer is recorded: its answer is an error that carries it.
    assert!(response.status < 300 || answer["transfer"].is_object(), "{path}: {answer}");
    answer
}

async fn get(server: &Server, path: &str) -> Value {
    let response = http(&server.http_address, "GET", path, &[], None).await;
    assert_eq!(response.status, 200, "{path}: {}", response.body);
    response.json()
}

/// A ledger used every way the import must carry over.
async fn used_ledger(server: &Server) {
    for (id, metadata) in [("alice", json!({})), ("bob", json!({"tier": "gold"}))] {
        post(
            server,
            "/v1/accounts",
            id,
            json!({"id": id, "currency": "USD", "metadata": metadata}),
        )
        .await;
    }
    let move_ = |key: &str, amount: &str, extra: Value| {
        let mut body = json!({"debit_account_id": "alice", "credit_account_id": "bob",
            "amount": amount, "currency": "USD"});
        body.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
        (key.to_owned(), body)
    };
    let deposit = json!({"kind": "deposit", "credit_account_id": "alice", "amount": "100.00",
        "currency": "USD"});
    post(server, "/v1/transfers", "d1", deposit).await;
    let (key, body) = move_(
        "t1",
        "10.00",
        json!({"description": "lunch, \"with\" a comma", "metadata": {"invoice": "inv-1"}}),
    );
    post(server, "/v1/transfers", &key, body).await;
    let mut holds = Vec::new();
    for (key, amount, hold) in [
        ("h-captured", "20.00", json!({})),
        ("h-voided", "5.00", json!({})),
        ("h-pending", "3.00", json!({})),
        ("h-expired", "1.00", json!({"timeout_seconds": 1})),
    ] {
        let (key, body) = move_(key, amount, json!({"hold": hold}));
        holds.push(
            post(server, "/v1/transfers", &key, body).await["id"].as_str().expect("id").to_owned(),
        );
    }
    let capture = format!("/v1/transfers/{}/capture", holds[0]);
    post(server, &capture, "c1", json!({"amount": "15.00"})).await;
    post(server, &format!("/v1/transfers/{}/void", holds[1]), "v1", json!({})).await;
    let (key, body) = move_("declined", "1000.00", json!({}));
    let declined = post(server, "/v1/transfers", &key, body).await;
    assert_eq!(declined["transfer"]["status"], "declined", "{declined}");
    // The payment contract: a top-up (a key of a reserved scope) and an order paid into
    // orders:USD, an account kopek opens itself.
    let user = [("X-User-ID", "u42")];
    let address = &server.http_address;
    http(address, "POST", "/payments/account", &user, Some("{}")).await;
    http(address, "POST", "/payments/account/topup", &user, Some(r#"{"amount": 50}"#)).await;
    let order = http(address, "POST", "/orders/orders", &user, Some(r#"{"amount": 20}"#)).await;
    let order = order.json()["id"].as_str().expect("order id").to_owned();
    let paid = eventually(|| async {
        let order = get(server, &format!("/v1/orders/{order}")).await;
        (order["status"] != "PENDING").then_some(order)
    })
    .await;
    assert_eq!(paid["status"], "PAID", "{paid}");
    // The short hold expires where it was made.
    eventually(|| async {
        let expired = get(server, "/v1/transfers?idempotency_key=h-expired").await;
        (expired["transfers"][0]["status"] == "expired").then_some(())
    })
    .await;
    let frozen = http(address, "PATCH", "/v1/accounts/bob", &[], Some(r#"{"status":"frozen"}"#));
    assert_eq!(frozen.await.status, 200);
    settled(server).await;
}

async fn eventually<T, F: std::future::Future<Output = Option<T>>>(check: impl Fn() -> F) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(std::time::Instant::now() < deadline, "not within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every account: (status, posted, pending out, pending in).
async fn balances(server: &Server) -> BTreeMap<String, (String, i64, i64, i64)> {
    let page = get(server, "/v1/accounts?limit=1000").await;
    page["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .map(|account| {
            let balance = &account["balance"];
            let minor = |name: &str| balance[name].as_i64().expect("minor");
            (
                account["id"].as_str().expect("id").to_owned(),
                (
                    account["status"].as_str().expect("status").to_owned(),
                    minor("posted_minor"),
                    minor("pending_out_minor"),
                    minor("pending_in_minor"),
                ),
            )
        })
        .collect()
}

/// Every transfer by idempotency key: what it moved and how it stands.
async fn transfers(server: &Server) -> BTreeMap<String, Value> {
    let page = get(server, "/v1/transfers?order=asc&limit=1000").await;
    page["transfers"]
        .as_array()
        .expect("transfers")
        .iter()
        .map(|t| {
            let key = t["idempotency_key"].as_str().expect("key").to_owned();
            let kept = ["kind", "action", "status", "debit_account_id", "credit_account_id"]
                .into_iter()
                .chain(["amount_minor", "currency", "description", "metadata", "effective_at"])
                .map(|name| (name.to_owned(), t[name].clone()))
                .collect::<serde_json::Map<_, _>>();
            (key, Value::Object(kept))
        })
        .collect()
}

/// A directory for a server: made, so that on PostgreSQL its database lives while it does.
fn made(root: &Path, name: &str) -> std::path::PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("make the directory");
    dir
}

fn kopek(args: &[&str]) -> String {
    let (code, out, err) = cli(args);
    assert_eq!(code, 0, "kopek {args:?}: {out}{err}");
    format!("{out}{err}")
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

/// A used ledger (`used_ledger`) served from `root/source`, exported over HTTP to
/// `root/ledger.jsonl`: the server, the file, and what the export said.
async fn exported_ledger(root: &Path) -> (Server, std::path::PathBuf, String) {
    let source = Server::start(&made(root, "source"));
    used_ledger(&source).await;
    let file = root.join("ledger.jsonl");
    let url = format!("http://{}", source.http_address);
    let said = kopek(&["export", "--addr", &url, "--output", file.to_str().expect("utf-8")]);
    (source, file, said)
}

#[tokio::test]
async fn an_export_imports_into_a_new_ledger_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (source, file, said) = exported_ledger(dir.path()).await;
    let (file_arg, source_url) =
        (file.to_str().expect("utf-8"), format!("http://{}", source.http_address));
    assert!(said.contains("exported 5 accounts, 11 transfers"), "{said}");

    // The file: a header, the accounts, the transfers with their entries, the events, the end.
    let records = lines(&file);
    assert_eq!(records[0]["kopek_export"]["version"], 1);
    let last = records.last().expect("lines");
    assert_eq!(last["end"]["accounts"], 5, "{last}");
    let exported: Vec<&Value> = records.iter().filter_map(|r| r.get("transfer")).collect();
    let lunch = exported.iter().find(|t| t["idempotency_key"] == "t1").expect("t1");
    let entries = lunch["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 2, "{lunch}");
    assert_eq!(
        (entries[0]["direction"].as_str(), entries[0]["account_id"].as_str()),
        (Some("debit"), Some("alice"))
    );
    assert_eq!(entries[1]["balance_after_minor"], 1_000, "bob after the lunch: {lunch}");
    let pending = exported.iter().find(|t| t["idempotency_key"] == "h-pending").expect("hold");
    assert_eq!(pending["entries"], json!([]), "a hold moved nothing yet");
    assert!(records.iter().any(|r| r["event"]["type"] == "TransferPosted"), "events are exported");

    // Into a new ledger: the same balances, statuses and transfers, but the declined one.
    let target = Server::start(&made(dir.path(), "target"));
    let target_url = format!("http://{}", target.http_address);
    let said = kopek(&["import", file_arg, "--addr", &target_url]);
    assert!(said.contains("transfers 9 created, 0 already there, 2 not replayed"), "{said}");
    assert!(said.contains("1 opened by their transfers"), "orders:USD: {said}");
    settled(&target).await;
    let expected = balances(&source).await;
    let imported = balances(&target).await;
    assert_eq!(imported, expected);
    assert_eq!(imported["bob"].0, "frozen");
    assert_eq!(imported["alice"], ("active".to_owned(), 10_000 - 1_000 - 1_500, 300, 0));
    // Neither the declined transfer nor the hold that expired moved money: not replayed.
    let mut before = transfers(&source).await;
    before.remove("declined");
    before.remove("h-expired");
    let after = transfers(&target).await;
    let statuses = |map: &BTreeMap<String, Value>| -> Vec<(String, Value)> {
        map.iter().map(|(key, t)| (key.clone(), t["status"].clone())).collect()
    };
    assert_eq!(statuses(&after), statuses(&before), "the same transfers, standing the same");
    assert_eq!(
        after["t1"], before["t1"],
        "amount, accounts, description, metadata and effective time"
    );

    // Again: nothing changes, not even the event log.
    let events_before =
        get(&target, "/v1/events?limit=1000").await["events"].as_array().expect("events").len();
    let said = kopek(&["import", file_arg, "--addr", &target_url]);
    assert!(said.contains("accounts 0 created, 4 already there"), "{said}");
    assert!(said.contains("transfers 0 created, 9 already there"), "{said}");
    settled(&target).await;
    assert_eq!(balances(&target).await, expected);
    let events_after =
        get(&target, "/v1/events?limit=1000").await["events"].as_array().expect("events").len();
    assert_eq!(events_after, events_before, "a second import writes nothing");
    // And into the ledger it came from: everything is there already.
    let said = kopek(&["import", file_arg, "--addr", &source_url]);
    assert!(said.contains("transfers 0 created, 9 already there"), "{said}");
    assert_eq!(balances(&source).await, expected);

    // A time range, as CSV: the transfers committed from the lunch on, one row each.
    let from = lunch["committed_at"].as_str().expect("time");
    let csv = dir.path().join("from-lunch.csv");
    let csv_arg = csv.to_str().expect("utf-8");
    kopek(&["export", "--addr", &source_url, "--format", "csv", "--after", from, "-o", csv_arg]);
    let text = std::fs::read_to_string(&csv).expect("csv");
    let rows: Vec<&str> = text.lines().collect();
    assert!(rows[0].starts_with("id,committed_at,effective_at,kind,action,status"), "{text}");
    assert_eq!(rows.len(), 1 + exported.len() - 1, "all but the deposit before it: {text}");
    assert!(rows[1].contains(r#""lunch, ""with"" a comma""#), "{}", rows[1]);
}

#[tokio::test]
async fn a_file_that_does_not_balance_or_is_cut_short_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_source, file, _) = exported_ledger(dir.path()).await;
    let text = std::fs::read_to_string(&file).expect("read");
    let target = Server::start(&made(dir.path(), "target"));
    let target_url = format!("http://{}", target.http_address);
    let refused = |name: &str, changed: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, changed).expect("write");
        let (code, out, err) =
            cli(&["import", path.to_str().expect("utf-8"), "--addr", &target_url]);
        assert_eq!(code, 2, "{name} must be refused: {out}{err}");
        assert!(err.contains("nothing was imported"), "{err}");
        err
    };
    // The lunch moves 10.01 but its entries say 10.00.
    let lunch = text.lines().find(|line| line.contains(r#""idempotency_key":"t1""#)).expect("t1");
    let more = lunch.replacen(r#""amount_minor":1000"#, r#""amount_minor":1001"#, 1);
    let err = refused("more.jsonl", text.replace(lunch, &more));
    assert!(err.contains("its debit entry does not move its amount"), "{err}");
    // Every figure of the lunch changed alike: the balances after it no longer follow.
    let err = refused("all.jsonl", text.replace(lunch, &lunch.replace("1000", "1001")));
    assert!(err.contains("the lines before it are missing or changed"), "{err}");
    // A post that says it is pending (and moved no money) cannot pass for either.
    let pending = lunch.replacen(r#""status":"posted""#, r#""status":"pending""#, 1);
    let err = refused("pending.jsonl", text.replace(lunch, &pending));
    assert!(err.contains("a post transfer is never pending"), "{err}");
    // A transfer left out.
    let err = refused("dropped.jsonl", text.replace(&format!("{lunch}\n"), ""));
    assert!(err.contains("the end line counts"), "{err}");
    // Cut short.
    let half: String = text.lines().take(8).map(|line| format!("{line}\n")).collect();
    let err = refused("cut.jsonl", half);
    assert!(err.contains("cut short"), "{err}");
    assert_eq!(balances(&target).await, BTreeMap::new(), "nothing was written");
}

/// A transfer the ledger imported into declines (its account is frozen there): the import
/// stops with the line, the code and the reason, and a second run fails there again instead
/// of counting it as loaded.
#[tokio::test]
async fn a_transfer_declined_on_replay_fails_every_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_source, file, _) = exported_ledger(dir.path()).await;
    let file_arg = file.to_str().expect("utf-8");
    let target = Server::start(&made(dir.path(), "target"));
    post(&target, "/v1/accounts", "a", json!({"id": "alice", "currency": "USD"})).await;
    let frozen = http(
        &target.http_address,
        "PATCH",
        "/v1/accounts/alice",
        &[],
        Some(r#"{"status":"frozen"}"#),
    );
    assert_eq!(frozen.await.status, 200);
    let deposit_line = std::fs::read_to_string(&file)
        .expect("read")
        .lines()
        .position(|line| line.contains(r#""idempotency_key":"d1""#))
        .expect("the deposit")
        + 1;
    let target_url = format!("http://{}", target.http_address);
    for run in ["first", "second"] {
        let (code, out, err) = cli(&["import", file_arg, "--addr", &target_url]);
        assert_eq!(code, 2, "{run} run: {out}{err}");
        let said = format!("line {deposit_line}: \"ACCOUNT_FROZEN\"");
        assert!(err.contains(&said), "{run} run names the line and the code: {err}");
        assert!(err.contains("but is declined here"), "{err}");
    }
    let alice = get(&target, "/v1/accounts/alice").await;
    assert_eq!(alice["balance"]["posted_minor"], 0, "nothing moved: {alice}");
}

/// Both ways through a store opened by the command itself (`--data-dir`), with no server.
#[tokio::test]
async fn export_and_import_open_a_data_directory_themselves() {
    if crate::ON_POSTGRES {
        return; // the data directory is the embedded store's
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (source, file, _) = exported_ledger(dir.path()).await;
    let file_arg = file.to_str().expect("utf-8");
    let expected = balances(&source).await;
    drop(source);
    let copy = dir.path().join("copy");
    let copy_arg = copy.to_str().expect("utf-8");
    let said = kopek(&["import", file_arg, "--data-dir", copy_arg]);
    assert!(said.contains("transfers 9 created"), "{said}");
    let again = dir.path().join("again.jsonl");
    let said = kopek(&["export", "--data-dir", copy_arg, "-o", again.to_str().expect("utf-8")]);
    assert!(said.contains("exported 5 accounts, 9 transfers"), "{said}");
    let verified = kopek(&["verify", "--data-dir", copy_arg]);
    assert!(verified.contains("the books balance"), "{verified}");
    // Each command served the store to itself with a key of its own, revoked after it.
    let (code, listed, err) = cli(&["keys", "list", "--data-dir", copy_arg, "--json"]);
    assert_eq!(code, 0, "{err}");
    let keys: Vec<Value> = serde_json::from_str(&listed).expect("keys");
    let own: Vec<&Value> = keys
        .iter()
        .filter(|key| key["name"].as_str().is_some_and(|n| n.starts_with("kopek ")))
        .collect();
    assert_eq!(own.len(), 2, "the import's and the export's: {listed}");
    assert!(own.iter().all(|key| key["revoked_at"].is_string()), "{listed}");
    let copied = Server::start(&copy);
    let imported = eventually(|| async {
        let now = balances(&copied).await;
        (now == expected).then_some(now)
    })
    .await;
    assert_eq!(imported.len(), 5);
}
