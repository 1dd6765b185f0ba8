//! CONNECT negotiation (MQTT 5.0 sections 3.1.2 and 3.2.2; 3.1.1 section
//! 3.1.2) as a pure function: what the CONNECT asks (client identifier,
//! will, session expiry, Receive Maximum, Maximum Packet Size, Topic Alias
//! Maximum, keep alive) held to the configuration gives the parameters the
//! connection runs with, or the refusal's reason code and the words of its
//! Reason String. Nothing here touches the broker's state.

use super::*;
use crate::config::Config;

/// What a CONNECT asks for, held to the configuration: the parameters the
/// connection runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Negotiated {
    /// Session Expiry Interval in seconds (3.x: 0 for a clean session, else
    /// `persistent_client_expiration`), at most `max_session_expiry`.
    pub(super) expiry_secs: u32,
    /// The expiry the client asked for was cut to this (told in CONNACK).
    pub(super) capped_expiry: Option<u32>,
    /// The client's Receive Maximum.
    pub(super) receive_max: u16,
    /// The client's Maximum Packet Size.
    pub(super) client_max_packet: u32,
    /// The client's Topic Alias Maximum.
    pub(super) client_alias_max: u16,
    /// The Keep Alive in force, in seconds (0: off).
    pub(super) keep_alive: u16,
    /// A Keep Alive the server imposes (5.0 Server Keep Alive).
    pub(super) server_keep_alive: Option<u16>,
    /// The will's delay in seconds, when there is a will.
    pub(super) will_delay: Option<u32>,
}

