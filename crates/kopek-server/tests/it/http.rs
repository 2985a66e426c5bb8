//! The HTTP surface against the real binary: both parts of the HTTP contract, the canonical
//! REST API with its idempotency rules, WebSockets, CORS, OpenAPI and the UI's assets.

use crate::support::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn post(server: &Server, path: &str, headers: &[(&str, &str)], body: Value) -> HttpResponse {
    http(&server.http_address, "POST", path, headers, Some(&body.to_string())).await
}

async fn get(server: &Server, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    http(&server.http_address, "GET", path, headers, None).await
}

#[tokio::test]
async fn part_a_users_and_transactions_with_balances_as_of_a_date() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let created = post(&server, "/v1/user", &[], json!({"name": "petya"})).await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.json(), json!({"id": 1, "name": "petya", "balance": "0.00"}));
    let second = post(&server, "/v1/user", &[], json!({"name": "vasya"})).await;
    assert_eq!(second.json()["id"], 2, "ids are allocated in order");

    let deposit = json!({"uid": "0b1e4c6e-0000-4000-8000-000000000001", "type": "DEPOSIT", "amount": "100.0", "user_id": 1, "timestamp": "2023-01-04T00:00:00"});
    let first = post(&server, "/v1/transaction", &[], deposit.clone()).await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(
        first.json(),
        json!({"uid": "0b1e4c6e-0000-4000-8000-000000000001", "type": "DEPOSIT", "amount": "100.00", "user_id": 1, "timestamp": "2023-01-04T00:00:00Z"})
    );
    let again = post(&server, "/v1/transaction", &[], deposit.clone()).await;
    assert_eq!(
        (again.status, again.json()),
        (200, first.json()),
        "the same uid and content: the original"
    );
    let mut other = deposit.clone();
    other["amount"] = json!("101.0");
    assert_eq!(
        post(&server, "/v1/transaction", &[], other).await.status,
        422,
        "the same uid, other content"
    );
    let mut moved = deposit.clone();
    moved["timestamp"] = json!("2023-01-05T00:00:00");
    assert_eq!(
        post(&server, "/v1/transaction", &[], moved).await.status,
        422,
        "the timestamp is content too"
    );

    let too_much = json!({"uid": "w-1", "type": "WITHDRAW", "amount": 150, "user_id": 1, "timestamp": "2023-01-05T00:00:00"});
    let refused = post(&server, "/v1/transaction", &[], too_much).await;
    assert_eq!(refused.status, 402, "{refused:?}");
    assert_eq!(refused.json()["error"]["code"], "INSUFFICIENT_FUNDS");
    // A back-dated withdrawal: recorded now, effective on the 10th.
    let back_dated = json!({"uid": "w-2", "type": "WITHDRAW", "amount": "30.5", "user_id": 1, "timestamp": "2023-01-10T00:00:00"});
    assert_eq!(post(&server, "/v1/transaction", &[], back_dated.clone()).await.status, 200);
    let duplicate = post(&server, "/v1/transaction", &[], back_dated).await;
    assert_eq!(
        (duplicate.status, duplicate.header("idempotent-replayed")),
        (200, Some("true")),
        "a duplicate withdrawal"
    );

    let balance_at = |date: &str| format!("/v1/user/1?date={date}");
    assert_eq!(
        get(&server, &balance_at("2023-01-04T00:00:00"), &[]).await.json()["balance"],
        "0.00",
        "strictly before"
    );
    assert_eq!(
        get(&server, &balance_at("2023-01-05T00:00:00"), &[]).await.json()["balance"],
        "100.00"
    );
    assert_eq!(
        get(&server, &balance_at("2023-01-30T00:00:00.00000000"), &[]).await.json()["balance"],
        "69.50"
    );
    let at = |date: &'static str| {
        let address = server.http_address.clone();
        async move {
            http(&address, "GET", &format!("/v1/user/1?date={date}"), &[], None).await.json()["balance"].clone()
        }
    };
    assert_eq!(
        at("2023-01-10T00:00:00").await,
        "100.00",
        "the withdrawal's own instant is not before it"
    );
    assert_eq!(at("2023-01-10T00:00:00.000000001").await, "69.50", "one nanosecond later it is");
    assert_eq!(at("2023-01-10T02:00:00.5%2B02:00").await, "69.50", "an offset counts");
    assert_eq!(
        get(&server, "/v1/user/1", &[]).await.json(),
        json!({"id": 1, "name": "petya", "balance": "69.50"})
    );

    let fetched = get(&server, "/v1/transaction/w-2", &[]).await;
    assert_eq!(
        fetched.json(),
        json!({"uid": "w-2", "type": "WITHDRAW", "amount": "30.50", "user_id": 1, "timestamp": "2023-01-10T00:00:00Z"})
    );
    assert_eq!(get(&server, "/v1/transaction/unknown", &[]).await.status, 404);
    assert_eq!(get(&server, "/v1/user/99", &[]).await.status, 404);
    assert_eq!(get(&server, "/v1/user/not-a-number", &[]).await.status, 404);
    let unknown_user = json!({"uid": "x", "type": "DEPOSIT", "amount": "1", "user_id": 99});
    assert_eq!(post(&server, "/v1/transaction", &[], unknown_user).await.status, 404);
    for malformed in [
        json!({"uid": "m1", "type": "DEPOSIT", "amount": "1.001", "user_id": 1}),
        json!({"uid": "m2", "type": "DEPOSIT", "amount": "abc", "user_id": 1}),
        json!({"uid": "m3", "type": "STEAL", "amount": "1", "user_id": 1}),
        json!({"uid": "m4", "type": "DEPOSIT", "amount": "1", "user_id": 1, "timestamp": "someday"}),
        json!({"type": "DEPOSIT"}),
    ] {
        let response = post(&server, "/v1/transaction", &[], malformed.clone()).await;
        assert_eq!(response.status, 400, "{malformed}: {response:?}");
        assert!(response.json()["error"].is_object(), "{malformed}");
    }
    let not_json = http(&server.http_address, "POST", "/v1/transaction", &[], Some("{oops")).await;
    assert_eq!(not_json.status, 400);
}

