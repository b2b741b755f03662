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
}

impl Cited {
    /// The ids of the evidence of these kinds that was recorded, in order.
    pub(super) fn ids(&self, what: &[Cite]) -> Vec<String> {
        what.iter()
            .filter_map(|w| match w {
                Cite::Signal => self.signal.clone(),
                Cite::Termination => self.termination.clone(),
                Cite::Resources => self.resources.clone(),
                Cite::Rollout => self.rollout.clone(),
                Cite::Traces => self.traces.clone(),
            })
            .collect()
    }
}

/// Records the evidence the facts hold.
pub(super) fn collect(facts: &Facts) -> (Vec<Evidence>, Cited) {
    let mut log = EvidenceLog::default();
    let container = facts
        .observation
        .as_ref()
        .and_then(|o| o.container.as_ref());
    let signal = facts.observation.as_ref().map(|o| {
        log.add(
            EvidenceKind::ContainerState,
            pod_source(facts, o.container.as_ref()),
            o.message.clone(),
            Some(o.observed_at.0),
        )
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
    let cited = Cited {
        signal,
        termination,
        events,
        resources,
        rollout,
        traces,
        history,
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
    facts
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
