//! Which WebSocket crate should carry MQTT in the broker? A smoke
//! comparison of the server side of tokio-tungstenite and fastwebsockets on
//! the broker's pattern: small binary messages in, each written back out.
//!
//!   cargo run --release -- [SECONDS] [PAYLOAD_BYTES]
//!
//! One echo server per crate on 127.0.0.1 (after the same hand-made 101
//! answer), one client per run that writes pre-masked 64-byte binary frames
//! as fast as the socket takes them and counts the echoed bytes. The client
//! does no WebSocket work per frame, so the difference between the rows is
//! the server's framing (read, unmask, frame, write). Runs alternate so a
//! noisy neighbour hits both.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Debug)]
enum Impl {
    Tungstenite,
    Fastwebsockets,
}

/// Reads the upgrade request and answers 101 (no checks: a benchmark).
async fn accept_upgrade(s: &mut TcpStream) {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .unwrap()
        .trim()
        .to_string();
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
    );
    s.write_all(resp.as_bytes()).await.unwrap();
}

async fn serve(which: Impl, listener: TcpListener) {
    loop {
        let (mut s, _) = listener.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        tokio::spawn(async move {
            accept_upgrade(&mut s).await;
            match which {
                Impl::Tungstenite => {
                    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
                    use tokio_tungstenite::tungstenite::Message;
                    let config = WebSocketConfig::default()
                        .read_buffer_size(8 * 1024)
                        .write_buffer_size(0);
                    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                        s,
                        Role::Server,
                        Some(config),
                    )
                    .await;
                    while let Some(Ok(m)) = ws.next().await {
                        if let Message::Binary(b) = m {
                            if ws.send(Message::Binary(b)).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                Impl::Fastwebsockets => {
                    use fastwebsockets::{Frame, OpCode, Role, WebSocket};
                    let mut ws = WebSocket::after_handshake(s, Role::Server);
                    ws.set_auto_pong(true);
                    ws.set_auto_close(true);
                    while let Ok(frame) = ws.read_frame().await {
                        match frame.opcode {
                            OpCode::Binary => {
                                let out = Frame::binary(frame.payload);
                                if ws.write_frame(out).await.is_err() {
                                    break;
                                }
                            }
                            OpCode::Close => break,
                            _ => {}
                        }
                    }
                }
            }
        });
    }
}

/// Writes masked frames for `secs` and returns echoed messages per second.
async fn client(addr: SocketAddr, secs: f64, payload: usize) -> f64 {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(
        b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Protocol: mqtt\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(payload < 126);
    let mut frame = vec![0x82, 0x80 | payload as u8, 1, 2, 3, 4];
    frame.extend((0..payload).map(|i| (i as u8) ^ [1, 2, 3, 4][i % 4]));
    let batch: Vec<u8> = frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * 256)
        .collect();
    let echoed_len = (2 + payload) as u64;
    let (mut rd, mut wr) = s.into_split();
    let received = Arc::new(AtomicU64::new(0));
    let r = received.clone();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 256 * 1024];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
            r.fetch_add(n as u64, Ordering::Relaxed);
        }
    });
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        wr.write_all(&batch).await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let got = received.load(Ordering::Relaxed) / echoed_len;
    drop(wr);
    reader.abort();
    got as f64 / elapsed
}

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: f64 = args.next().map_or(3.0, |s| s.parse().unwrap());
    let payload: usize = args.next().map_or(64, |s| s.parse().unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut addrs = Vec::new();
        for which in [Impl::Tungstenite, Impl::Fastwebsockets] {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push((which, l.local_addr().unwrap()));
            tokio::spawn(serve(which, l));
        }
        for round in 1..=2 {
            for (which, addr) in &addrs {
                let rate = client(*addr, secs, payload).await;
                println!(
                    "round {round} {which:?}: {rate:.0} echoed msg/s ({payload}-byte payloads)"
                );
            }
        }
    });
}
