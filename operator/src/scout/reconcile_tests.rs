//! The Scout's pod reconciler in-process, against a fake API server that
//! records every request.

use std::sync::Arc;

use kube::runtime::reflector;
use kube::runtime::watcher;

use super::{Context, reconcile};
use crate::crd::{Mode, SignalKind, Trigger, WorkloadKind, WorkloadRef};
use crate::testing::api::FakeApi;
use crate::testing::{now, policy, store, world};

#[tokio::test]
async fn an_oomkilled_pod_opens_one_incident_and_says_so_once() {
    let api = FakeApi::default();
    let client = api.client();
    let mut p = policy(Mode::Automatic);
    p.spec.triggers = vec![Trigger::of(SignalKind::OOMKilled)];
    let pod = world::pod("web-1", true);
    let rs = world::replicaset();
    api.insert(&pod);
    api.insert(&rs);
    let (incidents_store, mut incidents_writer) = reflector::store::<crate::crd::Incident>();
    let ctx = Arc::new(Context {
        client: client.clone(),
        policies: store(vec![p]),
        incidents: incidents_store,
        workloads: crate::workload::Workloads::new(
            client.clone(),
            store(vec![pod.clone()]),
            store(vec![rs]),
        ),
        board: Default::default(),
        publisher: crate::publish::Publisher::new(client, "test".into()),
        metrics: Arc::default(),
        allowlist: crate::allowlist::Shared::fixed(crate::allowlist::AllowList::default()),
        traces: None,
        prometheus: None,
        clock: Arc::new(crate::clock::ManualClock::at(now())),
    });
    let web = WorkloadRef {
        kind: WorkloadKind::Deployment,
        name: "web".into(),
    };
    let name = crate::workload::incident_name(&web, SignalKind::OOMKilled);
    let incidents = "/apis/sre.space/v1alpha1/namespaces/shop/incidents";
    let pod = Arc::new(pod);
    reconcile(pod.clone(), ctx.clone())
        .await
        .expect("the reconcile");
    let lines: Vec<String> = api.writes().iter().map(|w| w.line()).collect();
    assert_eq!(
        lines,
        [
            format!("POST {incidents}"),
            format!("PUT {incidents}/{name}/status")
        ],
        "the Incident, then its first observation"
    );
    let stored = api
        .get(&format!("{incidents}/{name}"))
        .expect("the incident");
    assert_eq!(stored["spec"]["target"]["name"], "web");
    assert_eq!(stored["spec"]["policy"], "heal");
    assert_eq!(stored["status"]["occurrences"], 1);
    assert_eq!(api.event_reasons(), ["Detected"]);
    // The watch brings the new Incident into the store; the same termination
    // seen again (a resync) writes nothing more.
    let created: crate::crd::Incident = serde_json::from_value(stored).expect("an Incident");
    incidents_writer.apply_watcher_event(&watcher::Event::Apply(created));
    reconcile(pod, ctx).await.expect("the second reconcile");
    assert_eq!(api.writes().len(), 2);
}

/// The Scout's context over `pods` (and the `web` ReplicaSet), whose
/// incident store follows what the fake API server stores, as the watch
/// would.
fn context(
    api: &FakeApi,
    pods: &[k8s_openapi::api::core::v1::Pod],
    triggers: Vec<Trigger>,
) -> (Arc<Context>, reflector::store::Writer<crate::crd::Incident>) {
    let client = api.client();
    let mut p = policy(Mode::Automatic);
    p.spec.triggers = triggers;
    let rs = world::replicaset();
    api.insert(&rs);
    for pod in pods {
        api.insert(pod);
    }
    let (incidents, writer) = reflector::store::<crate::crd::Incident>();
    let ctx = Arc::new(Context {
        client: client.clone(),
        policies: store(vec![p]),
        incidents,
        workloads: crate::workload::Workloads::new(
            client.clone(),
            store(pods.to_vec()),
            store(vec![rs]),
        ),
        board: Default::default(),
        publisher: crate::publish::Publisher::new(client, "test".into()),
        metrics: Arc::default(),
        allowlist: crate::allowlist::Shared::fixed(crate::allowlist::AllowList::default()),
        traces: None,
        prometheus: None,
        clock: Arc::new(crate::clock::ManualClock::at(now())),
    });
    (ctx, writer)
}

/// A pod whose container `app` is crash-looping with exit code 1, as the
/// kubelet shows it; `bare` drops its ReplicaSet.
fn crash_looping(name: &str, bare: bool) -> k8s_openapi::api::core::v1::Pod {
    let mut p = world::pod(name, false);
    if bare {
        p.metadata.owner_references = None;
    }
    p.status = Some(
        serde_json::from_value(serde_json::json!({
            "phase": "Running",
            "conditions": [{ "type": "Ready", "status": "False", "reason": "ContainersNotReady",
                "message": "containers with unready status: [app]", "lastTransitionTime": "2026-11-26T09:50:00Z" }],
            "containerStatuses": [{ "name": "app", "image": "web:1", "imageID": "", "ready": false,
                "restartCount": 4, "started": false,
                "state": { "waiting": { "reason": "CrashLoopBackOff",
                    "message": format!("back-off 1m20s restarting failed container=app pod={name}_shop(uid-{name})") } },
                "lastState": { "terminated": { "exitCode": 1, "reason": "Error",
                    "finishedAt": "2026-11-26T09:59:00Z" } } }]
        }))
        .expect("a pod status"),
    );
    p
}

