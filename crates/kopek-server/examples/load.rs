//! Load against one running server of several (`scripts/pg-throughput.sh` starts a few on one
//! PostgreSQL and runs one of these per server); for one server, `kopek bench --addr` reports
//! more (`docs/performance.md`):
//!
//! ```text
//! cargo run --release -p kopek-server --example load -- SURFACE [ADDR] [COUNT] [CONCURRENCY]
//! ```
//!
//! - `stream`: kopek.v1 StreamTransfers, one transfer per request, CONCURRENCY streams;
//! - `transactions`: the streaming contract, CONCURRENCY streams (1 = one stream);
//! - `authorize`: the unary payment contract, CONCURRENCY callers each waiting for its answer.
//!
//! Streams keep at most 1024 requests in flight each, so latency is what one request waits
//! at that depth, not an unbounded client-side queue. With `KOPEK_API_KEY` set, every call
//! carries the key (a server with auth required).

use kopek_proto::kopek::v1 as ledger;
use kopek_proto::kopek::v1::ledger_client::LedgerClient;
use kopek_proto::payment::v1 as payment;
use kopek_proto::payment::v1::payment_service_client::PaymentServiceClient;
use kopek_proto::transaction;
use kopek_proto::transaction::transaction_service_client::TransactionServiceClient;
use kopek_testkit::SplitMix;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

const ACCOUNTS: u64 = 1_000;
const WINDOW: usize = 1_024;

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn connect(addr: impl Into<String>) -> Result<tonic::transport::Channel, Error> {
    Ok(tonic::transport::Channel::from_shared(addr.into())?.connect().await?)
}

