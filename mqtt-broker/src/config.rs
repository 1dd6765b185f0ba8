//! Broker configuration: every limit the broker enforces, with its default.
//!
//! The TOML file (`-c FILE`) uses the same names; `mqtt-broker.example.toml`
//! at the crate root documents every key (a test checks that it names every
//! field here). With no file the broker listens on 127.0.0.1:1883 and lets
//! anonymous clients in, like Mosquitto 2's local-only mode. A file in
//! Mosquitto's own format is translated into this `Config` by
//! `mosquitto_conf.rs`.
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
    /// Let clients in without a user name. Defaults to true only on a loopback
    /// address, like Mosquitto 2.
    pub allow_anonymous: Option<bool>,
    /// TLS for this listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsListenerConfig>,
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
    /// Whether anonymous clients may connect on this listener.
    pub fn allows_anonymous(&self) -> bool {
        self.allow_anonymous.unwrap_or(self.bind.ip().is_loopback())
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listening sockets. Default: one on 127.0.0.1:1883.
    pub listeners: Vec<ListenerConfig>,
    /// Largest packet accepted from a client, fixed header included; larger
    /// ones are refused from their header (MQTT 5: DISCONNECT 0x95).
    pub max_packet_size: u32,
    /// Most simultaneous client connections; more are closed at accept.
    pub max_connections: usize,
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
            listeners: vec![ListenerConfig {
                bind: SocketAddr::from(([127, 0, 0, 1], 1883)),
                allow_anonymous: None,
                tls: None,
            }],
            max_packet_size: mqtt_codec::MAX_PACKET_SIZE,
            max_connections: 100_000,
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
            log_format: LogFormat::Human,
            pid_file: None,
            metrics: None,
        }
    }
}

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
        if self.max_inflight == 0 || self.receive_maximum == 0 {
            return fail("max_inflight and receive_maximum must be at least 1");
        }
        if self.max_packet_size < 16 || self.max_packet_size > mqtt_codec::MAX_PACKET_SIZE {
            return fail("max_packet_size must be between 16 and 268435460");
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if self.listeners[..i].iter().any(|o| o.bind == l.bind) {
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
            listeners: vec![ListenerConfig {
                bind: SocketAddr::from(([127, 0, 0, 1], 0)),
                allow_anonymous: Some(true),
                tls: None,
            }],
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
