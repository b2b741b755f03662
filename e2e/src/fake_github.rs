//! A stateful stand-in for the parts of GitHub's REST API the operator uses
//! (issues, comments, labels, git refs, contents, pull requests with their
//! labels, requested reviewers, changed files, conversation, and the check
//! runs on their head commit), with
//! GitHub's documented shapes and status codes. Tests seed repositories,
//! inject failures (a 500, a rate-limited 403), act as a reviewer (merge or
//! close a pull request), and read back every request received.

// Handlers return `Result<Response, Response>`, the usual axum shape; the
// error is a finished HTTP response, not something to make smaller.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;

#[derive(Clone, Debug, Default)]
pub struct IssueRec {
    pub number: i64,
    pub title: String,
    pub body: String,
    pub state: String,
    pub labels: Vec<String>,
    pub comments: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct PullRec {
    pub number: i64,
    pub title: String,
    pub body: String,
    pub head: String,
    pub base: String,
    pub state: String,
    pub merged: bool,
    pub labels: Vec<String>,
    /// Logins asked for a review.
    pub reviewers: Vec<String>,
    /// Team slugs asked for a review.
    pub team_reviewers: Vec<String>,
    /// The head commit.
    pub head_sha: String,
    /// (path, additions, deletions)
    pub files: Vec<(String, u64, u64)>,
    /// Its conversation (a pull request is an issue too), oldest first.
    pub comments: Vec<String>,
}

#[derive(Clone, Debug, Default)]
struct Repo {
    issues: Vec<IssueRec>,
    /// branch → commit sha
    refs: BTreeMap<String, String>,
    /// (branch, path) → text
    files: BTreeMap<(String, String), String>,
    pulls: Vec<PullRec>,
    next_number: i64,
    /// Users and team slugs that may be asked for a review; None: anyone.
    collaborators: Option<Vec<String>>,
    /// commit sha → (name, status, conclusion) of its check runs
    checks: BTreeMap<String, Vec<(String, String, Option<String>)>>,
}

#[derive(Default)]
struct Inner {
    repos: BTreeMap<String, Repo>,
    requests: Vec<String>,
    failures: VecDeque<(u16, Vec<(&'static str, String)>)>,
    /// (request prefix, remaining count, status)
    targeted: Vec<(String, usize, u16)>,
    commits: u64,
}

#[derive(Clone, Default)]
pub struct FakeGitHub {
    inner: Arc<Mutex<Inner>>,
}

fn sha_of(text: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    format!("{:040x}", u128::from(h.finish()))
}

type Reply = Result<Response, Response>;

/// The settings that point an operator at a fake GitHub's `api_url`, with
/// a token the fake accepts.
pub fn operator_env(api_url: &str) -> [(&'static str, &str); 2] {
    [
        ("SRE_SPACE_GITHUB_TOKEN", "ghp_test"),
        ("SRE_SPACE_GITHUB_API_URL", api_url),
    ]
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "message": message, "documentation_url": "https://docs.github.com/rest" });
    (status, Json(body)).into_response()
}

impl FakeGitHub {
    /// Starts on a free loopback port; returns it and its API base URL.
    pub async fn start() -> (Self, String) {
        let fake = Self::default();
        let app = Router::new()
            .route("/repos/{o}/{r}/issues", get(list_issues).post(create_issue))
            .route(
                "/repos/{o}/{r}/issues/{n}",
                get(get_issue).patch(update_issue),
            )
            .route(
                "/repos/{o}/{r}/issues/{n}/comments",
                get(list_comments).post(create_comment),
            )
            .route("/repos/{o}/{r}/git/ref/{*branch}", get(get_ref))
            .route("/repos/{o}/{r}/git/refs", axum::routing::post(create_ref))
            .route(
                "/repos/{o}/{r}/contents/{*path}",
                get(get_contents).put(put_contents),
            )
            .route("/repos/{o}/{r}/pulls", get(list_pulls).post(create_pull))
            .route("/repos/{o}/{r}/pulls/{n}", get(get_pull))
            .route("/repos/{o}/{r}/pulls/{n}/files", get(pull_files))
            .route(
                "/repos/{o}/{r}/issues/comments/{id}",
                axum::routing::patch(update_comment),
            )
            .route("/repos/{o}/{r}/commits/{sha}/check-runs", get(check_runs))
            .route(
                "/repos/{o}/{r}/issues/{n}/labels",
                axum::routing::post(add_labels),
            )
            .route(
                "/repos/{o}/{r}/pulls/{n}/requested_reviewers",
                axum::routing::post(request_reviewers),
            )
            .fallback(|| async { error(StatusCode::NOT_FOUND, "Not Found") })
            .layer(middleware::from_fn_with_state(
                fake.clone(),
                record_and_fail,
            ))
            .with_state(fake.clone());
        let addr = crate::serve_on_loopback(app).await;
        (fake, format!("http://{addr}"))
    }

