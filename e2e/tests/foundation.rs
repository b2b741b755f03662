//! The foundation on the real local cluster: our CRDs install and behave as
//! users see them through kubectl, and the control plane really schedules and
//! replaces pods on the kwok nodes.
#![cfg(feature = "cluster")]

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use sre_space::crd::{Mode, RemediationPolicy, RemediationPolicySpec};
use sre_space_e2e::{TestNamespace, client, install_crds, kubectl_output, wait_until};

async fn setup(prefix: &str) -> Result<(Client, TestNamespace)> {
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, prefix).await?;
    Ok((client, ns))
}

fn example_policy() -> serde_json::Value {
    let text =
        std::fs::read_to_string(sre_space_e2e::repo_dir().join("examples/remediation-policy.yaml"))
            .expect("examples/remediation-policy.yaml");
    serde_yaml::from_str(&text).expect("the example policy is YAML")
}

/// Creates the example policy with `edit` applied and returns the API
/// server's answer.
async fn create_policy(
    api: &Api<RemediationPolicy>,
    name: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> kube::Result<RemediationPolicy> {
    let mut value = example_policy();
    value["metadata"]["name"] = name.into();
    edit(&mut value);
    let policy: RemediationPolicy =
        serde_json::from_value(value).expect("policy still deserialises");
    api.create(&PostParams::default(), &policy).await
}

fn rejection_message(result: kube::Result<RemediationPolicy>) -> String {
    match result {
        Ok(p) => panic!("the API server accepted an invalid policy: {:?}", p.spec),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "expected 422 Invalid, got {status:?}");
            status.message
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[tokio::test]
async fn crds_are_established_and_kubectl_lists_incidents() -> Result<()> {
    let (_client, ns) = setup("e2e-crds").await?;
    let out = kubectl_output(&["get", "incidents", "-n", &ns.name])?;
    assert_eq!(out, "", "a fresh namespace has no incidents");
    let out = kubectl_output(&["get", "inc,rp,incmem", "-n", &ns.name, "-o", "name"])?;
    assert_eq!(out, "", "short names resolve");
    let explain = kubectl_output(&["explain", "incident.status.diagnosis"])?;
    assert!(
        explain.contains("root-cause analysis"),
        "kubectl explain shows field docs:\n{explain}"
    );
    assert!(explain.contains("hypotheses"), "{explain}");
    ns.cleanup().await
}

#[tokio::test]
async fn valid_policy_round_trips_and_shows_its_columns() -> Result<()> {
    let (client, ns) = setup("e2e-policy").await?;
    let api: Api<RemediationPolicy> = Api::namespaced(client, &ns.name);
    let created = create_policy(&api, "demo-services", |_| {}).await?;
    let fetched = api.get("demo-services").await?;
    assert_eq!(fetched.spec, created.spec);
    let expected: RemediationPolicySpec = serde_json::from_value(example_policy()["spec"].clone())?;
    assert_eq!(
        fetched.spec, expected,
        "what was written is what is read back"
    );
    assert_eq!(fetched.spec.mode, Mode::Automatic);

    let wide = kubectl_output(&["get", "rp", "-n", &ns.name, "-o", "wide"])?;
    let header: Vec<&str> = wide
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME", "MODE", "MATCHED", "READY", "REASON", "COOLDOWN", "LAST", "SWEEP", "SWEEP",
            "FINDINGS", "AGE"
        ]
    );
    assert!(wide.contains("Automatic"), "{wide}");
    // The sweep's columns, empty unless a sweep runs, only in the wide view.
    let narrow = kubectl_output(&["get", "rp", "-n", &ns.name])?;
    let header: Vec<&str> = narrow
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "MODE", "MATCHED", "READY", "AGE"]);
    ns.cleanup().await
}

#[tokio::test]
async fn policy_defaults_are_filled_in_by_the_api_server() -> Result<()> {
    let (client, ns) = setup("e2e-defaults").await?;
    let api: Api<RemediationPolicy> = Api::namespaced(client, &ns.name);
    create_policy(&api, "minimal", |v| {
        let spec = v["spec"].as_object_mut().expect("spec");
        spec.remove("mode");
        spec.remove("guardrails");
    })
    .await?;
    let raw = kubectl_output(&["get", "rp", "minimal", "-n", &ns.name, "-o", "json"])?;
    let raw: serde_json::Value = serde_json::from_str(&raw)?;
    assert_eq!(
        raw["spec"]["mode"], "DryRun",
        "an unset mode is the safe one"
    );
    assert_eq!(raw["spec"]["guardrails"]["cooldownSeconds"], 300);
    assert_eq!(raw["spec"]["guardrails"]["escalateAfterAttempts"], 3);
    ns.cleanup().await
}

