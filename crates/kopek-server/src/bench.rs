//! `kopek bench`: a load generator in the binary. By default it starts its own `kopek serve`
//! on a temporary data directory (SQLite, or PostgreSQL with `--database`), opens accounts,
//! drives transfers through one of four surfaces, measures throughput and latencies while a
//! side task looks up random accounts, then checks every balance against the plan and runs
//! the books check. Commits are durable: the server is the ordinary one, nothing is relaxed.
//!
//! The whole workload is generated before the clock starts, from a seed, so the client spends
//! its CPU on sending, not on making up transfers: server and bench share the machine.

use crate::cli::{BenchArgs, Distribution, Surface};
use anyhow::{Context, bail};
use kopek_proto::kopek::v1 as pb;
use kopek_proto::payment::v1 as payment;
use kopek_proto::transaction as contract;
use kopek_testkit::SplitMix;
use kopek_testkit::startup::Listeners;
use pb::ledger_client::LedgerClient;
use serde_json::json;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Semaphore;
use tonic::transport::Channel;

/// The bench accounts' currency.
const CURRENCY: &str = "USD";
/// How far a bench account may go below zero: far more than any run moves, so no transfer is
/// declined and every balance can be checked against the plan.
const OVERDRAFT_MINOR: i64 = 1_000_000_000_000;
/// What each user of the transactions contract deposits first, in major units.
const DEPOSIT_MAJOR: f32 = 1_000_000.0;
/// Purchase categories of the transactions contract (each a `category:<name>:USD` account).
const CATEGORIES: [&str; 4] = ["Food", "Transport", "Shopping", "Travel"];
/// Accounts per `CreateAccounts` / `GetAccounts` call.
const ACCOUNTS_PER_CALL: usize = 1_000;
/// Pause between two lookups of the query task.
const QUERY_PAUSE: Duration = Duration::from_millis(5);

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    // reqwest is built without a default TLS provider (the server picks ring).
    let _ = rustls::crypto::ring::default_provider().install_default();
    if args.accounts < 3 {
        bail!("--accounts must be at least 3");
    }
    if args.batch_size == 0 || args.batch_size > kopek_core::limits::TRANSFERS_PER_REQUEST_MAX {
        bail!("--batch-size must be 1 to {}", kopek_core::limits::TRANSFERS_PER_REQUEST_MAX);
    }
    let server = match &args.addr {
        Some(addr) => Target::remote(addr, args.http_addr.as_deref()),
        None => Target::start(&args).await?,
    };
    let result = bench(&args, &server).await;
    server.stop().await;
    let report = result?;
    report.print(args.json);
    if report.problems.is_empty() {
        Ok(())
    } else {
        bail!("the ledger does not match the load: {}", report.problems.join("; "))
    }
}

async fn bench(args: &BenchArgs, server: &Target) -> anyhow::Result<Report> {
    let rss_idle = server.rss().await;
    let channel = Channel::from_shared(server.grpc.clone())?
        .connect()
        .await
        .with_context(|| format!("cannot reach kopek at {}", server.grpc))?;
    let bearer = crate::client::bearer(args.api_key.as_deref())
        .map_err(|_| anyhow::anyhow!("--api-key is not a valid key"))?;
    let ledger = LedgerClient::with_interceptor(channel.clone(), bearer.clone());
    let plan = Plan::new(args);
    eprintln!(
        "kopek bench: {} transfers over {} accounts, {:?} surface, {:?} distribution, run {}",
        plan.moves.len(),
        args.accounts,
        args.surface,
        args.distribution,
        plan.run
    );
    let setup = Instant::now();
    match args.surface {
        Surface::Transactions => deposit_for_users(&channel, &bearer, &plan).await?,
        _ => open_accounts(ledger.clone(), &plan).await?,
    }
    eprintln!("kopek bench: set up in {:.1} s; loading", setup.elapsed().as_secs_f64());
    let loaded = tokio_util::sync::CancellationToken::new();
    let queries =
        tokio::spawn(query_load(ledger.clone(), plan.account_ids(args.surface), loaded.clone()));
    let searches = args.search.then(|| {
        tokio::spawn(search_load(ledger.clone(), plan.account_ids(args.surface), loaded.clone()))
    });
    let cpu_before = server.cpu_seconds().await;
    let threads_before = server.thread_cpu();
    let started = Instant::now();
    let tally = match args.surface {
        Surface::Stream => stream_load(&channel, &bearer, &plan, args).await?,
        Surface::Transactions => transactions_load(&channel, &bearer, &plan, args).await?,
        Surface::Authorize => authorize_load(&channel, &bearer, &plan, args).await?,
        Surface::Http => http_load(server, args, &plan).await?,
    };
    let elapsed = started.elapsed();
    let cpu_seconds = match (cpu_before, server.cpu_seconds().await) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    loaded.cancel();
    let query_latencies = queries.await.unwrap_or_default();
    let search = match searches {
        Some(task) => Some(task.await.unwrap_or_default()),
        None => None,
    };
    let rss = server.rss().await;
    let projection = server.projection_catch_up().await;
    // Taken after the catch-up, so the projection's work for this load is counted.
    let threads = match (threads_before, server.thread_cpu()) {
        (Some(before), Some(after)) => thread_cpu_delta(&before, &after),
        _ => Vec::new(),
    };
    let mut problems = Vec::new();
    if tally.accepted() != plan.moves.len() as u64 {
        problems.push(format!(
            "{} of {} transfers accepted ({} declined, {} refused)",
            tally.accepted(),
            plan.moves.len(),
            tally.declined.load(Ordering::Relaxed),
            tally.refused.load(Ordering::Relaxed)
        ));
    }
    let mut verified = None;
    if args.verify && problems.is_empty() {
        problems.extend(check_balances(ledger, &plan, args.surface).await?);
        verified = server.verify().await?;
        if let Some(report) = &verified {
            problems.extend(report.problems.iter().cloned());
        }
    }
    Ok(Report {
        surface: args.surface,
        distribution: args.distribution,
        transfers: plan.moves.len() as u64,
        accepted: tally.accepted(),
        elapsed,
        latency: Latencies::of(tally.latencies.into_inner().unwrap_or_default()),
        query: Latencies::of(query_latencies),
        search: search.map(SearchLatencies::of),
        rss_idle,
        rss,
        cpu_seconds,
        threads,
        projection,
        datafile: server.datafile(),
        verified,
        problems,
    })
}

