//! What the facts say, recorded as numbered evidence (`e1`, `e2`, ...) in a
//! fixed order: the signal, the container's last termination, the newest
//! warning events, the owner chain, the container's memory settings, the
//! latest rollout, the traces and the history of this problem.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::brain::Facts;
use crate::brain::traces::{Culprit, Symptom, TraceFindings};
use crate::crd::{Evidence, EvidenceKind};

/// The kinds of recorded evidence a hypothesis cites.
#[derive(Clone, Copy)]
pub(super) enum Cite {
    Signal,
    Termination,
    Resources,
    Rollout,
    Traces,
    /// The log that holds the line explaining the exit.
    Log,
    /// The workload's conditions and its controller's warning events.
    Workload,
    /// The claims, their events and the StorageClasses.
    Storage,
    Node,
}

/// The ids of the evidence recorded, by what it is about; None where the
/// facts had nothing to say.
pub(super) struct Cited {
    signal: Option<String>,
    termination: Option<String>,
    /// The newest warning events, newest first.
    pub(super) events: Vec<String>,
    resources: Option<String>,
    rollout: Option<String>,
    traces: Option<String>,
    pub(super) history: Option<String>,
    /// One per similar problem of another workload, in `facts.similar`'s
    /// order.
    pub(super) similar: Vec<String>,
    log: Option<String>,
    /// The line of the container's log that explains its exit.
    pub(super) log_line: Option<String>,
    workload: Vec<String>,
    storage: Vec<String>,
    node: Option<String>,
}

impl Cited {
    /// The ids of the evidence of these kinds that was recorded, in order.
    pub(super) fn ids(&self, what: &[Cite]) -> Vec<String> {
        what.iter()
            .flat_map(|w| match w {
                Cite::Signal => self.signal.clone().into_iter().collect(),
                Cite::Termination => self.termination.clone().into_iter().collect(),
                Cite::Resources => self.resources.clone().into_iter().collect(),
                Cite::Rollout => self.rollout.clone().into_iter().collect(),
                Cite::Traces => self.traces.clone().into_iter().collect(),
                Cite::Log => self.log.clone().into_iter().collect(),
                Cite::Workload => self.workload.clone(),
                Cite::Storage => self.storage.clone(),
                Cite::Node => self.node.clone().into_iter().collect::<Vec<_>>(),
            })
            .collect()
    }
}

/// Records the evidence the facts hold.
pub(super) fn collect(facts: &Facts) -> (Vec<Evidence>, Cited) {
    let mut log = EvidenceLog::default();
    let failing = crate::brain::failing_container_of(facts);
    let container = failing.as_ref();
    let signal = facts.observation.as_ref().map(|o| match facts.signal {
        // The alert as Alertmanager sent it: name, labels, annotations.
        crate::crd::SignalKind::Alert => log.add(
            EvidenceKind::Alert,
            "Alertmanager".to_string(),
            o.message.clone(),
            Some(o.observed_at.0),
        ),
        // The series itself: query, value, threshold and graph link, as
        // the Metric trigger wrote them.
        crate::crd::SignalKind::Metric => log.add(
            EvidenceKind::Metric,
            format!("prometheus/{}", facts.target),
            o.message.clone(),
            Some(o.observed_at.0),
        ),
        _ => log.add(
            EvidenceKind::ContainerState,
            pod_source(facts, o.container.as_ref()),
            o.message.clone(),
            Some(o.observed_at.0),
        ),
    });
    let termination = termination(&mut log, facts, container);
    let events = warning_events(&mut log, facts);
    if !facts.owner_chain.is_empty() {
        log.add(
            EvidenceKind::OwnerChain,
            facts.target.to_string(),
            facts.owner_chain.join(" → "),
            None,
        );
    }
    let resources = resources(&mut log, facts, container);
    let rollout = rollout(&mut log, facts);
    let traces = facts.traces.as_ref().map(|f| {
        let (source, summary) = traces_summary(f);
        log.add(EvidenceKind::Trace, source, summary, None)
    });
    let history = history(&mut log, facts);
    let similar = similar(&mut log, facts);
    let (log_id, log_line) = logs(&mut log, facts);
    let workload = workload(&mut log, facts);
    let storage = storage(&mut log, facts);
    let node = node(&mut log, facts);
    let cited = Cited {
        signal,
        termination,
        events,
        resources,
        rollout,
        traces,
        history,
        similar,
        log: log_id,
        log_line,
        workload,
        storage,
        node,
    };
    (log.0, cited)
}

