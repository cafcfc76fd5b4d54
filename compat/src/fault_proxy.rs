//! A fault-injecting TCP proxy in front of one node's listener: a peer connects to the
//! proxy instead of the node. Faults, switched at any time, on a [`Link`]: what arrives from
//! one source address (a peer node, told apart by the address it connects from), or from
//! everyone else (the clients):
//! - **cut**: like dropped packets. Connections open at the cut stop carrying anything
//!   (what arrives is swallowed, nothing is closed, so the peers see only silence and time
//!   out), new ones are accepted and left silent; when the link heals, those connections
//!   are closed (their streams lost bytes) and new ones carry traffic again;
//! - **delay**: every chunk forwarded waits this long first (latency, and less throughput);
//! - **flaky**: each chunk forwarded closes its connection with this probability per mille
//!   (a reset link, as when packets are lost long enough for a timeout).
//!
//! Since our quorum transport sends each node's messages on a connection of its own, a
//! proxy per (from, to) pair cuts one direction of the Raft traffic: one-way partitions.
//! Plain threads and blocking sockets: test tooling, at test loads.

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Default)]
struct LinkState {
    /// Bumped by every cut: a connection of an older generation carries nothing more.
    generation: AtomicU64,
    cut: AtomicBool,
    delay_ms: AtomicU64,
    flaky_per_mille: AtomicU32,
    /// Open connections: (id, generation, both sockets), to close when the link heals or
    /// stops; a connection that ends by itself takes itself out.
    connections: Mutex<Vec<(u64, u64, TcpStream, TcpStream)>>,
    next_id: AtomicU64,
    rng: AtomicU64,
}

impl LinkState {
    fn chance(&self, per_mille: u32) -> bool {
        if per_mille == 0 {
            return false;
        }
        // SplitMix64 steps on a shared counter: good enough for fault dice.
        let mut z = self
            .rng
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % 1000 < u64::from(per_mille)
    }
}

/// What arrives at a proxy from one source (or from every source not named): its faults.
#[derive(Debug)]
pub struct Link {
    state: Arc<LinkState>,
}

/// A proxy in front of one listener. Dropping it stops the proxy and closes its connections.
#[derive(Debug)]
pub struct FaultProxy {
    address: SocketAddr,
    /// Connections from every address not in `sources`.
    others: Link,
    sources: Vec<(IpAddr, Link)>,
    stopped: Arc<AtomicBool>,
}

impl FaultProxy {
    /// A proxy on an ephemeral port of `ip` (loopback, or the host's veth address that a
    /// node in a network namespace reaches) forwarding to `target`; `seed` drives the flaky
    /// link's dice. One link: every connection shares its faults.
    pub fn start_on(ip: IpAddr, target: SocketAddr, seed: u64) -> FaultProxy {
        FaultProxy::start_with_sources(ip, target, seed, &[])
    }

    /// [`FaultProxy::start_on`] with a link of its own for each of `sources` (connections
    /// from that address), besides the one of everyone else.
    pub fn start_with_sources(
        ip: IpAddr,
        target: SocketAddr,
        seed: u64,
        sources: &[IpAddr],
    ) -> FaultProxy {
        let listener = TcpListener::bind((ip, 0)).expect("bind a proxy port");
        let address = listener.local_addr().expect("proxy address");
        let link = |n: u64| Link {
            state: Arc::new(LinkState {
                rng: AtomicU64::new(seed ^ n.wrapping_mul(0x9e37_79b9)),
                ..LinkState::default()
            }),
        };
        let others = link(0);
        let sources: Vec<(IpAddr, Link)> = sources
            .iter()
            .zip(1..)
            .map(|(source, n)| (*source, link(n)))
            .collect();
        let stopped = Arc::new(AtomicBool::new(false));
        let route = Route {
            others: others.state.clone(),
            sources: sources
                .iter()
                .map(|(ip, link)| (*ip, link.state.clone()))
                .collect(),
        };
        let accepting = stopped.clone();
        std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || accept_loop(&listener, target, &route, &accepting))
            .expect("proxy thread");
        FaultProxy {
            address,
            others,
            sources,
            stopped,
        }
    }

    /// Where the node connects instead of `target`.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The link of connections from `source` (one of those the proxy started with).
    pub fn from(&self, source: IpAddr) -> &Link {
        self.sources
            .iter()
            .find(|(ip, _)| *ip == source)
            .map(|(_, link)| link)
            .unwrap_or_else(|| panic!("the proxy has no link of its own for {source}"))
    }

    /// The link of connections from any address without a link of its own.
    pub fn others(&self) -> &Link {
        &self.others
    }

    fn links(&self) -> impl Iterator<Item = &Link> {
        std::iter::once(&self.others).chain(self.sources.iter().map(|(_, link)| link))
    }

    /// No fault on any link.
    pub fn clear(&self) {
        self.links().for_each(Link::clear);
    }
}

