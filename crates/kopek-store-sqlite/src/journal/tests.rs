//! The journal-first store: the conformance suite, restarts that rebuild the projection,
//! torn and damaged frames, and a ledger of the SQLite layout opened journal-first.

use super::*;
use crate::DATABASE_FILE_NAME;
use crate::key_hash_of;
use kopek_core::memory::SequentialIds;
use kopek_core::{
    AccountStatus, Authority, Batch, Command, CommandBody, CommandResult, Details, Linking,
    Movement, NewAccount, TransferKind, TransferRequest, TransferResult, apply,
};
use xxhash_rust::xxh3::Xxh3;

kopek_store::conformance_tests!(async {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = JournalStore::open(dir.path()).expect("open the journal store");
    Some((store, dir))
});

fn usd() -> Currency {
    Currency::parse("USD").expect("USD")
}

fn id(name: &str) -> AccountId {
    AccountId::parse(name).expect("account id")
}

/// Commits one batch of `bodies`, decided by the real `apply`, with ids from `first_id`.
async fn run(store: &dyn Store, first_id: u128, bodies: Vec<CommandBody>) -> Outcome {
    let commands = bodies
        .into_iter()
        .map(|body| Command::new(Tenant::default_tenant(), Authority::Ledger, body))
        .collect();
    let batch = Batch { commands };
    let now = Timestamp::from_unix_micros(1_700_000_000_000_000 + first_id as i64);
    store
        .write_batch(
            batch.keys(),
            Box::new(move |state| {
                let mut ids = SequentialIds::default();
                for _ in 0..first_id {
                    kopek_core::IdSource::next_ulid(&mut ids);
                }
                Ok(apply(state, &batch, now, &mut ids))
            }),
        )
        .await
        .expect("the batch commits")
        .into_outcome()
}

fn open(names: &[&str]) -> CommandBody {
    CommandBody::CreateAccounts(
        names.iter().map(|name| NewAccount::user(id(name), usd())).collect(),
    )
}

fn transfer(key: &str, debit: AccountId, credit: &str, minor: i64) -> CommandBody {
    let kind = if debit == AccountId::world(usd()) {
        TransferKind::Deposit
    } else {
        TransferKind::Transfer
    };
    let request = TransferRequest {
        idempotency_key: IdempotencyKey::parse(key).expect("key"),
        kind,
        movement: Movement::Move {
            debit_account: debit,
            credit_account: id(credit),
            amount: minor,
            currency: usd(),
            hold: None,
        },
        details: Details::default(),
        effective_at: None,
        open_if_missing: Vec::new(),
        fingerprint_extra: String::new(),
    };
    CommandBody::CreateTransfers { transfers: vec![request], linking: Linking::Independent }
}

/// Opens alice and bob, pays alice 100 from the world and 30 of it to bob: three frames.
async fn three_frames(store: &dyn Store) {
    run(store, 0, vec![open(&["alice", "bob"])]).await;
    run(store, 100, vec![transfer("fund", AccountId::world(usd()), "alice", 100)]).await;
    run(store, 200, vec![transfer("pay", id("alice"), "bob", 30)]).await;
}

async fn posted(store: &dyn Store, name: &str) -> i64 {
    store.account(&id(name)).await.expect("read").expect("exists").balance.posted
}

/// The ledger `three_frames` left: balances, the transfer by key, its replay, the books.
async fn assert_three_frames(store: &dyn Store) {
    assert_eq!((posted(store, "alice").await, posted(store, "bob").await), (70, 30));
    let tenant = Tenant::default_tenant();
    let key = IdempotencyKey::parse("pay").expect("key");
    let paid = store.transfer_by_key(&tenant, &key).await.expect("read").expect("recorded");
    assert_eq!(paid.amount, 30);
    let page = store.entries(&id("bob"), None, 10).await.expect("entries");
    assert_eq!(page.items.len(), 1);
    let again = run(store, 300, vec![transfer("pay", id("alice"), "bob", 30)]).await;
    match &again.results[0] {
        CommandResult::Transfers(results) => {
            assert!(matches!(&results[0], TransferResult::Replayed(t) if t.id == paid.id))
        }
        other => panic!("expected a replay, got {other:?}"),
    }
    assert_eq!(posted(store, "alice").await, 70, "a replay moves nothing");
    let report = store.verify().await.expect("verify");
    assert!(report.is_ok(), "{:?}", report.problems);
}

