//! A stateful stand-in for an OpenAI-compatible chat completions server, with
//! the documented shapes of answers and errors. Tests queue what it does next
//! and read back every request it received.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

/// What the server does with the next request.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Answers with this message content.
    Answer(String),
    /// Answers after a delay.
    Slow(Duration, String),
    /// An error status with OpenAI's error body.
    Fail {
        status: u16,
        retry_after: Option<u64>,
    },
    /// The model refuses.
    Refuse(String),
    /// The answer was cut off at the token limit.
    Truncated(String),
}

#[derive(Default)]
struct Inner {
    queue: VecDeque<Behaviour>,
    requests: Vec<serde_json::Value>,
}

#[derive(Clone, Default)]
pub struct FakeOpenAi {
    inner: Arc<Mutex<Inner>>,
}

impl FakeOpenAi {
    /// Starts the server on a free loopback port; returns it and its base URL.
    pub async fn start() -> (Self, String) {
        let fake = Self::default();
        let app = Router::new()
            .route("/v1/chat/completions", post(complete))
            .with_state(fake.clone());
        let addr = crate::serve_on_loopback(app).await;
        (fake, format!("http://{addr}/v1"))
    }

    pub fn then(&self, b: Behaviour) -> &Self {
        self.inner.lock().expect("lock").queue.push_back(b);
        self
    }

    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.inner.lock().expect("lock").requests.clone()
    }
}

fn completion(
    content: Option<&str>,
    refusal: Option<&str>,
    finish: &str,
    body: &serde_json::Value,
) -> serde_json::Value {
    let prompt_tokens = body.to_string().len() as u64 / 4;
    let completion_tokens = content.map(|c| c.len() as u64 / 4).unwrap_or(1);
    serde_json::json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_780_000_000,
        "model": body["model"],
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": content, "refusal": refusal },
            "logprobs": null,
            "finish_reason": finish
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens
        }
    })
}

async fn complete(State(fake): State<FakeOpenAi>, Json(body): Json<serde_json::Value>) -> Response {
    let next = {
        let mut inner = fake.inner.lock().expect("lock");
        inner.requests.push(body.clone());
        inner.queue.pop_front()
    };
    match next {
        None => (StatusCode::INTERNAL_SERVER_ERROR, "no behaviour queued").into_response(),
        Some(Behaviour::Answer(c)) => {
            Json(completion(Some(&c), None, "stop", &body)).into_response()
        }
        Some(Behaviour::Slow(d, c)) => {
            tokio::time::sleep(d).await;
            Json(completion(Some(&c), None, "stop", &body)).into_response()
        }
        Some(Behaviour::Refuse(r)) => {
            Json(completion(None, Some(&r), "stop", &body)).into_response()
        }
        Some(Behaviour::Truncated(c)) => {
            Json(completion(Some(&c), None, "length", &body)).into_response()
        }
        Some(Behaviour::Fail {
            status,
            retry_after,
        }) => {
            let (kind, message) = match status {
                429 => ("rate_limit_exceeded", "Rate limit reached for requests"),
                500..=599 => (
                    "server_error",
                    "The server had an error while processing your request",
                ),
                _ => ("invalid_request_error", "Invalid request"),
            };
            let mut headers = HeaderMap::new();
            if let Some(s) = retry_after {
                headers.insert("retry-after", HeaderValue::from(s));
            }
            let body = serde_json::json!({ "error": { "message": message, "type": kind, "param": null, "code": kind } });
            (
                StatusCode::from_u16(status).expect("status"),
                headers,
                Json(body),
            )
                .into_response()
        }
    }
}
