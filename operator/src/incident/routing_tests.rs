//! The routing step in the incident reconciler: a changing action on a
//! workload Argo CD manages becomes a pull request or an escalation, and
//! its Deployment is never patched; an unmanaged one is patched as before.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::Store;

use super::{Context, reconcile};
use crate::crd::{
    ActionState, ActionStep, ActionType, GitHubTarget, GitOpsTarget, Incident, Mode, Phase,
    RemediationPolicy,
};
use crate::github::memory::InMemoryGitHub;
use crate::testing::api::FakeApi;
use crate::testing::{incident, now, policy, record, store, world};

const INCIDENT: &str = "/apis/sre.space/v1alpha1/namespaces/shop/incidents/web-oomkilled";
const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/shop/deployments/web";
const REPO: &str = "acme/deploy";
const PATH: &str = "apps/shop/values.yaml";
const VALUES: &str = "# shop\nweb:\n  replicas: 2 # two zones\n  image: web:1\n  resources:\n    limits:\n      memory: 64Mi\n";
const LIST: &str = "namespaces:\n- namespace: shop\n  github:\n  - repository: acme/deploy\n    paths: [apps/shop]\n";

/// The Deployment `web`, tracked by Argo CD when `argo`.
fn deployment(argo: bool) -> k8s_openapi::api::apps::v1::Deployment {
    let mut d = world::deployment();
    if argo {
        d.metadata.annotations = Some(
            [(
                "argocd.argoproj.io/tracking-id".to_string(),
                "shop:apps/Deployment:shop/web".to_string(),
            )]
            .into(),
        );
    }
    d
}

