//! Starts one Jules session per escalated episode and follows it: its
//! state and URL on the Incident (`status.jules`) and, one comment per
//! state, on the incident's GitHub issue; the pull request it opens is
//! judged (`verdict`) until it is closed. Runs on the leader only, beside
//! the incident state machine, like the GitHub reporter; every write asks
//! the Lease first.
//!
//! A session is recorded (`state: Starting`, with its title) before it is
//! created. A replay, or a new leader, that finds the record without a
//! session looks the session up by its title before creating one, so an
//! episode never gets two.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use super::verdict::{self, Recurrence};
use super::{Jules, JulesError, Session, clip};
use crate::clock::Clock;
use crate::crd::{Incident, JulesStatus, Phase};
use crate::github::render::{comment_marker, escalation_brief};
use crate::github::{Access, GitHub, GitHubError};
use crate::lease::{Fence, NotLeader};
use crate::markdown::{ends_with_marker, inline, link};

/// A session's title is at most this long.
pub const MAX_TITLE: usize = 200;
/// The state recorded before the session is created.
pub const STARTING: &str = "Starting";

/// Why a step stopped.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("{0}")]
    Jules(#[from] JulesError),
    #[error("{0}")]
    GitHub(#[from] GitHubError),
    #[error("{0}")]
    NotLeader(#[from] NotLeader),
    #[error("recording status.jules: {0}")]
    Record(String),
}

impl StepError {
    fn retry_after(&self) -> Duration {
        match self {
            Self::Jules(e) => e.retry_after(),
            Self::GitHub(e) => e.retry_after(),
            Self::NotLeader(_) => Duration::from_secs(5),
            Self::Record(_) => Duration::from_secs(10),
        }
    }
}

/// Where `status.jules` is written.
pub trait Recorder: Sync {
    fn record(
        &self,
        status: &JulesStatus,
    ) -> impl std::future::Future<Output = Result<(), StepError>> + Send;
}

/// The session's title: unique to the incident and episode.
pub fn title(incident: &Incident, episode: i64) -> String {
    clip(
        &format!(
            "sre-space {}/{} episode {episode}: {}",
            incident.namespace().unwrap_or_default(),
            incident.name_any(),
            incident.spec.fingerprint
        ),
        MAX_TITLE,
    )
}

/// The comment on the incident's issue for one state of the session.
fn state_comment(session: &Session, summary: Option<&str>) -> String {
    let mut c = format!(
        "### Jules session: {}\n\n{} is now {}.",
        inline(session.id()),
        link("The session", &session.url, &["jules.google.com"]),
        inline(&session.state)
    );
    if let Some(s) = summary.filter(|s| !s.is_empty()) {
        c.push_str(&format!("\n\nLatest activity: {}", inline(s)));
    }
    if session.state == "AWAITING_PLAN_APPROVAL" {
        c.push_str(
            "\n\nIts plan waits for a person's approval in Jules; the operator never approves it.",
        );
    }
    if let Some(pr) = session.pull_request() {
        c.push_str(&format!(
            "\n\nIt opened a pull request: {} (never merged by the operator).",
            link("the pull request", &pr.url, &["github.com"])
        ));
    }
    c
}

/// How long to wait before reading the session again: often at first,
/// less as it runs longer.
pub fn backoff(started: Option<Timestamp>, now: Timestamp) -> Duration {
    let age = started
        .map(|s| now.as_second().saturating_sub(s.as_second()))
        .unwrap_or(0);
    match age {
        ..600 => Duration::from_secs(20),
        600..3600 => Duration::from_secs(120),
        _ => Duration::from_secs(600),
    }
}

/// One step for one incident: start its session when it escalated and has
/// none for this episode, else read the session, record what changed,
/// comment it, and judge its pull request. `gh` serves the incident's
/// namespace; `repo` is its policy's repository. Returns when to look again
/// (None: nothing more to follow).
pub async fn step(
    jules: &Jules,
    gh: &GitHub,
    repo: &str,
    incident: &Incident,
    now: Timestamp,
    fence: &impl Fence,
    recorder: &impl Recorder,
) -> Result<Option<Duration>, StepError> {
    let Some(status) = incident.status.as_ref() else {
        return Ok(None);
    };
    // A namespace never borrows the operator's Jules key for a repository
    // the allow-list does not give it.
    gh.allowed(repo)?;
    let episode = status.episode();
    let mut js = match status.jules.clone() {
        Some(j) if j.episode == episode => j,
        _ if status.phase == Phase::Escalated => JulesStatus::default(),
        // Not escalated, or an older episode's session already followed.
        Some(j) => return follow_only(jules, gh, repo, incident, j, now, fence, recorder).await,
        None => return Ok(None),
    };
    if js.session.is_empty() {
        let title = title(incident, episode);
        let found = if js.state == STARTING {
            // It may have been created before the record of it was saved.
            jules.session_titled(&title).await?
        } else {
            None
        };
        let session = match found {
            Some(s) => s,
            None => {
                if js.state != STARTING {
                    js = JulesStatus {
                        title: title.clone(),
                        episode,
                        state: STARTING.into(),
                        started_at: Some(Time(now)),
                        occurrences_at_start: status.occurrences,
                        ..JulesStatus::default()
                    };
                    fence.renew().await?;
                    recorder.record(&js).await?;
                }
                fence.renew().await?;
                let prompt = crate::redact::string(&escalation_brief(incident));
                let s = jules.start(repo, &title, &prompt).await?;
                info!(incident = %incident.name_any(), session = %s.name, "started a Jules session");
                s
            }
        };
        js.session = clip(&session.name, 200);
    }
    follow(jules, gh, repo, incident, js, now, fence, recorder).await
}

#[allow(clippy::too_many_arguments)]
async fn follow_only(
    jules: &Jules,
    gh: &GitHub,
    repo: &str,
    incident: &Incident,
    js: JulesStatus,
    now: Timestamp,
    fence: &impl Fence,
    recorder: &impl Recorder,
) -> Result<Option<Duration>, StepError> {
    if js.session.is_empty() {
        return Ok(None);
    }
    follow(jules, gh, repo, incident, js, now, fence, recorder).await
}

#[allow(clippy::too_many_arguments)]
async fn follow(
    jules: &Jules,
    gh: &GitHub,
    repo: &str,
    incident: &Incident,
    mut js: JulesStatus,
    now: Timestamp,
    fence: &impl Fence,
    recorder: &impl Recorder,
) -> Result<Option<Duration>, StepError> {
    let before = js.clone();
    let session = jules.session(&js.session).await?;
    let changed = session.state != js.state;
    js.state = clip(&session.state, 40);
    js.url = Some(clip(&session.url, 500)).filter(|u| !u.is_empty());
    js.pull_request = session.pull_request().map(|p| clip(&p.url, 500));
    js.last_polled = Some(Time(now));
    js.error = None;
    if changed {
        let issue = incident
            .status
            .as_ref()
            .and_then(|s| s.github.as_ref())
            .and_then(|g| g.issue_number);
        if let Some(number) = issue {
            let summary = jules
                .latest_activity(session.id())
                .await?
                .map(|a| a.summary());
            let marker = comment_marker(&format!("jules/{}/{}", session.id(), session.state));
            let posted = gh.comments(repo, number).await?.into_iter().any(|c| {
                c.body
                    .as_deref()
                    .is_some_and(|b| ends_with_marker(b, &marker))
            });
            if !posted {
                let body = format!(
                    "{}\n\n{marker}",
                    state_comment(&session, summary.as_deref())
                );
                fence.renew().await?;
                gh.comment(repo, number, &body).await?;
            }
        }
    }
    let mut open_pull = false;
    if let Some((pull_repo, number)) = js.pull_request.as_deref().and_then(verdict::parse_pull_url)
    {
        let recurrence = {
            let mut i = incident.clone();
            if let Some(s) = i.status.as_mut() {
                s.jules = Some(js.clone());
            }
            Recurrence::of(&i)
        };
        let v = verdict::judge(gh, &pull_repo, number, Some(recurrence)).await?;
        fence.renew().await?;
        verdict::post(gh, &pull_repo, number, &v).await?;
        js.verdict = Some(v.checks.word().to_string());
        open_pull = gh.pull(&pull_repo, number).await?.state == "open";
    }
    if js != before {
        fence.renew().await?;
        recorder.record(&js).await?;
    }
    let started = js.started_at.as_ref().map(|t| t.0);
    Ok(match (session.finished(), open_pull) {
        (false, _) => Some(backoff(started, now)),
        (true, true) => Some(Duration::from_secs(120)),
        (true, false) => None,
    })
}

/// What the follower reads and writes.
pub struct Context {
    pub client: kube::Client,
    pub policies: kube::runtime::reflector::Store<crate::crd::RemediationPolicy>,
    pub github: Access,
    pub jules: Jules,
    pub leadership: crate::lease::Leadership,
    pub clock: Arc<dyn Clock>,
}

/// Writes `status.jules` of one Incident with a merge patch.
pub struct KubeRecorder<'a> {
    api: Api<Incident>,
    name: &'a str,
}

impl<'a> KubeRecorder<'a> {
    pub fn new(client: kube::Client, namespace: &str, name: &'a str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name,
        }
    }
}

