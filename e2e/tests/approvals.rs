//! Approvals on the real local cluster: one approval decides one action of
//! one episode, once; the API server, through the chart's admission policy,
//! refuses an approval signed with someone else's name; and
//! `sre-space approve|reject` sign as the caller.
#![cfg(feature = "cluster")]

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::{Value, json};
use sre_space::crd::{ActionState, ActionType, ConditionStatus, Incident, Phase, SignalKind};
use sre_space_e2e::scenario::LONG;
use sre_space_e2e::{
    Scenario, TestNamespace, client, helm_output, incident_of, install_crds, kubectl_output,
    operator_bin, repo_dir, service_account_kubeconfig, wait_incident, wait_until,
};

fn phase(i: &Incident) -> Phase {
    i.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

fn actions(i: &Incident) -> Vec<(String, ActionType, ActionState)> {
    i.status
        .iter()
        .flat_map(|s| s.actions.iter())
        .map(|a| (a.id.clone(), a.type_, a.state))
        .collect()
}

fn waiting_id(i: &Incident) -> Result<String> {
    let a = i
        .status
        .as_ref()
        .and_then(|s| s.actions.last())
        .context("an action")?;
    anyhow::ensure!(
        a.state == ActionState::AwaitingApproval,
        "{} is {:?}",
        a.id,
        a.state
    );
    Ok(a.id.clone())
}

fn approval(id: &str, by: &str) -> Value {
    json!({ "spec": { "approval": { "actionId": id, "decision": "Approve", "by": by } } })
}

#[tokio::test]
async fn last_episodes_approval_does_not_run_this_episodes_action() -> Result<()> {
    let s = Scenario::builder("e2e-approve-episode")
        .policy(|v| {
            v["spec"]["mode"] = "Manual".into();
            v["spec"]["guardrails"]["cooldownSeconds"] = 5.into();
            v["spec"]["guardrails"]["verificationWindowSeconds"] = 5.into();
            // A problem that returns opens a new episode, not an escalation.
            v["spec"]["guardrails"]["recurrenceWindowSeconds"] = 0.into();
        })
        .deploy("ledger", 3, "64Mi")
        .start()
        .await?;
    let (client, name) = (s.client.clone(), s.name().to_string());
    let _operator = s.operator(&[]).await?;
    let chaos = s.chaos("ledger");
    let api: Api<Incident> = Api::namespaced(client.clone(), &name);
    let incident = &incident_of("ledger", SignalKind::CrashLoopBackOff);

    // Episode 1: approved, acted on once, resolved.
    chaos.crashloop(5).await?;
    let first = wait_incident(&client, &name, incident, LONG, "AwaitingApproval", |i| {
        phase(i) == Phase::AwaitingApproval
    })
    .await?;
    let old_id = waiting_id(&first)?;
    let first_detected = first.status.as_ref().and_then(|s| s.detected_at.clone());
    api.patch(
        incident,
        &PatchParams::default(),
        &Patch::Merge(approval(&old_id, "oncall")),
    )
    .await?;
    let resolved = wait_incident(&client, &name, incident, LONG, "Resolved", |i| {
        phase(i) == Phase::Resolved
    })
    .await?;
    assert_eq!(
        actions(&resolved),
        [(
            old_id.clone(),
            ActionType::RestartPod,
            ActionState::Succeeded
        )]
    );
    assert_eq!(
        resolved.spec.approval, None,
        "a used approval is cleared, so it cannot approve anything later"
    );

    // The problem returns: a new episode, whose action waits for a person.
    // (Later than the resolution by more than the timestamps' one-second
    // resolution, or it reads as part of the old episode.)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    chaos.crashloop(5).await?;
    let second = wait_incident(
        &client,
        &name,
        incident,
        LONG,
        "a new episode waiting",
        |i| {
            phase(i) == Phase::AwaitingApproval
                && i.status.as_ref().and_then(|s| s.detected_at.clone()) != first_detected
        },
    )
    .await?;
    let new_id = waiting_id(&second)?;
    assert_ne!(new_id, old_id, "action ids never repeat across episodes");

    // Last episode's approval, applied again (say, from a stale manifest).
    let pods_before = s.pod_names("ledger").await?;
    api.patch(
        incident,
        &PatchParams::default(),
        &Patch::Merge(approval(&old_id, "oncall")),
    )
    .await?;
    let refused = wait_incident(
        &client,
        &name,
        incident,
        Duration::from_secs(30),
        "the stale approval cleared",
        |i| i.spec.approval.is_none(),
    )
    .await?;
    let condition = refused
        .status
        .iter()
        .flat_map(|s| s.conditions.iter())
        .find(|c| c.type_ == "Approved")
        .context("an Approved condition")?
        .clone();
    assert_eq!(
        (condition.status, condition.reason.as_str()),
        (ConditionStatus::False, "ApprovalNotApplicable")
    );
    assert!(
        condition.message.contains(&old_id) && condition.message.contains(&new_id),
        "the condition names the stale id and the waiting one: {}",
        condition.message
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let still = api.get(incident).await?;
    assert_eq!(phase(&still), Phase::AwaitingApproval, "nothing ran");
    assert_eq!(
        actions(&still),
        [(
            new_id.clone(),
            ActionType::RestartPod,
            ActionState::AwaitingApproval
        )]
    );
    assert_eq!(
        s.pod_names("ledger").await?,
        pods_before,
        "no pod was restarted"
    );
    let reasons = kubectl_output(&[
        "get",
        "events.events.k8s.io",
        "-n",
        &name,
        "--field-selector",
        &format!("regarding.name={incident}"),
        "-o",
        "jsonpath={.items[*].reason}",
    ])?;
    assert!(
        reasons.split(' ').any(|r| r == "ApprovalNotApplicable"),
        "an event says so: {reasons}"
    );

    // This episode's approval runs this episode's action, once.
    api.patch(
        incident,
        &PatchParams::default(),
        &Patch::Merge(approval(&new_id, "oncall")),
    )
    .await?;
    let done = wait_incident(&client, &name, incident, LONG, "Resolved again", |i| {
        phase(i) == Phase::Resolved
    })
    .await?;
    assert_eq!(
        actions(&done),
        [(new_id, ActionType::RestartPod, ActionState::Succeeded)]
    );
    assert_eq!(
        pods_before
            .difference(&s.pod_names("ledger").await?)
            .count(),
        1,
        "exactly one pod was restarted"
    );
    s.cleanup().await
}

/// The chart's admission policy and people's roles, rendered for a release
/// named after the test's namespace and bound in that namespace only (so
/// other tests are not affected), applied, and deleted when dropped.
struct ChartPolicy {
    file: std::path::PathBuf,
    approve_role: String,
}

impl ChartPolicy {
    async fn apply(ns: &str) -> Result<Self> {
        let chart = repo_dir().join("charts/sre-space");
        let yaml = helm_output(&[
            "template",
            ns,
            &chart.to_string_lossy(),
            "--namespace",
            ns,
            "--set",
            &format!("operator.watchNamespace={ns}"),
            "--show-only",
            "templates/approvals.yaml",
            "--show-only",
            "templates/user-roles.yaml",
        ])?;
        let mut kinds = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&yaml) {
            let v = Value::deserialize(doc)?;
            if !v.is_null() {
                kinds.push(v["kind"].as_str().unwrap_or_default().to_string());
            }
        }
        assert!(
            kinds.contains(&"ValidatingAdmissionPolicy".to_string())
                && kinds.contains(&"ValidatingAdmissionPolicyBinding".to_string()),
            "{kinds:?}"
        );
        let file = std::env::temp_dir().join(format!("sre-space-{ns}-approvals.yaml"));
        std::fs::write(&file, &yaml)?;
        let policy = Self {
            file,
            approve_role: format!("{ns}-sre-space-approve"),
        };
        kubectl_output(&["apply", "-f", &policy.file.to_string_lossy()])?;
        Ok(policy)
    }
}

impl Drop for ChartPolicy {
    fn drop(&mut self) {
        let _ = kubectl_output(&[
            "delete",
            "--ignore-not-found",
            "-f",
            &self.file.to_string_lossy(),
        ]);
        let _ = std::fs::remove_file(&self.file);
    }
}

/// A ServiceAccount granted the chart's approve role in `ns`, and a client
/// (and kubeconfig, with `ns` as its namespace) that authenticates as it.
async fn person(
    admin: &Client,
    ns: &str,
    name: &str,
    policy: &ChartPolicy,
) -> Result<(Client, std::path::PathBuf, String)> {
    let sa: ServiceAccount = serde_json::from_value(json!({ "metadata": { "name": name } }))?;
    Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &sa)
        .await?;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": format!("{name}-approve") },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": policy.approve_role },
        "subjects": [{ "kind": "ServiceAccount", "name": name, "namespace": ns }],
    }))?;
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await?;
    let path = service_account_kubeconfig(ns, name)?;
    // As a person's kubeconfig would: the context names the namespace.
    let mut config: Value = serde_yaml::from_str(&std::fs::read_to_string(&path)?)?;
    config["contexts"][0]["context"]["namespace"] = ns.into();
    std::fs::write(&path, serde_yaml::to_string(&config)?)?;
    let kubeconfig = Kubeconfig::read_from(&path)?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok((
        Client::try_from(config)?,
        path,
        format!("system:serviceaccount:{ns}:{name}"),
    ))
}

