//! The NATS connection: options from `[cluster]` (servers, credentials,
//! TLS), the streams and buckets the cluster uses (created when missing, on
//! every (re)connection), and whether all of that is usable right now.
//!
//! The `kv` API of async-nats cannot create a bucket on nats-server 2.9 (its
//! account-info reply does not parse), so the buckets' streams are created
//! here directly with the settings a bucket has (`KV_<bucket>`, one message
//! per subject, direct get) and opened with `get_key_value`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use tokio::sync::watch;

use super::Cluster;
use crate::config::ClusterConfig;

/// The connection and what has been set up on it.
pub(super) struct Link {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    /// Subject of QoS 0 messages, without the topic: `<prefix>.v`.
    pub volatile: String,
    /// Subject of QoS 1/2 messages, without the topic: `<prefix>.d`.
    pub durable: String,
    pub messages_stream: String,
    /// Persistent sessions' queues, owners and checkpoints (`journal.rs`).
    pub queues_stream: String,
    pub retained_bucket: String,
    pub sessions_bucket: String,
    pub nodes_bucket: String,
    pub wills_bucket: String,
    /// The buckets, once set up.
    pub retained: tokio::sync::OnceCell<kv::Store>,
    pub sessions: tokio::sync::OnceCell<kv::Store>,
    /// The second connection, with echo (`connect_with_echo`), once a
    /// shared subscription needs it.
    pub echo: tokio::sync::OnceCell<async_nats::Client>,
    /// Heartbeats, one key per node (`liveness.rs`).
    pub nodes: tokio::sync::OnceCell<kv::Store>,
    /// Wills of connected clients, one key per node and client (`wills.rs`).
    pub wills: tokio::sync::OnceCell<kv::Store>,
    /// Connected to NATS (as the client last reported).
    connected: Arc<AtomicBool>,
    /// Connected and the streams are in place.
    ready: AtomicBool,
    /// Bumped on every connect, disconnect and change of `ready`.
    changes: Arc<watch::Sender<u64>>,
}

