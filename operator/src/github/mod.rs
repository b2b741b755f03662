//! GitHub, behind one client: incident issues and their comments, and GitOps
//! pull requests. The operator never merges, never enables auto-merge, and
//! never writes under `.github/`.
//!
//! `GitHub` is what the stages call: it checks every call against the
//! allow-list, then hands it to a `GitHubApi`, the REST transport
//! (`OctocrabApi`) in the operator, `memory::InMemoryGitHub` in unit tests.

mod client;
pub mod codeowners;
pub mod gitops;
#[cfg(test)]
pub mod memory;
pub mod render;
pub mod reporter;
pub mod sync;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

pub use client::OctocrabApi;

use crate::allowlist::{Shared, Tenant, path_components, split_repository};
use crate::{Error, Result};

/// How the operator reaches GitHub.
#[derive(Clone, Debug)]
pub enum GitHubAuth {
    /// A personal access token (or a fine-grained one).
    Token(String),
    /// A GitHub App installation: app id, private key (PEM), installation id.
    /// Installation tokens are fetched and refreshed by the client.
    App {
        app_id: u64,
        private_key: String,
        installation_id: u64,
    },
}

/// GitHub settings of the operator process.
#[derive(Clone, Debug)]
pub struct GitHubConfig {
    pub api_url: String,
    pub auth: GitHubAuth,
}

/// How the operator reaches GitHub: a token, or a GitHub App installation.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "GitHub")]
pub struct GitHubOptions {
    /// A personal access token (classic or fine-grained); the chart reads it
    /// from a Secret. Unset, and no App: issues and pull requests are only
    /// previewed in the Incident's status.
    #[arg(
        long,
        env = "SRE_SPACE_GITHUB_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub github_token: Option<String>,
    /// A GitHub App's id, instead of a token (with its private key and
    /// installation id).
    #[arg(long, env = "SRE_SPACE_GITHUB_APP_ID", value_name = "ID")]
    pub github_app_id: Option<String>,
    /// The GitHub App's private key (PEM).
    #[arg(
        long,
        env = "SRE_SPACE_GITHUB_APP_PRIVATE_KEY",
        value_name = "PEM",
        hide_env_values = true
    )]
    pub github_app_private_key: Option<String>,
    /// The GitHub App installation's id.
    #[arg(long, env = "SRE_SPACE_GITHUB_INSTALLATION_ID", value_name = "ID")]
    pub github_installation_id: Option<String>,
    /// GitHub's API, or a GitHub Enterprise server's.
    #[arg(
        long,
        env = "SRE_SPACE_GITHUB_API_URL",
        value_name = "URL",
        default_value = DEFAULT_API_URL,
    )]
    pub github_api_url: String,
}

const DEFAULT_API_URL: &str = "https://api.github.com";

impl GitHubConfig {
    /// The credentials of the options; None when there are none: issues and
    /// pull requests are then only previewed in the Incident's status. An
    /// App id without its key or installation id is refused.
    pub fn from_options(o: &GitHubOptions) -> Result<Option<Self>> {
        let set = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
        let api_url = match o.github_api_url.as_str() {
            "" => DEFAULT_API_URL.to_string(),
            url => url.to_string(),
        };
        let auth = match (set(&o.github_token), set(&o.github_app_id)) {
            (Some(token), _) => GitHubAuth::Token(token),
            (None, Some(app_id)) => {
                let id = |name: &str, v: Option<String>| -> Result<u64> {
                    v.ok_or_else(|| {
                        Error::Config(format!("{name} is required with SRE_SPACE_GITHUB_APP_ID"))
                    })?
                    .parse()
                    .map_err(|_| Error::Config(format!("{name} is not a number")))
                };
                GitHubAuth::App {
                    app_id: id("SRE_SPACE_GITHUB_APP_ID", Some(app_id))?,
                    private_key: set(&o.github_app_private_key).ok_or_else(|| {
                        Error::Config("SRE_SPACE_GITHUB_APP_PRIVATE_KEY is required with SRE_SPACE_GITHUB_APP_ID".into())
                    })?,
                    installation_id: id("SRE_SPACE_GITHUB_INSTALLATION_ID", set(&o.github_installation_id))?,
                }
            }
            (None, None) => return Ok(None),
        };
        Ok(Some(Self { api_url, auth }))
    }
}

