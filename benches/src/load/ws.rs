//! MQTT over WebSocket for `mqtt-bench --websocket PATH`: the generator's
//! connections upgrade to a WebSocket (subprotocol `mqtt`) and then carry
//! the same bytes in binary frames (one frame per write, masked as RFC 6455
//! requires of clients). [`Rd`] and [`Wr`] hide which transport a
//! connection uses from the scenario loops.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

static PATH: OnceLock<String> = OnceLock::new();

/// Makes every connection of this process a WebSocket at `path`.
pub fn use_websocket(path: &str) {
    let _ = PATH.set(path.to_string());
}

/// The WebSocket path, when connections use WebSocket.
pub fn websocket_path() -> Option<&'static str> {
    PATH.get().map(String::as_str)
}

/// Splits a fresh TCP connection into the halves the generator drives,
/// upgrading it first when WebSocket is on.
pub async fn open(stream: TcpStream, addr: SocketAddr) -> io::Result<(Rd, Wr)> {
    let Some(path) = websocket_path() else {
        let (rd, wr) = stream.into_split();
        return Ok((Rd::Tcp(rd), Wr::Tcp(wr)));
    };
    let mut req = format!("ws://{addr}{path}")
        .into_client_request()
        .map_err(io::Error::other)?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().expect("valid"));
    let config = WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None)
        .write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::client_async_with_config(req, stream, Some(config))
        .await
        .map_err(io::Error::other)?;
    let (rd, wr) = tokio::io::split(WsStream {
        ws,
        rest: Bytes::new(),
        taken: 0,
    });
    Ok((Rd::Ws(rd), Wr::Ws(wr)))
}

/// The read side of a connection.
pub enum Rd {
    Tcp(OwnedReadHalf),
    Ws(ReadHalf<WsStream>),
}

/// The write side of a connection.
pub enum Wr {
    Tcp(OwnedWriteHalf),
    Ws(WriteHalf<WsStream>),
}

impl Rd {
    /// A read that does not wait (TCP only: the idle scenario's probe).
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Rd::Tcp(r) => r.try_read(buf),
            Rd::Ws(_) => Err(io::ErrorKind::Unsupported.into()),
        }
    }
}

impl Wr {
    /// A write that does not wait (TCP only: the idle scenario's pings).
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Wr::Tcp(w) => w.try_write(buf),
            Wr::Ws(_) => Err(io::ErrorKind::Unsupported.into()),
        }
    }
}

impl AsyncRead for Rd {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Rd::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            Rd::Ws(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Wr {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Wr::Tcp(w) => Pin::new(w).poll_write(cx, buf),
            Wr::Ws(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Wr::Tcp(w) => Pin::new(w).poll_flush(cx),
            Wr::Ws(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Wr::Tcp(w) => Pin::new(w).poll_shutdown(cx),
            Wr::Ws(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

/// A client WebSocket as a byte stream: binary messages concatenated on
/// read, one binary frame per write (completed once flushed).
pub struct WsStream {
    ws: WebSocketStream<TcpStream>,
    rest: Bytes,
    taken: usize,
}

fn to_io(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => io::ErrorKind::BrokenPipe.into(),
        e => io::Error::other(e),
    }
}

impl AsyncRead for WsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.rest.is_empty() {
                let n = this.rest.len().min(buf.remaining());
                buf.put_slice(&this.rest[..n]);
                this.rest.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                None | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                    return Poll::Ready(Ok(()))
                }
                Some(Ok(Message::Binary(b))) => this.rest = b,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text frame from the broker",
                    )))
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
            }
        }
    }
}

impl AsyncWrite for WsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.taken == 0 {
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(to_io)?;
            Pin::new(&mut this.ws)
                .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
                .map_err(to_io)?;
            this.taken = buf.len();
        }
        ready!(Pin::new(&mut this.ws).poll_flush(cx)).map_err(to_io)?;
        Poll::Ready(Ok(std::mem::take(&mut this.taken)))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(to_io)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.ws).poll_close(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(to_io(e))),
        }
    }
}
