//! The five codecs a batch's attributes can name, with bounded decompression.

use std::io::{Read, Write};

use crate::RecordError;

/// Compression codec of a batch (attribute bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// The header the Java client's snappy stream (xerial `SnappyOutputStream`) starts with.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_SIZE: usize = 16;
/// Uncompressed size of one xerial block, as the Java client writes them.
const XERIAL_BLOCK_SIZE: usize = 32 * 1024;

impl Compression {
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    pub fn from_id(id: u8) -> Result<Self, RecordError> {
        Ok(match id {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => return Err(RecordError::UnknownCompression(other)),
        })
    }

    pub fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The name Kafka uses in `compression.type`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// Decompresses `input`, failing rather than producing more than `limit` bytes.
    pub fn decompress(self, input: &[u8], limit: usize) -> Result<Vec<u8>, RecordError> {
        let result = match self {
            Compression::None => {
                if input.len() > limit {
                    return Err(RecordError::DecompressedTooLarge { limit });
                }
                return Ok(input.to_vec());
            }
            Compression::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(input), limit),
            Compression::Snappy => decompress_snappy(input, limit),
            Compression::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(input), limit),
            Compression::Zstd => zstd::stream::read::Decoder::new(input)
                .map_err(|err| err.to_string())
                .and_then(|decoder| read_bounded(decoder, limit)),
        };
        result.map_err(|reason| {
            if reason == TOO_LARGE {
                RecordError::DecompressedTooLarge { limit }
            } else {
                RecordError::Decompression {
                    codec: self,
                    reason,
                }
            }
        })
    }

    /// Compresses `input` the way Kafka clients do (xerial framing for snappy, LZ4 frame).
    pub fn compress(self, input: &[u8]) -> Result<Vec<u8>, RecordError> {
        let fail = |reason: std::io::Error| RecordError::Compression {
            codec: self,
            reason: reason.to_string(),
        };
        match self {
            Compression::None => Ok(input.to_vec()),
            Compression::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                encoder.write_all(input).map_err(fail)?;
                encoder.finish().map_err(fail)
            }
            Compression::Snappy => {
                compress_snappy_xerial(input).map_err(|err| RecordError::Compression {
                    codec: self,
                    reason: err.to_string(),
                })
            }
            Compression::Lz4 => {
                let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
                encoder.write_all(input).map_err(fail)?;
                encoder.finish().map_err(|err| RecordError::Compression {
                    codec: self,
                    reason: err.to_string(),
                })
            }
            Compression::Zstd => zstd::bulk::compress(input, 3).map_err(fail),
        }
    }
}

const TOO_LARGE: &str = "output over limit";

fn read_bounded(reader: impl Read, limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|err| err.to_string())?;
    if out.len() > limit {
        return Err(TOO_LARGE.to_string());
    }
    Ok(out)
}

fn decompress_raw_snappy(input: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), String> {
    let len = snap::raw::decompress_len(input).map_err(|err| err.to_string())?;
    if out.len() + len > limit {
        return Err(TOO_LARGE.to_string());
    }
    let start = out.len();
    out.resize(start + len, 0);
    snap::raw::Decoder::new()
        .decompress(input, &mut out[start..])
        .map_err(|err| err.to_string())?;
    Ok(())
}

/// Snappy as Kafka clients send it: either one raw block (librdkafka) or the xerial stream
/// of length-prefixed raw blocks (Java client).
fn decompress_snappy(input: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    if !input.starts_with(&XERIAL_MAGIC) {
        decompress_raw_snappy(input, limit, &mut out)?;
        return Ok(out);
    }
    if input.len() < XERIAL_HEADER_SIZE {
        return Err("truncated xerial header".to_string());
    }
    let mut rest = &input[XERIAL_HEADER_SIZE..];
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err("truncated xerial block length".to_string());
        }
        let block_len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        rest = &rest[4..];
        if block_len > rest.len() {
            return Err("truncated xerial block".to_string());
        }
        decompress_raw_snappy(&rest[..block_len], limit, &mut out)?;
        rest = &rest[block_len..];
    }
    Ok(out)
}

fn compress_snappy_xerial(input: &[u8]) -> Result<Vec<u8>, snap::Error> {
    let mut out = Vec::with_capacity(XERIAL_HEADER_SIZE + input.len() / 2);
    out.extend_from_slice(&XERIAL_MAGIC);
    out.extend_from_slice(&1i32.to_be_bytes()); // version
    out.extend_from_slice(&1i32.to_be_bytes()); // minimum compatible version
    let mut encoder = snap::raw::Encoder::new();
    for block in input.chunks(XERIAL_BLOCK_SIZE) {
        let compressed = encoder.compress_vec(block)?;
        out.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
        out.extend_from_slice(&compressed);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn raw_snappy_is_accepted_as_librdkafka_sends_it() {
        let data = b"hello hello hello hello".repeat(100);
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(Compression::Snappy.decompress(&raw, 1 << 20).unwrap(), data);
    }

    #[test]
    fn decompression_is_bounded() {
        let data = vec![0u8; 1 << 20];
        for codec in Compression::ALL {
            let compressed = codec.compress(&data).unwrap();
            assert_eq!(
                codec.decompress(&compressed, 1000).unwrap_err(),
                RecordError::DecompressedTooLarge { limit: 1000 },
                "{codec:?}"
            );
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let garbage = [
            0x82u8, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1, 255,
        ];
        for codec in Compression::ALL {
            if codec != Compression::None {
                assert!(codec.decompress(&garbage, 1 << 20).is_err(), "{codec:?}");
                assert!(
                    codec.decompress(&garbage[..5], 1 << 20).is_err(),
                    "{codec:?}"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn roundtrip(data in proptest::collection::vec(any::<u8>(), 0..100_000), id in 0u8..5) {
            let codec = Compression::from_id(id).unwrap();
            let compressed = codec.compress(&data).unwrap();
            prop_assert_eq!(codec.decompress(&compressed, data.len()).unwrap(), data);
        }
    }
}