/// Why a GitHub call failed, as far as what to do next is concerned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GitHubError {
    /// Rate limited (403 or 429 with the rate-limit headers): try again after.
    #[error("GitHub rate limit; retry after {0:?}")]
    RateLimited(Duration),
    /// GitHub or the network is down (5xx, timeouts): try again later.
    #[error("GitHub is unavailable: {0}")]
    Unavailable(String),
    /// GitHub refused the request (4xx): retrying the same will not help.
    #[error("GitHub refused: {0}")]
    Refused(String),
    /// A request the operator will not make.
    #[error("not allowed: {0}")]
    Forbidden(String),
    /// Not sent: this replica could not prove it still leads. The leader
    /// makes the request.
    #[error("{0}")]
    NotLeader(#[from] crate::lease::NotLeader),
    /// A repository or path outside the namespace's allow-list.
    #[error("{0}")]
    NotAllowed(String),
}

impl GitHubError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::RateLimited(_) => "GitHubRateLimited",
            Self::Unavailable(_) => "GitHubUnavailable",
            Self::Refused(_) => "GitHubRefused",
            Self::Forbidden(_) => "GitHubForbidden",
            Self::NotLeader(_) => "NotLeader",
            Self::NotAllowed(_) => "RepositoryNotAllowed",
        }
    }

    /// How long to wait before trying again.
    pub fn retry_after(&self) -> Duration {
        match self {
            Self::RateLimited(d) => *d,
            Self::Unavailable(_) => Duration::from_secs(15),
            Self::NotLeader(_) => Duration::from_secs(5),
            Self::Refused(_) | Self::Forbidden(_) | Self::NotAllowed(_) => Duration::from_secs(300),
        }
    }

    /// The HTTP status GitHub refused with, when it did.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Self::Refused(m) => m.split(':').next().and_then(|c| c.trim().parse().ok()),
            _ => None,
        }
    }
}

