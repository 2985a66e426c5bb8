//! kopek-journal: the append-only journal that will be the embedded store's commit point
//! (issue 20, `docs/storage.md` once the store uses it). Each batch's decided outcome is one
//! *frame*; frames are written one after another into preallocated *segment* files, and a
//! frame counts once its segment was made durable (`Journal::sync`).
//!
//! # Frame layout (little-endian)
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `KJF1` |
//! | 4..8 | payload length |
//! | 8..16 | sequence: 1 for the journal's first frame, then one more per frame |
//! | 16..32 | the previous frame's checksum (0 before the first frame) |
//! | 32..48 | checksum of the payload (XXH3-128) |
//! | 48..64 | the frame's checksum: XXH3-128 of bytes 0..48 |
//! | 64.. | payload |
//!
//! The frame's checksum covers the payload's, the sequence and the previous frame's
//! checksum, so the frames form a chain: a lost frame, a frame from elsewhere or frames in
//! another order break it. A frame never spans segments; a segment is named by its index
//! (`00000000000000000001.segment`) and what is after its last frame is zeros.
//!
//! # Recovery
//!
//! `Journal::open` reads every frame in order, or only those after a known frame
//! (`Options::resume_after`: its place and checksum, which the open checks first). The first frame that does not check out ends
//! the journal: if nothing valid follows it anywhere (a write cut short by a crash, never
//! acknowledged), that tail is cleared and appending goes on after the last valid frame; if
//! a valid frame follows it, a frame that was made durable is damaged, and the open fails
//! with the segment and offset, so nothing acknowledged is silently lost.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use xxhash_rust::xxh3::xxh3_128;

/// Bytes of a frame header.
pub const HEADER_BYTES: usize = 64;
/// The size of a segment file, by default.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
const MAGIC: [u8; 4] = *b"KJF1";
const SEGMENT_SUFFIX: &str = ".segment";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A frame that was made durable does not check out: start no further.
    #[error("journal damaged in {segment} at offset {offset}: {reason}")]
    Damaged { segment: PathBuf, offset: u64, reason: String },
    /// The disk is full: refuse writes, keep serving reads.
    #[error("the journal's disk is full")]
    Full,
    /// A sync failed: what was written since the last sync may or may not be on disk, so the
    /// process must stop without acknowledging it (fail-stop; never retry the sync).
    #[error("the journal could not be made durable: {0}")]
    SyncFailed(std::io::Error),
    #[error("the journal failed earlier and takes no more writes")]
    Poisoned,
    #[error("a frame of {0} bytes does not fit a segment")]
    TooLarge(usize),
    /// `Options::resume_after` names a frame the journal does not hold there: the position
    /// belongs to another journal, or its segment is gone. Open from the start instead.
    #[error("the journal holds no frame {sequence} where the start position says: {reason}")]
    NotAtPosition { sequence: u64, reason: String },
    #[error("journal I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// One recovered frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub sequence: u64,
    pub payload: Vec<u8>,
    /// Where it lies: a reader that keeps it can later open the journal after this frame.
    pub position: Position,
}

/// Where a frame lies and what it checks out to: enough to read the journal on from the
/// frame after it without reading anything before (`Options::resume_after`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// The frame's sequence.
    pub sequence: u64,
    /// The index of the segment that holds it.
    pub segment: u64,
    /// Where its header starts in that segment.
    pub offset: u64,
    /// The frame's checksum (header bytes 48..64), which the next frame's header repeats.
    pub checksum: u128,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// The size of each segment file.
    pub segment_bytes: u64,
    /// Frames up to this sequence are known to have been acknowledged (a reader such as the
    /// store's projection holds them): one of them that does not check out is damage, never
    /// a torn tail to cut, even with nothing valid after it.
    pub acknowledged_through: u64,
    /// Read on after this frame instead of from the first: frames up to it are not read,
    /// checked or replayed (their segments are not even opened). The frame at the position
    /// is checked first (its header, payload, sequence and checksum); if it does not check
    /// out, the open fails with `NotAtPosition` and changes nothing.
    pub resume_after: Option<Position>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            acknowledged_through: 0,
            resume_after: None,
        }
    }
}

