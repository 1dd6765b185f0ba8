//! `[[bridges]]` entries: Mosquitto's bridge settings (mosquitto.conf(5),
//! "Configuring Bridges") with their `bridge_` prefixes dropped, and the
//! grammar of its `topic` lines:
//!
//! ```text
//! pattern [[[out | in | both] qos] local-prefix remote-prefix]
//! ```
//!
//! Direction defaults to `out`, QoS to 0, `""` is an empty prefix. As in
//! Mosquitto, a prefix may not hold a wildcard, prefix + pattern must be a
//! valid topic filter, and an empty pattern needs both prefixes (the line
//! then maps one topic to one topic). Every error names the entry and key.

use std::path::PathBuf;
use std::time::Duration;

use mqtt_codec::topic::{valid_topic_filter, valid_topic_name};
use mqtt_codec::{ProtocolVersion, QoS};
use serde::{Deserialize, Serialize};

/// Which way a topic line forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Local messages are published on the remote broker.
    Out,
    /// Remote messages are published on the local broker.
    In,
    /// Both.
    Both,
}

impl Direction {
    /// Whether local messages go out.
    pub fn out(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
    }

    /// Whether remote messages come in.
    pub fn inward(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }
}

/// One parsed `topic` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicLine {
    /// The pattern; empty when the prefixes are the whole topic.
    pub pattern: String,
    /// Direction.
    pub direction: Direction,
    /// The highest QoS a message crosses with.
    pub qos: QoS,
    /// Prefix on the local broker.
    pub local_prefix: String,
    /// Prefix on the remote broker.
    pub remote_prefix: String,
    /// `local_prefix` + `pattern`.
    pub local_filter: String,
    /// `remote_prefix` + `pattern`.
    pub remote_filter: String,
}

impl TopicLine {
    /// Parses one line of Mosquitto's `topic` syntax.
    pub fn parse(line: &str) -> Result<TopicLine, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let unquote = |w: &str| {
            if w == "\"\"" {
                String::new()
            } else {
                w.to_string()
            }
        };
        let Some(first) = words.first() else {
            return Err("empty topic line".into());
        };
        if words.len() > 5 {
            return Err(format!("too many words in {line:?}"));
        }
        let pattern = unquote(first);
        let direction = match words.get(1).copied() {
            None | Some("out") => Direction::Out,
            Some("in") => Direction::In,
            Some("both") => Direction::Both,
            Some(other) => {
                return Err(format!(
                    "direction {other:?} in {line:?} is not out, in or both"
                ))
            }
        };
        let qos = match words.get(2).copied() {
            None => QoS::AtMostOnce,
            Some(q) => q
                .parse::<u8>()
                .ok()
                .and_then(|q| QoS::from_u8(q).ok())
                .ok_or_else(|| format!("QoS {q:?} in {line:?} is not 0, 1 or 2"))?,
        };
        if words.len() == 4 {
            return Err(format!(
                "{line:?} has a local prefix but no remote prefix (use \"\" for none)"
            ));
        }
        let local_prefix = words.get(3).map_or(String::new(), |w| unquote(w));
        let remote_prefix = words.get(4).map_or(String::new(), |w| unquote(w));
        for (which, prefix) in [("local", &local_prefix), ("remote", &remote_prefix)] {
            if !prefix.is_empty() && !valid_topic_name(prefix) {
                return Err(format!(
                    "{which} prefix {prefix:?} in {line:?} is not a valid topic (no wildcards)"
                ));
            }
        }
        if pattern.is_empty() && (local_prefix.is_empty() || remote_prefix.is_empty()) {
            return Err(format!(
                "{line:?}: an empty pattern needs both a local and a remote prefix"
            ));
        }
        let l = TopicLine {
            local_filter: format!("{local_prefix}{pattern}"),
            remote_filter: format!("{remote_prefix}{pattern}"),
            pattern,
            direction,
            qos,
            local_prefix,
            remote_prefix,
        };
        for (which, filter) in [("local", &l.local_filter), ("remote", &l.remote_filter)] {
            if !valid_topic_filter(filter) {
                return Err(format!(
                    "{which} prefix and pattern make {filter:?}, not a valid topic filter"
                ));
            }
        }
        Ok(l)
    }

    /// The remote topic of a local one, if this line forwards it out.
    pub fn to_remote(&self, local: &str) -> Option<String> {
        map(
            local,
            &self.local_filter,
            &self.local_prefix,
            &self.remote_prefix,
        )
    }

    /// The local topic of a remote one, if this line forwards it in.
    pub fn to_local(&self, remote: &str) -> Option<String> {
        map(
            remote,
            &self.remote_filter,
            &self.remote_prefix,
            &self.local_prefix,
        )
    }
}

