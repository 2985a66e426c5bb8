//! One meaning per input (`docs/api.md`): the same transfer, quote and account inputs sent
//! through REST, kopek.v1 gRPC and the CLI answer the same code on every surface that can
//! express them.

use crate::support::*;
use kopek_proto::kopek::v1 as pb;
use serde_json::{Value, json};

/// One input, as each surface says it. `cli`: the arguments after `kopek`, when the CLI can
/// say it (it moves money between two named accounts in the payer's currency).
struct Case {
    name: &'static str,
    rest: Value,
    grpc: pb::TransferRequest,
    cli: Option<Vec<&'static str>>,
    expect: &'static str,
}

/// A transfer request over both APIs: the JSON body and the gRPC message of the same input.
fn both(
    debit: &str,
    credit: &str,
    amount: Option<&str>,
    currency: Option<&str>,
) -> (Value, pb::TransferRequest) {
    let mut rest = json!({"debit_account_id": debit, "credit_account_id": credit});
    if let Some(amount) = amount {
        rest["amount"] = json!(amount);
    }
    if let Some(currency) = currency {
        rest["currency"] = json!(currency);
    }
    let grpc = pb::TransferRequest {
        debit_account_id: debit.to_owned(),
        credit_account_id: credit.to_owned(),
        amount: amount.unwrap_or_default().to_owned(),
        currency: currency.unwrap_or_default().to_owned(),
        ..Default::default()
    };
    (rest, grpc)
}

fn case(
    name: &'static str,
    (rest, grpc): (Value, pb::TransferRequest),
    cli: Option<Vec<&'static str>>,
    expect: &'static str,
) -> Case {
    Case { name, rest, grpc, cli, expect }
}

/// The code of a gRPC answer: the transfer's status when it applied, else its error.
fn grpc_code(result: &pb::TransferResult) -> String {
    let error = result.error.as_ref().or(result.transfer.as_ref().and_then(|t| t.error.as_ref()));
    match error {
        Some(error) => pb::ErrorCode::try_from(error.code)
            .map(|code| code.as_str_name().trim_start_matches("ERROR_CODE_").to_owned())
            .unwrap_or_else(|_| error.code.to_string()),
        None => "POSTED".to_owned(),
    }
}

async fn rest_call(server: &Server, path: &str, key: &str, body: &Value) -> (String, Value) {
    let response = http(
        &server.http_address,
        "POST",
        path,
        &[("Idempotency-Key", key)],
        Some(&body.to_string()),
    )
    .await;
    let json = response.json();
    let code = match json["error"]["code"].as_str() {
        Some(code) => code.to_owned(),
        None if response.status == 201 => "POSTED".to_owned(),
        None => format!("HTTP {}", response.status),
    };
    (code, json)
}

fn cli_code(server: &Server, args: &[&str]) -> String {
    let mut all = args.to_vec();
    let url = server.grpc_url();
    all.extend(["--addr", url.as_str()]);
    let (code, _, stderr) = cli(&all);
    if code == 0 {
        return "POSTED".to_owned();
    }
    // "error: CODE: sentence"
    stderr
        .lines()
        .find_map(|line| line.strip_prefix("error: "))
        .and_then(|rest| rest.split_once(':'))
        .map_or_else(|| format!("exit {code}: {stderr}"), |(code, _)| code.to_owned())
}

