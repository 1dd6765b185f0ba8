//! `forwarder`: a do-nothing MQTT "broker", the ceiling a real broker is
//! measured against.
//!
//! It answers CONNECT with CONNACK and SUBSCRIBE with SUBACK (granting what
//! was asked), and copies each PUBLISH's bytes unchanged to the connections
//! subscribed to exactly that topic: no wildcards, no sessions, no retained
//! messages, no checks. QoS 1 publishes get a PUBACK and QoS 2 a PUBREC (and
//! PUBREL a PUBCOMP) so that QoS 1/2 load does not stall; acknowledgements
//! coming back from subscribers are ignored. PINGREQ gets PINGRESP.
//!
//! Each connection has a reader task and a writer task joined by a bounded
//! channel; the reader forwards everything it decoded from one read as one
//! buffer per destination, so the per-message cost is a copy. A slow
//! subscriber's full channel blocks the publishers that feed it
//! (back-pressure), nothing is dropped.
//!
//! ```text
//! forwarder -p 1885
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::{Bytes, BytesMut};
use clap::Parser;
use mqtt_codec::{check_header, decode_body, Packet, PacketType, ProtocolVersion, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A do-nothing MQTT forwarder (exact topics, no sessions).
#[derive(Parser, Debug)]
#[command(name = "forwarder", version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on.
    #[arg(short = 'p', long, default_value_t = 1883)]
    port: u16,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

type Tx = mpsc::Sender<Bytes>;

/// The subscribers of one topic: connection id and its outgoing channel.
type Subscribers = Arc<[(u64, Tx)]>;

/// Subscribers by exact topic.
#[derive(Default)]
struct State {
    topics: RwLock<HashMap<Box<[u8]>, Subscribers>>,
    next_id: AtomicU64,
}

impl State {
    fn subscribe(&self, topic: &[u8], id: u64, tx: &Tx) {
        let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
        let entry = topics.entry(topic.into()).or_insert_with(|| Arc::from([]));
        if entry.iter().any(|(i, _)| *i == id) {
            return;
        }
        let mut list: Vec<(u64, Tx)> = entry.to_vec();
        list.push((id, tx.clone()));
        *entry = list.into();
    }

    fn unsubscribe_all(&self, topics_of: &[Box<[u8]>], id: u64) {
        let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
        for t in topics_of {
            if let Some(entry) = topics.get_mut(t) {
                let list: Vec<(u64, Tx)> =
                    entry.iter().filter(|(i, _)| *i != id).cloned().collect();
                if list.is_empty() {
                    topics.remove(t);
                } else {
                    *entry = list.into();
                }
            }
        }
    }

    fn lookup(&self, topic: &[u8]) -> Option<Subscribers> {
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        topics.get(topic).cloned()
    }
}

const CHANNEL: usize = 256;
const READ_CHUNK: usize = 64 * 1024;
const MAX_PACKET: u32 = 1024 * 1024;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = args.threads {
        builder.worker_threads(n.max(1));
    }
    let runtime = builder.build().expect("tokio runtime");
    let result: std::io::Result<std::convert::Infallible> = runtime.block_on(async {
        let addr: SocketAddr = tokio::net::lookup_host((args.host.as_str(), args.port))
            .await?
            .next()
            .ok_or_else(|| std::io::Error::other("host not found"))?;
        let listener = TcpListener::bind(addr).await?;
        eprintln!("forwarder listening on {}", listener.local_addr()?);
        let state = Arc::new(State::default());
        // Runs until killed.
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, state.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: keep serving.
                    eprintln!("forwarder: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
    });
    match result {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("forwarder: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn writer(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Bytes>) {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    while let Some(first) = rx.recv().await {
        if rx.is_empty() {
            if wr.write_all(&first).await.is_err() {
                return;
            }
            continue;
        }
        buf.clear();
        buf.extend_from_slice(&first);
        while buf.len() < 4 * READ_CHUNK {
            match rx.try_recv() {
                Ok(b) => buf.extend_from_slice(&b),
                Err(_) => break,
            }
        }
        if wr.write_all(&buf).await.is_err() {
            return;
        }
    }
}

/// The topic of a PUBLISH body (it starts with the length-prefixed name).
fn publish_topic(body: &[u8]) -> Option<&[u8]> {
    let len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    body.get(2..2 + len)
}

async fn connection(stream: TcpStream, state: Arc<State>) {
    let _ = stream.set_nodelay(true);
    let (mut rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL);
    tokio::spawn(writer(wr, rx));
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let mut version = ProtocolVersion::V3_1_1;
    let mut subscribed: Vec<Box<[u8]>> = Vec::new();
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    // Per read: one buffer per destination, in first-seen order.
    let mut outgoing: Vec<(u64, Tx, BytesMut)> = Vec::new();
    let mut own = BytesMut::new();
    let mut closing = false;
    'read: while !closing {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(READ_CHUNK);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let mut last: Option<(Bytes, Subscribers)> = None;
        loop {
            let header = match check_header(&buf, MAX_PACKET) {
                Ok(Status::Complete(h)) if buf.len() >= h.packet_len() => h,
                Ok(_) => break,
                Err(_) => break 'read,
            };
            let packet = buf.split_to(header.packet_len()).freeze();
            let body = &packet[header.header_len..];
            match header.packet_type {
                PacketType::Publish => {
                    let Some(topic) = publish_topic(body) else {
                        break 'read;
                    };
                    let qos = (header.flags >> 1) & 3;
                    if qos > 0 {
                        let at = 2 + topic.len();
                        if let Some(pid) = body.get(at..at + 2) {
                            own.extend_from_slice(&[if qos == 1 { 0x40 } else { 0x50 }, 2]);
                            own.extend_from_slice(pid);
                        }
                    }
                    let subs = match &last {
                        Some((t, subs)) if t[..] == *topic => Some(subs.clone()),
                        _ => {
                            let subs = state.lookup(topic);
                            if let Some(s) = &subs {
                                last = Some((Bytes::copy_from_slice(topic), s.clone()));
                            }
                            subs
                        }
                    };
                    for (sid, stx) in subs.iter().flat_map(|s| s.iter()) {
                        match outgoing.iter_mut().find(|(i, _, _)| i == sid) {
                            Some((_, _, b)) => b.extend_from_slice(&packet),
                            None => {
                                let mut b = BytesMut::with_capacity(READ_CHUNK);
                                b.extend_from_slice(&packet);
                                outgoing.push((*sid, stx.clone(), b));
                            }
                        }
                    }
                }
                PacketType::Connect => {
                    if let Ok(Packet::Connect(c)) =
                        decode_body(header.packet_type, header.flags, body, version)
                    {
                        version = c.protocol;
                    }
                    if version.is_v5() {
                        // Session present 0, success, no properties.
                        own.extend_from_slice(&[0x20, 3, 0, 0, 0]);
                    } else {
                        own.extend_from_slice(&[0x20, 2, 0, 0]);
                    }
                }
                PacketType::Subscribe => {
                    let Ok(Packet::Subscribe(s)) =
                        decode_body(header.packet_type, header.flags, body, version)
                    else {
                        break 'read;
                    };
                    let codes: Vec<u8> = s
                        .filters
                        .iter()
                        .map(|f| {
                            state.subscribe(f.filter.as_bytes(), id, &tx);
                            subscribed.push(f.filter.as_bytes().into());
                            f.options.qos.as_u8()
                        })
                        .collect();
                    let props = usize::from(version.is_v5());
                    let [hi, lo] = s.pid.get().to_be_bytes();
                    own.extend_from_slice(&[0x90, (2 + props + codes.len()) as u8, hi, lo]);
                    if props == 1 {
                        own.extend_from_slice(&[0]);
                    }
                    own.extend_from_slice(&codes);
                    // Later publishes may now go to this subscriber too.
                    last = None;
                }
                PacketType::PubRel => {
                    if let Some(pid) = body.get(..2) {
                        own.extend_from_slice(&[0x70, 2]);
                        own.extend_from_slice(pid);
                    }
                }
                PacketType::PingReq => own.extend_from_slice(&[0xd0, 0]),
                PacketType::Disconnect => {
                    closing = true;
                    break;
                }
                _ => {}
            }
        }
        for (_, stx, b) in outgoing.drain(..) {
            // A closed subscriber is simply skipped.
            let _ = stx.send(b.freeze()).await;
        }
        if !own.is_empty() && tx.send(own.split().freeze()).await.is_err() {
            break;
        }
    }
    state.unsubscribe_all(&subscribed, id);
}
