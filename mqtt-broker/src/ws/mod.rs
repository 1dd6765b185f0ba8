//! WebSocket listeners (`protocol = "websockets"`): MQTT over WebSocket,
//! MQTT 5.0 section 6 and 3.1.1 section 6, on RFC 6455.
//!
//! A connection starts as HTTP/1.1 (`handshake.rs`). An upgrade that offers
//! the `mqtt` (or `mqttv3.1`) subprotocol becomes a [`WsStream`]
//! (`stream.rs`), which the ordinary connection code drives like a TCP
//! socket: authentication, ACLs, limits, keep alive, wills and `$SYS` are one
//! code path for every transport. Any other request gets a file from
//! `http_dir` (`http_dir.rs`) or a clear HTTP error, then the connection
//! closes. The request head must arrive within the CONNECT timeout
//! (slowloris), and the socket holds its place among those waiting for
//! CONNECT meanwhile.
//!
//! What Mosquitto does differs on one point: its libwebsockets build binds a
//! handshake without a subprotocol to its HTTP handler (protocol 0,
//! "http-only"), so the upgrade succeeds but the client's CONNECT is never
//! answered. Here such a handshake is refused with `400 Bad Request` and a
//! body that names the subprotocol to offer.

mod handshake;
mod http_dir;
mod linger;
mod stream;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use crate::broker::BrokerState;
use crate::config::ListenerConfig;
use crate::connection;
use handshake::{Decision, ReadHead, Response};
use http_dir::HttpDir;
pub(crate) use stream::WsStream;

/// How long an HTTP error answer may take to write.
const ERROR_WRITE: Duration = Duration::from_secs(2);

/// What a WebSocket listener needs beyond its configuration.
#[derive(Debug)]
pub(crate) struct WsListener {
    http_dir: Option<HttpDir>,
}

impl WsListener {
    /// Checks the listener's `http_dir`.
    pub fn new(cfg: &ListenerConfig) -> io::Result<Self> {
        let http_dir = match &cfg.http_dir {
            Some(d) => Some(HttpDir::open(d).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("listener {}: http_dir {}: {e}", cfg.bind, d.display()),
                )
            })?),
            None => None,
        };
        Ok(WsListener { http_dir })
    }
}

/// A socket that passed its TLS handshake (or needs none), with what the
/// connection needs besides.
pub(crate) struct Accepted<S> {
    pub stream: S,
    pub peer: SocketAddr,
    pub pending: connection::PendingConnect,
    pub broker: Arc<BrokerState>,
    pub listener: Arc<ListenerConfig>,
    pub tls_identity: Option<String>,
}

/// Runs the HTTP exchange; an upgraded connection is then served as MQTT
/// until it closes.
pub(crate) async fn serve<S>(
    a: Accepted<S>,
    ws: &WsListener,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Accepted {
        mut stream,
        peer,
        pending,
        broker,
        listener,
        tls_identity,
    } = a;
    let limit = broker.config.connect_timeout();
    let read = tokio::select! {
        r = tokio::time::timeout(limit, handshake::read_head(&mut stream)) => r,
        _ = shutdown.changed() => return,
    };
    let head = match read {
        Err(_) => {
            refuse(
                &broker,
                &mut stream,
                peer,
                Response::text(408, "Request Timeout", "Request not received in time.\n"),
                "HTTP request not received within the CONNECT timeout",
            )
            .await;
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "WebSocket handshake: read failed");
            return;
        }
        Ok(Ok(ReadHead::Closed)) => {
            tracing::debug!(%peer, "WebSocket handshake: closed before the request ended");
            return;
        }
        Ok(Ok(ReadHead::TooLarge)) => {
            let r = Response::text(
                431,
                "Request Header Fields Too Large",
                "Request head too large.\n",
            );
            refuse(&broker, &mut stream, peer, r, "request head too large").await;
            return;
        }
        Ok(Ok(ReadHead::Malformed(e))) => {
            let r = Response::text(400, "Bad Request", "Malformed HTTP request.\n");
            refuse(&broker, &mut stream, peer, r, &format!("not HTTP ({e})")).await;
            return;
        }
        Ok(Ok(ReadHead::Head(h, rest))) => (h, rest),
    };
    let (head, rest) = head;
    match handshake::decide(&head) {
        Decision::Refuse(r) => {
            let why = format!("upgrade refused ({} {})", r.status, r.reason);
            refuse(&broker, &mut stream, peer, r, &why).await;
        }
        Decision::Plain => {
            let answer = plain_request(&head, ws, &mut stream, peer);
            match tokio::time::timeout(limit, answer).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "HTTP answer not written"),
                Err(_) => tracing::info!(%peer, "HTTP answer not written in time: closing"),
            }
            let _ = tokio::time::timeout(ERROR_WRITE, stream.shutdown()).await;
        }
        Decision::Upgrade { key, protocol } => {
            let answer = handshake::switching_protocols(&key, &protocol);
            match tokio::time::timeout(limit, write_flush(&mut stream, &answer)).await {
                Ok(Ok(())) => {}
                _ => {
                    tracing::debug!(%peer, "WebSocket handshake: 101 not written");
                    return;
                }
            }
            tracing::debug!(%peer, path = head.target, protocol, "WebSocket connection open");
            let max = broker.config.max_packet_size as usize;
            let config = WebSocketConfig::default()
                // The packet limit is the message limit: a message may
                // carry one packet or parts of packets, never more bytes
                // than one packet may have.
                .max_message_size(Some(max))
                .max_frame_size(Some(max))
                // Small per-connection buffers (browsers are many and
                // mostly idle); writes go out as soon as they are made.
                .read_buffer_size(8 * 1024)
                .write_buffer_size(0);
            // Set by the stream when it closes the WebSocket for an error:
            // the socket then lingers for the client's close (`linger.rs`).
            let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let stream = linger::Linger::new(stream, failed.clone());
            let ws = WebSocketStream::from_partially_read(stream, rest, Role::Server, Some(config))
                .await;
            let stream = WsStream::new(ws, peer, broker.clone(), failed);
            connection::serve(
                Box::new(connection::Incoming {
                    stream,
                    peer,
                    broker,
                    listener,
                    tls_identity,
                    pending,
                }),
                None,
            )
            .await;
        }
    }
}

