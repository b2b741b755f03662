//! A language model the Brain may consult, behind a trait. It only ever
//! answers questions; it never decides what runs (see `brain::advisor`).
//! Unset (no `SRE_SPACE_LLM_BASE_URL`), the Brain uses its rules alone.

pub mod embeddings;
mod openai;
#[cfg(test)]
pub mod scripted;

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
    /// The percentage of the hourly budget one namespace may spend, so that
    /// incidents in one namespace cannot use up the model for the others.
    pub namespace_share_percent: u64,
    /// The most bytes of evidence put into one prompt.
    pub evidence_bytes: usize,
}

/// The language model the Brain may consult, and its budgets.
#[derive(Clone, Debug, Default, clap::Args)]
#[command(next_help_heading = "Language model")]
pub struct LlmOptions {
    /// An OpenAI-compatible base URL (`https://api.openai.com/v1`, a local
    /// server's `http://127.0.0.1:11434/v1`); unset or empty: no model, the
    /// Brain uses its rules alone.
    #[arg(long, env = "SRE_SPACE_LLM_BASE_URL", value_name = "URL")]
    pub llm_base_url: Option<String>,
    /// The model's name; required with a base URL.
    #[arg(long, env = "SRE_SPACE_LLM_MODEL", value_name = "MODEL")]
    pub llm_model: Option<String>,
    /// The API key, if the server wants one.
    #[arg(
        long,
        env = "SRE_SPACE_LLM_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub llm_api_key: Option<String>,
    /// The longest one consultation may take, retries included.
    #[arg(
        long,
        env = "SRE_SPACE_LLM_TIMEOUT_SECONDS",
        value_name = "SECONDS",
        default_value_t = 30,
        value_parser = crate::config::whole_number,
    )]
    pub llm_timeout_seconds: u64,
    /// The most tokens one answer may have.
    #[arg(
        long,
        env = "SRE_SPACE_LLM_MAX_ANSWER_TOKENS",
        value_name = "TOKENS",
        default_value_t = 800,
        value_parser = answer_tokens,
    )]
    pub llm_max_answer_tokens: u32,
    /// The most tokens spent on one incident.
    #[arg(
        long,
        env = "SRE_SPACE_LLM_INCIDENT_TOKEN_BUDGET",
        value_name = "TOKENS",
        default_value_t = 8000,
        value_parser = crate::config::whole_number,
    )]
    pub llm_incident_token_budget: u64,
    /// The most tokens spent in any hour.
    #[arg(
        long,
        env = "SRE_SPACE_LLM_HOURLY_TOKEN_BUDGET",
        value_name = "TOKENS",
        default_value_t = 100_000,
        value_parser = crate::config::whole_number,
    )]
    pub llm_hourly_token_budget: u64,
    /// The share of the hourly budget one namespace may spend, 1 to 100. Not
    /// applied when one namespace is watched.
    #[arg(
        long,
        env = "SRE_SPACE_LLM_NAMESPACE_SHARE_PERCENT",
        value_name = "PERCENT",
        default_value_t = 50,
        value_parser = hourly_share,
    )]
    pub llm_namespace_share_percent: u64,
    /// The most bytes of evidence put into one prompt, most relevant first.
    #[arg(
        long,
        env = "SRE_SPACE_LLM_EVIDENCE_BYTES",
        value_name = "BYTES",
        default_value_t = 12_000,
        value_parser = evidence_bytes,
    )]
    pub llm_evidence_bytes: usize,
}

fn answer_tokens(v: &str) -> std::result::Result<u32, String> {
    u32::try_from(crate::config::whole_number(v)?).map_err(|_| "too large".into())
}

fn evidence_bytes(v: &str) -> std::result::Result<usize, String> {
    usize::try_from(crate::config::whole_number(v)?).map_err(|_| "too large".into())
}

fn hourly_share(v: &str) -> std::result::Result<u64, String> {
    crate::config::percent(v, "100: one namespace may use the whole hourly budget")
}

