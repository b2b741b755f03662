//! The detectors on objects shaped as the Kubernetes controllers write them
//! (pkg/controller/replicaset, deployment/util, statefulset, job, cronjob),
//! at the tests' `now()` (2026-11-26T10:00:00Z).

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use serde_json::{Value, json};

use super::*;
use crate::testing::now;

const QUOTA: &str = r#"pods "web-7d9c4b5f6-x2x7q" is forbidden: exceeded quota: compute-quota, requested: limits.memory=512Mi, used: limits.memory=1Gi, limited: limits.memory=1Gi"#;
const LIMIT_RANGE: &str = r#"pods "web-7d9c4b5f6-x2x7q" is forbidden: maximum memory usage per Container is 256Mi, but limit is 512Mi"#;
const POD_SECURITY: &str = r#"pods "web-7d9c4b5f6-x2x7q" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container "app" must set securityContext.allowPrivilegeEscalation=false), runAsNonRoot != true (pod or container "app" must set securityContext.runAsNonRoot=true)"#;

/// One case of a table: what it is, the object, what it owns or what is
/// said of it, the verdict, and words the summary has.
type Case<'a, O, W> = (&'a str, O, W, Verdict, Vec<&'a str>);

fn trigger(kind: SignalKind, grace: Option<i64>) -> Trigger {
    Trigger {
        grace_period_seconds: grace,
        ..Trigger::of(kind)
    }
}

fn cond(type_: &str, status: &str, reason: &str, message: &str, at: &str) -> Value {
    json!({ "type": type_, "status": status, "reason": reason, "message": message,
        "lastUpdateTime": at, "lastTransitionTime": at })
}

/// The Deployment `web` asking for 3 pods, with `status` as the Deployment
/// controller writes it.
fn deployment(replicas: i32, updated: i32, available: i32, conditions: Vec<Value>) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "web", "namespace": "shop", "uid": "uid-deploy-web", "generation": 2 },
        "spec": {
            "replicas": 3, "progressDeadlineSeconds": 600,
            "selector": { "matchLabels": { "app": "web" } },
            "template": { "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "app", "image": "web:2" }] } }
        },
        "status": {
            "observedGeneration": 2, "replicas": replicas, "updatedReplicas": updated,
            "readyReplicas": available, "availableReplicas": available,
            "unavailableReplicas": 3 - available, "conditions": conditions
        }
    }))
    .expect("a Deployment")
}

fn available(ok: bool) -> Value {
    if ok {
        cond(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            "2026-11-26T09:40:00Z",
        )
    } else {
        cond(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            "2026-11-26T09:57:00Z",
        )
    }
}