/// A request that is not an upgrade: a file from `http_dir`, or an error.
async fn plain_request<S: AsyncWrite + Unpin>(
    head: &handshake::Head,
    ws: &WsListener,
    stream: &mut S,
    peer: SocketAddr,
) -> io::Result<()> {
    let head_only = head.method == "HEAD";
    let Some(dir) = &ws.http_dir else {
        tracing::info!(%peer, method = head.method, path = head.target, "plain HTTP request on a WebSocket listener: 426");
        let mut r = Response::text(
            426,
            "Upgrade Required",
            "This is an MQTT over WebSocket endpoint: connect with a WebSocket client \
             offering the subprotocol \"mqtt\".\n",
        );
        r.extra.push(("Upgrade", "websocket".into()));
        return write_flush(stream, &r.to_bytes(head_only)).await;
    };
    if head.method != "GET" && !head_only {
        tracing::info!(%peer, method = head.method, path = head.target, "HTTP method not allowed: 405");
        let mut r = Response::text(405, "Method Not Allowed", "Only GET and HEAD.\n");
        r.extra.push(("Allow", "GET, HEAD".into()));
        return write_flush(stream, &r.to_bytes(head_only)).await;
    }
    match dir.resolve(&head.target).await {
        Err(r) => {
            tracing::info!(%peer, path = head.target, status = r.status, "http_dir: refused");
            write_flush(stream, &r.to_bytes(head_only)).await
        }
        Ok(found) => {
            tracing::debug!(%peer, path = head.target, file = %found.path.display(), "http_dir: serving");
            let mut file = tokio::fs::File::open(&found.path).await?;
            let r = Response {
                status: 200,
                reason: "OK",
                extra: vec![("Cache-Control", "no-cache".into())],
                content_type: found.content_type,
                body: Vec::new(),
            };
            stream.write_all(&r.head_bytes(found.len)).await?;
            if !head_only {
                // At most the length announced, even if the file grew.
                let mut body = tokio::io::AsyncReadExt::take(&mut file, found.len);
                tokio::io::copy(&mut body, stream).await?;
            }
            stream.flush().await
        }
    }
}

/// Counts, logs and answers a refused request, then closes.
async fn refuse<S: AsyncWrite + Unpin>(
    broker: &BrokerState,
    stream: &mut S,
    peer: SocketAddr,
    r: Response,
    why: &str,
) {
    broker.stats.websocket_errors.inc();
    tracing::info!(%peer, status = r.status, "WebSocket handshake: {why}: closing");
    let _ = tokio::time::timeout(ERROR_WRITE, async {
        write_flush(stream, &r.to_bytes(false)).await?;
        stream.shutdown().await
    })
    .await;
}

async fn write_flush<S: AsyncWrite + Unpin>(s: &mut S, b: &[u8]) -> io::Result<()> {
    s.write_all(b).await?;
    s.flush().await
}
