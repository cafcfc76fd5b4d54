//! `partition.metadata`: the file in each partition directory naming the topic ID it belongs
//! to (KIP-516), in Kafka's format:
//!
//! ```text
//! version: 0
//! topic_id: <the ID in Kafka's text form: URL-safe base64 of its 16 bytes, no padding>
//! ```
//!
//! A directory whose file names another ID belongs to an earlier topic of the same name
//! (deleted, then recreated): it is never served as the new one.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use uuid::Uuid;

pub const FILE_NAME: &str = "partition.metadata";

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Kafka's text form of a topic ID (`Uuid.toString()` in Kafka).
pub fn encode_id(id: Uuid) -> String {
    let bytes = id.as_bytes();
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let mut buf = [0u8; 3];
        buf[..chunk.len()].copy_from_slice(chunk);
        let n = u32::from(buf[0]) << 16 | u32::from(buf[1]) << 8 | u32::from(buf[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Parses Kafka's text form of a topic ID.
pub fn decode_id(text: &str) -> Option<Uuid> {
    if text.len() != 22 {
        return None;
    }
    let mut bits = 0u32;
    let mut count = 0;
    let mut bytes = Vec::with_capacity(16);
    for c in text.bytes() {
        let value = ALPHABET.iter().position(|&a| a == c)? as u32;
        bits = bits << 6 | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            bytes.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    // 22 characters carry 132 bits: the last 4 must be zero.
    if bits != 0 || bytes.len() != 16 {
        return None;
    }
    Some(Uuid::from_bytes(bytes.try_into().ok()?))
}

/// The topic ID the directory's file names, if it has a readable one.
pub fn read(dir: &Path) -> Option<Uuid> {
    let text = std::fs::read_to_string(dir.join(FILE_NAME)).ok()?;
    let mut version = None;
    let mut id = None;
    for line in text.lines() {
        match line.split_once(':') {
            Some(("version", v)) => version = Some(v.trim().to_string()),
            Some(("topic_id", v)) => id = decode_id(v.trim()),
            _ => {}
        }
    }
    if version.as_deref() != Some("0") {
        return None;
    }
    id
}

/// Writes the file durably (temporary file, fsync, rename, directory fsync).
pub fn write(dir: &Path, id: Uuid) -> io::Result<()> {
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let mut file = File::create(&tmp)?;
    write!(file, "version: 0\ntopic_id: {}\n", encode_id(id))?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(FILE_NAME))?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_in_kafkas_text_form() {
        // Kafka: new Uuid(0x0123456789abcdefL, 0xfedcba9876543210L).toString()
        let id = Uuid::from_u128(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210);
        assert_eq!(encode_id(id), "ASNFZ4mrze_-3LqYdlQyEA");
        for _ in 0..1000 {
            let id = Uuid::new_v4();
            assert_eq!(decode_id(&encode_id(id)), Some(id));
        }
        assert_eq!(decode_id("ASNFZ4mrze_-3LqYdlQyE"), None, "too short");
        assert_eq!(decode_id("ASNFZ4mrze_-3LqYdlQyE!"), None, "not base64");
        assert_eq!(
            decode_id("ASNFZ4mrze_-3LqYdlQyEB"),
            None,
            "padding bits set"
        );
    }

    #[test]
    fn the_file_round_trips_and_a_damaged_one_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), None);
        let id = Uuid::new_v4();
        write(dir.path(), id).unwrap();
        assert_eq!(read(dir.path()), Some(id));
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert!(text.starts_with("version: 0\ntopic_id: "), "{text}");
        std::fs::write(dir.path().join(FILE_NAME), "version: 1\ntopic_id: x\n").unwrap();
        assert_eq!(read(dir.path()), None);
    }
}
