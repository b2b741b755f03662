//! Taking actions. An action is first *prepared*: its target and the values
//! it sets are fixed and written into the Incident before anything changes.
//! *Executing* it is then idempotent: replaying a recorded action (after a
//! crash between acting and recording the result) changes nothing more.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Container, Pod, PodTemplateSpec};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::core::Status;
use kube::{Api, Client};
use sha2::{Digest, Sha256};

use super::Fence;
use crate::crd::{
    ActionRecord, ActionState, ActionStep, ActionType, Incident, MemoryRaise, Precondition,
    SignalObservation, WorkloadKind, WorkloadRef,
};
use crate::quantity::{format_bytes_within, parse_bytes};
use crate::workload::{owner_of_pod, pod_template, replicasets_of, revision};
use crate::{FIELD_MANAGER, Result};

/// The annotation a rollout restart sets on the pod template.
pub const RESTART_ANNOTATION: &str = "sre.space/restarted-by";

/// What preparing found: the record's target fields, or why the action
/// cannot be taken at all.
pub struct Prepared {
    pub target: Option<WorkloadRef>,
    pub target_uid: Option<String>,
    pub container: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub detail: String,
    /// Set when the action cannot be taken; the record is Failed with it.
    pub impossible: Option<String>,
    /// What the workload looked like, for the check before acting.
    pub precondition: Option<Precondition>,
}

impl Prepared {
    fn new(detail: String) -> Self {
        Self {
            target: None,
            target_uid: None,
            container: None,
            from: None,
            to: None,
            detail,
            impossible: None,
            precondition: None,
        }
    }
    fn impossible(reason: String) -> Self {
        Self {
            impossible: Some(reason.clone()),
            ..Self::new(reason)
        }
    }
}

/// Computes the new memory limit: raised by the step's percentage, by at
/// least its minimum increase, never above its cap.
pub fn raised_limit(
    current: u64,
    percent: i32,
    min_increase: Option<u64>,
    cap: u64,
) -> Option<u64> {
    if current >= cap {
        return None;
    }
    // In u128, so that no limit, percentage or step can overflow.
    let current = u128::from(current);
    let by_percent = current + current * u128::from(percent.max(0).unsigned_abs()) / 100;
    let by_step = current + u128::from(min_increase.unwrap_or(0));
    // At least a byte more: a raise that rounds to nothing would be
    // recorded as done and change nothing.
    let raised = by_percent.max(by_step).max(current + 1);
    Some(u64::try_from(raised.min(u128::from(cap))).unwrap_or(cap))
}

/// Fixes what an action will do.
pub async fn prepare(client: &Client, incident: &Incident, step: &ActionStep) -> Result<Prepared> {
    let ns = incident.metadata.namespace.clone().unwrap_or_default();
    let target = &incident.spec.target;
    let signal = incident.status.as_ref().and_then(|s| s.last_signal.clone());
    Ok(match step.type_ {
        ActionType::RestartPod => prepare_restart_pod(client, &ns, target, signal.as_ref()).await?,
        ActionType::RolloutRestart => match super::unfit(step.type_, target.kind) {
            Some(why) => Prepared::impossible(format!("{target} {why}")),
            None => Prepared {
                target: Some(target.clone()),
                ..Prepared::new(format!("restart every pod of {target} by a rolling update"))
            },
        },
        ActionType::Rollback => prepare_rollback(client, &ns, target).await?,
        ActionType::Scale => prepare_scale(client, &ns, target, step).await?,
        ActionType::RaiseMemoryLimit => {
            prepare_raise_memory_limit(client, &ns, target, step, signal.as_ref()).await?
        }
        ActionType::Escalate => Prepared::new("hand the problem to people".into()),
    })
}

async fn prepare_restart_pod(
    client: &Client,
    ns: &str,
    target: &WorkloadRef,
    signal: Option<&SignalObservation>,
) -> Result<Prepared> {
    let Some(pod_name) = signal.and_then(|s| s.pod.clone()) else {
        return Ok(Prepared::impossible(
            "the signal names no pod to restart".into(),
        ));
    };
    Ok(
        match Api::<Pod>::namespaced(client.clone(), ns)
            .get_opt(&pod_name)
            .await?
        {
            Some(pod) if pod.metadata.deletion_timestamp.is_none() => {
                let siblings = pods_of_workload(client, ns, target).await?;
                if let Some(why) = restart_refusal(&pod, target, &siblings) {
                    return Ok(Prepared::impossible(why));
                }
                Prepared {
                    target: Some(WorkloadRef {
                        kind: WorkloadKind::Pod,
                        name: pod_name.clone(),
                    }),
                    target_uid: pod.metadata.uid.clone(),
                    ..Prepared::new(format!(
                        "evict pod {pod_name} so that its controller replaces it"
                    ))
                }
            }
            _ => Prepared::impossible(format!("pod {pod_name} is already gone")),
        },
    )
}

async fn prepare_rollback(client: &Client, ns: &str, target: &WorkloadRef) -> Result<Prepared> {
    if target.kind != WorkloadKind::Deployment {
        return Ok(Prepared::impossible(format!(
            "{target} is not a Deployment; only Deployments roll back"
        )));
    }
    let Some(deployment) = Api::<Deployment>::namespaced(client.clone(), ns)
        .get_opt(&target.name)
        .await?
    else {
        return Ok(Prepared::impossible(format!("{target} is gone")));
    };
    let all = Api::<ReplicaSet>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    let owned = replicasets_of(&target.name, all.items);
    Ok(match owned.as_slice() {
        [current, previous, ..] => {
            let (from, to) = (
                revision(current).unwrap_or(0),
                revision(previous).unwrap_or(0),
            );
            Prepared {
                target: Some(target.clone()),
                target_uid: previous.metadata.uid.clone(),
                from: Some(from.to_string()),
                to: Some(to.to_string()),
                precondition: Some(Precondition {
                    generation: deployment.metadata.generation,
                    template_hash: Some(template_hash(&deployment.spec.template)),
                }),
                ..Prepared::new(format!(
                    "roll {target} back from revision {from} to revision {to}"
                ))
            }
        }
        _ => Prepared::impossible(format!("{target} has no previous revision to roll back to")),
    })
}

