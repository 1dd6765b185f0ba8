//! Random interleavings of duplicated packets, reconnections and the
//! resends they cause never lose a QoS 1 message and never deliver a QoS 2
//! message twice [MQTT-3.1.1/5: 4.4.0-1, MQTT-5: 4.3.3-10], for both
//! roles: the sender that keeps its messages in [`Inflight`] (the client)
//! and the one that keeps them in its own list and applies
//! [`OutState::on_reply`] (the broker's session).

use std::collections::{HashMap, VecDeque};

use mqtt_codec::{Pid, QoS, ReasonCode};
use mqtt_proto::{
    IncomingQos2, Inflight, OutState, Outcome, PidAllocator, Qos2Arrival, Reply, Resend, Transition,
};
use proptest::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Pkt {
    Publish {
        pid: Pid,
        qos: QoS,
        dup: bool,
        msg: u32,
    },
    PubAck(Pid),
    PubRec(Pid),
    PubRel(Pid),
    PubComp(Pid, ReasonCode),
}

/// The sending side, either role.
trait Sender {
    fn publish(&mut self, qos: QoS, msg: u32, out: &mut VecDeque<Pkt>) -> bool;
    fn on_packet(&mut self, p: Pkt, out: &mut VecDeque<Pkt>);
    fn reconnect(&mut self, out: &mut VecDeque<Pkt>);
    fn idle(&self) -> bool;
    fn completed(&self) -> &[u32];
}

/// The client's way: messages in `Inflight`.
struct ClientSender {
    pids: PidAllocator,
    window: usize,
    inflight: Inflight<(QoS, u32)>,
    done: Vec<u32>,
}

impl ClientSender {
    fn resend(&mut self, out: &mut VecDeque<Pkt>) {
        while let Some(r) = self.inflight.next_resend(self.window) {
            out.push_back(match r {
                Resend::Publish(pid, &(qos, msg)) => Pkt::Publish {
                    pid,
                    qos,
                    dup: true,
                    msg,
                },
                Resend::PubRel(pid) => Pkt::PubRel(pid),
            });
        }
    }
}

impl Sender for ClientSender {
    fn publish(&mut self, qos: QoS, msg: u32, out: &mut VecDeque<Pkt>) -> bool {
        if !self.inflight.has_room(self.window) {
            return false;
        }
        let inflight = &self.inflight;
        let pid = self.pids.next(|p| inflight.contains(p)).unwrap();
        self.inflight.push(pid, qos, (qos, msg)).unwrap();
        out.push_back(Pkt::Publish {
            pid,
            qos,
            dup: false,
            msg,
        });
        true
    }

    fn on_packet(&mut self, p: Pkt, out: &mut VecDeque<Pkt>) {
        let (pid, reply) = match p {
            Pkt::PubAck(pid) => (pid, Reply::PubAck(ReasonCode::Success)),
            Pkt::PubRec(pid) => (pid, Reply::PubRec(ReasonCode::Success)),
            Pkt::PubComp(pid, r) => (pid, Reply::PubComp(r)),
            other => panic!("sender got {other:?}"),
        };
        match self.inflight.on_reply(pid, reply) {
            Outcome::Completed { item: (_, msg), .. } => self.done.push(msg),
            Outcome::Released { pid, .. } | Outcome::SendPubRel(pid, _) => {
                out.push_back(Pkt::PubRel(pid))
            }
            Outcome::Ignored => {}
        }
        self.resend(out);
    }

    fn reconnect(&mut self, out: &mut VecDeque<Pkt>) {
        assert_eq!(self.inflight.resume(true).count(), 0);
        self.resend(out);
    }

    fn idle(&self) -> bool {
        self.inflight.is_empty()
    }

    fn completed(&self) -> &[u32] {
        &self.done
    }
}