/// The sequence of the last frame in the journal in `dir` whose header checks out (0: none),
/// without checking payloads or the chain: how far a reader beside a running writer should
/// expect the journal to go. Reads only the headers.
pub fn last_sequence(dir: &Path) -> Result<u64, JournalError> {
    let mut last = 0;
    if !dir.is_dir() {
        return Ok(0);
    }
    for index in segment_indexes(dir)? {
        let mut file = File::open(segment_path(dir, index))?;
        let size = file.metadata()?.len();
        let mut offset = 0u64;
        let mut head = [0u8; HEADER_BYTES];
        while offset + HEADER_BYTES as u64 <= size {
            file.seek(SeekFrom::Start(offset))?;
            file.read_exact(&mut head)?;
            if head[0..4] != MAGIC || xxh3_128(&head[0..48]) != u128_at(&head, 48) {
                break;
            }
            last = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes"));
            let length = u64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]]));
            offset += HEADER_BYTES as u64 + length;
        }
    }
    Ok(last)
}

/// Reads the journal in `dir` without changing it, giving every frame of the valid chain to
/// `frame` in order. It stops at the first frame that does not check out (the end of what
/// was written, or a torn tail `open` would cut, or damage); `open` is what tells a torn
/// tail from damage.
pub fn read(dir: &Path, mut frame: impl FnMut(Frame)) -> Result<ReadChain, JournalError> {
    let mut read = ReadChain::default();
    let mut last_checksum = 0u128;
    if !dir.is_dir() {
        return Ok(read);
    }
    let mut bytes = Vec::new();
    'segments: for index in segment_indexes(dir)? {
        let path = segment_path(dir, index);
        read_segment(&path, &mut bytes)?;
        let mut offset = 0usize;
        loop {
            match check_frame(&bytes, offset, read.last_sequence + 1, last_checksum) {
                Checked::Valid { length, checksum } => {
                    let start = offset + HEADER_BYTES;
                    read.last_sequence += 1;
                    frame(Frame {
                        sequence: read.last_sequence,
                        payload: bytes[start..start + length].to_vec(),
                        position: Position {
                            sequence: read.last_sequence,
                            segment: index,
                            offset: offset as u64,
                            checksum,
                        },
                    });
                    last_checksum = checksum;
                    offset = start + length;
                }
                Checked::End => continue 'segments,
                Checked::Invalid(reason) => {
                    read.stopped = Some((path, offset as u64, reason));
                    break 'segments;
                }
            }
        }
    }
    Ok(read)
}

/// Copies the valid chain of the journal in `from` into `to`, which must hold no segment:
/// each segment's bytes up to the end of its last valid frame, taken from the very bytes that
/// were checked, so a frame being appended while the copy runs is either whole in the copy or
/// not in it at all. Frames are only ever appended, so this is safe beside a running writer
/// (`kopek backup`); the copy is made durable before it returns. Returns the last frame's
/// sequence (0: none).
pub fn copy_chain(from: &Path, to: &Path) -> Result<u64, JournalError> {
    std::fs::create_dir_all(to)?;
    if !segment_indexes(to)?.is_empty() {
        return Err(JournalError::Io(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} already holds a journal", to.display()),
        )));
    }
    let (mut last_sequence, mut last_checksum) = (0u64, 0u128);
    if !from.is_dir() {
        return Ok(0);
    }
    let mut bytes = Vec::new();
    for index in segment_indexes(from)? {
        read_segment(&segment_path(from, index), &mut bytes)?;
        let mut offset = 0usize;
        let stopped = loop {
            match check_frame(&bytes, offset, last_sequence + 1, last_checksum) {
                Checked::Valid { length, checksum } => {
                    last_sequence += 1;
                    last_checksum = checksum;
                    offset += HEADER_BYTES + length;
                }
                Checked::End => break false,
                Checked::Invalid(_) => break true,
            }
        };
        if offset > 0 {
            let mut copy = File::create(segment_path(to, index))?;
            copy.write_all(&bytes[..offset])?;
            // The rest is zeros, as in a segment the writer preallocated.
            copy.set_len(bytes.len() as u64)?;
            copy.sync_all()?;
        }
        if stopped || offset == 0 {
            break;
        }
    }
    sync_directory(to)?;
    Ok(last_sequence)
}

