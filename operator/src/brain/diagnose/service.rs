//! Signals the operator measures itself: health checks, business event
//! rates, and the error rate and latency in the traces. No pod failed, so a
//! rollout shortly before the signal is the first suspect; the traces say
//! whether the failure starts in the target itself or in a service it
//! depends on.

use k8s_openapi::jiff::SignedDuration;

use super::evidence::culprit_statement;
use super::{Case, Cite, Rollout, hypothesis};
use crate::brain::Facts;
use crate::brain::traces::{Culprit, Symptom, TraceFindings};
use crate::crd::{ActionType, Category, Hypothesis, SignalKind, WorkloadRef};

/// How long before a signal the operator measures itself a rollout is a
/// suspect.
const RECENT_ROLLOUT: SignedDuration = SignedDuration::from_mins(30);

pub(super) fn rules(c: &Case) -> Vec<Hypothesis> {
    let recent = recent_rollout(c.facts);
    let (category, what, action) = symptom(c.facts, c.target);
    // The traces name the operation where the failure starts. In the target
    // itself it is the target's own error rate or latency (and a recent
    // rollout of it stays the first suspect); in another service it is a
    // dependency, and rolling the target back would not help.
    let culprit = c
        .facts
        .traces
        .as_ref()
        .and_then(|f| Some((f, f.culprit.as_ref()?)))
        .filter(|_| c.facts.signal != SignalKind::EventRateDrop);
    let in_target = culprit.filter(|(f, cul)| cul.service == f.service);
    let what = match in_target {
        Some((_, cul)) => culprit_statement(cul),
        None => what,
    };
    let mut hypotheses = c.suspect(
        recent,
        &format!("shortly before: {what}"),
        0.7,
        &[Cite::Rollout, Cite::Signal, Cite::Traces],
    );
    let confidence = |fresh: f64, after_rollout: f64| {
        if recent.is_some() {
            after_rollout
        } else {
            fresh
        }
    };
    match culprit {
        Some((_, cul)) if in_target.is_some() => hypotheses.push(hypothesis(
            match cul.symptom {
                Symptom::Errors => Category::ErrorRate,
                Symptom::Latency => Category::Latency,
            },
            what,
            confidence(0.75, 0.65),
            c.cite_with_events(&[Cite::Traces, Cite::Signal]),
            Some(action),
        )),
        Some((findings, cul)) => {
            hypotheses.push(dependency(c, findings, cul));
            hypotheses.push(hypothesis(
                category,
                what,
                confidence(0.5, 0.4),
                c.cite_with_events(&[Cite::Signal]),
                Some(action),
            ));
        }
        None => hypotheses.push(hypothesis(
            category,
            what,
            confidence(0.6, 0.4),
            c.cite_with_events(&[Cite::Signal, Cite::Traces]),
            Some(action),
        )),
    }
    hypotheses
}

/// The latest rollout, when it changed the template at most
/// `RECENT_ROLLOUT` before the signal was seen.
pub(super) fn recent_rollout(facts: &Facts) -> Option<&Rollout> {
    let seen = facts.observation.as_ref().map(|o| o.observed_at.0);
    facts.rollout.as_ref().filter(|r| {
        !r.changes.is_empty()
            && match (r.at.as_ref(), seen) {
                (Some(at), Some(seen)) => {
                    at.0 <= seen && seen.duration_since(at.0) <= RECENT_ROLLOUT
                }
                _ => false,
            }
    })
}

/// What the signal itself says is wrong, and what to do when nothing better
/// is known.
fn symptom(facts: &Facts, target: &WorkloadRef) -> (Category, String, ActionType) {
    match facts.signal {
        // The alert's text is data: it is cited, never followed; the
        // policy's trigger says what kind of trouble its alerts mean.
        SignalKind::Alert => (
            facts
                .alert_category
                .unwrap_or(crate::crd::AlertTrigger::DEFAULT_CATEGORY),
            format!("an alert the policy accepts fires for {target}"),
            ActionType::RolloutRestart,
        ),
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
    }
}

/// The failure starts in another service: a person has to look at it.
fn dependency(c: &Case, findings: &TraceFindings, cul: &Culprit) -> Hypothesis {
    let calls = cul
        .chain
        .iter()
        .position(|s| *s == findings.service)
        .is_some_and(|i| i + 1 < cul.chain.len());
    let relation = if calls {
        format!(
            "{} (service {}) calls it and fails with it",
            c.target, findings.service
        )
    } else {
        format!(
            "{} (service {}) is on the path of these failing requests",
            c.target, findings.service
        )
    };
    hypothesis(
        Category::Dependency,
        format!("{}; {relation}", culprit_statement(cul)),
        0.75,
        c.cite_with_events(&[Cite::Traces, Cite::Signal]),
        Some(ActionType::Escalate),
    )
}
