//! Bridges (`[[bridges]]`), with this broker on both ends: a local broker
//! bridged to a remote one, both in this process, clients on both sides.
//! The same rules against a real Mosquitto are in
//! `.ci/interop/bridge_test.sh`.
//!
//! Waiting for a bridge: it publishes `1` to its notification topic on the
//! remote after its SUBSCRIBEs, so a remote client that sees `1` knows the
//! bridge's in lines are in place.

mod common;

use std::net::SocketAddr;

use common::*;
use mqtt_broker::{BrokerHandle, Config};
use mqtt_codec::{Packet, ProtocolVersion, PubResp, QoS, QosPid};

const V3: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;
const STATE: &str = "bridge/edge/state";

/// A local broker configuration with one bridge to `remote`. `lines` are
/// topic lines; `extra` more keys of the `[[bridges]]` entry.
fn bridged(remote: SocketAddr, version: &str, lines: &[&str], extra: &str) -> Config {
    let topics: Vec<String> = lines.iter().map(|l| format!("'{l}'")).collect();
    let text = format!(
        r#"
listeners = [{{ bind = "127.0.0.1:0", allow_anonymous = true }}]
sys_interval_secs = 0
durability = "none"

[[bridges]]
name = "up"
address = "{remote}"
protocol_version = "{version}"
remote_clientid = "edge"
notification_topic = "{STATE}"
restart_timeout = 1
topics = [{}]
{extra}
"#,
        topics.join(", ")
    );
    Config::from_toml(&text).expect("bridge configuration")
}

/// Waits until the bridge says `1` on the remote.
async fn wait_up(remote: SocketAddr) {
    let mut c = RawClient::connect(remote, V5, "watch-state").await;
    c.subscribe(1, STATE, QoS::AtMostOnce).await;
    loop {
        let got = c.recv_publish().await;
        if got.publish().payload == b"1" {
            break;
        }
    }
    c.disconnect().await;
}

/// Receives one PUBLISH, acknowledges it, and returns (topic, payload, QoS,
/// retain).
async fn take(c: &mut RawClient) -> (String, Vec<u8>, QoS, bool) {
    let got = c.recv_publish().await;
    let p = got.publish();
    c.ack_delivery(&p).await;
    (
        p.topic.to_string(),
        p.payload.to_vec(),
        p.qos_pid.qos(),
        p.retain,
    )
}

async fn start_pair(version: &str, lines: &[&str], extra: &str) -> (BrokerHandle, BrokerHandle) {
    let remote = broker().await;
    let local = broker_with(bridged(remote.local_addr(), version, lines, extra)).await;
    wait_up(remote.local_addr()).await;
    (remote, local)
}

// A message crosses an out line with the local prefix swapped for the remote
// one, at the lower of its QoS and the line's (mosquitto.conf(5), `topic`).
async fn out_line(version: &str, cv: ProtocolVersion) {
    let (remote, local) = start_pair(version, &["sensors/# out 1 edge/ site/"], "").await;
    let mut sub = RawClient::connect(remote.local_addr(), cv, "cloud-sub").await;
    sub.subscribe(1, "site/#", QoS::ExactlyOnce).await;
    let mut publ = RawClient::connect(local.local_addr(), cv, "pub").await;
    publ.publish_flow(publish("edge/other", b"x", QoS::AtLeastOnce, 1, false))
        .await;
    publ.publish_flow(publish("edge/sensors/t", b"21", QoS::ExactlyOnce, 2, false))
        .await;
    publ.publish_flow(publish("edge/sensors/h", b"40", QoS::AtMostOnce, 0, false))
        .await;
    assert_eq!(
        take(&mut sub).await,
        (
            "site/sensors/t".into(),
            b"21".to_vec(),
            QoS::AtLeastOnce,
            false
        ),
        "QoS 2 crosses a QoS 1 line at QoS 1; edge/other matches no line"
    );
    assert_eq!(
        take(&mut sub).await,
        (
            "site/sensors/h".into(),
            b"40".to_vec(),
            QoS::AtMostOnce,
            false
        )
    );
    sub.expect_nothing_pending().await;
    local.shutdown().await;
    remote.shutdown().await;
}

#[tokio::test]
async fn out_line_swaps_prefixes_and_caps_qos_v311() {
    out_line("mqttv311", V3).await;
}

#[tokio::test]
async fn out_line_swaps_prefixes_and_caps_qos_v5() {
    out_line("mqttv50", V5).await;
}

