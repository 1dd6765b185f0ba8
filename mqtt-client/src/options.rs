//! Everything that shapes a connection: where to, who as, with what session,
//! will, TLS and MQTT 5 limits, and how to reconnect.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use mqtt_codec::{ProtocolVersion, QoS};

use crate::events::EventHook;
use crate::message::PublishProperties;

/// How to verify and present certificates.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// CA certificates (PEM); `None` (and no `ca_dir`) uses the system's
    /// roots.
    pub ca_file: Option<PathBuf>,
    /// A directory of CA certificates (PEM files, as mosquitto's
    /// `--capath`; OpenSSL's hashed names work since every file is read).
    /// Used together with `ca_file` when both are given.
    pub ca_dir: Option<PathBuf>,
    /// ALPN protocol names offered in the handshake (`--tls-alpn`), e.g.
    /// `mqtt` for AWS IoT on port 443. Empty: no ALPN.
    pub alpn: Vec<String>,
    /// Client certificate chain (PEM), for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// Client private key (PEM).
    pub key_file: Option<PathBuf>,
    /// Skip server certificate and host name verification. Only for tests:
    /// it gives up what TLS is for.
    pub insecure: bool,
    /// Host name to verify, when it differs from the host connected to.
    pub server_name: Option<String>,
}

/// MQTT over WebSocket (`ws://`, `wss://` with [`ConnectOptions::tls`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSocketOptions {
    /// The HTTP request path of the upgrade, e.g. `/mqtt` (what EMQX, HiveMQ
    /// and most brokers expect; Mosquitto and this broker accept any).
    pub path: String,
}

/// The will message.
#[derive(Debug, Clone)]
pub struct Will {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// MQTT 5 Will Delay Interval in seconds.
    pub delay_secs: Option<u32>,
    /// MQTT 5 will properties.
    pub properties: PublishProperties,
}

/// Connection options. Start from [`ConnectOptions::new`] and change fields.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Host name or address.
    pub host: String,
    /// Port (1883, or 8883 with TLS).
    pub port: u16,
    /// Protocol version: 3.1.1 or 5.0.
    pub version: ProtocolVersion,
    /// Client identifier; empty lets the server assign one (5.0, or 3.1.1
    /// with clean start).
    pub client_id: String,
    /// Clean Start (5.0) / Clean Session (3.1.1).
    pub clean_start: bool,
    /// MQTT 5 Session Expiry Interval in seconds (`u32::MAX` never).
    pub session_expiry_secs: u32,
    /// Keep alive; zero turns it off.
    pub keep_alive: Duration,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Bytes>,
    /// Will message.
    pub will: Option<Will>,
    /// TLS, when set.
    pub tls: Option<TlsOptions>,
    /// MQTT over WebSocket, when set (over TLS too when `tls` is set).
    pub websocket: Option<WebSocketOptions>,
    /// MQTT 5 Receive Maximum the client announces.
    pub receive_maximum: Option<u16>,
    /// MQTT 5 Maximum Packet Size the client accepts.
    pub max_packet_size: Option<u32>,
    /// MQTT 5 Topic Alias Maximum the client accepts from the server.
    pub topic_alias_maximum: u16,
    /// MQTT 5 user properties of CONNECT.
    pub user_properties: Vec<(String, String)>,
    /// Time allowed for TCP, TLS and CONNACK.
    pub connect_timeout: Duration,
    /// Most publishes/subscribes waiting while disconnected; more are
    /// refused with [`ClientError::QueueFull`](crate::ClientError::QueueFull).
    pub offline_queue: usize,
    /// Most QoS 1/2 publishes in flight (further capped by the server's
    /// Receive Maximum).
    pub max_inflight: u16,
    /// Reconnect automatically after the connection is lost.
    pub reconnect: bool,
    /// First reconnect delay; doubled on each failure up to `max_backoff`,
    /// with random jitter.
    pub min_backoff: Duration,
    /// Longest reconnect delay.
    pub max_backoff: Duration,
    /// Capacity of the incoming message channel before the client stops
    /// reading from the socket (backpressure, never loss). It still reads
    /// while it awaits an answer (an acknowledgement of its own publish or
    /// subscribe, a PINGRESP), so publishing from the message loop never
    /// stalls; QoS 1/2 messages read meanwhile are acknowledged only when
    /// the application takes them, which holds the server to its inflight
    /// window.
    pub incoming_capacity: usize,
    /// Local address to bind the socket to before connecting (which
    /// interface to leave by), like mosquitto's `-A`.
    pub bind_address: Option<std::net::IpAddr>,
    /// Called with every packet sent and received and every loss and
    /// regain of the connection (see [`ClientEvent`](crate::ClientEvent)).
    pub on_event: Option<EventHook>,
}