    /// Creates a repository with a default branch `main` and these files.
    pub fn seed(&self, repo: &str, files: &[(&str, &str)]) {
        let mut inner = self.inner.lock().expect("lock");
        let r = inner.repos.entry(repo.into()).or_default();
        r.refs.insert("main".into(), sha_of("initial"));
        for (path, text) in files {
            r.files
                .insert(("main".into(), (*path).into()), (*text).into());
        }
    }

    /// Only these users and team slugs may be asked to review the
    /// repository's pull requests (GitHub's collaborators); others are
    /// refused with 422.
    pub fn collaborators(&self, repo: &str, names: &[&str]) {
        let mut inner = self.inner.lock().expect("lock");
        let r = inner.repos.entry(repo.into()).or_default();
        r.collaborators = Some(names.iter().map(|n| n.to_string()).collect());
    }

    /// The next `count` requests fail with `status` and these headers.
    pub fn fail_next(&self, count: usize, status: u16, headers: &[(&'static str, &str)]) {
        let mut inner = self.inner.lock().expect("lock");
        for _ in 0..count {
            inner.failures.push_back((
                status,
                headers.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            ));
        }
    }

    /// The next `count` requests starting with `prefix` (`METHOD /path`)
    /// fail with `status`.
    pub fn fail_matching(&self, prefix: &str, count: usize, status: u16) {
        self.inner
            .lock()
            .expect("lock")
            .targeted
            .push((prefix.to_string(), count, status));
    }

    /// Every request received, as `METHOD /path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.inner.lock().expect("lock").requests.clone()
    }

    pub fn issues(&self, repo: &str) -> Vec<IssueRec> {
        self.inner
            .lock()
            .expect("lock")
            .repos
            .get(repo)
            .map(|r| r.issues.clone())
            .unwrap_or_default()
    }

    pub fn pulls(&self, repo: &str) -> Vec<PullRec> {
        self.inner
            .lock()
            .expect("lock")
            .repos
            .get(repo)
            .map(|r| r.pulls.clone())
            .unwrap_or_default()
    }

    pub fn file(&self, repo: &str, branch: &str, path: &str) -> Option<String> {
        let inner = self.inner.lock().expect("lock");
        inner
            .repos
            .get(repo)?
            .files
            .get(&(branch.to_string(), path.to_string()))
            .cloned()
    }

    /// A reviewer merges a pull request (the change lands on its base).
    pub fn merge(&self, repo: &str, number: i64) {
        let mut inner = self.inner.lock().expect("lock");
        let Some(r) = inner.repos.get_mut(repo) else {
            return;
        };
        let Some(p) = r.pulls.iter_mut().find(|p| p.number == number) else {
            return;
        };
        p.merged = true;
        p.state = "closed".into();
        let (head, base) = (p.head.clone(), p.base.clone());
        let changed: Vec<_> = r
            .files
            .iter()
            .filter(|((b, _), _)| *b == head)
            .map(|((_, path), t)| (path.clone(), t.clone()))
            .collect();
        for (path, text) in changed {
            r.files.insert((base.clone(), path), text);
        }
    }

    /// Someone else (a Jules session) opens a pull request from a new
    /// branch off `main`, changing `files` (path, additions, deletions);
    /// returns its number and head commit.
    pub fn open_pull(
        &self,
        repo: &str,
        branch: &str,
        title: &str,
        body: &str,
        files: &[(&str, u64, u64)],
    ) -> (i64, String) {
        let mut inner = self.inner.lock().expect("lock");
        inner.commits += 1;
        let sha = sha_of(&format!("commit {}", inner.commits));
        let r = inner.repos.entry(repo.into()).or_default();
        r.refs.insert(branch.into(), sha.clone());
        r.next_number += 1;
        r.pulls.push(PullRec {
            number: r.next_number,
            title: title.into(),
            body: body.into(),
            head: branch.into(),
            base: "main".into(),
            state: "open".into(),
            head_sha: sha.clone(),
            files: files
                .iter()
                .map(|(p, a, d)| (p.to_string(), *a, *d))
                .collect(),
            ..PullRec::default()
        });
        (r.next_number, sha)
    }

    /// CI reports these check runs (name, status, conclusion) on commit
    /// `sha`, replacing earlier ones.
    pub fn set_checks(&self, repo: &str, sha: &str, runs: &[(&str, &str, Option<&str>)]) {
        let mut inner = self.inner.lock().expect("lock");
        let r = inner.repos.entry(repo.into()).or_default();
        r.checks.insert(
            sha.into(),
            runs.iter()
                .map(|(n, s, c)| (n.to_string(), s.to_string(), c.map(str::to_string)))
                .collect(),
        );
    }

    /// A reviewer closes a pull request without merging.
    pub fn close(&self, repo: &str, number: i64) {
        let mut inner = self.inner.lock().expect("lock");
        if let Some(p) = inner
            .repos
            .get_mut(repo)
            .and_then(|r| r.pulls.iter_mut().find(|p| p.number == number))
        {
            p.state = "closed".into();
        }
    }
}

async fn record_and_fail(State(fake): State<FakeGitHub>, request: Request, next: Next) -> Response {
    let line = format!(
        "{} {}",
        request.method(),
        request
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("")
    );
    let failure = {
        let mut inner = fake.inner.lock().expect("lock");
        inner.requests.push(line.clone());
        let targeted = inner
            .targeted
            .iter_mut()
            .find(|(p, n, _)| *n > 0 && line.starts_with(p.as_str()))
            .map(|t| {
                t.1 -= 1;
                (t.2, Vec::new())
            });
        targeted.or_else(|| inner.failures.pop_front())
    };
    if let Some((status, headers)) = failure {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = if status == StatusCode::FORBIDDEN {
            "API rate limit exceeded for installation."
        } else {
            "Server Error"
        };
        let mut response = error(status, message);
        for (k, v) in headers {
            if let Ok(v) = HeaderValue::from_str(&v) {
                response.headers_mut().insert(k, v);
            }
        }
        return response;
    }
    next.run(request).await
}

fn repo<'a>(inner: &'a mut Inner, o: &str, r: &str) -> Result<&'a mut Repo, Response> {
    inner
        .repos
        .get_mut(&format!("{o}/{r}"))
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "Not Found"))
}

