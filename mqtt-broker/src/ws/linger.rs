//! A lingering close for a WebSocket the server closes with an error.
//!
//! When the server closes a WebSocket because of what the client sent (a
//! message over `max_packet_size`, a text frame), the client is usually
//! still sending: the rest of that message sits unread in the socket. Were
//! the socket simply closed, the kernel would answer the unread bytes with a
//! TCP reset, and a reset can make the client's stack throw away the close
//! frame it had already received, so the client would see "1006 abnormal
//! closure" instead of the code that says why. RFC 6455 section 7.1.1 has
//! the server wait for the client to close instead; HTTP servers call this
//! a lingering close. So once the connection is done with the socket, a
//! failed one is shut down for writing and read (and discarded) until the
//! client closes or `LINGER` passes, in a task of its own.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Longest a failed connection's socket is kept open for the client's close.
const LINGER: Duration = Duration::from_secs(2);

/// A socket that, dropped after `failed` was set, lingers before it closes.
pub(crate) struct Linger<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    inner: Option<S>,
    failed: Arc<AtomicBool>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Linger<S> {
    /// Wraps `inner`; setting `failed` asks for the lingering close.
    pub fn new(inner: S, failed: Arc<AtomicBool>) -> Self {
        Linger {
            inner: Some(inner),
            failed,
        }
    }

    /// The socket (only `drop` takes it out, so it is always there).
    fn inner(&mut self) -> io::Result<Pin<&mut S>> {
        match self.inner.as_mut() {
            Some(s) => Ok(Pin::new(s)),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for Linger<S> {
    fn drop(&mut self) {
        let (Some(mut s), true) = (self.inner.take(), self.failed.load(Ordering::Relaxed)) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let _ = tokio::time::timeout(LINGER, async {
                let _ = s.shutdown().await;
                let mut sink = [0u8; 8192];
                while let Ok(n) = s.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
        });
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for Linger<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.inner()?.poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for Linger<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.inner()?.poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner()?.poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner()?.poll_shutdown(cx)
    }
}
