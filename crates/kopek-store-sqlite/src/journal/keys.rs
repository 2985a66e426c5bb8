//! The filter of every transfer key (`key_hash` of tenant and key), and its snapshot file.
//!
//! The filter is an open-addressing set of 64-bit hashes kept in one flat array, so a
//! snapshot is that array written out as it is, and a start loads it back without hashing or
//! inserting anything: reading every key from the tables and inserting it into a hash set was
//! most of a start's time with 10,000,000 transfers.
//!
//! A snapshot names the journal frame it was taken after (`Position`): it holds the key of
//! every transfer of that frame and the frames before. It is written only once that frame is
//! durable, so the frame is never cut as a torn tail by a crash of this process (a power loss
//! or damage may still cut it). A start reads the journal on from there, or from the
//! projection's mark when that is earlier, and adds the keys of the frames after it. The
//! snapshot is used only if the journal holds its frame at the place and with the checksum it
//! names: the open resumed right after that frame (and checked it first), or the replay met
//! it. A snapshot that does not check out (its checksum, a frame the journal does not hold
//! there) is ignored and the filter is built from the tables, as before snapshots: it is
//! derived data, and a key missing from it would let a replay through as a new transfer, so
//! nothing doubtful is trusted.

use kopek_journal::Position;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use xxhash_rust::xxh3::Xxh3;

/// The snapshot file's name in the data directory.
pub const KEY_FILTER_FILE_NAME: &str = "keys.filter";
const MAGIC: [u8; 8] = *b"KKEYS001";
/// Bytes before the slots: magic, slot count, key count, the position's four fields.
const HEADER_BYTES: usize = 64;
/// A slot that holds no hash. A key whose hash is 0 is kept as 1: two keys then share a
/// slot, which only costs one of them a look in the tables (the filter may say "maybe",
/// never "no" for a key it holds).
const EMPTY: u64 = 0;
/// The fewest slots a filter has.
const SLOTS_MIN: usize = 1024;
/// Slots read or written at a time.
const CHUNK_SLOTS: usize = 8192;

/// A set of key hashes: `contains` never answers `false` for a hash it was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFilter {
    slots: Vec<u64>,
    len: usize,
}

impl Default for KeyFilter {
    fn default() -> KeyFilter {
        KeyFilter::with_capacity(0)
    }
}

impl KeyFilter {
    /// An empty filter with room for `keys` hashes before it grows.
    pub fn with_capacity(keys: usize) -> KeyFilter {
        KeyFilter { slots: vec![EMPTY; slots_for(keys)], len: 0 }
    }

    /// How many distinct hashes it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Makes room for `more` hashes, so they go in without growing one step at a time.
    pub fn reserve(&mut self, more: usize) {
        let wanted = slots_for(self.len + more);
        if wanted > self.slots.len() {
            self.rebuild(wanted);
        }
    }

