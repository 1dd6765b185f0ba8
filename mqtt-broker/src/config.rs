//! Broker configuration: every limit the broker enforces, with its default.
//!
//! The TOML file (`-c FILE`) uses the same names; `mqtt-broker.example.toml`
//! at the crate root documents every key (a test checks that it names every
//! field here). With no file, or a file that names no listener, the broker
//! listens on 127.0.0.1:1883 and lets anonymous clients in, like Mosquitto
//! 2's local-only mode; a listener named in a file refuses anonymous clients
//! unless it says `allow_anonymous = true`, like Mosquitto 2's `listener`
//! (whatever its address). A file in Mosquitto's own format is translated
//! into this `Config` by `mosquitto_conf.rs`.
//!
//! Errors are one line that names the file, the line and the fix.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

/// What to do when a session's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum QueuePolicy {
    /// Drop the message that does not fit (Mosquitto's behaviour).
    #[default]
    DropNew,
    /// Drop the oldest queued message to make room (EMQX's behaviour).
    DropOldest,
}

/// One listening socket.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address and port, e.g. `0.0.0.0:1883`.
    #[serde(deserialize_with = "socket_addr")]
    pub bind: SocketAddr,
    /// Let clients in without a user name. Absent means no, whatever the
    /// address, like a Mosquitto 2 `listener`; only the built-in local-only
    /// listener (no configuration file, or one without listeners) sets it.
    pub allow_anonymous: Option<bool>,
    /// TLS for this listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsListenerConfig>,
    // --- WebSocket listeners (issue 15) ---
    /// `mqtt` (default): MQTT over TCP; `websockets`: MQTT over WebSocket
    /// (ws, or wss with `tls`), Mosquitto's `protocol websockets`.
    #[serde(default)]
    pub protocol: ListenerProtocol,
    /// On a WebSocket listener: serve static files from this folder to
    /// plain HTTP GET requests on the same port (Mosquitto's `http_dir`).
    /// Nothing outside it can be read.
    #[serde(default)]
    pub http_dir: Option<PathBuf>,
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ListenerProtocol {
    /// MQTT directly over TCP (or TLS).
    #[default]
    Mqtt,
    /// MQTT over WebSocket (RFC 6455; MQTT 5.0 / 3.1.1 section 6).
    Websockets,
}

/// TLS settings of a listener (rustls; TLS 1.2 and 1.3 only).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerConfig {
    /// Certificate chain (PEM), server certificate first.
    pub cert_file: PathBuf,
    /// Private key (PEM).
    pub key_file: PathBuf,
    /// CA certificates (PEM) that client certificates are verified against;
    /// setting it asks clients for a certificate.
    pub ca_file: Option<PathBuf>,
    /// Refuse clients without a valid certificate (needs `ca_file`).
    #[serde(default)]
    pub require_certificate: bool,
    /// Use the client certificate's Common Name as the user name (no
    /// password is checked for such clients).
    #[serde(default)]
    pub use_identity_as_username: bool,
}

impl ListenerConfig {
    /// A plain MQTT listener on `bind` with the defaults.
    pub fn new(bind: SocketAddr) -> Self {
        ListenerConfig {
            bind,
            allow_anonymous: None,
            tls: None,
            protocol: ListenerProtocol::Mqtt,
            http_dir: None,
        }
    }

    /// Whether anonymous clients may connect on this listener: only when
    /// it says so.
    pub fn allows_anonymous(&self) -> bool {
        self.allow_anonymous.unwrap_or(false)
    }

