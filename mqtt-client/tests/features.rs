//! The library without its default features does not pull in what only the
//! `mqtt` tool needs: an application that links `mqtt-client` with
//! `default-features = false` compiles neither clap nor tracing-subscriber.
//! Checked on the dependency graph cargo resolves (`cargo tree`, offline:
//! the test build has fetched everything already).

use std::process::Command;

/// The names of the normal (non-dev, non-build) dependencies of
/// mqtt-client, transitively, with `features` given to cargo.
fn dependencies(features: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let out = Command::new(cargo)
        .args(["tree", "--offline", "--prefix", "none", "-e", "normal"])
        .args(["--manifest-path", manifest, "-p", "mqtt-client"])
        .args(features)
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn has(tree: &str, name: &str) -> bool {
    tree.lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

#[test]
fn without_default_features_the_library_has_no_cli_dependencies() {
    let lean = dependencies(&["--no-default-features"]);
    for name in ["clap", "tracing-subscriber"] {
        assert!(!has(&lean, name), "{name} in the lean build:\n{lean}");
    }
    // The check can see them: the default build (with the tool) has them.
    let full = dependencies(&[]);
    for name in ["clap", "tracing-subscriber"] {
        assert!(has(&full, name), "{name} missing from the default build");
    }
}
