//! The cluster (issue 17): three brokers in this process, each one node of a
//! cluster over three clustered nats-servers with JetStream, and raw MQTT
//! clients on different nodes.
//!
//! Run by `.ci/interop/cluster_test.sh`, which starts the nats-servers and
//! sets `MQTT_CLUSTER_NATS` (their URLs, comma separated) and
//! `MQTT_CLUSTER_NATS_SERVER` (the nats-server binary, for the outage test
//! that runs its own server):
//!
//!     cargo test -p mqtt-broker --features cluster-tests --test cluster
//!
//! Without the feature this file is empty; with it and without the
//! variables every test fails. Each test uses its own subject prefix, so its
//! streams and buckets are its own.
#![cfg(feature = "cluster-tests")]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use mqtt_broker::{BrokerHandle, ClusterConfig, Config};
use mqtt_codec::{
    Packet, Property, ProtocolVersion, PubResp, Publish, QoS, ReasonCode, RetainHandling,
    SubscriptionOptions,
};

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V3_1_1;

/// The NATS cluster's client URLs, from the harness.
fn nats_urls() -> Vec<String> {
    let urls = std::env::var("MQTT_CLUSTER_NATS").expect(
        "MQTT_CLUSTER_NATS (comma-separated NATS URLs) is not set: run .ci/interop/cluster_test.sh",
    );
    let urls: Vec<String> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(String::from)
        .collect();
    assert!(!urls.is_empty(), "MQTT_CLUSTER_NATS holds no URL");
    urls
}

/// A subject prefix no other test (or earlier run) uses.
fn unique_prefix(tag: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 1_000_000_000;
    format!("t{tag}{}x{t}x{n}", std::process::id())
}

/// The configuration of node `i` of the cluster `prefix`: node i talks to
/// NATS server i first, so the nodes use different servers.
fn node_config(prefix: &str, i: usize, urls: &[String]) -> Config {
    let mut nats = urls.to_vec();
    nats.rotate_left(i % urls.len());
    Config {
        cluster: Some(ClusterConfig {
            node: format!("node{i}"),
            nats,
            subject_prefix: prefix.to_string(),
            replicas: urls.len().min(3),
            // JetStream reserves this on every server for every test's
            // stream.
            message_stream_max_bytes: 8 << 20,
            ..ClusterConfig::default()
        }),
        ..Config::ephemeral()
    }
}

/// How long a node may take to be ready (streams created with 3 replicas
/// on a busy machine).
const READY: Duration = Duration::from_secs(30);

async fn wait_ready(node: &BrokerHandle) {
    let deadline = tokio::time::Instant::now() + READY;
    while !node.cluster_ready() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "cluster node not ready within {READY:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The nodes of one test's cluster.
struct Nodes {
    prefix: String,
    handles: Vec<BrokerHandle>,
}

impl std::ops::Deref for Nodes {
    type Target = [BrokerHandle];
    fn deref(&self) -> &[BrokerHandle] {
        &self.handles
    }
}

/// Starts `n` brokers as nodes of one cluster named by `prefix`.
async fn start_nodes(prefix: &str, n: usize) -> Nodes {
    let urls = nats_urls();
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(broker_with(node_config(prefix, i, &urls)).await);
    }
    for node in &nodes {
        wait_ready(node).await;
    }
    Nodes {
        prefix: prefix.to_string(),
        handles: nodes,
    }
}

async fn cluster(tag: &str) -> Nodes {
    start_nodes(&unique_prefix(tag), 3).await
}

/// Shuts the brokers down, keeping what they stored in NATS.
async fn stop_keep(nodes: Nodes) {
    for n in nodes.handles {
        n.shutdown().await;
    }
}

/// Shuts the brokers down and deletes the test's streams and buckets.
async fn stop(nodes: Nodes) {
    let prefix = nodes.prefix.clone();
    stop_keep(nodes).await;
    let js = jetstream().await;
    let upper = prefix.to_ascii_uppercase();
    for name in [
        format!("{upper}_MESSAGES"),
        format!("KV_{upper}_retained"),
        format!("KV_{upper}_sessions"),
        format!("{upper}_QUEUES"),
    ] {
        let _ = js.delete_stream(&name).await;
    }
}

/// A JetStream context on the harness's NATS, to look at what the cluster
/// stored.
async fn jetstream() -> async_nats::jetstream::Context {
    let client = async_nats::connect(nats_urls()).await.expect("NATS");
    async_nats::jetstream::new(client)
}

// [MQTT-3.3.4-1] (issue 17): a QoS 0 PUBLISH on any node reaches the
// matching subscribers on every node, itself included.
#[tokio::test]
async fn qos0_publish_reaches_subscribers_on_every_node() {
    let nodes = cluster("q0").await;
    let mut subs = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let mut c = RawClient::connect(n.local_addr(), V5, &format!("sub{i}")).await;
        c.subscribe(1, "fan/+", QoS::AtMostOnce).await;
        subs.push(c);
    }
    let mut p = RawClient::connect(nodes[1].local_addr(), V5, "pub").await;
    p.publish_flow(publish("fan/out", b"hello", QoS::AtMostOnce, 0, false))
        .await;
    for s in &mut subs {
        s.expect_publish(publish("fan/out", b"hello", QoS::AtMostOnce, 0, false))
            .await;
        s.expect_nothing_pending().await;
    }
    stop(nodes).await;
}