/// The workload: who pays whom how much, in order, fixed by the seed.
struct Plan {
    /// Makes this run's ids and keys unique, so runs against one database never replay.
    run: String,
    accounts: usize,
    /// (payer index, payee index, amount in minor units).
    moves: Vec<(u32, u32, i64)>,
}

impl Plan {
    fn new(args: &BenchArgs) -> Plan {
        let seed = args.seed.unwrap_or_else(|| kopek_clock::unix_nanos() as u64);
        let mut random = SplitMix::new(seed);
        // Ids and keys are the run's own even with a fixed seed: a second run against the same
        // server must not replay the first one's transfers.
        let started = kopek_clock::now().as_unix_micros() as u64;
        let run = format!(
            "b{:08x}",
            SplitMix::new(started ^ u64::from(std::process::id())).next_u64() as u32
        );
        let accounts = args.accounts;
        let zipf = matches!(args.distribution, Distribution::Zipf).then(|| zipf_table(accounts));
        let mut moves = Vec::with_capacity(args.transfers as usize);
        for _ in 0..args.transfers {
            let pick = |random: &mut SplitMix| match &zipf {
                Some(table) => {
                    let point = random.unit();
                    table.partition_point(|&edge| edge < point).min(accounts - 1)
                }
                None => random.index(accounts),
            };
            let (payer, payee) = match args.distribution {
                // Every transfer touches one of two accounts, paying or paid.
                Distribution::Hot => {
                    let hot = random.index(2);
                    let other = 2 + random.index(accounts - 2);
                    if random.index(2) == 0 { (hot, other) } else { (other, hot) }
                }
                Distribution::Uniform | Distribution::Zipf => {
                    let payer = pick(&mut random);
                    let mut payee = pick(&mut random);
                    while payee == payer {
                        payee = random.index(accounts);
                    }
                    (payer, payee)
                }
            };
            moves.push((payer as u32, payee as u32, 1 + random.index(100) as i64));
        }
        Plan { run, accounts, moves }
    }

    fn account(&self, index: u32) -> String {
        format!("{}-{index:07}", self.run)
    }

    fn key(&self, index: usize) -> String {
        format!("{}-t{index}", self.run)
    }

    /// The ledger account of bench account `index` on `surface`.
    fn ledger_account(&self, surface: Surface, index: u32) -> String {
        match surface {
            Surface::Transactions => format!("user:{}:{CURRENCY}", self.account(index)),
            _ => self.account(index),
        }
    }

    fn account_ids(&self, surface: Surface) -> Vec<String> {
        (0..self.accounts as u32).map(|index| self.ledger_account(surface, index)).collect()
    }

    /// What every account's posted balance must be after the run (all accepted).
    fn expected_balances(&self, surface: Surface) -> Vec<i64> {
        let start = match surface {
            Surface::Transactions => (DEPOSIT_MAJOR as i64) * 100,
            _ => 0,
        };
        let mut balances = vec![start; self.accounts];
        for &(payer, payee, amount) in &self.moves {
            balances[payer as usize] -= amount;
            // A purchase pays a category account, not another user.
            if surface != Surface::Transactions {
                balances[payee as usize] += amount;
            }
        }
        balances
    }
}

/// The cumulative distribution of Zipf's law with exponent 1 over `n` ranks: account 0 is
/// the most used, account k about 1/(k+1) as often.
fn zipf_table(n: usize) -> Vec<f64> {
    let mut table: Vec<f64> = Vec::with_capacity(n);
    let mut total = 0.0;
    for rank in 1..=n {
        total += 1.0 / rank as f64;
        table.push(total);
    }
    for edge in &mut table {
        *edge /= total;
    }
    table
}

type Ledger =
    LedgerClient<tonic::service::interceptor::InterceptedService<Channel, crate::client::Bearer>>;

async fn open_accounts(mut ledger: Ledger, plan: &Plan) -> anyhow::Result<()> {
    let indexes: Vec<u32> = (0..plan.accounts as u32).collect();
    for chunk in indexes.chunks(ACCOUNTS_PER_CALL) {
        let accounts = chunk
            .iter()
            .map(|&index| pb::NewAccount {
                id: plan.account(index),
                currency: CURRENCY.to_owned(),
                overdraft_limit_minor: OVERDRAFT_MINOR,
                ..Default::default()
            })
            .collect();
        let response = ledger
            .create_accounts(pb::CreateAccountsRequest { accounts })
            .await
            .context("open the bench accounts")?
            .into_inner();
        if let Some(error) = response.results.iter().find_map(|result| result.error.as_ref()) {
            bail!("opening a bench account failed: {}", error.message);
        }
    }
    Ok(())
}

