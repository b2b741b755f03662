//! GitHub, behind one client: incident issues and their comments, and GitOps
//! pull requests. The operator never merges, never enables auto-merge, and
//! never writes under `.github/`.

pub mod gitops;
pub mod render;
pub mod sync;

use std::time::Duration;

use base64::Engine;
use octocrab::Octocrab;
use serde::Deserialize;

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

impl GitHubConfig {
    /// Reads `SRE_SPACE_GITHUB_TOKEN`, or `SRE_SPACE_GITHUB_APP_ID`,
    /// `SRE_SPACE_GITHUB_APP_PRIVATE_KEY` and `SRE_SPACE_GITHUB_INSTALLATION_ID`
    /// (each from a Secret in the chart), and `SRE_SPACE_GITHUB_API_URL`
    /// (default `https://api.github.com`, or a GitHub Enterprise API). None
    /// when no credentials are set: issues and pull requests are then only
    /// previewed in the Incident's status.
    pub fn from_env() -> Result<Option<Self>> {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
        let api_url =
            var("SRE_SPACE_GITHUB_API_URL").unwrap_or_else(|| "https://api.github.com".into());
        let auth = match (
            var("SRE_SPACE_GITHUB_TOKEN"),
            var("SRE_SPACE_GITHUB_APP_ID"),
        ) {
            (Some(token), _) => GitHubAuth::Token(token),
            (None, Some(app_id)) => {
                let id = |name: &str, v: Option<String>| -> Result<u64> {
                    v.ok_or_else(|| {
                        Error::Invalid(format!("{name} is required with SRE_SPACE_GITHUB_APP_ID"))
                    })?
                    .parse()
                    .map_err(|_| Error::Invalid(format!("{name} is not a number")))
                };
                GitHubAuth::App {
                    app_id: id("SRE_SPACE_GITHUB_APP_ID", Some(app_id))?,
                    private_key: var("SRE_SPACE_GITHUB_APP_PRIVATE_KEY").ok_or_else(|| {
                        Error::Invalid("SRE_SPACE_GITHUB_APP_PRIVATE_KEY is required with SRE_SPACE_GITHUB_APP_ID".into())
                    })?,
                    installation_id: id("SRE_SPACE_GITHUB_INSTALLATION_ID", var("SRE_SPACE_GITHUB_INSTALLATION_ID"))?,
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
    NotLeader(#[from] crate::fixer::NotLeader),
}

impl GitHubError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::RateLimited(_) => "GitHubRateLimited",
            Self::Unavailable(_) => "GitHubUnavailable",
            Self::Refused(_) => "GitHubRefused",
            Self::Forbidden(_) => "GitHubForbidden",
            Self::NotLeader(_) => "NotLeader",
        }
    }

    /// How long to wait before trying again.
    pub fn retry_after(&self) -> Duration {
        match self {
            Self::RateLimited(d) => *d,
            Self::Unavailable(_) => Duration::from_secs(15),
            Self::NotLeader(_) => Duration::from_secs(5),
            Self::Refused(_) | Self::Forbidden(_) => Duration::from_secs(300),
        }
    }

    fn status(&self) -> Option<u16> {
        match self {
            Self::Refused(m) => m.split(':').next().and_then(|c| c.trim().parse().ok()),
            _ => None,
        }
    }
}

fn classify(e: octocrab::Error) -> GitHubError {
    match e {
        octocrab::Error::GitHub { source, .. } => {
            let code = source.status_code.as_u16();
            let header = |name: &str| {
                source
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
            };
            let limited = code == 429
                || (code == 403
                    && (header("x-ratelimit-remaining") == Some(0)
                        || source.message.to_lowercase().contains("rate limit")));
            if limited {
                let wait = header("retry-after").or_else(|| {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .ok()?
                        .as_secs();
                    source
                        .rate_limit_reset
                        .or(header("x-ratelimit-reset"))
                        .map(|reset| reset.saturating_sub(now))
                });
                GitHubError::RateLimited(Duration::from_secs(wait.unwrap_or(60).clamp(1, 3600)))
            } else if code >= 500 {
                GitHubError::Unavailable(format!("{code}: {}", source.message))
            } else {
                GitHubError::Refused(format!("{code}: {}", source.message))
            }
        }
        other => GitHubError::Unavailable(other.to_string()),
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
}

#[derive(Deserialize)]
struct GitRef {
    object: GitObject,
}

#[derive(Deserialize)]
struct GitObject {
    sha: String,
}

#[derive(Deserialize)]
struct Contents {
    sha: String,
    content: String,
}

/// The GitHub client of the operator.
#[derive(Clone)]
pub struct GitHub {
    octo: Octocrab,
}

fn split(repo: &str) -> Result<(&str, &str), GitHubError> {
    repo.split_once('/')
        .ok_or_else(|| GitHubError::Refused(format!("repository {repo:?} is not owner/name")))
}

/// Refuses any path under `.github/`, where CI workflows live.
pub fn check_path(path: &str) -> Result<(), GitHubError> {
    let normalized = path.trim_start_matches("./");
    if normalized.starts_with(".github/")
        || normalized.contains("/.github/")
        || normalized.contains("..")
    {
        return Err(GitHubError::Forbidden(format!(
            "{path}: the operator never changes files under .github/"
        )));
    }
    Ok(())
}

impl GitHub {
    pub fn new(config: &GitHubConfig) -> Result<Self> {
        let builder = Octocrab::builder()
            .base_uri(config.api_url.as_str())
            .map_err(|e| Error::Invalid(format!("SRE_SPACE_GITHUB_API_URL: {e}")))?
            .set_connect_timeout(Some(Duration::from_secs(10)))
            .set_read_timeout(Some(Duration::from_secs(30)));
        let built = |r: std::result::Result<Octocrab, octocrab::Error>| {
            r.map_err(|e| Error::Invalid(format!("building the GitHub client: {e}")))
        };
        let octo = match &config.auth {
            GitHubAuth::Token(t) => built(builder.personal_token(t.clone()).build())?,
            GitHubAuth::App {
                app_id,
                private_key,
                installation_id,
            } => {
                let key =
                    octocrab::EncodingKey::from_rsa_pem(private_key.as_bytes()).map_err(|e| {
                        Error::Invalid(format!("SRE_SPACE_GITHUB_APP_PRIVATE_KEY: {e}"))
                    })?;
                let app = built(builder.app((*app_id).into(), key).build())?;
                // The installation client fetches and refreshes its token.
                built(app.installation((*installation_id).into()))?
            }
        };
        Ok(Self { octo })
    }

    /// Open and closed issues labelled `sre-space`, newest first, one page.
    pub async fn issues(&self, repo: &str) -> Result<Vec<Issue>, GitHubError> {
        let (o, r) = split(repo)?;
        let route = format!(
            "/repos/{o}/{r}/issues?state=all&labels=sre-space&per_page=100&sort=created&direction=desc"
        );
        let all: Vec<Issue> = self.octo.get(route, None::<&()>).await.map_err(classify)?;
        Ok(all
            .into_iter()
            .filter(|i| i.pull_request.is_none())
            .collect())
    }

    pub async fn create_issue(
        &self,
        repo: &str,
        title: &str,
        body: &str,
        labels: &[String],
    ) -> Result<Issue, GitHubError> {
        let (o, r) = split(repo)?;
        let body = serde_json::json!({ "title": title, "body": body, "labels": labels });
        self.octo
            .post(format!("/repos/{o}/{r}/issues"), Some(&body))
            .await
            .map_err(classify)
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
        let (o, r) = split(repo)?;
        let mut body = serde_json::json!({ "title": title, "state": state, "labels": labels });
        if state == "closed" {
            body["state_reason"] = "completed".into();
        }
        self.octo
            .patch(format!("/repos/{o}/{r}/issues/{number}"), Some(&body))
            .await
            .map_err(classify)
    }

    pub async fn comments(&self, repo: &str, number: i64) -> Result<Vec<Comment>, GitHubError> {
        let (o, r) = split(repo)?;
        let mut all = Vec::new();
        for page in 1..=10 {
            let route = format!("/repos/{o}/{r}/issues/{number}/comments?per_page=100&page={page}");
            let batch: Vec<Comment> = self.octo.get(route, None::<&()>).await.map_err(classify)?;
            let done = batch.len() < 100;
            all.extend(batch);
            if done {
                break;
            }
        }
        Ok(all)
    }

    pub async fn comment(
        &self,
        repo: &str,
        number: i64,
        body: &str,
    ) -> Result<Comment, GitHubError> {
        let (o, r) = split(repo)?;
        let body = serde_json::json!({ "body": body });
        self.octo
            .post(
                format!("/repos/{o}/{r}/issues/{number}/comments"),
                Some(&body),
            )
            .await
            .map_err(classify)
    }

    /// The commit a branch points at, or None when it does not exist.
    pub async fn branch_sha(
        &self,
        repo: &str,
        branch: &str,
    ) -> Result<Option<String>, GitHubError> {
        let (o, r) = split(repo)?;
        match self
            .octo
            .get::<GitRef, _, _>(
                format!("/repos/{o}/{r}/git/ref/heads/{branch}"),
                None::<&()>,
            )
            .await
        {
            Ok(r) => Ok(Some(r.object.sha)),
            Err(e) => match classify(e) {
                e if e.status() == Some(404) => Ok(None),
                e => Err(e),
            },
        }
    }

    pub async fn create_branch(
        &self,
        repo: &str,
        branch: &str,
        sha: &str,
    ) -> Result<(), GitHubError> {
        let (o, r) = split(repo)?;
        let body = serde_json::json!({ "ref": format!("refs/heads/{branch}"), "sha": sha });
        let _: serde_json::Value = self
            .octo
            .post(format!("/repos/{o}/{r}/git/refs"), Some(&body))
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// A file's text and blob sha on a branch.
    pub async fn file(
        &self,
        repo: &str,
        path: &str,
        branch: &str,
    ) -> Result<(String, String), GitHubError> {
        let (o, r) = split(repo)?;
        let c: Contents = self
            .octo
            .get(
                format!("/repos/{o}/{r}/contents/{path}?ref={branch}"),
                None::<&()>,
            )
            .await
            .map_err(classify)?;
        let raw: String = c.content.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(raw)
            .map_err(|e| GitHubError::Refused(format!("{path} is not base64 content: {e}")))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| GitHubError::Refused(format!("{path} is not UTF-8 text")))?;
        Ok((text, c.sha))
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
        check_path(path)?;
        let (o, r) = split(repo)?;
        let body = serde_json::json!({
            "message": message,
            "content": base64::engine::general_purpose::STANDARD.encode(text),
            "sha": sha,
            "branch": branch,
        });
        let _: serde_json::Value = self
            .octo
            .put(format!("/repos/{o}/{r}/contents/{path}"), Some(&body))
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// The pull request proposing `branch`, open or not.
    pub async fn pull_for_branch(
        &self,
        repo: &str,
        branch: &str,
    ) -> Result<Option<PullRequest>, GitHubError> {
        let (o, r) = split(repo)?;
        let route = format!("/repos/{o}/{r}/pulls?state=all&head={o}:{branch}&per_page=10");
        let pulls: Vec<PullRequest> = self.octo.get(route, None::<&()>).await.map_err(classify)?;
        Ok(pulls.into_iter().next())
    }

    pub async fn create_pull(
        &self,
        repo: &str,
        branch: &str,
        base: &str,
        title: &str,
        body: &str,
    ) -> Result<PullRequest, GitHubError> {
        let (o, r) = split(repo)?;
        // Never with auto-merge, never as anything but a proposal.
        let body = serde_json::json!({ "title": title, "head": branch, "base": base, "body": body, "maintainer_can_modify": true });
        self.octo
            .post(format!("/repos/{o}/{r}/pulls"), Some(&body))
            .await
            .map_err(classify)
    }

    pub async fn pull(&self, repo: &str, number: i64) -> Result<PullRequest, GitHubError> {
        let (o, r) = split(repo)?;
        self.octo
            .get(format!("/repos/{o}/{r}/pulls/{number}"), None::<&()>)
            .await
            .map_err(classify)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