#[tokio::test]
async fn the_same_input_has_the_same_code_on_rest_grpc_and_the_cli() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    client
        .create_accounts(pb::CreateAccountsRequest {
            accounts: vec![
                new_account("alice", "USD"),
                new_account("bob", "USD"),
                new_account("erin", "EUR"),
            ],
        })
        .await
        .expect("open accounts");
    assert_eq!(error_code(&one(&mut client, deposit("fund-alice", "alice", 100_000)).await), None);
    let addr = format!("http://{}", server.http_address);
    let (code, out, err) = cli(&["rates", "set", "USD", "EUR", "0.9234", "--addr", &addr]);
    assert_eq!(code, 0, "{out}{err}");
    // A quote per surface for the rows that use one up.
    let mut quotes = Vec::new();
    for key in ["quote-rest", "quote-grpc", "quote-spare"] {
        let ask = json!({"from": "USD", "to": "EUR", "amount": "10.00"});
        let (_, quote) = rest_call(&server, "/v1/fx/quotes", key, &ask).await;
        quotes.push(quote["id"].as_str().expect("quote id").to_owned());
    }

    let quoted = |quote: &str, currency: Option<&str>, amount: Option<&str>| {
        let (mut rest, mut grpc) = both("alice", "erin", amount, currency);
        rest["quote_id"] = json!(quote);
        grpc.quote_id = quote.to_owned();
        (rest, grpc)
    };
    let cases = [
        case(
            "posts",
            both("alice", "bob", Some("1.00"), Some("USD")),
            Some(vec!["transfer", "alice", "bob", "1.00"]),
            "POSTED",
        ),
        case(
            "a payee id no account can have",
            both("alice", "bob smith", Some("1.00"), Some("USD")),
            Some(vec!["transfer", "alice", "bob smith", "1.00"]),
            "INVALID_ARGUMENT",
        ),
        case(
            "a payer id no account can have",
            both("a/b", "bob", Some("1.00"), Some("USD")),
            Some(vec!["transfer", "a/b", "bob", "1.00"]),
            "INVALID_ARGUMENT",
        ),
        case(
            "an unknown payee",
            both("alice", "ghost", Some("1.00"), Some("USD")),
            Some(vec!["transfer", "alice", "ghost", "1.00"]),
            "ACCOUNT_NOT_FOUND",
        ),
        case(
            "an unknown payer",
            both("ghost", "bob", Some("1.00"), Some("USD")),
            Some(vec!["transfer", "ghost", "bob", "1.00"]),
            "ACCOUNT_NOT_FOUND",
        ),
        case(
            "more decimals than the currency has",
            both("alice", "bob", Some("1.001"), Some("USD")),
            Some(vec!["transfer", "alice", "bob", "1.001"]),
            "INVALID_AMOUNT",
        ),
        case(
            "more than the payer has",
            both("alice", "bob", Some("5000.00"), Some("USD")),
            Some(vec!["transfer", "alice", "bob", "5000.00"]),
            "INSUFFICIENT_FUNDS",
        ),
        case(
            "to itself",
            both("alice", "alice", Some("1.00"), Some("USD")),
            Some(vec!["transfer", "alice", "alice", "1.00"]),
            "SAME_ACCOUNT",
        ),
        case(
            "into another currency without a quote",
            both("alice", "erin", Some("1.00"), Some("USD")),
            Some(vec!["transfer", "alice", "erin", "1.00"]),
            "CURRENCY_MISMATCH",
        ),
        case("no amount", both("alice", "bob", None, Some("USD")), None, "INVALID_AMOUNT"),
        case("no currency", both("alice", "bob", Some("1.00"), None), None, "INVALID_ARGUMENT"),
        case(
            "a currency the quote does not sell",
            quoted(&quotes[2], Some("GBP"), None),
            None,
            "CURRENCY_MISMATCH",
        ),
        case(
            "an amount the quote does not sell",
            quoted(&quotes[2], Some("USD"), Some("9.00")),
            None,
            "INVALID_AMOUNT",
        ),
        case(
            "a text that is no quote id",
            quoted("not-a-quote", None, None),
            None,
            "INVALID_ARGUMENT",
        ),
        case(
            "a quote without a payee",
            {
                let (mut rest, mut grpc) = quoted(&quotes[2], Some("USD"), None);
                rest["credit_account_id"] = json!("");
                grpc.credit_account_id = String::new();
                (rest, grpc)
            },
            None,
            "INVALID_ARGUMENT",
        ),
    ];
    for (index, case) in cases.into_iter().enumerate() {
        let (rest, _) =
            rest_call(&server, "/v1/transfers", &format!("r-{index}"), &case.rest).await;
        let grpc = pb::TransferRequest { idempotency_key: format!("g-{index}"), ..case.grpc };
        let grpc = grpc_code(&one(&mut client, grpc).await);
        assert_eq!((rest.as_str(), grpc.as_str()), (case.expect, case.expect), "{}", case.name);
        if let Some(args) = case.cli {
            assert_eq!(cli_code(&server, &args), case.expect, "{} (CLI)", case.name);
        }
    }

    // The quote's own currency stated, its amount left out: both surfaces convert.
    let (rest, body) = rest_call(
        &server,
        "/v1/transfers",
        "quoted-rest",
        &quoted(&quotes[0], Some("USD"), None).0,
    )
    .await;
    assert_eq!(rest, "POSTED", "{body}");
    let grpc = pb::TransferRequest {
        idempotency_key: "quoted-grpc".to_owned(),
        ..quoted(&quotes[1], Some("USD"), None).1
    };
    assert_eq!(grpc_code(&one(&mut client, grpc).await), "POSTED");

    // Quotes read by the same rules: what each surface answers for the same request.
    let quote_cases: [(&str, Value, pb::CreateQuoteRequest, &str); 4] = [
        (
            "no amount",
            json!({"from": "USD", "to": "EUR"}),
            pb::CreateQuoteRequest { from: "USD".into(), to: "EUR".into(), ..Default::default() },
            "INVALID_AMOUNT",
        ),
        (
            "a spread above the server's",
            json!({"from": "USD", "to": "EUR", "amount": "10.00", "spread_bp": 9_999}),
            pb::CreateQuoteRequest {
                from: "USD".into(),
                to: "EUR".into(),
                amount: "10.00".into(),
                spread_bp: Some(9_999),
                ..Default::default()
            },
            "INVALID_ARGUMENT",
        ),
        (
            "a currency that is not ISO 4217",
            json!({"from": "USD", "to": "XYZ", "amount": "10.00"}),
            pb::CreateQuoteRequest {
                from: "USD".into(),
                to: "XYZ".into(),
                amount: "10.00".into(),
                ..Default::default()
            },
            "UNKNOWN_CURRENCY",
        ),
        (
            "more decimals than the currency has",
            json!({"from": "USD", "to": "EUR", "amount": "10.001"}),
            pb::CreateQuoteRequest {
                from: "USD".into(),
                to: "EUR".into(),
                amount: "10.001".into(),
                ..Default::default()
            },
            "INVALID_AMOUNT",
        ),
    ];
    for (index, (name, rest, grpc, expect)) in quote_cases.into_iter().enumerate() {
        let (rest, _) = rest_call(&server, "/v1/fx/quotes", &format!("qr-{index}"), &rest).await;
        let grpc = pb::CreateQuoteRequest { idempotency_key: format!("qg-{index}"), ..grpc };
        let status = client.create_quote(grpc).await.expect_err("refused");
        let grpc = status.message().split(':').next().unwrap_or_default().to_owned();
        assert_eq!((rest.as_str(), grpc.as_str()), (expect, expect), "quote: {name}");
    }

    // Accounts read by the same rules.
    let account_cases = [
        ("an id no account can have", "a b", "USD", None, "INVALID_ARGUMENT"),
        ("a currency that is not ISO 4217", "acct-xyz", "XYZ", None, "UNKNOWN_CURRENCY"),
        ("a negative overdraft limit", "acct-neg", "USD", Some(-5), "INVALID_ARGUMENT"),
    ];
    for (index, (name, id, currency, limit, expect)) in account_cases.into_iter().enumerate() {
        let mut rest = json!({"id": id, "currency": currency});
        if let Some(limit) = limit {
            rest["overdraft_limit_minor"] = json!(limit);
        }
        let (rest, _) = rest_call(&server, "/v1/accounts", &format!("ar-{index}"), &rest).await;
        let account = pb::NewAccount {
            id: id.to_owned(),
            currency: currency.to_owned(),
            overdraft_limit_minor: limit.unwrap_or_default(),
            ..Default::default()
        };
        let results = client
            .create_accounts(pb::CreateAccountsRequest { accounts: vec![account] })
            .await
            .expect("create accounts")
            .into_inner()
            .results;
        let grpc = results[0].error.as_ref().map_or_else(
            || "CREATED".to_owned(),
            |error| {
                pb::ErrorCode::try_from(error.code)
                    .map(|code| code.as_str_name().trim_start_matches("ERROR_CODE_").to_owned())
                    .unwrap_or_default()
            },
        );
        assert_eq!((rest.as_str(), grpc.as_str()), (expect, expect), "account: {name}");
    }

    // A hold named by a text that is no transfer id.
    let (rest, _) =
        rest_call(&server, "/v1/transfers/not-an-id/capture", "capture-rest", &json!({})).await;
    let capture = pb::TransferRequest {
        idempotency_key: "capture-grpc".to_owned(),
        action: pb::TransferAction::Capture as i32,
        pending_id: "not-an-id".to_owned(),
        ..Default::default()
    };
    let grpc = grpc_code(&one(&mut client, capture).await);
    assert_eq!((rest.as_str(), grpc.as_str()), ("INVALID_ARGUMENT", "INVALID_ARGUMENT"));

    // A linked request with a transfer that cannot be read: nothing commits, and both
    // surfaces say the same sentence for the others.
    let (good, good_grpc) = both("alice", "bob", Some("1.00"), Some("USD"));
    let (bad, bad_grpc) = both("alice", "bob", Some("1.001"), Some("USD"));
    let batch = json!({"linked": true, "transfers": [
        {"idempotency_key": "linked-rest-0", "debit_account_id": good["debit_account_id"], "credit_account_id": good["credit_account_id"], "amount": good["amount"], "currency": good["currency"]},
        {"idempotency_key": "linked-rest-1", "debit_account_id": bad["debit_account_id"], "credit_account_id": bad["credit_account_id"], "amount": bad["amount"], "currency": bad["currency"]},
    ]});
    let response =
        http(&server.http_address, "POST", "/v1/transfers/batch", &[], Some(&batch.to_string()))
            .await;
    let rest = response.json();
    let response = client
        .create_transfers(pb::CreateTransfersRequest {
            transfers: vec![
                pb::TransferRequest { idempotency_key: "linked-grpc-0".to_owned(), ..good_grpc },
                pb::TransferRequest { idempotency_key: "linked-grpc-1".to_owned(), ..bad_grpc },
            ],
            linked: true,
        })
        .await
        .expect("create transfers")
        .into_inner();
    let grpc: Vec<(String, String)> = response
        .results
        .iter()
        .map(|result| {
            let message = result.error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
            (grpc_code(result), message)
        })
        .collect();
    let rest: Vec<(String, String)> = rest["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|result| {
            let text = |name: &str| result["error"][name].as_str().unwrap_or_default().to_owned();
            (text("code"), text("message"))
        })
        .collect();
    assert_eq!(rest, grpc);
    assert_eq!(
        (rest[0].0.as_str(), rest[0].1.as_str(), rest[1].0.as_str()),
        (
            "LINKED_EVENT_FAILED",
            "the transfer at index 1 of this linked request failed with INVALID_AMOUNT",
            "INVALID_AMOUNT"
        )
    );
}
