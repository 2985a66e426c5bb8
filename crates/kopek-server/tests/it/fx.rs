//! Currency conversion on the real binary: rates set with the CLI and over REST, price checks,
//! quotes (replayed, used once, expiring), cross-currency transfers through the liquidity
//! accounts, a held conversion captured after the rate moved, positions and spread, `kopek
//! verify` after it all; implicit quotes at cross rates; and the rate cache following
//! `RateUpdated` across two processes on one PostgreSQL database, in Redis and in process.

use crate::support::{Server, cli, http, postgres_or_skip, redis_or_skip};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn call(
    server: &Server,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let headers: Vec<(&str, &str)> =
        key.map(|key| vec![("Idempotency-Key", key)]).unwrap_or_default();
    let body = (method != "GET").then(|| body.to_string());
    let response = http(&server.http_address, method, path, &headers, body.as_deref()).await;
    let value = if response.body.is_empty() { Value::Null } else { response.json() };
    (response.status, value)
}

async fn open(server: &Server, id: &str, currency: &str) {
    let (status, body) =
        call(server, "POST", "/v1/accounts", Some(id), json!({"id": id, "currency": currency}))
            .await;
    assert_eq!(status, 201, "{body}");
}

async fn deposit(server: &Server, account: &str, amount: &str, currency: &str) {
    let body = json!({"kind": "deposit", "credit_account_id": account, "amount": amount, "currency": currency});
    let (status, body) =
        call(server, "POST", "/v1/transfers", Some(&format!("fund-{account}")), body).await;
    assert_eq!(status, 201, "{body}");
}

async fn posted(server: &Server, account: &str) -> i64 {
    let (status, body) =
        call(server, "GET", &format!("/v1/accounts/{account}/balance"), None, Value::Null).await;
    assert_eq!(status, 200, "{body}");
    body["balance"]["posted_minor"].as_i64().expect("posted")
}

