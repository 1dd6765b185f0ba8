//! Interoperability with an independent client, rumqttc: publishing and
//! subscribing at QoS 0, 1 and 2, retained messages and wills through this
//! broker, with MQTT 3.1.1 (`rumqttc::AsyncClient`) and 5.0
//! (`rumqttc::v5::AsyncClient`). Each rumqttc event loop runs in its own
//! task and hands its events to the test through a channel.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Waits for the first incoming packet `pick` accepts, skipping others.
async fn next<P, T>(
    rx: &mut mpsc::UnboundedReceiver<P>,
    what: &str,
    mut pick: impl FnMut(P) -> Option<T>,
) -> T {
    let found = tokio::time::timeout(TIMEOUT, async {
        while let Some(p) = rx.recv().await {
            if let Some(t) = pick(p) {
                return Some(t);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(t)) => t,
        Ok(None) => panic!("event loop ended while waiting for {what}"),
        Err(_) => panic!("no {what} within {TIMEOUT:?}"),
    }
}

mod v311 {
    use super::*;
    use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS, SubscribeReasonCode};

    pub struct Client {
        pub client: AsyncClient,
        pub rx: mpsc::UnboundedReceiver<Packet>,
        pub task: JoinHandle<()>,
    }

    /// Connects a rumqttc 3.1.1 client and waits for its CONNACK.
    pub async fn connect(addr: SocketAddr, id: &str, will: Option<LastWill>) -> Client {
        let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        opts.set_keep_alive(Duration::from_secs(30));
        if let Some(w) = will {
            opts.set_last_will(w);
        }
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        let (tx, mut rx) = mpsc::unbounded_channel();
        // Poll until the connection ends, forwarding incoming packets.
        let task = tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                if let Event::Incoming(p) = event {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
            }
        });
        next(&mut rx, "CONNACK", |p| {
            matches!(p, Packet::ConnAck(_)).then_some(())
        })
        .await;
        Client { client, rx, task }
    }

    impl Client {
        pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
            self.client.subscribe(filter, qos).await.unwrap();
            let codes = next(&mut self.rx, "SUBACK", |p| match p {
                Packet::SubAck(a) => Some(a.return_codes),
                _ => None,
            })
            .await;
            assert_eq!(codes, [SubscribeReasonCode::Success(qos)]);
        }

        /// Publishes and waits for the end of the QoS flow.
        pub async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
            self.client
                .publish(topic, qos, retain, payload.to_vec())
                .await
                .unwrap();
            match qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => {
                    next(&mut self.rx, "PUBACK", |p| {
                        matches!(p, Packet::PubAck(_)).then_some(())
                    })
                    .await
                }
                QoS::ExactlyOnce => {
                    next(&mut self.rx, "PUBCOMP", |p| {
                        matches!(p, Packet::PubComp(_)).then_some(())
                    })
                    .await
                }
            }
        }

        pub async fn recv_publish(&mut self) -> rumqttc::Publish {
            next(&mut self.rx, "PUBLISH", |p| match p {
                Packet::Publish(p) => Some(p),
                _ => None,
            })
            .await
        }
    }
}