fn issue_json(o: &str, r: &str, i: &IssueRec) -> serde_json::Value {
    serde_json::json!({
        "id": 1000 + i.number, "node_id": format!("I_{}", i.number), "number": i.number,
        "url": format!("https://api.github.test/repos/{o}/{r}/issues/{}", i.number),
        "html_url": format!("https://github.test/{o}/{r}/issues/{}", i.number),
        "title": i.title, "body": i.body, "state": i.state,
        "labels": i.labels.iter().map(|l| serde_json::json!({ "name": l })).collect::<Vec<_>>(),
        "comments": i.comments.len(), "user": { "login": "sre-space-bot" },
        "created_at": "2026-11-26T00:00:00Z", "updated_at": "2026-11-26T00:00:00Z"
    })
}

fn pull_json(o: &str, r: &str, p: &PullRec) -> serde_json::Value {
    serde_json::json!({
        "id": 2000 + p.number, "number": p.number, "title": p.title, "body": p.body, "state": p.state,
        "html_url": format!("https://github.test/{o}/{r}/pull/{}", p.number),
        "head": { "ref": p.head, "sha": p.head_sha, "label": format!("{o}:{}", p.head) }, "base": { "ref": p.base },
        "merged": p.merged, "merged_at": if p.merged { serde_json::json!("2026-11-26T00:00:00Z") } else { serde_json::Value::Null },
        "auto_merge": null,
        "labels": p.labels.iter().map(|l| serde_json::json!({ "name": l })).collect::<Vec<_>>(),
        "requested_reviewers": p.reviewers.iter().map(|l| serde_json::json!({ "login": l })).collect::<Vec<_>>(),
        "requested_teams": p.team_reviewers.iter().map(|t| serde_json::json!({ "slug": t })).collect::<Vec<_>>()
    })
}

