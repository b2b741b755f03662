//! The Brain: gathers evidence about an incident and diagnoses its root
//! cause with deterministic rules. `gather` reads the cluster; `diagnose` is
//! pure and unit-tested per category.

pub mod advisor;
pub mod eval;
mod gather;
pub mod postmortem;
pub mod rollout;
pub mod traces;

pub use gather::gather;

use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::crd::{
    ActionType, Category, Diagnosis, Evidence, EvidenceKind, Hypothesis, IncidentMemorySpec,
    SignalKind, SignalObservation, WorkloadRef,
};
use rollout::TemplateChange;

/// The analyser name recorded in diagnoses made by the rules.
pub const RULES: &str = "rules";

/// How long before a signal the operator measures itself a rollout is a
/// suspect.
const RECENT_ROLLOUT: k8s_openapi::jiff::SignedDuration =
    k8s_openapi::jiff::SignedDuration::from_mins(30);

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

fn hypothesis(
    category: Category,
    statement: String,
    confidence: f64,
    evidence: Vec<String>,
    action: Option<ActionType>,
) -> Hypothesis {
    Hypothesis {
        category,
        // Statements quote names from the traces (operations, services).
        statement: crate::redact::string(&statement),
        confidence,
        evidence,
        proposed_action: action,
    }
}

