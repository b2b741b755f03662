//! Reads the evidence the rules need from the cluster.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Event, Node, PersistentVolumeClaim, Pod, PodTemplateSpec};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ListParams, LogParams};
use kube::{Api, Client};

use super::events::EventIndex;
use super::traces::{Symptom, TraceFindings, analyze};
use super::{
    ContainerLog, ContainerResources, Facts, NodeFacts, ObjectCondition, Rollout, WorkloadFacts,
    rollout::diff_templates,
};
use crate::Result;
use crate::crd::{
    Category, Incident, IncidentMemorySpec, RemediationPolicy, SignalKind, WorkloadKind,
    WorkloadRef,
};
use crate::traces::{Trace, TraceQuery, TraceStore};
use crate::workload::{pod_template, replicasets_of, revision};
use tracing::{debug, warn};

const TEMPLATE_HASH: &str = "pod-template-hash";

/// Traces read for the target's service in each window.
const TARGET_TRACES: usize = 200;
/// Traces read for each caller or callee in each window.
const NEIGHBOUR_TRACES: usize = 50;
/// At most this many callers and callees are read.
const MAX_NEIGHBOURS: usize = 4;
/// At most this many of a container's last log lines are read ...
pub const LOG_LINES: usize = 50;
/// ... and at most this many bytes of them.
pub const LOG_BYTES: usize = 16 * 1024;
/// A log read that takes longer is given up: the diagnosis goes on
/// without it.
const LOG_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// The incident window starts this long before the first signal ...
const LEAD_IN: SignedDuration = SignedDuration::from_mins(1);
/// ... and spans at most this long, however old the incident.
const MAX_WINDOW: SignedDuration = SignedDuration::from_hours(1);

/// Gathers the facts about an incident. `traces` is the trace store, when
/// one is configured; `index`, the events the operator keeps, when it
/// watches them; the incident window ends at `now`.
pub async fn gather(
    client: &Client,
    incident: &Incident,
    memory: Option<IncidentMemorySpec>,
    traces: Option<&dyn TraceStore>,
    index: Option<&EventIndex>,
    now: Timestamp,
) -> Result<Facts> {
    let events = Events { client, index };
    let ns = incident.metadata.namespace.clone().unwrap_or_default();
    let target = incident.spec.target.clone();
    let observation = incident.status.as_ref().and_then(|s| s.last_signal.clone());
    let pod_name = observation.as_ref().and_then(|o| o.pod.clone());

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    // The reads run side by side in two rounds: what needs no pod, then
    // what the pod names. One after another they took ten round trips to
    // the API server before the first mitigating call.
    // The signal's pod is known already: its events are read in the first
    // round (a list, the slowest read under load, until the operator's
    // event watches have listed).
    let (pod, signal_pod_events, workload, template, traces, alert_category, metric_category) = tokio::join!(
        async {
            match &pod_name {
                Some(name) => pods.get_opt(name).await,
                None => Ok(None),
            }
        },
        async {
            match &pod_name {
                Some(name) => Some(events.of_pod(&ns, name).await),
                None => None,
            }
        },
        workload_facts(client, events, &ns, &target),
        pod_template(client, &ns, &target),
        gather_traces(client, incident, traces, now),
        alert_category(client, incident),
        async {
            match incident.spec.signal {
                SignalKind::Metric => metric_category(client, incident).await,
                _ => None,
            }
        },
    );
    let mut pod = pod?;
    let template = template?;
    // A Job's signal may name no pod: its newest failed pod holds the exit
    // code and the logs.
    if pod.is_none() {
        let job = match target.kind {
            WorkloadKind::Job => Some(target.name.as_str()),
            WorkloadKind::CronJob => workload.as_ref().and_then(|w| w.run.as_deref()),
            _ => None,
        };
        if let Some(job) = job {
            pod = newest_failed_pod_of_job(&pods, job).await;
        }
    }
    let pod_name = pod_name.or_else(|| pod.as_ref().and_then(|p| p.metadata.name.clone()));
    let resources = memory_settings(template.as_ref());

    let mut owner_chain = Vec::new();
    if let Some(p) = &pod_name {
        owner_chain.push(format!("Pod/{p}"));
    }
    let (events, logs, (claims, claim_events, storage_classes), node, rollout) = tokio::join!(
        async {
            match (signal_pod_events, &pod_name) {
                (Some(read), _) => read,
                (None, Some(name)) => events.of_pod(&ns, name).await,
                (None, None) => Ok(vec![]),
            }
        },
        async {
            match (&pod, incident.spec.signal) {
                (Some(p), s) if reads_logs(s) => {
                    let container = observation
                        .as_ref()
                        .and_then(|o| o.container.clone())
                        .or_else(|| super::failing_container(p));
                    match container {
                        Some(c) => container_logs(&pods, p, &c).await,
                        None => vec![],
                    }
                }
                _ => vec![],
            }
        },
        async {
            match &pod {
                Some(p) => storage(client, events, &ns, p).await,
                None => (vec![], vec![], None),
            }
        },
        async {
            match (&pod, incident.spec.signal) {
                (Some(p), SignalKind::NodeFailure) => node_facts(client, p).await,
                _ => None,
            }
        },
        async {
            if target.kind == WorkloadKind::Deployment {
                deployment_lineage(client, &ns, &target, pod.as_ref()).await
            } else {
                Ok((None, vec![target.to_string()]))
            }
        },
    );
    let events = events?;
    let (rollout, chain) = rollout?;
    owner_chain.extend(chain);

    let mut facts = Facts {
        namespace: ns,
        target,
        signal: incident.spec.signal,
        observation,
        pod,
        events,
        owner_chain,
        rollout,
        resources,
        memory,
        traces,
        logs,
        workload,
        claims,
        claim_events,
        storage_classes,
        node,
        template,
        alert_category,
        metric_category,
        similar: vec![],
    };
    // Redacted where it enters: every later use (diagnosis, prompt, status,
    // GitHub, a captured scenario) sees the redacted text only.
    facts.redact();
    Ok(facts)
}

/// A read of the events a field selector picks, served from the API
/// server's watch cache. A consistent list waits until that cache has
/// caught up with etcd: while rollouts write events by the thousand it
/// waited 3 s a list at 10,000 pods (`make bench`). Events are written
/// after what they tell anyway, and no action rests on their absence (each
/// one reads its target fresh), so the cache's lag costs nothing.
fn events_matching(selector: &str) -> ListParams {
    ListParams::default().match_any().fields(selector)
}

