//! Mosquitto's configuration format (`mosquitto.conf(5)`), translated into
//! [`Config`], so `mqtt-broker -c /etc/mosquitto/mosquitto.conf` runs with
//! the settings a Mosquitto user already has.
//!
//! The format: one `key value` per line, `#` starts a comment line,
//! `listener PORT [ADDRESS]` opens a listener whose options follow it,
//! `include_dir DIR` reads `DIR/*.conf` in name order. A file is taken for
//! Mosquitto's format by its content ([`looks_like_mosquitto`]), whatever
//! its name.
//!
//! Every setting is either translated, or refused with the file, the line,
//! the key and what to do instead: nothing is silently ignored. The
//! exceptions are warnings: logging (`log_dest`, `log_type`, ...), because
//! logs here always go to standard output (the journal under systemd) and
//! a refusal would stop a working Mosquitto file for nothing, and the few
//! bridge settings whose only effect here would be on the TLS version
//! offered or on topic aliases (`bridge_tls_version`,
//! `bridge_max_topic_alias`), which cannot change what is delivered.
//!
//! Where meanings differ, the translation keeps Mosquitto's behaviour:
//! without `persistence true` nothing is stored (`durability = "none"`); a
//! `listener` refuses anonymous clients unless `allow_anonymous true`
//! (Mosquitto 2); a file with no listener listens on 127.0.0.1:1883 only.
//!
//! `protocol websockets` makes the listener a WebSocket one (wss with
//! `certfile` / `keyfile`), and `http_dir` serves files on it; `http_dir`
//! on a plain MQTT listener is an error, as in Mosquitto where only
//! WebSocket listeners serve HTTP.
//!
//! Bridges: `connection NAME` starts a `[[bridges]]` entry and the bridge
//! settings after it (`address`, `topic`, `remote_clientid`, ...) belong to
//! it until the next `connection` or the end of the file, as in Mosquitto's
//! parser (a `listener` line does not end it; listener settings always go
//! to the last listener). A bridge setting with no `connection` before it
//! in its file is an error. `topic` lines are kept as written and checked
//! with the bridge's own grammar. Mosquitto bridge settings this broker
//! does not have are refused, except when their value is what this broker
//! does anyway (`start_type automatic`, `round_robin true`,
//! `notifications_local_only false`, ...).
//!
//! Longer than 800 lines on purpose: most of it is two tables (`setting`
//! and `bridge_setting`), a match arm per Mosquitto key with its translation
//! or its refusal text, which read best top to bottom in one place.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::bridge::config::{
    check_all, Addresses, BridgeConfig, BridgeProtocol, BridgeTls, RestartTimeout, TopicLine,
};
use crate::config::{Config, ConfigError, ListenerConfig, ListenerProtocol, TlsListenerConfig};
use crate::store::Durability;

/// Mosquitto's "0: no limit" for the queue limits: the largest value TOML
/// can hold (an integer is 64-bit signed there), so `--check` can print it.
const NO_LIMIT: usize = i64::MAX as usize;

/// Deepest `include_dir` nesting followed (a directory that includes
/// itself would otherwise loop).
const MAX_INCLUDE_DEPTH: usize = 8;

/// Whether `text` is in Mosquitto's format rather than TOML: its first
/// setting is `key value`, not `key = value` or a `[table]`. A file with no
/// settings at all is TOML (all defaults) either way.
pub fn looks_like_mosquitto(text: &str) -> bool {
    let Some(line) = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
    else {
        return false;
    };
    if line.starts_with('[') {
        return false;
    }
    let key_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(line.len());
    if key_end == 0 {
        return false;
    }
    let rest = line[key_end..].trim_start();
    // `key value` (or a bare key, which TOML does not allow either).
    !rest.starts_with('=') && !rest.starts_with('.')
}

/// Translates a Mosquitto file read from `path`. Returns the configuration
/// and the warnings for logging settings that were ignored.
pub fn translate_file(path: &Path, text: &str) -> Result<(Config, Vec<String>), ConfigError> {
    let mut t = Translator::default();
    t.read(&path.display().to_string(), text, 0)?;
    t.finish()
}

/// Translates Mosquitto configuration text; `name` is used in errors.
pub fn translate(name: &str, text: &str) -> Result<(Config, Vec<String>), ConfigError> {
    let mut t = Translator::default();
    t.read(name, text, 0)?;
    t.finish()
}

/// Where a setting was written: for errors.
#[derive(Debug, Clone, Default)]
struct Place {
    file: String,
    line: usize,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A setting with where it came from.
#[derive(Debug, Clone)]
struct At<T> {
    value: T,
    place: Place,
}

/// Security settings: global, or per listener with
/// `per_listener_settings true`.
#[derive(Debug, Clone, Default)]
struct SecurityDraft {
    allow_anonymous: Option<bool>,
    password_file: Option<At<PathBuf>>,
    acl_file: Option<At<PathBuf>>,
}

/// A listener as the file describes it so far.
#[derive(Debug, Clone, Default)]
struct ListenerDraft {
    port: u16,
    address: Option<IpAddr>,
    ipv6: bool,
    place: Place,
    certfile: Option<PathBuf>,
    keyfile: Option<PathBuf>,
    cafile: Option<PathBuf>,
    require_certificate: bool,
    use_identity_as_username: bool,
    security: SecurityDraft,
    /// The listener Mosquitto 2 opens when a file has none.
    local_only: bool,
    /// `protocol websockets`.
    websockets: bool,
    http_dir: Option<At<PathBuf>>,
}

/// A bridge (`connection NAME` and the settings after it) as read so far.
#[derive(Debug)]
struct BridgeDraft {
    cfg: BridgeConfig,
    /// The `connection` line.
    place: Place,
    /// Where each setting was written, as (its `BridgeConfig` key, the key
    /// as written, place): the bridge's own check runs once the block is
    /// complete and names `BridgeConfig` keys, and its errors must point
    /// at the line.
    places: Vec<(&'static str, String, Place)>,
    /// Where each `topic` line was, in `cfg.topics` order.
    topic_places: Vec<Place>,
    cafile: Option<At<PathBuf>>,
    certfile: Option<At<PathBuf>>,
    keyfile: Option<At<PathBuf>>,
    /// Settings checked against the whole block at its end (their meaning
    /// depends on lines that may come after them).
    local_cleansession: Option<At<bool>>,
    session_expiry: Option<At<u64>>,
    round_robin: Option<At<bool>>,
}

impl BridgeDraft {
    /// Records where `key` was set. `once`: a second value is an error, as
    /// Mosquitto refuses a second value for a bridge's text settings; other
    /// settings take the last value.
    fn note(&mut self, key: &'static str, line: &Line<'_>, once: bool) -> Result<(), ConfigError> {
        if let Some(i) = self.places.iter().position(|(k, _, _)| *k == key) {
            if once {
                return Err(line.err(format!(
                    "given twice for bridge `{}` (first at {})",
                    self.cfg.name, self.places[i].2
                )));
            }
            self.places.remove(i);
        }
        self.places
            .push((key, line.key.to_string(), line.place.clone()));
        Ok(())
    }

