//! A full disk under the journal-first store: writes are refused with UNAVAILABLE, balances
//! are still read, nothing acknowledged is lost, and once there is room again a restart goes
//! on from where it stopped.

use crate::support::*;
use kopek_proto::kopek::v1 as pb;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of `size` mounted on `path`, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    /// `None` (with the reason) where this process may not mount: the test then skips.
    fn mount(path: &Path, size: &str) -> Option<SmallDisk> {
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .ok()?;
        if !output.status.success() {
            eprintln!(
                "SKIPPED: cannot mount a small tmpfs to fill (needs root): {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
            return None;
        }
        Some(SmallDisk(path.to_owned()))
    }

    fn grow(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("run mount");
        assert!(status.success(), "remount the tmpfs larger");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_keeps_balances_and_loses_nothing_acknowledged() {
    let mount = tempfile::tempdir().expect("temp dir");
    let Some(disk) = SmallDisk::mount(mount.path(), "6m") else { return };
    let data = mount.path().join("data");
    let mut server = Server::start_with(&data, &["--journal"]);
    let mut client = server.client().await;
    open_accounts(&mut client, &["payer", "payee"]).await;
    one(&mut client, deposit("fund", "payer", 1_000_000_000_000)).await;

    // Batches of transfers with long descriptions, until the disk is full.
    let mut acknowledged = Vec::new();
    let mut refusal = None;
    for round in 0..10_000 {
        let requests: Vec<pb::TransferRequest> = (0..100)
            .map(|n| pb::TransferRequest {
                description: "x".repeat(400),
                ..post(&format!("fill-{round}-{n}"), "payer", "payee", 1)
            })
            .collect();
        let keys: Vec<String> = requests.iter().map(|r| r.idempotency_key.clone()).collect();
        let request = pb::CreateTransfersRequest { transfers: requests, linked: false };
        match client.create_transfers(request).await {
            Ok(response) => {
                for result in response.into_inner().results {
                    assert_eq!(status(&result), pb::TransferStatus::Posted);
                }
                acknowledged.extend(keys);
            }
            Err(status) => {
                refusal = Some(status);
                break;
            }
        }
    }
    let refusal = refusal.expect("the disk filled up");
    assert_eq!(refusal.code(), tonic::Code::Unavailable, "{refusal:?}");
    let moved = acknowledged.len() as i64;
    assert!(moved > 0, "some transfers fit before the disk was full");

    // Balances are still read, and show exactly what was acknowledged.
    assert_eq!(posted(&mut client, "payee").await, moved);
    assert_eq!(posted(&mut client, "payer").await, 1_000_000_000_000 - moved);
    let again = client
        .create_transfers(pb::CreateTransfersRequest {
            transfers: vec![post("after-full", "payer", "payee", 1)],
            linked: false,
        })
        .await
        .expect_err("still refused while the disk is full");
    assert_eq!(again.code(), tonic::Code::Unavailable, "{again:?}");

    // Room again, and a restart: every acknowledged transfer is there, and writes go on.
    disk.grow("256m");
    server.kill9();
    let server = Server::start_with(&data, &["--journal"]);
    let mut client = server.client().await;
    assert_eq!(posted(&mut client, "payee").await, moved);
    for key in acknowledged.iter().step_by(37).chain(acknowledged.last()) {
        let lookup = pb::GetTransferRequest {
            lookup: Some(pb::get_transfer_request::Lookup::IdempotencyKey(key.clone())),
        };
        client.get_transfer(lookup).await.expect("an acknowledged transfer survives");
    }
    let result = one(&mut client, post("after-room", "payer", "payee", 1)).await;
    assert_eq!(status(&result), pb::TransferStatus::Posted);
    assert_eq!(posted(&mut client, "payee").await, moved + 1);
    drop(client);
    let mut server = server;
    assert!(server.terminate().success(), "SIGTERM exits 0");
    let (code, stdout, stderr) = cli(&["verify", "--data-dir", data.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "kopek verify failed:\n{stdout}\n{stderr}");
}
