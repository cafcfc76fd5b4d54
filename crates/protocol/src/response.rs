//! Responses as a list of chunks: encoded bytes, and file regions that stay in the log's
//! files until they are written to the socket.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::Encodable;

/// A byte range of an open file that goes to the socket as it is (record data of a fetch).
/// Whoever makes one vouches that the range is within the file; holding it keeps the file
/// open.
#[derive(Debug, Clone)]
pub struct FileChunk {
    file: Arc<File>,
    position: u64,
    len: u64,
}

impl FileChunk {
    pub fn new(file: Arc<File>, position: u64, len: u64) -> Self {
        FileChunk {
            file,
            position,
            len,
        }
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies the range into memory.
    pub fn read_to_vec(&self) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; self.len as usize];
        self.file.read_exact_at(&mut buf, self.position)?;
        Ok(buf)
    }
}

#[derive(Debug, Clone)]
pub enum Chunk {
    Bytes(Bytes),
    File(FileChunk),
}

impl Chunk {
    pub fn len(&self) -> usize {
        match self {
            Chunk::Bytes(bytes) => bytes.len(),
            Chunk::File(region) => region.len() as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A whole response frame, size prefix included.
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub chunks: Vec<Chunk>,
}

impl Response {
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Chunk::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Copies the whole response into memory (tests, and the copying write path).
    pub fn to_vec(&self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.len());
        for chunk in &self.chunks {
            match chunk {
                Chunk::Bytes(bytes) => out.extend_from_slice(bytes),
                Chunk::File(region) => out.extend_from_slice(&region.read_to_vec()?),
            }
        }
        Ok(out)
    }
}

/// Encoding failed: a bug or a value the requested version cannot carry.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode {api_key:?} v{version} {what}: {reason}")]
pub struct EncodeError {
    pub api_key: ApiKey,
    pub version: i16,
    /// "request" or "response".
    pub what: &'static str,
    pub reason: String,
}

/// Writes the response header for `api_key`/`version` into `buf`.
pub fn put_header(buf: &mut BytesMut, api_key: ApiKey, version: i16, correlation_id: i32) {
    let header_version = api_key.response_header_version(version);
    buf.put_i32(correlation_id);
    if header_version >= 1 {
        buf.put_u8(0); // no tagged fields
    }
}

/// Encodes a complete response frame with a body from the codec.
pub fn encode<T: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<Response, EncodeError> {
    let fail = |reason: String| EncodeError {
        api_key,
        version,
        what: "response",
        reason,
    };
    let body_size = body
        .compute_size(version)
        .map_err(|e| fail(e.to_string()))?;
    let mut buf = BytesMut::with_capacity(4 + 5 + body_size);
    buf.put_i32(0); // size, patched below
    put_header(&mut buf, api_key, version, correlation_id);
    body.encode(&mut buf, version)
        .map_err(|e| fail(e.to_string()))?;
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(Response {
        chunks: vec![Chunk::Bytes(buf.freeze())],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiVersionsResponse;

    #[test]
    fn frames_carry_their_size_and_header() {
        let body = ApiVersionsResponse::default();
        let response = encode(ApiKey::ApiVersions, 3, 42, &body).unwrap();
        let bytes = response.to_vec().unwrap();
        let size = i32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert_eq!(size, bytes.len() - 4);
        // ApiVersions responses always use header v0: no tagged-field byte after the id.
        assert_eq!(&bytes[4..8], &42i32.to_be_bytes());
        assert_eq!(bytes.len(), 4 + 4 + body.compute_size(3).unwrap());
    }
}
