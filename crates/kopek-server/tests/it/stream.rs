//! StreamTransfers: pipelined requests, one response each, in order, after commit.

use crate::support::*;
use kopek_proto::kopek::v1 as pb;
use tokio_stream::StreamExt;

#[tokio::test]
async fn a_pipelined_stream_answers_every_request_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    open_accounts(&mut client, &["a", "b"]).await;
    one(&mut client, deposit("fund", "a", 1_000_000)).await;

    let count: u64 = 2_000;
    // Every request is sent before any answer is read: the server must keep reading.
    let requests: Vec<pb::StreamTransfersRequest> = (0..count)
        .map(|n| {
            let transfer = match n % 10 {
                7 => post(&format!("s{n}"), "a", "ghost", 1),
                9 => pb::TransferRequest {
                    currency: "???".into(),
                    ..post(&format!("s{n}"), "a", "b", 1)
                },
                _ => post(&format!("s{n}"), "a", "b", 1),
            };
            pb::StreamTransfersRequest {
                request_id: n,
                transfers: vec![transfer],
                linked: false,
                compact: false,
            }
        })
        .collect();
    let replay = requests[..10].to_vec();
    let outbound = tokio_stream::iter(requests.into_iter().chain(replay));
    let mut responses = client.stream_transfers(outbound).await.expect("open stream").into_inner();
    let mut next_id = 0;
    let mut posted_count = 0;
    while let Some(response) = responses.next().await {
        let response = response.expect("stream item");
        let expected_id = next_id % count;
        assert_eq!(response.request_id, expected_id, "responses come in request order");
        assert!(response.error.is_none());
        let result = &response.results[0];
        match expected_id % 10 {
            7 => assert_eq!(error_code(result), Some(pb::ErrorCode::AccountNotFound)),
            9 => assert_eq!(error_code(result), Some(pb::ErrorCode::UnknownCurrency)),
            _ if next_id >= count => assert!(result.replayed, "resent ids replay"),
            _ => {
                assert_eq!(status(result), pb::TransferStatus::Posted);
                posted_count += 1;
            }
        }
        next_id += 1;
    }
    assert_eq!(next_id, count + 10, "exactly one response per request, then a clean end");
    assert_eq!(posted(&mut client, "b").await, posted_count);
}

/// `compact`: a transfer that applied or replayed comes back as its id and status only; one
/// declined, or refused before it was recorded, still gets its full result.
#[tokio::test]
async fn a_compact_stream_answers_only_what_failed_in_full() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    open_accounts(&mut client, &["a", "b"]).await;
    one(&mut client, deposit("fund", "a", 100)).await;
    let request = |request_id: u64, transfers: Vec<pb::TransferRequest>| {
        pb::StreamTransfersRequest { request_id, transfers, linked: false, compact: true }
    };
    let requests = vec![
        request(
            0,
            vec![
                post("c-ok", "a", "b", 60),
                post("c-short", "a", "b", 1_000),
                post("c-ghost", "a", "ghost", 1),
            ],
        ),
        request(1, vec![post("c-ok", "a", "b", 60)]),
    ];
    let mut responses = client
        .stream_transfers(tokio_stream::iter(requests))
        .await
        .expect("open stream")
        .into_inner();
    let first = responses.next().await.expect("an answer").expect("stream item");
    let applied = first.results[0].transfer.clone().expect("recorded");
    assert_eq!(applied.status, pb::TransferStatus::Posted as i32);
    assert_eq!(applied.id.len(), 26, "its id, a ULID: {applied:?}");
    assert_eq!(
        pb::Transfer { id: String::new(), status: 0, ..applied.clone() },
        pb::Transfer::default(),
        "nothing but the id and status"
    );
    assert!(first.results[0].error.is_none() && !first.results[0].replayed);
    let declined = first.results[1].transfer.clone().expect("a declined transfer is recorded");
    assert_eq!(declined.status, pb::TransferStatus::Declined as i32);
    assert_eq!((declined.amount_minor, declined.idempotency_key.as_str()), (1_000, "c-short"));
    assert_eq!(error_code(&first.results[1]), Some(pb::ErrorCode::InsufficientFunds));
    assert_eq!(error_code(&first.results[2]), Some(pb::ErrorCode::AccountNotFound));
    let second = responses.next().await.expect("an answer").expect("stream item");
    let replayed = &second.results[0];
    assert!(replayed.replayed, "the resent key replays");
    assert_eq!(replayed.transfer.as_ref().map(|t| t.id.clone()), Some(applied.id.clone()));
    assert_eq!(replayed.transfer.as_ref().map(|t| t.amount_minor), Some(0), "compact too");
    assert_eq!(posted(&mut client, "b").await, 60);
}

#[tokio::test]
async fn sigterm_ends_open_streams_after_answering_what_they_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A long drain allowance: the server must not need it, streams end as soon as answered.
    let mut server = Server::start_with(dir.path(), &["--shutdown-timeout-seconds", "120"]);
    let mut client = server.client().await;
    open_accounts(&mut client, &["a", "b"]).await;
    one(&mut client, deposit("fund", "a", 1_000)).await;
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    let mut responses = client
        .stream_transfers(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .expect("stream")
        .into_inner();
    for n in 0..3u64 {
        let request = pb::StreamTransfersRequest {
            request_id: n,
            transfers: vec![post(&format!("t{n}"), "a", "b", 10)],
            linked: false,
            compact: false,
        };
        sender.send(request).await.expect("send");
        let response = responses.next().await.expect("an answer").expect("ok");
        assert_eq!(status(&response.results[0]), pb::TransferStatus::Posted);
    }
    // The client keeps its side open; SIGTERM must still end the stream and the process.
    let status = tokio::task::spawn_blocking(move || server.terminate()).await.expect("join");
    assert!(status.success(), "SIGTERM exits 0 with a stream open");
    let end = responses.next().await;
    let ended_with = end.and_then(Result::err).map(|status| status.code());
    assert_eq!(
        ended_with,
        Some(tonic::Code::Unavailable),
        "a drained stream tells the client to resend"
    );
    drop(sender);
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    assert_eq!(posted(&mut client, "b").await, 30, "every answered request is committed");
}