fn progressing(reason: &str, at: &str) -> Value {
    let (status, message) = match reason {
        "ProgressDeadlineExceeded" => (
            "False",
            r#"ReplicaSet "web-7d9c4b5f6" has timed out progressing."#,
        ),
        "NewReplicaSetAvailable" => (
            "True",
            r#"ReplicaSet "web-7d9c4b5f6" has successfully progressed."#,
        ),
        "ReplicaSetUpdated" => ("True", r#"ReplicaSet "web-7d9c4b5f6" is progressing."#),
        _ => ("Unknown", "Deployment is paused"),
    };
    cond("Progressing", status, reason, message, at)
}

fn replica_failure(message: &str, at: &str) -> Value {
    cond("ReplicaFailure", "True", "FailedCreate", message, at)
}

/// The Deployment's new ReplicaSet, with the ReplicaSet controller's
/// conditions.
fn replicaset(conditions: Vec<Value>) -> ReplicaSet {
    serde_json::from_value(json!({
        "metadata": {
            "name": "web-7d9c4b5f6", "namespace": "shop", "uid": "uid-rs-web",
            "labels": { "app": "web", "pod-template-hash": "7d9c4b5f6" },
            "annotations": { "deployment.kubernetes.io/revision": "2" },
            "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                "uid": "uid-deploy-web", "controller": true, "blockOwnerDeletion": true }]
        },
        "spec": { "replicas": 3, "selector": { "matchLabels": { "app": "web" } } },
        "status": { "replicas": 1, "fullyLabeledReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
            "observedGeneration": 1,
            "conditions": conditions.into_iter().map(|mut c| {
                c.as_object_mut().map(|o| o.remove("lastUpdateTime"));
                c
            }).collect::<Vec<_>>() }
    }))
    .expect("a ReplicaSet")
}

#[test]
fn a_deployment_refused_pods_is_failed_create_past_its_grace_period_and_quotes_the_refusal() {
    let t = trigger(SignalKind::FailedCreate, None);
    let at = "2026-11-26T09:57:00Z";
    // (what, deployment, its ReplicaSets, verdict, words the summary has)
    let cases: Vec<Case<Deployment, Vec<ReplicaSet>>> = vec![
        (
            "a ResourceQuota",
            deployment(
                1,
                1,
                1,
                vec![
                    available(false),
                    progressing("ReplicaSetUpdated", at),
                    replica_failure(QUOTA, at),
                ],
            ),
            vec![],
            Verdict::Firing,
            vec![
                "Deployment/web has 1 of 3 pods (1 available)",
                "for 3m0s",
                "exceeded quota: compute-quota, requested: limits.memory=512Mi",
            ],
        ),
        (
            "a LimitRange",
            deployment(
                0,
                0,
                0,
                vec![available(false), replica_failure(LIMIT_RANGE, at)],
            ),
            vec![],
            Verdict::Firing,
            vec![
                "has 0 of 3 pods",
                "maximum memory usage per Container is 256Mi, but limit is 512Mi",
            ],
        ),
        (
            "Pod Security",
            deployment(
                0,
                0,
                0,
                vec![available(false), replica_failure(POD_SECURITY, at)],
            ),
            vec![],
            Verdict::Firing,
            vec!["violates PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false"],
        ),
        (
            "only the ReplicaSet says so yet",
            deployment(1, 1, 1, vec![available(false)]),
            vec![replicaset(vec![replica_failure(QUOTA, at)])],
            Verdict::Firing,
            vec!["has 1 of 3 pods", "exceeded quota: compute-quota"],
        ),
        (
            "refused for 30 s, within the 60 s grace period",
            deployment(
                1,
                1,
                1,
                vec![replica_failure(QUOTA, "2026-11-26T09:59:30Z")],
            ),
            vec![],
            Verdict::Unknown,
            vec!["within the grace period", "exceeded quota"],
        ),
        (
            "every pod made",
            deployment(
                3,
                3,
                3,
                vec![available(true), progressing("NewReplicaSetAvailable", at)],
            ),
            vec![replicaset(vec![])],
            Verdict::Healthy,
            vec!["has 3 of 3 pods (3 available)", "refuses none"],
        ),
        (
            "a failed delete is no refusal to create",
            deployment(
                3,
                3,
                3,
                vec![cond(
                    "ReplicaFailure",
                    "True",
                    "FailedDelete",
                    "pods \"web-1\" not found",
                    at,
                )],
            ),
            vec![],
            Verdict::Healthy,
            vec!["refuses none"],
        ),
    ];
    for (what, d, rs, verdict, words) in cases {
        let f = deployment_failed_create(&d, &rs, &t, now());
        assert_eq!(f.kind, SignalKind::FailedCreate);
        assert_eq!(f.verdict, verdict, "{what}: {}", f.summary);
        for w in words {
            assert!(f.summary.contains(w), "{what}: {w:?} in {:?}", f.summary);
        }
        assert_eq!(
            f.recheck_after,
            (verdict == Verdict::Unknown).then_some(Duration::from_secs(30)),
            "{what}: looked at again when the grace period ends"
        );
    }
}

#[test]
fn a_refusal_quoted_from_the_cluster_is_redacted() {
    let leak = r#"admission webhook "images.shop.example" denied the request: pull from https://ci:hunter2hunter2@registry.shop.example/web:2 refused"#;
    let d = deployment(0, 0, 0, vec![replica_failure(leak, "2026-11-26T09:50:00Z")]);
    let f = deployment_failed_create(&d, &[], &trigger(SignalKind::FailedCreate, None), now());
    assert_eq!(f.verdict, Verdict::Firing);
    assert!(!f.summary.contains("hunter2"), "{}", f.summary);
    assert!(f.summary.contains("denied the request"), "{}", f.summary);
}

/// The StatefulSet `db` asking for 3 pods, `have` made and `ready` ready.
fn statefulset(have: i32, ready: i32, current: &str, update: &str, updated: i32) -> StatefulSet {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": { "name": "db", "namespace": "shop", "uid": "uid-sts-db", "generation": 2 },
        "spec": {
            "replicas": 3, "serviceName": "db", "podManagementPolicy": "OrderedReady",
            "updateStrategy": { "type": "RollingUpdate", "rollingUpdate": { "partition": 0 } },
            "selector": { "matchLabels": { "app": "db" } },
            "template": { "metadata": { "labels": { "app": "db" } },
                "spec": { "containers": [{ "name": "db", "image": "db:2" }] } }
        },
        "status": {
            "observedGeneration": 2, "replicas": have, "readyReplicas": ready, "availableReplicas": ready,
            "currentReplicas": have - updated, "updatedReplicas": updated,
            "currentRevision": current, "updateRevision": update, "collisionCount": 0
        }
    }))
    .expect("a StatefulSet")
}