fn map(topic: &str, filter: &str, from: &str, to: &str) -> Option<String> {
    if !mqtt_codec::topic::matches(filter, topic) {
        return None;
    }
    let rest = topic.strip_prefix(from)?;
    Some(format!("{to}{rest}"))
}

/// `address`: one `host[:port]` or a list tried in turn.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Addresses {
    /// One address.
    One(String),
    /// Several, tried in turn.
    Many(Vec<String>),
}

/// `restart_timeout`: a constant number of seconds, or `[base, cap]` for
/// exponential backoff with jitter (Mosquitto's default is 5 and 30).
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RestartTimeout {
    /// A constant delay.
    Constant(u64),
    /// Backoff from `base` up to `cap` seconds.
    Backoff([u64; 2]),
}

impl Default for RestartTimeout {
    fn default() -> Self {
        RestartTimeout::Backoff([5, 30])
    }
}

/// MQTT version spoken to the remote broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BridgeProtocol {
    /// MQTT 3.1.
    Mqttv31,
    /// MQTT 3.1.1 (Mosquitto's default).
    #[default]
    Mqttv311,
    /// MQTT 5.0.
    Mqttv50,
}

impl BridgeProtocol {
    /// The codec's version.
    pub fn version(self) -> ProtocolVersion {
        match self {
            BridgeProtocol::Mqttv31 => ProtocolVersion::V3_1,
            BridgeProtocol::Mqttv311 => ProtocolVersion::V3_1_1,
            BridgeProtocol::Mqttv50 => ProtocolVersion::V5,
        }
    }
}

/// TLS towards the remote broker.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BridgeTls {
    /// CA certificates (PEM) the remote's certificate must chain to; absent
    /// means the system's roots are not consulted either: it is required
    /// unless `insecure`.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM), for remotes that ask for one.
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub key_file: Option<PathBuf>,
    /// Skip certificate and host name checks (tests only).
    #[serde(default)]
    pub insecure: bool,
    /// Host name to verify when it differs from the address's host.
    pub server_name: Option<String>,
}

/// One `[[bridges]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// Name of the connection (Mosquitto's `connection`).
    pub name: String,
    /// `"host:port"` or a list of them, tried in turn.
    pub address: Addresses,
    /// Topic lines in Mosquitto's syntax.
    #[serde(default)]
    pub topics: Vec<String>,
    /// Client id on the remote broker; default `<hostname>.<name>`.
    pub remote_clientid: Option<String>,
    /// Client id of the bridge's session on this broker; default
    /// `local.<remote_clientid>`, as in Mosquitto.
    pub local_clientid: Option<String>,
    /// User name on the remote broker.
    pub remote_username: Option<String>,
    /// Password on the remote broker (never printed by `--check`).
    #[serde(skip_serializing)]
    pub remote_password: Option<String>,
    /// Start a clean session on the remote (and keep none locally across
    /// restarts). Default false: nothing is lost across reconnects.
    #[serde(default)]
    pub cleansession: bool,
    /// `mqttv311` (default), `mqttv50` or `mqttv31`.
    #[serde(default)]
    pub protocol_version: BridgeProtocol,
    /// Keep alive towards the remote, seconds (default 60; the remote's
    /// Server Keep Alive wins): PINGREQ after this long with nothing sent,
    /// and a PINGREQ unanswered for as long again drops the link, which
    /// reconnects after `restart_timeout`, as in Mosquitto. 0: no pings.
    #[serde(default = "default_keepalive")]
    pub keepalive_interval: u16,
    /// Delay before reconnecting: seconds, or `[base, cap]` (default).
    #[serde(default)]
    pub restart_timeout: RestartTimeout,
    /// Tell a 3.1 / 3.1.1 remote that this is a bridge (protocol level with
    /// the high bit set), so a Mosquitto remote does not echo our messages
    /// back and keeps their retain flag. Default true.
    #[serde(default = "yes")]
    pub try_private: bool,
    /// Publish the connection state (retained `1` / `0`) locally and
    /// remotely, `0` remotely by the will. Default true.
    #[serde(default = "yes")]
    pub notifications: bool,
    /// Topic of the notifications; default
    /// `$SYS/broker/connection/<remote_clientid>/state`.
    pub notification_topic: Option<String>,
    /// Keep the retain flag on messages sent out. Default true.
    #[serde(default = "yes")]
    pub outgoing_retain: bool,
    /// Messages held for the remote beyond the inflight window while it is
    /// slow or unreachable; more are dropped (and counted) by the broker's
    /// `queue_policy`. Default 100000.
    #[serde(default = "default_queue")]
    pub max_queued_messages: usize,
    /// Payload bytes held likewise. Default 256 MiB.
    #[serde(default = "default_queue_bytes")]
    pub max_queued_bytes: usize,
    /// QoS 1/2 messages unacknowledged by the remote at once (also capped
    /// by the remote's Receive Maximum). Default 100.
    #[serde(default = "default_inflight")]
    pub max_inflight: u16,
    /// TLS towards the remote.
    pub tls: Option<BridgeTls>,
}

