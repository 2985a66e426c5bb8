//! Opening the store: the data directory's lock, the connections, migrations, the
//! checkpointer, and the `SqliteStore` handle's own methods.

use crate::*;

impl SqliteStore {
    /// Opens (creating if needed) the ledger in `data_dir`, applies pending migrations and
    /// starts the writer thread. A ledger with a journal is refused: its tables may lack the
    /// journal's last frames, so only `JournalStore` may open it.
    pub fn open(data_dir: &Path) -> StoreResult<SqliteStore> {
        if has_journal(data_dir) {
            return Err(StoreError::Unavailable(format!(
                "the ledger in {} is journal-first (it has a {JOURNAL_DIR_NAME}/ directory): \
                 open it with --journal",
                data_dir.display()
            )));
        }
        SqliteStore::open_projection(data_dir)
    }

    /// Opens the tables of a ledger for `JournalStore`, which keeps them as its projection.
    pub(crate) fn open_projection(data_dir: &Path) -> StoreResult<SqliteStore> {
        std::fs::create_dir_all(data_dir).map_err(|error| {
            StoreError::Unavailable(format!("create data dir {}: {error}", data_dir.display()))
        })?;
        let lock = lock_data_dir(data_dir)?;
        let path = data_dir.join(DATABASE_FILE_NAME);
        let mut connection = open_writer(&path)?;
        migrate_connection(&mut connection)?;
        // Checkpoints run on a thread of their own; the writer starts one itself only if
        // that thread falls behind.
        connection
            .pragma_update(None, "wal_autocheckpoint", WAL_PAGES_BEFORE_WRITER_CHECKPOINTS)
            .map_err(sql_error)?;
        let nudge = start_checkpointer(&path)?;
        let (sender, receiver) = mpsc::channel::<WriteJob>();
        std::thread::Builder::new()
            .name("kopek-sqlite-writer".to_owned())
            .spawn(move || {
                // The thread ends when every sender is gone: the store was dropped. The
                // checkpointer ends with it.
                for job in receiver {
                    job(&mut connection);
                    // A checkpoint already due covers this commit too.
                    let _ = nudge.try_send(());
                }
            })
            .map_err(|error| StoreError::Unavailable(format!("start writer thread: {error}")))?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                _lock: Some(lock),
                writer: Mutex::new(Some(sender)),
                idle_readers: Mutex::new(Vec::new()),
                read_permits: Arc::new(Semaphore::new(READ_CONNECTIONS_MAX)),
            }),
        })
    }

    /// Opens the ledger for the admin commands (`kopek keys`, `kopek audit`), which may run
    /// next to a live server: like `open` when no server holds the ledger; otherwise without
    /// the lock and without migrating (the server did), writing through SQLite's own locking.
    /// Only key rows are written this way; ledger writes stay with the server's writer.
    pub fn open_beside_server(data_dir: &Path) -> StoreResult<SqliteStore> {
        let path = data_dir.join(DATABASE_FILE_NAME);
        if !path.is_file() {
            return SqliteStore::open(data_dir);
        }
        let lock = lock_data_dir(data_dir).ok();
        if has_journal(data_dir) {
            // Reads (`kopek audit`) see what the journal held when they started.
            await_projection(&open_reader(&path)?, data_dir)?;
        }
        let mut connection = open_writer(&path)?;
        if lock.is_some() {
            migrate_connection(&mut connection)?;
        } else {
            let version: i64 = connection
                .query_row("SELECT COUNT(*) FROM schema_migrations", [], |row| row.get(0))
                .map_err(sql_error)?;
            if usize::try_from(version).unwrap_or(0) < MIGRATIONS.len() {
                return Err(StoreError::Unavailable(format!(
                    "the ledger in {} has an older schema and a server is using it: upgrade that server first",
                    data_dir.display()
                )));
            }
        }
        let (sender, receiver) = mpsc::channel::<WriteJob>();
        std::thread::Builder::new()
            .name("kopek-sqlite-admin".to_owned())
            .spawn(move || {
                for job in receiver {
                    job(&mut connection);
                }
            })
            .map_err(|error| StoreError::Unavailable(format!("start writer thread: {error}")))?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                _lock: lock,
                writer: Mutex::new(Some(sender)),
                idle_readers: Mutex::new(Vec::new()),
                read_permits: Arc::new(Semaphore::new(READ_CONNECTIONS_MAX)),
            }),
        })
    }

    /// Opens an existing ledger for reading only (`kopek verify` next to a running server).
    /// Writes answer `Unavailable`.
    pub fn open_read_only(data_dir: &Path) -> StoreResult<SqliteStore> {
        let path = data_dir.join(DATABASE_FILE_NAME);
        if !path.is_file() {
            return Err(StoreError::Unavailable(format!("no ledger found at {}", path.display())));
        }
        // Fails early on a file that is not a kopek database.
        let reader = open_reader(&path)?;
        reader
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |row| row.get::<_, i64>(0))
            .map_err(|error| {
                StoreError::Unavailable(format!(
                    "{} is not a kopek ledger: {error}",
                    path.display()
                ))
            })?;
        if has_journal(data_dir) {
            await_projection(&reader, data_dir)?;
        }
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                _lock: None,
                writer: Mutex::new(None),
                idle_readers: Mutex::new(Vec::new()),
                read_permits: Arc::new(Semaphore::new(READ_CONNECTIONS_MAX)),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Stops the writer thread after the work already sent to it; later writes fail.
    pub fn close_writer(&self) {
        if let Ok(mut writer) = self.inner.writer.lock() {
            writer.take();
        }
    }

    pub(crate) async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        self.send(Box::new(move |connection| {
            // The caller may have gone away; the work is committed either way.
            let _ = reply.send(work(connection));
        }))?;
        answer.await.map_err(|_| {
            StoreError::Unavailable("the sqlite writer stopped mid-batch".to_owned())
        })?
    }

    /// Hands `job` to the writer thread.
    pub(crate) fn send(&self, job: WriteJob) -> StoreResult<()> {
        let sent = match self.inner.writer.lock() {
            Ok(writer) => writer.as_ref().is_some_and(|sender| sender.send(job).is_ok()),
            Err(_) => false,
        };
        if sent {
            Ok(())
        } else {
            Err(StoreError::Unavailable("the sqlite writer is stopped".to_owned()))
        }
    }

    /// Runs `work` on the writer thread and waits for it, off any async runtime    /// Runs `work` on the writer thread and waits for it, off any async runtime: what the
    /// journal's projector and its start-up replay use.
    pub(crate) fn write_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Box::new(move |connection| {
            let _ = reply.send(work(connection));
        }))?;
        answer.recv().map_err(|_| {
            StoreError::Unavailable("the sqlite writer stopped mid-batch".to_owned())
        })?
    }

    /// Writes committed journal frames into the tables in one transaction, with the last
    /// frame's sequence and place in the journal as the projection's mark.
    pub(crate) fn project(&self, frames: Vec<(Position, Arc<Outcome>)>) -> StoreResult<()> {
        let Some(last) = frames.last().map(|(position, _)| *position) else {
            return Ok(());
        };
        self.write_blocking(move |connection| {
            // The journal holds these frames durably and replays whatever the tables lose,
            // so their commit need not wait for the disk: the WAL is synced by the next
            // checkpoint or by the next commit of a row only the tables hold (keys,
            // webhooks, relay cursors), which stays `synchronous = FULL`.
            connection.pragma_update(None, "synchronous", "NORMAL").map_err(sql_error)?;
            let projected = (|| {
                let db_transaction = connection
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(sql_error)?;
                // An account several of these frames change is written once, as the last
                // of them left it: its row holds only its newest state.
                let mut last_change: std::collections::HashMap<&AccountId, usize> =
                    std::collections::HashMap::new();
                for (place, (_, outcome)) in frames.iter().enumerate() {
                    for account in &outcome.accounts_changed {
                        last_change.insert(&account.id, place);
                    }
                }
                for (place, (_, outcome)) in frames.iter().enumerate() {
                    write_outcome(&db_transaction, outcome, |id| {
                        last_change.get(id) == Some(&place)
                    })?;
                }
                let integer = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
                db_transaction
                    .execute(
                        "UPDATE projection SET frame = ?1, segment = ?2, frame_offset = ?3, \
                         checksum = ?4 WHERE id = 1",
                        rusqlite::params![
                            integer(last.sequence),
                            integer(last.segment),
                            integer(last.offset),
                            last.checksum.to_le_bytes().to_vec(),
                        ],
                    )
                    .map_err(sql_error)?;
                db_transaction.commit().map_err(sql_error)
            })();
            connection.pragma_update(None, "synchronous", "FULL").map_err(sql_error)?;
            projected
        })
    }

    /// The last journal frame the tables hold (0: none, or a ledger without a journal), and
    /// where it lies in the journal when that was recorded with it.
    pub(crate) fn projection_mark(&self) -> StoreResult<(u64, Option<Position>)> {
        let (frame, segment, offset, checksum): (i64, Option<i64>, Option<i64>, Option<Vec<u8>>) =
            open_reader(&self.inner.path)?
                .query_row(
                    "SELECT frame, segment, frame_offset, checksum FROM projection WHERE id = 1",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
                )
                .map_err(sql_error)?;
        let sequence = u64::try_from(frame).map_err(|_| {
            StoreError::Corrupt(format!("the projection's mark {frame} is negative"))
        })?;
        let position = match (segment, offset, checksum) {
            (Some(segment), Some(offset), Some(checksum)) if sequence > 0 => Some(Position {
                sequence,
                segment: u64::try_from(segment).unwrap_or(0),
                offset: u64::try_from(offset).unwrap_or(0),
                checksum: u128::from_le_bytes(checksum.try_into().map_err(|_| {
                    StoreError::Corrupt("the projection's journal checksum is not 16 bytes".into())
                })?),
            }),
            _ => None,
        };
        Ok((sequence, position))
    }

    /// Every account and the projection's mark, read in one transaction, for
    /// `JournalStore::verify`.
    pub(crate) async fn accounts_at_mark(&self) -> StoreResult<(u64, Vec<Account>)> {
        self.read(|connection| {
            let snapshot = connection.unchecked_transaction().map_err(sql_error)?;
            let mark: i64 = snapshot
                .query_row("SELECT frame FROM projection WHERE id = 1", [], |row| row.get(0))
                .map_err(sql_error)?;
            let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts");
            let mut statement = snapshot.prepare(&sql).map_err(sql_error)?;
            let rows = statement.query_map([], account_from_row).map_err(sql_error)?;
            let accounts = rows.map(decoded).collect::<StoreResult<Vec<_>>>()?;
            Ok((u64::try_from(mark).unwrap_or(0), accounts))
        })
        .await
    }

    pub(crate) async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let permit = self
            .inner
            .read_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("read pool closed".to_owned()))?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let idle = inner.idle_readers.lock().ok().and_then(|mut idle| idle.pop());
            let connection = match idle {
                Some(connection) => connection,
                None => open_reader(&inner.path)?,
            };
            let result = work(&connection);
            if let Ok(mut idle) = inner.idle_readers.lock() {
                idle.push(connection);
            }
            result
        })
        .await
        .map_err(|error| StoreError::Unavailable(format!("read task failed: {error}")))?
    }
}

