//! GitOps-aware changes on the real local cluster: a Deployment Argo CD
//! tracks (its real tracking annotation and an `argocd-controller`
//! server-side-apply field manager, written here as Argo CD writes them;
//! no Argo CD runs) is never patched: a memory raise, a scale and a
//! rollback become pull requests on the fake GitHub, driven through the
//! real octocrab client; without a GitOps file the incident escalates.
#![cfg(feature = "cluster")]

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{Patch, PatchParams};
use sre_space::crd::{ActionState, ActionType, Incident, Phase, SignalKind};
use sre_space_e2e::fake_github::{self, FakeGitHub};
use sre_space_e2e::scenario::LONG;
use sre_space_e2e::{Scenario, incident_of, wait_incident};

const REPO: &str = "acme/deploy";
const PATH: &str = "deploy/values.yaml";
const VALUES: &str = "# checkout, synced by Argo CD\ncheckout:\n  replicas: 1 # one zone\n  image: registry.local/checkout:1\n  resources:\n    limits:\n      memory: 64Mi\n";
const CODEOWNERS: &str = "* @acme/platform\ndeploy/ @acme/shop @checkout-lead\n";

/// Marks the Deployment as Argo CD leaves what it syncs: the tracking
/// annotation, and the fields of its manifest owned by `argocd-controller`
/// through server-side apply (the same values, so nothing rolls).
async fn track_with_argo_cd(s: &Scenario, name: &str) -> Result<Deployment> {
    let current = s.deployment(name).await?;
    let container = current
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|p| p.containers.first())
        .cloned()
        .expect("a container");
    let manifest = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name, "annotations": {
            "argocd.argoproj.io/tracking-id": format!("{0}:apps/Deployment:{0}/{name}", s.name())
        } },
        "spec": {
            "replicas": current.spec.replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name, "sre.space/protected": "true" } },
                "spec": { "containers": [{
                    "name": container.name, "image": container.image,
                    "resources": container.resources,
                }] }
            }
        }
    });
    let api: Api<Deployment> = Api::namespaced(s.client.clone(), s.name());
    Ok(api
        .patch(
            name,
            &PatchParams::apply("argocd-controller").force(),
            &Patch::Apply(&manifest),
        )
        .await?)
}

fn last_action(i: &Incident) -> Option<sre_space::crd::ActionRecord> {
    i.status.as_ref().and_then(|s| s.actions.last().cloned())
}

/// The policy's GitOps file, with the keys for all three changes.
fn gitops_file(v: &mut serde_json::Value) {
    v["spec"]["github"] = serde_json::json!({
        "repository": REPO,
        "gitops": {
            "path": PATH,
            "valuesKey": "checkout.resources.limits.memory",
            "replicasKey": "checkout.replicas",
            "imageKey": "checkout.image"
        }
    });
}

/// What the cluster's Deployment must keep: its generation and its spec.
fn unchanged(before: &Deployment, after: &Deployment) {
    assert_eq!(
        before.metadata.generation, after.metadata.generation,
        "the Deployment's generation is unchanged: never patched"
    );
    assert_eq!(
        serde_json::to_value(&before.spec).ok(),
        serde_json::to_value(&after.spec).ok(),
        "the Deployment's spec is unchanged"
    );
}

/// Waits for the incident's step `action` to be proposed, and checks the
/// pull request it opened: one value changed, labels, reviewers, links.
async fn proposed(
    s: &Scenario,
    fake: &FakeGitHub,
    signal: SignalKind,
    action: ActionType,
    changed: (&str, &str),
) -> Result<()> {
    let inc = wait_incident(
        &s.client,
        s.name(),
        &incident_of("checkout", signal),
        LONG,
        "a pull request",
        |i| {
            last_action(i)
                .is_some_and(|a| a.type_ == action && a.state == ActionState::AwaitingMerge)
        },
    )
    .await?;
    let action_record = last_action(&inc).expect("the action");
    assert!(
        action_record.detail.contains("is managed by Argo CD"),
        "the incident says why it chose a pull request: {}",
        action_record.detail
    );
    let pr = action_record.pull_request.expect("a pull request");
    assert_eq!(
        fake.file(REPO, &pr.branch, PATH),
        Some(VALUES.replace(changed.0, changed.1)),
        "the one value changed, the rest byte for byte"
    );
    let pulls = fake.pulls(REPO);
    let pull = pulls
        .iter()
        .find(|p| p.number == pr.number)
        .expect("the pull request on GitHub");
    assert!(
        pull.labels.contains(&"sre-space".to_string()),
        "{:?}",
        pull.labels
    );
    assert_eq!(pull.reviewers, ["checkout-lead"]);
    assert_eq!(pull.team_reviewers, ["shop"]);
    let kubectl = format!(
        "kubectl -n {} get incident {}",
        s.name(),
        incident_of("checkout", signal)
    );
    assert!(pull.body.contains(&kubectl), "{}", pull.body);
    if let Some(n) = inc
        .status
        .as_ref()
        .and_then(|st| st.github.as_ref())
        .and_then(|g| g.issue_number)
    {
        assert!(pull.body.contains(&format!("Refs #{n}")), "{}", pull.body);
    }
    assert!(
        fake.requests().iter().all(|r| !r.contains("/merge")),
        "the operator never merges"
    );
    Ok(())
}

