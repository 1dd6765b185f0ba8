//! Listening sockets: accept under a connection limit, one task per
//! connection, and an orderly shutdown that tells every client and waits for
//! their tasks to finish.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;

use crate::broker::BrokerState;
use crate::config::{Config, ListenerConfig, ListenerProtocol};
use crate::connection;
use crate::stats::Stats;
use crate::store::{Durability, Restored, Store};
use crate::tls::{self, PeerIdentity, TlsListener, WriteThrough};
use crate::ws::{self, WsListener};

/// A running broker.
pub struct Broker;

/// Controls a running broker: its addresses, its counters, and shutdown.
pub struct BrokerHandle {
    state: Arc<BrokerState>,
    addrs: Vec<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    done: mpsc::Receiver<()>,
    /// Every TLS listener's address and swappable configuration.
    tls: Vec<(SocketAddr, Arc<TlsListener>)>,
    /// The metrics listener's address, when there is one.
    metrics_addr: Option<SocketAddr>,
}

impl Broker {
    /// Binds every listener and starts serving. Port 0 picks a free port;
    /// [`BrokerHandle::local_addr`] tells which.
    pub async fn start(config: Config) -> io::Result<BrokerHandle> {
        config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut bound = Vec::new();
        for l in &config.listeners {
            let tls = match &l.tls {
                Some(t) => Some(Arc::new(TlsListener::load(t).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("TLS listener {}: {e}", l.bind),
                    )
                })?)),
                None => None,
            };
            let ws = match l.protocol {
                ListenerProtocol::Websockets => Some(Arc::new(WsListener::new(l)?)),
                ListenerProtocol::Mqtt => None,
            };
            let listener = listen(l.bind, config.listen_backlog).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen on {}: {e}", l.bind))
            })?;
            bound.push((listener, Arc::new(l.clone()), tls, ws));
        }
        let metrics_listener = match &config.metrics {
            Some(m) => Some(TcpListener::bind(m.bind).await.map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("metrics: cannot listen on {}: {e}", m.bind),
                )
            })?),
            None => None,
        };
        let (store, restored) = match config.durability {
            Durability::None => (None, Restored::default()),
            d => {
                let interval = Duration::from_millis(config.sync_interval_ms.max(10));
                let (store, restored) =
                    Store::open(&config.data_dir, d, interval).map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!("data directory {}: {e}", config.data_dir.display()),
                        )
                    })?;
                (Some(store), restored)
            }
        };
        let cluster = connect_cluster(&config).await?;
        let state = Arc::new(
            BrokerState::with_cluster(config, store, cluster)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
        );
        state.restore(restored);
        start_cluster(&state);
        let (shutdown, shutdown_rx) = watch::channel(false);
        // Each connection task holds a sender; when all are dropped, every
        // connection has finished.
        let (done_tx, done) = mpsc::channel(1);
        let limit = Arc::new(Semaphore::new(state.config.max_connections));
        let mut addrs = Vec::new();
        let mut tasks = Vec::new();
        let mut tls_listeners = Vec::new();
        for (listener, cfg, tls, ws) in bound {
            let addr = listener.local_addr()?;
            addrs.push(addr);
            tracing::info!(
                %addr,
                anonymous = cfg.allows_anonymous(),
                tls = tls.is_some(),
                websockets = ws.is_some(),
                "listening"
            );
            // Said on its own line so that an open listener is not missed
            // (a configured listener refuses anonymous clients unless it
            // says otherwise, as in Mosquitto 2).
            if cfg.allows_anonymous() {
                if addr.ip().is_loopback() {
                    tracing::info!(%addr, "listener allows anonymous clients (local only)");
                } else {
                    tracing::warn!(%addr, "listener allows anonymous clients from the network");
                }
            }
            if let Some(t) = &tls {
                tls_listeners.push((addr, t.clone()));
            }
            tasks.push(tokio::spawn(accept_loop(
                listener,
                cfg,
                Layers { tls, ws },
                state.clone(),
                limit.clone(),
                shutdown_rx.clone(),
                done_tx.clone(),
            )));
        }
        let bridges = crate::bridge::start(&state, &shutdown_rx)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        tasks.extend(bridges);
        let mut metrics_addr = None;
        if let Some(listener) = metrics_listener {
            let addr = listener.local_addr()?;
            tracing::info!(%addr, "metrics listening (GET /metrics, /healthz)");
            metrics_addr = Some(addr);
            tasks.push(tokio::spawn(crate::metrics::serve(
                listener,
                state.clone(),
                shutdown_rx.clone(),
            )));
        }
        tasks.push(tokio::spawn(crate::sys::run(
            state.clone(),
            shutdown_rx.clone(),
        )));
        tasks.push(tokio::spawn(crate::drop_log::run(
            state.clone(),
            shutdown_rx,
        )));
        Ok(BrokerHandle {
            state,
            addrs,
            shutdown,
            tasks,
            done,
            tls: tls_listeners,
            metrics_addr,
        })
    }
}

