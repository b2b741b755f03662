//! The workload reconcilers in-process, against a fake API server that
//! records every request.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Event;
use kube::runtime::controller::Action;
use kube::runtime::reflector;
use kube::runtime::watcher;
use serde_json::json;

use super::{Context, reconcile_deployment, reconcile_job, reconcile_statefulset};
use crate::crd::{
    Incident, LabelOperator, LabelRequirement, Mode, SignalKind, Trigger, WorkloadKind,
    WorkloadRef, WorkloadSelector,
};
use crate::testing::api::FakeApi;
use crate::testing::{now, policy, store};

const INCIDENTS: &str = "/apis/sre.space/v1alpha1/namespaces/shop/incidents";

/// The Scout's and the workload reconcilers' inputs, with a policy covering
/// the pods labelled `app` web, db or backup for `triggers`, and `jobs` in
/// the Job store.
fn context(
    api: &FakeApi,
    triggers: Vec<Trigger>,
    jobs: Vec<Job>,
) -> (Arc<Context>, reflector::store::Writer<Incident>) {
    let client = api.client();
    let mut p = policy(Mode::Automatic);
    p.spec.triggers = triggers;
    p.spec.selector = WorkloadSelector {
        match_expressions: vec![LabelRequirement {
            key: "app".into(),
            operator: LabelOperator::In,
            values: vec!["web".into(), "db".into(), "backup".into()],
        }],
        ..WorkloadSelector::default()
    };
    let (incidents, writer) = reflector::store::<Incident>();
    let scout = Arc::new(crate::scout::Context {
        client: client.clone(),
        policies: store(vec![p]),
        incidents,
        workloads: crate::workload::Workloads::new(client.clone(), store(vec![]), store(vec![])),
        board: Default::default(),
        publisher: crate::publish::Publisher::new(client, "test".into()),
        metrics: Arc::default(),
        allowlist: crate::allowlist::Shared::fixed(crate::allowlist::AllowList::default()),
        traces: None,
        prometheus: None,
        clock: Arc::new(crate::clock::ManualClock::at(now())),
    });
    let ctx = Arc::new(Context {
        scout,
        jobs: store(jobs),
        runs: Default::default(),
    });
    (ctx, writer)
}

fn writes(api: &FakeApi) -> Vec<String> {
    api.writes().iter().map(|w| w.line()).collect()
}

/// The Deployment `web`: 3 pods asked, 1 made, the rest refused by a quota
/// since 09:57 (the tests run at 10:00).
fn refused_by_quota() -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "web", "namespace": "shop", "uid": "uid-deploy-web", "generation": 1 },
        "spec": { "replicas": 3, "selector": { "matchLabels": { "app": "web" } },
            "template": { "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "app", "image": "web:1" }] } } },
        "status": { "observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
            "availableReplicas": 1, "unavailableReplicas": 2, "conditions": [
            { "type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
              "message": "Deployment does not have minimum availability.",
              "lastUpdateTime": "2026-11-26T09:57:00Z", "lastTransitionTime": "2026-11-26T09:57:00Z" },
            { "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
              "message": "pods \"web-7d9c4b5f6-x2x7q\" is forbidden: exceeded quota: compute-quota, requested: pods=1, used: pods=1, limited: pods=1",
              "lastUpdateTime": "2026-11-26T09:57:00Z", "lastTransitionTime": "2026-11-26T09:57:00Z" }
        ] }
    }))
    .expect("a Deployment")
}

