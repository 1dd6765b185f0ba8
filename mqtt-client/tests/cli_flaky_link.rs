//! `mqtt pub -l` piped to `mqtt sub` through a link that fails (issue 12
//! item 5): both tools reconnect with backoff, resume their sessions (`-c`),
//! resend what was in flight and carry on, so every QoS 1 line arrives and
//! every QoS 2 line arrives exactly once (MQTT 3.1.1 section 4.4, message
//! delivery retry; 4.3.3, QoS 2: exactly once).
//!
//! The link is a proxy written here: each connection through it, while the
//! faults are on, is reset (RST), silently stalled (nothing forwarded, so
//! only keep alive can tell), or slowed and then reset, a second or so after
//! it opens.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;

/// Lines published per run.
const LINES: usize = 200;
/// Faults are injected for this long after the proxy starts; connections
/// opened later are left alone so the run converges.
const FAULTY_FOR: Duration = Duration::from_secs(7);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Pass,
    Delay,
    Stall,
}

#[derive(Default)]
struct Faults {
    connections: AtomicUsize,
    resets: AtomicUsize,
    stalls: AtomicUsize,
    delays: AtomicUsize,
}

/// Copies `from` to `to` as `mode` says: at once, each chunk late, or not at
/// all (data held, the connection left open, no close passed on).
async fn pipe(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(n) if n > 0 => n,
            _ => break,
        };
        if *mode.borrow_and_update() == Mode::Delay {
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        while *mode.borrow_and_update() == Mode::Stall {
            let _ = mode.changed().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    // A stalled link carries no close either: the other side must find
    // out by itself.
    while *mode.borrow_and_update() == Mode::Stall {
        let _ = mode.changed().await;
    }
    let _ = to.shutdown().await;
}

/// One connection: forwards, and (while faults are on) fails in the way its
/// number picks a moment after it opens.
async fn serve(mut client: TcpStream, broker: SocketAddr, start: Instant, faults: Arc<Faults>) {
    let Ok(mut server) = TcpStream::connect(broker).await else {
        return;
    };
    // Closing with SO_LINGER 0 sends RST: a reset, not a clean close.
    #[allow(deprecated)]
    {
        let _ = client.set_linger(Some(Duration::ZERO));
        let _ = server.set_linger(Some(Duration::ZERO));
    }
    let n = faults.connections.fetch_add(1, Ordering::Relaxed);
    let (mode_tx, mode_rx) = watch::channel(Mode::Pass);
    let (cr, cw) = client.split();
    let (sr, sw) = server.split();
    let forward = async {
        tokio::join!(pipe(cr, sw, mode_rx.clone()), pipe(sr, cw, mode_rx));
    };
    let fault = async {
        // Long enough after CONNECT for messages to flow on this connection.
        tokio::time::sleep(Duration::from_millis(900)).await;
        if start.elapsed() >= FAULTY_FOR {
            return std::future::pending().await;
        }
        match n % 4 {
            0 | 1 => {
                faults.resets.fetch_add(1, Ordering::Relaxed);
            }
            2 => {
                // Silent: only the client's keep alive notices.
                faults.stalls.fetch_add(1, Ordering::Relaxed);
                mode_tx.send_replace(Mode::Stall);
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            _ => {
                faults.delays.fetch_add(1, Ordering::Relaxed);
                mode_tx.send_replace(Mode::Delay);
                tokio::time::sleep(Duration::from_millis(800)).await;
            }
        }
    };
    tokio::select! {
        _ = forward => {}
        _ = fault => {}
    }
    // Dropped here: RST to both sides.
}

/// Starts the proxy to `broker`; returns its address and its counters.
async fn proxy(broker: SocketAddr) -> (SocketAddr, Arc<Faults>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let faults = Arc::new(Faults::default());
    let f = faults.clone();
    let start = Instant::now();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve(s, broker, start, f.clone()));
        }
    });
    (addr, faults)
}

