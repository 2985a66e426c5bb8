//! Backups of an embedded ledger, taken while a server writes it (`kopek backup`), and their
//! restore into an empty data directory (`kopek restore`); `docs/storage.md`, "Backup and
//! restore".
//!
//! A backup is the ledger as one moment left it:
//! 1. the SQLite file, copied page by page inside one read transaction (SQLite's online
//!    backup), so it is the projection as one committed transaction left it, with the
//!    journal frame it holds up to (its mark);
//! 2. then the journal's valid chain (`kopek_journal::copy_chain`), which by then holds at
//!    least every frame the projection does: a frame being appended during the copy is
//!    either whole in it or not in it.
//!
//! Opening the restored directory replays the frames after the mark into the tables, exactly
//! as after a crash; the key filter is rebuilt from them. `kopek-backup.json` lists every
//! file with its size and XXH3-128, and is written last: a directory without it is not a
//! backup, and a file that does not match it is refused at restore.

use crate::*;
use std::io::Read;

/// The file that makes a directory a backup.
pub const MANIFEST_FILE_NAME: &str = "kopek-backup.json";
const FORMAT: u64 = 1;

/// What a backup holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub taken_at: Timestamp,
    /// Journal-first (with a journal) or the SQLite layout.
    pub journal: bool,
    /// The last journal frame the backup holds (0 without a journal).
    pub journal_frames: u64,
    /// Every file, relative to the backup's directory: its size and XXH3-128.
    pub files: Vec<(String, u64, u128)>,
}

impl Manifest {
    fn to_json(&self) -> String {
        let files: Vec<String> = self
            .files
            .iter()
            .map(|(path, bytes, sum)| {
                format!(r#"{{"path":{path:?},"bytes":{bytes},"xxh3_128":"{sum:032x}"}}"#)
            })
            .collect();
        format!(
            "{{\"format\":{FORMAT},\"taken_at\":\"{}\",\"layout\":\"{}\",\"journal_frames\":{},\"files\":[{}]}}\n",
            self.taken_at.to_rfc3339(),
            if self.journal { "journal" } else { "sqlite" },
            self.journal_frames,
            files.join(",")
        )
    }

    fn parse(text: &str) -> Result<Manifest, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|error| format!("not JSON: {error}"))?;
        if value["format"].as_u64() != Some(FORMAT) {
            return Err(format!("format {} is not one this kopek reads", value["format"]));
        }
        let taken_at = value["taken_at"]
            .as_str()
            .and_then(|text| Timestamp::parse_rfc3339(text).ok())
            .ok_or("taken_at is missing")?;
        let journal = match value["layout"].as_str() {
            Some("journal") => true,
            Some("sqlite") => false,
            other => return Err(format!("layout {other:?} is unknown")),
        };
        let journal_frames = value["journal_frames"].as_u64().ok_or("journal_frames is missing")?;
        let mut files = Vec::new();
        for file in value["files"].as_array().ok_or("files is missing")? {
            let path = file["path"].as_str().ok_or("a file without its path")?;
            // Only names this module writes: nothing outside the directory.
            if path.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
                return Err(format!("file {path:?} is not inside the backup"));
            }
            let bytes = file["bytes"].as_u64().ok_or("a file without its size")?;
            let sum = file["xxh3_128"]
                .as_str()
                .and_then(|hex| u128::from_str_radix(hex, 16).ok())
                .ok_or("a file without its checksum")?;
            files.push((path.to_owned(), bytes, sum));
        }
        Ok(Manifest { taken_at, journal, journal_frames, files })
    }
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let place = path.display().to_string();
    let what = what.to_owned();
    move |error| StoreError::Unavailable(format!("{what} {place}: {error}"))
}

/// Size and XXH3-128 of a file, read in pieces.
fn sum_file(path: &Path) -> StoreResult<(u64, u128)> {
    let mut file = std::fs::File::open(path).map_err(io("read", path))?;
    let mut hasher = Xxh3::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let read = file.read(&mut buffer).map_err(io("read", path))?;
        if read == 0 {
            return Ok((bytes, hasher.digest128()));
        }
        hasher.update(&buffer[..read]);
        bytes += read as u64;
    }
}