#[tokio::test]
async fn a_deployment_refused_by_quota_opens_one_failed_create_incident_for_the_deployment() {
    let api = FakeApi::default();
    let (ctx, mut incidents) = context(&api, vec![Trigger::of(SignalKind::FailedCreate)], vec![]);
    let d = Arc::new(refused_by_quota());
    let action = reconcile_deployment(d.clone(), ctx.clone())
        .await
        .expect("the reconcile");
    assert_eq!(
        action,
        Action::requeue(super::FIRING_REFRESH),
        "read again while it fails, so a step is judged on fresh readings"
    );
    let web = WorkloadRef {
        kind: WorkloadKind::Deployment,
        name: "web".into(),
    };
    let name = crate::workload::incident_name(&web, SignalKind::FailedCreate);
    assert_eq!(
        writes(&api),
        [
            format!("POST {INCIDENTS}"),
            format!("PUT {INCIDENTS}/{name}/status")
        ],
        "the Incident, then its first observation"
    );
    let stored = api
        .get(&format!("{INCIDENTS}/{name}"))
        .expect("the incident");
    assert_eq!(stored["spec"]["signal"], "FailedCreate");
    assert_eq!(
        stored["spec"]["target"],
        json!({ "kind": "Deployment", "name": "web" })
    );
    assert_eq!(stored["spec"]["policy"], "heal");
    assert_eq!(stored["status"]["occurrences"], 1);
    let message = stored["status"]["lastSignal"]["message"]
        .as_str()
        .expect("a message");
    assert!(
        message.contains("Deployment/web has 1 of 3 pods")
            && message.contains("exceeded quota: compute-quota"),
        "{message}"
    );
    assert_eq!(api.event_reasons(), ["Detected"]);

    // The same refusal seen again (the Deployment's status changed, a
    // resync) counts nothing more.
    let created: Incident = serde_json::from_value(stored).expect("an Incident");
    incidents.apply_watcher_event(&watcher::Event::Apply(created));
    reconcile_deployment(d, ctx.clone())
        .await
        .expect("the second reconcile");
    assert_eq!(api.writes().len(), 2);

    // The quota raised: every pod made, the board knows it is clear.
    let mut fixed = refused_by_quota();
    let status = fixed.status.as_mut().expect("a status");
    status.replicas = Some(3);
    status.conditions = Some(vec![]);
    let action = reconcile_deployment(Arc::new(fixed), ctx.clone())
        .await
        .expect("the third reconcile");
    assert_eq!(action, Action::await_change());
    assert!(
        ctx.scout
            .board
            .healthy("shop", "web", SignalKind::FailedCreate)
    );
    assert_eq!(api.writes().len(), 2, "clearing is the incident's to judge");
}

#[tokio::test]
async fn a_deployment_no_policy_triggers_on_is_not_read() {
    let api = FakeApi::default();
    let (ctx, _) = context(&api, vec![Trigger::of(SignalKind::OOMKilled)], vec![]);
    reconcile_deployment(Arc::new(refused_by_quota()), ctx.clone())
        .await
        .expect("the reconcile");
    assert!(api.seen().is_empty(), "{:?}", writes(&api));
    assert!(ctx.scout.board.snapshot().is_empty());
}

#[tokio::test]
async fn a_statefulset_refused_a_pod_opens_an_incident_for_the_statefulset() {
    let api = FakeApi::default();
    let (ctx, _) = context(&api, vec![Trigger::of(SignalKind::FailedCreate)], vec![]);
    let event: Event = serde_json::from_value(json!({
        "metadata": { "name": "db.187b2c3d4e5f6a70", "namespace": "shop" },
        "involvedObject": { "kind": "StatefulSet", "namespace": "shop", "name": "db", "uid": "uid-sts-db",
            "apiVersion": "apps/v1" },
        "reason": "FailedCreate", "type": "Warning", "count": 5,
        "message": "create Pod db-1 in StatefulSet db failed error: pods \"db-1\" is forbidden: exceeded quota: compute-quota, requested: pods=1, used: pods=1, limited: pods=1",
        "source": { "component": "statefulset-controller" },
        "firstTimestamp": "2026-11-26T09:50:00Z", "lastTimestamp": "2026-11-26T09:59:00Z"
    }))
    .expect("an Event");
    api.insert(&event);
    let s: StatefulSet = serde_json::from_value(json!({
        "metadata": { "name": "db", "namespace": "shop", "uid": "uid-sts-db" },
        "spec": { "replicas": 2, "serviceName": "db", "selector": { "matchLabels": { "app": "db" } },
            "template": { "metadata": { "labels": { "app": "db" } },
                "spec": { "containers": [{ "name": "db", "image": "db:1" }] } } },
        "status": { "replicas": 1, "readyReplicas": 1, "currentRevision": "db-5f8b6c7d9",
            "updateRevision": "db-5f8b6c7d9" }
    }))
    .expect("a StatefulSet");
    let action = reconcile_statefulset(Arc::new(s), ctx)
        .await
        .expect("the reconcile");
    let list = api
        .seen()
        .into_iter()
        .find(|s| s.method == "GET" && s.path == "/api/v1/namespaces/shop/events")
        .expect("its events are listed");
    assert!(
        list.query.contains("reason%3DFailedCreate") || list.query.contains("reason=FailedCreate"),
        "{}",
        list.query
    );
    let db = WorkloadRef {
        kind: WorkloadKind::StatefulSet,
        name: "db".into(),
    };
    let name = crate::workload::incident_name(&db, SignalKind::FailedCreate);
    let stored = api
        .get(&format!("{INCIDENTS}/{name}"))
        .expect("the incident");
    assert_eq!(
        stored["spec"]["target"],
        json!({ "kind": "StatefulSet", "name": "db" })
    );
    assert_eq!(
        action,
        Action::requeue(super::FIRING_REFRESH),
        "a failing StatefulSet is read again while it fails"
    );
}