/// What `read` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadChain {
    /// The last frame of the valid chain (0: none).
    pub last_sequence: u64,
    /// Where the chain stopped before the written end, if it did: the segment, the offset
    /// and why (a torn tail, or damage).
    pub stopped: Option<(PathBuf, u64, String)>,
}

/// What `open` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The last valid frame's sequence (0: an empty journal).
    pub last_sequence: u64,
    /// Where a torn tail was cleared, if there was one: the segment and the offset.
    pub torn_tail: Option<(PathBuf, u64)>,
}

/// Segment files to `fdatasync`: see `Journal::sync_point`.
#[derive(Debug, Default)]
pub struct SyncPoint {
    files: Vec<Arc<File>>,
}

impl SyncPoint {
    /// Syncs every segment of this point.
    pub fn sync(&self) -> Result<(), JournalError> {
        self.files.iter().try_for_each(|file| file.sync_data()).map_err(JournalError::SyncFailed)
    }

    /// Takes in `other`'s segments, so one sync covers both points.
    pub fn merge(&mut self, other: SyncPoint) {
        for file in other.files {
            if !self.files.iter().any(|known| Arc::ptr_eq(known, &file)) {
                self.files.push(file);
            }
        }
    }
}

/// The journal, open for appending.
pub struct Journal {
    dir: PathBuf,
    options: Options,
    segment: Arc<File>,
    segment_index: u64,
    /// Where the next frame goes in the current segment.
    offset: u64,
    next_sequence: u64,
    last_checksum: u128,
    /// Where the last frame lies (`None`: no frame yet).
    last_position: Option<Position>,
    /// Segments written since the last sync point, besides the current one.
    unsynced: Vec<Arc<File>>,
    poisoned: bool,
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, giving every valid frame to `replay` in order
    /// (with `Options::resume_after`, every valid frame after that one). Every frame it
    /// gives is durable when it returns: a frame a process wrote before it was killed, and
    /// never synced, is synced now, because what is read here counts as committed from then
    /// on.
    pub fn open(
        dir: &Path,
        options: Options,
        mut replay: impl FnMut(Frame),
    ) -> Result<(Journal, Recovery), JournalError> {
        assert!(options.segment_bytes > HEADER_BYTES as u64);
        std::fs::create_dir_all(dir)?;
        let mut segments = segment_indexes(dir)?;
        let mut recovery = Recovery::default();
        let mut last_checksum = 0u128;
        let mut position = None;
        let mut last_position = None;
        // One buffer for every segment: a fresh 64 MiB buffer per segment costs as much in
        // zeroed pages as reading it. A resume reads its first segment into it here.
        let mut bytes = Vec::new();
        // Where reading starts in the first segment read.
        let mut resume_offset = 0usize;
        if let Some(start) = options.resume_after {
            let not_there = |reason: &str| JournalError::NotAtPosition {
                sequence: start.sequence,
                reason: reason.to_owned(),
            };
            let Some(first) = segments.iter().position(|index| *index == start.segment) else {
                return Err(not_there("its segment is not in the journal"));
            };
            segments.drain(..first);
            read_segment(&segment_path(dir, start.segment), &mut bytes)?;
            let at = usize::try_from(start.offset).map_err(|_| not_there("offset too large"))?;
            let length = check_position(&bytes, at, &start).map_err(|reason| not_there(&reason))?;
            recovery.last_sequence = start.sequence;
            last_checksum = start.checksum;
            resume_offset = at + HEADER_BYTES + length;
            position = Some((start.segment, resume_offset as u64));
            last_position = Some(start);
        }
        'segments: for (order, index) in segments.iter().enumerate() {
            let path = segment_path(dir, *index);
            if order > 0 || options.resume_after.is_none() {
                read_segment(&path, &mut bytes)?;
            }
            let mut offset = if order == 0 { resume_offset } else { 0 };
            loop {
                match check_frame(&bytes, offset, recovery.last_sequence + 1, last_checksum) {
                    Checked::Valid { length, checksum } => {
                        let start = offset + HEADER_BYTES;
                        let frame_position = Position {
                            sequence: recovery.last_sequence + 1,
                            segment: *index,
                            offset: offset as u64,
                            checksum,
                        };
                        replay(Frame {
                            sequence: frame_position.sequence,
                            payload: bytes[start..start + length].to_vec(),
                            position: frame_position,
                        });
                        recovery.last_sequence += 1;
                        last_checksum = checksum;
                        last_position = Some(frame_position);
                        offset = start + length;
                        position = Some((*index, offset as u64));
                    }
                    Checked::End => {
                        // The rest of the segment is empty; the journal goes on in the next.
                        if position.is_none() {
                            position = Some((*index, offset as u64));
                        }
                        continue 'segments;
                    }
                    Checked::Invalid(reason) => {
                        let later = &segments[order + 1..];
                        let acknowledged = recovery.last_sequence < options.acknowledged_through;
                        if acknowledged
                            || valid_frame_after(
                                dir,
                                &bytes,
                                offset,
                                later,
                                recovery.last_sequence,
                            )?
                        {
                            let reason = if acknowledged {
                                format!(
                                    "{reason}; frame {} was acknowledged",
                                    recovery.last_sequence + 1
                                )
                            } else {
                                reason
                            };
                            return Err(JournalError::Damaged {
                                segment: path,
                                offset: offset as u64,
                                reason,
                            });
                        }
                        clear_tail(&path, offset as u64)?;
                        for index in later {
                            std::fs::remove_file(segment_path(dir, *index))?;
                        }
                        recovery.torn_tail = Some((path, offset as u64));
                        position = Some((*index, offset as u64));
                        break 'segments;
                    }
                }
            }
        }
        let (segment_index, offset) = position.unwrap_or((1, 0));
        for index in segments.iter().filter(|index| **index < segment_index) {
            File::open(segment_path(dir, *index))?.sync_data().map_err(JournalError::SyncFailed)?;
        }
        let segment = open_segment(dir, segment_index, options.segment_bytes)?;
        segment.sync_data().map_err(JournalError::SyncFailed)?;
        // A segment created or removed above, and the journal's own directory when it is new,
        // must keep their names through a crash: `fdatasync` of a segment does not do that.
        sync_directory(dir)?;
        if let Some(parent) = dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            sync_directory(parent)?;
        }
        let journal = Journal {
            dir: dir.to_owned(),
            options,
            segment: Arc::new(segment),
            segment_index,
            offset,
            next_sequence: recovery.last_sequence + 1,
            last_checksum,
            last_position,
            unsynced: Vec::new(),
            poisoned: false,
        };
        Ok((journal, recovery))
    }

    /// Writes one frame after the last; it is durable only after the next `sync`. Answers
    /// the frame's sequence.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        let frame_bytes = (HEADER_BYTES + payload.len()) as u64;
        if frame_bytes > self.options.segment_bytes || u32::try_from(payload.len()).is_err() {
            return Err(JournalError::TooLarge(payload.len()));
        }
        if self.offset + frame_bytes > self.options.segment_bytes {
            self.next_segment()?;
        }
        let sequence = self.next_sequence;
        let (header, checksum) = header(payload, sequence, self.last_checksum);
        let frame_offset = self.offset;
        let mut segment: &File = &self.segment;
        let written = segment
            .seek(SeekFrom::Start(self.offset))
            .and_then(|_| segment.write_all(&header))
            .and_then(|()| segment.write_all(payload));
        if let Err(error) = written {
            // What was written is not acknowledged, and the next frame would follow a gap:
            // the caller stops writing (a full disk) or the process (anything else).
            self.poisoned = true;
            return Err(if is_disk_full(&error) { JournalError::Full } else { error.into() });
        }
        self.offset += frame_bytes;
        self.next_sequence += 1;
        self.last_checksum = checksum;
        self.last_position = Some(Position {
            sequence,
            segment: self.segment_index,
            offset: frame_offset,
            checksum,
        });
        Ok(sequence)
    }

    /// Makes every frame appended so far durable (`fdatasync`). A failure poisons the
    /// journal for good: the caller must stop the process without acknowledging anything.
    pub fn sync(&mut self) -> Result<(), JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        let synced = self.sync_point().sync();
        if synced.is_err() {
            self.poisoned = true;
        }
        synced
    }

    /// What must be synced to make every frame appended so far durable, to sync on another
    /// thread while this one appends the next frames (a pipelined writer). A frame is
    /// durable once the first point taken after its append, and every point taken before
    /// that one, were synced (a point leaves out segments an earlier point holds). A failed
    /// sync means the same as in `sync`: stop without acknowledging anything.
    pub fn sync_point(&mut self) -> SyncPoint {
        let mut files = std::mem::take(&mut self.unsynced);
        files.push(Arc::clone(&self.segment));
        SyncPoint { files }
    }

    /// The sequence the next frame will have.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// Where the last frame (read at open or appended since) lies; `None` before the first.
    pub fn last_position(&self) -> Option<Position> {
        self.last_position
    }

    fn next_segment(&mut self) -> Result<(), JournalError> {
        let next = open_segment(&self.dir, self.segment_index + 1, self.options.segment_bytes)?;
        let previous = std::mem::replace(&mut self.segment, Arc::new(next));
        self.unsynced.push(previous);
        self.segment_index += 1;
        self.offset = 0;
        // The new segment's directory entry must survive a crash too.
        sync_directory(&self.dir)?;
        Ok(())
    }
}