/// Where a diagnosis reads events: the index the operator keeps, once it
/// has listed, else the API server (its watch cache). Either way, only the
/// events a rule reads (`events::kept`).
#[derive(Clone, Copy)]
struct Events<'a> {
    client: &'a Client,
    index: Option<&'a EventIndex>,
}

impl Events<'_> {
    /// The kept events about a pod, oldest first.
    async fn of_pod(self, ns: &str, pod: &str) -> std::result::Result<Vec<Event>, kube::Error> {
        self.read(ns, None, pod, format!("involvedObject.name={pod}"))
            .await
    }

    /// The warning events about one object, oldest first.
    async fn warnings_of(
        self,
        ns: &str,
        kind: &str,
        name: &str,
    ) -> std::result::Result<Vec<Event>, kube::Error> {
        let selector =
            format!("involvedObject.kind={kind},involvedObject.name={name},type=Warning");
        let mut events = self.read(ns, Some(kind), name, selector).await?;
        events.retain(|e| e.type_.as_deref() == Some("Warning"));
        Ok(events)
    }

    async fn read(
        self,
        ns: &str,
        kind: Option<&str>,
        name: &str,
        selector: String,
    ) -> std::result::Result<Vec<Event>, kube::Error> {
        if let Some(found) = self.index.and_then(|i| i.about(ns, kind, name)) {
            return Ok(found);
        }
        let mut events: Vec<Event> = Api::<Event>::namespaced(self.client.clone(), ns)
            .list(&events_matching(&selector))
            .await?
            .items
            .into_iter()
            .filter(super::events::kept)
            .collect();
        events.sort_by_key(event_time);
        Ok(events)
    }
}

/// The signals whose container ran and may have said why it stopped.
fn reads_logs(signal: SignalKind) -> bool {
    matches!(
        signal,
        SignalKind::CrashLoopBackOff
            | SignalKind::OOMKilled
            | SignalKind::InitContainerFailed
            | SignalKind::JobFailed
            | SignalKind::ReadinessFailing
    )
}

/// The newest pod of a Job that failed, or else its newest pod.
async fn newest_failed_pod_of_job(pods: &Api<Pod>, job: &str) -> Option<Pod> {
    let listed = pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await;
    let mut items = match listed {
        Ok(l) => l.items,
        Err(e) => {
            debug!(error = %e, job, "the Job's pods are not readable");
            return None;
        }
    };
    items.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let failed = items
        .iter()
        .rev()
        .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"))
        .cloned();
    failed.or_else(|| items.pop())
}

/// The last lines of a container, its current and its previous instance,
/// each bounded; a log that cannot be read (none yet, no previous instance,
/// no right to read) is left out.
/// The kubelet's answer for a log it no longer has, which the API server
/// passes on as the log itself.
fn is_log_unavailable(text: &str) -> bool {
    let text = text.trim();
    !text.contains('\n') && text.starts_with("unable to retrieve container logs for ")
}

async fn container_logs(pods: &Api<Pod>, pod: &Pod, container: &str) -> Vec<ContainerLog> {
    let Some(name) = pod.metadata.name.as_deref() else {
        return vec![];
    };
    // The previous container's log and the current one's, side by side;
    // each bounded in time, for a kubelet that does not answer (a failing
    // node) must not hold back the diagnosis, and so the remedy.
    let read = |previous: bool| async move {
        let params = LogParams {
            container: Some(container.to_string()),
            previous,
            tail_lines: Some(LOG_LINES as i64),
            limit_bytes: Some(LOG_BYTES as i64),
            ..LogParams::default()
        };
        let text = match tokio::time::timeout(LOG_READ_TIMEOUT, pods.logs(name, &params)).await {
            Ok(Ok(text)) => text,
            Ok(Err(e)) => {
                debug!(error = %e, pod = name, container, previous, "no log read");
                return None;
            }
            Err(_) => {
                debug!(pod = name, container, previous, timeout = ?LOG_READ_TIMEOUT, "no log read in time");
                return None;
            }
        };
        // What the kubelet answers, as the log's text, when the
        // container's log is gone (the container was removed): not the
        // program's words.
        if is_log_unavailable(&text) {
            debug!(pod = name, container, previous, answer = %text.trim(), "no log kept");
            return None;
        }
        let lines = bound_log(&text);
        (!lines.is_empty()).then(|| ContainerLog {
            container: container.to_string(),
            previous,
            lines,
        })
    };
    let (previous, current) = tokio::join!(read(true), read(false));
    previous.into_iter().chain(current).collect()
}

/// The last `LOG_LINES` lines of a log, at most `LOG_BYTES` of them, each
/// redacted.
pub fn bound_log(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .rev()
        .filter(|l| !l.trim().is_empty())
        .take(LOG_LINES)
        .map(crate::redact::string)
        .collect();
    let mut bytes = 0;
    let keep = lines
        .iter()
        .take_while(|l| {
            bytes += l.len() + 1;
            bytes <= LOG_BYTES
        })
        .count();
    lines.truncate(keep);
    lines.reverse();
    lines
}

/// A Job's limits, failed pods and conditions.
fn job_facts(w: &mut WorkloadFacts, j: Job) {
    w.backoff_limit = j.spec.as_ref().and_then(|s| s.backoff_limit);
    w.active_deadline_seconds = j.spec.as_ref().and_then(|s| s.active_deadline_seconds);
    let status = j.status.unwrap_or_default();
    w.failed = status.failed;
    w.conditions = status
        .conditions
        .into_iter()
        .flatten()
        .map(|c| condition(c.type_, c.status, c.reason, c.message))
        .collect();
}