/// The StatefulSet controller's event for a pod the API server refused.
fn refused(sts: &str, pod: &str, first: &str, last: &str, count: i32) -> Event {
    serde_json::from_value(json!({
        "metadata": { "name": format!("{sts}.187b2c3d4e5f6a70"), "namespace": "shop" },
        "involvedObject": { "kind": "StatefulSet", "namespace": "shop", "name": sts,
            "uid": format!("uid-sts-{sts}"), "apiVersion": "apps/v1", "resourceVersion": "4711" },
        "reason": "FailedCreate",
        "message": format!(r#"create Pod {pod} in StatefulSet {sts} failed error: pods "{pod}" is forbidden: exceeded quota: compute-quota, requested: pods=1, used: pods=4, limited: pods=4"#),
        "source": { "component": "statefulset-controller" },
        "firstTimestamp": first, "lastTimestamp": last, "count": count, "type": "Warning",
        "eventTime": null, "reportingComponent": "statefulset-controller", "reportingInstance": ""
    }))
    .expect("an Event")
}

#[test]
fn a_statefulset_short_of_pods_with_recent_refusals_is_failed_create() {
    let t = trigger(SignalKind::FailedCreate, Some(120));
    let short = statefulset(1, 1, "db-5f8b6c7d9", "db-5f8b6c7d9", 1);
    let full = statefulset(3, 3, "db-5f8b6c7d9", "db-5f8b6c7d9", 3);
    let cases: Vec<Case<&StatefulSet, Vec<Event>>> = vec![
        (
            "refused for 5 minutes",
            &short,
            vec![refused(
                "db",
                "db-1",
                "2026-11-26T09:55:00Z",
                "2026-11-26T09:59:30Z",
                7,
            )],
            Verdict::Firing,
            vec![
                "StatefulSet/db has 1 of 3 pods (1 ready), 7 refusals",
                "for 5m0s",
                r#"pod db-1: pods "db-1" is forbidden: exceeded quota: compute-quota"#,
            ],
        ),
        (
            "refused for a minute, within the grace period",
            &short,
            vec![refused(
                "db",
                "db-1",
                "2026-11-26T09:59:00Z",
                "2026-11-26T09:59:30Z",
                2,
            )],
            Verdict::Unknown,
            vec!["within the grace period"],
        ),
        (
            "the last refusal is older than the controller ever waits to retry",
            &short,
            vec![refused(
                "db",
                "db-1",
                "2026-11-26T09:00:00Z",
                "2026-11-26T09:30:00Z",
                9,
            )],
            Verdict::Healthy,
            vec!["no pod of it was refused"],
        ),
        (
            "another StatefulSet's refusals",
            &short,
            vec![refused(
                "db-replica",
                "db-replica-0",
                "2026-11-26T09:55:00Z",
                "2026-11-26T09:59:30Z",
                7,
            )],
            Verdict::Healthy,
            vec!["no pod of it was refused"],
        ),
        (
            "every pod made, old refusals",
            &full,
            vec![refused(
                "db",
                "db-1",
                "2026-11-26T09:55:00Z",
                "2026-11-26T09:58:00Z",
                7,
            )],
            Verdict::Healthy,
            vec!["has 3 of 3 pods (3 ready); none is missing"],
        ),
    ];
    for (what, s, events, verdict, words) in cases {
        let f = statefulset_failed_create(s, &events, &t, now());
        assert_eq!(f.verdict, verdict, "{what}: {}", f.summary);
        for w in words {
            assert!(f.summary.contains(w), "{what}: {w:?} in {:?}", f.summary);
        }
    }
}

#[test]
fn a_deployment_past_its_progress_deadline_is_a_stalled_rollout_and_one_progressing_is_not() {
    let t = trigger(SignalKind::RolloutStalled, None);
    let cases = [
        (
            "past its deadline for 2 minutes",
            deployment(
                4,
                1,
                2,
                vec![
                    available(false),
                    progressing("ProgressDeadlineExceeded", "2026-11-26T09:58:00Z"),
                ],
            ),
            Verdict::Firing,
            vec![
                "Deployment/web rollout made no progress within its deadline of 600s and has been stalled for 2m0s",
                r#"ReplicaSet "web-7d9c4b5f6" has timed out progressing."#,
                "1 of 3 pods updated, 2 available",
            ],
        ),
        (
            "past its deadline 20 s ago",
            deployment(
                4,
                1,
                2,
                vec![progressing(
                    "ProgressDeadlineExceeded",
                    "2026-11-26T09:59:40Z",
                )],
            ),
            Verdict::Unknown,
            vec!["within the grace period"],
        ),
        (
            "rolling out",
            deployment(
                4,
                2,
                2,
                vec![
                    available(true),
                    progressing("ReplicaSetUpdated", "2026-11-26T09:59:00Z"),
                ],
            ),
            Verdict::Healthy,
            vec!["not stalled (ReplicaSetUpdated)"],
        ),
        (
            "rolled out",
            deployment(
                3,
                3,
                3,
                vec![
                    available(true),
                    progressing("NewReplicaSetAvailable", "2026-11-26T09:50:00Z"),
                ],
            ),
            Verdict::Healthy,
            vec![
                "not stalled (NewReplicaSetAvailable)",
                "3 of 3 pods updated",
            ],
        ),
        (
            "paused by a person",
            deployment(
                3,
                1,
                3,
                vec![progressing("DeploymentPaused", "2026-11-26T09:00:00Z")],
            ),
            Verdict::Healthy,
            vec!["not stalled (DeploymentPaused)"],
        ),
    ];
    for (what, d, verdict, words) in cases {
        let f = deployment_rollout_stalled(&d, &t, now());
        assert_eq!(f.kind, SignalKind::RolloutStalled);
        assert_eq!(f.verdict, verdict, "{what}: {}", f.summary);
        for w in words {
            assert!(f.summary.contains(w), "{what}: {w:?} in {:?}", f.summary);
        }
    }
}

/// A pod of the StatefulSet `db` at `ordinal`, of `revision`; not ready
/// since `since` unless `ready`.
fn sts_pod(ordinal: u32, revision: &str, ready: bool, since: &str) -> Pod {
    let name = format!("db-{ordinal}");
    let state = if ready {
        json!({ "running": { "startedAt": since } })
    } else {
        json!({ "waiting": { "reason": "CrashLoopBackOff",
            "message": format!("back-off 5m0s restarting failed container=db pod={name}_shop(uid-{name})") } })
    };
    serde_json::from_value(json!({
        "metadata": {
            "name": name, "namespace": "shop", "uid": format!("uid-{name}"),
            "creationTimestamp": since,
            "labels": { "app": "db", "controller-revision-hash": revision,
                "statefulset.kubernetes.io/pod-name": name, "apps.kubernetes.io/pod-index": ordinal.to_string() },
            "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db",
                "uid": "uid-sts-db", "controller": true, "blockOwnerDeletion": true }]
        },
        "status": {
            "phase": "Running",
            "conditions": [
                { "type": "PodScheduled", "status": "True", "lastTransitionTime": since },
                { "type": "Ready", "status": if ready { "True" } else { "False" }, "lastTransitionTime": since,
                  "reason": if ready { Value::Null } else { "ContainersNotReady".into() } }
            ],
            "containerStatuses": [{ "name": "db", "ready": ready, "restartCount": if ready { 0 } else { 6 },
                "image": "db:2", "imageID": "", "state": state }]
        }
    }))
    .expect("a Pod")
}

