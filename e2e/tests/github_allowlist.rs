//! The operator's GitHub client under the allow-list, through the real
//! octocrab client against the stateful GitHub test server: every call is
//! checked against the list in force at that moment, and a refused call
//! sends nothing.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use sre_space::allowlist::{Shared, Tenant, parse};
use sre_space::crd::{
    ActionRecord, ActionState, ActionType, GitHubTarget, GitOpsTarget, Incident, IncidentSpec,
    IncidentStatus, Phase, SignalKind, WorkloadKind, WorkloadRef,
};
use sre_space::fixer::{Unfenced, gitops};
use sre_space::github::{GitHub, GitHubAuth, GitHubConfig, GitHubError, sync};
use sre_space_e2e::fake_github::FakeGitHub;

const VALUES: &str = "policyService:\n  resources:\n    limits:\n      memory: 64Mi\n";
const LIST: &str = "namespaces:\n- namespace: shop\n  github:\n  - repository: acme/deploy\n    paths: [apps/shop]\n";

fn config(url: &str) -> GitHubConfig {
    GitHubConfig {
        api_url: url.into(),
        auth: GitHubAuth::Token("ghp_test".into()),
    }
}

/// The operator's client serving namespace `shop` under `list`.
fn guarded(url: &str, list: &str) -> GitHub {
    let allow = Shared::fixed(parse(list).expect("a valid list"));
    GitHub::guarded(&config(url), allow)
        .expect("client")
        .for_tenant(Tenant::named("shop"))
}

fn at(s: &str) -> Time {
    Time(s.parse::<Timestamp>().expect("time"))
}

fn incident() -> Incident {
    let mut i = Incident::new(
        "policy-service-oomkilled",
        IncidentSpec {
            fingerprint: "f00d".into(),
            target: WorkloadRef {
                kind: WorkloadKind::Deployment,
                name: "policy-service".into(),
            },
            signal: SignalKind::OOMKilled,
            policy: "demo-services".into(),
            approval: None,
        },
    );
    i.metadata.namespace = Some("shop".into());
    i.status = Some(IncidentStatus {
        phase: Phase::Remediating,
        occurrences: 1,
        first_seen: Some(at("2026-11-26T10:00:00Z")),
        detected_at: Some(at("2026-11-26T10:00:00Z")),
        last_seen: Some(at("2026-11-26T10:00:00Z")),
        ..IncidentStatus::default()
    });
    i
}

fn record(from: &str, to: &str) -> ActionRecord {
    ActionRecord {
        id: "1-raisememorylimit".into(),
        type_: ActionType::RaiseMemoryLimit,
        state: ActionState::Pending,
        detail: String::new(),
        target: "Deployment/policy-service".parse().ok(),
        target_uid: None,
        container: Some("app".into()),
        from: Some(from.into()),
        to: Some(to.into()),
        recorded_at: at("2026-11-26T10:00:02Z"),
        finished_at: None,
        outcome: None,
        pull_request: None,
        diff: None,
        precondition: None,
    }
}

fn target(repo: &str, path: &str, base: &str) -> (GitHubTarget, GitOpsTarget) {
    let t = GitOpsTarget {
        path: path.into(),
        base_branch: base.into(),
        values_key: Some("policyService.resources.limits.memory".into()),
        container: None,
        replicas_key: None,
        image_key: None,
    };
    (
        GitHubTarget {
            repository: repo.into(),
            labels: vec![],
            gitops: Some(t.clone()),
        },
        t,
    )
}

#[tokio::test]
async fn the_operators_client_refuses_a_repository_outside_the_namespaces_allow_list_before_any_request()
 {
    let (fake, url) = FakeGitHub::start().await;
    fake.seed("victim/secrets", &[("apps/shop/values.yaml", VALUES)]);
    fake.seed("acme/deploy", &[("apps/shop/values.yaml", VALUES)]);
    let gh = guarded(&url, LIST);

    let (_, err) = sync::sync(&gh, "victim/secrets", &incident(), &[]).await;
    let err = err.expect("refused");
    assert!(matches!(err, GitHubError::NotAllowed(_)), "{err:?}");
    assert_eq!(err.reason(), "RepositoryNotAllowed");
    assert!(err.to_string().contains("victim/secrets"), "{err}");
    let (repo, t) = target("victim/secrets", "apps/shop/values.yaml", "main");
    let err = gitops::propose(
        Some(&gh),
        &repo,
        &t,
        &incident(),
        &record("64Mi", "96Mi"),
        &Unfenced,
    )
    .await
    .err()
    .expect("refused");
    assert!(matches!(err, GitHubError::NotAllowed(_)), "{err:?}");
    assert_eq!(
        fake.requests(),
        Vec::<String>::new(),
        "the credential was never used on another's repository"
    );

    // What the list allows still works through the same client.
    let (_, err) = sync::sync(&gh, "acme/deploy", &incident(), &[]).await;
    assert_eq!(err, None);
    assert_eq!(fake.issues("acme/deploy").len(), 1);
    assert!(fake.issues("victim/secrets").is_empty());
}

