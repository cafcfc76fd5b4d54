//! Nodes in network namespaces of their own, made by the test (root, `ip` from iproute2):
//! node `i` has address `10.<s>.<i>.2` on a veth pair whose other end, `10.<s>.<i>.1`, is in
//! the host's namespace, where the test and its clients run and which routes between the
//! nodes. Every packet from one node to another crosses the host, where a policy rule drops
//! it on command (`ip rule add from A to B blackhole`): network partitions between two
//! nodes, one direction or both, while the clients still reach every node, as in Jepsen's
//! setups. Traffic that goes through a proxy of the test on the host is not forwarded, so
//! the rules do not see it: the proxies cut it themselves. Dropped: the namespaces go, with
//! their veths and rules.

use std::net::IpAddr;
use std::process::Command;
use std::sync::Mutex;

pub struct Namespaces {
    prefix: String,
    subnet: u32,
    nodes: i32,
    /// Rules in place: (from, to) addresses.
    rules: Mutex<Vec<(IpAddr, IpAddr)>>,
    /// Nodes whose link loses packets.
    lossy: Mutex<Vec<i32>>,
    forwarding_was: String,
    /// `net.ipv4.conf.all.rp_filter` before the test: a reverse-path filter would drop
    /// the packets of the direction a one-way cut leaves open (their reverse route is the
    /// blackhole), so it is off while the namespaces exist.
    rp_filter_was: String,
}

const RP_FILTER_ALL: &str = "/proc/sys/net/ipv4/conf/all/rp_filter";

fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args)
}

/// Adds or deletes (`op`) the rule that drops what `from` sends to `to`.
fn blackhole(op: &str, from: IpAddr, to: IpAddr) -> Result<(), String> {
    let (from, to) = (from.to_string(), to.to_string());
    ip(&["rule", op, "from", &from, "to", &to, "blackhole"])
}

/// `tc` (iproute2), in the namespace `ns` if given.
fn tc(ns: Option<&str>, args: &[&str]) -> Result<(), String> {
    match ns {
        Some(ns) => {
            let mut all = vec!["-n", ns];
            all.extend_from_slice(args);
            run("tc", &all)
        }
        None => run("tc", args),
    }
}

/// Packets the dropping class of [`Namespaces::lose`] took on `device` (its queue's
/// "dropped" count in `tc -s qdisc show`).
fn dropped_by_loss(ns: Option<&str>, device: &str) -> u64 {
    let mut command = Command::new("tc");
    if let Some(ns) = ns {
        command.args(["-n", ns]);
    }
    let Ok(out) = command
        .args(["-s", "qdisc", "show", "dev", device])
        .output()
    else {
        return 0;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.starts_with("qdisc pfifo 20:") {
            return lines
                .next()
                .and_then(|stats| stats.split("dropped ").nth(1))
                .and_then(|rest| rest.split(',').next())
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
        }
    }
    0
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program} {args:?}: {e} (iproute2 is installed by scripts/test)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {args:?}: {}",
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
            lossy: Mutex::new(Vec::new()),
            forwarding_was,
            rp_filter_was: std::fs::read_to_string(RP_FILTER_ALL).unwrap_or_else(|_| "0".into()),
        };
        // What a run killed before its cleanup may have left with these names.
        for from in 1..=nodes {
            for to in 1..=nodes {
                let _ = blackhole("del", namespaces.node_ip(from), namespaces.node_ip(to));
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
            std::fs::write(format!("/proc/sys/net/ipv4/conf/{host}/rp_filter"), "0")
                .expect("turn the reverse-path filter off on the node's link");
        }
        // The effective filter is the higher of `all` and the link's.
        std::fs::write(RP_FILTER_ALL, "0").expect("turn the reverse-path filter off");
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

    /// Drops every packet node `from` sends to node `to` (forwarded by the host). What goes
    /// through the test's proxies on the host is not forwarded (the host's own addresses
    /// are looked up in its `local` table, before any rule of ours): the proxies cut that
    /// themselves.
    pub fn cut(&self, from: i32, to: i32) {
        let mut rules = self.rules.lock().unwrap();
        let (a, b) = (self.node_ip(from), self.node_ip(to));
        if rules.contains(&(a, b)) {
            return;
        }
        blackhole("add", a, b).expect("add a blackhole rule");
        rules.push((a, b));
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

    /// Node `node`'s link drops `per_mille` of the packets it carries, each way, at random:
    /// TCP retransmits (packet loss, where this kernel has no `netem`). An HTB qdisc on each
    /// end of the veth sends what a classic BPF filter picks (`ld rand`) to a class whose
    /// queue holds nothing.
    /// Errs (with what is missing) where the kernel cannot do it: no HTB or BPF classifier.
    pub fn lose(&self, node: i32, per_mille: u32) -> Result<(), String> {
        assert!((1..=1000).contains(&per_mille), "a loss rate in per mille");
        let (ns, host, inside) = self.names(node);
        let threshold = (u64::from(per_mille) << 32) / 1000;
        // ld rand (SKF_AD_OFF + SKF_AD_RANDOM); below the threshold: the dropping class.
        let program = format!("4,32 0 0 4294963256,53 1 0 {threshold},6 0 0 4294967295,6 0 0 0");
        // Recorded first: what a failure leaves half made is undone too.
        self.lossy.lock().unwrap().push(node);
        for (namespace, device) in [(None, host.as_str()), (Some(ns.as_str()), inside.as_str())] {
            let _ = tc(namespace, &["qdisc", "del", "dev", device, "root"]);
            let steps: [&[&str]; 5] = [
                &[
                    "qdisc", "add", "dev", device, "root", "handle", "1:", "htb", "default", "10",
                ],
                &[
                    "class", "add", "dev", device, "parent", "1:", "classid", "1:10", "htb",
                    "rate", "10gbit", "quantum", "60000",
                ],
                &[
                    "class", "add", "dev", device, "parent", "1:", "classid", "1:20", "htb",
                    "rate", "10gbit", "quantum", "60000",
                ],
                &[
                    "qdisc", "add", "dev", device, "parent", "1:20", "handle", "20:", "pfifo",
                    "limit", "0",
                ],
                &[
                    "filter", "add", "dev", device, "parent", "1:", "protocol", "ip", "prio", "1",
                    "bpf", "bytecode", &program, "classid", "1:20",
                ],
            ];
            for step in steps {
                tc(namespace, step).map_err(|e| format!("packet loss on {device}: {e}"))?;
            }
        }
        Ok(())
    }

    /// No link loses packets any more; returns how many packets were dropped.
    pub fn stop_losses(&self) -> u64 {
        let mut lossy = self.lossy.lock().unwrap();
        let mut dropped = 0;
        for node in lossy.drain(..) {
            let (ns, host, inside) = self.names(node);
            for (namespace, device) in [(None, host.as_str()), (Some(ns.as_str()), inside.as_str())]
            {
                dropped += dropped_by_loss(namespace, device);
                let _ = tc(namespace, &["qdisc", "del", "dev", device, "root"]);
            }
        }
        dropped
    }

    /// Every rule removed.
    pub fn heal(&self) {
        let mut rules = self.rules.lock().unwrap();
        for (a, b) in rules.drain(..) {
            let _ = blackhole("del", a, b);
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
        let _ = std::fs::write(RP_FILTER_ALL, self.rp_filter_was.trim());
    }
}