    /// The place and written key of a `BridgeConfig` key (`topics[2]` is
    /// the third `topic` line); the `connection` line when it was not
    /// written.
    fn place_of(&self, key: &str) -> (Place, String) {
        if let Some(i) = key
            .strip_prefix("topics[")
            .and_then(|r| r.strip_suffix(']'))
            .and_then(|i| i.parse::<usize>().ok())
        {
            if let Some(p) = self.topic_places.get(i) {
                return (p.clone(), "topic".to_string());
            }
        }
        match self.places.iter().find(|(k, _, _)| *k == key) {
            Some((_, written, place)) => (place.clone(), written.clone()),
            None => (self.place.clone(), "connection".to_string()),
        }
    }
}

#[derive(Debug, Default)]
struct Translator {
    config: Config,
    warnings: Vec<String>,
    per_listener_settings: bool,
    /// Security settings outside any listener (all of them when
    /// `per_listener_settings` is false).
    global_security: SecurityDraft,
    /// Listener options written before any `listener` line: the default
    /// listener's (`port` / `bind_address`, or 127.0.0.1:1883).
    default_listener: ListenerDraft,
    default_listener_used: Option<Place>,
    default_listener_declared: bool,
    listeners: Vec<ListenerDraft>,
    persistence: bool,
    autosave_interval: Option<u64>,
    /// Global values that Mosquitto sets per listener: one value for all.
    max_connections: Option<At<usize>>,
    bridges: Vec<BridgeDraft>,
    /// The bridge that bridge settings apply to now: the last `connection`
    /// of the file being read.
    current_bridge: Option<usize>,
}

/// One `key value` line.
struct Line<'a> {
    key: &'a str,
    value: &'a str,
    place: Place,
}

impl Line<'_> {
    fn err(&self, message: impl std::fmt::Display) -> ConfigError {
        ConfigError(format!("{}: {}: {message}", self.place, self.key))
    }

    fn text(&self) -> Result<&str, ConfigError> {
        if self.value.is_empty() {
            return Err(self.err("needs a value"));
        }
        Ok(self.value)
    }

    fn path(&self) -> Result<PathBuf, ConfigError> {
        self.text().map(PathBuf::from)
    }

    fn bool(&self) -> Result<bool, ConfigError> {
        match self.value {
            "true" => Ok(true),
            "false" => Ok(false),
            v => Err(self.err(format!("must be true or false, not `{v}`"))),
        }
    }

    fn number<T: std::str::FromStr>(&self, what: &str) -> Result<T, ConfigError> {
        self.value
            .parse()
            .map_err(|_| self.err(format!("`{}` is not {what}", self.value)))
    }

    /// Mosquitto's "0 means no limit" numbers.
    fn limit(&self) -> Result<Option<u64>, ConfigError> {
        let n: i64 = self.number("a whole number")?;
        Ok(if n <= 0 { None } else { Some(n as u64) })
    }
}

/// Settings that only change where and what Mosquitto logs.
const LOGGING_KEYS: &[&str] = &[
    "log_dest",
    "log_type",
    "log_timestamp",
    "log_timestamp_format",
    "log_facility",
    "connection_messages",
    "websockets_log_level",
];

/// Mosquitto settings this broker does not have, with what to do instead.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("user", "the broker does not switch users: start it as that user (the Debian package's systemd unit runs it as mqtt-broker)"),
    ("persistence_file", "the store is always broker.db in persistence_location: remove the line"),
    ("autosave_on_changes", "remove the line: with persistence every acknowledged message is synced (or every autosave_interval)"),
    ("allow_duplicate_messages", "remove the line: overlapping subscriptions always get one copy"),
    ("allow_zero_length_clientid", "remove the line: a client with an empty id gets an assigned one (MQTT 5) or is refused (3.1.1 without clean session)"),
    ("auto_id_prefix", "remove the line: assigned client ids are chosen by the broker"),
    ("clientid_prefixes", "use an ACL file instead"),
    ("check_retain_source", "remove the line"),
    ("memory_limit", "use max_queued_messages / max_queued_bytes to bound memory"),
    ("message_size_limit", "use max_packet_size (it counts the whole packet)"),
    ("upgrade_outgoing_qos", "remove the line: messages are delivered at the lower of the two QoS, as MQTT says"),
    ("set_tcp_nodelay", "remove the line: sockets always have TCP_NODELAY"),
    ("plugin", "plugins are not supported: use password_file and acl_file"),
    ("auth_plugin", "plugins are not supported: use password_file and acl_file"),
    ("plugin_opt", "plugins are not supported"),
    ("global_plugin", "plugins are not supported"),
    ("psk_file", "TLS-PSK is not supported: use certificates (mqtt-broker certs makes them)"),
    ("psk_hint", "TLS-PSK is not supported: use certificates"),
    ("capath", "put the CA certificates into one PEM file and use cafile"),
    ("ciphers", "remove the line: rustls offers only modern cipher suites"),
    ("ciphers_tls1.3", "remove the line: rustls offers only modern cipher suites"),
    ("crlfile", "certificate revocation lists are not supported"),
    ("dhparamfile", "remove the line: rustls uses ECDHE only"),
    ("ecdh_curve", "remove the line"),
    ("keyfile_encryption_password", "decrypt the key file: encrypted keys are not supported"),
    ("require_certificate_for_protocol", "not supported"),
    ("use_subject_as_username", "use use_identity_as_username (the Common Name)"),
    ("use_username_as_clientid", "not supported: remove the line"),
    ("mount_point", "mount points are not supported"),
    ("bind_interface", "use `listener PORT ADDRESS` with the interface's address"),
    ("max_inflight_bytes", "use max_inflight_messages"),
    ("enable_control_api", "not supported"),
    ("accept_protocol_versions", "not supported: every listener accepts MQTT 3.1, 3.1.1 and 5.0"),
    ("websockets_origin", "the WebSocket listener does not check the Origin header: protect it with password_file (and TLS)"),
];

