//! The multi-process cluster the cluster suites share: three combined nodes (broker +
//! quorum voter) on loopback, each a child process a test can SIGKILL, SIGSTOP or stop, and
//! the admin HTTP endpoint read back.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use serde_json::Value;
use sluice_compat::{BrokerProcess, free_listen_address};

pub const NODES: i32 = 3;

/// A librdkafka client of the cluster at `bootstrap` (a socket timeout that outlasts a
/// failover).
pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("socket.timeout.ms", "10000");
    config
}

/// One node: its addresses and data, and its process while it runs.
pub struct Node {
    pub id: i32,
    pub client: String,
    pub controller: String,
    pub http: String,
    pub dir: PathBuf,
    pub process: Option<BrokerProcess>,
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub voters: String,
    extra: Vec<(String, String)>,
    /// Properties of one node only, after the cluster's.
    node_extra: std::collections::BTreeMap<i32, Vec<(String, String)>>,
}

impl Cluster {
    /// Three nodes under `root`, each started with `extra` properties besides the cluster's.
    pub fn new(root: &Path, extra: &[(&str, &str)]) -> Cluster {
        let nodes: Vec<Node> = (1..=NODES)
            .map(|id| Node {
                id,
                client: free_listen_address(),
                controller: free_listen_address(),
                http: free_listen_address(),
                dir: root.join(format!("node-{id}")),
                process: None,
            })
            .collect();
        let voters = nodes
            .iter()
            .map(|n| format!("{}@{}", n.id, n.controller))
            .collect::<Vec<_>>()
            .join(",");
        let extra = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Cluster {
            nodes,
            voters,
            extra,
            node_extra: Default::default(),
        }
    }

    /// Node `id` is started with `props` too (after the cluster's `extra`).
    pub fn set_node_props(&mut self, id: i32, props: &[(&str, &str)]) {
        self.node_extra.insert(
            id,
            props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
    }

    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.client.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn node(&self, id: i32) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    /// Starts node `id` on `dir` (its own, unless a test points it elsewhere), not waiting.
    pub fn spawn(&mut self, id: i32, dir: Option<&Path>) {
        let voters = self.voters.clone();
        let node = &mut self.nodes[(id - 1) as usize];
        let listen = format!(
            "PLAINTEXT://{},CONTROLLER://{}",
            node.client, node.controller
        );
        let node_id = id.to_string();
        let advertised = format!("PLAINTEXT://{}", node.client);
        let props = [
            ("node.id", node_id.as_str()),
            ("process.roles", "broker,controller"),
            ("controller.quorum.voters", voters.as_str()),
            ("controller.listener.names", "CONTROLLER"),
            ("advertised.listeners", advertised.as_str()),
            ("admin.http.listener", node.http.as_str()),
            // Short enough for the test, long enough for two busy cores.
            ("broker.session.timeout.ms", "4000"),
            ("broker.heartbeat.interval.ms", "500"),
        ];
        let mut props: Vec<(&str, &str)> = props.to_vec();
        props.extend(self.extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if let Some(own) = self.node_extra.get(&id) {
            props.extend(own.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        }
        let dir = dir.unwrap_or(&node.dir).to_path_buf();
        node.process = Some(BrokerProcess::spawn(&dir, &listen, &props));
    }

    pub fn wait_ready(&mut self, id: i32) {
        self.nodes[(id - 1) as usize]
            .process
            .as_mut()
            .expect("started")
            .wait_ready();
    }

    pub fn kill(&mut self, id: i32) {
        self.nodes[(id - 1) as usize]
            .process
            .take()
            .expect("running")
            .kill();
    }

    /// Sends node `id`'s process a signal (`-STOP`, `-CONT`) with kill(1).
    pub fn signal(&self, id: i32, signal: &str) {
        let pid = self.node(id).process.as_ref().expect("running").pid();
        let sent = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill {signal} {pid}");
    }

    pub fn running(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.process.is_some())
    }

    /// The active controller as the running nodes report it, once they agree on one that
    /// is not `not`.
    pub fn controller(&self, not: Option<i32>, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        loop {
            let seen: BTreeSet<Option<i64>> = self
                .running()
                .map(|n| get_json(&n.http, "/api/v1/brokers")["controller_id"].as_i64())
                .collect();
            if seen.len() == 1
                && let Some(Some(id)) = seen.first()
                && not != Some(*id as i32)
            {
                return *id as i32;
            }
            assert!(Instant::now() < deadline, "no agreed controller: {seen:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// GET over HTTP/1.0: the body ("" if the node does not answer).
pub fn get_text(addr: &str, path: &str) -> String {
    let attempt = || -> std::io::Result<String> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n")?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        Ok(reply
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_string())
    };
    attempt().unwrap_or_default()
}

/// GET of a JSON document (null if the node does not answer).
pub fn get_json(addr: &str, path: &str) -> Value {
    serde_json::from_str(&get_text(addr, path)).unwrap_or(Value::Null)
}

pub fn wait_for(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