// [MQTT-4.3.2-2] across nodes: the PUBACK of a QoS 1 message is sent only
// once JetStream has stored it, so losing the publishing broker right after
// the PUBACK loses nothing; a subscriber on another node gets it at QoS 1.
#[tokio::test]
async fn qos1_is_acknowledged_only_once_jetstream_holds_it() {
    let prefix = unique_prefix("q1");
    let nodes = start_nodes(&prefix, 3).await;
    let mut s = RawClient::connect(nodes[2].local_addr(), V5, "s").await;
    s.subscribe(1, "q1/t", QoS::AtLeastOnce).await;
    let mut p = RawClient::connect(nodes[0].local_addr(), V5, "p").await;
    let reason = p
        .publish_flow(publish("q1/t", b"durable", QoS::AtLeastOnce, 7, false))
        .await;
    assert_eq!(reason, ReasonCode::Success);
    // At the moment of the PUBACK the message is in the stream.
    let js = jetstream().await;
    let stream = js
        .get_stream(format!("{}_MESSAGES", prefix.to_ascii_uppercase()))
        .await
        .expect("message stream");
    let stored = stream
        .get_last_raw_message_by_subject(&format!("{prefix}.d.q1.t"))
        .await
        .expect("the message is stored");
    assert!(
        stored.payload.ends_with(b"durable"),
        "stored {:?}",
        stored.payload
    );
    let pid = s
        .expect_publish(publish("q1/t", b"durable", QoS::AtLeastOnce, 1, false))
        .await
        .unwrap();
    s.send(&Packet::PubAck(PubResp::new(pid))).await;
    s.expect_nothing_pending().await;
    stop(nodes).await;
}

// [MQTT-4.3.3-x] QoS 2 across nodes: the publisher's flow completes, and the
// subscriber on another node gets the message exactly once at QoS 2.
#[tokio::test]
async fn qos2_crosses_nodes_exactly_once() {
    let nodes = cluster("q2").await;
    let mut s = RawClient::connect(nodes[1].local_addr(), V5, "s").await;
    s.subscribe(1, "q2/#", QoS::ExactlyOnce).await;
    let mut p = RawClient::connect(nodes[2].local_addr(), V5, "p").await;
    // The same packet identifier sent twice before PUBREL is one message
    // [MQTT-4.3.3-10].
    p.send(&Packet::Publish(publish(
        "q2/x",
        b"once",
        QoS::ExactlyOnce,
        9,
        false,
    )))
    .await;
    p.expect(&Packet::PubRec(PubResp::new(pid_(9)))).await;
    let dup = Publish {
        dup: true,
        ..publish("q2/x", b"once", QoS::ExactlyOnce, 9, false)
    };
    p.send(&Packet::Publish(dup)).await;
    p.expect(&Packet::PubRec(PubResp::new(pid_(9)))).await;
    p.send(&Packet::PubRel(PubResp::new(pid_(9)))).await;
    p.expect(&Packet::PubComp(PubResp::new(pid_(9)))).await;
    let got = s.recv_publish().await;
    let publish_got = got.publish();
    assert_eq!(publish_got.qos_pid.qos(), QoS::ExactlyOnce);
    assert_eq!(publish_got.payload, b"once");
    s.ack_delivery(&publish_got).await;
    s.expect_nothing_pending().await;
    stop(nodes).await;
}

// MQTT 5.0 section 3.3.2.3: the broker forwards Payload Format Indicator,
// Message Expiry Interval (what is left of it), Content Type, Response
// Topic, Correlation Data and User Properties in order, across nodes too.
#[tokio::test]
async fn properties_cross_nodes_unchanged() {
    let nodes = cluster("props").await;
    let mut s = RawClient::connect(nodes[0].local_addr(), V5, "s").await;
    s.subscribe(1, "props", QoS::AtLeastOnce).await;
    let mut p = RawClient::connect(nodes[1].local_addr(), V5, "p").await;
    let props = [
        Property::PayloadFormatIndicator(true),
        Property::MessageExpiryInterval(3600),
        Property::ContentType("text/plain"),
        Property::ResponseTopic("reply/here"),
        Property::CorrelationData(b"\x00\x01corr"),
        Property::UserProperty("k", "v1"),
        Property::UserProperty("k", "v2"),
        Property::UserProperty("a", "b"),
    ];
    p.publish_flow(publish_props(
        "props",
        b"text",
        QoS::AtLeastOnce,
        1,
        false,
        &props,
    ))
    .await;
    let got = s.recv_publish().await;
    let publish_got = got.publish();
    assert_eq!(publish_got.payload, b"text");
    let mut got_props = props_by_id(publish_got.properties);
    // The expiry left may have lost a second on the way.
    let expiry = got_props
        .iter()
        .find_map(|p| match p {
            Property::MessageExpiryInterval(v) => Some(*v),
            _ => None,
        })
        .expect("Message Expiry Interval forwarded");
    assert!((3599..=3600).contains(&expiry), "expiry {expiry}");
    got_props.retain(|p| !matches!(p, Property::MessageExpiryInterval(_)));
    let mut want = props_by_id(mqtt_codec::Properties::from_slice(&props));
    want.retain(|p| !matches!(p, Property::MessageExpiryInterval(_)));
    assert_eq!(got_props, want);
    s.ack_delivery(&publish_got).await;
    stop(nodes).await;
}