/// Numbers evidence as `e1`, `e2`, ... as it is added.
#[derive(Default)]
struct EvidenceLog(Vec<Evidence>);

impl EvidenceLog {
    fn add(
        &mut self,
        kind: EvidenceKind,
        source: String,
        summary: String,
        at: Option<Timestamp>,
    ) -> String {
        let id = format!("e{}", self.0.len() + 1);
        // Text copied from the cluster is data: without secrets, bounded.
        // Redacted before it is cut, so a cut never leaves half a secret.
        let mut summary = crate::redact::string(&summary);
        if summary.len() > 600 {
            let mut end = 600;
            while !summary.is_char_boundary(end) {
                end -= 1;
            }
            summary.truncate(end);
            summary.push('…');
        }
        self.0.push(Evidence {
            id: id.clone(),
            kind,
            source: crate::redact::string(&source),
            summary,
            observed_at: at.map(Time),
        });
        id
    }
}

/// `pod/{pod}/container/{container}`, `pod/{pod}`, or the workload when the
/// signal named no pod.
fn pod_source(facts: &Facts, container: Option<&String>) -> String {
    let pod = facts.observation.as_ref().and_then(|o| o.pod.as_ref());
    match (pod, container) {
        (Some(p), Some(c)) => format!("pod/{p}/container/{c}"),
        (Some(p), None) => format!("pod/{p}"),
        _ => facts.target.to_string(),
    }
}

/// The failing container's last termination, when the pod is still there.
fn termination(log: &mut EvidenceLog, facts: &Facts, container: Option<&String>) -> Option<String> {
    let cs = facts
        .pod
        .as_ref()?
        .status
        .as_ref()?
        .container_statuses
        .iter()
        .flatten()
        .chain(
            facts
                .pod
                .as_ref()?
                .status
                .as_ref()?
                .init_container_statuses
                .iter()
                .flatten(),
        )
        .find(|cs| Some(&cs.name) == container)?;
    let t = cs
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .or(cs.state.as_ref().and_then(|s| s.terminated.as_ref()))?;
    let message = t
        .message
        .as_deref()
        .map(|m| format!("; termination message: {m:?}"))
        .unwrap_or_default();
    Some(log.add(
        EvidenceKind::ContainerState,
        pod_source(facts, container),
        format!(
            "last terminated with exit code {} (reason {}), {} restarts{message}",
            t.exit_code,
            t.reason.as_deref().unwrap_or("none"),
            cs.restart_count
        ),
        t.finished_at.as_ref().map(|f| f.0),
    ))
}

/// The three newest warning events about the pod, newest first.
fn warning_events(log: &mut EvidenceLog, facts: &Facts) -> Vec<String> {
    newest_warnings(log, &facts.events)
}

/// The three newest warning events of `events` (oldest first), newest
/// first.
fn newest_warnings(
    log: &mut EvidenceLog,
    events: &[k8s_openapi::api::core::v1::Event],
) -> Vec<String> {
    events
        .iter()
        .rev()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .take(3)
        .map(|e| {
            let at = e
                .last_timestamp
                .as_ref()
                .or(e.first_timestamp.as_ref())
                .map(|t| t.0);
            log.add(
                EvidenceKind::Event,
                format!("event/{}", e.metadata.name.clone().unwrap_or_default()),
                format!(
                    "{} ({}x): {}",
                    e.reason.as_deref().unwrap_or(""),
                    e.count.unwrap_or(1),
                    e.message.as_deref().unwrap_or("")
                ),
                at,
            )
        })
        .collect()
}

/// The failing container's memory limit and request in the template.
fn resources(log: &mut EvidenceLog, facts: &Facts, container: Option<&String>) -> Option<String> {
    let r = facts
        .resources
        .iter()
        .find(|r| Some(&r.container) == container)?;
    Some(log.add(
        EvidenceKind::Resources,
        format!("{}/container/{}", facts.target, r.container),
        format!(
            "memory limit {}, request {}",
            r.memory_limit.as_deref().unwrap_or("(none)"),
            r.memory_request.as_deref().unwrap_or("(none)")
        ),
        None,
    ))
}