/// The conditions and warning events of the workload, and of the
/// ReplicaSets a Deployment made; None where it cannot be read.
async fn workload_facts(
    client: &Client,
    events: Events<'_>,
    ns: &str,
    target: &WorkloadRef,
) -> Option<WorkloadFacts> {
    let c = client.clone();
    let name = target.name.as_str();
    let read = async {
        let mut w = WorkloadFacts::default();
        let mut names = vec![(target.kind.as_str(), name.to_string())];
        match target.kind {
            WorkloadKind::Deployment => {
                let Some(d) = Api::<Deployment>::namespaced(c.clone(), ns)
                    .get_opt(name)
                    .await?
                else {
                    return Ok(None);
                };
                w.desired = d.spec.replicas;
                let selected = replicasets_selected_by(&d);
                let status = d.status.unwrap_or_default();
                w.ready = status.ready_replicas;
                w.conditions = status
                    .conditions
                    .into_iter()
                    .flatten()
                    .map(|c| condition(c.type_, c.status, c.reason, c.message))
                    .collect();
                // The refusals of the pods are events of its ReplicaSets,
                // read beside the Deployment's own.
                let (own, replicasets) =
                    tokio::join!(events.warnings_of(ns, "Deployment", name), async {
                        let all = Api::<ReplicaSet>::namespaced(c.clone(), ns)
                            .list(&selected)
                            .await?;
                        let read = replicasets_of(name, all.items)
                            .into_iter()
                            .take(2)
                            .filter_map(|rs| rs.metadata.name)
                            .map(|n| async move { events.warnings_of(ns, "ReplicaSet", &n).await });
                        futures::future::try_join_all(read).await
                    });
                w.events.extend(own?);
                w.events.extend(replicasets?.into_iter().flatten());
                // All read: nothing left for the other kinds' loop below.
                names.clear();
            }
            WorkloadKind::StatefulSet => {
                let Some(s) = Api::<StatefulSet>::namespaced(c.clone(), ns)
                    .get_opt(name)
                    .await?
                else {
                    return Ok(None);
                };
                w.desired = s.spec.replicas;
                let status = s.status.unwrap_or_default();
                w.ready = status.ready_replicas;
                w.conditions = status
                    .conditions
                    .into_iter()
                    .flatten()
                    .map(|c| condition(c.type_, c.status, c.reason, c.message))
                    .collect();
            }
            WorkloadKind::DaemonSet => {
                let Some(s) = Api::<DaemonSet>::namespaced(c.clone(), ns)
                    .get_opt(name)
                    .await?
                else {
                    return Ok(None);
                };
                let status = s.status.unwrap_or_default();
                w.desired = Some(status.desired_number_scheduled);
                w.ready = Some(status.number_ready);
            }
            WorkloadKind::Job => {
                let Some(j) = Api::<Job>::namespaced(c.clone(), ns).get_opt(name).await? else {
                    return Ok(None);
                };
                w.owner = j
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .find(|o| o.controller == Some(true))
                    .map(|o| format!("{}/{}", o.kind, o.name));
                job_facts(&mut w, j);
            }
            WorkloadKind::CronJob => {
                // The CronJob's newest failed run holds the reason, the
                // limits and the pods.
                let jobs = Api::<Job>::namespaced(c.clone(), ns)
                    .list(&ListParams::default())
                    .await?;
                let mut runs: Vec<Job> = jobs
                    .items
                    .into_iter()
                    .filter(|j| {
                        j.metadata.owner_references.iter().flatten().any(|o| {
                            o.kind == "CronJob" && o.name == name && o.controller == Some(true)
                        })
                    })
                    .filter(|j| {
                        j.status
                            .iter()
                            .flat_map(|s| s.conditions.iter().flatten())
                            .any(|c| c.type_ == "Failed" && c.status == "True")
                    })
                    .collect();
                runs.sort_by_key(|j| j.metadata.creation_timestamp.as_ref().map(|t| t.0));
                let Some(run) = runs.pop() else {
                    return Ok(None);
                };
                let run_name = run.metadata.name.clone().unwrap_or_default();
                names.push(("Job", run_name.clone()));
                w.run = Some(run_name);
                job_facts(&mut w, run);
            }
            WorkloadKind::Pod => return Ok(None),
        }
        let read = names
            .iter()
            .map(|(kind, n)| events.warnings_of(ns, kind, n));
        for events in futures::future::try_join_all(read).await? {
            w.events.extend(events);
        }
        w.events.sort_by_key(event_time);
        Ok::<_, kube::Error>(Some(w))
    };
    match read.await {
        Ok(w) => w,
        Err(e) => {
            debug!(error = %e, workload = %target, "the workload's status is not readable");
            None
        }
    }
}

/// A condition as any controller writes it (some API versions make its
/// type and status optional).
fn condition(
    type_: impl Into<Option<String>>,
    status: impl Into<Option<String>>,
    reason: Option<String>,
    message: Option<String>,
) -> ObjectCondition {
    ObjectCondition {
        type_: type_.into().unwrap_or_default(),
        status: status.into().unwrap_or_default(),
        reason,
        message,
    }
}

pub(super) fn event_time(e: &Event) -> Option<Timestamp> {
    e.last_timestamp
        .as_ref()
        .or(e.first_timestamp.as_ref())
        .map(|t| t.0)
        .or(e.event_time.as_ref().map(|t| t.0))
}

/// The names of the claims a pod's volumes use (an ephemeral volume's
/// claim is `{pod}-{volume}`).
pub fn claim_names(pod: &Pod) -> Vec<String> {
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| {
            v.persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.clone())
                .or_else(|| {
                    v.ephemeral
                        .as_ref()
                        .map(|_| format!("{pod_name}-{}", v.name))
                })
        })
        .collect()
}

/// The claims the pod references that exist, their warning events, and,
/// when one of them is missing or unbound, the cluster's StorageClasses.
/// Best effort: what cannot be read is left out.
async fn storage(
    client: &Client,
    source: Events<'_>,
    ns: &str,
    pod: &Pod,
) -> (
    Vec<PersistentVolumeClaim>,
    Vec<Event>,
    Option<Vec<StorageClass>>,
) {
    let names = claim_names(pod);
    if names.is_empty() {
        return (vec![], vec![], None);
    }
    let api = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns);
    let (mut claims, mut events, mut unbound) = (vec![], vec![], false);
    for n in &names {
        match api.get_opt(n).await {
            Ok(Some(c)) => {
                let phase = c.status.as_ref().and_then(|s| s.phase.as_deref());
                if phase != Some("Bound") {
                    unbound = true;
                    match source.warnings_of(ns, "PersistentVolumeClaim", n).await {
                        Ok(e) => events.extend(e),
                        Err(e) => {
                            debug!(error = %e, claim = n, "the claim's events are not readable")
                        }
                    }
                }
                claims.push(c);
            }
            Ok(None) => unbound = true,
            Err(e) => debug!(error = %e, claim = n, "the claim is not readable"),
        }
    }
    let classes = if unbound {
        match Api::<StorageClass>::all(client.clone())
            .list(&ListParams::default())
            .await
        {
            Ok(l) => Some(l.items),
            Err(e) => {
                debug!(error = %e, "StorageClasses are not readable");
                None
            }
        }
    } else {
        None
    };
    (claims, events, classes)
}

