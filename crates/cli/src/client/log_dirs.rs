//! DescribeLogDirs, which librdkafka does not expose: partition sizes for `topic describe`.
//! A plain request over TCP to one broker, encoded and decoded with the `kafka-protocol`
//! crate's codecs.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;

use bytes::{Buf, BytesMut};
use kafka_protocol::messages::{
    ApiKey, DescribeLogDirsRequest, DescribeLogDirsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::TIMEOUT;

const VERSION: i16 = 1;

/// Bytes on disk per partition of `topic` on the broker at `host:port`.
pub fn partition_sizes(host: &str, port: i32, topic: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
    let key = ApiKey::DescribeLogDirs;
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(VERSION)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("sluice-cli")))
        .encode(&mut body, key.request_header_version(VERSION))?;
    // No topic list (null): every partition of every log directory.
    DescribeLogDirsRequest::default()
        .with_topics(None)
        .encode(&mut body, VERSION)?;
    let mut stream = TcpStream::connect((host, port as u16))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.write_all(&(body.len() as i32).to_be_bytes())?;
    stream.write_all(&body)?;
    let mut size = [0u8; 4];
    stream.read_exact(&mut size)?;
    let size = i32::from_be_bytes(size);
    anyhow::ensure!(
        (0..=64 << 20).contains(&size),
        "DescribeLogDirs response of {size} bytes"
    );
    let mut response = vec![0u8; size as usize];
    stream.read_exact(&mut response)?;
    let mut response = bytes::Bytes::from(response);
    ResponseHeader::decode(&mut response, key.response_header_version(VERSION))?;
    let decoded = DescribeLogDirsResponse::decode(&mut response, VERSION)?;
    anyhow::ensure!(
        !response.has_remaining(),
        "trailing bytes in DescribeLogDirs response"
    );
    let mut sizes = BTreeMap::new();
    for dir in &decoded.results {
        for t in dir.topics.iter().filter(|t| t.name.0.as_str() == topic) {
            for p in &t.partitions {
                *sizes.entry(p.partition_index).or_insert(0) += p.partition_size;
            }
        }
    }
    Ok(sizes)
}
