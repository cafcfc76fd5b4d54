//! The client commands (`sluice topic|produce|consume|group`) end to end: the `sluice`
//! binary against a live `sluice broker` process, including the error paths a user hits.

mod common;

use std::io::Write;
use std::process::{Child, Output, Stdio};

use common::{free_port, sluice};

struct Broker {
    child: Child,
    bootstrap: String,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_broker() -> Broker {
    start_broker_with_env(&[])
}

fn start_broker_with_env(env: &[(&str, &str)]) -> Broker {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = common::spawn_broker_with_env(&dir.path().join("data"), port, env);
    Broker {
        child,
        bootstrap: format!("127.0.0.1:{port}"),
        _dir: dir,
    }
}

/// Runs `sluice ARGS` against `broker` with `stdin`.
fn run(broker: &Broker, args: &[&str], stdin: &str) -> Output {
    let mut child = sluice()
        .args(args)
        .env("SLUICE_BOOTSTRAP", &broker.bootstrap)
        .env("SLUICE_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn ok(broker: &Broker, args: &[&str], stdin: &str) -> String {
    let out = run(broker, args, stdin);
    assert!(
        out.status.success(),
        "sluice {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `ok` with the arguments given as one whitespace-separated string.
fn sh(broker: &Broker, args: &str, stdin: &str) -> String {
    ok(broker, &args.split_whitespace().collect::<Vec<_>>(), stdin)
}

/// The "total lag" line of `sluice group describe`.
fn total_lag(broker: &Broker, group: &str) -> i64 {
    let describe = sh(broker, &format!("group describe {group}"), "");
    describe
        .lines()
        .find_map(|l| l.strip_prefix("total lag: "))
        .unwrap_or_else(|| panic!("no total lag in {describe}"))
        .parse()
        .unwrap()
}

/// Fails with exactly one line on stderr that contains `expected`, and no backtrace.
fn fails(broker: &Broker, args: &[&str], expected: &str) {
    let out = run(broker, args, "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "sluice {args:?} succeeded: {stderr}");
    assert!(stderr.contains(expected), "sluice {args:?}: {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

#[test]
fn topics_produce_consume_and_groups() {
    let broker = start_broker();
    ok(
        &broker,
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "2",
            "--config",
            "retention.ms=3600000",
        ],
        "",
    );
    let list = ok(&broker, &["topic", "list"], "");
    assert!(
        list.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["orders", "2"]),
        "{list}"
    );

    let input: String = (0..100)
        .map(|i| format!("key{}:value-{i}\n", i % 7))
        .collect();
    let out = run(
        &broker,
        &[
            "produce",
            "orders",
            "--key-separator",
            ":",
            "--header",
            "source=test",
            "--compression",
            "zstd",
        ],
        &input,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("100 message(s) written"));

    // Every message once, with its key and header, in per-key order.
    let json = ok(
        &broker,
        &[
            "consume",
            "orders",
            "--from",
            "beginning",
            "--exit-at-end",
            "--format",
            "json",
        ],
        "",
    );
    let records: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 100);
    for key in 0..7 {
        let values: Vec<usize> = records
            .iter()
            .filter(|r| r["key"] == format!("key{key}"))
            .map(|r| {
                r["value"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("value-")
                    .parse()
                    .unwrap()
            })
            .collect();
        let expected: Vec<usize> = (0..100).filter(|i| i % 7 == key).collect();
        assert_eq!(values, expected, "key{key} out of order or missing");
    }
    assert!(
        records
            .iter()
            .all(|r| r["headers"][0]["key"] == "source" && r["headers"][0]["value"] == "test")
    );

    // Values only, a count, one partition from an offset.
    let values = ok(
        &broker,
        &["consume", "orders", "--from", "beginning", "-n", "5"],
        "",
    );
    assert_eq!(values.lines().count(), 5);
    assert!(values.lines().all(|l| l.starts_with("value-")));
    let partition0 = records.iter().filter(|r| r["partition"] == 0).count();
    let tail = ok(
        &broker,
        &[
            "consume",
            "orders",
            "--partition",
            "0",
            "--from",
            "offset:3",
            "--exit-at-end",
        ],
        "",
    );
    assert_eq!(tail.lines().count(), partition0 - 3);

    // A group reads everything and commits; 20 more messages show as lag.
    sh(
        &broker,
        "consume orders --group billing --from beginning -n 100",
        "",
    );
    assert_eq!(total_lag(&broker, "billing"), 0);
    let more: String = (100..120).map(|i| format!("value-{i}\n")).collect();
    sh(&broker, "produce orders", &more);
    assert_eq!(total_lag(&broker, "billing"), 20);
    let groups = sh(&broker, "group list", "");
    assert!(
        groups.contains("billing") && groups.contains("Empty"),
        "{groups}"
    );

    // Reset: without --execute only the plan is shown (as Kafka's tool does), --dry-run
    // too; then earliest, five forward on each of the two partitions, one partition moved
    // alone, a capped offset, latest over every topic of the group.
    for plan in [
        "group reset-offsets billing --topic orders --to-earliest",
        "group reset-offsets billing --topic orders --to-earliest --dry-run",
    ] {
        let shown = sh(&broker, plan, "");
        assert!(shown.contains("plan only"), "{shown}");
        assert_eq!(total_lag(&broker, "billing"), 20, "{plan} changed nothing");
    }
    sh(
        &broker,
        "group reset-offsets billing --topic orders --to-earliest --execute",
        "",
    );
    assert_eq!(total_lag(&broker, "billing"), 120);
    sh(
        &broker,
        "group reset-offsets billing --topic orders --shift-by 5 --execute",
        "",
    );
    assert_eq!(total_lag(&broker, "billing"), 110);
    sh(
        &broker,
        "group reset-offsets billing --topic orders:0 --shift-by 5 --execute",
        "",
    );
    assert_eq!(total_lag(&broker, "billing"), 105, "only partition 0 moved");
    let capped = run(
        &broker,
        &[
            "group",
            "reset-offsets",
            "billing",
            "--topic",
            "orders",
            "--to-offset",
            "1000000",
            "--execute",
        ],
        "",
    );
    assert!(capped.status.success());
    assert!(
        String::from_utf8_lossy(&capped.stderr).contains("is outside the log"),
        "{}",
        String::from_utf8_lossy(&capped.stderr)
    );
    assert_eq!(total_lag(&broker, "billing"), 0, "capped at the log end");
    sh(
        &broker,
        "group reset-offsets billing --all-topics --to-datetime 2020-01-01T00:00:00.000 --execute",
        "",
    );
    assert_eq!(total_lag(&broker, "billing"), 120, "Kafka's datetime form");
    sh(
        &broker,
        "group reset-offsets billing --all-topics --to-latest --execute",
        "",
    );
    assert_eq!(total_lag(&broker, "billing"), 0);

    // Alter and describe.
    ok(
        &broker,
        &[
            "topic",
            "alter",
            "orders",
            "--partitions",
            "3",
            "--config",
            "segment.ms=100000",
        ],
        "",
    );
    ok(
        &broker,
        &[
            "topic",
            "alter",
            "orders",
            "--config",
            "retention.bytes=1000000",
        ],
        "",
    );
    let described = ok(&broker, &["topic", "describe", "orders"], "");
    assert!(
        described.contains("3 partition(s), 120 offset(s)"),
        "{described}"
    );
    let sizes: u64 = described
        .lines()
        .skip_while(|l| !l.starts_with("PARTITION"))
        .skip(1)
        .take(3)
        .map(|l| l.split_whitespace().last().unwrap().parse::<u64>().unwrap())
        .sum();
    // 120 short values, zstd-compressed in batches: a few hundred bytes per partition.
    assert!(
        sizes > 500,
        "partition sizes from DescribeLogDirs: {described}"
    );
    let set_on_topic: Vec<&str> = described
        .lines()
        .filter(|l| l.trim_end().ends_with("topic"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        set_on_topic,
        ["retention.bytes", "retention.ms", "segment.ms"],
        "{described}"
    );
    ok(
        &broker,
        &["topic", "alter", "orders", "--delete-config", "segment.ms"],
        "",
    );
    let described = ok(&broker, &["topic", "describe", "orders"], "");
    assert!(
        !described
            .lines()
            .any(|l| l.starts_with("segment.ms") && l.trim_end().ends_with("topic")),
        "{described}"
    );

    ok(&broker, &["group", "delete", "billing"], "");
    assert!(!ok(&broker, &["group", "list"], "").contains("billing"));
    ok(&broker, &["topic", "delete", "orders"], "");
    assert!(!ok(&broker, &["topic", "list"], "").contains("orders"));
}

#[test]
fn mistakes_get_one_clear_line_and_a_failure_exit() {
    let broker = start_broker();
    fails(
        &broker,
        &["topic", "describe", "nope"],
        "unknown topic nope",
    );
    // Where the cluster does not create topics on first use, producing to a missing one
    // fails before any input is read.
    let strict = start_broker_with_env(&[("SLUICE_AUTO_CREATE_TOPICS_ENABLE", "false")]);
    fails(&strict, &["produce", "nope"], "unknown topic nope");
    fails(&broker, &["consume", "nope", "-e"], "unknown topic nope");
    fails(&broker, &["group", "describe", "nobody"], "nobody");
    fails(
        &broker,
        &["topic", "create", "bad", "--config", "retention.ms"],
        "expected KEY=VALUE",
    );
    fails(
        &broker,
        &["topic", "create", "bad", "--config", "retention.ms=soon"],
        "cannot create topic bad",
    );
    fails(&broker, &["topic", "alter", "bad"], "nothing to alter");
    fails(
        &broker,
        &["consume", "x", "--from", "yesterday"],
        "expected beginning, end, offset:N, -N, timestamp:MS",
    );
    fails(
        &broker,
        &["group", "reset-offsets", "g", "--topic", "x"],
        "required",
    );
    fails(&broker, &["topic", "frobnicate"], "unrecognized subcommand");
    let unreachable = sluice()
        .args(["topic", "list", "--bootstrap-server", "127.0.0.1:1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(!unreachable.status.success());
    assert!(
        stderr.contains("cannot reach a broker at 127.0.0.1:1"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[test]
fn bench_produce_consume_and_end_to_end_report_json() {
    let broker = start_broker();
    let json = |out: String| -> serde_json::Value { serde_json::from_str(out.trim()).unwrap() };
    let produced = json(sh(
        &broker,
        "bench produce --topic load --partitions 3 -n 20000 -s 200B --acks all --producers 2 --json",
        "",
    ));
    assert_eq!(produced["messages"], 20_000);
    assert_eq!(produced["failed"], 0);
    assert!(produced["msgs_per_s"].as_f64().unwrap() > 0.0);
    let latency = &produced["latency_ms"];
    assert!(latency["p50"].as_f64().unwrap() <= latency["p99"].as_f64().unwrap());
    assert!(latency["p99"].as_f64().unwrap() <= latency["max"].as_f64().unwrap());

    let consumed = json(sh(
        &broker,
        "bench consume --topic load -n 20000 --consumers 2 --json",
        "",
    ));
    assert_eq!(consumed["messages"], 20_000);
    assert!(consumed["mb_per_s"].as_f64().unwrap() > 0.0);

    let assigned = json(sh(
        &broker,
        "bench consume --topic load -n 20000 --consumers 3 --assign --json",
        "",
    ));
    assert_eq!(assigned["messages"], 20_000);
    assert_eq!(assigned["message_size"], 200);

    let e2e = json(sh(
        &broker,
        "bench e2e --topic stamped --rate 2000 --duration 2 --json",
        "",
    ));
    let messages = e2e["messages"].as_u64().unwrap();
    // Paced at 2,000/s for about 2 s (the stop is checked every 200 ms): far fewer than the
    // 20,000 an unpaced producer sends in that time.
    assert!((1..=6_000).contains(&messages), "{e2e}");
    assert!(e2e["latency_ms"]["p50"].as_f64().unwrap() > 0.0, "{e2e}");

    let out = sluice()
        .args([
            "bench",
            "produce",
            "-n",
            "10",
            "--bootstrap-server",
            "127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach a broker at 127.0.0.1:1"),
        "{stderr}"
    );
}

#[test]
fn shell_completions_name_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = sluice().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        for word in [
            "broker",
            "topic",
            "produce",
            "consume",
            "group",
            "reset-offsets",
            "bootstrap-server",
        ] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let out = sluice().args(["completions", "tcsh"]).output().unwrap();
    assert!(!out.status.success());
}

/// Admin commands report each resource's outcome from the broker, with its message, and
/// exit non-zero when any failed: nothing a broker refused is reported as done.
#[test]
fn admin_commands_report_the_brokers_refusal_and_its_reason() {
    let broker = start_broker();
    ok(
        &broker,
        &["topic", "create", "orders", "--partitions", "2"],
        "",
    );
    let describe = |broker: &Broker| ok(broker, &["topic", "describe", "orders"], "");
    fails(
        &broker,
        &["topic", "alter", "orders", "--config", "retention.ms=abc"],
        "retention.ms",
    );
    fails(
        &broker,
        &["topic", "alter", "orders", "--config", "no.such.key=1"],
        "no.such.key",
    );
    // One bad key and one good: the broker applies neither, and says so.
    fails(
        &broker,
        &[
            "topic",
            "alter",
            "orders",
            "--config",
            "segment.ms=100000",
            "--config",
            "retention.ms=abc",
        ],
        "cannot alter configs of orders",
    );
    assert!(
        !describe(&broker).contains("100000"),
        "{}",
        describe(&broker)
    );
    ok(
        &broker,
        &[
            "topic",
            "alter",
            "orders",
            "--config",
            "retention.ms=3600123",
        ],
        "",
    );
    assert!(
        describe(&broker).contains("3600123"),
        "{}",
        describe(&broker)
    );
    ok(
        &broker,
        &[
            "topic",
            "alter",
            "orders",
            "--delete-config",
            "retention.ms",
        ],
        "",
    );
    assert!(
        !describe(&broker).contains("3600123"),
        "{}",
        describe(&broker)
    );
    fails(
        &broker,
        &["topic", "alter", "orders", "--partitions", "1"],
        "cannot change partitions of orders",
    );
    fails(
        &broker,
        &["topic", "create", "bad", "--config", "retention.ms=soon"],
        "retention.ms",
    );
    fails(
        &broker,
        &["topic", "create", "bad name!"],
        "InvalidTopicException",
    );
    fails(
        &broker,
        &["topic", "create", "orders"],
        "TopicAlreadyExists",
    );
    fails(
        &broker,
        &["group", "delete", "nobody"],
        "cannot delete group nobody",
    );
    fails(
        &broker,
        &[
            "group",
            "reset-offsets",
            "nobody",
            "--topic",
            "nope",
            "--to-earliest",
        ],
        "unknown topic nope",
    );
    fails(
        &broker,
        &["topic", "delete", "orders", "nope"],
        "cannot delete topic nope: UnknownTopicOrPartition",
    );
    assert!(
        !ok(&broker, &["topic", "list"], "").contains("orders"),
        "orders was deleted"
    );
}

/// `consume --from` in every form, templates, tombstones; `produce` with a fixed key,
/// tombstones and auto-created topics.
#[test]
fn consume_positions_formats_and_tombstones_and_produce_keys() {
    let broker = start_broker();
    // Auto-created on first use (the broker allows it).
    let lines: String = (0..10).map(|i| format!("k{}:v{i}\n", i % 2)).collect();
    ok(&broker, &["produce", "fresh", "-K", ":"], &lines);
    ok(
        &broker,
        &["produce", "fresh", "--key", "fixed", "--header", "h=1"],
        "last\n",
    );
    ok(&broker, &["produce", "fresh", "-K", ":", "-Z"], "k0:\n");
    let all = ok(&broker, &["consume", "fresh", "--from-beginning", "-e"], "");
    assert_eq!(all.lines().count(), 12, "{all}");
    assert_eq!(
        all.lines().last(),
        Some("<null>"),
        "a tombstone prints as <null>"
    );
    // The last N messages, in both spellings.
    for from in ["-3", "offset:-3"] {
        let tail = ok(&broker, &["consume", "fresh", "--from", from, "-e"], "");
        assert_eq!(tail, "v9\nlast\n<null>\n", "--from {from}");
    }
    let more_than_there = ok(&broker, &["consume", "fresh", "--from", "-100", "-e"], "");
    assert_eq!(more_than_there.lines().count(), 12);
    let template = ok(
        &broker,
        &[
            "consume",
            "fresh",
            "--from",
            "offset:10",
            "-e",
            "--format",
            "%p/%o %k=%v [%h] %K\\n",
        ],
        "",
    );
    assert_eq!(
        template, "0/10 fixed=last [h=1] 5\n0/11 k0=<null> [] 2\n",
        "{template}"
    );
    // Timestamps: RFC 3339 and Kafka's zoneless form, both before everything here.
    for at in [
        "timestamp:2020-01-01T00:00:00Z",
        "timestamp:2020-01-01T00:00:00",
        "timestamp:0",
    ] {
        let from_time = ok(&broker, &["consume", "fresh", "--from", at, "-e"], "");
        assert_eq!(from_time.lines().count(), 12, "--from {at}");
    }
    let future = ok(
        &broker,
        &[
            "consume",
            "fresh",
            "--from",
            "timestamp:2999-01-01T00:00:00+02:00",
            "-e",
        ],
        "",
    );
    assert_eq!(future, "", "nothing after a future time");
    fails(
        &broker,
        &["consume", "fresh", "--from", "timestamp:yesterday"],
        "e.g. 2026",
    );
    fails(
        &broker,
        &["consume", "fresh", "--format", "%q"],
        "unknown placeholder %q",
    );
    // Input templates: key, headers and value from each line.
    ok(
        &broker,
        &["produce", "templated", "--input-format", "%k|%h|%v"],
        "k1|source=cli,n=1|first value\nk2||second|with a bar\n",
    );
    let templated = ok(
        &broker,
        &[
            "consume",
            "templated",
            "--from-beginning",
            "-e",
            "--format",
            "%k [%h] %v\\n",
        ],
        "",
    );
    assert_eq!(
        templated,
        "k1 [source=cli,n=1] first value\nk2 [] second|with a bar\n"
    );
    let refused = run(
        &broker,
        &["produce", "templated", "--input-format", "%k|%v"],
        "k3|fine\nno separator\n",
    );
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("line 2: does not match"), "{stderr}");
    assert!(
        stderr.contains("1 message(s) written"),
        "the lines before it went out: {stderr}"
    );
    // Waiting at the end says so on stderr (and reads on when more arrives).
    let mut waiting = sluice()
        .args(["consume", "fresh", "--count", "1"])
        .env("SLUICE_BOOTSTRAP", &broker.bootstrap)
        .env("SLUICE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(waiting.stderr.take().unwrap());
    let (hinted, hint) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        // Read to the end: the consumer's last line must not meet a closed pipe.
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains("waiting for new messages") {
                let _ = hinted.send(line);
            }
        }
    });
    let hint = hint
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("a hint that the consumer waits");
    assert!(hint.contains("at the end of fresh"), "{hint}");
    ok(&broker, &["produce", "fresh"], "arrived\n");
    let out = waiting.wait_with_output().unwrap();
    reader.join().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "arrived\n");
}

/// Client properties reach librdkafka: -X and --command-config (Kafka's tools' file), and
/// a property librdkafka does not know is refused with its name.
#[test]
fn client_properties_from_flags_and_a_command_config_file() {
    let broker = start_broker();
    ok(&broker, &["topic", "create", "props"], "");
    ok(&broker, &["produce", "props", "-X", "linger.ms=0"], "one\n");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("client.properties");
    std::fs::write(
        &file,
        "# as for kafka-console-consumer.sh\nfetch.wait.max.ms=50\n",
    )
    .unwrap();
    let read = ok(
        &broker,
        &[
            "consume",
            "props",
            "--from-beginning",
            "-e",
            "--command-config",
            file.to_str().unwrap(),
            "-X",
            "fetch.min.bytes=1",
        ],
        "",
    );
    assert_eq!(read, "one\n");
    fails(
        &broker,
        &["topic", "list", "-X", "no.such.property=1"],
        "no.such.property",
    );
    fails(
        &broker,
        &["topic", "list", "-X", "novalue"],
        "expected KEY=VALUE",
    );
}

/// `--format json` on the list and describe commands: one JSON object, tables as arrays of
/// objects with snake_case keys, numbers as numbers.
#[test]
fn lists_and_descriptions_as_json() {
    let broker = start_broker();
    let json = |args: &[&str]| -> serde_json::Value {
        serde_json::from_str(ok(&broker, args, "").trim()).unwrap()
    };
    ok(&broker, &["topic", "create", "shapes", "-p", "2"], "");
    ok(&broker, &["produce", "shapes", "-p", "1"], "a\nb\n");
    ok(
        &broker,
        &[
            "consume",
            "shapes",
            "--group",
            "readers",
            "--from-beginning",
            "-e",
        ],
        "",
    );
    let topics = json(&["topic", "list", "--format", "json"]);
    assert_eq!(topics["topics"][0]["topic"], "shapes");
    assert_eq!(topics["topics"][0]["partitions"], 2);
    let topic = json(&["topic", "describe", "shapes", "--format", "json"]);
    assert_eq!(topic["topic"], "shapes");
    assert_eq!(topic["offsets"], 2);
    assert_eq!(topic["partitions"][1]["end_offset"], 2);
    assert!(
        topic["configs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["config"] == "retention.ms")
    );
    let groups = json(&["group", "list", "--format", "json"]);
    assert_eq!(groups["groups"][0]["group"], "readers");
    let group = json(&["group", "describe", "readers", "--format", "json"]);
    assert_eq!(group["total_lag"], 0);
    let offsets = group["offsets"].as_array().unwrap();
    assert!(
        offsets
            .iter()
            .any(|o| o["partition"] == 1 && o["committed"] == 2 && o["lag"] == 0)
    );
}

/// `sluice cluster info` and `cluster config get|set` against a real broker: the id,
/// controller and broker list; every broker property; a refused change with the reason.
#[test]
fn cluster_info_and_broker_configuration() {
    let broker = start_broker();
    let info = ok(&broker, &["cluster", "info"], "");
    assert!(info.contains("1 broker(s), controller 1"), "{info}");
    let json: serde_json::Value =
        serde_json::from_str(ok(&broker, &["cluster", "info", "--format", "json"], "").trim())
            .unwrap();
    assert_eq!(json["controller"], 1);
    assert_eq!(json["brokers"][0]["id"], 1);
    assert!(json["cluster_id"].as_str().is_some_and(|id| !id.is_empty()));
    // describe adds the metadata quorum: this node leads its one-voter quorum.
    let describe = ok(&broker, &["cluster", "describe"], "");
    assert!(describe.contains("quorum: leader 1, epoch "), "{describe}");
    let quorum: serde_json::Value =
        serde_json::from_str(ok(&broker, &["cluster", "describe", "--format", "json"], "").trim())
            .unwrap();
    assert_eq!(quorum["quorum_leader"], 1);
    assert_eq!(quorum["voters"][0]["voter"], 1);
    assert_eq!(quorum["voters"][0]["lag"], 0);
    let before = quorum["quorum_high_watermark"].as_i64().unwrap();
    ok(&broker, &["topic", "create", "quorum-moves"], "");
    let after: serde_json::Value =
        serde_json::from_str(ok(&broker, &["cluster", "describe", "--format", "json"], "").trim())
            .unwrap();
    assert!(
        after["quorum_high_watermark"].as_i64().unwrap() > before,
        "a topic creation is committed by the quorum: {after}"
    );
    let config = ok(&broker, &["cluster", "config", "get"], "");
    assert!(
        config.lines().any(|l| l.starts_with("num.partitions ")),
        "{config}"
    );
    fails(
        &broker,
        &[
            "cluster",
            "config",
            "set",
            "--config",
            "log.retention.ms=1000",
        ],
        "cannot change broker 1's configuration",
    );
}