async fn wait_for_status(server: &Server, user: &str, id: &str, wanted: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let order =
            get(server, &format!("/orders/orders/{id}"), &[("X-User-ID", user)]).await.json();
        if order["status"] == wanted {
            return;
        }
        assert!(Instant::now() < deadline, "order {id} is still {}", order["status"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn part_b_top_up_orders_paid_and_failed_and_live_status() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let me = [("X-User-ID", "42")];
    let missing = get(&server, "/payments/account/balance", &me).await;
    assert_eq!((missing.status, missing.json()), (404, json!({"detail": "Account not found"})));
    assert_eq!(
        post(&server, "/payments/account", &me, json!({})).await.json(),
        json!({"balance": 0})
    );
    assert_eq!(
        post(&server, "/payments/account/topup", &me, json!({"amount": 500})).await.json(),
        json!({"balance": 500})
    );
    for bad in [
        json!({"amount": 0}),
        json!({"amount": -5}),
        json!({"amount": 1.5}),
        json!({"amount": "10"}),
        json!({}),
    ] {
        assert_eq!(
            post(&server, "/payments/account/topup", &me, bad.clone()).await.status,
            422,
            "{bad}"
        );
    }
    let with_key = [("X-User-ID", "42"), ("Idempotency-Key", "top-1")];
    let topped = post(&server, "/payments/account/topup", &with_key, json!({"amount": 1})).await;
    assert_eq!(topped.json(), json!({"balance": 501}));
    let retried = post(&server, "/payments/account/topup", &with_key, json!({"amount": 1})).await;
    assert_eq!(retried.json(), json!({"balance": 501}), "a retry with the key applies once");
    let reused = post(&server, "/payments/account/topup", &with_key, json!({"amount": 2})).await;
    assert_eq!(reused.status, 422, "a reused key is refused, not a silent 200");
    let by_query = get(&server, "/payments/account/balance?user_id=42", &[]).await;
    assert_eq!(by_query.json(), json!({"balance": 501}), "?user_id= names the caller too");

    let paid = post(&server, "/orders/orders", &me, json!({"amount": 200})).await.json();
    assert_eq!((paid["amount"].clone(), paid["status"].clone()), (json!(200), json!("PENDING")));
    let paid_id = paid["id"].as_str().expect("id").to_owned();
    assert_eq!(paid_id.len(), 36, "a UUID");
    // The status arrives over the WebSocket, on either route.
    let ws_url = format!("ws://{}/ws/orders/{paid_id}", server.http_address);
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url).await.expect("websocket");
    let message = tokio::time::timeout(Duration::from_secs(15), socket.next())
        .await
        .expect("in time")
        .expect("a message")
        .expect("ok");
    assert_eq!(message.into_text().expect("text").as_str(), r#"{"status":"PAID"}"#);
    wait_for_status(&server, "42", &paid_id, "PAID").await;
    let settled_url = format!("ws://{}/orders/ws/orders/{paid_id}", server.http_address);
    let (mut settled, _) = tokio_tungstenite::connect_async(settled_url).await.expect("websocket");
    let at_once = tokio::time::timeout(Duration::from_secs(5), settled.next())
        .await
        .expect("at once")
        .expect("message")
        .expect("ok");
    assert_eq!(
        at_once.into_text().expect("text").as_str(),
        r#"{"status":"PAID"}"#,
        "a settled order answers at once"
    );

    let failed = post(&server, "/orders/orders", &me, json!({"amount": 1000})).await.json();
    let failed_id = failed["id"].as_str().expect("id").to_owned();
    wait_for_status(&server, "42", &failed_id, "FAILED").await;
    // The contract's order is {id, amount, status}; kopek's own API and the event say why.
    let order = get(&server, &format!("/v1/orders/{failed_id}"), &[]).await.json();
    assert_eq!((order["status"].clone(), order["user_id"].clone()), (json!("FAILED"), json!("42")));
    assert_eq!(order["failure"]["code"], "INSUFFICIENT_FUNDS", "{order}");
    assert!(order["payment_id"].is_string(), "the declined payment is recorded: {order}");
    let events = get(&server, "/v1/events?after=0&limit=1000", &[]).await.json();
    let failed_event = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|event| event["type"] == "OrderFailed" && event.to_string().contains(&failed_id))
        .cloned()
        .unwrap_or_default();
    assert!(failed_event.to_string().contains("INSUFFICIENT_FUNDS"), "{failed_event}");
    let paid = get(&server, &format!("/v1/orders/{paid_id}"), &[]).await.json();
    assert_eq!((paid["status"].clone(), paid["failure"].clone()), (json!("PAID"), Value::Null));
    assert_eq!(
        get(&server, "/payments/account/balance", &me).await.json(),
        json!({"balance": 301}),
        "debited once"
    );
    let mine = get(&server, "/orders/orders", &me).await.json();
    assert_eq!(mine.as_array().map(Vec::len), Some(2));
    let theirs = get(&server, &format!("/orders/orders/{paid_id}"), &[("X-User-ID", "7")]).await;
    assert_eq!((theirs.status, theirs.json()), (403, json!({"detail": "Forbidden"})));
    let unknown = get(&server, "/orders/orders/00000000-0000-4000-8000-000000000000", &me).await;
    assert_eq!((unknown.status, unknown.json()), (404, json!({"detail": "Order not found"})));
    assert_eq!(post(&server, "/orders/orders", &me, json!({"amount": 0})).await.status, 422);
    assert_eq!(get(&server, "/orders/orders", &[]).await.status, 422, "no caller");
}

#[tokio::test]
async fn cors_answers_preflight_for_loopback_and_configured_origins_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_with(dir.path(), &["--cors-origin", "https://shop.example"]);
    let preflight = |origin: &'static str| {
        let address = server.http_address.clone();
        async move {
            let headers = [
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "content-type,x-user-id"),
            ];
            http(&address, "OPTIONS", "/orders/orders", &headers, None).await
        }
    };
    for origin in ["http://localhost:5173", "http://127.0.0.1:3000", "https://shop.example"] {
        let response = preflight(origin).await;
        assert!(response.status < 300, "{origin}: {response:?}");
        assert_eq!(response.header("access-control-allow-origin"), Some(origin));
        let allowed =
            response.header("access-control-allow-headers").unwrap_or_default().to_lowercase();
        assert!(allowed.contains("x-user-id"), "{allowed}");
    }
    let stranger = preflight("https://evil.example").await;
    assert_eq!(stranger.header("access-control-allow-origin"), None);
    let simple = get(
        &server,
        "/payments/account/balance",
        &[("Origin", "http://localhost:5173"), ("X-User-ID", "1")],
    )
    .await;
    assert_eq!(simple.header("access-control-allow-origin"), Some("http://localhost:5173"));
}