/// The latest rollout, when it changed the template.
fn rollout(log: &mut EvidenceLog, facts: &Facts) -> Option<String> {
    let r = facts.rollout.as_ref().filter(|r| !r.changes.is_empty())?;
    let changes: Vec<String> = r.changes.iter().map(ToString::to_string).collect();
    Some(log.add(
        EvidenceKind::Rollout,
        facts.target.to_string(),
        format!(
            "rollout from revision {} to {}{}: {}",
            r.previous_revision,
            r.revision,
            if r.failing_pod_is_new {
                " (the failing pod runs the new revision)"
            } else {
                ""
            },
            changes.join("; ")
        ),
        r.at.as_ref().map(|t| t.0),
    ))
}

/// Each log read, the previous instance first: its last lines, and the
/// line that explains the exit. Returns the id of the log that has such a
/// line (or else of the first log) and that line.
fn logs(log: &mut EvidenceLog, facts: &Facts) -> (Option<String>, Option<String>) {
    let pod = facts
        .pod
        .as_ref()
        .and_then(|p| p.metadata.name.clone())
        .or_else(|| facts.observation.as_ref().and_then(|o| o.pod.clone()))
        .unwrap_or_default();
    let (mut first, mut explained) = (None, None);
    let mut ordered: Vec<&crate::brain::ContainerLog> = facts.logs.iter().collect();
    // The instance that exited speaks first.
    ordered.sort_by_key(|l| !l.previous);
    for l in ordered {
        let Some(last) = l.lines.last() else {
            continue;
        };
        let which = if l.previous { "previous" } else { "current" };
        let line = explaining_line(&l.lines);
        let summary = match line {
            Some(i) => format!(
                "line {} of the last {} of the {which} instance of {} explains the exit: {:?}; its last line: {last:?}",
                i + 1,
                l.lines.len(),
                l.container,
                l.lines[i]
            ),
            None => format!(
                "the last {} lines of the {which} instance of {}; the last: {last:?}",
                l.lines.len(),
                l.container
            ),
        };
        let id = log.add(
            EvidenceKind::Log,
            format!(
                "pod/{pod}/container/{}/log{}",
                l.container,
                if l.previous { "?previous=true" } else { "" }
            ),
            summary,
            None,
        );
        first.get_or_insert_with(|| id.clone());
        if explained.is_none()
            && let Some(i) = line
        {
            explained = Some((id, crate::redact::string(&l.lines[i])));
        }
    }
    match explained {
        Some((id, line)) => (Some(id), Some(line)),
        None => (first, None),
    }
}

/// Words that mark a log line as an error.
const ERROR_WORDS: &[&str] = &[
    "error",
    "fatal",
    "panic",
    "exception",
    "traceback",
    "failed",
    "failure",
    "cannot",
    "can't",
    "could not",
    "couldn't",
    "unable to",
    "refused",
    "denied",
    "not found",
    "no such",
    "invalid",
    "missing",
    "timed out",
    "timeout",
    "segmentation fault",
];

/// The line that explains the exit: the last error-looking line of the
/// log, skipping lines that only say nothing failed.
pub(crate) fn explaining_line(lines: &[String]) -> Option<usize> {
    lines.iter().rposition(|l| {
        let l = l.to_ascii_lowercase();
        let benign = [
            "no error",
            "0 errors",
            "errors=0",
            "error=nil",
            "error: none",
        ]
        .iter()
        .any(|b| l.contains(b));
        !benign && ERROR_WORDS.iter().any(|w| l.contains(w))
    })
}