/// The fields of an issue the operator uses.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Issue {
    pub number: i64,
    pub html_url: String,
    pub state: String,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub pull_request: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Comment {
    pub id: i64,
    #[serde(default)]
    pub body: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct PullRequest {
    pub number: i64,
    pub html_url: String,
    pub state: String,
    #[serde(default)]
    pub merged_at: Option<String>,
    /// The labels on the pull request, as GitHub lists them.
    #[serde(default)]
    pub labels: Vec<Label>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Label {
    pub name: String,
}

/// Whom the client's calls serve.
#[derive(Clone)]
enum Scope {
    /// Any repository the credentials reach: for tools and tests that build
    /// a client themselves, never for the operator's reconcilers.
    Unrestricted,
    /// The repositories and paths the allow-list gives one namespace; with
    /// no namespace, none.
    Guarded {
        allow: Arc<Shared>,
        tenant: Option<Tenant>,
    },
}

pub type GitHubFuture<'a, T> =
    Pin<Box<dyn Future<Output = std::result::Result<T, GitHubError>> + Send + 'a>>;

/// The GitHub REST calls the operator makes, and nothing else. A transport
/// only carries them: by the time one is called, `GitHub` has checked the
/// repository (`owner/name`), the branch names and the path (normalized),
/// and the allow-list. Errors are classified as GitHub's would be: a refusal
/// is `Refused("{status}: {message}")`.
pub trait GitHubApi: Send + Sync {
    /// Open and closed issues labelled `sre-space`, newest first, one page;
    /// pull requests left out.
    fn issues<'a>(&'a self, repo: &'a str) -> GitHubFuture<'a, Vec<Issue>>;
    fn create_issue<'a>(
        &'a self,
        repo: &'a str,
        title: &'a str,
        body: &'a str,
        labels: &'a [String],
    ) -> GitHubFuture<'a, Issue>;
    /// Sets the issue's title, state (`open`/`closed`) and labels.
    fn update_issue<'a>(
        &'a self,
        repo: &'a str,
        number: i64,
        title: &'a str,
        state: &'a str,
        labels: &'a [String],
    ) -> GitHubFuture<'a, Issue>;
    /// The issue's comments, oldest first.
    fn comments<'a>(&'a self, repo: &'a str, number: i64) -> GitHubFuture<'a, Vec<Comment>>;
    fn comment<'a>(
        &'a self,
        repo: &'a str,
        number: i64,
        body: &'a str,
    ) -> GitHubFuture<'a, Comment>;
    /// The commit a branch points at, or None when it does not exist.
    fn branch_sha<'a>(&'a self, repo: &'a str, branch: &'a str)
    -> GitHubFuture<'a, Option<String>>;
    /// Creates `branch` at commit `sha`; refused (422) when it exists.
    fn create_branch<'a>(
        &'a self,
        repo: &'a str,
        branch: &'a str,
        sha: &'a str,
    ) -> GitHubFuture<'a, ()>;
    /// A file's text and blob sha on a branch.
    fn file<'a>(
        &'a self,
        repo: &'a str,
        path: &'a str,
        branch: &'a str,
    ) -> GitHubFuture<'a, (String, String)>;
    /// Commits new text for one file on a branch; `sha` is the blob being
    /// replaced, and a stale one is refused (409).
    fn write_file<'a>(
        &'a self,
        repo: &'a str,
        path: &'a str,
        branch: &'a str,
        text: &'a str,
        sha: &'a str,
        message: &'a str,
    ) -> GitHubFuture<'a, ()>;
    /// The pull request proposing `branch`, open or not.
    fn pull_for_branch<'a>(
        &'a self,
        repo: &'a str,
        branch: &'a str,
    ) -> GitHubFuture<'a, Option<PullRequest>>;
    fn create_pull<'a>(
        &'a self,
        repo: &'a str,
        branch: &'a str,
        base: &'a str,
        title: &'a str,
        body: &'a str,
    ) -> GitHubFuture<'a, PullRequest>;
    fn pull<'a>(&'a self, repo: &'a str, number: i64) -> GitHubFuture<'a, PullRequest>;
    /// Adds labels to an issue or pull request (those it has stay).
    fn add_labels<'a>(
        &'a self,
        repo: &'a str,
        number: i64,
        labels: &'a [String],
    ) -> GitHubFuture<'a, ()>;
    /// Asks users and teams (slugs of the repository's organisation) to
    /// review a pull request; 422 when one cannot be asked (not a
    /// collaborator, or the pull request's author).
    fn request_reviewers<'a>(
        &'a self,
        repo: &'a str,
        number: i64,
        users: &'a [String],
        teams: &'a [String],
    ) -> GitHubFuture<'a, ()>;
}

/// GitHub as the operator calls it. Every call passes through `guard`,
/// which checks the repository (and path) against the allow-list in force
/// at that moment, before the transport sees it: whichever `GitHubApi`
/// carries the calls, a refused one reaches none.
#[derive(Clone)]
pub struct GitHub {
    api: Arc<dyn GitHubApi>,
    scope: Scope,
}

/// A repository path, normalized: refused when it could mean anything other
/// than one file of the repository (`..`, absolute, backslashes, `%`,
/// control characters), and anywhere under `.github/`, where CI workflows
/// live.
pub fn normalized_path(path: &str) -> Result<String, GitHubError> {
    let parts = path_components(path).map_err(GitHubError::Forbidden)?;
    if parts.iter().any(|c| c.eq_ignore_ascii_case(".github")) {
        return Err(GitHubError::Forbidden(format!(
            "{path}: the operator never changes files under .github/"
        )));
    }
    Ok(parts.join("/"))
}

/// Refuses any path `normalized_path` refuses.
pub fn check_path(path: &str) -> Result<(), GitHubError> {
    normalized_path(path).map(|_| ())
}

/// Refuses a branch name git or a URL would read as something else.
pub fn check_branch(branch: &str) -> Result<(), GitHubError> {
    let bad = |why: &str| Err(GitHubError::Forbidden(format!("branch {branch:?} {why}")));
    if branch.is_empty() || branch.len() > 200 {
        return bad("must have 1 to 200 characters");
    }
    if let Some(c) = branch
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\%#&".contains(*c))
    {
        return bad(&format!("contains {c:?}"));
    }
    if branch.starts_with(['/', '-', '.'])
        || branch.ends_with(['/', '.'])
        || branch.ends_with(".lock")
        || branch.contains("..")
        || branch.contains("//")
        || branch.contains("@{")
        || branch.contains("/.")
    {
        return bad("is not a valid branch name");
    }
    Ok(())
}

