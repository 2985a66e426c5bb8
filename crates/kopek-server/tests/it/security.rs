//! Regression tests for the holes a black-box attack found (issue 19), each against the real
//! binary with auth required, over REST and gRPC.

use crate::auth::{create_key_with, get_as, post_json, secured, with_key};
use crate::support::error_code;
use kopek_proto::kopek::v1 as pb;
use kopek_proto::kopek::v1::ledger_client::LedgerClient;

/// Finding 1: no key but an admin's gives itself credit. A key bound to a user, and a plain
/// write key, are refused an overdraft limit and a system account on both surfaces, nothing
/// is opened, and no transfer can then pay out of such an account.
#[tokio::test]
async fn only_an_admin_key_opens_accounts_with_credit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, admin) = secured(dir.path(), &[]);
    let address = &server.http_address;
    let created = post_json(
        address,
        &admin,
        "/v1/users",
        "u-ua1",
        r#"{"id":"ua1","name":"ua1","currency":"USD"}"#,
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let bound = create_key_with(dir.path(), "write", &["--user", "ua1"]);
    let writer = create_key_with(dir.path(), "write", &[]);

    let attempts = [
        ("od1", r#"{"id":"od1","currency":"USD","overdraft_limit":"1000000.00"}"#),
        ("od2", r#"{"id":"od2","currency":"USD","overdraft_limit_minor":1}"#),
        ("od3", r#"{"id":"od3","currency":"USD","kind":"system"}"#),
        ("od4", r#"{"id":"od4","currency":"USD","kind":"system","unbounded_overdraft":true}"#),
    ];
    for key in [&bound, &writer] {
        for (id, body) in attempts {
            let refused = post_json(address, key, "/v1/accounts", &format!("k-{id}"), body).await;
            assert_eq!(refused.status, 403, "{id}: {}", refused.body);
            assert_eq!(refused.json()["error"]["code"], "PERMISSION_DENIED", "{id}");
            let missing = get_as(address, &admin, &format!("/v1/accounts/{id}")).await;
            assert_eq!(missing.status, 404, "{id} was opened: {}", missing.body);
        }
    }
    let spent = post_json(
        address,
        &bound,
        "/v1/transfers",
        "spend-od1",
        r#"{"debit_account_id":"od1","credit_account_id":"user:ua1:USD","amount":"5000.00","currency":"USD"}"#,
    )
    .await;
    assert_eq!(spent.status, 404, "{}", spent.body);

    let mut ledger = LedgerClient::new(server.channel().await);
    for key in [&bound, &writer] {
        let accounts = vec![
            pb::NewAccount {
                id: "god1".into(),
                currency: "USD".into(),
                overdraft_limit_minor: 1_000_000_000_000,
                ..Default::default()
            },
            pb::NewAccount {
                id: "gsys".into(),
                currency: "USD".into(),
                kind: pb::AccountKind::System as i32,
                unbounded_overdraft: true,
                ..Default::default()
            },
        ];
        let request = with_key(pb::CreateAccountsRequest { accounts }, Some(key));
        let results = ledger.create_accounts(request).await.expect("answered").into_inner();
        for result in &results.results {
            let code = result.error.as_ref().map(|error| error.code);
            assert_eq!(code, Some(pb::ErrorCode::PermissionDenied as i32), "{result:?}");
            assert!(result.account.is_none(), "{result:?}");
        }
    }
    let request = pb::CreateTransfersRequest {
        transfers: vec![crate::support::post(
            "spend-god1",
            "god1",
            "user:ua1:USD",
            100_000_000_000,
        )],
        linked: false,
    };
    let results = ledger.create_transfers(with_key(request, Some(&bound))).await.expect("answer");
    let result = &results.into_inner().results[0];
    assert_eq!(error_code(result), Some(pb::ErrorCode::AccountNotFound), "{result:?}");

    // An admin key still gives credit.
    let granted = post_json(
        address,
        &admin,
        "/v1/accounts",
        "k-credit",
        r#"{"id":"credit","currency":"USD","overdraft_limit":"100.00"}"#,
    )
    .await;
    assert_eq!(granted.status, 201, "{}", granted.body);
}

/// Finding 3: gRPC `CreateAccounts` honours a key's user binding as REST does: the owner is the
/// key's user when none is named, another owner is refused, and so is a system account.
#[tokio::test]
async fn grpc_opens_accounts_only_for_the_keys_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, admin) = secured(dir.path(), &[]);
    for user in ["ua1", "ua2"] {
        let body = format!(r#"{{"id":"{user}","name":"{user}","currency":"USD"}}"#);
        let created =
            post_json(&server.http_address, &admin, "/v1/users", &format!("u-{user}"), &body).await;
        assert_eq!(created.status, 201, "{}", created.body);
    }
    let bound = create_key_with(dir.path(), "write", &["--user", "ua1"]);
    let mut ledger = LedgerClient::new(server.channel().await);
    let open = |id: &str, owner: &str, kind: pb::AccountKind| pb::NewAccount {
        id: id.into(),
        currency: "USD".into(),
        owner: owner.into(),
        kind: kind as i32,
        ..Default::default()
    };
    let accounts = vec![
        open("theirs", "ua2", pb::AccountKind::User),
        open("ownerless-system", "", pb::AccountKind::System),
        open("mine", "", pb::AccountKind::User),
        open("mine-named", "ua1", pb::AccountKind::User),
    ];
    let request = with_key(pb::CreateAccountsRequest { accounts }, Some(&bound));
    let results = ledger.create_accounts(request).await.expect("answered").into_inner().results;
    let codes: Vec<Option<i32>> =
        results.iter().map(|result| result.error.as_ref().map(|error| error.code)).collect();
    let denied = Some(pb::ErrorCode::PermissionDenied as i32);
    assert_eq!(codes, [denied, denied, None, None], "{results:?}");
    for result in &results[2..] {
        assert_eq!(result.account.as_ref().expect("opened").owner, "ua1", "{result:?}");
    }
    for id in ["theirs", "ownerless-system"] {
        let missing = get_as(&server.http_address, &admin, &format!("/v1/accounts/{id}")).await;
        assert_eq!(missing.status, 404, "{id} was opened: {}", missing.body);
    }
}
