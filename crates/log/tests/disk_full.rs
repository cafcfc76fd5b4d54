//! A full disk: appends fail and leave nothing behind, the log stays readable, and appends
//! work again once space is freed.
//!
//! Runs on a real 1 MiB tmpfs, which needs root (CAP_SYS_ADMIN). Where mounting is not
//! permitted, the same scenario runs against the file-size limit (RLIMIT_FSIZE): the kernel
//! then fails writes with EFBIG instead of ENOSPC, through the same partial-write path.
#![allow(unsafe_code)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::{batch, open, read_all, tp};
use sluice_log::{LogConfig, LogError, ManualClock};

const T0: i64 = 1_700_000_000_000;

/// How the test runs out of space, and how it gets space back.
enum Squeeze {
    Tmpfs {
        dir: tempfile::TempDir,
        filler: PathBuf,
    },
    FileSizeLimit {
        dir: tempfile::TempDir,
    },
}

impl Squeeze {
    fn new() -> Squeeze {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            let filler = dir.path().join("filler");
            std::fs::write(&filler, vec![7u8; 300 * 1024]).unwrap();
            return Squeeze::Tmpfs { dir, filler };
        }
        eprintln!("mounting a tmpfs is not permitted here; limiting the file size instead");
        // SAFETY: ignoring SIGXFSZ makes over-limit writes fail with EFBIG instead of
        // killing the process; this test binary runs this one test.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        }
        set_file_size_limit(200 * 1024);
        Squeeze::FileSizeLimit { dir }
    }

    fn path(&self) -> &Path {
        match self {
            Squeeze::Tmpfs { dir, .. } | Squeeze::FileSizeLimit { dir } => dir.path(),
        }
    }

    fn is_out_of_space(&self, err: &LogError) -> bool {
        match self {
            Squeeze::Tmpfs { .. } => err.is_disk_full(),
            Squeeze::FileSizeLimit { .. } => {
                matches!(err, LogError::Io(io) if io.kind() == std::io::ErrorKind::FileTooLarge)
            }
        }
    }

    fn free_space(&self) {
        match self {
            Squeeze::Tmpfs { filler, .. } => std::fs::remove_file(filler).unwrap(),
            Squeeze::FileSizeLimit { .. } => set_file_size_limit(libc::RLIM_INFINITY),
        }
    }
}

impl Drop for Squeeze {
    fn drop(&mut self) {
        if let Squeeze::Tmpfs { dir, .. } = self {
            let _ = Command::new("umount").arg("-l").arg(dir.path()).status();
        }
    }
}

fn set_file_size_limit(bytes: libc::rlim_t) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a plain setrlimit call with a valid struct.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &limit) };
    assert_eq!(rc, 0, "setrlimit failed");
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
    let squeeze = Squeeze::new();
    let data = squeeze.path().join("data");
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
        squeeze.is_out_of_space(&failure),
        "expected an out-of-space error, got {failure:?}"
    );
    assert!(acked.len() > 10, "only {} batches fit", acked.len());

    // Nothing of the failed appends is in the log or on disk, and reads still work.
    for _ in 0..3 {
        let err = log.append(&mut batch(4, 4000, T0, 9999), 0).unwrap_err();
        assert!(squeeze.is_out_of_space(&err), "{err:?}");
    }
    let end = 4 * acked.len() as i64;
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(read_all(&log), acked);
    let part_dir = data.join("test-topic-0");
    assert_eq!(segment_files_size(&part_dir), log.offsets().size_bytes);

    // Space comes back: appends resume at the next offset.
    squeeze.free_space();
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
