//! The signals that judge an action: what the workload shows after it.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::measured::Board;
use super::{Signal, read_pod};
use crate::crd::{ActionType, Incident, Trigger};
use crate::workload::Workloads;

const TEMPLATE_HASH: &str = "pod-template-hash";

/// After `action`, the signals of the incident's kind in the workload's
/// pods, observed after `since`. When the action replaced the pod template
/// (a rollout), pods of older revisions are going away and do not count:
/// the fix is judged on the pods it made. If no new revision rolled out
/// (a merged pull request not applied yet), the old pods still count.
pub fn signals_since(
    workloads: &Workloads,
    board: &Board,
    incident: &Incident,
    triggers: &[Trigger],
    since: Timestamp,
    action: ActionType,
    now: Timestamp,
) -> Vec<Signal> {
    let ns = incident.namespace().unwrap_or_default();
    let target = &incident.spec.target;
    let kind = incident.spec.signal;
    if !kind.is_pod_signal() {
        // Measured by the operator itself: the board knows whether it
        // still fires.
        return board
            .firing(&ns, &target.name, kind)
            .filter(|s| s.observed_at > since)
            .into_iter()
            .collect();
    }
    let rolls_out = matches!(
        action,
        ActionType::RaiseMemoryLimit | ActionType::Rollback | ActionType::RolloutRestart
    );
    let current_hash = (rolls_out && target.kind == crate::crd::WorkloadKind::Deployment)
        .then(|| {
            crate::workload::replicasets_of(&target.name, workloads.replicasets_in(&ns))
                .into_iter()
                .next()
        })
        .flatten()
        .and_then(|rs| rs.metadata.labels?.get(TEMPLATE_HASH).cloned());
    workloads
        .pods_of(&ns, target)
        .iter()
        .filter(|p| {
            current_hash.is_none() || p.labels().get(TEMPLATE_HASH) == current_hash.as_ref()
        })
        .flat_map(|p| read_pod(p, triggers, now).signals)
        .filter(|s| s.kind == kind && s.observed_at > since)
        .collect()
}