/// GitHub as the stages reach it: one namespace at a time, as far as the
/// allow-list lets that namespace; nothing when no credentials are set.
#[derive(Clone)]
pub struct Access {
    github: Option<GitHub>,
    allowlist: Arc<Shared>,
    client: kube::Client,
}

impl Access {
    pub fn new(github: Option<GitHub>, allowlist: Arc<Shared>, client: kube::Client) -> Self {
        Self {
            github,
            allowlist,
            client,
        }
    }

    /// Whether GitHub credentials are configured.
    pub fn configured(&self) -> bool {
        self.github.is_some()
    }

    /// The client serving one namespace, when credentials are configured.
    pub async fn for_namespace(&self, ns: &str) -> Option<GitHub> {
        let gh = self.github.as_ref()?;
        Some(gh.for_tenant(self.allowlist.tenant(&self.client, ns).await))
    }
}

/// Percent-encodes one URL path segment or query value: everything but
/// letters, digits and `-._~`.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Encodes each component of a slash-separated name, keeping the slashes.
pub(crate) fn encode_components(s: &str) -> String {
    s.split('/').map(encode).collect::<Vec<_>>().join("/")
}

impl GitHub {
    /// A client over GitHub's REST API that serves any repository the
    /// credentials reach.
    pub fn new(config: &GitHubConfig) -> Result<Self> {
        Ok(Self {
            api: OctocrabApi::shared(config)?,
            scope: Scope::Unrestricted,
        })
    }

    /// The operator's client: it may serve a namespace only through
    /// `for_tenant`, and then only as far as the allow-list says.
    pub fn guarded(config: &GitHubConfig, allow: Arc<Shared>) -> Result<Self> {
        Ok(Self::guarding(OctocrabApi::shared(config)?, allow))
    }

    /// `api`, guarded by `allow` as `guarded` guards the REST client.
    pub fn guarding(api: Arc<dyn GitHubApi>, allow: Arc<Shared>) -> Self {
        Self {
            api,
            scope: Scope::Guarded {
                allow,
                tenant: None,
            },
        }
    }

    /// This client, serving one namespace.
    pub fn for_tenant(&self, tenant: Tenant) -> Self {
        let scope = match &self.scope {
            Scope::Unrestricted => Scope::Unrestricted,
            Scope::Guarded { allow, .. } => Scope::Guarded {
                allow: allow.clone(),
                tenant: Some(tenant),
            },
        };
        Self {
            api: self.api.clone(),
            scope,
        }
    }

    /// The one gate of every call: the repository's owner and name must be
    /// well formed, and the allow-list must let this namespace use the
    /// repository (and the file at `path`).
    fn guard(&self, repo: &str, path: Option<&str>) -> Result<(), GitHubError> {
        split_repository(repo).map_err(GitHubError::Refused)?;
        if let Scope::Guarded { allow, tenant } = &self.scope {
            let Some(tenant) = tenant else {
                return Err(GitHubError::NotAllowed(format!(
                    "repository {repo}: the call serves no namespace, so the allow-list allows nothing"
                )));
            };
            allow
                .current()
                .check_github(tenant, repo, path)
                .map_err(GitHubError::NotAllowed)?;
        }
        Ok(())
    }

    /// Open and closed issues labelled `sre-space`, newest first, one page.
    pub async fn issues(&self, repo: &str) -> Result<Vec<Issue>, GitHubError> {
        self.guard(repo, None)?;
        self.api.issues(repo).await
    }

    pub async fn create_issue(
        &self,
        repo: &str,
        title: &str,
        body: &str,
        labels: &[String],
    ) -> Result<Issue, GitHubError> {
        self.guard(repo, None)?;
        self.api.create_issue(repo, title, body, labels).await
    }

    /// Sets the issue's title, state (`open`/`closed`) and labels.
    pub async fn update_issue(
        &self,
        repo: &str,
        number: i64,
        title: &str,
        state: &str,
        labels: &[String],
    ) -> Result<Issue, GitHubError> {
        self.guard(repo, None)?;
        self.api
            .update_issue(repo, number, title, state, labels)
            .await
    }