/// Bridge settings this broker translates or accepts at some values; like
/// every bridge setting they need a `connection` block.
const BRIDGE_KEYS: &[&str] = &[
    "address",
    "addresses",
    "topic",
    "remote_clientid",
    "clientid",
    "local_clientid",
    "remote_username",
    "username",
    "remote_password",
    "password",
    "cleansession",
    "local_cleansession",
    "keepalive_interval",
    "restart_timeout",
    "try_private",
    "notifications",
    "notifications_local_only",
    "notification_topic",
    "bridge_protocol_version",
    "bridge_outgoing_retain",
    "bridge_cafile",
    "bridge_certfile",
    "bridge_keyfile",
    "bridge_insecure",
    "bridge_tls_version",
    "bridge_attempt_unsubscribe",
    "start_type",
    "round_robin",
    "idle_timeout",
    "threshold",
    "bridge_max_packet_size",
    "bridge_max_topic_alias",
    "bridge_session_expiry_interval",
    "bridge_reload_type",
    "bridge_require_ocsp",
    "bridge_tls_use_os_certs",
];

/// Mosquitto bridge settings this broker does not have at any value, with
/// what it does instead.
const BRIDGE_UNSUPPORTED: &[(&str, &str)] = &[
    ("bridge_capath", "put the CA certificates into one PEM file and use bridge_cafile"),
    ("bridge_identity", "TLS-PSK is not supported: use certificates (bridge_cafile, bridge_certfile, bridge_keyfile)"),
    ("bridge_psk", "TLS-PSK is not supported: use certificates (bridge_cafile, bridge_certfile, bridge_keyfile)"),
    ("local_username", "the bridge's session on this broker is inside it and is not checked against password_file or acl_file: remove the line"),
    ("local_password", "the bridge's session on this broker is inside it and is not checked against password_file or acl_file: remove the line"),
    ("bridge_receive_maximum", "the bridge announces this broker's Receive Maximum (receive_maximum in TOML, default 1024) to an MQTT 5 remote: remove the line"),
    ("bridge_alpn", "the bridge sends no ALPN protocol names: remove the line"),
    ("bridge_bind_address", "the bridge's socket takes the source address the system's routing gives it: remove the line"),
    ("bridge_ciphers", "remove the line: rustls offers only modern cipher suites"),
    ("bridge_ciphers_tls1.3", "remove the line: rustls offers only modern cipher suites"),
    ("bridge_tcp_keepalive", "a dead connection to the remote is found by MQTT keep alive (keepalive_interval): remove the line"),
    ("bridge_tcp_user_timeout", "a dead connection to the remote is found by MQTT keep alive (keepalive_interval): remove the line"),
];

fn is_bridge_key(key: &str) -> bool {
    BRIDGE_KEYS.contains(&key) || BRIDGE_UNSUPPORTED.iter().any(|(k, _)| *k == key)
}

