//! A stateful stand-in for an OpenAI-compatible chat completions and
//! embeddings server, with the documented shapes of answers and errors.
//! Tests queue what the chat does next, switch the embeddings between
//! answering and failing, and read back every request either received.
//! Its embeddings are deterministic: a hashed bag of the text's words, so
//! texts sharing words are close.

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
    embedding_requests: Vec<serde_json::Value>,
    /// The status every embeddings request fails with, when set.
    embeddings_failing: Option<u16>,
}

/// The length of the fake's embeddings.
pub const EMBEDDING_DIMENSIONS: usize = 64;

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
            .route("/v1/embeddings", post(embeddings))
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

    /// From now on every embeddings request fails with `status` (None:
    /// they are answered again).
    pub fn fail_embeddings(&self, status: Option<u16>) {
        self.inner.lock().expect("lock").embeddings_failing = status;
    }

    /// The bodies of the embeddings requests received, oldest first.
    pub fn embedding_requests(&self) -> Vec<serde_json::Value> {
        self.inner.lock().expect("lock").embedding_requests.clone()
    }
}

/// The fake's embedding of a text: each lowercase word of two characters
/// or more adds one to a hashed dimension.
pub fn embedding(text: &str) -> Vec<f32> {
    use std::hash::{Hash, Hasher};
    let mut v = vec![0.0_f32; EMBEDDING_DIMENSIONS];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 2)
    {
        let mut h = std::hash::DefaultHasher::new();
        word.to_lowercase().hash(&mut h);
        v[(h.finish() % EMBEDDING_DIMENSIONS as u64) as usize] += 1.0;
    }
    v
}

fn openai_error(status: u16, kind: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "message": message, "type": kind, "param": null, "code": kind } });
    (StatusCode::from_u16(status).expect("status"), Json(body)).into_response()
}

/// `POST /v1/embeddings`: `{model, input}` (a string or an array of
/// strings) answered with `{object: "list", data: [{object: "embedding",
/// embedding, index}], model, usage}`.
async fn embeddings(
    State(fake): State<FakeOpenAi>,
    Json(body): Json<serde_json::Value>,
) -> Response {
    let failing = {
        let mut inner = fake.inner.lock().expect("lock");
        inner.embedding_requests.push(body.clone());
        inner.embeddings_failing
    };
    if let Some(status) = failing {
        return openai_error(status, "server_error", "The server is overloaded");
    }
    if !body["model"].is_string() {
        return openai_error(
            400,
            "invalid_request_error",
            "you must provide a model parameter",
        );
    }
    let inputs: Vec<String> = match &body["input"] {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(items) if !items.is_empty() => {
            match items
                .iter()
                .map(|i| i.as_str().map(String::from))
                .collect::<Option<Vec<_>>>()
            {
                Some(v) => v,
                None => {
                    return openai_error(400, "invalid_request_error", "input must be strings");
                }
            }
        }
        _ => return openai_error(400, "invalid_request_error", "input is required"),
    };
    let tokens: usize = inputs.iter().map(|t| t.len() / 4 + 1).sum();
    let data: Vec<serde_json::Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            serde_json::json!({ "object": "embedding", "embedding": embedding(text), "index": index })
        })
        .collect();
    Json(serde_json::json!({
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens }
    }))
    .into_response()
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