#[tokio::test]
async fn rest_writes_are_idempotent_and_errors_are_json_with_fitting_statuses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let key = |k: &'static str| [("Idempotency-Key", k)];
    let open = |id: &str| json!({"id": id, "currency": "USD"});
    assert_eq!(post(&server, "/v1/accounts", &key("a1"), open("alice")).await.status, 201);
    let again = post(&server, "/v1/accounts", &key("a1"), open("alice")).await;
    assert_eq!(
        (again.status, again.header("idempotent-replayed")),
        (201, Some("true")),
        "the original status again"
    );
    assert_eq!(
        post(&server, "/v1/accounts", &key("a2"), json!({"id": "alice", "currency": "EUR"}))
            .await
            .status,
        409
    );
    assert_eq!(post(&server, "/v1/accounts", &key("a3"), open("bob")).await.status, 201);
    let derived =
        post(&server, "/v1/accounts", &key("a4"), json!({"currency": "USD", "owner": "carol"}))
            .await;
    assert_eq!(derived.status, 201);
    let derived_again =
        post(&server, "/v1/accounts", &key("a4"), json!({"currency": "USD", "owner": "carol"}))
            .await;
    assert_eq!(
        derived_again.json()["id"],
        derived.json()["id"],
        "an id made from the key finds the first account"
    );
    assert_eq!(
        post(&server, "/v1/accounts", &[], open("nokey")).await.status,
        400,
        "writes need a key"
    );
    let body =
        json!({"kind": "deposit", "credit_account_id": "alice", "amount": "1", "currency": "USD"});
    let reserved = post(&server, "/v1/transfers", &key("order:abc"), body).await;
    assert_eq!(reserved.status, 400, "kopek's own key spaces are not for clients");

    let deposit = json!({"kind": "deposit", "credit_account_id": "alice", "amount": "100.00", "currency": "USD"});
    let created = post(&server, "/v1/transfers", &key("d1"), deposit.clone()).await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(
        (created.json()["amount_minor"].clone(), created.json()["debit_account_id"].clone()),
        (json!(10_000), json!("world:USD"))
    );
    let replay = post(&server, "/v1/transfers", &key("d1"), deposit.clone()).await;
    assert_eq!((replay.status, replay.header("idempotent-replayed")), (201, Some("true")));
    assert_eq!(replay.json(), created.json(), "the original body again");
    let mut changed = deposit.clone();
    changed["amount_minor"] = json!(1);
    changed.as_object_mut().expect("object").remove("amount");
    let reuse = post(&server, "/v1/transfers", &key("d1"), changed).await;
    assert_eq!(
        (reuse.status, reuse.json()["error"]["code"].clone()),
        (422, json!("IDEMPOTENCY_KEY_REUSED"))
    );

    let pay = |minor: i64| json!({"debit_account_id": "alice", "credit_account_id": "bob", "amount_minor": minor, "currency": "USD"});
    let declined = post(&server, "/v1/transfers", &key("p1"), pay(1_000_000)).await;
    assert_eq!(declined.status, 402);
    assert_eq!(declined.json()["error"]["code"], "INSUFFICIENT_FUNDS");
    assert_eq!(declined.json()["transfer"]["status"], "declined", "the decline is recorded");
    let declined_again = post(&server, "/v1/transfers", &key("p1"), pay(1_000_000)).await;
    assert_eq!(
        (declined_again.status, declined_again.header("idempotent-replayed")),
        (402, Some("true"))
    );
    let statuses = [
        (
            json!({"debit_account_id": "alice", "credit_account_id": "ghost", "amount": "1", "currency": "USD"}),
            404,
        ),
        (
            json!({"debit_account_id": "alice", "credit_account_id": "alice", "amount": "1", "currency": "USD"}),
            400,
        ),
        (
            json!({"debit_account_id": "alice", "credit_account_id": "bob", "amount": "1", "currency": "EUR"}),
            400,
        ),
        (
            json!({"debit_account_id": "alice", "credit_account_id": "bob", "amount": "1.001", "currency": "USD"}),
            400,
        ),
        (
            json!({"debit_account_id": "alice", "credit_account_id": "bob", "amount": "1", "currency": "USD", "surprise": 1}),
            400,
        ),
    ];
    for (index, (body, status)) in statuses.into_iter().enumerate() {
        let name = format!("s{index}");
        let response = http(
            &server.http_address,
            "POST",
            "/v1/transfers",
            &[("Idempotency-Key", &name)],
            Some(&body.to_string()),
        )
        .await;
        assert_eq!(response.status, status, "{body}: {response:?}");
        assert!(response.json()["error"]["code"].is_string());
    }

    // A hold, a partial capture, a void; a linked batch that fails whole.
    let hold = json!({"debit_account_id": "alice", "credit_account_id": "bob", "amount": "40", "currency": "USD", "hold": {"timeout_seconds": 3600}});
    let held = post(&server, "/v1/transfers", &key("h1"), hold).await.json();
    assert_eq!(held["status"], "pending");
    let hold_id = held["id"].as_str().expect("id").to_owned();
    let captured = post(
        &server,
        &format!("/v1/transfers/{hold_id}/capture"),
        &key("c1"),
        json!({"amount": "15.50"}),
    )
    .await;
    assert_eq!((captured.status, captured.json()["amount_minor"].clone()), (201, json!(1_550)));
    let twice =
        post(&server, &format!("/v1/transfers/{hold_id}/void"), &key("v1"), json!({})).await;
    assert_eq!(
        (twice.status, twice.json()["error"]["code"].clone()),
        (409, json!("PENDING_ALREADY_RESOLVED"))
    );
    let batch = json!({"linked": true, "transfers": [
        {"idempotency_key": "b1", "debit_account_id": "alice", "credit_account_id": "bob", "amount": "1", "currency": "USD"},
        {"idempotency_key": "b2", "debit_account_id": "bob", "credit_account_id": "alice", "amount": "9999", "currency": "USD"}
    ]});
    let results = post(&server, "/v1/transfers/batch", &[], batch).await.json();
    assert_eq!(results["results"][0]["error"]["code"], "LINKED_EVENT_FAILED");
    assert_eq!(results["results"][1]["error"]["code"], "INSUFFICIENT_FUNDS");

    let alice = get(&server, "/v1/accounts/alice", &[]).await.json();
    assert_eq!(alice["balance"]["posted"], "84.50");
    let page = get(&server, "/v1/transfers?idempotency_key=d1", &[]).await.json();
    assert_eq!(page["transfers"].as_array().map(Vec::len), Some(1), "{page}");
    let found = &page["transfers"][0];
    assert_eq!(found["id"], created.json()["id"]);
    assert_eq!(
        get(&server, &format!("/v1/transfers/{}", found["id"].as_str().expect("id")), &[])
            .await
            .status,
        200
    );
    assert_eq!(get(&server, "/v1/transfers/nope", &[]).await.status, 404);
    let page = get(&server, "/v1/accounts/alice/entries?limit=1", &[]).await.json();
    assert_eq!(page["entries"].as_array().map(Vec::len), Some(1));
    let next = page["next_cursor"].as_u64().expect("a next page");
    let rest = get(&server, &format!("/v1/accounts/alice/entries?after={next}"), &[]).await.json();
    assert_eq!(rest["entries"].as_array().map(Vec::len), Some(1));
    assert_eq!(rest["entries"][0]["balance_after"], "84.50");
    let frozen = http(
        &server.http_address,
        "PATCH",
        "/v1/accounts/bob",
        &[],
        Some(r#"{"status":"frozen"}"#),
    )
    .await;
    assert_eq!(frozen.json()["status"], "frozen");
    let listed = get(&server, "/v1/accounts?owner=carol", &[]).await.json();
    assert_eq!(listed["accounts"].as_array().map(Vec::len), Some(1));

    let user = post(&server, "/v1/users", &key("u1"), json!({"id": "dana", "name": "Dana"})).await;
    assert_eq!(
        (user.status, user.json()["accounts"][0]["id"].clone()),
        (201, json!("user:dana:USD"))
    );
    assert_eq!(get(&server, "/v1/users/dana", &[]).await.json()["name"], "Dana");
    assert_eq!(get(&server, "/v1/users/nobody", &[]).await.status, 404);
    let events = get(&server, "/v1/events?limit=5", &[]).await.json();
    assert_eq!(events["events"].as_array().map(Vec::len), Some(5));
    let missing = get(&server, "/v1/no/such/route", &[]).await;
    assert_eq!(
        (missing.status, missing.json()["error"]["code"].clone()),
        (404, json!("NOT_FOUND"))
    );
}

