//! The official Java client (kafka-clients 4.3.0, with its lz4, snappy and zstd jars) against
//! a real broker. `compat/java/fetch-jars.sh` (run by `scripts/test`) provides the jars; each test
//! compiles `compat/java/JavaClientCheck.java` with the machine's JDK and runs one scenario.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

use sluice_compat::{compile_java_check as compile, java_check as java, start_broker};

async fn run_scenario(scenario: &'static str) {
    run_scenario_on(scenario, |_| {}).await;
}

async fn run_scenario_on(scenario: &'static str, check: impl FnOnce(&sluice_broker::Broker)) {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let bootstrap = broker.local_addr.to_string();
    let classes = tempfile::tempdir().unwrap();
    let classes_path = classes.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        let classpath = compile(&classes_path);
        java(&classpath, &bootstrap, scenario)
            .output()
            .expect("java runs")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "Java scenario {scenario} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    check(&broker.broker);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_round_trips_every_codec() {
    // The Java client negotiates Fetch v17: topics by ID, and fetch sessions.
    run_scenario_on("roundtrip", |broker| {
        assert!(
            broker.fetch_sessions().opened() > 0,
            "the Java consumer opened a fetch session"
        );
        // Kafka 4.1's newest versions, all of which the 4.3 client speaks.
        sluice_compat::assert_negotiated(
            broker,
            "Java 4.3",
            &[
                ("ApiVersions", 4),
                ("Metadata", 13),
                ("Produce", 13),
                ("Fetch", 18),
                ("ListOffsets", 10),
                ("InitProducerId", 5),
            ],
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_big_messages_ordering_and_timestamps() {
    run_scenario("big-ordering-timestamps").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_admin_client_and_auto_creation() {
    run_scenario("admin-auto-create").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_consumer_group_with_listeners_commits_and_static_membership() {
    run_scenario_on("groups", |broker| {
        sluice_compat::assert_negotiated(
            broker,
            "Java 4.3",
            &[
                ("FindCoordinator", 6),
                ("JoinGroup", 9),
                ("SyncGroup", 5),
                ("Heartbeat", 4),
                ("OffsetCommit", 9),
                ("OffsetFetch", 9),
                ("DescribeGroups", 6),
                // The consumer validates its position after a leader change (KIP-320).
                ("OffsetForLeaderEpoch", 4),
            ],
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_restart_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let bootstrap = broker.local_addr.to_string();
    let classes = tempfile::tempdir().unwrap();
    let classpath = compile(classes.path());
    let mut child = java(&classpath, &bootstrap, "restart")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("java runs");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let ready = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        (line, stdout)
    });
    let (line, mut stdout) = tokio::time::timeout(Duration::from_secs(90), ready)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        line.trim(),
        "READY",
        "the Java client did not reach the restart point"
    );
    broker.shutdown().await.unwrap();
    let broker = start_broker(dir.path(), &[("listeners", &bootstrap)]).await;
    writeln!(child.stdin.as_mut().unwrap(), "RESTARTED").unwrap();
    let (result, rest) = tokio::task::spawn_blocking(move || {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
        (child.wait_with_output().unwrap(), rest)
    })
    .await
    .unwrap();
    assert!(
        result.status.success(),
        "Java restart scenario failed:\n{rest}\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    broker.shutdown().await.unwrap();
}
