//! The isolation table (issue 19): every REST route (enumerated from `/openapi.json`, plus the
//! contract and WebSocket routes) and every gRPC method (enumerated by reflection) is tried
//! with no key, a revoked key, a read key writing, another tenant's admin key on the victim's
//! ids, and a key bound to one user on another user's things. A route or method the table
//! does not cover fails the test, so the next surface added is covered on day one.
//!
//! A leak is an answer that shows the victim's data (every piece of it carries `VICTIM-SECRET`),
//! one that says an id is taken elsewhere (ids belong to their tenant: another tenant's
//! attempts with the victim's ids act on things of its own), or a change to the victim's
//! money, holds, accounts, webhooks or orders.

use crate::auth::{bearer, create_key, create_key_with, post_json, secured, with_key};
use crate::support::{Server, cli, http};
use futures_util::StreamExt;
use kopek_proto::kopek::v1 as pb;
use kopek_proto::kopek::v1::ledger_client::LedgerClient;
use kopek_proto::payment::v1 as payment;
use kopek_proto::payment::v1::payment_service_client::PaymentServiceClient;
use kopek_proto::transaction as transaction_pb;
use kopek_proto::transaction::transaction_service_client::TransactionServiceClient;
use serde_json::Value;
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;

const SECRET: &str = "VICTIM-SECRET";

/// The victim's things, in the default tenant: user `ua1` and its money, a system account,
/// a posted transfer, a hold, a webhook, a Part A user and an order.
struct Victim {
    transfer: String,
    hold: String,
    webhook: String,
    order: String,
    part_a_user: u64,
}

/// Who tries: the label and the bearer key (`None`: no key).
struct Attackers {
    revoked: String,
    read: String,
    /// The admin of another tenant.
    other_tenant: String,
    /// A write key bound to `ua2`, trying `ua1`'s things.
    other_user: String,
}

/// How one REST route is tried: method, path template (as `/openapi.json` or the router
/// names it), the path with the victim's ids, a body, and whether it writes.
struct Route {
    method: &'static str,
    template: &'static str,
    path: String,
    body: Option<String>,
    writes: bool,
}

fn route(method: &'static str, template: &'static str, path: String, body: Option<&str>) -> Route {
    let writes = method != "GET";
    Route { method, template, path, body: body.map(str::to_owned), writes }
}