/// The conditions and taints of the node the pod ran on.
async fn node_facts(client: &Client, pod: &Pod) -> Option<NodeFacts> {
    let name = pod.spec.as_ref()?.node_name.clone()?;
    let node = match Api::<Node>::all(client.clone()).get_opt(&name).await {
        Ok(n) => n?,
        Err(e) => {
            debug!(error = %e, node = name, "the node is not readable");
            return None;
        }
    };
    let spec = node.spec.unwrap_or_default();
    Some(NodeFacts {
        name,
        conditions: node
            .status
            .and_then(|s| s.conditions)
            .into_iter()
            .flatten()
            .map(|c| condition(c.type_, c.status, c.reason, c.message))
            .collect(),
        taints: spec
            .taints
            .into_iter()
            .flatten()
            .map(|t| format!("{}={}:{}", t.key, t.value.unwrap_or_default(), t.effect))
            .collect(),
    })
}

/// Each container's memory limit and request in the workload's template.
fn memory_settings(template: Option<&PodTemplateSpec>) -> Vec<ContainerResources> {
    let get = |m: Option<&BTreeMap<String, Quantity>>| {
        m.and_then(|m| m.get("memory")).map(|q| q.0.clone())
    };
    template
        .and_then(|t| t.spec.as_ref())
        .map(|spec| {
            spec.containers
                .iter()
                .map(|c| {
                    let r = c.resources.as_ref();
                    ContainerResources {
                        container: c.name.clone(),
                        memory_limit: get(r.and_then(|r| r.limits.as_ref())),
                        memory_request: get(r.and_then(|r| r.requests.as_ref())),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// For a Deployment: extends the owner chain by the failing pod's
/// ReplicaSet and the Deployment (while it exists), and returns its latest
/// rollout.
/// The Deployment's latest rollout and the owner chain above the pod
/// (its ReplicaSet, then the Deployment while it exists). Only the
/// ReplicaSets its selector matches are read, not every one in the
/// namespace.
async fn deployment_lineage(
    client: &Client,
    ns: &str,
    target: &WorkloadRef,
    pod: Option<&Pod>,
) -> Result<(Option<Rollout>, Vec<String>)> {
    let deployment = Api::<Deployment>::namespaced(client.clone(), ns)
        .get_opt(&target.name)
        .await?;
    let params = deployment
        .as_ref()
        .map(replicasets_selected_by)
        .unwrap_or_default();
    let all = Api::<ReplicaSet>::namespaced(client.clone(), ns)
        .list(&params)
        .await?;
    let owned = replicasets_of(&target.name, all.items);
    let pod_hash = pod.and_then(|p| p.metadata.labels.as_ref()?.get(TEMPLATE_HASH).cloned());
    let mut chain = Vec::new();
    if let Some(rs) = owned
        .iter()
        .find(|rs| pod_hash.is_some() && template_hash(rs) == pod_hash)
    {
        chain.push(format!(
            "ReplicaSet/{}",
            rs.metadata.name.clone().unwrap_or_default()
        ));
    }
    let rollout = latest_rollout(&owned, pod_hash.as_ref());
    // The Deployment itself must still exist for the chain to end there.
    if deployment.is_some() {
        chain.push(target.to_string());
    }
    Ok((rollout, chain))
}

/// The ReplicaSets a Deployment's selector matches, a superset of those it
/// owns: not every ReplicaSet of the namespace.
fn replicasets_selected_by(d: &Deployment) -> ListParams {
    match kube::core::Selector::try_from(d.spec.selector.clone()) {
        Ok(s) if !s.selects_all() => ListParams::default().labels_from(&s),
        _ => ListParams::default(),
    }
}

fn template_hash(rs: &ReplicaSet) -> Option<String> {
    rs.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(TEMPLATE_HASH))
        .cloned()
}

/// What the newest of a Deployment's ReplicaSets (newest first) changed from
/// the one before, and whether the failing pod (by its template hash) runs it.
fn latest_rollout(owned: &[ReplicaSet], pod_hash: Option<&String>) -> Option<Rollout> {
    let [current, previous, ..] = owned else {
        return None;
    };
    let (cur, prev) = current
        .spec
        .template
        .clone()
        .zip(previous.spec.template.clone())?;
    Some(Rollout {
        revision: revision(current).unwrap_or(0),
        previous_revision: revision(previous).unwrap_or(0),
        at: current.metadata.creation_timestamp.clone(),
        changes: diff_templates(&prev, &cur),
        failing_pod_is_new: pod_hash.is_some() && pod_hash == template_hash(current).as_ref(),
    })
}

/// The incident window (from a minute before the first signal to now, at
/// most an hour) and the baseline window of the same length before it:
/// (baseline start, window start, window end).
pub fn trace_windows(
    first_seen: Option<Timestamp>,
    now: Timestamp,
) -> (Timestamp, Timestamp, Timestamp) {
    let earliest = now - MAX_WINDOW;
    let start = first_seen
        .map(|f| f - LEAD_IN)
        .unwrap_or(now - LEAD_IN)
        .clamp(earliest, now - LEAD_IN);
    let length = now.duration_since(start);
    (start - length, start, now)
}

/// The service name of the incident's workload in the traces: the
/// service of the policy's trace trigger for that workload, or else the
/// workload's name.
async fn service_of(client: &Client, incident: &Incident) -> String {
    let ns = incident.metadata.namespace.clone().unwrap_or_default();
    let target = &incident.spec.target.name;
    let policy = Api::<RemediationPolicy>::namespaced(client.clone(), &ns)
        .get_opt(&incident.spec.policy)
        .await;
    let triggers = match policy {
        Ok(Some(p)) => p.spec.triggers,
        Ok(None) => vec![],
        Err(e) => {
            debug!(error = %e, policy = %incident.spec.policy, "policy not readable; the workload's name is its service");
            vec![]
        }
    };
    triggers
        .iter()
        .filter(|t| t.workload.as_ref() == Some(target))
        .find_map(|t| t.traces.as_ref().map(|tr| tr.service.clone()))
        .unwrap_or_else(|| target.clone())
}

/// The category of an Alert incident: its policy's trigger's, or the
/// default when the policy is not readable.
async fn alert_category(client: &Client, incident: &Incident) -> Option<crate::crd::Category> {
    if incident.spec.signal != SignalKind::Alert {
        return None;
    }
    let ns = incident.metadata.namespace.clone().unwrap_or_default();
    let policy = Api::<RemediationPolicy>::namespaced(client.clone(), &ns)
        .get_opt(&incident.spec.policy)
        .await
        .ok()
        .flatten();
    Some(crate::scout::sources::alerts::category(
        policy.as_ref(),
        &incident.spec.target.name,
    ))
}

/// The category a Metric incident's trigger names: of the policy's Metric
/// triggers that can name the target, the one whose query the signal
/// quotes, else the first with a category.
async fn metric_category(client: &Client, incident: &Incident) -> Option<Category> {
    let ns = incident.metadata.namespace.clone().unwrap_or_default();
    let policy = Api::<RemediationPolicy>::namespaced(client.clone(), &ns)
        .get_opt(&incident.spec.policy)
        .await;
    let triggers = match policy {
        Ok(Some(p)) => p.spec.triggers,
        Ok(None) => return None,
        Err(e) => {
            debug!(error = %e, policy = %incident.spec.policy, "policy not readable; the Metric trigger's category is not known");
            return None;
        }
    };
    let message = incident
        .status
        .as_ref()
        .and_then(|s| s.last_signal.as_ref())
        .map(|o| o.message.as_str())
        .unwrap_or_default();
    metric_category_of(&triggers, &incident.spec.target.name, message)
}

/// See [`metric_category`].
pub(crate) fn metric_category_of(
    triggers: &[crate::crd::Trigger],
    target: &str,
    message: &str,
) -> Option<Category> {
    let candidates: Vec<&crate::crd::MetricTrigger> = triggers
        .iter()
        .filter(|t| t.type_ == SignalKind::Metric)
        .filter(|t| t.workload.as_deref().is_none_or(|w| w == target))
        .filter_map(|t| t.metric.as_ref())
        .collect();
    candidates
        .iter()
        .find(|m| message.contains(&format!("query {}", m.query)))
        .and_then(|m| m.category)
        .or_else(|| candidates.iter().find_map(|m| m.category))
}

/// What the traces say, for the signals the operator measures itself; a
/// trace store that is away becomes a note in the findings, never an error.
async fn gather_traces(
    client: &Client,
    incident: &Incident,
    store: Option<&dyn TraceStore>,
    now: Timestamp,
) -> Option<TraceFindings> {
    let signal = incident.spec.signal;
    if signal.is_pod_signal() {
        return None;
    }
    let service = service_of(client, incident).await;
    let first_seen = incident
        .status
        .as_ref()
        .and_then(|s| s.first_seen.as_ref())
        .map(|t| t.0);
    Some(read_traces(store, &service, signal, first_seen, now).await)
}

/// Reads the traces of `service` and its callers and callees for the
/// incident window and the baseline, and analyses them.
pub async fn read_traces(
    store: Option<&dyn TraceStore>,
    service: &str,
    signal: SignalKind,
    first_seen: Option<Timestamp>,
    now: Timestamp,
) -> TraceFindings {
    let Some(store) = store else {
        return TraceFindings::unavailable(
            service,
            format!(
                "no trace store is configured ({} is unset)",
                crate::traces::QUERY_ENV
            ),
        );
    };
    let windows = trace_windows(first_seen, now);
    let (window, baseline) = match both_windows(store, service, windows, TARGET_TRACES).await {
        Ok(found) => found,
        Err(e) => {
            warn!(error = %e, service, "traces not readable; the diagnosis has no trace evidence");
            // The store's URL may carry credentials.
            return TraceFindings::unavailable(service, crate::redact::string(&e.to_string()));
        }
    };
    let mut window = by_id(window);
    let mut baseline = by_id(baseline);
    // The callers and callees seen in the target's traces: their own
    // traffic says whether they fail for everyone or only for the target.
    // The most frequent ones first.
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for s in window.values().flat_map(|t| &t.spans) {
        if s.service != service && !s.service.is_empty() {
            *seen.entry(s.service.as_str()).or_default() += 1;
        }
    }
    let mut seen: Vec<(&str, usize)> = seen.into_iter().collect();
    seen.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let neighbours: Vec<String> = seen
        .into_iter()
        .take(MAX_NEIGHBOURS)
        .map(|(s, _)| s.to_string())
        .collect();
    // Read together: a slow store costs one timeout, not one per service.
    let found = futures::future::join_all(
        neighbours
            .iter()
            .map(|n| both_windows(store, n, windows, NEIGHBOUR_TRACES)),
    )
    .await;
    for (n, found) in neighbours.iter().zip(found) {
        match found {
            Ok((w, b)) => {
                window.extend(by_id(w));
                baseline.extend(by_id(b));
            }
            Err(e) => debug!(error = %e, service = %n, "a neighbour's traces are not readable"),
        }
    }
    let symptom = if signal == SignalKind::TraceLatency {
        Symptom::Latency
    } else {
        Symptom::Errors
    };
    let window: Vec<Trace> = window.into_values().collect();
    let baseline: Vec<Trace> = baseline.into_values().collect();
    let mut findings = analyze(service, &window, &baseline, symptom);
    findings.redact();
    findings
}

/// A service's traces in the incident window and in the baseline.
async fn both_windows(
    store: &dyn TraceStore,
    service: &str,
    (baseline_start, start, end): (Timestamp, Timestamp, Timestamp),
    limit: usize,
) -> std::result::Result<(Vec<Trace>, Vec<Trace>), crate::traces::TraceError> {
    let query = |start, end| TraceQuery {
        service: service.to_string(),
        operation: None,
        start,
        end,
        limit,
    };
    let (window, baseline) = (query(start, end), query(baseline_start, start));
    futures::try_join!(store.find_traces(&window), store.find_traces(&baseline))
}

/// Traces keyed by ID, so a trace found through two services counts once.
fn by_id(traces: Vec<Trace>) -> BTreeMap<String, Trace> {
    traces
        .into_iter()
        .map(|t| (t.trace_id.clone(), t))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_metric_incident_takes_the_category_of_the_trigger_whose_query_it_quotes() {
        let trigger = |query: &str, workload: Option<&str>, category| {
            let mut t = crate::crd::Trigger::of(SignalKind::Metric);
            t.workload = workload.map(str::to_string);
            t.metric = Some(crate::crd::MetricTrigger {
                query: query.into(),
                comparison: crate::crd::Comparison::GreaterThan,
                threshold: 1.0,
                for_seconds: 0,
                interval_seconds: 30,
                namespace_label: "namespace".into(),
                workload_label: workload.is_none().then(|| "deployment".into()),
                category,
                detector: None,
            });
            t
        };
        let triggers = [
            trigger("errors", None, Some(Category::ErrorRate)),
            trigger("latency", None, Some(Category::Latency)),
            trigger("memory", Some("db"), Some(Category::OutOfMemory)),
        ];
        let message = "Deployment/web: value 2 > 1 for 0 s (forSeconds 0); query latency";
        assert_eq!(
            super::metric_category_of(&triggers, "web", message),
            Some(Category::Latency)
        );
        assert_eq!(
            super::metric_category_of(&triggers, "web", "no query quoted"),
            Some(Category::ErrorRate),
            "else the first with a category"
        );
        assert_eq!(
            super::metric_category_of(&triggers[2..], "web", "query memory"),
            None,
            "a trigger fixed on another workload does not count"
        );
    }

    #[test]
    fn the_kubelets_answer_for_a_lost_log_is_not_taken_for_the_programs_words() {
        assert!(super::is_log_unavailable(
            "unable to retrieve container logs for containerd://bc158a7d0051\n"
        ));
        assert!(!super::is_log_unavailable(
            "error: db:5432 did not answer\n"
        ));
        assert!(!super::is_log_unavailable(
            "starting\nunable to retrieve container logs for x\n"
        ));
    }

    use super::*;

    /// A ReplicaSet of revision `rev` with template hash `hash`, running
    /// `image`.
    fn replicaset(rev: i64, hash: &str, image: &str) -> ReplicaSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": format!("web-{hash}"),
                "labels": { TEMPLATE_HASH: hash },
                "annotations": { "deployment.kubernetes.io/revision": rev.to_string() },
                "creationTimestamp": "2026-11-26T09:00:00Z",
            },
            "spec": { "selector": {}, "template": { "spec": {
                "containers": [{ "name": "app", "image": image }],
            }}},
        }))
        .expect("a replicaset")
    }

    #[test]
    fn the_latest_rollout_says_what_changed_and_whether_the_failing_pod_runs_it() {
        let owned = [replicaset(3, "b", "web:2"), replicaset(2, "a", "web:1")];
        let new = latest_rollout(&owned, Some(&"b".to_string())).expect("a rollout");
        assert_eq!((new.revision, new.previous_revision), (3, 2));
        assert_eq!(new.changes.len(), 1);
        assert_eq!(new.changes[0].field, "containers[app].image");
        assert_eq!(
            (new.changes[0].from.as_str(), new.changes[0].to.as_str()),
            ("web:1", "web:2")
        );
        assert!(new.failing_pod_is_new);

        let old = latest_rollout(&owned, Some(&"a".to_string())).expect("a rollout");
        assert!(
            !old.failing_pod_is_new,
            "the failing pod runs the old revision"
        );
        let unknown = latest_rollout(&owned, None).expect("a rollout");
        assert!(!unknown.failing_pod_is_new, "no pod, no blame");

        assert_eq!(
            latest_rollout(&owned[..1], Some(&"b".to_string())),
            None,
            "one revision, no rollout"
        );
    }

    fn at(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    /// A trace store holding `traces`, answering as Jaeger does (whole
    /// traces with a span of the service starting in the window), or failing.
    struct Store {
        traces: Vec<Trace>,
        down: bool,
        asked: std::sync::Mutex<Vec<String>>,
    }

    impl TraceStore for Store {
        fn find_traces<'a>(&'a self, q: &'a TraceQuery) -> crate::traces::TraceFuture<'a> {
            Box::pin(async move {
                if let Ok(mut asked) = self.asked.lock() {
                    asked.push(q.service.clone());
                }
                if self.down {
                    return Err(crate::traces::TraceError::Unreachable {
                        url: "http://jaeger:16686/".into(),
                        reason: "connection refused".into(),
                    });
                }
                let (from, to) = (q.start.as_microsecond(), q.end.as_microsecond());
                Ok(self
                    .traces
                    .iter()
                    .filter(|t| {
                        t.spans
                            .iter()
                            .any(|s| s.service == q.service && (from..to).contains(&s.start_us))
                    })
                    .take(q.limit)
                    .cloned()
                    .collect())
            })
        }
    }

    /// frontend → web → user-service, failing in user-service when `fail`.
    fn request(id: &str, at: Timestamp, fail: bool) -> Trace {
        let span = |sid: &str, parent: Option<&str>, service: &str, op: &str, error: bool| {
            crate::traces::Span {
                span_id: sid.into(),
                parent_id: parent.map(Into::into),
                service: service.into(),
                operation: op.into(),
                start_us: at.as_microsecond(),
                duration_us: 3000,
                error,
            }
        };
        Trace {
            trace_id: id.into(),
            spans: vec![
                span("a", None, "frontend", "GET /", fail),
                span("b", Some("a"), "web", "POST /buy", fail),
                span("c", Some("b"), "user-service", "check_eligibility", fail),
            ],
        }
    }

    #[tokio::test]
    async fn traces_of_the_target_and_its_neighbours_in_both_windows_are_analysed() {
        let now = at("2026-11-26T10:10:00Z");
        let mut traces: Vec<Trace> = (0..10)
            .map(|i| request(&format!("w{i}"), now - SignedDuration::from_secs(10), i < 7))
            .collect();
        traces.extend((0..10).map(|i| {
            request(
                &format!("b{i}"),
                now - SignedDuration::from_secs(100),
                false,
            )
        }));
        let store = Store {
            traces,
            down: false,
            asked: Default::default(),
        };
        let first_seen = Some(now - SignedDuration::from_secs(5));
        let f = read_traces(
            Some(&store),
            "web",
            SignalKind::ConversionRate,
            first_seen,
            now,
        )
        .await;
        let c = f.culprit.expect("a culprit");
        assert_eq!(
            (c.service.as_str(), c.operation.as_str()),
            ("user-service", "check_eligibility")
        );
        assert_eq!((c.window.errors, c.window.spans), (7, 10));
        assert_eq!(c.baseline.map(|b| b.errors), Some(0));
        assert_eq!(
            (f.window_traces, f.baseline_traces),
            (10, 10),
            "found twice, counted once"
        );
        let asked = store.asked.lock().expect("lock").clone();
        assert_eq!(asked.iter().filter(|s| *s == "web").count(), 2);
        assert!(
            asked.contains(&"frontend".to_string()) && asked.contains(&"user-service".to_string())
        );
    }

    #[tokio::test]
    async fn a_store_that_is_down_or_absent_becomes_a_note_not_an_error() {
        let now = at("2026-11-26T10:10:00Z");
        let down = Store {
            traces: vec![],
            down: true,
            asked: Default::default(),
        };
        let f = read_traces(Some(&down), "web", SignalKind::TraceErrorRate, None, now).await;
        assert_eq!(f.culprit, None);
        assert!(
            f.unavailable
                .as_deref()
                .is_some_and(|u| u.contains("unreachable: connection refused")),
            "{f:?}"
        );
        let off = read_traces(None, "web", SignalKind::TraceErrorRate, None, now).await;
        assert!(
            off.unavailable
                .as_deref()
                .is_some_and(|u| u.contains("SRE_SPACE_JAEGER_QUERY is unset"))
        );
    }

    #[test]
    fn a_log_is_cut_to_its_last_lines_and_bytes_and_redacted() {
        let long: String = (1..=80)
            .map(|i| format!("line {i}\n"))
            .chain([
                "\n".to_string(),
                "fatal: login failed for password=hunter2\n".to_string(),
            ])
            .collect();
        let lines = bound_log(&long);
        assert_eq!(
            lines.len(),
            LOG_LINES,
            "the newest lines, blank ones dropped"
        );
        assert_eq!(lines[0], "line 32");
        assert_eq!(
            lines[LOG_LINES - 1],
            "fatal: login failed for password=<redacted>"
        );
        let wide = format!("{}\nlast\n", "x".repeat(LOG_BYTES));
        assert_eq!(
            bound_log(&wide),
            vec!["last".to_string()],
            "a line past the byte budget is left out"
        );
    }

    #[test]
    fn the_claims_of_a_pod_include_its_ephemeral_volumes() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "db-0" },
            "spec": { "containers": [{ "name": "db" }], "volumes": [
                { "name": "data", "persistentVolumeClaim": { "claimName": "data-db-0" } },
                { "name": "scratch", "ephemeral": { "volumeClaimTemplate": { "spec": {} } } },
                { "name": "config", "configMap": { "name": "db-config" } },
            ]},
        }))
        .expect("a pod");
        assert_eq!(claim_names(&pod), vec!["data-db-0", "db-0-scratch"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_kubelet_that_does_not_answer_holds_the_diagnosis_for_the_log_timeout_only() {
        use crate::testing::api::FakeApi;
        let api = FakeApi::default();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "web-1", "namespace": "shop" },
            "spec": { "containers": [{ "name": "web", "image": "registry.local/web:1" }] },
            "status": { "phase": "Running", "containerStatuses": [{ "name": "web",
                "image": "registry.local/web:1", "imageID": "", "ready": false, "restartCount": 3,
                "lastState": { "terminated": { "exitCode": 137, "reason": "OOMKilled" } },
                "state": { "waiting": { "reason": "CrashLoopBackOff" } } }] },
        }))
        .expect("a pod");
        api.insert(&pod);
        api.stall("GET", "/log");
        let mut incident = crate::testing::incident(crate::crd::Phase::Diagnosing, vec![]);
        incident.metadata.namespace = Some("shop".into());
        incident.spec.signal = SignalKind::CrashLoopBackOff;
        if let Some(o) = incident
            .status
            .as_mut()
            .and_then(|s| s.last_signal.as_mut())
        {
            o.pod = Some("web-1".into());
            o.container = Some("web".into());
        }
        let started = tokio::time::Instant::now();
        let facts = within_a_minute(
            &api,
            &incident,
            None,
            "the facts within a minute, whatever the kubelet does",
        )
        .await;
        let waited = started.elapsed();
        assert!(
            waited <= LOG_READ_TIMEOUT + std::time::Duration::from_millis(100),
            "{waited:?}"
        );
        assert!(facts.logs.is_empty());
        assert_eq!(
            facts.pod.as_ref().and_then(|p| p.metadata.name.as_deref()),
            Some("web-1")
        );
        let logs = api
            .seen()
            .iter()
            .filter(|s| s.path.ends_with("/log"))
            .count();
        assert_eq!(logs, 2, "the previous and the current container's log");
    }

    /// The facts of `incident`, which must come within a minute (`why`).
    async fn within_a_minute(
        api: &crate::testing::api::FakeApi,
        incident: &Incident,
        index: Option<&EventIndex>,
        why: &str,
    ) -> Facts {
        tokio::time::timeout(
            std::time::Duration::from_secs(60),
            gather(
                &api.client(),
                incident,
                None,
                None,
                index,
                at("2026-12-02T07:00:00Z"),
            ),
        )
        .await
        .expect(why)
        .expect("facts")
    }

    /// Deployment `web` of shop, its pod web-1 just OOM-killed, a BackOff
    /// warning about the pod, and the incident about it.
    fn oom_killed_web(api: &crate::testing::api::FakeApi) -> (Incident, Event) {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "web-1", "namespace": "shop",
                "labels": { "app": "web", "pod-template-hash": "5d4f" },
                "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web-5d4f", "uid": "rs-1", "controller": true }] },
            "spec": { "containers": [{ "name": "web", "image": "registry.local/web:1" }] },
            "status": { "phase": "Running", "containerStatuses": [{ "name": "web",
                "image": "registry.local/web:1", "imageID": "", "ready": false, "restartCount": 1,
                "lastState": { "terminated": { "exitCode": 137, "reason": "OOMKilled" } },
                "state": { "running": {} } }] },
        }))
        .expect("a pod");
        api.insert(&pod);
        let deployment: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "web", "namespace": "shop", "uid": "d-1" },
            "spec": { "selector": { "matchLabels": { "app": "web" } },
                "template": { "metadata": { "labels": { "app": "web" } },
                    "spec": { "containers": [{ "name": "web", "image": "registry.local/web:1" }] } } },
        }))
        .expect("a deployment");
        api.insert(&deployment);
        let event: Event = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "web-1.1", "namespace": "shop" },
            "involvedObject": { "kind": "Pod", "name": "web-1", "namespace": "shop" },
            "type": "Warning", "reason": "BackOff",
            "message": "Back-off restarting failed container web",
        }))
        .expect("an event");
        let mut incident = crate::testing::incident(crate::crd::Phase::Diagnosing, vec![]);
        incident.metadata.namespace = Some("shop".into());
        incident.spec.signal = SignalKind::OOMKilled;
        incident.spec.target = WorkloadRef {
            kind: WorkloadKind::Deployment,
            name: "web".into(),
        };
        if let Some(o) = incident
            .status
            .as_mut()
            .and_then(|s| s.last_signal.as_mut())
        {
            o.pod = Some("web-1".into());
            o.container = Some("web".into());
        }
        (incident, event)
    }

    fn has_backoff(facts: &Facts) -> bool {
        facts
            .events
            .iter()
            .any(|e| e.reason.as_deref() == Some("BackOff"))
    }

    #[tokio::test(start_paused = true)]
    async fn events_are_read_even_while_the_api_servers_event_cache_lags() {
        use crate::testing::api::FakeApi;
        let api = FakeApi::default();
        let (incident, event) = oom_killed_web(&api);
        api.insert(&event);
        // Thousands of events a second (a rollout at scale) and the cache
        // of events never catches up: a consistent list would wait for it.
        api.lag_cache("/events");
        let facts = within_a_minute(
            &api,
            &incident,
            None,
            "the facts within a minute, however far the event cache lags",
        )
        .await;
        assert!(has_backoff(&facts), "{:?}", facts.events);
        let event_reads = api
            .seen()
            .iter()
            .filter(|s| s.path.ends_with("/events"))
            .count();
        // The pod's events, and the warnings of the Deployment.
        assert!(event_reads >= 2, "{event_reads}");
    }

    #[tokio::test(start_paused = true)]
    async fn with_the_operators_event_index_a_diagnosis_lists_no_events() {
        use crate::testing::api::FakeApi;
        let api = FakeApi::default();
        let (incident, event) = oom_killed_web(&api);
        // The API server would not answer a list of events at all.
        api.stall("GET", "/events");
        let index = EventIndex::of(vec![event]);
        let facts = within_a_minute(
            &api,
            &incident,
            Some(&index),
            "the facts without listing events",
        )
        .await;
        assert!(has_backoff(&facts), "{:?}", facts.events);
        assert!(
            !api.seen().iter().any(|s| s.path.ends_with("/events")),
            "no list of events"
        );
    }

    #[tokio::test]
    async fn a_failed_job_brings_its_conditions_its_cron_job_its_pod_and_its_claims() {
        use crate::testing::api::FakeApi;
        let api = FakeApi::default();
        let job: Job = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "nightly-report-29412345", "namespace": "shop",
                "ownerReferences": [{ "apiVersion": "batch/v1", "kind": "CronJob",
                    "name": "nightly-report", "uid": "5c1d", "controller": true }] },
            "spec": { "backoffLimit": 1, "template": { "spec": { "restartPolicy": "Never",
                "containers": [{ "name": "report", "image": "registry.local/report:5" }] } } },
            "status": { "failed": 2, "conditions": [{ "type": "Failed", "status": "True",
                "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit" }] },
        }))
        .expect("a job");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "nightly-report-29412345-7xk2q", "namespace": "shop",
                "creationTimestamp": "2026-12-02T06:00:00Z",
                "labels": { "job-name": "nightly-report-29412345" } },
            "spec": { "containers": [{ "name": "report", "image": "registry.local/report:5" }],
                "volumes": [{ "name": "out", "persistentVolumeClaim": { "claimName": "reports" } }] },
            "status": { "phase": "Failed", "containerStatuses": [{ "name": "report",
                "image": "registry.local/report:5", "imageID": "", "ready": false, "restartCount": 0,
                "state": { "terminated": { "exitCode": 1, "reason": "Error" } } }] },
        }))
        .expect("a pod");
        let claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "reports", "namespace": "shop" },
            "spec": { "accessModes": ["ReadWriteOnce"], "storageClassName": "standard" },
            "status": { "phase": "Bound" },
        }))
        .expect("a claim");
        api.insert(&job);
        api.insert(&pod);
        api.insert(&claim);
        // Without the rights to read logs or the node, or under a
        // namespaced binding, the facts say less; the diagnosis still runs.
        api.refuse("GET", "/log", 403);
        api.refuse("GET", "/storageclasses", 403);

        let mut incident = crate::testing::incident(crate::crd::Phase::Diagnosing, vec![]);
        incident.spec.target = WorkloadRef {
            kind: WorkloadKind::Job,
            name: "nightly-report-29412345".into(),
        };
        incident.spec.signal = SignalKind::JobFailed;
        if let Some(o) = incident
            .status
            .as_mut()
            .and_then(|s| s.last_signal.as_mut())
        {
            o.pod = None;
            o.container = None;
            o.message = "Job nightly-report-29412345 failed: BackoffLimitExceeded".into();
        }
        let now = at("2026-12-02T07:00:00Z");
        let facts = gather(&api.client(), &incident, None, None, None, now)
            .await
            .expect("facts");
        let w = facts.workload.as_ref().expect("the Job's status");
        assert_eq!(w.owner.as_deref(), Some("CronJob/nightly-report"));
        assert_eq!((w.backoff_limit, w.failed), (Some(1), Some(2)));
        assert_eq!(
            w.conditions[0].reason.as_deref(),
            Some("BackoffLimitExceeded")
        );
        assert_eq!(
            facts.pod.as_ref().and_then(|p| p.metadata.name.as_deref()),
            Some("nightly-report-29412345-7xk2q"),
            "the Job's failed pod, found by its job-name label"
        );
        assert_eq!(facts.claims.len(), 1);
        assert!(facts.logs.is_empty() && facts.storage_classes.is_none());
        let d = crate::brain::diagnose(&facts, now);
        assert_eq!(
            d.category,
            crate::crd::Category::JobFailure,
            "{}",
            d.root_cause
        );
        assert!(
            d.root_cause.starts_with(
                "Job/nightly-report-29412345 (run by CronJob/nightly-report) ran out of retries (BackoffLimitExceeded"
            ),
            "{}",
            d.root_cause
        );
        assert!(
            api.seen().iter().any(
                |s| s.path.ends_with("/pods/nightly-report-29412345-7xk2q/log")
                    && s.query.contains("previous=true")
                    && s.query.contains("tailLines=50")
                    && s.query.contains("limitBytes=16384")
            ),
            "the logs were asked for, bounded: {:?}",
            api.seen()
                .iter()
                .map(|s| format!("{} {}?{}", s.method, s.path, s.query))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_window_starts_a_minute_before_the_signal_and_the_baseline_is_as_long_before_it() {
        let now = at("2026-11-26T10:10:00Z");
        let (b, s, e) = trace_windows(Some(at("2026-11-26T10:05:00Z")), now);
        assert_eq!(
            (b, s, e),
            (at("2026-11-26T09:58:00Z"), at("2026-11-26T10:04:00Z"), now)
        );
    }

    #[test]
    fn an_old_incident_reads_at_most_an_hour_and_a_new_one_at_least_a_minute() {
        let now = at("2026-11-26T10:00:00Z");
        let (b, s, _) = trace_windows(Some(at("2026-11-25T10:00:00Z")), now);
        assert_eq!(
            (b, s),
            (at("2026-11-26T08:00:00Z"), at("2026-11-26T09:00:00Z"))
        );
        let (b, s, _) = trace_windows(None, now);
        assert_eq!(
            (b, s),
            (at("2026-11-26T09:58:00Z"), at("2026-11-26T09:59:00Z"))
        );
        let (_, s, _) = trace_windows(Some(now + SignedDuration::from_secs(5)), now);
        assert_eq!(s, at("2026-11-26T09:59:00Z"), "a clock ahead of ours");
    }
}
