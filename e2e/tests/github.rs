//! Incident issues and GitOps pull requests, driven through the real octocrab
//! client against a stateful GitHub test server.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use sre_space::crd::{
    ActionRecord, ActionState, ActionType, Category, Diagnosis, Evidence, EvidenceKind,
    GitHubTarget, GitOpsTarget, Hypothesis, Incident, IncidentSpec, IncidentStatus, Phase,
    SignalKind, SignalObservation, WorkloadKind, WorkloadRef,
};
use sre_space::fixer::{Fence, NotLeader, Unfenced, gitops};
use sre_space::github::{GitHub, GitHubAuth, GitHubConfig, GitHubError, sync};
use sre_space_e2e::fake_github::FakeGitHub;

const REPO: &str = "acme/deploy";
const VALUES: &str = "# Demo services (managed by Flux)\npolicyService:\n  image: registry.local/policy-service:1\n  resources:\n    requests:\n      memory: 32Mi\n    limits:\n      memory: 64Mi # first guess\nquoteService:\n  resources:\n    limits:\n      memory: 128Mi\n";

fn client(url: &str) -> GitHub {
    GitHub::new(&GitHubConfig {
        api_url: url.into(),
        auth: GitHubAuth::Token("ghp_test".into()),
    })
    .expect("client")
}

fn at(s: &str) -> Time {
    Time(s.parse::<Timestamp>().expect("time"))
}

fn incident(occurrences: i64, phase: Phase) -> Incident {
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
    i.metadata.namespace = Some("demo".into());
    i.status = Some(IncidentStatus {
        phase,
        occurrences,
        first_seen: Some(at("2026-11-26T10:00:00Z")),
        detected_at: Some(at("2026-11-26T10:00:00Z")),
        last_seen: Some(at("2026-11-26T10:00:00Z")),
        last_signal: Some(SignalObservation {
            pod: Some("policy-service-1".into()),
            container: Some("app".into()),
            reason: "OOMKilled".into(),
            message: format!("container app was OOMKilled (occurrence {occurrences})"),
            observed_at: at("2026-11-26T10:00:00Z"),
            key: format!("k{occurrences}"),
        }),
        diagnosis: Some(Diagnosis {
            analyzer: "rules".into(),
            category: Category::OutOfMemory,
            root_cause: "app of Deployment/policy-service needs more memory than 64Mi".into(),
            confidence: 0.9,
            hypotheses: vec![Hypothesis {
                category: Category::OutOfMemory,
                statement: "app of Deployment/policy-service needs more memory than 64Mi".into(),
                confidence: 0.9,
                evidence: vec!["e1".into()],
                proposed_action: Some(ActionType::RaiseMemoryLimit),
                confirm: None,
                refute: None,
            }],
            evidence: vec![Evidence {
                id: "e1".into(),
                kind: EvidenceKind::ContainerState,
                source: "pod/policy-service-1/container/app".into(),
                summary: "OOMKilled (exit code 137)".into(),
                observed_at: None,
            }],
            proposed_action: Some(ActionType::RaiseMemoryLimit),
            rules_category: None,
            diagnosed_at: at("2026-11-26T10:00:01Z"),
        }),
        ..IncidentStatus::default()
    });
    i
}

/// The incident with the GitHub link the operator would have stored.
fn with_link(mut i: Incident, link: &sre_space::crd::GitHubStatus) -> Incident {
    i.status.as_mut().expect("status").github = Some(link.clone());
    i
}

fn record(to: &str) -> ActionRecord {
    ActionRecord {
        id: "1-raisememorylimit".into(),
        type_: ActionType::RaiseMemoryLimit,
        state: ActionState::Pending,
        detail: String::new(),
        target: "Deployment/policy-service".parse().ok(),
        target_uid: None,
        container: Some("app".into()),
        from: Some("64Mi".into()),
        to: Some(to.into()),
        recorded_at: at("2026-11-26T10:00:02Z"),
        finished_at: None,
        outcome: None,
        pull_request: None,
        diff: None,
        precondition: None,
    }
}

