//! The trace store: spans recorded by the protected services, read through
//! Jaeger's query API. The Brain and the trace triggers see only
//! [`TraceStore`] and the plain [`Trace`] values it returns, so the analysis
//! is tested with hand-built traces and the real store is swapped for none
//! when it is not configured.

mod jaeger;

use std::future::Future;
use std::pin::Pin;

use k8s_openapi::jiff::Timestamp;

pub use jaeger::{JaegerQuery, parse_traces};

/// The environment variable with the query API's base URL, e.g.
/// `http://jaeger-query.observability:16686`. Unset: traces are off.
pub const QUERY_ENV: &str = "SRE_SPACE_JAEGER_QUERY";

/// One span, reduced to what the analysis reads.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Span {
    pub span_id: String,
    /// The span this one was called from, when it has one in the trace.
    pub parent_id: Option<String>,
    /// `service.name` of the process that recorded the span.
    pub service: String,
    /// The span name: an HTTP route, an RPC method, a function.
    pub operation: String,
    /// Start, in microseconds since the Unix epoch.
    pub start_us: i64,
    pub duration_us: i64,
    /// The span's status is an error (`otel.status_code=ERROR` or
    /// `error=true`).
    pub error: bool,
}

/// One request across services.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Trace {
    pub trace_id: String,
    pub spans: Vec<Span>,
}

/// Which traces to find: those with a span of `service` (and `operation`)
/// starting between `start` and `end`.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceQuery {
    pub service: String,
    pub operation: Option<String>,
    pub start: Timestamp,
    pub end: Timestamp,
    /// At most this many traces.
    pub limit: usize,
}

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("the trace store at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the trace store at {url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("the trace store's answer is not usable: {0}")]
    InvalidAnswer(String),
}

pub type TraceFuture<'a> =
    Pin<Box<dyn Future<Output = std::result::Result<Vec<Trace>, TraceError>> + Send + 'a>>;

/// Where traces are read from.
pub trait TraceStore: Send + Sync {
    /// Whole traces (every span of every service in them) that match the
    /// query.
    fn find_traces<'a>(&'a self, query: &'a TraceQuery) -> TraceFuture<'a>;
}

/// Where the traces are read from.
#[derive(Clone, Debug, Default, clap::Args)]
#[command(next_help_heading = "Traces")]
pub struct TraceOptions {
    /// Jaeger's query API, e.g. `http://jaeger-query.observability:16686`;
    /// unset or empty: diagnoses carry no trace evidence and trace triggers
    /// are Unknown.
    #[arg(long, env = QUERY_ENV, value_name = "URL")]
    pub jaeger_query: Option<String>,
}

/// The configured trace store, or None when no query URL is set.
pub fn from_options(o: &TraceOptions) -> crate::Result<Option<JaegerQuery>> {
    match o.jaeger_query.as_deref().map(str::trim) {
        Some(url) if !url.is_empty() => JaegerQuery::new(url).map(Some),
        _ => Ok(None),
    }
}
