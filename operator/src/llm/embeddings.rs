//! Text embeddings from an OpenAI-compatible `POST {base}/embeddings`, for
//! the knowledge base's search (`memory::knowledge`). The same endpoint and
//! key as the chat model; the model is `SRE_SPACE_EMBEDDINGS_MODEL`. Unset:
//! the search ranks by BM25 alone.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::Deserialize;

use super::ModelFailure;

/// The most texts sent in one request.
pub const MAX_BATCH: usize = 64;
/// Each text is cut to this many characters before it is sent: a document's
/// meaning is in its first lines, and the request stays small.
pub const MAX_INPUT_CHARS: usize = 2000;

pub type EmbedFuture<'a> =
    Pin<Box<dyn Future<Output = std::result::Result<Vec<Vec<f32>>, ModelFailure>> + Send + 'a>>;

/// A model that turns texts into vectors, one per text, in order.
pub trait Embedder: Send + Sync {
    fn embed<'a>(&'a self, inputs: &'a [String]) -> EmbedFuture<'a>;
}

/// Where the embeddings come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddingsConfig {
    /// The OpenAI-compatible base URL (`SRE_SPACE_LLM_BASE_URL`).
    pub base_url: String,
    pub model: String,
    pub api_key: Option<String>,
    pub timeout: Duration,
}

impl EmbeddingsConfig {
    /// The embeddings of the options: None without a model; an error with a
    /// model but no endpoint.
    pub fn from_options(
        model: Option<&str>,
        llm: &super::LlmOptions,
    ) -> crate::Result<Option<Self>> {
        let Some(model) = model.map(str::trim).filter(|m| !m.is_empty()) else {
            return Ok(None);
        };
        let base_url = llm
            .llm_base_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                crate::Error::Config(
                    "SRE_SPACE_EMBEDDINGS_MODEL is set but SRE_SPACE_LLM_BASE_URL is not: the \
                     embeddings come from the language model's endpoint"
                        .into(),
                )
            })?;
        Ok(Some(Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            model: model.to_string(),
            api_key: llm.llm_api_key.clone().filter(|k| !k.is_empty()),
            timeout: Duration::from_secs(llm.llm_timeout_seconds.clamp(1, 300)),
        }))
    }
}

/// The real client.
pub struct OpenAiEmbeddings {
    http: reqwest::Client,
    url: String,
    model: String,
    api_key: Option<String>,
    timeout: Duration,
}

impl OpenAiEmbeddings {
    pub fn new(config: &EmbeddingsConfig) -> crate::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| {
                crate::Error::Config(format!("building the embeddings' HTTP client: {e}"))
            })?;
        Ok(Self {
            http,
            url: format!("{}/embeddings", config.base_url),
            model: config.model.clone(),
            api_key: config.api_key.clone(),
            timeout: config.timeout,
        })
    }

    async fn batch(&self, inputs: &[String]) -> std::result::Result<Vec<Vec<f32>>, ModelFailure> {
        let input: Vec<String> = inputs
            .iter()
            .map(|t| t.chars().take(MAX_INPUT_CHARS).collect())
            .collect();
        let body = serde_json::json!({ "model": self.model, "input": input });
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        let res = tokio::time::timeout(self.timeout, req.send())
            .await
            .map_err(|_| ModelFailure::Timeout(self.timeout))?
            .map_err(|e| ModelFailure::Unreachable(e.to_string()))?;
        let status = res.status();
        let bytes = tokio::time::timeout(self.timeout, res.bytes())
            .await
            .map_err(|_| ModelFailure::Timeout(self.timeout))?
            .map_err(|e| ModelFailure::Unreachable(e.to_string()))?;
        if !status.is_success() {
            let text: String = String::from_utf8_lossy(&bytes).chars().take(200).collect();
            let text = format!("{status}: {}", crate::redact::string(&text));
            return Err(match status.as_u16() {
                429 => ModelFailure::RateLimited(text),
                s if s >= 500 => ModelFailure::ServerError(text),
                _ => ModelFailure::ClientError(text),
            });
        }
        vectors(&bytes, inputs.len())
    }
}

#[derive(Deserialize)]
struct EmbeddingsAnswer {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    embedding: Vec<f32>,
    index: usize,
}