fn gitops_target(path: &str) -> (GitHubTarget, GitOpsTarget) {
    let t = GitOpsTarget {
        path: path.into(),
        base_branch: "main".into(),
        values_key: Some("policyService.resources.limits.memory".into()),
        container: None,
        replicas_key: None,
        image_key: None,
    };
    (
        GitHubTarget {
            repository: REPO.into(),
            labels: vec![],
            gitops: Some(t.clone()),
        },
        t,
    )
}

fn writes(fake: &FakeGitHub) -> Vec<String> {
    fake.requests()
        .into_iter()
        .filter(|r| !r.starts_with("GET "))
        .collect()
}

#[tokio::test]
async fn repeated_signals_make_one_issue_and_one_comment_per_recurrence() {
    let (fake, url) = FakeGitHub::start().await;
    fake.seed(REPO, &[]);
    let gh = client(&url);
    let (link, err) = sync::sync(&gh, REPO, &incident(1, Phase::Verifying), &[]).await;
    assert_eq!(err, None);
    let issues = fake.issues(REPO);
    assert_eq!(issues.len(), 1);
    assert_eq!(
        issues[0].title,
        "[INCIDENT] OutOfMemory: demo/policy-service OOMKilled"
    );
    assert!(
        issues[0].labels.contains(&"severity: high".to_string())
            && issues[0].labels.contains(&"Status: Open".to_string())
    );
    assert_eq!(issues[0].comments.len(), 1, "the diagnosis is posted");
    assert!(issues[0].comments[0].contains("Diagnosis") && issues[0].comments[0].contains("e1"));

    let (link, _) = sync::sync(
        &gh,
        REPO,
        &with_link(incident(2, Phase::Verifying), &link),
        &[],
    )
    .await;
    let (link, _) = sync::sync(
        &gh,
        REPO,
        &with_link(incident(3, Phase::Verifying), &link),
        &[],
    )
    .await;
    let before = writes(&fake).len();
    let (link, _) = sync::sync(
        &gh,
        REPO,
        &with_link(incident(3, Phase::Verifying), &link),
        &[],
    )
    .await;
    assert_eq!(
        writes(&fake).len(),
        before,
        "nothing changed, nothing written"
    );
    let issues = fake.issues(REPO);
    assert_eq!(issues.len(), 1, "one issue per fingerprint");
    assert_eq!(
        issues[0]
            .comments
            .iter()
            .filter(|c| c.contains("Seen again"))
            .count(),
        2,
        "one comment per recurrence"
    );

    // A restarted operator that lost the link finds the same issue again by
    // its marker and posts nothing twice.
    let (relinked, err) = sync::sync(&gh, REPO, &incident(3, Phase::Verifying), &[]).await;
    assert_eq!(err, None);
    assert_eq!(relinked.issue_number, link.issue_number);
    assert_eq!(fake.issues(REPO).len(), 1);
    assert_eq!(fake.issues(REPO)[0].comments.len(), 3);
}

#[tokio::test]
async fn an_outage_then_recovery_posts_the_issue_and_comments_once_each() {
    let (fake, url) = FakeGitHub::start().await;
    fake.seed(REPO, &[]);
    let gh = client(&url);
    fake.fail_next(3, 500, &[]);
    let inc = incident(1, Phase::Verifying);
    let (link, err) = sync::sync(&gh, REPO, &inc, &[]).await;
    assert!(matches!(err, Some(GitHubError::Unavailable(_))), "{err:?}");
    let reset = (Timestamp::now().as_second() + 2).to_string();
    fake.fail_next(
        2,
        403,
        &[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &reset),
        ],
    );
    let mut link = link;
    let mut errors = vec![];
    for _ in 0..6 {
        let (l, e) = sync::sync(&gh, REPO, &with_link(inc.clone(), &link), &[]).await;
        link = l;
        match e {
            Some(e) => errors.push(e),
            None => break,
        }
    }
    assert!(
        errors
            .iter()
            .any(|e| matches!(e, GitHubError::RateLimited(d) if d.as_secs() <= 3)),
        "{errors:?}"
    );
    let issues = fake.issues(REPO);
    assert_eq!(issues.len(), 1, "one issue");
    assert_eq!(issues[0].comments.len(), 1, "one diagnosis comment");
}

