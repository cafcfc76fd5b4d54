//! The quorum's stable storage: Raft's hard state (term, vote, commit) and log entries,
//! kept as an append-only file of checksummed records on a [`Disk`].
//!
//! Record: `length u32 | crc32c u32 | kind u8 | payload` (big-endian; the CRC covers kind and
//! payload). Kinds: a hard state, entries (each a length-prefixed protobuf `Entry`), or a
//! snapshot (protobuf `Snapshot`: index, term, voters and the state machine's bytes).
//! Entries whose index is at or below the last one stored replace the stored suffix from
//! there on, exactly as Raft overwrites a follower's conflicting tail; replay applies the
//! records in order with the same rule. Compaction rewrites the file as a snapshot, the
//! hard state and the entries after the snapshot, and swaps it in atomically
//! ([`Disk::replace`]); a snapshot received from the leader is stored the same way.
//!
//! Durability: nothing is durable until [`Disk::sync`]; the node syncs before it sends any
//! message that depends on what it wrote (votes, acknowledgements) and before it reports an
//! entry committed. After a crash, replay stops at the first record that is torn or fails its
//! CRC, and the file is cut there: only a suffix written after the last sync can be lost.
//!
//! Limits: a record is at most [`MAX_RECORD_BYTES`] (so is a snapshot); the file grows until
//! the caller compacts it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState, Snapshot};

/// The largest record accepted on write or replay: bounds what a damaged length field can
/// make replay allocate.
pub const MAX_RECORD_BYTES: usize = 64 << 20;

const HEADER: usize = 4 + 4 + 1;
const KIND_HARD_STATE: u8 = 1;
const KIND_ENTRIES: u8 = 2;
const KIND_SNAPSHOT: u8 = 3;

/// Bytes that survive a crash once synced: a file, or a simulated disk in tests.
pub trait Disk: Send {
    /// Everything stored, synced or not (what a reader sees before any crash).
    fn read_all(&mut self) -> io::Result<Vec<u8>>;
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Cuts the file to `len` bytes (replay removes a torn tail).
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// Makes everything written so far durable.
    fn sync(&mut self) -> io::Result<()>;
    /// Replaces the whole content with `bytes`, atomically and durably: after a crash the
    /// disk holds either the old content or the new.
    fn replace(&mut self, bytes: &[u8]) -> io::Result<()>;
}

/// A [`Disk`] on a real file. The file and its directory entry are synced on creation.
#[derive(Debug)]
pub struct FileDisk {
    file: File,
    path: PathBuf,
}

