//! The metrics pipeline end to end: `sluice ingest`, `sluice sink` and `sluice pipeline`
//! processes, a real `sluice broker` process, a real PostgreSQL server of our own (initdb on
//! an ephemeral port, so a test can stop and start it), HTTP over TCP, and librdkafka for
//! the poison messages and the dead-letter topic.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use common::http::{Http, post_once};
use common::postgres::Postgres;
use common::{free_port, sluice, spawn_broker};

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    eprintln!("waiting for {what}");
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------
// Processes

/// A `sluice` child process, SIGKILLed if the test ends without stopping it.
struct Process {
    child: Child,
    /// What it printed first on stdout (the address line).
    first_line: String,
}

impl Process {
    fn start(args: &[&str]) -> Process {
        let mut child = sluice()
            .args(args)
            .env(
                "SLUICE_LOG",
                std::env::var("SLUICE_TEST_LOG").unwrap_or_else(|_| "warn,librdkafka=error".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first_line = String::new();
        stdout.read_line(&mut first_line).unwrap();
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stdout.read_to_string(&mut rest);
        });
        Process { child, first_line }
    }

    /// The `http://HOST:PORT` address in the first line.
    fn http_addr(&self) -> String {
        let start = self.first_line.find("http://").expect("an address line") + 7;
        let rest = &self.first_line[start..];
        rest.split([',', ' ', '\n']).next().unwrap().to_string()
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM; asserts a clean exit.
    fn terminate(mut self) {
        eprintln!("SIGTERM to {}", self.child.id());
        let status = Command::new("kill")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "exited with {exit} after SIGTERM");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_broker(data: &Path, port: u16) -> Process {
    let child = spawn_broker(data, port);
    Process {
        child,
        first_line: String::new(),
    }
}

/// One metric of the load: `load_test{client=C,seq=S}` with value S.
fn load_metric(client: usize, seq: usize) -> String {
    format!(
        r#"{{"name":"load_test","value":{seq},"labels":{{"client":"c{client}","seq":"{seq}"}}}}"#
    )
}

/// Sends `per_client` metrics from each of `clients` threads (every fifth request a batch of
/// five, the rest single), counting what got a 202. Returns the (client, seq) pairs accepted.
fn post_load(
    addr: &str,
    clients: usize,
    per_client: usize,
    first_seq: usize,
    progress: &Arc<AtomicUsize>,
) -> HashSet<(usize, usize)> {
    let threads: Vec<_> = (0..clients)
        .map(|client| {
            let addr = addr.to_string();
            let progress = progress.clone();
            std::thread::spawn(move || {
                let mut accepted = Vec::new();
                let mut http = Http::connect(&addr).ok();
                let mut seq = first_seq;
                while seq < first_seq + per_client {
                    let n = if seq % 25 == 20 {
                        5.min(first_seq + per_client - seq)
                    } else {
                        1
                    };
                    let body = if n == 1 {
                        load_metric(client, seq)
                    } else {
                        let items: Vec<String> =
                            (seq..seq + n).map(|s| load_metric(client, s)).collect();
                        format!("[{}]", items.join(","))
                    };
                    let reply = http.as_mut().map(|h| h.post(&body));
                    match reply {
                        Some(Ok(reply)) if reply.status == 202 => {
                            accepted.extend((seq..seq + n).map(|s| (client, s)));
                        }
                        Some(Ok(reply)) => {
                            assert_eq!(reply.status, 503, "unexpected answer: {}", reply.body);
                        }
                        // The server went away (killed): reconnect for the next request.
                        _ => {
                            std::thread::sleep(Duration::from_millis(100));
                            http = Http::connect(&addr).ok();
                        }
                    }
                    seq += n;
                    progress.fetch_add(n, Ordering::Relaxed);
                }
                accepted
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect()
}

/// Sends the 10,000-metric load from 20 clients and runs `crash` a third of the way through;
/// returns what got a 202 and what `crash` returned.
fn load_with_a_crash<T>(addr: &str, crash: impl FnOnce() -> T) -> (HashSet<(usize, usize)>, T) {
    let progress = Arc::new(AtomicUsize::new(0));
    let load = {
        let addr = addr.to_string();
        let progress = progress.clone();
        std::thread::spawn(move || post_load(&addr, 20, 500, 0, &progress))
    };
    wait_until("a third of the load", Duration::from_secs(120), || {
        progress.load(Ordering::Relaxed) >= 3_300
    });
    let crashed = crash();
    (load.join().unwrap(), crashed)
}

/// PostgreSQL stopped while 1,000 more metrics are posted (all must get a 202: the log holds
/// them), started again 3 s later; the sinks must catch up with every metric once.
fn database_outage(pg: &Postgres, addr: &str, accepted_before: &HashSet<(usize, usize)>) {
    pg.stop();
    let during = post_load(addr, 4, 250, 1_000, &Arc::new(AtomicUsize::new(0)));
    assert_eq!(during.len(), 1_000);
    std::thread::sleep(Duration::from_secs(3));
    pg.pg_ctl_start();
    let all: HashSet<_> = accepted_before.union(&during).copied().collect();
    wait_until(
        "the rows written during the outage",
        Duration::from_secs(120),
        || stored_pairs(pg).is_superset(&all),
    );
    assert_rows_match(pg, &all, 11_000);
}

/// Every accepted load metric is in the table exactly once, and nothing else of the load
/// is (every row is a metric that was sent).
fn assert_rows_match(pg: &Postgres, accepted: &HashSet<(usize, usize)>, sent: usize) {
    let duplicates = pg.query(
        "SELECT count(*) FROM (SELECT labels FROM metrics WHERE name = 'load_test' \
         GROUP BY labels HAVING count(*) > 1) d",
    );
    assert_eq!(duplicates, "0", "a metric was stored twice");
    let stored = stored_pairs(pg);
    let missing: Vec<_> = accepted.difference(&stored).take(5).collect();
    assert!(
        missing.is_empty(),
        "accepted but not stored: {missing:?}..."
    );
    assert!(stored.len() <= sent, "more rows than metrics sent");
}

/// The (client, seq) of every load metric in the table.
fn stored_pairs(pg: &Postgres) -> HashSet<(usize, usize)> {
    if pg.count("true") == 0 {
        return HashSet::new();
    }
    let rows = pg.query(
        "SELECT string_agg((labels->>'client') || ':' || (labels->>'seq'), ' ') \
         FROM metrics WHERE name = 'load_test'",
    );
    rows.split_whitespace()
        .map(|pair| {
            let (c, s) = pair.split_once(':').unwrap();
            (
                c.trim_start_matches('c').parse().unwrap(),
                s.parse().unwrap(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Kafka side

fn kafka_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    config
}

/// Writes messages straight to the topic, bypassing the gateway's checks.
fn produce_raw(bootstrap: &str, topic: &str, messages: &[&str]) {
    let producer: BaseProducer = kafka_config(bootstrap).set("acks", "all").create().unwrap();
    for (i, message) in messages.iter().enumerate() {
        let key = format!("poison-{i}");
        producer
            .send(BaseRecord::to(topic).key(&key).payload(*message).headers(
                rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                    key: "origin",
                    value: Some("test"),
                }),
            ))
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// A poison message as large as the topic takes (key, header and value together ~1 MB): its
/// dead letter, with the `dlq.*` headers added, must be cut to fit or it could never be
/// written.
const BIG_POISON_VALUE: usize = 800_000;

fn produce_oversized_poison(bootstrap: &str, topic: &str) {
    let producer: BaseProducer = kafka_config(bootstrap)
        .set("acks", "all")
        .set("message.max.bytes", "2000000")
        .create()
        .unwrap();
    let key = vec![b'k'; 100_000];
    let header = vec![b'h'; 100_000];
    let value = vec![b'x'; BIG_POISON_VALUE];
    producer
        .send(BaseRecord::to(topic).key(&key).payload(&value).headers(
            rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                key: "big",
                value: Some(&header),
            }),
        ))
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Every message of the dead-letter topic: (payload, headers).
fn read_dead_letters(bootstrap: &str, topic: &str) -> Vec<(String, BTreeMap<String, String>)> {
    let consumer: BaseConsumer = kafka_config(bootstrap)
        .set("group.id", "dlq-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for partition in metadata.topics()[0].partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition.id(), Duration::from_secs(10))
            .unwrap();
        if high > low {
            assignment
                .add_partition_offset(topic, partition.id(), Offset::Offset(low))
                .unwrap();
            ends.insert(partition.id(), high);
        }
    }
    let total: i64 = ends.values().sum();
    let mut letters = Vec::new();
    if total == 0 {
        return letters;
    }
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (letters.len() as i64) < total && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            let mut headers = BTreeMap::new();
            if let Some(h) = message.headers() {
                for header in h.iter() {
                    headers.insert(
                        header.key.to_string(),
                        String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                    );
                }
            }
            let payload =
                String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
            letters.push((payload, headers));
        }
    }
    letters
}

const POISON: [&str; 5] = [
    "this is not JSON",
    r#"{"name":"poison_missing_value"}"#,
    r#"{"name":"poison_bad_labels","value":1,"labels":{"host":7}}"#,
    // Valid JSON that PostgreSQL would refuse forever (JSONB has no U+0000; year 0).
    r#"{"name":"poison_nul","value":1,"labels":{"host":"a\u0000b"}}"#,
    r#"{"name":"poison_year_zero","value":1,"timestamp":"0000-06-01T00:00:00Z"}"#,
];

/// The poison messages are in the dead-letter topic, with their original bytes, the original
/// header and the error; none of them reached the table.
fn assert_poison_dead_lettered(bootstrap: &str, pg: &Postgres) {
    let mut letters = Vec::new();
    wait_until(
        "the poison messages in the DLQ",
        Duration::from_secs(60),
        || {
            letters = read_dead_letters(bootstrap, "metrics.dlq");
            let sources: std::collections::BTreeSet<(&str, &str)> = letters
                .iter()
                .map(|(_, h)| (&*h["dlq.source.partition"], &*h["dlq.source.offset"]))
                .collect();
            sources.len() > POISON.len()
        },
    );
    // One letter per poison record, at least once: a sink that loses its partitions between
    // writing a letter and committing (a rebalance on a loaded machine) leaves the batch to
    // the next owner, which writes the same letters again. Copies name the same source
    // record; a record dead-lettered over and over (a retry loop) fails here.
    let mut copies: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (_, headers) in &letters {
        let source = (
            headers["dlq.source.partition"].clone(),
            headers["dlq.source.offset"].clone(),
        );
        *copies.entry(source).or_default() += 1;
    }
    assert_eq!(
        copies.len(),
        POISON.len() + 1,
        "letters per source record: {copies:?}"
    );
    assert!(
        copies.values().all(|&n| n <= 2),
        "letters per source record: {copies:?}"
    );
    let (big, headers) = letters
        .iter()
        .find(|(payload, _)| payload.starts_with("xxxx"))
        .expect("the oversized poison in the DLQ");
    assert!(big.len() < BIG_POISON_VALUE, "value cut: {}", big.len());
    assert_eq!(headers["dlq.truncated.from"], BIG_POISON_VALUE.to_string());
    assert_eq!(headers["dlq.source.topic"], "metrics");
    assert!(headers["dlq.source.offset"].parse::<i64>().is_ok());
    for poison in POISON {
        let (_, headers) = letters
            .iter()
            .find(|(payload, _)| payload == poison)
            .unwrap_or_else(|| panic!("{poison:?} not in the DLQ"));
        assert_eq!(headers["origin"], "test", "original headers kept");
        assert_eq!(headers["dlq.source.topic"], "metrics");
        assert!(headers["dlq.source.offset"].parse::<i64>().is_ok());
        assert!(headers["dlq.source.partition"].parse::<i32>().is_ok());
        assert!(headers["dlq.failed.at"].parse::<i64>().is_ok());
        assert!(!headers["dlq.error"].is_empty());
    }
    let missing_value = &letters.iter().find(|(p, _)| p == POISON[1]).unwrap().1;
    assert!(
        missing_value["dlq.error"].contains("value"),
        "{missing_value:?}"
    );
    let bad_labels = &letters.iter().find(|(p, _)| p == POISON[2]).unwrap().1;
    assert!(
        bad_labels["dlq.error"].contains("labels.host"),
        "{bad_labels:?}"
    );
    assert_eq!(pg.count("name LIKE 'poison%'"), 0);
}

/// Bodies that must be refused with 400 naming the field, storing nothing.
fn assert_invalid_requests_refused(addr: &str) {
    let mut http = Http::connect(addr).unwrap();
    for (body, field) in [
        (r#"{"name":"invalid_probe","value":"85"}"#, Some("value")),
        (r#"{"name":"invalid probe","value":1}"#, Some("name")),
        (
            r#"{"name":"invalid_probe","value":1,"timestamp":"yesterday"}"#,
            Some("timestamp"),
        ),
        (
            r#"{"name":"invalid_probe","value":1,"timestamp":"2001-01-01T00:00:00Z"}"#,
            Some("timestamp"),
        ),
        (
            r#"{"name":"invalid_probe","value":1,"labels":{"host":1}}"#,
            Some("labels.host"),
        ),
        (
            r#"[{"name":"invalid_probe","value":1},{"name":"invalid_probe"}]"#,
            Some("[1].value"),
        ),
        (r#"{"name":"invalid_probe","value":1"#, None),
    ] {
        let reply = http.post(body).unwrap();
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
        let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        if let Some(field) = field {
            assert_eq!(json["field"], field, "{body}: {}", reply.body);
        }
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let huge = format!("[{}]", vec![load_metric(0, 0); 60_000].join(","));
    let reply = http.post(&huge).unwrap();
    assert_eq!(reply.status, 413, "{}", reply.body);
    // A declared body over the 8 MiB limit is refused from its headers, before any of it is
    // read (the body is never sent here).
    let mut raw = TcpStream::connect(addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        raw,
        "POST /api/v1/metrics HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        9 << 20
    )
    .unwrap();
    let mut status_line = String::new();
    BufReader::new(raw).read_line(&mut status_line).unwrap();
    assert!(status_line.contains(" 413 "), "{status_line:?}");
}

// ---------------------------------------------------------------------------------------
// The tests

/// Broker mode: a `sluice broker` process, a gateway and a sink as their own processes.
#[test]
fn broker_mode_end_to_end() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let broker_port = free_port();
    let bootstrap = format!("127.0.0.1:{broker_port}");
    let broker = start_broker(&dir.path().join("broker"), broker_port);
    let gateway = Process::start(&[
        "ingest",
        "-b",
        &bootstrap,
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &pg.url(),
        "--delivery-timeout-ms",
        "3000",
        "--partitions",
        "4",
    ]);
    let addr = gateway.http_addr();
    let sink_args = [
        "sink",
        "-b",
        &bootstrap,
        "--database-url",
        &pg.url(),
        "--partitions",
        "4",
        "--batch-size",
        "500",
        "--stats-interval-ms",
        "1000",
        "--consumer-property",
        "session.timeout.ms=6000",
        "--instance-id",
        "sink-a",
    ];
    let sink = Process::start(&sink_args);
    let second_sink = Process::start(&[
        "sink",
        "-b",
        &bootstrap,
        "--database-url",
        &pg.url(),
        "--instance-id",
        "sink-b",
        "--batch-size",
        "500",
    ]);

    assert_invalid_requests_refused(&addr);

    // 10,000 metrics from 20 concurrent clients; the first sink is SIGKILLed a third of the
    // way through and restarted once the load is sent.
    let (accepted, ()) = load_with_a_crash(&addr, || sink.kill());
    assert_eq!(
        accepted.len(),
        10_000,
        "the broker is up: every request gets a 202"
    );
    let sink = Process::start(&sink_args);
    wait_until("10,000 rows", Duration::from_secs(120), || {
        pg.count("name = 'load_test'") >= 10_000
    });
    assert_rows_match(&pg, &accepted, 10_000);
    assert_eq!(pg.count("name = 'load_test'"), 10_000);
    assert_eq!(pg.count("name = 'invalid_probe'"), 0);

    // What was accepted can be read back through the gateway, newest first.
    let mut http = Http::connect(&addr).unwrap();
    let reply = http
        .request("GET", "/api/v1/metrics?name=load_test&limit=5", "")
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    let metrics = json["metrics"].as_array().unwrap();
    assert_eq!(metrics.len(), 5);
    let times: Vec<&str> = metrics
        .iter()
        .map(|m| m["timestamp"].as_str().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    let reply = http
        .request("GET", "/api/v1/metrics?limit=zero", "")
        .unwrap();
    assert_eq!(reply.status, 400);

    produce_raw(&bootstrap, "metrics", &POISON);
    produce_oversized_poison(&bootstrap, "metrics");
    assert_poison_dead_lettered(&bootstrap, &pg);

    // PostgreSQL down for a while: the gateway still accepts (the log holds the metrics),
    // the sinks retry, and catch up once it is back.
    database_outage(&pg, &addr, &accepted);
    assert_eq!(pg.count("name = 'load_test'"), 11_000);

    // Broker down: 503 with Retry-After, never 202.
    broker.kill();
    let started = Instant::now();
    let reply = post_once(&addr, &load_metric(99, 0));
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(
        reply.headers.get("retry-after").map(String::as_str),
        Some("1")
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    // Back up: accepted again.
    let _broker = start_broker(&dir.path().join("broker"), broker_port);
    wait_until(
        "a 202 after the broker restarts",
        Duration::from_secs(60),
        || post_once(&addr, &load_metric(99, 1)).status == 202,
    );

    // Prometheus metrics count what happened.
    let reply = Http::connect(&addr)
        .unwrap()
        .request("GET", "/metrics", "")
        .unwrap();
    let count = |prefix: &str| -> u64 {
        let line = reply.body.lines().find(|l| l.starts_with(prefix)).unwrap();
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(count("sluice_ingest_requests_total{status=\"503\"} ") >= 1);
    assert_eq!(count("sluice_ingest_requests_total{status=\"400\"} "), 7);
    assert_eq!(count("sluice_ingest_requests_total{status=\"413\"} "), 2);
    let accepted_line = reply
        .body
        .lines()
        .find(|l| l.starts_with("sluice_ingest_metrics_accepted_total "))
        .unwrap();
    let accepted_total: u64 = accepted_line.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(accepted_total >= 11_001, "{accepted_line}");

    // Graceful stops: every process exits 0 on SIGTERM, and the sinks have committed every
    // message of the topic once its row (or dead letter) is stored. (A 503'd attempt may
    // still have landed: HTTP retries are at-least-once, hence ">= 1".)
    wait_until(
        "the metric sent after the broker restart",
        Duration::from_secs(60),
        || {
            pg.count("name = 'load_test' AND labels->>'client' = 'c99' AND labels->>'seq' = '1'")
                >= 1
        },
    );
    sink.terminate();
    second_sink.terminate();
    gateway.terminate();
    let group: BaseConsumer = kafka_config(&bootstrap)
        .set("group.id", "sluice-sink")
        .create()
        .unwrap();
    let mut partitions = TopicPartitionList::new();
    for partition in 0..4 {
        partitions.add_partition("metrics", partition);
    }
    let committed = group
        .committed_offsets(partitions, Duration::from_secs(10))
        .unwrap();
    for element in committed.elements() {
        let (_, high) = group
            .fetch_watermarks("metrics", element.partition(), Duration::from_secs(10))
            .unwrap();
        assert_eq!(
            element.offset(),
            Offset::Offset(high),
            "partition {} not committed to its end",
            element.partition()
        );
    }
}

/// Embedded mode: one `sluice pipeline --embedded` process with the broker inside.
#[test]
fn embedded_mode_end_to_end() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let data = dir.path().join("pipeline");
    let args = [
        "pipeline",
        "--embedded",
        "--data-dir",
        data.to_str().unwrap(),
        "--database-url",
        &pg.url(),
        "--listen",
        &listen,
        "--partitions",
        "4",
        "--batch-size",
        "500",
        "--consumer-property",
        "session.timeout.ms=6000",
    ];
    let pipeline = Process::start(&args);
    let addr = pipeline.http_addr();
    assert_eq!(addr, listen);

    assert_invalid_requests_refused(&addr);

    // 10,000 metrics from 20 clients; the whole process is SIGKILLed part way and
    // restarted; clients whose requests failed meanwhile go on once it is back.
    let (accepted, pipeline) = load_with_a_crash(&addr, || {
        pipeline.kill();
        Process::start(&args)
    });
    assert!(accepted.len() >= 5_000, "only {} accepted", accepted.len());
    wait_until(
        "every accepted metric stored",
        Duration::from_secs(120),
        || stored_pairs(&pg).is_superset(&accepted),
    );
    assert_rows_match(&pg, &accepted, 10_000);
    assert_eq!(pg.count("name = 'invalid_probe'"), 0);

    let bootstrap = pipeline
        .first_line
        .rsplit("log at ")
        .next()
        .unwrap()
        .trim()
        .to_string();
    produce_raw(&bootstrap, "metrics", &POISON);
    produce_oversized_poison(&bootstrap, "metrics");
    assert_poison_dead_lettered(&bootstrap, &pg);

    database_outage(&pg, &addr, &accepted);

    pipeline.terminate();
    // The embedded broker shut down cleanly.
    assert!(data.join(".kafka_cleanshutdown").exists());
}

/// The gateway's bounds: a read-back query that PostgreSQL holds up answers 503 within the
/// query timeout (and POSTs go on meanwhile); requests beyond `--max-concurrent-requests`
/// get 503 at once; a body that does not arrive within `--body-timeout-ms` gets 408.
#[test]
fn gateway_bounds_slow_queries_slow_clients_and_concurrency() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let data = dir.path().join("pipeline");
    let pipeline = Process::start(&[
        "pipeline",
        "--embedded",
        "--data-dir",
        data.to_str().unwrap(),
        "--database-url",
        &pg.url(),
        "--listen",
        &listen,
        "--partitions",
        "1",
        "--max-concurrent-requests",
        "2",
        "--body-timeout-ms",
        "1500",
    ]);
    let addr = pipeline.http_addr();
    let reply = post_once(&addr, r#"{"name":"bounds_probe","value":1}"#);
    assert_eq!(reply.status, 202, "{}", reply.body);
    wait_until("the probe stored", Duration::from_secs(60), || {
        pg.count("name = 'bounds_probe'") == 1
    });

    // A transaction holds the table: the query waits on its lock.
    let mut holder = pg
        .command("psql")
        .args(["-h", "127.0.0.1", "-p"])
        .arg(
            pg.url()
                .rsplit(':')
                .next()
                .unwrap()
                .split('/')
                .next()
                .unwrap(),
        )
        .args(["-U", "postgres", "-d", "postgres", "-X", "-c"])
        .arg("BEGIN; LOCK TABLE metrics IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60); COMMIT;")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the table locked", Duration::from_secs(30), || {
        pg.query("SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND relation = 'metrics'::regclass")
            == "1"
    });
    let query = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            Http::connect(&addr)
                .unwrap()
                .request("GET", "/api/v1/metrics?name=bounds_probe", "")
                .unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let reply = post_once(&addr, r#"{"name":"bounds_probe","value":4}"#);
    assert_eq!(reply.status, 202, "POSTs go on meanwhile: {}", reply.body);
    let reply = query.join().unwrap();
    assert_eq!(reply.status, 503, "{}", reply.body);
    // Only the gateway's timeout says this (the lock holder sleeps for a minute).
    assert!(reply.body.contains("longer than"), "{}", reply.body);
    // The holder's backend is ended server-side (killing psql's wrapper may leave it).
    pg.query(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()",
    );
    let _ = holder.kill();
    let _ = holder.wait();

    // Two clients that announce a body and never send it hold both request slots.
    let slow: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut stream = TcpStream::connect(&addr).unwrap();
            write!(
                stream,
                "POST /api/v1/metrics HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            )
            .unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let reply = post_once(&addr, r#"{"name":"bounds_probe","value":2}"#);
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(reply.body.contains("too many requests"), "{}", reply.body);
    for stream in slow {
        let mut status_line = String::new();
        BufReader::new(stream).read_line(&mut status_line).unwrap();
        assert!(status_line.contains(" 408 "), "{status_line:?}");
    }
    let reply = post_once(&addr, r#"{"name":"bounds_probe","value":3}"#);
    assert_eq!(reply.status, 202, "slots free again: {}", reply.body);
    let reply = Http::connect(&addr)
        .unwrap()
        .request("GET", "/api/v1/metrics?name=bounds_probe", "")
        .unwrap();
    assert_eq!(reply.status, 200, "queries work again: {}", reply.body);
    pipeline.terminate();
}
