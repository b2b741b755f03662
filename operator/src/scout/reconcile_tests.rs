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
