//! DescribeLogDirs, which librdkafka does not expose: partition sizes for `topic describe`.
//! A plain request over TCP to one broker, encoded and decoded with the `kafka-protocol`
//! crate's codecs.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;

use bytes::Buf;
use kafka_protocol::messages::{
    ApiKey, DescribeLogDirsRequest, DescribeLogDirsResponse, ResponseHeader,
};
use kafka_protocol::protocol::Decodable;
use sluice_protocol::header::encode_request;

use super::TIMEOUT;

const VERSION: i16 = 1;

/// Bytes on disk per partition of `topic` on the broker at `host:port`.
pub fn partition_sizes(host: &str, port: i32, topic: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
    let key = ApiKey::DescribeLogDirs;
    // No topic list (null): every partition of every log directory.
    let request = DescribeLogDirsRequest::default().with_topics(None);
    let frame = encode_request(key, VERSION, 1, "sluice-cli", &request)?;
    let mut stream = TcpStream::connect((host, port as u16))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.write_all(&frame)?;
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
