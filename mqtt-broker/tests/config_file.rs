//! The configuration reference (`mqtt-broker.example.toml`) is complete and
//! true, and a bad TOML file gets one error line that names the place and
//! the fix.

use mqtt_broker::config::{field_names, TlsListenerConfig};
use mqtt_broker::{Config, ListenerConfig, MetricsConfig};

const EXAMPLE: &str = include_str!("../mqtt-broker.example.toml");

#[test]
fn example_config_parses_to_the_defaults() {
    let parsed = Config::from_toml(EXAMPLE).expect("example config parses");
    let defaults = Config::default();
    assert_eq!(format!("{parsed:?}"), format!("{defaults:?}"));
}

/// Whether the example documents `key`: as a setting (`key = ...`, maybe
/// commented out) or, for a table, as its header.
fn documented(key: &str, headers: &[&str]) -> bool {
    EXAMPLE.lines().any(|line| {
        let line = line.trim_start_matches(['#', ' ']);
        let setting = line
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='));
        setting || headers.iter().any(|h| line.starts_with(h))
    })
}

/// Every key the broker reads, at every level, is in the example file
/// (so a new key without documentation fails here).
#[test]
fn every_config_key_is_in_the_example_file() {
    let tables: [(&[&str], &[&str]); 4] = [
        (field_names::<Config>(), &[]),
        (field_names::<ListenerConfig>(), &[]),
        (field_names::<TlsListenerConfig>(), &[]),
        (field_names::<MetricsConfig>(), &[]),
    ];
    assert!(field_names::<Config>().len() > 20, "field names found");
    let mut missing = Vec::new();
    for (fields, _) in tables {
        for key in fields {
            let headers: &[&str] = match *key {
                "listeners" => &["[[listeners]]"],
                "tls" => &["[listeners.tls]"],
                "metrics" => &["[metrics]"],
                _ => &[],
            };
            if !documented(key, headers) {
                missing.push(*key);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in mqtt-broker.example.toml: {missing:?}"
    );
}

#[test]
fn unknown_keys_are_rejected() {
    assert!(Config::from_toml("max_inflihgt = 3").is_err());
}

/// A misspelt key: the error names the line and the key it resembles.
#[test]
fn a_misspelt_key_names_the_line_and_the_right_key() {
    let e = Config::from_toml("max_qos = 1\nmax_inflihgt = 3\n")
        .unwrap_err()
        .0;
    assert_eq!(
        e,
        "config:2: unknown key `max_inflihgt`: did you mean `max_inflight`?"
    );
}

/// A top-level key written after `[[listeners]]` lands in that table in
/// TOML; the error says to move it.
#[test]
fn a_top_level_key_after_listeners_says_to_move_it() {
    let text = "[[listeners]]\nbind = \"127.0.0.1:1883\"\nmax_inflight = 3\n";
    let e = Config::from_toml(text).unwrap_err().0;
    assert!(
        e.starts_with(
            "config:3: `max_inflight` is a top-level key: move it above the first [[listeners]]"
        ),
        "{e}"
    );
}

/// `bind` needs an IP address and a port; the error shows the form.
#[test]
fn bind_without_an_ip_address_and_port_says_how_to_write_it() {
    for bad in ["localhost:1883", "0.0.0.0", "1883"] {
        let text = format!("[[listeners]]\nbind = \"{bad}\"\n");
        let e = Config::from_toml(&text).unwrap_err().0;
        assert!(e.starts_with("config:2: bind = \""), "{e}");
        assert!(
            e.contains("needs an IP address and a port, like \"0.0.0.0:1883\""),
            "{e}"
        );
    }
}

/// Every error is one line.
#[test]
fn errors_are_one_line() {
    for text in [
        "max_qos = \"two\"",
        "max_qos = 7",
        "durability = \"sometimes\"",
        "[[listeners]]\nbind = \"127.0.0.1:1\"\n[[listeners]]\nbind = \"127.0.0.1:1\"\n",
        "[metrics]\nbind = \"127.0.0.1:1883\"\n[[listeners]]\nbind = \"127.0.0.1:1883\"\n",
        "= broken",
    ] {
        let e = Config::from_toml(text).unwrap_err().0;
        assert!(!e.contains('\n'), "{text:?} gave a multi-line error: {e}");
        assert!(e.starts_with("config"), "{e}");
    }
}

/// `--check` prints the effective settings as TOML, which reads back to
/// the same configuration.
#[test]
fn effective_settings_read_back_the_same() {
    let text = "max_qos = 1\nlog_format = \"json\"\npid_file = \"/tmp/x.pid\"\n[[listeners]]\nbind = \"0.0.0.0:1884\"\n[metrics]\nbind = \"127.0.0.1:9234\"\n";
    let c = Config::from_toml(text).unwrap();
    let again = Config::from_toml(&c.to_toml()).unwrap();
    assert_eq!(format!("{c:?}"), format!("{again:?}"));
}