// An in line subscribes on the remote to remote-prefix + pattern and
// publishes here under local-prefix + the rest, keeping QoS 2.
async fn in_line(version: &str) {
    let (remote, local) = start_pair(version, &["cmd/# in 2 dev/ cloud/"], "").await;
    let mut sub = RawClient::connect(local.local_addr(), V5, "dev-sub").await;
    sub.subscribe(1, "dev/#", QoS::ExactlyOnce).await;
    let mut publ = RawClient::connect(remote.local_addr(), V5, "cloud-pub").await;
    publ.publish_flow(publish(
        "cloud/cmd/reboot",
        b"now",
        QoS::ExactlyOnce,
        1,
        false,
    ))
    .await;
    assert_eq!(
        take(&mut sub).await,
        (
            "dev/cmd/reboot".into(),
            b"now".to_vec(),
            QoS::ExactlyOnce,
            false
        )
    );
    local.shutdown().await;
    remote.shutdown().await;
}

#[tokio::test]
async fn in_line_swaps_prefixes_and_keeps_qos_2_v311() {
    in_line("mqttv311").await;
}

#[tokio::test]
async fn in_line_swaps_prefixes_and_keeps_qos_2_v5() {
    in_line("mqttv50").await;
}

// Retained messages stay retained across the bridge in both directions:
// Retain As Published with MQTT 5 [MQTT-3.8.3-4], `try_private` with 3.1.1.
async fn retained_both_ways(version: &str) {
    let (remote, local) = start_pair(version, &["r/# both 1"], "").await;
    // A message published after each retained one, on each side, is seen
    // on the other side after it: then the retained one has arrived.
    let mut rs = RawClient::connect(remote.local_addr(), V5, "rs").await;
    rs.subscribe(1, "r/mark-l", QoS::AtLeastOnce).await;
    let mut ls = RawClient::connect(local.local_addr(), V5, "ls").await;
    ls.subscribe(1, "r/mark-r", QoS::AtLeastOnce).await;
    let mut lp = RawClient::connect(local.local_addr(), V5, "lp").await;
    lp.publish_flow(publish("r/local", b"L", QoS::AtLeastOnce, 1, true))
        .await;
    lp.publish_flow(publish("r/mark-l", b"m", QoS::AtLeastOnce, 2, false))
        .await;
    let mut rp = RawClient::connect(remote.local_addr(), V5, "rp").await;
    rp.publish_flow(publish("r/remote", b"R", QoS::AtLeastOnce, 1, true))
        .await;
    rp.publish_flow(publish("r/mark-r", b"m", QoS::AtLeastOnce, 2, false))
        .await;
    assert_eq!(take(&mut rs).await.0, "r/mark-l");
    assert_eq!(take(&mut ls).await.0, "r/mark-r");
    rs.subscribe(2, "r/local", QoS::AtLeastOnce).await;
    assert_eq!(
        take(&mut rs).await,
        ("r/local".into(), b"L".to_vec(), QoS::AtLeastOnce, true)
    );
    ls.subscribe(2, "r/remote", QoS::AtLeastOnce).await;
    assert_eq!(
        take(&mut ls).await,
        ("r/remote".into(), b"R".to_vec(), QoS::AtLeastOnce, true)
    );
    local.shutdown().await;
    remote.shutdown().await;
}

#[tokio::test]
async fn retained_messages_stay_retained_across_the_bridge_v311() {
    retained_both_ways("mqttv311").await;
}

#[tokio::test]
async fn retained_messages_stay_retained_across_the_bridge_v5() {
    retained_both_ways("mqttv50").await;
}