/// The broker's way: its own list of (pid, state, unsent, message), the
/// transitions from the table.
struct BrokerSender {
    pids: PidAllocator,
    window: usize,
    list: VecDeque<(Pid, OutState, bool, QoS, u32)>,
    done: Vec<u32>,
}

impl BrokerSender {
    fn resend(&mut self, out: &mut VecDeque<Pkt>) {
        let sent = self.list.iter().filter(|o| !o.2).count();
        let room = self.window.saturating_sub(sent);
        for o in self.list.iter_mut().filter(|o| o.2).take(room) {
            o.2 = false;
            out.push_back(if o.1.resends_publish() {
                Pkt::Publish {
                    pid: o.0,
                    qos: o.3,
                    dup: true,
                    msg: o.4,
                }
            } else {
                Pkt::PubRel(o.0)
            });
        }
    }
}

impl Sender for BrokerSender {
    fn publish(&mut self, qos: QoS, msg: u32, out: &mut VecDeque<Pkt>) -> bool {
        if self.list.len() >= self.window {
            return false;
        }
        let list = &self.list;
        let pid = self
            .pids
            .next(|p| list.iter().any(|o| o.0.get() == p))
            .unwrap();
        let state = OutState::after_publish(qos).unwrap();
        self.list.push_back((pid, state, false, qos, msg));
        out.push_back(Pkt::Publish {
            pid,
            qos,
            dup: false,
            msg,
        });
        true
    }

    fn on_packet(&mut self, p: Pkt, out: &mut VecDeque<Pkt>) {
        let (pid, reply) = match p {
            Pkt::PubAck(pid) => (pid, Reply::PubAck(ReasonCode::Success)),
            Pkt::PubRec(pid) => (pid, Reply::PubRec(ReasonCode::Success)),
            Pkt::PubComp(pid, r) => (pid, Reply::PubComp(r)),
            other => panic!("sender got {other:?}"),
        };
        let pos = self.list.iter().position(|o| o.0 == pid);
        match OutState::on_reply(pos.map(|i| self.list[i].1), reply) {
            Transition::Done => {
                let o = self.list.remove(pos.unwrap()).unwrap();
                self.done.push(o.4);
            }
            Transition::Release => {
                self.list[pos.unwrap()].1 = OutState::AwaitPubComp;
                out.push_back(Pkt::PubRel(pid));
            }
            Transition::ReleaseAgain | Transition::ReleaseNotFound => {
                out.push_back(Pkt::PubRel(pid))
            }
            Transition::Ignore => {}
        }
        self.resend(out);
    }

    fn reconnect(&mut self, out: &mut VecDeque<Pkt>) {
        for o in self.list.iter_mut() {
            o.2 = true;
        }
        self.resend(out);
    }

    fn idle(&self) -> bool {
        self.list.is_empty()
    }

    fn completed(&self) -> &[u32] {
        &self.done
    }
}

/// The receiving side (the same for both roles): method A.
struct Receiver {
    qos2: IncomingQos2,
    receive_maximum: u16,
    delivered: HashMap<u32, u32>,
}

