//! The journal against real files: frames come back in order across segments and reopens, a
//! torn tail is cut, and a damaged or substituted frame with valid frames after it stops the
//! open with its segment and offset.

use super::*;
use proptest::prelude::*;

fn options(segment_bytes: u64) -> Options {
    Options { segment_bytes, ..Options::default() }
}

fn open(dir: &Path, segment_bytes: u64) -> (Journal, Recovery, Vec<Frame>) {
    let mut frames = Vec::new();
    let (journal, recovery) =
        Journal::open(dir, options(segment_bytes), |frame| frames.push(frame)).expect("open");
    (journal, recovery, frames)
}

fn payload(n: u64) -> Vec<u8> {
    format!("batch {n} {}", "x".repeat((n % 7) as usize * 10)).into_bytes()
}

fn write(dir: &Path, segment_bytes: u64, count: u64) {
    let (mut journal, _, _) = open(dir, segment_bytes);
    for n in 1..=count {
        assert_eq!(journal.append(&payload(n)).expect("append"), n);
        if n % 3 == 0 {
            journal.sync().expect("sync");
        }
    }
    journal.sync().expect("sync");
}

/// The segments in order, and where each frame starts: (segment path, offset, sequence).
fn layout(dir: &Path) -> Vec<(PathBuf, u64, u64)> {
    let mut frames = Vec::new();
    for index in segment_indexes(dir).expect("segments") {
        let path = segment_path(dir, index);
        let bytes = std::fs::read(&path).expect("read");
        let mut offset = 0;
        while offset + HEADER_BYTES <= bytes.len() && bytes[offset..offset + 4] == MAGIC {
            let length = u32::from_le_bytes(bytes[offset + 4..offset + 8].try_into().expect("4"));
            let sequence =
                u64::from_le_bytes(bytes[offset + 8..offset + 16].try_into().expect("8"));
            frames.push((path.clone(), offset as u64, sequence));
            offset += HEADER_BYTES + length as usize;
        }
    }
    frames
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    let mut file = OpenOptions::new().write(true).open(path).expect("open");
    file.seek(SeekFrom::Start(offset)).expect("seek");
    file.write_all(bytes).expect("write");
}

#[test]
fn frames_come_back_in_order_across_segments_and_reopens() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), 1_024, 40);
    assert!(segment_indexes(dir.path()).expect("segments").len() > 3, "frames span segments");
    let (mut journal, recovery, frames) = open(dir.path(), 1_024);
    assert_eq!(recovery, Recovery { last_sequence: 40, torn_tail: None });
    assert_eq!(frames.iter().map(|f| f.sequence).collect::<Vec<_>>(), (1..=40).collect::<Vec<_>>());
    assert!(frames.iter().all(|frame| frame.payload == payload(frame.sequence)));
    assert_eq!(journal.append(b"after the reopen").expect("append"), 41);
    journal.sync().expect("sync");
    drop(journal);
    let (_, recovery, frames) = open(dir.path(), 1_024);
    assert_eq!(recovery.last_sequence, 41);
    assert_eq!(
        frames.last().map(|frame| frame.payload.clone()),
        Some(b"after the reopen".to_vec())
    );
}

#[test]
fn a_journal_resumes_after_a_known_frame_and_reads_only_what_follows() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), 1_024, 40);
    let (journal, _, frames) = open(dir.path(), 1_024);
    assert_eq!(journal.last_position(), frames.last().map(|frame| frame.position));
    drop(journal);
    let known = frames[24].position;
    assert_eq!(known.sequence, 25);
    // Segments wholly before the known frame are not even opened: one that no longer
    // checks out does not matter.
    let first = segment_path(dir.path(), 1);
    assert!(known.segment > 1, "the known frame is past the first segment");
    patch(&first, 0, b"garbage");
    let mut replayed = Vec::new();
    let resume = Options { resume_after: Some(known), ..options(1_024) };
    let (mut journal, recovery) =
        Journal::open(dir.path(), resume, |frame| replayed.push(frame)).expect("resumed open");
    assert_eq!(recovery.last_sequence, 40);
    assert_eq!(replayed, frames[25..].to_vec(), "exactly the frames after the known one");
    assert_eq!(journal.append(b"forty-one").expect("append"), 41);
    journal.sync().expect("sync");
    let last = journal.last_position().expect("a last frame");
    drop(journal);
    // Resuming at the last frame reads nothing and appends after it.
    let resume = Options { resume_after: Some(last), ..options(1_024) };
    let (journal, recovery) =
        Journal::open(dir.path(), resume, |frame| panic!("nothing to replay: {frame:?}"))
            .expect("resumed at the end");
    assert_eq!((recovery.last_sequence, journal.next_sequence()), (41, 42));
}

