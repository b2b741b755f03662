//! The GitHub REST transport: octocrab over HTTP. It routes, encodes and
//! classifies; what may be asked of it is decided before, by `GitHub`.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use octocrab::Octocrab;
use serde::Deserialize;

use super::{
    CheckRun, Comment, GitHubApi, GitHubAuth, GitHubConfig, GitHubError, GitHubFuture, Issue,
    PullFile, PullRequest, encode, encode_components,
};
use crate::allowlist::split_repository;
use crate::{Error, Result};

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

#[derive(Deserialize)]
struct GitRef {
    object: GitObject,
}

#[derive(Deserialize)]
struct GitObject {
    sha: String,
}

#[derive(Deserialize)]
struct CheckRuns {
    #[serde(default)]
    check_runs: Vec<CheckRun>,
}

#[derive(Deserialize)]
struct Contents {
    sha: String,
    content: String,
}

/// GitHub's REST API through octocrab.
#[derive(Clone)]
pub struct OctocrabApi {
    octo: Octocrab,
}

impl OctocrabApi {
    pub fn new(config: &GitHubConfig) -> Result<Self> {
        let builder = Octocrab::builder()
            .base_uri(config.api_url.as_str())
            .map_err(|e| Error::Config(format!("SRE_SPACE_GITHUB_API_URL: {e}")))?
            .set_connect_timeout(Some(Duration::from_secs(10)))
            .set_read_timeout(Some(Duration::from_secs(30)));
        let built = |r: std::result::Result<Octocrab, octocrab::Error>| {
            r.map_err(|e| Error::Config(format!("building the GitHub client: {e}")))
        };
        let octo = match &config.auth {
            GitHubAuth::Token(t) => built(builder.personal_token(t.clone()).build())?,
            GitHubAuth::App {
                app_id,
                private_key,
                installation_id,
            } => {
                let key = octocrab::EncodingKey::from_rsa_pem(private_key.as_bytes())
                    .map_err(|e| Error::Config(format!("SRE_SPACE_GITHUB_APP_PRIVATE_KEY: {e}")))?;
                let app = built(builder.app((*app_id).into(), key).build())?;
                // The installation client fetches and refreshes its token.
                built(app.installation((*installation_id).into()))?
            }
        };
        Ok(Self { octo })
    }

    /// The shared transport, as `GitHub` holds it.
    pub fn shared(config: &GitHubConfig) -> Result<Arc<dyn GitHubApi>> {
        Ok(Arc::new(Self::new(config)?))
    }
}

/// The owner and name of `owner/name`, each encoded for a route.
fn route(repo: &str) -> Result<(String, String), GitHubError> {
    let (o, r) = split_repository(repo).map_err(GitHubError::Refused)?;
    Ok((encode(o), encode(r)))
}

impl GitHubApi for OctocrabApi {
    fn issues<'a>(&'a self, repo: &'a str) -> GitHubFuture<'a, Vec<Issue>> {
        Box::pin(async move {
            let (o, r) = route(repo)?;
            let route = format!(
                "/repos/{o}/{r}/issues?state=all&labels=sre-space&per_page=100&sort=created&direction=desc"
            );
            let all: Vec<Issue> = self.octo.get(route, None::<&()>).await.map_err(classify)?;
            Ok(all
                .into_iter()
                .filter(|i| i.pull_request.is_none())
                .collect())
        })
    }