#[tokio::test]
async fn the_pull_request_changes_exactly_one_line_and_is_never_merged_by_the_operator() {
    let (fake, url) = FakeGitHub::start().await;
    fake.seed(REPO, &[("deploy/values.yaml", VALUES)]);
    let gh = client(&url);
    let (repo, target) = gitops_target("deploy/values.yaml");
    let inc = incident(1, Phase::Remediating);
    let p = gitops::propose(Some(&gh), &repo, &target, &inc, &record("96Mi"), &Unfenced)
        .await
        .expect("proposed");
    assert_eq!(p.state, ActionState::AwaitingMerge);
    let pr = p.pull_request.expect("a pull request");
    let branch_text = fake
        .file(REPO, &pr.branch, "deploy/values.yaml")
        .expect("file on the branch");
    assert_eq!(
        branch_text,
        VALUES.replace("memory: 64Mi # first guess", "memory: 96Mi # first guess"),
        "one value changed, the rest byte for byte"
    );
    let diff = p.diff.expect("diff");
    assert_eq!(
        diff.lines()
            .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
            .collect::<Vec<_>>(),
        ["+      memory: 96Mi # first guess"]
    );
    let pulls = fake.pulls(REPO);
    assert_eq!(pulls.len(), 1);
    assert!(
        pulls[0].body.contains("Root cause")
            && pulls[0].body.contains("Rolling back")
            && pulls[0].body.contains("64Mi")
    );
    assert_eq!(
        fake.file(REPO, "main", "deploy/values.yaml").as_deref(),
        Some(VALUES),
        "the base branch is untouched"
    );
    for r in fake.requests() {
        assert!(
            !r.contains("/merge") && !r.contains("auto-merge") && !r.contains("graphql"),
            "the operator called {r}"
        );
    }
}

#[tokio::test]
async fn a_change_under_dot_github_is_refused_before_any_write() {
    let (fake, url) = FakeGitHub::start().await;
    fake.seed(REPO, &[(".github/workflows/deploy.yml", VALUES)]);
    let gh = client(&url);
    let (repo, target) = gitops_target(".github/workflows/deploy.yml");
    let err = gitops::propose(
        Some(&gh),
        &repo,
        &target,
        &incident(1, Phase::Remediating),
        &record("96Mi"),
        &Unfenced,
    )
    .await
    .err()
    .expect("refused");
    assert!(matches!(err, GitHubError::Forbidden(_)), "{err:?}");
    assert!(
        fake.requests().is_empty(),
        "nothing was even read: {:?}",
        fake.requests()
    );
}

#[tokio::test]
async fn a_restart_between_the_branch_and_the_pull_request_still_makes_one_pull_request() {
    let (fake, url) = FakeGitHub::start().await;
    fake.seed(REPO, &[("deploy/values.yaml", VALUES)]);
    let gh = client(&url);
    let (repo, target) = gitops_target("deploy/values.yaml");
    let inc = incident(1, Phase::Remediating);
    // The branch is created and the change committed; then the creation of
    // the pull request fails, as if the operator died right there.
    fake.fail_matching("POST /repos/acme/deploy/pulls", 1, 500);
    let err = gitops::propose(Some(&gh), &repo, &target, &inc, &record("96Mi"), &Unfenced)
        .await
        .err()
        .expect("interrupted");
    assert!(matches!(err, GitHubError::Unavailable(_)), "{err:?}");
    assert!(fake.pulls(REPO).is_empty());

    // The restarted operator replays the recorded action.
    let p1 = gitops::propose(Some(&gh), &repo, &target, &inc, &record("96Mi"), &Unfenced)
        .await
        .expect("resumed");
    let p2 = gitops::propose(Some(&gh), &repo, &target, &inc, &record("96Mi"), &Unfenced)
        .await
        .expect("replayed again");
    assert_eq!(
        p1.pull_request, p2.pull_request,
        "the replay finds the same pull request"
    );
    assert_eq!(fake.pulls(REPO).len(), 1, "one pull request");
    let count = |prefix: &str| {
        fake.requests()
            .iter()
            .filter(|r| r.starts_with(prefix))
            .count()
    };
    assert_eq!(count("POST /repos/acme/deploy/git/refs"), 1, "one branch");
    assert_eq!(count("PUT /repos/acme/deploy/contents/"), 1, "one commit");
}

/// A fence that lets the first `allow` writes through, then says this
/// replica lost the Lease (another replica took it over mid-action).
struct DeposedAfter {
    allow: usize,
    asked: std::sync::atomic::AtomicUsize,
}