impl FileDisk {
    /// Opens `dir/raft.log`, creating the directory and the file if needed.
    pub fn open(dir: &Path) -> io::Result<FileDisk> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("raft.log");
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        if !existed {
            file.sync_all()?;
            File::open(dir)?.sync_all()?;
        }
        Ok(FileDisk { file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Disk for FileDisk {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.file.seek(SeekFrom::Start(0))?;
        self.file.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.file.sync_all()
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn replace(&mut self, bytes: &[u8]) -> io::Result<()> {
        let tmp = self.path.with_extension("log.tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)?;
        Ok(())
    }
}

/// What replay found: the hard state and the entries, in index order without gaps.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Stored {
    pub hard_state: HardState,
    /// The latest snapshot (index 0: none); `entries` follow it.
    pub snapshot: Snapshot,
    pub entries: Vec<Entry>,
    /// Bytes of a torn or corrupt tail that replay cut off.
    pub cut_bytes: u64,
}

/// Why storage failed: the node stops (it cannot vouch for what it would acknowledge).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("raft storage I/O: {0}")]
    Io(#[from] io::Error),
    #[error("raft record of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("raft log has a gap: entry {found} follows {last}")]
    Gap { last: u64, found: u64 },
}

/// The stable store over a [`Disk`].
#[derive(Debug)]
pub struct StableStore<D: Disk> {
    disk: D,
    /// Bytes written since the last sync.
    unsynced: bool,
}

impl<D: Disk> StableStore<D> {
    /// Replays what `disk` holds, cutting a torn or corrupt tail.
    pub fn open(mut disk: D) -> Result<(StableStore<D>, Stored), StorageError> {
        let bytes = disk.read_all()?;
        let mut stored = Stored::default();
        let mut position = 0usize;
        while let Some((kind, payload, next)) = next_record(&bytes, position) {
            let applied = match kind {
                KIND_HARD_STATE => HardState::parse_from_bytes(payload)
                    .map(|hs| stored.hard_state = hs)
                    .is_ok(),
                KIND_ENTRIES => match decode_entries(payload) {
                    Some(entries) => {
                        let after = stored.snapshot.get_metadata().index;
                        overwrite(&mut stored.entries, entries, after)?;
                        true
                    }
                    None => false,
                },
                KIND_SNAPSHOT => match Snapshot::parse_from_bytes(payload) {
                    Ok(snapshot) => {
                        let index = snapshot.get_metadata().index;
                        stored.entries.retain(|e| e.index > index);
                        if stored.entries.first().is_some_and(|e| e.index != index + 1) {
                            stored.entries.clear();
                        }
                        stored.snapshot = snapshot;
                        true
                    }
                    Err(_) => false,
                },
                _ => false,
            };
            if !applied {
                break;
            }
            position = next;
        }
        if position < bytes.len() {
            stored.cut_bytes = (bytes.len() - position) as u64;
            tracing::warn!(
                bytes = stored.cut_bytes,
                "raft log: cutting a torn or corrupt tail"
            );
            disk.truncate(position as u64)?;
        }
        Ok((
            StableStore {
                disk,
                unsynced: false,
            },
            stored,
        ))
    }

    pub fn save_hard_state(&mut self, hard_state: &HardState) -> Result<(), StorageError> {
        let payload = hard_state
            .write_to_bytes()
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.write_record(KIND_HARD_STATE, &payload)
    }

    /// Stores `entries` (contiguous), replacing any stored entry at or after the first's index.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        if entries.is_empty() {
            return Ok(());
        }
        let payload = encode_entries(entries)?;
        self.write_record(KIND_ENTRIES, &payload)
    }

    /// Rewrites the store as `snapshot`, `hard_state` and the `entries` after the snapshot,
    /// atomically and durably (compaction, or a snapshot received from the leader).
    pub fn replace(
        &mut self,
        snapshot: &Snapshot,
        hard_state: &HardState,
        entries: &[Entry],
    ) -> Result<(), StorageError> {
        let mut bytes = Vec::new();
        let snapshot_bytes = snapshot
            .write_to_bytes()
            .map_err(|e| io::Error::other(e.to_string()))?;
        encode_record(&mut bytes, KIND_SNAPSHOT, &snapshot_bytes)?;
        let hard_state_bytes = hard_state
            .write_to_bytes()
            .map_err(|e| io::Error::other(e.to_string()))?;
        encode_record(&mut bytes, KIND_HARD_STATE, &hard_state_bytes)?;
        if !entries.is_empty() {
            encode_record(&mut bytes, KIND_ENTRIES, &encode_entries(entries)?)?;
        }
        self.disk.replace(&bytes)?;
        self.unsynced = false;
        Ok(())
    }

    pub fn sync(&mut self) -> Result<(), StorageError> {
        if self.unsynced {
            self.disk.sync()?;
            self.unsynced = false;
        }
        Ok(())
    }

    pub fn disk(&self) -> &D {
        &self.disk
    }

    pub fn into_disk(self) -> D {
        self.disk
    }

    fn write_record(&mut self, kind: u8, payload: &[u8]) -> Result<(), StorageError> {
        let mut record = Vec::with_capacity(HEADER + payload.len());
        encode_record(&mut record, kind, payload)?;
        self.disk.append(&record)?;
        self.unsynced = true;
        Ok(())
    }
}

fn encode_record(out: &mut Vec<u8>, kind: u8, payload: &[u8]) -> Result<(), StorageError> {
    if payload.len() + 1 > MAX_RECORD_BYTES {
        return Err(StorageError::TooLarge(payload.len()));
    }
    out.extend_from_slice(&((payload.len() + 1) as u32).to_be_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&[kind]), payload);
    out.extend_from_slice(&crc.to_be_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
    Ok(())
}

fn encode_entries(entries: &[Entry]) -> Result<Vec<u8>, StorageError> {
    let mut payload = Vec::new();
    for entry in entries {
        let bytes = entry
            .write_to_bytes()
            .map_err(|e| io::Error::other(e.to_string()))?;
        payload.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        payload.extend_from_slice(&bytes);
    }
    Ok(payload)
}

/// The record at `position`: its kind, payload and the position after it. `None` at the end,
/// or where the bytes are not a whole, intact record.
fn next_record(bytes: &[u8], position: usize) -> Option<(u8, &[u8], usize)> {
    let header = bytes.get(position..position + 8)?;
    let len = u32::from_be_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(header[4..8].try_into().ok()?);
    if len == 0 || len > MAX_RECORD_BYTES {
        return None;
    }
    let body = bytes.get(position + 8..position + 8 + len)?;
    if crc32c::crc32c(body) != crc {
        return None;
    }
    Some((body[0], &body[1..], position + 8 + len))
}

fn decode_entries(mut payload: &[u8]) -> Option<Vec<Entry>> {
    let mut entries = Vec::new();
    while !payload.is_empty() {
        let len = u32::from_be_bytes(payload.get(..4)?.try_into().ok()?) as usize;
        let bytes = payload.get(4..4 + len)?;
        entries.push(Entry::parse_from_bytes(bytes).ok()?);
        payload = &payload[4 + len..];
    }
    Some(entries)
}

/// Raft's rule for new entries: they replace everything from their first index on. `after`
/// is the snapshot's index: the first entry of an empty log must follow it.
fn overwrite(log: &mut Vec<Entry>, entries: Vec<Entry>, after: u64) -> Result<(), StorageError> {
    let Some(first) = entries.first().map(|e| e.index) else {
        return Ok(());
    };
    if log.is_empty() && after > 0 && first != after + 1 {
        return Err(StorageError::Gap {
            last: after,
            found: first,
        });
    }
    for pair in entries.windows(2) {
        if pair[1].index != pair[0].index + 1 {
            return Err(StorageError::Gap {
                last: pair[0].index,
                found: pair[1].index,
            });
        }
    }
    if let Some(start) = log.first().map(|e| e.index) {
        if first < start {
            log.clear();
        } else {
            let keep = (first - start) as usize;
            if keep > log.len() {
                return Err(StorageError::Gap {
                    last: log.last().map_or(0, |e| e.index),
                    found: first,
                });
            }
            log.truncate(keep);
        }
    }
    log.extend(entries);
    Ok(())
}

/// A simulated disk: bytes written and bytes synced kept apart, so that a crash can lose
/// exactly what was never synced (and tear the last unsynced write).
#[derive(Debug, Default, Clone)]
pub struct SimDisk {
    bytes: Vec<u8>,
    synced: usize,
}

impl SimDisk {
    /// A power loss: everything after the last sync is gone, except that the first
    /// `keep_unsynced` bytes of it may have reached the platter (a torn write).
    pub fn crash(&mut self, keep_unsynced: usize) {
        let keep = self.synced + keep_unsynced.min(self.bytes.len() - self.synced);
        self.bytes.truncate(keep);
        self.synced = keep;
    }

