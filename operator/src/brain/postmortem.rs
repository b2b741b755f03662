//! The blameless post-mortem written when an incident ends. It states what
//! happened to the system and what would prevent a repeat; it names no one.

use std::fmt::Write;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::crd::{ActionState, Category, Diagnosis, Incident, IncidentStatus, Outcome, Phase};
use crate::markdown::{evidence_list, inline};

/// The most a post-mortem may take in the Incident's status.
pub const MAX_LEN: usize = 8 * 1024;

fn prevention(category: Category) -> &'static str {
    match category {
        Category::OutOfMemory => {
            "Size the memory limit from observed peak usage with headroom, and look for leaks if usage grows without bound; a load test before release shows both."
        }
        Category::BadRollout => {
            "Gate rollouts on readiness and error-rate analysis (progressive delivery), and test configuration changes in a staging environment before production."
        }
        Category::BadImage => {
            "Resolve and verify image references in CI (by digest), and make sure the cluster can pull from the registry before the rollout."
        }
        Category::Unschedulable => {
            "Keep requests realistic and capacity ahead of demand (cluster autoscaling, quotas reviewed); check affinity and taints when adding constraints."
        }
        Category::CrashLoop => {
            "Find why the process exits (logs, exit code, termination message) and handle the failing case; add a test that reproduces it."
        }
        Category::ProbeFailure => {
            "Make the readiness probe test what the service needs to serve, with timeouts that fit its start-up and its dependencies."
        }
        Category::Dependency => {
            "Give calls to dependencies timeouts, retries with backoff and a circuit breaker, and alert on the dependency's own health."
        }
        Category::ConversionDrop => {
            "Watch the business flow end to end (conversion on the event stream, errors in traces), and gate rollouts on it, not only on pod health."
        }
        Category::TrafficDrop => {
            "Alert on event rates against their own baseline, and trace the path from the entry point to the producer when they fall."
        }
        Category::ErrorRate => {
            "Gate rollouts on error-rate analysis, and give each dependency call a timeout and a bounded retry."
        }
        Category::Latency => {
            "Set latency objectives per operation, and find the slowest span's cause (a dependency, a lock, a missing index) before raising timeouts."
        }
        Category::ConfigError => {
            "Render and validate manifests before they reach the cluster (every referenced ConfigMap, Secret, key and volume exists, the command runs), and ship configuration with the workload that reads it."
        }
        Category::InitFailure => {
            "Give init containers the same logs, timeouts and tests as the main container, and make what they wait for observable."
        }
        Category::JobFailure => {
            "Make the job idempotent and retry-safe, size its backoffLimit and activeDeadlineSeconds from its real run times, and alert on failed runs."
        }
        Category::StorageUnavailable => {
            "Set a default StorageClass, check that claims name a class and access mode the cluster provides, and watch for claims pending longer than provisioning takes."
        }
        Category::QuotaExceeded => {
            "Size ResourceQuotas and LimitRanges with the workloads they cover, set requests and limits in every template, and check Pod Security levels before a rollout."
        }
        Category::NodeFailure => {
            "Keep node capacity ahead of demand, set requests so the scheduler sees real usage, and spread replicas across nodes so one node's failure is survivable."
        }
        Category::Unknown => {
            "Add the missing signal or evidence so that the next occurrence can be diagnosed."
        }
    }
}

fn time(t: Option<&Time>) -> String {
    t.map(|t| t.0.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "?".into())
}

/// Renders the post-mortem of an incident that has ended.
pub fn render(incident: &Incident, now: Timestamp) -> String {
    let status = incident.status.clone().unwrap_or_default();
    let mut out = String::new();
    summary(&mut out, incident, &status, now);
    if let Some(d) = &status.diagnosis {
        root_cause(&mut out, d);
    }
    timeline(&mut out, &status, now);
    let taken = status
        .actions
        .iter()
        .filter(|a| a.state == ActionState::Succeeded)
        .count();
    let _ = writeln!(
        out,
        "\n## Actions\n\n{taken} action(s) taken, {} recorded.\n",
        status.actions.len()
    );
    let category = status
        .diagnosis
        .as_ref()
        .map(|d| d.category)
        .unwrap_or(Category::Unknown);
    let _ = writeln!(
        out,
        "## What would prevent a recurrence\n\n{}",
        prevention(category)
    );
    truncate(&mut out);
    out
}

/// When the incident started: when it was detected, or first seen.
fn started(status: &IncidentStatus) -> Option<&Time> {
    status.detected_at.as_ref().or(status.first_seen.as_ref())
}

