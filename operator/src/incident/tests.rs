//! The incident reconciler in-process, against a fake API server that
//! records every request: the exact calls each decision makes, and their
//! order.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::Store;
use serde_json::Value;

use super::{Context, reconcile};
use crate::crd::{
    ActionState, ActionType, ApprovalDecision, Incident, Mode, Phase, RemediationPolicy,
};
use crate::testing::api::FakeApi;
use crate::testing::{approved, incident, now, policy, record, store, world};

/// The workload `web` (a Deployment, its ReplicaSet, pods web-1 and
/// web-2), `policy` and `incident`, in the fake API server and in the
/// stores, as a running operator would see them.
fn context(api: &FakeApi, policy: Option<RemediationPolicy>, incident: &Incident) -> Arc<Context> {
    let client = api.client();
    let pods = vec![world::pod("web-1", true), world::pod("web-2", false)];
    let rs = world::replicaset();
    api.insert(&world::deployment());
    api.insert(&rs);
    for p in &pods {
        api.insert(p);
    }
    api.insert(incident);
    if let Some(p) = &policy {
        api.insert(p);
    }
    let pods: Store<Pod> = store(pods);
    let replicasets: Store<ReplicaSet> = store(vec![rs]);
    let allowlist = crate::allowlist::Shared::fixed(crate::allowlist::AllowList::default());
    Arc::new(Context {
        client: client.clone(),
        config: crate::config::Config::default(),
        workloads: crate::workload::Workloads::new(client.clone(), pods, replicasets),
        policies: store(policy.into_iter().collect()),
        incidents: store(vec![incident.clone()]),
        model: None,
        tokens: crate::llm::TokenLedger::default(),
        github: crate::github::Access::new(None, allowlist, client.clone()),
        metrics: Arc::default(),
        leadership: crate::lease::Leadership::sole(),
        board: crate::scout::measured::Board::default(),
        traces: None,
        events: None,
        publisher: crate::publish::Publisher::new(client, "test".into()),
        ledger: Default::default(),
        claims: Default::default(),
        clock: Arc::new(crate::clock::ManualClock::at(now())),
    })
}

const INCIDENT: &str = "/apis/sre.space/v1alpha1/namespaces/shop/incidents/web-oomkilled";
const EVICTION: &str = "/api/v1/namespaces/shop/pods/web-1/eviction";

/// The incident as the fake server stores it now.
fn stored(api: &FakeApi) -> Incident {
    serde_json::from_value(api.get(INCIDENT).expect("the incident")).expect("an Incident")
}

fn state_written(write: &Value) -> Option<&str> {
    write["status"]["actions"].as_array()?.last()?["state"].as_str()
}

fn lines(api: &FakeApi) -> Vec<String> {
    api.writes().iter().map(|w| w.line()).collect()
}

#[tokio::test]
async fn automatic_restart_is_recorded_before_the_eviction_which_carries_the_pods_uid() {
    let api = FakeApi::default();
    let i = incident(Phase::Diagnosing, vec![]);
    let ctx = context(&api, Some(policy(Mode::Automatic)), &i);
    reconcile(Arc::new(i), ctx).await.expect("the reconcile");
    let writes = api.writes();
    assert_eq!(
        lines(&api),
        [
            format!("PUT {INCIDENT}/status"),
            format!("POST {EVICTION}"),
            format!("PUT {INCIDENT}/status"),
        ],
        "the record, the eviction, the result: nothing else"
    );
    assert_eq!(
        state_written(&writes[0].body),
        Some("Pending"),
        "write-ahead"
    );
    assert_eq!(
        writes[1].body["deleteOptions"]["preconditions"]["uid"], "uid-web-1",
        "only the pod the plan saw is evicted"
    );
    assert_eq!(state_written(&writes[2].body), Some("Succeeded"));
    assert_eq!(api.event_reasons(), ["ActionTaken"]);
}