// [MQTT-3.3.1-12/13] Retain As Published is the subscriber's option and is
// applied on the subscriber's node: with it the RETAIN flag of a message
// published on another node is kept, without it it is cleared.
#[tokio::test]
async fn retain_as_published_holds_across_nodes() {
    let nodes = cluster("rap").await;
    let mut keep = RawClient::connect(nodes[0].local_addr(), V5, "keep").await;
    keep.subscribe_opts(
        1,
        "rap/t",
        SubscriptionOptions {
            retain_as_published: true,
            retain_handling: RetainHandling::DoNotSend,
            ..SubscriptionOptions::qos(QoS::AtMostOnce)
        },
        None,
    )
    .await;
    let mut clear = RawClient::connect(nodes[0].local_addr(), V5, "clear").await;
    clear
        .subscribe_opts(
            1,
            "rap/t",
            SubscriptionOptions {
                retain_handling: RetainHandling::DoNotSend,
                ..SubscriptionOptions::qos(QoS::AtMostOnce)
            },
            None,
        )
        .await;
    let mut p = RawClient::connect(nodes[2].local_addr(), V5, "p").await;
    p.publish_flow(publish("rap/t", b"r", QoS::AtLeastOnce, 1, true))
        .await;
    keep.expect_publish(publish("rap/t", b"r", QoS::AtMostOnce, 0, true))
        .await;
    clear
        .expect_publish(publish("rap/t", b"r", QoS::AtMostOnce, 0, false))
        .await;
    stop(nodes).await;
}

// [MQTT-3.8.3-3] No Local: a client does not get its own messages back, and
// subscribers on the other nodes still get them; subscription identifiers
// are those of the subscriber's own node [MQTT-3.3.4-3].
#[tokio::test]
async fn no_local_and_subscription_ids_hold_across_nodes() {
    let nodes = cluster("nl").await;
    let mut me = RawClient::connect(nodes[0].local_addr(), V5, "me").await;
    me.subscribe_opts(
        1,
        "nl/t",
        SubscriptionOptions {
            no_local: true,
            ..SubscriptionOptions::qos(QoS::AtMostOnce)
        },
        None,
    )
    .await;
    let mut other = RawClient::connect(nodes[1].local_addr(), V5, "other").await;
    other
        .subscribe_opts(
            1,
            "nl/+",
            SubscriptionOptions::qos(QoS::AtMostOnce),
            Some(42),
        )
        .await;
    me.publish_flow(publish("nl/t", b"mine", QoS::AtMostOnce, 0, false))
        .await;
    let sub_id = [Property::SubscriptionIdentifier(42)];
    other
        .expect_publish(publish_props(
            "nl/t",
            b"mine",
            QoS::AtMostOnce,
            0,
            false,
            &sub_id,
        ))
        .await;
    me.expect_nothing_pending().await;
    stop(nodes).await;
}

// MQTT 5.0 section 4.7.1 / 3.3.4: a client with overlapping subscriptions
// gets one copy, at the highest QoS granted, with every matching
// subscription identifier, when the message comes from another node too.
#[tokio::test]
async fn overlapping_subscriptions_get_one_copy_from_another_node() {
    let nodes = cluster("ovl").await;
    let mut s = RawClient::connect(nodes[1].local_addr(), V5, "s").await;
    s.subscribe_opts(
        1,
        "ovl/+",
        SubscriptionOptions::qos(QoS::AtMostOnce),
        Some(1),
    )
    .await;
    s.subscribe_opts(
        2,
        "ovl/#",
        SubscriptionOptions::qos(QoS::AtLeastOnce),
        Some(2),
    )
    .await;
    let mut p = RawClient::connect(nodes[0].local_addr(), V5, "p").await;
    p.publish_flow(publish("ovl/x", b"one", QoS::AtLeastOnce, 1, false))
        .await;
    let got = s.recv_publish().await;
    let publish_got = got.publish();
    assert_eq!(publish_got.qos_pid.qos(), QoS::AtLeastOnce);
    let mut ids: Vec<u32> = publish_got
        .properties
        .iter()
        .filter_map(|p| match p {
            Property::SubscriptionIdentifier(i) => Some(i),
            _ => None,
        })
        .collect();
    ids.sort();
    assert_eq!(ids, [1, 2]);
    s.ack_delivery(&publish_got).await;
    s.expect_nothing_pending().await;
    stop(nodes).await;
}

// MQTT 5.0 section 4.7.3: every valid topic name works across nodes,
// including what NATS gives a meaning to (`.`, `*`, `>`, spaces), non-ASCII,
// empty levels and a leading `/`; and `a/#` matches `a` [MQTT-4.7.1-2].
#[tokio::test]
async fn awkward_topics_cross_nodes() {
    let nodes = cluster("awk").await;
    let topics = [
        "a.b/c.d",
        "*/>",
        "x y/ z",
        "é/日本語/🙂",
        "/lead",
        "a//b",
        "trail/",
        "=3D/_",
        "a",
    ];
    let mut s = RawClient::connect(nodes[2].local_addr(), V5, "s").await;
    s.subscribe(1, "#", QoS::AtMostOnce).await;
    s.subscribe(2, "/lead", QoS::AtMostOnce).await;
    let mut parent = RawClient::connect(nodes[2].local_addr(), V5, "parent").await;
    parent.subscribe(1, "a/#", QoS::AtMostOnce).await;
    let mut p = RawClient::connect(nodes[0].local_addr(), V311, "p").await;
    for t in topics {
        p.publish_flow(publish(t, t.as_bytes(), QoS::AtLeastOnce, 1, false))
            .await;
    }
    for t in topics {
        s.expect_publish(publish(t, t.as_bytes(), QoS::AtMostOnce, 0, false))
            .await;
    }
    s.expect_nothing_pending().await;
    for t in ["a//b", "a"] {
        parent
            .expect_publish(publish(t, t.as_bytes(), QoS::AtMostOnce, 0, false))
            .await;
    }
    parent.expect_nothing_pending().await;
    stop(nodes).await;
}