/// Every file under `dir`, as paths relative to it, in order.
fn files_under(dir: &Path, prefix: &str, found: &mut Vec<String>) -> StoreResult<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io("list", dir))?
        .collect::<Result<_, _>>()
        .map_err(io("list", dir))?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let relative = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
        if entry.path().is_dir() {
            files_under(&entry.path(), &relative, found)?;
        } else if relative != MANIFEST_FILE_NAME {
            found.push(relative);
        }
    }
    Ok(())
}

/// Takes a backup of the ledger in `data_dir` into `out_dir` (created; it must be empty),
/// beside a server that may be writing it. Blocking: call it off the async runtime.
pub fn backup(data_dir: &Path, out_dir: &Path) -> StoreResult<Manifest> {
    let source = data_dir.join(DATABASE_FILE_NAME);
    if !source.is_file() {
        return Err(StoreError::Unavailable(format!("no ledger found at {}", source.display())));
    }
    std::fs::create_dir_all(out_dir).map_err(io("create", out_dir))?;
    if std::fs::read_dir(out_dir).map_err(io("list", out_dir))?.next().is_some() {
        return Err(StoreError::Unavailable(format!(
            "{} is not empty: a backup goes into a directory of its own",
            out_dir.display()
        )));
    }
    let journal = has_journal(data_dir);
    let taken_at = kopek_store::wall_clock();
    // 1. The tables, as one read transaction sees them.
    let reader = open_reader(&source)?;
    let mut copy = Connection::open(out_dir.join(DATABASE_FILE_NAME)).map_err(sql_error)?;
    {
        let backup = rusqlite::backup::Backup::new(&reader, &mut copy).map_err(sql_error)?;
        // All pages in one step: one read transaction, so one consistent state.
        match backup.step(-1).map_err(sql_error)? {
            rusqlite::backup::StepResult::Done => {}
            other => {
                return Err(StoreError::Unavailable(format!(
                    "the database copy did not finish in one step: {other:?}"
                )));
            }
        }
    }
    drop(copy);
    drop(reader);
    // 2. The journal after it, so the copy holds every frame the tables do.
    let journal_frames = if journal {
        let frames = kopek_journal::copy_chain(
            &data_dir.join(JOURNAL_DIR_NAME),
            &out_dir.join(JOURNAL_DIR_NAME),
        )
        .map_err(|error| StoreError::Unavailable(format!("copy the journal: {error}")))?;
        let mark = projection_mark_of(&out_dir.join(DATABASE_FILE_NAME))?;
        if frames < mark {
            return Err(StoreError::Corrupt(format!(
                "the journal holds {frames} frames but the tables hold {mark}"
            )));
        }
        frames
    } else {
        0
    };
    let mut names = Vec::new();
    files_under(out_dir, "", &mut names)?;
    let mut files = Vec::with_capacity(names.len());
    for name in names {
        let path = out_dir.join(&name);
        std::fs::File::open(&path).and_then(|file| file.sync_all()).map_err(io("sync", &path))?;
        let (bytes, sum) = sum_file(&path)?;
        files.push((name, bytes, sum));
    }
    let manifest = Manifest { taken_at, journal, journal_frames, files };
    let path = out_dir.join(MANIFEST_FILE_NAME);
    std::fs::write(&path, manifest.to_json()).map_err(io("write", &path))?;
    std::fs::File::open(&path).and_then(|file| file.sync_all()).map_err(io("sync", &path))?;
    std::fs::File::open(out_dir).and_then(|dir| dir.sync_all()).map_err(io("sync", out_dir))?;
    Ok(manifest)
}

/// The backup in `backup_dir`, every file checked against its manifest.
pub fn check_backup(backup_dir: &Path) -> StoreResult<Manifest> {
    let path = backup_dir.join(MANIFEST_FILE_NAME);
    let text = std::fs::read_to_string(&path).map_err(|error| {
        StoreError::Unavailable(format!(
            "{} is not a kopek backup (no {MANIFEST_FILE_NAME}: {error})",
            backup_dir.display()
        ))
    })?;
    let manifest = Manifest::parse(&text)
        .map_err(|reason| StoreError::Corrupt(format!("{}: {reason}", path.display())))?;
    for (name, bytes, sum) in &manifest.files {
        let found = sum_file(&backup_dir.join(name))?;
        if found != (*bytes, *sum) {
            return Err(StoreError::Corrupt(format!(
                "{name} in the backup does not match its manifest ({} bytes, checksum {:032x}; \
                 expected {bytes} bytes, {sum:032x})",
                found.0, found.1
            )));
        }
    }
    Ok(manifest)
}