async fn prepare_scale(
    client: &Client,
    ns: &str,
    target: &WorkloadRef,
    step: &ActionStep,
) -> Result<Prepared> {
    let max = step.max_replicas.unwrap_or(1);
    let current = current_replicas(client, ns, target).await?;
    Ok(match current {
        None => Prepared::impossible(format!("{target} has no replica count to scale")),
        Some(n) if n >= max => {
            Prepared::impossible(format!("{target} already runs {n} replicas, the maximum"))
        }
        Some(n) => {
            let to = n.saturating_mul(2).max(n.saturating_add(1)).min(max);
            Prepared {
                target: Some(target.clone()),
                from: Some(n.to_string()),
                to: Some(to.to_string()),
                ..Prepared::new(format!("scale {target} from {n} to {to} replicas"))
            }
        }
    })
}

async fn prepare_raise_memory_limit(
    client: &Client,
    ns: &str,
    target: &WorkloadRef,
    step: &ActionStep,
    signal: Option<&SignalObservation>,
) -> Result<Prepared> {
    let Some(raise) = &step.memory else {
        return Ok(Prepared::impossible(
            "the step has no memory settings".into(),
        ));
    };
    if target.kind == WorkloadKind::Pod {
        return prepare_resize_pod(client, ns, target, raise, signal).await;
    }
    if let Some(why) = super::unfit(ActionType::RaiseMemoryLimit, target.kind) {
        return Ok(Prepared::impossible(format!("{target} {why}")));
    }
    let Some(template) = pod_template(client, ns, target).await? else {
        return Ok(Prepared::impossible(format!(
            "{target} has no pod template to change"
        )));
    };
    let containers = template.spec.map(|s| s.containers).unwrap_or_default();
    let Some(container) = chosen(&containers, signal) else {
        return Ok(Prepared::impossible(format!("{target} has no containers")));
    };
    Ok(match planned_raise(container, target, raise) {
        Err(why) => Prepared::impossible(why),
        Ok((from, to)) => Prepared {
            target: Some(target.clone()),
            container: Some(container.name.clone()),
            from: Some(from.clone()),
            to: Some(to.clone()),
            ..Prepared::new(format!(
                "raise the memory limit of container {} of {target} from {from} to {to} (cap {})",
                container.name, raise.max
            ))
        },
    })
}

/// The container the signal names, or the first.
fn chosen<'a>(
    containers: &'a [Container],
    signal: Option<&SignalObservation>,
) -> Option<&'a Container> {
    let wanted = signal.and_then(|s| s.container.as_ref());
    containers
        .iter()
        .find(|c| Some(&c.name) == wanted)
        .or(containers.first())
}

/// A container's memory limit or request, as written.
fn memory(c: &Container, limit: bool) -> Option<String> {
    let r = c.resources.as_ref()?;
    let values = if limit {
        r.limits.as_ref()
    } else {
        r.requests.as_ref()
    };
    values?.get("memory").map(|q| q.0.clone())
}

/// The memory limit a raise sets on `container`, from and to, or why there
/// is none to set.
fn planned_raise(
    container: &Container,
    target: &WorkloadRef,
    raise: &MemoryRaise,
) -> std::result::Result<(String, String), String> {
    let limit = memory(container, true);
    let current = match limit.as_deref().map(parse_bytes) {
        Some(Ok(current)) => current,
        Some(Err(e)) => {
            return Err(format!(
                "the memory limit of container {} of {target}: {e}",
                container.name
            ));
        }
        None => {
            return Err(format!(
                "container {} of {target} has no memory limit to raise",
                container.name
            ));
        }
    };
    let cap = parse_bytes(&raise.max).map_err(|e| format!("memory.max: {e}"))?;
    let min = raise
        .min_increase
        .as_deref()
        .map(parse_bytes)
        .transpose()
        .map_err(|e| format!("memory.minIncrease: {e}"))?;
    match raised_limit(current, raise.increase_percent, min, cap) {
        None => Err(format!(
            "container {} of {target} is already at {} of memory, the policy's cap of {}",
            container.name,
            limit.clone().unwrap_or_default(),
            raise.max
        )),
        Some(new) => Ok((limit.unwrap_or_default(), format_bytes_within(new, cap))),
    }
}

/// A bare pod has no template: its container's memory is raised in place,
/// through the `pods/resize` subresource, where the pod allows it.
async fn prepare_resize_pod(
    client: &Client,
    ns: &str,
    target: &WorkloadRef,
    raise: &MemoryRaise,
    signal: Option<&SignalObservation>,
) -> Result<Prepared> {
    let pod = Api::<Pod>::namespaced(client.clone(), ns)
        .get_opt(&target.name)
        .await?
        .filter(|p| p.metadata.deletion_timestamp.is_none());
    let Some(pod) = pod else {
        return Ok(Prepared::impossible(format!(
            "pod {} is gone: there is nothing to resize",
            target.name
        )));
    };
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let Some(container) = chosen(containers, signal) else {
        return Ok(Prepared::impossible(format!("{target} has no containers")));
    };
    if let Some(why) = resize_refusal(&pod, &container.name) {
        return Ok(Prepared::impossible(why));
    }
    Ok(match planned_raise(container, target, raise) {
        Err(why) => Prepared::impossible(why),
        Ok((from, to)) => Prepared {
            target: Some(target.clone()),
            target_uid: pod.metadata.uid.clone(),
            container: Some(container.name.clone()),
            from: Some(from.clone()),
            to: Some(to.clone()),
            ..Prepared::new(format!(
                "resize container {} of {target} in place: memory limit from {from} to {to} (cap {})",
                container.name, raise.max
            ))
        },
    })
}