fn mqtt(port: u16, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mqtt"));
    c.args(&args[..1])
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k", "2"])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// Runs the publisher and subscriber through the faulty proxy at `qos`;
/// returns every line the subscriber printed and both tools' stderr.
async fn through_a_faulty_link(qos: &str) -> (Vec<String>, String, String) {
    let broker = broker().await;
    let (addr, faults) = proxy(broker.local_addr()).await;
    let port = addr.port();
    let topic = format!("flaky/q{qos}");
    let count = LINES.to_string();
    // QoS 2 stops at exactly LINES lines: a duplicate would push one out.
    // QoS 1 may print duplicates, so it runs until every line is seen.
    let mut sub_args = vec!["sub", "-q", "2", "-c", "-t", &topic];
    let sub_id = format!("S{qos}");
    sub_args.extend(["-i", &sub_id]);
    if qos == "2" {
        sub_args.extend(["-C", &count]);
    }
    let mut sub: Child = mqtt(port, &sub_args).spawn().unwrap();
    until("mqtt sub subscribed", || broker.subscription_count() == 1).await;

    let pub_id = format!("P{qos}");
    let mut publisher = mqtt(
        port,
        &["pub", "-l", "-q", qos, "-c", "-i", &pub_id, "-t", &topic],
    )
    .stdin(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdin = publisher.stdin.take().unwrap();
    let writer = tokio::spawn(async move {
        for i in 0..LINES {
            stdin
                .write_all(format!("line {i}\n").as_bytes())
                .await
                .unwrap();
            // Paced, so that the lines span the faults.
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    });

    let mut lines = Vec::new();
    let mut seen = HashSet::new();
    let mut out = BufReader::new(sub.stdout.take().unwrap()).lines();
    within_for(
        Duration::from_secs(90),
        "every line at the subscriber",
        async {
            while seen.len() < LINES {
                match out.next_line().await.unwrap() {
                    Some(l) => {
                        seen.insert(l.clone());
                        lines.push(l);
                    }
                    None => break,
                }
            }
        },
    )
    .await;
    writer.await.unwrap();
    let published = within_for(
        Duration::from_secs(60),
        "mqtt pub -l to finish",
        publisher.wait_with_output(),
    )
    .await
    .unwrap();
    let pub_err = String::from_utf8_lossy(&published.stderr).into_owned();
    assert!(published.status.success(), "mqtt pub: {pub_err}");
    if qos == "2" {
        // -C: the subscriber exits by itself after LINES lines.
        let status = within("mqtt sub -C to exit", sub.wait()).await.unwrap();
        assert!(status.success(), "mqtt sub exit {status:?}");
    } else {
        sub.kill().await.unwrap();
    }
    let mut sub_err = String::new();
    sub.stderr
        .take()
        .unwrap()
        .read_to_string(&mut sub_err)
        .await
        .unwrap();
    // The faults did happen, every kind.
    assert!(faults.resets.load(Ordering::Relaxed) > 0);
    assert!(faults.stalls.load(Ordering::Relaxed) > 0);
    assert!(faults.delays.load(Ordering::Relaxed) > 0);
    broker.shutdown().await;
    (lines, pub_err, sub_err)
}

/// `--exit-on-disconnect`: the old behaviour, for scripts: the first lost
/// connection ends the tool with an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_on_disconnect_ends_sub_at_the_first_loss() {
    let broker = broker().await;
    let (addr, faults) = proxy(broker.local_addr()).await;
    // The first connection through the proxy is reset.
    let sub = mqtt(addr.port(), &["sub", "-t", "x", "--exit-on-disconnect"])
        .spawn()
        .unwrap();
    let out = within("mqtt sub to exit", sub.wait_with_output())
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("Connection lost"), "{err}");
    assert!(!err.contains("Reconnected"), "{err}");
    assert_eq!(faults.resets.load(Ordering::Relaxed), 1);
    assert_eq!(faults.connections.load(Ordering::Relaxed), 1);
    broker.shutdown().await;
}

fn expected() -> HashSet<String> {
    (0..LINES).map(|i| format!("line {i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_every_line_arrives_through_a_failing_link() {
    let (lines, pub_err, sub_err) = through_a_faulty_link("1").await;
    let got: HashSet<String> = lines.iter().cloned().collect();
    assert_eq!(
        got,
        expected(),
        "pub stderr: {pub_err}\nsub stderr: {sub_err}"
    );
    // The tools said when the link went and came back.
    for err in [&pub_err, &sub_err] {
        assert!(err.contains("Connection lost"), "{err}");
        assert!(err.contains("Reconnected"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_every_line_arrives_exactly_once_through_a_failing_link() {
    let (lines, pub_err, sub_err) = through_a_faulty_link("2").await;
    assert_eq!(
        lines.len(),
        LINES,
        "a line twice or missing; sub stderr: {sub_err}"
    );
    let got: HashSet<String> = lines.iter().cloned().collect();
    assert_eq!(
        got,
        expected(),
        "pub stderr: {pub_err}\nsub stderr: {sub_err}"
    );
    for err in [&pub_err, &sub_err] {
        assert!(err.contains("Connection lost"), "{err}");
        assert!(err.contains("Reconnected"), "{err}");
    }
}
