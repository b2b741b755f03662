//! A sweep finding's Jules session, when a Jules key is configured: one
//! session per finding (found again by its title on every rerun), with the
//! brief as its prompt, on the repository of the policy that covers the
//! workload. The `jules-fix` issue gets one comment naming the session,
//! and the finding's latest Incident records it in `status.jules`, where
//! the Jules follower takes it over: its states on the incident's issue,
//! and the verdict on the pull request it opens (never merged).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use tracing::info;

use super::Finding;
use crate::crd::{Incident, JulesStatus};
use crate::github::GitHub;
use crate::github::render::comment_marker;
use crate::jules::follow::{KubeRecorder, Recorder, StepError};
use crate::jules::{self, Jules, Session, clip};
use crate::lease::Fence;
use crate::markdown::{ends_with_marker, inline, link};

/// What starting a finding's session needs.
pub struct Start<'a> {
    pub client: &'a Client,
    pub jules: &'a Jules,
    /// GitHub for the finding's namespace (its allow-list applies).
    pub gh: &'a GitHub,
    /// `owner/name`, the policy's repository.
    pub repository: &'a str,
    /// The `jules-fix` issue the sweep wrote.
    pub issue: i64,
    /// The issue's title, which names the session too.
    pub title: &'a str,
    /// The brief (the issue's body), the session's prompt.
    pub brief: &'a str,
    pub finding: &'a Finding,
    pub latest: Option<&'a Incident>,
    pub now: Timestamp,
}

/// Starts the finding's session, or finds the one a previous run started,
/// and returns its URL (else its name).
pub async fn start(s: &Start<'_>, fence: &impl Fence) -> Result<String, StepError> {
    // A namespace never borrows the operator's Jules key for a repository
    // the allow-list does not give it.
    s.gh.allowed(s.repository)?;
    fence.renew().await?;
    let title = format!("sweep: {}", s.title);
    let session = jules::start_for_finding(s.jules, s.repository, &title, s.brief).await?;
    info!(memory = %s.finding.memory, session = %session.name, "a Jules session works on the sweep finding");
    comment_once(s, &session, fence).await?;
    if let Some(incident) = s.latest {
        record_on_incident(s, incident, &session, &title, fence).await?;
    }
    Ok(if session.url.is_empty() {
        session.name.clone()
    } else {
        session.url.clone()
    })
}

/// The issue's comment naming the session, posted once per session.
async fn comment_once(
    s: &Start<'_>,
    session: &Session,
    fence: &impl Fence,
) -> Result<(), StepError> {
    let marker = comment_marker(&format!("jules/{}", session.id()));
    let posted =
        s.gh.comments(s.repository, s.issue)
            .await?
            .into_iter()
            .any(|c| {
                c.body
                    .as_deref()
                    .is_some_and(|b| ends_with_marker(b, &marker))
            });
    if posted {
        return Ok(());
    }
    let body = format!("{}\n\n{marker}", comment(session, s.latest));
    fence.renew().await?;
    s.gh.comment(s.repository, s.issue, &body).await?;
    Ok(())
}

/// What the issue says about the session.
pub fn comment(session: &Session, latest: Option<&Incident>) -> String {
    let mut c = format!(
        "### Jules session: {}\n\n{} works on this finding, with this brief as its prompt; it is {}. \
         Its plan waits for a person's approval in Jules, and the operator never merges the pull request it opens.",
        inline(session.id()),
        link("A Jules session", &session.url, &["jules.google.com"]),
        inline(&session.state)
    );
    if let Some(i) = latest {
        c.push_str(&format!(
            "\n\nThe operator follows it on Incident `{}` (`status.jules`): its states, and a verdict on its pull request (checks, what changed, whether the problem recurred).",
            inline(&kube::ResourceExt::name_any(i))
        ));
    }
    c
}

/// Records the session on the latest Incident, unless that Incident
/// already follows a session (its own escalation's, or this one).
async fn record_on_incident(
    s: &Start<'_>,
    incident: &Incident,
    session: &Session,
    title: &str,
    fence: &impl Fence,
) -> Result<(), StepError> {
    let Some(status) = incident.status.as_ref() else {
        return Ok(());
    };
    if status.jules.as_ref().is_some_and(|j| !j.session.is_empty()) {
        return Ok(());
    }
    let js = JulesStatus {
        session: clip(&session.name, 200),
        title: clip(title, crate::jules::follow::MAX_TITLE),
        episode: status.episode(),
        url: Some(clip(&session.url, 500)).filter(|u| !u.is_empty()),
        // The follower sees a state it has not recorded and comments it.
        state: crate::jules::follow::STARTING.into(),
        occurrences_at_start: status.occurrences,
        started_at: Some(Time(s.now)),
        ..JulesStatus::default()
    };
    let ns = incident.metadata.namespace.clone().unwrap_or_default();
    let name = kube::ResourceExt::name_any(incident);
    fence.renew().await?;
    KubeRecorder::new(s.client.clone(), &ns, &name)
        .record(&js)
        .await
}