#[tokio::test]
async fn openapi_docs_ui_and_two_listeners_are_served() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_with(dir.path(), &["--http-listen", "127.0.0.1:0"]);
    assert_eq!(server.http_addresses.len(), 2);
    let spec = get(&server, "/openapi.json", &[]).await.json();
    assert!(spec["openapi"].as_str().is_some_and(|version| version.starts_with("3.1")));
    assert!(spec["paths"]["/v1/transfers"]["post"].is_object());
    let docs = get(&server, "/docs/", &[]).await;
    assert!(docs.status == 200 && docs.body.contains("swagger"), "{}", docs.status);
    let ui = get(&server, "/", &[]).await;
    assert!(ui.body.contains("kopek") && ui.body.contains("\"USD\""));
    for asset in ["/ui/app.js", "/ui/style.css"] {
        assert_eq!(get(&server, asset, &[]).await.status, 200, "{asset}");
    }
    let second = http(&server.http_addresses[1], "GET", "/healthz", &[], None).await;
    assert_eq!(second.body, "ok\n", "the second listener serves the same API");
}

#[tokio::test]
async fn the_event_websocket_replays_from_a_cursor_then_streams_live() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let key = |k: &'static str| [("Idempotency-Key", k)];
    post(&server, "/v1/accounts", &key("a"), json!({"id": "acct", "currency": "USD"})).await;
    post(
        &server,
        "/v1/transfers",
        &key("d1"),
        json!({"kind": "deposit", "credit_account_id": "acct", "amount": "5", "currency": "USD"}),
    )
    .await;
    let url = format!("ws://{}/v1/ws?account=acct&after=0", server.http_address);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("websocket");
    let opened = next_json(&mut socket).await;
    assert_eq!(
        (opened["type"].clone(), opened["subject_id"].clone()),
        (json!("AccountOpened"), json!("acct"))
    );
    let posted = next_json(&mut socket).await;
    assert_eq!(posted["type"], "TransferPosted");
    let cursor = posted["sequence"].as_u64().expect("sequence");
    post(
        &server,
        "/v1/transfers",
        &key("d2"),
        json!({"kind": "deposit", "credit_account_id": "acct", "amount": "2", "currency": "USD"}),
    )
    .await;
    let live = next_json(&mut socket).await;
    assert_eq!(live["type"], "TransferPosted");
    assert!(live["sequence"].as_u64().expect("sequence") > cursor);
    let balance = live["payload"]["balances"]
        .as_array()
        .expect("balances")
        .iter()
        .find(|b| b["account_id"] == "acct")
        .cloned();
    assert_eq!(
        balance.map(|b| b["posted_minor"].clone()),
        Some(json!(700)),
        "events carry the balance after"
    );
    let refused = get(&server, "/v1/ws?type=Posted", &[]).await;
    assert_eq!(refused.status, 400, "an unknown event type is refused");
    assert!(refused.body.contains("unknown event type"), "{}", refused.body);
}

async fn next_json<S>(socket: &mut S) -> Value
where
    S: futures_util::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("in time")
        .expect("open")
        .expect("ok");
    serde_json::from_str(message.into_text().expect("text").as_str()).expect("JSON")
}
