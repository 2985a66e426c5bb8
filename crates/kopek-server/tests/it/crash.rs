//! `kill -9` under load: every acknowledged transfer survives, none applies twice, and
//! `kopek verify` passes after the restart.

use crate::support::*;
use kopek_proto::kopek::v1 as pb;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

const ACCOUNTS: u64 = 10;
const STREAMS: u64 = 4;

fn request(stream: u64, n: u64) -> pb::TransferRequest {
    let debit = format!("acct{}", (stream + n) % ACCOUNTS);
    let credit = format!("acct{}", (stream + n + 1) % ACCOUNTS);
    post(&format!("k-{stream}-{n}"), &debit, &credit, 1 + (n % 7) as i64)
}

/// Streams transfers until the server goes away; returns what was acknowledged.
async fn load(server_url: String, stream: u64, acked: Arc<Mutex<Vec<(u64, u64, String)>>>) {
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
                transfers: vec![request(stream, n)],
                linked: false,
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
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start(dir.path());
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

    let server = Server::start(dir.path());
    let mut client = server.client().await;
    for (stream, n, id) in &acked {
        let lookup = pb::GetTransferRequest {
            lookup: Some(pb::get_transfer_request::Lookup::IdempotencyKey(format!(
                "k-{stream}-{n}"
            ))),
        };
        let found =
            client.get_transfer(lookup).await.expect("an acknowledged transfer survives kill -9");
        assert_eq!(&found.into_inner().transfer.expect("transfer").id, id);
    }
    // Retrying every acknowledged request applies nothing again.
    for chunk in acked.chunks(500) {
        let requests = chunk.iter().map(|(stream, n, _)| request(*stream, *n)).collect();
        let results = transfers(&mut client, requests, false).await;
        for ((_, _, id), result) in chunk.iter().zip(&results) {
            assert!(result.replayed, "a retried acknowledged transfer is a replay");
            assert_eq!(result.transfer.as_ref().map(|t| &t.id), Some(id));
        }
    }
    let mut server = server;
    assert!(server.terminate().success(), "SIGTERM exits 0");
    let (code, stdout, stderr) =
        cli(&["verify", "--data-dir", dir.path().to_str().expect("utf-8 path")]);
    assert_eq!(code, 0, "kopek verify failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("ok: the books balance"), "{stdout}");
    println!("{} transfers acknowledged before kill -9; all present after restart", acked.len());
}
