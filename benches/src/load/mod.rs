//! Building blocks of the `mqtt-bench` load generator: a latency histogram,
//! the payload format, loss/duplicate tracking, `/proc` sampling, MQTT
//! helpers over tokio TCP (or WebSocket), the connection storm, a session's
//! resume with its backlog, and the report.

pub mod hist;
pub mod payload;
pub mod proc;
pub mod proto;
pub mod report;
pub mod resume;
pub mod storm;
pub mod track;
pub mod ws;
