//! The incident state machine: diagnose, plan within the guardrails, record,
//! act, verify, resolve or escalate, remember. Each step is a stage module
//! (`brain`, `fixer`, `memory`); this folder sequences them and writes the
//! Incident's status.

pub mod approval;
mod machine;
mod selection;

use std::sync::Arc;

use kube::Client;
use kube::runtime::reflector::Store;

use crate::clock::Clock;
use crate::config::Config;
use crate::crd::{Incident, RemediationPolicy};
use crate::fixer::claims::WorkloadClaims;
use crate::fixer::ledger::ActionLedger;
use crate::lease::Leadership;
use crate::publish::Publisher;
use crate::scout::measured::Board;
use crate::telemetry::Metrics;
use crate::workload::Workloads;

pub use machine::reconcile;

/// What the incident reconciler reads and writes.
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub workloads: Workloads,
    pub policies: Store<RemediationPolicy>,
    pub incidents: Store<Incident>,
    /// The language model the Brain may consult, if one is configured.
    pub model: Option<(Arc<dyn crate::llm::ChatModel>, crate::llm::LlmConfig)>,
    pub tokens: crate::llm::TokenLedger,
    /// GitHub, as far as the allow-list lets each namespace use it.
    pub github: crate::github::Access,
    pub metrics: Arc<Metrics>,
    /// Whether this replica may act (the Lease is ours).
    pub leadership: Leadership,
    /// The latest readings of the signals the operator measures itself.
    pub board: Board,
    /// Where traces are read from, when a trace store is configured.
    pub traces: Option<Arc<dyn crate::traces::TraceStore>>,
    pub publisher: Publisher,
    /// Actions this process took.
    pub ledger: ActionLedger,
    /// The latest automatic change to each workload, by incident.
    pub claims: WorkloadClaims,
    pub clock: Arc<dyn Clock>,
}
