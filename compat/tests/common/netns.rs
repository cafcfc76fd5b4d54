//! Nodes in network namespaces of their own, made by the test (root, `ip` from iproute2):
//! node `i` has address `10.<s>.<i>.2` on a veth pair whose other end, `10.<s>.<i>.1`, is in
//! the host's namespace, where the test and its clients run and which routes between the
//! nodes. Every packet from one node to another crosses the host, where a policy rule drops
//! it on command (`ip rule add from A to B blackhole`): network partitions of all traffic
//! between two nodes (client, replication and quorum alike), one direction or both, while
//! the clients still reach every node, as in Jepsen's setups. Dropped: the namespaces go,
//! with their veths and rules.

use std::net::IpAddr;
use std::process::Command;
use std::sync::Mutex;

pub struct Namespaces {
    prefix: String,
    subnet: u32,
    nodes: i32,
    /// Rules in place: (from, to) addresses.
    rules: Mutex<Vec<(IpAddr, IpAddr)>>,
    forwarding_was: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e} (iproute2 is installed by scripts/test)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Namespaces {
    /// Namespaces for `nodes` nodes. Panics with the reason if they cannot be made (the
    /// test needs root).
    pub fn create(nodes: i32) -> Namespaces {
        let pid = std::process::id();
        let subnet = 20 + pid % 200;
        let forwarding_was =
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_else(|_| "0".into());
        let namespaces = Namespaces {
            prefix: format!("sl{}", pid % 100_000),
            subnet,
            nodes,
            rules: Mutex::new(Vec::new()),
            forwarding_was,
        };
        // What a run killed before its cleanup may have left with these names.
        for from in 1..=nodes {
            for to in 1..=nodes {
                let (a, b) = (namespaces.node_ip(from), namespaces.node_ip(to));
                let (c, d) = (namespaces.host_ip(from), namespaces.host_ip(to));
                for (x, y) in [(a, b), (a, d), (c, b)] {
                    let _ = ip(&[
                        "rule",
                        "del",
                        "from",
                        &x.to_string(),
                        "to",
                        &y.to_string(),
                        "blackhole",
                    ]);
                }
            }
            let (ns, host, _) = namespaces.names(from);
            let _ = ip(&["netns", "del", &ns]);
            let _ = ip(&["link", "del", &host]);
        }
        for id in 1..=nodes {
            let (ns, host, node) = namespaces.names(id);
            let host_cidr = format!("{}/24", namespaces.host_ip(id));
            let node_cidr = format!("{}/24", namespaces.node_ip(id));
            let host_ip = namespaces.host_ip(id).to_string();
            let steps: [&[&str]; 9] = [
                &["netns", "add", &ns],
                &["link", "add", &host, "type", "veth", "peer", "name", &node],
                &["link", "set", &node, "netns", &ns],
                &["addr", "add", &host_cidr, "dev", &host],
                &["link", "set", &host, "up"],
                &["-n", &ns, "addr", "add", &node_cidr, "dev", &node],
                &["-n", &ns, "link", "set", &node, "up"],
                &["-n", &ns, "link", "set", "lo", "up"],
                &["-n", &ns, "route", "add", "default", "via", &host_ip],
            ];
            for step in steps {
                if let Err(err) = ip(step) {
                    panic!("cannot make the test's network namespaces (root needed): {err}");
                }
            }
        }
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .expect("enable forwarding between the namespaces");
        namespaces
    }

    /// Namespace, host-side and node-side veth names of node `id`.
    fn names(&self, id: i32) -> (String, String, String) {
        (
            format!("{}n{id}", self.prefix),
            format!("{}h{id}", self.prefix),
            format!("{}v{id}", self.prefix),
        )
    }

    pub fn node_ip(&self, id: i32) -> IpAddr {
        format!("10.{}.{id}.2", self.subnet).parse().unwrap()
    }

    /// The host's address on node `id`'s link: where the node reaches services of the test.
    pub fn host_ip(&self, id: i32) -> IpAddr {
        format!("10.{}.{id}.1", self.subnet).parse().unwrap()
    }

    /// The command that runs a program inside node `id`'s namespace.
    pub fn wrapper(&self, id: i32) -> Vec<String> {
        let (ns, ..) = self.names(id);
        ["ip", "netns", "exec", &ns].map(str::to_string).to_vec()
    }

    /// Drops every packet from node `from` to node `to`. A node's host-side address counts
    /// as the node: where the test's proxy in front of a node listens, and what that proxy
    /// answers from (so that a cut holds for what goes through the proxies too).
    pub fn cut(&self, from: i32, to: i32) {
        let mut rules = self.rules.lock().unwrap();
        let pairs = [
            (self.node_ip(from), self.node_ip(to)),
            (self.node_ip(from), self.host_ip(to)),
            (self.host_ip(from), self.node_ip(to)),
        ];
        for (a, b) in pairs {
            if rules.contains(&(a, b)) {
                continue;
            }
            ip(&[
                "rule",
                "add",
                "from",
                &a.to_string(),
                "to",
                &b.to_string(),
                "blackhole",
            ])
            .expect("add a blackhole rule");
            rules.push((a, b));
        }
    }

    /// Both directions between `a` and `b`.
    pub fn cut_both(&self, a: i32, b: i32) {
        self.cut(a, b);
        self.cut(b, a);
    }

    /// `node` cut from every other node, both ways.
    pub fn isolate(&self, node: i32) {
        for other in (1..=self.nodes).filter(|o| *o != node) {
            self.cut_both(node, other);
        }
    }

    /// Every rule removed.
    pub fn heal(&self) {
        let mut rules = self.rules.lock().unwrap();
        for (a, b) in rules.drain(..) {
            let _ = ip(&[
                "rule",
                "del",
                "from",
                &a.to_string(),
                "to",
                &b.to_string(),
                "blackhole",
            ]);
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        self.heal();
        for id in 1..=self.nodes {
            let (ns, host, _) = self.names(id);
            let _ = ip(&["netns", "del", &ns]);
            let _ = ip(&["link", "del", &host]);
        }
        let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", self.forwarding_was.trim());
    }
}
