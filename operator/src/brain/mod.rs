//! The Brain: gathers evidence about an incident and diagnoses its root
//! cause with deterministic rules. `gather` reads the cluster; `diagnose` is
//! pure (evidence, then one family of rules per kind of signal) and
//! unit-tested per category.

pub mod advisor;
mod diagnose;
pub mod eval;
pub mod events;
mod gather;
pub mod postmortem;
pub mod rollout;
pub mod runbook;
pub mod traces;

pub use diagnose::diagnose;
pub use gather::gather;

use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::{Category, IncidentMemorySpec, SignalKind, SignalObservation, WorkloadRef};
use rollout::TemplateChange;

// The tests (`use super::*`) name what a diagnosis is made of as the Brain's
// own.
#[cfg(test)]
use crate::crd::{ActionType, Diagnosis, EvidenceKind, Hypothesis};
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
    /// The last lines of the failing container, current and previous
    /// instance; empty for scenarios captured before logs were read.
    #[serde(default)]
    pub logs: Vec<ContainerLog>,
    /// The state of the workload itself: its conditions and its
    /// controller's warning events (a Job's, a Deployment's and its
    /// ReplicaSets'). None where it was not read.
    #[serde(default)]
    pub workload: Option<WorkloadFacts>,
    /// The PersistentVolumeClaims the pod references that exist.
    #[serde(default)]
    pub claims: Vec<PersistentVolumeClaim>,
    /// Warning events about those claims, oldest first.
    #[serde(default)]
    pub claim_events: Vec<Event>,
    /// The cluster's StorageClasses; None where they were not read (no
    /// claim to explain, or no right to list them).
    #[serde(default)]
    pub storage_classes: Option<Vec<StorageClass>>,
    /// The node the pod ran on, for node failures.
    #[serde(default)]
    pub node: Option<NodeFacts>,
    /// The workload's pod template, where it has one: where a refused or
    /// never-created pod's fields are written.
    #[serde(default)]
    pub template: Option<PodTemplateSpec>,
    /// For an Alert incident: the category its trigger gives, or the
    /// default. None for other signals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_category: Option<crate::crd::Category>,
    /// For a Metric incident: the category its trigger names, if any.
    #[serde(default)]
    pub metric_category: Option<Category>,
    /// The same problem on other workloads of the namespace, and how each
    /// action fared there (`memory::similar::recall`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub similar: Vec<crate::memory::similar::Recalled>,
}

/// The failing container: the one the signal names, or else the first
/// container of the pod (init containers first) that exited non-zero or
/// waits.
pub(crate) fn failing_container_of(facts: &Facts) -> Option<String> {
    facts
        .observation
        .as_ref()
        .and_then(|o| o.container.clone())
        .or_else(|| failing_container(facts.pod.as_ref()?))
}

/// The first container of a pod (init containers first) that terminated
/// with a non-zero exit code or waits.
pub(crate) fn failing_container(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .find(|cs| {
            let terminated = [&cs.state, &cs.last_state]
                .into_iter()
                .flatten()
                .filter_map(|s| s.terminated.as_ref())
                .any(|t| t.exit_code != 0);
            terminated || cs.state.as_ref().and_then(|s| s.waiting.as_ref()).is_some()
        })
        .map(|cs| cs.name.clone())
}

/// The last lines a container wrote, bounded and redacted where gathered.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ContainerLog {
    pub container: String,
    /// The instance that exited before the current one (`previous=true`).
    pub previous: bool,
    /// Oldest first.
    pub lines: Vec<String>,
}

/// A condition of a Kubernetes object as its controller wrote it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ObjectCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// What the workload's own status says.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WorkloadFacts {
    /// A Job's Failed, a Deployment's Progressing and ReplicaFailure, ...
    #[serde(default)]
    pub conditions: Vec<ObjectCondition>,
    /// The workload's controller, for a Job a CronJob runs: `CronJob/nightly`.
    #[serde(default)]
    pub owner: Option<String>,
    /// For a CronJob: the run (its newest failed Job) the rest of these
    /// facts are of.
    #[serde(default)]
    pub run: Option<String>,
    /// Replicas asked for and ready.
    #[serde(default)]
    pub desired: Option<i32>,
    #[serde(default)]
    pub ready: Option<i32>,
    /// A Job's `backoffLimit`, `activeDeadlineSeconds` and failed pods.
    #[serde(default)]
    pub backoff_limit: Option<i32>,
    #[serde(default)]
    pub active_deadline_seconds: Option<i64>,
    #[serde(default)]
    pub failed: Option<i32>,
    /// Warning events about the workload and the objects its controller
    /// makes (ReplicaSets), oldest first.
    #[serde(default)]
    pub events: Vec<Event>,
}

/// The node a pod ran on.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeFacts {
    pub name: String,
    #[serde(default)]
    pub conditions: Vec<ObjectCondition>,
    /// `key=value:effect` of each taint.
    #[serde(default)]
    pub taints: Vec<String>,
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
        if let Some(spec) = self.template.as_mut().and_then(|t| t.spec.as_mut()) {
            redact_spec(spec);
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
        for l in &mut self.logs {
            l.lines.iter_mut().for_each(in_place);
        }
        let workload_events = self.workload.iter_mut().flat_map(|w| w.events.iter_mut());
        for e in workload_events.chain(self.claim_events.iter_mut()) {
            if let Some(m) = &mut e.message {
                in_place(m);
            }
        }
        let conditions = self
            .workload
            .iter_mut()
            .flat_map(|w| w.conditions.iter_mut())
            .chain(self.node.iter_mut().flat_map(|n| n.conditions.iter_mut()));
        for c in conditions {
            if let Some(m) = &mut c.message {
                in_place(m);
            }
        }
    }
}

/// Removes secrets from the commands, arguments and environment values of
/// a pod's containers.
fn redact_spec(spec: &mut PodSpec) {
    use crate::redact::in_place;
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        for list in [&mut c.command, &mut c.args].into_iter().flatten() {
            list.iter_mut().for_each(in_place);
        }
        for e in c.env.iter_mut().flatten() {
            if let Some(v) = &mut e.value {
                in_place(v);
            }
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
        redact_spec(spec);
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
