//! SRE-Space: a Kubernetes operator that detects, diagnoses, remediates and
//! verifies workload incidents within the guardrails of a RemediationPolicy.
//!
//! Each stage is a module with its inputs passed in; `controller` only
//! sequences them.

pub mod allowlist;
pub mod approve;
pub mod brain;
pub mod conditions;
pub mod controller;
pub mod crd;
pub mod dashboard;
pub mod error;
pub mod fixer;
pub mod github;
pub mod kafka;
pub mod limits;
pub mod llm;
pub mod logging;
pub mod markdown;
pub mod memory;
pub mod policy;
pub mod quantity;
pub mod redact;
pub mod scout;
pub mod telemetry;
pub mod traces;
pub mod workload;

pub use error::{Error, Result};

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "sre-space";