    /// The local-only listener used without a configuration (or with one
    /// that names no listener): loopback, anonymous clients allowed, as
    /// Mosquitto 2 does without a `listener` line.
    pub fn local_only(port: u16) -> ListenerConfig {
        ListenerConfig {
            allow_anonymous: Some(true),
            ..ListenerConfig::new(SocketAddr::from(([127, 0, 0, 1], port)))
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listening sockets. Default: one on 127.0.0.1:1883 that lets
    /// anonymous clients in ([`ListenerConfig::local_only`]).
    pub listeners: Vec<ListenerConfig>,
    /// Largest packet accepted from a client, fixed header included; larger
    /// ones are refused from their header (MQTT 5: DISCONNECT 0x95).
    pub max_packet_size: u32,
    /// Most simultaneous client connections; more are closed at accept.
    pub max_connections: usize,
    /// Connections the kernel completes and queues for each listener before
    /// the broker accepts them (`listen(2)` backlog; the kernel caps it at
    /// `net.core.somaxconn`). A storm of reconnections overflows a small
    /// queue, and each client whose SYN is dropped waits a second or more
    /// to try again.
    pub listen_backlog: u32,
    /// Milliseconds a plain TCP connection may be idle (nothing read,
    /// written or queued for it) before it is parked: its task and its
    /// socket's registration are freed, and one task watches it with the
    /// other parked ones until something happens (memory per idle
    /// connection: about 0.85 KB less each; a wake-up costs about 17 us of
    /// CPU). 0 keeps every connection a task.
    pub park_idle_ms: u64,
    /// Seconds a new socket has to send CONNECT.
    pub connect_timeout_secs: u64,
    /// Most QoS 1 and 2 messages in flight to one client (also capped by the
    /// client's MQTT 5 Receive Maximum).
    pub max_inflight: u16,
    /// Receive Maximum announced to MQTT 5 clients: QoS 2 messages a client may
    /// have unacknowledged towards the broker.
    pub receive_maximum: u16,
    /// Messages queued per session beyond the inflight window.
    pub max_queued_messages: usize,
    /// Payload bytes queued per session beyond the inflight window.
    pub max_queued_bytes: usize,
    /// What happens when a queue limit is reached. Every drop is counted.
    pub queue_policy: QueuePolicy,
    /// Queue QoS 0 messages for offline persistent sessions too.
    pub queue_qos0_messages: bool,
    /// Topic Alias Maximum announced to MQTT 5 clients (0 turns aliases off).
    pub topic_alias_maximum: u16,
    /// Highest keep alive accepted; an MQTT 5 client asking for more (or
    /// for 0) is told this value in Server Keep Alive, a 3.1 / 3.1.1 client
    /// (which cannot be told) is refused with return code 2, as in
    /// Mosquitto. 0 means no limit.
    pub max_keepalive: u16,
    /// Highest QoS the broker grants (0, 1 or 2).
    pub max_qos: u8,
    /// Whether retained messages are supported.
    pub retain_available: bool,
    /// Seconds between `$SYS/broker/...` updates; 0 turns them off.
    pub sys_interval_secs: u64,
    /// Seconds a 3.1.1 persistent session (clean session 0) lives on after
    /// its client disconnects; absent means forever, as in Mosquitto.
    pub persistent_client_expiration_secs: Option<u32>,
    /// Largest session expiry interval granted to MQTT 5 clients.
    pub max_session_expiry_secs: Option<u32>,
    /// Password file in Mosquitto's format (`mqtt-broker passwd` writes it).
    /// When set, a client with a user name must give that user's password.
    pub password_file: Option<PathBuf>,
    /// ACL file in Mosquitto's format. When set, everything not granted is
    /// denied.
    pub acl_file: Option<PathBuf>,
    /// Most subscriptions one client may hold (0: no limit).
    pub max_subscriptions_per_client: usize,
    /// Most levels in a topic name or filter (0: no limit).
    pub max_topic_levels: usize,
    /// Longest topic name or filter in bytes (0: no limit beyond 65535).
    pub max_topic_length: usize,
    /// Most sockets that have not completed CONNECT yet; further sockets are
    /// closed at accept.
    pub max_pending_connects: usize,
    /// PUBLISH packets a client may send per second before the broker stops
    /// reading from it for the rest of that second (0: no limit).
    pub max_publish_rate: u32,
    /// Where the store keeps retained messages, persistent sessions and
    /// their queued messages (created if missing). Relative paths are from
    /// the working directory, like Mosquitto's `persistence_location`.
    pub data_dir: PathBuf,
    /// `always` (default): a QoS 1/2 PUBLISH is acknowledged only once it is
    /// on disk, many messages sharing one sync; `periodic`: synced every
    /// `sync_interval_ms`, so a power loss can cost that interval; `none`:
    /// in memory only.
    pub durability: crate::store::Durability,
    /// Milliseconds between syncs with `periodic` (and WAL checkpoints).
    pub sync_interval_ms: u64,
    // Issue 14: drop warnings.
    /// Dropped messages logged one by one per reason and interval; the
    /// rest of the interval's drops are logged as one summary line.
    pub drop_warnings_per_interval: u32,
    /// Seconds of one drop-warning interval (at least 1).
    pub drop_warning_interval_secs: u64,
    // --- Bridges (issue 16) ---
    /// Bridges to other brokers (`[[bridges]]`), Mosquitto's bridge
    /// settings without their `bridge_` prefixes; see `bridge/config.rs`.
    pub bridges: Vec<crate::bridge::BridgeConfig>,
    /// Several brokers sharing one topic space over NATS (issue 17); absent
    /// means a single broker.
    pub cluster: Option<ClusterConfig>,

    // --- Operations (issue 19): logs, pid file, metrics. ---
    /// `human` (default): one readable line per event, coloured only on a
    /// terminal; `json`: one JSON object per line, for log shippers.
    pub log_format: LogFormat,
    /// Write the process id to this file at start and remove it at exit,
    /// like Mosquitto's `pid_file` (absent: no file).
    pub pid_file: Option<PathBuf>,
    /// Prometheus `/metrics` and `/healthz` on their own listener (absent:
    /// no metrics listener).
    pub metrics: Option<MetricsConfig>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Readable lines; colour only when the output is a terminal.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// The metrics listener (`[metrics]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address and port of the HTTP listener, e.g. `127.0.0.1:9234`.
    #[serde(deserialize_with = "socket_addr")]
    pub bind: SocketAddr,
}

/// Reads an IP address and port, with an error that says how to write one
/// (serde's own says only "invalid socket address syntax").
fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "bind = \"{text}\": needs an IP address and a port, like \"0.0.0.0:1883\", \
             \"127.0.0.1:1883\" or \"[::]:1883\" (host names are not resolved)"
        ))
    })
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listeners: vec![ListenerConfig::local_only(1883)],
            max_packet_size: mqtt_codec::MAX_PACKET_SIZE,
            max_connections: 100_000,
            listen_backlog: 4096,
            park_idle_ms: 100,
            connect_timeout_secs: 10,
            max_inflight: 1024,
            receive_maximum: 1024,
            max_queued_messages: 1000,
            max_queued_bytes: 64 * 1024 * 1024,
            queue_policy: QueuePolicy::DropNew,
            queue_qos0_messages: false,
            topic_alias_maximum: 64,
            max_keepalive: 0,
            max_qos: 2,
            retain_available: true,
            sys_interval_secs: 10,
            persistent_client_expiration_secs: None,
            max_session_expiry_secs: None,
            password_file: None,
            acl_file: None,
            max_subscriptions_per_client: 0,
            max_topic_levels: 0,
            max_topic_length: 0,
            max_pending_connects: 10_000,
            max_publish_rate: 0,
            data_dir: PathBuf::from("mqtt-data"),
            durability: crate::store::Durability::Always,
            sync_interval_ms: 1000,
            drop_warnings_per_interval: 10,
            drop_warning_interval_secs: 60,
            bridges: Vec::new(),
            cluster: None,
            log_format: LogFormat::Human,
            pid_file: None,
            metrics: None,
        }
    }
}

