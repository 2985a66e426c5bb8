//! `transaction.TransactionService/StreamTransactions` against the real binary, checked
//! against a small model of the spec's rules.

use crate::support::*;
use kopek_proto::payment::v1 as payment;
use kopek_proto::payment::v1::payment_service_client::PaymentServiceClient;
use kopek_proto::transaction as pb;
use kopek_proto::transaction::transaction_service_client::TransactionServiceClient;
use std::collections::HashMap;
use tokio_stream::StreamExt;

/// What the spec says the answer to a transaction is.
#[derive(Clone, Debug, PartialEq)]
enum Expected {
    Success { replay: bool },
    Failure { code: &'static str, replay: bool },
}

/// The model: balances per account, and what each id was first answered.
#[derive(Default)]
struct Model {
    balances: HashMap<String, i64>,
    answers: HashMap<String, (pb::Transaction, Expected)>,
}

const CATEGORIES: [&str; 5] = ["Food", "Transport", "Eating Out", "food", "BOOKS"];

/// The category as it appears in its account id (`Eating Out` is `Eating_20Out`).
fn slug(category: &str) -> String {
    category.replace(' ', "_20")
}

impl Model {
    fn expect(&mut self, transaction: &pb::Transaction, recorded: bool) -> Expected {
        if let Some((original, answer)) = self.answers.get(&transaction.transaction_id) {
            let same = original.user_id == transaction.user_id
                && original.category.to_lowercase() == transaction.category.to_lowercase()
                && original.amount == transaction.amount
                && original.currency == transaction.currency;
            return match (same, answer) {
                (false, _) => Expected::Failure { code: "IDEMPOTENCY_KEY_REUSED", replay: false },
                (true, Expected::Success { .. }) => Expected::Success { replay: true },
                (true, Expected::Failure { code, .. }) => Expected::Failure { code, replay: true },
            };
        }
        let currency = transaction.currency.as_str();
        let minor = (f64::from(transaction.amount) * if currency == "JPY" { 1.0 } else { 100.0 })
            .round() as i64;
        let user = format!("user:{}:{currency}", transaction.user_id);
        let category = transaction.category.to_lowercase();
        let answer = match category.as_str() {
            "deposit" | "topup" => {
                *self.balances.entry(user).or_default() += minor;
                Expected::Success { replay: false }
            }
            _ => match self.balances.get(&user).copied() {
                None => Expected::Failure { code: "ACCOUNT_NOT_FOUND", replay: false },
                Some(balance) if balance < minor => {
                    Expected::Failure { code: "INSUFFICIENT_FUNDS", replay: false }
                }
                Some(_) => {
                    *self.balances.entry(user).or_default() -= minor;
                    let collector = if category == "withdrawal" {
                        format!("world:{currency}")
                    } else {
                        format!("category:{}:{currency}", slug(&transaction.category))
                    };
                    *self.balances.entry(collector).or_default() += minor;
                    Expected::Success { replay: false }
                }
            },
        };
        if recorded {
            self.answers
                .insert(transaction.transaction_id.clone(), (transaction.clone(), answer.clone()));
        }
        answer
    }
}

/// A small deterministic generator, so a failure names the transaction that caused it.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 =
            self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

fn transaction(
    id: u64,
    user: u64,
    category: &str,
    amount: f32,
    currency: &str,
    timestamp: &str,
) -> pb::Transaction {
    pb::Transaction {
        transaction_id: format!("tx-{id}"),
        user_id: format!("u{user}"),
        category: category.to_owned(),
        amount,
        currency: currency.to_owned(),
        timestamp: timestamp.to_owned(),
    }
}

/// The workload: the transaction, and the failure code if it is malformed (never recorded).
fn workload(count: u64) -> Vec<(pb::Transaction, Option<&'static str>)> {
    let mut rng = Lcg(42);
    let mut sent: Vec<pb::Transaction> = Vec::new();
    let mut out = Vec::new();
    for id in 0..count {
        let user = rng.below(20);
        let currency = if rng.below(10) == 0 { "JPY" } else { "USD" };
        let cents = 1 + rng.below(30_000);
        // Amounts are written as a client would: a decimal, then the nearest f32.
        let amount_of = |minor: u64| -> f32 {
            let text = if currency == "JPY" {
                minor.to_string()
            } else {
                format!("{}.{:02}", minor / 100, minor % 100)
            };
            text.parse().expect("decimal")
        };
        let amount = amount_of(cents);
        let timestamp =
            ["", "2024-03-01T10:00:00Z", "2024-03-01T10:00:00", "2024-03-01T12:00:00+02:00"]
                [rng.below(4) as usize];
        let roll = rng.below(100);
        let item = match roll {
            0..=29 => {
                let category = ["deposit", "Deposit", "TOPUP", "topup"][rng.below(4) as usize];
                (transaction(id, user, category, amount_of(cents * 3), currency, timestamp), None)
            }
            30..=39 => (transaction(id, user, "withdrawal", amount, currency, timestamp), None),
            40..=84 => {
                let category = CATEGORIES[rng.below(CATEGORIES.len() as u64) as usize];
                (transaction(id, user, category, amount, currency, timestamp), None)
            }
            85..=89 => match rng.below(6) {
                0 => {
                    (transaction(id, user, "Food", f32::NAN, currency, ""), Some("INVALID_AMOUNT"))
                }
                1 => (transaction(id, user, "Food", -5.0, currency, ""), Some("INVALID_AMOUNT")),
                2 => (transaction(id, user, "Food", 1.234, "USD", ""), Some("INVALID_AMOUNT")),
                3 => (transaction(id, user, "Food", 1.0, "ZZZ", ""), Some("UNKNOWN_CURRENCY")),
                4 => (
                    transaction(id, user, "Food", 1.0, "USD", "last tuesday"),
                    Some("INVALID_ARGUMENT"),
                ),
                _ => (
                    pb::Transaction {
                        user_id: String::new(),
                        ..transaction(id, user, "Food", 1.0, "USD", "")
                    },
                    Some("INVALID_ARGUMENT"),
                ),
            },
            90..=96 if !sent.is_empty() => {
                (sent[rng.below(sent.len() as u64) as usize].clone(), None)
            }
            97..=99 if !sent.is_empty() => {
                let earlier = sent[rng.below(sent.len() as u64) as usize].clone();
                let other = if earlier.amount == 1.0 { 2.0 } else { 1.0 };
                (pb::Transaction { amount: other, ..earlier }, None)
            }
            _ => (transaction(id, user, "deposit", amount, currency, timestamp), None),
        };
        if item.1.is_none() {
            sent.push(item.0.clone());
        }
        out.push(item);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_transactions_on_one_stream_answer_in_order_and_add_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    // dir is read again at the end, beside the running server.
    let server = Server::start(dir.path());
    let mut client = TransactionServiceClient::new(server.channel().await);
    let work = workload(10_000);
    let mut model = Model::default();
    let expected: Vec<Expected> = work
        .iter()
        .map(|(transaction, malformed)| match malformed {
            Some(code) => Expected::Failure { code, replay: false },
            None => model.expect(transaction, true),
        })
        .collect();
    let outbound = tokio_stream::iter(work.clone().into_iter().map(|(transaction, _)| transaction));
    let mut responses = client.stream_transactions(outbound).await.expect("stream").into_inner();
    let mut index = 0;
    while let Some(response) = responses.next().await {
        let response = response.expect("stream item");
        let (transaction, _) = &work[index];
        assert_eq!(
            response.transaction_id, transaction.transaction_id,
            "answer {index} is out of order"
        );
        let actual = match response.status.as_str() {
            "success" => {
                assert!(
                    response.message == "processed" || response.message == "processed (replay)",
                    "{response:?}"
                );
                Expected::Success { replay: response.message.ends_with("(replay)") }
            }
            "failure" => {
                let (code, _) = response.message.split_once(": ").expect("CODE: sentence");
                let code = [
                    "INVALID_AMOUNT",
                    "UNKNOWN_CURRENCY",
                    "INVALID_ARGUMENT",
                    "ACCOUNT_NOT_FOUND",
                    "INSUFFICIENT_FUNDS",
                    "IDEMPOTENCY_KEY_REUSED",
                ]
                .into_iter()
                .find(|known| *known == code)
                .unwrap_or_else(|| panic!("unexpected code in {response:?}"));
                Expected::Failure { code, replay: response.message.ends_with("(replay)") }
            }
            other => panic!("status {other:?} is neither success nor failure"),
        };
        assert_eq!(
            actual, expected[index],
            "transaction {index}: {transaction:?} answered {response:?}"
        );
        index += 1;
    }
    assert_eq!(index, work.len(), "one answer per transaction, then a clean end");
    let replays = expected
        .iter()
        .filter(|e| {
            matches!(e, Expected::Success { replay: true } | Expected::Failure { replay: true, .. })
        })
        .count();
    assert!(replays > 300, "the workload must replay ids ({replays})");

    let mut payments = PaymentServiceClient::new(server.channel().await);
    let mut outside: HashMap<String, i64> = HashMap::new();
    for (account, expected_balance) in &model.balances {
        let request = payment::GetAccountBalanceRequest { account_id: account.clone() };
        let balance =
            payments.get_account_balance(request).await.expect("account exists").into_inner();
        if account.starts_with("world:") {
            continue;
        }
        assert_eq!(balance.available_balance_cents, *expected_balance, "balance of {account}");
        *outside.entry(balance.currency).or_default() += expected_balance;
    }
    // Money in the ledger came from outside it: world:<CUR> is minus everything else.
    for (currency, inside) in outside {
        let request = payment::GetAccountBalanceRequest { account_id: format!("world:{currency}") };
        let world = payments.get_account_balance(request).await.expect("world").into_inner();
        assert_eq!(world.available_balance_cents, -inside, "world:{currency}");
    }
    for (account, present) in [
        ("category:Food:USD", true),
        ("category:food:USD", true),
        ("category:Eating_20Out:USD", true),
    ] {
        let request = payment::GetAccountBalanceRequest { account_id: account.into() };
        assert_eq!(payments.get_account_balance(request).await.is_ok(), present, "{account}");
    }

    // One stream, yet the writer committed many transactions per batch: every event of a
    // batch carries its commit time, so far fewer times than transfers means pipelining.
    let store = open_ledger(dir.path()).await;
    let mut after = 0;
    let mut commit_times = std::collections::BTreeSet::new();
    let mut transfer_events = 0;
    loop {
        let events = store.events_after(None, after, 1_000).await.expect("events");
        let Some(last) = events.last() else { break };
        after = last.sequence;
        for event in events
            .iter()
            .filter(|event| event.kind == "TransferPosted" || event.kind == "TransferDeclined")
        {
            transfer_events += 1;
            commit_times.insert(event.at);
        }
    }
    assert!(transfer_events > 8_000, "{transfer_events} transfers recorded");
    assert!(
        commit_times.len() * 4 < transfer_events,
        "{} commits for {transfer_events} transfers: not pipelined",
        commit_times.len()
    );

    // A timestamp is the transfer's effective time.
    let mut ledger_client = server.client().await;
    let timed = work
        .iter()
        .find(|(transaction, malformed)| {
            malformed.is_none()
                && transaction.timestamp == "2024-03-01T12:00:00+02:00"
                && transaction.category.eq_ignore_ascii_case("deposit")
        })
        .expect("a deposit with an offset timestamp");
    let lookup = kopek_proto::kopek::v1::GetTransferRequest {
        lookup: Some(kopek_proto::kopek::v1::get_transfer_request::Lookup::IdempotencyKey(
            format!("txn:{}", timed.0.transaction_id),
        )),
    };
    let transfer = ledger_client
        .get_transfer(lookup)
        .await
        .expect("the transfer")
        .into_inner()
        .transfer
        .expect("transfer");
    assert_eq!(transfer.effective_at, "2024-03-01T10:00:00.000000Z");
}

#[tokio::test]
async fn failures_say_why_and_a_dropped_stream_applies_nothing_twice() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let channel = server.channel().await;
    let mut client = TransactionServiceClient::new(channel.clone());
    let first = vec![
        transaction(1, 7, "topup", 12.0, "USD", ""),
        transaction(2, 7, "Food", 50.0, "USD", "2023-01-04T00:00:00"),
    ];
    let answers: Vec<pb::TransactionResponse> = client
        .stream_transactions(tokio_stream::iter(first))
        .await
        .expect("stream")
        .into_inner()
        .map(|item| item.expect("answer"))
        .collect()
        .await;
    assert_eq!(answers[0].status, "success");
    assert_eq!(answers[1].message, "INSUFFICIENT_FUNDS: balance 12.00 USD is less than 50.00 USD");

    // The timestamp and the category text are content: changing either is a reuse of the id.
    let resent = vec![
        transaction(1, 7, "topup", 12.0, "USD", "2024-01-01T00:00:00Z"),
        transaction(1, 7, "TOPUP", 12.0, "USD", ""),
        transaction(1, 7, "topup", 12.0, "USD", ""),
    ];
    let answers: Vec<pb::TransactionResponse> = client
        .stream_transactions(tokio_stream::iter(resent))
        .await
        .expect("stream")
        .into_inner()
        .map(|item| item.expect("answer"))
        .collect()
        .await;
    assert!(answers[0].message.starts_with("IDEMPOTENCY_KEY_REUSED: "), "{:?}", answers[0]);
    assert!(answers[1].message.starts_with("IDEMPOTENCY_KEY_REUSED: "), "{:?}", answers[1]);
    assert_eq!(
        (answers[2].status.as_str(), answers[2].message.as_str()),
        ("success", "processed (replay)")
    );

    // The payment contract keeps its own keys: its "tx-1" does not collide with this "tx-1".
    let mut payments = PaymentServiceClient::new(channel.clone());
    let request = payment::AuthorizePaymentRequest {
        idempotency_key: "tx-1".into(),
        payer_account_id: "user:u7:USD".into(),
        payee_account_id: "nobody".into(),
        amount_cents: 100,
        currency: "USD".into(),
        description: String::new(),
    };
    let answer = payments.authorize_payment(request).await.expect("not a key reuse").into_inner();
    assert_eq!(
        answer.error.map(|error| error.code),
        Some(payment::PaymentErrorCode::AccountNotFound as i32)
    );

    // 500 deposits of 1.00; the client reads 100 answers and hangs up.
    let deposits: Vec<pb::Transaction> =
        (100..600).map(|id| transaction(id, 8, "deposit", 1.0, "USD", "")).collect();
    let (sender, receiver) = tokio::sync::mpsc::channel(1_000);
    for deposit in &deposits {
        sender.send(deposit.clone()).await.expect("queue");
    }
    let mut responses = client
        .stream_transactions(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .expect("stream")
        .into_inner();
    for _ in 0..100 {
        assert_eq!(responses.next().await.expect("answer").expect("ok").status, "success");
    }
    drop(responses);
    drop(sender);
    // It sends all 500 again on a new connection: none applies twice.
    let mut client = TransactionServiceClient::new(server.channel().await);
    let answers: Vec<pb::TransactionResponse> = client
        .stream_transactions(tokio_stream::iter(deposits))
        .await
        .expect("stream")
        .into_inner()
        .map(|item| item.expect("answer"))
        .collect()
        .await;
    assert!(answers.iter().all(|answer| answer.status == "success"));
    assert!(
        answers[..100].iter().all(|answer| answer.message == "processed (replay)"),
        "acknowledged ones replay"
    );
    let mut payments = PaymentServiceClient::new(channel);
    let balance = payments
        .get_account_balance(payment::GetAccountBalanceRequest { account_id: "user:u8:USD".into() })
        .await;
    assert_eq!(
        balance.expect("balance").into_inner().available_balance_cents,
        50_000,
        "each deposit applied once"
    );
}

#[tokio::test]
async fn the_longest_transaction_id_replays_like_any_other() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let mut client = TransactionServiceClient::new(server.channel().await);
    // 255 characters: the most a client may send; stored inside the contract's key scope.
    let long = pb::Transaction {
        transaction_id: "k".repeat(255),
        ..transaction(0, 9, "topup", 5.0, "USD", "")
    };
    let too_long = pb::Transaction { transaction_id: "k".repeat(256), ..long.clone() };
    let mut answers = Vec::new();
    // One stream each, so the replay is read back from the database, not the same batch.
    for transaction in [long.clone(), long, too_long] {
        let answer = client
            .stream_transactions(tokio_stream::iter(vec![transaction]))
            .await
            .expect("stream")
            .into_inner()
            .next()
            .await
            .expect("an answer")
            .expect("answer");
        answers.push(answer);
    }
    assert_eq!((answers[0].status.as_str(), answers[0].message.as_str()), ("success", "processed"));
    assert_eq!(
        (answers[1].status.as_str(), answers[1].message.as_str()),
        ("success", "processed (replay)")
    );
    assert_eq!(answers[2].status, "failure", "{:?}", answers[2]);
}