// [MQTT-3.3.1-5/6/10] Retained messages are the cluster's: set on one node,
// a new subscriber on every other node gets it; cleared (empty payload) on
// another node, it is gone everywhere.
#[tokio::test]
async fn retained_messages_are_cluster_wide() {
    let nodes = cluster("ret").await;
    let mut p = RawClient::connect(nodes[0].local_addr(), V5, "p").await;
    p.publish_flow(publish("ret/a", b"kept", QoS::AtLeastOnce, 1, true))
        .await;
    for (i, n) in nodes.iter().enumerate() {
        eventually("retained message on every node", || n.retained_count() == 1).await;
        let mut s = RawClient::connect(n.local_addr(), V5, &format!("s{i}")).await;
        s.subscribe(1, "ret/+", QoS::AtLeastOnce).await;
        let got = s.recv_publish().await;
        let publish_got = got.publish();
        assert!(publish_got.retain);
        assert_eq!(
            (publish_got.topic, publish_got.payload),
            ("ret/a", &b"kept"[..])
        );
        s.ack_delivery(&publish_got).await;
    }
    // Cleared on another node.
    let mut q = RawClient::connect(nodes[2].local_addr(), V5, "q").await;
    q.publish_flow(publish("ret/a", b"", QoS::AtLeastOnce, 1, true))
        .await;
    for (i, n) in nodes.iter().enumerate() {
        eventually("retained message cleared on every node", || {
            n.retained_count() == 0
        })
        .await;
        let mut s = RawClient::connect(n.local_addr(), V5, &format!("t{i}")).await;
        s.subscribe(1, "ret/#", QoS::AtLeastOnce).await;
        s.expect_nothing_pending().await;
    }
    stop(nodes).await;
}

// Issue 17: retained messages are kept when every broker restarts (they
// live in JetStream, replicated, not in one broker).
#[tokio::test]
async fn retained_messages_survive_a_restart_of_every_broker() {
    let prefix = unique_prefix("rst");
    let nodes = start_nodes(&prefix, 3).await;
    let mut p = RawClient::connect(nodes[1].local_addr(), V5, "p").await;
    p.publish_flow(publish("rst/a", b"1", QoS::AtLeastOnce, 1, true))
        .await;
    p.publish_flow(publish("rst/b", b"2", QoS::AtMostOnce, 0, true))
        .await;
    // QoS 0 has no acknowledgement to wait for: wait until it is everywhere.
    for n in nodes.iter() {
        eventually("both retained messages", || n.retained_count() == 2).await;
    }
    drop(p);
    stop_keep(nodes).await;
    let nodes = start_nodes(&prefix, 3).await;
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(n.retained_count(), 2, "node {i} after the restart");
        let mut s = RawClient::connect(n.local_addr(), V5, &format!("s{i}")).await;
        s.subscribe(1, "rst/+", QoS::AtMostOnce).await;
        let mut got: Vec<(String, Vec<u8>)> = Vec::new();
        for _ in 0..2 {
            let r = s.recv_publish().await;
            let pb = r.publish();
            got.push((pb.topic.to_string(), pb.payload.to_vec()));
        }
        got.sort();
        assert_eq!(
            got,
            [
                ("rst/a".to_string(), b"1".to_vec()),
                ("rst/b".to_string(), b"2".to_vec())
            ]
        );
    }
    stop(nodes).await;
}

// [MQTT-3.1.4-3] across nodes: a client id connecting on node B closes its
// connection on node A with DISCONNECT 0x8E (Session taken over) within a
// second.
#[tokio::test]
async fn takeover_on_another_node_closes_the_old_connection_within_a_second() {
    let nodes = cluster("tko").await;
    let mut old = RawClient::connect(nodes[0].local_addr(), V5, "moving").await;
    let _new = RawClient::connect(nodes[1].local_addr(), V5, "moving").await;
    let got = tokio::time::timeout(Duration::from_secs(1), old.recv())
        .await
        .expect("the old connection is told within a second");
    assert_server_disconnect(&got, ReasonCode::SessionTakenOver);
    stop(nodes).await;
}

// [MQTT-3.1.2-4/5] across nodes: a persistent session's subscriptions move
// with its client id: reconnecting on another node gives Session Present 1
// and messages for the old subscriptions.
#[tokio::test]
async fn subscriptions_move_with_the_client_to_another_node() {
    let nodes = cluster("mv").await;
    let expiry = [Property::SessionExpiryInterval(3600)];
    let mut c = RawClient::connect_props(nodes[0].local_addr(), V5, "mover", true, &expiry).await;
    c.subscribe(1, "mv/t", QoS::AtLeastOnce).await;
    c.disconnect_and_wait().await;
    let mut connect = connect_packet(V5, "mover", false);
    connect.properties = mqtt_codec::Properties::from_slice(&expiry);
    let mut c = RawClient::connect_session(nodes[1].local_addr(), connect, true).await;
    let mut p = RawClient::connect(nodes[2].local_addr(), V5, "p").await;
    p.publish_flow(publish("mv/t", b"follows", QoS::AtLeastOnce, 1, false))
        .await;
    let got = c.recv_publish().await;
    let publish_got = got.publish();
    assert_eq!(
        (publish_got.topic, publish_got.payload),
        ("mv/t", &b"follows"[..])
    );
    c.ack_delivery(&publish_got).await;
    // The node the client left holds no session for it any more.
    eventually("the old node forgot the session", || {
        nodes[0].session_count() == 0
    })
    .await;
    stop(nodes).await;
}

