//! A stateful stand-in for Jules's REST API (v1alpha) with its documented
//! shapes: `GET /sources`, `GET|POST /sessions`, `GET /sessions/{id}`,
//! `GET /sessions/{id}/activities`, paginated with `pageSize`,
//! `pageToken` and `nextPageToken`, errors as Google APIs send them. Every
//! request must carry the key in `X-Goog-Api-Key` (else 401). Tests move a
//! session through its states, attach a pull request output, and read back
//! every request received.

#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

/// The key the fake accepts.
pub const KEY: &str = "jules-test-key";

#[derive(Default)]
struct Inner {
    /// `owner/repo` of each source.
    sources: Vec<String>,
    sessions: Vec<serde_json::Value>,
    /// The bodies sessions were created with.
    created: Vec<serde_json::Value>,
    activities: BTreeMap<String, Vec<serde_json::Value>>,
    requests: Vec<String>,
}

#[derive(Clone, Default)]
pub struct FakeJules {
    inner: Arc<Mutex<Inner>>,
}

type Reply = Result<Response, Response>;

fn error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": {
        "code": status.as_u16(), "message": message,
        "status": status.canonical_reason().unwrap_or("UNKNOWN").to_uppercase().replace(' ', "_"),
    }});
    (status, Json(body)).into_response()
}

/// One page of `items` as `{key: [...], nextPageToken}`.
fn page(key: &str, items: &[serde_json::Value], q: &BTreeMap<String, String>) -> Reply {
    let size: usize = q
        .get("pageSize")
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let start: usize = match q.get("pageToken") {
        None => 0,
        Some(t) => t
            .strip_prefix("p")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| error(StatusCode::BAD_REQUEST, "Invalid page token."))?,
    };
    let end = (start + size).min(items.len());
    let mut out = serde_json::json!({ key: items.get(start..end).unwrap_or_default() });
    if end < items.len() {
        out["nextPageToken"] = format!("p{end}").into();
    }
    Ok(Json(out).into_response())
}

impl FakeJules {
    /// Starts on a free loopback port; returns it and its API base URL.
    pub async fn start() -> (Self, String) {
        let fake = Self::default();
        let app = Router::new()
            .route("/v1alpha/sources", get(list_sources))
            .route("/v1alpha/sessions", get(list_sessions).post(create_session))
            .route("/v1alpha/sessions/{id}", get(get_session))
            .route("/v1alpha/sessions/{id}/activities", get(list_activities))
            .fallback(|| async { error(StatusCode::NOT_FOUND, "Not Found") })
            .layer(middleware::from_fn_with_state(fake.clone(), check_key))
            .with_state(fake.clone());
        let addr = crate::serve_on_loopback(app).await;
        (fake, format!("http://{addr}/v1alpha"))
    }

    /// Jules's GitHub app is installed on these repositories; listed after
    /// `filler` others, so a client must follow the pages to find them.
    pub fn sources(&self, repos: &[&str], filler: usize) {
        let mut inner = self.inner.lock().expect("lock");
        for k in 0..filler {
            inner.sources.push(format!("someone/repo-{k}"));
        }
        inner.sources.extend(repos.iter().map(|r| r.to_string()));
    }

    /// Every request received, as `METHOD /path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.inner.lock().expect("lock").requests.clone()
    }

    /// The bodies of `POST /sessions`, in order.
    pub fn created(&self) -> Vec<serde_json::Value> {
        self.inner.lock().expect("lock").created.clone()
    }

    /// Moves session `id` to `state`, with the activity Jules would add.
    pub fn advance(&self, id: &str, state: &str) {
        let mut inner = self.inner.lock().expect("lock");
        if let Some(s) = inner.sessions.iter_mut().find(|s| s["id"] == id) {
            s["state"] = state.into();
            s["updateTime"] = "2026-12-03T10:05:00Z".into();
        }
        let n = inner.activities.get(id).map(Vec::len).unwrap_or(0);
        let mut a = serde_json::json!({
            "name": format!("sessions/{id}/activities/a{n}"), "id": format!("a{n}"),
            "createTime": "2026-12-03T10:05:00Z", "originator": "agent",
        });
        match state {
            "AWAITING_PLAN_APPROVAL" => {
                a["planGenerated"] = serde_json::json!({ "plan": { "id": "plan1", "steps": [
                    { "id": "s1", "title": "Bound the cache", "index": 0 } ] } })
            }
            "IN_PROGRESS" => a["planApproved"] = serde_json::json!({ "planId": "plan1" }),
            "COMPLETED" => a["sessionCompleted"] = serde_json::json!({}),
            "FAILED" => a["sessionFailed"] = serde_json::json!({ "reason": "tests failed" }),
            other => {
                a["progressUpdated"] =
                    serde_json::json!({ "title": other, "description": "working" })
            }
        }
        inner.activities.entry(id.into()).or_default().push(a);
    }

    /// Session `id` opened a pull request.
    pub fn attach_pull(&self, id: &str, url: &str, title: &str) {
        let mut inner = self.inner.lock().expect("lock");
        if let Some(s) = inner.sessions.iter_mut().find(|s| s["id"] == id) {
            let pr = serde_json::json!({ "pullRequest": {
                "url": url, "title": title, "description": "An architectural fix." } });
            match s["outputs"].as_array_mut() {
                Some(outputs) => outputs.push(pr),
                None => s["outputs"] = serde_json::json!([pr]),
            }
        }
    }
}

