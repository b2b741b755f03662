//! The Scout's readers over captured objects, for the evaluation: what it
//! would see in objects as `kubectl get -o json` prints them.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::measured::Verdict;
use super::read_pod;
use super::workloads::detect::{self, Finding};
use crate::crd::{SignalKind, Trigger};

/// One thing the Scout would open (or count on) an incident for.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    pub kind: SignalKind,
    pub message: String,
}

fn of_kind<T: DeserializeOwned>(objects: &[Value], kind: &str) -> Vec<T> {
    objects
        .iter()
        .filter(|o| o.get("kind").and_then(Value::as_str) == Some(kind))
        .filter_map(|o| serde_json::from_value(o.clone()).ok())
        .collect()
}

/// What the Scout would see in a set of objects (pods and the workloads
/// that own them) under `triggers` at `now`: the pods' signals and the
/// workloads' firing readings. Objects of other kinds are not read.
pub fn detect(objects: &[Value], triggers: &[Trigger], now: Timestamp) -> Vec<Seen> {
    let trigger = |kind: SignalKind| triggers.iter().find(|t| t.type_ == kind);
    let mut seen: Vec<Seen> = of_kind::<Pod>(objects, "Pod")
        .iter()
        .flat_map(|p| read_pod(p, triggers, now).signals)
        .map(|s| Seen {
            kind: s.kind,
            message: s.message,
        })
        .collect();
    let mut findings: Vec<Finding> = Vec::new();
    let replicasets = of_kind::<ReplicaSet>(objects, "ReplicaSet");
    for d in of_kind::<Deployment>(objects, "Deployment") {
        if let Some(t) = trigger(SignalKind::FailedCreate) {
            findings.push(detect::deployment_failed_create(&d, &replicasets, t, now));
        }
        if let Some(t) = trigger(SignalKind::RolloutStalled) {
            findings.push(detect::deployment_rollout_stalled(&d, t, now));
        }
    }
    let pods = of_kind::<Pod>(objects, "Pod");
    for s in of_kind::<StatefulSet>(objects, "StatefulSet") {
        if let Some(t) = trigger(SignalKind::FailedCreate) {
            findings.push(detect::statefulset_failed_create(&s, &[], t, now));
        }
        if let Some(t) = trigger(SignalKind::RolloutStalled) {
            findings.push(detect::statefulset_rollout_stalled(&s, &pods, t, now));
        }
    }
    if let Some(t) = trigger(SignalKind::JobFailed) {
        let jobs = of_kind::<Job>(objects, "Job");
        let mut cronjobs = std::collections::BTreeSet::new();
        for j in &jobs {
            match detect::cronjob_of(j) {
                Some(c) => {
                    cronjobs.insert(c);
                }
                None => findings.push(detect::job_failed(j)),
            }
        }
        for c in cronjobs {
            let runs: Vec<detect::Run> = jobs
                .iter()
                .filter(|j| detect::cronjob_of(j).as_deref() == Some(c.as_str()))
                .filter_map(detect::run_of)
                .collect();
            findings.push(detect::cronjob_failed_runs(&c, &runs, t));
        }
    }
    seen.extend(
        findings
            .into_iter()
            .filter(|f| f.verdict == Verdict::Firing)
            .map(|f| Seen {
                kind: f.kind,
                message: f.summary,
            }),
    );
    seen
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn triggers() -> Vec<Trigger> {
        SignalKind::ALL.iter().map(|k| Trigger::of(*k)).collect()
    }

    fn now() -> Timestamp {
        "2026-12-01T10:10:00Z".parse().expect("a time")
    }

    #[test]
    fn a_completed_job_and_its_pod_are_no_trouble_and_a_failed_one_is() {
        let job = |name: &str, condition: &str, reason: &str| {
            json!({
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": { "name": name, "namespace": "shop" },
                "spec": { "backoffLimit": 1, "template": { "spec": { "containers": [] } } },
                "status": { "conditions": [{
                    "type": condition, "status": "True", "reason": reason,
                    "message": "Job has reached the specified backoff limit",
                    "lastTransitionTime": "2026-12-01T10:00:00Z"
                }], "failed": 2 }
            })
        };
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "export-ok-x", "namespace": "shop", "uid": "u1" },
            "status": { "phase": "Succeeded", "containerStatuses": [{
                "name": "app", "image": "w", "imageID": "", "ready": false, "restartCount": 0,
                "state": { "terminated": { "exitCode": 0, "reason": "Completed" } }
            }] }
        });
        let done = detect(
            &[job("export-ok", "Complete", "CompletionsReached"), pod],
            &triggers(),
            now(),
        );
        assert_eq!(done, vec![]);
        let failed = detect(
            &[job("report", "Failed", "BackoffLimitExceeded")],
            &triggers(),
            now(),
        );
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0].kind, SignalKind::JobFailed);
        assert!(
            failed[0].message.contains("BackoffLimitExceeded"),
            "{failed:?}"
        );
    }

    #[test]
    fn a_deployment_refused_by_a_quota_is_seen_without_any_pod() {
        let d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": "billing", "namespace": "shop" },
            "spec": { "replicas": 1, "selector": {}, "template": {} },
            "status": { "conditions": [{
                "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                "message": "pods \"billing-1\" is forbidden: exceeded quota: team-memory, requested: limits.memory=64Mi, used: limits.memory=0, limited: limits.memory=32Mi",
                "lastTransitionTime": "2026-12-01T10:00:00Z"
            }] }
        });
        let seen = detect(&[d], &triggers(), now());
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].kind, SignalKind::FailedCreate);
        assert!(seen[0].message.contains("team-memory"), "{seen:?}");
        assert_eq!(detect(&[], &triggers(), now()), vec![]);
    }
}
