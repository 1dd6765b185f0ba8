//! Turning a failure into an exit code (and, later, into words a user can act on).

use mqtt_client::ClientError;

/// mosquitto_sub's exit code when `-W` runs out.
pub const EXIT_TIMEOUT: u8 = 27;

pub fn exit_code(e: &ClientError, v5: bool) -> u8 {
    match e {
        ClientError::Refused(r) if v5 => r.as_u8(),
        ClientError::Refused(r) => r.to_v3_connack().filter(|c| *c != 0).unwrap_or(r.as_u8()),
        ClientError::Timeout => EXIT_TIMEOUT,
        _ => 1,
    }
}