/// CONNECT negotiation as a pure function: the CONNECT and the
/// configuration give the accepted parameters, or the CONNACK reason code
/// and the words of its Reason String. What needs the broker's state (an
/// assigned client id, the ACL on the will topic, the session) comes after.
pub(super) fn negotiate(
    config: &Config,
    c: &Connect<'_>,
) -> Result<Negotiated, (ReasonCode, &'static str)> {
    let v = c.protocol;
    // Client identifier [MQTT-3.1.1/5: 3.1.3-6..8]: an empty one is given
    // one by the server, where the version allows.
    if c.client_id.is_empty() {
        let allowed = match v {
            ProtocolVersion::V3_1 => false,
            ProtocolVersion::V3_1_1 => c.clean_start,
            ProtocolVersion::V5 => true,
        };
        if !allowed {
            return Err((
                ReasonCode::ClientIdentifierNotValid,
                "an empty client identifier needs a clean session",
            ));
        }
    }

    let will_delay = match &c.will {
        None => None,
        Some(w) => {
            if w.qos.as_u8() > config.max_qos {
                return Err((
                    ReasonCode::QoSNotSupported,
                    "will QoS above the server's maximum QoS",
                ));
            }
            if w.retain && !config.retain_available {
                return Err((
                    ReasonCode::RetainNotSupported,
                    "retained wills are not supported",
                ));
            }
            let mut delay = 0;
            let mut utf8 = false;
            for p in w.properties.iter() {
                match p {
                    Property::WillDelayInterval(d) => delay = d,
                    Property::PayloadFormatIndicator(b) => utf8 = b,
                    _ => {}
                }
            }
            if utf8 && std::str::from_utf8(w.payload).is_err() {
                return Err((
                    ReasonCode::PayloadFormatInvalid,
                    "will payload is not the UTF-8 its format indicator says",
                ));
            }
            Some(delay)
        }
    };

    let mut expiry_secs = if v.is_v5() {
        c.properties
            .iter()
            .find_map(|p| match p {
                Property::SessionExpiryInterval(s) => Some(s),
                _ => None,
            })
            .unwrap_or(0)
    } else if c.clean_start {
        0
    } else {
        config.persistent_client_expiration_secs.unwrap_or(u32::MAX)
    };
    let mut capped_expiry = None;
    if let Some(max) = config.max_session_expiry_secs {
        if expiry_secs > max {
            expiry_secs = max;
            capped_expiry = Some(max);
        }
    }

    let mut receive_max = u16::MAX;
    let mut client_max_packet = MAX_PACKET_SIZE;
    let mut client_alias_max = 0;
    for p in c.properties.iter() {
        match p {
            Property::ReceiveMaximum(n) => receive_max = n,
            Property::MaximumPacketSize(n) => client_max_packet = n,
            Property::TopicAliasMaximum(n) => client_alias_max = n,
            _ => {}
        }
    }

    let mut keep_alive = c.keep_alive;
    let mut server_keep_alive = None;
    if config.max_keepalive > 0 && (keep_alive == 0 || keep_alive > config.max_keepalive) {
        if !v.is_v5() {
            // A 3.1 / 3.1.1 client cannot be told a shorter keep alive,
            // and closing it sooner than 1.5 times its own would break
            // [MQTT-3.1.1: 3.1.2-24]: refuse it, as Mosquitto does.
            return Err((
                ReasonCode::ClientIdentifierNotValid,
                "keep alive above the server's max_keepalive",
            ));
        }
        keep_alive = config.max_keepalive;
        server_keep_alive = Some(keep_alive);
    }
    Ok(Negotiated {
        expiry_secs,
        capped_expiry,
        receive_max,
        client_max_packet,
        client_alias_max,
        keep_alive,
        server_keep_alive,
        will_delay,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt_codec::{LastWill, Properties};

    fn connect(v: ProtocolVersion, id: &str, clean: bool, keep_alive: u16) -> Connect<'_> {
        Connect {
            protocol: v,
            clean_start: clean,
            keep_alive,
            properties: Properties::EMPTY,
            client_id: id,
            will: None,
            username: None,
            password: None,
        }
    }

    #[test]
    fn empty_client_id_needs_a_clean_session_before_5() {
        // [MQTT-3.1.1: 3.1.3-7, 3.1.3-8]; 3.1 has no empty ids.
        let config = Config::ephemeral();
        let refused = Err((
            ReasonCode::ClientIdentifierNotValid,
            "an empty client identifier needs a clean session",
        ));
        assert_eq!(
            negotiate(&config, &connect(ProtocolVersion::V3_1_1, "", false, 0)),
            refused
        );
        assert_eq!(
            negotiate(&config, &connect(ProtocolVersion::V3_1, "", true, 0)),
            refused
        );
        assert!(negotiate(&config, &connect(ProtocolVersion::V3_1_1, "", true, 0)).is_ok());
        assert!(negotiate(&config, &connect(ProtocolVersion::V5, "", false, 0)).is_ok());
    }

    #[test]
    fn keep_alive_above_the_maximum_is_cut_for_5_and_refused_before() {
        // MQTT 5.0 section 3.2.2.3.14 Server Keep Alive; 3.1.1 cannot be told.
        let config = Config {
            max_keepalive: 10,
            ..Config::ephemeral()
        };
        let n = negotiate(&config, &connect(ProtocolVersion::V5, "a", true, 0)).unwrap();
        assert_eq!((n.keep_alive, n.server_keep_alive), (10, Some(10)));
        let n = negotiate(&config, &connect(ProtocolVersion::V5, "a", true, 5)).unwrap();
        assert_eq!((n.keep_alive, n.server_keep_alive), (5, None));
        assert!(negotiate(&config, &connect(ProtocolVersion::V3_1_1, "a", true, 60)).is_err());
    }

    #[test]
    fn session_expiry_is_capped_and_the_cap_reported() {
        let config = Config {
            max_session_expiry_secs: Some(100),
            ..Config::ephemeral()
        };
        let props = [Property::SessionExpiryInterval(5000)];
        let c = Connect {
            properties: Properties::from_slice(&props),
            ..connect(ProtocolVersion::V5, "a", false, 0)
        };
        let n = negotiate(&config, &c).unwrap();
        assert_eq!((n.expiry_secs, n.capped_expiry), (100, Some(100)));
        // 3.1.1 clean session: the session ends with the connection.
        let n = negotiate(&config, &connect(ProtocolVersion::V3_1_1, "a", true, 0)).unwrap();
        assert_eq!(n.expiry_secs, 0);
    }

    #[test]
    fn will_above_the_maximum_qos_is_refused() {
        // [MQTT-5: 3.2.2-12] QoS not supported.
        let config = Config {
            max_qos: 1,
            ..Config::ephemeral()
        };
        let c = Connect {
            will: Some(LastWill {
                topic: "w",
                payload: b"x",
                qos: QoS::ExactlyOnce,
                retain: false,
                properties: Properties::EMPTY,
            }),
            ..connect(ProtocolVersion::V5, "a", true, 0)
        };
        assert_eq!(
            negotiate(&config, &c).map(|_| ()),
            Err((
                ReasonCode::QoSNotSupported,
                "will QoS above the server's maximum QoS"
            ))
        );
    }

    #[test]
    fn client_limits_are_taken_from_connect() {
        let props = [
            Property::ReceiveMaximum(7),
            Property::MaximumPacketSize(1000),
            Property::TopicAliasMaximum(3),
        ];
        let c = Connect {
            properties: Properties::from_slice(&props),
            ..connect(ProtocolVersion::V5, "a", true, 30)
        };
        let n = negotiate(&Config::ephemeral(), &c).unwrap();
        assert_eq!(
            (n.receive_max, n.client_max_packet, n.client_alias_max),
            (7, 1000, 3)
        );
        assert_eq!(n.will_delay, None);
    }
}
