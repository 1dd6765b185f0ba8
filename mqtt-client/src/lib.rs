//! MQTT client (not yet written).
