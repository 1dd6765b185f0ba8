//! An MQTT 3.1 / 3.1.1 / 5.0 broker.
//!
//! Start one from code with [`Broker::start`], which binds the listeners of a
//! [`Config`] and returns a [`BrokerHandle`]:
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let broker = mqtt_broker::Broker::start(mqtt_broker::Config::ephemeral()).await?;
//! println!("listening on {}", broker.local_addr());
//! broker.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! A guided tour, in the order a packet travels: `server.rs` accepts,
//! `connection/` reads packets and runs the protocol for one client (its
//! protocol state is `mqtt-proto`'s, shared with the client),
//! `broker.rs` routes messages between sessions using `topic_index.rs` and
//! `retained.rs`, `session.rs` queues and tracks what each client is owed.
//! `docs/ARCHITECTURE.md` has the whole picture.

pub mod acl;
pub mod auth;
pub mod bridge;
mod broker;
#[cfg(feature = "cluster")]
pub mod cluster;
#[cfg(not(feature = "cluster"))]
mod cluster {
    //! Built without the `cluster` feature: no node is ever in a cluster
    //! (`Config::validate` refuses `[cluster]`), so this type has no values.
    use std::sync::Arc;

    use crate::message::Message;

    /// Never constructed without the `cluster` feature.
    pub enum Cluster {}

    impl Cluster {
        pub fn forward(&self, _: &Arc<Message>) -> Option<tokio::sync::oneshot::Receiver<bool>> {
            match *self {}
        }
        pub fn save_session(&self, _: &Arc<str>, _: u32, _: Option<u64>, _: Vec<u8>) {
            match *self {}
        }
        pub fn session_ended(&self, _: &Arc<str>) {
            match *self {}
        }
        pub fn will_gone(&self, _: &str, _: u64) {
            match *self {}
        }
        pub fn records_written(&self) -> tokio::sync::oneshot::Receiver<bool> {
            match *self {}
        }
        pub fn node(&self) -> &str {
            match *self {}
        }
        pub fn fits(&self, _: usize) -> bool {
            match *self {}
        }
        pub fn sys_values(&self) -> Vec<(&'static str, String)> {
            match *self {}
        }
    }
}
pub mod certs;
mod clock;
pub mod config;
mod connection;
pub mod drop_log;
mod fanout;
mod kick;
mod lazy;
mod log;
pub mod logging;
mod message;
pub mod metrics;
pub mod mosquitto_conf;
mod pid_file;
mod retained;
mod route;
pub(crate) mod security;
mod server;
mod session;
mod splice;
pub mod stats;
pub mod store;
mod sys;
mod tls;
mod topic_index;
mod transport;
mod wakeup;
mod ws;

pub use config::{
    ClusterConfig, Config, ListenerConfig, ListenerProtocol, LogFormat, MetricsConfig, QueuePolicy,
};
pub use pid_file::PidFile;
pub use server::{Broker, BrokerHandle};