impl BridgeConfig {
    /// An entry named `name` with no address or topic lines yet and every
    /// other setting at its default (the same defaults as a `[[bridges]]`
    /// entry that leaves them out), for the mosquitto.conf translation.
    pub fn new(name: impl Into<String>) -> BridgeConfig {
        BridgeConfig {
            name: name.into(),
            address: Addresses::Many(Vec::new()),
            topics: Vec::new(),
            remote_clientid: None,
            local_clientid: None,
            remote_username: None,
            remote_password: None,
            cleansession: false,
            protocol_version: BridgeProtocol::default(),
            keepalive_interval: default_keepalive(),
            restart_timeout: RestartTimeout::default(),
            try_private: yes(),
            notifications: yes(),
            notification_topic: None,
            outgoing_retain: yes(),
            max_queued_messages: default_queue(),
            max_queued_bytes: default_queue_bytes(),
            max_inflight: default_inflight(),
            tls: None,
        }
    }
}

fn yes() -> bool {
    true
}
fn default_keepalive() -> u16 {
    60
}
fn default_queue() -> usize {
    100_000
}
fn default_queue_bytes() -> usize {
    256 * 1024 * 1024
}
fn default_inflight() -> u16 {
    100
}

/// A checked bridge: the entry with its topic lines parsed and defaults
/// filled in.
#[derive(Debug, Clone)]
pub struct Bridge {
    /// The entry as configured.
    pub cfg: BridgeConfig,
    /// Addresses as (host, port), tried in turn.
    pub addresses: Vec<(String, u16)>,
    /// Parsed topic lines, in order.
    pub lines: Vec<TopicLine>,
    /// Client id on the remote.
    pub remote_clientid: String,
    /// Client id of the local session.
    pub local_clientid: String,
    /// Topic of the connection state.
    pub notification_topic: String,
}