fn rates_cli(server: &Server, args: &[&str]) -> (i32, String, String) {
    let addr = format!("http://{}", server.http_address);
    let mut all = vec!["rates"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--addr", &addr]);
    cli(&all)
}

#[tokio::test]
async fn rates_quotes_and_cross_currency_transfers_over_http() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut server = Server::start_with(&data, &["--fx-spread-bp", "50"]);
    open(&server, "alice", "USD").await;
    open(&server, "bob", "EUR").await;
    deposit(&server, "alice", "1000.00", "USD").await;

    // Rates: the CLI sets one (twice: the second changes nothing) and imports a file.
    let (code, out, err) = rates_cli(&server, &["set", "USD", "EUR", "0.9234", "--source", "ecb"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("USD/EUR 0.9234 (source ecb") && out.ends_with("set\n"), "{out}");
    let (code, out, _) = rates_cli(&server, &["set", "USD", "EUR", "0.9234", "--source", "ecb"]);
    assert_eq!(code, 0);
    assert!(out.ends_with("unchanged\n"), "{out}");
    let file = dir.path().join("rates.csv");
    std::fs::write(&file, "base,quote,rate\nUSD,JPY,151.37\nEUR,GBP,0.85\nUSD,USD,1\n")
        .expect("write");
    let (code, out, err) = rates_cli(&server, &["import", file.to_str().expect("utf-8")]);
    assert_eq!(code, 1, "one line is refused: {out}{err}");
    assert_eq!(out, "2 rates set, 0 unchanged, 1 refused\n");
    assert!(err.contains("refused USD/USD 1"), "{err}");
    let (code, out, _) = rates_cli(&server, &["list"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("3 rates in force (cross rates through USD)"), "{out}");
    // A malformed rate over REST is refused with its reason; a rate needs an admin (auth is
    // off on loopback, so the caller is one).
    let (status, body) =
        call(&server, "PUT", "/v1/fx/rates/USD/EUR", None, json!({"rate": "-1"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("INVALID_ARGUMENT")), "{body}");

    // A price check: 100.00 USD at 0.9234 less 50 bp is 91.88 EUR, 0.46 EUR of spread.
    let (status, price) = call(
        &server,
        "POST",
        "/v1/fx/convert",
        None,
        json!({"amount": "100.00", "from_currency": "USD", "to_currency": "EUR"}),
    )
    .await;
    assert_eq!(status, 200, "{price}");
    assert_eq!(price["converted_amount"], "91.88");
    assert_eq!(
        (price["spread_amount"].as_str(), price["rate_path"].as_str()),
        (Some("0.46"), Some("USDEUR"))
    );
    let inverse = json!({"amount": "10.00", "from_currency": "GBP", "to_currency": "EUR"});
    let (status, inverse) = call(&server, "POST", "/v1/fx/convert", None, inverse).await;
    assert_eq!((status, inverse["rate_path"].as_str()), (200, Some("1/EURGBP")), "{inverse}");
    // GBP reaches USD by no stored rate: there is no path to JPY.
    let (status, none) = call(
        &server,
        "POST",
        "/v1/fx/convert",
        None,
        json!({"amount": "1", "from_currency": "GBP", "to_currency": "JPY"}),
    )
    .await;
    assert_eq!((status, none["error"]["code"].as_str()), (404, Some("NOT_FOUND")), "{none}");

    // A quote, asked twice with one key: the same quote, marked as a replay.
    let ask = json!({"from": "USD", "to": "EUR", "amount": "100.00"});
    let (status, quote) = call(&server, "POST", "/v1/fx/quotes", Some("q1"), ask.clone()).await;
    assert_eq!(status, 201, "{quote}");
    assert_eq!(
        (quote["buy_amount"].as_str(), quote["mid_rate"].as_str()),
        (Some("91.88"), Some("0.9234"))
    );
    let again = http(
        &server.http_address,
        "POST",
        "/v1/fx/quotes",
        &[("Idempotency-Key", "q1")],
        Some(&ask.to_string()),
    )
    .await;
    assert_eq!((again.status, again.header("idempotent-replayed")), (201, Some("true")));
    assert_eq!(again.json()["id"], quote["id"]);
    let quote_id = quote["id"].as_str().expect("id").to_owned();

    // The transfer at the quote's terms: alice pays 100.00 USD, bob gets 91.88 EUR.
    let pay = json!({"debit_account_id": "alice", "credit_account_id": "bob", "currency": "USD", "quote_id": quote_id});
    let (status, transfer) =
        call(&server, "POST", "/v1/transfers", Some("pay-1"), pay.clone()).await;
    assert_eq!(status, 201, "{transfer}");
    assert_eq!(
        (transfer["credit_account_id"].as_str(), transfer["fx"]["leg"].as_str()),
        (Some("fx:USD"), Some("debit"))
    );
    assert_eq!(transfer["fx"]["payee_account_id"], "bob");
    assert_eq!((posted(&server, "alice").await, posted(&server, "bob").await), (90_000, 9_188));
    // Used once: another transfer with it is declined (and recorded), a retry replays.
    let reuse = json!({"debit_account_id": "alice", "credit_account_id": "bob", "currency": "USD", "quote_id": quote_id});
    let (status, body) = call(&server, "POST", "/v1/transfers", Some("pay-2"), reuse).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("QUOTE_EXPIRED")), "{body}");
    let (status, _) = call(&server, "POST", "/v1/transfers", Some("pay-1"), pay).await;
    assert_eq!(status, 201);
    // An amount that is not the quote's is refused before anything is recorded.
    let (_, other) = call(&server, "POST", "/v1/fx/quotes", Some("q2"), ask.clone()).await;
    let wrong = json!({"debit_account_id": "alice", "credit_account_id": "bob", "currency": "USD", "amount": "99.00", "quote_id": other["id"]});
    let (status, body) = call(&server, "POST", "/v1/transfers", Some("pay-3"), wrong).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("INVALID_AMOUNT")), "{body}");
    // A quote with a short life is one more quote (and event). That it expires is tested by
    // kopek-intake's tests/clock.rs, which moves a manual clock past a quote's life instead of
    // sleeping through it (QUOTE_EXPIRED answers 409, above).
    let short = json!({"from": "USD", "to": "EUR", "amount": "1.00", "ttl_seconds": 1});
    let (status, _) = call(&server, "POST", "/v1/fx/quotes", Some("q3"), short).await;
    assert_eq!(status, 201);
    // Without a quote this server does not convert.
    let implicit = json!({"debit_account_id": "alice", "credit_account_id": "bob", "currency": "USD", "amount": "1.00", "to_currency": "EUR"});
    let (status, body) = call(&server, "POST", "/v1/transfers", Some("pay-5"), implicit).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().expect("message").contains("quote"), "{body}");

    // A held conversion, then the rate moves, then the capture: exactly the quoted amounts.
    let (_, held_quote) = call(&server, "POST", "/v1/fx/quotes", Some("q4"), ask).await;
    let hold = json!({"debit_account_id": "alice", "credit_account_id": "bob", "currency": "USD", "quote_id": held_quote["id"], "hold": {}});
    let (status, hold) = call(&server, "POST", "/v1/transfers", Some("hold-1"), hold).await;
    assert_eq!((status, hold["status"].as_str()), (201, Some("pending")), "{hold}");
    let (status, _) =
        call(&server, "PUT", "/v1/fx/rates/USD/EUR", None, json!({"rate": "0.5"})).await;
    assert_eq!(status, 200);
    let path = format!("/v1/transfers/{}/capture", hold["id"].as_str().expect("id"));
    let (status, capture) = call(&server, "POST", &path, Some("capture-1"), json!({})).await;
    assert_eq!((status, capture["status"].as_str()), (201, Some("posted")), "{capture}");
    assert_eq!((posted(&server, "alice").await, posted(&server, "bob").await), (80_000, 18_376));

    // The pools and the spread earned: two conversions of 0.46 EUR each.
    let (_, positions) = call(&server, "GET", "/v1/fx/positions", None, Value::Null).await;
    let positions: Vec<(String, i64)> = positions["positions"]
        .as_array()
        .expect("positions")
        .iter()
        .map(|p| {
            (
                p["account_id"].as_str().expect("id").to_owned(),
                p["posted_minor"].as_i64().expect("minor"),
            )
        })
        .collect();
    assert_eq!(
        positions,
        [
            ("fx-revenue:EUR".to_owned(), 92),
            ("fx:EUR".to_owned(), -18_468),
            ("fx:USD".to_owned(), 20_000)
        ]
    );
    let (_, spread) = call(&server, "GET", "/v1/fx/spread", None, Value::Null).await;
    assert_eq!(
        spread["totals"],
        json!([{"currency": "EUR", "amount": "0.92", "amount_minor": 92, "entries": 2}])
    );
    let (_, future) =
        call(&server, "GET", "/v1/fx/spread?from=2999-01-01T00:00:00Z", None, Value::Null).await;
    assert_eq!(future["totals"], json!([]));
    // Every rate and quote is an event.
    let (_, events) = call(&server, "GET", "/v1/events?limit=1000", None, Value::Null).await;
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(kinds.iter().filter(|kind| **kind == "RateUpdated").count(), 4, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|kind| **kind == "QuoteCreated").count(), 4, "{kinds:?}");

    server.terminate();
    let (code, out, err) = cli(&["verify", "--data-dir", data.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "the books balance after conversions: {out}{err}");
}

