//! The `mqtt` tool's error messages say what to do (issue 21). The refused
//! 3.1.1 connection is in `cli.rs` (`refused_connections_are_explained`),
//! the TLS port in `tls.rs` (`mqtt_tool_on_a_tls_port_says_to_use_tls`).

mod common;

use common::cli::*;
use common::*;

/// MQTT 3.1.1 section 3.1.2.9 [MQTT-3.1.2-22]: a password needs a user name.
/// Said before connecting, not as the broker's "invalid CONNECT flags".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_without_user_name_needs_a_user_name_in_3_1_1() {
    let broker = broker().await;
    let port = broker.local_addr().port();
    for v in ["311", "31"] {
        let out = run(
            port,
            &["pub", "-V", v, "-P", "secret", "-t", "x", "-m", "y"],
        )
        .await;
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(
            err.contains("a password (-P) needs a user name (-u) in MQTT 3.1.1"),
            "{err}"
        );
        assert!(!err.contains("invalid"), "{err}");
    }
    broker.shutdown().await;
}

/// MQTT 5 allows a password without a user name (5.0 section 3.1.2.9), so
/// the tool sends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_without_user_name_is_sent_in_5() {
    let broker = broker().await;
    let port = broker.local_addr().port();
    let out = run(
        port,
        &["pub", "-V", "5", "-P", "secret", "-t", "x", "-m", "y"],
    )
    .await;
    let err = text(&out.stderr);
    assert!(!err.contains("needs a user name"), "{err}");
    broker.shutdown().await;
}

/// `--quiet`: no runtime error printed, the exit code still tells.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_prints_no_runtime_error() {
    let mut config = mqtt_broker::Config::ephemeral();
    config.listeners[0].allow_anonymous = Some(false);
    let broker = broker_with(config).await;
    let port = broker.local_addr().port();
    let out = run(port, &["pub", "--quiet", "-t", "x", "-m", "y"]).await;
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(text(&out.stderr), "");
    let out = run(port, &["pub", "-t", "x", "-m", "y"]).await;
    assert_eq!(out.status.code(), Some(5));
    assert!(!text(&out.stderr).is_empty());
    broker.shutdown().await;
}

/// `--help` at the top and on each tool (clap used to refuse `mqtt --help`).
#[tokio::test]
async fn help_flag_works_everywhere() {
    for args in [&["--help"][..], &["pub", "--help"], &["sub", "--help"]] {
        let out = within(
            "mqtt --help",
            tokio::process::Command::new(env!("CARGO_BIN_EXE_mqtt"))
                .args(args)
                .output(),
        )
        .await
        .unwrap();
        ok(&out);
        assert!(text(&out.stdout).contains("Usage: mqtt"), "{args:?}");
    }
}

/// `--remove-retained` is ours, not clap's suggestion `--no-retained`.
#[tokio::test]
async fn remove_retained_is_a_flag() {
    let out = within(
        "mqtt sub --help",
        tokio::process::Command::new(env!("CARGO_BIN_EXE_mqtt"))
            .args(["sub", "--help"])
            .output(),
    )
    .await
    .unwrap();
    for flag in [
        "--remove-retained",
        "--retained-only",
        "--filter-out",
        "--unsubscribe",
        "--pretty",
        "--exit-on-disconnect",
    ] {
        assert!(text(&out.stdout).contains(flag), "{flag}");
    }
}

/// `-u` / `-P`: the right user name and password get in; a wrong password is
/// refused with 3.1.1's return code 4 and its words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_name_and_password_are_sent() {
    let dir = std::env::temp_dir().join(format!("mqtt-cli-pw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("passwords");
    mqtt_broker::auth::set_password(&file, "alice", b"alice-pw", true).unwrap();
    let mut config = mqtt_broker::Config::ephemeral();
    config.password_file = Some(file);
    config.listeners[0].allow_anonymous = Some(false);
    let broker = broker_with(config).await;
    let port = broker.local_addr().port();
    ok(&run(
        port,
        &["pub", "-u", "alice", "-P", "alice-pw", "-t", "x", "-m", "y"],
    )
    .await);
    let out = run(
        port,
        &["pub", "-u", "alice", "-P", "wrong", "-t", "x", "-m", "y"],
    )
    .await;
    assert_eq!(out.status.code(), Some(4));
    assert!(
        text(&out.stderr).contains("bad user name or password (CONNACK return code 4)"),
        "{}",
        text(&out.stderr)
    );
    broker.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