impl Fence for DeposedAfter {
    async fn renew(&self) -> Result<(), NotLeader> {
        let n = self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n < self.allow {
            Ok(())
        } else {
            Err(NotLeader("another replica wrote the Lease".into()))
        }
    }
}

#[tokio::test]
async fn a_leader_deposed_between_the_branch_and_the_pull_request_opens_none_and_the_next_leader_opens_one()
 {
    let (fake, url) = FakeGitHub::start().await;
    fake.seed(REPO, &[("deploy/values.yaml", VALUES)]);
    let gh = client(&url);
    let (repo, target) = gitops_target("deploy/values.yaml");
    let inc = incident(1, Phase::Remediating);
    // The branch is created; the Lease is lost before the commit.
    let deposed = DeposedAfter {
        allow: 1,
        asked: Default::default(),
    };
    let err = gitops::propose(Some(&gh), &repo, &target, &inc, &record("96Mi"), &deposed)
        .await
        .err()
        .expect("stopped");
    assert!(matches!(err, GitHubError::NotLeader(_)), "{err:?}");
    let count = |prefix: &str| {
        fake.requests()
            .iter()
            .filter(|r| r.starts_with(prefix))
            .count()
    };
    assert_eq!(count("POST /repos/acme/deploy/git/refs"), 1, "the branch");
    assert_eq!(
        count("PUT /repos/acme/deploy/contents/"),
        0,
        "no commit after the Lease was lost"
    );
    assert!(fake.pulls(REPO).is_empty(), "no pull request");

    // The new leader replays the action and asks before each remaining write.
    let leader = DeposedAfter {
        allow: usize::MAX,
        asked: Default::default(),
    };
    let p = gitops::propose(Some(&gh), &repo, &target, &inc, &record("96Mi"), &leader)
        .await
        .expect("proposed");
    assert_eq!(p.state, ActionState::AwaitingMerge);
    assert_eq!(fake.pulls(REPO).len(), 1, "one pull request");
    assert_eq!(
        count("POST /repos/acme/deploy/git/refs"),
        1,
        "still one branch"
    );
    assert_eq!(
        leader.asked.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "the commit, the pull request and its labels were each fenced"
    );
}

#[tokio::test]
async fn escalation_adds_the_label_and_the_brief_and_resolution_closes_the_issue() {
    let (fake, url) = FakeGitHub::start().await;
    fake.seed(REPO, &[]);
    let gh = client(&url);
    let mut inc = incident(4, Phase::Escalated);
    let s = inc.status.as_mut().expect("status");
    s.escalation_reason =
        Some("2 attempt(s) did not clear the signal: RaiseMemoryLimit, RestartPod".into());
    s.post_mortem = Some("# Post-mortem\n\nescalated".into());
    let (_, err) = sync::sync(&gh, REPO, &inc, &["team: payments".to_string()]).await;
    assert_eq!(err, None);
    let issue = &fake.issues(REPO)[0];
    assert!(
        issue.labels.contains(&"jules-fix".to_string())
            && issue.labels.contains(&"Status: Escalated".to_string())
    );
    assert!(
        issue.labels.contains(&"team: payments".to_string()),
        "the policy's labels are added"
    );
    assert_eq!(
        issue.state, "open",
        "an escalated issue stays open for people"
    );
    let brief = issue
        .comments
        .iter()
        .find(|c| c.contains("architectural fix"))
        .expect("the brief");
    assert!(
        brief.contains("2 attempt(s)")
            && brief.contains("Where to look")
            && brief.contains("container `app`"),
        "{brief}"
    );

    let (fake, url) = FakeGitHub::start().await;
    fake.seed(REPO, &[]);
    let mut inc = incident(1, Phase::Resolved);
    inc.status.as_mut().expect("status").post_mortem = Some("# Post-mortem: resolved".into());
    sync::sync(&client(&url), REPO, &inc, &[]).await;
    let issue = &fake.issues(REPO)[0];
    assert_eq!(issue.state, "closed");
    assert!(issue.labels.contains(&"Status: Fixed".to_string()));
    assert!(
        issue
            .comments
            .iter()
            .any(|c| c.contains("# Post-mortem: resolved"))
    );
}