#[tokio::test]
async fn a_client_serving_no_namespace_may_use_no_repository() {
    let (fake, url) = FakeGitHub::start().await;
    fake.seed("acme/deploy", &[]);
    let allow = Shared::fixed(parse(LIST).expect("a valid list"));
    let gh = GitHub::guarded(&config(&url), allow).expect("client");
    let (_, err) = sync::sync(&gh, "acme/deploy", &incident(), &[]).await;
    assert!(matches!(err, Some(GitHubError::NotAllowed(_))), "{err:?}");
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn a_file_outside_the_allowed_paths_is_neither_read_nor_written() {
    let (fake, url) = FakeGitHub::start().await;
    fake.seed(
        "acme/deploy",
        &[
            ("apps/shop-evil/values.yaml", VALUES),
            ("apps/shop/values.yaml", VALUES),
        ],
    );
    let gh = guarded(&url, LIST);
    let (repo, t) = target("acme/deploy", "apps/shop-evil/values.yaml", "main");
    let err = gitops::propose(
        Some(&gh),
        &repo,
        &t,
        &incident(),
        &record("64Mi", "96Mi"),
        &Unfenced,
    )
    .await
    .err()
    .expect("refused");
    assert!(matches!(err, GitHubError::NotAllowed(_)), "{err:?}");
    assert!(
        err.to_string().contains("apps/shop-evil/values.yaml"),
        "{err}"
    );
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());

    let (repo, t) = target("acme/deploy", "apps/shop/values.yaml", "main");
    let p = gitops::propose(
        Some(&gh),
        &repo,
        &t,
        &incident(),
        &record("64Mi", "96Mi"),
        &Unfenced,
    )
    .await
    .expect("allowed");
    assert_eq!(p.state, ActionState::AwaitingMerge, "{}", p.detail);
}

#[tokio::test]
async fn a_narrowed_allow_list_file_stops_the_next_call_of_a_running_client() {
    let (fake, url) = FakeGitHub::start().await;
    fake.seed("acme/deploy", &[]);
    let file = std::env::temp_dir().join(format!(
        "sre-space-allowlist-reload-{}.yaml",
        std::process::id()
    ));
    std::fs::write(&file, LIST).expect("write");
    let allow: Arc<Shared> = Shared::from_file(file.clone());
    let gh = GitHub::guarded(&config(&url), allow.clone())
        .expect("client")
        .for_tenant(Tenant::named("shop"));
    let (_, err) = sync::sync(&gh, "acme/deploy", &incident(), &[]).await;
    assert_eq!(err, None);
    let sent = fake.requests().len();

    std::fs::write(&file, "namespaces: []\n").expect("write");
    allow.reload();
    let mut again = incident();
    again.status.as_mut().expect("status").occurrences = 2;
    let (_, err) = sync::sync(&gh, "acme/deploy", &again, &[]).await;
    assert!(matches!(err, Some(GitHubError::NotAllowed(_))), "{err:?}");
    assert_eq!(fake.requests().len(), sent, "nothing sent after the change");
    std::fs::remove_file(&file).expect("cleanup");
}

#[tokio::test]
async fn a_base_branch_or_path_that_would_change_the_url_is_refused_before_any_request() {
    let (fake, url) = FakeGitHub::start().await;
    fake.seed("acme/deploy", &[("apps/shop/values.yaml", VALUES)]);
    let gh = GitHub::new(&config(&url)).expect("client");
    for (path, base) in [
        ("apps/shop/values.yaml", "main?ref=other"),
        ("apps/shop/values.yaml", "main#x"),
        ("apps/shop/values.yaml", "../main"),
        ("apps/shop/values.yaml", "main%2f.."),
        ("apps/shop/values.yaml", "main/../../x"),
        ("apps/shop/%2e%2e/x.yaml", "main"),
        ("apps/shop/%2egithub/workflows/ci.yml", "main"),
        ("apps\\shop\\values.yaml", "main"),
        ("/apps/shop/values.yaml", "main"),
    ] {
        let (repo, t) = target("acme/deploy", path, base);
        let err = gitops::propose(
            Some(&gh),
            &repo,
            &t,
            &incident(),
            &record("64Mi", "96Mi"),
            &Unfenced,
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("{path} on {base} was not refused"));
        assert!(
            matches!(err, GitHubError::Forbidden(_)),
            "{path} {base}: {err:?}"
        );
    }
    assert_eq!(fake.requests(), Vec::<String>::new());
}

#[tokio::test]
async fn a_file_that_already_holds_a_higher_limit_is_not_lowered() {
    let (fake, url) = FakeGitHub::start().await;
    let higher = VALUES.replace("64Mi", "512Mi");
    fake.seed("acme/deploy", &[("apps/shop/values.yaml", higher.as_str())]);
    let gh = GitHub::new(&config(&url)).expect("client");
    let (repo, t) = target("acme/deploy", "apps/shop/values.yaml", "main");
    let p = gitops::propose(
        Some(&gh),
        &repo,
        &t,
        &incident(),
        &record("64Mi", "96Mi"),
        &Unfenced,
    )
    .await
    .expect("an answer");
    assert_eq!(p.state, ActionState::Failed, "{}", p.detail);
    assert!(
        p.detail.contains("512Mi") && p.detail.contains("never lowers"),
        "{}",
        p.detail
    );
    assert!(p.pull_request.is_none());
    assert!(
        fake.requests().iter().all(|r| r.starts_with("GET ")),
        "nothing written: {:?}",
        fake.requests()
    );
    assert!(fake.pulls("acme/deploy").is_empty());
}
