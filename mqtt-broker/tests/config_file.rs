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

// [cluster] (issue 17): the section with only a node name takes the
// documented defaults, and what the cluster cannot work with is refused.
#[cfg(feature = "cluster")]
#[test]
fn cluster_section_parses_and_is_checked() {
    let c = Config::from_toml("[cluster]\nnode = \"node-a\"\n").expect("parses");
    assert_eq!(
        c.cluster,
        Some(mqtt_broker::ClusterConfig {
            node: "node-a".into(),
            ..Default::default()
        })
    );
    // The example's commented block, uncommented, parses too.
    let text = include_str!("../mqtt-broker.example.toml");
    let block: String = text
        .lines()
        .skip_while(|l| !l.starts_with("# [cluster]"))
        .take_while(|l| !l.starts_with("# --- end of [cluster]"))
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    // Credentials are alternatives; keep user and password only.
    let block = block
        .lines()
        .filter(|l| {
            !l.starts_with("token")
                && !l.starts_with("credentials_file")
                && !l.starts_with("nkey_seed_file")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let example = Config::from_toml(&block).expect("example [cluster] parses");
    assert_eq!(example.cluster.unwrap().node, "node-a");
    for bad in [
        "[cluster]\n",
        "[cluster]\nnode = \"a.b\"\n",
        "[cluster]\nnode = \"a\"\nnats = []\n",
        "[cluster]\nnode = \"a\"\nreplicas = 0\n",
        "[cluster]\nnode = \"a\"\nuser = \"u\"\n",
        "[cluster]\nnode = \"a\"\nsubject_prefix = \"a.b\"\n",
        "[cluster]\nnode = \"a\"\nnats_url = \"x\"\n",
    ] {
        assert!(Config::from_toml(bad).is_err(), "accepted {bad:?}");
    }
}
