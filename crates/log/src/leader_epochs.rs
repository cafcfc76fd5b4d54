//! A partition's leader-epoch history: for each leader epoch that wrote to the log, the
//! offset of its first record. Kafka keeps the same history (its "leader epoch cache") and
//! answers OffsetForLeaderEpoch from it; a follower or a deposed leader truncates its log
//! with that answer so that no divergent suffix survives a leader change, and a consumer
//! uses it to detect that the log it read was truncated (KIP-101, KIP-279, KIP-320).
//!
//! Invariant: epochs and start offsets both strictly increase along the history, every
//! epoch is non-negative, and (held by the log) every start offset is within
//! `[log_start_offset, log_end_offset]` (an epoch starts at the log end when DeleteRecords
//! removed everything it wrote).
//!
//! On disk it is Kafka's `leader-epoch-checkpoint` in the partition directory: a version
//! line `0`, a count line, then `<epoch> <start offset>` per line. The file is rewritten by
//! the log's sync rounds (never under the partition lock) and read at startup, where the
//! batches that recovery re-reads correct it: a file can be behind what the log holds or
//! ahead of a log truncated by recovery, never both wrong for synced data.

use std::io;
use std::path::Path;

use crate::checkpoint;

/// The file's name in a partition directory.
pub const LEADER_EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";

/// The most entries a checkpoint may hold: one per leader change, so far more than any
/// partition will see; bounds what a damaged file can make us allocate.
const MAX_ENTRIES: usize = 1 << 20;

/// One leader epoch and the offset of the first record it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// The history itself; see the module documentation for its invariant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochs {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochs {
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Records that `epoch` wrote from `start_offset` on. Returns whether the history
    /// changed. A negative epoch (a batch written by a broker that did not stamp one) is
    /// not history. An entry that conflicts with the new one (an epoch at or above it, or
    /// starting at or after it) is removed first: it describes records that a truncation
    /// has already taken away.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 {
            return false;
        }
        if let Some(latest) = self.latest()
            && latest.epoch == epoch
            && latest.start_offset <= start_offset
        {
            return false;
        }
        self.entries
            .retain(|e| e.epoch < epoch && e.start_offset < start_offset);
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        self.assert_ordered();
        true
    }

    /// Kafka's answer to OffsetForLeaderEpoch for `requested`, given the log end offset:
    /// the largest epoch at or below `requested` and the offset where it ends (the start of
    /// the next epoch, or the log end for the latest). `None` when there is no such answer:
    /// an empty history, or an epoch newer than the latest. An epoch older than the first
    /// known ends where the first known starts.
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> Option<(i32, i64)> {
        let latest = self.latest()?;
        if requested < 0 {
            return None;
        }
        if requested == latest.epoch {
            return Some((latest.epoch, log_end_offset));
        }
        let higher = self.entries.iter().position(|e| e.epoch > requested)?;
        let next = self.entries[higher];
        let found = if higher == 0 {
            requested
        } else {
            self.entries[higher - 1].epoch
        };
        Some((found, next.start_offset))
    }

    /// The log was truncated to end at `end_offset`: epochs that started at or after it
    /// wrote nothing that remains. Returns whether the history changed.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end_offset);
        self.entries.len() != before
    }

    /// The log now starts at `start_offset`: the epoch that was current there now starts
    /// there, and the ones before it are gone. Returns whether the history changed.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let covering = self
            .entries
            .iter()
            .rposition(|e| e.start_offset <= start_offset);
        let Some(covering) = covering else {
            return false;
        };
        let changed = covering > 0 || self.entries[covering].start_offset != start_offset;
        self.entries.drain(..covering);
        self.entries[0].start_offset = start_offset;
        self.assert_ordered();
        changed
    }

    /// Checks the history against the log's offsets; `Err` names the first violation.
    pub fn check(&self, log_start_offset: i64, log_end_offset: i64) -> Result<(), String> {
        for pair in self.entries.windows(2) {
            if pair[0].epoch >= pair[1].epoch || pair[0].start_offset >= pair[1].start_offset {
                return Err(format!("leader epochs out of order: {pair:?}"));
            }
        }
        for entry in &self.entries {
            if entry.epoch < 0
                || entry.start_offset < log_start_offset
                || entry.start_offset > log_end_offset
            {
                return Err(format!(
                    "leader epoch {entry:?} outside the log [{log_start_offset}, {log_end_offset}]"
                ));
            }
        }
        Ok(())
    }

    fn assert_ordered(&self) {
        assert!(
            self.entries
                .windows(2)
                .all(|p| p[0].epoch < p[1].epoch && p[0].start_offset < p[1].start_offset),
            "leader epochs must increase in epoch and start offset: {:?}",
            self.entries
        );
    }
}

/// Reads the checkpoint in `dir`. `None` when there is none, or when it is unreadable or
/// malformed (reported): the caller rebuilds the history from the log instead.
pub(crate) fn read(dir: &Path) -> Option<LeaderEpochs> {
    checkpoint::read_parsed(&dir.join(LEADER_EPOCH_CHECKPOINT), parse)
}

fn parse(text: &str) -> Result<LeaderEpochs, String> {
    let lines = checkpoint::entry_lines(text, MAX_ENTRIES)?;
    let mut entries = Vec::with_capacity(lines.len().min(1024));
    for line in lines {
        let mut fields = line.split_whitespace();
        let (Some(epoch), Some(offset), None) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(format!("bad line {line:?}"));
        };
        entries.push(EpochEntry {
            epoch: epoch
                .parse()
                .map_err(|_| format!("bad epoch in {line:?}"))?,
            start_offset: offset
                .parse()
                .map_err(|_| format!("bad offset in {line:?}"))?,
        });
    }
    let epochs = LeaderEpochs { entries };
    epochs.check(0, i64::MAX)?;
    Ok(epochs)
}