#[test]
fn a_position_the_journal_does_not_hold_refuses_the_resume() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), 1_024, 20);
    let (_, _, frames) = open(dir.path(), 1_024);
    let known = frames[9].position;
    let wrong = [
        (Position { checksum: known.checksum ^ 1, ..known }, "another checksum"),
        (Position { sequence: 11, ..known }, "frame 10 is there"),
        (Position { offset: known.offset + 1, ..known }, "no frame header"),
        (Position { segment: 99, ..known }, "not in the journal"),
    ];
    for (position, expected) in wrong {
        let resume = Options { resume_after: Some(position), ..options(1_024) };
        match Journal::open(dir.path(), resume, |_| {}).err() {
            Some(JournalError::NotAtPosition { reason, .. }) => {
                assert!(reason.contains(expected), "{reason} for {position:?}");
            }
            other => panic!("{position:?}: {other:?}"),
        }
    }
    let (_, recovery, _) = open(dir.path(), 1_024);
    assert_eq!(recovery.last_sequence, 20, "a refused resume changed nothing");
}

#[test]
fn a_torn_last_frame_is_cut_and_appending_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), 4_096, 10);
    let (path, offset, sequence) = layout(dir.path()).pop().expect("a last frame");
    assert_eq!(sequence, 10);
    // A crash in the middle of the last write: half its payload never made it.
    patch(&path, offset + HEADER_BYTES as u64 + 2, &[0u8; 8]);
    let (mut journal, recovery, frames) = open(dir.path(), 4_096);
    assert_eq!(recovery.last_sequence, 9);
    assert_eq!(recovery.torn_tail, Some((path.clone(), offset)));
    assert_eq!(frames.len(), 9);
    assert_eq!(journal.append(b"ten again").expect("append"), 10);
    journal.sync().expect("sync");
    drop(journal);
    let (_, recovery, frames) = open(dir.path(), 4_096);
    assert_eq!((recovery.last_sequence, recovery.torn_tail), (10, None));
    assert_eq!(frames[9].payload, b"ten again");
}

