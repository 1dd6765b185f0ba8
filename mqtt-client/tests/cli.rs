//! The `mqtt` tool, as built, against our broker in-process.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::cli::*;
use common::*;
use mqtt_broker::Config;
use mqtt_client::{ProtocolVersion, QoS};
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_receives_what_pub_sends() {
    let broker = broker().await;
    let port = broker.local_addr().port();
    for v in ["311", "5"] {
        let child = sub(&broker, &["sub", "-V", v, "-t", "cli/+", "-C", "1", "-v"]).await;
        ok(&run(port, &["pub", "-V", v, "-t", "cli/a", "-m", "hello world"]).await);
        let out = finish(child).await;
        ok(&out);
        assert_eq!(text(&out.stdout), "cli/a hello world\n");
        // Its subscription gone, so the next one is seen arriving.
        until("mqtt sub's session ended", || {
            broker.subscription_count() == 0
        })
        .await;
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_payload_is_byte_identical() {
    let broker = broker().await;
    let port = broker.local_addr().port();
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 256) as u8).collect();
    let path: PathBuf = std::env::temp_dir().join(format!("mqtt-cli-{}.bin", std::process::id()));
    std::fs::write(&path, &payload).unwrap();
    let child = sub(
        &broker,
        &["sub", "-t", "cli/file", "-C", "1", "-N", "-q", "1"],
    )
    .await;
    ok(&run(
        port,
        &[
            "pub",
            "-t",
            "cli/file",
            "-q",
            "1",
            "-f",
            path.to_str().unwrap(),
        ],
    )
    .await);
    let out = finish(child).await;
    std::fs::remove_file(&path).unwrap();
    ok(&out);
    assert!(
        out.stdout == payload,
        "payload differs ({} bytes out)",
        out.stdout.len()
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_set_then_cleared_with_null_message() {
    let broker = broker().await;
    let port = broker.local_addr().port();
    ok(&run(
        port,
        &["pub", "-t", "cli/ret", "-m", "kept", "-r", "-q", "1"],
    )
    .await);
    assert_eq!(broker.retained_count(), 1);
    let out = run(
        port,
        &[
            "sub", "-t", "cli/ret", "-C", "1", "-F", "%r %t %p", "-W", "10",
        ],
    )
    .await;
    ok(&out);
    assert_eq!(text(&out.stdout), "1 cli/ret kept\n");

    ok(&run(port, &["pub", "-t", "cli/ret", "-n", "-r", "-q", "1"]).await);
    assert_eq!(broker.retained_count(), 0);
    // Nothing retained any more: the subscriber gets nothing and times out.
    let out = run(port, &["sub", "-t", "cli/ret", "-C", "1", "-W", "1"]).await;
    assert_eq!(out.status.code(), Some(27));
    assert_eq!(text(&out.stdout), "");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output() {
    let broker = broker().await;
    let port = broker.local_addr().port();
    let child = sub(
        &broker,
        &["sub", "-t", "cli/json", "-C", "2", "-F", "%j", "-q", "1"],
    )
    .await;
    ok(&run(
        port,
        &["pub", "-t", "cli/json", "-q", "1", "-m", "he said \"hi\"\n"],
    )
    .await);
    let bin = std::env::temp_dir().join(format!("mqtt-cli-json-{}.bin", std::process::id()));
    std::fs::write(&bin, [0xff, 0x00, 0x10]).unwrap();
    ok(&run(
        port,
        &[
            "pub",
            "-t",
            "cli/json",
            "-q",
            "1",
            "-f",
            bin.to_str().unwrap(),
        ],
    )
    .await);
    std::fs::remove_file(&bin).unwrap();
    let out = finish(child).await;
    ok(&out);
    let s = text(&out.stdout);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines.len(), 2, "{s}");
    for l in &lines {
        assert!(l.starts_with('{') && l.ends_with('}'), "{l}");
        assert!(l.contains(r#""topic":"cli/json""#), "{l}");
        assert!(l.contains(r#""qos":1"#), "{l}");
        assert!(l.contains(r#""retain":0"#), "{l}");
        assert!(l.contains(r#""tst":""#), "{l}");
    }
    assert!(
        lines[0].contains(r#""payload":"he said \"hi\"\n""#),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains(r#""payloadlen":13"#), "{}", lines[0]);
    assert!(
        lines[1].contains(r#""payloadhex":"ff0010""#),
        "{}",
        lines[1]
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_timeout_exits_27() {
    let broker = broker().await;
    let port = broker.local_addr().port();
    let started = Instant::now();
    let out = run(port, &["sub", "-t", "cli/silence", "-W", "1"]).await;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(27), "stderr: {}", text(&out.stderr));
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(text(&out.stderr).contains("Timed out"));
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_explained() {
    // Nobody listening.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = run(port, &["pub", "-t", "x", "-m", "y"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("connection failed") && err.contains(&port.to_string()),
        "{err}"
    );

    // Refused by the broker: anonymous clients not allowed.
    let mut config = Config::ephemeral();
    config.listeners[0].allow_anonymous = Some(false);
    let broker = broker_with(config).await;
    let port = broker.local_addr().port();
    let out = run(port, &["pub", "-t", "x", "-m", "y"]).await;
    assert_eq!(out.status.code(), Some(5), "3.1.1 CONNACK return code 5");
    let err = text(&out.stderr);
    // A 3.1.1 refusal in 3.1.1's terms: the return code and its words, not
    // an MQTT 5 reason code (3.1.1 section 3.2.2.3, table 3.1).
    assert!(
        err.contains("connection refused: not authorised (CONNACK return code 5)"),
        "{err}"
    );
    assert!(!err.contains("reason code"), "{err}");
    let out = run(port, &["sub", "-V", "5", "-t", "x"]).await;
    assert_eq!(out.status.code(), Some(0x87), "MQTT 5 reason code 0x87");
    assert!(text(&out.stderr).contains("not authorised"));
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_user_property_passes() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let (watcher, mut messages) = connect(opts(addr, ProtocolVersion::V5, "props")).await;
    watcher
        .subscribe("cli/props", QoS::AtLeastOnce)
        .await
        .unwrap();
    let child = sub(
        &broker,
        &["sub", "-V", "5", "-t", "cli/props", "-C", "1", "-F", "%j"],
    )
    .await;
    ok(&run(
        addr.port(),
        &[
            "pub",
            "-V",
            "5",
            "-t",
            "cli/props",
            "-m",
            "x",
            "-q",
            "1",
            "-D",
            "publish",
            "user-property",
            "k",
            "v",
            "-D",
            "publish",
            "content-type",
            "text/plain",
        ],
    )
    .await);
    let m = next(&mut messages).await;
    assert_eq!(
        m.properties.user_properties,
        vec![("k".to_owned(), "v".to_owned())]
    );
    assert_eq!(m.properties.content_type.as_deref(), Some("text/plain"));
    let out = finish(child).await;
    ok(&out);
    assert!(
        text(&out.stdout)
            .contains(r#""properties":{"content-type":"text/plain","user-properties":{"k":"v"}}"#),
        "{}",
        text(&out.stdout)
    );
    watcher.disconnect().await.unwrap();
    broker.shutdown().await;
}

/// `mqtt sub --will-topic`, killed with SIGKILL: the broker publishes its
/// will.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_sub_leaves_its_will() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let (watcher, mut messages) = connect(opts(addr, ProtocolVersion::V5, "heir")).await;
    watcher
        .subscribe("cli/will", QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut child = sub(
        &broker,
        &[
            "sub",
            "-t",
            "cli/quiet",
            "--will-topic",
            "cli/will",
            "--will-payload",
            "dead",
            "--will-qos",
            "1",
        ],
    )
    .await;
    child.kill().await.unwrap();
    let m = next(&mut messages).await;
    assert_eq!(
        (m.topic.as_str(), m.payload_str()),
        ("cli/will", Some("dead"))
    );
    watcher.disconnect().await.unwrap();
    broker.shutdown().await;
}

/// `-l`: one message per line of standard input, each confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_from_stdin() {
    let broker = broker().await;
    let port = broker.local_addr().port();
    let child = sub(&broker, &["sub", "-t", "cli/lines", "-C", "3", "-q", "2"]).await;
    let mut publisher = mqtt(port, &["pub", "-t", "cli/lines", "-l", "-q", "2"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = publisher.stdin.take().unwrap();
    stdin.write_all(b"one\ntwo\nthree\n").await.unwrap();
    drop(stdin);
    ok(&within("mqtt pub -l", publisher.wait_with_output())
        .await
        .unwrap());
    let out = finish(child).await;
    ok(&out);
    assert_eq!(text(&out.stdout), "one\ntwo\nthree\n");
    broker.shutdown().await;
}