// A `both` line on the same topics on both sides: each message arrives once
// on each side, never echoed back (No Local with MQTT 5; `try_private` or
// the bridge's memory of what it sent with 3.1.1).
async fn no_loop(version: &str, extra: &str) {
    let (remote, local) = start_pair(version, &["loop/# both 1"], extra).await;
    let mut ls = RawClient::connect(local.local_addr(), V5, "ls").await;
    ls.subscribe(1, "loop/#", QoS::AtLeastOnce).await;
    let mut rs = RawClient::connect(remote.local_addr(), V5, "rs").await;
    rs.subscribe(1, "loop/#", QoS::AtLeastOnce).await;
    let mut lp = RawClient::connect(local.local_addr(), V5, "lp").await;
    let mut rp = RawClient::connect(remote.local_addr(), V5, "rp").await;

    lp.publish_flow(publish("loop/a", b"A", QoS::AtLeastOnce, 1, false))
        .await;
    assert_eq!(take(&mut rs).await.1, b"A");
    rp.publish_flow(publish("loop/b", b"B", QoS::AtLeastOnce, 1, false))
        .await;
    // An echo of A would reach the local side before B.
    assert_eq!(take(&mut ls).await.1, b"A");
    assert_eq!(take(&mut ls).await.1, b"B", "A came back over the bridge");
    lp.publish_flow(publish("loop/c", b"C", QoS::AtLeastOnce, 2, false))
        .await;
    // An echo of B would reach the remote side before C.
    assert_eq!(take(&mut rs).await.1, b"B");
    assert_eq!(take(&mut rs).await.1, b"C", "B came back over the bridge");
    assert_eq!(take(&mut ls).await.1, b"C");
    rp.publish_flow(publish("loop/d", b"D", QoS::AtLeastOnce, 2, false))
        .await;
    assert_eq!(take(&mut rs).await.1, b"D");
    assert_eq!(take(&mut ls).await.1, b"D", "C came back over the bridge");
    ls.expect_nothing_pending().await;
    rs.expect_nothing_pending().await;
    local.shutdown().await;
    remote.shutdown().await;
}

#[tokio::test]
async fn both_line_does_not_loop_v5() {
    no_loop("mqttv50", "").await;
}

#[tokio::test]
async fn both_line_does_not_loop_v311_with_try_private() {
    no_loop("mqttv311", "try_private = true").await;
}

#[tokio::test]
async fn both_line_does_not_loop_v311_without_try_private() {
    no_loop("mqttv311", "try_private = false").await;
}

// While the remote is down, QoS 1 messages wait in the bridge's queue and
// go out in order when it is back; a per-bridge limit drops (and counts)
// the rest.
#[tokio::test]
async fn messages_queued_while_the_remote_is_down_arrive_in_order() {
    let dir = ScratchDir::new("bridge-down");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let remote_config = || {
        Config::from_toml(&format!(
            "listeners = [{{ bind = \"127.0.0.1:{port}\", allow_anonymous = true }}]\n\
             sys_interval_secs = 0\ndata_dir = '{}'\n",
            dir.file("remote").display()
        ))
        .unwrap()
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let remote = broker_with(remote_config()).await;
    // A persistent subscriber on the remote, so what the bridge forwards
    // while it is away waits for it there.
    let mut sub =
        RawClient::connect_session(addr, connect_packet(V3, "cloud-sub", false), false).await;
    sub.subscribe(1, "q/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    let local = broker_with(bridged(
        addr,
        "mqttv311",
        &["q/# out 1"],
        "max_queued_messages = 150",
    ))
    .await;
    wait_up(addr).await;
    let mut watch = RawClient::connect(local.local_addr(), V5, "watch").await;
    watch.subscribe(1, STATE, QoS::AtMostOnce).await;
    remote.shutdown().await;
    // The bridge has seen the remote go (it says 0 here): from now on
    // messages queue.
    loop {
        if watch.recv_publish().await.publish().payload == b"0" {
            break;
        }
    }

    let mut publ = RawClient::connect(local.local_addr(), V5, "pub").await;
    for i in 0..200u32 {
        let payload = i.to_string();
        publ.publish_flow(publish(
            "q/n",
            payload.as_bytes(),
            QoS::AtLeastOnce,
            1,
            false,
        ))
        .await;
    }
    assert_eq!(
        local.stats().dropped_queue_full.get(),
        50,
        "the bridge's own limit (150) dropped and counted the rest"
    );
    let remote = broker_with(remote_config()).await;
    let mut sub =
        RawClient::connect_session(addr, connect_packet(V3, "cloud-sub", false), true).await;
    for i in 0..150u32 {
        let (_, payload, qos, _) = take(&mut sub).await;
        assert_eq!(qos, QoS::AtLeastOnce);
        assert_eq!(payload, i.to_string().as_bytes(), "in order, none lost");
    }
    sub.expect_nothing_pending().await;
    local.shutdown().await;
    remote.shutdown().await;
}

/// One connection accepted by a fake remote broker.
struct FakeRemote {
    listener: tokio::net::TcpListener,
}

