//! `payment.v1.PaymentService` against the real binary: every rule of `shared/spec/README.md`.

use crate::support::*;
use kopek_proto::kopek::v1 as ledger;
use kopek_proto::payment::v1 as pb;
use kopek_proto::payment::v1::payment_service_client::PaymentServiceClient;
use tonic::Code;
use tonic::transport::Channel;

async fn setup() -> (tempfile::TempDir, Server, PaymentServiceClient<Channel>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    let accounts =
        vec![new_account("payer", "USD"), new_account("payee", "USD"), new_account("euros", "EUR")];
    let results =
        client.create_accounts(ledger::CreateAccountsRequest { accounts }).await.expect("accounts");
    assert!(results.into_inner().results.iter().all(|result| result.error.is_none()));
    one(&mut client, deposit("fund", "payer", 10_000)).await;
    let payments = PaymentServiceClient::new(server.channel().await);
    (dir, server, payments)
}

fn request(
    key: &str,
    payer: &str,
    payee: &str,
    cents: i64,
    currency: &str,
) -> pb::AuthorizePaymentRequest {
    pb::AuthorizePaymentRequest {
        idempotency_key: key.to_owned(),
        payer_account_id: payer.to_owned(),
        payee_account_id: payee.to_owned(),
        amount_cents: cents,
        currency: currency.to_owned(),
        description: format!("payment {key}"),
    }
}

async fn authorize(
    client: &mut PaymentServiceClient<Channel>,
    request: pb::AuthorizePaymentRequest,
) -> pb::AuthorizePaymentResponse {
    client.authorize_payment(request).await.expect("gRPC OK").into_inner()
}

fn declined_with(response: &pb::AuthorizePaymentResponse) -> Option<pb::PaymentErrorCode> {
    assert_eq!(response.status, pb::PaymentStatus::Declined as i32, "{response:?}");
    assert_eq!(response.payment_id.len(), 26, "a declined payment has an id too");
    response
        .error
        .as_ref()
        .map(|error| pb::PaymentErrorCode::try_from(error.code).expect("known code"))
}

async fn balance(
    client: &mut PaymentServiceClient<Channel>,
    account: &str,
) -> pb::GetAccountBalanceResponse {
    let request = pb::GetAccountBalanceRequest { account_id: account.to_owned() };
    client.get_account_balance(request).await.expect("balance").into_inner()
}

#[tokio::test]
async fn malformed_requests_are_invalid_argument_and_record_nothing() {
    let (_dir, _server, mut client) = setup().await;
    let long_id = "x".repeat(129);
    let long_key = "k".repeat(256);
    let cases = [
        request("", "payer", "payee", 100, "USD"),
        request("k1", "", "payee", 100, "USD"),
        request("k1", "payer", "", 100, "USD"),
        request("k1", "payer", "payee", 100, ""),
        request("k1", &long_id, "payee", 100, "USD"),
        request("k1", "payer", &long_id, 100, "USD"),
        request(&long_key, "payer", "payee", 100, "USD"),
        request("k1", "payer", "payee", 100, "DOLLARS"),
    ];
    for case in cases {
        let status = client.authorize_payment(case.clone()).await.expect_err("invalid");
        assert_eq!(status.code(), Code::InvalidArgument, "{case:?}: {status:?}");
    }
    let fresh = authorize(&mut client, request("k1", "payer", "payee", 100, "USD")).await;
    assert_eq!(fresh.status, pb::PaymentStatus::Authorized as i32, "k1 was never recorded");
}

#[tokio::test]
async fn declines_come_in_the_documented_order() {
    let (_dir, _server, mut client) = setup().await;
    use pb::PaymentErrorCode as E;
    let cases = [
        (request("d1", "payer", "payee", 0, "USD"), E::InvalidAmount),
        (request("d2", "payer", "payee", -5, "USD"), E::InvalidAmount),
        (request("d3", "payer", "payer", 0, "USD"), E::InvalidAmount),
        (request("d4", "payer", "payer", 100, "USD"), E::SameAccount),
        (request("d5", "ghost", "ghost", 100, "USD"), E::SameAccount),
        (request("d6", "ghost", "nobody", 100, "EUR"), E::AccountNotFound),
        (request("d7", "payer", "nobody", 100, "USD"), E::AccountNotFound),
        (request("d8", "payer", "euros", 100, "USD"), E::CurrencyMismatch),
        (request("d9", "payer", "payee", 100, "EUR"), E::CurrencyMismatch),
        (request("d10", "payer", "payee", 10_001, "USD"), E::InsufficientFunds),
    ];
    for (case, expected) in cases {
        let response = authorize(&mut client, case.clone()).await;
        assert_eq!(declined_with(&response), Some(expected), "{case:?}");
    }
    let payer_first = authorize(&mut client, request("d11", "ghost", "nobody", 1, "USD")).await;
    assert!(
        payer_first.error.as_ref().is_some_and(|e| e.message.contains("ghost")),
        "the payer is checked first"
    );
    let payee_second = authorize(&mut client, request("d12", "payer", "nobody", 1, "USD")).await;
    assert!(payee_second.error.as_ref().is_some_and(|e| e.message.contains("nobody")));
    let poor = authorize(&mut client, request("d13", "payer", "payee", 20_000, "USD")).await;
    assert_eq!(
        poor.error.map(|e| e.message),
        Some("balance 100.00 USD is less than 200.00 USD".to_owned())
    );
    assert_eq!(
        balance(&mut client, "payer").await.available_balance_cents,
        10_000,
        "declines move nothing"
    );
}