impl Receiver {
    fn on_packet(&mut self, p: Pkt, out: &mut VecDeque<Pkt>) {
        match p {
            Pkt::Publish {
                pid,
                qos: QoS::AtLeastOnce,
                msg,
                ..
            } => {
                *self.delivered.entry(msg).or_default() += 1;
                out.push_back(Pkt::PubAck(pid));
            }
            Pkt::Publish {
                pid,
                qos: QoS::ExactlyOnce,
                msg,
                ..
            } => {
                match self.qos2.on_publish(pid, self.receive_maximum) {
                    Ok(Qos2Arrival::New) => *self.delivered.entry(msg).or_default() += 1,
                    Ok(Qos2Arrival::Duplicate) => {}
                    Err(e) => panic!("the sender overran the receive maximum: {e:?}"),
                }
                out.push_back(Pkt::PubRec(pid));
            }
            Pkt::PubRel(pid) => out.push_back(Pkt::PubComp(pid, self.qos2.on_pubrel(pid))),
            other => panic!("receiver got {other:?}"),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Publish(bool),
    /// Hand the front packet over: towards the receiver, or back.
    Deliver(bool),
    /// The front packet arrives twice.
    Duplicate(bool),
    /// The connection drops: what was on the wire is lost; the sessions
    /// resume (Session Present 1).
    Reconnect,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any::<bool>().prop_map(Op::Publish),
        6 => any::<bool>().prop_map(Op::Deliver),
        1 => any::<bool>().prop_map(Op::Duplicate),
        1 => Just(Op::Reconnect),
    ]
}

fn run(sender: &mut dyn Sender, window: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut rx = Receiver {
        qos2: IncomingQos2::new(),
        receive_maximum: window as u16,
        delivered: HashMap::new(),
    };
    let (mut to_rx, mut to_tx) = (VecDeque::new(), VecDeque::new());
    let mut published: Vec<(u32, QoS)> = Vec::new();
    let mut step = |op: &Op,
                    published: &mut Vec<(u32, QoS)>,
                    to_rx: &mut VecDeque<Pkt>,
                    to_tx: &mut VecDeque<Pkt>| match *op {
        Op::Publish(two) => {
            let qos = if two {
                QoS::ExactlyOnce
            } else {
                QoS::AtLeastOnce
            };
            let msg = published.len() as u32;
            if sender.publish(qos, msg, to_rx) {
                published.push((msg, qos));
            }
        }
        Op::Deliver(true) => {
            if let Some(p) = to_rx.pop_front() {
                rx.on_packet(p, to_tx);
            }
        }
        Op::Deliver(false) => {
            if let Some(p) = to_tx.pop_front() {
                sender.on_packet(p, to_rx);
            }
        }
        Op::Duplicate(forward) => {
            let q = if forward { &mut *to_rx } else { &mut *to_tx };
            if let Some(&p) = q.front() {
                q.push_front(p);
            }
        }
        Op::Reconnect => {
            to_rx.clear();
            to_tx.clear();
            sender.reconnect(to_rx);
        }
    };
    for o in ops {
        step(o, &mut published, &mut to_rx, &mut to_tx);
    }
    // Then a connection that stays up until everything is acknowledged.
    step(&Op::Reconnect, &mut published, &mut to_rx, &mut to_tx);
    for _ in 0..100_000 {
        if to_rx.is_empty() && to_tx.is_empty() {
            break;
        }
        step(&Op::Deliver(true), &mut published, &mut to_rx, &mut to_tx);
        step(&Op::Deliver(false), &mut published, &mut to_rx, &mut to_tx);
    }
    prop_assert!(sender.idle(), "messages still in flight at the end");
    let mut completed = sender.completed().to_vec();
    completed.sort_unstable();
    prop_assert_eq!(completed, (0..published.len() as u32).collect::<Vec<_>>());
    for (msg, qos) in published {
        let n = rx.delivered.get(&msg).copied().unwrap_or(0);
        match qos {
            QoS::AtLeastOnce => prop_assert!(n >= 1, "QoS 1 message {} lost", msg),
            _ => prop_assert_eq!(n, 1, "QoS 2 message {} delivered {} times", msg, n),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn client_role_never_loses_qos1_nor_repeats_qos2(
        window in 1usize..5,
        ops in proptest::collection::vec(op(), 0..200),
    ) {
        let mut s = ClientSender { pids: PidAllocator::new(), window, inflight: Inflight::new(), done: Vec::new() };
        run(&mut s, window, &ops)?;
    }

    #[test]
    fn broker_role_never_loses_qos1_nor_repeats_qos2(
        window in 1usize..5,
        ops in proptest::collection::vec(op(), 0..200),
    ) {
        let mut s = BrokerSender { pids: PidAllocator::new(), window, list: VecDeque::new(), done: Vec::new() };
        run(&mut s, window, &ops)?;
    }
}
