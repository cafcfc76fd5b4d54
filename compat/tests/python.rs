//! Python clients (confluent-kafka, kafka-python) against a real broker: each scenario of
//! `compat/python/clients.py` runs as its own test. The packages are installed by `scripts/test`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use sluice_compat::start_broker;

fn script() -> String {
    format!("{}/python/clients.py", env!("CARGO_MANIFEST_DIR"))
}

fn python() -> String {
    std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| "python3".into())
}

async fn run_scenario(scenario: &str) {
    run_scenario_negotiating(scenario, &[]).await;
}

/// Runs `scenario`, then checks the newest version of each API in `negotiated` that the
/// client used.
async fn run_scenario_negotiating(scenario: &str, negotiated: &[(&str, i16)]) {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let bootstrap = broker.local_addr.to_string();
    let label = scenario.to_string();
    let scenario = label.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(script())
            .arg(&bootstrap)
            .arg(&scenario)
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "scenario failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    sluice_compat::assert_negotiated(&broker.broker, &label, negotiated);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_round_trips_every_codec() {
    // librdkafka 2.12's newest versions of these APIs.
    run_scenario_negotiating(
        "roundtrip-confluent",
        &[
            ("ApiVersions", 3),
            ("Metadata", 13),
            ("Produce", 10),
            ("Fetch", 16),
            ("ListOffsets", 7),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_round_trips_every_codec() {
    // kafka-python 3.0's newest versions of these APIs.
    run_scenario_negotiating(
        "roundtrip-kafka-python",
        &[
            ("ApiVersions", 4),
            ("Metadata", 13),
            ("Produce", 9),
            ("Fetch", 16),
            ("ListOffsets", 10),
            ("InitProducerId", 4),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mib_messages_and_ordering() {
    run_scenario("big-and-ordering").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_partitioning_agrees_across_clients() {
    run_scenario("keyed-partitioning").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_deletion_and_auto_creation() {
    run_scenario("timestamps-delete-autocreate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let bootstrap = broker.local_addr.to_string();
    let mut child = Command::new(python())
        .arg(script())
        .arg(&bootstrap)
        .arg("restart")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let ready = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        (line, stdout)
    });
    let (line, mut stdout) = tokio::time::timeout(Duration::from_secs(60), ready)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        line.trim(),
        "READY",
        "script did not reach the restart point"
    );
    broker.shutdown().await.unwrap();
    let broker = start_broker(dir.path(), &[("listeners", &bootstrap)]).await;
    writeln!(child.stdin.as_mut().unwrap(), "RESTARTED").unwrap();
    let output = tokio::task::spawn_blocking(move || {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
        (child.wait_with_output().unwrap(), rest)
    })
    .await
    .unwrap();
    let (result, rest) = output;
    assert!(
        result.status.success(),
        "restart scenario failed:\n{rest}\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    broker.shutdown().await.unwrap();
}