/// A frame header for `payload`, and the frame's checksum.
fn header(payload: &[u8], sequence: u64, previous: u128) -> ([u8; HEADER_BYTES], u128) {
    let mut header = [0u8; HEADER_BYTES];
    header[0..4].copy_from_slice(&MAGIC);
    let length = u32::try_from(payload.len()).expect("checked by the caller");
    header[4..8].copy_from_slice(&length.to_le_bytes());
    header[8..16].copy_from_slice(&sequence.to_le_bytes());
    header[16..32].copy_from_slice(&previous.to_le_bytes());
    header[32..48].copy_from_slice(&xxh3_128(payload).to_le_bytes());
    let checksum = xxh3_128(&header[0..48]);
    header[48..64].copy_from_slice(&checksum.to_le_bytes());
    (header, checksum)
}

enum Checked {
    Valid {
        length: usize,
        checksum: u128,
    },
    /// Zeros: nothing was ever written here.
    End,
    Invalid(String),
}

fn u128_at(bytes: &[u8], at: usize) -> u128 {
    let mut word = [0u8; 16];
    word.copy_from_slice(&bytes[at..at + 16]);
    u128::from_le_bytes(word)
}

/// Checks the frame at `offset` of a segment as the one after `previous`.
fn check_frame(bytes: &[u8], offset: usize, sequence: u64, previous: u128) -> Checked {
    let Some(head) = bytes.get(offset..offset + HEADER_BYTES) else {
        let rest = &bytes[offset.min(bytes.len())..];
        return if rest.iter().all(|byte| *byte == 0) {
            Checked::End
        } else {
            Checked::Invalid("a frame header cut short".to_owned())
        };
    };
    if head.iter().all(|byte| *byte == 0) {
        // A frame is never all zeros; zeros here and after mean the end.
        return if bytes[offset..].iter().all(|byte| *byte == 0) {
            Checked::End
        } else {
            Checked::Invalid("zeros where a frame should be".to_owned())
        };
    }
    if head[0..4] != MAGIC {
        return Checked::Invalid("no frame header there".to_owned());
    }
    if xxh3_128(&head[0..48]) != u128_at(head, 48) {
        return Checked::Invalid("the header checksum does not match".to_owned());
    }
    let length = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    let Some(payload) = bytes.get(offset + HEADER_BYTES..offset + HEADER_BYTES + length) else {
        return Checked::Invalid("the payload is cut short".to_owned());
    };
    if xxh3_128(payload) != u128_at(head, 32) {
        return Checked::Invalid("the payload checksum does not match".to_owned());
    }
    let found = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes"));
    if found != sequence {
        return Checked::Invalid(format!("frame {found} is there where frame {sequence} belongs"));
    }
    if u128_at(head, 16) != previous {
        return Checked::Invalid("the frame does not follow the previous one".to_owned());
    }
    Checked::Valid { length, checksum: u128_at(head, 48) }
}