/// Where each frame of a segment starts, and last where the next one would.
fn frame_starts(segment: &[u8]) -> Vec<usize> {
    let mut starts = vec![0];
    let mut at = 0;
    while segment[at..at + 4] == *b"KJF1" {
        let length = u32::from_le_bytes(segment[at + 4..at + 8].try_into().expect("4 bytes"));
        at += kopek_journal::HEADER_BYTES + length as usize;
        starts.push(at);
    }
    starts
}

fn segment(dir: &Path) -> std::path::PathBuf {
    dir.join(JOURNAL_DIR_NAME).join(format!("{:020}.segment", 1))
}

#[tokio::test]
async fn a_restart_rebuilds_what_the_projection_lost_from_the_journal() {
    let dir = tempfile::tempdir().expect("temp dir");
    three_frames(&JournalStore::open(dir.path()).expect("open")).await;
    // The projection loses everything it held: it is a cache of the journal.
    lose_the_projection(dir.path());
    let store = JournalStore::open(dir.path()).expect("reopen");
    assert_eq!(store.marks(), (3, 3), "every frame replayed into the projection");
    assert_eq!(store.started().frames_read, 3);
    assert_three_frames(&store).await;
    let events = store.events_after(None, 0, 100).await.expect("events");
    assert_eq!(events.len(), 5, "alice, bob and world:USD opened, two transfers posted");
}

#[tokio::test]
async fn a_torn_last_frame_is_cut_and_the_ledger_goes_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    three_frames(&JournalStore::open(dir.path()).expect("open")).await;
    let mut bytes = std::fs::read(segment(dir.path())).expect("segment");
    let end = *frame_starts(&bytes).last().expect("frames");
    // A fourth frame cut short by a crash: a header that promises more than is there.
    bytes[end..end + 4].copy_from_slice(b"KJF1");
    bytes[end + 4..end + 8].copy_from_slice(&4_096u32.to_le_bytes());
    bytes[end + 8] = 4;
    std::fs::write(segment(dir.path()), &bytes).expect("tear");
    let store = JournalStore::open(dir.path()).expect("a torn tail does not stop the start");
    assert_eq!(store.marks(), (3, 3));
    assert_three_frames(&store).await;
    drop(store);
    let store = JournalStore::open(dir.path()).expect("and the frame after it chains on");
    assert_eq!(store.marks(), (4, 4));
    assert_eq!(posted(&store, "alice").await, 70);
}

/// Empties the projection, as if it had lost everything: the next start must read and replay
/// every frame.
fn lose_the_projection(dir: &Path) {
    let connection = Connection::open(dir.join(DATABASE_FILE_NAME)).expect("open");
    connection
        .execute_batch(
            "DELETE FROM accounts; DELETE FROM transfers; DELETE FROM postings; \
             DELETE FROM outbox; UPDATE projection SET frame = 0;",
        )
        .expect("empty the projection");
}

#[tokio::test]
async fn a_damaged_frame_with_frames_after_it_stops_the_start_and_says_where() {
    let dir = tempfile::tempdir().expect("temp dir");
    three_frames(&JournalStore::open(dir.path()).expect("open")).await;
    lose_the_projection(dir.path());
    let mut bytes = std::fs::read(segment(dir.path())).expect("segment");
    bytes[kopek_journal::HEADER_BYTES + 5] ^= 0x01;
    std::fs::write(segment(dir.path()), &bytes).expect("flip a byte of the first frame");
    let error = JournalStore::open(dir.path()).err().expect("the start stops");
    let message = error.to_string();
    assert!(matches!(error, StoreError::Corrupt(_)), "{message}");
    assert!(message.contains("00000000000000000001.segment"), "{message}");
    assert!(message.contains("at offset 0"), "{message}");
}

