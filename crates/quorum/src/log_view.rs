//! The in-memory view of the voter's log that raft-rs reads through its `Storage` trait: the
//! latest snapshot (its index, term, configuration and the state machine's bytes), the
//! entries after it, the hard state. Every change here follows a write to the stable store
//! (the node persists first), so the view never holds more than the disk.
//!
//! Invariant: entries are contiguous and start right after the snapshot's index; the
//! snapshot's index is at most the commit index.

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

#[derive(Debug, Default)]
pub(crate) struct LogView {
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
    entries: Vec<Entry>,
}

impl LogView {
    pub fn new(conf_state: ConfState) -> Self {
        LogView {
            conf_state,
            ..LogView::default()
        }
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    pub fn first(&self) -> u64 {
        self.snapshot_index() + 1
    }

    pub fn last(&self) -> u64 {
        self.snapshot_index() + self.entries.len() as u64
    }

    /// Raft's overwrite rule: `entries` replace everything from their first index on.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), String> {
        let Some(first) = entries.first().map(|e| e.index) else {
            return Ok(());
        };
        if first <= self.snapshot_index() || first > self.last() + 1 {
            return Err(format!(
                "entries from {first} do not continue the log [{}, {}]",
                self.first(),
                self.last()
            ));
        }
        self.entries.truncate((first - self.first()) as usize);
        self.entries.extend_from_slice(entries);
        self.check();
        Ok(())
    }

    /// Replaces the log with `snapshot` (received from the leader, or loaded at start):
    /// everything it covers is gone; entries after it are appended separately.
    pub fn install(&mut self, snapshot: Snapshot) {
        let meta = snapshot.get_metadata();
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.conf_state = meta.get_conf_state().clone();
        self.entries.clear();
        self.snapshot = snapshot;
        self.check();
    }

    /// What compacting the log up to `index` (at most the commit index) makes: the snapshot
    /// holding `data`, the state machine at that index, and the entries after it. Changes
    /// nothing: the node stores them first, then [`LogView::install`]s them.
    pub fn prepare_compaction(
        &self,
        index: u64,
        data: Vec<u8>,
    ) -> Result<(Snapshot, Vec<Entry>), String> {
        if index <= self.snapshot_index() || index > self.hard_state.commit || index > self.last() {
            return Err(format!(
                "cannot compact to {index}: snapshot {}, commit {}, last {}",
                self.snapshot_index(),
                self.hard_state.commit,
                self.last()
            ));
        }
        let position = (index - self.first()) as usize;
        let mut snapshot = Snapshot {
            data: data.into(),
            ..Snapshot::default()
        };
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = self.entries[position].term;
        meta.set_conf_state(self.conf_state.clone());
        Ok((snapshot, self.entries[position + 1..].to_vec()))
    }

    fn check(&self) {
        for (offset, entry) in self.entries.iter().enumerate() {
            assert_eq!(
                entry.index,
                self.first() + offset as u64,
                "entries continue the snapshot without gaps"
            );
        }
        assert!(
            self.snapshot_index() <= self.hard_state.commit,
            "a snapshot covers only committed entries"
        );
    }
}

impl Storage for LogView {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let (lo, hi) = (
            (low - self.first()) as usize,
            (high - self.first()) as usize,
        );
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let mut size = 0u64;
        let mut out = Vec::with_capacity(hi - lo);
        for entry in &self.entries[lo..hi] {
            size += u64::from(protobuf::Message::compute_size(entry));
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(entry.clone());
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let snapshot = self.snapshot_index();
        if idx == snapshot {
            return Ok(self.snapshot.get_metadata().term);
        }
        if idx < snapshot {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(self.entries[(idx - self.first()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot_index() < request_index || self.snapshot_index() == 0 {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}
