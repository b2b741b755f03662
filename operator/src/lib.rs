//! SRE-Space: a Kubernetes operator that detects, diagnoses, remediates and
//! verifies workload incidents within the guardrails of a RemediationPolicy.
//!
//! Each stage is a module that takes only what it uses; `runtime` builds
//! their inputs and starts them. See docs/architecture.md.

pub mod allowlist;
pub mod approve;
pub mod brain;
pub mod cli;
pub mod clock;
pub mod conditions;
pub mod config;
pub mod crd;
pub mod dashboard;
pub mod error;
pub mod fixer;
pub mod github;
pub mod incident;
pub mod jules;
pub mod kafka;
pub mod lease;
pub mod limits;
pub mod links;
pub mod llm;
pub mod logging;
pub mod markdown;
pub mod memory;
pub mod notify;
pub mod policy;
pub mod prometheus;
pub mod publish;
pub mod quantity;
pub mod redact;
pub mod runtime;
pub mod scout;
pub mod smoke;
pub mod telemetry;
#[cfg(test)]
pub mod testing;
pub mod tier3;
pub mod traces;
pub mod workload;

pub use error::{Error, Result};

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "sre-space";
