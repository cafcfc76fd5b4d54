//! The multi-process cluster the cluster suites share: three combined nodes (broker +
//! quorum voter) on loopback, each a child process a test can SIGKILL, SIGSTOP or stop, and
//! the admin HTTP endpoint read back.
#![allow(dead_code)]

pub mod netns;
pub mod workload;

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
    /// A node's own `controller.quorum.voters` (its peers behind fault proxies).
    node_voters: std::collections::BTreeMap<i32, String>,
    /// How each node's process is started (a network namespace, libfaketime).
    launches: std::collections::BTreeMap<i32, sluice_compat::Launch>,
    /// Where node `i` reaches the test's proxies (its host-side address in a namespace).
    proxy_bind: std::collections::BTreeMap<i32, std::net::IpAddr>,
    /// Node `i`'s address as it tells clients, when not where it listens (a proxy).
    advertised: std::collections::BTreeMap<i32, String>,
    /// Node `i`'s own address, as its peers' connections come from it (in a namespace).
    node_ips: std::collections::BTreeMap<i32, std::net::IpAddr>,
    /// Panics and exits nobody asked for, seen in the nodes' processes when they ended (or
    /// at [`Cluster::note_running_panics`]): a broker must survive whatever is done to it.
    pub problems: Vec<String>,
}

/// The line of `stderr` that reports a panic, if any.
fn panic_line(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .find(|line| line.contains("panicked at"))
        .map(str::to_string)
}

/// Where libfaketime is, if installed (scripts/test installs Debian's `faketime`).
pub fn libfaketime() -> Option<PathBuf> {
    ["x86_64-linux-gnu", "aarch64-linux-gnu"]
        .iter()
        .map(|arch| PathBuf::from(format!("/usr/lib/{arch}/faketime/libfaketimeMT.so.1")))
        .find(|path| path.exists())
}

/// The quorum's links through fault proxies: node `i` reaches voter `j`'s controller
/// listener through the proxy `(i, j)`, which carries `i`'s Raft messages to `j` (our
/// transport sends each way on a connection of its own), so each direction of each link can
/// be cut, slowed or made flaky. Client and replication traffic does not go through them:
/// a cut is a partition of the metadata quorum (the control plane).
pub struct QuorumLinks {
    pub proxies: std::collections::BTreeMap<(i32, i32), sluice_compat::fault_proxy::FaultProxy>,
}

impl QuorumLinks {
    /// Cuts the direction `from` → `to`.
    pub fn cut(&self, from: i32, to: i32) {
        self.proxies[&(from, to)].others().cut();
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut_both(&self, a: i32, b: i32) {
        self.cut(a, b);
        self.cut(b, a);
    }

    /// Cuts `node` from every other voter, both ways (a minority of one).
    pub fn isolate(&self, node: i32) {
        for (from, to) in self.proxies.keys() {
            if *from == node || *to == node {
                self.cut(*from, *to);
            }
        }
    }

    pub fn delay_all(&self, delay: Duration) {
        for proxy in self.proxies.values() {
            proxy.others().set_delay(delay);
        }
    }

    pub fn flaky_all(&self, per_mille: u32) {
        for proxy in self.proxies.values() {
            proxy.others().set_flaky(per_mille);
        }
    }

    /// Every link healed, no delay, no flakiness.
    pub fn clear(&self) {
        for proxy in self.proxies.values() {
            proxy.clear();
        }
    }
}

/// The Kafka listeners behind fault proxies (see [`Cluster::route_clients_through_proxies`]):
/// node `i` advertises its proxy, so that clients and the other nodes' replica fetchers
/// alike reach it through there; the proxy tells the other nodes apart by their addresses.
pub struct DataLinks {
    /// Node id → (the proxy in front of its listener, the other nodes' addresses by id).
    pub proxies: std::collections::BTreeMap<
        i32,
        (
            sluice_compat::fault_proxy::FaultProxy,
            Vec<(i32, std::net::IpAddr)>,
        ),
    >,
}

impl DataLinks {
    /// Every link between two nodes (replication, and whatever else one node asks another).
    fn between_nodes(&self) -> impl Iterator<Item = &sluice_compat::fault_proxy::Link> {
        self.proxies
            .values()
            .flat_map(|(proxy, peers)| peers.iter().map(move |(_, ip)| proxy.from(*ip)))
    }

    pub fn delay_between_nodes(&self, delay: Duration) {
        self.between_nodes().for_each(|link| link.set_delay(delay));
    }

    pub fn flaky_between_nodes(&self, per_mille: u32) {
        self.between_nodes()
            .for_each(|link| link.set_flaky(per_mille));
    }

    /// The connections between `a` and `b`, whichever opened them, carry nothing: what a
    /// packet cut in either direction does to TCP (the other side's acknowledgements or
    /// answers are lost).
    pub fn cut(&self, a: i32, b: i32) {
        for (from, to) in [(a, b), (b, a)] {
            let (proxy, peers) = &self.proxies[&to];
            let (_, ip) = peers
                .iter()
                .find(|(id, _)| *id == from)
                .expect("a peer of the proxy");
            proxy.from(*ip).cut();
        }
    }

