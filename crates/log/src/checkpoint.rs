//! Kafka's offset checkpoint files (`recovery-point-offset-checkpoint`,
//! `log-start-offset-checkpoint`): a version line `0`, a count line, then
//! `<topic> <partition> <offset>` per line. Written atomically: temp file, fsync, rename,
//! fsync of the directory.

use std::collections::HashMap;
use std::io;
use std::path::Path;

use crate::TopicPartition;
use crate::storage::{Storage, write_file};

const VERSION: &str = "0";

/// Reads a checkpoint. A missing file is empty; a malformed one is reported and ignored,
/// which only costs a longer recovery.
pub(crate) fn read(path: &Path) -> HashMap<TopicPartition, i64> {
    read_parsed(path, parse).unwrap_or_default()
}

/// Reads the checkpoint-format file at `path` with `parse`. `None` when it is missing, or
/// unreadable or malformed (reported): the caller falls back to what it can rebuild.
pub(crate) fn read_parsed<T>(path: &Path, parse: fn(&str) -> Result<T, String>) -> Option<T> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text)
            .map_err(|reason| {
                tracing::warn!(file = %path.display(), %reason, "ignoring malformed checkpoint");
            })
            .ok(),
        Err(err) if err.kind() == io::ErrorKind::NotFound => None,
        Err(err) => {
            tracing::warn!(file = %path.display(), error = %err, "cannot read checkpoint");
            None
        }
    }
}

/// The entry lines of Kafka's checkpoint format: version line `0`, a count line (at most
/// `max`), then exactly that many lines.
pub(crate) fn entry_lines(text: &str, max: usize) -> Result<Vec<&str>, String> {
    let mut lines = text.lines();
    if lines.next() != Some(VERSION) {
        return Err("unknown version".to_string());
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .filter(|&n| n <= max)
        .ok_or_else(|| "bad entry count".to_string())?;
    let entries: Vec<&str> = lines.take(count).collect();
    if entries.len() != count {
        return Err(format!("expected {count} entries, found {}", entries.len()));
    }
    Ok(entries)
}

/// Kafka's checkpoint format around `lines`.
pub(crate) fn format(lines: &[String]) -> String {
    let mut text = format!("{VERSION}\n{}\n", lines.len());
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// Replaces the file at `path` with `text`: temporary file, fsync, rename, and with
/// `sync_dir` an fsync of the directory (otherwise the caller's directory sync makes the
/// rename durable).
pub(crate) fn replace_file(
    storage: &dyn Storage,
    path: &Path,
    text: &str,
    sync_dir: bool,
) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let file = write_file(storage, &tmp, text.as_bytes())?;
    storage.sync_all(&file)?;
    storage.rename(&tmp, path)?;
    if sync_dir && let Some(dir) = path.parent() {
        storage.sync_dir(dir)?;
    }
    Ok(())
}

fn parse(text: &str) -> Result<HashMap<TopicPartition, i64>, String> {
    let lines = entry_lines(text, 1 << 24)?;
    let count = lines.len();
    let mut entries = HashMap::with_capacity(count);
    for line in lines {
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
pub(crate) fn write(
    storage: &dyn Storage,
    path: &Path,
    entries: &[(TopicPartition, i64)],
) -> io::Result<()> {
    let lines: Vec<String> = entries
        .iter()
        .map(|(tp, offset)| format!("{} {} {offset}", tp.topic, tp.partition))
        .collect();
    replace_file(storage, path, &format(&lines), true)
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
        write(&crate::FileSystem, &path, &entries).unwrap();
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