/// The transactions contract opens a user's account on the first deposit: one per user.
async fn deposit_for_users(
    channel: &Channel,
    bearer: &crate::client::Bearer,
    plan: &Plan,
) -> anyhow::Result<()> {
    let messages: Vec<contract::Transaction> = (0..plan.accounts as u32)
        .map(|index| contract::Transaction {
            transaction_id: format!("{}-deposit-{index}", plan.run),
            user_id: plan.account(index),
            category: "deposit".to_owned(),
            amount: DEPOSIT_MAJOR,
            currency: CURRENCY.to_owned(),
            timestamp: String::new(),
        })
        .collect();
    let tally = Tally::default();
    send_transactions(channel, bearer, messages, 8_192, &tally).await?;
    if tally.accepted() != plan.accounts as u64 {
        bail!("{} of {} deposits succeeded", tally.accepted(), plan.accounts);
    }
    Ok(())
}

/// What the load did: counts and every latency, in seconds.
#[derive(Default)]
struct Tally {
    posted: AtomicU64,
    declined: AtomicU64,
    refused: AtomicU64,
    /// One per request a client made, answer included: a `stream` request of `--batch-size`
    /// transfers, or one message or call on the other surfaces.
    latencies: Mutex<Vec<f64>>,
}

impl Tally {
    fn accepted(&self) -> u64 {
        self.posted.load(Ordering::Relaxed)
    }

    fn record(&self, latencies: Vec<f64>) {
        if let Ok(mut all) = self.latencies.lock() {
            all.extend(latencies);
        }
    }

    fn transfer_results(&self, results: &[pb::TransferResult]) {
        for result in results {
            match (&result.error, &result.transfer) {
                (None, Some(_)) => self.posted.fetch_add(1, Ordering::Relaxed),
                (Some(_), Some(_)) => self.declined.fetch_add(1, Ordering::Relaxed),
                _ => self.refused.fetch_add(1, Ordering::Relaxed),
            };
        }
    }
}