mod v5 {
    use super::*;
    use rumqttc::v5::mqttbytes::v5::{
        LastWill, Packet, PubAckReason, Publish, SubscribeReasonCode,
    };
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};

    pub struct Client {
        pub client: AsyncClient,
        pub rx: mpsc::UnboundedReceiver<Packet>,
        pub task: JoinHandle<()>,
    }

    /// Connects a rumqttc 5.0 client and waits for its CONNACK.
    pub async fn connect(addr: SocketAddr, id: &str, will: Option<LastWill>) -> Client {
        let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        opts.set_keep_alive(Duration::from_secs(30));
        if let Some(w) = will {
            opts.set_last_will(w);
        }
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        let (tx, mut rx) = mpsc::unbounded_channel();
        // Poll until the connection ends, forwarding incoming packets.
        let task = tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                if let Event::Incoming(p) = event {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
            }
        });
        next(&mut rx, "CONNACK", |p| {
            matches!(p, Packet::ConnAck(_)).then_some(())
        })
        .await;
        Client { client, rx, task }
    }

    impl Client {
        pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
            self.client.subscribe(filter, qos).await.unwrap();
            let codes = next(&mut self.rx, "SUBACK", |p| match p {
                Packet::SubAck(a) => Some(a.return_codes),
                _ => None,
            })
            .await;
            assert_eq!(codes, [SubscribeReasonCode::Success(qos)]);
        }

        /// Publishes and waits for the end of the QoS flow.
        pub async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
            self.client
                .publish(topic, qos, retain, payload.to_vec())
                .await
                .unwrap();
            match qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => {
                    let reason = next(&mut self.rx, "PUBACK", |p| match p {
                        Packet::PubAck(a) => Some(a.reason),
                        _ => None,
                    })
                    .await;
                    assert_eq!(reason, PubAckReason::Success);
                }
                QoS::ExactlyOnce => {
                    next(&mut self.rx, "PUBCOMP", |p| {
                        matches!(p, Packet::PubComp(_)).then_some(())
                    })
                    .await
                }
            }
        }

        pub async fn recv_publish(&mut self) -> Publish {
            next(&mut self.rx, "PUBLISH", |p| match p {
                Packet::Publish(p) => Some(p),
                _ => None,
            })
            .await
        }
    }
}

/// rumqttc 3.1.1 clients publish and receive at QoS 0, 1 and 2; each message
/// arrives once, at the QoS of the subscription.
#[tokio::test]
async fn rumqttc_v311_publish_subscribe_each_qos() {
    use rumqttc::QoS;
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut sub = v311::connect(addr, "rumqttc-sub", None).await;
    sub.subscribe("interop/#", QoS::ExactlyOnce).await;
    let mut publisher = v311::connect(addr, "rumqttc-pub", None).await;
    let sent = [
        ("interop/0", QoS::AtMostOnce),
        ("interop/1", QoS::AtLeastOnce),
        ("interop/2", QoS::ExactlyOnce),
    ];
    for (topic, qos) in sent {
        publisher.publish(topic, qos, false, topic.as_bytes()).await;
    }
    let mut got = BTreeSet::new();
    for _ in 0..3 {
        let p = sub.recv_publish().await;
        assert!(!p.retain && !p.dup, "{p:?}");
        assert_eq!(p.payload, p.topic.as_bytes());
        got.insert((p.topic, p.qos as u8));
    }
    let expected: BTreeSet<_> = sent
        .iter()
        .map(|(t, q)| (t.to_string(), *q as u8))
        .collect();
    assert_eq!(got, expected);
    publisher.client.disconnect().await.unwrap();
    sub.client.disconnect().await.unwrap();
    broker.shutdown().await;
}

/// rumqttc 5.0 clients publish and receive at QoS 0, 1 and 2, with a QoS 1
/// subscription downgrading QoS 2.
#[tokio::test]
async fn rumqttc_v5_publish_subscribe_each_qos() {
    use rumqttc::v5::mqttbytes::QoS;
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut sub = v5::connect(addr, "rumqttc5-sub", None).await;
    sub.subscribe("interop/#", QoS::ExactlyOnce).await;
    let mut sub1 = v5::connect(addr, "rumqttc5-sub1", None).await;
    sub1.subscribe("interop/2", QoS::AtLeastOnce).await;
    let mut publisher = v5::connect(addr, "rumqttc5-pub", None).await;
    let sent = [
        ("interop/0", QoS::AtMostOnce),
        ("interop/1", QoS::AtLeastOnce),
        ("interop/2", QoS::ExactlyOnce),
    ];
    for (topic, qos) in sent {
        publisher.publish(topic, qos, false, topic.as_bytes()).await;
    }
    let mut got = BTreeSet::new();
    for _ in 0..3 {
        let p = sub.recv_publish().await;
        assert!(!p.retain && !p.dup, "{p:?}");
        assert_eq!(p.payload, p.topic);
        got.insert((String::from_utf8(p.topic.to_vec()).unwrap(), p.qos as u8));
    }
    let expected: BTreeSet<_> = sent
        .iter()
        .map(|(t, q)| (t.to_string(), *q as u8))
        .collect();
    assert_eq!(got, expected);
    let p = sub1.recv_publish().await;
    assert_eq!((&p.topic[..], p.qos), (&b"interop/2"[..], QoS::AtLeastOnce));
    publisher.client.disconnect().await.unwrap();
    broker.shutdown().await;
}

