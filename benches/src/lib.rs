//! Benchmarks of the MQTT stack.
//!
//! - `benches/codec.rs`: criterion benchmarks of `mqtt-codec` (run with
//!   `cargo bench -p mqtt-benches`).
//! - `src/bin/mqtt-bench.rs`: a load generator speaking MQTT 3.1.1 to any
//!   broker; its building blocks are in [`load`].
//! - `src/bin/forwarder.rs`: a do-nothing forwarder, the ceiling a broker is
//!   compared with.
//! - `compare.sh`: runs every scenario against each broker and prints a table.

pub mod load;