/// A start reads the journal only after the projection's mark: a frame the projection holds
/// is not read again, so damage to it is found by the journal check (`kopek verify`), with
/// its place.
#[tokio::test]
async fn damage_below_the_projections_mark_is_found_by_the_journal_check() {
    let dir = tempfile::tempdir().expect("temp dir");
    three_frames(&JournalStore::open(dir.path()).expect("open")).await;
    let mut bytes = std::fs::read(segment(dir.path())).expect("segment");
    bytes[kopek_journal::HEADER_BYTES + 5] ^= 0x01;
    std::fs::write(segment(dir.path()), &bytes).expect("flip a byte of the first frame");
    let store = JournalStore::open(dir.path()).expect("the start reads on from the mark");
    assert_eq!(store.started().resumed_after, Some(3));
    assert_eq!(store.started().frames_read, 0);
    let problems = store.verify_journal().await.expect("check");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("00000000000000000001.segment at offset 0"), "{problems:?}");
    assert!(problems[0].contains("payload checksum"), "{problems:?}");
}

/// The key filter comes back from its snapshot, and the keys of frames after the snapshot
/// (some the projection holds already, some it does not) are added from the journal: every
/// replay is still a replay. A snapshot that does not check out is ignored.
#[tokio::test]
async fn a_restart_takes_the_key_filter_from_its_snapshot_and_the_frames_after_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    three_frames(&JournalStore::open(dir.path()).expect("open")).await;
    let filter_path = dir.path().join(KEY_FILTER_FILE_NAME);
    let (taken, filter) = KeyFilter::load(&filter_path).expect("loads").expect("saved on close");
    assert_eq!((taken.sequence, filter.len()), (3, 2), "fund and pay, as of frame 3");
    let old_snapshot = std::fs::read(&filter_path).expect("read the snapshot");
    {
        let store = JournalStore::open(dir.path()).expect("reopen");
        assert_eq!(
            store.started(),
            Started { resumed_after: Some(3), frames_read: 0, filter_snapshot: Some(3) }
        );
        run(&store, 400, vec![transfer("later", id("alice"), "bob", 1)]).await;
        run(&store, 500, vec![transfer("last", id("alice"), "bob", 2)]).await;
        // A crash: the projection may not get frames 4 and 5.
        store.abandon_projection();
    }
    // The snapshot saved on close goes back to the one of frame 3.
    std::fs::write(&filter_path, &old_snapshot).expect("put the old snapshot back");
    let store = JournalStore::open(dir.path()).expect("reopen");
    assert_eq!(store.marks(), (5, 5));
    assert_eq!(
        store.started(),
        Started { resumed_after: Some(3), frames_read: 2, filter_snapshot: Some(3) }
    );
    for (key, debit, amount) in [("pay", "alice", 30), ("later", "alice", 1), ("last", "alice", 2)]
    {
        let again = run(&store, 700, vec![transfer(key, id(debit), "bob", amount)]).await;
        match &again.results[0] {
            CommandResult::Transfers(results) => {
                assert!(matches!(&results[0], TransferResult::Replayed(_)), "{key}: {results:?}")
            }
            other => panic!("expected a replay of {key}, got {other:?}"),
        }
    }
    assert_eq!(posted(&store, "bob").await, 30 + 1 + 2, "replays moved nothing");
    drop(store);
    // A snapshot that does not check out: the filter is read from the tables.
    std::fs::write(&filter_path, b"not a snapshot").expect("spoil the snapshot");
    let store = JournalStore::open(dir.path()).expect("reopen");
    assert_eq!(store.started().filter_snapshot, None);
    let again = run(&store, 800, vec![transfer("later", id("alice"), "bob", 1)]).await;
    assert!(matches!(
        &again.results[0],
        CommandResult::Transfers(results) if matches!(&results[0], TransferResult::Replayed(_))
    ));
    let report = store.verify().await.expect("verify");
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(store.verify_journal().await.expect("check"), Vec::<String>::new());
}

