//! The sources of measured signals: health checks, Kafka event rates and
//! traces. Each follows the policies' triggers of its kind, posts readings
//! to the board, and tells each policy it measures for whether it can, in
//! an availability condition of its own.

pub mod health;
pub mod kafka;
pub mod traces;
