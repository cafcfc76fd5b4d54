//! Compatibility suites: Sluice driven by clients nobody here wrote (librdkafka through the
//! Rust `rdkafka` crate, Python `confluent-kafka` and `kafka-python`, Debian's `kcat`, the
//! official Java client). The tests live in `tests/`; this library only starts brokers for
//! them, and puts fault-injecting proxies between them (`fault_proxy`). Must not be
//! depended on by any other crate.

pub mod fault_proxy;

use std::collections::BTreeMap;
use std::path::Path;

use sluice_broker::{BrokerConfig, BrokerHandle, GuardedAllocator};

// The suites run brokers in-process: install the allocator the `sluice` binary installs.
#[global_allocator]
static ALLOCATOR: GuardedAllocator = GuardedAllocator;

/// Starts a broker on an ephemeral loopback port with its data in `dir`.
pub async fn start_broker(dir: &Path, extra: &[(&str, &str)]) -> BrokerHandle {
    let mut props: BTreeMap<String, String> = BTreeMap::new();
    props.insert("listeners".into(), "127.0.0.1:0".into());
    props.insert("log.dirs".into(), dir.display().to_string());
    for (k, v) in extra {
        props.insert(k.to_string(), v.to_string());
    }
    let config = BrokerConfig::from_overrides(props).expect("valid test config");
    sluice_broker::start(config).await.expect("broker starts")
}

/// A broker in a child process, so that a test can SIGKILL it: no shutdown, no flush, no
/// clean-shutdown marker, exactly a crash. The child is the test binary itself, re-run with
/// only its ignored `broker_process` test, which must call [`run_broker_process`]:
///
/// ```ignore
/// #[test]
/// #[ignore = "the broker child process of the restart tests"]
/// fn broker_process() {
///     sluice_compat::run_broker_process();
/// }
/// ```
#[derive(Debug)]
pub struct BrokerProcess {
    child: std::process::Child,
    /// The child's standard output, until READY is read.
    stdout: Option<std::io::Lines<std::io::BufReader<std::process::ChildStdout>>>,
    /// Everything the child wrote to standard error (also echoed to ours).
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

/// How a broker child is started besides its configuration.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// A command that runs the broker in its place (its arguments, then the broker's).
    pub wrapper: Vec<String>,
    pub env: Vec<(String, String)>,
}

const BROKER_DIR_ENV: &str = "SLUICE_TEST_BROKER_DIR";
const BROKER_LISTEN_ENV: &str = "SLUICE_TEST_BROKER_LISTEN";
/// How long a broker process may take to say it serves (a node of a cluster waits for a
/// quorum of its peers): a test that waits longer is stuck, and says so.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Extra broker properties for the child, as `key=value` lines.
const BROKER_PROPS_ENV: &str = "SLUICE_TEST_BROKER_PROPS";

impl BrokerProcess {
    /// Starts the child and waits until it listens on `listen` (a fixed address, so that
    /// clients find the restarted broker where the old one was).
    pub fn start(dir: &Path, listen: &str, extra: &[(&str, &str)]) -> BrokerProcess {
        let mut process = BrokerProcess::spawn(dir, listen, extra);
        process.wait_ready();
        process
    }

    /// Starts the child without waiting for it: a node of a cluster is ready only once a
    /// quorum of its peers runs too. `listen` is the `listeners` value.
    pub fn spawn(dir: &Path, listen: &str, extra: &[(&str, &str)]) -> BrokerProcess {
        BrokerProcess::spawn_in(&Launch::default(), dir, listen, extra)
    }

    /// [`BrokerProcess::spawn`] as `launch` says: under a wrapper command that execs the
    /// broker (`ip netns exec <ns>`: the pid stays the broker's), with extra environment
    /// (`LD_PRELOAD` of libfaketime).
    pub fn spawn_in(
        launch: &Launch,
        dir: &Path,
        listen: &str,
        extra: &[(&str, &str)],
    ) -> BrokerProcess {
        use std::io::BufRead;
        let props: String = extra.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        let exe = std::env::current_exe().unwrap();
        let mut command = match launch.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = std::process::Command::new(program);
                command.args(args).arg(exe);
                command
            }
            None => std::process::Command::new(exe),
        };
        let mut child = command
            .envs(launch.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args([
                "broker_process",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(BROKER_DIR_ENV, dir)
            .env(BROKER_LISTEN_ENV, listen)
            .env(BROKER_PROPS_ENV, props)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the test binary runs again as the broker process");
        let stdout = child.stdout.take().unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let kept = stderr.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                eprintln!("{line}");
                let mut kept = kept.lock().unwrap();
                kept.push_str(&line);
                kept.push('\n');
            }
        });
        BrokerProcess {
            child,
            stdout: Some(std::io::BufReader::new(stdout).lines()),
            stderr,
        }
    }

    /// Waits until the child says it serves (READY); panics if it exits first.
    pub fn wait_ready(&mut self) {
        let mut lines = self.stdout.take().expect("waited for once");
        let (ready, said) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let outcome = loop {
                match lines.next() {
                    // libtest prints "test broker_process ... " on the same line first.
                    Some(Ok(line)) if line.trim_end().ends_with("READY") => break Ok(()),
                    Some(Ok(_)) => {}
                    other => break Err(format!("{other:?}")),
                }
            };
            let _ = ready.send(outcome);
            // Keep draining: libtest fails the process if its last line hits a closed pipe.
            lines.for_each(drop);
        });
        match said.recv_timeout(READY_TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(end)) => panic!("broker process did not start: {end}"),
            Err(_) => panic!(
                "broker process not ready after {READY_TIMEOUT:?}; its stderr:\n{}",
                self.stderr.lock().unwrap()
            ),
        }
    }

    /// Waits up to `timeout` for the child to exit by itself: its status and what it wrote
    /// to standard error, or `None` if it still runs.
    pub fn wait_exit(
        &mut self,
        timeout: std::time::Duration,
    ) -> Option<(std::process::ExitStatus, String)> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread take the last lines.
                std::thread::sleep(std::time::Duration::from_millis(100));
                return Some((status, self.stderr.lock().unwrap().clone()));
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// The child's process id (to pause it with SIGSTOP, say).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the child wrote to standard error so far.
    pub fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The child's exit status if it has exited (not waiting for it).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL: no shutdown, no flush, no clean marker.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Clean shutdown (the child's stdin closes); panics unless the broker exits cleanly.
    pub fn stop(mut self) {
        drop(self.child.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "broker process exited with {status}");
    }
}