/// What a listener's connections run over before MQTT: TLS (optional),
/// then a WebSocket upgrade (optional).
#[derive(Clone)]
struct Layers {
    tls: Option<Arc<TlsListener>>,
    ws: Option<Arc<WsListener>>,
}

/// A listening socket with `backlog` (`TcpListener::bind` gives 128: a
/// storm of thousands of clients connecting at once overflows it, and every
/// dropped SYN costs its client a one-second retransmission).
fn listen(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted broker can bind again while
    // connections of the previous one are in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

async fn accept_loop(
    listener: TcpListener,
    cfg: Arc<ListenerConfig>,
    layers: Layers,
    state: Arc<BrokerState>,
    limit: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached: closing");
            continue;
        };
        let Some(pending) = connection::PendingConnect::try_take(&state) else {
            tracing::warn!(%peer, "too many sockets waiting to CONNECT: closing");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let done = done.clone();
        // One task type per transport: a plain connection's task is not
        // sized for the TLS handshake, which is several times larger.
        if layers.ws.is_some() {
            let (state, cfg, shutdown, layers) =
                (state.clone(), cfg.clone(), shutdown.clone(), layers.clone());
            tokio::spawn(async move {
                serve_ws(stream, peer, pending, state, cfg, layers, shutdown).await;
                drop(permit);
                drop(done);
            });
            continue;
        }
        match &layers.tls {
            None => {
                let incoming = Box::new(connection::Incoming {
                    stream,
                    peer,
                    broker: state.clone(),
                    listener: cfg.clone(),
                    tls_identity: None,
                    pending,
                });
                // The permit and the sender go with the connection, which
                // may leave this task when it is parked.
                tokio::spawn(connection::serve(incoming, Some((permit, done))))
            }
            Some(tls) => {
                let (state, cfg, shutdown, tls) =
                    (state.clone(), cfg.clone(), shutdown.clone(), tls.clone());
                tokio::spawn(async move {
                    serve_tls(stream, peer, pending, state, cfg, &tls, shutdown).await;
                    drop(permit);
                    drop(done);
                })
            }
        };
    }
}

/// Runs the TLS handshake (bounded by the connect timeout, holding the
/// socket's place among those waiting for CONNECT), then serves the
/// connection over it.
async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    pending: connection::PendingConnect,
    state: Arc<BrokerState>,
    cfg: Arc<ListenerConfig>,
    tls: &TlsListener,
    shutdown: watch::Receiver<bool>,
) {
    let Some((stream, identity)) = tls_handshake(stream, peer, &state, tls, shutdown).await else {
        return;
    };
    connection::serve(
        Box::new(connection::Incoming {
            stream: WriteThrough::new(stream),
            peer,
            broker: state,
            listener: cfg,
            tls_identity: identity,
            pending,
        }),
        None,
    )
    .await;
}

/// A WebSocket listener's connection: TLS first if configured (wss), then
/// the HTTP upgrade and MQTT (`ws.rs`).
async fn serve_ws(
    stream: TcpStream,
    peer: SocketAddr,
    pending: connection::PendingConnect,
    state: Arc<BrokerState>,
    cfg: Arc<ListenerConfig>,
    layers: Layers,
    shutdown: watch::Receiver<bool>,
) {
    let Some(ws) = &layers.ws else { return };
    match &layers.tls {
        None => {
            let accepted = ws::Accepted {
                stream,
                peer,
                pending,
                broker: state,
                listener: cfg,
                tls_identity: None,
            };
            ws::serve(accepted, ws, shutdown).await;
        }
        Some(tls) => {
            let Some((stream, identity)) =
                tls_handshake(stream, peer, &state, tls, shutdown.clone()).await
            else {
                return;
            };
            let accepted = ws::Accepted {
                stream,
                peer,
                pending,
                broker: state,
                listener: cfg,
                tls_identity: identity,
            };
            ws::serve(accepted, ws, shutdown).await;
        }
    }
}

/// The TLS handshake, bounded by the connect timeout, and the client
/// certificate's name when the listener uses it as the user name. `None`:
/// the connection is to be closed (logged and counted here).
async fn tls_handshake(
    stream: TcpStream,
    peer: SocketAddr,
    state: &BrokerState,
    tls: &TlsListener,
    mut shutdown: watch::Receiver<bool>,
) -> Option<(TlsStream<TcpStream>, Option<String>)> {
    let acceptor = tls.acceptor();
    let handshake = tokio::select! {
        r = tokio::time::timeout(state.config.connect_timeout(), acceptor.accept(stream)) => r,
        _ = shutdown.changed() => return None,
    };
    let stream = match handshake {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            state.stats.tls_handshake_failures.inc();
            // Warn: a refused handshake is how a wrong CA, an expired or
            // misnamed certificate or a plain-TCP client shows up.
            tracing::warn!(%peer, reason = %crate::tls::explain(&e), "TLS handshake failed");
            return None;
        }
        Err(_) => {
            state.stats.tls_handshake_failures.inc();
            tracing::warn!(%peer, reason = "not finished within connect_timeout_secs", "TLS handshake failed");
            return None;
        }
    };
    let identity = if tls.identity_as_username() {
        match tls::peer_identity(stream.get_ref().1) {
            PeerIdentity::CommonName(cn) => Some(cn),
            // No certificate (optional ones): the CONNECT user name and
            // password are checked as usual.
            PeerIdentity::None => None,
            PeerIdentity::Unusable => {
                state.stats.auth_failures.inc();
                tracing::warn!(%peer, "client certificate without a Common Name: closing");
                return None;
            }
        }
    } else {
        None
    };
    Some((stream, identity))
}