async fn check_key(State(fake): State<FakeJules>, request: Request, next: Next) -> Response {
    let line = format!(
        "{} {}",
        request.method(),
        request
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("")
    );
    fake.inner.lock().expect("lock").requests.push(line);
    let key = request
        .headers()
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok());
    if key != Some(KEY) {
        return error(
            StatusCode::UNAUTHORIZED,
            "Request is missing required authentication credential.",
        );
    }
    next.run(request).await
}

async fn list_sources(
    State(f): State<FakeJules>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Reply {
    let inner = f.inner.lock().expect("lock");
    let items: Vec<_> = inner
        .sources
        .iter()
        .map(|r| {
            let (owner, repo) = r.split_once('/').unwrap_or((r, ""));
            serde_json::json!({
                "name": format!("sources/github/{owner}/{repo}"),
                "id": format!("github/{owner}/{repo}"),
                "githubRepo": { "owner": owner, "repo": repo },
            })
        })
        .collect();
    page("sources", &items, &q)
}

async fn list_sessions(
    State(f): State<FakeJules>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Reply {
    let inner = f.inner.lock().expect("lock");
    page("sessions", &inner.sessions, &q)
}

async fn create_session(State(f): State<FakeJules>, Json(b): Json<serde_json::Value>) -> Reply {
    let mut inner = f.inner.lock().expect("lock");
    let Some(prompt) = b["prompt"].as_str().filter(|p| !p.is_empty()) else {
        return Err(error(StatusCode::BAD_REQUEST, "prompt is required"));
    };
    let source = b["sourceContext"]["source"].as_str().unwrap_or_default();
    let known = inner
        .sources
        .iter()
        .any(|r| format!("sources/github/{r}") == source);
    if !known {
        return Err(error(
            StatusCode::NOT_FOUND,
            "Requested entity was not found.",
        ));
    }
    let id = format!(
        "{}",
        14_000_000_000_000_000u64 + inner.sessions.len() as u64
    );
    let session = serde_json::json!({
        "name": format!("sessions/{id}"), "id": id, "prompt": prompt,
        "title": b["title"], "sourceContext": b["sourceContext"],
        "requirePlanApproval": b["requirePlanApproval"], "automationMode": b["automationMode"],
        "createTime": "2026-12-03T10:00:00Z", "updateTime": "2026-12-03T10:00:00Z",
        "state": "QUEUED", "url": format!("https://jules.google.com/session/{id}"),
    });
    inner.sessions.push(session.clone());
    inner.created.push(b.clone());
    Ok(Json(session).into_response())
}

async fn get_session(State(f): State<FakeJules>, Path(id): Path<String>) -> Reply {
    let inner = f.inner.lock().expect("lock");
    inner
        .sessions
        .iter()
        .find(|s| s["id"] == id.as_str())
        .map(|s| Json(s.clone()).into_response())
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "Requested entity was not found."))
}

async fn list_activities(
    State(f): State<FakeJules>,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Reply {
    let inner = f.inner.lock().expect("lock");
    if !inner.sessions.iter().any(|s| s["id"] == id.as_str()) {
        return Err(error(
            StatusCode::NOT_FOUND,
            "Requested entity was not found.",
        ));
    }
    let all = inner.activities.get(&id).cloned().unwrap_or_default();
    page("activities", &all, &q)
}