impl LlmConfig {
    /// The model of the options; None without a base URL.
    pub fn from_options(o: &LlmOptions) -> Result<Option<Self>> {
        let Some(base_url) = o.llm_base_url.clone().filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let model = o.llm_model.clone().ok_or_else(|| {
            Error::Config("SRE_SPACE_LLM_BASE_URL is set but SRE_SPACE_LLM_MODEL is not".into())
        })?;
        Ok(Some(Self {
            base_url,
            model,
            api_key: o.llm_api_key.clone().filter(|k| !k.is_empty()),
            timeout: Duration::from_secs(o.llm_timeout_seconds),
            max_answer_tokens: o.llm_max_answer_tokens,
            incident_budget: o.llm_incident_token_budget,
            hourly_budget: o.llm_hourly_token_budget,
            namespace_share_percent: o.llm_namespace_share_percent,
            evidence_bytes: o.llm_evidence_bytes,
        }))
    }
}

impl LlmConfig {
    /// The most tokens one namespace may spend in an hour: its share of the
    /// hourly budget, at least one.
    pub fn namespace_budget(&self) -> u64 {
        (self
            .hourly_budget
            .saturating_mul(self.namespace_share_percent)
            / 100)
            .max(1)
    }
}

/// The incident tokens are spent on. Two namespaces may each have an
/// incident of the same name; they have separate budgets.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IncidentKey {
    pub namespace: String,
    pub name: String,
}

impl IncidentKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for IncidentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// How long an incident's spending is remembered after its last spend. The
/// model is consulted when an episode is diagnosed; an incident quiet this
/// long starts its next episode with a fresh budget, and the hourly and
/// namespace budgets still bound it. Without this the ledger would keep
/// every incident the process ever saw.
const INCIDENT_BUDGET_WINDOW: SignedDuration = SignedDuration::from_hours(1);

/// Tokens spent: per incident, and in the last hour per namespace and in
/// all.
#[derive(Default)]
pub struct TokenLedger {
    inner: Mutex<LedgerState>,
}

#[derive(Default)]
struct LedgerState {
    /// Tokens spent on each incident, and when last.
    per_incident: BTreeMap<IncidentKey, (u64, Timestamp)>,
    /// Each spend of the last hour: when, in which namespace, how much.
    recent: Vec<(Timestamp, String, u64)>,
}

impl LedgerState {
    fn prune(&mut self, now: Timestamp) {
        let hour_ago = now
            .checked_sub(SignedDuration::from_hours(1))
            .unwrap_or(Timestamp::MIN);
        self.recent.retain(|(t, _, _)| *t > hour_ago);
        let horizon = now
            .checked_sub(INCIDENT_BUDGET_WINDOW)
            .unwrap_or(Timestamp::MIN);
        self.per_incident.retain(|_, (_, last)| *last > horizon);
    }
}

impl TokenLedger {
    /// Whether `estimate` more tokens fit the incident's budget, its
    /// namespace's share of the hour and the hourly budget.
    pub fn check(
        &self,
        config: &LlmConfig,
        incident: &IncidentKey,
        estimate: u64,
        now: Timestamp,
    ) -> std::result::Result<(), ModelFailure> {
        let Ok(mut s) = self.inner.lock() else {
            return Ok(());
        };
        s.prune(now);
        let spent_hour: u64 = s.recent.iter().map(|(_, _, n)| n).sum();
        let spent_namespace: u64 = s
            .recent
            .iter()
            .filter(|(_, ns, _)| *ns == incident.namespace)
            .map(|(_, _, n)| n)
            .sum();
        let spent_incident = s.per_incident.get(incident).map_or(0, |(n, _)| *n);
        if spent_incident.saturating_add(estimate) > config.incident_budget {
            return Err(ModelFailure::BudgetExhausted(format!(
                "{spent_incident} of {} tokens already spent on this incident, {estimate} more needed",
                config.incident_budget
            )));
        }
        let share = config.namespace_budget();
        if spent_namespace.saturating_add(estimate) > share {
            return Err(ModelFailure::BudgetExhausted(format!(
                "{spent_namespace} of {share} tokens, namespace {}'s share of the hourly budget, already spent this hour, {estimate} more needed",
                incident.namespace
            )));
        }
        if spent_hour.saturating_add(estimate) > config.hourly_budget {
            return Err(ModelFailure::BudgetExhausted(format!(
                "{spent_hour} of {} tokens already spent this hour, {estimate} more needed",
                config.hourly_budget
            )));
        }
        Ok(())
    }