    /// `node` cut from every other node.
    pub fn isolate(&self, node: i32) {
        for other in (1..=NODES).filter(|o| *o != node) {
            self.cut(node, other);
        }
    }

    /// The clients' connections to `node`.
    pub fn clients_of(&self, node: i32) -> &sluice_compat::fault_proxy::Link {
        self.proxies[&node].0.others()
    }

    /// No fault on any link.
    pub fn clear(&self) {
        for (proxy, _) in self.proxies.values() {
            proxy.clear();
        }
    }
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
            node_voters: Default::default(),
            launches: Default::default(),
            proxy_bind: Default::default(),
            advertised: Default::default(),
            node_ips: Default::default(),
            problems: Vec::new(),
        }
    }

    /// Three nodes under `root`, each in its network namespace of `namespaces`, listening on
    /// its own address there (clients 9092, quorum 9093, admin HTTP 9094).
    pub fn in_namespaces(
        root: &Path,
        extra: &[(&str, &str)],
        namespaces: &netns::Namespaces,
    ) -> Cluster {
        let mut cluster = Cluster::new(root, extra);
        for node in &mut cluster.nodes {
            let ip = namespaces.node_ip(node.id);
            node.client = format!("{ip}:9092");
            node.controller = format!("{ip}:9093");
            node.http = format!("{ip}:9094");
        }
        cluster.voters = cluster
            .nodes
            .iter()
            .map(|n| format!("{}@{}", n.id, n.controller))
            .collect::<Vec<_>>()
            .join(",");
        for id in 1..=NODES {
            cluster.launches.insert(
                id,
                sluice_compat::Launch {
                    wrapper: namespaces.wrapper(id),
                    env: Vec::new(),
                },
            );
            cluster.proxy_bind.insert(id, namespaces.host_ip(id));
            cluster.node_ips.insert(id, namespaces.node_ip(id));
        }
        cluster
    }

    /// Runs every node under libfaketime, its wall clock offset by what its file says
    /// (`+0` to start; [`Cluster::jump_clock`] rewrites it; the monotonic clock is left
    /// alone). Panics if libfaketime is not installed.
    pub fn with_clock_files(&mut self, root: &Path) {
        let library = libfaketime().expect("libfaketime (Debian's faketime package) is installed");
        for id in 1..=NODES {
            let file = root.join(format!("node-{id}.faketime"));
            std::fs::write(&file, "+0\n").unwrap();
            let launch = self.launches.entry(id).or_default();
            launch.env.extend([
                ("LD_PRELOAD".to_string(), library.display().to_string()),
                (
                    "FAKETIME_TIMESTAMP_FILE".to_string(),
                    file.display().to_string(),
                ),
                ("FAKETIME_CACHE_DURATION".to_string(), "1".to_string()),
                ("FAKETIME_DONT_FAKE_MONOTONIC".to_string(), "1".to_string()),
            ]);
        }
    }

    /// Sets node `id`'s wall clock `seconds` away from the real one (see
    /// [`Cluster::with_clock_files`]); 0 puts it back.
    pub fn jump_clock(&self, id: i32, seconds: i64) {
        let launch = &self.launches[&id];
        let (_, file) = launch
            .env
            .iter()
            .find(|(k, _)| k == "FAKETIME_TIMESTAMP_FILE")
            .expect("started with clock files");
        std::fs::write(file, format!("{seconds:+}\n")).unwrap();
    }
    /// Routes every quorum link through a fault proxy (see [`QuorumLinks`]); before the
    /// nodes start. `seed` drives the flaky links' dice.
    pub fn route_quorum_through_proxies(&mut self, seed: u64) -> QuorumLinks {
        let mut proxies = std::collections::BTreeMap::new();
        for from in 1..=NODES {
            let mut voters = Vec::new();
            for to in 1..=NODES {
                let controller = self.node(to).controller.clone();
                if from == to {
                    voters.push(format!("{to}@{controller}"));
                    continue;
                }
                let bind = self
                    .proxy_bind
                    .get(&from)
                    .copied()
                    .unwrap_or_else(|| "127.0.0.1".parse().unwrap());
                let proxy = sluice_compat::fault_proxy::FaultProxy::start_on(
                    bind,
                    controller.parse().expect("a socket address"),
                    seed ^ (u64::from(from as u32) << 8 | u64::from(to as u32)),
                );
                voters.push(format!("{to}@{}", proxy.address()));
                proxies.insert((from, to), proxy);
            }
            self.node_voters.insert(from, voters.join(","));
        }
        QuorumLinks { proxies }
    }

    /// Puts a fault proxy in front of every node's Kafka listener (see [`DataLinks`]); for
    /// nodes in network namespaces, before they start. The namespaces' IP rules do not see
    /// what goes through the proxies: a network partition cuts [`DataLinks`] too.
    pub fn route_clients_through_proxies(&mut self, seed: u64) -> DataLinks {
        assert!(
            !self.node_ips.is_empty(),
            "the proxies tell nodes apart by their addresses: nodes in namespaces only"
        );
        let mut proxies = std::collections::BTreeMap::new();
        for id in 1..=NODES {
            let peers: Vec<(i32, std::net::IpAddr)> = (1..=NODES)
                .filter(|other| *other != id)
                .map(|other| (other, self.node_ips[&other]))
                .collect();
            let sources: Vec<std::net::IpAddr> = peers.iter().map(|(_, ip)| *ip).collect();
            let proxy = sluice_compat::fault_proxy::FaultProxy::start_with_sources(
                self.proxy_bind[&id],
                self.node(id).client.parse().expect("a socket address"),
                seed ^ (u64::from(id as u32) << 16),
                &sources,
            );
            self.advertised.insert(id, proxy.address().to_string());
            proxies.insert(id, (proxy, peers));
        }
        DataLinks { proxies }
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

    /// Every node's advertised address.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| self.advertised.get(&n.id).unwrap_or(&n.client).clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn node(&self, id: i32) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    /// Starts node `id` on `dir` (its own, unless a test points it elsewhere), not waiting.
    pub fn spawn(&mut self, id: i32, dir: Option<&Path>) {
        let voters = self
            .node_voters
            .get(&id)
            .cloned()
            .unwrap_or_else(|| self.voters.clone());
        let node = &mut self.nodes[(id - 1) as usize];
        let listen = format!(
            "PLAINTEXT://{},CONTROLLER://{}",
            node.client, node.controller
        );
        let node_id = id.to_string();
        let advertised = format!(
            "PLAINTEXT://{}",
            self.advertised.get(&id).unwrap_or(&node.client)
        );
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
        let launch = self.launches.get(&id).cloned().unwrap_or_default();
        node.process = Some(BrokerProcess::spawn_in(&launch, &dir, &listen, &props));
    }

    pub fn wait_ready(&mut self, id: i32) {
        self.nodes[(id - 1) as usize]
            .process
            .as_mut()
            .expect("started")
            .wait_ready();
    }

    pub fn kill(&mut self, id: i32) {
        let process = self.nodes[(id - 1) as usize]
            .process
            .take()
            .expect("running");
        self.note_panic(id, &process);
        process.kill();
    }

    fn note_panic(&mut self, id: i32, process: &BrokerProcess) {
        if let Some(line) = panic_line(&process.stderr_text()) {
            self.problems.push(format!("node {id} panicked: {line}"));
        }
    }

    /// Records in [`Cluster::problems`] every node that exited by itself, and starts it
    /// again; returns those, to wait for.
    pub fn restart_exited(&mut self) -> Vec<i32> {
        let mut exited = Vec::new();
        for i in 0..self.nodes.len() {
            let id = self.nodes[i].id;
            let Some(process) = self.nodes[i].process.as_mut() else {
                continue;
            };
            if let Some(status) = process.exited() {
                let stderr = process.stderr_text();
                let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
                self.problems.push(format!(
                    "node {id} exited by itself ({status}); its last lines: {:?}",
                    tail.into_iter().rev().collect::<Vec<_>>()
                ));
                let process = self.nodes[i].process.take().expect("running");
                self.note_panic(id, &process);
                self.spawn(id, None);
                exited.push(id);
            }
        }
        exited
    }

    /// Records in [`Cluster::problems`] every running node that has panicked (a thread of
    /// it: the process may live on).
    pub fn note_running_panics(&mut self) {
        for i in 0..self.nodes.len() {
            if let Some(process) = self.nodes[i].process.take() {
                self.note_panic(self.nodes[i].id, &process);
                self.nodes[i].process = Some(process);
            }
        }
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

    /// Stops every node still running (SIGTERM: a controlled shutdown).
    pub fn stop_all(&mut self) {
        for i in 0..self.nodes.len() {
            if let Some(process) = self.nodes[i].process.take() {
                self.note_panic(self.nodes[i].id, &process);
                process.stop();
            }
        }
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

/// A node's data directory on a tmpfs of its own (its metadata log elsewhere, as
/// `metadata.log.dir` allows), resized on command, unmounted when dropped.
pub struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    pub fn mount(path: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(path).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            mounted,
            "mounting a tmpfs failed: the disk-full test runs as root (scripts/test)"
        );
        SmallDisk {
            path: path.to_path_buf(),
        }
    }

    pub fn resize(&self, size: &str) {
        let resized = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(resized, "remounting the tmpfs at {size}");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

impl SmallDisk {
    /// Bytes in use on the tmpfs.
    pub fn used(&self) -> u64 {
        let out = std::process::Command::new("df")
            .args(["--output=used", "-B1"])
            .arg(&self.path)
            .output()
            .expect("df runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df prints the bytes used")
    }
}

pub fn wait_for(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