    /// Adds `hash`; answers whether it was new.
    pub fn insert(&mut self, hash: u64) -> bool {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.rebuild(self.slots.len() * 2);
        }
        let hash = stored(hash);
        let mask = self.slots.len() - 1;
        let mut at = slot_of(hash, mask);
        loop {
            match self.slots[at] {
                EMPTY => {
                    self.slots[at] = hash;
                    self.len += 1;
                    return true;
                }
                held if held == hash => return false,
                _ => at = (at + 1) & mask,
            }
        }
    }

    /// Whether `hash` may have been added (always, if it was).
    pub fn contains(&self, hash: u64) -> bool {
        let hash = stored(hash);
        let mask = self.slots.len() - 1;
        let mut at = slot_of(hash, mask);
        loop {
            match self.slots[at] {
                EMPTY => return false,
                held if held == hash => return true,
                _ => at = (at + 1) & mask,
            }
        }
    }

    fn rebuild(&mut self, slots: usize) {
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; slots]);
        self.len = 0;
        for hash in old.into_iter().filter(|hash| *hash != EMPTY) {
            self.insert(hash);
        }
    }

    /// Writes the filter to `path` as the keys of every frame up to `after`: into a
    /// temporary file first, made durable, then renamed over the last snapshot, so a crash
    /// leaves the old snapshot or the new one (and a torn one fails its checksum anyway).
    pub fn save(&self, path: &Path, after: &Position) -> std::io::Result<()> {
        let temporary = path.with_extension("filter.tmp");
        let saved = self.write_to(&temporary, after).and_then(|()| {
            std::fs::rename(&temporary, path)?;
            match path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
                Some(dir) => File::open(dir)?.sync_all(),
                None => Ok(()),
            }
        });
        if saved.is_err() {
            // A full disk, say: leave no half-written file taking its room.
            let _ = std::fs::remove_file(&temporary);
        }
        saved
    }

    fn write_to(&self, path: &Path, after: &Position) -> std::io::Result<()> {
        let file = File::create(path)?;
        let mut out = BufWriter::with_capacity(1 << 20, &file);
        let mut checksum = Xxh3::new();
        let mut put = |bytes: &[u8], out: &mut BufWriter<&File>| {
            checksum.update(bytes);
            out.write_all(bytes)
        };
        put(&header(self.slots.len(), self.len, after), &mut out)?;
        let mut bytes = Vec::with_capacity(CHUNK_SLOTS * 8);
        for chunk in self.slots.chunks(CHUNK_SLOTS) {
            bytes.clear();
            for slot in chunk {
                bytes.extend_from_slice(&slot.to_le_bytes());
            }
            put(&bytes, &mut out)?;
        }
        out.write_all(&checksum.digest128().to_le_bytes())?;
        out.flush()?;
        drop(out);
        file.sync_data()
    }

    /// Reads the snapshot at `path`: the frame it was taken after and the filter. `Ok(None)`
    /// when there is none; an error says why a file there does not check out.
    pub fn load(path: &Path) -> Result<Option<(Position, KeyFilter)>, String> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(format!("open: {error}")),
        };
        let size = file.metadata().map_err(|error| format!("stat: {error}"))?.len();
        let mut input = BufReader::with_capacity(1 << 20, file);
        let mut checksum = Xxh3::new();
        let mut head = [0u8; HEADER_BYTES];
        input.read_exact(&mut head).map_err(|error| format!("read its header: {error}"))?;
        checksum.update(&head);
        if head[0..8] != MAGIC {
            return Err("not a key filter snapshot".to_owned());
        }
        let field = |at: usize| u64::from_le_bytes(head[at..at + 8].try_into().expect("8 bytes"));
        let (slots, len) = (field(8), field(16));
        let expected_size = slots.checked_mul(8).and_then(|bytes| bytes.checked_add(64 + 16));
        if !slots.is_power_of_two()
            || slots < SLOTS_MIN as u64
            || len >= slots
            || expected_size != Some(size)
        {
            return Err(format!("{slots} slots, {len} keys in a file of {size} bytes"));
        }
        let position = Position {
            sequence: field(24),
            segment: field(32),
            offset: field(40),
            checksum: u128::from_le_bytes(head[48..64].try_into().expect("16 bytes")),
        };
        let slots = usize::try_from(slots).map_err(|_| "too many slots".to_owned())?;
        let mut filter = KeyFilter { slots: Vec::with_capacity(slots), len: 0 };
        let mut bytes = vec![0u8; CHUNK_SLOTS * 8];
        while filter.slots.len() < slots {
            let count = (slots - filter.slots.len()).min(CHUNK_SLOTS);
            let chunk = &mut bytes[..count * 8];
            input.read_exact(chunk).map_err(|error| format!("read its slots: {error}"))?;
            checksum.update(chunk);
            filter.slots.extend(
                chunk.chunks_exact(8).map(|slot| u64::from_le_bytes(slot.try_into().expect("8"))),
            );
        }
        let mut stored_checksum = [0u8; 16];
        input
            .read_exact(&mut stored_checksum)
            .map_err(|error| format!("read its checksum: {error}"))?;
        if u128::from_le_bytes(stored_checksum) != checksum.digest128() {
            return Err("its checksum does not match".to_owned());
        }
        filter.len = filter.slots.iter().filter(|slot| **slot != EMPTY).count();
        if filter.len as u64 != len {
            return Err(format!("it holds {} keys where its header says {len}", filter.len));
        }
        Ok(Some((position, filter)))
    }
}