    fn create_issue<'a>(
        &'a self,
        repo: &'a str,
        title: &'a str,
        body: &'a str,
        labels: &'a [String],
    ) -> GitHubFuture<'a, Issue> {
        Box::pin(async move {
            let (o, r) = route(repo)?;
            let body = serde_json::json!({ "title": title, "body": body, "labels": labels });
            self.octo
                .post(format!("/repos/{o}/{r}/issues"), Some(&body))
                .await
                .map_err(classify)
        })
    }

    fn update_issue<'a>(
        &'a self,
        repo: &'a str,
        number: i64,
        title: &'a str,
        state: &'a str,
        labels: &'a [String],
    ) -> GitHubFuture<'a, Issue> {
        Box::pin(async move {
            let (o, r) = route(repo)?;
            let mut body = serde_json::json!({ "title": title, "state": state, "labels": labels });
            if state == "closed" {
                body["state_reason"] = "completed".into();
            }
            self.octo
                .patch(format!("/repos/{o}/{r}/issues/{number}"), Some(&body))
                .await
                .map_err(classify)
        })
    }

    fn update_issue_body<'a>(
        &'a self,
        repo: &'a str,
        number: i64,
        body: &'a str,
    ) -> GitHubFuture<'a, Issue> {
        Box::pin(async move {
            let (o, r) = route(repo)?;
            let body = serde_json::json!({ "body": body });
            self.octo
                .patch(format!("/repos/{o}/{r}/issues/{number}"), Some(&body))
                .await
                .map_err(classify)
        })
    }

    fn comments<'a>(&'a self, repo: &'a str, number: i64) -> GitHubFuture<'a, Vec<Comment>> {
        Box::pin(async move {
            let (o, r) = route(repo)?;
            let mut all = Vec::new();
            for page in 1..=10 {
                let route =
                    format!("/repos/{o}/{r}/issues/{number}/comments?per_page=100&page={page}");
                let batch: Vec<Comment> =
                    self.octo.get(route, None::<&()>).await.map_err(classify)?;
                let done = batch.len() < 100;
                all.extend(batch);
                if done {
                    break;
                }
            }
            Ok(all)
        })
    }

    fn comment<'a>(
        &'a self,
        repo: &'a str,
        number: i64,
        body: &'a str,
    ) -> GitHubFuture<'a, Comment> {
        Box::pin(async move {
            let (o, r) = route(repo)?;
            let body = serde_json::json!({ "body": body });
            self.octo
                .post(
                    format!("/repos/{o}/{r}/issues/{number}/comments"),
                    Some(&body),
                )
                .await
                .map_err(classify)
        })
    }

    fn branch_sha<'a>(
        &'a self,
        repo: &'a str,
        branch: &'a str,
    ) -> GitHubFuture<'a, Option<String>> {
        Box::pin(async move {
            let (o, r) = route(repo)?;
            let branch = encode_components(branch);
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
        })
    }

    fn create_branch<'a>(
        &'a self,
        repo: &'a str,
        branch: &'a str,
        sha: &'a str,
    ) -> GitHubFuture<'a, ()> {
        Box::pin(async move {
            let (o, r) = route(repo)?;
            let body = serde_json::json!({ "ref": format!("refs/heads/{branch}"), "sha": sha });
            let _: serde_json::Value = self
                .octo
                .post(format!("/repos/{o}/{r}/git/refs"), Some(&body))
                .await
                .map_err(classify)?;
            Ok(())
        })
    }

    fn file<'a>(
        &'a self,
        repo: &'a str,
        path: &'a str,
        branch: &'a str,
    ) -> GitHubFuture<'a, (String, String)> {
        Box::pin(async move {
            let (o, r) = route(repo)?;
            let (route_path, branch_q) = (encode_components(path), encode(branch));
            let c: Contents = self
                .octo
                .get(
                    format!("/repos/{o}/{r}/contents/{route_path}?ref={branch_q}"),
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
        })
    }

    fn write_file<'a>(
        &'a self,
        repo: &'a str,
        path: &'a str,
        branch: &'a str,
        text: &'a str,
        sha: &'a str,
        message: &'a str,
    ) -> GitHubFuture<'a, ()> {
        Box::pin(async move {
            let (o, r) = route(repo)?;
            let body = serde_json::json!({
                "message": message,
                "content": base64::engine::general_purpose::STANDARD.encode(text),
                "sha": sha,
                "branch": branch,
            });
            let _: serde_json::Value = self
                .octo
                .put(
                    format!("/repos/{o}/{r}/contents/{}", encode_components(path)),
                    Some(&body),
                )
                .await
                .map_err(classify)?;
            Ok(())
        })
    }

    fn pull_for_branch<'a>(
        &'a self,
        repo: &'a str,
        branch: &'a str,
    ) -> GitHubFuture<'a, Option<PullRequest>> {
        Box::pin(async move {
            let (o, r) = route(repo)?;
            let head = encode(&format!(
                "{}:{branch}",
                split_repository(repo).map_err(GitHubError::Refused)?.0
            ));
            let route = format!("/repos/{o}/{r}/pulls?state=all&head={head}&per_page=10");
            let pulls: Vec<PullRequest> =
                self.octo.get(route, None::<&()>).await.map_err(classify)?;
            Ok(pulls.into_iter().next())
        })
    }

    fn create_pull<'a>(
        &'a self,
        repo: &'a str,
        branch: &'a str,
        base: &'a str,
        title: &'a str,
        body: &'a str,
    ) -> GitHubFuture<'a, PullRequest> {
        Box::pin(async move {
            let (o, r) = route(repo)?;
            // Never with auto-merge, never as anything but a proposal.
            let body = serde_json::json!({ "title": title, "head": branch, "base": base, "body": body, "maintainer_can_modify": true });
            self.octo
                .post(format!("/repos/{o}/{r}/pulls"), Some(&body))
                .await
                .map_err(classify)
        })
    }

    fn pull<'a>(&'a self, repo: &'a str, number: i64) -> GitHubFuture<'a, PullRequest> {
        Box::pin(async move {
            let (o, r) = route(repo)?;
            self.octo
                .get(format!("/repos/{o}/{r}/pulls/{number}"), None::<&()>)
                .await
                .map_err(classify)
        })
    }

    fn add_labels<'a>(
        &'a self,
        repo: &'a str,
        number: i64,
        labels: &'a [String],
    ) -> GitHubFuture<'a, ()> {
        Box::pin(async move {
            let (o, r) = route(repo)?;
            let body = serde_json::json!({ "labels": labels });
            let _: serde_json::Value = self
                .octo
                .post(
                    format!("/repos/{o}/{r}/issues/{number}/labels"),
                    Some(&body),
                )
                .await
                .map_err(classify)?;
            Ok(())
        })
    }

    fn request_reviewers<'a>(
        &'a self,
        repo: &'a str,
        number: i64,
        users: &'a [String],
        teams: &'a [String],
    ) -> GitHubFuture<'a, ()> {
        Box::pin(async move {
            let (o, r) = route(repo)?;
            let body = serde_json::json!({ "reviewers": users, "team_reviewers": teams });
            let _: serde_json::Value = self
                .octo
                .post(
                    format!("/repos/{o}/{r}/pulls/{number}/requested_reviewers"),
                    Some(&body),
                )
                .await
                .map_err(classify)?;
            Ok(())
        })
    }

    fn pull_files<'a>(&'a self, repo: &'a str, number: i64) -> GitHubFuture<'a, Vec<PullFile>> {
        Box::pin(async move {
            let (o, r) = route(repo)?;
            let mut all = Vec::new();
            for page in 1..=3 {
                let route = format!("/repos/{o}/{r}/pulls/{number}/files?per_page=100&page={page}");
                let batch: Vec<PullFile> =
                    self.octo.get(route, None::<&()>).await.map_err(classify)?;
                let done = batch.len() < 100;
                all.extend(batch);
                if done {
                    break;
                }
            }
            Ok(all)
        })
    }

    fn check_runs<'a>(&'a self, repo: &'a str, sha: &'a str) -> GitHubFuture<'a, Vec<CheckRun>> {
        Box::pin(async move {
            let (o, r) = route(repo)?;
            let route = format!(
                "/repos/{o}/{r}/commits/{}/check-runs?per_page=100",
                encode(sha)
            );
            let runs: CheckRuns = self.octo.get(route, None::<&()>).await.map_err(classify)?;
            Ok(runs.check_runs)
        })
    }

    fn update_comment<'a>(
        &'a self,
        repo: &'a str,
        id: i64,
        body: &'a str,
    ) -> GitHubFuture<'a, Comment> {
        Box::pin(async move {
            let (o, r) = route(repo)?;
            let body = serde_json::json!({ "body": body });
            self.octo
                .patch(format!("/repos/{o}/{r}/issues/comments/{id}"), Some(&body))
                .await
                .map_err(classify)
        })
    }
}
