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

/// Unpacks the archive at `path` into `out`: regular (or sparse) files with plain relative
/// names only (no links, no absolute paths, no `..`), as the server writes them.
fn unpack(path: &Path, out: &Path) -> anyhow::Result<()> {
    let mut archive = tar::Archive::new(std::fs::File::open(path)?);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.into_owned();
        let plain = name.components().all(|part| matches!(part, std::path::Component::Normal(_)));
        // A segment's zero tail may come as a sparse file.
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_gnu_sparse()) || !plain {
            bail!("the archive holds {}, which is no file of a backup", name.display());
        }
        let target = out.join(&name);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        entry.unpack(&target)?;
    }
    Ok(())
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
        unpack(&path, &out)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An archive from a server is unpacked only as plain files inside the directory: a link
    /// (which later reads would follow out of it) is refused.
    #[test]
    fn an_archive_with_a_link_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("hostile.tar");
        let mut builder = tar::Builder::new(std::fs::File::create(&path).expect("create"));
        let mut file = tar::Header::new_gnu();
        file.set_size(2);
        file.set_cksum();
        builder.append_data(&mut file, "kopek.sqlite3", &b"ok"[..]).expect("file");
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        builder.append_link(&mut link, "journal", "/etc").expect("link");
        builder.into_inner().expect("finish");
        let out = dir.path().join("out");
        let refused = unpack(&path, &out).expect_err("a link");
        assert!(refused.to_string().contains("journal, which is no file of a backup"), "{refused}");
        assert!(out.join("kopek.sqlite3").is_file(), "the file before it was unpacked");
        assert!(!out.join("journal").exists(), "no link was made");
    }
}
