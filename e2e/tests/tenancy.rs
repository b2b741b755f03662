//! An Incident is bound to its fingerprint, and acts only on a target its
//! policy still selects: on the real local cluster, each scenario with its
//! own namespace and operator process.
#![cfg(feature = "cluster")]

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use sre_space::crd::{
    ActionState, Incident, IncidentSpec, Phase, RemediationPolicy, SignalKind, WorkloadKind,
    WorkloadRef,
};
use sre_space::workload::fingerprint;
use sre_space_e2e::scenario::LONG;
use sre_space_e2e::{Scenario, incident_of, wait_incident, wait_until};

async fn event_reasons(client: &Client, ns: &str, object: &str) -> Result<Vec<String>> {
    let events = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default().fields(&format!("regarding.name={object}")))
        .await?;
    Ok(events.items.into_iter().filter_map(|e| e.reason).collect())
}

fn remediated_reason(i: &Incident) -> Option<String> {
    i.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Remediated")
        .map(|c| c.reason.clone())
}

#[tokio::test]
async fn an_incident_created_under_a_workloads_name_for_another_target_is_never_fed_its_signals()
-> Result<()> {
    let s = Scenario::builder("e2e-squat")
        .policy(|v| {
            v["spec"]["guardrails"]["cooldownSeconds"] = 5.into();
            v["spec"]["guardrails"]["verificationWindowSeconds"] = 5.into();
        })
        .deploy("web", 2, "64Mi")
        .deploy("payments", 2, "64Mi")
        .start()
        .await?;
    let payments_before = s.pod_names("payments").await?;

    // Someone who may create Incidents takes the name the operator would
    // give web's OOM kills, with web's fingerprint but payments as target.
    let web = WorkloadRef {
        kind: WorkloadKind::Deployment,
        name: "web".into(),
    };
    let name = incident_of("web", SignalKind::OOMKilled);
    let squat = Incident::new(
        &name,
        IncidentSpec {
            fingerprint: fingerprint(s.name(), &web, SignalKind::OOMKilled),
            target: WorkloadRef {
                kind: WorkloadKind::Deployment,
                name: "payments".into(),
            },
            signal: SignalKind::OOMKilled,
            policy: "demo-services".into(),
            approval: None,
        },
    );
    let incidents: Api<Incident> = Api::namespaced(s.client.clone(), s.name());
    incidents.create(&PostParams::default(), &squat).await?;
    let _operator = s.operator(&[]).await?;

    s.chaos("web").oom().await?;
    wait_until(
        LONG,
        "a FingerprintMismatch event on the squatting incident",
        || {
            let (client, ns, name) = (s.client.clone(), s.name().to_string(), name.clone());
            async move {
                Ok(event_reasons(&client, &ns, &name)
                    .await?
                    .iter()
                    .any(|r| r == "FingerprintMismatch"))
            }
        },
    )
    .await?;
    // Give the operator time to do whatever it would do.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after = incidents.get(&name).await?;
    assert_eq!(
        after.status.as_ref().map(|s| s.occurrences).unwrap_or(0),
        0,
        "web's OOM kill was not counted on an incident bound to payments"
    );
    assert!(
        after
            .status
            .as_ref()
            .is_none_or(|s| s.actions.is_empty() && s.phase == Phase::Detected),
        "nothing was planned on it: {:?}",
        after.status
    );
    assert_eq!(
        s.pod_names("payments").await?,
        payments_before,
        "payments was not touched"
    );
    let limit = Api::<Deployment>::namespaced(s.client.clone(), s.name())
        .get("payments")
        .await?
        .spec
        .template
        .spec
        .and_then(|s| s.containers[0].resources.clone())
        .and_then(|r| r.limits)
        .and_then(|l| l.get("memory").map(|q| q.0.clone()));
    assert_eq!(limit.as_deref(), Some("64Mi"), "payments' memory unchanged");
    s.cleanup().await
}

#[tokio::test]
async fn an_approved_step_waits_while_the_policy_no_longer_selects_the_target() -> Result<()> {
    let s = Scenario::builder("e2e-unselected")
        .policy(|v| {
            v["spec"]["mode"] = "Manual".into();
            v["spec"]["guardrails"]["cooldownSeconds"] = 5.into();
            v["spec"]["guardrails"]["verificationWindowSeconds"] = 5.into();
        })
        .deploy("ledger", 2, "64Mi")
        .start()
        .await?;
    let _operator = s.operator(&[]).await?;

    s.chaos("ledger").crashloop(5).await?;
    let name = incident_of("ledger", SignalKind::CrashLoopBackOff);
    let inc = wait_incident(&s.client, s.name(), &name, LONG, "AwaitingApproval", |i| {
        i.status
            .as_ref()
            .is_some_and(|s| s.phase == Phase::AwaitingApproval)
    })
    .await?;
    let waiting = inc
        .status
        .as_ref()
        .and_then(|s| s.actions.last())
        .expect("an action waits")
        .clone();
    let pods_before = s.pod_names("ledger").await?;

    // The platform team narrows the policy: ledger is no longer covered.
    let policies: Api<RemediationPolicy> = Api::namespaced(s.client.clone(), s.name());
    let narrow = serde_json::json!({ "spec": { "selector": { "matchLabels": {
        "sre.space/protected": null, "app": "checkout" } } } });
    policies
        .patch(
            "demo-services",
            &PatchParams::default(),
            &Patch::Merge(narrow),
        )
        .await?;
    let incidents: Api<Incident> = Api::namespaced(s.client.clone(), s.name());
    let approval = serde_json::json!({ "spec": { "approval": {
        "actionId": waiting.id, "decision": "Approve", "by": "oncall" } } });
    incidents
        .patch(&name, &PatchParams::default(), &Patch::Merge(approval))
        .await?;
    let held = wait_incident(&s.client, s.name(), &name, LONG, "TargetNotSelected", |i| {
        remediated_reason(i).as_deref() == Some("TargetNotSelected")
    })
    .await?;
    let message = held
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Remediated"))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("no longer selects Deployment/ledger"),
        "{message}"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        s.pod_names("ledger").await?,
        pods_before,
        "nothing was restarted while ledger is not selected"
    );
    let now = incidents.get(&name).await?;
    assert_eq!(
        now.status
            .as_ref()
            .and_then(|s| s.actions.last())
            .map(|a| a.state),
        Some(ActionState::AwaitingApproval),
        "the approved step waits"
    );
    assert!(
        event_reasons(&s.client, s.name(), &name)
            .await?
            .iter()
            .any(|r| r == "TargetNotSelected"),
        "an event says why"
    );

    // Covered again, the approved step runs.
    let widen = serde_json::json!({ "spec": { "selector": { "matchLabels": {
        "sre.space/protected": "true", "app": null } } } });
    policies
        .patch(
            "demo-services",
            &PatchParams::default(),
            &Patch::Merge(widen),
        )
        .await?;
    wait_until(
        LONG,
        "the approved restart once ledger is covered again",
        || async {
            let after = s.pod_names("ledger").await?;
            Ok(pods_before.difference(&after).count() == 1)
        },
    )
    .await?;
    s.cleanup().await
}