impl Drop for BrokerProcess {
    /// A failing test must not leave a broker running behind it.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback address for a [`BrokerProcess`] to keep across restarts.
///
/// Taken below the kernel's ephemeral port range: a port from that range may be handed to an
/// outgoing connection (a client retrying the stopped broker, a peer reconnecting) while the
/// broker is down, and the restarted broker could not listen on it again.
pub fn free_listen_address() -> String {
    use std::sync::atomic::{AtomicU16, Ordering};
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = 10_000u16.min(ephemeral_start / 2);
    let span = ephemeral_start.saturating_sub(low).max(1);
    // Spread over the range by process, stepped per call: test processes running at once
    // rarely probe the same ports.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = (std::process::id() as u16).wrapping_mul(7919);
    for _ in 0..span {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = low + seed.wrapping_add(step.wrapping_mul(13)) % span;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return format!("127.0.0.1:{port}");
        }
    }
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().to_string()
}

/// The body of a test binary's ignored `broker_process` test: runs the broker that
/// [`BrokerProcess::start`] asked for, prints READY once listening, and shuts down cleanly
/// when stdin closes.
pub fn run_broker_process() {
    let dir = std::env::var(BROKER_DIR_ENV).expect("started by BrokerProcess::start");
    let listen = std::env::var(BROKER_LISTEN_ENV).unwrap();
    let props = std::env::var(BROKER_PROPS_ENV).unwrap_or_default();
    let mut extra: Vec<(&str, &str)> = props
        .lines()
        .filter_map(|line| line.split_once('='))
        .collect();
    extra.push(("listeners", listen.as_str()));
    // SLUICE_TEST_LOG=info (a tracing filter) shows the child's log on the test's stderr.
    if let Ok(filter) = std::env::var("SLUICE_TEST_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let broker = start_broker(Path::new(&dir), &extra).await;
        println!("READY");
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut sink);
        })
        .await;
        broker.shutdown().await.unwrap();
    });
}

/// The Java client's jars: `$SLUICE_JAVA_JARS`, or where `compat/java/fetch-jars.sh` puts them.
fn java_jars() -> std::path::PathBuf {
    let dir = std::env::var("SLUICE_JAVA_JARS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/compat-java/jars")
        });
    assert!(
        dir.join("kafka-clients-4.3.0.jar").exists(),
        "no Java client jars in {}: run compat/java/fetch-jars.sh (scripts/test does)",
        dir.display()
    );
    dir
}

/// Compiles `compat/java/JavaClientCheck.java` into `out`; returns the classpath to run it.
pub fn compile_java_check(out: &Path) -> String {
    let classpath = format!("{}/*", java_jars().display());
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("java/JavaClientCheck.java");
    let status = std::process::Command::new("javac")
        .args(["-cp", &classpath, "-d"])
        .arg(out)
        .arg(source)
        .status()
        .expect("javac (JDK 17) is installed");
    assert!(status.success(), "javac failed");
    format!("{}:{classpath}", out.display())
}

/// A command running one scenario of the Java check program.
pub fn java_check(classpath: &str, bootstrap: &str, scenario: &str) -> std::process::Command {
    let mut command = std::process::Command::new("java");
    command.args(["-cp", classpath, "JavaClientCheck", bootstrap, scenario]);
    command
}

/// The newest version of each API that requests to `broker` used so far, by API name
/// (`"Fetch"`): what a client negotiated.
pub fn newest_versions_used(broker: &sluice_broker::Broker) -> BTreeMap<String, i16> {
    sluice_broker::advertised_apis()
        .filter_map(|(api, _, _)| {
            let newest = broker.metrics().versions_used(api).last()?.0;
            Some((format!("{api:?}"), newest))
        })
        .collect()
}

/// Asserts that `client` used exactly these newest versions of these APIs: the highest it
/// and Sluice both support, so a regression in what Sluice advertises (or answers well
/// enough for the client to keep the version) fails here.
pub fn assert_negotiated(broker: &sluice_broker::Broker, client: &str, expected: &[(&str, i16)]) {
    let used = newest_versions_used(broker);
    for (api, version) in expected {
        assert_eq!(
            used.get(*api),
            Some(version),
            "{client}: newest {api} version used; all used: {used:?}"
        );
    }
}
