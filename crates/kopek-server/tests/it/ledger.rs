//! kopek.v1.Ledger unary RPCs against the real server.

use crate::support::*;
use kopek_proto::kopek::v1 as pb;
use tonic::Code;

#[tokio::test]
async fn accounts_open_idempotently_and_list_by_owner() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    let mut owned = new_account("u1:usd", "USD");
    owned.owner = "u1".to_owned();
    let accounts = vec![
        owned.clone(),
        new_account("u2:usd", "usd"),
        new_account("bad id", "USD"),
        new_account("x", "XXX"),
    ];
    let results = client
        .create_accounts(pb::CreateAccountsRequest { accounts })
        .await
        .expect("rpc")
        .into_inner()
        .results;
    assert!(results[0].created && results[1].created);
    assert_eq!(
        results[1].account.as_ref().map(|a| a.currency.as_str()),
        Some("USD"),
        "currency is normalised"
    );
    assert_eq!(
        results[2].error.as_ref().map(|e| e.code),
        Some(pb::ErrorCode::InvalidArgument as i32)
    );
    assert_eq!(
        results[3].error.as_ref().map(|e| e.code),
        Some(pb::ErrorCode::UnknownCurrency as i32)
    );

    let again = client
        .create_accounts(pb::CreateAccountsRequest { accounts: vec![owned.clone()] })
        .await
        .expect("rpc");
    let again = &again.into_inner().results[0];
    assert!(!again.created && again.error.is_none(), "the same account again is a replay");
    let other = pb::NewAccount { currency: "EUR".to_owned(), ..owned };
    let clash = client
        .create_accounts(pb::CreateAccountsRequest { accounts: vec![other] })
        .await
        .expect("rpc");
    assert_eq!(
        clash.into_inner().results[0].error.as_ref().map(|e| e.code),
        Some(pb::ErrorCode::AccountExists as i32)
    );

    let list = pb::ListAccountsRequest { owner: "u1".to_owned(), ..Default::default() };
    let listed = client.list_accounts(list).await.expect("rpc").into_inner();
    let ids: Vec<_> = listed.accounts.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["u1:usd"]);
    let got = client
        .get_accounts(pb::GetAccountsRequest { ids: vec!["u2:usd".into(), "nope".into()] })
        .await
        .expect("rpc");
    assert_eq!(got.into_inner().accounts.len(), 1);
    let missing =
        client.get_account(pb::GetAccountRequest { id: "nope".into() }).await.expect_err("missing");
    assert_eq!(missing.code(), Code::NotFound);
    assert!(missing.message().starts_with("ACCOUNT_NOT_FOUND: "), "{}", missing.message());
}

