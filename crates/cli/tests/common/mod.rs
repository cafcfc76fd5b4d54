//! What the `sluice` binary's integration tests share: running the binary, a free port, and
//! waiting for a process to listen. (Each test file uses a part of it.)
#![allow(dead_code)]

pub mod http;
pub mod postgres;

use std::net::TcpStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

/// A loopback port nothing listens on (at the time of asking).
pub fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

/// Waits up to 30 s for `child` to accept connections on `port`; fails if it exits first.
pub fn wait_listening(child: &mut Child, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listening on port {port}"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the process exited with {status} before listening on port {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `sluice broker` on 127.0.0.1:`port` with its data in `data`, listening when this returns.
/// Its log (warnings only) goes to the test's output.
pub fn spawn_broker(data: &std::path::Path, port: u16) -> Child {
    spawn_broker_with_env(data, port, &[])
}

/// The same, with extra environment (`SLUICE_<PROPERTY>` settings).
pub fn spawn_broker_with_env(data: &std::path::Path, port: u16, env: &[(&str, &str)]) -> Child {
    let mut child = sluice()
        .args([
            "broker",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data)
        .envs(env.iter().copied())
        .env("SLUICE_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(&mut child, port);
    child
}
