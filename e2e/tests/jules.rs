//! Jules sessions and the pull-request verdict, in-process against the
//! real API server with the operator's own clients (reqwest for Jules,
//! octocrab for GitHub) and the stateful fakes: an escalated incident
//! starts exactly one session, its state and URL land on the Incident and
//! the GitHub issue, the pull request it opens gets one verdict comment
//! that follows its checks, and `sre-space verify-pr` prints the same
//! verdict.

#![cfg(feature = "cluster")]

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use sre_space::allowlist::{Shared, Tenant, parse};
use sre_space::crd::{
    GitHubStatus, Incident, IncidentSpec, JulesStatus, SignalKind, WorkloadKind, WorkloadRef,
};
use sre_space::github::{GitHub, GitHubAuth, GitHubConfig};
use sre_space::jules::Jules;
use sre_space::jules::client::{JulesClient, Key};
use sre_space::jules::follow::{self, KubeRecorder};
use sre_space::lease::Unfenced;
use sre_space_e2e::fake_github::FakeGitHub;
use sre_space_e2e::fake_jules::{self, FakeJules};
use sre_space_e2e::{TestNamespace, client, install_crds};

const REPO: &str = "acme/shop";
const NAME: &str = "web-oomkilled";
const FINGERPRINT: &str = "shop/Deployment/web/OOMKilled";

fn github(url: &str, ns: &str) -> GitHub {
    let list = format!("namespaces:\n- namespace: {ns}\n  github:\n  - repository: {REPO}\n");
    let config = GitHubConfig {
        api_url: url.into(),
        auth: GitHubAuth::Token("ghp_test".into()),
    };
    let allow = Shared::fixed(parse(&list).expect("a valid allow-list"));
    GitHub::guarded(&config, allow)
        .expect("a client")
        .for_tenant(Tenant::named(ns))
}