#[tokio::test]
async fn implicit_quotes_convert_at_the_rate_in_force_through_the_base() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_with(&dir.path().join("data"), &["--fx-implicit-quotes"]);
    open(&server, "bob", "EUR").await;
    open(&server, "dan", "JPY").await;
    deposit(&server, "bob", "500.00", "EUR").await;
    for (pair, rate) in [("USD/EUR", "0.9234"), ("USD/JPY", "151.37")] {
        let (status, _) =
            call(&server, "PUT", &format!("/v1/fx/rates/{pair}"), None, json!({"rate": rate}))
                .await;
        assert_eq!(status, 200);
    }
    let send = json!({"debit_account_id": "bob", "credit_account_id": "dan", "currency": "EUR", "amount": "100.00", "to_currency": "JPY"});
    let (status, transfer) = call(&server, "POST", "/v1/transfers", Some("x1"), send.clone()).await;
    assert_eq!(status, 201, "{transfer}");
    assert_eq!(transfer["fx"]["rate_path"], "1/USDEUR * USDJPY");
    // 100.00 EUR / 0.9234 * 151.37 = 16,392.67 JPY -> 16,393 (no minor digits).
    assert_eq!(transfer["fx"]["buy_amount_minor"], 16_393);
    assert_eq!(posted(&server, "dan").await, 16_393);
    // A retry after the rate moved replays the first price.
    call(&server, "PUT", "/v1/fx/rates/USD/JPY", None, json!({"rate": "100"})).await;
    let (status, replay) = call(&server, "POST", "/v1/transfers", Some("x1"), send).await;
    assert_eq!((status, replay["id"].clone()), (201, transfer["id"].clone()));
    assert_eq!(posted(&server, "dan").await, 16_393);
}