/// Starts the thread that copies committed pages from the WAL into the database file, so
/// the writer does not: it runs a passive checkpoint (one that never blocks the writer or
/// readers) after commits, at most once per `CHECKPOINT_PAUSE`. Nudge it through the
/// returned sender; it ends when the sender is dropped.
pub(crate) fn start_checkpointer(path: &Path) -> StoreResult<mpsc::SyncSender<()>> {
    let connection = open_writer(path)?;
    let (nudge, nudged) = mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("kopek-sqlite-ckpt".to_owned())
        .spawn(move || {
            while nudged.recv().is_ok() {
                let checkpoint =
                    connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                if let Err(error) = checkpoint {
                    tracing::warn!(%error, "WAL checkpoint failed; the next commit tries again");
                }
                std::thread::sleep(CHECKPOINT_PAUSE);
            }
        })
        .map_err(|error| StoreError::Unavailable(format!("start checkpoint thread: {error}")))?;
    Ok(nudge)
}

/// Takes the data directory's lock file, or fails if another process holds it.
/// Waits (at most `READ_ONLY_PROJECTION_WAIT_MAX`) until the tables hold every frame the
/// journal in `data_dir` holds now, so a read-only view opened beside a running journal-first
/// server sees every write acknowledged before it opened. A journal whose last frame never
/// reaches the tables (a torn frame the next start cuts off) only delays the open.
pub(crate) fn await_projection(reader: &Connection, data_dir: &Path) -> StoreResult<()> {
    let journal = kopek_journal::last_sequence(&data_dir.join(JOURNAL_DIR_NAME))
        .map_err(|error| StoreError::Unavailable(format!("read the journal: {error}")))?;
    let started = std::time::Instant::now();
    loop {
        let mark: i64 = reader
            .query_row("SELECT frame FROM projection WHERE id = 1", [], |row| row.get(0))
            .map_err(sql_error)?;
        if u64::try_from(mark).unwrap_or(0) >= journal {
            return Ok(());
        }
        if started.elapsed() > READ_ONLY_PROJECTION_WAIT_MAX {
            tracing::warn!(
                mark,
                journal,
                "the tables are behind the journal; reading them as they are"
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `data_dir` holds a journal (`JournalStore`'s): then only `JournalStore` opens it
/// for writing.
pub fn has_journal(data_dir: &Path) -> bool {
    std::fs::read_dir(data_dir.join(JOURNAL_DIR_NAME))
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false)
}

pub(crate) fn lock_data_dir(data_dir: &Path) -> StoreResult<std::fs::File> {
    let path = data_dir.join("kopek.lock");
    let file =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(
            |error| StoreError::Unavailable(format!("open {}: {error}", path.display())),
        )?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Unavailable(format!(
            "the ledger in {} is in use by another kopek process",
            data_dir.display()
        ))),
        Err(std::fs::TryLockError::Error(error)) => {
            Err(StoreError::Unavailable(format!("lock {}: {error}", path.display())))
        }
    }
}

/// Applies pending migrations to the ledger in `data_dir`; returns the versions applied.
pub fn migrate(data_dir: &Path) -> StoreResult<Vec<usize>> {
    std::fs::create_dir_all(data_dir).map_err(|error| {
        StoreError::Unavailable(format!("create data dir {}: {error}", data_dir.display()))
    })?;
    let _lock = lock_data_dir(data_dir)?;
    let mut connection = open_writer(&data_dir.join(DATABASE_FILE_NAME))?;
    migrate_connection(&mut connection)
}

pub(crate) fn open_writer(path: &Path) -> StoreResult<Connection> {
    let connection = Connection::open(path).map_err(sql_error)?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(sql_error)?;
    connection
        .execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = OFF;
             PRAGMA cache_size = -65536;
             PRAGMA temp_store = MEMORY;",
        )
        .map_err(sql_error)?;
    connection.set_prepared_statement_cache_capacity(64);
    Ok(connection)
}

pub(crate) fn open_reader(path: &Path) -> StoreResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let connection = Connection::open_with_flags(path, flags).map_err(sql_error)?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(sql_error)?;
    connection.execute_batch("PRAGMA cache_size = -16384;").map_err(sql_error)?;
    Ok(connection)
}