#[test]
fn a_statefulset_rollout_held_by_one_unready_ordinal_names_it() {
    let t = trigger(SignalKind::RolloutStalled, None);
    let (old, new) = ("db-5f8b6c7d9", "db-7c9d8e6f5");
    let rolling = statefulset(3, 2, old, new, 1);
    let done = statefulset(3, 3, new, new, 3);
    let settled = "2026-11-20T08:00:00Z";
    let cases: Vec<Case<&StatefulSet, Vec<Pod>>> = vec![
        (
            "ordinal 2 updated and crash-looping for 6 minutes",
            &rolling,
            vec![
                sts_pod(0, old, true, settled),
                sts_pod(1, old, true, settled),
                sts_pod(2, new, false, "2026-11-26T09:54:00Z"),
            ],
            Verdict::Firing,
            vec![
                "StatefulSet/db rollout to revision db-7c9d8e6f5 is stuck at ordinal 2",
                "pod db-2 runs the new revision and has not been ready for 6m0s (container db: CrashLoopBackOff)",
                "1 of 3 pods updated (current revision db-5f8b6c7d9)",
            ],
        ),
        (
            "ordinal 2 updated 30 s ago, still starting",
            &rolling,
            vec![
                sts_pod(0, old, true, settled),
                sts_pod(1, old, true, settled),
                sts_pod(2, new, false, "2026-11-26T09:59:30Z"),
            ],
            Verdict::Unknown,
            vec!["waits on ordinal 2", "within the grace period"],
        ),
        (
            "ordinal 2 updated and ready: the rollout moves on",
            &rolling,
            vec![
                sts_pod(0, old, true, settled),
                sts_pod(1, old, false, "2026-11-26T09:50:00Z"),
                sts_pod(2, new, true, "2026-11-26T09:59:00Z"),
            ],
            Verdict::Healthy,
            vec!["every updated pod is ready"],
        ),
        (
            "rolled out",
            &done,
            vec![
                sts_pod(0, new, true, settled),
                sts_pod(1, new, true, settled),
                sts_pod(2, new, true, settled),
            ],
            Verdict::Healthy,
            vec!["not rolling out"],
        ),
    ];
    for (what, s, pods, verdict, words) in cases {
        let f = statefulset_rollout_stalled(s, &pods, &t, now());
        assert_eq!(f.verdict, verdict, "{what}: {}", f.summary);
        for w in words {
            assert!(f.summary.contains(w), "{what}: {w:?} in {:?}", f.summary);
        }
    }
}

