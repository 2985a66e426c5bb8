//! `kopek backup` and `kopek restore` (docs/storage.md, "Backup and restore").

use crate::cli::{BackupArgs, RestoreArgs};
use anyhow::{Context, bail};
use kopek_store_sqlite::backup::{MANIFEST_FILE_NAME, Manifest, check_backup};
use std::io::Write;
use std::path::Path;

/// Takes a backup into `args.out_dir`: from the server at `--addr`, or from `--data-dir`
/// beside a running server. The directory then holds a backup `kopek restore` takes.
pub async fn take(args: BackupArgs) -> anyhow::Result<()> {
    let out_dir = args.out_dir.clone();
    let manifest = match &args.addr {
        Some(addr) => download(addr, args.api_key.as_deref(), &out_dir).await?,
        None => {
            let data_dir = args.data_dir.clone();
            let out = out_dir.clone();
            tokio::task::spawn_blocking(move || kopek_store_sqlite::backup::backup(&data_dir, &out))
                .await
                .context("the backup stopped")??
        }
    };
    println!("{}", summary("backup", &out_dir, &manifest));
    Ok(())
}

/// Restores a backup into an empty data directory.
pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let (backup_dir, data_dir) = (args.backup_dir.clone(), args.data_dir.clone());
    let manifest = tokio::task::spawn_blocking(move || {
        kopek_store_sqlite::backup::restore(&backup_dir, &data_dir)
    })
    .await
    .context("the restore stopped")??;
    println!("{}", summary("restored", &args.data_dir, &manifest));
    println!("check it with: kopek verify --data-dir {}", args.data_dir.display());
    Ok(())
}

fn summary(what: &str, dir: &Path, manifest: &Manifest) -> String {
    let bytes: u64 = manifest.files.iter().map(|(_, bytes, _)| bytes).sum();
    let layout = if manifest.journal {
        format!("journal-first, {} journal frames", manifest.journal_frames)
    } else {
        "SQLite layout".to_owned()
    };
    format!(
        "{what} {}: {layout}, {} files, {bytes} bytes, taken at {}",
        dir.display(),
        manifest.files.len() + 1,
        manifest.taken_at.to_rfc3339()
    )
}

/// `GET /v1/admin/backup` from the server at `addr`: the archive is written to disk as it
/// arrives, unpacked into `out_dir`, and every file checked against the manifest.
async fn download(addr: &str, api_key: Option<&str>, out_dir: &Path) -> anyhow::Result<Manifest> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("create {}", out_dir.display()))?;
    if std::fs::read_dir(out_dir)?.next().is_some() {
        bail!("{} is not empty: a backup goes into a directory of its own", out_dir.display());
    }
    let url = format!("{}/v1/admin/backup", addr.trim_end_matches('/'));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().build().context("an HTTP client")?;
    let mut request = client.get(&url);
    if let Some(key) = api_key {
        request = request.bearer_auth(key.trim());
    }
    let mut response = request.send().await.with_context(|| format!("cannot reach {url}"))?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        bail!("{url} answered {status}: {body}");
    }
    let archive_path = out_dir.join(".download.tar");
    let mut archive = std::fs::File::create(&archive_path)?;
    let mut received = 0u64;
    while let Some(chunk) = response.chunk().await.context("the backup's download was cut")? {
        archive.write_all(&chunk)?;
        received += chunk.len() as u64;
    }
    archive.sync_all()?;
    drop(archive);
    let (out, path) = (out_dir.to_owned(), archive_path.clone());
    let manifest = tokio::task::spawn_blocking(move || -> anyhow::Result<Manifest> {
        tar::Archive::new(std::fs::File::open(&path)?)
            .unpack(&out)
            .with_context(|| format!("unpack the backup ({received} bytes received)"))?;
        std::fs::remove_file(&path)?;
        if !out.join(MANIFEST_FILE_NAME).is_file() {
            bail!("the backup arrived without its manifest: the download was cut short");
        }
        Ok(check_backup(&out)?)
    })
    .await
    .context("unpacking stopped")??;
    Ok(manifest)
}
