//! Length-prefixed frames: a 4-byte big-endian size, then that many bytes.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Why no frame could be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: u32, limit: u32 },
    #[error("negative or empty frame size {0}")]
    BadSize(i32),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads the size of the next frame. `Ok(None)` when the peer closed cleanly between frames.
pub async fn read_frame_size<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: u32,
) -> Result<Option<u32>, FrameError> {
    let mut size = [0u8; 4];
    let mut filled = 0;
    while filled < 4 {
        let n = reader.read(&mut size[filled..]).await?;
        if n == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        filled += n;
    }
    let size = i32::from_be_bytes(size);
    if size <= 0 {
        return Err(FrameError::BadSize(size));
    }
    let size = size as u32;
    if size > limit {
        return Err(FrameError::TooLarge { size, limit });
    }
    Ok(Some(size))
}

/// Reads a frame body of `size` bytes (as announced by [`read_frame_size`]). Memory grows
/// with what actually arrives, so a client announcing a large frame and sending little
/// costs little.
pub async fn read_frame_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    size: u32,
) -> Result<BytesMut, FrameError> {
    const STEP: usize = 64 * 1024;
    let size = size as usize;
    let mut body = BytesMut::with_capacity(size.min(STEP));
    while body.len() < size {
        if body.capacity() == body.len() {
            body.reserve((size - body.len()).min(body.len().max(STEP)));
        }
        let room = (size - body.len()).min(body.capacity() - body.len());
        let read = (&mut *reader).take(room as u64).read_buf(&mut body).await?;
        if read == 0 {
            return Err(FrameError::Truncated);
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_frames_and_enforces_the_limit() {
        let mut input: &[u8] = &[0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 9];
        let size = read_frame_size(&mut input, 100).await.unwrap().unwrap();
        assert_eq!(
            &read_frame_body(&mut input, size).await.unwrap()[..],
            b"abc"
        );
        assert!(matches!(
            read_frame_size(&mut input, 5).await,
            Err(FrameError::TooLarge { size: 9, limit: 5 })
        ));

        let mut empty: &[u8] = &[];
        assert!(read_frame_size(&mut empty, 100).await.unwrap().is_none());
        let mut negative: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame_size(&mut negative, 100).await,
            Err(FrameError::BadSize(-1))
        ));
        let mut torn: &[u8] = &[0, 0];
        assert!(matches!(
            read_frame_size(&mut torn, 100).await,
            Err(FrameError::Truncated)
        ));
        let mut short_body: &[u8] = &[1, 2];
        assert!(matches!(
            read_frame_body(&mut short_body, 5).await,
            Err(FrameError::Truncated)
        ));
    }
}