// --- [cluster] (issue 17) -------------------------------------------------

/// `[cluster]`: this broker is one node of several that share one topic
/// space, retained messages and client identifiers through a NATS cluster
/// with JetStream (see `docs/ARCHITECTURE.md`, "Cluster").
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster (it owns client ids by it).
    pub node: String,
    /// NATS server URLs (`nats://host:port`, `tls://host:port`); the client
    /// also learns the rest of the NATS cluster from the first it reaches.
    pub nats: Vec<String>,
    /// First token of every subject, and (upper-cased) of the stream and
    /// bucket names, so several MQTT clusters can share one NATS cluster.
    pub subject_prefix: String,
    /// JetStream replicas of the streams and buckets (3 for a 3-server NATS
    /// cluster: a message survives the loss of one server).
    pub replicas: usize,
    /// How long a QoS 1/2 PUBLISH may wait for JetStream to store it; after
    /// that the publisher is disconnected without an acknowledgement, so it
    /// sends the message again.
    pub ack_timeout_ms: u64,
    /// Seconds QoS 1/2 messages stay in the message stream.
    pub message_retention_secs: u64,
    /// Most bytes the message stream keeps (oldest go first); -1: no limit.
    /// JetStream reserves this much file storage on each replica when the
    /// stream is created, and refuses the stream if a server has less.
    pub message_stream_max_bytes: i64,
    /// Messages waiting to be handed to NATS; QoS 0 beyond it are dropped
    /// (counted), QoS 1/2 beyond it are not acknowledged.
    pub max_outbound: usize,
    /// How long a shared subscription's QoS 1/2 message may stay
    /// unacknowledged on a node before the cluster gives it to a member on
    /// another node (the bound after a node dies; a member slower than
    /// this to acknowledge may get a message another member also got).
    pub shared_ack_wait_ms: u64,
    /// NATS user name and password.
    pub user: Option<String>,
    /// NATS password (with `user`; never printed by `--check`).
    #[serde(skip_serializing)]
    pub password: Option<String>,
    /// NATS token (never printed by `--check`).
    #[serde(skip_serializing)]
    pub token: Option<String>,
    /// NATS credentials file (JWT and NKey seed, `.creds`).
    pub credentials_file: Option<PathBuf>,
    /// File holding an NKey seed.
    pub nkey_seed_file: Option<PathBuf>,
    /// CA certificates (PEM) to verify the NATS servers with.
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for NATS servers that ask for one.
    pub tls_cert_file: Option<PathBuf>,
    /// The client certificate's key (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// Refuse to talk to NATS without TLS.
    pub tls_required: bool,
    /// How often this node announces itself in the `P_nodes` bucket
    /// (`cluster/liveness.rs`), in milliseconds.
    pub heartbeat_ms: u64,
    /// A node not heard for this long (on the listening node's own clock)
    /// is dead: the others publish its clients' wills and let its sessions
    /// expire. A will arrives at most `node_timeout_ms + heartbeat_ms` (plus
    /// its Will Delay Interval) after the node's last heartbeat.
    pub node_timeout_ms: u64,
    /// How often a node looks for session records of dead nodes to mark
    /// disconnected and expired ones to delete, in milliseconds.
    pub sweep_interval_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node: String::new(),
            nats: vec!["nats://127.0.0.1:4222".into()],
            subject_prefix: "mqtt".into(),
            replicas: 3,
            ack_timeout_ms: 10_000,
            message_retention_secs: 3600,
            message_stream_max_bytes: 256 << 20,
            max_outbound: 65_536,
            shared_ack_wait_ms: 30_000,
            user: None,
            password: None,
            token: None,
            credentials_file: None,
            nkey_seed_file: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_required: false,
            heartbeat_ms: 1000,
            node_timeout_ms: 5000,
            sweep_interval_ms: 10_000,
        }
    }
}