// Issue 18 / MQTT 5.0 section 4.1: the messages queued for a persistent
// session while its client is away are kept by the cluster, not by one
// node: published on node 2 while the session waits on node 0, they reach
// the client when it comes back on node 1, every one, in order.
#[tokio::test]
async fn an_offline_session_gets_its_queue_on_another_node_in_order() {
    let nodes = cluster("oq").await;
    let expiry = [Property::SessionExpiryInterval(3600)];
    let mut c = RawClient::connect_props(nodes[0].local_addr(), V5, "away", true, &expiry).await;
    c.subscribe(1, "oq/t", QoS::AtLeastOnce).await;
    c.disconnect_and_wait().await;
    let mut p = RawClient::connect(nodes[2].local_addr(), V5, "p").await;
    const N: usize = 1000;
    for i in 0..N {
        let payload = i.to_string();
        let pid = (i % 60_000 + 1) as u16;
        assert_eq!(
            p.publish_flow(publish(
                "oq/t",
                payload.as_bytes(),
                QoS::AtLeastOnce,
                pid,
                false
            ))
            .await,
            ReasonCode::Success
        );
    }
    let mut connect = connect_packet(V5, "away", false);
    connect.properties = mqtt_codec::Properties::from_slice(&expiry);
    let mut c = RawClient::connect_session(nodes[1].local_addr(), connect, true).await;
    for i in 0..N {
        let got = c.recv_publish().await;
        let publish_got = got.publish();
        assert_eq!(publish_got.topic, "oq/t");
        assert_eq!(
            std::str::from_utf8(publish_got.payload).unwrap(),
            i.to_string(),
            "message {i} out of order or missing"
        );
        c.ack_delivery(&publish_got).await;
    }
    c.expect_nothing_pending().await;
    stop(nodes).await;
}

// Issue 18 / MQTT 5.0 section 4.4 [MQTT-4.4.0-1]: a session resumed on
// another node sends again what was in flight: the QoS 1 message not
// acknowledged, the PUBREL of a QoS 2 message whose PUBREC arrived (not its
// PUBLISH again), and a QoS 2 PUBLISH not yet acknowledged again with DUP
// and its packet identifier, so the client takes nothing twice.
#[tokio::test]
async fn in_flight_messages_resume_on_another_node() {
    let nodes = cluster("if").await;
    let expiry = [Property::SessionExpiryInterval(3600)];
    let mut c = RawClient::connect_props(nodes[0].local_addr(), V5, "flight", true, &expiry).await;
    c.subscribe(1, "if/#", QoS::ExactlyOnce).await;
    let mut p = RawClient::connect(nodes[2].local_addr(), V5, "p").await;
    p.publish_flow(publish("if/1", b"one", QoS::AtLeastOnce, 1, false))
        .await;
    p.publish_flow(publish("if/2", b"two", QoS::ExactlyOnce, 2, false))
        .await;
    p.publish_flow(publish("if/3", b"three", QoS::ExactlyOnce, 3, false))
        .await;
    let one = c.recv_publish().await;
    assert_eq!(one.publish().payload, b"one");
    let two = c.recv_publish().await;
    let two_pid = match two.publish().qos_pid {
        mqtt_codec::QosPid::ExactlyOnce(pid) => pid,
        q => panic!("expected QoS 2, got {q:?}"),
    };
    let three = c.recv_publish().await;
    let three_pid = match three.publish().qos_pid {
        mqtt_codec::QosPid::ExactlyOnce(pid) => pid,
        q => panic!("expected QoS 2, got {q:?}"),
    };
    c.send(&Packet::PubRec(PubResp::new(two_pid))).await;
    c.expect(&Packet::PubRel(PubResp::new(two_pid))).await;
    // The connection breaks without a DISCONNECT.
    drop(c);
    let mut connect = connect_packet(V5, "flight", false);
    connect.properties = mqtt_codec::Properties::from_slice(&expiry);
    let mut c = RawClient::connect_session(nodes[1].local_addr(), connect, true).await;
    let (mut saw_one, mut saw_rel, mut saw_three) = (false, false, false);
    for _ in 0..3 {
        let got = c.recv().await;
        match got.packet() {
            Packet::Publish(p) if p.payload == b"one" => {
                assert!(!saw_one, "QoS 1 message sent twice on resume");
                saw_one = true;
                c.ack_delivery(&p).await;
            }
            Packet::PubRel(r) if r.pid == two_pid => {
                saw_rel = true;
                c.send(&Packet::PubComp(PubResp::new(two_pid))).await;
            }
            Packet::Publish(p) if p.payload == b"three" => {
                assert!(p.dup, "a QoS 2 PUBLISH sent again must have DUP");
                assert_eq!(
                    p.qos_pid,
                    mqtt_codec::QosPid::ExactlyOnce(three_pid),
                    "sent again under another packet identifier"
                );
                saw_three = true;
                c.ack_delivery(&p).await;
            }
            p => panic!("unexpected on resume: {p:?}"),
        }
    }
    assert!(saw_one && saw_rel && saw_three);
    c.expect_nothing_pending().await;
    stop(nodes).await;
}

