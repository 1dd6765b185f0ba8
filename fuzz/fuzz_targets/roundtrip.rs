//! First byte picks the version; the rest is a stream of packets, each of
//! which must survive decode -> encode -> decode unchanged and re-encode to the
//! same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mqtt_codec_fuzz::roundtrip(data);
});
