//! Writing response chunks to a socket: bytes with `write_all`, file regions with `sendfile`
//! (zero-copy) or, on the copying path, through a reused buffer.

use std::io;
use std::os::fd::AsFd;

use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;

use crate::response::{Chunk, Response};

/// How file regions reach the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileTransfer {
    /// `sendfile(2)`: page cache to socket inside the kernel.
    Sendfile,
    /// Read into a buffer, then write (for transports that cannot take `sendfile`, and to
    /// measure against).
    Copy,
}

const COPY_BUFFER: usize = 256 * 1024;

/// Writes `response` to the write half of a socket, chunk by chunk, in order.
pub async fn write_response(
    writer: &mut OwnedWriteHalf,
    response: &Response,
    transfer: FileTransfer,
    copy_buffer: &mut Vec<u8>,
) -> io::Result<()> {
    for chunk in &response.chunks {
        match chunk {
            Chunk::Bytes(bytes) => writer.write_all(bytes).await?,
            Chunk::File(region) => match transfer {
                FileTransfer::Sendfile => {
                    writer.flush().await?;
                    send_file(
                        writer.as_ref(),
                        region.file(),
                        region.position(),
                        region.len(),
                    )
                    .await?;
                }
                FileTransfer::Copy => {
                    let mut position = region.position();
                    let end = position + region.len();
                    copy_buffer.resize(COPY_BUFFER, 0);
                    while position < end {
                        let n = ((end - position) as usize).min(COPY_BUFFER);
                        std::os::unix::fs::FileExt::read_exact_at(
                            region.file(),
                            &mut copy_buffer[..n],
                            position,
                        )?;
                        writer.write_all(&copy_buffer[..n]).await?;
                        position += n as u64;
                    }
                }
            },
        }
    }
    writer.flush().await
}

async fn send_file(
    socket: &TcpStream,
    file: &std::fs::File,
    mut offset: u64,
    len: u64,
) -> io::Result<()> {
    let end = offset + len;
    while offset < end {
        socket.writable().await?;
        let remaining = (end - offset).min(1 << 30) as usize;
        let sent = socket.try_io(Interest::WRITABLE, || {
            rustix::fs::sendfile(socket.as_fd(), file.as_fd(), Some(&mut offset), remaining)
                .map_err(io::Error::from)
        });
        match sent {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file region ends before its recorded length",
                ));
            }
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}