/// `kopek.v1` StreamTransfers: `--concurrency` streams, each with `--window` requests of
/// `--batch-size` transfers in flight.
async fn stream_load(
    channel: &Channel,
    bearer: &crate::client::Bearer,
    plan: &Plan,
    args: &BenchArgs,
) -> anyhow::Result<Tally> {
    let streams = args.concurrency.unwrap_or(1).max(1);
    let mut per_stream: Vec<Vec<pb::StreamTransfersRequest>> = vec![Vec::new(); streams];
    for (number, chunk) in plan.moves.chunks(args.batch_size).enumerate() {
        let first = number * args.batch_size;
        let transfers = chunk
            .iter()
            .enumerate()
            .map(|(offset, &(payer, payee, amount))| pb::TransferRequest {
                idempotency_key: plan.key(first + offset),
                debit_account_id: plan.account(payer),
                credit_account_id: plan.account(payee),
                amount_minor: amount,
                currency: CURRENCY.to_owned(),
                ..Default::default()
            })
            .collect();
        per_stream[number % streams].push(pb::StreamTransfersRequest {
            request_id: number as u64,
            transfers,
            linked: false,
            compact: args.compact,
        });
    }
    let tally = Arc::new(Tally::default());
    let mut tasks = Vec::new();
    for requests in per_stream {
        let mut ledger = LedgerClient::with_interceptor(channel.clone(), bearer.clone())
            .max_decoding_message_size(64 * 1024 * 1024);
        let (tally, window) = (tally.clone(), args.window.max(1));
        tasks.push(tokio::spawn(async move {
            let open = |stream| async move { ledger.stream_transfers(stream).await };
            let latencies = pipeline(requests, window, open, |response| {
                if response.error.is_some() {
                    tally.refused.fetch_add(refused_transfers(response), Ordering::Relaxed);
                }
                tally.transfer_results(&response.results);
            })
            .await?;
            tally.record(latencies);
            Ok::<(), anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(Arc::into_inner(tally).unwrap_or_default())
}

/// A refused request names no results; it counts as one refusal.
fn refused_transfers(response: &pb::StreamTransfersResponse) -> u64 {
    response.results.len().max(1) as u64
}

/// The streaming contract: one stream (or `--concurrency`), one transaction per message,
/// `--window` x `--batch-size` messages in flight. Each purchase debits a user and credits a
/// category account.
async fn transactions_load(
    channel: &Channel,
    bearer: &crate::client::Bearer,
    plan: &Plan,
    args: &BenchArgs,
) -> anyhow::Result<Tally> {
    let streams = args.concurrency.unwrap_or(1).max(1);
    let mut per_stream: Vec<Vec<contract::Transaction>> = vec![Vec::new(); streams];
    for (index, &(payer, payee, amount)) in plan.moves.iter().enumerate() {
        per_stream[index % streams].push(contract::Transaction {
            transaction_id: plan.key(index),
            user_id: plan.account(payer),
            category: CATEGORIES[payee as usize % CATEGORIES.len()].to_owned(),
            amount: amount as f32 / 100.0,
            currency: CURRENCY.to_owned(),
            timestamp: String::new(),
        });
    }
    let tally = Arc::new(Tally::default());
    let in_flight = args.window.max(1) * args.batch_size;
    let mut tasks = Vec::new();
    for messages in per_stream {
        let (channel, bearer, tally) = (channel.clone(), bearer.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            send_transactions(&channel, &bearer, messages, in_flight, &tally).await
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(Arc::into_inner(tally).unwrap_or_default())
}

async fn send_transactions(
    channel: &Channel,
    bearer: &crate::client::Bearer,
    messages: Vec<contract::Transaction>,
    in_flight: usize,
    tally: &Tally,
) -> anyhow::Result<()> {
    let mut client =
        contract::transaction_service_client::TransactionServiceClient::with_interceptor(
            channel.clone(),
            bearer.clone(),
        );
    let open = |stream| async move { client.stream_transactions(stream).await };
    let latencies = pipeline(messages, in_flight, open, |response| {
        let count = if response.status == "success" {
            &tally.posted
        } else if response.message.starts_with("INSUFFICIENT_FUNDS") {
            &tally.declined
        } else {
            &tally.refused
        };
        count.fetch_add(1, Ordering::Relaxed);
    })
    .await?;
    tally.record(latencies);
    Ok(())
}

/// Keeps `in_flight` messages outstanding on one bidirectional stream: a feeder sends while
/// it has room, each answer makes room for one more and is timed against its message (a
/// stream answers in order). One latency per answer, in seconds.
async fn pipeline<M, R, Open, Opened>(
    messages: Vec<M>,
    in_flight: usize,
    open: Open,
    mut answered: impl FnMut(&R),
) -> anyhow::Result<Vec<f64>>
where
    M: Send + 'static,
    Open: FnOnce(tokio_stream::wrappers::ReceiverStream<M>) -> Opened,
    Opened: Future<Output = Result<tonic::Response<tonic::Streaming<R>>, tonic::Status>>,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(in_flight.clamp(1, 1_024));
    let sent: Arc<Mutex<VecDeque<Instant>>> = Arc::default();
    let room = Arc::new(Semaphore::new(in_flight.max(1)));
    let expected = messages.len();
    let feeder = {
        let (sent, room) = (sent.clone(), room.clone());
        tokio::spawn(async move {
            for message in messages {
                let Ok(permit) = room.acquire().await else { return };
                permit.forget();
                if let Ok(mut sent) = sent.lock() {
                    sent.push_back(Instant::now());
                }
                if sender.send(message).await.is_err() {
                    return;
                }
            }
        })
    };
    let opened = open(tokio_stream::wrappers::ReceiverStream::new(receiver)).await;
    let result = async {
        let mut responses = opened?.into_inner();
        let mut latencies = Vec::with_capacity(expected);
        while latencies.len() < expected {
            let Some(response) = responses.message().await? else { break };
            let sent_at = sent.lock().ok().and_then(|mut sent| sent.pop_front());
            room.add_permits(1);
            if let Some(sent_at) = sent_at {
                latencies.push(sent_at.elapsed().as_secs_f64());
            }
            answered(&response);
        }
        Ok(latencies)
    }
    .await;
    feeder.abort();
    result
}

/// The payment contract: `--concurrency` (default 64) callers, each waiting for its answer
/// before the next AuthorizePayment.
async fn authorize_load(
    channel: &Channel,
    bearer: &crate::client::Bearer,
    plan: &Plan,
    args: &BenchArgs,
) -> anyhow::Result<Tally> {
    let callers = args.concurrency.unwrap_or(64).max(1);
    let requests: Vec<payment::AuthorizePaymentRequest> = plan
        .moves
        .iter()
        .enumerate()
        .map(|(index, &(payer, payee, amount))| payment::AuthorizePaymentRequest {
            idempotency_key: plan.key(index),
            payer_account_id: plan.account(payer),
            payee_account_id: plan.account(payee),
            amount_cents: amount,
            currency: CURRENCY.to_owned(),
            description: String::new(),
        })
        .collect();
    let client = payment::payment_service_client::PaymentServiceClient::with_interceptor(
        channel.clone(),
        bearer.clone(),
    );
    unary_load(requests, callers, client, |mut client, request| async move {
        match client.authorize_payment(request).await.map(tonic::Response::into_inner) {
            Ok(response) if response.status == payment::PaymentStatus::Authorized as i32 => {
                Verdict::Posted
            }
            Ok(_) => Verdict::Declined,
            Err(_) => Verdict::Refused,
        }
    })
    .await
}

/// `POST /v1/transfers`: `--concurrency` (default 64) keep-alive HTTP/1.1 clients.
async fn http_load(server: &Target, args: &BenchArgs, plan: &Plan) -> anyhow::Result<Tally> {
    let Some(base) = server.http.clone() else {
        bail!("the http surface needs --http-addr with --addr");
    };
    let clients = args.concurrency.unwrap_or(64).max(1);
    let bodies: Vec<(String, String)> = plan
        .moves
        .iter()
        .enumerate()
        .map(|(index, &(payer, payee, amount))| {
            let body = json!({
                "debit_account_id": plan.account(payer),
                "credit_account_id": plan.account(payee),
                "amount_minor": amount,
                "currency": CURRENCY,
            });
            (plan.key(index), body.to_string())
        })
        .collect();
    let url: Arc<str> = format!("{base}/v1/transfers").into();
    let key: Option<Arc<str>> = args.api_key.as_deref().map(Into::into);
    // Keep-alive connections: the pool keeps up to one per caller.
    let client = reqwest::Client::builder().pool_max_idle_per_host(clients).http1_only().build()?;
    unary_load(bodies, clients, client, move |client, (idempotency_key, body)| {
        let (url, key) = (url.clone(), key.clone());
        async move {
            let mut request = client
                .post(&*url)
                .header("content-type", "application/json")
                .header("idempotency-key", idempotency_key)
                .body(body);
            if let Some(key) = &key {
                request = request.bearer_auth(key);
            }
            match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let _ = response.bytes().await;
                    match status {
                        201 => Verdict::Posted,
                        402 | 409 | 422 => Verdict::Declined,
                        _ => Verdict::Refused,
                    }
                }
                Err(_) => Verdict::Refused,
            }
        }
    })
    .await
}

/// What one unary request came to.
enum Verdict {
    Posted,
    Declined,
    Refused,
}

/// `callers` tasks share `requests`: each sends the next one and waits for its verdict
/// before taking another. One latency per request.
async fn unary_load<T, C, Call, Answer>(
    requests: Vec<T>,
    callers: usize,
    client: C,
    call: Call,
) -> anyhow::Result<Tally>
where
    T: Clone + Send + Sync + 'static,
    C: Clone + Send + 'static,
    Call: Fn(C, T) -> Answer + Clone + Send + 'static,
    Answer: Future<Output = Verdict> + Send,
{
    let requests = Arc::new(requests);
    let tally = Arc::new(Tally::default());
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (requests, tally, next) = (requests.clone(), tally.clone(), next.clone());
        let (client, call) = (client.clone(), call.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(request) = requests.get(index) else { break };
                let sent_at = Instant::now();
                let verdict = call(client.clone(), request.clone()).await;
                latencies.push(sent_at.elapsed().as_secs_f64());
                let count = match verdict {
                    Verdict::Posted => &tally.posted,
                    Verdict::Declined => &tally.declined,
                    Verdict::Refused => &tally.refused,
                };
                count.fetch_add(1, Ordering::Relaxed);
            }
            tally.record(latencies);
        }));
    }
    for task in tasks {
        task.await?;
    }
    Ok(Arc::into_inner(tally).unwrap_or_default())
}

