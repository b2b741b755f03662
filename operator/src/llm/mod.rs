//! A language model the Brain may consult, behind a trait. It only ever
//! answers questions; it never decides what runs (see `brain::advisor`).
//! Unset (no `SRE_SPACE_LLM_BASE_URL`), the Brain uses its rules alone.

mod openai;

pub use openai::OpenAiModel;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::{Error, Result};

/// Who says a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One message of the conversation with the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

/// The model's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    pub content: String,
    /// Prompt and completion tokens, as the server counted them.
    pub tokens: u64,
}

/// Why the model's answer could not be used. Each is a `ModelConsulted`
/// condition reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModelFailure {
    #[error("the model did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the model's server is rate limiting: {0}")]
    RateLimited(String),
    #[error("the model's server failed: {0}")]
    ServerError(String),
    #[error("the model's server refused the request: {0}")]
    ClientError(String),
    #[error("the model's server could not be reached: {0}")]
    Unreachable(String),
    #[error("the model refused: {0}")]
    Refused(String),
    #[error("the model's answer was cut off at the token limit")]
    Truncated,
    #[error("the model gave an empty answer")]
    Empty,
    #[error("the model's answer is not usable: {0}")]
    InvalidAnswer(String),
    #[error("token budget exhausted: {0}")]
    BudgetExhausted(String),
}

impl ModelFailure {
    /// PascalCase, for conditions and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "ModelTimeout",
            Self::RateLimited(_) => "ModelRateLimited",
            Self::ServerError(_) => "ModelServerError",
            Self::ClientError(_) => "ModelRequestRefused",
            Self::Unreachable(_) => "ModelUnreachable",
            Self::Refused(_) => "ModelRefused",
            Self::Truncated => "ModelAnswerTruncated",
            Self::Empty => "ModelAnswerEmpty",
            Self::InvalidAnswer(_) => "ModelAnswerInvalid",
            Self::BudgetExhausted(_) => "TokenBudgetExhausted",
        }
    }
}

pub type ModelFuture<'a> =
    Pin<Box<dyn Future<Output = std::result::Result<Completion, ModelFailure>> + Send + 'a>>;

/// A chat model that answers with a JSON object matching `schema`.
pub trait ChatModel: Send + Sync {
    fn complete<'a>(
        &'a self,
        messages: &'a [Message],
        schema: &'a serde_json::Value,
        max_tokens: u32,
    ) -> ModelFuture<'a>;
}

/// How the model is reached and how much of it may be used.
#[derive(Clone, Debug, PartialEq)]
pub struct LlmConfig {
    /// An OpenAI-compatible base URL, e.g. `https://api.openai.com/v1` or a
    /// local server's `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<String>,
    /// The longest one request may take, retries included.
    pub timeout: Duration,
    /// The most tokens one answer may have.
    pub max_answer_tokens: u32,
    /// The most tokens spent on one incident.
    pub incident_budget: u64,
    /// The most tokens spent in any hour.
    pub hourly_budget: u64,
    /// The most bytes of evidence put into one prompt.
    pub evidence_bytes: usize,
}

impl LlmConfig {
    /// Reads `SRE_SPACE_LLM_BASE_URL` (unset: no model), `SRE_SPACE_LLM_MODEL`,
    /// `SRE_SPACE_LLM_API_KEY`, `SRE_SPACE_LLM_TIMEOUT_SECONDS` (30),
    /// `SRE_SPACE_LLM_MAX_ANSWER_TOKENS` (800),
    /// `SRE_SPACE_LLM_INCIDENT_TOKEN_BUDGET` (8000),
    /// `SRE_SPACE_LLM_HOURLY_TOKEN_BUDGET` (100000) and
    /// `SRE_SPACE_LLM_EVIDENCE_BYTES` (12000).
    pub fn from_env() -> Result<Option<Self>> {
        let Some(base_url) = std::env::var("SRE_SPACE_LLM_BASE_URL")
            .ok()
            .filter(|v| !v.is_empty())
        else {
            return Ok(None);
        };
        let num = |name: &str, default: u64| -> Result<u64> {
            match std::env::var(name) {
                Ok(v) => v
                    .parse()
                    .map_err(|_| Error::Invalid(format!("{name}={v:?} is not a whole number"))),
                Err(_) => Ok(default),
            }
        };
        let model = std::env::var("SRE_SPACE_LLM_MODEL").map_err(|_| {
            Error::Invalid("SRE_SPACE_LLM_BASE_URL is set but SRE_SPACE_LLM_MODEL is not".into())
        })?;
        Ok(Some(Self {
            base_url,
            model,
            api_key: std::env::var("SRE_SPACE_LLM_API_KEY")
                .ok()
                .filter(|k| !k.is_empty()),
            timeout: Duration::from_secs(num("SRE_SPACE_LLM_TIMEOUT_SECONDS", 30)?),
            max_answer_tokens: num("SRE_SPACE_LLM_MAX_ANSWER_TOKENS", 800)? as u32,
            incident_budget: num("SRE_SPACE_LLM_INCIDENT_TOKEN_BUDGET", 8000)?,
            hourly_budget: num("SRE_SPACE_LLM_HOURLY_TOKEN_BUDGET", 100_000)?,
            evidence_bytes: num("SRE_SPACE_LLM_EVIDENCE_BYTES", 12_000)? as usize,
        }))
    }
}

/// Tokens spent, per incident and in the last hour.
#[derive(Default)]
pub struct TokenLedger {
    inner: Mutex<LedgerState>,
}

#[derive(Default)]
struct LedgerState {
    per_incident: BTreeMap<String, u64>,
    recent: Vec<(Timestamp, u64)>,
}

impl TokenLedger {
    /// Whether `estimate` more tokens fit both budgets.
    pub fn check(
        &self,
        config: &LlmConfig,
        incident: &str,
        estimate: u64,
        now: Timestamp,
    ) -> std::result::Result<(), ModelFailure> {
        let Ok(mut s) = self.inner.lock() else {
            return Ok(());
        };
        let hour_ago = now - SignedDuration::from_hours(1);
        s.recent.retain(|(t, _)| *t > hour_ago);
        let spent_hour: u64 = s.recent.iter().map(|(_, n)| n).sum();
        let spent_incident = s.per_incident.get(incident).copied().unwrap_or(0);
        if spent_incident + estimate > config.incident_budget {
            return Err(ModelFailure::BudgetExhausted(format!(
                "{spent_incident} of {} tokens already spent on this incident, {estimate} more needed",
                config.incident_budget
            )));
        }
        if spent_hour + estimate > config.hourly_budget {
            return Err(ModelFailure::BudgetExhausted(format!(
                "{spent_hour} of {} tokens already spent this hour, {estimate} more needed",
                config.hourly_budget
            )));
        }
        Ok(())
    }

    pub fn spend(&self, incident: &str, tokens: u64, now: Timestamp) {
        if let Ok(mut s) = self.inner.lock() {
            *s.per_incident.entry(incident.to_string()).or_default() += tokens;
            s.recent.push((now, tokens));
        }
    }
}
