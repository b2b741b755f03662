//! The Brain: gathers evidence about an incident and diagnoses its root
//! cause with deterministic rules. `gather` reads the cluster; `diagnose` is
//! pure (evidence, then one family of rules per kind of signal) and
//! unit-tested per category.

pub mod advisor;
mod diagnose;
pub mod eval;
mod gather;
pub mod postmortem;
pub mod rollout;
pub mod traces;

pub use diagnose::diagnose;
pub use gather::gather;

use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::{IncidentMemorySpec, SignalKind, SignalObservation, WorkloadRef};
use rollout::TemplateChange;

// The tests (`use super::*`) name what a diagnosis is made of as the Brain's
// own.
#[cfg(test)]
use crate::crd::{ActionType, Category, Diagnosis, EvidenceKind, Hypothesis};
#[cfg(test)]
use k8s_openapi::jiff::Timestamp;

/// The analyser name recorded in diagnoses made by the rules.
pub const RULES: &str = "rules";

/// The latest rollout of a Deployment: what changed from the previous
/// revision, and whether the failing pod runs the new one.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rollout {
    pub revision: i64,
    pub previous_revision: i64,
    pub at: Option<Time>,
    pub changes: Vec<TemplateChange>,
    /// The failing pod belongs to the newest revision.
    pub failing_pod_is_new: bool,
}

/// A container's memory settings in the workload's template.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ContainerResources {
    pub container: String,
    pub memory_limit: Option<String>,
    pub memory_request: Option<String>,
}

/// Everything the rules look at, gathered from the cluster. Serialisable, so
/// that captured incidents become evaluation scenarios.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Facts {
    pub namespace: String,
    pub target: WorkloadRef,
    pub signal: SignalKind,
    pub observation: Option<SignalObservation>,
    /// The pod the signal came from, if it still exists.
    pub pod: Option<Pod>,
    /// Events about that pod, oldest first.
    pub events: Vec<Event>,
    pub owner_chain: Vec<String>,
    pub rollout: Option<Rollout>,
    pub resources: Vec<ContainerResources>,
    pub memory: Option<IncidentMemorySpec>,
    /// What the traces of the target's service say, for the signals the
    /// operator measures itself; None for pod signals and scenarios
    /// captured before traces were read.
    #[serde(default)]
    pub traces: Option<traces::TraceFindings>,
}

impl Facts {
    /// Removes secrets from every text the facts copied from the cluster:
    /// the pod's status messages (termination messages above all), its
    /// environment and arguments, events, the last signal, the rollout's
    /// changes and the traces' operation names.
    pub fn redact(&mut self) {
        use crate::redact::in_place;
        if let Some(o) = &mut self.observation {
            in_place(&mut o.message);
        }
        if let Some(pod) = &mut self.pod {
            redact_pod(pod);
        }
        for e in &mut self.events {
            if let Some(m) = &mut e.message {
                in_place(m);
            }
        }
        if let Some(r) = &mut self.rollout {
            for c in &mut r.changes {
                in_place(&mut c.from);
                in_place(&mut c.to);
            }
        }
        if let Some(t) = &mut self.traces {
            t.redact();
        }
    }
}

fn redact_pod(pod: &mut Pod) {
    use crate::redact::in_place;
    let opt = |s: &mut Option<String>| {
        if let Some(s) = s {
            in_place(s);
        }
    };
    if let Some(spec) = &mut pod.spec {
        for c in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
        {
            for list in [&mut c.command, &mut c.args].into_iter().flatten() {
                list.iter_mut().for_each(in_place);
            }
            for e in c.env.iter_mut().flatten() {
                opt(&mut e.value);
            }
        }
    }
    let Some(status) = &mut pod.status else {
        return;
    };
    opt(&mut status.message);
    for c in status.conditions.iter_mut().flatten() {
        opt(&mut c.message);
    }
    let statuses = status
        .container_statuses
        .iter_mut()
        .flatten()
        .chain(status.init_container_statuses.iter_mut().flatten())
        .chain(status.ephemeral_container_statuses.iter_mut().flatten());
    for cs in statuses {
        for state in [&mut cs.state, &mut cs.last_state].into_iter().flatten() {
            if let Some(w) = &mut state.waiting {
                opt(&mut w.message);
            }
            if let Some(t) = &mut state.terminated {
                opt(&mut t.message);
            }
        }
    }
}

#[cfg(test)]
mod tests;
