//! Turns what a pod's status says into signals. Pure: the pod, the policy's
//! triggers and the time in, signals out. One file per family: the
//! containers' states (`containers.rs`), the pod's conditions
//! (`conditions.rs`) and what its node did to it (`node.rs`).

mod conditions;
mod containers;
mod node;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::jiff::Timestamp;

use crate::crd::{SignalKind, Trigger};

/// One observation of trouble in one pod.
#[derive(Clone, Debug, PartialEq)]
pub struct Signal {
    pub kind: SignalKind,
    /// The pod it was seen in; none for what the operator measures itself
    /// (health checks, event rates, traces).
    pub pod: Option<String>,
    pub container: Option<String>,
    /// The reason Kubernetes gave.
    pub reason: String,
    pub message: String,
    /// When it happened (an OOM kill's finish time), or now for a state
    /// that is still present.
    pub observed_at: Timestamp,
    /// Identity of the observation, so that seeing the same status twice
    /// counts once.
    pub key: String,
    /// A state still present (a crash loop, a pending pod) rather than an
    /// event that happened at `observed_at` (an OOM kill).
    pub ongoing: bool,
}

/// What the Scout found in a pod.
#[derive(Debug, Default, PartialEq)]
pub struct PodReading {
    pub signals: Vec<Signal>,
    /// When a grace period that is running now ends, so the pod is looked at
    /// again then.
    pub recheck_after: Option<Duration>,
}

impl PodReading {
    fn recheck(&mut self, after: Duration) {
        self.recheck_after = Some(self.recheck_after.map_or(after, |r| r.min(after)));
    }
}

fn trigger(triggers: &[Trigger], kind: SignalKind) -> Option<&Trigger> {
    triggers.iter().find(|t| t.type_ == kind)
}

/// The pod being read, with what every family needs of it.
struct Subject<'a> {
    pod: &'a Pod,
    name: &'a str,
    uid: &'a str,
    status: &'a PodStatus,
    triggers: &'a [Trigger],
    now: Timestamp,
}

impl Subject<'_> {
    fn trigger(&self, kind: SignalKind) -> Option<&Trigger> {
        trigger(self.triggers, kind)
    }

    fn signal(&self, kind: SignalKind, reason: &str, message: String, key: String) -> Signal {
        Signal {
            kind,
            pod: Some(self.name.to_string()),
            container: None,
            reason: reason.to_string(),
            message,
            observed_at: self.now,
            key,
            ongoing: true,
        }
    }
}

/// Who controls a pod, as far as a finished pod's fate goes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Controller {
    /// No controller: nothing recreates it.
    None,
    /// A Job: its failed pods are the Job's attempts.
    Job,
    /// A controller that replaces failed pods (a ReplicaSet, a StatefulSet).
    Other,
}

fn controller(pod: &Pod) -> Controller {
    match pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
    {
        None => Controller::None,
        Some(o) if o.kind == "Job" => Controller::Job,
        Some(_) => Controller::Other,
    }
}

/// Pods that are going away or finished are normal churn, never trouble,
/// except for what a finished or deleted pod still tells: its node evicted
/// or lost it, a Job's or a bare pod's container ran out of memory, a bare
/// pod's init container failed for good. A Succeeded pod is never trouble;
/// a Job's pod that failed otherwise is the Job's to report.
pub fn is_churn(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if pod.metadata.deletion_timestamp.is_some() {
        return node::deleted_for_its_node(pod).is_none();
    }
    match phase {
        Some("Succeeded") => true,
        Some("Failed") => {
            !containers::failed_pod_tells(pod, controller(pod)) && !node::lost_to_its_node(pod)
        }
        _ => false,
    }
}

/// Reads the signals of a pod for the kinds the triggers list.
pub fn read_pod(pod: &Pod, triggers: &[Trigger], now: Timestamp) -> PodReading {
    let mut reading = PodReading::default();
    if is_churn(pod) {
        return reading;
    }
    let (Some(name), Some(status)) = (pod.metadata.name.as_deref(), pod.status.as_ref()) else {
        return reading;
    };
    let subject = Subject {
        pod,
        name,
        uid: pod.metadata.uid.as_deref().unwrap_or_default(),
        status,
        triggers,
        now,
    };
    if pod.metadata.deletion_timestamp.is_some() {
        // Deleted for its node (the taint manager, the pod GC): the node's
        // failure is all there is to say.
        node::signals(&subject, &mut reading.signals);
    } else if status.phase.as_deref() == Some("Failed") {
        if !node::signals(&subject, &mut reading.signals) {
            containers::failed_pod_signals(&subject, controller(pod), &mut reading.signals);
        }
    } else {
        let node_failed = node::signals(&subject, &mut reading.signals);
        containers::signals(&subject, &mut reading);
        conditions::signals(&subject, node_failed, &mut reading);
    }
    // Messages quote the pod's status (a scheduler's, a registry's or a
    // kubelet's words); redacted here, before they reach the Incident or an
    // event.
    for s in &mut reading.signals {
        crate::redact::in_place(&mut s.message);
    }
    reading
}

#[cfg(test)]
mod tests;
