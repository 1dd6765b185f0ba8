//! Failures in words a user can act on, and the exit code for each.
//!
//! Exit codes: 0 success; 1 usage or network error; for a refused
//! connection, the CONNACK code (3.1.1: 1 to 5, e.g. 4 bad user name or
//! password, 5 not authorised; 5.0: the reason code, e.g. 134 / 135); 27
//! when `-W` runs out (as mosquitto_sub).

use mqtt_client::{reason_text, ClientError, ProtocolVersion, ReasonCode};

/// mosquitto_sub's exit code when `-W` runs out.
pub const EXIT_TIMEOUT: u8 = 27;

pub fn exit_code(e: &ClientError, version: ProtocolVersion) -> u8 {
    match e {
        ClientError::Refused(r) if version.is_v5() => r.as_u8(),
        ClientError::Refused(r) => v3_code(*r).unwrap_or(r.as_u8()),
        ClientError::Timeout => EXIT_TIMEOUT,
        _ => 1,
    }
}

/// The 3.1.1 CONNACK return code (1 to 5) of a refusal.
fn v3_code(r: ReasonCode) -> Option<u8> {
    r.to_v3_connack().filter(|c| *c != 0)
}

/// The 3.1.1 words for a CONNACK return code (MQTT 3.1.1 table 3.1).
fn v3_words(code: u8) -> &'static str {
    match code {
        1 => "unacceptable protocol version",
        2 => "identifier rejected",
        3 => "server unavailable",
        4 => "bad user name or password",
        5 => "not authorised",
        _ => "refused",
    }
}

/// The message for `e`: a refused 3.1.1 connection in 3.1.1's own terms
/// (return code and its words), an MQTT 5 one with its reason code.
pub fn explain(e: &ClientError, version: ProtocolVersion) -> String {
    match e {
        ClientError::Refused(r) if !version.is_v5() => match v3_code(*r) {
            Some(code) => format!(
                "connection refused: {} (CONNACK return code {code})",
                v3_words(code)
            ),
            None => e.to_string(),
        },
        ClientError::Refused(r) => format!(
            "connection refused: {} (reason code {:#04x})",
            reason_text(*r),
            r.as_u8()
        ),
        ClientError::Connection(m) if m.contains("looks like a TLS port") => {
            format!("{e} (use --cafile FILE, or --tls-use-os-certs, and -p for its port)")
        }
        // The tool's own checks of its flags speak for themselves.
        ClientError::Invalid(m) => m.clone(),
        e => e.to_string(),
    }
}