#[test]
fn a_flipped_byte_in_a_middle_frame_stops_the_open_with_its_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), 1_024, 30);
    let (path, offset, _) = layout(dir.path())[12].clone();
    let bytes = std::fs::read(&path).expect("read");
    let at = offset as usize + HEADER_BYTES + 3;
    patch(&path, at as u64, &[bytes[at] ^ 0x40]);
    let error = Journal::open(dir.path(), options(1_024), |_| {}).err().expect("refused");
    match error {
        JournalError::Damaged { segment, offset: found, reason } => {
            assert_eq!((segment, found), (path, offset));
            assert!(reason.contains("payload checksum"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(std::fs::read(segment_path(dir.path(), 1)).is_ok(), "nothing was cleared");
}

#[test]
fn a_frame_from_another_journal_breaks_the_chain() {
    let (ours, theirs) =
        (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    write(ours.path(), 64 * 1024, 5);
    write_theirs(theirs.path());
    transplant(theirs.path(), ours.path(), 2);
    // The substitute links to our second frame (the two journals agree up to there), so the
    // chain breaks at our fourth frame, which links to the third we wrote.
    let (_, fourth, _) = layout(ours.path())[3].clone();
    match Journal::open(ours.path(), options(64 * 1024), |_| {}).err().expect("refused") {
        JournalError::Damaged { offset: found, reason, .. } => {
            assert_eq!(found, fourth);
            assert!(reason.contains("does not follow"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_whole_last_frame_from_elsewhere_is_damage_not_a_torn_tail() {
    let (ours, theirs) =
        (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    write(ours.path(), 64 * 1024, 5);
    write_theirs(theirs.path());
    // Their fifth frame, whole and with both checksums right, in place of ours: it links to
    // their fourth, not ours. A crash cannot write that, so it is not cut as a torn tail.
    let (path, offset, frame) = transplant(theirs.path(), ours.path(), 4);
    let length = frame.len();
    match Journal::open(ours.path(), options(64 * 1024), |_| {}).err().expect("refused") {
        JournalError::Damaged { offset: found, .. } => assert_eq!(found, offset),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        std::fs::read(&path).expect("read")[offset as usize..offset as usize + length],
        frame[..],
        "nothing was cut"
    );
}

#[test]
fn a_failed_sync_poisons_the_journal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut journal, _, _) = open(dir.path(), 4_096);
    journal.append(b"one").expect("append");
    journal.poisoned = true;
    assert!(matches!(journal.append(b"two"), Err(JournalError::Poisoned)));
    assert!(matches!(journal.sync(), Err(JournalError::Poisoned)));
    assert!(matches!(
        open(dir.path(), 4_096).0.append(&vec![0u8; 5_000]),
        Err(JournalError::TooLarge(5_000))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Wherever a crash cuts the last write, the journal reopens to a prefix of what was
    /// written, at least everything synced before that write.
    #[test]
    fn a_crash_anywhere_in_the_last_write_leaves_the_synced_prefix(
        count in 1u64..30,
        cut in 0usize..200,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), 2_048, count);
        let (path, offset, _) = layout(dir.path()).pop().expect("a last frame");
        let length = HEADER_BYTES + payload(count).len();
        let cut = cut % length;
        // Everything of the last frame from `cut` on is lost.
        patch(&path, offset + cut as u64, &vec![0u8; length - cut]);
        let (_, recovery, frames) = open(dir.path(), 2_048);
        prop_assert_eq!(recovery.last_sequence, count - 1);
        prop_assert_eq!(frames.len() as u64, count - 1);
        for frame in &frames {
            prop_assert_eq!(&frame.payload, &payload(frame.sequence));
        }
    }
}

/// Another journal of five frames whose third has the same size as ours but other content.
fn write_theirs(dir: &Path) {
    let (mut journal, _, _) = open(dir, 64 * 1024);
    for n in 1..=5u64 {
        let bytes = if n == 3 { vec![b'y'; payload(3).len()] } else { payload(n) };
        journal.append(&bytes).expect("append");
    }
    journal.sync().expect("sync");
}

/// Copies frame `index` (from 0) of the journal in `from` over the same frame of `to`;
/// answers where it went and the frame's bytes.
fn transplant(from: &Path, to: &Path, index: usize) -> (PathBuf, u64, Vec<u8>) {
    let (path, offset, _) = layout(to)[index].clone();
    let (their_path, their_offset, _) = layout(from)[index].clone();
    let length = HEADER_BYTES + payload(index as u64 + 1).len();
    let start = their_offset as usize;
    let frame = std::fs::read(&their_path).expect("read")[start..start + length].to_vec();
    patch(&path, offset, &frame);
    (path, offset, frame)
}

#[test]
fn a_copy_of_the_chain_opens_with_every_frame_and_appends_on() {
    let (from, to) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let copy = to.path().join("journal");
    write(from.path(), 400, 20);
    assert!(segment_indexes(from.path()).expect("segments").len() > 2, "spans segments");
    assert_eq!(copy_chain(from.path(), &copy).expect("copy"), 20);
    let (mut journal, recovery, frames) = open(&copy, 400);
    assert_eq!((recovery.last_sequence, recovery.torn_tail), (20, None));
    let payloads: Vec<Vec<u8>> = frames.into_iter().map(|frame| frame.payload).collect();
    assert_eq!(payloads, (1..=20).map(payload).collect::<Vec<_>>());
    assert_eq!(journal.append(&payload(21)).expect("append"), 21, "the copy goes on");
    assert!(copy_chain(from.path(), &copy).is_err(), "never over a journal");
}

#[test]
fn a_frame_half_written_when_the_copy_reads_it_ends_the_copy() {
    let (from, to) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let copy = to.path().join("journal");
    write(from.path(), 4_096, 12);
    // Frame 7's payload is not all there yet, while frame 8 already is: what a reader may
    // see of a segment being appended to. Only frames 1 to 6 may be copied.
    let (path, offset, sequence) = layout(from.path())[6].clone();
    assert_eq!(sequence, 7);
    patch(&path, offset + HEADER_BYTES as u64, b"\0\0\0");
    assert_eq!(copy_chain(from.path(), &copy).expect("copy"), 6);
    let (_, recovery, frames) = open(&copy, 4_096);
    assert_eq!(recovery.last_sequence, 6);
    assert_eq!(recovery.torn_tail, None, "the copy holds no torn frame to cut");
    assert_eq!(frames.len(), 6);
}