/// Reconciles every pod in turn, the incident store following the API
/// server between them; returns the Incidents stored.
async fn reconcile_all(
    api: &FakeApi,
    pods: &[k8s_openapi::api::core::v1::Pod],
    triggers: Vec<Trigger>,
) -> Vec<crate::crd::Incident> {
    let (ctx, mut writer) = context(api, pods, triggers);
    let incidents: kube::Api<crate::crd::Incident> =
        kube::Api::namespaced(ctx.client.clone(), "shop");
    for pod in pods {
        reconcile(Arc::new(pod.clone()), ctx.clone())
            .await
            .expect("the reconcile");
        let stored = incidents
            .list(&Default::default())
            .await
            .expect("the incidents");
        for i in stored.items {
            writer.apply_watcher_event(&watcher::Event::Apply(i));
        }
    }
    incidents
        .list(&Default::default())
        .await
        .expect("the incidents")
        .items
}

#[tokio::test]
async fn ten_crash_looping_pods_of_one_deployment_open_one_incident() {
    let api = FakeApi::default();
    let pods: Vec<_> = (0..10)
        .map(|i| crash_looping(&format!("web-abc-{i}"), false))
        .collect();
    let every = SignalKind::ALL
        .into_iter()
        .filter(|k| k.is_pod_signal())
        .map(Trigger::of)
        .collect();
    let incidents = reconcile_all(&api, &pods, every).await;
    assert_eq!(incidents.len(), 1, "{incidents:#?}");
    let i = &incidents[0];
    assert_eq!(
        i.spec.target,
        WorkloadRef {
            kind: WorkloadKind::Deployment,
            name: "web".into()
        }
    );
    assert_eq!(i.spec.signal, SignalKind::CrashLoopBackOff);
    let status = i.status.as_ref().expect("observed");
    assert_eq!(status.occurrences, 10, "each pod's crash loop counts on it");
    assert_eq!(
        api.writes()
            .iter()
            .filter(|w| w.method == "POST" && w.path.ends_with("/incidents"))
            .count(),
        1,
        "created once"
    );
}

#[tokio::test]
async fn five_bare_pods_failing_alike_open_one_incident_each_never_one_for_the_namespace() {
    let api = FakeApi::default();
    let names: Vec<String> = (0..5).map(|i| format!("runner-{i}")).collect();
    let pods: Vec<_> = names.iter().map(|n| crash_looping(n, true)).collect();
    let incidents =
        reconcile_all(&api, &pods, vec![Trigger::of(SignalKind::CrashLoopBackOff)]).await;
    let mut targets: Vec<WorkloadRef> = incidents.iter().map(|i| i.spec.target.clone()).collect();
    targets.sort_by(|a, b| a.name.cmp(&b.name));
    let expected: Vec<WorkloadRef> = names
        .iter()
        .map(|n| WorkloadRef {
            kind: WorkloadKind::Pod,
            name: n.clone(),
        })
        .collect();
    assert_eq!(targets, expected);
    assert!(
        incidents
            .iter()
            .all(|i| i.status.as_ref().is_some_and(|s| s.occurrences == 1))
    );
}

/// A pod of the Job `report` that ended `reason` (exit `code`), in `phase`.
fn job_pod(name: &str, phase: &str, reason: &str, code: i32) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "namespace": "shop", "uid": format!("uid-{name}"),
            "labels": { "app": "web", "batch.kubernetes.io/job-name": "report" },
            "ownerReferences": [{ "apiVersion": "batch/v1", "kind": "Job", "name": "report",
                "uid": "uid-job-report", "controller": true }] },
        "status": { "phase": phase,
            "containerStatuses": [{ "name": "work", "image": "report:1", "imageID": "", "ready": false,
                "restartCount": 0, "state": { "terminated": { "exitCode": code, "reason": reason,
                    "finishedAt": "2026-11-26T09:56:00Z" } } }] }
    }))
    .expect("a Pod")
}

#[tokio::test]
async fn a_failed_job_pod_that_ran_out_of_memory_opens_the_jobs_incident_and_a_completed_one_nothing()
 {
    let api = FakeApi::default();
    let pods = [
        job_pod("report-done", "Succeeded", "Completed", 0),
        job_pod("report-error", "Failed", "Error", 1),
        job_pod("report-oom", "Failed", "OOMKilled", 137),
    ];
    let incidents = reconcile_all(&api, &pods, vec![Trigger::of(SignalKind::OOMKilled)]).await;
    assert_eq!(incidents.len(), 1, "{incidents:#?}");
    assert_eq!(
        incidents[0].spec.target,
        WorkloadRef {
            kind: WorkloadKind::Job,
            name: "report".into()
        }
    );
    let status = incidents[0].status.as_ref().expect("observed");
    assert_eq!(status.occurrences, 1);
    assert_eq!(
        status.last_signal.as_ref().and_then(|s| s.pod.as_deref()),
        Some("report-oom")
    );
}