async fn list_issues(
    State(f): State<FakeGitHub>,
    Path((o, r)): Path<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Reply {
    let mut inner = f.inner.lock().expect("lock");
    let rp = repo(&mut inner, &o, &r)?;
    let label = q.get("labels").cloned();
    let state = q.get("state").cloned().unwrap_or_else(|| "open".into());
    let mut out: Vec<_> = rp
        .issues
        .iter()
        .filter(|i| label.as_ref().is_none_or(|l| i.labels.contains(l)))
        .filter(|i| state == "all" || i.state == state)
        .map(|i| issue_json(&o, &r, i))
        .collect();
    out.reverse();
    Ok(Json(out).into_response())
}

async fn create_issue(
    State(f): State<FakeGitHub>,
    Path((o, r)): Path<(String, String)>,
    Json(b): Json<serde_json::Value>,
) -> Reply {
    let mut inner = f.inner.lock().expect("lock");
    let rp = repo(&mut inner, &o, &r)?;
    let title = b["title"]
        .as_str()
        .ok_or_else(|| error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed: title"))?;
    rp.next_number += 1;
    let i = IssueRec {
        number: rp.next_number,
        title: title.into(),
        body: b["body"].as_str().unwrap_or_default().into(),
        state: "open".into(),
        labels: b["labels"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.as_str().map(String::from))
            .collect(),
        comments: vec![],
    };
    let json = issue_json(&o, &r, &i);
    rp.issues.push(i);
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

async fn get_issue(
    State(f): State<FakeGitHub>,
    Path((o, r, n)): Path<(String, String, i64)>,
) -> Reply {
    let mut inner = f.inner.lock().expect("lock");
    let rp = repo(&mut inner, &o, &r)?;
    let i = rp
        .issues
        .iter()
        .find(|i| i.number == n)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "Not Found"))?;
    Ok(Json(issue_json(&o, &r, i)).into_response())
}

async fn update_issue(
    State(f): State<FakeGitHub>,
    Path((o, r, n)): Path<(String, String, i64)>,
    Json(b): Json<serde_json::Value>,
) -> Reply {
    let mut inner = f.inner.lock().expect("lock");
    let rp = repo(&mut inner, &o, &r)?;
    let i = rp
        .issues
        .iter_mut()
        .find(|i| i.number == n)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "Not Found"))?;
    if let Some(s) = b["state"].as_str() {
        i.state = s.into();
    }
    if let Some(t) = b["title"].as_str() {
        i.title = t.into();
    }
    if let Some(body) = b["body"].as_str() {
        i.body = body.into();
    }
    if let Some(ls) = b["labels"].as_array() {
        i.labels = ls
            .iter()
            .filter_map(|l| l.as_str().map(String::from))
            .collect();
    }
    Ok(Json(issue_json(&o, &r, i)).into_response())
}

async fn list_comments(
    State(f): State<FakeGitHub>,
    Path((o, r, n)): Path<(String, String, i64)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Reply {
    let mut inner = f.inner.lock().expect("lock");
    let rp = repo(&mut inner, &o, &r)?;
    let comments = thread(rp, n)?;
    let per_page: usize = q.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(30);
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let out: Vec<_> = comments
        .iter()
        .enumerate()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|(k, c)| serde_json::json!({ "id": comment_id(n, k), "body": c, "user": { "login": "sre-space-bot" } }))
        .collect();
    Ok(Json(out).into_response())
}

