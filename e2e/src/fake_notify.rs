//! Stateful stand-ins for the places the operator sends notifications to,
//! on loopback: Slack (an incoming webhook, and the Web API's
//! `chat.postMessage` and `chat.update` with a bot token) and a CloudEvents
//! receiver. Each checks what the real one checks (Slack: the token, the
//! channel, a `text`, the `ts` of an existing message; CloudEvents: the
//! required attributes of a structured-mode event), answers in its shapes,
//! can be told to fail, and keeps every message for the test to read.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

/// A Slack message as the channel shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct SlackMessage {
    pub ts: String,
    pub channel: String,
    pub text: String,
    /// How many times `chat.update` changed it.
    pub edits: usize,
    /// Which endpoint posted it: `webhook` or `bot`.
    pub via: &'static str,
}

#[derive(Default)]
struct Inner {
    slack: Vec<SlackMessage>,
    events: Vec<Value>,
    /// Every request, as `METHOD path status`.
    requests: Vec<String>,
    /// Statuses the next requests are answered with instead.
    failures: VecDeque<u16>,
    next_ts: u64,
}

/// The fake receivers; clones share their state.
#[derive(Clone, Default)]
pub struct FakeNotify {
    inner: Arc<Mutex<Inner>>,
}

/// The bot token the fake Slack accepts.
pub const BOT_TOKEN: &str = "xoxb-test-token";
/// The channel the fake Slack has.
pub const CHANNEL: &str = "C0SRESPACE";

/// The addresses of a started fake.
pub struct Urls {
    /// The incoming webhook's URL.
    pub slack_webhook: String,
    /// The Web API's base (`…/api`), for `apiUrl` in the sinks file.
    pub slack_api: String,
    /// The CloudEvents receiver.
    pub events: String,
}

fn slack_error(error: &str) -> Response {
    // Slack's Web API answers 200 with ok=false.
    Json(json!({ "ok": false, "error": error })).into_response()
}

impl FakeNotify {
    /// Starts on a free loopback port.
    pub async fn start() -> (Self, Urls) {
        let fake = Self::default();
        let app = Router::new()
            .route("/services/T0/B0/secret", post(webhook))
            .route("/api/chat.postMessage", post(post_message))
            .route("/api/chat.update", post(update))
            .route("/events", post(cloud_event))
            .with_state(fake.clone());
        let addr = crate::serve_on_loopback(app).await;
        let base = format!("http://{addr}");
        (
            fake,
            Urls {
                slack_webhook: format!("{base}/services/T0/B0/secret"),
                slack_api: format!("{base}/api"),
                events: format!("{base}/events"),
            },
        )
    }

    /// Answers the next `n` requests (any endpoint) with `status`.
    pub fn fail_next(&self, n: usize, status: u16) {
        let mut s = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.failures.extend(std::iter::repeat_n(status, n));
    }

    pub fn slack_messages(&self) -> Vec<SlackMessage> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .slack
            .clone()
    }

    pub fn cloud_events(&self) -> Vec<Value> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .events
            .clone()
    }

    pub fn requests(&self) -> Vec<String> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .requests
            .clone()
    }

    /// The injected failure for this request, if any, recorded.
    fn failure(&self, what: &str) -> Option<Response> {
        let mut s = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let status = s.failures.pop_front();
        s.requests.push(format!("{what} {}", status.unwrap_or(200)));
        let status = StatusCode::from_u16(status?).ok()?;
        Some((status, "injected failure").into_response())
    }

    fn next_ts(&self) -> String {
        let mut s = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.next_ts += 1;
        format!("1764748800.{:06}", s.next_ts)
    }
}

fn json_body(
    headers: &HeaderMap,
    body: &str,
    content_type: &str,
) -> Result<Value, (StatusCode, String)> {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !ct.starts_with(content_type) {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content-type {ct}"),
        ));
    }
    serde_json::from_str(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("invalid_payload: {e}")))
}

