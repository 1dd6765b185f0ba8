//! The example configuration file parses and holds the defaults it claims.

use mqtt_broker::Config;

#[test]
fn example_config_parses_to_the_defaults() {
    let text = include_str!("../mqtt-broker.example.toml");
    let parsed = Config::from_toml(text).expect("example config parses");
    let defaults = Config::default();
    assert_eq!(format!("{parsed:?}"), format!("{defaults:?}"));
}

#[test]
fn unknown_keys_are_rejected() {
    assert!(Config::from_toml("max_inflihgt = 3").is_err());
}