/// Receives QoS 1 PUBLISHes until `n` arrived or none comes for a while;
/// acknowledges them when `ack`. Returns the payloads.
async fn collect(c: &mut RawClient, n: usize, ack: bool) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(2), c.try_recv()).await else {
            break;
        };
        let p = r.publish();
        got.push(String::from_utf8(p.payload.to_vec()).unwrap());
        if ack {
            c.ack_delivery(&p).await;
        }
    }
    got
}

// Issue 18 / MQTT 5.0 section 4.8.2: a shared subscription's members on two
// nodes share its messages: each message reaches exactly one of them, in
// the whole cluster (not one per node), and both get some.
#[tokio::test]
async fn shared_subscription_members_on_two_nodes_split_the_messages() {
    let nodes = cluster("sh").await;
    let mut m0 = RawClient::connect(nodes[0].local_addr(), V5, "m0").await;
    m0.subscribe(1, "$share/g/sh/+", QoS::AtLeastOnce).await;
    let mut m1 = RawClient::connect(nodes[1].local_addr(), V5, "m1").await;
    m1.subscribe(1, "$share/g/sh/+", QoS::AtLeastOnce).await;
    let mut p = RawClient::connect(nodes[2].local_addr(), V5, "p").await;
    const N: usize = 200;
    for i in 0..N {
        let qos = if i % 4 == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        p.publish_flow(publish(
            "sh/t",
            i.to_string().as_bytes(),
            qos,
            (i + 1) as u16,
            false,
        ))
        .await;
    }
    let (a, b) = tokio::join!(collect(&mut m0, N, true), collect(&mut m1, N, true));
    let mut all: Vec<usize> = a.iter().chain(&b).map(|s| s.parse().unwrap()).collect();
    all.sort_unstable();
    let twice: Vec<usize> = all
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    all.dedup();
    assert!(
        twice.is_empty(),
        "messages that arrived twice: {twice:?} (member 0 got {a:?}, member 1 got {b:?})"
    );
    assert_eq!(
        all,
        (0..N).collect::<Vec<_>>(),
        "a message reached no member"
    );
    assert!(
        !a.is_empty() && !b.is_empty(),
        "one member got nothing: {} / {}",
        a.len(),
        b.len()
    );
    stop(nodes).await;
}

// Issue 18 / MQTT 5.0 section 4.8.2: the QoS 1 messages a member of a
// shared subscription had not acknowledged when its (clean) session ended
// go to another member, on another node.
#[tokio::test]
async fn a_leaving_members_unacknowledged_messages_go_to_another_node() {
    let nodes = cluster("shl").await;
    let mut m0 = RawClient::connect(nodes[0].local_addr(), V5, "m0").await;
    m0.subscribe(1, "$share/g/shl/t", QoS::AtLeastOnce).await;
    let mut p = RawClient::connect(nodes[2].local_addr(), V5, "p").await;
    const N: usize = 20;
    for i in 0..N {
        p.publish_flow(publish(
            "shl/t",
            i.to_string().as_bytes(),
            QoS::AtLeastOnce,
            (i + 1) as u16,
            false,
        ))
        .await;
    }
    // The only member holds them all, unacknowledged.
    let held = collect(&mut m0, N, false).await;
    assert_eq!(held.len(), N);
    let mut m1 = RawClient::connect(nodes[1].local_addr(), V5, "m1").await;
    m1.subscribe(1, "$share/g/shl/t", QoS::AtLeastOnce).await;
    // The first member's connection breaks: its session ends.
    drop(m0);
    let mut got = collect(&mut m1, N, true).await;
    got.sort_by_key(|s| s.parse::<usize>().unwrap());
    assert_eq!(got, (0..N).map(|i| i.to_string()).collect::<Vec<_>>());
    stop(nodes).await;
}

// Issue 17 / MQTT 5.0 section 3.4.2.1: a message larger than one NATS
// message (max_payload, 1 MiB by default) could reach only this node, so it
// is refused as a whole (PUBACK 0x97 Quota exceeded) and reaches no one;
// the connection goes on.
#[tokio::test]
async fn a_message_too_large_for_nats_is_refused_not_half_delivered() {
    let nodes = cluster("big").await;
    let mut here = RawClient::connect(nodes[0].local_addr(), V5, "here").await;
    here.subscribe(1, "big", QoS::AtLeastOnce).await;
    let mut p = RawClient::connect(nodes[0].local_addr(), V5, "p").await;
    let payload = vec![b'x'; 2 << 20];
    assert_eq!(
        p.publish_flow(publish("big", &payload, QoS::AtLeastOnce, 1, false))
            .await,
        ReasonCode::QuotaExceeded
    );
    here.expect_nothing_pending().await;
    assert_eq!(
        p.publish_flow(publish("big", b"small", QoS::AtLeastOnce, 2, false))
            .await,
        ReasonCode::Success
    );
    stop(nodes).await;
}

/// Connects and reports whether the CONNACK accepted; the client if so.
async fn try_connect(addr: std::net::SocketAddr, id: &str) -> Result<RawClient, ReasonCode> {
    let mut c = RawClient::open(addr, V5).await;
    c.send(&Packet::Connect(connect_packet(V5, id, true))).await;
    let got = c.recv().await;
    match got.packet() {
        Packet::ConnAck(a) if a.reason == ReasonCode::Success => Ok(c),
        Packet::ConnAck(a) => Err(a.reason),
        p => panic!("expected CONNACK, got {p:?}"),
    }
}

