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
//! the key and what to do instead: nothing is silently ignored. The only
//! exception is logging (`log_dest`, `log_type`, ...): those are warnings,
//! because logs here always go to standard output (the journal under
//! systemd) and a refusal would stop a working Mosquitto file for nothing.
//!
//! Where meanings differ, the translation keeps Mosquitto's behaviour:
//! without `persistence true` nothing is stored (`durability = "none"`); a
//! `listener` refuses anonymous clients unless `allow_anonymous true`
//! (Mosquitto 2); a file with no listener listens on 127.0.0.1:1883 only.
//! Settings that belong to features this branch does not have yet (bridge
//! `connection` blocks, `protocol websockets`, `http_dir`) are refused as
//! "not supported yet".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError, ListenerConfig, TlsListenerConfig};
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
];

impl Translator {
    fn read(&mut self, file: &str, text: &str, depth: usize) -> Result<(), ConfigError> {
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
            "protocol" => match line.value {
                "mqtt" => {}
                // Issue 15 adds WebSocket listeners (`protocol =
                // "websockets"` on a listener); wire it here once merged.
                "websockets" => {
                    return Err(line.err(
                        "WebSocket listeners are not supported yet: use `protocol mqtt`",
                    ))
                }
                v => return Err(line.err(format!("must be mqtt or websockets, not `{v}`"))),
            },
            // Issue 15: `http_dir` on a WebSocket listener.
            "http_dir" => {
                return Err(line.err(
                    "serving files over HTTP (WebSocket listeners) is not supported yet",
                ))
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

            // Issue 16 adds bridges (`[[bridges]]`); translate `connection`
            // blocks here once merged.
            "connection" => {
                return Err(line.err(
                    "bridges are not supported yet: remove the `connection` block",
                ))
            }

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

    fn finish(mut self) -> Result<(Config, Vec<String>), ConfigError> {
        let mut c = self.config;
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
            c.listeners.push(ListenerConfig {
                bind: SocketAddr::new(ip, l.port),
                // A listener in a file refuses anonymous clients unless told
                // otherwise (Mosquitto 2).
                allow_anonymous: Some(anonymous),
                tls,
                ..ListenerConfig::new(SocketAddr::new(ip, l.port))
            });
        }
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