impl FakeRemote {
    async fn new() -> FakeRemote {
        FakeRemote {
            listener: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap()
    }

    /// Accepts the bridge, reads its CONNECT and answers CONNACK with
    /// `session_present`.
    async fn accept(&self, session_present: bool) -> RawClient {
        self.accept_clean(session_present, false).await
    }

    /// `accept`, checking the CONNECT's Clean Session flag is `clean`.
    async fn accept_clean(&self, session_present: bool, clean: bool) -> RawClient {
        let (stream, _) = tokio::time::timeout(TIMEOUT * 3, self.listener.accept())
            .await
            .expect("the bridge reconnects")
            .unwrap();
        let mut c = RawClient::from_stream(stream, V3);
        match c.recv().await.packet() {
            Packet::Connect(k) => {
                assert_eq!(k.clean_start, clean, "Clean Session");
                assert_eq!(k.client_id, "edge");
            }
            p => panic!("expected CONNECT, got {p:?}"),
        }
        c.send(&Packet::ConnAck(connack(session_present))).await;
        c
    }
}

/// The next PUBLISH (skipping the state notification and SUBSCRIBEs).
async fn next_publish(c: &mut RawClient) -> Received {
    loop {
        let got = c.recv().await;
        if let Packet::Publish(p) = got.packet() {
            if p.topic != STATE {
                return got;
            }
        }
    }
}

// After a reconnection to a remote that kept the session, every
// unacknowledged PUBLISH goes again with DUP and the same packet id, and an
// unfinished QoS 2 exchange resumes with PUBREL [MQTT-4.4.0-1].
#[tokio::test]
async fn unacknowledged_messages_are_resent_with_dup_and_pubrel_resumes() {
    let fake = FakeRemote::new().await;
    let local = broker_with(bridged(
        fake.addr(),
        "mqttv311",
        &["q/# out 2"],
        "try_private = false",
    ))
    .await;
    let mut remote = fake.accept(false).await;
    let mut publ = RawClient::connect(local.local_addr(), V5, "pub").await;
    publ.publish_flow(publish("q/1", b"one", QoS::AtLeastOnce, 1, false))
        .await;
    publ.publish_flow(publish("q/2", b"two", QoS::ExactlyOnce, 2, false))
        .await;
    let first = next_publish(&mut remote).await;
    let second = next_publish(&mut remote).await;
    let (p1, p2) = (first.publish(), second.publish());
    assert_eq!((p1.topic, p1.dup), ("q/1", false));
    assert_eq!((p2.topic, p2.dup), ("q/2", false));
    let pid2 = p2.qos_pid.pid().unwrap();
    // q/2 gets as far as PUBREC; q/1 is never acknowledged.
    remote.send(&Packet::PubRec(PubResp::new(pid2))).await;
    remote.expect(&Packet::PubRel(PubResp::new(pid2))).await;
    drop(remote);

    let mut remote = fake.accept(true).await;
    let again = next_publish(&mut remote).await;
    let p = again.publish();
    assert_eq!(
        (p.topic, p.dup, p.qos_pid, p.payload),
        ("q/1", true, p1.qos_pid, &b"one"[..]),
        "QoS 1 resent with DUP and its packet id"
    );
    remote.expect(&Packet::PubRel(PubResp::new(pid2))).await;
    remote
        .send(&Packet::PubAck(PubResp::new(p.qos_pid.pid().unwrap())))
        .await;
    remote.send(&Packet::PubComp(PubResp::new(pid2))).await;
    // Done: a new message gets through next, and nothing else comes first.
    publ.publish_flow(publish("q/3", b"three", QoS::AtLeastOnce, 3, false))
        .await;
    let next = next_publish(&mut remote).await;
    assert_eq!(next.publish().topic, "q/3");
    assert!(!next.publish().dup);
    local.shutdown().await;
}

// The same across a restart of this broker: the bridge's in-flight state is
// its session's, kept in the store, so after the restart the PUBLISH goes
// again with DUP and its packet id, and the PUBREL again [MQTT-4.4.0-1].
#[tokio::test]
async fn in_flight_state_survives_a_restart_of_this_broker() {
    let dir = ScratchDir::new("bridge-restart");
    let fake = FakeRemote::new().await;
    let config = || {
        let mut c = bridged(
            fake.addr(),
            "mqttv311",
            &["q/# out 2"],
            "try_private = false",
        );
        c.durability = mqtt_broker::store::Durability::Always;
        c.data_dir = dir.file("data");
        c
    };
    let local = broker_with(config()).await;
    let mut remote = fake.accept(false).await;
    let mut publ = RawClient::connect(local.local_addr(), V5, "pub").await;
    publ.publish_flow(publish("q/1", b"one", QoS::AtLeastOnce, 1, false))
        .await;
    publ.publish_flow(publish("q/2", b"two", QoS::ExactlyOnce, 2, false))
        .await;
    let first = next_publish(&mut remote).await;
    let second = next_publish(&mut remote).await;
    let pid2 = second.publish().qos_pid.pid().unwrap();
    remote.send(&Packet::PubRec(PubResp::new(pid2))).await;
    remote.expect(&Packet::PubRel(PubResp::new(pid2))).await;
    drop(publ);
    local.shutdown().await;
    drop(remote);

    let local = broker_with(config()).await;
    let mut remote = fake.accept(true).await;
    let again = next_publish(&mut remote).await;
    let (p, p1) = (again.publish(), first.publish());
    assert_eq!(
        (p.topic, p.dup, p.qos_pid, p.payload),
        ("q/1", true, p1.qos_pid, &b"one"[..]),
        "QoS 1 resent after the restart with DUP and its packet id"
    );
    remote.expect(&Packet::PubRel(PubResp::new(pid2))).await;
    local.shutdown().await;
}

// A stored message the bridge sends at QoS 0 (its out line says 0, though
// an overlapping line subscribed at 1) leaves the store once sent: after a
// restart of this broker it is not sent again.
#[tokio::test]
async fn a_message_sent_downgraded_to_qos_0_is_not_sent_again_after_a_restart() {
    let dir = ScratchDir::new("bridge-downgrade");
    let fake = FakeRemote::new().await;
    let config = || {
        let mut c = bridged(
            fake.addr(),
            "mqttv311",
            &["q/a out 0", "q/# out 1"],
            "try_private = false",
        );
        c.durability = mqtt_broker::store::Durability::Always;
        c.data_dir = dir.file("data");
        c
    };
    let local = broker_with(config()).await;
    let mut remote = fake.accept(false).await;
    let mut publ = RawClient::connect(local.local_addr(), V5, "pub").await;
    publ.publish_flow(publish("q/a", b"once", QoS::AtLeastOnce, 1, false))
        .await;
    let got = next_publish(&mut remote).await;
    let p = got.publish();
    assert_eq!((p.topic, p.qos_pid), ("q/a", QosPid::AtMostOnce));
    drop(publ);
    local.shutdown().await;
    drop(remote);

    let local = broker_with(config()).await;
    let mut remote = fake.accept(true).await;
    let mut publ = RawClient::connect(local.local_addr(), V5, "pub").await;
    publ.publish_flow(publish("q/b", b"marker", QoS::AtLeastOnce, 1, false))
        .await;
    let got = next_publish(&mut remote).await;
    assert_eq!(
        got.publish().topic,
        "q/b",
        "nothing before the marker: q/a was sent once already"
    );
    local.shutdown().await;
}

// Bridge state is in `$SYS`: the connection state (retained 1 / 0, as
// Mosquitto's notifications) and the bridge's figures.
#[tokio::test]
async fn bridge_state_and_figures_are_in_sys() {
    let remote = broker().await;
    let mut config = bridged(remote.local_addr(), "mqttv50", &["s/# out 1"], "");
    config.sys_interval_secs = 1;
    config.bridges[0].notification_topic = None;
    let local = broker_with(config).await;
    let mut c = RawClient::connect(local.local_addr(), V5, "watch").await;
    c.subscribe(1, "$SYS/broker/connection/edge/state", QoS::AtMostOnce)
        .await;
    loop {
        let got = c.recv_publish().await;
        if got.publish().payload == b"1" {
            break;
        }
    }
    c.subscribe(2, "$SYS/broker/bridges/up/connected", QoS::AtMostOnce)
        .await;
    // Updated every second: 0 until the first update after connecting.
    loop {
        let got = c.recv_publish().await;
        if got.publish().payload == b"1" {
            break;
        }
    }
    c.send(&Packet::Unsubscribe(unsubscribe(
        3,
        &["$SYS/broker/bridges/up/connected"],
    )))
    .await;
    loop {
        if let Packet::UnsubAck(_) = c.recv().await.packet() {
            break;
        }
    }
    remote.shutdown().await;
    // The remote gone, the local state says 0.
    loop {
        let got = c.recv_publish().await;
        let p = got.publish();
        if p.topic == "$SYS/broker/connection/edge/state" {
            assert_eq!(p.payload, b"0");
            break;
        }
    }
    local.shutdown().await;
}

// Clients do not publish into `$SYS`, except their own connection state,
// `$SYS/broker/connection/<client id>/state`, where bridges report (as
// Mosquitto lets them); a will may go there too.
#[tokio::test]
async fn a_client_may_publish_only_its_own_connection_state_in_sys() {
    let b = broker().await;
    let mut watch = RawClient::connect(b.local_addr(), V5, "watch").await;
    watch
        .subscribe(1, "$SYS/broker/connection/#", QoS::AtMostOnce)
        .await;
    let mut k = connect_packet(V5, "edge-x", true);
    let will = mqtt_codec::LastWill {
        topic: "$SYS/broker/connection/edge-x/state",
        payload: b"0",
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: mqtt_codec::Properties::EMPTY,
    };
    k.will = Some(will);
    let mut c = RawClient::connect_with(b.local_addr(), k).await;
    c.publish_flow(publish(
        "$SYS/broker/connection/other/state",
        b"1",
        QoS::AtLeastOnce,
        1,
        true,
    ))
    .await;
    c.publish_flow(publish(
        "$SYS/broker/connection/edge-x/state",
        b"1",
        QoS::AtLeastOnce,
        2,
        true,
    ))
    .await;
    let got = watch.recv_publish().await;
    assert_eq!(got.publish().topic, "$SYS/broker/connection/edge-x/state");
    assert_eq!(got.publish().payload, b"1");
    drop(c);
    let got = watch.recv_publish().await;
    assert_eq!(got.publish().payload, b"0", "the will");
    b.shutdown().await;
}

// The commented-out bridge in the example configuration, uncommented,
// parses (its TLS files are read only when the broker starts).
#[test]
fn example_config_bridge_parses() {
    let text = include_str!("../mqtt-broker.example.toml");
    let start = text.find("# [[bridges]]").expect("bridge example");
    let block: String = text[start..]
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
        .collect();
    let config = Config::from_toml(&block).expect("bridge example parses");
    let b = &config.bridges[0];
    assert_eq!(b.name, "cloud");
    assert_eq!(b.topics.len(), 3);
    let checked = mqtt_broker::bridge::Bridge::check(b, 0).unwrap();
    assert_eq!(checked.lines[0].remote_filter, "site1/sensors/#");
    assert_eq!(
        checked.addresses[1],
        ("backup.example.com".to_string(), 8883)
    );
}

// A bridge whose TLS files cannot be read stops the start, naming the
// bridge and the key.
#[tokio::test]
async fn unreadable_bridge_tls_files_stop_the_start() {
    let mut config = bridged("127.0.0.1:1".parse().unwrap(), "mqttv311", &["a/#"], "");
    config.bridges[0].tls = Some(mqtt_broker::bridge::config::BridgeTls {
        ca_file: Some("/nonexistent/ca.crt".into()),
        ..Default::default()
    });
    let err = mqtt_broker::Broker::start(config)
        .await
        .err()
        .expect("start refused");
    let text = err.to_string();
    assert!(
        text.contains("bridge \"up\"") && text.contains("tls.ca_file"),
        "{text}"
    );
}

/// A CA (PEM) and a server certificate and key for 127.0.0.1 signed by it.
fn pki(name: &str) -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, SanType,
    };
    let mut ca = CertificateParams::new(Vec::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, name);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_pem, cert.pem(), key.serialize_pem())
}

