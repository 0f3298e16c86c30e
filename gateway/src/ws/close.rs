//! Finishing a close the server started: after its close frame, the server
//! reads until the client's close reply (or a short deadline) before it
//! drops the socket. Dropping a socket with unread bytes makes the kernel
//! send a reset, which client libraries report as 1006 instead of the close
//! code. The WebSocket protocol layer stops reading after a frame over the
//! cap, so the reply is found in the raw bytes by `ClientFrames`.
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// How long the server waits for the client's close reply.
pub const CLOSE_REPLY_WAIT: Duration = Duration::from_secs(2);

/// The connection's socket, watching the client's bytes go by.
pub struct Watched<S> {
    inner: S,
    frames: ClientFrames,
}

impl<S> Watched<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            frames: ClientFrames::default(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Watched<S> {
    /// Reads and drops what the client still sends until its close frame
    /// has arrived, the client closed the connection, or `CLOSE_REPLY_WAIT`
    /// passed; then closes the connection from this side.
    pub async fn finish_close(&mut self) {
        let mut discard = vec![0; 8 * 1024];
        let _ = tokio::time::timeout(CLOSE_REPLY_WAIT, async {
            while !self.frames.close_seen {
                match self.read(&mut discard).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        let _ = self.shutdown().await;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.frames.observe(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Frame boundaries in the client's byte stream (RFC 6455 section 5.2):
/// headers are read, payloads skipped by length, so a close frame is seen
/// whatever the protocol layer made of the bytes before it.
#[derive(Debug, Default)]
struct ClientFrames {
    /// The current frame's header so far (at most 14 bytes).
    header: Vec<u8>,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
    /// Whether the current frame is a close frame.
    in_close: bool,
    /// A whole close frame has arrived.
    close_seen: bool,
}

const OPCODE_CLOSE: u8 = 0x8;

impl ClientFrames {
    fn observe(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let skipped = self.payload_left.min(bytes.len() as u64);
                self.payload_left -= skipped;
                bytes = &bytes[skipped as usize..];
                if self.payload_left == 0 && self.in_close {
                    self.close_seen = true;
                }
                continue;
            }
            self.header.push(bytes[0]);
            bytes = &bytes[1..];
            if let Some(payload) = complete_header(&self.header) {
                self.in_close = self.header[0] & 0x0f == OPCODE_CLOSE;
                self.payload_left = payload;
                self.header.clear();
                if payload == 0 && self.in_close {
                    self.close_seen = true;
                }
            }
        }
    }
}

/// The payload length once `header` is a whole frame header.
fn complete_header(header: &[u8]) -> Option<u64> {
    let [_, second, rest @ ..] = header else {
        return None;
    };
    let masked = second & 0x80 != 0;
    let (length_bytes, short) = match second & 0x7f {
        126 => (2, None),
        127 => (8, None),
        short => (0, Some(u64::from(short))),
    };
    let mask_bytes = if masked { 4 } else { 0 };
    if rest.len() < length_bytes + mask_bytes {
        return None;
    }
    Some(short.unwrap_or_else(|| {
        rest[..length_bytes]
            .iter()
            .fold(0, |length, byte| length << 8 | u64::from(*byte))
    }))
}

#[cfg(test)]
mod tests {
    use super::ClientFrames;

    /// A masked client frame (the mask key is zero, so the payload is as is).
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![first];
        match payload.len() {
            short @ 0..=125 => bytes.push(0x80 | short as u8),
            medium @ 126..=65535 => {
                bytes.push(0x80 | 126);
                bytes.extend((medium as u16).to_be_bytes());
            }
            long => {
                bytes.push(0x80 | 127);
                bytes.extend((long as u64).to_be_bytes());
            }
        }
        bytes.extend([0; 4]);
        bytes.extend(payload);
        bytes
    }

    fn close_seen_after(chunks: &[&[u8]]) -> bool {
        let mut frames = ClientFrames::default();
        chunks.iter().for_each(|chunk| frames.observe(chunk));
        frames.close_seen
    }

    #[test]
    fn a_close_frame_is_seen_after_frames_of_every_length_in_any_chunks() {
        let mut stream = Vec::new();
        stream.extend(frame(0x81, b"hello"));
        stream.extend(frame(0x81, &[b'y'; 300]));
        stream.extend(frame(0x01, &[b'y'; 70_000]));
        stream.extend(frame(0x80, b""));
        let data_only = stream.len();
        stream.extend(frame(0x88, &1009u16.to_be_bytes()));

        assert!(!close_seen_after(&[&stream[..data_only]]));
        assert!(!close_seen_after(&[&stream[..stream.len() - 1]]));
        assert!(close_seen_after(&[&stream]));
        let one_byte_at_a_time: Vec<&[u8]> = stream.chunks(1).collect();
        assert!(close_seen_after(&one_byte_at_a_time));
        let odd_chunks: Vec<&[u8]> = stream.chunks(7).collect();
        assert!(close_seen_after(&odd_chunks));
    }

    #[test]
    fn close_bytes_inside_a_payload_are_not_a_close_frame() {
        let disguised = frame(0x82, &frame(0x88, b""));
        assert!(!close_seen_after(&[&disguised]));
        assert!(close_seen_after(&[&frame(0x88, b"")]));
    }
}