impl ConnectOptions {
    /// Options for `host:port` with MQTT 3.1.1, clean start, keep alive 60 s.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        ConnectOptions {
            host: host.into(),
            port,
            version: ProtocolVersion::V3_1_1,
            client_id: String::new(),
            clean_start: true,
            session_expiry_secs: 0,
            keep_alive: Duration::from_secs(60),
            username: None,
            password: None,
            will: None,
            tls: None,
            websocket: None,
            receive_maximum: None,
            max_packet_size: None,
            topic_alias_maximum: 0,
            user_properties: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            offline_queue: 10_000,
            max_inflight: 100,
            reconnect: true,
            min_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            incoming_capacity: 1024,
            bind_address: None,
            on_event: None,
        }
    }

    /// Options from a URL: `mqtt://host[:port]` (TCP, port 1883),
    /// `mqtts://` (TLS, 8883), `ws://host[:port]/path` (WebSocket, 80) or
    /// `wss://` (WebSocket over TLS, 443), with an optional
    /// `user[:password]@` before the host. An `mqtt(s)://` path must be
    /// empty or `/`; a WebSocket path is the upgrade's request path.
    ///
    /// ```
    /// let o = mqtt_client::ConnectOptions::from_url("wss://broker.example:8884/mqtt").unwrap();
    /// assert_eq!((o.host.as_str(), o.port), ("broker.example", 8884));
    /// assert_eq!(o.websocket.unwrap().path, "/mqtt");
    /// assert!(o.tls.is_some());
    /// ```
    pub fn from_url(url: &str) -> Result<Self, crate::ClientError> {
        let u = crate::url::BrokerUrl::parse(url)?;
        if !u.websocket && !matches!(u.path.as_str(), "" | "/") {
            return Err(crate::ClientError::Invalid(format!(
                "{url}: an {}:// URL has no path",
                u.scheme
            )));
        }
        let mut o = ConnectOptions::new(u.host, u.port);
        if u.tls {
            o.tls = Some(TlsOptions::default());
        }
        if u.websocket {
            let path = if u.path.is_empty() {
                "/".into()
            } else {
                u.path
            };
            o.websocket = Some(WebSocketOptions { path });
        }
        o.username = u.username;
        o.password = u.password.map(Bytes::from);
        Ok(o)
    }

    /// Sets the client identifier.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = id.into();
        self
    }

    /// Sets the protocol version.
    pub fn version(mut self, v: ProtocolVersion) -> Self {
        self.version = v;
        self
    }

    /// Sets Clean Start / Clean Session.
    pub fn clean_start(mut self, clean: bool) -> Self {
        self.clean_start = clean;
        self
    }

    /// Sets the MQTT 5 Session Expiry Interval.
    pub fn session_expiry(mut self, secs: u32) -> Self {
        self.session_expiry_secs = secs;
        self
    }

    /// Sets user name and password.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<Bytes>) -> Self {
        self.username = Some(user.into());
        self.password = Some(password.into());
        self
    }

    /// Sets the will.
    pub fn will(mut self, will: Will) -> Self {
        self.will = Some(will);
        self
    }

    /// Sets the keep alive.
    pub fn keep_alive(mut self, keep_alive: Duration) -> Self {
        self.keep_alive = keep_alive;
        self
    }
}