/// Looks up random accounts, one at a time, until the load ends: reads under write load.
async fn query_load(
    mut ledger: Ledger,
    ids: Vec<String>,
    loaded: tokio_util::sync::CancellationToken,
) -> Vec<f64> {
    let mut random = SplitMix::new(0x5eed);
    let mut latencies = Vec::new();
    while !loaded.is_cancelled() {
        let id = ids[random.index(ids.len())].clone();
        let sent_at = Instant::now();
        if ledger.get_account(pb::GetAccountRequest { id }).await.is_ok() {
            latencies.push(sent_at.elapsed().as_secs_f64());
        }
        tokio::select! {
            () = tokio::time::sleep(QUERY_PAUSE) => {}
            () = loaded.cancelled() => break,
        }
    }
    latencies
}

/// The searches `--search` runs in turn, each a page of 100: what an operator's console asks
/// of a busy ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Search {
    /// A random bench account's newest transfers.
    Account,
    /// Every transfer, newest first.
    Newest,
    /// An account's oldest posted transfers (`status=posted&order=asc`).
    AccountOldestPosted,
    /// The newest since a random moment of the run: a commit-time range.
    CommittedAfter,
    /// `kind=deposit`, which only the setup made: the scan reads its whole budget.
    RareKind,
}

impl Search {
    const ALL: [Search; 5] = [
        Search::Account,
        Search::Newest,
        Search::AccountOldestPosted,
        Search::CommittedAfter,
        Search::RareKind,
    ];

    fn name(self) -> &'static str {
        match self {
            Search::Account => "account",
            Search::Newest => "newest",
            Search::AccountOldestPosted => "account_oldest_posted",
            Search::CommittedAfter => "committed_after",
            Search::RareKind => "rare_kind",
        }
    }

    /// The request: `account` for the account shapes, a commit time from `since`.
    fn request(self, account: String, since: kopek_core::Timestamp) -> pb::ListTransfersRequest {
        let mut request = pb::ListTransfersRequest { page_size: 100, ..Default::default() };
        match self {
            Search::Account => request.account_id = account,
            Search::Newest => {}
            Search::AccountOldestPosted => {
                request.account_id = account;
                request.status = pb::TransferStatus::Posted as i32;
                request.ascending = true;
            }
            Search::CommittedAfter => request.committed_after = since.to_rfc3339(),
            Search::RareKind => request.kind = pb::TransferKind::Deposit as i32,
        }
        request
    }
}

/// Searches transfers, one at a time, until the load ends: each search's latency.
async fn search_load(
    mut ledger: Ledger,
    ids: Vec<String>,
    loaded: tokio_util::sync::CancellationToken,
) -> Vec<(Search, f64)> {
    let mut random = SplitMix::new(0x5ea7c4);
    let mut latencies = Vec::new();
    let started = kopek_clock::now().as_unix_micros();
    for search in Search::ALL.into_iter().cycle() {
        if loaded.is_cancelled() {
            break;
        }
        let account = ids[random.index(ids.len())].clone();
        let run_so_far =
            usize::try_from(kopek_clock::now().as_unix_micros() - started).unwrap_or(0);
        let back = i64::try_from(random.index(run_so_far.max(1))).unwrap_or(0);
        let since = kopek_core::Timestamp::from_unix_micros(started + back);
        let sent_at = Instant::now();
        if ledger.list_transfers(search.request(account, since)).await.is_ok() {
            latencies.push((search, sent_at.elapsed().as_secs_f64()));
        }
        tokio::select! {
            () = tokio::time::sleep(QUERY_PAUSE) => {}
            () = loaded.cancelled() => break,
        }
    }
    latencies
}