    pub async fn comments(&self, repo: &str, number: i64) -> Result<Vec<Comment>, GitHubError> {
        self.guard(repo, None)?;
        self.api.comments(repo, number).await
    }

    pub async fn comment(
        &self,
        repo: &str,
        number: i64,
        body: &str,
    ) -> Result<Comment, GitHubError> {
        self.guard(repo, None)?;
        self.api.comment(repo, number, body).await
    }

    /// The commit a branch points at, or None when it does not exist.
    pub async fn branch_sha(
        &self,
        repo: &str,
        branch: &str,
    ) -> Result<Option<String>, GitHubError> {
        check_branch(branch)?;
        self.guard(repo, None)?;
        self.api.branch_sha(repo, branch).await
    }

    pub async fn create_branch(
        &self,
        repo: &str,
        branch: &str,
        sha: &str,
    ) -> Result<(), GitHubError> {
        check_branch(branch)?;
        self.guard(repo, None)?;
        self.api.create_branch(repo, branch, sha).await
    }

    /// A file's text and blob sha on a branch.
    pub async fn file(
        &self,
        repo: &str,
        path: &str,
        branch: &str,
    ) -> Result<(String, String), GitHubError> {
        let path = normalized_path(path)?;
        check_branch(branch)?;
        self.guard(repo, Some(&path))?;
        self.api.file(repo, &path, branch).await
    }

    /// Commits new text for one file on a branch.
    pub async fn write_file(
        &self,
        repo: &str,
        path: &str,
        branch: &str,
        text: &str,
        sha: &str,
        message: &str,
    ) -> Result<(), GitHubError> {
        let path = normalized_path(path)?;
        check_branch(branch)?;
        self.guard(repo, Some(&path))?;
        self.api
            .write_file(repo, &path, branch, text, sha, message)
            .await
    }

    /// The pull request proposing `branch`, open or not.
    pub async fn pull_for_branch(
        &self,
        repo: &str,
        branch: &str,
    ) -> Result<Option<PullRequest>, GitHubError> {
        check_branch(branch)?;
        self.guard(repo, None)?;
        self.api.pull_for_branch(repo, branch).await
    }

    pub async fn create_pull(
        &self,
        repo: &str,
        branch: &str,
        base: &str,
        title: &str,
        body: &str,
    ) -> Result<PullRequest, GitHubError> {
        check_branch(branch)?;
        check_branch(base)?;
        self.guard(repo, None)?;
        self.api.create_pull(repo, branch, base, title, body).await
    }

    pub async fn pull(&self, repo: &str, number: i64) -> Result<PullRequest, GitHubError> {
        self.guard(repo, None)?;
        self.api.pull(repo, number).await
    }

    pub async fn add_labels(
        &self,
        repo: &str,
        number: i64,
        labels: &[String],
    ) -> Result<(), GitHubError> {
        self.guard(repo, None)?;
        self.api.add_labels(repo, number, labels).await
    }

    pub async fn request_reviewers(
        &self,
        repo: &str,
        number: i64,
        reviewers: &codeowners::Reviewers,
    ) -> Result<(), GitHubError> {
        self.guard(repo, None)?;
        self.api
            .request_reviewers(repo, number, &reviewers.users, &reviewers.teams)
            .await
    }

