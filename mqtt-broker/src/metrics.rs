//! Prometheus metrics (placeholder, filled in below).