/// A Job as the Job controller leaves it: `conditions` and the counts of
/// its pods. `cronjob` makes it a run of that CronJob, scheduled at
/// `scheduled`.
fn job(
    name: &str,
    spec: Value,
    failed: i32,
    succeeded: i32,
    conditions: Vec<Value>,
    cronjob: Option<(&str, &str)>,
) -> Job {
    let mut meta = json!({
        "name": name, "namespace": "shop", "uid": format!("uid-{name}"),
        "creationTimestamp": "2026-11-26T09:00:00Z",
        "labels": { "batch.kubernetes.io/controller-uid": format!("uid-{name}"),
            "batch.kubernetes.io/job-name": name, "controller-uid": format!("uid-{name}"), "job-name": name }
    });
    if let Some((owner, scheduled)) = cronjob {
        meta["annotations"] =
            json!({ "batch.kubernetes.io/cronjob-scheduled-timestamp": scheduled });
        meta["ownerReferences"] = json!([{ "apiVersion": "batch/v1", "kind": "CronJob", "name": owner,
            "uid": format!("uid-cj-{owner}"), "controller": true, "blockOwnerDeletion": true }]);
    }
    let mut spec = spec;
    spec["template"] = json!({ "metadata": { "labels": { "app": "backup", "job-name": name } },
        "spec": { "restartPolicy": "Never", "containers": [{ "name": "main", "image": "backup:1" }] } });
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": spec,
        "status": { "startTime": "2026-11-26T09:00:01Z", "failed": failed, "succeeded": succeeded,
            "active": 0, "ready": 0, "terminating": 0,
            "uncountedTerminatedPods": {}, "conditions": conditions }
    }))
    .expect("a Job")
}

