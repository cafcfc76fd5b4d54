//! Kafka requests to another broker of the cluster, as a client would send them: what a
//! broker forwards (DescribeQuorum to the active controller, as Kafka's brokers do), and a
//! follower's fetches to its leader (a [`Connection`] carrying one request at a time).
//!
//! Depends on the protocol codec only; must not depend on handlers or the broker wiring.

use std::time::Duration;

use bytes::Buf;
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use sluice_protocol::header::encode_request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The client id of a request one broker sends another: a broker does not forward such a
/// request again (two nodes that each believe the other leads must not bounce it), and only
/// a fetch with this client id counts as a follower's.
pub const FORWARDED_CLIENT_ID: &str = "sluice-broker";
/// A forwarded request gives up after this long.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response read back (a forwarded answer is small: the quorum's state).
const MAX_RESPONSE: usize = 1 << 20;

/// Sends `request` (API `key`, `version`) to the broker at `host:port` and decodes its
/// response.
pub async fn call<Req: Encodable, Resp: Decodable>(
    host: &str,
    port: u16,
    key: ApiKey,
    version: i16,
    request: &Req,
) -> Result<Resp, String> {
    let exchange = async {
        let mut connection = Connection::open(host, port, MAX_RESPONSE).await?;
        connection.call(key, version, request).await
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer from {host}:{port} within {TIMEOUT:?}"))?
}

/// A connection to another broker that carries one request at a time (a follower's
/// fetches to its leader).
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    peer: String,
    correlation: i32,
    max_response: usize,
}

impl Connection {
    pub async fn open(host: &str, port: u16, max_response: usize) -> Result<Self, String> {
        let stream = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("{host}:{port}: {e}"))?;
        let _ = stream.set_nodelay(true);
        Ok(Connection {
            stream,
            peer: format!("{host}:{port}"),
            correlation: 0,
            max_response,
        })
    }

    /// Sends `request` and decodes its response. An error leaves the connection unusable.
    pub async fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<Resp, String> {
        self.correlation = self.correlation.wrapping_add(1);
        let correlation = self.correlation;
        let frame = encode_request(key, version, correlation, FORWARDED_CLIENT_ID, request)
            .map_err(|e| e.to_string())?;
        let peer = &self.peer;
        self.stream
            .write_all(&frame)
            .await
            .map_err(|e| format!("{peer}: {e}"))?;
        let size = usize::try_from(
            self.stream
                .read_i32()
                .await
                .map_err(|e| format!("{peer}: {e}"))?,
        )
        .map_err(|_| "a negative response size".to_string())?;
        if size > self.max_response {
            return Err(format!("{peer}: a response of {size} bytes"));
        }
        let mut body = vec![0u8; size];
        self.stream
            .read_exact(&mut body)
            .await
            .map_err(|e| format!("{peer}: {e}"))?;
        let mut body = bytes::Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, key.response_header_version(version))
            .map_err(|e| e.to_string())?;
        if header.correlation_id != correlation {
            return Err(format!("{peer}: correlation id {}", header.correlation_id));
        }
        let response = Resp::decode(&mut body, version).map_err(|e| e.to_string())?;
        if body.has_remaining() {
            return Err("trailing bytes after the response".into());
        }
        Ok(response)
    }
}
