//! The blocking facade from plain threads, with no async runtime of the
//! application's own: publish, subscribe, iterate over messages, and
//! publish from inside the message loop.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::opts;
use mqtt_client::blocking::Client;
use mqtt_client::{ProtocolVersion, QoS, ReasonCode};

const N: usize = 1000;

/// Runs `f` on a plain thread, failing if it takes longer than `limit`.
fn on_thread_within<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("not done within {limit:?} (or the thread panicked)"))
}

fn broker_runtime() -> (tokio::runtime::Runtime, mqtt_broker::BrokerHandle) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let broker = rt.block_on(common::broker());
    (rt, broker)
}

#[test]
fn blocking_client_publishes_from_its_message_loop() {
    let (rt, broker) = broker_runtime();
    let addr = broker.local_addr();
    on_thread_within(Duration::from_secs(60), move || {
        for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
            let mut o = opts(addr, version, "echo");
            o.incoming_capacity = 2;
            let (echo, requests) = Client::connect(o).unwrap();
            assert_eq!(
                echo.subscribe("breq/+", QoS::AtLeastOnce).unwrap(),
                ReasonCode::GrantedQoS1
            );
            // The responder: a plain thread iterating over messages and
            // publishing each answer, waiting for its PUBACK.
            let responder = std::thread::spawn(move || {
                for m in requests.take(N) {
                    let id = m.topic.rsplit('/').next().unwrap().to_owned();
                    echo.publish(format!("bresp/{id}"), m.payload, QoS::AtLeastOnce, false)
                        .unwrap();
                }
                echo.disconnect().unwrap();
            });

            let (asker, answers) = Client::connect(opts(addr, version, "asker")).unwrap();
            asker.subscribe("bresp/+", QoS::AtLeastOnce).unwrap();
            let sender = std::thread::spawn({
                let asker = asker.clone();
                move || {
                    for i in 0..N {
                        let code = asker
                            .publish(format!("breq/{i}"), i.to_string(), QoS::AtLeastOnce, false)
                            .unwrap();
                        assert_eq!(code, ReasonCode::Success);
                    }
                }
            });
            let mut seen = vec![false; N];
            for m in answers.take(N) {
                let i: usize = m.payload_str().unwrap().parse().unwrap();
                assert_eq!(m.topic, format!("bresp/{i}"));
                assert!(!seen[i]);
                seen[i] = true;
            }
            sender.join().unwrap();
            responder.join().unwrap();
            asker.disconnect().unwrap();
        }
    });
    rt.block_on(broker.shutdown());
}

#[test]
fn blocking_messages_end_after_disconnect() {
    let (rt, broker) = broker_runtime();
    let addr = broker.local_addr();
    on_thread_within(Duration::from_secs(30), move || {
        let (c, mut messages) = Client::connect(opts(addr, ProtocolVersion::V5, "b")).unwrap();
        assert!(c.is_connected());
        c.subscribe("self/#", QoS::ExactlyOnce).unwrap();
        assert_eq!(
            c.publish("self/x", "me", QoS::ExactlyOnce, true).unwrap(),
            ReasonCode::Success
        );
        let m = messages.recv().unwrap();
        assert_eq!((m.topic.as_str(), m.payload_str()), ("self/x", Some("me")));
        assert_eq!(m.qos, QoS::ExactlyOnce);
        assert_eq!(c.unsubscribe("self/#").unwrap(), ReasonCode::Success);
        // Clear the retained message.
        c.publish("self/x", "", QoS::AtLeastOnce, true).unwrap();
        c.disconnect().unwrap();
        assert!(!c.is_connected());
        assert_eq!(messages.next(), None);
    });
    assert_eq!(broker.retained_count(), 0);
    rt.block_on(broker.shutdown());
}