/// An Incident as the Scout would open it, without an operator.
async fn open_incident(admin: &Client, ns: &str, name: &str) -> Result<Api<Incident>> {
    let api: Api<Incident> = Api::namespaced(admin.clone(), ns);
    let inc: Incident = serde_json::from_value(json!({
        "apiVersion": "sre.space/v1alpha1", "kind": "Incident",
        "metadata": { "name": name },
        "spec": {
            "fingerprint": "f00d", "policy": "demo-services", "signal": "CrashLoopBackOff",
            "target": { "kind": "Deployment", "name": "ledger" },
        },
    }))?;
    api.create(&PostParams::default(), &inc).await?;
    Ok(api)
}

async fn set_waiting(api: &Api<Incident>, name: &str, state: &str) -> Result<()> {
    let status = json!({ "status": {
        "phase": if state == "AwaitingApproval" { "AwaitingApproval" } else { "Verifying" },
        "occurrences": 1,
        "episode": 3,
        "actions": [{
            "id": "e3-1-restartpod", "type": "RestartPod", "state": state,
            "detail": "evict pod ledger-7f9c-x2k", "target": "Pod/ledger-7f9c-x2k",
            "recordedAt": "2026-12-01T10:00:00Z",
        }],
    } });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await?;
    Ok(())
}