// TLS to the remote's TLS listener, verified against the bridge's CA file;
// a remote whose certificate another CA signed is refused (and the bridge
// stays down).
#[tokio::test]
async fn tls_to_the_remote_is_verified_against_the_ca_file() {
    let dir = ScratchDir::new("bridge-tls");
    let (ca, cert, key) = pki("bridge test CA");
    let (other_ca, _, _) = pki("another CA");
    for (name, text) in [
        ("ca.crt", &ca),
        ("other.crt", &other_ca),
        ("server.crt", &cert),
        ("server.key", &key),
    ] {
        std::fs::write(dir.file(name), text).unwrap();
    }
    let mut rc = Config::ephemeral();
    rc.listeners[0].tls = Some(mqtt_broker::config::TlsListenerConfig {
        cert_file: dir.file("server.crt"),
        key_file: dir.file("server.key"),
        ca_file: None,
        require_certificate: false,
        use_identity_as_username: false,
    });
    // A plain listener too, for the test's own subscriber.
    let mut plain = rc.listeners[0].clone();
    plain.tls = None;
    rc.listeners.push(plain);
    let remote = broker_with(rc).await;
    let mut sub = RawClient::connect(remote.local_addrs()[1], V5, "sub").await;
    sub.subscribe(1, "#", QoS::AtLeastOnce).await;
    let mut config = bridged(remote.local_addr(), "mqttv311", &["t/# out 1"], "");
    let mut wrong = config.bridges[0].clone();
    config.bridges[0].tls = Some(mqtt_broker::bridge::config::BridgeTls {
        ca_file: Some(dir.file("ca.crt")),
        ..Default::default()
    });
    wrong.name = "wrong".into();
    wrong.remote_clientid = Some("edge-wrong".into());
    wrong.notification_topic = Some("bridge/wrong/state".into());
    wrong.topics = vec!["w/# out 1".into()];
    wrong.tls = Some(mqtt_broker::bridge::config::BridgeTls {
        ca_file: Some(dir.file("other.crt")),
        ..Default::default()
    });
    let mut lax = wrong.clone();
    lax.name = "lax".into();
    lax.remote_clientid = Some("edge-lax".into());
    lax.notification_topic = Some("bridge/lax/state".into());
    lax.topics = vec!["lax/# out 1".into()];
    lax.tls = Some(mqtt_broker::bridge::config::BridgeTls {
        insecure: true,
        ..Default::default()
    });
    config.bridges.push(wrong);
    config.bridges.push(lax);
    let local = broker_with(config).await;

    // The state topic on the local side says 1 for the good bridge only.
    let mut watch = RawClient::connect(local.local_addr(), V5, "watch").await;
    watch.subscribe(1, "bridge/+/state", QoS::AtMostOnce).await;
    // ... and for the one that checks nothing (`insecure`).
    let mut up = Vec::new();
    while up.len() < 2 {
        let got = watch.recv_publish().await;
        let p = got.publish();
        assert_ne!((p.topic, p.payload), ("bridge/wrong/state", &b"1"[..]));
        if p.payload == b"1" {
            up.push(p.topic.to_string());
        }
    }
    up.sort();
    assert_eq!(up, [STATE, "bridge/lax/state"]);
    let mut publ = RawClient::connect(local.local_addr(), V5, "pub").await;
    publ.publish_flow(publish("t/x", b"over tls", QoS::AtLeastOnce, 1, false))
        .await;
    publ.publish_flow(publish("w/x", b"never", QoS::AtLeastOnce, 2, false))
        .await;
    let got = loop {
        let (topic, payload, _, _) = take(&mut sub).await;
        if !topic.starts_with("bridge/") {
            break (topic, payload);
        }
    };
    assert_eq!(got, ("t/x".to_string(), b"over tls".to_vec()));
    let stats = remote.stats();
    eventually("the remote saw the wrong bridge's handshake fail", || {
        stats.tls_handshake_failures.get() > 0
    })
    .await;
    assert_eq!(
        remote.session_count(),
        3,
        "only the good and the insecure bridges (and sub) got in"
    );
    local.shutdown().await;
    remote.shutdown().await;
}