/// Replaces the checkpoint in `dir`: temporary file, fsync, rename. The caller syncs the
/// directory to make the rename durable (the log's sync round does).
pub(crate) fn write(
    storage: &dyn crate::Storage,
    dir: &Path,
    epochs: &LeaderEpochs,
) -> io::Result<()> {
    let lines: Vec<String> = epochs
        .entries
        .iter()
        .map(|e| format!("{} {}", e.epoch, e.start_offset))
        .collect();
    checkpoint::replace_file(
        storage,
        &dir.join(LEADER_EPOCH_CHECKPOINT),
        &checkpoint::format(&lines),
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(pairs: &[(i32, i64)]) -> LeaderEpochs {
        let mut epochs = LeaderEpochs::default();
        for &(epoch, start) in pairs {
            assert!(epochs.assign(epoch, start));
        }
        epochs
    }

    fn pairs(epochs: &LeaderEpochs) -> Vec<(i32, i64)> {
        epochs
            .entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect()
    }

    #[test]
    fn assign_keeps_the_first_offset_of_each_epoch() {
        let mut epochs = history(&[(0, 0), (2, 10)]);
        assert!(!epochs.assign(2, 15), "same epoch, later offset");
        assert!(!epochs.assign(-1, 20), "unstamped batch");
        assert!(epochs.assign(5, 20));
        assert_eq!(pairs(&epochs), [(0, 0), (2, 10), (5, 20)]);
    }

    #[test]
    fn assign_removes_conflicting_entries() {
        // A follower that had epoch 2 from 10 and learns that epoch 1 starts at 8 (the
        // suffix from 8 was truncated): everything from 8 or at epoch >= 1 goes.
        let mut epochs = history(&[(0, 0), (2, 10), (3, 14)]);
        assert!(epochs.assign(1, 8));
        assert_eq!(pairs(&epochs), [(0, 0), (1, 8)]);
    }

    #[test]
    fn end_offsets_as_kafka_answers_them() {
        let epochs = history(&[(1, 0), (3, 10), (6, 25)]);
        let log_end = 40;
        assert_eq!(epochs.end_offset_for(6, log_end), Some((6, 40)), "latest");
        assert_eq!(epochs.end_offset_for(3, log_end), Some((3, 25)));
        assert_eq!(
            epochs.end_offset_for(4, log_end),
            Some((3, 25)),
            "an epoch that never wrote answers with the one before it"
        );
        assert_eq!(
            epochs.end_offset_for(0, log_end),
            Some((0, 0)),
            "older than the first known ends where the first starts"
        );
        assert_eq!(epochs.end_offset_for(7, log_end), None, "newer than ours");
        assert_eq!(epochs.end_offset_for(-1, log_end), None);
        assert_eq!(LeaderEpochs::default().end_offset_for(0, 0), None);
    }

    #[test]
    fn truncation_from_either_end() {
        let mut epochs = history(&[(1, 0), (3, 10), (6, 25)]);
        assert!(!epochs.truncate_from_end(30));
        assert!(epochs.truncate_from_end(25));
        assert_eq!(pairs(&epochs), [(1, 0), (3, 10)]);
        assert!(!epochs.truncate_from_start(0));
        assert!(epochs.truncate_from_start(12));
        assert_eq!(pairs(&epochs), [(3, 12)]);
        epochs.check(12, 12).unwrap();
        assert!(epochs.truncate_from_end(12));
        assert!(epochs.entries().is_empty());
        assert!(!epochs.truncate_from_start(50));
    }

    #[test]
    fn check_names_what_is_wrong() {
        let epochs = history(&[(1, 0), (3, 10)]);
        epochs.check(0, 10).unwrap();
        assert!(epochs.check(0, 9).unwrap_err().contains("outside"));
        assert!(epochs.check(1, 11).unwrap_err().contains("outside"));
        let disordered = LeaderEpochs {
            entries: vec![
                EpochEntry {
                    epoch: 3,
                    start_offset: 0,
                },
                EpochEntry {
                    epoch: 2,
                    start_offset: 5,
                },
            ],
        };
        assert!(disordered.check(0, 10).unwrap_err().contains("order"));
    }

    #[test]
    fn checkpoint_roundtrip_in_kafka_format() {
        let dir = tempfile::tempdir().unwrap();
        let epochs = history(&[(0, 0), (4, 1_000)]);
        write(&crate::FileSystem, dir.path(), &epochs).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LEADER_EPOCH_CHECKPOINT)).unwrap();
        assert_eq!(text, "0\n2\n0 0\n4 1000\n");
        assert_eq!(read(dir.path()), Some(epochs));
        assert_eq!(read(&dir.path().join("missing")), None);
    }

    #[test]
    fn malformed_checkpoints_are_refused() {
        for text in [
            "1\n0\n",
            "0\n2\n0 0\n",
            "0\n1\n0\n",
            "0\n1\nx 0\n",
            "0\n1\n0 0 0\n",
            "0\n2\n3 0\n2 5\n",
            "0\n1\n-1 0\n",
            "0\n99999999999\n",
        ] {
            assert!(parse(text).is_err(), "{text:?} accepted");
        }
        assert_eq!(parse("0\n0\n").unwrap(), LeaderEpochs::default());
    }
}