/// Search latencies, all together and by search.
struct SearchLatencies {
    all: Latencies,
    by_shape: Vec<(&'static str, Latencies)>,
}

impl SearchLatencies {
    fn of(samples: Vec<(Search, f64)>) -> SearchLatencies {
        let by_shape = Search::ALL
            .iter()
            .map(|search| {
                let of_shape = samples.iter().filter(|(s, _)| s == search).map(|(_, t)| *t);
                (search.name(), Latencies::of(of_shape.collect()))
            })
            .collect();
        SearchLatencies {
            all: Latencies::of(samples.into_iter().map(|(_, seconds)| seconds).collect()),
            by_shape,
        }
    }
}

/// Every bench account's posted balance against the plan: exact, account by account.
async fn check_balances(
    mut ledger: Ledger,
    plan: &Plan,
    surface: Surface,
) -> anyhow::Result<Vec<String>> {
    let expected = plan.expected_balances(surface);
    let ids = plan.account_ids(surface);
    let mut problems = Vec::new();
    for (chunk_number, chunk) in ids.chunks(ACCOUNTS_PER_CALL).enumerate() {
        let accounts = ledger
            .get_accounts(pb::GetAccountsRequest { ids: chunk.to_vec() })
            .await
            .context("read the bench accounts back")?
            .into_inner()
            .accounts;
        if accounts.len() != chunk.len() {
            problems.push(format!("{} of {} accounts found", accounts.len(), chunk.len()));
            continue;
        }
        for (offset, account) in accounts.iter().enumerate() {
            let want = expected[chunk_number * ACCOUNTS_PER_CALL + offset];
            let got = account.balance.as_ref().map_or(i64::MIN, |balance| balance.posted_minor);
            if got != want && problems.len() < 10 {
                problems.push(format!("{} holds {got}, the plan says {want}", account.id));
            }
        }
    }
    Ok(problems)
}

/// The server under load: one this run started, or one at `--addr`.
struct Target {
    grpc: String,
    http: Option<String>,
    own: Option<OwnServer>,
}

struct OwnServer {
    child: tokio::process::Child,
    data_dir: PathBuf,
    database: Option<String>,
    keep: bool,
}

impl Target {
    fn remote(grpc: &str, http: Option<&str>) -> Target {
        Target {
            grpc: grpc.to_owned(),
            http: http.map(|addr| addr.trim_end_matches('/').to_owned()),
            own: None,
        }
    }

    /// `kopek serve` from this very binary on loopback ports the system picks.
    async fn start(args: &BenchArgs) -> anyhow::Result<Target> {
        let data_dir = args.data_dir.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("kopek-bench-{}", std::process::id()))
        });
        if data_dir.exists() && args.data_dir.is_none() {
            std::fs::remove_dir_all(&data_dir)?;
        }
        std::fs::create_dir_all(&data_dir)?;
        let mut command = tokio::process::Command::new(std::env::current_exe()?);
        command
            .args(["serve", "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(args.database.iter().flat_map(|url| ["--database", url.as_str()]))
            .args(&args.server_arg)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()))
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().context("start kopek serve")?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut listeners = Listeners::default();
        let listening = async {
            while listeners.grpc.is_none() || listeners.http.is_empty() {
                let Some(line) = lines.next_line().await? else { break };
                listeners.read(&line);
            }
            Ok::<(), std::io::Error>(())
        };
        tokio::time::timeout(Duration::from_secs(60), listening)
            .await
            .context("kopek serve did not start listening within 60 s")??;
        // Keep reading what it prints, so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (Some(grpc), Some(http)) = (listeners.grpc, listeners.http.first()) else {
            bail!("kopek serve stopped before listening (see its errors above)");
        };
        let (grpc, http) = (format!("http://{grpc}"), format!("http://{http}"));
        Ok(Target {
            grpc,
            http: Some(http),
            own: Some(OwnServer {
                child,
                data_dir,
                database: args.database.clone(),
                keep: args.data_dir.is_some(),
            }),
        })
    }

    /// One value of the server's `/metrics` (the series of `name`, the first if several).
    async fn metric(&self, name: &str) -> Option<f64> {
        let page = reqwest::get(format!("{}/metrics", self.http.as_ref()?)).await.ok()?;
        kopek_testkit::Scrape::parse(&page.text().await.ok()?).one(name)
    }

    /// CPU seconds the server used so far (user and system): from /proc for our own, from
    /// `/metrics` otherwise.
    async fn cpu_seconds(&self) -> Option<f64> {
        if let Some(pid) = self.own.as_ref().and_then(|own| own.child.id()) {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            return proc_stat_cpu(&stat).map(|(_, seconds)| seconds);
        }
        self.metric("process_cpu_seconds_total").await
    }

    /// CPU seconds per thread name of our own server so far (threads of one name summed);
    /// `None` for a server we did not start.
    fn thread_cpu(&self) -> Option<BTreeMap<String, f64>> {
        let pid = self.own.as_ref()?.child.id()?;
        let mut seconds = BTreeMap::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue; // the thread ended meanwhile
            };
            if let Some((name, used)) = proc_stat_cpu(&stat) {
                *seconds.entry(name.to_owned()).or_insert(0.0) += used;
            }
        }
        Some(seconds)
    }

    /// On a journal-first server: the largest projection lag it saw, and how long after the
    /// load its projection took to hold every frame (at most a minute).
    async fn projection_catch_up(&self) -> Option<(f64, f64)> {
        self.metric("kopek_journal_frames_total").await?;
        let started = Instant::now();
        while self.metric("kopek_projection_lag_frames").await.unwrap_or(0.0) > 0.0
            && started.elapsed() < Duration::from_secs(60)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let caught_up = started.elapsed().as_secs_f64();
        let largest = self.metric("kopek_projection_lag_seconds_max").await.unwrap_or(0.0);
        Some((largest, caught_up))
    }

    /// The server's resident memory: from /proc for our own, from `/metrics` otherwise.
    async fn rss(&self) -> Option<u64> {
        if let Some(pid) = self.own.as_ref().and_then(|own| own.child.id()) {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
            let kilobytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            return Some(kilobytes * 1024);
        }
        let page = reqwest::get(format!("{}/metrics", self.http.as_ref()?)).await.ok()?;
        let page = page.text().await.ok()?;
        let line = page.lines().find(|line| line.starts_with("process_resident_memory_bytes "))?;
        line.rsplit(' ').next()?.parse::<f64>().ok().map(|bytes| bytes as u64)
    }

    /// Bytes of the SQLite files (database and write-ahead log) of our own server.
    fn datafile(&self) -> Option<u64> {
        let own = self.own.as_ref().filter(|own| own.database.is_none())?;
        Some(directory_size(&own.data_dir))
    }

    /// The books check on the store our own server wrote (read-only next to it).
    async fn verify(&self) -> anyhow::Result<Option<kopek_store::VerifyReport>> {
        let Some(own) = &self.own else { return Ok(None) };
        let store = crate::open_for_verify(&crate::cli::StoreArgs {
            data_dir: own.data_dir.clone(),
            database: own.database.clone(),
            journal: false,
        })
        .await?;
        Ok(Some(store.verify().await?))
    }

    async fn stop(self) {
        let Some(mut own) = self.own else { return };
        if let Some(pid) = own.child.id() {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(20), own.child.wait()).await.is_err() {
            let _ = own.child.kill().await;
        }
        if !own.keep {
            let _ = std::fs::remove_dir_all(&own.data_dir);
        }
    }
}