// Between MQTT 5 brokers a message keeps its properties across the bridge
// (user properties in order, content type, correlation data, response
// topic, payload format).
#[tokio::test]
async fn mqtt5_properties_cross_the_bridge() {
    let (remote, local) = start_pair("mqttv50", &["p/# out 1"], "").await;
    let mut sub = RawClient::connect(remote.local_addr(), V5, "sub").await;
    sub.subscribe(1, "p/#", QoS::AtLeastOnce).await;
    let props = [
        mqtt_codec::Property::PayloadFormatIndicator(true),
        mqtt_codec::Property::ContentType("text/plain"),
        mqtt_codec::Property::ResponseTopic("p/reply"),
        mqtt_codec::Property::CorrelationData(b"42"),
        mqtt_codec::Property::UserProperty("site", "1"),
        mqtt_codec::Property::UserProperty("site", "2"),
    ];
    let mut publ = RawClient::connect(local.local_addr(), V5, "pub").await;
    publ.publish_flow(publish_props(
        "p/x",
        b"hi",
        QoS::AtLeastOnce,
        1,
        false,
        &props,
    ))
    .await;
    let got = sub.recv_publish().await;
    let p = got.publish();
    assert_eq!(p.topic, "p/x");
    assert_eq!(
        props_by_id(p.properties),
        props_by_id(mqtt_codec::Properties::from_slice(&props))
    );
    local.shutdown().await;
    remote.shutdown().await;
}

