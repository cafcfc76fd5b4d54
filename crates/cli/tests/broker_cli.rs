//! The `sluice broker` command as a user runs it: flags, config errors, serving, SIGTERM.

mod common;

use std::io::Read;
use std::process::Stdio;

use common::{free_port, sluice, wait_listening};

#[test]
fn bad_configuration_is_one_clear_line_and_a_failure_exit() {
    for (args, expected) in [
        (
            vec!["broker", "--set", "num.partitons=3"],
            "unknown configuration property \"num.partitons\"",
        ),
        (vec!["broker", "--set", "novalue"], "expected KEY=VALUE"),
        (
            vec!["broker", "--listen", "nowhere"],
            "invalid value \"nowhere\" for listeners",
        ),
        (
            vec!["broker", "--config", "/nonexistent/sluice.toml"],
            "cannot read config file",
        ),
    ] {
        let output = sluice().args(&args).output().unwrap();
        assert!(!output.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn serves_and_shuts_down_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!("listeners = \"127.0.0.1:{port}\"\nnum.partitions = 2\n"),
    )
    .unwrap();
    let mut child = sluice()
        .args(["broker", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("SLUICE_LOG_RETENTION_MS", "1234")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_listening(&mut child, port);
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = child.wait().unwrap();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(status.success(), "exit {status}: {log}");
    assert!(
        log.contains("broker stopped") && log.contains("clean=true"),
        "{log}"
    );
    assert!(dir.path().join("data/.kafka_cleanshutdown").exists());
    assert!(dir.path().join("data/meta.properties").exists());
}

#[test]
fn stray_partition_directories_are_listed_then_removed() {
    let dir = tempfile::tempdir().unwrap();
    let stray = dir.path().join("orders-3.0123abcd-stray");
    std::fs::create_dir(&stray).unwrap();
    std::fs::write(stray.join("00000000000000000000.log"), [7u8; 100]).unwrap();
    std::fs::create_dir(dir.path().join("orders-4")).unwrap();
    let data_dir = dir.path().to_str().unwrap();

    let listed = sluice()
        .args(["stray-dirs", "--data-dir", data_dir])
        .output()
        .unwrap();
    assert!(listed.status.success());
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(
        stdout.contains("orders-3.0123abcd-stray\t100 bytes"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("orders-4"),
        "only stray directories: {stdout}"
    );
    assert!(stray.exists(), "listing removes nothing");

    let removed = sluice()
        .args(["stray-dirs", "--data-dir", data_dir, "--remove"])
        .output()
        .unwrap();
    assert!(removed.status.success());
    assert!(!stray.exists());
    assert!(
        dir.path().join("orders-4").exists(),
        "live partitions are untouched"
    );

    let missing = sluice()
        .args(["stray-dirs", "--data-dir", "/nonexistent/sluice-data"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("is not a directory"));
}
