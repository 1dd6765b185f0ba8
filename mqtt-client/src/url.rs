//! Broker URLs: `mqtt://`, `mqtts://`, `ws://` and `wss://`, with optional
//! `user[:password]@`, an IPv6 host in brackets, a port and a path, as
//! `mosquitto_pub -L` and MQTT.js take them.

use crate::error::ClientError;

/// A parsed broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// The scheme as written, lower-cased.
    pub scheme: String,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// The port given, or the scheme's default (1883, 8883, 80, 443).
    pub port: u16,
    /// TLS (`mqtts`, `wss`).
    pub tls: bool,
    /// WebSocket (`ws`, `wss`).
    pub websocket: bool,
    /// Everything from the first `/` after the host (may be empty).
    pub path: String,
    /// User name, percent-decoded.
    pub username: Option<String>,
    /// Password, percent-decoded.
    pub password: Option<String>,
}

impl BrokerUrl {
    /// Parses `url`.
    pub fn parse(url: &str) -> Result<Self, ClientError> {
        let bad = |why: &str| ClientError::Invalid(format!("URL {url}: {why}"));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected scheme://host"))?;
        let scheme = scheme.to_ascii_lowercase();
        let (tls, websocket, default_port) = match scheme.as_str() {
            "mqtt" | "tcp" => (false, false, 1883),
            "mqtts" | "ssl" | "tls" => (true, false, 8883),
            "ws" => (false, true, 80),
            "wss" => (true, true, 443),
            _ => return Err(bad("scheme must be mqtt, mqtts, ws or wss")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (user, pw) = match u.split_once(':') {
                    Some((a, b)) => (a, Some(b)),
                    None => (u, None),
                };
                let decode = |s: &str| percent_decode(s).ok_or_else(|| bad("bad %-escape"));
                (Some(decode(user)?), pw.map(decode).transpose()?)
            }
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in host"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
            };
            (h, port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None => default_port,
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
        };
        Ok(BrokerUrl {
            scheme,
            host: host.to_string(),
            port,
            tls,
            websocket,
            path: path.to_string(),
            username,
            password,
        })
    }
}

/// Decodes `%XX` escapes into UTF-8 text.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_url_with_path() {
        let u = BrokerUrl::parse("ws://localhost:9001/mqtt/room_temp").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("localhost", 9001));
        assert!(u.websocket && !u.tls);
        assert_eq!(u.path, "/mqtt/room_temp");
    }

    #[test]
    fn default_ports_follow_the_scheme() {
        let port = |s: &str| BrokerUrl::parse(s).unwrap().port;
        assert_eq!(port("mqtt://h"), 1883);
        assert_eq!(port("mqtts://h"), 8883);
        assert_eq!(port("ws://h/"), 80);
        assert_eq!(port("wss://h/mqtt"), 443);
    }

    #[test]
    fn credentials_and_ipv6_host() {
        let u = BrokerUrl::parse("mqtts://al%40ice:p%3Aw@[::1]:8884/t").unwrap();
        assert_eq!(u.username.as_deref(), Some("al@ice"));
        assert_eq!(u.password.as_deref(), Some("p:w"));
        assert_eq!((u.host.as_str(), u.port, u.tls), ("::1", 8884, true));
    }

    #[test]
    fn bad_urls_are_errors() {
        for bad in [
            "localhost:1883",
            "http://h",
            "mqtt://",
            "mqtt://h:port",
            "ws://[::1/x",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