#[tokio::test]
async fn transfers_move_money_and_declines_are_recorded_and_replayed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    open_accounts(&mut client, &["a", "b"]).await;
    let fund = one(&mut client, deposit("fund", "a", 10_000)).await;
    assert_eq!(status(&fund), pb::TransferStatus::Posted);
    assert_eq!(fund.transfer.as_ref().map(|t| t.debit_account_id.as_str()), Some("world:USD"));

    let paid = one(&mut client, post("pay-1", "a", "b", 2_550)).await;
    assert_eq!(status(&paid), pb::TransferStatus::Posted);
    assert_eq!(paid.transfer.as_ref().map(|t| t.amount.as_str()), Some("25.50"));
    let replay = one(&mut client, post("pay-1", "a", "b", 2_550)).await;
    assert!(replay.replayed);
    assert_eq!(replay.transfer.as_ref().map(|t| &t.id), paid.transfer.as_ref().map(|t| &t.id));
    let reuse = one(&mut client, post("pay-1", "a", "b", 1)).await;
    assert_eq!(error_code(&reuse), Some(pb::ErrorCode::IdempotencyKeyReused));
    assert!(reuse.transfer.is_none(), "a reused key records nothing");

    let poor = one(&mut client, post("too-much", "a", "b", 1_000_000)).await;
    assert_eq!(
        (status(&poor), error_code(&poor)),
        (pb::TransferStatus::Declined, Some(pb::ErrorCode::InsufficientFunds))
    );
    assert_eq!(
        poor.error.as_ref().map(|e| e.message.as_str()),
        Some("balance 74.50 USD is less than 10000.00 USD")
    );
    one(&mut client, deposit("top-up", "a", 5_000_000)).await;
    let replayed_decline = one(&mut client, post("too-much", "a", "b", 1_000_000)).await;
    assert!(replayed_decline.replayed);
    assert_eq!(
        error_code(&replayed_decline),
        Some(pb::ErrorCode::InsufficientFunds),
        "a declined verdict replays"
    );

    let by_decimal = pb::TransferRequest {
        amount_minor: 0,
        amount: "1.25".to_owned(),
        ..post("dec", "a", "b", 0)
    };
    assert_eq!(one(&mut client, by_decimal).await.transfer.map(|t| t.amount_minor), Some(125));
    let too_precise = pb::TransferRequest {
        amount_minor: 0,
        amount: "1.255".to_owned(),
        ..post("prec", "a", "b", 0)
    };
    assert_eq!(
        error_code(&one(&mut client, too_precise).await),
        Some(pb::ErrorCode::InvalidAmount)
    );
    let same = one(&mut client, post("same", "a", "a", 1)).await;
    assert_eq!(error_code(&same), Some(pb::ErrorCode::SameAccount));
    let missing = one(&mut client, post("ghost", "a", "ghost", 1)).await;
    assert_eq!(error_code(&missing), Some(pb::ErrorCode::AccountNotFound));
    let withdrawal = pb::TransferRequest {
        kind: pb::TransferKind::Withdrawal as i32,
        credit_account_id: String::new(),
        ..post("out", "b", "", 50)
    };
    assert_eq!(status(&one(&mut client, withdrawal).await), pb::TransferStatus::Posted);
    assert_eq!(posted(&mut client, "b").await, 2_550 + 125 - 50);

    let by_key = pb::GetTransferRequest {
        lookup: Some(pb::get_transfer_request::Lookup::IdempotencyKey("pay-1".into())),
    };
    let found =
        client.get_transfer(by_key).await.expect("rpc").into_inner().transfer.expect("transfer");
    let by_id = pb::GetTransferRequest {
        lookup: Some(pb::get_transfer_request::Lookup::Id(found.id.clone())),
    };
    assert_eq!(client.get_transfer(by_id).await.expect("rpc").into_inner().transfer, Some(found));
}

#[tokio::test]
async fn holds_capture_partially_void_and_linked_batches_are_atomic() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    open_accounts(&mut client, &["a", "b", "c"]).await;
    one(&mut client, deposit("fund", "a", 1_000)).await;
    let hold = pb::TransferRequest {
        action: pb::TransferAction::Hold as i32,
        timeout_seconds: 3_600,
        ..post("h1", "a", "b", 600)
    };
    let hold = one(&mut client, hold).await.transfer.expect("hold");
    assert_eq!(hold.status, pb::TransferStatus::Pending as i32);
    assert!(!hold.expires_at.is_empty());
    let balance = client
        .get_balance(pb::GetBalanceRequest { account_id: "a".into(), as_of: String::new() })
        .await;
    let balance = balance.expect("rpc").into_inner().balance.expect("balance");
    assert_eq!(
        (balance.posted_minor, balance.pending_out_minor, balance.available_minor),
        (1_000, 600, Some(400))
    );
    let blocked = one(&mut client, post("blocked", "a", "c", 500)).await;
    assert_eq!(
        error_code(&blocked),
        Some(pb::ErrorCode::InsufficientFunds),
        "held funds cannot be spent"
    );

    let capture = |key: &str, minor: i64| pb::TransferRequest {
        idempotency_key: key.to_owned(),
        action: pb::TransferAction::Capture as i32,
        pending_id: hold.id.clone(),
        amount_minor: minor,
        ..Default::default()
    };
    let captured = one(&mut client, capture("cap", 250)).await;
    assert_eq!(status(&captured), pb::TransferStatus::Posted);
    assert_eq!((posted(&mut client, "a").await, posted(&mut client, "b").await), (750, 250));
    let twice = one(&mut client, capture("cap-2", 0)).await;
    assert_eq!(error_code(&twice), Some(pb::ErrorCode::PendingAlreadyResolved));
    let lookup = pb::GetTransferRequest {
        lookup: Some(pb::get_transfer_request::Lookup::Id(hold.id.clone())),
    };
    let resolved =
        client.get_transfer(lookup).await.expect("rpc").into_inner().transfer.expect("hold");
    assert_eq!(
        (resolved.status, resolved.captured_amount_minor),
        (pb::TransferStatus::Captured as i32, 250)
    );

    let hold2 = pb::TransferRequest {
        action: pb::TransferAction::Hold as i32,
        ..post("h2", "a", "b", 100)
    };
    let hold2 = one(&mut client, hold2).await.transfer.expect("hold");
    let void = pb::TransferRequest {
        idempotency_key: "void".into(),
        action: pb::TransferAction::Void as i32,
        pending_id: hold2.id,
        ..Default::default()
    };
    assert_eq!(status(&one(&mut client, void).await), pb::TransferStatus::Voided);
    let unknown = pb::TransferRequest {
        idempotency_key: "void-unknown".into(),
        action: pb::TransferAction::Void as i32,
        pending_id: "01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
        ..Default::default()
    };
    assert_eq!(error_code(&one(&mut client, unknown).await), Some(pb::ErrorCode::PendingNotFound));

    let linked =
        transfers(&mut client, vec![post("l1", "a", "b", 100), post("l2", "b", "c", 10_000)], true)
            .await;
    assert_eq!(error_code(&linked[0]), Some(pb::ErrorCode::LinkedEventFailed));
    assert_eq!(error_code(&linked[1]), Some(pb::ErrorCode::InsufficientFunds));
    assert_eq!(posted(&mut client, "a").await, 750, "nothing of a failed linked batch applies");
    let linked =
        transfers(&mut client, vec![post("l3", "a", "b", 100), post("l4", "b", "c", 300)], true)
            .await;
    assert!(linked.iter().all(|result| status(result) == pb::TransferStatus::Posted));
    assert_eq!(posted(&mut client, "c").await, 300);
}

