//! `mqtt -d`: every packet sent and received, in libmosquitto's wording
//! (what `mosquitto_pub -d` / `mosquitto_sub -d` print, on standard output),
//! so that people and scripts used to one read the other.

mod common;

use std::process::Stdio;

use common::cli::*;
use common::*;
use tokio::io::AsyncWriteExt;

fn lines(b: &[u8]) -> Vec<String> {
    text(b).lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_traces_a_qos1_publish_and_its_delivery() {
    let broker = broker().await;
    let port = broker.local_addr().port();
    let child = sub(
        &broker,
        &[
            "sub",
            "-d",
            "-i",
            "sz",
            "-q",
            "2",
            "-t",
            "cli/trace",
            "-C",
            "1",
        ],
    )
    .await;
    let out = run(
        port,
        &[
            "pub",
            "-d",
            "-i",
            "pz",
            "-q",
            "1",
            "-t",
            "cli/trace",
            "-m",
            "room",
        ],
    )
    .await;
    ok(&out);
    assert_eq!(
        lines(&out.stdout),
        [
            "Client pz sending CONNECT",
            "Client pz received CONNACK (0)",
            "Client pz sending PUBLISH (d0, q1, r0, m1, 'cli/trace', ... (4 bytes))",
            "Client pz received PUBACK (Mid: 1, RC:0)",
            "Client pz sending DISCONNECT",
        ]
    );
    let out = finish(child).await;
    ok(&out);
    assert_eq!(
        lines(&out.stdout),
        [
            "Client sz sending CONNECT",
            "Client sz received CONNACK (0)",
            "Client sz sending SUBSCRIBE (Mid: 1, Topic: cli/trace, QoS: 2, Options: 0x00)",
            "Client sz received SUBACK",
            "Subscribed (mid: 1): 2",
            "Client sz received PUBLISH (d0, q1, r0, m1, 'cli/trace', ... (4 bytes))",
            "Client sz sending PUBACK (m1, rc0)",
            "room",
            "Client sz sending DISCONNECT",
        ]
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_traces_the_qos2_exchange() {
    let broker = broker().await;
    let port = broker.local_addr().port();
    let out = run(
        port,
        &[
            "pub",
            "-d",
            "-i",
            "pz",
            "-q",
            "2",
            "-r",
            "-t",
            "cli/trace",
            "-m",
            "room",
        ],
    )
    .await;
    ok(&out);
    assert_eq!(
        lines(&out.stdout),
        [
            "Client pz sending CONNECT",
            "Client pz received CONNACK (0)",
            "Client pz sending PUBLISH (d0, q2, r1, m1, 'cli/trace', ... (4 bytes))",
            "Client pz received PUBREC (Mid: 1)",
            "Client pz sending PUBREL (m1)",
            "Client pz received PUBCOMP (Mid: 1, RC:0)",
            "Client pz sending DISCONNECT",
        ]
    );
    // The retained message, delivered at QoS 2 on subscribe.
    let out = run(
        port,
        &[
            "sub",
            "-d",
            "-i",
            "sz",
            "-q",
            "2",
            "-t",
            "cli/trace",
            "-C",
            "1",
        ],
    )
    .await;
    ok(&out);
    let got = lines(&out.stdout);
    for want in [
        "Client sz received PUBLISH (d0, q2, r1, m1, 'cli/trace', ... (4 bytes))",
        "Client sz sending PUBREC (m1, rc0)",
        "Client sz received PUBREL (Mid: 1)",
        "Client sz sending PUBCOMP (m1)",
    ] {
        assert!(got.iter().any(|l| l == want), "{want} not in {got:#?}");
    }
    broker.shutdown().await;
}

/// SUBSCRIBE options in the trace are the MQTT 5 option bits without the QoS
/// (no local 0x04, retain as published 0x08, retain handling << 4), and
/// -U shows its UNSUBSCRIBE and UNSUBACK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_traces_subscribe_options_and_unsubscribe() {
    let broker = broker().await;
    let port = broker.local_addr().port();
    let out = run(
        port,
        &[
            "sub",
            "-d",
            "-V",
            "mqttv5",
            "-i",
            "sz",
            "-t",
            "a/b",
            "--no-local",
            "--retain-as-published",
            "--retain-handling",
            "2",
            "-U",
            "a/b",
            "-E",
        ],
    )
    .await;
    ok(&out);
    let got = lines(&out.stdout);
    for want in [
        "Client sz sending SUBSCRIBE (Mid: 1, Topic: a/b, QoS: 0, Options: 0x2c)",
        "Subscribed (mid: 1): 0",
        "Client sz sending UNSUBSCRIBE (Mid: 2, Topic: a/b)",
        "Client sz received UNSUBACK",
    ] {
        assert!(got.iter().any(|l| l == want), "{want} not in {got:#?}");
    }
    broker.shutdown().await;
}

/// `-M 1`: at most one QoS 1 message in flight, so each PUBLISH waits for
/// the PUBACK of the one before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_inflight_one_sends_one_at_a_time() {
    let broker = broker().await;
    let port = broker.local_addr().port();
    let mut publisher = mqtt(
        port,
        &[
            "pub", "-d", "-i", "pz", "-M", "1", "-q", "1", "-t", "cli/m", "-l",
        ],
    )
    .stdin(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdin = publisher.stdin.take().unwrap();
    stdin.write_all(b"a\nb\nc\n").await.unwrap();
    drop(stdin);
    let out = finish(publisher).await;
    ok(&out);
    let trace: Vec<String> = lines(&out.stdout)
        .into_iter()
        .filter(|l| l.contains("PUBLISH") || l.contains("PUBACK"))
        .collect();
    assert_eq!(
        trace,
        [
            "Client pz sending PUBLISH (d0, q1, r0, m1, 'cli/m', ... (1 bytes))",
            "Client pz received PUBACK (Mid: 1, RC:0)",
            "Client pz sending PUBLISH (d0, q1, r0, m2, 'cli/m', ... (1 bytes))",
            "Client pz received PUBACK (Mid: 2, RC:0)",
            "Client pz sending PUBLISH (d0, q1, r0, m3, 'cli/m', ... (1 bytes))",
            "Client pz received PUBACK (Mid: 3, RC:0)",
        ]
    );
    broker.shutdown().await;
}