pub(crate) fn migrate_connection(connection: &mut Connection) -> StoreResult<Vec<usize>> {
    register_key_hash(connection)?;
    crate::search::register_metadata_tag(connection)?;
    let db_transaction =
        connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_error)?;
    db_transaction
        .execute_batch("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
        .map_err(sql_error)?;
    let current: i64 = db_transaction
        .query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |row| row.get(0))
        .map_err(sql_error)?;
    let current = usize::try_from(current)
        .map_err(|_| StoreError::Corrupt("negative schema version".to_owned()))?;
    if current > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "the database has schema version {current}, newer than this kopek knows ({})",
            MIGRATIONS.len()
        )));
    }
    let mut applied = Vec::new();
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let version = index + 1;
        db_transaction.execute_batch(sql).map_err(sql_error)?;
        db_transaction
            .execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, strftime('%s', 'now'))",
                [version as i64],
            )
            .map_err(sql_error)?;
        applied.push(version);
    }
    db_transaction.commit().map_err(sql_error)?;
    Ok(applied)
}

/// A 64-bit hash of a transfer's idempotency key in its tenant: the journal store's filter of
/// keys that left memory (so a fresh key costs no projection read), and the `key_hash` column
/// of `transfers` by which the projection finds a key (migration 0013).
pub(crate) fn key_hash(tenant: &Tenant, key: &IdempotencyKey) -> u64 {
    key_hash_of(tenant.as_str().as_bytes(), key.as_str().as_bytes())
}

/// `key_hash` of a tenant and key as stored. They are joined on the stack and hashed in one
/// call (a streaming hasher sets up half a kilobyte of state per key); only an unusually long
/// pair streams.
pub(crate) fn key_hash_of(tenant: &[u8], key: &[u8]) -> u64 {
    let mut joined = [0u8; 256];
    let length = tenant.len() + 1 + key.len();
    if length <= joined.len() {
        joined[..tenant.len()].copy_from_slice(tenant);
        joined[tenant.len()] = 0xff;
        joined[tenant.len() + 1..length].copy_from_slice(key);
        return xxh3_64(&joined[..length]);
    }
    let mut hasher = Xxh3::new();
    hasher.update(tenant);
    hasher.update(&[0xff]);
    hasher.update(key);
    hasher.digest()
}