/// A snapshot naming a frame this journal does not hold there (here: frame 4 of a journal
/// that shares frames 1 to 3 with this one and then went another way, as a journal cut by a
/// power loss and written on does) is not trusted: it lacks this journal's frame 4 key, and
/// taking it would let a replay of that key through as a new transfer.
#[tokio::test]
async fn a_key_filter_snapshot_of_another_frame_at_the_same_sequence_is_not_trusted() {
    let (theirs, ours) =
        (tempfile::tempdir().expect("temp dir"), tempfile::tempdir().expect("temp dir"));
    for (dir, key) in [(theirs.path(), "later"), (ours.path(), "other")] {
        let store = JournalStore::open(dir).expect("open");
        three_frames(&store).await;
        run(&store, 400, vec![transfer(key, id("alice"), "bob", 1)]).await;
    }
    let filter_path = ours.path().join(KEY_FILTER_FILE_NAME);
    std::fs::copy(theirs.path().join(KEY_FILTER_FILE_NAME), &filter_path).expect("copy");
    let (taken, _) = KeyFilter::load(&filter_path).expect("loads").expect("a snapshot");
    assert_eq!(taken.sequence, 4, "the same sequence as our last frame");
    let store = JournalStore::open(ours.path()).expect("reopen");
    assert_eq!(store.started().filter_snapshot, None, "{:?}", store.started());
    let again = run(&store, 500, vec![transfer("other", id("alice"), "bob", 1)]).await;
    assert!(
        matches!(
            &again.results[0],
            CommandResult::Transfers(results) if matches!(&results[0], TransferResult::Replayed(_))
        ),
        "{:?}",
        again.results
    );
    assert_eq!(posted(&store, "bob").await, 31, "the replay moved nothing");
    drop(store);
    // Its own snapshot, saved on that close (after the replay's frame), is taken again.
    let store = JournalStore::open(ours.path()).expect("reopen");
    assert_eq!(store.started().filter_snapshot, Some(5));
}

#[tokio::test]
async fn a_damaged_last_frame_the_projection_holds_stops_the_start_and_is_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    three_frames(&JournalStore::open(dir.path()).expect("open")).await;
    let mut bytes = std::fs::read(segment(dir.path())).expect("segment");
    let starts = frame_starts(&bytes);
    let last = starts[starts.len() - 2];
    // Nothing valid follows the third frame, but the projection holds it: not a torn tail.
    bytes[last + kopek_journal::HEADER_BYTES + 3] ^= 0x01;
    std::fs::write(segment(dir.path()), &bytes).expect("flip a byte of the last frame");
    let error = JournalStore::open(dir.path()).err().expect("the start stops");
    let message = error.to_string();
    assert!(matches!(error, StoreError::Corrupt(_)), "{message}");
    assert!(message.contains(&format!("at offset {last}")), "{message}");
    assert!(message.contains("frame 3 was acknowledged"), "{message}");
    assert_eq!(std::fs::read(segment(dir.path())).expect("segment"), bytes, "nothing was cut");
}

#[tokio::test]
async fn the_sqlite_store_refuses_a_journal_first_ledger() {
    let dir = tempfile::tempdir().expect("temp dir");
    three_frames(&JournalStore::open(dir.path()).expect("open")).await;
    let error = SqliteStore::open(dir.path()).err().expect("refused");
    assert!(error.to_string().contains("--journal"), "{error}");
}

#[tokio::test]
async fn a_sqlite_ledger_opens_journal_first_with_its_books() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let store = SqliteStore::open(dir.path()).expect("open the sqlite layout");
        run(&store, 0, vec![open(&["alice", "bob"])]).await;
        run(&store, 100, vec![transfer("fund", AccountId::world(usd()), "alice", 100)]).await;
        store.close_writer();
    }
    // The old store's lock goes with its last handle; the writer thread may still be ending.
    let store = loop {
        match JournalStore::open(dir.path()) {
            Ok(store) => break store,
            Err(StoreError::Unavailable(message)) if message.contains("in use by another") => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("open journal-first: {error}"),
        }
    };
    assert_eq!(store.marks(), (0, 0));
    run(&store, 200, vec![transfer("pay", id("alice"), "bob", 30)]).await;
    assert_three_frames(&store).await;
    drop(store);
    let store = JournalStore::open(dir.path()).expect("reopen");
    assert_eq!(posted(&store, "bob").await, 30);
    let frozen = store.account(&id("alice")).await.expect("read").expect("there");
    assert_eq!(frozen.status, AccountStatus::Active);
}