/// Why the memory of `container` cannot be resized in place, if it cannot:
/// its resizePolicy restarts the container for a memory change and the
/// pod's restartPolicy is Never (the API server refuses that resize), or
/// the kubelet found the pod's last resize infeasible on its node (the
/// `PodResizePending` condition with reason `Infeasible`, or the older
/// `status.resize`), so the node has no room for more.
pub fn resize_refusal(pod: &Pod, container: &str) -> Option<String> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let spec = pod.spec.as_ref();
    let restarts_for_memory = spec
        .and_then(|s| s.containers.iter().find(|c| c.name == container))
        .and_then(|c| c.resize_policy.as_ref())
        .is_some_and(|p| {
            p.iter()
                .any(|p| p.resource_name == "memory" && p.restart_policy == "RestartContainer")
        });
    if restarts_for_memory && spec.and_then(|s| s.restart_policy.as_deref()) == Some("Never") {
        return Some(format!(
            "container {container} of pod {name} restarts to change its memory (resizePolicy RestartContainer) and the pod's restartPolicy is Never: it cannot be resized in place"
        ));
    }
    let status = pod.status.as_ref()?;
    let pending = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodResizePending"
            && c.status == "True"
            && c.reason.as_deref() == Some("Infeasible")
    });
    if let Some(c) = pending {
        let detail = c
            .message
            .as_deref()
            .map(|m| format!(": {}", crate::redact::string(m)))
            .unwrap_or_default();
        return Some(format!(
            "the node of pod {name} cannot fit a resize (PodResizePending Infeasible){detail}"
        ));
    }
    (status.resize.as_deref() == Some("Infeasible"))
        .then(|| format!("the node of pod {name} cannot fit a resize (resize Infeasible)"))
}

async fn current_replicas(client: &Client, ns: &str, target: &WorkloadRef) -> Result<Option<i32>> {
    let c = client.clone();
    Ok(match target.kind {
        WorkloadKind::Deployment => Api::<Deployment>::namespaced(c, ns)
            .get_opt(&target.name)
            .await?
            .and_then(|d| d.spec.replicas),
        WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(c, ns)
            .get_opt(&target.name)
            .await?
            .and_then(|d| d.spec.replicas),
        _ => None,
    })
}

/// The pods of a workload, read from the API.
async fn pods_of_workload(client: &Client, ns: &str, target: &WorkloadRef) -> Result<Vec<Pod>> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items;
    let replicasets = if target.kind == WorkloadKind::Deployment {
        Api::<ReplicaSet>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await?
            .items
    } else {
        vec![]
    };
    let rs = |name: &str| {
        replicasets
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(name))
    };
    Ok(pods
        .into_iter()
        .filter(|p| owner_of_pod(p, rs).as_ref() == Some(target))
        .collect())
}

fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Why evicting `pod` would do harm, if it would. Nothing recreates a pod
/// without a controller, so evicting it deletes it for good. A Job's pod is
/// not restarted but failed: the Job counts it against its backoffLimit and
/// runs the work again from the start. And evicting the only ready pod of a
/// workload leaves it serving nothing until the replacement is ready; a
/// rolling restart, the usual next step, starts the new pod first.
/// `workload_pods` are the pods of `workload`, with or without `pod`.
pub fn restart_refusal(pod: &Pod, workload: &WorkloadRef, workload_pods: &[Pod]) -> Option<String> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let controller = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    let Some(controller) = controller else {
        return Some(format!(
            "pod {name} has no controller: evicting it would delete it for good, since nothing would recreate it"
        ));
    };
    if controller.kind == "Job" {
        return Some(format!(
            "pod {name} belongs to Job {}: evicting it would fail the Job's attempt (counted against its backoffLimit) and rerun its work, not restart it",
            controller.name
        ));
    }
    let others_ready = workload_pods
        .iter()
        .filter(|p| p.metadata.name.as_deref() != Some(name.as_str()))
        .filter(|p| is_ready(p))
        .count();
    if is_ready(pod) && others_ready == 0 {
        return Some(format!(
            "pod {name} is the only ready pod of {workload}: evicting it would leave none serving"
        ));
    }
    None
}