/// Two processes on one database: B sets a rate, A prices with it. With Redis, A's next price
/// has it at once (B dropped the shared cache); without, A drops its own on the event.
#[tokio::test]
async fn rate_caches_follow_updates_across_two_processes() {
    let Some(redis) = redis_or_skip() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    for shared_cache in [true, false] {
        let data = dir.path().join(if shared_cache { "redis" } else { "local" });
        let Some(database) = postgres_or_skip(&data) else { return };
        let mut extra = vec!["--database", database.as_str()];
        if shared_cache {
            extra.extend_from_slice(&["--redis", redis.as_str()]);
        }
        let a = Server::start_with(&data.join("a"), &extra);
        let b = Server::start_with(&data.join("b"), &extra);
        let ask = json!({"amount": "100.00", "from_currency": "USD", "to_currency": "EUR"});
        // Set through A; each process prices with it (and caches it).
        call(&a, "PUT", "/v1/fx/rates/USD/EUR", None, json!({"rate": "0.9"})).await;
        for server in [&a, &b] {
            let (status, price) = call(server, "POST", "/v1/fx/convert", None, ask.clone()).await;
            assert_eq!(
                (status, price["converted_amount"].as_str()),
                (200, Some("90.00")),
                "{price}"
            );
        }
        let (status, _) =
            call(&b, "PUT", "/v1/fx/rates/USD/EUR", None, json!({"rate": "0.8"})).await;
        assert_eq!(status, 200);
        let started = Instant::now();
        loop {
            let (_, price) = call(&a, "POST", "/v1/fx/convert", None, ask.clone()).await;
            if price["converted_amount"] == "80.00" {
                break;
            }
            assert!(!shared_cache, "with Redis the other process's change shows at once: {price}");
            // Well inside the cache's 5 s lifetime: the event dropped it, not its age.
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "A still prices at the old rate: {price}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The gRPC twin: rates, a price check, a quote (replayed), a transfer at its terms, the quote
/// used once, and the transfer's conversion on the wire.
#[tokio::test]
async fn grpc_sets_rates_quotes_and_converts() {
    use crate::support::{new_account, open_accounts};
    use kopek_proto::kopek::v1 as pb;
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_with(&dir.path().join("data"), &["--fx-spread-bp", "50"]);
    let mut client = server.client().await;
    open_accounts(&mut client, &["alice"]).await;
    client
        .create_accounts(pb::CreateAccountsRequest { accounts: vec![new_account("bob", "EUR")] })
        .await
        .expect("open bob");
    deposit(&server, "alice", "500.00", "USD").await;
    let rate = |base: &str, quote: &str, rate: &str| pb::RateInput {
        base: base.to_owned(),
        quote: quote.to_owned(),
        rate: rate.to_owned(),
        ..Default::default()
    };
    let set = client
        .set_rates(pb::SetRatesRequest {
            rates: vec![rate("USD", "EUR", "0.9234"), rate("USD", "EUR", "x")],
        })
        .await
        .expect("set rates")
        .into_inner();
    assert!(set.results[0].changed && set.results[0].error.is_none(), "{set:?}");
    assert_eq!(
        set.results[1].error.as_ref().map(|e| e.code),
        Some(pb::ErrorCode::InvalidArgument as i32)
    );
    let listed = client.list_rates(pb::ListRatesRequest {}).await.expect("list").into_inner();
    assert_eq!((listed.base_currency.as_str(), listed.rates.len()), ("USD", 1));
    let price = client
        .convert(pb::ConvertRequest {
            from_currency: "USD".to_owned(),
            to_currency: "EUR".to_owned(),
            amount: "100.00".to_owned(),
            ..Default::default()
        })
        .await
        .expect("convert")
        .into_inner();
    assert_eq!(price.converted_amount, "91.88");
    let ask = pb::CreateQuoteRequest {
        idempotency_key: "gq1".to_owned(),
        from: "USD".to_owned(),
        to: "EUR".to_owned(),
        amount_minor: 10_000,
        ..Default::default()
    };
    let quote = client.create_quote(ask.clone()).await.expect("quote").into_inner();
    let again = client.create_quote(ask).await.expect("quote again").into_inner();
    assert!(!quote.replayed && again.replayed);
    let quote = quote.quote.expect("a quote");
    assert_eq!(again.quote.as_ref().map(|q| q.id.as_str()), Some(quote.id.as_str()));
    let pay = |key: &str| pb::TransferRequest {
        idempotency_key: key.to_owned(),
        debit_account_id: "alice".to_owned(),
        credit_account_id: "bob".to_owned(),
        quote_id: quote.id.clone(),
        ..Default::default()
    };
    let results = client
        .create_transfers(pb::CreateTransfersRequest {
            transfers: vec![pay("g1"), pay("g2")],
            linked: false,
        })
        .await
        .expect("transfers")
        .into_inner()
        .results;
    let first = results[0].transfer.as_ref().expect("recorded");
    let fx = first.fx.as_ref().expect("the conversion on the wire");
    assert_eq!(
        (fx.leg.as_str(), fx.terms.as_ref().map(|t| t.buy_amount_minor)),
        ("debit", Some(9_188))
    );
    assert_eq!(results[1].error.as_ref().map(|e| e.code), Some(pb::ErrorCode::QuoteExpired as i32));
    let stored = client
        .get_quote(pb::GetQuoteRequest { id: quote.id.clone() })
        .await
        .expect("get quote")
        .into_inner()
        .quote
        .expect("quote");
    assert_eq!(stored.used_by_transfer_id, first.id);
    assert_eq!(posted(&server, "bob").await, 9_188);
    // A quote fixes the amounts: a request that also gives another one is refused,
    // unrecorded (docs/api.md: the same rule as REST).
    let mut with_amount = pay("g3");
    with_amount.amount_minor = 9_999;
    let refused = client
        .create_transfers(pb::CreateTransfersRequest {
            transfers: vec![with_amount],
            linked: false,
        })
        .await
        .expect("transfers")
        .into_inner()
        .results;
    assert!(refused[0].transfer.is_none());
    assert_eq!(
        refused[0].error.as_ref().map(|e| e.code),
        Some(pb::ErrorCode::InvalidAmount as i32)
    );
}
