//! `kill -9` under load: every acknowledged transfer survives, none applies twice, and
//! `kopek verify` passes after the restart.

use crate::support::*;
use kopek_proto::kopek::v1 as pb;
use kopek_proto::kopek::v1::ledger_client::LedgerClient;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const ACCOUNTS: u64 = 10;
const STREAMS: u64 = 4;

/// The `n`th transfer of `stream` in crash round `round` (keys `k-<stream>-<n>` in round 0).
fn request_in(round: u64, stream: u64, n: u64) -> pb::TransferRequest {
    let debit = format!("acct{}", (stream + n) % ACCOUNTS);
    let credit = format!("acct{}", (stream + n + 1) % ACCOUNTS);
    post(&key_in(round, stream, n), &debit, &credit, 1 + (n % 7) as i64)
}

fn key_in(round: u64, stream: u64, n: u64) -> String {
    if round == 0 { format!("k-{stream}-{n}") } else { format!("k-{round}-{stream}-{n}") }
}

/// Streams transfers until the server goes away; returns what was acknowledged.
async fn load(server_url: String, stream: u64, acked: Arc<Mutex<Vec<(u64, u64, String)>>>) {
    load_in(0, server_url, stream, acked).await;
}

/// `load` for crash round `round`.
async fn load_in(
    round: u64,
    server_url: String,
    stream: u64,
    acked: Arc<Mutex<Vec<(u64, u64, String)>>>,
) {
    let Ok(mut client) =
        kopek_proto::kopek::v1::ledger_client::LedgerClient::connect(server_url).await
    else {
        return;
    };
    let (sender, receiver) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        for n in 0..1_000_000u64 {
            let message = pb::StreamTransfersRequest {
                request_id: n,
                transfers: vec![request_in(round, stream, n)],
                linked: false,
                compact: false,
            };
            if sender.send(message).await.is_err() {
                break;
            }
        }
    });
    let Ok(response) = client.stream_transfers(ReceiverStream::new(receiver)).await else {
        return;
    };
    let mut responses = response.into_inner();
    while let Some(Ok(response)) = responses.next().await {
        let result = &response.results[0];
        let id = result.transfer.as_ref().map(|t| t.id.clone()).unwrap_or_default();
        assert_eq!(status(result), pb::TransferStatus::Posted, "funded accounts never decline");
        acked.lock().expect("lock").push((stream, response.request_id, id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_nothing_acknowledged_and_applies_nothing_twice() {
    // The SQLite layout (`--journal false`): every batch one SQLite transaction.
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = ["--journal=false"];
    let mut server = Server::start_with(dir.path(), &sqlite);
    let mut client = server.client().await;
    let ids: Vec<String> = (0..ACCOUNTS).map(|n| format!("acct{n}")).collect();
    open_accounts(&mut client, &ids.iter().map(String::as_str).collect::<Vec<_>>()).await;
    for id in &ids {
        one(&mut client, deposit(&format!("fund-{id}"), id, 100_000_000)).await;
    }

    let acked = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..STREAMS)
        .map(|stream| tokio::spawn(load(server.grpc_url(), stream, acked.clone())))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.lock().expect("lock").len() < 3_000 {
        assert!(Instant::now() < deadline, "the load did not get going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill9();
    for task in tasks {
        task.await.expect("load task ends without panicking");
    }
    let acked = acked.lock().expect("lock").clone();

    let server = Server::start_with(dir.path(), &sqlite);
    let mut client = server.client().await;
    let acked: Vec<Acked> = acked.into_iter().map(|(stream, n, id)| (0, stream, n, id)).collect();
    assert_found(&mut client, &acked).await;
    assert_replayed_and_verified(server, &mut client, dir.path(), &acked).await;
    println!("{} transfers acknowledged before kill -9; all present after restart", acked.len());
}

/// An acknowledged transfer: its round, stream, number in the stream, and id.
type Acked = (u64, u64, u64, String);

/// Every acknowledged transfer is found by its key, with the id it was acknowledged with.
async fn assert_found(client: &mut LedgerClient<Channel>, acked: &[Acked]) {
    for (round, stream, n, id) in acked {
        let lookup = pb::GetTransferRequest {
            lookup: Some(pb::get_transfer_request::Lookup::IdempotencyKey(key_in(
                *round, *stream, *n,
            ))),
        };
        let found = client.get_transfer(lookup).await.unwrap_or_else(|status| {
            panic!("round {round}: acknowledged {stream}/{n} lost: {status}")
        });
        assert_eq!(&found.into_inner().transfer.expect("transfer").id, id, "round {round}");
    }
}

/// Retrying every acknowledged request replays it (applies nothing again); then the server
/// stops and `kopek verify` passes on its data directory.
async fn assert_replayed_and_verified(
    mut server: Server,
    client: &mut LedgerClient<Channel>,
    dir: &std::path::Path,
    acked: &[Acked],
) {
    for chunk in acked.chunks(500) {
        let requests =
            chunk.iter().map(|(round, stream, n, _)| request_in(*round, *stream, *n)).collect();
        let results = transfers(client, requests, false).await;
        for ((round, _, _, id), result) in chunk.iter().zip(&results) {
            assert!(result.replayed, "round {round}: a retried acknowledged transfer is a replay");
            assert_eq!(result.transfer.as_ref().map(|t| &t.id), Some(id));
        }
    }
    assert!(server.terminate().success(), "SIGTERM exits 0");
    let (code, stdout, stderr) = cli(&["verify", "--data-dir", dir.to_str().expect("utf-8 path")]);
    assert_eq!(code, 0, "kopek verify failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("ok: the books balance"), "{stdout}");
}

/// Crash rounds of the journal-first test: `KOPEK_CRASH_ROUNDS` (the suite runs 20;
/// `scripts/crash-rounds.sh` runs 200).
fn crash_rounds() -> u64 {
    std::env::var("KOPEK_CRASH_ROUNDS").ok().and_then(|text| text.parse().ok()).unwrap_or(20)
}

/// A small xorshift generator: the kill moments, reproducible from the printed seed
/// (`KOPEK_CRASH_SEED`).
struct Moments(u64);

impl Moments {
    fn next_below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

/// The journal-first store under repeated `kill -9`: in every round four streams post
/// transfers and the process is killed at a random moment (a batch being decided, written,
/// synced or projected); after each restart every transfer acknowledged in that round is
/// there with its id, and at the end every acknowledged transfer of every round replays
/// (none applies twice), and `kopek verify` checks the books and that the projection equals
/// the journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_journal_first_loses_nothing_acknowledged() {
    let seed = std::env::var("KOPEK_CRASH_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| (kopek_clock::unix_nanos() % 1_000_000_000) as u64 | 1);
    println!("KOPEK_CRASH_SEED={seed}");
    let mut moments = Moments(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let journal = ["--journal"];
    {
        let server = Server::start_with(dir.path(), &journal);
        let mut client = server.client().await;
        let ids: Vec<String> = (0..ACCOUNTS).map(|n| format!("acct{n}")).collect();
        open_accounts(&mut client, &ids.iter().map(String::as_str).collect::<Vec<_>>()).await;
        for id in &ids {
            one(&mut client, deposit(&format!("fund-{id}"), id, 1_000_000_000)).await;
        }
    }
    let mut every: Vec<Acked> = Vec::new();
    for round in 1..=crash_rounds() {
        let mut server = Server::start_with(dir.path(), &journal);
        let acked = Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..STREAMS)
            .map(|stream| tokio::spawn(load_in(round, server.grpc_url(), stream, acked.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(20 + moments.next_below(600))).await;
        server.kill9();
        for task in tasks {
            task.await.expect("load task ends without panicking");
        }
        let acked = acked.lock().expect("lock").clone();
        let server = Server::start_with(dir.path(), &journal);
        let mut client = server.client().await;
        let acked: Vec<Acked> =
            acked.into_iter().map(|(stream, n, id)| (round, stream, n, id)).collect();
        assert_found(&mut client, &acked).await;
        every.extend(acked);
    }
    assert!(!every.is_empty(), "no round acknowledged anything: the kills came too early");
    let server = Server::start_with(dir.path(), &journal);
    let mut client = server.client().await;
    assert_replayed_and_verified(server, &mut client, dir.path(), &every).await;
    println!(
        "{} rounds of kill -9; {} transfers acknowledged, all present once after restarts",
        crash_rounds(),
        every.len()
    );
}