async fn create_comment(
    State(f): State<FakeGitHub>,
    Path((o, r, n)): Path<(String, String, i64)>,
    Json(b): Json<serde_json::Value>,
) -> Reply {
    let mut inner = f.inner.lock().expect("lock");
    let rp = repo(&mut inner, &o, &r)?;
    let comments = thread(rp, n)?;
    let body = b["body"]
        .as_str()
        .ok_or_else(|| error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed: body"))?;
    comments.push(body.into());
    let json = serde_json::json!({ "id": comment_id(n, comments.len() - 1), "body": body });
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

/// Comment ids are unique in a repository: the thread's number times
/// 100000, plus the comment's place in it.
fn comment_id(number: i64, index: usize) -> i64 {
    number * 100_000 + index as i64 + 1
}

/// The conversation of an issue or a pull request.
fn thread(rp: &mut Repo, n: i64) -> Result<&mut Vec<String>, Response> {
    if let Some(k) = rp.pulls.iter().position(|p| p.number == n) {
        return Ok(&mut rp.pulls[k].comments);
    }
    rp.issues
        .iter_mut()
        .find(|i| i.number == n)
        .map(|i| &mut i.comments)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "Not Found"))
}

/// PATCH /repos/{o}/{r}/issues/comments/{id}: replaces a comment's body.
async fn update_comment(
    State(f): State<FakeGitHub>,
    Path((o, r, id)): Path<(String, String, i64)>,
    Json(b): Json<serde_json::Value>,
) -> Reply {
    let mut inner = f.inner.lock().expect("lock");
    let rp = repo(&mut inner, &o, &r)?;
    let body = b["body"]
        .as_str()
        .ok_or_else(|| error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed: body"))?;
    let comments = thread(rp, id / 100_000)?;
    let slot = usize::try_from(id % 100_000 - 1)
        .ok()
        .and_then(|k| comments.get_mut(k))
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "Not Found"))?;
    *slot = body.into();
    Ok(Json(serde_json::json!({ "id": id, "body": body })).into_response())
}

/// GET /repos/{o}/{r}/pulls/{n}/files
async fn pull_files(
    State(f): State<FakeGitHub>,
    Path((o, r, n)): Path<(String, String, i64)>,
) -> Reply {
    let mut inner = f.inner.lock().expect("lock");
    let rp = repo(&mut inner, &o, &r)?;
    let p = rp
        .pulls
        .iter()
        .find(|p| p.number == n)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "Not Found"))?;
    let out: Vec<_> = p
        .files
        .iter()
        .map(|(path, a, d)| {
            serde_json::json!({
                "sha": sha_of(path), "filename": path, "status": "modified",
                "additions": a, "deletions": d, "changes": a + d,
            })
        })
        .collect();
    Ok(Json(out).into_response())
}

/// GET /repos/{o}/{r}/commits/{sha}/check-runs
async fn check_runs(
    State(f): State<FakeGitHub>,
    Path((o, r, sha)): Path<(String, String, String)>,
) -> Reply {
    let mut inner = f.inner.lock().expect("lock");
    let rp = repo(&mut inner, &o, &r)?;
    let runs: Vec<_> = rp
        .checks
        .get(&sha)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(k, (name, status, conclusion))| {
            serde_json::json!({
                "id": k + 1, "head_sha": sha, "name": name, "status": status,
                "conclusion": conclusion,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "total_count": runs.len(), "check_runs": runs })).into_response())
}

async fn get_ref(
    State(f): State<FakeGitHub>,
    Path((o, r, full)): Path<(String, String, String)>,
) -> Reply {
    let mut inner = f.inner.lock().expect("lock");
    let rp = repo(&mut inner, &o, &r)?;
    let branch = full.strip_prefix("heads/").unwrap_or(&full);
    let sha = rp
        .refs
        .get(branch)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "Not Found"))?;
    Ok(Json(serde_json::json!({ "ref": format!("refs/heads/{branch}"), "object": { "sha": sha, "type": "commit" } })).into_response())
}