    /// The repository's CODEOWNERS on `branch`, from the first of the places
    /// GitHub looks that has one; None when none does. Read with the
    /// repository's permission, not a path's: the file says who reviews,
    /// and is only read (`.github/` stays closed to every write).
    pub async fn codeowners(
        &self,
        repo: &str,
        branch: &str,
    ) -> Result<Option<String>, GitHubError> {
        check_branch(branch)?;
        self.guard(repo, None)?;
        for path in codeowners::LOCATIONS {
            match self.api.file(repo, path, branch).await {
                Ok((text, _)) => return Ok(Some(text)),
                Err(e) if e.status() == Some(404) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allowlist::parse;
    use crate::crd::{ActionState, ActionType, GitHubTarget, GitOpsTarget, Phase};
    use crate::github::memory::InMemoryGitHub;
    use crate::testing;

    const LIST: &str = "namespaces:\n- namespace: shop\n  github:\n  - repository: acme/deploy\n";

    /// Access as the runtime builds it, over `github`. The list names
    /// namespaces only, so no namespace's labels are read and the client
    /// never connects.
    fn access(github: &InMemoryGitHub) -> Access {
        let allow = Shared::fixed(parse(LIST).expect("a valid list"));
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("a URL"));
        let client = kube::Client::try_from(config).expect("a client");
        Access::new(
            Some(GitHub::guarding(github.api(), allow.clone())),
            allow,
            client,
        )
    }

    #[tokio::test]
    async fn a_namespace_the_allow_list_does_not_name_is_refused_before_github_is_called() {
        let github = InMemoryGitHub::new();
        github.seed("acme/deploy", &[("values.yaml", "web:\n  memory: 64Mi\n")]);
        let access = access(&github);
        let gh = access.for_namespace("billing").await.expect("configured");

        let err = gh.issues("acme/deploy").await.expect_err("refused");
        assert!(matches!(err, GitHubError::NotAllowed(_)), "{err:?}");
        assert_eq!(err.reason(), "RepositoryNotAllowed");
        assert!(err.to_string().contains("acme/deploy"), "{err}");
        let incident = testing::incident(Phase::Remediating, vec![]);
        let (_, err) = sync::sync(&gh, "acme/deploy", &incident, &[]).await;
        assert!(matches!(err, Some(GitHubError::NotAllowed(_))), "{err:?}");
        let target = GitOpsTarget {
            path: "values.yaml".into(),
            base_branch: "main".into(),
            values_key: Some("web.memory".into()),
            container: None,
            replicas_key: None,
            image_key: None,
        };
        let repo = GitHubTarget {
            repository: "acme/deploy".into(),
            labels: vec![],
            gitops: Some(target.clone()),
        };
        let mut record = testing::record(1, ActionType::RaiseMemoryLimit, ActionState::Pending);
        (record.from, record.to) = (Some("64Mi".into()), Some("96Mi".into()));
        let err = crate::fixer::gitops::propose(
            Some(&gh),
            &repo,
            &target,
            &incident,
            &record,
            &crate::fixer::Unfenced,
        )
        .await
        .err()
        .expect("refused");
        assert!(matches!(err, GitHubError::NotAllowed(_)), "{err:?}");
        assert_eq!(github.calls(), Vec::<String>::new(), "GitHub saw nothing");

        // The namespace the list names reaches the same GitHub.
        let shop = access.for_namespace("shop").await.expect("configured");
        assert_eq!(shop.issues("acme/deploy").await, Ok(vec![]));
        assert_eq!(github.calls(), ["issues acme/deploy"]);
    }

    #[test]
    fn files_under_dot_github_are_refused() {
        for p in [
            ".github/workflows/ci.yml",
            "./.github/dependabot.yml",
            "deploy/.github/x",
            "../secrets.yaml",
        ] {
            assert!(check_path(p).is_err(), "{p}");
        }
        assert!(check_path("deploy/values.yaml").is_ok());
        assert!(check_path(".GitHub/workflows/ci.yml").is_err());
        assert_eq!(
            normalized_path("./deploy/./values.yaml"),
            Ok("deploy/values.yaml".into())
        );
    }

    #[test]
    fn branches_that_would_change_a_url_are_refused_and_names_are_encoded() {
        for b in [
            "",
            "main?ref=x",
            "main#x",
            "a b",
            "../main",
            "main/..",
            "-x",
            "a%2fb",
            "x.lock",
            "a//b",
            "a\0b",
            "a\\b",
            "a~1",
            "a^",
            "a:b",
            "a@{1}",
            "main/",
            ".hidden",
        ] {
            assert!(check_branch(b).is_err(), "{b:?}");
        }
        for b in [
            "main",
            "release/1.0",
            "sre-space/web-oomkilled-1-raisememorylimit",
        ] {
            assert!(check_branch(b).is_ok(), "{b:?}");
        }
        assert_eq!(encode("acme:sre-space/x"), "acme%3Asre-space%2Fx");
        assert_eq!(encode("a b?&#%"), "a%20b%3F%26%23%25");
        assert_eq!(encode_components("release/1.0"), "release/1.0");
    }
}
