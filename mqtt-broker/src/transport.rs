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
    /// Whether an idle connection over it can be parked
    /// (`connection/park.rs`): only a bare socket can.
    const PARKS: bool = false;
    fn split(self) -> (Self::Read, Self::Write);
    /// The halves put back together as a socket that tokio no longer
    /// watches, for parking. `Err(Some(halves))` when this transport does
    /// not park; `Err(None)` when the socket could not leave tokio (and is
    /// closed).
    #[allow(clippy::type_complexity)]
    fn unsplit_std(
        read: Self::Read,
        write: Self::Write,
    ) -> Result<std::net::TcpStream, Option<(Self::Read, Self::Write)>> {
        Err(Some((read, write)))
    }
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

    const PARKS: bool = true;

    fn unsplit_std(
        read: OwnedReadHalf,
        write: OwnedWriteHalf,
    ) -> Result<std::net::TcpStream, Option<(OwnedReadHalf, OwnedWriteHalf)>> {
        let stream = read.reunite(write).map_err(|e| Some((e.0, e.1)))?;
        stream.into_std().map_err(|e| {
            tracing::warn!(error = %e, "a socket could not leave tokio to be parked");
            None
        })
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
