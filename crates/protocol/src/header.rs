//! Request headers (v0-v2): parsed as the broker reads them, and whole request frames encoded
//! for Sluice's own clients.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::response::EncodeError;

/// A parsed request header and the body that follows it.
#[derive(Debug)]
pub struct Request {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    pub body: Bytes,
}

/// A header that cannot be served. Carries the correlation id when it could be read, so
/// that the caller can log it.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("request of {0} bytes is too short for a header")]
    TooShort(usize),
    #[error("unknown API key {api_key} (correlation id {correlation_id})")]
    UnknownApiKey {
        api_key: i16,
        api_version: i16,
        correlation_id: i32,
    },
    #[error("malformed {api_key:?} v{api_version} request header: {reason}")]
    Malformed {
        api_key: ApiKey,
        api_version: i16,
        reason: String,
    },
}

/// A request whose body the codec cannot decode.
#[derive(Debug, thiserror::Error)]
#[error("malformed {api_key:?} v{api_version} request body: {reason}")]
pub struct BodyError {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub reason: String,
}

impl Request {
    /// Decodes the body as `T`, the request type of this API. The caller has checked that the
    /// version is servable.
    pub fn decode<T: Decodable>(&self) -> Result<T, BodyError> {
        let mut body = self.body.clone();
        T::decode(&mut body, self.api_version).map_err(|err| BodyError {
            api_key: self.api_key,
            api_version: self.api_version,
            reason: format!("{err:#}"),
        })
    }

    /// Decodes the body with the codec, whatever the API. The caller has checked the version
    /// is servable.
    pub fn decode_body(&self) -> Result<RequestKind, BodyError> {
        let mut body = self.body.clone();
        RequestKind::decode(self.api_key, &mut body, self.api_version).map_err(|err| BodyError {
            api_key: self.api_key,
            api_version: self.api_version,
            reason: format!("{err:#}"),
        })
    }
}

/// Parses the header at the start of a frame.
pub fn parse_request(mut frame: Bytes) -> Result<Request, HeaderError> {
    if frame.len() < 8 {
        return Err(HeaderError::TooShort(frame.len()));
    }
    let api_key_raw = i16::from_be_bytes([frame[0], frame[1]]);
    let api_version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Ok(api_key) = ApiKey::try_from(api_key_raw) else {
        return Err(HeaderError::UnknownApiKey {
            api_key: api_key_raw,
            api_version,
            correlation_id,
        });
    };
    let header_version = api_key.request_header_version(api_version);
    let header = RequestHeader::decode(&mut frame, header_version).map_err(|err| {
        HeaderError::Malformed {
            api_key,
            api_version,
            reason: err.to_string(),
        }
    })?;
    let client_id = header.client_id.map(|id| id.to_string());
    Ok(Request {
        api_key,
        api_version,
        correlation_id,
        client_id,
        body: frame.copy_to_bytes(frame.remaining()),
    })
}

/// A request as it goes on the wire: the size prefix, the header in the version `version` of
/// `api` takes, then `body`. For Sluice's own clients: the CLI, a broker calling its peers,
/// tests.
pub fn encode_request<T: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: &'static str,
    body: &T,
) -> Result<BytesMut, EncodeError> {
    let failed = |reason: String| EncodeError {
        api_key: api,
        version,
        what: "request",
        reason,
    };
    let mut frame = BytesMut::new();
    frame.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(client_id)))
        .encode(&mut frame, api.request_header_version(version))
        .map_err(|e| failed(e.to_string()))?;
    body.encode(&mut frame, version)
        .map_err(|e| failed(e.to_string()))?;
    let size = i32::try_from(frame.len() - 4).map_err(|_| failed("too large".into()))?;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    #[test]
    fn parses_v1_and_v2_headers() {
        for (api_key, version) in [
            (ApiKey::Metadata, 1),
            (ApiKey::Metadata, 9),
            (ApiKey::ApiVersions, 3),
        ] {
            let header = RequestHeader::default()
                .with_request_api_key(api_key as i16)
                .with_request_api_version(version)
                .with_correlation_id(77)
                .with_client_id(Some(StrBytes::from_static_str("me")));
            let mut buf = BytesMut::new();
            header
                .encode(&mut buf, api_key.request_header_version(version))
                .unwrap();
            buf.extend_from_slice(b"body");
            let request = parse_request(buf.freeze()).unwrap();
            assert_eq!(request.api_key, api_key);
            assert_eq!(request.correlation_id, 77);
            assert_eq!(request.client_id.as_deref(), Some("me"));
            assert_eq!(&request.body[..], b"body");
        }
    }

    #[test]
    fn rejects_short_unknown_and_malformed_headers() {
        assert!(matches!(
            parse_request(Bytes::from_static(&[0, 3, 0])),
            Err(HeaderError::TooShort(3))
        ));
        let unknown = Bytes::from_static(&[0x7f, 0x00, 0, 1, 0, 0, 0, 9]);
        assert!(matches!(
            parse_request(unknown),
            Err(HeaderError::UnknownApiKey {
                api_key: 0x7f00,
                correlation_id: 9,
                ..
            })
        ));
        // Metadata v1 header with a client id length running past the end.
        let malformed = Bytes::from_static(&[0, 3, 0, 1, 0, 0, 0, 1, 0, 50, b'x']);
        assert!(matches!(
            parse_request(malformed),
            Err(HeaderError::Malformed { .. })
        ));
    }
}