/// Diagnoses the incident from the facts.
pub fn diagnose(facts: &Facts, now: Timestamp) -> Diagnosis {
    let mut log = EvidenceLog::default();
    let target = &facts.target;
    let container = facts.observation.as_ref().and_then(|o| o.container.clone());
    let pod_name = facts.observation.as_ref().and_then(|o| o.pod.clone());
    let pod_source = |c: &Option<String>| match (&pod_name, c) {
        (Some(p), Some(c)) => format!("pod/{p}/container/{c}"),
        (Some(p), None) => format!("pod/{p}"),
        _ => target.to_string(),
    };

    // The signal itself.
    let signal_ev = facts.observation.as_ref().map(|o| {
        log.add(
            EvidenceKind::ContainerState,
            pod_source(&o.container),
            o.message.clone(),
            Some(o.observed_at.0),
        )
    });
    // The failing container's last termination, when the pod is still there.
    let termination_ev = facts.pod.as_ref().and_then(|pod| {
        let cs = pod
            .status
            .as_ref()?
            .container_statuses
            .iter()
            .flatten()
            .find(|cs| Some(&cs.name) == container.as_ref())?;
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
            pod_source(&container),
            format!(
                "last terminated with exit code {} (reason {}), {} restarts{message}",
                t.exit_code,
                t.reason.as_deref().unwrap_or("none"),
                cs.restart_count
            ),
            t.finished_at.as_ref().map(|f| f.0),
        ))
    });
    let event_evs: Vec<String> = facts
        .events
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
        .collect();
    if !facts.owner_chain.is_empty() {
        log.add(
            EvidenceKind::OwnerChain,
            target.to_string(),
            facts.owner_chain.join(" → "),
            None,
        );
    }
    let limit = facts
        .resources
        .iter()
        .find(|r| Some(&r.container) == container.as_ref());
    let resources_ev = limit.map(|r| {
        log.add(
            EvidenceKind::Resources,
            format!("{target}/container/{}", r.container),
            format!(
                "memory limit {}, request {}",
                r.memory_limit.as_deref().unwrap_or("(none)"),
                r.memory_request.as_deref().unwrap_or("(none)")
            ),
            None,
        )
    });
    let rollout_ev = facts
        .rollout
        .as_ref()
        .filter(|r| !r.changes.is_empty())
        .map(|r| {
            let changes: Vec<String> = r.changes.iter().map(ToString::to_string).collect();
            log.add(
                EvidenceKind::Rollout,
                target.to_string(),
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
            )
        });
    let trace_ev = facts.traces.as_ref().map(|f| {
        let (source, summary) = traces_summary(f);
        log.add(EvidenceKind::Trace, source, summary, None)
    });
    let history = facts.memory.as_ref().filter(|m| !m.occurrences.is_empty());
    let history_ev = history.map(|m| {
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
        log.add(
            EvidenceKind::History,
            format!(
                "incidentmemory/{}",
                crate::workload::incident_name(target, facts.signal)
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
        )
    });

    let cite = |ids: &[&Option<String>]| -> Vec<String> {
        ids.iter().filter_map(|i| (*i).clone()).collect()
    };
    let with_events = |mut ids: Vec<String>| {
        ids.extend(event_evs.iter().cloned());
        ids
    };
    let rollout = facts
        .rollout
        .as_ref()
        .filter(|r| r.failing_pod_is_new && !r.changes.is_empty());
    let describe_changes = |r: &Rollout| {
        let fields: Vec<&str> = r.changes.iter().map(|c| c.field.as_str()).collect();
        format!("revision {} changed {}", r.revision, fields.join(", "))
    };
    let container_name = container.clone().unwrap_or_else(|| "the container".into());

    let mut hypotheses = Vec::new();
    match facts.signal {
        SignalKind::OOMKilled => {
            let limit = limit
                .and_then(|r| r.memory_limit.clone())
                .unwrap_or_else(|| "its limit".into());
            hypotheses.push(hypothesis(
                Category::OutOfMemory,
                format!("{container_name} of {target} needs more memory than {limit}: the kernel killed it (OOMKilled)"),
                0.9,
                with_events(cite(&[&signal_ev, &termination_ev, &resources_ev])),
                Some(ActionType::RaiseMemoryLimit),
            ));
            if let Some(r) = rollout {
                hypotheses.push(hypothesis(
                    Category::BadRollout,
                    format!(
                        "the rollout of {target} to {} made {container_name} use or get less memory",
                        describe_changes(r)
                    ),
                    0.4,
                    cite(&[&rollout_ev]),
                    Some(ActionType::Rollback),
                ));
            }
        }
        SignalKind::CrashLoopBackOff => {
            if let Some(r) = rollout {
                hypotheses.push(hypothesis(
                    Category::BadRollout,
                    format!(
                        "the rollout of {target} to {} and the new pods crash",
                        describe_changes(r)
                    ),
                    0.85,
                    with_events(cite(&[&rollout_ev, &signal_ev, &termination_ev])),
                    Some(ActionType::Rollback),
                ));
            }
            hypotheses.push(hypothesis(
                Category::CrashLoop,
                format!(
                    "{container_name} of {target} exits repeatedly; a restart may clear a bad state"
                ),
                if rollout.is_some() { 0.3 } else { 0.6 },
                with_events(cite(&[&signal_ev, &termination_ev])),
                Some(ActionType::RestartPod),
            ));
        }
        SignalKind::ImagePullBackOff => {
            let image_change =
                rollout.filter(|r| r.changes.iter().any(|c| c.field.ends_with(".image")));
            if let Some(r) = image_change {
                hypotheses.push(hypothesis(
                    Category::BadRollout,
                    format!(
                        "the rollout of {target} to {} and the new image cannot be pulled",
                        describe_changes(r)
                    ),
                    0.85,
                    with_events(cite(&[&rollout_ev, &signal_ev])),
                    Some(ActionType::Rollback),
                ));
            }
            hypotheses.push(hypothesis(
                Category::BadImage,
                format!("the image of {container_name} of {target} does not exist or the registry refuses it"),
                if image_change.is_some() { 0.5 } else { 0.85 },
                with_events(cite(&[&signal_ev])),
                Some(ActionType::Escalate),
            ));
        }
        SignalKind::Unschedulable => {
            hypotheses.push(hypothesis(
                Category::Unschedulable,
                format!("no node can take the pods of {target} (resources, affinity or taints)"),
                0.85,
                with_events(cite(&[&signal_ev])),
                Some(ActionType::Escalate),
            ));
        }
        SignalKind::ReadinessFailing => {
            if let Some(r) = rollout {
                hypotheses.push(hypothesis(
                    Category::BadRollout,
                    format!(
                        "the rollout of {target} to {} and the new pods never become ready",
                        describe_changes(r)
                    ),
                    0.6,
                    with_events(cite(&[&rollout_ev, &signal_ev])),
                    Some(ActionType::Rollback),
                ));
            }
            hypotheses.push(hypothesis(
                Category::ProbeFailure,
                format!("{target} runs but fails its readiness probe"),
                0.5,
                with_events(cite(&[&signal_ev])),
                Some(ActionType::RestartPod),
            ));
        }
        SignalKind::HealthCheck
        | SignalKind::ConversionRate
        | SignalKind::EventRateDrop
        | SignalKind::TraceErrorRate
        | SignalKind::TraceLatency => {
            // No pod failed: a rollout shortly before the signal is the
            // first suspect.
            let seen = facts.observation.as_ref().map(|o| o.observed_at.0);
            let recent = facts.rollout.as_ref().filter(|r| {
                !r.changes.is_empty()
                    && match (r.at.as_ref(), seen) {
                        (Some(at), Some(seen)) => {
                            at.0 <= seen && seen.duration_since(at.0) <= RECENT_ROLLOUT
                        }
                        _ => false,
                    }
            });
            let (category, what, action) = match facts.signal {
                SignalKind::HealthCheck => (
                    Category::ProbeFailure,
                    format!("{target} fails the health check its callers depend on"),
                    ActionType::RolloutRestart,
                ),
                SignalKind::ConversionRate => (
                    Category::ConversionDrop,
                    format!("fewer business flows complete at {target} than the policy's minimum"),
                    ActionType::Escalate,
                ),
                SignalKind::EventRateDrop => (
                    Category::TrafficDrop,
                    format!("business events of {target} arrive far below their usual rate"),
                    ActionType::Escalate,
                ),
                SignalKind::TraceErrorRate => (
                    Category::ErrorRate,
                    format!("requests to {target} fail more often than the policy allows"),
                    ActionType::Escalate,
                ),
                _ => (
                    Category::Latency,
                    format!("requests to {target} are slower than the policy allows"),
                    ActionType::Escalate,
                ),
            };
            // The traces name the operation where the failure starts. In
            // the target itself it is the target's own error rate or latency
            // (and a recent rollout of it stays the first suspect); in
            // another service it is a dependency, and rolling the target
            // back would not help.
            let culprit = facts
                .traces
                .as_ref()
                .and_then(|f| Some((f, f.culprit.as_ref()?)))
                .filter(|_| facts.signal != SignalKind::EventRateDrop);
            let in_target = culprit.filter(|(f, c)| c.service == f.service);
            let what = match in_target {
                Some((_, c)) => culprit_statement(c),
                None => what,
            };
            if let Some(r) = recent {
                hypotheses.push(hypothesis(
                    Category::BadRollout,
                    format!(
                        "the rollout of {target} to {} shortly before: {what}",
                        describe_changes(r)
                    ),
                    0.7,
                    with_events(cite(&[&rollout_ev, &signal_ev, &trace_ev])),
                    Some(ActionType::Rollback),
                ));
            }
            match culprit {
                Some((_, c)) if in_target.is_some() => {
                    let category = match c.symptom {
                        traces::Symptom::Errors => Category::ErrorRate,
                        traces::Symptom::Latency => Category::Latency,
                    };
                    hypotheses.push(hypothesis(
                        category,
                        what,
                        if recent.is_some() { 0.65 } else { 0.75 },
                        with_events(cite(&[&trace_ev, &signal_ev])),
                        Some(action),
                    ));
                }
                Some((f, c)) => {
                    let calls = c
                        .chain
                        .iter()
                        .position(|s| *s == f.service)
                        .is_some_and(|i| i + 1 < c.chain.len());
                    let relation = if calls {
                        format!(
                            "{target} (service {}) calls it and fails with it",
                            f.service
                        )
                    } else {
                        format!(
                            "{target} (service {}) is on the path of these failing requests",
                            f.service
                        )
                    };
                    hypotheses.push(hypothesis(
                        Category::Dependency,
                        format!("{}; {relation}", culprit_statement(c)),
                        0.75,
                        with_events(cite(&[&trace_ev, &signal_ev])),
                        Some(ActionType::Escalate),
                    ));
                    hypotheses.push(hypothesis(
                        category,
                        what,
                        if recent.is_some() { 0.4 } else { 0.5 },
                        with_events(cite(&[&signal_ev])),
                        Some(action),
                    ));
                }
                None => hypotheses.push(hypothesis(
                    category,
                    what,
                    if recent.is_some() { 0.4 } else { 0.6 },
                    with_events(cite(&[&signal_ev, &trace_ev])),
                    Some(action),
                )),
            }
        }
    }

    // What worked before for this very problem outranks the rules' guess.
    if let (Some(m), Some(id)) = (history, &history_ev) {
        for h in &mut hypotheses {
            let Some(action) = h.proposed_action else {
                continue;
            };
            if let Some(t) = m.actions.iter().find(|t| t.type_ == action) {
                if t.effective > 0 {
                    h.confidence = (h.confidence + 0.05).min(1.0);
                    h.evidence.push(id.clone());
                } else if t.ineffective > 0 {
                    h.confidence = (h.confidence - 0.2).max(0.05);
                    h.evidence.push(id.clone());
                }
            }
        }
    }
    hypotheses.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    let lead = hypotheses.first().cloned().unwrap_or_else(|| {
        hypothesis(
            Category::Unknown,
            "the evidence does not point to a known cause".into(),
            0.1,
            vec![],
            None,
        )
    });
    Diagnosis {
        analyzer: RULES.into(),
        category: lead.category,
        root_cause: lead.statement.clone(),
        confidence: lead.confidence,
        proposed_action: lead.proposed_action,
        rules_category: None,
        hypotheses,
        evidence: log.0,
        diagnosed_at: Time(now),
    }
}

/// "operation X of service Y fails (n of m spans, up from k% in the
/// baseline), propagating through A → B → Y".
fn culprit_statement(c: &traces::Culprit) -> String {
    let chain = if c.chain.len() > 1 {
        c.chain.join(" → ")
    } else {
        format!("{} alone", c.service)
    };
    match c.symptom {
        traces::Symptom::Errors => {
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
        traces::Symptom::Latency => {
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

/// The trace evidence: (source, summary).
fn traces_summary(f: &traces::TraceFindings) -> (String, String) {
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

#[cfg(test)]
mod tests;
