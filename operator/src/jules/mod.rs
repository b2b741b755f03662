//! Jules, Google's coding agent, as the architect of Tier 3: when an
//! incident escalates (or the sweep finds an architectural problem) and a
//! Jules API key is configured, the operator starts a session on the
//! policy's repository with the escalation brief as its prompt, plan
//! approval required and pull requests created automatically. It follows
//! the session, records it on the Incident and the GitHub issue, and
//! judges the pull request the session opens (`verdict`). It never approves
//! a plan, never merges.
//!
//! `JulesApi` is the REST transport (v1alpha, `X-Goog-Api-Key`):
//! `client::JulesClient` in the operator, `memory::InMemoryJules` in unit
//! tests. `Jules` adds what the operator needs on top: pagination, the
//! source of a repository, a session found again by its title.

pub mod client;
pub mod follow;
#[cfg(test)]
pub mod memory;
pub mod verdict;
pub mod verify;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use client::JulesClient;

/// Jules's API.
pub const DEFAULT_URL: &str = "https://jules.googleapis.com/v1alpha";
pub const KEY_FILE_ENV: &str = "SRE_SPACE_JULES_API_KEY_FILE";
pub const URL_ENV: &str = "SRE_SPACE_JULES_URL";

/// Pages read at most when listing sources or sessions.
const MAX_PAGES: usize = 20;

/// Jules sessions for escalated incidents.
#[derive(Clone, Debug, Default, clap::Args)]
#[command(next_help_heading = "Jules")]
pub struct JulesOptions {
    /// A file holding a Jules API key (the chart mounts `jules.apiKeySecret`
    /// here). Read at each request, so a rotated Secret counts at once.
    /// Unset: no Jules session is ever started, and Incidents have no
    /// `status.jules`.
    #[arg(long, env = KEY_FILE_ENV, value_name = "PATH")]
    pub jules_api_key_file: Option<PathBuf>,
    /// Jules's API.
    #[arg(long, env = URL_ENV, value_name = "URL", default_value = DEFAULT_URL)]
    pub jules_url: String,
    /// The branch a session starts from.
    #[arg(
        long,
        env = "SRE_SPACE_JULES_STARTING_BRANCH",
        value_name = "BRANCH",
        default_value = "main"
    )]
    pub jules_starting_branch: String,
}

/// The configured Jules, or None when no key file is set.
pub fn from_options(o: &JulesOptions) -> crate::Result<Option<Jules>> {
    let Some(file) = o
        .jules_api_key_file
        .clone()
        .filter(|p| !p.as_os_str().is_empty())
    else {
        return Ok(None);
    };
    let url = match o.jules_url.trim() {
        "" => DEFAULT_URL,
        url => url,
    };
    crate::github::check_branch(&o.jules_starting_branch)
        .map_err(|e| crate::Error::Config(format!("SRE_SPACE_JULES_STARTING_BRANCH: {e}")))?;
    let api = JulesClient::new(url, client::Key::File(file))?;
    Ok(Some(Jules::new(
        Arc::new(api),
        o.jules_starting_branch.clone(),
    )))
}

/// Why a Jules call failed, as far as what to do next is concerned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JulesError {
    /// Rate limited (429): try again after.
    #[error("Jules rate limit; retry after {0:?}")]
    RateLimited(Duration),
    /// Jules or the network is down (5xx, timeouts): try again later.
    #[error("Jules is unavailable: {0}")]
    Unavailable(String),
    /// Jules refused the request (4xx): `"{status}: {message}"`.
    #[error("Jules refused: {0}")]
    Refused(String),
    /// An answer that is not what the API documents.
    #[error("Jules answered something unexpected: {0}")]
    InvalidAnswer(String),
    /// No Jules source for the repository: Jules's GitHub app is not
    /// installed on it.
    #[error("Jules has no source for {0}; install the Jules GitHub app on it")]
    NoSource(String),
    /// The key file cannot be read.
    #[error("the Jules API key: {0}")]
    Key(String),
}

impl JulesError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::RateLimited(_) => "JulesRateLimited",
            Self::Unavailable(_) => "JulesUnavailable",
            Self::Refused(_) => "JulesRefused",
            Self::InvalidAnswer(_) => "JulesInvalidAnswer",
            Self::NoSource(_) => "JulesNoSource",
            Self::Key(_) => "JulesKeyUnreadable",
        }
    }

    /// How long to wait before trying again.
    pub fn retry_after(&self) -> Duration {
        match self {
            Self::RateLimited(d) => *d,
            Self::Unavailable(_) => Duration::from_secs(30),
            Self::Refused(_) | Self::InvalidAnswer(_) | Self::NoSource(_) | Self::Key(_) => {
                Duration::from_secs(300)
            }
        }
    }
}

