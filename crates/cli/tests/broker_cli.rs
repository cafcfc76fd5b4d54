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
        (
            vec!["broker", "--set", "listeners=SASL_SSL://:9094"],
            "SASL_SSL is not supported yet",
        ),
        (
            vec!["broker", "--set", "log.dirs=/tmp/a,/tmp/b"],
            "several data directories",
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

/// Kafka's own server.properties works as it is, `--print-config` says where each value came
/// from, and a misspelt SLUICE_ variable is refused instead of ignored.
#[test]
fn kafka_server_properties_print_config_and_unknown_variables() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("server.properties");
    std::fs::write(
        &config,
        format!(
            "# as shipped with Kafka, trimmed\nnode.id=1\nlisteners=PLAINTEXT://:{port},CONTROLLER://:9093\nlog.dirs={}\nnum.partitions=3\nlog.retention.hours=24\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let printed = sluice()
        .args(["broker", "--config"])
        .arg(&config)
        .args(["--set", "log.segment.bytes=1048576", "--print-config"])
        .env("SLUICE_AUTO_CREATE_TOPICS_ENABLE", "false")
        .output()
        .unwrap();
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let text = String::from_utf8_lossy(&printed.stdout);
    let row = |key: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| panic!("{key} not printed: {text}"))
    };
    assert_eq!(row("num.partitions"), "3 file");
    assert_eq!(row("log.retention.hours"), "24 file");
    assert_eq!(row("log.segment.bytes"), "1048576 flag");
    assert_eq!(row("auto.create.topics.enable"), "false environment");
    assert_eq!(row("message.max.bytes"), "1048588 default");

    let misspelt = sluice()
        .args(["broker", "--config"])
        .arg(&config)
        .env("SLUICE_LOG_RETENTON_MS", "5")
        .output()
        .unwrap();
    assert!(!misspelt.status.success());
    assert!(
        String::from_utf8_lossy(&misspelt.stderr).contains("SLUICE_LOG_RETENTON_MS"),
        "{}",
        String::from_utf8_lossy(&misspelt.stderr)
    );

    // And it serves: every interface, on the PLAINTEXT port.
    let mut child = sluice()
        .args(["broker", "--config"])
        .arg(&config)
        .spawn()
        .unwrap();
    wait_listening(&mut child, port);
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert!(child.wait().unwrap().success());
}

/// A base port whose next ports (clients) and those 100 above (quorum peers) are free.
fn free_port_block(nodes: u16) -> u16 {
    loop {
        let base = free_port();
        let free = (0..nodes).all(|i| {
            [base.checked_add(i), base.checked_add(100 + i)]
                .into_iter()
                .all(|p| p.is_some_and(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()))
        });
        if free {
            return base;
        }
    }
}

#[test]
fn dev_cluster_starts_voters_and_a_broker_only_node_that_form_one_cluster_and_stop() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_port_block(4);
    let data = dir.path().join("cluster");
    let printed = sluice()
        .args([
            "dev",
            "cluster",
            "--nodes",
            "3",
            "--print-commands",
            "--port",
        ])
        .arg(base.to_string())
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(printed.status.success());
    let commands = String::from_utf8(printed.stdout).unwrap();
    assert_eq!(commands.lines().count(), 3, "{commands}");
    assert!(
        commands
            .lines()
            .all(|l| l.starts_with("sluice broker --node-id")
                && l.contains("process.roles=broker,controller")
                && l.contains(&format!("1@127.0.0.1:{}", base + 100))),
        "{commands}"
    );

    let mut child = sluice()
        .args(["dev", "cluster", "--nodes", "3", "--brokers", "1", "--port"])
        .arg(base.to_string())
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let bootstrap = format!("127.0.0.1:{base},127.0.0.1:{}", base + 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let described = loop {
        let out = sluice()
            .args([
                "cluster",
                "describe",
                "--format",
                "json",
                "--bootstrap-server",
            ])
            .arg(&bootstrap)
            .output()
            .unwrap();
        let parsed: Option<serde_json::Value> = serde_json::from_slice(&out.stdout).ok();
        if let Some(json) = parsed
            && json["brokers"].as_array().map(Vec::len) == Some(4)
            && json["quorum_leader"].as_i64().is_some_and(|l| l > 0)
        {
            break json;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dev cluster did not form"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "sluice dev cluster exited"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(described["voters"].as_array().map(Vec::len), Some(3));
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit {status}");
    for node in 1..=4 {
        let log = std::fs::read_to_string(data.join(format!("node-{node}.log"))).unwrap();
        assert!(
            log.contains("clean=true"),
            "node {node} did not stop cleanly: {log}"
        );
        assert!(data.join(format!("node-{node}/meta.properties")).exists());
    }
}