impl Recorder for KubeRecorder<'_> {
    async fn record(&self, status: &JulesStatus) -> Result<(), StepError> {
        let patch = serde_json::json!({ "status": { "jules": status } });
        let pp = PatchParams::apply(crate::FIELD_MANAGER);
        let pp = PatchParams {
            field_manager: pp.field_manager,
            ..PatchParams::default()
        };
        self.api
            .patch_status(self.name, &pp, &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| StepError::Record(e.to_string()))
    }
}

/// The follower's reconcile: one step for one Incident.
pub async fn reconcile(incident: Arc<Incident>, ctx: Arc<Context>) -> crate::Result<Action> {
    let ns = incident.namespace().unwrap_or_default();
    let status = incident.status.as_ref();
    let escalated = status.is_some_and(|s| s.phase == Phase::Escalated);
    if !escalated && status.and_then(|s| s.jules.as_ref()).is_none() {
        return Ok(Action::await_change());
    }
    let Some(policy) = ctx
        .policies
        .get(&ObjectRef::new(&incident.spec.policy).within(&ns))
    else {
        return Ok(Action::await_change());
    };
    let Some(target) = policy.spec.github.clone() else {
        return Ok(Action::await_change());
    };
    // Without GitHub credentials the allow-list cannot be asked, so no
    // session: a namespace never borrows the operator's Jules key for a
    // repository it may not use.
    let Some(gh) = ctx.github.for_namespace(&ns).await else {
        return Ok(Action::await_change());
    };
    let name = incident.name_any();
    let recorder = KubeRecorder::new(ctx.client.clone(), &ns, &name);
    let now = ctx.clock.now();
    match step(
        &ctx.jules,
        &gh,
        &target.repository,
        &incident,
        now,
        &ctx.leadership,
        &recorder,
    )
    .await
    {
        Ok(Some(wait)) => Ok(Action::requeue(wait)),
        Ok(None) => Ok(Action::await_change()),
        Err(e) => {
            warn!(incident = %name, error = %e, "following the Jules session failed; retrying");
            let wait = e.retry_after();
            if let (Some(mut js), false) = (
                incident.status.as_ref().and_then(|s| s.jules.clone()),
                matches!(e, StepError::NotLeader(_) | StepError::Record(_)),
            ) {
                js.error = Some(clip(&crate::redact::string(&e.to_string()), 1000));
                if ctx.leadership.renew().await.is_ok() {
                    let _ = recorder.record(&js).await;
                }
            }
            Ok(Action::requeue(wait))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::crd::GitHubStatus;
    use crate::github::memory::InMemoryGitHub;
    use crate::jules::memory::InMemoryJules;
    use crate::lease::Unfenced;
    use crate::testing;

    const LIST: &str = "namespaces:\n- namespace: shop\n  github:\n  - repository: acme/shop\n";
    const REPO: &str = "acme/shop";

    /// status.jules as the API server would keep it.
    #[derive(Default)]
    struct Saved(Mutex<Vec<JulesStatus>>);

    impl Recorder for Saved {
        async fn record(&self, status: &JulesStatus) -> Result<(), StepError> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(status.clone());
            Ok(())
        }
    }

    impl Saved {
        fn last(&self) -> Option<JulesStatus> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .last()
                .cloned()
        }
    }

    struct World {
        github: InMemoryGitHub,
        gh: GitHub,
        jules: InMemoryJules,
        incident: Incident,
        saved: Saved,
    }

    async fn world() -> World {
        let github = InMemoryGitHub::new();
        github.seed(REPO, &[("src/cache.rs", "x")]);
        let gh = github.serving(LIST, "shop");
        let issue = gh
            .create_issue(REPO, "web OOMKilled", "b", &["sre-space".into()])
            .await
            .expect("an issue");
        let jules = InMemoryJules::new();
        jules.sources(&["acme/other", "acme/ops", "acme/shop"]);
        let mut incident = testing::incident(Phase::Escalated, vec![]);
        if let Some(s) = incident.status.as_mut() {
            s.occurrences = 3;
            s.escalation_reason = Some("the memory raise did not hold".into());
            s.github = Some(GitHubStatus {
                repository: REPO.into(),
                issue_number: Some(issue.number),
                ..GitHubStatus::default()
            });
        }
        World {
            github,
            gh,
            jules,
            incident,
            saved: Saved::default(),
        }
    }

    impl World {
        async fn step(&mut self) -> Result<Option<Duration>, StepError> {
            let now: Timestamp = "2026-12-03T10:00:00Z".parse().expect("a time");
            let r = step(
                &self.jules.jules(),
                &self.gh,
                REPO,
                &self.incident,
                now,
                &Unfenced,
                &self.saved,
            )
            .await;
            // What the API server holds is what the next step reads.
            if let (Some(s), Some(j)) = (self.incident.status.as_mut(), self.saved.last()) {
                s.jules = Some(j);
            }
            r
        }

        fn issue_comments(&self) -> Vec<String> {
            self.github.issues(REPO)[0].comments.clone()
        }
    }

    #[tokio::test]
    async fn an_escalated_incident_starts_one_session_with_plan_approval_and_the_brief() {
        let mut w = world().await;
        let wait = w.step().await.expect("started");
        assert_eq!(
            wait,
            Some(Duration::from_secs(20)),
            "followed closely at first"
        );
        let started = w.jules.sessions_started();
        assert_eq!(started.len(), 1);
        let body = started[0].body();
        assert_eq!(body["requirePlanApproval"], true);
        assert_eq!(body["automationMode"], "AUTO_CREATE_PR");
        assert_eq!(body["sourceContext"]["source"], "sources/github/acme/shop");
        assert_eq!(
            body["sourceContext"]["githubRepoContext"]["startingBranch"],
            "main"
        );
        assert_eq!(started[0].prompt, escalation_brief(&w.incident));
        assert!(started[0].prompt.contains("jules-fix"));

        let js = w.saved.last().expect("recorded");
        assert_eq!(js.session, "sessions/1000");
        assert_eq!(js.state, "QUEUED");
        assert_eq!(
            js.url.as_deref(),
            Some("https://jules.google.com/session/1000")
        );
        assert_eq!(js.occurrences_at_start, 3);
        // Recorded before it was created.
        let all = w.saved.0.lock().expect("lock").clone();
        assert_eq!(
            (all[0].state.as_str(), all[0].session.as_str()),
            (STARTING, "")
        );
        let comments = w.issue_comments();
        assert_eq!(comments.len(), 1, "{comments:?}");
        assert!(comments[0].contains("is now `QUEUED`"), "{}", comments[0]);

        // Replays change nothing.
        w.step().await.expect("followed");
        w.step().await.expect("followed");
        assert_eq!(w.jules.sessions_started().len(), 1);
        assert_eq!(w.issue_comments().len(), 1, "one comment per state");
    }

    #[tokio::test]
    async fn a_session_created_before_its_record_was_saved_is_found_not_started_again() {
        let mut w = world().await;
        // The first leader recorded `Starting`, created the session, and
        // stopped before saving its name.
        let title = title(&w.incident, 1);
        w.jules
            .jules()
            .start(REPO, &title, "brief")
            .await
            .expect("created");
        if let Some(s) = w.incident.status.as_mut() {
            s.jules = Some(JulesStatus {
                title,
                episode: 1,
                state: STARTING.into(),
                ..JulesStatus::default()
            });
        }
        w.step().await.expect("recovered");
        assert_eq!(w.jules.sessions_started().len(), 1, "no second session");
        assert_eq!(w.saved.last().expect("recorded").session, "sessions/1000");
    }

    #[tokio::test]
    async fn the_session_state_url_and_pull_request_verdict_are_recorded_and_commented() {
        let mut w = world().await;
        w.step().await.expect("started");
        w.jules.advance("1000", "AWAITING_PLAN_APPROVAL");
        w.step().await.expect("followed");
        let comments = w.issue_comments();
        assert_eq!(comments.len(), 2);
        assert!(
            comments[1].contains("waits for a person's approval"),
            "{}",
            comments[1]
        );
        assert!(
            !w.jules.calls().iter().any(|c| c.contains("approve")),
            "the operator never approves a plan"
        );

        let number = w.github.open_pull(
            REPO,
            "jules/fix-leak",
            "Bound the cache",
            "Fixes shop/Deployment/web/OOMKilled",
            &[crate::github::PullFile {
                filename: "src/cache.rs".into(),
                status: "modified".into(),
                additions: 10,
                deletions: 2,
            }],
        );
        let sha = w.github.pulls(REPO)[0].head_sha.clone();
        w.github
            .set_checks(REPO, &sha, &[("build", "completed", Some("success"))]);
        w.jules
            .attach_pull("1000", &format!("https://github.com/{REPO}/pull/{number}"));
        w.jules.advance("1000", "COMPLETED");
        let wait = w.step().await.expect("followed");
        assert_eq!(
            wait,
            Some(Duration::from_secs(120)),
            "the open pull request is watched"
        );
        let js = w.saved.last().expect("recorded");
        assert_eq!(js.state, "COMPLETED");
        assert_eq!(js.verdict.as_deref(), Some("green"));
        assert_eq!(
            js.pull_request.as_deref(),
            Some(format!("https://github.com/{REPO}/pull/{number}").as_str())
        );
        let pull = &w.github.pulls(REPO)[0];
        assert_eq!(pull.comments.len(), 1);
        assert!(pull.comments[0].contains("checks green"));
        assert!(
            pull.comments[0].contains("did not recur"),
            "{}",
            pull.comments[0]
        );

        // A check fails and the problem comes back: the verdict is updated.
        w.github.set_checks(
            REPO,
            &sha,
            &[
                ("build", "completed", Some("success")),
                ("test", "completed", Some("failure")),
            ],
        );
        if let Some(s) = w.incident.status.as_mut() {
            s.occurrences = 5;
        }
        w.step().await.expect("followed");
        let pull = &w.github.pulls(REPO)[0];
        assert_eq!(pull.comments.len(), 1, "updated, not repeated");
        assert!(pull.comments[0].contains("checks red"));
        assert!(
            pull.comments[0].contains("recurred 2 time(s)"),
            "{}",
            pull.comments[0]
        );
        assert!(!pull.merged, "never merged");
        assert_eq!(
            w.saved.last().expect("recorded").verdict.as_deref(),
            Some("red")
        );
        assert_eq!(
            w.issue_comments().len(),
            3,
            "AWAITING, QUEUED, COMPLETED once each"
        );

        // Closed by a person: nothing more to follow.
        w.github.close(REPO, number);
        assert_eq!(w.step().await.expect("followed"), None);
    }

    #[tokio::test]
    async fn a_repository_the_namespace_may_not_use_gets_no_session() {
        let mut w = world().await;
        w.gh = w.github.serving(LIST, "billing");
        let err = w.step().await.expect_err("refused");
        assert!(
            matches!(err, StepError::GitHub(GitHubError::NotAllowed(_))),
            "{err:?}"
        );
        assert_eq!(w.jules.calls(), Vec::<String>::new(), "Jules saw nothing");
    }

    #[tokio::test]
    async fn an_incident_that_did_not_escalate_starts_nothing() {
        let mut w = world().await;
        if let Some(s) = w.incident.status.as_mut() {
            s.phase = Phase::Remediating;
        }
        assert_eq!(w.step().await.expect("nothing"), None);
        assert_eq!(w.jules.calls(), Vec::<String>::new());
    }

    #[tokio::test]
    async fn a_sweep_finding_reuses_the_session_of_the_same_title() {
        let jules = InMemoryJules::new();
        jules.sources(&["acme/shop"]);
        let j = jules.jules();
        let a = crate::jules::start_for_finding(&j, REPO, "sweep: web leaks", "brief")
            .await
            .expect("started");
        let b = crate::jules::start_for_finding(&j, REPO, "sweep: web leaks", "brief")
            .await
            .expect("found");
        assert_eq!(a.name, b.name);
        assert_eq!(jules.sessions_started().len(), 1);
        let none = crate::jules::start_for_finding(&j, "acme/unknown", "t", "b").await;
        assert_eq!(
            none.err(),
            Some(JulesError::NoSource("acme/unknown".into()))
        );
    }
}