impl Link {
    pub async fn connect(cfg: &ClusterConfig) -> Result<Link, String> {
        let connected = Arc::new(AtomicBool::new(false));
        let changes = Arc::new(watch::channel(0u64).0);
        let events_tx = changes.clone();
        let flag = connected.clone();
        let node = cfg.node.clone();
        let mut opts = async_nats::ConnectOptions::new()
            .name(format!("mqtt-broker {}", cfg.node))
            // The node routes its own messages itself: NATS need not send
            // them back.
            .no_echo()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .ping_interval(Duration::from_secs(5))
            .reconnect_delay_callback(|attempt| {
                Duration::from_millis((100u64 << attempt.min(5)).min(2000))
            })
            .subscription_capacity(64 * 1024)
            .event_callback(move |event| {
                let flag = flag.clone();
                let events_tx = events_tx.clone();
                let node = node.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            flag.store(true, Ordering::SeqCst);
                            tracing::info!(%node, "cluster: connected to NATS");
                        }
                        async_nats::Event::Disconnected => {
                            flag.store(false, Ordering::SeqCst);
                            tracing::warn!(%node, "cluster: NATS connection lost; reconnecting");
                        }
                        other => tracing::info!(%node, event = %other, "cluster: NATS event"),
                    }
                    events_tx.send_modify(|n| *n += 1);
                }
            });
        opts = credentials(opts, cfg).await?;
        let client = opts
            .connect(cfg.nats.clone())
            .await
            .map_err(|e| format!("[cluster] cannot use the NATS servers {:?}: {e}", cfg.nats))?;
        // One attempt waits this long for its acknowledgement; a message is
        // tried again until `ack_timeout_ms` has passed.
        let attempt = Duration::from_millis(cfg.ack_timeout_ms.clamp(200, 2000));
        let js = jetstream::ContextBuilder::new()
            .timeout(attempt)
            .backpressure_on_inflight(true)
            .max_ack_inflight(cfg.max_outbound)
            .build(client.clone());
        let p = &cfg.subject_prefix;
        let upper = p.to_ascii_uppercase();
        Ok(Link {
            client,
            js,
            volatile: format!("{p}.v"),
            durable: format!("{p}.d"),
            messages_stream: format!("{upper}_MESSAGES"),
            queues_stream: format!("{upper}_QUEUES"),
            retained_bucket: format!("{upper}_retained"),
            sessions_bucket: format!("{upper}_sessions"),
            nodes_bucket: format!("{upper}_nodes"),
            wills_bucket: format!("{upper}_wills"),
            retained: Default::default(),
            sessions: Default::default(),
            echo: Default::default(),
            nodes: Default::default(),
            wills: Default::default(),
            connected,
            ready: AtomicBool::new(false),
            changes,
        })
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && self.connected.load(Ordering::Acquire)
    }

    /// Creates the message stream and the buckets when missing.
    async fn set_up(&self, cfg: &ClusterConfig) -> Result<(), String> {
        let messages = stream::Config {
            name: self.messages_stream.clone(),
            subjects: vec![format!("{}.>", self.durable)],
            max_age: Duration::from_secs(cfg.message_retention_secs),
            max_bytes: cfg.message_stream_max_bytes,
            num_replicas: cfg.replicas,
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            description: Some("MQTT QoS 1/2 messages (mqtt-broker cluster)".into()),
            ..Default::default()
        };
        self.js
            .get_or_create_stream(messages)
            .await
            .map_err(|e| format!("stream {}: {e}", self.messages_stream))?;
        // One value per subject (`journal.rs`): the last write of a
        // message's state, owner or checkpoint is its value.
        let queues = stream::Config {
            name: self.queues_stream.clone(),
            subjects: vec![
                format!("{}.q.>", cfg.subject_prefix),
                format!("{}.o.>", cfg.subject_prefix),
                format!("{}.k.>", cfg.subject_prefix),
            ],
            max_messages_per_subject: 1,
            max_bytes: cfg.message_stream_max_bytes,
            // Full: new writes are refused (their acknowledgements are not
            // sent), never a queued message silently dropped.
            discard: stream::DiscardPolicy::New,
            allow_direct: true,
            num_replicas: cfg.replicas,
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            description: Some("MQTT persistent session queues (mqtt-broker cluster)".into()),
            ..Default::default()
        };
        self.js
            .get_or_create_stream(queues)
            .await
            .map_err(|e| format!("stream {}: {e}", self.queues_stream))?;
        for (bucket, cell) in [
            (&self.retained_bucket, &self.retained),
            (&self.sessions_bucket, &self.sessions),
            (&self.nodes_bucket, &self.nodes),
            (&self.wills_bucket, &self.wills),
        ] {
            let config = stream::Config {
                name: format!("KV_{bucket}"),
                subjects: vec![format!("$KV.{bucket}.>")],
                max_messages_per_subject: 1,
                discard: stream::DiscardPolicy::New,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                num_replicas: cfg.replicas,
                storage: stream::StorageType::File,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            };
            self.js
                .get_or_create_stream(config)
                .await
                .map_err(|e| format!("bucket {bucket}: {e}"))?;
            let store = self
                .js
                .get_key_value(bucket.as_str())
                .await
                .map_err(|e| format!("bucket {bucket}: {e}"))?;
            let _ = cell.set(store);
        }
        Ok(())
    }

    /// Waits (at most `limit`) until the link is ready.
    pub async fn wait_ready(&self, limit: Duration) -> bool {
        let mut events = self.changes.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.is_ready() {
                return true;
            }
            if tokio::time::timeout_at(deadline, events.changed())
                .await
                .is_err()
            {
                return self.is_ready();
            }
        }
    }
}