/// The snapshot header: magic, slot count, key count, then the frame it was taken after.
fn header(slots: usize, len: usize, after: &Position) -> [u8; HEADER_BYTES] {
    let mut head = [0u8; HEADER_BYTES];
    head[0..8].copy_from_slice(&MAGIC);
    head[8..16].copy_from_slice(&(slots as u64).to_le_bytes());
    head[16..24].copy_from_slice(&(len as u64).to_le_bytes());
    head[24..32].copy_from_slice(&after.sequence.to_le_bytes());
    head[32..40].copy_from_slice(&after.segment.to_le_bytes());
    head[40..48].copy_from_slice(&after.offset.to_le_bytes());
    head[48..64].copy_from_slice(&after.checksum.to_le_bytes());
    head
}

/// Slots for `keys` hashes at most three quarters full: a power of two.
fn slots_for(keys: usize) -> usize {
    (keys.saturating_mul(4) / 3 + 1).next_power_of_two().max(SLOTS_MIN)
}

fn stored(hash: u64) -> u64 {
    if hash == EMPTY { 1 } else { hash }
}

/// The slot a hash starts looking in: its low bits (the hashes are XXH3, evenly spread).
fn slot_of(hash: u64, mask: usize) -> usize {
    (hash & mask as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against a hash set: never "no" for a hash given, "no" for every other (the hashes
        /// here are distinct after the 0-is-1 rule), through growth and a save and load.
        #[test]
        fn the_filter_holds_what_it_was_given_through_a_snapshot(
            given in proptest::collection::hash_set(any::<u64>(), 0..5_000),
            others in proptest::collection::vec(any::<u64>(), 0..500),
            capacity in 0usize..3_000,
        ) {
            let mut filter = KeyFilter::with_capacity(capacity);
            let stored_given: std::collections::HashSet<u64> =
                given.iter().map(|hash| stored(*hash)).collect();
            for hash in &given {
                filter.insert(*hash);
            }
            prop_assert_eq!(filter.len(), stored_given.len());
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join(KEY_FILTER_FILE_NAME);
            let after = Position { sequence: 7, segment: 2, offset: 4096, checksum: 0xabc };
            filter.save(&path, &after).expect("save");
            let (position, loaded) = KeyFilter::load(&path).expect("loads").expect("a snapshot");
            prop_assert_eq!(position, after);
            prop_assert_eq!(loaded.len(), filter.len());
            for hash in &given {
                prop_assert!(filter.contains(*hash) && loaded.contains(*hash));
            }
            for hash in others {
                let expected = stored_given.contains(&stored(hash));
                prop_assert_eq!(filter.contains(hash), expected);
                prop_assert_eq!(loaded.contains(hash), expected);
            }
        }
    }

    #[test]
    fn a_snapshot_that_does_not_check_out_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(KEY_FILTER_FILE_NAME);
        assert_eq!(KeyFilter::load(&path), Ok(None), "no snapshot yet");
        let mut filter = KeyFilter::default();
        for hash in 1..=100u64 {
            filter.insert(hash.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        }
        filter.save(&path, &Position::default()).expect("save");
        let bytes = std::fs::read(&path).expect("read");
        let mut flipped = bytes.clone();
        flipped[HEADER_BYTES + 17] ^= 1;
        std::fs::write(&path, &flipped).expect("write");
        assert_eq!(KeyFilter::load(&path).err().as_deref(), Some("its checksum does not match"));
        std::fs::write(&path, &bytes[..bytes.len() - 9]).expect("write");
        let error = KeyFilter::load(&path).expect_err("refused");
        assert!(error.contains("in a file of"), "{error}");
        std::fs::write(&path, b"something else entirely, long enough for a header ...........")
            .expect("write");
        assert!(KeyFilter::load(&path).is_err());
    }
}