fn directory_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| entry.metadata().ok())
                .filter(std::fs::Metadata::is_file)
                .map(|meta| meta.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Percentiles of a set of latencies, in milliseconds.
#[derive(Default)]
struct Latencies {
    sorted: Vec<f64>,
}

impl Latencies {
    fn of(mut seconds: Vec<f64>) -> Latencies {
        seconds.sort_by(f64::total_cmp);
        Latencies { sorted: seconds.into_iter().map(|s| s * 1e3).collect() }
    }

    /// The nearest-rank percentile `p` (0 to 100); 0 with no samples.
    fn at(&self, p: f64) -> f64 {
        if self.sorted.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * self.sorted.len() as f64).ceil() as usize;
        self.sorted[rank.clamp(1, self.sorted.len()) - 1]
    }
}

struct Report {
    surface: Surface,
    distribution: Distribution,
    transfers: u64,
    accepted: u64,
    elapsed: Duration,
    /// Batch and request latency: the same requests, per the two report lines.
    latency: Latencies,
    query: Latencies,
    /// With `--search`: the transfer searches' latencies.
    search: Option<SearchLatencies>,
    rss_idle: Option<u64>,
    rss: Option<u64>,
    /// CPU seconds the server used during the load.
    cpu_seconds: Option<f64>,
    /// CPU seconds each thread name used from the load's start until the projection caught
    /// up, largest first.
    threads: Vec<(String, f64)>,
    /// A journal-first server's largest projection lag and its catch-up time after the load,
    /// in seconds.
    projection: Option<(f64, f64)>,
    datafile: Option<u64>,
    verified: Option<kopek_store::VerifyReport>,
    problems: Vec<String>,
}

/// The command name and CPU seconds (user and system) in a `/proc/.../stat` line.
fn proc_stat_cpu(stat: &str) -> Option<(&str, f64)> {
    // The fields after the command name, which is in parentheses and may hold spaces.
    let (head, tail) = stat.rsplit_once(')')?;
    let name = head.split_once('(').map_or("?", |(_, name)| name);
    let fields: Vec<&str> = tail.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // /proc counts in USER_HZ, which Linux fixes at 100 for every program.
    Some((name, ticks / 100.0))
}

/// What each thread name used between two readings, largest first; names that used nothing
/// are left out.
fn thread_cpu_delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> Vec<(String, f64)> {
    let mut used: Vec<(String, f64)> = after
        .iter()
        .map(|(name, seconds)| (name.clone(), seconds - before.get(name).copied().unwrap_or(0.0)))
        .filter(|(_, seconds)| *seconds > 0.0)
        .collect();
    used.sort_by(|a, b| b.1.total_cmp(&a.1));
    used
}

