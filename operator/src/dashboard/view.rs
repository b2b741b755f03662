//! What the page receives: plain values computed from the operator's own
//! state, so the page only lays them out. Every string here may come from the
//! cluster (a pod's message, a model's hypothesis, a post-mortem) and is
//! data: the page writes it as text, never as markup. Links are the one
//! exception the page turns into `href`s, so only `http(s)` URLs pass.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use regex::Regex;
use serde::Serialize;

use crate::crd::{
    ActionRecord, ActionState, ActionType, Category, ConditionStatus, Diagnosis, EvidenceKind,
    GitHubStatus, Incident, IncidentMemory, IncidentStatus, Outcome, Phase, SignalKind,
};
use crate::memory::similar;
use crate::scout::measured::{Entry, Verdict};

/// Everything the overview shows, pushed on every change.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Open incidents first, then the most recent.
    pub incidents: Vec<IncidentRow>,
    /// One series per ConversionRate trigger.
    pub conversion: Vec<ConversionSeries>,
    pub services: Vec<ServiceHealth>,
    /// The incident the page shows, when it shows one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident: Option<IncidentDetail>,
}

/// One line of the incident list.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IncidentRow {
    pub namespace: String,
    pub name: String,
    pub phase: Phase,
    /// `Deployment/quote`.
    pub target: String,
    pub signal: SignalKind,
    pub category: Option<Category>,
    /// When the current episode began; the page counts the age from it.
    pub detected_at: Option<String>,
    pub occurrences: i64,
    pub last_action: Option<String>,
    /// Whether the incident still needs the operator or a person.
    pub open: bool,
}

/// A ConversionRate trigger's measurements: the ratio over time and the
/// policy's minimum.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConversionSeries {
    pub namespace: String,
    pub policy: String,
    pub workload: String,
    pub verdict: &'static str,
    pub summary: String,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    pub firing_since: Option<String>,
    /// Oldest first.
    pub points: Vec<Point>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    /// Milliseconds since the epoch, for the chart's time axis.
    pub t: i64,
    pub value: f64,
    pub threshold: Option<f64>,
}

/// One workload: its pods and the health checks the operator runs on it.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceHealth {
    pub namespace: String,
    pub workload: String,
    /// Healthy, Degraded (some pods not ready), Down (no pod ready, or a
    /// health check fails) or Unknown (nothing measured yet).
    pub status: &'static str,
    pub ready_pods: usize,
    pub pods: usize,
    pub checks: Vec<HealthCheckView>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckView {
    pub policy: String,
    pub verdict: &'static str,
    pub summary: String,
    pub at: String,
}

/// One pod of a workload, as the service list counts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodState {
    pub namespace: String,
    pub workload: String,
    pub ready: bool,
}