impl ClusterConfig {
    /// Rejects values the cluster cannot work with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |m: &str| Err(ConfigError(format!("[cluster] {m}")));
        if !cfg!(feature = "cluster") {
            return fail("this build has no cluster support (cargo feature `cluster`)");
        }
        let token_ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !token_ok(&self.node) {
            return fail("node must be a non-empty name of letters, digits, - and _");
        }
        if !token_ok(&self.subject_prefix) {
            return fail("subject_prefix must be letters, digits, - and _");
        }
        if self.nats.is_empty() {
            return fail("nats needs at least one server URL");
        }
        if self.replicas == 0 || self.replicas > 5 {
            return fail("replicas must be between 1 and 5");
        }
        if self.ack_timeout_ms == 0 || self.max_outbound == 0 || self.shared_ack_wait_ms < 100 {
            return fail("ack_timeout_ms and max_outbound must be at least 1, shared_ack_wait_ms at least 100");
        }
        if self.heartbeat_ms < 10 || self.sweep_interval_ms < 10 {
            return fail("heartbeat_ms and sweep_interval_ms must be at least 10");
        }
        if self.node_timeout_ms < 2 * self.heartbeat_ms {
            // One late heartbeat must not make a node dead.
            return fail("node_timeout_ms must be at least twice heartbeat_ms");
        }
        if self.password.is_some() != self.user.is_some() {
            return fail("user and password go together");
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return fail("tls_cert_file and tls_key_file go together");
        }
        Ok(())
    }
}

// --- end of [cluster] -------------------------------------------------------