#[tokio::test]
async fn holds_count_against_the_available_balance() {
    let (_dir, server, mut client) = setup().await;
    let mut ledger_client = server.client().await;
    let hold = ledger::TransferRequest {
        action: ledger::TransferAction::Hold as i32,
        ..post("hold", "payer", "payee", 9_000)
    };
    assert_eq!(status(&one(&mut ledger_client, hold).await), ledger::TransferStatus::Pending);
    let held = balance(&mut client, "payer").await;
    assert_eq!(
        (held.available_balance_cents, held.pending_balance_cents, held.currency.as_str()),
        (1_000, 9_000, "USD")
    );
    let response = authorize(&mut client, request("p1", "payer", "payee", 1_001, "USD")).await;
    assert_eq!(declined_with(&response), Some(pb::PaymentErrorCode::InsufficientFunds));
    let response = authorize(&mut client, request("p2", "payer", "payee", 1_000, "USD")).await;
    assert_eq!(response.status, pb::PaymentStatus::Authorized as i32);
}

#[tokio::test]
async fn an_authorized_payment_moves_money_at_once_and_replays_as_duplicate() {
    let (dir, server, mut client) = setup().await;
    let first = authorize(&mut client, request("pay-1", "payer", "payee", 2_500, "USD")).await;
    assert_eq!(first.status, pb::PaymentStatus::Authorized as i32);
    assert_eq!(first.payment_id.len(), 26);
    assert!(first.error.is_none());
    assert_eq!(balance(&mut client, "payer").await.available_balance_cents, 7_500);
    assert_eq!(balance(&mut client, "payee").await.available_balance_cents, 2_500);

    // The same key, with and without another description: the original answer again.
    for description in ["payment pay-1", "another description"] {
        let replay_request = pb::AuthorizePaymentRequest {
            description: description.to_owned(),
            ..request("pay-1", "payer", "payee", 2_500, "USD")
        };
        let replay = authorize(&mut client, replay_request).await;
        assert_eq!(replay.status, pb::PaymentStatus::Duplicate as i32);
        assert_eq!(
            (&replay.payment_id, &replay.processed_at),
            (&first.payment_id, &first.processed_at)
        );
    }
    assert_eq!(
        balance(&mut client, "payer").await.available_balance_cents,
        7_500,
        "a replay moves nothing"
    );
    let reuse = client
        .authorize_payment(request("pay-1", "payer", "payee", 2_501, "USD"))
        .await
        .expect_err("reuse");
    assert_eq!(reuse.code(), Code::FailedPrecondition);
    assert!(reuse.message().contains("IDEMPOTENCY_KEY_REUSED"), "{}", reuse.message());

    let declined =
        authorize(&mut client, request("pay-2", "payer", "payee", 1_000_000, "USD")).await;
    let replayed =
        authorize(&mut client, request("pay-2", "payer", "payee", 1_000_000, "USD")).await;
    assert_eq!(replayed.status, pb::PaymentStatus::Duplicate as i32);
    assert_eq!(replayed.payment_id, declined.payment_id);
    assert_eq!(replayed.error, declined.error, "a declined original replays its error");

    let got = client
        .get_payment(pb::GetPaymentRequest { payment_id: first.payment_id.clone() })
        .await
        .expect("get");
    let payment = got.into_inner().payment.expect("payment");
    assert_eq!(
        (payment.payer_account_id.as_str(), payment.payee_account_id.as_str()),
        ("payer", "payee")
    );
    assert_eq!((payment.amount_cents, payment.currency.as_str()), (2_500, "USD"));
    assert_eq!(payment.status, pb::PaymentStatus::Authorized as i32);
    assert_eq!(payment.description, "payment pay-1", "the original description is kept");
    assert_eq!(payment.created_at, first.processed_at);
    let got = client
        .get_payment(pb::GetPaymentRequest { payment_id: declined.payment_id.clone() })
        .await
        .expect("get");
    assert_eq!(
        got.into_inner().payment.map(|p| p.status),
        Some(pb::PaymentStatus::Declined as i32)
    );

    // The same ledger: the payment is a DEBIT and a CREDIT entry, with one outbox event.
    let mut ledger_client = server.client().await;
    let entries = ledger_client
        .list_entries(ledger::ListEntriesRequest {
            account_id: "payee".into(),
            ..Default::default()
        })
        .await
        .expect("entries")
        .into_inner()
        .entries;
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (entries[0].transfer_id.as_str(), entries[0].direction),
        (first.payment_id.as_str(), ledger::Direction::Credit as i32)
    );
    let store = open_ledger(dir.path()).await;
    let events = store.events_after(None, 0, 1_000).await.expect("events");
    let about_payment: Vec<&str> = events
        .iter()
        .filter(|event| event.subject_id == first.payment_id)
        .map(|event| event.kind.as_str())
        .collect();
    assert_eq!(about_payment, ["TransferPosted"]);
}