#[tokio::test]
async fn an_approved_step_makes_exactly_one_eviction_and_the_approval_is_spent() {
    let api = FakeApi::default();
    let mut waiting = record(1, ActionType::RestartPod, ActionState::AwaitingApproval);
    waiting.target = "Pod/web-1".parse().ok();
    waiting.target_uid = Some("uid-web-1".into());
    let id = waiting.id.clone();
    let i = approved(
        incident(Phase::AwaitingApproval, vec![waiting]),
        &id,
        ApprovalDecision::Approve,
    );
    let ctx = context(&api, Some(policy(Mode::Manual)), &i);
    reconcile(Arc::new(i), ctx.clone())
        .await
        .expect("the reconcile");
    assert_eq!(
        lines(&api),
        [
            format!("PUT {INCIDENT}/status"),
            format!("PATCH {INCIDENT}"),
            format!("POST {EVICTION}"),
            format!("PUT {INCIDENT}/status"),
        ],
        "Pending recorded, the approval removed, one eviction, the result"
    );
    assert_eq!(state_written(&api.writes()[0].body), Some("Pending"));
    let after = stored(&api);
    assert!(after.spec.approval.is_none(), "a used approval is removed");
    // Reconciled again (the watch sees the change): nothing more is done.
    reconcile(Arc::new(after), ctx)
        .await
        .expect("the second reconcile");
    let evictions = api.writes().iter().filter(|w| w.path == EVICTION).count();
    assert_eq!(evictions, 1);
}

#[tokio::test]
async fn dry_run_writes_the_incidents_status_and_nothing_else() {
    let api = FakeApi::default();
    let i = incident(Phase::Diagnosing, vec![]);
    let ctx = context(&api, Some(policy(Mode::DryRun)), &i);
    reconcile(Arc::new(i), ctx).await.expect("the reconcile");
    assert_eq!(lines(&api), [format!("PUT {INCIDENT}/status")]);
    assert_eq!(state_written(&api.writes()[0].body), Some("DryRun"));
    assert_eq!(api.event_reasons(), ["DryRun"]);
}

#[tokio::test]
async fn manual_mode_changes_nothing_before_a_person_approves() {
    let api = FakeApi::default();
    let i = incident(Phase::Diagnosing, vec![]);
    let ctx = context(&api, Some(policy(Mode::Manual)), &i);
    reconcile(Arc::new(i), ctx.clone())
        .await
        .expect("the reconcile");
    assert_eq!(lines(&api), [format!("PUT {INCIDENT}/status")]);
    let after = stored(&api);
    let status = after.status.clone().unwrap_or_default();
    assert_eq!(status.phase, Phase::AwaitingApproval);
    assert_eq!(api.event_reasons(), ["ApprovalRequired"]);
    // Looked at again without a decision: still nothing.
    reconcile(Arc::new(after), ctx)
        .await
        .expect("the second reconcile");
    assert_eq!(lines(&api).len(), 1);
}

#[tokio::test]
async fn a_missing_policy_writes_one_condition_and_nothing_else() {
    let api = FakeApi::default();
    let i = incident(Phase::Diagnosing, vec![]);
    let ctx = context(&api, None, &i);
    reconcile(Arc::new(i), ctx.clone())
        .await
        .expect("the reconcile");
    assert_eq!(lines(&api), [format!("PUT {INCIDENT}/status")]);
    let after = stored(&api);
    let remediated = after
        .status
        .as_ref()
        .and_then(|s| crate::conditions::get(&s.conditions, crate::conditions::REMEDIATED))
        .map(|c| c.reason.clone());
    assert_eq!(remediated.as_deref(), Some("PolicyNotFound"));
    reconcile(Arc::new(after), ctx)
        .await
        .expect("the second reconcile");
    assert_eq!(lines(&api).len(), 1, "said once, not on every look");
}

