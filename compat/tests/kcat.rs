//! Debian's kcat (librdkafka 2.0.2, the old-client case) against a real broker.

use std::io::Write;
use std::process::{Command, Stdio};

use sluice_compat::start_broker;

fn kcat(args: &[&str], input: Option<&str>) -> String {
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is installed (apt install kcat)");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).unwrap();
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "kcat {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_produces_and_consumes_with_every_codec() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let b = broker.local_addr.to_string();
    tokio::task::spawn_blocking(move || {
        let listing = kcat(&["-b", &b, "-L"], None);
        assert!(listing.contains("1 brokers"), "{listing}");

        let mut expected = Vec::new();
        for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
            let lines: Vec<String> = (0..50)
                .map(|i| {
                    if i % 7 == 0 {
                        format!("no key {codec} {i}")
                    } else {
                        format!("k{i}:{codec} value {i}")
                    }
                })
                .collect();
            let input = lines.join("\n") + "\n";
            // Auto-created on first use.
            kcat(
                &[
                    "-b",
                    &b,
                    "-t",
                    "kcat",
                    "-p",
                    "0",
                    "-P",
                    "-K",
                    ":",
                    "-z",
                    codec,
                    "-H",
                    &format!("codec={codec}"),
                ],
                Some(&input),
            );
            for line in &lines {
                let (key, value) = match line.split_once(':') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (String::new(), line.clone()),
                };
                expected.push((key, value, format!("codec={codec}")));
            }
        }
        let out = kcat(
            &[
                "-b",
                &b,
                "-t",
                "kcat",
                "-p",
                "0",
                "-C",
                "-o",
                "beginning",
                "-e",
                "-f",
                "%o|%k|%s|%h\n",
            ],
            None,
        );
        let got: Vec<(i64, String, String, String)> = out
            .lines()
            .map(|l| {
                let parts: Vec<&str> = l.splitn(4, '|').collect();
                (
                    parts[0].parse().unwrap(),
                    parts[1].into(),
                    parts[2].into(),
                    parts[3].into(),
                )
            })
            .collect();
        assert_eq!(got.len(), expected.len());
        for (i, (offset, key, value, headers)) in got.iter().enumerate() {
            assert_eq!(*offset, i as i64);
            assert_eq!(
                (key, value, headers),
                (&expected[i].0, &expected[i].1, &expected[i].2),
                "message {i}"
            );
        }

        // Consume from a timestamp: every message produced so far is older than "now".
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        kcat(&["-b", &b, "-t", "kcat", "-p", "0", "-P"], Some("after\n"));
        let from = kcat(
            &[
                "-b",
                &b,
                "-t",
                "kcat",
                "-p",
                "0",
                "-C",
                "-o",
                &format!("s@{now}"),
                "-e",
                "-f",
                "%o %s\n",
            ],
            None,
        );
        assert_eq!(from.trim(), format!("{} after", expected.len()));
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}