/// A retained message published by rumqttc reaches a rumqttc client that
/// subscribes later, with RETAIN set, for 3.1.1 and 5.0.
#[tokio::test]
async fn rumqttc_retained_message_reaches_a_later_subscriber() {
    let broker = broker().await;
    let addr = broker.local_addr();
    {
        use rumqttc::QoS;
        let mut publisher = v311::connect(addr, "pub3", None).await;
        publisher
            .publish("retained/v3", QoS::AtLeastOnce, true, b"kept3")
            .await;
        let mut sub = v311::connect(addr, "sub3", None).await;
        sub.subscribe("retained/v3", QoS::AtLeastOnce).await;
        let p = sub.recv_publish().await;
        assert!(p.retain, "{p:?}");
        assert_eq!(
            (p.topic.as_str(), &p.payload[..], p.qos),
            ("retained/v3", &b"kept3"[..], QoS::AtLeastOnce)
        );
    }
    {
        use rumqttc::v5::mqttbytes::QoS;
        let mut publisher = v5::connect(addr, "pub5", None).await;
        publisher
            .publish("retained/v5", QoS::ExactlyOnce, true, b"kept5")
            .await;
        let mut sub = v5::connect(addr, "sub5", None).await;
        sub.subscribe("retained/v5", QoS::ExactlyOnce).await;
        let p = sub.recv_publish().await;
        assert!(p.retain, "{p:?}");
        assert_eq!(
            (&p.topic[..], &p.payload[..], p.qos),
            (&b"retained/v5"[..], &b"kept5"[..], QoS::ExactlyOnce)
        );
    }
    assert_eq!(broker.retained_count(), 2);
    broker.shutdown().await;
}

/// The will of a rumqttc client whose connection drops without DISCONNECT
/// is published to a rumqttc subscriber, for 3.1.1 and 5.0; a clean
/// DISCONNECT publishes none.
#[tokio::test]
async fn rumqttc_will_is_published_when_the_connection_drops() {
    let broker = broker().await;
    let addr = broker.local_addr();
    {
        use rumqttc::{LastWill, QoS};
        let mut watcher = v311::connect(addr, "watch3", None).await;
        watcher.subscribe("will/#", QoS::AtLeastOnce).await;
        let polite = v311::connect(
            addr,
            "polite3",
            Some(LastWill::new("will/polite3", "no", QoS::AtLeastOnce, false)),
        )
        .await;
        polite.client.disconnect().await.unwrap();
        let dying = v311::connect(
            addr,
            "dying3",
            Some(LastWill::new(
                "will/dying3",
                "gone",
                QoS::AtLeastOnce,
                false,
            )),
        )
        .await;
        // Ending the event loop task drops its socket: no DISCONNECT.
        dying.task.abort();
        let p = watcher.recv_publish().await;
        assert_eq!(
            (p.topic.as_str(), &p.payload[..], p.qos),
            ("will/dying3", &b"gone"[..], QoS::AtLeastOnce)
        );
    }
    {
        use rumqttc::v5::mqttbytes::v5::LastWill;
        use rumqttc::v5::mqttbytes::QoS;
        let mut watcher = v5::connect(addr, "watch5", None).await;
        watcher.subscribe("will/#", QoS::AtLeastOnce).await;
        let polite = v5::connect(
            addr,
            "polite5",
            Some(LastWill::new(
                "will/polite5",
                "no",
                QoS::AtLeastOnce,
                false,
                None,
            )),
        )
        .await;
        polite.client.disconnect().await.unwrap();
        let dying = v5::connect(
            addr,
            "dying5",
            Some(LastWill::new(
                "will/dying5",
                "gone",
                QoS::ExactlyOnce,
                false,
                None,
            )),
        )
        .await;
        dying.task.abort();
        let p = watcher.recv_publish().await;
        assert_eq!(
            (&p.topic[..], &p.payload[..], p.qos),
            (&b"will/dying5"[..], &b"gone"[..], QoS::AtLeastOnce)
        );
    }
    broker.shutdown().await;
}