async fn create_ref(
    State(f): State<FakeGitHub>,
    Path((o, r)): Path<(String, String)>,
    Json(b): Json<serde_json::Value>,
) -> Reply {
    let mut inner = f.inner.lock().expect("lock");
    let rp = repo(&mut inner, &o, &r)?;
    let name = b["ref"]
        .as_str()
        .and_then(|s| s.strip_prefix("refs/heads/"))
        .ok_or_else(|| error(StatusCode::UNPROCESSABLE_ENTITY, "Invalid ref"))?;
    if rp.refs.contains_key(name) {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Reference already exists",
        ));
    }
    let sha = b["sha"].as_str().unwrap_or_default().to_string();
    let base = rp
        .refs
        .iter()
        .find(|(_, s)| **s == sha)
        .map(|(b, _)| b.clone())
        .unwrap_or_else(|| "main".into());
    let copied: Vec<_> = rp
        .files
        .iter()
        .filter(|((b, _), _)| *b == base)
        .map(|((_, p), t)| (p.clone(), t.clone()))
        .collect();
    for (p, t) in copied {
        rp.files.insert((name.into(), p), t);
    }
    rp.refs.insert(name.into(), sha.clone());
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "ref": format!("refs/heads/{name}"), "object": { "sha": sha } })),
    )
        .into_response())
}

async fn get_contents(
    State(f): State<FakeGitHub>,
    Path((o, r, path)): Path<(String, String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Reply {
    let mut inner = f.inner.lock().expect("lock");
    let rp = repo(&mut inner, &o, &r)?;
    let branch = q.get("ref").cloned().unwrap_or_else(|| "main".into());
    let text = rp
        .files
        .get(&(branch, path.clone()))
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "Not Found"))?;
    // GitHub wraps the base64 content at 60 characters.
    let encoded = base64::engine::general_purpose::STANDARD.encode(text);
    let wrapped: Vec<String> = encoded
        .as_bytes()
        .chunks(60)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    let json = serde_json::json!({ "type": "file", "encoding": "base64", "path": path, "sha": sha_of(text), "content": wrapped.join("\n") + "\n" });
    Ok(Json(json).into_response())
}

async fn put_contents(
    State(f): State<FakeGitHub>,
    Path((o, r, path)): Path<(String, String, String)>,
    Json(b): Json<serde_json::Value>,
) -> Reply {
    let mut inner = f.inner.lock().expect("lock");
    inner.commits += 1;
    let commit = inner.commits;
    let rp = repo(&mut inner, &o, &r)?;
    let branch = b["branch"].as_str().unwrap_or("main").to_string();
    let key = (branch.clone(), path.clone());
    if let Some(current) = rp.files.get(&key)
        && b["sha"].as_str() != Some(sha_of(current).as_str())
    {
        return Err(error(StatusCode::CONFLICT, "sha does not match"));
    }
    let raw = b["content"]
        .as_str()
        .ok_or_else(|| error(StatusCode::UNPROCESSABLE_ENTITY, "content missing"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .map_err(|_| error(StatusCode::UNPROCESSABLE_ENTITY, "content is not base64"))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| error(StatusCode::UNPROCESSABLE_ENTITY, "not UTF-8"))?;
    rp.files.insert(key, text.clone());
    rp.refs.insert(branch, sha_of(&format!("commit {commit}")));
    Ok(Json(serde_json::json!({ "content": { "path": path, "sha": sha_of(&text) }, "commit": { "sha": sha_of(&format!("commit {commit}")) } })).into_response())
}

async fn list_pulls(
    State(f): State<FakeGitHub>,
    Path((o, r)): Path<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Reply {
    let mut inner = f.inner.lock().expect("lock");
    let rp = repo(&mut inner, &o, &r)?;
    let head = q
        .get("head")
        .and_then(|h| h.split_once(':').map(|(_, b)| b.to_string()));
    let state = q.get("state").cloned().unwrap_or_else(|| "open".into());
    let out: Vec<_> = rp
        .pulls
        .iter()
        .filter(|p| head.as_ref().is_none_or(|h| &p.head == h))
        .filter(|p| state == "all" || p.state == state)
        .map(|p| pull_json(&o, &r, p))
        .collect();
    Ok(Json(out).into_response())
}

async fn create_pull(
    State(f): State<FakeGitHub>,
    Path((o, r)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    Json(b): Json<serde_json::Value>,
) -> Reply {
    let _ = (method, headers);
    let mut inner = f.inner.lock().expect("lock");
    let rp = repo(&mut inner, &o, &r)?;
    let head = b["head"].as_str().unwrap_or_default().to_string();
    if !rp.refs.contains_key(&head) {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Validation Failed: head",
        ));
    }
    if rp.pulls.iter().any(|p| p.head == head && p.state == "open") {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "A pull request already exists",
        ));
    }
    let head_sha = rp.refs.get(&head).cloned().unwrap_or_default();
    rp.next_number += 1;
    let p = PullRec {
        number: rp.next_number,
        title: b["title"].as_str().unwrap_or_default().into(),
        body: b["body"].as_str().unwrap_or_default().into(),
        head,
        base: b["base"].as_str().unwrap_or("main").into(),
        state: "open".into(),
        merged: false,
        labels: vec![],
        reviewers: vec![],
        team_reviewers: vec![],
        head_sha,
        files: vec![],
        comments: vec![],
    };
    let json = pull_json(&o, &r, &p);
    rp.pulls.push(p);
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