/// The vectors of an answer, in input order; the answer must have exactly
/// one per input, all of one length.
fn vectors(body: &[u8], expected: usize) -> std::result::Result<Vec<Vec<f32>>, ModelFailure> {
    let answer: EmbeddingsAnswer = serde_json::from_slice(body).map_err(|e| {
        ModelFailure::InvalidAnswer(format!("the reply is not an embeddings list: {e}"))
    })?;
    let mut out: Vec<Option<Vec<f32>>> = vec![None; expected];
    for item in answer.data {
        match out.get_mut(item.index) {
            Some(slot @ None) => *slot = Some(item.embedding),
            _ => {
                return Err(ModelFailure::InvalidAnswer(format!(
                    "embedding index {} is out of range or repeated",
                    item.index
                )));
            }
        }
    }
    let out: Vec<Vec<f32>> = out.into_iter().flatten().collect();
    let dims = out.first().map(Vec::len).unwrap_or(0);
    if out.len() != expected || out.iter().any(|v| v.len() != dims || v.is_empty()) {
        return Err(ModelFailure::InvalidAnswer(format!(
            "{} embeddings of unequal or zero length for {expected} inputs",
            out.len()
        )));
    }
    Ok(out)
}

impl Embedder for OpenAiEmbeddings {
    fn embed<'a>(&'a self, inputs: &'a [String]) -> EmbedFuture<'a> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(inputs.len());
            for chunk in inputs.chunks(MAX_BATCH) {
                out.extend(self.batch(chunk).await?);
            }
            Ok(out)
        })
    }
}

/// A stand-in for an embeddings model: a hashed bag of words, so texts that
/// share words are close; it can be told to fail, and it remembers what it
/// was asked.
#[cfg(test)]
#[derive(Default)]
pub struct HashedEmbeddings {
    pub failing: std::sync::atomic::AtomicBool,
    pub requests: std::sync::Mutex<Vec<Vec<String>>>,
}

#[cfg(test)]
impl HashedEmbeddings {
    pub const DIMENSIONS: usize = 64;

    pub fn vector(text: &str) -> Vec<f32> {
        use std::hash::{Hash, Hasher};
        let mut v = vec![0.0_f32; Self::DIMENSIONS];
        for word in crate::memory::search::tokenize(text) {
            let mut h = std::hash::DefaultHasher::new();
            word.hash(&mut h);
            let i = usize::try_from(h.finish() % Self::DIMENSIONS as u64).unwrap_or(0);
            v[i] += 1.0;
        }
        v
    }
}

#[cfg(test)]
impl Embedder for HashedEmbeddings {
    fn embed<'a>(&'a self, inputs: &'a [String]) -> EmbedFuture<'a> {
        Box::pin(async move {
            self.requests
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(inputs.to_vec());
            if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(ModelFailure::ServerError("503 Service Unavailable".into()));
            }
            Ok(inputs.iter().map(|t| Self::vector(t)).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_put_in_input_order() {
        let body = br#"{"object":"list","data":[
            {"object":"embedding","embedding":[0.0,1.0],"index":1},
            {"object":"embedding","embedding":[1.0,0.0],"index":0}],
            "model":"m","usage":{"prompt_tokens":2,"total_tokens":2}}"#;
        assert_eq!(
            vectors(body, 2).expect("valid"),
            vec![vec![1.0, 0.0], vec![0.0, 1.0]]
        );
    }

    #[test]
    fn a_short_repeated_or_ragged_answer_is_refused() {
        let one = br#"{"data":[{"embedding":[1.0],"index":0}]}"#;
        assert!(vectors(one, 2).is_err(), "one vector for two inputs");
        let repeated = br#"{"data":[{"embedding":[1.0],"index":0},{"embedding":[1.0],"index":0}]}"#;
        assert!(vectors(repeated, 2).is_err());
        let ragged =
            br#"{"data":[{"embedding":[1.0],"index":0},{"embedding":[1.0,2.0],"index":1}]}"#;
        assert!(vectors(ragged, 2).is_err());
        assert!(vectors(b"<html>", 1).is_err());
    }

    #[test]
    fn a_model_without_an_endpoint_is_a_configuration_error() {
        let llm = super::super::LlmOptions::default();
        assert!(
            EmbeddingsConfig::from_options(None, &llm)
                .expect("fine")
                .is_none()
        );
        let err = EmbeddingsConfig::from_options(Some("text-embedding-3-small"), &llm)
            .expect_err("no endpoint");
        assert!(err.to_string().contains("SRE_SPACE_LLM_BASE_URL"), "{err}");
        let llm = super::super::LlmOptions {
            llm_base_url: Some("http://127.0.0.1:8000/v1/".into()),
            llm_timeout_seconds: 30,
            ..Default::default()
        };
        let c = EmbeddingsConfig::from_options(Some("m"), &llm)
            .expect("valid")
            .expect("on");
        assert_eq!(c.base_url, "http://127.0.0.1:8000/v1");
    }
}