impl Bridge {
    /// Checks one entry (`index` is its place in the file, for messages).
    pub fn check(cfg: &BridgeConfig, index: usize) -> Result<Bridge, String> {
        let entry = if cfg.name.is_empty() {
            format!("bridges[{index}]")
        } else {
            format!("bridge {:?}", cfg.name)
        };
        let err = |key: &str, m: String| format!("{entry}: {key}: {m}");
        if cfg.name.is_empty() {
            return Err(err("name", "must not be empty".into()));
        }
        let list = match &cfg.address {
            Addresses::One(a) => vec![a.clone()],
            Addresses::Many(v) => v.clone(),
        };
        if list.is_empty() {
            return Err(err("address", "needs at least one host[:port]".into()));
        }
        let mut addresses = Vec::new();
        for a in &list {
            addresses.push(parse_address(a).map_err(|m| err("address", m))?);
        }
        let mut lines = Vec::new();
        for (i, t) in cfg.topics.iter().enumerate() {
            lines.push(TopicLine::parse(t).map_err(|m| err(&format!("topics[{i}]"), m))?);
        }
        if lines.is_empty() {
            return Err(err("topics", "needs at least one topic line".into()));
        }
        let remote_clientid = match &cfg.remote_clientid {
            Some(id) if id.is_empty() => {
                return Err(err("remote_clientid", "must not be empty".into()))
            }
            Some(id) => id.clone(),
            None => format!("{}.{}", hostname(), cfg.name),
        };
        if remote_clientid.len() > 65535 {
            return Err(err("remote_clientid", "longer than 65535 bytes".into()));
        }
        let local_clientid = match &cfg.local_clientid {
            Some(id) if id.is_empty() => {
                return Err(err("local_clientid", "must not be empty".into()))
            }
            Some(id) => id.clone(),
            None => format!("local.{remote_clientid}"),
        };
        let notification_topic = cfg
            .notification_topic
            .clone()
            .unwrap_or_else(|| format!("$SYS/broker/connection/{remote_clientid}/state"));
        if !valid_topic_name(&notification_topic) {
            return Err(err(
                "notification_topic",
                format!("{notification_topic:?} is not a valid topic name"),
            ));
        }
        if cfg.remote_password.is_some() && cfg.remote_username.is_none() {
            return Err(err(
                "remote_password",
                "needs remote_username (MQTT has no password without a user name)".into(),
            ));
        }
        if cfg.max_inflight == 0 {
            return Err(err("max_inflight", "must be at least 1".into()));
        }
        if let RestartTimeout::Backoff([base, cap]) = cfg.restart_timeout {
            if base == 0 || cap < base {
                return Err(err(
                    "restart_timeout",
                    format!("[{base}, {cap}] needs 0 < base <= cap"),
                ));
            }
        }
        if let Some(tls) = &cfg.tls {
            if tls.ca_file.is_none() && !tls.insecure {
                return Err(err(
                    "tls.ca_file",
                    "is required unless tls.insecure = true".into(),
                ));
            }
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return Err(err(
                    "tls.cert_file",
                    "cert_file and key_file go together".into(),
                ));
            }
        }
        Ok(Bridge {
            cfg: cfg.clone(),
            addresses,
            lines,
            remote_clientid,
            local_clientid,
            notification_topic,
        })
    }

    /// The delay before reconnection attempt `failures` (1 for the first
    /// retry), with up to 25% jitter so bridges restarted together do not
    /// reconnect in step.
    pub fn backoff(&self, failures: u32, jitter: f64) -> Duration {
        let secs = match self.cfg.restart_timeout {
            RestartTimeout::Constant(s) => return Duration::from_secs(s),
            RestartTimeout::Backoff([base, cap]) => {
                let exp = failures.saturating_sub(1).min(16);
                base.saturating_mul(1u64 << exp).min(cap) as f64
            }
        };
        Duration::from_secs_f64(secs * (0.75 + 0.25 * jitter.clamp(0.0, 1.0)))
    }
}

/// Checks every entry: each on its own, and names unique.
pub fn check_all(bridges: &[BridgeConfig]) -> Result<Vec<Bridge>, String> {
    let mut out: Vec<Bridge> = Vec::new();
    for (i, b) in bridges.iter().enumerate() {
        let b = Bridge::check(b, i)?;
        if out.iter().any(|o| o.cfg.name == b.cfg.name) {
            return Err(format!("bridge {:?}: name: used twice", b.cfg.name));
        }
        if out.iter().any(|o| o.local_clientid == b.local_clientid) {
            return Err(format!(
                "bridge {:?}: local_clientid: {:?} is used by another bridge",
                b.cfg.name, b.local_clientid
            ));
        }
        out.push(b);
    }
    Ok(out)
}

fn parse_address(a: &str) -> Result<(String, u16), String> {
    let a = a.trim();
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        // [v6]:port or [v6]
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{a:?}: unclosed '['"))?;
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if after.is_empty() => (host, None),
            None => return Err(format!("{a:?}: unexpected text after ']'")),
        }
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            _ => (a, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{a:?}: no host"));
    }
    let port = match port {
        None => 1883,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{a:?}: port {p:?} is not 1-65535"))?,
    };
    Ok((host.to_string(), port))
}

