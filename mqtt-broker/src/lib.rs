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
//! `connection.rs` reads packets and runs the protocol for one client,
//! `broker.rs` routes messages between sessions using `topic_index.rs` and
//! `retained.rs`, `session.rs` queues and tracks what each client is owed.
//! `docs/ARCHITECTURE.md` has the whole picture.

pub mod acl;
pub mod auth;
mod broker;
pub mod certs;
pub mod config;
mod connection;
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
pub mod stats;
pub mod store;
mod sys;
mod tls;
mod topic_index;
mod transport;

pub use config::{Config, ListenerConfig, LogFormat, MetricsConfig, QueuePolicy};
pub use pid_file::PidFile;
pub use server::{Broker, BrokerHandle};