/// `opts` with the credentials and TLS settings of `[cluster]`.
async fn credentials(
    mut opts: async_nats::ConnectOptions,
    cfg: &ClusterConfig,
) -> Result<async_nats::ConnectOptions, String> {
    if let (Some(u), Some(p)) = (&cfg.user, &cfg.password) {
        opts = opts.user_and_password(u.clone(), p.clone());
    }
    if let Some(t) = &cfg.token {
        opts = opts.token(t.clone());
    }
    if let Some(path) = &cfg.credentials_file {
        opts = opts
            .credentials_file(path)
            .await
            .map_err(|e| format!("[cluster] credentials_file {}: {e}", path.display()))?;
    }
    if let Some(path) = &cfg.nkey_seed_file {
        let seed = std::fs::read_to_string(path)
            .map_err(|e| format!("[cluster] nkey_seed_file {}: {e}", path.display()))?;
        opts = opts.nkey(seed.trim().to_string());
    }
    if let Some(ca) = &cfg.tls_ca_file {
        opts = opts.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&cfg.tls_cert_file, &cfg.tls_key_file) {
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    if cfg.tls_required {
        opts = opts.require_tls(true);
    }
    Ok(opts)
}

/// A second connection to NATS, with echo: shared subscriptions' QoS 0
/// messages arrive through queue subscriptions on it, including those this
/// node published (the main connection never gets its own messages back).
pub(super) async fn connect_with_echo(cfg: &ClusterConfig) -> Result<async_nats::Client, String> {
    let opts = async_nats::ConnectOptions::new()
        .name(format!("mqtt-broker {} (shared subscriptions)", cfg.node))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        .reconnect_delay_callback(|attempt| {
            Duration::from_millis((100u64 << attempt.min(5)).min(2000))
        })
        .subscription_capacity(64 * 1024);
    credentials(opts, cfg)
        .await?
        .connect(cfg.nats.clone())
        .await
        .map_err(|e| format!("[cluster] cannot use the NATS servers {:?}: {e}", cfg.nats))
}

/// Keeps the link ready: sets up the streams after every (re)connection,
/// retrying while JetStream cannot (no quorum yet), and logs the changes.
pub(super) async fn supervise(cluster: Arc<Cluster>, mut shutdown: watch::Receiver<bool>) {
    let link = &cluster.link;
    let mut events = link.changes.subscribe();
    let mut delay = Duration::from_millis(100);
    loop {
        if link.connected.load(Ordering::Acquire) && !link.ready.load(Ordering::Acquire) {
            match link.set_up(&cluster.cfg).await {
                Ok(()) => {
                    // JetStream answered the stream look-ups: it works.
                    cluster.jetstream_stored(true);
                    link.ready.store(true, Ordering::Release);
                    delay = Duration::from_millis(100);
                    tracing::info!(node = %cluster.cfg.node, "cluster: streams ready");
                    link.changes.send_modify(|n| *n += 1);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(node = %cluster.cfg.node, error = %e, "cluster: JetStream not usable yet; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.changed() => return,
                    }
                    delay = (delay * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        }
        if !link.connected.load(Ordering::Acquire) && link.ready.swap(false, Ordering::AcqRel) {
            link.changes.send_modify(|n| *n += 1);
            tracing::warn!(
                node = %cluster.cfg.node,
                "cluster: NATS unreachable; QoS 1/2 publishes and new connections wait for it"
            );
        }
        tokio::select! {
            r = events.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

/// The keys of `kv` matching `pattern` (`>` for all, `node-a.>`), deleted
/// ones included (their entries say so). Read from the stream's subject
/// list: `Store::keys` ends early on nats-server 2.9, whose pending counts
/// for a last-per-subject consumer are not to be trusted.
pub(super) async fn list_keys(kv: &kv::Store, pattern: &str) -> Result<Vec<String>, String> {
    use futures_util::TryStreamExt;
    let subjects: Vec<(String, usize)> = kv
        .stream
        .info_with_subjects(format!("{}{pattern}", kv.prefix))
        .await
        .map_err(|e| e.to_string())?
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(subjects
        .into_iter()
        .filter_map(|(s, _)| s.strip_prefix(kv.prefix.as_str()).map(str::to_string))
        .collect())
}