/// Checks that the frame `start` names lies at `at` of its segment's `bytes`: whole, with the
/// sequence and the frame checksum named. The chain before it is not read, so its header's own
/// previous-checksum field stands in for it. Answers its payload's length, or why not.
fn check_position(bytes: &[u8], at: usize, start: &Position) -> Result<usize, String> {
    let previous = bytes.get(at + 16..at + 32).map_or(0, |field| u128_at(field, 0));
    match check_frame(bytes, at, start.sequence, previous) {
        Checked::Valid { length, checksum } if checksum == start.checksum => Ok(length),
        Checked::Valid { .. } => Err("a frame with another checksum is there".to_owned()),
        Checked::End => Err("no frame header there: the segment is empty from it".to_owned()),
        Checked::Invalid(reason) => Err(reason),
    }
}

/// Whether a frame that checks out on its own, with a later sequence than `last`, lies at or
/// after `offset` of this segment or in a later one: then the damage is not a torn tail. (A
/// write cut short never leaves a frame whose checksums both match, so one at `offset` that
/// only breaks the chain was put there whole: a frame from elsewhere, or a lost segment.)
fn valid_frame_after(
    dir: &Path,
    bytes: &[u8],
    offset: usize,
    later: &[u64],
    last: u64,
) -> Result<bool, JournalError> {
    if self_valid_after(bytes, offset, last) {
        return Ok(true);
    }
    for index in later {
        let bytes = std::fs::read(segment_path(dir, *index))?;
        if self_valid_after(&bytes, 0, last) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether any frame from `from` on checks out by its own checksums with a sequence past
/// `last` (its place in the chain cannot be known once the chain is broken).
fn self_valid_after(bytes: &[u8], from: usize, last: u64) -> bool {
    let mut at = from;
    while at + HEADER_BYTES <= bytes.len() {
        match bytes[at..].windows(4).position(|window| window == MAGIC) {
            None => return false,
            Some(found) => at += found,
        }
        if let Some(head) = bytes.get(at..at + HEADER_BYTES) {
            let sequence = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes"));
            let length = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
            let whole = bytes.get(at + HEADER_BYTES..at + HEADER_BYTES + length);
            if sequence > last
                && xxh3_128(&head[0..48]) == u128_at(head, 48)
                && whole.is_some_and(|payload| xxh3_128(payload) == u128_at(head, 32))
            {
                return true;
            }
        }
        at += 1;
    }
    false
}

/// Reads the segment at `path` into `bytes`, reusing its room.
fn read_segment(path: &Path, bytes: &mut Vec<u8>) -> std::io::Result<()> {
    bytes.clear();
    File::open(path)?.read_to_end(bytes).map(|_| ())
}

/// Makes the names in `dir` durable.
fn sync_directory(dir: &Path) -> std::io::Result<()> {
    File::open(dir).and_then(|dir| dir.sync_all())
}

fn segment_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("{index:020}{SEGMENT_SUFFIX}"))
}

