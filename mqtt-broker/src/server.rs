//! Listening sockets: accept under a connection limit, one task per
//! connection, and an orderly shutdown that tells every client and waits for
//! their tasks to finish.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::broker::BrokerState;
use crate::config::{Config, ListenerConfig};
use crate::connection;
use crate::stats::Stats;

/// A running broker.
pub struct Broker;

/// Controls a running broker: its addresses, its counters, and shutdown.
pub struct BrokerHandle {
    state: Arc<BrokerState>,
    addrs: Vec<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    done: mpsc::Receiver<()>,
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
            let listener = TcpListener::bind(l.bind).await.map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen on {}: {e}", l.bind))
            })?;
            bound.push((listener, Arc::new(l.clone())));
        }
        let state = Arc::new(
            BrokerState::new(config).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
        );
        let (shutdown, shutdown_rx) = watch::channel(false);
        // Each connection task holds a sender; when all are dropped, every
        // connection has finished.
        let (done_tx, done) = mpsc::channel(1);
        let limit = Arc::new(Semaphore::new(state.config.max_connections));
        let mut addrs = Vec::new();
        let mut tasks = Vec::new();
        for (listener, cfg) in bound {
            let addr = listener.local_addr()?;
            addrs.push(addr);
            tracing::info!(%addr, anonymous = cfg.allows_anonymous(), "listening");
            tasks.push(tokio::spawn(accept_loop(
                listener,
                cfg,
                state.clone(),
                limit.clone(),
                shutdown_rx.clone(),
                done_tx.clone(),
            )));
        }
        tasks.push(tokio::spawn(crate::sys::run(state.clone(), shutdown_rx)));
        Ok(BrokerHandle {
            state,
            addrs,
            shutdown,
            tasks,
            done,
        })
    }
}

async fn accept_loop(
    listener: TcpListener,
    cfg: Arc<ListenerConfig>,
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
        if state
            .pending_connects
            .load(std::sync::atomic::Ordering::Relaxed)
            >= state.config.max_pending_connects
        {
            tracing::warn!(%peer, "too many sockets waiting to CONNECT: closing");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let cfg = cfg.clone();
        let shutdown = shutdown.clone();
        let done = done.clone();
        tokio::spawn(async move {
            serve_tcp(stream, peer, state, cfg, shutdown).await;
            drop(permit);
            drop(done);
        });
    }
}

async fn serve_tcp(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<BrokerState>,
    cfg: Arc<ListenerConfig>,
    shutdown: watch::Receiver<bool>,
) {
    connection::serve(stream, peer, state, cfg, shutdown, None).await;
}

impl BrokerHandle {
    /// The address of the first listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.addrs[0]
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

    /// Stops accepting, sends MQTT 5 clients DISCONNECT (0x8B, server
    /// shutting down), closes every connection and waits for them.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        // All accept loops are gone, so only connection tasks hold senders.
        let _ = tokio::time::timeout(Duration::from_secs(10), self.done.recv()).await;
    }
}
