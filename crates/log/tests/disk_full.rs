//! A full disk: appends fail with a disk-full error and leave nothing behind, the log stays
//! readable, and appends work again once space is freed. Runs on a real 1 MiB tmpfs, which
//! needs root (CI runs as root).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::{batch, open, read_all, tp};
use sluice_log::{LogConfig, LogError, ManualClock};

const T0: i64 = 1_700_000_000_000;

struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("the mount command");
        assert!(
            status.success(),
            "mounting a tmpfs failed ({status}): this test needs root (CAP_SYS_ADMIN)"
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn segment_files_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
fn a_full_disk_fails_appends_cleanly_and_heals_when_space_returns() {
    let fs = Tmpfs::mount("1m");
    let filler: PathBuf = fs.path().join("filler");
    std::fs::write(&filler, vec![7u8; 300 * 1024]).unwrap();
    let data = fs.path().join("data");
    let config = LogConfig {
        segment_bytes: 256 * 1024,
        ..LogConfig::default()
    };
    let clock = Arc::new(ManualClock::new(T0));
    let manager = open(&data, config.clone(), clock.clone());
    let log = manager.get_or_create(&tp(0)).unwrap();

    let mut acked = Vec::new();
    let failure = loop {
        let mut b = batch(4, 4000, T0, acked.len() as u64);
        match log.append(&mut b, 0) {
            Ok(info) => {
                assert_eq!(info.first_offset, 4 * acked.len() as i64);
                acked.push(b);
            }
            Err(err) => break err,
        }
        assert!(acked.len() < 1000, "the disk never filled up");
    };
    assert!(
        failure.is_disk_full(),
        "expected a disk-full error, got {failure:?}"
    );
    assert!(matches!(failure, LogError::Io(_)));
    assert!(acked.len() > 10, "only {} batches fit", acked.len());

    // Nothing of the failed appends is in the log or on disk, and reads still work.
    for _ in 0..3 {
        let err = log.append(&mut batch(4, 4000, T0, 9999), 0).unwrap_err();
        assert!(err.is_disk_full(), "{err:?}");
    }
    let end = 4 * acked.len() as i64;
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(read_all(&log), acked);
    let part_dir = data.join("test-topic-0");
    assert_eq!(segment_files_size(&part_dir), log.offsets().size_bytes);

    // Free space: appends resume at the next offset.
    std::fs::remove_file(&filler).unwrap();
    let mut b = batch(4, 4000, T0, 5000);
    assert_eq!(log.append(&mut b, 0).unwrap().first_offset, end);
    acked.push(b);
    let info = log.append(&mut batch(1, 10, T0, 5001), 0).unwrap();
    log.wait_durable(info.last_offset + 1).wait().unwrap();
    manager.shutdown().unwrap();
    drop(manager);

    let manager = open(&data, config, clock);
    let log = manager.get(&tp(0)).unwrap();
    let served = read_all(&log);
    assert_eq!(served.len(), acked.len() + 1);
    assert_eq!(served[..acked.len()], acked[..]);
}
