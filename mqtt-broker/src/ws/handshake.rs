//! The HTTP/1.1 request that opens a connection on a WebSocket listener
//! (RFC 6455 section 4.2): its head is read under a size limit, then it is
//! either upgraded with an MQTT subprotocol (MQTT 5.0 section 6, 3.1.1
//! section 6), left to `http_dir`, or refused with a clear HTTP error.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Largest request head accepted (request line and headers). Browsers send
/// well under 2 KiB; more is refused with 431.
pub(crate) const MAX_HEAD: usize = 8 * 1024;
/// Most header lines accepted.
const MAX_HEADERS: usize = 64;

/// The subprotocols MQTT over WebSocket uses: `mqtt` (MQTT 5.0 and 3.1.1
/// section 6) and `mqttv3.1`, which MQTT 3.1 clients (and older MQTT.js,
/// Paho JavaScript) offer.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// A parsed request head.
#[derive(Debug)]
pub(crate) struct Head {
    pub method: String,
    /// The request target as sent (path and query).
    pub target: String,
    /// HTTP minor version (1 for HTTP/1.1).
    pub minor_version: u8,
    /// Header names lower-cased, values as text (invalid UTF-8 replaced).
    headers: Vec<(String, String)>,
}

impl Head {
    /// Every value of a header, comma-separated lists split into items.
    fn items<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }

    /// Whether a comma-separated header holds `token` (case-insensitive).
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.items(name).any(|t| t.eq_ignore_ascii_case(token))
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.trim())
    }
}

/// What reading a request head gave.
#[derive(Debug)]
pub(crate) enum ReadHead {
    /// A whole head, and the bytes read past it.
    Head(Head, Vec<u8>),
    /// More than [`MAX_HEAD`] bytes without the end of the head.
    TooLarge,
    /// Not HTTP.
    Malformed(String),
    /// The peer closed before the head ended.
    Closed,
}

/// Reads a request head. The caller bounds the time it may take.
pub(crate) async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> io::Result<ReadHead> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                let head = Head {
                    method: req.method.unwrap_or_default().to_string(),
                    target: req.path.unwrap_or_default().to_string(),
                    minor_version: req.version.unwrap_or(0),
                    headers: req
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_ascii_lowercase(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect(),
                };
                return Ok(ReadHead::Head(head, buf[n..].to_vec()));
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Ok(ReadHead::TooLarge),
            Err(e) => return Ok(ReadHead::Malformed(e.to_string())),
        }
        if buf.len() >= MAX_HEAD {
            return Ok(ReadHead::TooLarge);
        }
        // Never read past the limit: a slow or endless sender gets no
        // more memory than MAX_HEAD.
        let room = MAX_HEAD - buf.len();
        let mut chunk = (&mut *s).take(room as u64);
        if chunk.read_buf(&mut buf).await? == 0 {
            return Ok(ReadHead::Closed);
        }
    }
}

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Upgrade, echoing this subprotocol.
    Upgrade { key: String, protocol: String },
    /// Not an upgrade request: a static file, or an error.
    Plain,
    /// A WebSocket upgrade that cannot be accepted.
    Refuse(Response),
}

/// Decides an upgrade request (RFC 6455 section 4.2.1).
pub(crate) fn decide(head: &Head) -> Decision {
    if !head.has_token("upgrade", "websocket") {
        return Decision::Plain;
    }
    if head.method != "GET" {
        return Decision::Refuse(Response::text(
            405,
            "Method Not Allowed",
            "A WebSocket upgrade must be a GET request.\n",
        ));
    }
    if head.minor_version < 1 {
        return Decision::Refuse(Response::text(
            400,
            "Bad Request",
            "A WebSocket upgrade needs HTTP/1.1.\n",
        ));
    }
    if !head.has_token("connection", "upgrade") {
        return Decision::Refuse(Response::text(
            400,
            "Bad Request",
            "A WebSocket upgrade needs the header Connection: Upgrade.\n",
        ));
    }
    if head.value("sec-websocket-version") != Some("13") {
        // RFC 6455 section 4.4: tell the client which version we speak.
        let mut r = Response::text(
            426,
            "Upgrade Required",
            "Only WebSocket version 13 (RFC 6455) is supported.\n",
        );
        r.extra.push(("Sec-WebSocket-Version", "13".into()));
        return Decision::Refuse(r);
    }
    let key = match head.value("sec-websocket-key") {
        // A base64-encoded 16-byte nonce is 24 characters.
        Some(k) if k.len() == 24 => k.to_string(),
        _ => {
            return Decision::Refuse(Response::text(
                400,
                "Bad Request",
                "A WebSocket upgrade needs a valid Sec-WebSocket-Key.\n",
            ))
        }
    };
    let offered = head
        .items("sec-websocket-protocol")
        .find(|p| SUBPROTOCOLS.iter().any(|s| s.eq_ignore_ascii_case(p)));
    match offered {
        Some(p) => Decision::Upgrade {
            key,
            // Echo the client's own spelling: it compares what it offered.
            protocol: p.to_string(),
        },
        None => Decision::Refuse(Response::text(
            400,
            "Bad Request",
            "This is an MQTT over WebSocket endpoint: offer the subprotocol \
             \"mqtt\" (Sec-WebSocket-Protocol: mqtt, or mqttv3.1 for MQTT 3.1).\n",
        )),
    }
}

