//! Secrets a crashing workload writes where the operator reads (its
//! termination message, its events) never reach what the operator writes,
//! on the real local cluster.
#![cfg(feature = "cluster")]

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Event;
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use sre_chaos::Target;
use sre_space::crd::{Incident, SignalKind};
use sre_space_e2e::{
    Operator, TestNamespace, client, create_policy, deployment, incident_of, install_crds,
    wait_incident, wait_ready,
};

const LONG: Duration = Duration::from_secs(90);
const TOKEN: &str = "ghp_Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Jh1Gf0EdCbA";
const PASSWORD: &str = "hunter2-e2e";
const WEBHOOK: &str = "T0E2E0000/B0E2E0000/XXXXXXXXXXXXXXXXXXXXXXXX";

#[tokio::test]
async fn a_crash_whose_termination_message_holds_secrets_leaves_none_in_the_incident() -> Result<()>
{
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-redact").await?;
    let name = ns.name.clone();
    create_policy(&client, &name, |v| v["spec"]["mode"] = "DryRun".into()).await?;
    Api::<Deployment>::namespaced(client.clone(), &name)
        .create(&PostParams::default(), &deployment("vault", 1, "64Mi"))
        .await?;
    wait_ready(&client, &name, "vault", 1, LONG).await?;
    let _operator = Operator::start(&name, &[]).await?;

    let chaos = Target {
        client: client.clone(),
        namespace: name.clone(),
        deployment: "vault".into(),
        dry_run: false,
    };
    let pod = chaos.running_pods().await?.remove(0);
    // The kubelet's event and the process's last words both quote secrets.
    let event: Event = serde_json::from_value(serde_json::json!({
        "metadata": { "name": format!("{}.leak", pod.name_any()) },
        "involvedObject": { "kind": "Pod", "name": pod.name_any(), "namespace": name },
        "type": "Warning",
        "reason": "BackOff",
        "message": format!("Back-off restarting failed container; env DB_PASSWORD={PASSWORD}"),
        "count": 1,
    }))?;
    Api::<Event>::namespaced(client.clone(), &name)
        .create(&PostParams::default(), &event)
        .await?;
    let last_words = format!(
        "fatal: GITHUB_TOKEN {TOKEN} rejected; DB_PASSWORD={PASSWORD}; \
         notify https://hooks.slack.com/services/{WEBHOOK}"
    );
    chaos
        .crashloop_pod_saying(pod, 5, Some(&last_words))
        .await?;

    let inc = wait_incident(
        &client,
        &name,
        &incident_of("vault", SignalKind::CrashLoopBackOff),
        LONG,
        "a diagnosis quoting the termination message and the event",
        |i| {
            i.status
                .as_ref()
                .and_then(|s| s.diagnosis.as_ref())
                .is_some_and(|d| {
                    d.evidence
                        .iter()
                        .any(|e| e.summary.contains("termination message"))
                        && d.evidence.iter().any(|e| e.summary.contains("BackOff"))
                })
        },
    )
    .await?;
    let status = serde_json::to_string(&inc.status)?;
    for secret in [TOKEN, PASSWORD, WEBHOOK] {
        assert!(
            !status.contains(secret),
            "{secret} reached Incident.status: {status}"
        );
    }
    assert!(
        status.contains("DB_PASSWORD=<redacted>") && status.contains("<redacted-token>"),
        "the evidence says what was hidden: {status}"
    );
    // Nor do the operator's own events about the incident quote them.
    let events = Api::<Event>::namespaced(client.clone(), &name)
        .list(&ListParams::default().fields(&format!(
            "involvedObject.kind=Incident,involvedObject.name={}",
            inc.name_any()
        )))
        .await?;
    let notes = serde_json::to_string(&events.items)?;
    for secret in [TOKEN, PASSWORD, WEBHOOK] {
        assert!(!notes.contains(secret), "{secret} in an event: {notes}");
    }
    let incidents = Api::<Incident>::namespaced(client.clone(), &name)
        .list(&ListParams::default())
        .await?;
    assert_eq!(incidents.items.len(), 1, "one incident");
    ns.cleanup().await
}
