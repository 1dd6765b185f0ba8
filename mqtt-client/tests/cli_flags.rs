//! The `mqtt` tool's mosquitto_pub / mosquitto_sub flags, one rule per test,
//! against our broker over real sockets (the README's flag table names the
//! test of each flag; `.ci/interop/cli_side_by_side.sh` compares the output
//! with mosquitto_sub's).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::cli::*;
use common::*;
use mqtt_client::{ProtocolVersion, QoS};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

fn sorted_lines(b: &[u8]) -> Vec<String> {
    let mut v: Vec<String> = text(b).lines().map(str::to_owned).collect();
    v.sort();
    v
}

/// `-V`: mosquitto's spellings, and MQTT 3.1 (protocol "MQIsdp", level 3),
/// which the broker speaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_version_spellings() {
    let broker = broker().await;
    let port = broker.local_addr().port();
    for v in ["mqttv31", "31", "mqttv311", "311", "mqttv5", "5"] {
        let child = sub(&broker, &["sub", "-V", v, "-t", "cli/v", "-C", "1"]).await;
        ok(&run(port, &["pub", "-V", v, "-t", "cli/v", "-m", v]).await);
        let out = finish(child).await;
        ok(&out);
        assert_eq!(text(&out.stdout), format!("{v}\n"));
        until("session ended", || broker.subscription_count() == 0).await;
    }
    let out = run(port, &["pub", "-V", "4", "-t", "x", "-m", "y"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("mqttv31"));
    broker.shutdown().await;
}

/// `--repeat N --repeat-delay S`: N messages, at least S seconds apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_publishes_n_times_with_a_delay() {
    let broker = broker().await;
    let port = broker.local_addr().port();
    let child = sub(&broker, &["sub", "-t", "cli/rep", "-C", "3", "-q", "1"]).await;
    let started = Instant::now();
    ok(&run(
        port,
        &[
            "pub",
            "-t",
            "cli/rep",
            "-m",
            "again",
            "-q",
            "1",
            "--repeat",
            "3",
            "--repeat-delay",
            "0.2",
        ],
    )
    .await);
    assert!(started.elapsed() >= Duration::from_millis(400));
    let out = finish(child).await;
    ok(&out);
    assert_eq!(text(&out.stdout), "again\nagain\nagain\n");
    broker.shutdown().await;
}

/// `-T`: messages on topics matching the filter are not printed (nor
/// counted by -C).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_out_hides_matching_topics() {
    let broker = broker().await;
    let port = broker.local_addr().port();
    let child = sub(
        &broker,
        &[
            "sub", "-t", "f/#", "-T", "f/b/#", "-C", "2", "-v", "-q", "1",
        ],
    )
    .await;
    for t in ["f/a", "f/b", "f/b/c", "f/c"] {
        ok(&run(port, &["pub", "-t", t, "-m", "x", "-q", "1"]).await);
    }
    let out = finish(child).await;
    ok(&out);
    assert_eq!(text(&out.stdout), "f/a x\nf/c x\n");
    broker.shutdown().await;
}

/// `-U`: unsubscribes from a subscription a kept session (-c) holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_removes_a_kept_subscription() {
    let broker = broker().await;
    let port = broker.local_addr().port();
    ok(&run(port, &["sub", "-c", "-i", "keeper", "-t", "u/x", "-E"]).await);
    assert_eq!(broker.subscription_count(), 1);
    ok(&run(port, &["sub", "-c", "-i", "keeper", "-U", "u/x"]).await);
    assert_eq!(broker.subscription_count(), 0);
    broker.shutdown().await;
}

/// `-A`: the connection leaves from the given local address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_address_is_the_source_address() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _client = mqtt(port, &["pub", "-A", "127.0.0.2", "-t", "x", "-m", "y"])
        .spawn()
        .unwrap();
    let (_conn, peer) = within("connection from -A", listener.accept())
        .await
        .unwrap();
    assert_eq!(peer.ip().to_string(), "127.0.0.2");
}

/// `-e` (as mosquitto_rr) and `-D publish ...` set the MQTT 5 properties;
/// `-D` alone switches to MQTT 5, as in mosquitto.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_property_flags_reach_the_subscriber() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let (watcher, mut messages) = connect(opts(addr, ProtocolVersion::V5, "w")).await;
    watcher.subscribe("cli/p", QoS::AtLeastOnce).await.unwrap();
    ok(&run(
        addr.port(),
        &[
            "pub",
            "-t",
            "cli/p",
            "-m",
            "x",
            "-e",
            "replies/here",
            "-D",
            "publish",
            "message-expiry-interval",
            "60",
            "-D",
            "publish",
            "correlation-data",
            "abc",
            "-D",
            "publish",
            "payload-format-indicator",
            "1",
        ],
    )
    .await);
    let m = next(&mut messages).await;
    let p = &m.properties;
    assert_eq!(p.response_topic.as_deref(), Some("replies/here"));
    assert_eq!(p.correlation_data.as_deref(), Some(&b"abc"[..]));
    assert_eq!(p.payload_format_utf8, Some(true));
    assert!(p.message_expiry_secs.is_some_and(|s| s <= 60 && s > 50));
    watcher.disconnect().await.unwrap();
    // -e needs MQTT 5.
    let out = run(
        addr.port(),
        &["pub", "-V", "311", "-e", "r", "-t", "x", "-m", "y"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    broker.shutdown().await;
}

/// `--retained-only`: prints the retained messages, exits at the first
/// fresh one (not printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_only_stops_at_the_first_fresh_message() {
    let broker = broker().await;
    let port = broker.local_addr().port();
    for (t, m) in [("r/a", "A"), ("r/b", "B")] {
        ok(&run(port, &["pub", "-t", t, "-m", m, "-r", "-q", "1"]).await);
    }
    let child = sub(&broker, &["sub", "-t", "r/#", "--retained-only", "-v"]).await;
    ok(&run(port, &["pub", "-t", "r/c", "-m", "fresh", "-q", "1"]).await);
    let out = finish(child).await;
    ok(&out);
    assert_eq!(sorted_lines(&out.stdout), ["r/a A", "r/b B"]);
    broker.shutdown().await;
}

