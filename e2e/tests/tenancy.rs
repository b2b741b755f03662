//! An Incident is bound to its fingerprint, and acts only on a target its
//! policy still selects: on the real local cluster, each scenario with its
//! own namespace and operator process.
#![cfg(feature = "cluster")]

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use sre_chaos::Target;
use sre_space::crd::{
    ActionState, Incident, IncidentSpec, Phase, RemediationPolicy, SignalKind, WorkloadKind,
    WorkloadRef,
};
use sre_space::workload::fingerprint;
use sre_space_e2e::{
    Operator, TestNamespace, client, create_policy, deployment, incident_of, install_crds,
    wait_incident, wait_ready, wait_until,
};

const LONG: Duration = Duration::from_secs(90);

async fn deploy(client: &Client, ns: &str, name: &str, replicas: i32) -> Result<()> {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &deployment(name, replicas, "64Mi"))
        .await?;
    wait_ready(client, ns, name, replicas as usize, LONG).await
}

fn chaos(client: &Client, ns: &str, deployment: &str) -> Target {
    Target {
        client: client.clone(),
        namespace: ns.to_string(),
        deployment: deployment.into(),
        dry_run: false,
    }
}

async fn pod_names(client: &Client, ns: &str, app: &str) -> Result<BTreeSet<String>> {
    let list = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await?;
    Ok(list
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.name_any())
        .collect())
}

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
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-squat").await?;
    create_policy(&client, &ns.name, |v| {
        v["spec"]["guardrails"]["cooldownSeconds"] = 5.into();
        v["spec"]["guardrails"]["verificationWindowSeconds"] = 5.into();
    })
    .await?;
    deploy(&client, &ns.name, "web", 2).await?;
    deploy(&client, &ns.name, "payments", 2).await?;
    let payments_before = pod_names(&client, &ns.name, "payments").await?;

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
            fingerprint: fingerprint(&ns.name, &web, SignalKind::OOMKilled),
            target: WorkloadRef {
                kind: WorkloadKind::Deployment,
                name: "payments".into(),
            },
            signal: SignalKind::OOMKilled,
            policy: "demo-services".into(),
            approval: None,
        },
    );
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns.name);
    incidents.create(&PostParams::default(), &squat).await?;
    let _operator = Operator::start(&ns.name, &[]).await?;

    chaos(&client, &ns.name, "web").oom().await?;
    wait_until(
        LONG,
        "a FingerprintMismatch event on the squatting incident",
        || {
            let (client, ns, name) = (client.clone(), ns.name.clone(), name.clone());
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
        pod_names(&client, &ns.name, "payments").await?,
        payments_before,
        "payments was not touched"
    );
    let limit = Api::<Deployment>::namespaced(client.clone(), &ns.name)
        .get("payments")
        .await?
        .spec
        .template
        .spec
        .and_then(|s| s.containers[0].resources.clone())
        .and_then(|r| r.limits)
        .and_then(|l| l.get("memory").map(|q| q.0.clone()));
    assert_eq!(limit.as_deref(), Some("64Mi"), "payments' memory unchanged");
    ns.cleanup().await
}

#[tokio::test]
async fn an_approved_step_waits_while_the_policy_no_longer_selects_the_target() -> Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-unselected").await?;
    create_policy(&client, &ns.name, |v| {
        v["spec"]["mode"] = "Manual".into();
        v["spec"]["guardrails"]["cooldownSeconds"] = 5.into();
        v["spec"]["guardrails"]["verificationWindowSeconds"] = 5.into();
    })
    .await?;
    deploy(&client, &ns.name, "ledger", 2).await?;
    let _operator = Operator::start(&ns.name, &[]).await?;

    chaos(&client, &ns.name, "ledger").crashloop(5).await?;
    let name = incident_of("ledger", SignalKind::CrashLoopBackOff);
    let inc = wait_incident(&client, &ns.name, &name, LONG, "AwaitingApproval", |i| {
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
    let pods_before = pod_names(&client, &ns.name, "ledger").await?;

    // The platform team narrows the policy: ledger is no longer covered.
    let policies: Api<RemediationPolicy> = Api::namespaced(client.clone(), &ns.name);
    let narrow = serde_json::json!({ "spec": { "selector": { "matchLabels": {
        "sre.space/protected": null, "app": "checkout" } } } });
    policies
        .patch(
            "demo-services",
            &PatchParams::default(),
            &Patch::Merge(narrow),
        )
        .await?;
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns.name);
    let approval = serde_json::json!({ "spec": { "approval": {
        "actionId": waiting.id, "decision": "Approve", "by": "oncall" } } });
    incidents
        .patch(&name, &PatchParams::default(), &Patch::Merge(approval))
        .await?;
    let held = wait_incident(&client, &ns.name, &name, LONG, "TargetNotSelected", |i| {
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
        pod_names(&client, &ns.name, "ledger").await?,
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
        event_reasons(&client, &ns.name, &name)
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
        || {
            let (client, ns, before) = (client.clone(), ns.name.clone(), pods_before.clone());
            async move {
                let after = pod_names(&client, &ns, "ledger").await?;
                Ok(before.difference(&after).count() == 1)
            }
        },
    )
    .await?;
    ns.cleanup().await
}
