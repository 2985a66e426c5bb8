//! A journal frame the disk fails to make durable: the server stops (fail-stop, never a retried
//! fsync), acknowledges nothing after the failure, and a restart finds every transfer it
//! acknowledged before; the unacknowledged one, resent with its key, applies exactly once.
//!
//! The failure is injected for real: a small shared object (`fixtures/failsync.c`), built here
//! with the system C compiler and loaded into `kopek serve` with `LD_PRELOAD`, makes `fsync` and
//! `fdatasync` of journal segments fail with EIO once a flag file exists.

use crate::support::*;
use kopek_proto::kopek::v1 as pb;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Builds the shim into `dir`. `None` (outside CI, with the reason) without a C compiler.
fn build_shim(dir: &Path) -> Option<PathBuf> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/failsync.c");
    let library = dir.join("failsync.so");
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&library)
        .arg(&source)
        .arg("-ldl")
        .output();
    match built {
        Ok(output) if output.status.success() => Some(library),
        failed => {
            let reason = match failed {
                Ok(output) => String::from_utf8_lossy(&output.stderr).into_owned(),
                Err(error) => error.to_string(),
            };
            assert!(
                std::env::var("CI").is_err(),
                "CI must be able to build the sync-failure shim with cc: {reason}"
            );
            eprintln!("SKIPPED: cannot build the sync-failure shim with cc: {reason}");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_journal_sync_stops_the_server_and_acknowledges_nothing_after_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(shim) = build_shim(dir.path()) else { return };
    let flag = dir.path().join("fail-syncs-now");
    let data = dir.path().join("data");
    let shim_path = shim.to_str().expect("utf-8 path");
    let flag_path = flag.to_str().expect("utf-8 path");
    let mut server = Server::start_with_env(
        &data,
        &["--journal"],
        &[("LD_PRELOAD", shim_path), ("KOPEK_TEST_SYNC_FAILS_ONCE_EXISTS", flag_path)],
    );
    let mut client = server.client().await;
    open_accounts(&mut client, &["payer", "payee"]).await;
    one(&mut client, deposit("fund", "payer", 1_000)).await;
    for n in 0..10 {
        let result = one(&mut client, post(&format!("before-{n}"), "payer", "payee", 1)).await;
        assert_eq!(status(&result), pb::TransferStatus::Posted);
    }

    // From now on no journal frame can be made durable.
    std::fs::write(&flag, b"").expect("raise the flag");
    let failed = client
        .create_transfers(pb::CreateTransfersRequest {
            transfers: vec![post("after", "payer", "payee", 100)],
            linked: false,
        })
        .await;
    assert!(failed.is_err(), "a transfer whose frame failed to sync was acknowledged: {failed:?}");
    let exit = server.wait_for_exit(Duration::from_secs(15));
    assert_eq!(exit.signal(), Some(6), "the server aborts (SIGABRT), it does not go on: {exit:?}");
    std::fs::remove_file(&flag).expect("lower the flag");

    // A restart without the shim: everything acknowledged is there; the client resends the
    // unanswered transfer with its key, and it applies once.
    let server = Server::start_with(&data, &["--journal"]);
    let mut client = server.client().await;
    for n in 0..10 {
        let lookup = pb::GetTransferRequest {
            lookup: Some(pb::get_transfer_request::Lookup::IdempotencyKey(format!("before-{n}"))),
        };
        client.get_transfer(lookup).await.expect("an acknowledged transfer survives");
    }
    let resent = one(&mut client, post("after", "payer", "payee", 100)).await;
    assert_eq!(status(&resent), pb::TransferStatus::Posted);
    let again = one(&mut client, post("after", "payer", "payee", 100)).await;
    assert_eq!(status(&again), pb::TransferStatus::Posted);
    assert_eq!(posted(&mut client, "payee").await, 110, "ten before and the resent one, once");
    assert_eq!(posted(&mut client, "payer").await, 1_000 - 110);
    drop(client);
    let mut server = server;
    assert!(server.terminate().success(), "SIGTERM exits 0");
    let (code, stdout, stderr) = cli(&["verify", "--data-dir", data.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "kopek verify failed:\n{stdout}\n{stderr}");
}
