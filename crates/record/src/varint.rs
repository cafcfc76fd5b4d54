//! Zig-zag varints as used inside v2 records (protobuf encoding).

/// Reads a zig-zag varint of at most `max_bytes` bytes from `buf` at `*pos`, advancing `pos`.
/// Returns `None` on truncation or an over-long encoding.
fn read_zigzag(buf: &[u8], pos: &mut usize, max_bytes: usize) -> Option<i64> {
    let mut raw: u64 = 0;
    for i in 0..max_bytes {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((raw >> 1) as i64 ^ -((raw & 1) as i64));
        }
    }
    None
}

pub(crate) fn read_varint(buf: &[u8], pos: &mut usize) -> Option<i32> {
    let value = read_zigzag(buf, pos, 5)?;
    i32::try_from(value).ok()
}

pub(crate) fn read_varlong(buf: &[u8], pos: &mut usize) -> Option<i64> {
    read_zigzag(buf, pos, 10)
}

pub(crate) fn write_varlong(out: &mut Vec<u8>, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    while raw >= 0x80 {
        out.push((raw as u8) | 0x80);
        raw >>= 7;
    }
    out.push(raw as u8);
}

pub(crate) fn write_varint(out: &mut Vec<u8>, value: i32) {
    write_varlong(out, i64::from(value));
}

#[cfg(test)]
fn varlong_len(value: i64) -> usize {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    let mut len = 1;
    while raw >= 0x80 {
        raw >>= 7;
        len += 1;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        let mut out = Vec::new();
        write_varint(&mut out, -1);
        write_varint(&mut out, 0);
        write_varint(&mut out, 1);
        write_varint(&mut out, 300);
        assert_eq!(out, [0x01, 0x00, 0x02, 0xd8, 0x04]);
    }

    #[test]
    fn rejects_truncated_and_overlong() {
        let mut pos = 0;
        assert_eq!(read_varint(&[0x80], &mut pos), None);
        let mut pos = 0;
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01], &mut pos),
            None
        );
    }

    proptest! {
        #[test]
        fn roundtrip(value in any::<i64>()) {
            let mut out = Vec::new();
            write_varlong(&mut out, value);
            prop_assert_eq!(out.len(), varlong_len(value));
            let mut pos = 0;
            prop_assert_eq!(read_varlong(&out, &mut pos), Some(value));
            prop_assert_eq!(pos, out.len());
        }
    }
}