#[tokio::test]
async fn statements_page_and_balances_answer_as_of_a_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    open_accounts(&mut client, &["a"]).await;
    for (n, day) in
        ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"].iter().enumerate()
    {
        let request = pb::TransferRequest {
            effective_at: format!("{day}T12:00:00Z"),
            ..deposit(&format!("d{n}"), "a", 100)
        };
        one(&mut client, request).await;
    }
    let mut page_token = String::new();
    let mut seen = Vec::new();
    loop {
        let request = pb::ListEntriesRequest {
            account_id: "a".into(),
            page_token: page_token.clone(),
            page_size: 2,
        };
        let page = client.list_entries(request).await.expect("rpc").into_inner();
        assert!(page.entries.len() <= 2);
        seen.extend(page.entries.iter().map(|entry| entry.balance_after_minor));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen, [100, 200, 300, 400, 500]);
    let as_of =
        |time: &str| pb::GetBalanceRequest { account_id: "a".into(), as_of: time.to_owned() };
    let at_noon =
        client.get_balance(as_of("2024-01-03T12:00:00Z")).await.expect("rpc").into_inner();
    assert_eq!(
        at_noon.balance.map(|b| b.posted_minor),
        Some(300),
        "as of a time includes that instant"
    );
    let before = client.get_balance(as_of("2024-01-03T11:59:59Z")).await.expect("rpc").into_inner();
    assert_eq!(before.balance.map(|b| b.posted_minor), Some(200));
    let bad = client.get_balance(as_of("yesterday")).await.expect_err("bad time");
    assert_eq!(bad.code(), Code::InvalidArgument);

    let freeze = pb::UpdateAccountRequest {
        id: "a".into(),
        status: Some(pb::AccountStatus::Frozen as i32),
        overdraft_limit_minor: None,
    };
    let frozen =
        client.update_account(freeze).await.expect("rpc").into_inner().account.expect("account");
    assert_eq!(frozen.status, pb::AccountStatus::Frozen as i32);
    let refused = one(&mut client, deposit("while-frozen", "a", 1)).await;
    assert_eq!(error_code(&refused), Some(pb::ErrorCode::AccountFrozen));
    let close = pb::UpdateAccountRequest {
        id: "a".into(),
        status: Some(pb::AccountStatus::Closed as i32),
        overdraft_limit_minor: None,
    };
    let not_empty = client.update_account(close).await.expect_err("balance is not zero");
    assert_eq!(not_empty.code(), Code::FailedPrecondition);
    assert!(not_empty.message().starts_with("ACCOUNT_NOT_EMPTY"));
}
