//! A minimal Kafka protocol client for admin requests whose per-resource answers librdkafka
//! (through the `rdkafka` crate) does not pass on: the crate's AlterConfigs drops each
//! resource's error, and no admin call returns the broker's `error_message`. One blocking
//! connection to the first reachable bootstrap broker; versions are negotiated with
//! ApiVersions, so any Kafka-compatible broker that has the API can answer.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::ops::RangeInclusive;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use sluice_protocol::header::encode_request;

use super::TIMEOUT;

/// Largest response accepted (a list of every topic's configs fits many times over).
const MAX_RESPONSE_BYTES: usize = 64 << 20;

pub struct Wire {
    stream: TcpStream,
    correlation: i32,
    bootstrap: String,
    /// What the broker serves, from ApiVersions v0.
    served: Vec<(i16, i16, i16)>,
}

impl Wire {
    /// Connects to the first bootstrap broker that answers.
    pub fn connect(bootstrap: &str) -> anyhow::Result<Wire> {
        let mut last_error = None;
        for server in bootstrap
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let addrs = match server.to_socket_addrs() {
                Ok(addrs) => addrs,
                Err(err) => {
                    last_error = Some(format!("{server}: {err}"));
                    continue;
                }
            };
            for addr in addrs {
                match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                    Ok(stream) => {
                        stream.set_read_timeout(Some(TIMEOUT * 3))?;
                        stream.set_write_timeout(Some(TIMEOUT))?;
                        let mut wire = Wire {
                            stream,
                            correlation: 0,
                            bootstrap: bootstrap.to_string(),
                            served: Vec::new(),
                        };
                        let versions: ApiVersionsResponse = wire.call_version(
                            ApiKey::ApiVersions,
                            0,
                            &ApiVersionsRequest::default(),
                        )?;
                        wire.served = versions
                            .api_keys
                            .iter()
                            .map(|k| (k.api_key, k.min_version, k.max_version))
                            .collect();
                        return Ok(wire);
                    }
                    Err(err) => last_error = Some(format!("{addr}: {err}")),
                }
            }
        }
        anyhow::bail!(
            "cannot reach a broker at {bootstrap}: {}",
            last_error.unwrap_or_else(|| "no address".into())
        )
    }

    /// Sends `request` at the highest version in `ours` the broker serves.
    pub fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        ours: RangeInclusive<i16>,
        request: &Req,
    ) -> anyhow::Result<(i16, Resp)> {
        let (_, min, max) = self
            .served
            .iter()
            .copied()
            .find(|(k, _, _)| *k == key as i16)
            .with_context(|| format!("the broker at {} does not serve {key:?}", self.bootstrap))?;
        let version = (*ours.end()).min(max);
        anyhow::ensure!(
            version >= *ours.start() && version >= min,
            "the broker at {} serves {key:?} v{min}-v{max}; this tool speaks v{}-v{}",
            self.bootstrap,
            ours.start(),
            ours.end()
        );
        Ok((version, self.call_version(key, version, request)?))
    }

    fn call_version<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> anyhow::Result<Resp> {
        self.correlation += 1;
        let buf = encode_request(key, version, self.correlation, "sluice-cli", request)?;
        let unreachable =
            |e: std::io::Error| anyhow::anyhow!("cannot reach a broker at {}: {e}", self.bootstrap);
        self.stream.write_all(&buf).map_err(unreachable)?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).map_err(unreachable)?;
        let len = usize::try_from(i32::from_be_bytes(len)).context("negative response size")?;
        anyhow::ensure!(len <= MAX_RESPONSE_BYTES, "response of {len} bytes refused");
        let mut frame = vec![0u8; len];
        self.stream.read_exact(&mut frame).map_err(unreachable)?;
        let mut frame = Bytes::from(frame);
        let header = ResponseHeader::decode(&mut frame, key.response_header_version(version))
            .context("decoding a response header")?;
        anyhow::ensure!(
            header.correlation_id == self.correlation,
            "response out of order"
        );
        Resp::decode(&mut frame, version).with_context(|| format!("decoding {key:?} v{version}"))
    }
}

/// `None` for success, else the error's name and the broker's message, for one line.
pub fn failure(code: i16, message: Option<&StrBytes>) -> Option<String> {
    if code == 0 {
        return None;
    }
    let name = ResponseError::try_from_code(code)
        .map_or_else(|| format!("error {code}"), |e| format!("{e:?}"));
    Some(
        match message.map(|m| m.as_str()).filter(|m| !m.is_empty()) {
            Some(message) => format!("{name}: {message}"),
            None => name,
        },
    )
}
