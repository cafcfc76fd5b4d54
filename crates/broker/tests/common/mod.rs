//! Starting brokers for integration tests, and a raw protocol client.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use sluice_broker::{BrokerConfig, BrokerHandle, GuardedAllocator};

// What the `sluice` binary installs: the codec's capacity bombs must not abort the tests'
// in-process brokers either.
#[global_allocator]
static ALLOCATOR: GuardedAllocator = GuardedAllocator;

/// A broker on an ephemeral loopback port with its data in `dir`.
pub async fn start_broker(dir: &Path, extra: &[(&str, &str)]) -> BrokerHandle {
    start_broker_with_clock(dir, extra, std::sync::Arc::new(sluice_log::SystemClock)).await
}

/// The same, reading time from `clock` (a test's `ManualClock`).
pub async fn start_broker_with_clock(
    dir: &Path,
    extra: &[(&str, &str)],
    clock: std::sync::Arc<dyn sluice_log::Clock>,
) -> BrokerHandle {
    let mut props: BTreeMap<String, String> = BTreeMap::new();
    props.insert("listeners".into(), "127.0.0.1:0".into());
    props.insert("log.dirs".into(), dir.display().to_string());
    for (k, v) in extra {
        props.insert(k.to_string(), v.to_string());
    }
    let mut config = BrokerConfig::from_overrides(props).expect("valid test config");
    config.clock = clock;
    sluice_broker::start(config).await.expect("broker starts")
}

/// A free port below the ephemeral range, where no outgoing connection (of this test or of
/// another running beside it) can take it between this probe and the voter's bind, nor while
/// a stopped voter is down.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = (std::process::id() as u16).wrapping_mul(4099);
    for _ in 0..20_000u32 {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 10_000 + seed.wrapping_add(step.wrapping_mul(17)) % 20_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}

/// A blocking client that speaks the protocol with `kafka-protocol` codecs.
pub struct RawClient {
    stream: TcpStream,
    correlation_id: i32,
}

impl RawClient {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        RawClient {
            stream,
            correlation_id: 0,
        }
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Sends a request and returns the response body (header checked and stripped).
    pub fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Resp {
        let mut body = self.call_raw(api_key, version, request).expect("response");
        let response = Resp::decode(&mut body, version)
            .unwrap_or_else(|e| panic!("decoding {api_key:?} v{version} response: {e}"));
        assert!(
            !body.has_remaining(),
            "{api_key:?} v{version}: {} trailing bytes",
            body.remaining()
        );
        response
    }

    /// Sends a request; `None` if the broker closed the connection instead of answering.
    pub fn call_raw<Req: Encodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Option<Bytes> {
        self.correlation_id += 1;
        let frame = sluice_protocol::header::encode_request(
            api_key,
            version,
            self.correlation_id,
            "raw-test",
            request,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        self.stream.write_all(&frame).ok()?;
        let mut frame = self.read_frame()?;
        let header =
            ResponseHeader::decode(&mut frame, api_key.response_header_version(version)).unwrap();
        assert_eq!(
            header.correlation_id, self.correlation_id,
            "responses out of order"
        );
        Some(frame)
    }

    pub fn read_frame(&mut self) -> Option<Bytes> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).ok()?;
        let mut frame = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut frame).ok()?;
        Some(Bytes::from(frame))
    }
}