/// A short, stable hash of a pod template: the same template, read again,
/// gives the same hash; any change to it gives another.
pub fn template_hash(template: &PodTemplateSpec) -> String {
    let json = serde_json::to_vec(template).unwrap_or_default();
    Sha256::digest(json)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether a rollback planned against `planned` still applies to the
/// Deployment as it is now: its template is the one the rollback was planned
/// from, or already the one it rolls back to (a replay after the rollback
/// was applied changes nothing). Otherwise someone rolled out or rolled back
/// since, and rolling back now would undo that instead.
pub fn rollback_still_applies(
    planned: Option<&Precondition>,
    deployment: &Deployment,
    target_template: &PodTemplateSpec,
) -> std::result::Result<(), String> {
    let Some(planned_hash) = planned.and_then(|p| p.template_hash.as_deref()) else {
        // Recorded by a version that kept no precondition.
        return Ok(());
    };
    let now = template_hash(&deployment.spec.template);
    if now == planned_hash || now == template_hash(target_template) {
        return Ok(());
    }
    let generation = |g: Option<i64>| g.map_or_else(|| "?".to_string(), |g| g.to_string());
    Err(format!(
        "the Deployment's template changed since the rollback was planned: generation {} → {}",
        generation(planned.and_then(|p| p.generation)),
        generation(deployment.metadata.generation)
    ))
}

/// Whether a recorded value change still applies: the current value is the
/// one it was planned from, or already the one it sets.
fn value_still_applies(
    what: &str,
    from: Option<&str>,
    to: Option<&str>,
    now: Option<&str>,
    same: impl Fn(&str, &str) -> bool,
) -> std::result::Result<(), String> {
    let (Some(from), Some(now)) = (from, now) else {
        return Ok(());
    };
    if same(now, from) || to.is_some_and(|to| same(now, to)) {
        return Ok(());
    }
    Err(format!(
        "{what} changed since the action was planned: {from} → {now}"
    ))
}

/// Whether a Scale still applies: the replica count is still the one it
/// was planned from (or already the one it sets). Someone who scaled the
/// workload in between knew something the plan did not.
pub fn scale_still_applies(
    record: &ActionRecord,
    target: &WorkloadRef,
    current: Option<i32>,
) -> std::result::Result<(), String> {
    value_still_applies(
        &format!("the replica count of {target}"),
        record.from.as_deref(),
        record.to.as_deref(),
        current.map(|n| n.to_string()).as_deref(),
        |a, b| a == b,
    )
}

fn superseded(detail: String) -> Executed {
    Executed {
        state: ActionState::Superseded,
        detail,
    }
}

/// The result of executing an action.
pub struct Executed {
    pub state: ActionState,
    pub detail: String,
}

fn done(detail: impl Into<String>) -> Executed {
    Executed {
        state: ActionState::Succeeded,
        detail: detail.into(),
    }
}

/// Patches the workload named by `target`.
async fn patch_workload(
    client: &Client,
    ns: &str,
    target: &WorkloadRef,
    patch: &Patch<serde_json::Value>,
) -> Result<()> {
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let c = client.clone();
    let name = &target.name;
    match target.kind {
        WorkloadKind::Deployment => drop(
            Api::<Deployment>::namespaced(c, ns)
                .patch(name, &pp, patch)
                .await?,
        ),
        WorkloadKind::StatefulSet => drop(
            Api::<StatefulSet>::namespaced(c, ns)
                .patch(name, &pp, patch)
                .await?,
        ),
        WorkloadKind::DaemonSet => drop(
            Api::<DaemonSet>::namespaced(c, ns)
                .patch(name, &pp, patch)
                .await?,
        ),
        kind => {
            return Err(crate::Error::Refused(format!(
                "cannot patch a {}",
                kind.as_str()
            )));
        }
    }
    Ok(())
}

/// Evicts a pod, only if it still has `uid`: a pod recreated under the same
/// name (a StatefulSet's) is not the one the step was planned for. The body
/// is written here because kube's `Api::evict` sends the options as
/// `delete_options`, a field the API server does not know and drops, with
/// the precondition in it.
async fn evict(client: &Client, ns: &str, pod: &str, uid: Option<&str>) -> kube::Result<Status> {
    let eviction = serde_json::json!({
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": { "name": pod, "namespace": ns },
        "deleteOptions": { "preconditions": { "uid": uid } },
    });
    Api::<Pod>::namespaced(client.clone(), ns)
        .create_subresource("eviction", pod, &PostParams::default(), &eviction)
        .await
}

/// Takes a recorded action. Safe to call again for the same record. The
/// action's precondition is checked first (a Superseded result when the
/// workload changed since it was planned), and `fence` right before each
/// call that changes the cluster.
pub async fn execute(
    client: &Client,
    incident: &Incident,
    record: &ActionRecord,
    fence: &impl Fence,
) -> Result<Executed> {
    let ns = incident.metadata.namespace.clone().unwrap_or_default();
    let target = &incident.spec.target;
    let incident_name = incident.metadata.name.clone().unwrap_or_default();
    match record.type_ {
        ActionType::RestartPod => execute_restart_pod(client, &ns, target, record, fence).await,
        ActionType::RolloutRestart => {
            execute_rollout_restart(client, &ns, target, &incident_name, record, fence).await
        }
        ActionType::Rollback => execute_rollback(client, &ns, target, record, fence).await,
        ActionType::Scale => execute_scale(client, &ns, target, record, fence).await,
        ActionType::RaiseMemoryLimit => {
            execute_raise_memory_limit(client, &ns, target, record, fence).await
        }
        ActionType::Escalate => Ok(done("escalated")),
    }
}

async fn execute_restart_pod(
    client: &Client,
    ns: &str,
    target: &WorkloadRef,
    record: &ActionRecord,
    fence: &impl Fence,
) -> Result<Executed> {
    let Some(pod) = record
        .target
        .as_ref()
        .filter(|t| t.kind == WorkloadKind::Pod)
        .map(|t| t.name.as_str())
    else {
        return Err(crate::Error::Refused(
            "the recorded restart names no pod".into(),
        ));
    };
    // Approved or replayed later, the other pods may have gone
    // unready since it was planned.
    let current = Api::<Pod>::namespaced(client.clone(), ns)
        .get_opt(pod)
        .await?
        .filter(|p| p.metadata.uid == record.target_uid);
    if let Some(current) = current {
        let siblings = pods_of_workload(client, ns, target).await?;
        if let Some(why) = restart_refusal(&current, target, &siblings) {
            return Ok(superseded(why));
        }
    }
    fence.renew().await?;
    match evict(client, ns, pod, record.target_uid.as_deref()).await {
        Ok(_) => Ok(done(format!("evicted pod {pod}"))),
        // Gone, or replaced by a pod with another UID: the restart
        // already happened.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
            Ok(done(format!("pod {pod} was already gone")))
        }
        Err(kube::Error::Api(s)) if s.code == 429 => Ok(Executed {
            state: ActionState::Blocked,
            detail: format!(
                "eviction of pod {pod} refused: {} (a PodDisruptionBudget forbids it)",
                s.message
            ),
        }),
        Err(e) => Err(e.into()),
    }
}