#[tokio::test]
async fn an_argo_tracked_deployments_memory_raise_is_a_pull_request_and_it_is_never_patched()
-> Result<()> {
    let (fake, url) = FakeGitHub::start().await;
    fake.seed(REPO, &[(PATH, VALUES), (".github/CODEOWNERS", CODEOWNERS)]);
    let s = Scenario::builder("e2e-gitops-memory")
        .policy(gitops_file)
        .deploy("checkout", 1, "64Mi")
        .start()
        .await?;
    let before = track_with_argo_cd(&s, "checkout").await?;
    let _operator = s
        .operator(&[
            fake_github::operator_env(&url)[0],
            fake_github::operator_env(&url)[1],
            ("SRE_SPACE_DASHBOARD_PUBLIC_URL", "https://sre.example.com"),
        ])
        .await?;
    s.chaos("checkout").oom().await?;
    proposed(
        &s,
        &fake,
        SignalKind::OOMKilled,
        ActionType::RaiseMemoryLimit,
        ("memory: 64Mi", "memory: 96Mi"),
    )
    .await?;
    let pull = fake.pulls(REPO).pop().expect("a pull request");
    assert!(
        pull.body.contains("https://sre.example.com/incidents/"),
        "{}",
        pull.body
    );
    assert_eq!(pull.labels, ["sre-space", "sre-space/raise-memory-limit"]);
    unchanged(&before, &s.deployment("checkout").await?);
    s.cleanup().await
}

#[tokio::test]
async fn an_argo_tracked_deployments_scale_is_a_pull_request_and_it_is_never_patched() -> Result<()>
{
    let (fake, url) = FakeGitHub::start().await;
    fake.seed(REPO, &[(PATH, VALUES), (".github/CODEOWNERS", CODEOWNERS)]);
    let s = Scenario::builder("e2e-gitops-scale")
        .policy(|v| {
            gitops_file(v);
            v["spec"]["actions"] = serde_json::json!([
                { "type": "Scale", "maxReplicas": 3 },
                { "type": "Escalate" }
            ]);
        })
        .deploy("checkout", 1, "64Mi")
        .start()
        .await?;
    let before = track_with_argo_cd(&s, "checkout").await?;
    let _operator = s.operator(&fake_github::operator_env(&url)).await?;
    s.chaos("checkout").oom().await?;
    proposed(
        &s,
        &fake,
        SignalKind::OOMKilled,
        ActionType::Scale,
        ("replicas: 1 #", "replicas: 2 #"),
    )
    .await?;
    unchanged(&before, &s.deployment("checkout").await?);
    s.cleanup().await
}

#[tokio::test]
async fn an_argo_tracked_deployments_rollback_is_a_pull_request_for_the_previous_image()
-> Result<()> {
    let (fake, url) = FakeGitHub::start().await;
    let values = VALUES.replace("checkout:1", "checkout:2");
    fake.seed(REPO, &[(PATH, &values), (".github/CODEOWNERS", CODEOWNERS)]);
    let s = Scenario::builder("e2e-gitops-rollback")
        .policy(gitops_file)
        .deploy("checkout", 1, "64Mi")
        .start()
        .await?;
    // The bad release (a new image whose pods crash) reaches the cluster
    // as a sync of Git would, then Argo CD's tracking is in place.
    let api: Api<Deployment> = Api::namespaced(s.client.clone(), s.name());
    let simulate = sre_chaos::SIMULATE;
    let release = serde_json::json!({ "spec": { "template": {
        "metadata": { "annotations": { simulate: "crashloop" } },
        "spec": { "containers": [{ "name": "app", "image": "registry.local/checkout:2",
            "args": ["--port=8080", "--config=/etc/app/missing.yaml"] }] }
    } } });
    api.patch(
        "checkout",
        &PatchParams::default(),
        &Patch::Strategic(release),
    )
    .await?;
    let before = track_with_argo_cd(&s, "checkout").await?;
    let _operator = s.operator(&fake_github::operator_env(&url)).await?;
    let inc = wait_incident(
        &s.client,
        s.name(),
        &incident_of("checkout", SignalKind::CrashLoopBackOff),
        LONG,
        "a rollback proposed",
        |i| {
            last_action(i).is_some_and(|a| {
                a.type_ == ActionType::Rollback && a.state == ActionState::AwaitingMerge
            })
        },
    )
    .await?;
    let pr = last_action(&inc)
        .and_then(|a| a.pull_request)
        .expect("a pull request");
    let proposed = fake.file(REPO, &pr.branch, PATH).expect("the file");
    assert!(
        proposed.contains("image: registry.local/checkout:1"),
        "the previous image: {proposed}"
    );
    assert_eq!(
        proposed.lines().count(),
        values.lines().count(),
        "one line changed"
    );
    unchanged(&before, &s.deployment("checkout").await?);
    s.cleanup().await
}

#[tokio::test]
async fn an_argo_tracked_deployment_without_a_gitops_file_escalates_and_is_never_patched()
-> Result<()> {
    let s = Scenario::builder("e2e-gitops-escalate")
        .policy(|_| {})
        .deploy("checkout", 1, "64Mi")
        .start()
        .await?;
    let before = track_with_argo_cd(&s, "checkout").await?;
    let _operator = s.operator(&[]).await?;
    s.chaos("checkout").oom().await?;
    let inc = wait_incident(
        &s.client,
        s.name(),
        &incident_of("checkout", SignalKind::OOMKilled),
        LONG,
        "escalated",
        |i| {
            i.status
                .as_ref()
                .is_some_and(|st| st.phase == Phase::Escalated)
        },
    )
    .await?;
    let status = inc.status.expect("a status");
    let escalated = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Escalated")
        .expect("the Escalated condition");
    assert_eq!(escalated.reason, "ManagedByGitOps");
    assert!(
        escalated.message.contains("managed by Argo CD"),
        "{}",
        escalated.message
    );
    assert!(
        status
            .actions
            .iter()
            .all(|a| a.type_ != ActionType::RaiseMemoryLimit || a.state == ActionState::Blocked),
        "the raise is not made: {:?}",
        status.actions
    );
    unchanged(&before, &s.deployment("checkout").await?);
    s.cleanup().await
}