    pub fn unsynced_bytes(&self) -> usize {
        self.bytes.len() - self.synced
    }

    /// Flips one bit at `position` (a damaged sector).
    pub fn flip_bit(&mut self, position: usize) {
        if let Some(byte) = self.bytes.get_mut(position) {
            *byte ^= 1;
        }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl Disk for SimDisk {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        Ok(self.bytes.clone())
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.bytes.extend_from_slice(bytes);
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.bytes.truncate(len as usize);
        self.synced = self.synced.min(self.bytes.len());
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.synced = self.bytes.len();
        Ok(())
    }

    fn replace(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.bytes = bytes.to_vec();
        self.synced = self.bytes.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &str) -> Entry {
        Entry {
            index,
            term,
            data: data.as_bytes().to_vec().into(),
            ..Entry::default()
        }
    }

    fn summary(stored: &Stored) -> Vec<(u64, u64, String)> {
        stored
            .entries
            .iter()
            .map(|e| {
                (
                    e.index,
                    e.term,
                    String::from_utf8_lossy(&e.data).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn replay_applies_overwrites_and_the_latest_hard_state() {
        let (mut store, stored) = StableStore::open(SimDisk::default()).unwrap();
        assert_eq!(stored, Stored::default());
        store
            .append(&[entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 1, "c")])
            .unwrap();
        let hs = HardState {
            term: 2,
            vote: 3,
            commit: 1,
            ..HardState::default()
        };
        store.save_hard_state(&hs).unwrap();
        // A new leader's entries replace the follower's uncommitted tail from index 2.
        store.append(&[entry(2, 2, "B")]).unwrap();
        store.sync().unwrap();
        let (_, stored) = StableStore::open(store.into_disk()).unwrap();
        assert_eq!(summary(&stored), [(1, 1, "a".into()), (2, 2, "B".into())]);
        assert_eq!((stored.hard_state.term, stored.hard_state.vote), (2, 3));
    }

    #[test]
    fn a_crash_loses_only_what_was_not_synced_and_a_torn_tail_is_cut() {
        let (mut store, _) = StableStore::open(SimDisk::default()).unwrap();
        store.append(&[entry(1, 1, "kept")]).unwrap();
        store.sync().unwrap();
        store.append(&[entry(2, 1, "lost")]).unwrap();
        let mut disk = store.into_disk();
        assert!(disk.unsynced_bytes() > 0);
        for keep in [0, 3, 9, 12] {
            let mut crashed = disk.clone();
            crashed.crash(keep);
            let (_, stored) = StableStore::open(crashed.clone()).unwrap();
            assert_eq!(summary(&stored), [(1, 1, "kept".into())], "kept {keep}");
            assert_eq!(stored.cut_bytes, keep as u64, "kept {keep}");
        }
        // A flipped bit in the last record: that record is cut, the earlier ones stay.
        let last = disk.len() - 2;
        disk.flip_bit(last);
        let (mut store, stored) = StableStore::open(disk).unwrap();
        assert_eq!(summary(&stored), [(1, 1, "kept".into())]);
        store.append(&[entry(2, 1, "again")]).unwrap();
        store.sync().unwrap();
        let (_, stored) = StableStore::open(store.into_disk()).unwrap();
        assert_eq!(
            summary(&stored),
            [(1, 1, "kept".into()), (2, 1, "again".into())],
            "appends continue after the cut"
        );
    }

    #[test]
    fn a_file_disk_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = StableStore::open(FileDisk::open(dir.path()).unwrap()).unwrap();
        store.append(&[entry(1, 1, "x"), entry(2, 1, "y")]).unwrap();
        store.sync().unwrap();
        drop(store);
        let (_, stored) = StableStore::open(FileDisk::open(dir.path()).unwrap()).unwrap();
        assert_eq!(stored.entries.len(), 2);
    }

    #[test]
    fn a_compacted_store_replays_its_snapshot_then_the_entries_after_it() {
        let (mut store, _) = StableStore::open(SimDisk::default()).unwrap();
        store
            .append(&[entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 2, "c")])
            .unwrap();
        let mut snapshot = Snapshot {
            data: b"state@2".to_vec().into(),
            ..Snapshot::default()
        };
        snapshot.mut_metadata().index = 2;
        snapshot.mut_metadata().term = 1;
        let hs = HardState {
            term: 2,
            commit: 3,
            ..HardState::default()
        };
        store.replace(&snapshot, &hs, &[entry(3, 2, "c")]).unwrap();
        store.append(&[entry(4, 2, "d")]).unwrap();
        let mut disk = store.into_disk();
        disk.crash(0);
        let (_, stored) = StableStore::open(disk).unwrap();
        assert_eq!(
            stored.snapshot, snapshot,
            "the replacement was durable at once"
        );
        assert_eq!(
            summary(&stored),
            [(3, 2, "c".into())],
            "the unsynced append is lost"
        );
        assert_eq!(stored.hard_state.commit, 3);

        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = StableStore::open(FileDisk::open(dir.path()).unwrap()).unwrap();
        store.append(&[entry(1, 1, "a")]).unwrap();
        store.replace(&snapshot, &hs, &[entry(3, 2, "c")]).unwrap();
        store.append(&[entry(4, 2, "d")]).unwrap();
        store.sync().unwrap();
        drop(store);
        let (_, stored) = StableStore::open(FileDisk::open(dir.path()).unwrap()).unwrap();
        assert_eq!(stored.snapshot.get_metadata().index, 2);
        assert_eq!(summary(&stored), [(3, 2, "c".into()), (4, 2, "d".into())]);
        assert!(!dir.path().join("raft.log.tmp").exists());
    }

    #[test]
    fn gaps_are_refused() {
        let mut log = vec![entry(1, 1, "a")];
        assert!(matches!(
            overwrite(&mut log, vec![entry(3, 1, "c")], 0),
            Err(StorageError::Gap { .. })
        ));
        assert!(matches!(
            overwrite(&mut log, vec![entry(2, 1, "b"), entry(4, 1, "d")], 0),
            Err(StorageError::Gap { .. })
        ));
    }
}