/// A configuration file that could not be used.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and checks a TOML file. Errors are one line starting with
    /// `FILE:LINE:` where the file says where.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        Config::from_toml_named(&text, &path.display().to_string())
    }

    /// Parses and checks TOML text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_named(text, "config")
    }

    /// Parses and checks TOML text read from `name`.
    fn from_toml_named(text: &str, name: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let place = match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!("{name}:{line}")
                }
                None => name.to_string(),
            };
            let message = e.message().trim().replace('\n', " ");
            ConfigError(format!("{place}: {}", with_fix(&message)))
        })?;
        config
            .validate()
            .map_err(|e| ConfigError(format!("{name}: {}", e.0)))?;
        Ok(config)
    }

    /// Reads a configuration file in either format: Mosquitto's
    /// (`key value` lines, recognised by content, see `mosquitto_conf.rs`)
    /// or TOML. Returns the warnings for settings that were ignored (only
    /// logging ones are).
    pub fn load(path: &Path) -> Result<(Config, Vec<String>), ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        if crate::mosquitto_conf::looks_like_mosquitto(&text) {
            crate::mosquitto_conf::translate_file(path, &text)
        } else {
            Config::from_toml_named(&text, &path.display().to_string()).map(|c| (c, Vec::new()))
        }
    }

    /// Opens every file the configuration names (password file, ACL file,
    /// TLS certificates and keys), as the broker would at start.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        crate::security::Security::load(self).map_err(ConfigError)?;
        for l in &self.listeners {
            if let Some(t) = &l.tls {
                crate::tls::server_config(t)
                    .map_err(|e| ConfigError(format!("TLS listener {}: {e}", l.bind)))?;
            }
        }
        Ok(())
    }

    /// The effective settings as TOML (what `--check` prints).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot show the settings: {e}\n"))
    }

    /// Rejects values the broker cannot honour.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |m: &str| Err(ConfigError(m.to_string()));
        if self.listeners.is_empty() {
            return fail("at least one listener is needed");
        }
        if self.max_qos > 2 {
            return fail("max_qos must be 0, 1 or 2");
        }
        if self.listen_backlog == 0 {
            return fail("listen_backlog must be at least 1");
        }
        if self.max_inflight == 0 || self.receive_maximum == 0 {
            return fail("max_inflight and receive_maximum must be at least 1");
        }
        if self.max_packet_size < 16 || self.max_packet_size > mqtt_codec::MAX_PACKET_SIZE {
            return fail("max_packet_size must be between 16 and 268435460");
        }
        for l in &self.listeners {
            if l.http_dir.is_some() && l.protocol != ListenerProtocol::Websockets {
                return Err(ConfigError(format!(
                    "listener {}: http_dir needs protocol = \"websockets\"",
                    l.bind
                )));
            }
        }
        crate::bridge::check(&self.bridges).map_err(ConfigError)?;
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        for (i, l) in self.listeners.iter().enumerate() {
            // Port 0 (any free port) may repeat: each gets its own.
            if l.bind.port() != 0 && self.listeners[..i].iter().any(|o| o.bind == l.bind) {
                return Err(ConfigError(format!(
                    "two listeners bind {}: give each its own address or port",
                    l.bind
                )));
            }
            if let Some(m) = &self.metrics {
                if m.bind == l.bind && l.bind.port() != 0 {
                    return Err(ConfigError(format!(
                        "[metrics] bind {} is also a listener's: give metrics its own port \
                         (conventionally 9234)",
                        m.bind
                    )));
                }
            }
        }
        Ok(())
    }

    /// The CONNECT timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs.max(1))
    }

    /// A configuration for tests and embedding: one listener on
    /// 127.0.0.1 with an ephemeral port, `$SYS` off, no store.
    pub fn ephemeral() -> Config {
        Config {
            listeners: vec![ListenerConfig::local_only(0)],
            sys_interval_secs: 0,
            durability: crate::store::Durability::None,
            ..Config::default()
        }
    }
}

/// A TOML error with its fix, when it is one we know: a top-level key
/// written after a `[[listeners]]` header (TOML puts it into that table), or
/// a misspelt key (serde's list of every expected key is replaced by the
/// closest one).
fn with_fix(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_string();
    };
    let Some((key, rest)) = rest.split_once('`') else {
        return message.to_string();
    };
    let expected: Vec<&str> = rest
        .split_once("expected one of ")
        .or_else(|| rest.split_once("expected "))
        .map(|(_, list)| {
            list.split(", ")
                .map(|f| f.trim_matches(|c| c == '`' || c == ' '))
                .collect()
        })
        .unwrap_or_default();
    let top_level = field_names::<Config>();
    if !expected.iter().any(|f| top_level.contains(f)) && top_level.contains(&key) {
        return format!(
            "`{key}` is a top-level key: move it above the first [[listeners]] or \
             [metrics] (TOML puts every key after a [table] header into that table)"
        );
    }
    let closest = expected
        .iter()
        .map(|f| (strsim::jaro_winkler(key, f), *f))
        .filter(|(score, _)| *score > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match closest {
        Some((_, f)) => format!("unknown key `{key}`: did you mean `{f}`?"),
        None => format!(
            "unknown key `{key}` (the keys here: {}; every key is in mqtt-broker.example.toml)",
            expected.join(", ")
        ),
    }
}

/// The field names of a configuration struct, as serde sees them: the
/// source of truth for "every key is documented" and for error hints.
/// (serde passes them to `deserialize_struct`; this deserializer records
/// them and stops. It is the trick `serde_aux::serde_introspect` uses,
/// written out to avoid a dependency for ten lines.)
pub fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Names(&'static [&'static str]);
    impl<'de> Deserializer<'de> for &mut Names {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(
            self,
            _: V,
        ) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = fields;
            Err(serde::de::Error::custom("names recorded"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut names = Names(&[]);
    let _ = T::deserialize(&mut names);
    names.0
}