// Where lines overlap, a message crosses at the QoS of the line that maps
// it (the first that matches), not at the highest QoS of the overlapping
// local subscriptions.
#[tokio::test]
async fn a_message_crosses_at_the_qos_of_the_line_that_maps_it() {
    let (remote, local) =
        start_pair("mqttv311", &["a/# out 0 l/ r0/", "a/b out 2 l/ r2/"], "").await;
    let mut sub = RawClient::connect(remote.local_addr(), V5, "sub").await;
    sub.subscribe(1, "#", QoS::ExactlyOnce).await;
    let mut publ = RawClient::connect(local.local_addr(), V5, "pub").await;
    publ.publish_flow(publish("l/a/b", b"x", QoS::ExactlyOnce, 1, false))
        .await;
    let got = loop {
        let got = take(&mut sub).await;
        if got.0 != STATE {
            break got;
        }
    };
    assert_eq!(
        got,
        ("r0/a/b".into(), b"x".to_vec(), QoS::AtMostOnce, false)
    );
    local.shutdown().await;
    remote.shutdown().await;
}

// `outgoing_retain = false`: messages go out without their retain flag, so
// the remote keeps no retained copy (Mosquitto's `bridge_outgoing_retain`).
#[tokio::test]
async fn outgoing_retain_false_clears_the_retain_flag() {
    let (remote, local) = start_pair("mqttv50", &["o/# out 1"], "outgoing_retain = false").await;
    let mut sub = RawClient::connect(remote.local_addr(), V5, "sub").await;
    sub.subscribe_opts(
        1,
        "o/#",
        mqtt_codec::SubscriptionOptions {
            retain_as_published: true,
            ..mqtt_codec::SubscriptionOptions::qos(QoS::AtLeastOnce)
        },
        None,
    )
    .await;
    let mut publ = RawClient::connect(local.local_addr(), V5, "pub").await;
    publ.publish_flow(publish("o/x", b"r", QoS::AtLeastOnce, 1, true))
        .await;
    assert_eq!(
        take(&mut sub).await,
        ("o/x".into(), b"r".to_vec(), QoS::AtLeastOnce, false)
    );
    let mut late = RawClient::connect(remote.local_addr(), V5, "late").await;
    late.subscribe(1, "o/x", QoS::AtLeastOnce).await;
    late.expect_nothing_pending().await;
    local.shutdown().await;
    remote.shutdown().await;
}