/// `--remove-retained`: each retained message received is cleared, except
/// on topics filtered out with -T.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_retained_clears_what_it_receives() {
    let broker = broker().await;
    let port = broker.local_addr().port();
    for t in ["x/a", "x/b"] {
        ok(&run(port, &["pub", "-t", t, "-m", "old", "-r", "-q", "1"]).await);
    }
    assert_eq!(broker.retained_count(), 2);
    let out = run(
        port,
        &[
            "sub",
            "-t",
            "x/#",
            "--remove-retained",
            "-T",
            "x/b",
            "-C",
            "1",
            "-v",
        ],
    )
    .await;
    ok(&out);
    assert_eq!(text(&out.stdout), "x/a old\n");
    assert_eq!(broker.retained_count(), 1, "x/b, filtered out, is kept");
    broker.shutdown().await;
}

/// `-R`: retained (stale) messages are not printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_retained_hides_stale_messages() {
    let broker = broker().await;
    let port = broker.local_addr().port();
    ok(&run(port, &["pub", "-t", "s/a", "-m", "stale", "-r", "-q", "1"]).await);
    let child = sub(&broker, &["sub", "-t", "s/a", "-R", "-C", "1"]).await;
    ok(&run(port, &["pub", "-t", "s/a", "-m", "fresh", "-q", "1"]).await);
    let out = finish(child).await;
    ok(&out);
    assert_eq!(text(&out.stdout), "fresh\n");
    broker.shutdown().await;
}

/// `-F`: mosquitto_sub's sequences, field widths and flags (its man page,
/// OUTPUT FORMAT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_sequences_as_mosquitto_sub() {
    let broker = broker().await;
    let port = broker.local_addr().port();
    let child = sub(
        &broker,
        &[
            "sub",
            "-V",
            "5",
            "-q",
            "1",
            "-t",
            "f/a",
            "-C",
            "1",
            "-F",
            r"%5t|%-5t|%05l|%m|%C|%E|%F|%P|%R|%D|%x|%X|%q|%r|%%|%.1t|\e\0\t",
        ],
    )
    .await;
    ok(&run(
        port,
        &[
            "pub",
            "-V",
            "5",
            "-q",
            "1",
            "-t",
            "f/a",
            "-m",
            "a\u{ff}",
            "-D",
            "publish",
            "content-type",
            "text/plain",
            "-D",
            "publish",
            "message-expiry-interval",
            "3600",
            "-D",
            "publish",
            "payload-format-indicator",
            "1",
            "-D",
            "publish",
            "user-property",
            "k",
            "v",
            "-D",
            "publish",
            "response-topic",
            "rt",
            "-D",
            "publish",
            "correlation-data",
            "cd",
        ],
    )
    .await);
    let out = finish(child).await;
    ok(&out);
    let s = text(&out.stdout);
    // Expiry counts down while the message waits: 3600 or a second less.
    let s = s.replace("|3599|", "|3600|");
    assert_eq!(
        s,
        "  f/a|f/a  |00003|1|text/plain|3600|1|k:v|rt|cd|61c3bf|61C3BF|1|0|%|f|\u{1b}\0\t\n"
    );
    broker.shutdown().await;
}

/// `-F` time sequences: %I (ISO 8601 with offset), %U (Unix time with
/// nanoseconds), @ strftime sequences and @@.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_time_sequences() {
    let broker = broker().await;
    let port = broker.local_addr().port();
    let child = sub(
        &broker,
        &["sub", "-t", "t/a", "-C", "1", "-F", "%I|%U|@Y|@@"],
    )
    .await;
    ok(&run(port, &["pub", "-t", "t/a", "-m", "x"]).await);
    let out = finish(child).await;
    ok(&out);
    let s = text(&out.stdout);
    let parts: Vec<&str> = s.trim_end().split('|').collect();
    assert_eq!(parts.len(), 4, "{s}");
    // 2026-12-03T00:34:23+0000
    let iso = parts[0].as_bytes();
    assert_eq!(iso.len(), 24, "{s}");
    assert_eq!((iso[4], iso[10], iso[19]), (b'-', b'T', b'+'), "{s}");
    let (secs, nanos) = parts[1].split_once('.').unwrap();
    assert!(secs.parse::<u64>().unwrap() > 1_600_000_000);
    assert_eq!(nanos.len(), 9);
    assert_eq!(parts[2], &parts[0][..4]);
    assert_eq!(parts[3], "@");
    broker.shutdown().await;
}