async fn execute_rollout_restart(
    client: &Client,
    ns: &str,
    target: &WorkloadRef,
    incident_name: &str,
    record: &ActionRecord,
    fence: &impl Fence,
) -> Result<Executed> {
    let value = format!("{incident_name}/{}", record.id);
    let patch = serde_json::json!({ "spec": { "template": { "metadata": { "annotations": { RESTART_ANNOTATION: value } } } } });
    fence.renew().await?;
    patch_workload(client, ns, target, &Patch::Merge(patch)).await?;
    Ok(done(format!("rolling restart of {target}")))
}

async fn execute_rollback(
    client: &Client,
    ns: &str,
    target: &WorkloadRef,
    record: &ActionRecord,
    fence: &impl Fence,
) -> Result<Executed> {
    let to = record.to.clone().unwrap_or_default();
    let all = Api::<ReplicaSet>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    let rs = replicasets_of(&target.name, all.items)
        .into_iter()
        .find(|rs| rs.metadata.uid == record.target_uid)
        .ok_or_else(|| crate::Error::Refused(format!("the ReplicaSet of revision {to} is gone")))?;
    let mut template = rs
        .spec
        .template
        .ok_or_else(|| crate::Error::Refused("that ReplicaSet has no template".into()))?;
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove("pod-template-hash");
    }
    let Some(deployment) = Api::<Deployment>::namespaced(client.clone(), ns)
        .get_opt(&target.name)
        .await?
    else {
        return Ok(superseded(format!("{target} is gone")));
    };
    if let Err(why) = rollback_still_applies(record.precondition.as_ref(), &deployment, &template) {
        return Ok(superseded(why));
    }
    // Replacing the whole template with the old one is what
    // `kubectl rollout undo` does; replaying it changes nothing.
    let patch =
        serde_json::json!([{ "op": "replace", "path": "/spec/template", "value": template }]);
    let patch: json_patch::Patch = serde_json::from_value(patch)?;
    fence.renew().await?;
    Api::<Deployment>::namespaced(client.clone(), ns)
        .patch(
            &target.name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::<()>::Json(patch),
        )
        .await?;
    Ok(done(format!("rolled {target} back to revision {to}")))
}

async fn execute_scale(
    client: &Client,
    ns: &str,
    target: &WorkloadRef,
    record: &ActionRecord,
    fence: &impl Fence,
) -> Result<Executed> {
    let to: i32 = record
        .to
        .as_deref()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let current = current_replicas(client, ns, target).await?;
    if let Err(why) = scale_still_applies(record, target, current) {
        return Ok(superseded(why));
    }
    fence.renew().await?;
    patch_workload(
        client,
        ns,
        target,
        &Patch::Merge(serde_json::json!({ "spec": { "replicas": to } })),
    )
    .await?;
    Ok(done(format!("scaled {target} to {to} replicas")))
}

async fn execute_raise_memory_limit(
    client: &Client,
    ns: &str,
    target: &WorkloadRef,
    record: &ActionRecord,
    fence: &impl Fence,
) -> Result<Executed> {
    if target.kind == WorkloadKind::Pod {
        return execute_resize_pod(client, ns, target, record, fence).await;
    }
    let container = record.container.clone().unwrap_or_default();
    let to = record.to.clone().unwrap_or_default();
    let now = pod_template(client, ns, target)
        .await?
        .and_then(|t| t.spec)
        .and_then(|s| s.containers.into_iter().find(|c| c.name == container))
        .and_then(|c| c.resources?.limits?.get("memory").map(|q| q.0.clone()));
    if let Err(why) = value_still_applies(
        &format!("the memory limit of container {container} of {target}"),
        record.from.as_deref(),
        Some(to.as_str()),
        Some(now.as_deref().unwrap_or("none")),
        |a, b| parse_bytes(a).is_ok_and(|a| parse_bytes(b).is_ok_and(|b| a == b)),
    ) {
        return Ok(superseded(why));
    }
    let patch = serde_json::json!({ "spec": { "template": { "spec": { "containers": [
        { "name": container, "resources": { "limits": { "memory": to } } }
    ] } } } });
    fence.renew().await?;
    patch_workload(client, ns, target, &Patch::Strategic(patch)).await?;
    Ok(done(format!(
        "memory limit of container {container} of {target} set to {to}"
    )))
}

