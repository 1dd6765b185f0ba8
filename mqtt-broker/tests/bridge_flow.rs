//! A bridge as the remote's client: flow control toward the remote (its
//! Receive Maximum) and keep alive (PINGREQ, and a remote that stops
//! answering it). The remote is a fake written here, over real loopback
//! sockets, so that the test sees every packet the bridge sends; the
//! local broker runs in this process on tokio's paused time, so "nothing
//! more comes" and the keep-alive bounds are virtual time the test
//! controls, not real waiting.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use mqtt_broker::{BrokerHandle, Config};
use mqtt_codec::{ConnAck, Packet, Pid, Properties, Property, ProtocolVersion, PubResp, QoS};
use tokio::time::Instant;

const V3: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;
const STATE: &str = "bridge/edge/state";
/// Virtual time with the whole runtime idle: a packet the bridge was going
/// to send has been sent by then (paused time advances only when every
/// task waits).
const QUIET: Duration = Duration::from_secs(1);

/// A local broker with one bridge `q/# out 1` to `remote`; `extra` more
/// keys of the `[[bridges]]` entry.
async fn bridged(remote: SocketAddr, version: &str, extra: &str) -> BrokerHandle {
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
try_private = false
topics = ["q/# out 1"]
{extra}
"#
    );
    broker_with(Config::from_toml(&text).expect("bridge configuration")).await
}

/// The fake remote broker's listening socket.
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

    /// Accepts the bridge, reads its CONNECT (checking its Keep Alive is
    /// `keep_alive`) and answers CONNACK with `session_present` and
    /// `properties` (MQTT 5 only).
    async fn accept(
        &self,
        version: ProtocolVersion,
        session_present: bool,
        keep_alive: u16,
        properties: &[Property<'_>],
    ) -> RawClient {
        let (stream, _) = tokio::time::timeout(TIMEOUT * 3, self.listener.accept())
            .await
            .expect("the bridge connects")
            .unwrap();
        let mut c = RawClient::from_stream(stream, version);
        match c.recv().await.packet() {
            Packet::Connect(k) => {
                assert_eq!(k.client_id, "edge");
                assert_eq!(k.keep_alive, keep_alive, "Keep Alive");
            }
            p => panic!("expected CONNECT, got {p:?}"),
        }
        let ack = ConnAck {
            session_present,
            reason: mqtt_codec::ReasonCode::Success,
            properties: Properties::from_slice(properties),
        };
        c.send(&Packet::ConnAck(ack)).await;
        c
    }
}

/// The next PUBLISH of a `q/` topic (the state notification skipped), as
/// (topic, packet id, DUP); `None` when nothing comes within `QUIET`.
async fn next_message(c: &mut RawClient) -> Option<(String, Pid, bool)> {
    let wait = async {
        loop {
            let got = c.recv().await;
            if let Packet::Publish(p) = got.packet() {
                if p.topic != STATE {
                    let pid = p.qos_pid.pid().expect("a QoS 1 message");
                    return (p.topic.to_string(), pid, p.dup);
                }
            }
        }
    };
    tokio::time::timeout(QUIET, wait).await.ok()
}

/// Publishes q/1 .. q/n at QoS 1 on the local broker.
async fn publish_n(local: &BrokerHandle, n: u16) -> RawClient {
    let mut publ = RawClient::connect(local.local_addr(), V5, "pub").await;
    for i in 1..=n {
        let topic = format!("q/{i}");
        publ.publish_flow(publish(&topic, b"m", QoS::AtLeastOnce, i, false))
            .await;
    }
    publ
}

/// Takes messages as the remote, acknowledging the oldest only when the
/// bridge has gone quiet, and asserting at every PUBLISH that no more than
/// `max` are unacknowledged. Returns the topics in arrival order.
async fn take_within_window(remote: &mut RawClient, n: usize, max: usize) -> Vec<String> {
    let mut unacked: Vec<Pid> = Vec::new();
    let mut topics = Vec::new();
    while topics.len() < n {
        match next_message(remote).await {
            Some((topic, pid, _)) => {
                unacked.push(pid);
                assert!(
                    unacked.len() <= max,
                    "{topic}: {} PUBLISHes unacknowledged with Receive Maximum {max}",
                    unacked.len()
                );
                topics.push(topic);
            }
            None => {
                // The bridge waits for us: only because the window is full.
                assert_eq!(
                    unacked.len(),
                    max,
                    "the bridge stopped with {} of {max} in flight after {topics:?}",
                    unacked.len()
                );
                let oldest = unacked.remove(0);
                remote.send(&Packet::PubAck(PubResp::new(oldest))).await;
            }
        }
    }
    for pid in unacked {
        remote.send(&Packet::PubAck(PubResp::new(pid))).await;
    }
    topics
}

fn expected(n: u16) -> Vec<String> {
    (1..=n).map(|i| format!("q/{i}")).collect()
}