/// The workload's conditions that say something is wrong, its Job
/// settings, and its controller's newest warning events.
fn workload(log: &mut EvidenceLog, facts: &Facts) -> Vec<String> {
    let Some(w) = &facts.workload else {
        return vec![];
    };
    let mut ids = Vec::new();
    let source = facts.target.to_string();
    for c in &w.conditions {
        let wrong = matches!(
            (c.type_.as_str(), c.status.as_str()),
            ("Failed", "True")
                | ("FailureTarget", "True")
                | ("ReplicaFailure", "True")
                | ("Progressing", "False")
                | ("Available", "False")
        );
        if wrong {
            ids.push(log.add(
                EvidenceKind::Workload,
                source.clone(),
                format!(
                    "condition {}={} (reason {}): {}",
                    c.type_,
                    c.status,
                    c.reason.as_deref().unwrap_or("none"),
                    c.message.as_deref().unwrap_or("")
                ),
                None,
            ));
        }
    }
    let mut settings = Vec::new();
    if let Some(o) = &w.owner {
        settings.push(format!("run by {o}"));
    }
    if let Some(b) = w.backoff_limit {
        settings.push(format!("backoffLimit {b}"));
    }
    if let Some(d) = w.active_deadline_seconds {
        settings.push(format!("activeDeadlineSeconds {d}"));
    }
    if let Some(f) = w.failed {
        settings.push(format!("{f} pod(s) failed"));
    }
    if let (Some(d), r) = (w.desired, w.ready) {
        settings.push(format!("{} of {d} replica(s) ready", r.unwrap_or(0)));
    }
    if !settings.is_empty() {
        ids.push(log.add(EvidenceKind::Workload, source, settings.join(", "), None));
    }
    ids.extend(newest_warnings(log, &w.events));
    ids
}

/// The claims the pod references, their newest warning events, and the
/// StorageClasses.
fn storage(log: &mut EvidenceLog, facts: &Facts) -> Vec<String> {
    let mut ids = Vec::new();
    for c in &facts.claims {
        let name = c.metadata.name.clone().unwrap_or_default();
        let spec = c.spec.as_ref();
        let size = spec
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.clone())
            .unwrap_or_else(|| "(no size)".into());
        ids.push(log.add(
            EvidenceKind::Storage,
            format!("persistentvolumeclaim/{name}"),
            format!(
                "phase {}, storageClassName {}, access modes {}, requests {size}",
                c.status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .unwrap_or("unknown"),
                spec.and_then(|s| s.storage_class_name.as_deref())
                    .map(|n| if n.is_empty() { "\"\" (none)" } else { n })
                    .unwrap_or("(unset)"),
                spec.and_then(|s| s.access_modes.as_ref())
                    .map(|m| m.join(", "))
                    .unwrap_or_else(|| "(none)".into()),
            ),
            None,
        ));
    }
    ids.extend(newest_warnings(log, &facts.claim_events));
    if let Some(classes) = &facts.storage_classes {
        let listed: Vec<String> = classes
            .iter()
            .map(|c| {
                format!(
                    "{} (provisioner {}{})",
                    c.metadata.name.as_deref().unwrap_or(""),
                    c.provisioner,
                    if is_default_class(c) { ", default" } else { "" }
                )
            })
            .collect();
        ids.push(log.add(
            EvidenceKind::Storage,
            "storageclasses".into(),
            if listed.is_empty() {
                "the cluster has no StorageClass".into()
            } else {
                format!("StorageClasses: {}", listed.join("; "))
            },
            None,
        ));
    }
    ids
}

/// Whether a StorageClass is the cluster's default.
pub(crate) fn is_default_class(c: &k8s_openapi::api::storage::v1::StorageClass) -> bool {
    c.metadata.annotations.as_ref().is_some_and(|a| {
        [
            "storageclass.kubernetes.io/is-default-class",
            "storageclass.beta.kubernetes.io/is-default-class",
        ]
        .iter()
        .any(|k| a.get(*k).map(String::as_str) == Some("true"))
    })
}

/// The node's conditions and taints.
fn node(log: &mut EvidenceLog, facts: &Facts) -> Option<String> {
    let n = facts.node.as_ref()?;
    let conditions: Vec<String> = n
        .conditions
        .iter()
        .map(|c| match (&c.reason, &c.message) {
            (Some(r), Some(m)) if c.status != "False" || c.type_ == "Ready" => {
                format!("{}={} ({r}: {m})", c.type_, c.status)
            }
            _ => format!("{}={}", c.type_, c.status),
        })
        .collect();
    let taints = if n.taints.is_empty() {
        String::new()
    } else {
        format!("; taints {}", n.taints.join(", "))
    };
    Some(log.add(
        EvidenceKind::Node,
        format!("node/{}", n.name),
        format!("{}{taints}", conditions.join(", ")),
        None,
    ))
}