fn run(name: &str, scheduled: &str, failed: bool) -> Job {
    let condition = if failed {
        json!({ "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
            "message": "Job has reached the specified backoff limit", "lastTransitionTime": scheduled })
    } else {
        json!({ "type": "Complete", "status": "True", "reason": "CompletionsReached",
            "message": "Reached expected number of succeeded pods", "lastTransitionTime": scheduled })
    };
    serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": "shop", "uid": format!("uid-{name}"),
            "creationTimestamp": scheduled,
            "annotations": { "batch.kubernetes.io/cronjob-scheduled-timestamp": scheduled },
            "ownerReferences": [{ "apiVersion": "batch/v1", "kind": "CronJob", "name": "backup",
                "uid": "uid-cj-backup", "controller": true }] },
        "spec": { "backoffLimit": 1, "template": { "metadata": { "labels": { "app": "backup", "job-name": name } },
            "spec": { "restartPolicy": "Never", "containers": [{ "name": "main", "image": "backup:1" }] } } },
        "status": { "failed": if failed { 2 } else { 0 }, "succeeded": if failed { 0 } else { 1 },
            "conditions": [condition] }
    }))
    .expect("a Job")
}

#[tokio::test]
async fn a_cronjob_whose_last_two_runs_failed_is_one_incident_for_the_cronjob_and_a_success_clears_it()
 {
    let api = FakeApi::default();
    let first = run("backup-29012340", "2026-11-26T09:40:00Z", true);
    let (ctx, _) = context(&api, vec![Trigger::of(SignalKind::JobFailed)], vec![]);
    // The first failure alone is not enough; the CronJob controller then
    // deletes its Job (one failed Job kept), but the Scout remembers it.
    reconcile_job(Arc::new(first), ctx.clone())
        .await
        .expect("the reconcile");
    assert!(api.writes().is_empty(), "{:?}", writes(&api));
    let second = run("backup-29012350", "2026-11-26T09:50:00Z", true);
    reconcile_job(Arc::new(second), ctx.clone())
        .await
        .expect("the reconcile");
    let backup = WorkloadRef {
        kind: WorkloadKind::CronJob,
        name: "backup".into(),
    };
    let name = crate::workload::incident_name(&backup, SignalKind::JobFailed);
    assert_eq!(
        writes(&api),
        [
            format!("POST {INCIDENTS}"),
            format!("PUT {INCIDENTS}/{name}/status")
        ]
    );
    let stored = api
        .get(&format!("{INCIDENTS}/{name}"))
        .expect("the incident");
    assert_eq!(
        stored["spec"]["target"],
        json!({ "kind": "CronJob", "name": "backup" })
    );
    assert!(
        stored["status"]["lastSignal"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with(
                "CronJob/backup: its last 2 runs failed: backup-29012350 (BackoffLimitExceeded"
            )),
        "{}",
        stored["status"]["lastSignal"]["message"]
    );
    assert!(
        !ctx.scout
            .board
            .healthy("shop", "backup", SignalKind::JobFailed)
    );
    let third = run("backup-29012400", "2026-11-26T10:00:00Z", false);
    reconcile_job(Arc::new(third), ctx.clone())
        .await
        .expect("the reconcile");
    assert!(
        ctx.scout
            .board
            .healthy("shop", "backup", SignalKind::JobFailed)
    );
    assert_eq!(api.writes().len(), 2);
}

#[tokio::test]
async fn a_job_that_completes_opens_nothing() {
    let api = FakeApi::default();
    let (ctx, _) = context(&api, vec![Trigger::of(SignalKind::JobFailed)], vec![]);
    let mut done = run("migrate", "2026-11-26T09:40:00Z", false);
    done.metadata.owner_references = None;
    reconcile_job(Arc::new(done), ctx.clone())
        .await
        .expect("the reconcile");
    assert!(api.seen().is_empty());
    assert!(
        ctx.scout
            .board
            .healthy("shop", "migrate", SignalKind::JobFailed)
    );
}

#[tokio::test]
async fn a_statefulset_short_of_pods_without_refusals_yet_is_looked_at_again() {
    // Its refusals would be events, which do not wake its reconciler.
    let api = FakeApi::default();
    let (ctx, _) = context(&api, vec![Trigger::of(SignalKind::FailedCreate)], vec![]);
    let s: StatefulSet = serde_json::from_value(json!({
        "metadata": { "name": "db", "namespace": "shop", "uid": "uid-sts-db" },
        "spec": { "replicas": 2, "serviceName": "db", "selector": { "matchLabels": { "app": "db" } },
            "template": { "metadata": { "labels": { "app": "db" } } } },
        "status": { "replicas": 1, "readyReplicas": 1 }
    }))
    .expect("a StatefulSet");
    let action = reconcile_statefulset(Arc::new(s), ctx)
        .await
        .expect("the reconcile");
    assert_eq!(action, Action::requeue(super::SHORT_RECHECK));
    assert!(api.writes().is_empty());
}