impl Report {
    fn rate(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Server CPU microseconds per accepted transfer.
    fn cpu_per_transfer(&self) -> Option<f64> {
        self.cpu_seconds.filter(|_| self.accepted > 0).map(|cpu| cpu * 1e6 / self.accepted as f64)
    }

    fn print(&self, as_json: bool) {
        let optional = |value: Option<u64>| value.map_or_else(|| "-".to_owned(), |v| v.to_string());
        if as_json {
            let latencies = |set: &Latencies| json!({"p1": set.at(1.0), "p50": set.at(50.0), "p99": set.at(99.0), "p100": set.at(100.0), "samples": set.sorted.len()});
            let report = json!({
                "surface": format!("{:?}", self.surface).to_lowercase(),
                "distribution": format!("{:?}", self.distribution).to_lowercase(),
                "transfers": self.transfers,
                "accepted": self.accepted,
                "seconds": self.elapsed.as_secs_f64(),
                "accepted_per_second": self.rate().round(),
                "batch_latency_ms": latencies(&self.latency),
                "request_latency_ms": latencies(&self.latency),
                "query_latency_ms": latencies(&self.query),
                "search_latency_ms": self.search.as_ref().map(|search| json!({
                    "all": latencies(&search.all),
                    "by_shape": search.by_shape.iter().map(|(shape, set)| json!({"shape": shape, "latency": latencies(set)})).collect::<Vec<_>>(),
                })),
                "rss_idle_bytes": self.rss_idle,
                "rss_bytes": self.rss,
                "server_cpu_seconds": self.cpu_seconds,
                "server_cpu_us_per_transfer": self.cpu_per_transfer(),
                "server_cpu_seconds_by_thread": self.threads.iter().map(|(name, seconds)| json!({"thread": name, "seconds": seconds})).collect::<Vec<_>>(),
                "projection_lag_seconds_max": self.projection.map(|(largest, _)| largest),
                "projection_catch_up_seconds": self.projection.map(|(_, catch_up)| catch_up),
                "datafile_bytes": self.datafile,
                "verified": self.verified.as_ref().map(|report| json!({
                    "ok": report.is_ok(), "accounts": report.accounts,
                    "transfers": report.transfers, "entries": report.entries, "events": report.events,
                })),
                "problems": self.problems,
            });
            println!("{report}");
            return;
        }
        println!("load accepted = {:.0} tx/s", self.rate());
        println!(
            "batch latency p1 = {:.2} ms  p50 = {:.2} ms  p99 = {:.2} ms  p100 = {:.2} ms",
            self.latency.at(1.0),
            self.latency.at(50.0),
            self.latency.at(99.0),
            self.latency.at(100.0)
        );
        println!(
            "request latency p50 = {:.2} ms  p99 = {:.2} ms",
            self.latency.at(50.0),
            self.latency.at(99.0)
        );
        println!(
            "query latency p50 = {:.2} ms  p99 = {:.2} ms",
            self.query.at(50.0),
            self.query.at(99.0)
        );
        if let Some(search) = &self.search {
            println!(
                "search latency p50 = {:.2} ms  p99 = {:.2} ms  p100 = {:.2} ms  ({} pages of 100)",
                search.all.at(50.0),
                search.all.at(99.0),
                search.all.at(100.0),
                search.all.sorted.len()
            );
            for (shape, set) in &search.by_shape {
                println!(
                    "  {shape}: p50 = {:.2} ms  p99 = {:.2} ms  ({} searches)",
                    set.at(50.0),
                    set.at(99.0),
                    set.sorted.len()
                );
            }
        }
        println!(
            "rss = {} bytes   datafile = {} bytes",
            optional(self.rss),
            optional(self.datafile)
        );
        if let (Some(cpu), Some(per_transfer)) = (self.cpu_seconds, self.cpu_per_transfer()) {
            println!("server cpu = {cpu:.2} s = {per_transfer:.1} us per transfer");
        }
        if !self.threads.is_empty() && self.accepted > 0 {
            let per_thread: Vec<String> = self
                .threads
                .iter()
                .map(|(name, seconds)| {
                    format!("{name} {:.1}", seconds * 1e6 / self.accepted as f64)
                })
                .collect();
            // /proc lists live threads only: short-lived ones are in the total alone.
            println!(
                "server cpu by live thread until caught up, us per transfer: {}",
                per_thread.join(", ")
            );
        }
        if let Some((largest, catch_up)) = self.projection {
            println!(
                "projection lag largest = {:.1} ms   caught up {:.1} ms after the load",
                largest * 1e3,
                catch_up * 1e3
            );
        }
        println!(
            "{} of {} transfers in {:.2} s; idle rss = {} bytes",
            self.accepted,
            self.transfers,
            self.elapsed.as_secs_f64(),
            optional(self.rss_idle)
        );
        match &self.verified {
            Some(report) if report.is_ok() => println!(
                "verified: every balance matches the plan; the books balance ({} accounts, {} transfers, {} entries, {} events)",
                report.accounts, report.transfers, report.entries, report.events
            ),
            Some(_) => println!("verify FAILED"),
            None if self.problems.is_empty() => {
                println!("verified: every balance matches the plan (books check needs the store)")
            }
            None => {}
        }
        for problem in &self.problems {
            println!("PROBLEM: {problem}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let set = Latencies::of((1..=100).map(|ms| f64::from(ms) / 1e3).collect());
        assert_eq!(
            (set.at(1.0), set.at(50.0), set.at(99.0), set.at(100.0)),
            (1.0, 50.0, 99.0, 100.0)
        );
        assert_eq!(Latencies::of(Vec::new()).at(50.0), 0.0);
    }

    #[test]
    fn zipf_favours_the_first_accounts() {
        let table = zipf_table(1_000);
        assert!((table[999] - 1.0).abs() < 1e-12);
        // Rank 1 of 1,000 carries 1/H(1000), about 13%.
        assert!((table[0] - 0.1336).abs() < 0.001, "{}", table[0]);
    }
}