fn context(
    api: &FakeApi,
    github: &InMemoryGitHub,
    argo: bool,
    policy: RemediationPolicy,
    incident: &Incident,
) -> Arc<Context> {
    let client = api.client();
    let pods = vec![world::pod("web-1", true), world::pod("web-2", false)];
    let rs = world::replicaset();
    api.insert(&deployment(argo));
    api.insert(&rs);
    for p in &pods {
        api.insert(p);
    }
    api.insert(incident);
    api.insert(&policy);
    let pods: Store<Pod> = store(pods);
    let replicasets: Store<ReplicaSet> = store(vec![rs]);
    let allowlist =
        crate::allowlist::Shared::fixed(crate::allowlist::parse(LIST).expect("an allow-list"));
    let gh = crate::github::GitHub::guarding(github.api(), allowlist.clone());
    Arc::new(Context {
        client: client.clone(),
        config: crate::config::Config {
            dashboard_public_url: Some("https://sre.example.com".into()),
            ..crate::config::Config::default()
        },
        workloads: crate::workload::Workloads::new(client.clone(), pods, replicasets),
        policies: store(vec![policy]),
        incidents: store(vec![incident.clone()]),
        model: None,
        tokens: crate::llm::TokenLedger::default(),
        github: crate::github::Access::new(Some(gh), allowlist, client.clone()),
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

/// An Automatic policy whose ladder scales, with the GitOps file when
/// `file`.
fn scaling_policy(file: bool) -> RemediationPolicy {
    let mut p = policy(Mode::Automatic);
    p.spec.actions = vec![
        ActionStep {
            type_: ActionType::Scale,
            on_categories: vec![],
            max_replicas: Some(4),
            memory: None,
        },
        ActionStep {
            type_: ActionType::Escalate,
            on_categories: vec![],
            max_replicas: None,
            memory: None,
        },
    ];
    if file {
        p.spec.github = Some(GitHubTarget {
            repository: REPO.into(),
            labels: vec![],
            gitops: Some(GitOpsTarget {
                path: PATH.into(),
                base_branch: "main".into(),
                values_key: Some("web.resources.limits.memory".into()),
                container: None,
                replicas_key: Some("web.replicas".into()),
                image_key: Some("web.image".into()),
            }),
        });
    }
    p
}

/// The incident with a recorded, not yet taken, scale from 2 to 4.
fn pending_scale() -> Incident {
    let mut scale = record(1, ActionType::Scale, ActionState::Pending);
    scale.target = "Deployment/web".parse().ok();
    (scale.from, scale.to) = (Some("2".into()), Some("4".into()));
    let mut i = incident(Phase::Remediating, vec![scale]);
    if let Some(s) = i.status.as_mut() {
        s.github = Some(crate::crd::GitHubStatus {
            repository: REPO.into(),
            issue_number: Some(7),
            ..Default::default()
        });
    }
    i
}

fn stored(api: &FakeApi) -> Incident {
    serde_json::from_value(api.get(INCIDENT).expect("the incident")).expect("an Incident")
}

fn deployment_writes(api: &FakeApi) -> Vec<String> {
    api.writes()
        .iter()
        .map(|w| w.line())
        .filter(|l| l.contains(DEPLOYMENT))
        .collect()
}

#[tokio::test]
async fn a_scale_of_an_argo_tracked_deployment_is_proposed_in_git_and_never_patched() {
    let (api, github) = (FakeApi::default(), InMemoryGitHub::new());
    github.seed(
        REPO,
        &[
            (PATH, VALUES),
            (".github/CODEOWNERS", "apps/shop/ @acme/shop @ops-lead\n"),
        ],
    );
    let i = pending_scale();
    let ctx = context(&api, &github, true, scaling_policy(true), &i);
    reconcile(Arc::new(i), ctx).await.expect("the reconcile");

    assert_eq!(
        deployment_writes(&api),
        Vec::<String>::new(),
        "never patched"
    );
    let after = stored(&api);
    let action = after
        .status
        .as_ref()
        .and_then(|s| s.actions.last())
        .cloned();
    let action = action.expect("the action");
    assert_eq!(
        action.state,
        ActionState::AwaitingMerge,
        "{}",
        action.detail
    );
    assert!(
        action.detail.contains("is managed by Argo CD (annotation argocd.argoproj.io/tracking-id=shop:apps/Deployment:shop/web)"),
        "the incident says why: {}",
        action.detail
    );
    let pr = action.pull_request.expect("a pull request");
    assert_eq!(
        github.file_text(REPO, &pr.branch, PATH).as_deref(),
        Some(VALUES.replace("replicas: 2 #", "replicas: 4 #").as_str()),
        "the one value changed, every other byte kept"
    );
    let pulls = github.pulls(REPO);
    assert_eq!(pulls.len(), 1);
    let p = &pulls[0];
    assert_eq!(p.title, "[SRE-Space] Scale Deployment/web to 4 replicas");
    assert_eq!(p.labels, ["sre-space", "sre-space/scale"]);
    assert_eq!(p.reviewers, ["ops-lead"]);
    assert_eq!(p.team_reviewers, ["shop"]);
    for wanted in [
        "Refs #7",
        "`kubectl -n shop get incident web-oomkilled`",
        "[the incident on the dashboard](https://sre.example.com/incidents/shop/web-oomkilled)",
        "### Why a pull request",
    ] {
        assert!(p.body.contains(wanted), "{wanted} in:\n{}", p.body);
    }
}

#[tokio::test]
async fn a_managed_deployment_without_a_file_escalates_and_is_never_patched() {
    let (api, github) = (FakeApi::default(), InMemoryGitHub::new());
    let i = pending_scale();
    let ctx = context(&api, &github, true, scaling_policy(false), &i);
    reconcile(Arc::new(i), ctx).await.expect("the reconcile");

    assert_eq!(
        deployment_writes(&api),
        Vec::<String>::new(),
        "never patched"
    );
    assert!(github.writes().is_empty());
    let after = stored(&api);
    let status = after.status.expect("a status");
    assert_eq!(status.phase, Phase::Escalated);
    let escalated = status
        .conditions
        .iter()
        .find(|c| c.type_ == crate::conditions::ESCALATED)
        .expect("the Escalated condition");
    assert_eq!(escalated.reason, "ManagedByGitOps");
    assert!(
        escalated.message.contains("managed by Argo CD")
            && escalated.message.contains("replicasKey"),
        "who manages it and what to configure: {}",
        escalated.message
    );
    let scale = status
        .actions
        .iter()
        .find(|a| a.type_ == ActionType::Scale)
        .expect("the scale");
    assert_eq!(scale.state, ActionState::Blocked);
}

#[tokio::test]
async fn an_unmanaged_deployment_is_scaled_by_a_patch_as_before() {
    let (api, github) = (FakeApi::default(), InMemoryGitHub::new());
    github.seed(REPO, &[(PATH, VALUES)]);
    let i = pending_scale();
    let ctx = context(&api, &github, false, scaling_policy(true), &i);
    reconcile(Arc::new(i), ctx).await.expect("the reconcile");

    assert_eq!(deployment_writes(&api), [format!("PATCH {DEPLOYMENT}")]);
    assert!(github.pulls(REPO).is_empty());
}