fn jcond(type_: &str, reason: &str, message: &str) -> Value {
    json!({ "type": type_, "status": "True", "reason": reason, "message": message,
        "lastProbeTime": "2026-11-26T09:05:00Z", "lastTransitionTime": "2026-11-26T09:05:00Z" })
}

/// The conditions the Job controller writes when a Job fails: the interim
/// FailureTarget, then Failed once its pods are gone.
fn failed_with(reason: &str, message: &str) -> Vec<Value> {
    vec![
        jcond("FailureTarget", reason, message),
        jcond("Failed", reason, message),
    ]
}

fn backoff_limit_exceeded(name: &str, cronjob: Option<(&str, &str)>) -> Job {
    job(
        name,
        json!({ "backoffLimit": 3, "completions": 1, "parallelism": 1 }),
        4,
        0,
        failed_with(
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ),
        cronjob,
    )
}

fn completed(name: &str, cronjob: Option<(&str, &str)>) -> Job {
    job(
        name,
        json!({ "backoffLimit": 3, "completions": 1, "parallelism": 1 }),
        0,
        1,
        vec![
            jcond(
                "SuccessCriteriaMet",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ),
            jcond(
                "Complete",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ),
        ],
        cronjob,
    )
}

#[test]
fn a_failed_job_is_job_failed_with_its_reason_and_pods_and_a_completed_or_running_one_is_not() {
    let cases = [
        (
            backoff_limit_exceeded("migrate", None),
            Verdict::Firing,
            "Job/migrate failed: BackoffLimitExceeded after 4 failed pods, backoffLimit 3: Job has reached the specified backoff limit",
        ),
        (
            job(
                "report",
                json!({ "backoffLimit": 6, "activeDeadlineSeconds": 60 }),
                1,
                0,
                failed_with(
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                ),
                None,
            ),
            Verdict::Firing,
            "Job/report failed: DeadlineExceeded after 1 failed pod, activeDeadlineSeconds 60: Job was active longer than specified deadline",
        ),
        (
            job(
                "index",
                json!({ "backoffLimit": 6, "podFailurePolicy": { "rules": [{ "action": "FailJob",
                    "onExitCodes": { "containerName": "main", "operator": "In", "values": [42] } }] } }),
                1,
                0,
                failed_with(
                    "PodFailurePolicy",
                    "Container main for pod shop/index-x7k2p failed with exit code 42 matching FailJob rule at index 0",
                ),
                None,
            ),
            Verdict::Firing,
            "Job/index failed: PodFailurePolicy after 1 failed pod: Container main for pod shop/index-x7k2p failed with exit code 42 matching FailJob rule at index 0",
        ),
        (
            completed("migrate", None),
            Verdict::Healthy,
            "Job/migrate completed",
        ),
        (
            job("migrate", json!({ "backoffLimit": 3 }), 1, 0, vec![], None),
            Verdict::Healthy,
            "Job/migrate is running",
        ),
        (
            job(
                "migrate",
                json!({ "backoffLimit": 3 }),
                4,
                0,
                vec![jcond(
                    "FailureTarget",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                )],
                None,
            ),
            Verdict::Unknown,
            "Job/migrate is failing; its pods are being stopped",
        ),
    ];
    for (j, verdict, summary) in cases {
        let f = job_failed(&j);
        assert_eq!(f.kind, SignalKind::JobFailed);
        assert_eq!((f.verdict, f.summary.as_str()), (verdict, summary));
    }
}