/// An escalated Incident in `ns`, linked to issue `issue` of `REPO`.
async fn escalated(client: &Client, ns: &str, issue: i64) -> anyhow::Result<()> {
    let api: Api<Incident> = Api::namespaced(client.clone(), ns);
    let i = Incident::new(
        NAME,
        IncidentSpec {
            fingerprint: FINGERPRINT.into(),
            target: WorkloadRef {
                kind: WorkloadKind::Deployment,
                name: "web".into(),
            },
            signal: SignalKind::OOMKilled,
            policy: "heal".into(),
            approval: None,
        },
    );
    api.create(&PostParams::default(), &i).await?;
    let status = serde_json::json!({ "status": {
        "phase": "Escalated",
        "occurrences": 3,
        "lastSeen": "2026-12-03T09:00:00Z",
        "escalationReason": "the memory raise did not hold; the leak is in the code",
        "github": GitHubStatus { repository: REPO.into(), issue_number: Some(issue), ..GitHubStatus::default() },
    }});
    api.patch_status(NAME, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

async fn jules_status(client: &Client, ns: &str) -> anyhow::Result<Option<JulesStatus>> {
    let api: Api<Incident> = Api::namespaced(client.clone(), ns);
    Ok(api.get(NAME).await?.status.and_then(|s| s.jules))
}

/// One follower step, as the leader's reconcile makes it.
async fn step(
    client: &Client,
    ns: &str,
    jules: &Jules,
    gh: &GitHub,
) -> anyhow::Result<Option<Duration>> {
    let api: Api<Incident> = Api::namespaced(client.clone(), ns);
    let incident = api.get(NAME).await?;
    let recorder = KubeRecorder::new(client.clone(), ns, NAME);
    let now = Timestamp::now();
    Ok(follow::step(jules, gh, REPO, &incident, now, &Unfenced, &recorder).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalation_starts_one_jules_session_whose_pull_request_gets_one_verdict()
-> anyhow::Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "jules").await?;
    let (gh_fake, gh_url) = FakeGitHub::start().await;
    gh_fake.seed(REPO, &[("src/cache.rs", "cache\n")]);
    let gh = github(&gh_url, &ns.name);
    let issue = gh
        .create_issue(
            REPO,
            "[INCIDENT] web OOMKilled",
            "body",
            &["sre-space".into(), "jules-fix".into()],
        )
        .await?;
    let (jules_fake, jules_url) = FakeJules::start().await;
    // Behind a page of other repositories: the source is found by paging.
    jules_fake.sources(&["acme/other", REPO], 150);
    let jules = Jules::new(
        Arc::new(JulesClient::new(
            &jules_url,
            Key::Fixed(fake_jules::KEY.into()),
        )?),
        "main".into(),
    );
    escalated(&client, &ns.name, issue.number).await?;

    // The escalation starts one session, plan approval required, the
    // escalation brief as its prompt.
    step(&client, &ns.name, &jules, &gh).await?;
    step(&client, &ns.name, &jules, &gh).await?;
    let created = jules_fake.created();
    assert_eq!(created.len(), 1, "exactly one session: {created:?}");
    let body = &created[0];
    assert_eq!(body["requirePlanApproval"], true);
    assert_eq!(body["automationMode"], "AUTO_CREATE_PR");
    assert_eq!(body["sourceContext"]["source"], "sources/github/acme/shop");
    assert_eq!(
        body["sourceContext"]["githubRepoContext"]["startingBranch"],
        "main"
    );
    let prompt = body["prompt"].as_str().unwrap_or_default();
    assert!(
        prompt.contains("Escalated: an architectural fix is needed (`jules-fix`)")
            && prompt.contains("the leak is in the code"),
        "the brief is the prompt: {prompt}"
    );
    let js = jules_status(&client, &ns.name)
        .await?
        .expect("status.jules");
    let id = js.session.trim_start_matches("sessions/").to_string();
    assert_eq!(js.state, "QUEUED");
    assert_eq!(
        js.url.as_deref(),
        Some(format!("https://jules.google.com/session/{id}").as_str())
    );
    assert_eq!(js.occurrences_at_start, 3);
    assert!(js.last_polled.is_some());

    // The plan waits for a person; the operator only says so.
    jules_fake.advance(&id, "AWAITING_PLAN_APPROVAL");
    step(&client, &ns.name, &jules, &gh).await?;
    assert!(
        !jules_fake
            .requests()
            .iter()
            .any(|r| r.contains("approvePlan") || r.contains("sendMessage")),
        "the operator never approves a plan"
    );

    // The session completes with a pull request whose checks pass.
    let (number, sha) = gh_fake.open_pull(
        REPO,
        "jules/bound-the-cache",
        "Bound the cache",
        "An architectural fix.",
        &[("src/cache.rs", 40, 6), (".github/workflows/ci.yml", 2, 1)],
    );
    let pr_url = format!("https://github.com/{REPO}/pull/{number}");
    gh_fake.set_checks(
        REPO,
        &sha,
        &[
            ("build", "completed", Some("success")),
            ("test", "completed", Some("success")),
        ],
    );
    jules_fake.attach_pull(&id, &pr_url, "Bound the cache");
    jules_fake.advance(&id, "COMPLETED");
    let wait = step(&client, &ns.name, &jules, &gh).await?;
    assert_eq!(
        wait,
        Some(Duration::from_secs(120)),
        "the open pull request stays followed"
    );
    let js = jules_status(&client, &ns.name)
        .await?
        .expect("status.jules");
    assert_eq!(js.state, "COMPLETED");
    assert_eq!(js.pull_request.as_deref(), Some(pr_url.as_str()));
    assert_eq!(js.verdict.as_deref(), Some("green"));

    let comments = gh_fake.issues(REPO)[0].comments.clone();
    let states: Vec<&str> = ["QUEUED", "AWAITING_PLAN_APPROVAL", "COMPLETED"].to_vec();
    for s in &states {
        assert_eq!(
            comments
                .iter()
                .filter(|c| c.contains(&format!("is now `{s}`")))
                .count(),
            1,
            "one issue comment for {s}: {comments:?}"
        );
    }
    assert!(
        comments
            .iter()
            .any(|c| c.contains(&format!("jules.google.com/session/{id}")))
    );
    let pull = gh_fake.pulls(REPO)[0].clone();
    assert_eq!(pull.comments.len(), 1, "one verdict: {:?}", pull.comments);
    let verdict = &pull.comments[0];
    assert!(
        verdict.contains("checks green") && verdict.contains("2 passed, 0 failed"),
        "{verdict}"
    );
    assert!(verdict.contains("2 file(s), +42 −7"), "{verdict}");
    assert!(
        verdict.contains("**Safety finding**") && verdict.contains("`.github/workflows/ci.yml`"),
        "{verdict}"
    );
    assert!(verdict.contains("did not recur"), "{verdict}");

    // A check fails, and the problem came back: the one verdict turns red.
    gh_fake.set_checks(
        REPO,
        &sha,
        &[
            ("build", "completed", Some("success")),
            ("test", "completed", Some("failure")),
        ],
    );
    let api: Api<Incident> = Api::namespaced(client.clone(), &ns.name);
    let seen =
        serde_json::json!({ "status": { "occurrences": 4, "lastSeen": "2026-12-03T11:00:00Z" } });
    api.patch_status(NAME, &PatchParams::default(), &Patch::Merge(&seen))
        .await?;
    step(&client, &ns.name, &jules, &gh).await?;
    step(&client, &ns.name, &jules, &gh).await?;
    let pull = gh_fake.pulls(REPO)[0].clone();
    assert_eq!(pull.comments.len(), 1, "updated, not repeated");
    assert!(
        pull.comments[0].contains("checks red") && pull.comments[0].contains("`test` failed"),
        "{}",
        pull.comments[0]
    );
    assert!(
        pull.comments[0].contains("recurred 1 time(s)"),
        "{}",
        pull.comments[0]
    );
    assert_eq!(
        jules_status(&client, &ns.name)
            .await?
            .and_then(|j| j.verdict)
            .as_deref(),
        Some("red")
    );
    assert_eq!(jules_fake.created().len(), 1, "still one session");
    assert!(!pull.merged && pull.state == "open", "never merged");
    assert!(
        !gh_fake
            .requests()
            .iter()
            .any(|r| r.contains("/merge") || r.contains("/reviews")),
        "never merged, never approved"
    );
    assert!(
        jules_fake
            .requests()
            .iter()
            .all(|r| !r.starts_with("POST ") || r == "POST /v1alpha/sessions"),
        "{:?}",
        jules_fake.requests()
    );

    // `sre-space verify-pr` prints the same verdict and exits 1 (red); it
    // finds the incident through the kubeconfig.
    let out = std::process::Command::new(sre_space_e2e::operator_bin())
        .args(["verify-pr", &pr_url, "--github-api-url", &gh_url])
        .env("SRE_SPACE_GITHUB_TOKEN", "ghp_test")
        .output()?;
    let stdout = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "red exits 1: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(&format!("verdict: red ({REPO}#{number})")),
        "{stdout}"
    );
    assert!(
        stdout.contains("`test` failed") && stdout.contains("**Safety finding**"),
        "{stdout}"
    );
    assert!(
        stdout.contains("recurred 1 time(s)"),
        "the incident is found: {stdout}"
    );
    assert_eq!(
        gh_fake.pulls(REPO)[0].comments.len(),
        1,
        "verify-pr only reads"
    );

    gh_fake.set_checks(
        REPO,
        &sha,
        &[
            ("build", "completed", Some("success")),
            ("test", "in_progress", None),
        ],
    );
    let out = std::process::Command::new(sre_space_e2e::operator_bin())
        .args([
            "verify-pr",
            &pr_url,
            "--github-api-url",
            &gh_url,
            "--no-cluster",
        ])
        .env("SRE_SPACE_GITHUB_TOKEN", "ghp_test")
        .output()?;
    assert_eq!(out.status.code(), Some(2), "pending exits 2");
    gh_fake.set_checks(REPO, &sha, &[("build", "completed", Some("success"))]);
    let out = std::process::Command::new(sre_space_e2e::operator_bin())
        .args([
            "verify-pr",
            &pr_url,
            "--github-api-url",
            &gh_url,
            "--no-cluster",
        ])
        .env("SRE_SPACE_GITHUB_TOKEN", "ghp_test")
        .output()?;
    assert_eq!(out.status.code(), Some(0), "green exits 0");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("unknown: no incident names this pull request")
    );

    ns.cleanup().await?;
    Ok(())
}
