//! Transfer search against the real binary, as a user calls it: REST `GET /v1/transfers`,
//! gRPC `ListTransfers` and `kopek transfers list` answer the same transfers for the same
//! filters, page with a cursor, and refuse a filter they cannot read with its reason.

use crate::support::*;
use kopek_proto::kopek::v1 as pb;
use serde_json::{Value, json};

async fn post(server: &Server, path: &str, key: &str, body: Value) -> HttpResponse {
    let headers = [("Idempotency-Key", key)];
    http(&server.http_address, "POST", path, &headers, Some(&body.to_string())).await
}

async fn search(server: &Server, query: &str) -> Value {
    let response =
        http(&server.http_address, "GET", &format!("/v1/transfers?{query}"), &[], None).await;
    assert_eq!(response.status, 200, "{query}: {}", response.body);
    response.json()
}

/// Every page of a REST search followed to the end: the transfers' idempotency keys.
async fn keys_of_every_page(server: &Server, query: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let with_cursor = match &cursor {
            Some(cursor) => format!("{query}&cursor={cursor}"),
            None => query.to_owned(),
        };
        let page = search(server, &with_cursor).await;
        let transfers = page["transfers"].as_array().expect("transfers").clone();
        keys.extend(
            transfers.iter().map(|t| t["idempotency_key"].as_str().expect("key").to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return keys,
        }
    }
    panic!("{query}: paging never ended");
}

/// alice and bob in USD, carol in EUR; deposits, a payment, a hold and a declined withdrawal.
pub(crate) async fn ledger(server: &Server) {
    for (id, currency) in [("alice", "USD"), ("bob", "USD"), ("carol", "EUR")] {
        let opened =
            post(server, "/v1/accounts", id, json!({"id": id, "currency": currency})).await;
        assert_eq!(opened.status, 201, "{}", opened.body);
    }
    let transfers = [
        (
            "d1",
            json!({"kind": "deposit", "credit_account_id": "alice", "amount": "100.00", "currency": "USD", "metadata": {"order": "o-1"}}),
        ),
        (
            "d2",
            json!({"kind": "deposit", "credit_account_id": "bob", "amount": "20.00", "currency": "USD"}),
        ),
        (
            "d3",
            json!({"kind": "deposit", "credit_account_id": "carol", "amount": "7.00", "currency": "EUR", "metadata": {"order": "o-2"}}),
        ),
        (
            "p1",
            json!({"kind": "payment", "debit_account_id": "alice", "credit_account_id": "bob", "amount": "12.50", "currency": "USD", "metadata": {"order": "o-1", "channel": "web"}}),
        ),
        (
            "h1",
            json!({"debit_account_id": "alice", "credit_account_id": "bob", "amount": "5.00", "currency": "USD", "hold": {}}),
        ),
        (
            "w1",
            json!({"kind": "withdrawal", "debit_account_id": "bob", "amount": "1000.00", "currency": "USD"}),
        ),
    ];
    for (key, body) in transfers {
        let created = post(server, "/v1/transfers", key, body).await;
        assert!(created.status == 201 || created.status == 402, "{key}: {}", created.body);
    }
    // Searches answer from the projection without waiting for it (docs/api.md).
    settled(server).await;
}