    pub fn spend(&self, incident: &IncidentKey, tokens: u64, now: Timestamp) {
        if let Ok(mut s) = self.inner.lock() {
            s.prune(now);
            let entry = s.per_incident.entry(incident.clone()).or_insert((0, now));
            entry.0 = entry.0.saturating_add(tokens);
            entry.1 = now;
            s.recent.push((now, incident.namespace.clone(), tokens));
        }
    }

    /// How many incidents the ledger remembers.
    pub fn incidents(&self) -> usize {
        self.inner.lock().map_or(0, |s| s.per_incident.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LlmConfig {
        LlmConfig {
            base_url: "http://127.0.0.1:1/v1".into(),
            model: "m".into(),
            api_key: None,
            timeout: Duration::from_secs(1),
            max_answer_tokens: 100,
            incident_budget: 1_000,
            hourly_budget: 4_000,
            namespace_share_percent: 50,
            evidence_bytes: 1_000,
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn same_named_incidents_in_two_namespaces_have_separate_budgets() {
        let (ledger, now) = (TokenLedger::default(), at("2026-11-26T10:00:00Z"));
        let shop = IncidentKey::new("shop", "web-oomkilled-0123456789");
        let blog = IncidentKey::new("blog", "web-oomkilled-0123456789");
        ledger.spend(&shop, 900, now);
        assert!(ledger.check(&config(), &shop, 200, now).is_err());
        assert_eq!(
            ledger.check(&config(), &blog, 200, now),
            Ok(()),
            "another namespace's incident of the same name has its own budget"
        );
    }

    #[test]
    fn a_namespace_spends_at_most_its_share_of_the_hour() {
        let (ledger, now) = (TokenLedger::default(), at("2026-11-26T10:00:00Z"));
        // Two incidents in `storm` use its share (2,000 of 4,000).
        for name in ["a", "b"] {
            let k = IncidentKey::new("storm", name);
            ledger
                .check(&config(), &k, 1_000, now)
                .expect("within share");
            ledger.spend(&k, 1_000, now);
        }
        let third = IncidentKey::new("storm", "c");
        let err = ledger
            .check(&config(), &third, 100, now)
            .expect_err("the namespace's share is spent");
        assert!(err.to_string().contains("namespace storm's share"), "{err}");
        assert_eq!(
            ledger.check(&config(), &IncidentKey::new("calm", "a"), 1_000, now),
            Ok(()),
            "another namespace may still consult the model"
        );
        // An hour later the share is free again.
        let later = now + SignedDuration::from_mins(61);
        assert_eq!(ledger.check(&config(), &third, 100, later), Ok(()));
    }

    #[test]
    fn incidents_quiet_for_the_budget_window_are_forgotten() {
        let (ledger, now) = (TokenLedger::default(), at("2026-11-26T10:00:00Z"));
        for i in 0..50 {
            ledger.spend(&IncidentKey::new("shop", format!("i{i}")), 10, now);
        }
        assert_eq!(ledger.incidents(), 50);
        let later = now + SignedDuration::from_mins(61);
        ledger.spend(&IncidentKey::new("shop", "new"), 10, later);
        assert_eq!(ledger.incidents(), 1, "the ledger does not grow forever");
    }
}