/// The 101 answer that completes an upgrade.
pub(crate) fn switching_protocols(key: &str, protocol: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\
         Sec-WebSocket-Protocol: {protocol}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    )
    .into_bytes()
}

/// An HTTP response with a short body; every response closes the
/// connection (one request per connection keeps the listener simple and
/// its limits exact).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub status: u16,
    pub reason: &'static str,
    pub extra: Vec<(&'static str, String)>,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    /// A plain-text response.
    pub fn text(status: u16, reason: &'static str, body: &str) -> Self {
        Response {
            status,
            reason,
            extra: Vec::new(),
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
        }
    }

    /// The status line and headers for a body of `len` bytes.
    pub fn head_bytes(&self, len: u64) -> Vec<u8> {
        let mut s = format!(
            "HTTP/1.1 {} {}\r\nServer: mqtt-broker\r\nContent-Type: {}\r\n\
             Content-Length: {len}\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n",
            self.status, self.reason, self.content_type
        );
        for (k, v) in &self.extra {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        s.push_str("\r\n");
        s.into_bytes()
    }

    /// The whole response; `head_only` for HEAD requests.
    pub fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let mut b = self.head_bytes(self.body.len() as u64);
        if !head_only {
            b.extend_from_slice(&self.body);
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(text: &str) -> Head {
        match read_head(&mut text.as_bytes()).await.unwrap() {
            ReadHead::Head(h, _) => h,
            other => panic!("{other:?}"),
        }
    }

    fn upgrade(protocols: &str) -> String {
        format!(
            "GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{protocols}\r\n"
        )
    }

    /// MQTT 5.0 section 6: the server selects `mqtt` from the client's list.
    #[tokio::test]
    async fn mqtt_subprotocol_is_chosen_from_a_list() {
        let h = parse(&upgrade("Sec-WebSocket-Protocol: chat, mqtt\r\n")).await;
        assert_eq!(
            decide(&h),
            Decision::Upgrade {
                key: "dGhlIHNhbXBsZSBub25jZQ==".into(),
                protocol: "mqtt".into()
            }
        );
    }

    /// Older clients offer `mqttv3.1`; it is accepted and echoed.
    #[tokio::test]
    async fn mqttv31_subprotocol_is_accepted() {
        let h = parse(&upgrade("Sec-WebSocket-Protocol: mqttv3.1\r\n")).await;
        assert!(matches!(decide(&h), Decision::Upgrade { protocol, .. } if protocol == "mqttv3.1"));
    }

    /// An upgrade without an MQTT subprotocol is refused with 400.
    #[tokio::test]
    async fn upgrade_without_mqtt_subprotocol_is_refused() {
        let h = parse(&upgrade("")).await;
        assert!(matches!(decide(&h), Decision::Refuse(r) if r.status == 400));
    }

    /// RFC 6455 section 4.4: another version gets 426 naming version 13.
    #[tokio::test]
    async fn other_websocket_version_gets_426() {
        let text = upgrade("Sec-WebSocket-Protocol: mqtt\r\n").replace("Version: 13", "Version: 8");
        let h = parse(&text).await;
        match decide(&h) {
            Decision::Refuse(r) => {
                assert_eq!(r.status, 426);
                assert!(r.extra.contains(&("Sec-WebSocket-Version", "13".into())));
            }
            other => panic!("{other:?}"),
        }
    }

    /// A head larger than the limit is refused without reading further.
    #[tokio::test]
    async fn oversized_head_is_refused() {
        let text = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert!(matches!(
            read_head(&mut text.as_bytes()).await.unwrap(),
            ReadHead::TooLarge
        ));
    }

    /// RFC 6455 section 1.3's example key and accept value.
    #[test]
    fn accept_key_matches_the_rfc_example() {
        let r = String::from_utf8(switching_protocols("dGhlIHNhbXBsZSBub25jZQ==", "mqtt")).unwrap();
        assert!(r.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    }
}