impl Translator {
    fn read(&mut self, file: &str, text: &str, depth: usize) -> Result<(), ConfigError> {
        // Mosquitto's parser keeps the current bridge per file: a
        // `connection` block ends with its file, an included file starts
        // outside any block, and the including file's block goes on after
        // its `include_dir`.
        let outer = self.current_bridge.take();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = match line.split_once(|c: char| c.is_ascii_whitespace()) {
                Some((k, v)) => (k, v.trim()),
                None => (line, ""),
            };
            let line = Line {
                key,
                value,
                place: Place {
                    file: file.to_string(),
                    line: i + 1,
                },
            };
            self.setting(&line, depth)?;
        }
        self.current_bridge = outer;
        Ok(())
    }

    /// The listener that listener options apply to now.
    fn current(&mut self, line: &Line<'_>) -> &mut ListenerDraft {
        match self.listeners.last_mut() {
            Some(l) => l,
            None => {
                if self.default_listener_used.is_none() {
                    self.default_listener_used = Some(line.place.clone());
                }
                &mut self.default_listener
            }
        }
    }

    /// Where a security setting goes.
    fn security(&mut self, line: &Line<'_>) -> &mut SecurityDraft {
        if self.per_listener_settings {
            &mut self.current(line).security
        } else {
            &mut self.global_security
        }
    }

    fn setting(&mut self, line: &Line<'_>, depth: usize) -> Result<(), ConfigError> {
        match line.key {
            // --- global settings ---
            "per_listener_settings" => {
                let on = line.bool()?;
                if on != self.per_listener_settings
                    && (!self.listeners.is_empty()
                        || self.global_security.allow_anonymous.is_some()
                        || self.global_security.password_file.is_some()
                        || self.global_security.acl_file.is_some())
                {
                    return Err(line.err(
                        "must come before any listener and any security setting: move it to the top",
                    ));
                }
                self.per_listener_settings = on;
            }
            "allow_anonymous" => {
                let v = line.bool()?;
                self.security(line).allow_anonymous = Some(v);
            }
            "password_file" => {
                let v = At {
                    value: line.path()?,
                    place: line.place.clone(),
                };
                self.security(line).password_file = Some(v);
            }
            "acl_file" => {
                let v = At {
                    value: line.path()?,
                    place: line.place.clone(),
                };
                self.security(line).acl_file = Some(v);
            }
            "persistence" => self.persistence = line.bool()?,
            "persistence_location" => self.config.data_dir = line.path()?,
            "autosave_interval" => {
                self.autosave_interval = Some(line.number("a number of seconds")?);
            }
            "max_inflight_messages" => {
                self.config.max_inflight = match line.limit()? {
                    None => u16::MAX,
                    Some(n) => u16::try_from(n)
                        .map_err(|_| line.err("must be at most 65535 (0: no limit)"))?,
                };
            }
            "max_queued_messages" => {
                self.config.max_queued_messages = line.limit()?.map_or(NO_LIMIT, |n| n as usize);
            }
            "max_queued_bytes" => {
                self.config.max_queued_bytes = line.limit()?.map_or(NO_LIMIT, |n| n as usize);
            }
            "max_packet_size" => {
                self.config.max_packet_size = match line.limit()? {
                    None => mqtt_codec::MAX_PACKET_SIZE,
                    Some(n) if (16..=mqtt_codec::MAX_PACKET_SIZE as u64).contains(&n) => n as u32,
                    Some(_) => return Err(line.err("must be between 16 and 268435460 (0: no limit)")),
                };
            }
            "max_keepalive" => {
                self.config.max_keepalive = line.number("a number of seconds up to 65535")?;
            }
            "max_qos" => {
                let q: u8 = line.number("0, 1 or 2")?;
                if q > 2 {
                    return Err(line.err("must be 0, 1 or 2"));
                }
                self.config.max_qos = q;
            }
            "max_topic_alias" => self.config.topic_alias_maximum = line.number("a number up to 65535")?,
            "retain_available" => self.config.retain_available = line.bool()?,
            "queue_qos0_messages" => self.config.queue_qos0_messages = line.bool()?,
            "sys_interval" => self.config.sys_interval_secs = line.number("a number of seconds")?,
            "persistent_client_expiration" => {
                self.config.persistent_client_expiration_secs = Some(expiration(line)?);
            }
            "pid_file" => self.config.pid_file = Some(line.path()?),
            "include_dir" => self.include_dir(line, depth)?,
            "max_connections" => {
                let n: i64 = line.number("a whole number (-1: no limit)")?;
                let n = if n < 0 { 100_000_000 } else { n as usize };
                if let Some(prev) = &self.max_connections {
                    if prev.value != n {
                        return Err(line.err(format!(
                            "differs from {} ({}): this broker has one connection limit for \
                             all listeners; give every listener the same value",
                            prev.place, prev.value
                        )));
                    }
                }
                self.max_connections = Some(At {
                    value: n,
                    place: line.place.clone(),
                });
            }

            // --- listeners ---
            "listener" => {
                let mut words = line.value.split_ascii_whitespace();
                let port: u16 = words
                    .next()
                    .ok_or_else(|| line.err("needs a port: `listener 1883` or `listener 1883 192.168.1.10`"))?
                    .parse()
                    .map_err(|_| line.err("the port must be a number from 0 to 65535"))?;
                if port == 0 {
                    return Err(line.err(
                        "port 0 is a Unix socket in Mosquitto: Unix sockets are not supported",
                    ));
                }
                let address = match words.next() {
                    Some(a) => Some(address(line, a)?),
                    None => None,
                };
                if words.next().is_some() {
                    return Err(line.err("takes a port and at most one address"));
                }
                self.listeners.push(ListenerDraft {
                    port,
                    address,
                    place: line.place.clone(),
                    ..ListenerDraft::default()
                });
            }
            "port" => {
                if !self.listeners.is_empty() {
                    return Err(line.err("sets the default listener: move it above the first `listener`, or use `listener PORT`"));
                }
                self.default_listener.port = line.number("a port from 1 to 65535")?;
                self.default_listener_declared = true;
            }
            "bind_address" => {
                if !self.listeners.is_empty() {
                    return Err(line.err("sets the default listener: move it above the first `listener`, or use `listener PORT ADDRESS`"));
                }
                self.default_listener.address = Some(address(line, line.text()?)?);
                self.default_listener_declared = true;
            }
            "socket_domain" => {
                let ipv6 = match line.value {
                    "ipv4" => false,
                    "ipv6" => true,
                    v => return Err(line.err(format!("must be ipv4 or ipv6, not `{v}`"))),
                };
                self.current(line).ipv6 = ipv6;
            }
            "protocol" => {
                let websockets = match line.value {
                    "mqtt" => false,
                    "websockets" => true,
                    v => return Err(line.err(format!("must be mqtt or websockets, not `{v}`"))),
                };
                self.current(line).websockets = websockets;
            }
            // Checked against the listener's protocol at the end: `protocol`
            // may come after it.
            "http_dir" => {
                let v = At {
                    value: line.path()?,
                    place: line.place.clone(),
                };
                self.current(line).http_dir = Some(v);
            }
            "websockets_headers_size" => {
                let n: u32 = line.number("a number of bytes")?;
                // Our handshake reads a request head of up to 8 KiB, so a
                // smaller Mosquitto limit takes nothing away.
                if n > 8192 {
                    return Err(line.err(
                        "not supported above 8192: the WebSocket request head may be up to 8 KiB here (a fixed limit)",
                    ));
                }
            }
            "certfile" => self.current(line).certfile = Some(line.path()?),
            "keyfile" => self.current(line).keyfile = Some(line.path()?),
            "cafile" => self.current(line).cafile = Some(line.path()?),
            "require_certificate" => {
                let v = line.bool()?;
                self.current(line).require_certificate = v;
            }
            "use_identity_as_username" => {
                let v = line.bool()?;
                self.current(line).use_identity_as_username = v;
            }
            "tls_version" => match line.value {
                "tlsv1.2" => {}
                "tlsv1.3" => {
                    return Err(line.err(
                        "listeners accept TLS 1.2 and 1.3; a TLS 1.3-only listener is not supported: remove the line",
                    ))
                }
                v => {
                    return Err(line.err(format!(
                        "`{v}` is not supported: listeners accept TLS 1.2 and 1.3 only; remove the line"
                    )))
                }
            },

            "connection" => {
                let mut words = line.value.split_ascii_whitespace();
                let name = words
                    .next()
                    .ok_or_else(|| line.err("needs the bridge's name: `connection NAME`"))?;
                if words.next().is_some() {
                    return Err(line.err("takes one name, without spaces"));
                }
                if let Some(b) = self.bridges.iter().find(|b| b.cfg.name == name) {
                    return Err(line.err(format!(
                        "the name `{name}` is already used by the bridge at {}",
                        b.place
                    )));
                }
                self.bridges.push(BridgeDraft {
                    cfg: BridgeConfig::new(name),
                    place: line.place.clone(),
                    places: Vec::new(),
                    topic_places: Vec::new(),
                    cafile: None,
                    certfile: None,
                    keyfile: None,
                    local_cleansession: None,
                    session_expiry: None,
                    round_robin: None,
                });
                self.current_bridge = Some(self.bridges.len() - 1);
            }
            key if is_bridge_key(key) => self.bridge_setting(line)?,

            key if LOGGING_KEYS.contains(&key) => self.warnings.push(format!(
                "{}: {key}: ignored (logging setting): logs go to standard output, \
                 the journal under systemd; log_format = \"json\" in TOML for log shippers",
                line.place
            )),
            key => {
                if let Some((_, fix)) = UNSUPPORTED.iter().find(|(k, _)| *k == key) {
                    return Err(line.err(format!("not supported: {fix}")));
                }
                return Err(line.err("unknown setting (see mosquitto.conf(5); if it is a Mosquitto setting, this broker does not have it)"));
            }
        }
        Ok(())
    }

    fn include_dir(&mut self, line: &Line<'_>, depth: usize) -> Result<(), ConfigError> {
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(line.err("include_dir nested too deep (does a directory include itself?)"));
        }
        let dir = line.path()?;
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| line.err(format!("cannot read directory {}: {e}", dir.display())))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "conf") && p.is_file())
            .collect();
        // Mosquitto reads them in name order.
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f)
                .map_err(|e| line.err(format!("cannot read {}: {e}", f.display())))?;
            self.read(&f.display().to_string(), &text, depth + 1)?;
        }
        Ok(())
    }

    /// A setting inside a `connection` block.
    fn bridge_setting(&mut self, line: &Line<'_>) -> Result<(), ConfigError> {
        let Some(i) = self.current_bridge else {
            return Err(line.err(
                "is a bridge setting, but no `connection NAME` line comes before it in this file: \
                 put it after the `connection` line of its bridge",
            ));
        };
        if let Some((_, fix)) = BRIDGE_UNSUPPORTED.iter().find(|(k, _)| *k == line.key) {
            return Err(line.err(format!("not supported: {fix}")));
        }
        let b = &mut self.bridges[i];
        // A Mosquitto setting we accept only at the value this broker
        // follows anyway.
        let only = |ok: bool, fix: &str| {
            if ok {
                Ok(())
            } else {
                Err(line.err(format!("`{}` is not supported: {fix}", line.value)))
            }
        };
        match line.key {
            "address" | "addresses" => {
                b.note("address", line, true)?;
                // Mosquitto stops at a word that starts a comment.
                let list: Vec<String> = line
                    .text()?
                    .split_ascii_whitespace()
                    .take_while(|w| !w.starts_with('#'))
                    .map(bridge_address)
                    .collect();
                b.cfg.address = match <[String; 1]>::try_from(list) {
                    Ok([one]) => Addresses::One(one),
                    Err(list) if list.is_empty() => return Err(line.err("needs a value")),
                    Err(list) => Addresses::Many(list),
                };
            }
            "topic" => {
                // Kept as written: `topics` takes Mosquitto's line syntax.
                // Parsed here too, so a bad line is refused at its place.
                let text = line.text()?;
                TopicLine::parse(text).map_err(|m| line.err(m))?;
                b.cfg.topics.push(text.to_string());
                b.topic_places.push(line.place.clone());
            }
            // `clientid`, `username` and `password` are Mosquitto's older
            // names, still read by it.
            "remote_clientid" | "clientid" => {
                b.note("remote_clientid", line, true)?;
                b.cfg.remote_clientid = Some(line.text()?.to_string());
            }
            "local_clientid" => {
                b.note("local_clientid", line, true)?;
                b.cfg.local_clientid = Some(line.text()?.to_string());
            }
            "remote_username" | "username" => {
                b.note("remote_username", line, true)?;
                b.cfg.remote_username = Some(line.text()?.to_string());
            }
            "remote_password" | "password" => {
                b.note("remote_password", line, true)?;
                b.cfg.remote_password = Some(line.text()?.to_string());
            }
            "notification_topic" => {
                b.note("notification_topic", line, true)?;
                b.cfg.notification_topic = Some(line.text()?.to_string());
            }
            "cleansession" => {
                b.note("cleansession", line, false)?;
                b.cfg.cleansession = line.bool()?;
            }
            "try_private" => {
                b.note("try_private", line, false)?;
                b.cfg.try_private = line.bool()?;
            }
            "notifications" => {
                b.note("notifications", line, false)?;
                b.cfg.notifications = line.bool()?;
            }
            "bridge_outgoing_retain" => {
                b.note("outgoing_retain", line, false)?;
                b.cfg.outgoing_retain = line.bool()?;
            }
            "bridge_protocol_version" => {
                b.note("protocol_version", line, false)?;
                b.cfg.protocol_version = match line.value {
                    "mqttv31" => BridgeProtocol::Mqttv31,
                    "mqttv311" => BridgeProtocol::Mqttv311,
                    "mqttv50" => BridgeProtocol::Mqttv50,
                    v => {
                        return Err(line.err(format!(
                            "must be mqttv31, mqttv311 or mqttv50, not `{v}`"
                        )))
                    }
                };
            }
            "keepalive_interval" => {
                b.note("keepalive_interval", line, false)?;
                let n: i64 = line.number("a number of seconds")?;
                if n > i64::from(u16::MAX) {
                    return Err(line.err("must be at most 65535 seconds"));
                }
                // Mosquitto's floor, kept so the bridge pings as it would.
                if n < 5 {
                    self.warnings.push(format!(
                        "{}: keepalive_interval: {n} is below 5: 5 seconds are used, as in Mosquitto",
                        line.place
                    ));
                }
                b.cfg.keepalive_interval = n.max(5) as u16;
            }
            "restart_timeout" => {
                b.note("restart_timeout", line, false)?;
                let bad = || line.err("must be `SECONDS` (constant) or `BASE CAP` (backoff from BASE up to CAP seconds)");
                let words: Vec<i64> = line
                    .text()?
                    .split_ascii_whitespace()
                    .map(|w| w.parse().map_err(|_| bad()))
                    .collect::<Result<_, _>>()?;
                // Mosquitto's floor of 1 second for the first value.
                b.cfg.restart_timeout = match *words.as_slice() {
                    [n] => RestartTimeout::Constant(n.max(1) as u64),
                    [base, cap] => {
                        let base = base.max(1);
                        if cap < base {
                            return Err(line.err("the cap (second value) is lower than the base"));
                        }
                        RestartTimeout::Backoff([base as u64, cap as u64])
                    }
                    [_, _, _] => {
                        return Err(line.err(
                            "the third value (stable) is not supported: the backoff starts again from the base after every successful connection; remove it",
                        ))
                    }
                    _ => return Err(bad()),
                };
            }
            "bridge_cafile" => {
                b.note("tls.ca_file", line, true)?;
                b.cafile = Some(At { value: line.path()?, place: line.place.clone() });
            }
            "bridge_certfile" => {
                b.note("tls.cert_file", line, true)?;
                b.certfile = Some(At { value: line.path()?, place: line.place.clone() });
            }
            "bridge_keyfile" => {
                b.note("tls.key_file", line, true)?;
                b.keyfile = Some(At { value: line.path()?, place: line.place.clone() });
            }
            // Mosquitto's bridge_insecure skips only the host name check;
            // our `tls.insecure` accepts any certificate at all, so
            // translating it would quietly weaken the bridge.
            "bridge_insecure" => only(
                !line.bool()?,
                "Mosquitto then skips only the host name check, but this broker can only skip the whole certificate check; give the remote a certificate that names the address it is reached at",
            )?,
            "bridge_tls_version" => match line.value {
                "tlsv1.2" | "tlsv1.3" => self.warnings.push(format!(
                    "{}: bridge_tls_version: ignored: the bridge offers TLS 1.2 and 1.3 and the remote picks",
                    line.place
                )),
                v => {
                    return Err(line.err(format!(
                        "`{v}` is not supported: the bridge speaks TLS 1.2 and 1.3 only; remove the line"
                    )))
                }
            },
            // The bridge never unsubscribes on the remote; a message from
            // a subscription left over there that no `in` line maps is
            // acknowledged and dropped, so either value delivers the same.
            "bridge_attempt_unsubscribe" => {
                line.bool()?;
            }
            "start_type" => match line.value {
                "automatic" => {}
                "lazy" | "once" => only(
                    false,
                    "the bridge connects at start and reconnects after every failure (start_type automatic)",
                )?,
                v => return Err(line.err(format!("must be automatic, lazy or once, not `{v}`"))),
            },
            // Checked at the end, against the number of addresses.
            "round_robin" => {
                b.round_robin = Some(At { value: line.bool()?, place: line.place.clone() });
            }
            // Both only act with start_type lazy, refused above.
            "idle_timeout" => only(
                line.number::<i64>("a number of seconds")? == 60,
                "it only acts with start_type lazy; the bridge stays connected here: remove the line",
            )?,
            "threshold" => only(
                line.number::<i64>("a number of messages")? == 10,
                "it only acts with start_type lazy; the bridge stays connected here: remove the line",
            )?,
            "bridge_max_packet_size" => only(
                line.number::<i64>("a number of bytes")? <= 0,
                "messages to the remote are limited by its Maximum Packet Size (MQTT 5) and by this broker's max_packet_size; remove the line",
            )?,
            "bridge_max_topic_alias" => {
                let n: i64 = line.number("a number up to 65535")?;
                if !(0..=i64::from(u16::MAX)).contains(&n) {
                    return Err(line.err("must be 0 to 65535"));
                }
                self.warnings.push(format!(
                    "{}: bridge_max_topic_alias: ignored: the bridge lets the remote use no topic aliases, so it sends full topic names",
                    line.place
                ));
            }
            "bridge_session_expiry_interval" => {
                let v = line.value;
                let n = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
                    Some(hex) => u64::from_str_radix(hex, 16).ok(),
                    None => v.parse().ok(),
                }
                .filter(|n| *n <= u64::from(u32::MAX))
                .ok_or_else(|| line.err(format!("`{v}` is not a number of seconds from 0 to 4294967295")))?;
                b.session_expiry = Some(At { value: n, place: line.place.clone() });
            }
            "local_cleansession" => {
                b.local_cleansession = Some(At { value: line.bool()?, place: line.place.clone() });
            }
            "notifications_local_only" => only(
                !line.bool()?,
                "notifications go to both brokers here (notifications false sends none)",
            )?,
            "bridge_reload_type" => match line.value {
                "lazy" => {}
                "immediate" => only(
                    false,
                    "bridges are not reloaded on SIGHUP here (only TLS files, passwords and ACLs are): restart the broker to change a bridge",
                )?,
                v => return Err(line.err(format!("must be lazy or immediate, not `{v}`"))),
            },
            "bridge_require_ocsp" => only(
                !line.bool()?,
                "OCSP is not checked: remove the line",
            )?,
            "bridge_tls_use_os_certs" => only(
                !line.bool()?,
                "give the system's CA file with bridge_cafile (e.g. /etc/ssl/certs/ca-certificates.crt)",
            )?,
            key => return Err(line.err(format!("bridge setting {key} is not handled"))),
        }
        Ok(())
    }

    /// The `[[bridges]]` entries, with the checks that need a whole block.
    fn finish_bridges(&mut self) -> Result<Vec<BridgeConfig>, ConfigError> {
        let at = |p: &Place, key: &str, m: String| ConfigError(format!("{p}: {key}: {m}"));
        let mut out = Vec::new();
        for b in &mut self.bridges {
            let name = b.cfg.name.clone();
            if !b.places.iter().any(|(k, _, _)| *k == "address") {
                return Err(at(
                    &b.place,
                    "connection",
                    format!(
                    "bridge `{name}` has no `address` line: give the remote broker's host[:port]"
                ),
                ));
            }
            if b.cfg.topics.is_empty() {
                return Err(at(
                    &b.place,
                    "connection",
                    format!("bridge `{name}` has no `topic` line: nothing would cross it"),
                ));
            }
            // TLS to the remote is on when bridge_cafile is set, as in
            // Mosquitto (its other ways, capath and the system's
            // certificates, are refused above).
            match (&b.cafile, &b.certfile, &b.keyfile) {
                (None, None, None) => {}
                (_, Some(c), None) => {
                    return Err(at(&c.place, "bridge_certfile", "needs bridge_keyfile (its private key)".into()))
                }
                (_, None, Some(k)) => {
                    return Err(at(&k.place, "bridge_keyfile", "needs bridge_certfile (the certificate of the key)".into()))
                }
                (None, Some(c), Some(_)) => {
                    return Err(at(&c.place, "bridge_certfile", "needs bridge_cafile: TLS to the remote is on when bridge_cafile names the CA certificates of the remote's certificate".into()))
                }
                (Some(ca), cert, key) => {
                    b.cfg.tls = Some(BridgeTls {
                        ca_file: Some(ca.value.clone()),
                        cert_file: cert.as_ref().map(|c| c.value.clone()),
                        key_file: key.as_ref().map(|k| k.value.clone()),
                        insecure: false,
                        server_name: None,
                    });
                }
            }
            if let Some(l) = &b.local_cleansession {
                if l.value != b.cfg.cleansession {
                    return Err(at(&l.place, "local_cleansession", format!(
                        "differs from cleansession ({}): here cleansession applies to both the remote and the local session; remove the line",
                        b.cfg.cleansession
                    )));
                }
            }
            if let Some(e) = &b.session_expiry {
                // What the bridge asks an MQTT 5 remote for: a session that
                // never expires, or none with cleansession true. 3.x has no
                // expiry, so Mosquitto ignores the setting there.
                let ours = if b.cfg.cleansession {
                    0
                } else {
                    u64::from(u32::MAX)
                };
                if b.cfg.protocol_version == BridgeProtocol::Mqttv50 && e.value != ours {
                    return Err(at(&e.place, "bridge_session_expiry_interval", format!(
                        "`{}` is not supported: the bridge's session on the remote never expires (4294967295), or ends with the connection with cleansession true (0); remove the line",
                        e.value
                    )));
                }
            }
            let several = matches!(&b.cfg.address, Addresses::Many(v) if v.len() > 1);
            match &b.round_robin {
                Some(r) if !r.value && several => {
                    return Err(at(&r.place, "round_robin", "`false` is not supported: the bridge moves to the next address when a connection fails and stays there until that one fails (round_robin true); it does not go back to the first".into()))
                }
                None if several => self.warnings.push(format!(
                    "{}: {}: several addresses: the bridge tries them in turn and stays on the one that answers until it fails (Mosquitto's round_robin true), it does not go back to the first",
                    b.place_of("address").0,
                    b.place_of("address").1
                )),
                _ => {}
            }
            out.push(b.cfg.clone());
        }
        // The bridge's own checks (addresses, client ids, notification
        // topic, ...), reported at the line they are about.
        check_all(&out).map_err(|e| self.bridge_error(&e))?;
        Ok(out)
    }

    /// A bridge check's error (`bridge "NAME": KEY: message`) at the line
    /// of KEY in that bridge's block.
    fn bridge_error(&self, e: &str) -> ConfigError {
        for b in &self.bridges {
            let Some(rest) = e.strip_prefix(&format!("bridge {:?}: ", b.cfg.name)) else {
                continue;
            };
            let (key, message) = rest.split_once(": ").unwrap_or(("", rest));
            let (place, written) = b.place_of(key);
            return ConfigError(format!("{place}: {written}: {message}"));
        }
        ConfigError(e.to_string())
    }

    fn finish(mut self) -> Result<(Config, Vec<String>), ConfigError> {
        let mut c = std::mem::take(&mut self.config);
        c.durability = match (self.persistence, self.autosave_interval) {
            (false, _) => Durability::None,
            (true, Some(secs)) if secs > 0 => {
                c.sync_interval_ms = secs.saturating_mul(1000);
                Durability::Periodic
            }
            (true, _) => Durability::Always,
        };
        if let Some(m) = &self.max_connections {
            c.max_connections = m.value;
        }

        let explicit_listeners = !self.listeners.is_empty();
        if let (false, true, Some(place)) = (
            self.default_listener_declared,
            explicit_listeners,
            &self.default_listener_used,
        ) {
            return Err(ConfigError(format!(
                "{place}: listener option before the first `listener` line: move it below the `listener` it belongs to"
            )));
        }
        if self.default_listener_declared || !explicit_listeners {
            let mut d = std::mem::take(&mut self.default_listener);
            if !self.default_listener_declared {
                // Mosquitto 2 without listeners: local only, port 1883,
                // anonymous clients allowed unless the file says otherwise.
                d.address = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
                d.port = 1883;
                d.local_only = true;
            } else if d.port == 0 {
                d.port = 1883;
            }
            self.listeners.insert(0, d);
        }

        // One password file and one ACL file for all listeners.
        let mut password_file = self.global_security.password_file.clone();
        let mut acl_file = self.global_security.acl_file.clone();
        if self.per_listener_settings {
            password_file = one_for_all(
                self.listeners.iter().map(|l| &l.security.password_file),
                "password_file",
            )?;
            acl_file = one_for_all(
                self.listeners.iter().map(|l| &l.security.acl_file),
                "acl_file",
            )?;
        }
        c.password_file = password_file.map(|p| p.value);
        c.acl_file = acl_file.map(|p| p.value);

        c.listeners = Vec::new();
        for l in &self.listeners {
            let ip = l.address.unwrap_or(if l.ipv6 {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            } else {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            });
            let anonymous = if self.per_listener_settings {
                l.security.allow_anonymous
            } else {
                self.global_security.allow_anonymous
            }
            .unwrap_or(l.local_only);
            let tls = match (&l.certfile, &l.keyfile) {
                (None, None) => {
                    if l.cafile.is_some() || l.require_certificate || l.use_identity_as_username {
                        return Err(ConfigError(format!(
                            "{}: listener {}: cafile, require_certificate and use_identity_as_username need certfile and keyfile",
                            l.place, l.port
                        )));
                    }
                    None
                }
                (Some(cert), Some(key)) => Some(TlsListenerConfig {
                    cert_file: cert.clone(),
                    key_file: key.clone(),
                    ca_file: l.cafile.clone(),
                    require_certificate: l.require_certificate,
                    use_identity_as_username: l.use_identity_as_username,
                }),
                _ => {
                    return Err(ConfigError(format!(
                        "{}: listener {}: TLS needs both certfile and keyfile",
                        l.place, l.port
                    )))
                }
            };
            if let (Some(dir), false) = (&l.http_dir, l.websockets) {
                return Err(ConfigError(format!(
                    "{}: http_dir: serves files on WebSocket listeners only: add `protocol websockets` to listener {} or remove the line",
                    dir.place, l.port
                )));
            }
            c.listeners.push(ListenerConfig {
                // A listener in a file refuses anonymous clients unless told
                // otherwise (Mosquitto 2).
                allow_anonymous: Some(anonymous),
                tls,
                protocol: if l.websockets {
                    ListenerProtocol::Websockets
                } else {
                    ListenerProtocol::Mqtt
                },
                http_dir: l.http_dir.as_ref().map(|d| d.value.clone()),
                ..ListenerConfig::new(SocketAddr::new(ip, l.port))
            });
        }
        c.bridges = self.finish_bridges()?;
        c.validate()?;
        Ok((c, self.warnings))
    }
}