fn refused_for_identity(result: &kube::Result<Incident>) -> bool {
    matches!(result, Err(kube::Error::Api(s))
        if s.message.contains("spec.approval.by must be your own username"))
}

#[tokio::test]
async fn the_api_server_refuses_an_approval_signed_with_another_name() -> Result<()> {
    let admin = client().await?;
    install_crds(&admin).await?;
    let ns = TestNamespace::create(&admin, "e2e-approve-vap").await?;
    let policy = ChartPolicy::apply(&ns.name).await?;
    let (alice, alice_config, alice_name) = person(&admin, &ns.name, "alice", &policy).await?;
    let (mallory, mallory_config, _) = person(&admin, &ns.name, "mallory", &policy).await?;
    let name = "ledger-crashloopbackoff";
    open_incident(&admin, &ns.name, name).await?;
    let as_alice: Api<Incident> = Api::namespaced(alice, &ns.name);
    let as_mallory: Api<Incident> = Api::namespaced(mallory, &ns.name);
    let pp = PatchParams::default();

    // Mallory signs as Alice: refused (once the new policy is in force;
    // each try writes another id, so each is a change the policy judges).
    let mut attempt = 0;
    wait_until(Duration::from_secs(30), "the policy in force", || {
        attempt += 1;
        let api = as_mallory.clone();
        let forged = approval(&format!("e1-{attempt}-restartpod"), &alice_name);
        async move {
            let result = api
                .patch(name, &PatchParams::default(), &Patch::Merge(forged))
                .await;
            Ok(refused_for_identity(&result))
        }
    })
    .await?;
    // An id the wait never wrote: had its first try landed before the
    // policy was in force, writing the same value again is no change.
    let forged = as_mallory
        .patch(
            name,
            &pp,
            &Patch::Merge(approval("e9-1-restartpod", &alice_name)),
        )
        .await;
    assert!(refused_for_identity(&forged), "{forged:?}");

    // Alice signs as herself: allowed, and recorded.
    let written = as_alice
        .patch(
            name,
            &pp,
            &Patch::Merge(approval("e2-1-rollback", &alice_name)),
        )
        .await?;
    let by = written.spec.approval.and_then(|a| a.by);
    assert_eq!(by.as_deref(), Some(alice_name.as_str()));

    // Neither may Alice sign as someone else, leave `by` out, nor may a
    // cluster admin sign as a made-up on-call.
    let as_other = as_alice
        .patch(
            name,
            &pp,
            &Patch::Merge(approval("e1-1-restartpod", "oncall")),
        )
        .await;
    assert!(refused_for_identity(&as_other), "{as_other:?}");
    let unsigned = json!({ "spec": { "approval": { "actionId": "e1-2-restartpod", "decision": "Reject", "by": null } } });
    let unsigned = as_alice.patch(name, &pp, &Patch::Merge(unsigned)).await;
    assert!(refused_for_identity(&unsigned), "{unsigned:?}");
    let as_admin = Api::<Incident>::namespaced(admin.clone(), &ns.name)
        .patch(
            name,
            &pp,
            &Patch::Merge(approval("e1-2-restartpod", "oncall")),
        )
        .await;
    assert!(refused_for_identity(&as_admin), "{as_admin:?}");

    // Changing something else keeps Alice's approval as it is; removing it
    // (what the operator does once it is used) is allowed.
    let labelled = as_alice
        .patch(
            name,
            &pp,
            &Patch::Merge(json!({ "metadata": { "labels": { "team": "payments" } } })),
        )
        .await;
    assert!(labelled.is_ok(), "{labelled:?}");
    let cleared = as_mallory
        .patch(
            name,
            &pp,
            &Patch::Merge(json!({ "spec": { "approval": null } })),
        )
        .await?;
    assert_eq!(cleared.spec.approval, None);

    for path in [alice_config, mallory_config] {
        std::fs::remove_file(path)?;
    }
    drop(policy);
    ns.cleanup().await
}