impl BrokerHandle {
    /// The address of the first listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// The address of the metrics listener (`[metrics] bind`), if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The addresses of every listener, in configuration order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The broker's counters.
    pub fn stats(&self) -> &Stats {
        &self.state.stats
    }

    /// Number of subscriptions held.
    pub fn subscription_count(&self) -> usize {
        self.state.index.read().len()
    }

    /// Number of retained messages held.
    pub fn retained_count(&self) -> usize {
        self.state.retained.read().len()
    }

    /// Number of sessions, connected or not.
    pub fn session_count(&self) -> usize {
        self.state.session_count()
    }

    /// Re-reads what can change without a restart (on SIGHUP): every TLS
    /// listener's certificate, key and CA files, then the password and ACL
    /// files. New connections use the new files; connected clients are not
    /// touched. A TLS listener whose new files are unusable keeps the ones
    /// in force, and the error is logged.
    pub fn reload(&self) {
        for (addr, tls) in &self.tls {
            match tls.reload() {
                Ok(()) => tracing::info!(%addr, "TLS certificates reloaded"),
                Err(e) => tracing::error!(
                    %addr,
                    error = %e,
                    "TLS certificates not reloaded; keeping the ones in force"
                ),
            }
        }
        self.state.reload_security();
    }

    /// Stops accepting, sends MQTT 5 clients DISCONNECT (0x8B, server
    /// shutting down), closes every connection and waits for them.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        // No new connections now; those still opening see the flag.
        self.state.shutdown_sessions();
        // All accept loops are gone, so only connection tasks hold senders.
        let _ = tokio::time::timeout(Duration::from_secs(10), self.done.recv()).await;
        close_cluster(&self.state).await;
        if let Some(store) = &self.state.store {
            store.close().await;
        }
    }

    /// Whether this node is ready to serve as part of its cluster: NATS
    /// connected, the streams in place and the cluster's retained messages
    /// loaded. Always true for a single broker.
    pub fn cluster_ready(&self) -> bool {
        #[cfg(feature = "cluster")]
        if let Some(c) = &self.state.cluster {
            return c.is_ready() && c.retained_loaded();
        }
        true
    }
}

/// Connects to NATS when the configuration has `[cluster]`.
#[cfg(feature = "cluster")]
async fn connect_cluster(config: &Config) -> io::Result<Option<Arc<crate::cluster::Cluster>>> {
    match &config.cluster {
        Some(c) => crate::cluster::Cluster::connect(c)
            .await
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e)),
        None => Ok(None),
    }
}

#[cfg(not(feature = "cluster"))]
async fn connect_cluster(_config: &Config) -> io::Result<Option<Arc<crate::cluster::Cluster>>> {
    // `Config::validate` has refused `[cluster]` in this build.
    Ok(None)
}

#[cfg(feature = "cluster")]
fn start_cluster(state: &Arc<BrokerState>) {
    if let Some(c) = &state.cluster {
        c.start(state);
    }
}

#[cfg(not(feature = "cluster"))]
fn start_cluster(_state: &Arc<BrokerState>) {}

#[cfg(feature = "cluster")]
async fn close_cluster(state: &BrokerState) {
    if let Some(c) = &state.cluster {
        c.close().await;
    }
}

#[cfg(not(feature = "cluster"))]
async fn close_cluster(_state: &BrokerState) {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The listener queues as many completed connections as its backlog
    /// while none is accepted yet (a storm): with `TcpListener::bind`'s 128
    /// the 130th client's SYN would be dropped and its connect would hang
    /// until the timeout below.
    #[test]
    fn listener_queues_its_backlog() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let listener = rt
            .block_on(async { listen("127.0.0.1:0".parse().unwrap(), 400) })
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        for i in 0..300 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                Ok(c) => clients.push(c),
                Err(e) => panic!("connection {i} not queued: {e}"),
            }
        }
        assert_eq!(clients.len(), 300);
    }

    fn future_size<A, B, F: std::future::Future>(_: fn(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// An idle connection's task stays in tokio's 1 KiB cell. A task cell is
    /// the future plus 96 bytes of header and trailer, rounded up to 128
    /// (its alignment); the accept loop's task adds the connection permit
    /// and a sender to `serve` (24 bytes, with its state 32). Every byte of
    /// it is kept for the whole life of every idle connection: 1,152 bytes
    /// before the rarely used queues went behind one pointer each (`lazy`).
    #[test]
    fn idle_connection_task_fits_in_one_kib() {
        let serve = future_size(connection::serve::<TcpStream>);
        assert!(
            serve + 96 + 32 <= 1024,
            "the connection future is {serve} bytes: its task cell outgrows 1 KiB"
        );
    }
}