async fn get_pull(
    State(f): State<FakeGitHub>,
    Path((o, r, n)): Path<(String, String, i64)>,
) -> Reply {
    let mut inner = f.inner.lock().expect("lock");
    let rp = repo(&mut inner, &o, &r)?;
    let p = rp
        .pulls
        .iter()
        .find(|p| p.number == n)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "Not Found"))?;
    Ok(Json(pull_json(&o, &r, p)).into_response())
}

/// POST /repos/{o}/{r}/issues/{n}/labels: adds labels to an issue or a pull
/// request (they share numbers); answers with all its labels.
async fn add_labels(
    State(f): State<FakeGitHub>,
    Path((o, r, n)): Path<(String, String, i64)>,
    Json(b): Json<serde_json::Value>,
) -> Reply {
    let mut inner = f.inner.lock().expect("lock");
    let rp = repo(&mut inner, &o, &r)?;
    let Some(wanted) = b["labels"].as_array() else {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request: labels is not an array",
        ));
    };
    let on = if let Some(p) = rp.pulls.iter_mut().find(|p| p.number == n) {
        &mut p.labels
    } else if let Some(i) = rp.issues.iter_mut().find(|i| i.number == n) {
        &mut i.labels
    } else {
        return Err(error(StatusCode::NOT_FOUND, "Not Found"));
    };
    for l in wanted.iter().filter_map(|l| l.as_str()) {
        if !on.iter().any(|x| x == l) {
            on.push(l.to_string());
        }
    }
    let out: Vec<_> = on
        .iter()
        .map(|l| serde_json::json!({ "name": l }))
        .collect();
    Ok(Json(out).into_response())
}

/// POST /repos/{o}/{r}/pulls/{n}/requested_reviewers: `reviewers` (logins)
/// and `team_reviewers` (slugs); 422 for one who is not a collaborator.
async fn request_reviewers(
    State(f): State<FakeGitHub>,
    Path((o, r, n)): Path<(String, String, i64)>,
    Json(b): Json<serde_json::Value>,
) -> Reply {
    let mut inner = f.inner.lock().expect("lock");
    let rp = repo(&mut inner, &o, &r)?;
    let names = |key: &str| -> Vec<String> {
        b[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (users, teams) = (names("reviewers"), names("team_reviewers"));
    if let Some(allowed) = &rp.collaborators
        && users.iter().chain(&teams).any(|n| !allowed.contains(n))
    {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!(
                "Reviews may only be requested from collaborators. One or more of the users or teams you specified is not a collaborator of the {o}/{r} repository."
            ),
        ));
    }
    let p = rp
        .pulls
        .iter_mut()
        .find(|p| p.number == n)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "Not Found"))?;
    for (to, from) in [(&mut p.reviewers, users), (&mut p.team_reviewers, teams)] {
        for name in from {
            if !to.contains(&name) {
                to.push(name);
            }
        }
    }
    let json = pull_json(&o, &r, p);
    Ok((StatusCode::CREATED, Json(json)).into_response())
}
