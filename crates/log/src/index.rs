//! The two sparse indexes of a segment, in Kafka's on-disk formats.
//!
//! `.index`: 8-byte entries `(relative offset: u32, position: u32)`, big-endian. An entry
//! says that the batch starting at `position` has last offset `base + relative offset`.
//! `.timeindex`: 12-byte entries `(timestamp: i64, relative offset: u32)`: the largest
//! timestamp seen in the segment up to that offset.
//!
//! Both are sparse (an entry per `index.interval.bytes` of log) and rebuildable from the
//! `.log` file, so they carry no checksum. A loaded file is sanity-checked; a file that fails
//! the check is rebuilt. An index that is merely incomplete is still correct: lookups only
//! need a lower bound to start scanning from.

pub(crate) const OFFSET_ENTRY_SIZE: usize = 8;
pub(crate) const TIME_ENTRY_SIZE: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

/// Position to start scanning from for `relative_offset`: that of the last entry whose
/// offset is at most the target, or the segment start.
pub(crate) fn position_for_offset(entries: &[OffsetEntry], relative_offset: u32) -> u32 {
    let after = entries.partition_point(|e| e.relative_offset <= relative_offset);
    if after == 0 {
        0
    } else {
        entries[after - 1].position
    }
}

/// The last batch start recorded at or before `position`, if any.
pub(crate) fn batch_start_at_or_before(entries: &[OffsetEntry], position: u64) -> Option<u32> {
    let after = entries.partition_point(|e| u64::from(e.position) <= position);
    (after > 0).then(|| entries[after - 1].position)
}

/// Relative offset to start a timestamp search from: that of the last entry whose
/// timestamp is at most `timestamp`, or `None` for the segment start.
pub(crate) fn offset_for_timestamp(entries: &[TimeEntry], timestamp: i64) -> Option<u32> {
    let after = entries.partition_point(|e| e.timestamp <= timestamp);
    (after > 0).then(|| entries[after - 1].relative_offset)
}

pub(crate) fn encode_offset_index(entries: &[OffsetEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * OFFSET_ENTRY_SIZE);
    for entry in entries {
        out.extend_from_slice(&entry.relative_offset.to_be_bytes());
        out.extend_from_slice(&entry.position.to_be_bytes());
    }
    out
}

pub(crate) fn encode_time_index(entries: &[TimeEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * TIME_ENTRY_SIZE);
    for entry in entries {
        out.extend_from_slice(&entry.timestamp.to_be_bytes());
        out.extend_from_slice(&entry.relative_offset.to_be_bytes());
    }
    out
}

fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes.try_into().expect("4 bytes"))
}

/// Decodes an offset index and checks it against the segment it indexes: entries strictly
/// increasing in both offset and position, positions inside the segment.
pub(crate) fn decode_offset_index(
    bytes: &[u8],
    segment_size: u64,
) -> Result<Vec<OffsetEntry>, String> {
    if !bytes.len().is_multiple_of(OFFSET_ENTRY_SIZE) {
        return Err(format!(
            "size {} is not a multiple of {OFFSET_ENTRY_SIZE}",
            bytes.len()
        ));
    }
    let mut entries: Vec<OffsetEntry> = Vec::with_capacity(bytes.len() / OFFSET_ENTRY_SIZE);
    for chunk in bytes.chunks_exact(OFFSET_ENTRY_SIZE) {
        let entry = OffsetEntry {
            relative_offset: be_u32(&chunk[..4]),
            position: be_u32(&chunk[4..]),
        };
        if u64::from(entry.position) >= segment_size {
            return Err(format!(
                "position {} past segment end {segment_size}",
                entry.position
            ));
        }
        if let Some(last) = entries.last()
            && (entry.relative_offset <= last.relative_offset || entry.position <= last.position)
        {
            return Err(format!("entry {entry:?} does not follow {last:?}"));
        }
        entries.push(entry);
    }
    Ok(entries)
}

/// Decodes a time index: timestamps strictly increasing, offsets non-decreasing.
pub(crate) fn decode_time_index(bytes: &[u8]) -> Result<Vec<TimeEntry>, String> {
    if !bytes.len().is_multiple_of(TIME_ENTRY_SIZE) {
        return Err(format!(
            "size {} is not a multiple of {TIME_ENTRY_SIZE}",
            bytes.len()
        ));
    }
    let mut entries: Vec<TimeEntry> = Vec::with_capacity(bytes.len() / TIME_ENTRY_SIZE);
    for chunk in bytes.chunks_exact(TIME_ENTRY_SIZE) {
        let entry = TimeEntry {
            timestamp: i64::from_be_bytes(chunk[..8].try_into().expect("8 bytes")),
            relative_offset: be_u32(&chunk[8..]),
        };
        if let Some(last) = entries.last()
            && (entry.timestamp <= last.timestamp || entry.relative_offset < last.relative_offset)
        {
            return Err(format!("entry {entry:?} does not follow {last:?}"));
        }
        entries.push(entry);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<OffsetEntry> {
        vec![
            OffsetEntry {
                relative_offset: 9,
                position: 4100,
            },
            OffsetEntry {
                relative_offset: 20,
                position: 8300,
            },
            OffsetEntry {
                relative_offset: 31,
                position: 12_400,
            },
        ]
    }

    #[test]
    fn offset_lookup_gives_a_lower_bound() {
        let e = entries();
        assert_eq!(position_for_offset(&e, 0), 0);
        assert_eq!(position_for_offset(&e, 8), 0);
        assert_eq!(position_for_offset(&e, 9), 4100);
        assert_eq!(position_for_offset(&e, 25), 8300);
        assert_eq!(position_for_offset(&e, 1000), 12_400);
        assert_eq!(position_for_offset(&[], 5), 0);
    }

    #[test]
    fn position_lookup_finds_batch_starts() {
        let e = entries();
        assert_eq!(batch_start_at_or_before(&e, 100), None);
        assert_eq!(batch_start_at_or_before(&e, 8300), Some(8300));
        assert_eq!(batch_start_at_or_before(&e, 12_399), Some(8300));
    }

    #[test]
    fn time_lookup() {
        let t = vec![
            TimeEntry {
                timestamp: 100,
                relative_offset: 3,
            },
            TimeEntry {
                timestamp: 200,
                relative_offset: 9,
            },
        ];
        assert_eq!(offset_for_timestamp(&t, 50), None);
        assert_eq!(offset_for_timestamp(&t, 100), Some(3));
        assert_eq!(offset_for_timestamp(&t, 199), Some(3));
        assert_eq!(offset_for_timestamp(&t, 5000), Some(9));
    }

    #[test]
    fn files_roundtrip_and_insane_files_are_refused() {
        let e = entries();
        let bytes = encode_offset_index(&e);
        assert_eq!(decode_offset_index(&bytes, 20_000).unwrap(), e);
        assert!(
            decode_offset_index(&bytes, 12_000).is_err(),
            "position past end"
        );
        assert!(
            decode_offset_index(&bytes[..7], 20_000).is_err(),
            "torn entry"
        );
        let mut swapped = encode_offset_index(&[e[1], e[0]]);
        assert!(
            decode_offset_index(&swapped, 20_000).is_err(),
            "not increasing"
        );
        swapped.clear();
        assert!(decode_offset_index(&swapped, 0).unwrap().is_empty());

        let t = vec![TimeEntry {
            timestamp: 5,
            relative_offset: 1,
        }];
        assert_eq!(decode_time_index(&encode_time_index(&t)).unwrap(), t);
        let dup = encode_time_index(&[t[0], t[0]]);
        assert!(decode_time_index(&dup).is_err());
    }
}