#[tokio::test]
async fn transfers_are_found_by_filter_on_rest_grpc_and_the_cli() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    ledger(&server).await;

    let newest_first = ["w1", "h1", "p1", "d3", "d2", "d1"];
    assert_eq!(keys_of_every_page(&server, "limit=100").await, newest_first);
    assert_eq!(keys_of_every_page(&server, "limit=2").await, newest_first, "pages of two");
    let oldest_first: Vec<&str> = newest_first.iter().rev().copied().collect();
    assert_eq!(keys_of_every_page(&server, "order=asc&limit=4").await, oldest_first);

    for (query, expected) in [
        ("account=alice", &["h1", "p1", "d1"][..]),
        ("account=bob&status=declined", &["w1"]),
        ("account=bob&status=pending", &["h1"]),
        ("kind=deposit", &["d3", "d2", "d1"]),
        ("currency=EUR", &["d3"]),
        ("currency=USD&min_amount=12.50&max_amount=20", &["p1", "d2"]),
        ("metadata.order=o-1", &["p1", "d1"]),
        ("metadata.order=o-1&metadata.channel=web", &["p1"]),
        ("metadata.order=o-9", &[]),
        ("idempotency_key=d2", &["d2"]),
        ("account=nobody", &[]),
        ("after=2999-01-01T00:00:00Z", &[]),
        ("before=2000-01-01T00:00:00Z", &[]),
        ("after=2000-01-01T00:00:00Z&before=2999-01-01T00:00:00Z&kind=payment", &["p1"]),
    ] {
        assert_eq!(keys_of_every_page(&server, query).await, expected, "{query}");
    }

    // A commit-time range is half open: [after, before).
    let page = search(&server, "idempotency_key=p1").await;
    let committed = page["transfers"][0]["committed_at"].as_str().expect("time").to_owned();
    let encoded = committed.replace('+', "%2B");
    assert_eq!(keys_of_every_page(&server, &format!("after={encoded}&kind=payment")).await, ["p1"]);
    assert!(
        keys_of_every_page(&server, &format!("before={encoded}&kind=payment")).await.is_empty()
    );

    // The transfer object is the one `GET /v1/transfers/{id}` answers.
    let p1 = &page["transfers"][0];
    let by_id = http(
        &server.http_address,
        "GET",
        &format!("/v1/transfers/{}", p1["id"].as_str().expect("id")),
        &[],
        None,
    )
    .await;
    assert_eq!(&by_id.json(), p1);

    // gRPC answers the same transfers for the same filters.
    let mut client = server.client().await;
    let request = pb::ListTransfersRequest {
        account_id: "alice".into(),
        metadata: [("order".to_owned(), "o-1".to_owned())].into(),
        page_size: 1,
        ..Default::default()
    };
    let first = client.list_transfers(request.clone()).await.expect("list").into_inner();
    assert_eq!(
        first.transfers.iter().map(|t| t.idempotency_key.as_str()).collect::<Vec<_>>(),
        ["p1"]
    );
    assert!(!first.next_page_token.is_empty(), "a second page may follow");
    let second = client
        .list_transfers(pb::ListTransfersRequest { page_token: first.next_page_token, ..request })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        second.transfers.iter().map(|t| t.idempotency_key.as_str()).collect::<Vec<_>>(),
        ["d1"]
    );
    let deposits = client
        .list_transfers(pb::ListTransfersRequest {
            kind: pb::TransferKind::Deposit as i32,
            ascending: true,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        deposits.transfers.iter().map(|t| t.idempotency_key.as_str()).collect::<Vec<_>>(),
        ["d1", "d2", "d3"]
    );
    let refused = client
        .list_transfers(pb::ListTransfersRequest { min_amount: "5".into(), ..Default::default() })
        .await
        .expect_err("an amount without its currency");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("min_amount needs currency"), "{}", refused.message());

    // `kopek transfers list --json` prints the same objects REST does.
    let grpc = server.grpc_url();
    let (code, out, err) =
        cli(&["transfers", "list", "--addr", &grpc, "--account", "alice", "--json"]);
    assert_eq!(code, 0, "{err}");
    let printed: Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(printed, search(&server, "account=alice").await);
    let (code, out, err) =
        cli(&["transfers", "list", "--addr", &grpc, "--metadata", "order=o-1", "--limit", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(" payment posted 12.50 USD alice -> bob key p1"), "{out}");
    assert!(err.contains("more may follow: --cursor "), "{err}");
    let (code, _, err) = cli(&["transfers", "list", "--addr", &grpc, "--kind", "gift"]);
    assert_eq!(
        (code, err.trim()),
        (1, "error: INVALID_ARGUMENT: --kind 'gift' is not one kopek knows")
    );
}

#[tokio::test]
async fn a_search_it_cannot_read_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    ledger(&server).await;
    for (query, said) in [
        ("acount=alice", "unknown filter 'acount'"),
        ("kind=gift", "kind 'gift' is not one of"),
        ("status=posted&status=pending", "status is given twice"),
        ("min_amount=1", "min_amount needs currency"),
        ("after=tuesday", "after:"),
        ("cursor=xyz", "cursor 'xyz'"),
        ("limit=-1", "limit '-1'"),
    ] {
        let response =
            http(&server.http_address, "GET", &format!("/v1/transfers?{query}"), &[], None).await;
        assert_eq!(response.status, 400, "{query}: {}", response.body);
        assert_eq!(response.json()["error"]["code"], "INVALID_ARGUMENT", "{query}");
        let message = response.json()["error"]["message"].as_str().unwrap_or_default().to_owned();
        assert!(message.contains(said), "{query}: {message}");
    }
}