#[tokio::test]
async fn five_concurrent_payments_never_overdraw_the_payer() {
    let (_dir, server, _client) = setup().await;
    let channel = server.channel().await;
    let tasks: Vec<_> = (0..5)
        .map(|n| {
            let mut client = PaymentServiceClient::new(channel.clone());
            tokio::spawn(async move {
                // Each takes just over half the balance of 100.00.
                client
                    .authorize_payment(request(
                        &format!("race-{n}"),
                        "payer",
                        "payee",
                        5_001,
                        "USD",
                    ))
                    .await
            })
        })
        .collect();
    let mut authorized = 0;
    let mut insufficient = 0;
    for task in tasks {
        let response = task.await.expect("task").expect("never a gRPC error").into_inner();
        match pb::PaymentStatus::try_from(response.status).expect("status") {
            pb::PaymentStatus::Authorized => authorized += 1,
            pb::PaymentStatus::Declined => {
                assert_eq!(declined_with(&response), Some(pb::PaymentErrorCode::InsufficientFunds));
                insufficient += 1;
            }
            other => panic!("unexpected status {other:?}"),
        }
    }
    assert_eq!((authorized, insufficient), (1, 4));
}

#[tokio::test]
async fn lookups_check_their_ids() {
    let (_dir, _server, mut client) = setup().await;
    let empty = client
        .get_payment(pb::GetPaymentRequest { payment_id: String::new() })
        .await
        .expect_err("empty");
    assert_eq!(empty.code(), Code::InvalidArgument);
    for unknown in ["01ARZ3NDEKTSV4RRFFQ69G5FAV", "not-a-ulid"] {
        let status = client
            .get_payment(pb::GetPaymentRequest { payment_id: unknown.into() })
            .await
            .expect_err("unknown");
        assert_eq!(status.code(), Code::NotFound, "{unknown}");
    }
    let empty = client
        .get_account_balance(pb::GetAccountBalanceRequest { account_id: String::new() })
        .await;
    assert_eq!(empty.expect_err("empty").code(), Code::InvalidArgument);
    for unknown in ["ghost", "bad id!"] {
        let status = client
            .get_account_balance(pb::GetAccountBalanceRequest { account_id: unknown.into() })
            .await;
        assert_eq!(status.expect_err("unknown").code(), Code::NotFound, "{unknown}");
    }
    let fund = balance(&mut client, "payer").await;
    assert_eq!(
        (fund.account_id.as_str(), fund.available_balance_cents, fund.pending_balance_cents),
        ("payer", 10_000, 0)
    );
}

#[tokio::test]
async fn any_reference_is_a_recorded_decline_and_world_is_not_a_payer() {
    let (_dir, _server, mut client) = setup().await;
    use pb::PaymentErrorCode as E;
    let odd = authorize(&mut client, request("odd", "bad id!", "payee", 100, "USD")).await;
    assert_eq!(declined_with(&odd), Some(E::AccountNotFound));
    let replay = authorize(&mut client, request("odd", "bad id!", "payee", 100, "USD")).await;
    assert_eq!(
        (replay.status, &replay.payment_id),
        (pb::PaymentStatus::Duplicate as i32, &odd.payment_id)
    );
    let got = client
        .get_payment(pb::GetPaymentRequest { payment_id: odd.payment_id.clone() })
        .await
        .expect("recorded");
    assert_eq!(got.into_inner().payment.map(|p| p.payer_account_id), Some("bad id!".to_owned()));
    let zzz = authorize(&mut client, request("zzz", "payer", "payee", 100, "ZZZ")).await;
    assert_eq!(declined_with(&zzz), Some(E::CurrencyMismatch));
    let ghost_and_zzz =
        authorize(&mut client, request("zzz-2", "ghost", "payee", 100, "ZZZ")).await;
    assert_eq!(
        declined_with(&ghost_and_zzz),
        Some(E::AccountNotFound),
        "the payer is checked before the currency"
    );
    let minted =
        authorize(&mut client, request("mint", "world:USD", "payee", 1_000_000, "USD")).await;
    assert_eq!(
        declined_with(&minted),
        Some(E::AccountNotFound),
        "money outside the ledger cannot pay"
    );
    let into_world =
        authorize(&mut client, request("burn", "payer", "world:USD", 100, "USD")).await;
    assert_eq!(declined_with(&into_world), Some(E::AccountNotFound));
    assert_eq!(balance(&mut client, "payer").await.available_balance_cents, 10_000);
}