/// `%J`: the payload as JSON inside the object; a payload that is not JSON
/// is refused with mosquitto_sub's message. `--pretty` indents with tabs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_payload_and_pretty() {
    let broker = broker().await;
    let port = broker.local_addr().port();
    let child = sub(&broker, &["sub", "-t", "j/a", "-C", "2", "-F", "%J"]).await;
    ok(&run(port, &["pub", "-t", "j/a", "-m", r#"{"t": 27}"#]).await);
    ok(&run(port, &["pub", "-t", "j/a", "-m", "not json"]).await);
    let out = finish(child).await;
    ok(&out);
    let s = text(&out.stdout);
    assert!(s.contains(r#""payloadlen":9,"payload":{"t":27}}"#), "{s}");
    assert!(
        text(&out.stderr).contains("Error: Message payload is not valid JSON on topic j/a."),
        "{}",
        text(&out.stderr)
    );
    // The first tool has exited, but the broker may not have dropped its
    // subscription yet: `sub` counts subscriptions, so wait for that first.
    until("first sub gone", || broker.subscription_count() == 0).await;

    let child = sub(
        &broker,
        &["sub", "-t", "j/b", "-C", "1", "-F", "%j", "--pretty"],
    )
    .await;
    ok(&run(port, &["pub", "-t", "j/b", "-m", "hi"]).await);
    let out = finish(child).await;
    ok(&out);
    let s = text(&out.stdout);
    assert!(s.starts_with("{\n\t\"tst\":\t\""), "{s}");
    assert!(s.contains("\n\t\"payload\":\t\"hi\"\n}\n"), "{s}");
    broker.shutdown().await;
}

/// `-I`: the client identifier is the prefix and the process id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_prefix_makes_the_client_id() {
    let broker = broker().await;
    let port = broker.local_addr().port();
    let out = run(port, &["pub", "-d", "-I", "pfx-", "-t", "x", "-m", "y"]).await;
    ok(&out);
    let first = text(&out.stdout).lines().next().unwrap_or("").to_owned();
    let id = first
        .strip_prefix("Client pfx-")
        .and_then(|r| r.strip_suffix(" sending CONNECT"))
        .unwrap_or_else(|| panic!("{first}"));
    assert!(id.parse::<u32>().is_ok(), "{first}");
    broker.shutdown().await;
}

/// `-x -1` and `-x ∞`: a session that never expires (MQTT 5 Session Expiry
/// Interval 0xFFFFFFFF, 5.0 section 3.1.2.11.2); without -x and -c, none is
/// kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_never_spellings() {
    let broker = broker().await;
    let port = broker.local_addr().port();
    for (i, x) in ["-1", "∞", "4294967295"].into_iter().enumerate() {
        let id = format!("forever{i}");
        ok(&run(
            port,
            &["sub", "-V", "5", "-i", &id, "-x", x, "-t", "e/x", "-E"],
        )
        .await);
        assert_eq!(broker.session_count(), i + 1, "-x {x}");
    }
    ok(&run(port, &["sub", "-V", "5", "-t", "e/x", "-E"]).await);
    // Its session ends once the broker has seen it go.
    until("the expiry-0 session ended", || broker.session_count() == 3).await;
    broker.shutdown().await;
}

/// `-s`: all of standard input, newlines included, as one message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_file_sends_one_message() {
    let broker = broker().await;
    let port = broker.local_addr().port();
    let child = sub(&broker, &["sub", "-t", "in/s", "-C", "1", "-N"]).await;
    let mut publisher = mqtt(port, &["pub", "-t", "in/s", "-s", "--nodelay"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = publisher.stdin.take().unwrap();
    stdin.write_all(b"one\ntwo\n").await.unwrap();
    drop(stdin);
    ok(&finish(publisher).await);
    let out = finish(child).await;
    ok(&out);
    assert_eq!(text(&out.stdout), "one\ntwo\n");
    broker.shutdown().await;
}

/// `--random-filter 50`: about half the messages are printed, chosen at
/// random (none and all are each 2^-200 likely here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_filter_prints_a_share() {
    let broker = broker().await;
    let port = broker.local_addr().port();
    let child = sub(
        &broker,
        &[
            "sub",
            "-t",
            "rf",
            "-q",
            "1",
            "--random-filter",
            "50",
            "-W",
            "2",
        ],
    )
    .await;
    ok(&run(
        port,
        &["pub", "-t", "rf", "-m", "x", "-q", "1", "--repeat", "200"],
    )
    .await);
    let out = finish(child).await;
    assert_eq!(out.status.code(), Some(27), "-W ends it");
    let n = text(&out.stdout).lines().count();
    assert!(n > 0 && n < 200, "{n} of 200 printed");
    broker.shutdown().await;
}