#[tokio::test]
async fn invalid_policies_are_rejected_with_a_message_naming_the_field() -> Result<()> {
    let (client, ns) = setup("e2e-invalid").await?;
    let api: Api<RemediationPolicy> = Api::namespaced(client, &ns.name);

    let msg = rejection_message(
        create_policy(&api, "empty-selector", |v| {
            v["spec"]["selector"] = serde_json::json!({})
        })
        .await,
    );
    assert!(
        msg.contains("spec.selector") && msg.contains("at least one label"),
        "{msg}"
    );

    let msg = rejection_message(
        create_policy(&api, "negative-cooldown", |v| {
            v["spec"]["guardrails"]["cooldownSeconds"] = (-5).into()
        })
        .await,
    );
    assert!(msg.contains("spec.guardrails.cooldownSeconds"), "{msg}");

    let msg = rejection_message(
        create_policy(&api, "no-actions", |v| {
            v["spec"]["actions"] = serde_json::json!([])
        })
        .await,
    );
    assert!(msg.contains("spec.actions"), "{msg}");

    let msg = rejection_message(
        create_policy(&api, "memory-without-cap", |v| {
            v["spec"]["actions"] = serde_json::json!([{ "type": "RaiseMemoryLimit" }])
        })
        .await,
    );
    assert!(
        msg.contains("spec.actions[0]") && msg.contains("memory.max"),
        "{msg}"
    );

    let msg = rejection_message(
        create_policy(&api, "cap-below-step", |v| {
            v["spec"]["actions"][0]["memory"] =
                serde_json::json!({ "max": "16Mi", "minIncrease": "64Mi" })
        })
        .await,
    );
    assert!(
        msg.contains("spec.actions[0].memory") && msg.contains("cap"),
        "{msg}"
    );

    let msg = rejection_message(
        create_policy(&api, "bad-quantity", |v| {
            v["spec"]["actions"][0]["memory"] = serde_json::json!({ "max": "lots" })
        })
        .await,
    );
    assert!(
        msg.contains("spec.actions[0].memory") && msg.contains("quantity"),
        "{msg}"
    );

    let msg = rejection_message(
        create_policy(&api, "scale-without-max", |v| {
            v["spec"]["actions"] = serde_json::json!([{ "type": "Scale" }])
        })
        .await,
    );
    assert!(
        msg.contains("spec.actions[0]") && msg.contains("maxReplicas"),
        "{msg}"
    );

    // An unknown action cannot even be expressed by the Rust types, so it is
    // sent as raw YAML, the way a user's typo would arrive.
    let mut raw = example_policy();
    raw["metadata"]["name"] = "unknown-action".into();
    raw["spec"]["actions"] = serde_json::json!([{ "type": "Reboot" }]);
    let file = std::env::temp_dir().join(format!("{}-unknown-action.yaml", ns.name));
    std::fs::write(&file, serde_yaml::to_string(&raw)?)?;
    let err = kubectl_output(&["apply", "-n", &ns.name, "-f", &file.to_string_lossy()])
        .expect_err("an unknown action type is rejected");
    let msg = err.to_string();
    assert!(
        msg.contains("spec.actions[0].type") && msg.contains("Reboot"),
        "{msg}"
    );

    assert!(
        api.list(&ListParams::default()).await?.items.is_empty(),
        "nothing invalid was stored"
    );
    ns.cleanup().await
}

#[tokio::test]
async fn deployment_gets_three_running_pods_and_a_deleted_pod_is_replaced() -> Result<()> {
    let (client, ns) = setup("e2e-deploy").await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 3,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "app", "image": "registry.local/web:1" }] }
            }
        }
    }))?;
    deployments
        .create(&PostParams::default(), &deployment)
        .await?;

    let running = |pods: Api<Pod>| async move {
        let list = pods.list(&ListParams::default().labels("app=web")).await?;
        let running: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .collect();
        anyhow::Ok(running)
    };
    wait_until(Duration::from_secs(60), "3 Running pods", || {
        let pods = pods.clone();
        async move { Ok(running(pods).await?.len() == 3) }
    })
    .await?;
    for pod in running(pods.clone()).await? {
        let node = pod.spec.and_then(|s| s.node_name).unwrap_or_default();
        assert!(
            node.starts_with("kwok-node-"),
            "scheduled by the real scheduler onto a kwok node, got {node:?}"
        );
    }

    let victim = running(pods.clone())
        .await?
        .remove(0)
        .metadata
        .name
        .unwrap_or_default();
    pods.delete(&victim, &DeleteParams::default()).await?;
    wait_until(Duration::from_secs(60), "a replacement pod", || {
        let pods = pods.clone();
        let victim = victim.clone();
        async move {
            let running = running(pods).await?;
            Ok(running.len() == 3
                && running
                    .iter()
                    .all(|p| p.metadata.name.as_deref() != Some(&victim)))
        }
    })
    .await?;
    ns.cleanup().await
}

#[tokio::test]
async fn incident_identity_is_immutable() -> Result<()> {
    let (client, ns) = setup("e2e-immutable").await?;
    let api: Api<sre_space::crd::Incident> = Api::namespaced(client, &ns.name);
    let incident: sre_space::crd::Incident = serde_json::from_value(serde_json::json!({
        "apiVersion": "sre.space/v1alpha1", "kind": "Incident",
        "metadata": { "name": "web-oomkilled" },
        "spec": { "fingerprint": "abc", "target": { "kind": "Deployment", "name": "web" },
                  "signal": "OOMKilled", "policy": "demo-services" }
    }))?;
    api.create(&PostParams::default(), &incident).await?;
    let mut changed = api.get("web-oomkilled").await?;
    changed.spec.target.name = "other".into();
    let err = api
        .replace("web-oomkilled", &PostParams::default(), &changed)
        .await
        .expect_err("the target cannot be changed");
    assert!(err.to_string().contains("target is immutable"), "{err}");
    // Nor the policy: pointing an open incident at a wider policy would
    // let another policy's ladder act on the workload.
    let mut repointed = api.get("web-oomkilled").await?;
    repointed.spec.policy = "wider".into();
    let err = api
        .replace("web-oomkilled", &PostParams::default(), &repointed)
        .await
        .expect_err("the policy cannot be changed");
    assert!(err.to_string().contains("policy is immutable"), "{err}");
    ns.cleanup().await
}