// A remote that accepts TCP but never answers CONNECT does not hold up a
// shutdown (the attempt would otherwise wait for its 10 s timeout).
#[tokio::test]
async fn a_silent_remote_does_not_hold_up_shutdown() {
    let silent = FakeRemote::new().await;
    let local = broker_with(bridged(silent.addr(), "mqttv311", &["a/#"], "")).await;
    let (_held, _) = silent.listener.accept().await.unwrap();
    tokio::time::timeout(TIMEOUT, local.shutdown())
        .await
        .expect("shutdown within 5 s");
}

// `cleansession = true`: the bridge starts a clean session on the remote
// each time, and what was in flight to the old one is sent again; a message
// the remote had PUBREC'd is done (no PUBREL to a session that never knew
// it).
#[tokio::test]
async fn cleansession_true_starts_clean_and_resends_unacknowledged_messages_afresh() {
    let fake = FakeRemote::new().await;
    let local = broker_with(bridged(
        fake.addr(),
        "mqttv311",
        &["q/# out 2"],
        "try_private = false\ncleansession = true",
    ))
    .await;
    let mut remote = fake.accept_clean(false, true).await;
    let mut publ = RawClient::connect(local.local_addr(), V5, "pub").await;
    publ.publish_flow(publish("q/1", b"one", QoS::AtLeastOnce, 1, false))
        .await;
    publ.publish_flow(publish("q/2", b"two", QoS::ExactlyOnce, 2, false))
        .await;
    let _first = next_publish(&mut remote).await;
    let second = next_publish(&mut remote).await;
    let pid2 = second.publish().qos_pid.pid().unwrap();
    remote.send(&Packet::PubRec(PubResp::new(pid2))).await;
    remote.expect(&Packet::PubRel(PubResp::new(pid2))).await;
    drop(remote);

    let mut remote = fake.accept_clean(false, true).await;
    let again = next_publish(&mut remote).await;
    assert_eq!(again.publish().topic, "q/1");
    publ.publish_flow(publish("q/3", b"three", QoS::AtLeastOnce, 3, false))
        .await;
    // No PUBREL for q/2: the very next packet is q/3.
    let next = remote.recv().await;
    match next.packet() {
        Packet::Publish(p) => assert_eq!(p.topic, "q/3"),
        p => panic!("expected the PUBLISH of q/3, got {p:?}"),
    }
    local.shutdown().await;
}
