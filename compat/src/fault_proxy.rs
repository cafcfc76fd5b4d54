//! A fault-injecting TCP proxy for one direction of one link between two nodes: a node
//! connects to the proxy instead of its peer. Faults, switched at any time:
//! - **cut**: like dropped packets. Connections open at the cut stop carrying anything
//!   (what arrives is swallowed, nothing is closed, so the peers see only silence and time
//!   out), new ones are accepted and left silent; when the link heals, those connections
//!   are closed (their streams lost bytes) and new ones carry traffic again;
//! - **delay**: every chunk forwarded waits this long first (latency, and less throughput);
//! - **flaky**: each chunk forwarded closes its connection with this probability per mille
//!   (a reset link).
//!
//! Since our quorum transport sends each node's messages on a connection of its own, a
//! proxy per (from, to) pair cuts one direction of the Raft traffic: one-way partitions.
//! Plain threads and blocking sockets: test tooling, at test loads.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
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
    stopped: AtomicBool,
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

/// One direction of one link. Dropping it stops the proxy and closes its connections.
#[derive(Debug)]
pub struct FaultProxy {
    address: SocketAddr,
    state: Arc<LinkState>,
}

impl FaultProxy {
    /// A proxy on an ephemeral port of `ip` (loopback, or the host's veth address that a
    /// node in a network namespace reaches) forwarding to `target`; `seed` drives the flaky
    /// link's dice.
    pub fn start_on(ip: std::net::IpAddr, target: SocketAddr, seed: u64) -> FaultProxy {
        let listener = TcpListener::bind((ip, 0)).expect("bind a proxy port");
        let address = listener.local_addr().expect("proxy address");
        let state = Arc::new(LinkState {
            rng: AtomicU64::new(seed),
            ..LinkState::default()
        });
        let accepting = state.clone();
        std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || accept_loop(&listener, target, &accepting))
            .expect("proxy thread");
        FaultProxy { address, state }
    }

    /// Where the node connects instead of `target`.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

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
        self.state.stopped.store(true, Ordering::SeqCst);
        self.state.generation.fetch_add(1, Ordering::SeqCst);
        close_stale(&self.state);
        // Wake the accept loop so that it sees the stop.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_millis(100));
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

fn accept_loop(listener: &TcpListener, target: SocketAddr, state: &Arc<LinkState>) {
    for incoming in listener.incoming() {
        if state.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = incoming else { continue };
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
