//! Arbitrary bytes as a stream of MQTT 3.1.1 packets: decoding never panics,
//! and every decoded packet obeys the checks in `check_decoded`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqtt_codec::ProtocolVersion;

fuzz_target!(|data: &[u8]| {
    mqtt_codec_fuzz::decode_stream(data, ProtocolVersion::V3_1_1);
});