/// Adds `authorization: Bearer $KOPEK_API_KEY` to every call when the variable is set.
fn bearer() -> Result<impl tonic::service::Interceptor + Clone, Error> {
    let value: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> =
        match std::env::var("KOPEK_API_KEY") {
            Ok(key) => Some(format!("Bearer {key}").parse()?),
            Err(_) => None,
        };
    Ok(move |mut request: tonic::Request<()>| {
        if let Some(value) = &value {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    })
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let surface = args.first().cloned().unwrap_or_else(|| "stream".to_owned());
    let addr = args.get(1).cloned().unwrap_or_else(|| "http://127.0.0.1:50051".to_owned());
    let count: u64 = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let concurrency: u64 = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(4).max(1);
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    fund(&addr, &run).await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (addr, run, surface) = (addr.clone(), run.clone(), surface.clone());
        let share = count / concurrency;
        tasks.push(tokio::spawn(async move {
            match surface.as_str() {
                "transactions" => transactions(addr, run, worker, share).await,
                "authorize" => authorize(addr, run, worker, share).await,
                _ => stream(addr, run, worker, share).await,
            }
        }));
    }
    let mut latencies = Vec::new();
    let mut applied = 0;
    for task in tasks {
        let (ok, mut times) = task.await??;
        applied += ok;
        latencies.append(&mut times);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let percentile = |p: f64| {
        let index = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies.get(index).copied().unwrap_or_default().as_secs_f64() * 1e3
    };
    println!(
        "surface={surface} concurrency={concurrency} applied={applied} of {} in {:.2}s",
        latencies.len(),
        elapsed.as_secs_f64()
    );
    println!("load accepted = {:.0} tx/s", latencies.len() as f64 / elapsed.as_secs_f64());
    println!("request latency p50 = {:.2} ms  p99 = {:.2} ms", percentile(0.50), percentile(0.99));
    Ok(())
}

/// A worker's deterministic account picker.
fn pick(random: &mut SplitMix) -> u64 {
    random.below(ACCOUNTS)
}

/// Opens `load<N>` accounts and the users `load<N>` of the streaming contract, all funded.
async fn fund(addr: &str, run: &str) -> Result<(), Error> {
    let mut client = LedgerClient::with_interceptor(connect(addr.to_owned()).await?, bearer()?);
    let accounts: Vec<ledger::NewAccount> = (0..ACCOUNTS)
        .map(|n| ledger::NewAccount {
            id: format!("load{n}"),
            currency: "USD".into(),
            ..Default::default()
        })
        .collect();
    for chunk in accounts.chunks(500) {
        client.create_accounts(ledger::CreateAccountsRequest { accounts: chunk.to_vec() }).await?;
    }
    let deposits: Vec<ledger::TransferRequest> = (0..ACCOUNTS)
        .flat_map(|n| {
            ["load", "user:load"].into_iter().map(move |prefix| {
                let account =
                    if prefix == "load" { format!("load{n}") } else { format!("user:load{n}:USD") };
                ledger::TransferRequest {
                    idempotency_key: format!("{run}-fund-{account}"),
                    kind: ledger::TransferKind::Deposit as i32,
                    credit_account_id: account,
                    amount_minor: 1_000_000_000,
                    currency: "USD".into(),
                    ..Default::default()
                }
            })
        })
        .collect();
    // The streaming contract's users open with their first deposit.
    let mut stream =
        TransactionServiceClient::with_interceptor(connect(addr.to_owned()).await?, bearer()?);
    let opening: Vec<transaction::Transaction> = (0..ACCOUNTS)
        .map(|n| transaction::Transaction {
            transaction_id: format!("{run}-open-{n}"),
            user_id: format!("load{n}"),
            category: "deposit".into(),
            amount: 1.0,
            currency: "USD".into(),
            timestamp: String::new(),
        })
        .collect();
    let mut answers = stream.stream_transactions(tokio_stream::iter(opening)).await?.into_inner();
    while answers.next().await.transpose()?.is_some() {}
    for chunk in deposits.chunks(500) {
        client
            .create_transfers(ledger::CreateTransfersRequest {
                transfers: chunk.to_vec(),
                linked: false,
            })
            .await?;
    }
    Ok(())
}

type Measured = Result<(u64, Vec<Duration>), Error>;

async fn stream(addr: String, run: String, worker: u64, count: u64) -> Measured {
    let mut client = LedgerClient::with_interceptor(connect(addr).await?, bearer()?);
    let window = Arc::new(Semaphore::new(WINDOW));
    let (sender, receiver) = tokio::sync::mpsc::channel(WINDOW);
    let (times_sender, mut times) = tokio::sync::mpsc::unbounded_channel();
    let permits = window.clone();
    tokio::spawn(async move {
        let mut random = SplitMix::new(worker + 1);
        for request_id in 0..count {
            let Ok(permit) = permits.clone().acquire_owned().await else { break };
            permit.forget();
            let debit = pick(&mut random);
            let credit = (debit + 1 + pick(&mut random) % (ACCOUNTS - 1)) % ACCOUNTS;
            let transfer = ledger::TransferRequest {
                idempotency_key: format!("{run}-{worker}-{request_id}"),
                debit_account_id: format!("load{debit}"),
                credit_account_id: format!("load{credit}"),
                amount_minor: 1,
                currency: "USD".into(),
                ..Default::default()
            };
            let _ = times_sender.send(Instant::now());
            let message = ledger::StreamTransfersRequest {
                request_id,
                transfers: vec![transfer],
                linked: false,
                compact: false,
            };
            if sender.send(message).await.is_err() {
                break;
            }
        }
    });
    let mut responses = client.stream_transfers(ReceiverStream::new(receiver)).await?.into_inner();
    let (mut ok, mut latencies) = (0, Vec::with_capacity(count as usize));
    while let Some(response) = responses.next().await {
        let response = response?;
        latencies.push(times.recv().await.map(|sent| sent.elapsed()).unwrap_or_default());
        ok += response.results.iter().filter(|result| result.error.is_none()).count() as u64;
        window.add_permits(1);
    }
    Ok((ok, latencies))
}

async fn transactions(addr: String, run: String, worker: u64, count: u64) -> Measured {
    let mut client = TransactionServiceClient::with_interceptor(connect(addr).await?, bearer()?);
    let window = Arc::new(Semaphore::new(WINDOW));
    let (sender, receiver) = tokio::sync::mpsc::channel(WINDOW);
    let (times_sender, mut times) = tokio::sync::mpsc::unbounded_channel();
    let permits = window.clone();
    tokio::spawn(async move {
        let mut random = SplitMix::new(worker + 1);
        let categories = ["Food", "Transport", "Books", "topup"];
        for n in 0..count {
            let Ok(permit) = permits.clone().acquire_owned().await else { break };
            permit.forget();
            let user = pick(&mut random);
            let message = transaction::Transaction {
                transaction_id: format!("{run}-{worker}-{n}"),
                user_id: format!("load{user}"),
                category: categories[(n % 4) as usize].into(),
                amount: 0.01,
                currency: "USD".into(),
                timestamp: String::new(),
            };
            let _ = times_sender.send(Instant::now());
            if sender.send(message).await.is_err() {
                break;
            }
        }
    });
    let mut responses =
        client.stream_transactions(ReceiverStream::new(receiver)).await?.into_inner();
    let (mut ok, mut latencies) = (0, Vec::with_capacity(count as usize));
    while let Some(response) = responses.next().await {
        let response = response?;
        latencies.push(times.recv().await.map(|sent| sent.elapsed()).unwrap_or_default());
        ok += u64::from(response.status == "success");
        window.add_permits(1);
    }
    Ok((ok, latencies))
}

async fn authorize(addr: String, run: String, worker: u64, count: u64) -> Measured {
    let mut client = PaymentServiceClient::with_interceptor(connect(addr).await?, bearer()?);
    let mut random = SplitMix::new(worker + 1);
    let (mut ok, mut latencies) = (0, Vec::with_capacity(count as usize));
    for n in 0..count {
        let payer = pick(&mut random);
        let payee = (payer + 1 + pick(&mut random) % (ACCOUNTS - 1)) % ACCOUNTS;
        let request = payment::AuthorizePaymentRequest {
            idempotency_key: format!("{run}-{worker}-{n}"),
            payer_account_id: format!("load{payer}"),
            payee_account_id: format!("load{payee}"),
            amount_cents: 1,
            currency: "USD".into(),
            description: String::new(),
        };
        let sent = Instant::now();
        let response = client.authorize_payment(request).await?.into_inner();
        latencies.push(sent.elapsed());
        ok += u64::from(response.status == payment::PaymentStatus::Authorized as i32);
    }
    Ok((ok, latencies))
}
