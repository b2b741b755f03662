//! The demo business SRE-Space protects: a frontend and three services
//! (quote, policy, user) that call each other over HTTP, publish business
//! events to Kafka and send traces over OTLP, with switches that break them
//! the way production breaks.
//!
//! Everything lives in the library so the binaries are a few lines and the
//! services can be run together in one test process.

pub mod apps;
pub mod events;
pub mod faults;
pub mod metrics;
pub mod model;
pub mod service;
pub mod telemetry;
