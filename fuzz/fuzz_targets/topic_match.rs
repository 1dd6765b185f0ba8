//! `filter 0xff topic`: topic validation and `matches` against the simple
//! reference implementations in the fuzz crate.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mqtt_codec_fuzz::topic_match(data);
});
