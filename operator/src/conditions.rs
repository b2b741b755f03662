//! Conditions in the Kubernetes API convention.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::crd::{Condition, ConditionStatus};

// The condition types, as `kubectl wait --for=condition=TYPE` names them.
// An Incident's:
/// The Scout saw the problem.
pub const DETECTED: &str = "Detected";
/// The Brain named a root cause.
pub const DIAGNOSED: &str = "Diagnosed";
/// A step was taken (True), or why none was (False, with the reason).
pub const REMEDIATED: &str = "Remediated";
/// The signal cleared and stayed clear for the verification window.
pub const RESOLVED: &str = "Resolved";
/// The problem was handed to people.
pub const ESCALATED: &str = "Escalated";
/// A person's decision on the waiting step.
pub const APPROVED: &str = "Approved";
/// Whether the diagnosis could read traces.
pub const TRACE_EVIDENCE: &str = "TraceEvidence";
/// Whether the language model answered.
pub const MODEL_CONSULTED: &str = "ModelConsulted";
/// Whether the incident's GitHub issue is in line with it.
pub const GITHUB_SYNCED: &str = "GitHubSynced";
/// Whether the policy's runbook for the incident is cited (set only when
/// the policy names a runbook ConfigMap).
pub const RUNBOOK: &str = "Runbook";
// A RemediationPolicy's:
/// The policy is valid and may act.
pub const READY: &str = "Ready";
/// Whether the Kafka event rates a policy's triggers read are measured.
pub const KAFKA_AVAILABLE: &str = "KafkaAvailable";
/// Whether the traces a policy's triggers read are measured.
pub const TRACES_AVAILABLE: &str = "TracesAvailable";
/// Whether a policy's health checks run.
pub const HEALTH_CHECKS_AVAILABLE: &str = "HealthChecksAvailable";
/// Whether the Prometheus queries of a policy's Metric triggers answer.
pub const METRICS_AVAILABLE: &str = "MetricsAvailable";

/// Sets a condition, keeping its `lastTransitionTime` when the status does not
/// change, as `kubectl wait` and people reading `describe` expect.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) {
    // Messages often quote outside text (an error, a signal): no secret in
    // a status, whatever the caller passed.
    let message = crate::redact::string(&message.into());
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Time(now);
            }
            c.status = status;
            c.reason = reason.to_string();
            c.message = message;
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message,
            last_transition_time: Time(now),
            observed_generation: generation,
        }),
    }
}

pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    get(conditions, type_).is_some_and(|c| c.status == ConditionStatus::True)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_changes_only_with_the_status() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let mut c = Vec::new();
        set(
            &mut c,
            "Ready",
            ConditionStatus::False,
            "Invalid",
            "a",
            Some(1),
            t0,
        );
        set(
            &mut c,
            "Ready",
            ConditionStatus::False,
            "StillInvalid",
            "b",
            Some(2),
            t1,
        );
        assert_eq!(c[0].last_transition_time, Time(t0));
        assert_eq!(c[0].reason, "StillInvalid");
        set(
            &mut c,
            "Ready",
            ConditionStatus::True,
            "Valid",
            "",
            Some(3),
            t1,
        );
        assert_eq!(c[0].last_transition_time, Time(t1));
        assert_eq!(c.len(), 1);
    }
}