#[tokio::test]
async fn the_journal_check_finds_a_projection_that_differs_from_the_journal() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let store = JournalStore::open(dir.path()).expect("open");
        three_frames(&store).await;
        assert_eq!(store.verify_journal().await.expect("check"), Vec::<String>::new());
    }
    {
        let connection = Connection::open(dir.path().join(DATABASE_FILE_NAME)).expect("open");
        connection
            .execute_batch(
                "UPDATE transfers SET credit_balance_after = credit_balance_after + 1 \
                 WHERE number = (SELECT MIN(sequence) / 2 FROM postings); \
                 UPDATE transfers SET amount = 31 WHERE idempotency_key = 'pay';",
            )
            .expect("tamper with the projection");
    }
    let store = JournalStore::open(dir.path()).expect("reopen");
    let problems = store.verify_journal().await.expect("check");
    // The first posted transfer's credit balance, and the last transfer's amount, which its
    // two entries show too.
    assert_eq!(problems.len(), 4, "{problems:?}");
    assert!(problems[0].contains("entry of transfer"), "{problems:?}");
    assert!(problems[1].contains("transfer") && problems[1].contains("differs"), "{problems:?}");
    assert!(problems[2..].iter().all(|problem| problem.contains("entry of transfer")));
}

/// Two keys with one `key_hash` (simulated: XXH3-64 collisions are not known to exist for
/// real keys) must still each find their own transfer in the tail, or a replay would answer
/// with the wrong transfer and a key would be taken twice.
#[tokio::test]
async fn a_key_hash_two_keys_share_still_finds_each_transfer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = JournalStore::open(dir.path()).expect("open");
    run(&store, 0, vec![open(&["alice"])]).await;
    let world = AccountId::world(usd());
    let outcome = run(
        &store,
        100,
        vec![transfer("first", world.clone(), "alice", 5), transfer("second", world, "alice", 7)],
    )
    .await;
    let (first, second) = (&outcome.transfers_inserted[0], &outcome.transfers_inserted[1]);
    let mut memory = Memory::default();
    memory.remember(1, &Arc::new(outcome.clone()));
    let first_hash = key_hash(&first.tenant, &first.idempotency_key);
    // The second key's transfer now sits where the first key's hash points.
    memory.keys.insert(first_hash, second.id);
    let found = memory.tail_transfer_by_key(first_hash, &first.tenant, &first.idempotency_key);
    assert_eq!(found.map(|transfer| transfer.id), Some(first.id));
    let second_hash = key_hash(&second.tenant, &second.idempotency_key);
    let found = memory.tail_transfer_by_key(second_hash, &second.tenant, &second.idempotency_key);
    assert_eq!(found.map(|transfer| transfer.id), Some(second.id));
    let absent = IdempotencyKey::parse("third").expect("key");
    assert_eq!(memory.tail_transfer_by_key(first_hash, &first.tenant, &absent), None);
    // Once the projection holds the frame, the tail lets go of both.
    memory.forget(1);
    assert_eq!(memory.transfer(first.id), None);
    let found = memory.tail_transfer_by_key(first_hash, &first.tenant, &first.idempotency_key);
    assert_eq!(found, None, "found in the projection now, through the filter");
    assert!(memory.seen.contains(first_hash) && memory.seen.contains(second_hash));
}

/// The key hash is the same whether a pair is short enough to be joined on the stack or long
/// enough to stream: the filter and the tail must agree on every key.
#[test]
fn a_key_hashes_the_same_on_either_path() {
    let tenant = b"acme".as_slice();
    for length in [0, 1, 200, 251, 252, 300, 1_000] {
        let key = vec![b'k'; length];
        let mut hasher = Xxh3::new();
        hasher.update(tenant);
        hasher.update(&[0xff]);
        hasher.update(&key);
        assert_eq!(key_hash_of(tenant, &key), hasher.digest(), "key of {length} bytes");
    }
}
