//! Measures StreamTransfers throughput against a running server with durable commits:
//! `cargo run --release -p kopek-server --example stream_load -- [ADDR] [TRANSFERS] [STREAMS] [PER_REQUEST]`.
//! Until `kopek bench` exists this is the baseline figure of the write path.

use kopek_proto::kopek::v1 as pb;
use kopek_proto::kopek::v1::ledger_client::LedgerClient;
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

const ACCOUNTS: u64 = 1_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args.first().cloned().unwrap_or_else(|| "http://127.0.0.1:50051".to_owned());
    let total: u64 = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let streams: u64 = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(4);
    let per_request: u64 = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(1);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut client = LedgerClient::connect(addr.clone()).await?;
    let accounts = (0..ACCOUNTS)
        .map(|n| pb::NewAccount {
            id: format!("load{n}"),
            currency: "USD".into(),
            ..Default::default()
        })
        .collect::<Vec<_>>();
    for chunk in accounts.chunks(500) {
        client.create_accounts(pb::CreateAccountsRequest { accounts: chunk.to_vec() }).await?;
    }
    let funding = (0..ACCOUNTS)
        .map(|n| pb::TransferRequest {
            idempotency_key: format!("{run}-fund-{n}"),
            kind: pb::TransferKind::Deposit as i32,
            credit_account_id: format!("load{n}"),
            amount_minor: 1_000_000_000,
            currency: "USD".into(),
            ..Default::default()
        })
        .collect::<Vec<_>>();
    for chunk in funding.chunks(500) {
        client
            .create_transfers(pb::CreateTransfersRequest {
                transfers: chunk.to_vec(),
                linked: false,
            })
            .await?;
    }

    let requests_per_stream = total / streams / per_request;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for stream in 0..streams {
        let addr = addr.clone();
        let run = run.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = LedgerClient::connect(addr).await.expect("connect");
            let (sender, receiver) = tokio::sync::mpsc::channel(1_024);
            let mut sent_at = Vec::with_capacity(requests_per_stream as usize);
            let (times_sender, mut times) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(async move {
                let mut seed = stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                for request_id in 0..requests_per_stream {
                    let transfers = (0..per_request)
                        .map(|k| {
                            seed ^= seed << 13;
                            seed ^= seed >> 7;
                            seed ^= seed << 17;
                            let debit = seed % ACCOUNTS;
                            let credit = (debit + 1 + (seed >> 20) % (ACCOUNTS - 1)) % ACCOUNTS;
                            pb::TransferRequest {
                                idempotency_key: format!("{run}-{stream}-{request_id}-{k}"),
                                debit_account_id: format!("load{debit}"),
                                credit_account_id: format!("load{credit}"),
                                amount_minor: 1,
                                currency: "USD".into(),
                                ..Default::default()
                            }
                        })
                        .collect();
                    let _ = times_sender.send(Instant::now());
                    if sender
                        .send(pb::StreamTransfersRequest { request_id, transfers, linked: false })
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
            let mut responses = client
                .stream_transfers(ReceiverStream::new(receiver))
                .await
                .expect("stream")
                .into_inner();
            let mut latencies = Vec::with_capacity(requests_per_stream as usize);
            let mut posted = 0u64;
            while let Some(response) = responses.next().await {
                let response = response.expect("response");
                while sent_at.len() <= response.request_id as usize {
                    sent_at.push(times.recv().await.expect("send time"));
                }
                latencies.push(sent_at[response.request_id as usize].elapsed());
                posted += response.results.iter().filter(|r| r.error.is_none()).count() as u64;
            }
            (posted, latencies)
        }));
    }
    let mut posted = 0;
    let mut latencies: Vec<Duration> = Vec::new();
    for task in tasks {
        let (count, mut times) = task.await?;
        posted += count;
        latencies.append(&mut times);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let percentile = |p: f64| {
        latencies.get(((latencies.len() as f64 - 1.0) * p) as usize).copied().unwrap_or_default()
    };
    println!(
        "streams={streams} transfers_per_request={per_request} posted={posted} in {:.2}s",
        elapsed.as_secs_f64()
    );
    println!("load accepted = {:.0} tx/s", posted as f64 / elapsed.as_secs_f64());
    println!(
        "request latency p50 = {:.2} ms  p99 = {:.2} ms",
        percentile(0.50).as_secs_f64() * 1e3,
        percentile(0.99).as_secs_f64() * 1e3
    );
    Ok(())
}