#[tokio::test]
async fn an_overdraft_limit_counts_toward_what_a_payer_may_spend() {
    let (_dir, server, mut client) = setup().await;
    let mut ledger_client = server.client().await;
    let account = ledger::NewAccount { overdraft_limit_minor: 500, ..new_account("credit", "USD") };
    ledger_client
        .create_accounts(ledger::CreateAccountsRequest { accounts: vec![account] })
        .await
        .expect("account");
    let within = authorize(&mut client, request("o1", "credit", "payee", 500, "USD")).await;
    assert_eq!(within.status, pb::PaymentStatus::Authorized as i32);
    let beyond = authorize(&mut client, request("o2", "credit", "payee", 1, "USD")).await;
    assert_eq!(declined_with(&beyond), Some(pb::PaymentErrorCode::InsufficientFunds));
    let owed = balance(&mut client, "credit").await;
    assert_eq!(
        owed.available_balance_cents, -500,
        "the contract's available balance is posted minus held"
    );
}

#[tokio::test]
async fn a_full_queue_declines_with_rate_limited_and_a_retry_goes_through() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_with(dir.path(), &["--queue-capacity", "1"]);
    let mut ledger_client = server.client().await;
    open_accounts(&mut ledger_client, &["payer", "payee"]).await;
    one(&mut ledger_client, deposit("fund", "payer", 1_000_000)).await;
    let channel = server.channel().await;
    let tasks: Vec<_> = (0..32)
        .map(|task| {
            let mut client = PaymentServiceClient::new(channel.clone());
            tokio::spawn(async move {
                let mut rate_limited = 0;
                for n in 0..10 {
                    let key = format!("load-{task}-{n}");
                    loop {
                        let response = client
                            .authorize_payment(request(&key, "payer", "payee", 1, "USD"))
                            .await
                            .expect("overload is an answer, never a gRPC error")
                            .into_inner();
                        match pb::PaymentStatus::try_from(response.status).expect("status") {
                            pb::PaymentStatus::Authorized => break,
                            pb::PaymentStatus::Declined => {
                                let code = response.error.map(|error| error.code);
                                assert_eq!(code, Some(pb::PaymentErrorCode::RateLimited as i32));
                                assert!(response.payment_id.is_empty(), "nothing was recorded");
                                rate_limited += 1;
                            }
                            other => panic!("unexpected status {other:?}"),
                        }
                    }
                }
                rate_limited
            })
        })
        .collect();
    let mut rate_limited = 0;
    for task in tasks {
        rate_limited += task.await.expect("task");
    }
    let mut client = PaymentServiceClient::new(channel);
    assert_eq!(
        balance(&mut client, "payee").await.available_balance_cents,
        320,
        "each payment applied once"
    );
    println!("{rate_limited} payments were declined RATE_LIMITED and retried");
}

#[tokio::test]
async fn messages_up_to_the_configured_size_are_accepted() {
    // About 4.8 MiB: over the 4 MiB default, under an 8 MiB setting.
    let accounts: Vec<ledger::NewAccount> = (0..600)
        .map(|n| {
            let metadata = (0..20).map(|k| (format!("k{k}"), "x".repeat(400))).collect();
            ledger::NewAccount { metadata, ..new_account(&format!("big{n}"), "USD") }
        })
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    let refused =
        client.create_accounts(ledger::CreateAccountsRequest { accounts: accounts.clone() }).await;
    assert_eq!(
        refused.expect_err("over 4 MiB").code(),
        Code::OutOfRange,
        "tonic refuses an oversized message"
    );
    drop(server);
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_with(dir.path(), &["--grpc-message-bytes-max", "8388608"]);
    let channel = tonic::transport::Channel::from_shared(server.grpc_url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut client = kopek_proto::kopek::v1::ledger_client::LedgerClient::new(channel)
        .max_decoding_message_size(16 * 1024 * 1024)
        .max_encoding_message_size(16 * 1024 * 1024);
    let results =
        client.create_accounts(ledger::CreateAccountsRequest { accounts }).await.expect("accepted");
    assert_eq!(results.into_inner().results.iter().filter(|result| result.created).count(), 600);
}