/// Whether a pod counts as serving: Ready, and not on its way out.
pub fn pod_ready(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The incident page.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IncidentDetail {
    #[serde(flatten)]
    pub row: IncidentRow,
    pub policy: String,
    pub fingerprint: String,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    pub resolved_at: Option<String>,
    pub escalation_reason: Option<String>,
    pub last_signal: Option<String>,
    /// Detection, condition changes and actions, oldest first.
    pub timeline: Vec<TimelineEntry>,
    pub conditions: Vec<ConditionView>,
    pub actions: Vec<ActionView>,
    pub diagnosis: Option<DiagnosisView>,
    pub issue: Option<Link>,
    /// The would-be issue, when no GitHub credentials are configured.
    pub issue_preview: Option<String>,
    pub pull_requests: Vec<Link>,
    pub post_mortem: Option<String>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    pub at: String,
    pub title: String,
    pub detail: String,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConditionView {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: ConditionStatus,
    pub reason: String,
    pub message: String,
    pub at: String,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ActionView {
    pub id: String,
    #[serde(rename = "type")]
    pub type_: ActionType,
    pub state: ActionState,
    pub outcome: Option<Outcome>,
    pub detail: String,
    pub target: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub recorded_at: String,
    pub finished_at: Option<String>,
    pub pull_request: Option<Link>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DiagnosisView {
    pub analyzer: String,
    pub category: Category,
    pub root_cause: String,
    pub confidence: f64,
    pub proposed_action: Option<ActionType>,
    pub diagnosed_at: String,
    pub hypotheses: Vec<HypothesisView>,
    pub evidence: Vec<EvidenceView>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HypothesisView {
    pub category: Category,
    pub statement: String,
    pub confidence: f64,
    pub evidence: Vec<String>,
    pub proposed_action: Option<ActionType>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EvidenceView {
    pub id: String,
    pub kind: EvidenceKind,
    pub source: String,
    pub summary: String,
    pub observed_at: Option<String>,
    /// The traces the evidence mentions, linked to Jaeger.
    pub traces: Vec<Link>,
}

/// A link the page may follow: `url` is always http or https.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub label: String,
    pub url: String,
}

/// The history of the incident's fingerprint and of similar problems.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemoryView {
    /// This problem's own history, once one of its episodes has ended.
    pub own: Option<MemoryEntry>,
    /// Other problems of the namespace whose evidence shares terms with this
    /// one, most similar first.
    pub similar: Vec<SimilarView>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemoryEntry {
    pub total_occurrences: i64,
    pub best_action: Option<ActionType>,
    pub last_seen: Option<String>,
    pub occurrences: Vec<OccurrenceView>,
    pub actions: Vec<TallyView>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OccurrenceView {
    pub incident: String,
    pub detected_at: String,
    pub category: Option<Category>,
    pub actions: Vec<ActionType>,
    pub outcome: Option<Outcome>,
    pub time_to_mitigate_seconds: Option<i64>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TallyView {
    #[serde(rename = "type")]
    pub type_: ActionType,
    pub effective: i32,
    pub ineffective: i32,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SimilarView {
    pub name: String,
    pub target: String,
    pub signal: SignalKind,
    /// Shared terms over all terms of both (0 to 1).
    pub score: f64,
    pub shared: Vec<String>,
    pub best_action: Option<ActionType>,
    pub total_occurrences: i64,
}

fn time(t: &Time) -> String {
    t.0.to_string()
}

fn verdict(v: Verdict) -> &'static str {
    match v {
        Verdict::Healthy => "Healthy",
        Verdict::Firing => "Firing",
        Verdict::Unknown => "Unknown",
    }
}

fn is_open(phase: Phase) -> bool {
    !matches!(phase, Phase::Resolved | Phase::Escalated | Phase::Failed)
}

/// A URL the page may put in an `href`: http or https only, so a
/// `javascript:` URL written into a status can never run.
pub fn safe_url(url: &str) -> Option<String> {
    let lower = url.trim().to_ascii_lowercase();
    (lower.starts_with("https://") || lower.starts_with("http://")).then(|| url.trim().to_string())
}

static TRACE_ID: LazyLock<Option<Regex>> = LazyLock::new(|| {
    // A 32-digit hex word is a W3C trace id wherever it appears; a 16-digit
    // one (Jaeger's short ids) only right after the word "trace", because
    // fingerprints and span ids are 16 digits too.
    Regex::new(r"(?i)\b([0-9a-f]{32})\b|\btrace(?:[ _-]?id)?[\s:=#]*([0-9a-f]{16})\b").ok()
});

/// The trace ids a text mentions, each linked to the Jaeger UI at
/// `jaeger_ui` (its base URL), in order and once each.
pub fn trace_links(text: &str, jaeger_ui: &str) -> Vec<Link> {
    let base = jaeger_ui.trim_end_matches('/');
    let mut links: Vec<Link> = Vec::new();
    let Some(pattern) = TRACE_ID.as_ref() else {
        return links;
    };
    for caps in pattern.captures_iter(text) {
        let Some(id) = caps.get(1).or(caps.get(2)) else {
            continue;
        };
        let id = id.as_str().to_ascii_lowercase();
        if links.iter().any(|l| l.label == id) {
            continue;
        }
        if let Some(url) = safe_url(&format!("{base}/trace/{id}")) {
            links.push(Link { label: id, url });
        }
    }
    links
}

/// The line of the incident list.
pub fn row(inc: &Incident) -> IncidentRow {
    let status = inc.status.clone().unwrap_or_default();
    IncidentRow {
        namespace: inc.metadata.namespace.clone().unwrap_or_default(),
        name: inc.metadata.name.clone().unwrap_or_default(),
        phase: status.phase,
        target: inc.spec.target.to_string(),
        signal: inc.spec.signal,
        category: status.diagnosis.as_ref().map(|d| d.category),
        detected_at: status
            .detected_at
            .as_ref()
            .or(status.first_seen.as_ref())
            .or(inc.metadata.creation_timestamp.as_ref())
            .map(time),
        occurrences: status.occurrences,
        last_action: status.last_action.clone(),
        open: is_open(status.phase),
    }
}

/// The incident list: open incidents first, each group newest first.
pub fn rows<'a>(incidents: impl IntoIterator<Item = &'a Incident>) -> Vec<IncidentRow> {
    let mut rows: Vec<IncidentRow> = incidents.into_iter().map(row).collect();
    rows.sort_by(|a, b| {
        b.open
            .cmp(&a.open)
            .then_with(|| b.detected_at.cmp(&a.detected_at))
            .then_with(|| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)))
    });
    rows
}

/// The conversion-rate series, from the board's ConversionRate entries.
pub fn conversion(entries: &[Entry]) -> Vec<ConversionSeries> {
    let mut series: Vec<ConversionSeries> = entries
        .iter()
        .filter(|e| e.reading.subject.kind == SignalKind::ConversionRate)
        .map(|e| {
            let r = &e.reading;
            ConversionSeries {
                namespace: r.subject.namespace.clone(),
                policy: r.subject.policy.clone(),
                workload: r.subject.workload.clone(),
                verdict: verdict(r.verdict),
                summary: r.summary.clone(),
                value: r.value.filter(|v| v.is_finite()),
                threshold: r.threshold.filter(|v| v.is_finite()),
                firing_since: e.firing_since.map(|t| t.to_string()),
                points: e
                    .history
                    .iter()
                    // JSON has no NaN or infinity; a ratio over zero events
                    // is not a point.
                    .filter(|(_, v, _)| v.is_finite())
                    .map(|(at, v, th)| Point {
                        t: at.as_millisecond(),
                        value: *v,
                        threshold: th.filter(|t| t.is_finite()),
                    })
                    .collect(),
            }
        })
        .collect();
    series.sort_by(|a, b| {
        (&a.namespace, &a.policy, &a.workload).cmp(&(&b.namespace, &b.policy, &b.workload))
    });
    series
}

/// Service health: every workload with pods covered by a policy or with a
/// health check on the board.
pub fn services(pods: &[PodState], entries: &[Entry]) -> Vec<ServiceHealth> {
    let mut by_workload: BTreeMap<(String, String), ServiceHealth> = BTreeMap::new();
    let mut slot = |ns: &str, workload: &str| -> (String, String) {
        let key = (ns.to_string(), workload.to_string());
        by_workload
            .entry(key.clone())
            .or_insert_with(|| ServiceHealth {
                namespace: ns.to_string(),
                workload: workload.to_string(),
                status: "Unknown",
                ready_pods: 0,
                pods: 0,
                checks: vec![],
            });
        key
    };
    let mut keys = Vec::new();
    for p in pods {
        keys.push((slot(&p.namespace, &p.workload), Some(p.ready), None));
    }
    for e in entries
        .iter()
        .filter(|e| e.reading.subject.kind == SignalKind::HealthCheck)
    {
        let s = &e.reading.subject;
        keys.push((slot(&s.namespace, &s.workload), None, Some(e)));
    }
    for (key, ready, entry) in keys {
        let Some(svc) = by_workload.get_mut(&key) else {
            continue;
        };
        if let Some(ready) = ready {
            svc.pods += 1;
            svc.ready_pods += usize::from(ready);
        }
        if let Some(e) = entry {
            svc.checks.push(HealthCheckView {
                policy: e.reading.subject.policy.clone(),
                verdict: verdict(e.reading.verdict),
                summary: e.reading.summary.clone(),
                at: e.reading.at.to_string(),
            });
        }
    }
    by_workload
        .into_values()
        .map(|mut svc| {
            let failing = svc.checks.iter().any(|c| c.verdict == "Firing");
            let checked = svc.checks.iter().any(|c| c.verdict == "Healthy");
            svc.status = if failing || (svc.pods > 0 && svc.ready_pods == 0) {
                "Down"
            } else if svc.ready_pods < svc.pods {
                "Degraded"
            } else if svc.pods > 0 || checked {
                "Healthy"
            } else {
                "Unknown"
            };
            svc
        })
        .collect()
}

/// The incident page, from the incident's status. `jaeger_ui` is the base
/// URL trace ids are linked to.
pub fn detail(inc: &Incident, jaeger_ui: &str) -> IncidentDetail {
    let status = inc.status.clone().unwrap_or_default();
    let row = row(inc);
    let timeline = timeline(inc, &status);
    let diagnosis = status
        .diagnosis
        .as_ref()
        .map(|d| diagnosis_view(d, jaeger_ui));
    let actions: Vec<ActionView> = status.actions.iter().map(action_view).collect();
    let github = status.github.clone().unwrap_or_default();
    IncidentDetail {
        policy: inc.spec.policy.clone(),
        fingerprint: inc.spec.fingerprint.clone(),
        first_seen: status.first_seen.as_ref().map(time),
        last_seen: status.last_seen.as_ref().map(time),
        resolved_at: status.resolved_at.as_ref().map(time),
        escalation_reason: status.escalation_reason.clone(),
        last_signal: status
            .last_signal
            .as_ref()
            .map(|s| format!("{}: {}", s.reason, s.message)),
        timeline,
        conditions: status
            .conditions
            .iter()
            .map(|c| ConditionView {
                type_: c.type_.clone(),
                status: c.status,
                reason: c.reason.clone(),
                message: c.message.clone(),
                at: time(&c.last_transition_time),
            })
            .collect(),
        pull_requests: actions
            .iter()
            .filter_map(|a| a.pull_request.clone())
            .collect(),
        actions,
        diagnosis,
        issue: issue_link(&github),
        issue_preview: github.preview.clone(),
        post_mortem: status.post_mortem.clone(),
        row,
    }
}

/// Detection, every condition's last change, every action recorded and
/// finished, and the resolution, oldest first.
fn timeline(inc: &Incident, status: &IncidentStatus) -> Vec<TimelineEntry> {
    let mut timeline: Vec<(Timestamp, TimelineEntry)> = Vec::new();
    let mut at = |t: &Time, title: String, detail: String| {
        timeline.push((
            t.0,
            TimelineEntry {
                at: time(t),
                title,
                detail,
            },
        ));
    };
    let detected = status.detected_at.as_ref().or(status.first_seen.as_ref());
    if let Some(t) = detected {
        let detail = status
            .last_signal
            .as_ref()
            .map(|s| s.message.clone())
            .unwrap_or_default();
        at(t, format!("Detected: {}", inc.spec.signal.as_str()), detail);
    }
    for c in &status.conditions {
        if c.type_ == "Detected" && Some(&c.last_transition_time) == detected {
            // The same moment as the detection entry above.
            continue;
        }
        at(
            &c.last_transition_time,
            format!("{} {:?}: {}", c.type_, c.status, c.reason),
            c.message.clone(),
        );
    }
    for a in &status.actions {
        at(
            &a.recorded_at,
            format!("{} recorded", a.type_.as_str()),
            a.target.as_ref().map(|t| t.to_string()).unwrap_or_default(),
        );
        if let Some(done) = &a.finished_at {
            let outcome = a.outcome.map(|o| format!(", {o:?}")).unwrap_or_default();
            at(
                done,
                format!("{} {:?}{outcome}", a.type_.as_str(), a.state),
                a.detail.clone(),
            );
        }
    }
    if let Some(t) = &status.mitigated_at {
        at(
            t,
            "Mitigated".into(),
            "the last action had completed and the signal was clear".into(),
        );
    }
    if let Some(t) = &status.resolved_at {
        at(t, "Resolved".into(), String::new());
    }
    // Stable: entries of the same instant keep the order above (detection,
    // conditions, actions).
    timeline.sort_by_key(|(t, _)| *t);
    timeline.into_iter().map(|(_, e)| e).collect()
}

/// The diagnosis with its hypotheses and evidence, trace ids in the
/// evidence linked to `jaeger_ui`.
fn diagnosis_view(d: &Diagnosis, jaeger_ui: &str) -> DiagnosisView {
    DiagnosisView {
        analyzer: d.analyzer.clone(),
        category: d.category,
        root_cause: d.root_cause.clone(),
        confidence: d.confidence,
        proposed_action: d.proposed_action,
        diagnosed_at: time(&d.diagnosed_at),
        hypotheses: d
            .hypotheses
            .iter()
            .map(|h| HypothesisView {
                category: h.category,
                statement: h.statement.clone(),
                confidence: h.confidence,
                evidence: h.evidence.clone(),
                proposed_action: h.proposed_action,
            })
            .collect(),
        evidence: d
            .evidence
            .iter()
            .map(|e| EvidenceView {
                id: e.id.clone(),
                kind: e.kind,
                source: e.source.clone(),
                summary: e.summary.clone(),
                observed_at: e.observed_at.as_ref().map(time),
                traces: trace_links(&format!("{} {}", e.source, e.summary), jaeger_ui),
            })
            .collect(),
    }
}

fn action_view(a: &ActionRecord) -> ActionView {
    ActionView {
        id: a.id.clone(),
        type_: a.type_,
        state: a.state,
        outcome: a.outcome,
        detail: a.detail.clone(),
        target: a.target.as_ref().map(|t| t.to_string()),
        from: a.from.clone(),
        to: a.to.clone(),
        recorded_at: time(&a.recorded_at),
        finished_at: a.finished_at.as_ref().map(time),
        // Only a link that is safe to put in a page.
        pull_request: a.pull_request.as_ref().and_then(|pr| {
            safe_url(&pr.url).map(|url| Link {
                label: format!("#{}", pr.number),
                url,
            })
        }),
    }
}

/// The incident's GitHub issue, `owner/repo#n`, when its URL is safe to
/// link.
fn issue_link(github: &GitHubStatus) -> Option<Link> {
    github
        .issue_url
        .as_deref()
        .and_then(safe_url)
        .map(|url| Link {
            label: match github.issue_number {
                Some(n) => format!("{}#{n}", github.repository),
                None => github.repository.clone(),
            },
            url,
        })
}

fn memory_entry(m: &IncidentMemory) -> MemoryEntry {
    let status = m.status.clone().unwrap_or_default();
    MemoryEntry {
        total_occurrences: status.total_occurrences,
        best_action: status.best_action,
        last_seen: status.last_seen.as_ref().map(time),
        occurrences: m
            .spec
            .occurrences
            .iter()
            .rev()
            .map(|o| OccurrenceView {
                incident: o.incident.clone(),
                detected_at: time(&o.detected_at),
                category: o.category,
                actions: o.actions.clone(),
                outcome: o.outcome,
                time_to_mitigate_seconds: o.time_to_mitigate_seconds,
            })
            .collect(),
        actions: m
            .spec
            .actions
            .iter()
            .map(|t| TallyView {
                type_: t.type_,
                effective: t.effective,
                ineffective: t.ineffective,
            })
            .collect(),
    }
}

/// How many similar problems the page lists.
pub const SIMILAR: usize = 5;

/// This incident's memory and the most similar other memories of its
/// namespace: those sharing terms of evidence (Jaccard similarity of their
/// keywords), or, before this problem has any history, those of the same
/// signal kind.
pub fn memory(inc: &Incident, memories: &[IncidentMemory]) -> MemoryView {
    let own = memories
        .iter()
        .find(|m| m.spec.fingerprint == inc.spec.fingerprint);
    let ours: Vec<String> = own.map(|m| m.spec.keywords.clone()).unwrap_or_default();
    let similar: Vec<SimilarView> =
        similar::rank(&inc.spec.fingerprint, inc.spec.signal, &ours, memories)
            .into_iter()
            .take(SIMILAR)
            .map(|m| {
                let status = m.memory.status.clone().unwrap_or_default();
                SimilarView {
                    name: m.memory.metadata.name.clone().unwrap_or_default(),
                    target: m.memory.spec.target.to_string(),
                    signal: m.memory.spec.signal,
                    score: m.score,
                    shared: m.shared,
                    best_action: status.best_action,
                    total_occurrences: status.total_occurrences,
                }
            })
            .collect();
    MemoryView {
        own: own.map(memory_entry),
        similar,
    }
}

#[cfg(test)]
mod tests;