impl Link {
    /// Cuts the link (see the module documentation).
    pub fn cut(&self) {
        self.state.generation.fetch_add(1, Ordering::SeqCst);
        self.state.cut.store(true, Ordering::SeqCst);
    }

    /// Heals a cut: the stalled connections are closed, new ones carry traffic.
    pub fn heal(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
        self.state.generation.fetch_add(1, Ordering::SeqCst);
        close_stale(&self.state);
    }

    pub fn is_cut(&self) -> bool {
        self.state.cut.load(Ordering::SeqCst)
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn set_flaky(&self, per_mille: u32) {
        self.state
            .flaky_per_mille
            .store(per_mille.min(1000), Ordering::SeqCst);
    }

    /// No fault: healed, no delay, not flaky.
    pub fn clear(&self) {
        self.set_delay(Duration::ZERO);
        self.set_flaky(0);
        if self.is_cut() {
            self.heal();
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        for link in self.links() {
            link.state.generation.fetch_add(1, Ordering::SeqCst);
            close_stale(&link.state);
        }
        // Wake the accept loop so that it sees the stop.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_millis(100));
    }
}

/// Which link a connection belongs to, by the address it comes from.
struct Route {
    others: Arc<LinkState>,
    sources: Vec<(IpAddr, Arc<LinkState>)>,
}

impl Route {
    fn link(&self, source: IpAddr) -> &Arc<LinkState> {
        self.sources
            .iter()
            .find(|(ip, _)| *ip == source)
            .map_or(&self.others, |(_, state)| state)
    }
}

/// Closes every connection of an older generation than the current one.
fn close_stale(state: &LinkState) {
    let current = state.generation.load(Ordering::SeqCst);
    let mut connections = state.connections.lock().unwrap_or_else(|e| e.into_inner());
    connections.retain(|(_, generation, a, b)| {
        if *generation == current {
            return true;
        }
        let _ = a.shutdown(Shutdown::Both);
        let _ = b.shutdown(Shutdown::Both);
        false
    });
}

fn accept_loop(listener: &TcpListener, target: SocketAddr, route: &Route, stopped: &AtomicBool) {
    for incoming in listener.incoming() {
        if stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = incoming else { continue };
        let Ok(peer) = client.peer_addr() else {
            continue;
        };
        let state = route.link(peer.ip());
        let generation = state.generation.load(Ordering::SeqCst);
        if state.cut.load(Ordering::SeqCst) {
            // Accepted and left silent: the connecting side sees a connection that never
            // answers, as across a partition. Closed when the link heals.
            if let Ok(copy) = client.try_clone() {
                let id = state.next_id.fetch_add(1, Ordering::SeqCst);
                state
                    .connections
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((id, generation.wrapping_sub(1), client, copy));
            }
            continue;
        }
        let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
            // The peer is down: so is the link.
            continue;
        };
        if state.generation.load(Ordering::SeqCst) != generation {
            // Cut (and maybe healed) while connecting: this connection would be left out of
            // the heal's cleanup and stay silent. Closed; the client connects again.
            continue;
        }
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let copies = (
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        );
        let (Ok(client_copy), Ok(server_copy), Ok(client_kept), Ok(server_kept)) = copies else {
            continue;
        };
        let id = state.next_id.fetch_add(1, Ordering::SeqCst);
        state
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, generation, client_kept, server_kept));
        for (from, to) in [(client, server_copy), (server, client_copy)] {
            let state = state.clone();
            let _ = std::thread::Builder::new()
                .name("fault-proxy-pipe".into())
                .spawn(move || pipe(from, to, id, generation, &state));
        }
    }
}

/// Forwards `from` → `to` while the connection's generation is current.
fn pipe(mut from: TcpStream, mut to: TcpStream, id: u64, generation: u64, state: &LinkState) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if state.generation.load(Ordering::SeqCst) != generation {
            continue; // cut: swallowed; the connection is closed when the link heals
        }
        let delay = state.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        if state.chance(state.flaky_per_mille.load(Ordering::SeqCst)) {
            break;
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    if state.generation.load(Ordering::SeqCst) == generation {
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
        state
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(other, ..)| *other != id);
    }
}