fn routes(victim: &Victim) -> Vec<Route> {
    let (t, h, w, o, n) =
        (&victim.transfer, &victim.hold, &victim.webhook, &victim.order, victim.part_a_user);
    let pay = r#"{"debit_account_id":"user:ua1:USD","credit_account_id":"user:ua2:USD","amount":"1.00","currency":"USD"}"#;
    vec![
        route("GET", "/healthz", "/healthz".into(), None),
        route("GET", "/readyz", "/readyz".into(), None),
        route("GET", "/v1/accounts", "/v1/accounts?owner=ua1".into(), None),
        route(
            "POST",
            "/v1/accounts",
            "/v1/accounts".into(),
            Some(r#"{"id":"victim-acct","currency":"USD"}"#),
        ),
        route("GET", "/v1/accounts/{id}", "/v1/accounts/user:ua1:USD".into(), None),
        route(
            "PATCH",
            "/v1/accounts/{id}",
            "/v1/accounts/user:ua1:USD".into(),
            Some(r#"{"status":"frozen"}"#),
        ),
        route("GET", "/v1/accounts/{id}/balance", "/v1/accounts/user:ua1:USD/balance".into(), None),
        route("GET", "/v1/accounts/{id}/entries", "/v1/accounts/victim-acct/entries".into(), None),
        route("GET", "/v1/events", "/v1/events".into(), None),
        route("GET", "/v1/fx/positions", "/v1/fx/positions".into(), None),
        route("GET", "/v1/fx/quotes/{id}", "/v1/fx/quotes/01ARZ3NDEKTSV4RRFFQ69G5FAV".into(), None),
        route("GET", "/v1/fx/rates", "/v1/fx/rates".into(), None),
        route(
            "POST",
            "/v1/fx/rates",
            "/v1/fx/rates".into(),
            Some(r#"{"rates":[{"base":"USD","quote":"EUR","rate":{"rate":"5"}}]}"#),
        ),
        route(
            "PUT",
            "/v1/fx/rates/{base}/{quote}",
            "/v1/fx/rates/USD/EUR".into(),
            Some(r#"{"rate":"5"}"#),
        ),
        route("GET", "/v1/fx/spread", "/v1/fx/spread".into(), None),
        // A price check: a read, though it is a POST.
        Route {
            writes: false,
            ..route(
                "POST",
                "/v1/fx/convert",
                "/v1/fx/convert".into(),
                Some(r#"{"from_currency":"USD","to_currency":"EUR","amount":"1.00"}"#),
            )
        },
        route(
            "POST",
            "/v1/fx/quotes",
            "/v1/fx/quotes".into(),
            Some(r#"{"from":"USD","to":"EUR","amount":"1.00"}"#),
        ),
        route("GET", "/v1/transfers", "/v1/transfers?account=victim-acct".into(), None),
        route("POST", "/v1/transfers", "/v1/transfers".into(), Some(pay)),
        route(
            "POST",
            "/v1/transfers/batch",
            "/v1/transfers/batch".into(),
            Some(&format!(
                r#"{{"transfers":[{}]}}"#,
                pay.replacen('{', r#"{"idempotency_key":"b1","#, 1)
            )),
        ),
        route("GET", "/v1/transfers/{id}", format!("/v1/transfers/{t}"), None),
        route("GET", "/v1/transfers/{id}/events", format!("/v1/transfers/{t}/events"), None),
        route(
            "POST",
            "/v1/transfers/{id}/capture",
            format!("/v1/transfers/{h}/capture"),
            Some("{}"),
        ),
        route("POST", "/v1/transfers/{id}/void", format!("/v1/transfers/{h}/void"), None),
        route(
            "POST",
            "/v1/users",
            "/v1/users".into(),
            Some(r#"{"id":"ua1","name":"x","currency":"USD"}"#),
        ),
        route("GET", "/v1/users/{id}", "/v1/users/ua1".into(), None),
        route("GET", "/v1/users/{id}/spending", "/v1/users/ua1/spending".into(), None),
        route("GET", "/v1/webhooks", "/v1/webhooks".into(), None),
        // Every tenant's ledger: another tenant's admin key is refused.
        route("GET", "/v1/admin/backup", "/v1/admin/backup".into(), None),
        // Records naming the victim's hold and account act, for another tenant, on its own.
        route(
            "POST",
            "/v1/admin/import",
            "/v1/admin/import".into(),
            Some(&format!(
                r#"{{"records":[{{"account":{{"id":"victim-acct","currency":"USD","kind":"user","overdraft_limit_minor":0}}}},{{"transfer":{{"id":"{h}","idempotency_key":"v-hold","kind":"transfer","action":"capture","status":"posted","amount_minor":500,"currency":"USD","pending_id":"{h}","effective_at":"2026-01-01T00:00:00Z"}}}}]}}"#
            )),
        ),
        route(
            "POST",
            "/v1/webhooks",
            "/v1/webhooks".into(),
            Some(r#"{"url":"http://127.0.0.1:9/x"}"#),
        ),
        route("GET", "/v1/webhooks/{id}", format!("/v1/webhooks/{w}"), None),
        route("DELETE", "/v1/webhooks/{id}", format!("/v1/webhooks/{w}"), None),
        route("GET", "/v1/webhooks/{id}/deliveries", format!("/v1/webhooks/{w}/deliveries"), None),
        route(
            "GET",
            "/v1/webhooks/{id}/deliveries/{delivery_id}",
            format!("/v1/webhooks/{w}/deliveries/dl_0"),
            None,
        ),
        route(
            "POST",
            "/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver",
            format!("/v1/webhooks/{w}/deliveries/dl_0/redeliver"),
            None,
        ),
        // The HTTP contracts and the WebSocket routes, which /openapi.json does not list.
        route("POST", "/v1/user", "/v1/user".into(), Some(r#"{"name":"x"}"#)),
        route("GET", "/v1/user/{id}", format!("/v1/user/{n}"), None),
        route(
            "POST",
            "/v1/transaction",
            "/v1/transaction".into(),
            Some(&format!(
                r#"{{"uid":"0b1e4c6e-0000-4000-8000-00000000000a","type":"WITHDRAW","amount":"1.0","user_id":{n}}}"#
            )),
        ),
        route(
            "GET",
            "/v1/transaction/{uid}",
            "/v1/transaction/0b1e4c6e-0000-4000-8000-000000000001".into(),
            None,
        ),
        route("POST", "/payments/account", "/payments/account?user_id=ua1".into(), Some("{}")),
        route(
            "POST",
            "/payments/account/topup",
            "/payments/account/topup?user_id=ua1".into(),
            Some(r#"{"amount": 1}"#),
        ),
        route(
            "GET",
            "/payments/account/balance",
            "/payments/account/balance?user_id=ua1".into(),
            None,
        ),
        route(
            "POST",
            "/orders/orders",
            "/orders/orders?user_id=ua1".into(),
            Some(r#"{"amount": 1}"#),
        ),
        route("GET", "/orders/orders", "/orders/orders?user_id=ua1".into(), None),
        route("GET", "/orders/orders/{id}", format!("/orders/orders/{o}?user_id=ua1"), None),
        route("GET", "/v1/orders/{id}", format!("/v1/orders/{o}"), None),
        route("GET", "/v1/ws", "/v1/ws?after=0".into(), None),
        route("GET", "/ws/orders/{id}", format!("/ws/orders/{o}"), None),
        route("GET", "/orders/ws/orders/{id}", format!("/orders/ws/orders/{o}"), None),
    ]
}

/// Routes that need no key at all.
const PUBLIC: [&str; 2] = ["/healthz", "/readyz"];

async fn victim(server: &Server, admin: &str, dir: &std::path::Path) -> Victim {
    let address = &server.http_address;
    let ok = |response: crate::support::HttpResponse| {
        assert!(response.status < 300, "setting up the victim: {}", response.body);
        response.json()
    };
    for user in ["ua1", "ua2"] {
        let body = format!(r#"{{"id":"{user}","name":"{SECRET} {user}","currency":"USD"}}"#);
        ok(post_json(address, admin, "/v1/users", &format!("v-{user}"), &body).await);
        let fund = format!(
            r#"{{"kind":"deposit","credit_account_id":"user:{user}:USD","amount":"100.00","currency":"USD"}}"#
        );
        ok(post_json(address, admin, "/v1/transfers", &format!("v-fund-{user}"), &fund).await);
    }
    let body =
        format!(r#"{{"id":"victim-acct","currency":"USD","metadata":{{"note":"{SECRET}"}}}}"#);
    ok(post_json(address, admin, "/v1/accounts", "v-acct", &body).await);
    let pay = format!(
        r#"{{"debit_account_id":"user:ua1:USD","credit_account_id":"victim-acct","amount":"10.00","currency":"USD","description":"{SECRET} pay"}}"#
    );
    let transfer = ok(post_json(address, admin, "/v1/transfers", "v-pay", &pay).await)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let hold = format!(
        r#"{{"debit_account_id":"user:ua1:USD","credit_account_id":"victim-acct","amount":"5.00","currency":"USD","hold":{{}},"description":"{SECRET} hold"}}"#
    );
    let hold = ok(post_json(address, admin, "/v1/transfers", "v-hold", &hold).await)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let hook = format!(r#"{{"url":"http://127.0.0.1:9/{SECRET}"}}"#);
    let webhook = ok(post_json(address, admin, "/v1/webhooks", "v-hook", &hook).await)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let part_a = format!(r#"{{"name":"{SECRET}-A"}}"#);
    let part_a_user =
        ok(post_json(address, admin, "/v1/user", "v-a", &part_a).await)["id"].as_u64().expect("id");
    let gateway = bearer(&create_key(dir, "gateway"));
    let headers = [("Authorization", gateway.as_str()), ("X-User-ID", "ua1")];
    let order = http(address, "POST", "/orders/orders", &headers, Some(r#"{"amount": 1}"#)).await;
    let order = ok(order)["id"].as_str().expect("order id").to_owned();
    Victim { transfer, hold, webhook, order, part_a_user }
}

/// What must not change: ua1's and the system account's money, the hold, ua1's status, the
/// webhook and the order.
async fn snapshot(server: &Server, admin: &str, victim: &Victim) -> Value {
    let get = |path: String| {
        let authorization = bearer(admin);
        async move {
            let response = http(
                &server.http_address,
                "GET",
                &path,
                &[("Authorization", &authorization)],
                None,
            )
            .await;
            response.json()
        }
    };
    let ua1 = get("/v1/accounts/user:ua1:USD".into()).await;
    let system = get("/v1/accounts/victim-acct".into()).await;
    let hold = get(format!("/v1/transfers/{}", victim.hold)).await;
    let webhook = get(format!("/v1/webhooks/{}", victim.webhook)).await;
    let gateway_order = get("/v1/events?type=OrderCreated".to_owned()).await;
    serde_json::json!({
        "ua1": [ua1["posted"].clone(), ua1["status"].clone(), ua1["overdraft_limit"].clone()],
        "system": [system["posted"].clone(), system["status"].clone()],
        "hold": hold["status"].clone(),
        "webhook": webhook["id"].clone(),
        "orders": gateway_order["events"].as_array().map(Vec::len),
    })
}

/// One leak found: what was tried, and what came back.
fn leaked(leaks: &mut Vec<String>, what: &str, answer: &str) {
    if answer.contains(SECRET) || answer.contains("is taken") {
        leaks.push(format!("{what}: {}", answer.chars().take(300).collect::<String>()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_method_keeps_tenants_users_and_keys_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, admin) = secured(dir.path(), &[]);
    let address = server.http_address.clone();
    let victim = victim(&server, &admin, dir.path()).await;
    let revoked = create_key(dir.path(), "write");
    let data = dir.path().to_str().expect("utf-8");
    let (code, _, err) = cli(&["keys", "revoke", "--data-dir", data, &revoked]);
    assert_eq!(code, 0, "{err}");
    let attackers = Attackers {
        revoked,
        read: create_key(dir.path(), "read"),
        other_tenant: create_key_with(dir.path(), "admin", &["--tenant", "acme"]),
        other_user: create_key_with(dir.path(), "write", &["--user", "ua2"]),
    };
    // The victim's own admin sees the marker where the data is: the detector can fire.
    crate::support::settled(&server).await;
    for path in [
        "/v1/events",
        "/v1/accounts/victim-acct",
        "/v1/transfers?account=victim-acct",
        "/v1/webhooks",
        "/v1/users/ua1",
    ] {
        let authorization = bearer(&admin);
        let own = http(&address, "GET", path, &[("Authorization", &authorization)], None).await;
        assert!(own.body.contains(SECRET), "{path} shows no marker to its owner: {}", own.body);
    }
    let before = snapshot(&server, &admin, &victim).await;
    let mut leaks = Vec::new();
    let mut attempts = 0;

    // REST: the table covers every route /openapi.json lists.
    let table = routes(&victim);
    let covered: BTreeSet<(String, String)> =
        table.iter().map(|r| (r.method.to_owned(), r.template.to_owned())).collect();
    let openapi = http(&address, "GET", "/openapi.json", &[], None).await.json();
    for (path, methods) in openapi["paths"].as_object().expect("paths") {
        for method in methods.as_object().expect("methods").keys() {
            let key = (method.to_uppercase(), path.clone());
            assert!(covered.contains(&key), "the isolation table does not cover {key:?}");
        }
    }
    for (n, r) in table.iter().enumerate() {
        let what = format!("{} {}", r.method, r.path);
        let is_socket = r.template.contains("ws");
        let call = |key: Option<String>| {
            let mut headers: Vec<(String, String)> =
                vec![("Idempotency-Key".into(), format!("iso-{n}"))];
            if let Some(key) = key {
                headers.push(("Authorization".into(), bearer(&key)));
            }
            if is_socket {
                headers.push(("Connection".into(), "Upgrade".into()));
                headers.push(("Upgrade".into(), "websocket".into()));
                headers.push(("Sec-WebSocket-Version".into(), "13".into()));
                headers.push(("Sec-WebSocket-Key".into(), "dGhlIHNhbXBsZSBub25jZQ==".into()));
            }
            let (address, method, path, body) =
                (address.clone(), r.method, r.path.clone(), r.body.clone());
            async move {
                let headers: Vec<(&str, &str)> =
                    headers.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
                http(&address, method, &path, &headers, body.as_deref()).await
            }
        };
        if PUBLIC.contains(&r.template) {
            attempts += 1;
            assert_eq!(call(None).await.status, 200, "{what}");
            continue;
        }
        for (label, key) in [("no key", None), ("revoked key", Some(attackers.revoked.clone()))] {
            attempts += 1;
            let answer = call(key).await;
            assert_eq!(answer.status, 401, "{what} with {label}: {}", answer.body);
            leaked(&mut leaks, &format!("{what} with {label}"), &answer.body);
        }
        if r.writes {
            attempts += 1;
            let answer = call(Some(attackers.read.clone())).await;
            assert_eq!(answer.status, 403, "{what} with a read key: {}", answer.body);
            leaked(&mut leaks, &format!("{what} with a read key"), &answer.body);
        }
        for (label, key) in [
            ("another tenant's admin key", &attackers.other_tenant),
            ("another user's key", &attackers.other_user),
        ] {
            attempts += 1;
            let answer = call(Some(key.clone())).await;
            assert!(answer.status < 500, "{what} with {label}: {}", answer.body);
            leaked(&mut leaks, &format!("{what} with {label}"), &answer.body);
        }
        if is_socket {
            // Over a real WebSocket: whatever the socket sends must hold no victim data.
            for key in [&attackers.other_tenant, &attackers.other_user] {
                attempts += 1;
                let url = format!(
                    "ws://{address}{}{}access_token={key}",
                    r.path,
                    if r.path.contains('?') { "&" } else { "?" }
                );
                if let Ok((mut socket, _)) = tokio_tungstenite::connect_async(url).await {
                    while let Ok(Some(Ok(message))) =
                        tokio::time::timeout(Duration::from_millis(300), socket.next()).await
                    {
                        leaked(&mut leaks, &format!("{what} socket"), &message.to_string());
                    }
                }
            }
        }
    }

    // gRPC: the table covers every method reflection lists.
    let channel = server.channel().await;
    let methods = grpc_methods(channel.clone()).await;
    let table = grpc_table();
    let covered: BTreeSet<&str> = table.iter().map(|(name, _, _)| *name).collect();
    for method in &methods {
        let public = method.starts_with("/grpc.health.") || method.starts_with("/grpc.reflection.");
        assert!(
            public || covered.contains(method.as_str()),
            "the isolation table does not cover {method}"
        );
    }
    for (name, writes, call) in &table {
        assert!(methods.contains(*name), "{name} is in the table but not served");
        for (label, key) in [("no key", None), ("revoked key", Some(attackers.revoked.as_str()))] {
            attempts += 1;
            match call(channel.clone(), key.map(str::to_owned), victim.ids()).await {
                Ok(answer) => panic!("{name} with {label} answered {answer}"),
                Err(status) => {
                    assert_eq!(status.code(), Code::Unauthenticated, "{name} with {label}")
                }
            }
        }
        if *writes {
            attempts += 1;
            match call(channel.clone(), Some(attackers.read.clone()), victim.ids()).await {
                Ok(answer) => panic!("{name} with a read key answered {answer}"),
                Err(status) => {
                    assert_eq!(status.code(), Code::PermissionDenied, "{name} with a read key")
                }
            }
        }
        for (label, key) in [
            ("another tenant's admin key", &attackers.other_tenant),
            ("another user's key", &attackers.other_user),
        ] {
            attempts += 1;
            match call(channel.clone(), Some(key.clone()), victim.ids()).await {
                Ok(answer) => leaked(&mut leaks, &format!("{name} with {label}"), &answer),
                Err(status) => {
                    assert_ne!(status.code(), Code::Internal, "{name} with {label}: {status:?}");
                    leaked(&mut leaks, &format!("{name} with {label}"), status.message());
                }
            }
        }
    }

    let after = snapshot(&server, &admin, &victim).await;
    assert_eq!(before, after, "an attacker changed the victim's things");
    assert_eq!(leaks, Vec::<String>::new(), "leaks");
    eprintln!(
        "isolation table: {} REST routes, {} gRPC methods, {attempts} attempts, {} leaks",
        routes(&victim).len(),
        methods.len(),
        leaks.len()
    );
}

/// The victim's ids a gRPC attempt uses.
#[derive(Clone)]
struct Ids {
    transfer: String,
    hold: String,
    webhook: String,
}

impl Victim {
    fn ids(&self) -> Ids {
        Ids {
            transfer: self.transfer.clone(),
            hold: self.hold.clone(),
            webhook: self.webhook.clone(),
        }
    }
}

type Answer = Pin<Box<dyn Future<Output = Result<String, tonic::Status>> + Send>>;
type Call = Box<dyn Fn(Channel, Option<String>, Ids) -> Answer>;

/// Every gRPC method but health and reflection: (path, whether it writes, the attempt).
fn grpc_table() -> Vec<(&'static str, bool, Call)> {
    macro_rules! unary {
        ($client:ident, $method:ident, |$ids:ident| $request:expr) => {
            Box::new(move |channel: Channel, key: Option<String>, $ids: Ids| -> Answer {
                Box::pin(async move {
                    let mut client = $client::new(channel);
                    let request = with_key($request, key.as_deref());
                    client.$method(request).await.map(|answer| format!("{:?}", answer.into_inner()))
                })
            })
        };
    }
    let pay = |_ids: &Ids, key: &str| pb::TransferRequest {
        idempotency_key: key.into(),
        debit_account_id: "user:ua1:USD".into(),
        credit_account_id: "user:ua2:USD".into(),
        amount_minor: 100,
        currency: "USD".into(),
        ..Default::default()
    };
    vec![
        (
            "/kopek.v1.Ledger/CreateAccounts",
            true,
            unary!(LedgerClient, create_accounts, |_ids| pb::CreateAccountsRequest {
                accounts: vec![pb::NewAccount {
                    id: "victim-acct".into(),
                    currency: "USD".into(),
                    ..Default::default()
                }],
            }),
        ),
        (
            "/kopek.v1.Ledger/GetAccount",
            false,
            unary!(LedgerClient, get_account, |_ids| pb::GetAccountRequest {
                id: "user:ua1:USD".into()
            }),
        ),
        (
            "/kopek.v1.Ledger/GetAccounts",
            false,
            unary!(LedgerClient, get_accounts, |_ids| pb::GetAccountsRequest {
                ids: vec!["user:ua1:USD".into(), "victim-acct".into()]
            }),
        ),
        (
            "/kopek.v1.Ledger/ListAccounts",
            false,
            unary!(LedgerClient, list_accounts, |_ids| pb::ListAccountsRequest {
                owner: "ua1".into(),
                ..Default::default()
            }),
        ),
        (
            "/kopek.v1.Ledger/UpdateAccount",
            true,
            unary!(LedgerClient, update_account, |_ids| pb::UpdateAccountRequest {
                id: "user:ua1:USD".into(),
                overdraft_limit_minor: Some(1_000_000),
                status: None
            }),
        ),
        (
            "/kopek.v1.Ledger/CreateTransfers",
            true,
            unary!(LedgerClient, create_transfers, |ids| pb::CreateTransfersRequest {
                transfers: vec![pay(&ids, "g-pay")],
                linked: false
            }),
        ),
        (
            "/kopek.v1.Ledger/GetTransfer",
            false,
            unary!(LedgerClient, get_transfer, |ids| pb::GetTransferRequest {
                lookup: Some(pb::get_transfer_request::Lookup::Id(ids.transfer.clone()))
            }),
        ),
        (
            "/kopek.v1.Ledger/ListTransfers",
            false,
            unary!(LedgerClient, list_transfers, |_ids| pb::ListTransfersRequest {
                account_id: "victim-acct".into(),
                ..Default::default()
            }),
        ),
        (
            "/kopek.v1.Ledger/ListEntries",
            false,
            unary!(LedgerClient, list_entries, |_ids| pb::ListEntriesRequest {
                account_id: "victim-acct".into(),
                ..Default::default()
            }),
        ),
        (
            "/kopek.v1.Ledger/GetBalance",
            false,
            unary!(LedgerClient, get_balance, |_ids| pb::GetBalanceRequest {
                account_id: "user:ua1:USD".into(),
                as_of: String::new()
            }),
        ),
        (
            "/kopek.v1.Ledger/GetSpending",
            false,
            unary!(LedgerClient, get_spending, |_ids| pb::GetSpendingRequest {
                user_id: "ua1".into()
            }),
        ),
        (
            "/kopek.v1.Ledger/CreateWebhook",
            true,
            unary!(LedgerClient, create_webhook, |_ids| pb::CreateWebhookRequest {
                idempotency_key: "v-hook".into(),
                url: "http://127.0.0.1:9/x".into(),
                ..Default::default()
            }),
        ),
        (
            "/kopek.v1.Ledger/ListWebhooks",
            true,
            unary!(LedgerClient, list_webhooks, |_ids| pb::ListWebhooksRequest {}),
        ),
        (
            "/kopek.v1.Ledger/DeleteWebhook",
            true,
            unary!(LedgerClient, delete_webhook, |ids| pb::DeleteWebhookRequest {
                id: ids.webhook.clone()
            }),
        ),
        (
            "/kopek.v1.Ledger/ListWebhookDeliveries",
            true,
            unary!(LedgerClient, list_webhook_deliveries, |ids| pb::ListWebhookDeliveriesRequest {
                webhook_id: ids.webhook.clone(),
                ..Default::default()
            }),
        ),
        (
            "/kopek.v1.Ledger/RedeliverWebhook",
            true,
            unary!(LedgerClient, redeliver_webhook, |ids| pb::RedeliverWebhookRequest {
                webhook_id: ids.webhook.clone(),
                delivery_id: "dl_0".into()
            }),
        ),
        (
            "/kopek.v1.Ledger/SetRates",
            true,
            unary!(LedgerClient, set_rates, |_ids| pb::SetRatesRequest {
                rates: vec![pb::RateInput {
                    base: "USD".into(),
                    quote: "EUR".into(),
                    rate: "5".into(),
                    ..Default::default()
                }]
            }),
        ),
        (
            "/kopek.v1.Ledger/ListRates",
            false,
            unary!(LedgerClient, list_rates, |_ids| pb::ListRatesRequest {}),
        ),
        (
            "/kopek.v1.Ledger/CreateQuote",
            true,
            unary!(LedgerClient, create_quote, |_ids| pb::CreateQuoteRequest {
                idempotency_key: "q".into(),
                from: "USD".into(),
                to: "EUR".into(),
                amount_minor: 100,
                ..Default::default()
            }),
        ),
        (
            "/kopek.v1.Ledger/GetQuote",
            false,
            unary!(LedgerClient, get_quote, |_ids| pb::GetQuoteRequest {
                id: "01ARZ3NDEKTSV4RRFFQ69G5FAV".into()
            }),
        ),
        (
            "/kopek.v1.Ledger/Convert",
            false,
            unary!(LedgerClient, convert, |_ids| pb::ConvertRequest {
                from_currency: "USD".into(),
                to_currency: "EUR".into(),
                amount_minor: 100,
                ..Default::default()
            }),
        ),
        (
            "/kopek.v1.Ledger/StreamEvents",
            false,
            Box::new(|channel: Channel, key: Option<String>, _ids: Ids| -> Answer {
                Box::pin(async move {
                    let mut client = LedgerClient::new(channel);
                    let request =
                        pb::StreamEventsRequest { after_sequence: 0, ..Default::default() };
                    let mut events =
                        client.stream_events(with_key(request, key.as_deref())).await?.into_inner();
                    let mut seen = String::new();
                    while let Ok(Ok(Some(event))) =
                        tokio::time::timeout(Duration::from_millis(300), events.message()).await
                    {
                        seen.push_str(&format!("{event:?}"));
                    }
                    Ok(seen)
                })
            }),
        ),
        (
            "/kopek.v1.Ledger/StreamTransfers",
            true,
            Box::new(move |channel: Channel, key: Option<String>, ids: Ids| -> Answer {
                Box::pin(async move {
                    let mut client = LedgerClient::new(channel);
                    let void = pb::TransferRequest {
                        idempotency_key: "s-void".into(),
                        action: pb::TransferAction::Void as i32,
                        pending_id: ids.hold.clone(),
                        ..Default::default()
                    };
                    let message = pb::StreamTransfersRequest {
                        request_id: 1,
                        transfers: vec![pay(&ids, "s-pay"), void],
                        linked: false,
                        compact: false,
                    };
                    let mut answers = client
                        .stream_transfers(with_key(tokio_stream::iter([message]), key.as_deref()))
                        .await?
                        .into_inner();
                    let mut seen = String::new();
                    while let Some(answer) = answers.message().await? {
                        seen.push_str(&format!("{answer:?}"));
                    }
                    Ok(seen)
                })
            }),
        ),
        (
            "/payment.v1.PaymentService/AuthorizePayment",
            true,
            unary!(PaymentServiceClient, authorize_payment, |_ids| {
                payment::AuthorizePaymentRequest {
                    idempotency_key: "p-1".into(),
                    payer_account_id: "user:ua1:USD".into(),
                    payee_account_id: "user:ua2:USD".into(),
                    amount_cents: 100,
                    currency: "USD".into(),
                    ..Default::default()
                }
            }),
        ),
        (
            "/payment.v1.PaymentService/GetPayment",
            false,
            unary!(PaymentServiceClient, get_payment, |ids| payment::GetPaymentRequest {
                payment_id: ids.transfer.clone()
            }),
        ),
        (
            "/payment.v1.PaymentService/GetAccountBalance",
            false,
            unary!(PaymentServiceClient, get_account_balance, |_ids| {
                payment::GetAccountBalanceRequest { account_id: "user:ua1:USD".into() }
            }),
        ),
        (
            "/transaction.TransactionService/StreamTransactions",
            true,
            Box::new(|channel: Channel, key: Option<String>, _ids: Ids| -> Answer {
                Box::pin(async move {
                    let mut client = TransactionServiceClient::new(channel);
                    let message = transaction_pb::Transaction {
                        transaction_id: "t-1".into(),
                        user_id: "ua1".into(),
                        category: "Food".into(),
                        amount: 1.0,
                        currency: "USD".into(),
                        timestamp: String::new(),
                    };
                    let mut answers = client
                        .stream_transactions(with_key(
                            tokio_stream::iter([message]),
                            key.as_deref(),
                        ))
                        .await?
                        .into_inner();
                    let mut seen = String::new();
                    while let Some(answer) = answers.message().await? {
                        seen.push_str(&format!("{answer:?}"));
                    }
                    Ok(seen)
                })
            }),
        ),
    ]
}

/// Every method of every service the server lists by reflection, as `/service/Method`.
async fn grpc_methods(channel: Channel) -> BTreeSet<String> {
    use prost::Message;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut client = ServerReflectionClient::new(channel);
    let ask = |request: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([ask(MessageRequest::ListServices(
            String::new(),
        ))]))
        .await
        .expect("reflection")
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        answers.next().await.expect("an answer").expect("ok").message_response
    else {
        panic!("not a service list")
    };
    let mut methods = BTreeSet::new();
    for service in list.service {
        let request = ask(MessageRequest::FileContainingSymbol(service.name.clone()));
        let mut answers = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("ok")
            .into_inner();
        let Some(MessageResponse::FileDescriptorResponse(files)) =
            answers.next().await.expect("an answer").expect("ok").message_response
        else {
            panic!("no descriptor for {}", service.name)
        };
        for bytes in files.file_descriptor_proto {
            let file =
                prost_types::FileDescriptorProto::decode(bytes.as_slice()).expect("descriptor");
            let package = file.package.clone().unwrap_or_default();
            for declared in &file.service {
                let full = if package.is_empty() {
                    declared.name().to_owned()
                } else {
                    format!("{package}.{}", declared.name())
                };
                if full != service.name {
                    continue;
                }
                for method in &declared.method {
                    methods.insert(format!("/{full}/{}", method.name()));
                }
            }
        }
    }
    methods
}