/// Raises a bare pod's memory limit in place through `pods/resize`. A
/// container whose memory request equals its limit (as in a Guaranteed pod,
/// whose QoS class a resize may not change) has its request raised with it.
/// Whatever makes the resize impossible (the pod gone or replaced, a policy
/// that forbids it, a node without room, the API server's refusal) fails
/// the step with the reason, and the ladder goes on.
async fn execute_resize_pod(
    client: &Client,
    ns: &str,
    target: &WorkloadRef,
    record: &ActionRecord,
    fence: &impl Fence,
) -> Result<Executed> {
    let name = &target.name;
    let container = record.container.clone().unwrap_or_default();
    let to = record.to.clone().unwrap_or_default();
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let Some(pod) = pods
        .get_opt(name)
        .await?
        .filter(|p| p.metadata.uid == record.target_uid && p.metadata.deletion_timestamp.is_none())
    else {
        return Err(crate::Error::Refused(format!(
            "pod {name} is gone: there is nothing to resize"
        )));
    };
    if let Some(why) = resize_refusal(&pod, &container) {
        return Err(crate::Error::Refused(why));
    }
    let current = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == container));
    let same =
        |a: &str, b: &str| parse_bytes(a).is_ok_and(|a| parse_bytes(b).is_ok_and(|b| a == b));
    let limit = current.and_then(|c| memory(c, true));
    if let Err(why) = value_still_applies(
        &format!("the memory limit of container {container} of {target}"),
        record.from.as_deref(),
        Some(to.as_str()),
        Some(limit.as_deref().unwrap_or("none")),
        same,
    ) {
        return Ok(superseded(why));
    }
    let request = current.and_then(|c| memory(c, false));
    let mut resources = serde_json::json!({ "limits": { "memory": to } });
    if let (Some(request), Some(limit)) = (&request, &limit)
        && same(request, limit)
    {
        resources["requests"] = serde_json::json!({ "memory": to });
    }
    let patch = serde_json::json!({ "spec": { "containers": [
        { "name": container, "resources": resources }
    ] } });
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    fence.renew().await?;
    match pods
        .patch_subresource("resize", name, &pp, &Patch::Strategic(patch))
        .await
    {
        Ok(resized) => match resize_refusal(&resized, &container) {
            Some(why) => Err(crate::Error::Refused(why)),
            None => Ok(done(format!(
                "memory limit of container {container} of pod {name} resized in place to {to}"
            ))),
        },
        Err(kube::Error::Api(s)) if s.code == 404 => Err(crate::Error::Refused(format!(
            "pod {name} is gone: there is nothing to resize"
        ))),
        Err(kube::Error::Api(s)) if matches!(s.code, 400 | 403 | 422) => {
            Err(crate::Error::Refused(format!(
                "the API server refused to resize pod {name}: {}",
                crate::redact::string(&s.message)
            )))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: u64 = 1024 * 1024;

    fn pod(name: &str, owner: Option<(&str, &str)>, ready: bool) -> Pod {
        let owners = owner.map(|(kind, owner)| {
            serde_json::json!([{ "apiVersion": "apps/v1", "kind": kind, "name": owner, "uid": "u", "controller": true }])
        });
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "namespace": "ns", "ownerReferences": owners },
            "status": { "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }] }
        }))
        .unwrap()
    }

    fn workload(kind: WorkloadKind, name: &str) -> WorkloadRef {
        WorkloadRef {
            kind,
            name: name.into(),
        }
    }

    #[test]
    fn restarting_a_bare_pod_is_refused_because_nothing_would_recreate_it() {
        let bare = pod("api", None, true);
        let why = restart_refusal(
            &bare,
            &workload(WorkloadKind::Pod, "api"),
            std::slice::from_ref(&bare),
        )
        .expect("refused");
        assert!(why.contains("no controller"), "{why}");
        assert!(why.contains("delete it for good"), "{why}");
    }

    #[test]
    fn restarting_a_pod_of_a_job_is_refused() {
        let worker = pod("report-x7k2p", Some(("Job", "report")), true);
        let other = pod("report-a1b2c", Some(("Job", "report")), true);
        let why = restart_refusal(
            &worker,
            &workload(WorkloadKind::Job, "report"),
            &[worker.clone(), other],
        )
        .expect("refused");
        assert!(why.contains("Job report"), "{why}");
    }

    #[test]
    fn the_last_ready_pod_of_a_workload_is_never_evicted() {
        let web = workload(WorkloadKind::Deployment, "web");
        let only = pod("web-1", Some(("ReplicaSet", "web-7f9c")), true);
        let unready = pod("web-2", Some(("ReplicaSet", "web-7f9c")), false);
        let why = restart_refusal(&only, &web, &[only.clone(), unready.clone()]).expect("refused");
        assert!(why.contains("only ready pod of Deployment/web"), "{why}");

        // With another ready pod, or when the pod itself is not ready (so
        // evicting it takes nothing away), the restart goes ahead.
        let second = pod("web-3", Some(("ReplicaSet", "web-7f9c")), true);
        assert_eq!(restart_refusal(&only, &web, &[only.clone(), second]), None);
        assert_eq!(
            restart_refusal(&unready, &web, &[only, unready.clone()]),
            None
        );
    }

    fn deployment(generation: i64, image: &str) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "web", "generation": generation },
            "spec": {
                "selector": { "matchLabels": { "app": "web" } },
                "template": {
                    "metadata": { "labels": { "app": "web" } },
                    "spec": { "containers": [{ "name": "app", "image": image }] }
                }
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_rollback_whose_deployment_changed_since_it_was_planned_is_superseded() {
        let planned_on = deployment(4, "web:2");
        let planned = Precondition {
            generation: Some(4),
            template_hash: Some(template_hash(&planned_on.spec.template)),
        };
        let previous = deployment(3, "web:1").spec.template;

        // Unchanged: the rollback applies.
        assert_eq!(
            rollback_still_applies(Some(&planned), &deployment(4, "web:2"), &previous),
            Ok(())
        );
        // A replay after the rollback was applied changes nothing more.
        assert_eq!(
            rollback_still_applies(Some(&planned), &deployment(5, "web:1"), &previous),
            Ok(())
        );
        // Someone rolled out web:3 in between: rolling back now would undo it.
        let why = rollback_still_applies(Some(&planned), &deployment(5, "web:3"), &previous)
            .expect_err("superseded");
        assert_eq!(
            why,
            "the Deployment's template changed since the rollback was planned: generation 4 → 5"
        );
        // Scaling changes the generation, not the template.
        let mut scaled = deployment(6, "web:2");
        scaled.spec.replicas = Some(5);
        assert_eq!(
            rollback_still_applies(Some(&planned), &scaled, &previous),
            Ok(())
        );
    }

    #[test]
    fn a_scale_whose_replica_count_changed_since_it_was_planned_is_superseded() {
        let record: ActionRecord = serde_json::from_value(serde_json::json!({
            "id": "1-scale", "type": "Scale", "state": "Pending",
            "from": "2", "to": "4", "recordedAt": "2026-12-01T10:00:00Z"
        }))
        .unwrap();
        let web = workload(WorkloadKind::Deployment, "web");
        assert_eq!(scale_still_applies(&record, &web, Some(2)), Ok(()));
        assert_eq!(scale_still_applies(&record, &web, Some(4)), Ok(()));
        let why = scale_still_applies(&record, &web, Some(6)).expect_err("superseded");
        assert!(
            why.contains("replica count of Deployment/web changed"),
            "{why}"
        );
        assert!(why.contains("2 → 6"), "{why}");
    }

    #[test]
    fn memory_is_raised_by_percent_or_step_and_never_past_the_cap() {
        assert_eq!(raised_limit(64 * MI, 50, None, 1024 * MI), Some(96 * MI));
        assert_eq!(
            raised_limit(64 * MI, 10, Some(64 * MI), 1024 * MI),
            Some(128 * MI)
        );
        assert_eq!(raised_limit(900 * MI, 50, None, 1024 * MI), Some(1024 * MI));
        assert_eq!(raised_limit(1024 * MI, 50, None, 1024 * MI), None);
    }

    /// Limits and caps in any form Kubernetes accepts are raised as their
    /// canonical forms would be.
    #[test]
    fn a_limit_written_as_1e9_or_half_a_gibibyte_is_raised_within_its_cap() {
        let raise = |limit: &str, max: &str| {
            let (limit, max) = (parse_bytes(limit).unwrap(), parse_bytes(max).unwrap());
            raised_limit(limit, 50, None, max).map(|b| format_bytes_within(b, max))
        };
        assert_eq!(raise("1e9", "2Gi").as_deref(), Some("1431Mi"));
        assert_eq!(raise("0.5Gi", "1Gi").as_deref(), Some("768Mi"));
        assert_eq!(raise("512Mi", "1e9").as_deref(), Some("768Mi"));
        assert_eq!(
            raise("1e9", "1.2e9").as_deref(),
            Some("1200000000"),
            "never past the cap"
        );
        assert_eq!(raise("1e9", "1e9"), None, "already at the cap");
        assert_eq!(raise("8Ei", "16Ei").as_deref(), Some("12884901888Gi"));
        assert_eq!(raise("16Ei", "1e100"), None, "both saturate: at the cap");
    }

    #[test]
    fn a_raise_that_would_round_to_nothing_still_raises() {
        assert_eq!(raised_limit(1, 1, None, 2), Some(2));
        assert_eq!(raised_limit(10, 5, None, 1024), Some(11));
    }

    #[test]
    fn raising_a_huge_limit_saturates_at_the_cap_instead_of_overflowing() {
        assert_eq!(
            raised_limit(u64::MAX - 1, 400, Some(u64::MAX), u64::MAX),
            Some(u64::MAX)
        );
        assert_eq!(
            raised_limit(1 << 62, i32::MAX, None, u64::MAX),
            Some(u64::MAX)
        );
    }

    /// A bare pod `web-1` in `shop`: container `app` with a 64Mi memory
    /// limit, `extra` merged into its spec (and its container with
    /// `container`), running on its node.
    fn bare_pod(extra: serde_json::Value, container: serde_json::Value) -> Pod {
        let mut app = serde_json::json!({ "name": "app", "image": "web:1",
            "resources": { "limits": { "memory": "64Mi" }, "requests": { "memory": "32Mi" } } });
        json_patch::merge(&mut app, &container);
        let mut spec = serde_json::json!({ "nodeName": "kind-worker", "restartPolicy": "Always",
            "containers": [app] });
        json_patch::merge(&mut spec, &extra);
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "web-1", "namespace": "shop", "uid": "uid-web-1", "generation": 1,
                "labels": { "app": "web" } },
            "spec": spec,
            "status": { "phase": "Running", "conditions": [{ "type": "Ready", "status": "True" }],
                "containerStatuses": [{ "name": "app", "image": "web:1", "imageID": "", "ready": true,
                    "restartCount": 1, "state": { "running": {} },
                    "lastState": { "terminated": { "exitCode": 137, "reason": "OOMKilled",
                        "finishedAt": "2026-11-26T09:55:00Z" } } }] }
        }))
        .unwrap()
    }

    /// The OOMKilled incident of the bare pod `web-1`.
    fn pod_incident() -> Incident {
        let mut i = crate::testing::incident(crate::crd::Phase::Remediating, vec![]);
        i.spec.target = workload(WorkloadKind::Pod, "web-1");
        i
    }

    fn raise(max: &str) -> ActionStep {
        ActionStep {
            type_: ActionType::RaiseMemoryLimit,
            on_categories: vec![],
            max_replicas: None,
            memory: Some(MemoryRaise {
                increase_percent: 50,
                min_increase: None,
                max: max.into(),
            }),
        }
    }

    /// What the incident records for a prepared step.
    fn recorded(p: &Prepared) -> ActionRecord {
        let mut r = crate::testing::record(1, ActionType::RaiseMemoryLimit, ActionState::Pending);
        r.target = p.target.clone();
        r.target_uid = p.target_uid.clone();
        r.container = p.container.clone();
        r.from = p.from.clone();
        r.to = p.to.clone();
        r
    }

    const POD: &str = "/api/v1/namespaces/shop/pods/web-1";

    #[tokio::test]
    async fn an_oomkilled_bare_pod_has_its_memory_limit_raised_in_place() {
        let api = crate::testing::api::FakeApi::default();
        api.insert(&bare_pod(serde_json::json!({}), serde_json::json!({})));
        let client = api.client();
        let incident = pod_incident();
        let p = prepare(&client, &incident, &raise("1Gi")).await.unwrap();
        assert_eq!(p.impossible, None, "{}", p.detail);
        assert_eq!(
            p.detail,
            "resize container app of Pod/web-1 in place: memory limit from 64Mi to 96Mi (cap 1Gi)"
        );
        assert_eq!(p.target_uid.as_deref(), Some("uid-web-1"));
        let done = execute(&client, &incident, &recorded(&p), &super::super::Unfenced)
            .await
            .unwrap();
        assert_eq!(done.state, ActionState::Succeeded, "{}", done.detail);

        let writes = api.writes();
        assert_eq!(writes.len(), 1, "{writes:?}");
        assert_eq!(writes[0].line(), format!("PATCH {POD}/resize"));
        assert!(
            writes[0].query.contains("fieldManager=sre-space"),
            "{}",
            writes[0].query
        );
        // Only the limit: the request (32Mi) stays, so the node needs no room.
        assert_eq!(
            writes[0].body,
            serde_json::json!({ "spec": { "containers": [
                { "name": "app", "resources": { "limits": { "memory": "96Mi" } } }
            ] } })
        );
    }

    #[tokio::test]
    async fn a_container_whose_request_equals_its_limit_has_both_raised() {
        let api = crate::testing::api::FakeApi::default();
        api.insert(&bare_pod(
            serde_json::json!({}),
            serde_json::json!({ "resources": { "requests": { "memory": "64Mi" } } }),
        ));
        let client = api.client();
        let incident = pod_incident();
        let p = prepare(&client, &incident, &raise("80Mi")).await.unwrap();
        assert_eq!(p.to.as_deref(), Some("80Mi"), "never past the cap");
        execute(&client, &incident, &recorded(&p), &super::super::Unfenced)
            .await
            .unwrap();
        assert_eq!(
            api.writes()[0].body,
            serde_json::json!({ "spec": { "containers": [
                { "name": "app", "resources": { "limits": { "memory": "80Mi" }, "requests": { "memory": "80Mi" } } }
            ] } })
        );
    }

    #[tokio::test]
    async fn a_resize_that_cannot_apply_is_impossible_with_its_reason_and_changes_nothing() {
        let infeasible = serde_json::json!([{ "type": "Ready", "status": "True" }, {
            "type": "PodResizePending", "status": "True", "reason": "Infeasible",
            "message": "Node didn't have enough capacity: memory, requested: 4294967296, capacity: 2084024320",
            "observedGeneration": 2 }]);
        // (pod, cap, what the reason must say)
        let rows = [
            (
                Some(bare_pod(
                    serde_json::json!({ "restartPolicy": "Never" }),
                    serde_json::json!({ "resizePolicy": [
                        { "resourceName": "cpu", "restartPolicy": "NotRequired" },
                        { "resourceName": "memory", "restartPolicy": "RestartContainer" }] }),
                )),
                "1Gi",
                "restartPolicy is Never",
            ),
            (
                Some(bare_pod(serde_json::json!({}), serde_json::json!({}))),
                "64Mi",
                "already at 64Mi of memory, the policy's cap of 64Mi",
            ),
            (None, "1Gi", "pod web-1 is gone"),
            (
                Some({
                    let mut p = bare_pod(serde_json::json!({}), serde_json::json!({}));
                    p.status.as_mut().unwrap().conditions =
                        Some(serde_json::from_value(infeasible.clone()).unwrap());
                    p
                }),
                "1Gi",
                "cannot fit a resize (PodResizePending Infeasible): Node didn't have enough capacity: memory",
            ),
        ];
        for (pod, cap, why) in rows {
            let api = crate::testing::api::FakeApi::default();
            if let Some(pod) = &pod {
                api.insert(pod);
            }
            let p = prepare(&api.client(), &pod_incident(), &raise(cap))
                .await
                .unwrap();
            let reason = p.impossible.expect("impossible");
            assert!(reason.contains(why), "{reason}");
            assert!(api.writes().is_empty());
        }
        // A resize policy that restarts the container is fine when the pod
        // restarts its containers.
        let restarts = bare_pod(
            serde_json::json!({}),
            serde_json::json!({ "resizePolicy": [{ "resourceName": "memory", "restartPolicy": "RestartContainer" }] }),
        );
        assert_eq!(resize_refusal(&restarts, "app"), None);
    }

    #[tokio::test]
    async fn a_resize_refused_or_found_infeasible_at_execution_fails_the_step() {
        // Planned while the node had room; by the time it runs, the
        // kubelet found the pod's last resize infeasible.
        let api = crate::testing::api::FakeApi::default();
        let pod = bare_pod(serde_json::json!({}), serde_json::json!({}));
        api.insert(&pod);
        let client = api.client();
        let incident = pod_incident();
        let p = prepare(&client, &incident, &raise("1Gi")).await.unwrap();
        let mut infeasible = pod.clone();
        infeasible.status.as_mut().unwrap().resize = Some("Infeasible".into());
        api.insert(&infeasible);
        let Err(crate::Error::Refused(why)) =
            execute(&client, &incident, &recorded(&p), &super::super::Unfenced).await
        else {
            panic!("refused")
        };
        assert!(
            why.contains("cannot fit a resize (resize Infeasible)"),
            "{why}"
        );
        assert!(api.writes().is_empty());

        // The API server refuses the patch itself.
        api.insert(&pod);
        api.refuse("PATCH", "/resize", 422);
        let Err(crate::Error::Refused(why)) =
            execute(&client, &incident, &recorded(&p), &super::super::Unfenced).await
        else {
            panic!("refused")
        };
        assert!(
            why.starts_with("the API server refused to resize pod web-1: "),
            "{why}"
        );

        // Gone, or replaced by a pod of another UID under the same name.
        let mut other = pod.clone();
        other.metadata.uid = Some("uid-web-1-new".into());
        api.insert(&other);
        let Err(crate::Error::Refused(why)) =
            execute(&client, &incident, &recorded(&p), &super::super::Unfenced).await
        else {
            panic!("refused")
        };
        assert!(why.contains("pod web-1 is gone"), "{why}");
    }
}
