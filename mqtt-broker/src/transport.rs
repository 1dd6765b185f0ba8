//! What a connection reads from and writes to: a plain TCP socket or a TLS
//! stream over one, split into a read side and a write side that the
//! connection task drives from one `select!`.

use std::io;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::tls::WriteThrough;

/// A byte stream a client connection runs over.
pub(crate) trait Transport: Send + 'static {
    type Read: ReadSide;
    type Write: AsyncWrite + Unpin + Send;
    fn split(self) -> (Self::Read, Self::Write);
}

/// The read side of a transport.
pub(crate) trait ReadSide: AsyncRead + Unpin + Send {
    /// Ready once a read would find bytes (or the end of the stream),
    /// without a buffer to read into: an idle connection then holds no read
    /// buffer while it waits. Transports that cannot tell (TLS, whose
    /// records must be decrypted to know) are always ready, and their reads
    /// wait with a buffer.
    fn poll_read_ready(&self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Transport for TcpStream {
    type Read = OwnedReadHalf;
    type Write = OwnedWriteHalf;

    /// Owned halves share the socket without a lock, unlike
    /// `tokio::io::split`, which every read and write would have to take.
    fn split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split()
    }
}

impl ReadSide for OwnedReadHalf {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.as_ref().poll_read_ready(cx)
    }
}

impl Transport for WriteThrough<TlsStream<TcpStream>> {
    type Read = ReadHalf<Self>;
    type Write = WriteHalf<Self>;

    fn split(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}

impl<S: AsyncRead + Send> ReadSide for ReadHalf<S> {}