/// An incoming webhook: a JSON body with `text`; answers `ok` as text, or
/// 400 `no_text`/`invalid_payload` as Slack does.
async fn webhook(State(f): State<FakeNotify>, headers: HeaderMap, body: String) -> Response {
    if let Some(r) = f.failure("POST /services/T0/B0/secret") {
        return r;
    }
    let v = match json_body(&headers, &body, "application/json") {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let Some(text) = v["text"].as_str().filter(|t| !t.is_empty()) else {
        return (StatusCode::BAD_REQUEST, "no_text").into_response();
    };
    let ts = f.next_ts();
    f.inner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .slack
        .push(SlackMessage {
            ts,
            channel: "webhook".into(),
            text: text.to_string(),
            edits: 0,
            via: "webhook",
        });
    "ok".into_response()
}

/// Slack's error for a missing or wrong bot token, if it is so.
fn bot_auth(headers: &HeaderMap) -> Result<(), &'static str> {
    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        Some(v) if v == format!("Bearer {BOT_TOKEN}") => Ok(()),
        Some(_) => Err("invalid_auth"),
        None => Err("not_authed"),
    }
}

async fn post_message(State(f): State<FakeNotify>, headers: HeaderMap, body: String) -> Response {
    if let Some(r) = f.failure("POST /api/chat.postMessage") {
        return r;
    }
    if let Err(e) = bot_auth(&headers) {
        return slack_error(e);
    }
    let v = match json_body(&headers, &body, "application/json") {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    if v["channel"] != CHANNEL {
        return slack_error("channel_not_found");
    }
    let Some(text) = v["text"].as_str().filter(|t| !t.is_empty()) else {
        return slack_error("no_text");
    };
    let ts = f.next_ts();
    f.inner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .slack
        .push(SlackMessage {
            ts: ts.clone(),
            channel: CHANNEL.into(),
            text: text.to_string(),
            edits: 0,
            via: "bot",
        });
    Json(json!({ "ok": true, "channel": CHANNEL, "ts": ts, "message": { "text": text } }))
        .into_response()
}

async fn update(State(f): State<FakeNotify>, headers: HeaderMap, body: String) -> Response {
    if let Some(r) = f.failure("POST /api/chat.update") {
        return r;
    }
    if let Err(e) = bot_auth(&headers) {
        return slack_error(e);
    }
    let v = match json_body(&headers, &body, "application/json") {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    if v["channel"] != CHANNEL {
        return slack_error("channel_not_found");
    }
    let (Some(ts), Some(text)) = (v["ts"].as_str(), v["text"].as_str()) else {
        return slack_error("invalid_arguments");
    };
    let mut s = f
        .inner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(m) = s.slack.iter_mut().find(|m| m.ts == ts && m.via == "bot") else {
        return slack_error("message_not_found");
    };
    m.text = text.to_string();
    m.edits += 1;
    Json(json!({ "ok": true, "channel": CHANNEL, "ts": ts, "text": text })).into_response()
}

/// A CloudEvents receiver in structured mode: the required attributes
/// (`specversion` 1.0, `id`, `source`, `type`) must be there; a repeated
/// `source`+`id` is accepted and not stored twice, as the spec allows.
async fn cloud_event(State(f): State<FakeNotify>, headers: HeaderMap, body: String) -> Response {
    if let Some(r) = f.failure("POST /events") {
        return r;
    }
    let v = match json_body(&headers, &body, "application/cloudevents+json") {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    if v["specversion"] != "1.0" {
        return (StatusCode::BAD_REQUEST, "specversion must be 1.0").into_response();
    }
    for attr in ["id", "source", "type"] {
        if v[attr].as_str().is_none_or(str::is_empty) {
            return (StatusCode::BAD_REQUEST, format!("{attr} is required")).into_response();
        }
    }
    let mut s = f
        .inner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let repeat = s
        .events
        .iter()
        .any(|e| e["id"] == v["id"] && e["source"] == v["source"]);
    if !repeat {
        s.events.push(v);
    }
    StatusCode::ACCEPTED.into_response()
}

/// The sinks file naming the three receivers, for namespace `ns`.
pub fn sinks_file(urls: &Urls, ns: &str) -> String {
    serde_json::to_string_pretty(&json!({
        "sinks": [
            { "name": "slack-webhook", "slack": { "webhookUrl": urls.slack_webhook }, "namespaces": [ns] },
            { "name": "slack-bot", "slack": { "botToken": BOT_TOKEN, "channel": CHANNEL, "apiUrl": urls.slack_api }, "namespaces": [ns] },
            { "name": "events", "webhook": { "url": urls.events, "headers": { "X-Receiver-Key": "k" } }, "namespaces": [ns] },
        ]
    }))
    .unwrap_or_default()
}