/// Restores the backup in `backup_dir` into `data_dir`, which must hold no ledger, and opens
/// it once so the journal's frames after the tables' mark are replayed into them. Blocking.
pub fn restore(backup_dir: &Path, data_dir: &Path) -> StoreResult<Manifest> {
    let manifest = check_backup(backup_dir)?;
    if data_dir.join(DATABASE_FILE_NAME).exists() || has_journal(data_dir) {
        return Err(StoreError::Unavailable(format!(
            "{} already holds a ledger: restore into an empty directory",
            data_dir.display()
        )));
    }
    // Anything else there (a database's `-wal` file left behind) would be read with it.
    if std::fs::read_dir(data_dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(StoreError::Unavailable(format!(
            "{} is not empty: restore into an empty directory",
            data_dir.display()
        )));
    }
    for (name, _, _) in &manifest.files {
        let (from, to) = (backup_dir.join(name), data_dir.join(name));
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        std::fs::copy(&from, &to).map_err(io("copy", &from))?;
        std::fs::File::open(&to).and_then(|file| file.sync_all()).map_err(io("sync", &to))?;
    }
    if manifest.journal {
        let store = JournalStore::open(data_dir)?;
        drop(store);
    } else {
        SqliteStore::open(data_dir)?.close_writer();
    }
    Ok(manifest)
}

/// `Store::backup` for both layouts: a backup of the ledger whose tables are at
/// `database` into a new directory beside them, removed once the caller is done with it.
///
/// One copy is taken at a time: another request meanwhile is refused, so parallel backups
/// cannot fill the ledger's own disk. The copy is made, and on failure removed, on the
/// blocking thread itself: if the caller goes away meanwhile, the finished copy is dropped
/// there, never removed under a copy still being written. Copies a crash left behind are
/// removed before the next one.
pub(crate) async fn take_beside(database: &Path) -> StoreResult<kopek_store::TakenBackup> {
    static TAKING: Mutex<()> = Mutex::new(());
    let data_dir = database
        .parent()
        .ok_or_else(|| StoreError::Unavailable("the database has no directory".to_owned()))?
        .to_owned();
    tokio::task::spawn_blocking(move || {
        let Ok(_one_at_a_time) = TAKING.try_lock() else {
            return Err(StoreError::Unavailable(
                "a backup is being taken already; retry when it is done".to_owned(),
            ));
        };
        for entry in std::fs::read_dir(&data_dir).map_err(io("list", &data_dir))?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(BACKUP_COPY_PREFIX) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = data_dir
            .join(format!("{BACKUP_COPY_PREFIX}{}", kopek_store::wall_clock().as_unix_micros()));
        // Dropped on failure: a partial copy is removed.
        let mut taken = kopek_store::TakenBackup { dir: dir.clone(), files: Vec::new() };
        let manifest = backup(&data_dir, &dir)?;
        taken.files = manifest.files.into_iter().map(|(name, _, _)| name).collect();
        taken.files.push(MANIFEST_FILE_NAME.to_owned());
        Ok(taken)
    })
    .await
    .map_err(|error| StoreError::Unavailable(format!("the backup stopped: {error}")))?
}

/// The name a copy for `Store::backup` starts with, in the data directory.
const BACKUP_COPY_PREFIX: &str = ".backup-";

/// The journal frame the tables in `path` hold up to.
fn projection_mark_of(path: &Path) -> StoreResult<u64> {
    let frame: i64 = open_reader(path)?
        .query_row("SELECT frame FROM projection WHERE id = 1", [], |row| row.get(0))
        .map_err(sql_error)?;
    u64::try_from(frame).map_err(|_| StoreError::Corrupt(format!("projection mark {frame}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_reads_back_and_refuses_paths_outside_the_backup() {
        let manifest = Manifest {
            taken_at: Timestamp::from_unix_micros(1_700_000_000_000_000),
            journal: true,
            journal_frames: 42,
            files: vec![("journal/00000000000000000001.segment".into(), 7, u128::MAX - 3)],
        };
        assert_eq!(Manifest::parse(&manifest.to_json()), Ok(manifest.clone()));
        let outside = manifest.to_json().replace("journal/0000", "../0000");
        assert!(Manifest::parse(&outside).expect_err("outside").contains("not inside"));
    }
}