/// A repository Jules can work on: `sources/github/{owner}/{repo}`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    pub name: String,
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_repo: Option<GitHubRepo>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct GitHubRepo {
    pub owner: String,
    pub repo: String,
}

/// One page of `GET /sources`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SourcePage {
    #[serde(default)]
    pub sources: Vec<Source>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// A session as Jules answers it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// `sessions/{id}`.
    pub name: String,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub url: String,
    /// QUEUED, PLANNING, AWAITING_PLAN_APPROVAL, AWAITING_USER_FEEDBACK,
    /// IN_PROGRESS, PAUSED, FAILED or COMPLETED (others may come).
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub outputs: Vec<SessionOutput>,
}

impl Session {
    /// The session's id, from `id` or else its name.
    pub fn id(&self) -> &str {
        if self.id.is_empty() {
            self.name.strip_prefix("sessions/").unwrap_or(&self.name)
        } else {
            &self.id
        }
    }

    /// The first pull request among its outputs.
    pub fn pull_request(&self) -> Option<&PullRequestOutput> {
        self.outputs.iter().find_map(|o| o.pull_request.as_ref())
    }

    /// Whether the session will not change any more.
    pub fn finished(&self) -> bool {
        finished(&self.state)
    }
}

/// Whether a session in `state` is done (COMPLETED or FAILED).
pub fn finished(state: &str) -> bool {
    matches!(state, "COMPLETED" | "FAILED")
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SessionOutput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<PullRequestOutput>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct PullRequestOutput {
    pub url: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub description: String,
}

/// One page of `GET /sessions`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SessionPage {
    #[serde(default)]
    pub sessions: Vec<Session>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// One event of a session. Jules sets exactly one of the kinds.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Activity {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_generated: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_approved: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_updated: Option<Progress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_completed: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_failed: Option<Failure>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Progress {
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Failure {
    #[serde(default)]
    pub reason: String,
}

impl Activity {
    /// What happened, in a few words (text from Jules: data, shown escaped).
    pub fn summary(&self) -> String {
        if self.plan_generated.is_some() {
            "a plan was generated; it waits for a person's approval in Jules".into()
        } else if self.plan_approved.is_some() {
            "the plan was approved".into()
        } else if let Some(p) = &self.progress_updated {
            format!("progress: {}", p.title)
        } else if self.session_completed.is_some() {
            "the session completed".into()
        } else if let Some(f) = &self.session_failed {
            format!("the session failed: {}", f.reason)
        } else {
            self.description.clone()
        }
    }
}

/// One page of `GET /sessions/{id}/activities`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ActivityPage {
    #[serde(default)]
    pub activities: Vec<Activity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// The body of `POST /sessions`: always with plan approval required and
/// pull requests created automatically.
#[derive(Clone, Debug, PartialEq)]
pub struct NewSession {
    pub prompt: String,
    pub title: String,
    /// `sources/github/{owner}/{repo}`.
    pub source: String,
    pub starting_branch: String,
}

impl NewSession {
    /// The JSON Jules documents for it.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "prompt": self.prompt,
            "title": self.title,
            "sourceContext": {
                "source": self.source,
                "githubRepoContext": { "startingBranch": self.starting_branch },
            },
            "requirePlanApproval": true,
            "automationMode": "AUTO_CREATE_PR",
        })
    }
}

pub type JulesFuture<'a, T> =
    Pin<Box<dyn Future<Output = std::result::Result<T, JulesError>> + Send + 'a>>;

/// The Jules REST calls the operator makes, and nothing else: it never
/// approves a plan or sends a message; that stays with a person.
pub trait JulesApi: Send + Sync {
    /// `GET /sources`, one page.
    fn sources<'a>(&'a self, page_token: Option<&'a str>) -> JulesFuture<'a, SourcePage>;
    /// `GET /sessions`, one page.
    fn sessions<'a>(&'a self, page_token: Option<&'a str>) -> JulesFuture<'a, SessionPage>;
    /// `POST /sessions`.
    fn create_session<'a>(&'a self, new: &'a NewSession) -> JulesFuture<'a, Session>;
    /// `GET /sessions/{id}`.
    fn session<'a>(&'a self, id: &'a str) -> JulesFuture<'a, Session>;
    /// `GET /sessions/{id}/activities`, one page.
    fn activities<'a>(
        &'a self,
        id: &'a str,
        page_token: Option<&'a str>,
    ) -> JulesFuture<'a, ActivityPage>;
}

/// Jules as the operator uses it.
#[derive(Clone)]
pub struct Jules {
    api: Arc<dyn JulesApi>,
    starting_branch: String,
}