#[tokio::test]
async fn a_pending_record_replayed_after_a_restart_is_taken_once() {
    let api = FakeApi::default();
    let mut pending = record(1, ActionType::RestartPod, ActionState::Pending);
    pending.target = "Pod/web-1".parse().ok();
    pending.target_uid = Some("uid-web-1".into());
    let i = incident(Phase::Remediating, vec![pending]);
    let ctx = context(&api, Some(policy(Mode::Automatic)), &i);
    reconcile(Arc::new(i), ctx.clone())
        .await
        .expect("the reconcile");
    assert_eq!(
        lines(&api),
        [format!("POST {EVICTION}"), format!("PUT {INCIDENT}/status")],
        "the recorded step, then its result; no new record"
    );
    let after = stored(&api);
    assert_eq!(
        after
            .status
            .as_ref()
            .and_then(|s| s.actions.last())
            .map(|a| a.state),
        Some(ActionState::Succeeded)
    );
    reconcile(Arc::new(after), ctx)
        .await
        .expect("the second reconcile");
    let evictions = api.writes().iter().filter(|w| w.path == EVICTION).count();
    assert_eq!(evictions, 1, "a taken step is not taken again");
}

#[tokio::test]
async fn a_clear_look_after_the_action_records_mitigated_at_before_resolved() {
    let api = FakeApi::default();
    let done =
        crate::testing::finished(record(1, ActionType::RestartPod, ActionState::Succeeded), 5);
    let i = incident(Phase::Verifying, vec![done]);
    let ctx = context(&api, Some(policy(Mode::Automatic)), &i);
    reconcile(Arc::new(i), ctx.clone())
        .await
        .expect("the reconcile");
    let after = stored(&api);
    let status = after.status.clone().unwrap_or_default();
    assert_eq!(status.phase, Phase::Verifying, "the window still runs");
    assert_eq!(
        status.mitigated_at.map(|t| t.0),
        Some(now()),
        "mitigated at the first clear look: {lines:?}",
        lines = lines(&api)
    );
    assert_eq!(status.resolved_at, None);
}

/// An incident just detected: nothing diagnosed yet.
fn undiagnosed() -> Incident {
    let mut i = incident(Phase::Detected, vec![]);
    if let Some(s) = i.status.as_mut() {
        s.diagnosis = None;
    }
    i
}

#[tokio::test]
async fn a_reconcile_that_diagnoses_then_acts_reads_the_memory_once() {
    let api = FakeApi::default();
    let i = undiagnosed();
    let ctx = context(&api, Some(policy(Mode::Automatic)), &i);
    reconcile(Arc::new(i), ctx).await.expect("the reconcile");
    assert_eq!(
        api.event_reasons().first().map(String::as_str),
        Some("Diagnosed")
    );
    assert!(
        lines(&api).contains(&format!("POST {EVICTION}")),
        "{:?}",
        lines(&api)
    );
    let memories = "/apis/sre.space/v1alpha1/namespaces/shop/incidentmemories";
    let mut reads: Vec<String> = api
        .seen()
        .iter()
        .filter(|s| s.method == "GET" && s.path.starts_with(memories))
        .map(|s| s.path.clone())
        .collect();
    reads.sort();
    assert_eq!(
        reads,
        [memories.to_string(), format!("{memories}/web-oomkilled")],
        "the incident's memory and the namespace's, once each, for the diagnosis and the plan"
    );
}

#[tokio::test(start_paused = true)]
async fn the_remedy_does_not_wait_for_the_diagnosed_event() {
    let api = FakeApi::default();
    let i = undiagnosed();
    let ctx = context(&api, Some(policy(Mode::Automatic)), &i);
    // The API server takes events in but never answers.
    api.stall("POST", "/events");
    let running = tokio::spawn(reconcile(Arc::new(i), ctx));
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let seen: Vec<String> = api.seen().iter().map(|s| s.line()).collect();
    let announced = seen
        .iter()
        .position(|l| l.starts_with("POST") && l.ends_with("/events"));
    let evicted = seen.iter().position(|l| *l == format!("POST {EVICTION}"));
    assert!(
        matches!((announced, evicted), (Some(a), Some(e)) if a < e),
        "the event is sent first, and the eviction does not wait for its answer: {seen:?}"
    );
    running.abort();
}