/// How often this problem was seen before and how each action fared.
fn history(log: &mut EvidenceLog, facts: &Facts) -> Option<String> {
    let m = facts
        .memory
        .as_ref()
        .filter(|m| !m.occurrences.is_empty())?;
    let tallies: Vec<String> = m
        .actions
        .iter()
        .map(|a| {
            format!(
                "{} worked {}x, failed {}x",
                a.type_.as_str(),
                a.effective,
                a.ineffective
            )
        })
        .collect();
    Some(log.add(
        EvidenceKind::History,
        format!(
            "incidentmemory/{}",
            crate::workload::incident_name(&facts.target, facts.signal)
        ),
        format!(
            "seen {} time(s) before{}",
            m.occurrences.len(),
            if tallies.is_empty() {
                String::new()
            } else {
                format!("; {}", tallies.join(", "))
            }
        ),
        None,
    ))
}

/// What happened to the same problem on other workloads of the namespace.
fn similar(log: &mut EvidenceLog, facts: &Facts) -> Vec<String> {
    facts
        .similar
        .iter()
        .map(|r| {
            log.add(
                EvidenceKind::SimilarIncident,
                format!("incidentmemory/{} ({})", r.memory, r.target),
                r.sentence(),
                None,
            )
        })
        .collect()
}

/// The trace evidence: (source, summary).
fn traces_summary(f: &TraceFindings) -> (String, String) {
    if let Some(why) = &f.unavailable {
        return (
            format!("traces/{}", f.service),
            format!("no trace evidence was available: {why}"),
        );
    }
    let own = f
        .target_stats()
        .map(|s| {
            format!(
                "{}: {} of {} spans failed, p95 {:.0} ms",
                f.service, s.errors, s.spans, s.p95_ms
            )
        })
        .unwrap_or_else(|| format!("{}: no spans of its own", f.service));
    let read = format!(
        "{} traces in the incident window, {} in the baseline",
        f.window_traces, f.baseline_traces
    );
    match &f.culprit {
        Some(c) => (
            format!("traces/{}/{}", c.service, c.operation),
            format!(
                "{}; found in {} traces, e.g. {}. {own}; {read}",
                culprit_statement(c),
                c.traces,
                c.trace_ids.join(", ")
            ),
        ),
        None => (
            format!("traces/{}", f.service),
            format!("{own}; no operation fails or got slower; {read}"),
        ),
    }
}

/// "operation X of service Y fails (n of m spans, up from k% in the
/// baseline), propagating through A → B → Y".
pub(super) fn culprit_statement(c: &Culprit) -> String {
    let chain = if c.chain.len() > 1 {
        c.chain.join(" → ")
    } else {
        format!("{} alone", c.service)
    };
    match c.symptom {
        Symptom::Errors => {
            let baseline = match &c.baseline {
                Some(b) if b.error_ratio() < c.window.error_ratio() => {
                    format!("up from {} in the baseline", percent(b.error_ratio()))
                }
                Some(b) => format!("as in the baseline, {}", percent(b.error_ratio())),
                None => "no spans of it in the baseline".into(),
            };
            format!(
                "operation {} of service {} fails ({} of {} spans, {baseline}), propagating through {chain}",
                c.operation, c.service, c.window.errors, c.window.spans
            )
        }
        Symptom::Latency => {
            let baseline = match &c.baseline {
                Some(b) => format!("p95 {:.0} ms in the baseline", b.p95_ms),
                None => "no spans of it in the baseline".into(),
            };
            format!(
                "operation {} of service {} is slow (p95 {:.0} ms, {:.0} ms of it its own time; {baseline}), reached through {chain}",
                c.operation,
                c.service,
                c.window.p95_ms,
                c.self_p95_ms.unwrap_or(c.window.p95_ms)
            )
        }
    }
}

fn percent(ratio: f64) -> String {
    format!("{:.0}%", ratio * 100.0)
}