/// Whether the connection is still served: a PINGREQ is answered (any
/// DISCONNECT 0x8E before it means it was taken over).
async fn still_connected(c: &mut RawClient) -> bool {
    c.send(&Packet::PingReq).await;
    match tokio::time::timeout(TIMEOUT, c.try_recv()).await {
        Ok(Some(r)) => match r.packet() {
            Packet::PingResp => true,
            Packet::Disconnect(d) => {
                assert_eq!(d.reason, ReasonCode::SessionTakenOver);
                false
            }
            p => panic!("unexpected {p:?}"),
        },
        Ok(None) => false,
        Err(_) => panic!("no answer to PINGREQ"),
    }
}

// Issue 17: of two connects with one client id on two nodes at the same
// moment, exactly one connection survives: either one claim loses the
// compare-and-set on the session record (CONNACK 0x89 Server busy), or the
// later one takes the session over (DISCONNECT 0x8E to the earlier).
#[tokio::test]
async fn simultaneous_connects_leave_exactly_one_connection() {
    let nodes = cluster("sim").await;
    for round in 0..5 {
        let id = format!("twin{round}");
        let (a, b) = tokio::join!(
            try_connect(nodes[0].local_addr(), &id),
            try_connect(nodes[1].local_addr(), &id)
        );
        // Give a takeover its second to arrive, then count the living.
        let mut alive = 0;
        for c in [a, b] {
            match c {
                Ok(mut c) => {
                    let taken = tokio::time::timeout(Duration::from_secs(1), c.try_recv()).await;
                    match taken {
                        // Nothing within a second: ask.
                        Err(_) => alive += usize::from(still_connected(&mut c).await),
                        Ok(Some(r)) => assert_server_disconnect(&r, ReasonCode::SessionTakenOver),
                        Ok(None) => {}
                    }
                }
                Err(reason) => assert_eq!(reason, ReasonCode::ServerBusy, "round {round}"),
            }
        }
        assert_eq!(
            alive, 1,
            "round {round}: connections left with one client id"
        );
    }
    stop(nodes).await;
}

// nats-server before 2.9.21 (Debian 12 ships 2.9.10) can store two writes
// racing with the same expected revision (nats-server issue 4320): a node
// that just lost a client id can still get a save stored after the winner's
// claim. Such a write carries its older claim's epoch: the owner keeps its
// connection and writes its record over it. (Written here directly, as the
// race itself cannot be made to happen on demand.)
#[tokio::test]
async fn a_write_for_an_older_claim_does_not_take_the_client_over() {
    use futures_util::StreamExt;
    use mqtt_broker::cluster::{subject, SessionRecord};
    let nodes = cluster("stale").await;
    // Another client's records first, so the owner's claim has a revision
    // above 1 and an older epoch exists (0 would mean a claim).
    let _other = RawClient::connect(nodes[2].local_addr(), V5, "other").await;
    let mut c = RawClient::connect(nodes[0].local_addr(), V5, "owner").await;
    let js = jetstream().await;
    let kv = js
        .get_key_value(format!("{}_sessions", nodes.prefix.to_ascii_uppercase()))
        .await
        .expect("session bucket");
    let key = subject::key_token("owner");
    // The owner's record, as it is now (its claim, or its save).
    let current = kv
        .entry(&key)
        .await
        .expect("read")
        .expect("the owner's record");
    let owner = SessionRecord::decode(&current.value, current.revision).unwrap();
    assert_eq!(owner.node, "node0");
    assert!(owner.epoch > 1);
    let stale = SessionRecord {
        node: "node1".into(),
        epoch: owner.epoch - 1,
        ..owner.clone()
    };
    let stale_rev = kv.put(&key, stale.encode().into()).await.expect("put");
    // The owner writes over it; the connection stays.
    let mut watch = kv
        .watch_from_revision(&key, stale_rev + 1)
        .await
        .expect("watch");
    let rewritten = loop {
        let e = tokio::time::timeout(TIMEOUT, watch.next())
            .await
            .expect("the owner writes its record again")
            .expect("watch ended")
            .expect("watch error");
        if let Some(r) = SessionRecord::decode(&e.value, e.revision) {
            break r;
        }
    };
    assert_eq!(
        (rewritten.node.as_str(), rewritten.epoch),
        ("node0", owner.epoch)
    );
    assert!(
        still_connected(&mut c).await,
        "the owner's connection was closed"
    );
    // A later claim on another node still takes it over.
    let _moved = RawClient::connect(nodes[1].local_addr(), V5, "owner").await;
    let r = c.recv().await;
    assert_server_disconnect(&r, ReasonCode::SessionTakenOver);
    stop(nodes).await;
}

/// A nats-server of the test's own (one server, JetStream), which the test
/// can stop and start again on the same port and store.
struct OwnNats {
    bin: String,
    port: u16,
    dir: ScratchDir,
    child: Option<std::process::Child>,
}