/// The title, the summary and the impact.
fn summary(out: &mut String, incident: &Incident, status: &IncidentStatus, now: Timestamp) {
    let spec = &incident.spec;
    let ns = incident.metadata.namespace.as_deref().unwrap_or("");
    let name = incident.metadata.name.as_deref().unwrap_or("");
    let outcome = match status.phase {
        Phase::Resolved => "resolved",
        Phase::Escalated => "escalated to people",
        _ => "closed",
    };
    let _ = writeln!(
        out,
        "# Post-mortem: {} of {} in namespace {ns}\n",
        spec.signal.as_str(),
        spec.target
    );
    let started = started(status);
    let duration = started
        .map(|s| now.duration_since(s.0).as_secs())
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "**Summary.** {} of {} in namespace {ns} was detected at {} and {outcome} after {duration} s. Incident `{name}`, {} occurrence(s) of the signal.\n",
        spec.signal.as_str(),
        spec.target,
        time(started),
        status.occurrences
    );
    let _ = writeln!(
        out,
        "**Impact.** {} was affected{}.\n",
        spec.target,
        status
            .last_signal
            .as_ref()
            .and_then(|s| s.pod.as_ref())
            .map(|p| format!(" (last seen on pod {})", inline(p)))
            .unwrap_or_default()
    );
}

/// The diagnosis: the root cause, every hypothesis and the evidence cited.
fn root_cause(out: &mut String, d: &Diagnosis) {
    let _ = writeln!(
        out,
        "**Root cause** ({:?}, confidence {:.0}%, analyser {}). {}\n",
        d.category,
        d.confidence * 100.0,
        inline(&d.analyzer),
        inline(&d.root_cause)
    );
    let _ = writeln!(out, "## Hypotheses\n");
    for (i, h) in d.hypotheses.iter().enumerate() {
        let _ = writeln!(
            out,
            "- {:?} ({:.0}%): {} [evidence: {}]",
            h.category,
            h.confidence * 100.0,
            inline(&h.statement),
            inline(&h.evidence.join(", "))
        );
        // What would settle the two leading hypotheses.
        if i < 2 {
            for (what, text) in [("confirm", &h.confirm), ("refute", &h.refute)] {
                if let Some(t) = text {
                    let _ = writeln!(out, "  - would {what}: {}", inline(t));
                }
            }
        }
    }
    let _ = writeln!(out, "\n## Evidence\n");
    evidence_list(out, &d.evidence);
    out.push('\n');
}

/// Detection, diagnosis, every action and the end, in order.
fn timeline(out: &mut String, status: &IncidentStatus, now: Timestamp) {
    let _ = writeln!(out, "## Timeline\n");
    let _ = writeln!(
        out,
        "- {} detected: {}",
        time(started(status)),
        inline(
            status
                .last_signal
                .as_ref()
                .map(|s| s.message.as_str())
                .unwrap_or("")
        )
    );
    if let Some(d) = &status.diagnosis {
        let _ = writeln!(
            out,
            "- {} diagnosed: {:?}",
            time(Some(&d.diagnosed_at)),
            d.category
        );
    }
    for a in &status.actions {
        let outcome = match a.outcome {
            Some(Outcome::Effective) => ", effective",
            Some(Outcome::Ineffective) => ", ineffective",
            None => "",
        };
        let _ = writeln!(
            out,
            "- {} {} {:?}{outcome}: {}",
            time(Some(&a.recorded_at)),
            a.type_.as_str(),
            a.state,
            inline(&a.detail)
        );
    }
    if let Some(m) = &status.mitigated_at {
        let _ = writeln!(
            out,
            "- {} mitigated: the last action had completed and the signal was clear",
            time(Some(m))
        );
    }
    match status.phase {
        Phase::Resolved => {
            let _ = writeln!(
                out,
                "- {} resolved: the signal cleared and stayed clear",
                time(status.resolved_at.as_ref())
            );
        }
        Phase::Escalated => {
            let _ = writeln!(
                out,
                "- {} escalated: {}",
                now.strftime("%Y-%m-%d %H:%M:%S UTC"),
                inline(status.escalation_reason.as_deref().unwrap_or(""))
            );
        }
        _ => {}
    }
}

/// Cuts a post-mortem longer than `MAX_LEN` at a character boundary and
/// says so.
fn truncate(out: &mut String) {
    if out.len() > MAX_LEN {
        let mut end = MAX_LEN - 32;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push_str("\n\n(truncated)\n");
    }
}