#[test]
fn a_cronjob_fails_when_its_last_runs_all_failed_and_clears_when_its_last_run_succeeds() {
    let fail = |n: u32| {
        backoff_limit_exceeded(
            &format!("backup-2901234{n}"),
            Some(("backup", &format!("2026-11-26T09:{n}0:00Z"))),
        )
    };
    let ok = |n: u32| {
        completed(
            &format!("backup-2901234{n}"),
            Some(("backup", &format!("2026-11-26T09:{n}0:00Z"))),
        )
    };
    let runs = |jobs: Vec<Job>| -> Vec<Run> { jobs.iter().filter_map(run_of).collect() };
    let two = Trigger::of(SignalKind::JobFailed);
    let three = Trigger {
        failed_runs: Some(3),
        ..Trigger::of(SignalKind::JobFailed)
    };
    let one = Trigger {
        failed_runs: Some(1),
        ..Trigger::of(SignalKind::JobFailed)
    };
    let cases: Vec<Case<Vec<Job>, &Trigger>> = vec![
        (
            "the last two runs failed",
            vec![ok(1), fail(2), fail(3)],
            &two,
            Verdict::Firing,
            vec![
                "CronJob/backup: its last 2 runs failed: backup-29012343 (BackoffLimitExceeded after 4 failed pods, backoffLimit 3: Job has reached the specified backoff limit); backup-29012342 (",
            ],
        ),
        (
            "the last run succeeded",
            vec![fail(1), fail(2), ok(3)],
            &two,
            Verdict::Healthy,
            vec!["its last run backup-29012343 completed"],
        ),
        (
            "one failure after a success",
            vec![ok(2), fail(3)],
            &two,
            Verdict::Healthy,
            vec!["1 of its last 2 runs failed: backup-29012343"],
        ),
        (
            "one failure, nothing known before it",
            vec![fail(3)],
            &two,
            Verdict::Unknown,
            vec!["1 of its last 2 runs failed"],
        ),
        (
            "one failure is enough when failedRuns is 1",
            vec![ok(2), fail(3)],
            &one,
            Verdict::Firing,
            vec!["its last 1 run failed"],
        ),
        (
            "two of three",
            vec![ok(1), fail(2), fail(3)],
            &three,
            Verdict::Healthy,
            vec!["2 of its last 3 runs failed"],
        ),
        (
            "no run finished yet",
            vec![job(
                "backup-29012344",
                json!({}),
                0,
                0,
                vec![],
                Some(("backup", "2026-11-26T09:40:00Z")),
            )],
            &two,
            Verdict::Unknown,
            vec!["no finished run"],
        ),
    ];
    for (what, jobs, t, verdict, words) in cases {
        let f = cronjob_failed_runs("backup", &runs(jobs), t);
        assert_eq!(f.kind, SignalKind::JobFailed);
        assert_eq!(f.verdict, verdict, "{what}: {}", f.summary);
        for w in words {
            assert!(f.summary.contains(w), "{what}: {w:?} in {:?}", f.summary);
        }
    }
}

#[test]
fn runs_are_ordered_by_the_time_the_cronjob_controller_scheduled_them() {
    // Created out of order (a run retried late), the scheduled time decides.
    let late = backoff_limit_exceeded("backup-29012350", Some(("backup", "2026-11-26T09:50:00Z")));
    let mut early = completed("backup-29012340", Some(("backup", "2026-11-26T09:40:00Z")));
    early.metadata.creation_timestamp = Some(crate::testing::at(0));
    let runs: Vec<Run> = [early, late.clone()].iter().filter_map(run_of).collect();
    let one = Trigger {
        failed_runs: Some(1),
        ..Trigger::of(SignalKind::JobFailed)
    };
    assert_eq!(
        cronjob_failed_runs("backup", &runs, &one).verdict,
        Verdict::Firing
    );
    assert_eq!(cronjob_of(&late).as_deref(), Some("backup"));
    assert_eq!(cronjob_of(&completed("migrate", None)), None);
}

#[test]
fn a_job_whose_pod_was_oom_killed_is_told_by_the_pods_oom_incident() {
    let pod = |reason: &str| -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": "thumbnails-x", "namespace": "shop" },
            "status": { "phase": "Failed", "containerStatuses": [{
                "name": "app", "image": "w", "imageID": "", "ready": false, "restartCount": 0,
                "state": { "terminated": { "exitCode": 137, "reason": reason } }
            }] }
        }))
        .expect("a pod")
    };
    assert!(any_oom_killed(&[std::sync::Arc::new(pod("OOMKilled"))]));
    assert!(!any_oom_killed(&[std::sync::Arc::new(pod("Error"))]));
    assert!(!any_oom_killed::<std::sync::Arc<Pod>>(&[]));
}