impl OwnNats {
    fn start() -> OwnNats {
        let bin = std::env::var("MQTT_CLUSTER_NATS_SERVER").expect(
            "MQTT_CLUSTER_NATS_SERVER (the nats-server binary) is not set: run .ci/interop/cluster_test.sh",
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut n = OwnNats {
            bin,
            port,
            dir: ScratchDir::new("nats"),
            child: None,
        };
        n.run();
        n
    }

    fn run(&mut self) {
        let child = std::process::Command::new(&self.bin)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.dir.path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One node on a nats-server of the test's own, `$SYS` every second, with
/// `ack_timeout_ms`; and a client subscribed to its cluster state.
async fn node_on_own_nats(tag: &str, ack_timeout_ms: u64) -> (OwnNats, BrokerHandle, RawClient) {
    let nats = OwnNats::start();
    let mut cfg = node_config(&unique_prefix(tag), 0, &[nats.url()]);
    cfg.sys_interval_secs = 1;
    if let Some(c) = cfg.cluster.as_mut() {
        c.replicas = 1;
        c.ack_timeout_ms = ack_timeout_ms;
    }
    let node = broker_with(cfg).await;
    wait_ready(&node).await;
    let mut sys = RawClient::connect(node.local_addr(), V5, "sys").await;
    sys.subscribe(1, "$SYS/broker/cluster/state", QoS::AtMostOnce)
        .await;
    (nats, node, sys)
}

/// Waits for the next `$SYS/broker/cluster/state` value equal to `want`.
async fn expect_cluster_state(sys: &mut RawClient, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "$SYS/broker/cluster/state never became {want}"
        );
        let got = sys.recv_publish().await;
        let pb = got.publish();
        if pb.topic == "$SYS/broker/cluster/state" && pb.payload == want.as_bytes() {
            return;
        }
    }
}

// Issue 17: without NATS a node keeps serving its own clients at QoS 0,
// never acknowledges a QoS 1/2 message it could lose (the publisher is
// disconnected, MQTT 5 DISCONNECT 0x80, and sends it again later), refuses
// new connections with 0x88 (it cannot tell whether the client id is in use
// elsewhere), says so in `$SYS/broker/cluster/state`, and recovers by
// itself when NATS is back.
#[tokio::test]
async fn without_nats_nothing_is_acknowledged_and_the_node_recovers() {
    let (mut nats, node, mut sys) = node_on_own_nats("out", 1500).await;
    let addr = node.local_addr();
    let mut local = RawClient::connect(addr, V5, "local").await;
    local.subscribe(1, "out/t", QoS::AtMostOnce).await;
    let mut p = RawClient::connect(addr, V5, "p").await;
    assert_eq!(
        p.publish_flow(publish("out/t", b"before", QoS::AtLeastOnce, 1, false))
            .await,
        ReasonCode::Success
    );
    local
        .expect_publish(publish("out/t", b"before", QoS::AtMostOnce, 0, false))
        .await;

    nats.kill();
    expect_cluster_state(&mut sys, "down").await;
    // QoS 0 still reaches this node's subscribers.
    p.publish_flow(publish("out/t", b"local", QoS::AtMostOnce, 0, false))
        .await;
    local
        .expect_publish(publish("out/t", b"local", QoS::AtMostOnce, 0, false))
        .await;
    // QoS 1: no PUBACK; DISCONNECT 0x80 once ack_timeout_ms has passed.
    p.send(&Packet::Publish(publish(
        "out/t",
        b"unsure",
        QoS::AtLeastOnce,
        2,
        false,
    )))
    .await;
    local
        .expect_publish(publish("out/t", b"unsure", QoS::AtMostOnce, 0, false))
        .await;
    p.expect_closed_with(ReasonCode::UnspecifiedError).await;
    // New connections are refused while the client id cannot be claimed.
    assert_eq!(
        try_connect(addr, "newcomer").await.err(),
        Some(ReasonCode::ServerUnavailable)
    );

    nats.run();
    expect_cluster_state(&mut sys, "up").await;
    let mut p = RawClient::connect(addr, V5, "p").await;
    assert_eq!(
        p.publish_flow(publish("out/t", b"after", QoS::AtLeastOnce, 3, false))
            .await,
        ReasonCode::Success
    );
    local
        .expect_publish(publish("out/t", b"after", QoS::AtMostOnce, 0, false))
        .await;
    node.shutdown().await;
}

// A shared subscription made while NATS is away (say, just restarted after
// a lost quorum) is not refused on JetStream's first slow answer: the node
// keeps trying to set the group up until `ack_timeout_ms`, and the SUBACK
// comes once NATS is back, granting QoS 1; the member then gets the group's
// messages.
#[tokio::test]
async fn a_shared_subscription_made_while_nats_is_away_waits_for_it() {
    let (mut nats, node, mut sys) = node_on_own_nats("shaway", 20_000).await;
    let addr = node.local_addr();
    let mut member = RawClient::connect(addr, V5, "member").await;

    nats.kill();
    expect_cluster_state(&mut sys, "down").await;
    let sub = tokio::spawn(async move {
        member
            .subscribe(1, "$share/g/away/+", QoS::AtLeastOnce)
            .await;
        member
    });
    // The outage outlasts one JetStream request (2 s at most, the link's
    // per-request timeout), so the first set-up attempt fails for sure.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(!sub.is_finished(), "SUBACK sent while NATS was away");
    nats.run();
    expect_cluster_state(&mut sys, "up").await;
    let mut member = sub
        .await
        .expect("the SUBACK grants QoS 1 once NATS is back");
    let mut p = RawClient::connect(addr, V5, "p").await;
    assert_eq!(
        p.publish_flow(publish("away/t", b"shared", QoS::AtLeastOnce, 1, false))
            .await,
        ReasonCode::Success
    );
    let got = member.recv_publish().await;
    assert_eq!(got.publish().payload, b"shared");
    node.shutdown().await;
}
