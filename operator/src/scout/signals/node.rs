//! What a pod's node did to it: the kubelet evicted it under node pressure
//! (pkg/kubelet/eviction), or the node stopped reporting and the node
//! lifecycle controller marked the pod not ready, then the taint manager
//! or the pod GC deleted it (pkg/controller/nodelifecycle, tainteviction,
//! podgc). The workload is not to blame for any of these.

use k8s_openapi::api::core::v1::{Pod, PodCondition};

use super::{Signal, Subject};
use crate::crd::SignalKind;

/// The kubelet's `status.reason` for a pod it evicted.
const EVICTED: &str = "Evicted";
/// The node lifecycle controller's `status.reason` for a pod of a node that
/// is gone (`pkg/util/node`).
const NODE_LOST: &str = "NodeLost";

fn disruption(pod: &Pod) -> Option<&PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionTarget" && c.status == "True")
}

/// Whether the kubelet evicted the pod for node pressure, or the node
/// lifecycle controller marked it lost with its node.
pub(super) fn lost_to_its_node(pod: &Pod) -> bool {
    let reason = pod.status.as_ref().and_then(|s| s.reason.as_deref());
    reason == Some(EVICTED) || reason == Some(NODE_LOST)
}

/// The DisruptionTarget condition of a pod deleted because of its node:
/// the taint manager (a NoExecute taint such as `unreachable`) or the pod
/// GC (a node that no longer exists).
pub(super) fn deleted_for_its_node(pod: &Pod) -> Option<&PodCondition> {
    disruption(pod).filter(|c| {
        matches!(
            c.reason.as_deref(),
            Some("DeletionByTaintManager" | "DeletionByPodGC")
        )
    })
}

/// The node, as the pod names it: by name when the spec is at hand, by its
/// address otherwise (the Scout's store keeps no spec).
fn node_of(pod: &Pod) -> String {
    let name = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    let ip = pod.status.as_ref().and_then(|s| s.host_ip.as_deref());
    match (name, ip) {
        (Some(n), _) => format!("node {n}"),
        (None, Some(ip)) => format!("the node at {ip}"),
        (None, None) => "its node".into(),
    }
}

/// The pressure an eviction message names: the resource the node was low
/// on, or the node condition it had.
fn pressure(message: &str) -> Option<String> {
    let after = |prefix: &str| {
        message.split_once(prefix).map(|(_, rest)| {
            rest.split(". ")
                .next()
                .unwrap_or(rest)
                .trim_end_matches('.')
        })
    };
    after("The node was low on resource: ")
        .map(|r| format!("{} pressure", r.trim()))
        .or_else(|| {
            after("The node had condition: ").map(|c| c.trim_matches(['[', ']', ' ']).to_string())
        })
}

/// Adds the node's signals; returns whether the node explains the pod's
/// state (so no other signal blames the workload for it), whether or not
/// the policy triggers on NodeFailure.
pub(super) fn signals(s: &Subject, out: &mut Vec<Signal>) -> bool {
    let Some((reason, message, at)) = node_failure(s) else {
        return false;
    };
    if s.trigger(SignalKind::NodeFailure).is_some() {
        let key = if reason == EVICTED {
            "evicted"
        } else {
            "node-lost"
        };
        out.push(Signal {
            observed_at: at.unwrap_or(s.now),
            // An eviction happened once; a node that stopped reporting is
            // a state that lasts.
            ongoing: reason == "NodeNotReady",
            ..s.signal(
                SignalKind::NodeFailure,
                reason,
                message,
                format!("{}/{key}", s.uid),
            )
        });
    }
    true
}

type Failure = (&'static str, String, Option<k8s_openapi::jiff::Timestamp>);

fn node_failure(s: &Subject) -> Option<Failure> {
    let (pod, name) = (s.pod, s.name);
    let node = node_of(pod);
    let status = s.status;
    let quoted = |m: Option<&str>| m.map(|m| format!(": {}", m.trim())).unwrap_or_default();
    let disrupted_at = disruption(pod)
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0);
    match status.reason.as_deref() {
        Some(EVICTED) => {
            let message = status.message.as_deref();
            let low = message
                .and_then(pressure)
                .map(|p| format!(" under {p}"))
                .unwrap_or_default();
            return Some((
                EVICTED,
                format!(
                    "pod {name} was evicted by the kubelet of {node}{low}{}",
                    quoted(message)
                ),
                disrupted_at,
            ));
        }
        Some(NODE_LOST) => {
            return Some((
                NODE_LOST,
                format!(
                    "pod {name} was lost with {node}{}",
                    quoted(status.message.as_deref())
                ),
                disrupted_at,
            ));
        }
        _ => {}
    }
    if let Some(c) = deleted_for_its_node(pod) {
        let why = match c.reason.as_deref() {
            Some("DeletionByPodGC") => "no longer exists",
            _ => "is tainted NoExecute (as when it stops reporting)",
        };
        return Some((
            "NodeNotReady",
            format!(
                "pod {name} is being deleted because {node} {why}{}",
                quoted(c.message.as_deref())
            ),
            disrupted_at,
        ));
    }
    // The node lifecycle controller sets Ready False on every pod of a node
    // that stopped reporting, and leaves the rest as the kubelet last wrote
    // it: containers ready, ContainersReady True, no reason of the
    // kubelet's (ContainersNotReady, ReadinessGatesNotReady, PodCompleted).
    let conditions = status.conditions.as_deref().unwrap_or_default();
    let ready = conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "False")?;
    let kubelet_wrote = ready.reason.as_deref().is_some_and(|r| !r.is_empty());
    let containers_ready = conditions
        .iter()
        .any(|c| c.type_ == "ContainersReady" && c.status == "True");
    let mut statuses = status.container_statuses.iter().flatten().peekable();
    let all_ready = statuses.peek().is_some() && statuses.all(|c| c.ready);
    if kubelet_wrote || !containers_ready || !all_ready {
        return None;
    }
    let since = ready.last_transition_time.as_ref().map(|t| t.0);
    let when = since.map(|t| format!(" at {t}")).unwrap_or_default();
    Some((
        "NodeNotReady",
        format!(
            "pod {name} was marked not ready{when} while its containers last reported ready: {node} stopped reporting to the API server"
        ),
        since,
    ))
}
