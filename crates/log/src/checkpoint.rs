//! Kafka's offset checkpoint files (`recovery-point-offset-checkpoint`,
//! `log-start-offset-checkpoint`): a version line `0`, a count line, then
//! `<topic> <partition> <offset>` per line. Written atomically: temp file, fsync, rename,
//! fsync of the directory.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use crate::TopicPartition;

const VERSION: &str = "0";

/// Reads a checkpoint. A missing file is empty; a malformed one is reported and ignored,
/// which only costs a longer recovery.
pub(crate) fn read(path: &Path) -> HashMap<TopicPartition, i64> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text).unwrap_or_else(|reason| {
            tracing::warn!(file = %path.display(), %reason, "ignoring malformed checkpoint");
            HashMap::new()
        }),
        Err(err) if err.kind() == io::ErrorKind::NotFound => HashMap::new(),
        Err(err) => {
            tracing::warn!(file = %path.display(), error = %err, "cannot read checkpoint");
            HashMap::new()
        }
    }
}

fn parse(text: &str) -> Result<HashMap<TopicPartition, i64>, String> {
    let mut lines = text.lines();
    if lines.next() != Some(VERSION) {
        return Err("unknown version".to_string());
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| "bad entry count".to_string())?;
    let mut entries = HashMap::with_capacity(count.min(1 << 20));
    for line in lines.by_ref().take(count) {
        let mut fields = line.rsplitn(3, ' ');
        let (Some(offset), Some(partition), Some(topic)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(format!("bad line {line:?}"));
        };
        let offset: i64 = offset
            .parse()
            .map_err(|_| format!("bad offset in {line:?}"))?;
        let partition: i32 = partition
            .parse()
            .map_err(|_| format!("bad partition in {line:?}"))?;
        entries.insert(TopicPartition::new(topic, partition), offset);
    }
    if entries.len() != count {
        return Err(format!("expected {count} entries, found {}", entries.len()));
    }
    Ok(entries)
}

/// Replaces the checkpoint at `path` with `entries`, atomically and durably.
pub(crate) fn write(path: &Path, entries: &[(TopicPartition, i64)]) -> io::Result<()> {
    let mut text = format!("{VERSION}\n{}\n", entries.len());
    for (tp, offset) in entries {
        text.push_str(&format!("{} {} {offset}\n", tp.topic, tp.partition));
    }
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_kafka_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recovery-point-offset-checkpoint");
        let entries = vec![
            (TopicPartition::new("a-b", 0), 42),
            (TopicPartition::new("c", 7), 0),
        ];
        write(&path, &entries).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "0\n2\na-b 0 42\nc 7 0\n");
        let read_back = read(&path);
        assert_eq!(read_back.len(), 2);
        assert_eq!(read_back[&TopicPartition::new("a-b", 0)], 42);
    }

    #[test]
    fn malformed_files_are_ignored() {
        assert!(parse("1\n0\n").is_err());
        assert!(parse("0\n2\nt 0 1\n").is_err());
        assert!(parse("0\n1\nt x 1\n").is_err());
        assert!(read(Path::new("/nonexistent/checkpoint")).is_empty());
    }
}