/// The segment indexes in `dir`, in order.
fn segment_indexes(dir: &Path) -> Result<Vec<u64>, JournalError> {
    let mut indexes = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(index) = name.strip_suffix(SEGMENT_SUFFIX).and_then(|n| n.parse().ok()) {
            indexes.push(index);
        }
    }
    indexes.sort_unstable();
    Ok(indexes)
}

/// Opens segment `index` for writing, preallocated to `size` bytes (zeros).
fn open_segment(dir: &Path, index: u64, size: u64) -> Result<File, JournalError> {
    let path = segment_path(dir, index);
    let file =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
    if file.metadata()?.len() < size {
        file.set_len(size).map_err(|error| {
            if is_disk_full(&error) { JournalError::Full } else { error.into() }
        })?;
    }
    Ok(file)
}

/// Zeros a segment from `offset` on, and makes that durable.
fn clear_tail(path: &Path, offset: u64) -> Result<(), JournalError> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let length = file.metadata()?.len();
    let mut rest = Vec::new();
    file.seek(SeekFrom::Start(offset))?;
    file.read_to_end(&mut rest)?;
    if rest.iter().any(|byte| *byte != 0) {
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(&vec![0u8; (length - offset) as usize])?;
        file.sync_data()?;
    }
    Ok(())
}

fn is_disk_full(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::StorageFull
}

#[cfg(test)]
mod tests;