impl std::fmt::Debug for Jules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jules")
            .field("starting_branch", &self.starting_branch)
            .finish_non_exhaustive()
    }
}

impl Jules {
    pub fn new(api: Arc<dyn JulesApi>, starting_branch: String) -> Self {
        Self {
            api,
            starting_branch,
        }
    }

    /// The Jules source of `owner/repo`.
    pub async fn source_for(&self, repo: &str) -> Result<Source, JulesError> {
        let (owner, name) =
            crate::allowlist::split_repository(repo).map_err(JulesError::Refused)?;
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = self.api.sources(token.as_deref()).await?;
            let found = page.sources.into_iter().find(|s| match &s.github_repo {
                Some(g) => g.owner.eq_ignore_ascii_case(owner) && g.repo.eq_ignore_ascii_case(name),
                None => s
                    .name
                    .eq_ignore_ascii_case(&format!("sources/github/{owner}/{name}")),
            });
            if let Some(s) = found {
                return Ok(s);
            }
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Err(JulesError::NoSource(repo.to_string()))
    }

    /// The session titled `title`, if one was started.
    pub async fn session_titled(&self, title: &str) -> Result<Option<Session>, JulesError> {
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = self.api.sessions(token.as_deref()).await?;
            if let Some(s) = page.sessions.into_iter().find(|s| s.title == title) {
                return Ok(Some(s));
            }
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Ok(None)
    }

    /// Starts a session on `repo` with `prompt`, plan approval required
    /// and pull requests created automatically.
    pub async fn start(
        &self,
        repo: &str,
        title: &str,
        prompt: &str,
    ) -> Result<Session, JulesError> {
        let source = self.source_for(repo).await?;
        let new = NewSession {
            prompt: prompt.to_string(),
            title: title.to_string(),
            source: source.name,
            starting_branch: self.starting_branch.clone(),
        };
        self.api.create_session(&new).await
    }

    /// The session `id` (or `sessions/{id}`).
    pub async fn session(&self, id: &str) -> Result<Session, JulesError> {
        self.api.session(bare(id)).await
    }

    /// The session's latest activity, if it has any.
    pub async fn latest_activity(&self, id: &str) -> Result<Option<Activity>, JulesError> {
        let mut token: Option<String> = None;
        let mut last = None;
        for _ in 0..MAX_PAGES {
            let page = self.api.activities(bare(id), token.as_deref()).await?;
            if let Some(a) = page.activities.into_iter().last() {
                last = Some(a);
            }
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Ok(last)
    }
}

/// A session's id without the `sessions/` of its name.
fn bare(id: &str) -> &str {
    id.strip_prefix("sessions/").unwrap_or(id)
}

/// Starts a Jules session for a sweep finding: `repo` (`owner/name`),
/// a title (the session is found again by it, so a rerun with the same
/// title returns the session already started instead of a second one) and
/// the brief in markdown (already redacted). The caller checks that the
/// namespace the finding belongs to may use `repo` (the GitHub allow-list).
pub async fn start_for_finding(
    jules: &Jules,
    repo: &str,
    title: &str,
    brief: &str,
) -> Result<Session, JulesError> {
    let title = clip(title, follow::MAX_TITLE);
    if let Some(s) = jules.session_titled(&title).await? {
        return Ok(s);
    }
    jules
        .start(repo, &title, &crate::redact::string(brief))
        .await
}

/// `text` cut to at most `max` bytes, on a character boundary.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    text[..end].to_string()
}

#[cfg(test)]
mod options_tests {
    use super::*;

    fn options(key: Option<&str>, branch: &str) -> JulesOptions {
        JulesOptions {
            jules_api_key_file: key.map(PathBuf::from),
            jules_url: DEFAULT_URL.into(),
            jules_starting_branch: branch.into(),
        }
    }

    #[test]
    fn without_a_key_there_is_no_jules_at_all() {
        assert!(matches!(from_options(&options(None, "main")), Ok(None)));
        assert!(matches!(from_options(&options(Some(""), "main")), Ok(None)));
        // Not even a bad branch is looked at: nothing changes without a key.
        assert!(matches!(from_options(&options(None, "../x")), Ok(None)));
    }

    #[test]
    fn a_key_file_turns_it_on_and_a_bad_branch_names_its_variable() {
        let on = from_options(&options(Some("/run/secrets/jules/api-key"), "main"));
        assert!(matches!(on, Ok(Some(_))), "{on:?}");
        let bad = from_options(&options(Some("/run/secrets/jules/api-key"), "a..b"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(bad.contains("SRE_SPACE_JULES_STARTING_BRANCH"), "{bad}");
    }
}