/// This machine's host name, for the default remote client id (as in
/// Mosquitto, so two devices with the same bridge name stay apart).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "mqtt-broker".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_pattern_is_out_at_qos_0_with_no_prefixes() {
        let l = TopicLine::parse("sensors/#").unwrap();
        assert_eq!(l.direction, Direction::Out);
        assert_eq!(l.qos, QoS::AtMostOnce);
        assert_eq!(l.to_remote("sensors/a").as_deref(), Some("sensors/a"));
    }

    #[test]
    fn prefixes_are_swapped_in_each_direction() {
        let l = TopicLine::parse("t/# both 1 local/ remote/").unwrap();
        assert_eq!(l.local_filter, "local/t/#");
        assert_eq!(l.remote_filter, "remote/t/#");
        assert_eq!(l.to_remote("local/t/x").as_deref(), Some("remote/t/x"));
        assert_eq!(l.to_local("remote/t/x").as_deref(), Some("local/t/x"));
        assert_eq!(l.to_local("other/t/x"), None);
    }

    #[test]
    fn quoted_empty_prefix_is_empty() {
        let l = TopicLine::parse("# in 2 \"\" site1/").unwrap();
        assert_eq!(l.to_local("site1/a/b").as_deref(), Some("a/b"));
        assert_eq!(l.qos, QoS::ExactlyOnce);
    }

    #[test]
    fn an_empty_pattern_maps_one_topic_to_one_topic() {
        let l = TopicLine::parse("\"\" out 1 here/x there/y").unwrap();
        assert_eq!(l.to_remote("here/x").as_deref(), Some("there/y"));
        assert_eq!(l.to_remote("here/x/z"), None);
        assert!(TopicLine::parse("\"\" out 1 here/x \"\"").is_err());
    }

    #[test]
    fn bad_lines_are_refused_with_the_reason() {
        for (line, what) in [
            ("a/# sideways", "direction"),
            ("a/# out 3", "QoS"),
            ("a/# out 1 x/+/ y/", "local prefix"),
            ("a/# out 1 x/ y/#", "remote prefix"),
            ("a/# out 1 x/", "no remote prefix"),
            ("# out 0 x y", "not a valid topic filter"),
        ] {
            let e = TopicLine::parse(line).unwrap_err();
            assert!(e.contains(what), "{line}: {e}");
        }
    }

    #[test]
    fn config_errors_name_the_entry_and_the_key() {
        let cfg: BridgeConfig = toml::from_str(
            r#"name = "cloud"
               address = "127.0.0.1:1883"
               topics = ["a/#", "b/# upward"]"#,
        )
        .unwrap();
        let e = Bridge::check(&cfg, 0).unwrap_err();
        assert!(e.starts_with("bridge \"cloud\": topics[1]:"), "{e}");
        let cfg: BridgeConfig = toml::from_str(
            r#"name = "cloud"
               address = "127.0.0.1:0"
               topics = ["a/#"]"#,
        )
        .unwrap();
        let e = Bridge::check(&cfg, 0).unwrap_err();
        assert!(e.starts_with("bridge \"cloud\": address:"), "{e}");
    }

    #[test]
    fn new_has_the_defaults_of_an_entry_that_leaves_them_out() {
        let parsed: BridgeConfig = toml::from_str("name = \"c\"\naddress = []").unwrap();
        assert_eq!(
            format!("{:?}", BridgeConfig::new("c")),
            format!("{parsed:?}")
        );
    }

    #[test]
    fn backoff_grows_to_the_cap_with_jitter_below_it() {
        let cfg: BridgeConfig = toml::from_str(
            r##"name = "c"
               address = ["h1", "[::1]:1884"]
               topics = ["#"]"##,
        )
        .unwrap();
        let b = Bridge::check(&cfg, 0).unwrap();
        assert_eq!(b.addresses[0], ("h1".to_string(), 1883));
        assert_eq!(b.addresses[1], ("::1".to_string(), 1884));
        assert_eq!(b.backoff(1, 1.0), Duration::from_secs(5));
        assert_eq!(b.backoff(2, 1.0), Duration::from_secs(10));
        assert_eq!(b.backoff(9, 1.0), Duration::from_secs(30));
        assert!(b.backoff(9, 0.0) >= Duration::from_secs_f64(22.5));
    }
}