/// The one value every listener agrees on, or an error naming where two
/// differ (this broker has one password file and one ACL file).
fn one_for_all<'a>(
    values: impl Iterator<Item = &'a Option<At<PathBuf>>>,
    key: &str,
) -> Result<Option<At<PathBuf>>, ConfigError> {
    let mut seen: Option<&At<PathBuf>> = None;
    let mut missing = false;
    for v in values {
        match (v, seen) {
            (None, _) => missing = true,
            (Some(v), None) => seen = Some(v),
            (Some(v), Some(s)) if v.value != s.value => {
                return Err(ConfigError(format!(
                    "{}: {key}: differs from the one at {}: this broker has one {key} for all listeners",
                    v.place, s.place
                )))
            }
            _ => {}
        }
    }
    if let (Some(s), true) = (seen, missing) {
        return Err(ConfigError(format!(
            "{}: {key}: set for some listeners only: this broker has one {key} for all listeners; \
             give every listener the same one",
            s.place
        )));
    }
    Ok(seen.cloned())
}

/// One `address` word as `BridgeConfig` takes it. Mosquitto writes an IPv6
/// address with its port as `::1:1884` (the port is required with IPv6, so
/// the last colon is the port's); here that is `[::1]:1884`.
fn bridge_address(word: &str) -> String {
    match word.rsplit_once(':') {
        Some((host, port)) if !word.starts_with('[') && host.contains(':') => {
            format!("[{host}]:{port}")
        }
        _ => word.to_string(),
    }
}

/// An IP address, or `localhost`; other host names are not resolved.
fn address(line: &Line<'_>, text: &str) -> Result<IpAddr, ConfigError> {
    if text == "localhost" {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    text.parse().map_err(|_| {
        line.err(format!(
            "`{text}` is not an IP address: give the interface's address (e.g. 0.0.0.0, 127.0.0.1, ::); host names are not resolved"
        ))
    })
}

/// `persistent_client_expiration`: a number and a unit, h d w m y
/// (hours, days, weeks, months of 30 days, years of 365 days).
fn expiration(line: &Line<'_>) -> Result<u32, ConfigError> {
    let bad = || line.err("must be a number and a unit h, d, w, m or y, like 2d or 1w");
    let v = line.value;
    let unit = v.chars().last().ok_or_else(bad)?;
    let n: u64 = v[..v.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    let secs = match unit {
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        'm' => 30 * 86_400,
        'y' => 365 * 86_400,
        _ => return Err(bad()),
    };
    u32::try_from(n.saturating_mul(secs)).map_err(|_| line.err("longer than 136 years"))
}