// [MQTT-5: 3.3.4-7] The bridge, as the remote's client, sends no more QoS
// 1/2 PUBLISHes than the Receive Maximum of the remote's CONNACK before
// they are acknowledged; the rest wait in its queue and all follow, in
// order, as acknowledgements come.
#[tokio::test(start_paused = true)]
async fn bridge_never_exceeds_the_remotes_receive_maximum() {
    let fake = FakeRemote::new().await;
    let local = bridged(fake.addr(), "mqttv50", "").await;
    let mut remote = fake
        .accept(V5, false, 60, &[Property::ReceiveMaximum(2)])
        .await;
    let _publ = publish_n(&local, 5).await;
    assert_eq!(take_within_window(&mut remote, 5, 2).await, expected(5));
    assert_eq!(next_message(&mut remote).await, None, "nothing sent twice");
    local.shutdown().await;
}

// [MQTT-5: 3.3.4-9] Messages resent after a reconnection count against the
// new connection's Receive Maximum too: a remote that now allows 2 gets
// the unacknowledged messages again (DUP) two at a time.
#[tokio::test(start_paused = true)]
async fn resends_after_a_reconnection_respect_the_receive_maximum() {
    let fake = FakeRemote::new().await;
    let local = bridged(fake.addr(), "mqttv50", "").await;
    let mut remote = fake
        .accept(V5, false, 60, &[Property::ReceiveMaximum(10)])
        .await;
    let _publ = publish_n(&local, 4).await;
    for want in expected(4) {
        let (topic, _, dup) = next_message(&mut remote).await.expect("sent");
        assert_eq!((topic, dup), (want, false));
    }
    // None acknowledged; the link drops and comes back with a session.
    drop(remote);
    let mut remote = fake
        .accept(V5, true, 60, &[Property::ReceiveMaximum(2)])
        .await;
    assert_eq!(take_within_window(&mut remote, 4, 2).await, expected(4));
    local.shutdown().await;
}

// MQTT 5.0 section 3.1.2.10 (3.1.1 likewise): the bridge sends PINGREQ
// when it has sent nothing for a Keep Alive, and a remote that leaves it
// unanswered for another Keep Alive is dropped; the bridge then reconnects
// after its restart_timeout (Mosquitto's bridge behaves the same).
#[tokio::test(start_paused = true)]
async fn a_remote_that_stops_answering_pingreq_is_dropped_and_reconnected() {
    let ka = Duration::from_secs(2);
    let fake = FakeRemote::new().await;
    let local = bridged(fake.addr(), "mqttv311", "keepalive_interval = 2").await;
    let mut remote = fake.accept(V3, false, 2, &[]).await;
    let connected = Instant::now();
    // The state notification, then nothing until the Keep Alive is up.
    loop {
        match remote.recv().await.packet() {
            Packet::Publish(p) if p.topic == STATE => {}
            Packet::PingReq => break,
            p => panic!("expected PINGREQ, got {p:?}"),
        }
    }
    let pinged = connected.elapsed();
    assert!(
        pinged >= ka && pinged < ka + QUIET,
        "PINGREQ after {pinged:?}, Keep Alive {ka:?}"
    );
    // Never answered: closed one Keep Alive after the PINGREQ.
    remote.expect_close().await;
    let dropped = connected.elapsed();
    assert!(
        dropped >= 2 * ka && dropped < 2 * ka + QUIET,
        "dropped after {dropped:?}"
    );
    // And back after restart_timeout (1 s).
    let mut again = fake.accept(V3, false, 2, &[]).await;
    let back = connected.elapsed() - dropped;
    assert!(
        back <= Duration::from_secs(1) + QUIET,
        "reconnected after {back:?}"
    );
    // The new link pings on the same schedule.
    loop {
        match again.recv().await.packet() {
            Packet::Publish(p) if p.topic == STATE => {}
            Packet::PingReq => break,
            p => panic!("expected PINGREQ, got {p:?}"),
        }
    }
    local.shutdown().await;
}

// The other half of the same rule: a remote that answers every PINGREQ
// keeps the link; the bridge never gives it up while it is silent
// otherwise.
#[tokio::test(start_paused = true)]
async fn a_remote_that_answers_pingreq_keeps_the_link() {
    let fake = FakeRemote::new().await;
    let local = bridged(fake.addr(), "mqttv311", "keepalive_interval = 2").await;
    let mut remote = fake.accept(V3, false, 2, &[]).await;
    let start = Instant::now();
    let mut pings = 0;
    while pings < 5 {
        match remote.recv().await.packet() {
            Packet::Publish(p) if p.topic == STATE => {}
            Packet::PingReq => {
                pings += 1;
                remote.send(&Packet::PingResp).await;
            }
            p => panic!("expected PINGREQ, got {p:?}"),
        }
    }
    // Five rounds of Keep Alive on the one connection: 10 s of virtual time.
    assert!(start.elapsed() >= Duration::from_secs(10));
    // Still the same link: a message goes through it.
    let _publ = publish_n(&local, 1).await;
    let (topic, _, _) = next_message(&mut remote)
        .await
        .expect("sent on the same link");
    assert_eq!(topic, "q/1");
    local.shutdown().await;
}
