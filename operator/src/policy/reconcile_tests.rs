//! The policy controller in-process, against a fake API server that records
//! every request.

use std::sync::Arc;

use kube::core::DeserializeGuard;
use serde_json::json;

use super::{Context, reconcile};
use crate::crd::{Mode, RemediationPolicy};
use crate::testing::api::FakeApi;
use crate::testing::{policy, world};

const POLICY: &str = "/apis/sre.space/v1alpha1/namespaces/shop/remediationpolicies/heal";

fn context(api: &FakeApi) -> Arc<Context> {
    let client = api.client();
    Arc::new(Context {
        client: client.clone(),
        publisher: crate::publish::Publisher::new(client, "test".into()),
        allowlist: crate::allowlist::Shared::fixed(crate::allowlist::AllowList::default()),
        clock: Arc::new(crate::clock::ManualClock::at(crate::testing::now())),
    })
}

#[tokio::test]
async fn a_valid_policy_says_what_it_covers_in_one_status_write_and_one_event() {
    let api = FakeApi::default();
    let p = policy(Mode::Automatic);
    api.insert(&p);
    api.insert(&world::deployment());
    reconcile(Arc::new(DeserializeGuard(Ok(p))), context(&api))
        .await
        .expect("the reconcile");
    let writes = api.writes();
    assert_eq!(
        writes.iter().map(|w| w.line()).collect::<Vec<_>>(),
        [format!("PATCH {POLICY}/status")]
    );
    let stored: RemediationPolicy =
        serde_json::from_value(api.get(POLICY).expect("the policy")).expect("a policy");
    let status = stored.status.unwrap_or_default();
    let ready = crate::conditions::get(&status.conditions, crate::conditions::READY)
        .map(|c| c.message.clone());
    assert_eq!(
        ready.as_deref(),
        Some("the policy is valid and covers 1 workload(s)")
    );
    assert_eq!(status.matched, 1);
    assert_eq!(api.event_reasons(), ["PolicyValid"]);
}

#[tokio::test]
async fn a_policy_whose_namespace_was_deleted_is_not_retried() {
    let api = FakeApi::default();
    let p = policy(Mode::Automatic);
    api.insert(&p);
    // The namespace went away between the read and the write.
    api.refuse("PATCH", "/remediationpolicies/heal/status", 404);
    let error = reconcile(Arc::new(DeserializeGuard(Ok(p))), context(&api))
        .await
        .expect_err("the write failed");
    assert!(error.is_gone(), "{error}");
    assert_eq!(
        crate::runtime::retry_after(&error),
        None,
        "an object that is gone is not retried every 5 s for as long as the operator runs"
    );
}

#[tokio::test]
async fn a_policy_this_version_cannot_read_says_why_in_its_status_once() {
    let api = FakeApi::default();
    // A value a newer CRD allows and this operator does not know.
    let raw = json!({
        "apiVersion": "sre.space/v1alpha1",
        "kind": "RemediationPolicy",
        "metadata": { "name": "heal", "namespace": "shop", "uid": "uid-heal", "generation": 3 },
        "spec": {
            "selector": { "matchLabels": { "app": "web" } },
            "triggers": [{ "type": "OOMKilled" }],
            "actions": [{ "type": "RestartPod" }],
            "mode": "Sometimes",
        },
        "status": { "conditions": [{ "type": "KafkaAvailable", "status": "True",
            "reason": "Measuring", "message": "reading", "lastTransitionTime": "2026-11-26T09:00:00Z" }] },
    });
    api.insert_json(POLICY, raw.clone());
    let guard: DeserializeGuard<RemediationPolicy> =
        serde_json::from_value(raw).expect("the guard reads anything");
    assert!(guard.0.is_err(), "the policy itself cannot be read");
    let ctx = context(&api);
    let guard = Arc::new(guard);
    reconcile(guard.clone(), ctx.clone())
        .await
        .expect("the reconcile");
    let writes = api.writes();
    assert_eq!(
        writes.iter().map(|w| w.line()).collect::<Vec<_>>(),
        [format!("PATCH {POLICY}/status")]
    );
    let status = &api.get(POLICY).expect("the policy")["status"];
    let conditions = status["conditions"].as_array().expect("conditions");
    let ready = conditions
        .iter()
        .find(|c| c["type"] == "Ready")
        .expect("a Ready condition");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "Unreadable");
    assert!(
        ready["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Sometimes"),
        "the message names what cannot be read: {}",
        ready["message"]
    );
    assert!(
        conditions.iter().any(|c| c["type"] == "KafkaAvailable"),
        "the sources' conditions are kept"
    );
    assert_eq!(api.event_reasons(), ["PolicyUnreadable"]);
    reconcile(guard, ctx).await.expect("the second reconcile");
    assert_eq!(api.writes().len(), 1, "said once, not on every look");
}