/// Runs the operator binary with `args` as the person of `kubeconfig`.
fn sre_space(kubeconfig: &std::path::Path, args: &[&str]) -> Result<std::process::Output> {
    Ok(std::process::Command::new(operator_bin())
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("SRE_SPACE_WATCH_NAMESPACE")
        .output()?)
}

#[tokio::test]
async fn sre_space_approve_prints_the_action_and_signs_as_the_caller() -> Result<()> {
    let admin = client().await?;
    install_crds(&admin).await?;
    let ns = TestNamespace::create(&admin, "e2e-approve-cli").await?;
    let policy = ChartPolicy::apply(&ns.name).await?;
    let (_, config, username) = person(&admin, &ns.name, "oncall", &policy).await?;
    let name = "ledger-crashloopbackoff";
    let api = open_incident(&admin, &ns.name, name).await?;
    set_waiting(&api, name, "AwaitingApproval").await?;

    // The namespace comes from the kubeconfig's context, as with kubectl;
    // `by` is what the API server calls the caller, which the admission
    // policy accepts.
    let out = sre_space(&config, &["approve", name])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for part in [
        "RestartPod (e3-1-restartpod)",
        "Pod/ledger-7f9c-x2k",
        "evict pod ledger-7f9c-x2k",
    ] {
        assert!(stdout.contains(part), "{part} in: {stdout}");
    }
    assert!(
        stdout.contains(&format!("e3-1-restartpod approved by {username}")),
        "{stdout}"
    );
    let approval = api.get(name).await?.spec.approval.context("written")?;
    assert_eq!(
        (approval.action_id.as_str(), approval.by.as_deref()),
        ("e3-1-restartpod", Some(username.as_str()))
    );

    // Nothing waiting: refused, saying so, and nothing is written.
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "approval": null } })),
    )
    .await?;
    set_waiting(&api, name, "Succeeded").await?;
    let out = sre_space(&config, &["reject", name, "-n", &ns.name])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("has no action waiting for approval")
            && stderr.contains("e3-1-restartpod (Succeeded)"),
        "{stderr}"
    );
    assert_eq!(api.get(name).await?.spec.approval, None);

    std::fs::remove_file(config)?;
    drop(policy);
    ns.cleanup().await
}
