//! Jaeger's classic JSON query API (`/api/traces`), which Jaeger v1 and v2
//! both serve. It answers a search with whole traces: every span of every
//! service, with parent references and the process (service) of each span,
//! which is what following a failure across services needs. (The v3 API
//! answers with OTLP resource spans, the same information in a deeper shape.)

use std::time::Duration;

use serde::Deserialize;

use super::{Span, Trace, TraceError, TraceFuture, TraceQuery, TraceStore};

/// One query waits at most this long: a reconcile or a trigger loop must
/// not hang on a slow store.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Answers larger than this are refused rather than buffered.
const MAX_BYTES: usize = 16 * 1024 * 1024;
/// Spans beyond this many in one answer are dropped.
const MAX_SPANS: usize = 100_000;

/// A client of a Jaeger query service.
#[derive(Clone, Debug)]
pub struct JaegerQuery {
    http: reqwest::Client,
    base: reqwest::Url,
}

impl JaegerQuery {
    /// A client of the query service at `base`, e.g. `http://127.0.0.1:16686`.
    pub fn new(base: &str) -> crate::Result<Self> {
        let invalid =
            |why: String| crate::Error::Config(format!("{}={base:?}: {why}", super::QUERY_ENV));
        let url = reqwest::Url::parse(base).map_err(|e| invalid(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("use an http or https URL".into()));
        }
        // The same TLS crypto provider as the Kubernetes client; installing
        // it again is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .build()
            .map_err(|e| invalid(format!("building the HTTP client: {e}")))?;
        Ok(Self { http, base: url })
    }

    /// The query service's base URL.
    pub fn base(&self) -> &str {
        self.base.as_str()
    }

    /// The URL of a search.
    fn search_url(&self, q: &TraceQuery) -> reqwest::Url {
        let mut url = self.base.clone();
        let path = format!("{}/api/traces", self.base.path().trim_end_matches('/'));
        url.set_path(&path);
        url.set_query(None);
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("service", &q.service);
            if let Some(op) = &q.operation {
                pairs.append_pair("operation", op);
            }
            pairs.append_pair("start", &q.start.as_microsecond().to_string());
            pairs.append_pair("end", &q.end.as_microsecond().to_string());
            pairs.append_pair("limit", &q.limit.max(1).to_string());
        }
        url
    }

    async fn search(&self, q: &TraceQuery) -> std::result::Result<Vec<Trace>, TraceError> {
        let url = self.search_url(q);
        let unreachable = |e: reqwest::Error| TraceError::Unreachable {
            url: self.base.to_string(),
            reason: e.to_string(),
        };
        let mut response = self.http.get(url).send().await.map_err(unreachable)?;
        if !response.status().is_success() {
            return Err(TraceError::Status {
                url: self.base.to_string(),
                status: response.status().as_u16(),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > MAX_BYTES {
                return Err(TraceError::InvalidAnswer(format!(
                    "the answer is larger than {MAX_BYTES} bytes; lower the limit"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        parse_traces(&body)
    }
}

impl TraceStore for JaegerQuery {
    fn find_traces<'a>(&'a self, query: &'a TraceQuery) -> TraceFuture<'a> {
        Box::pin(self.search(query))
    }
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    data: Vec<JTrace>,
}

#[derive(Deserialize)]
struct JTrace {
    #[serde(rename = "traceID")]
    trace_id: String,
    #[serde(default)]
    spans: Vec<JSpan>,
    #[serde(default)]
    processes: std::collections::BTreeMap<String, JProcess>,
}

#[derive(Deserialize)]
struct JSpan {
    #[serde(rename = "spanID")]
    span_id: String,
    #[serde(rename = "operationName", default)]
    operation: String,
    #[serde(default)]
    references: Vec<JReference>,
    #[serde(rename = "startTime", default)]
    start: i64,
    #[serde(default)]
    duration: i64,
    #[serde(default)]
    tags: Vec<JTag>,
    #[serde(rename = "processID", default)]
    process_id: String,
    #[serde(default)]
    process: Option<JProcess>,
}

#[derive(Deserialize)]
struct JReference {
    #[serde(rename = "refType", default)]
    ref_type: String,
    #[serde(rename = "spanID")]
    span_id: String,
}

#[derive(Deserialize)]
struct JTag {
    key: String,
    #[serde(default)]
    value: serde_json::Value,
}

#[derive(Clone, Deserialize)]
struct JProcess {
    #[serde(rename = "serviceName", default)]
    service: String,
}

/// Reads an `/api/traces` answer.
pub fn parse_traces(body: &[u8]) -> std::result::Result<Vec<Trace>, TraceError> {
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|e| TraceError::InvalidAnswer(format!("not a Jaeger traces answer: {e}")))?;
    let mut budget = MAX_SPANS;
    let mut traces = Vec::with_capacity(answer.data.len());
    for t in answer.data {
        let take = t.spans.len().min(budget);
        budget -= take;
        let spans = t
            .spans
            .into_iter()
            .take(take)
            .map(|s| {
                let service = s
                    .process
                    .or_else(|| t.processes.get(&s.process_id).cloned())
                    .map(|p| p.service)
                    .unwrap_or_default();
                let error = s.tags.iter().any(|tag| match tag.key.as_str() {
                    "error" => tag.value == serde_json::Value::Bool(true) || tag.value == "true",
                    "otel.status_code" => tag.value == "ERROR",
                    _ => false,
                });
                // CHILD_OF is the caller; FOLLOWS_FROM (a queued job) is
                // taken when there is nothing else.
                let parent_id = s
                    .references
                    .iter()
                    .find(|r| r.ref_type == "CHILD_OF")
                    .or(s.references.first())
                    .map(|r| r.span_id.clone());
                Span {
                    span_id: s.span_id,
                    parent_id,
                    service,
                    operation: s.operation,
                    start_us: s.start,
                    duration_us: s.duration.max(0),
                    error,
                }
            })
            .collect();
        traces.push(Trace {
            trace_id: t.trace_id,
            spans,
        });
        if budget == 0 {
            break;
        }
    }
    Ok(traces)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from a real answer of Jaeger 2 to a trace sent over OTLP.
    const ANSWER: &str = r#"{"data":[{"traceID":"18eb84e417ef41c3","spans":[
      {"traceID":"18eb84e417ef41c3","spanID":"0000000000000001","operationName":"GET /quote",
       "references":[],"startTime":1795674991576240,"duration":50000,
       "tags":[{"key":"otel.status_code","type":"string","value":"ERROR"},
               {"key":"span.kind","type":"string","value":"server"}],"processID":"p1"},
      {"traceID":"18eb84e417ef41c3","spanID":"0000000000000002","operationName":"check_eligibility",
       "references":[{"refType":"CHILD_OF","traceID":"18eb84e417ef41c3","spanID":"0000000000000001"}],
       "startTime":1795674991577240,"duration":48000,
       "tags":[{"key":"error","type":"bool","value":true}],"processID":"p2"},
      {"traceID":"18eb84e417ef41c3","spanID":"0000000000000003","operationName":"SELECT",
       "references":[{"refType":"CHILD_OF","traceID":"18eb84e417ef41c3","spanID":"0000000000000002"}],
       "startTime":1795674991578240,"duration":1000,"tags":[],"processID":"p2"}],
      "processes":{"p1":{"serviceName":"frontend","tags":[]},"p2":{"serviceName":"user-service","tags":[]}},
      "warnings":null}],"total":0,"limit":0,"offset":0,"errors":null}"#;

    #[test]
    fn a_jaeger_answer_becomes_spans_with_services_parents_and_error_status() {
        let traces = parse_traces(ANSWER.as_bytes()).expect("parses");
        assert_eq!(traces.len(), 1);
        let t = &traces[0];
        assert_eq!(t.trace_id, "18eb84e417ef41c3");
        let by_op = |op: &str| t.spans.iter().find(|s| s.operation == op).expect("span");
        let root = by_op("GET /quote");
        assert_eq!(
            (root.service.as_str(), root.parent_id.as_deref(), root.error),
            ("frontend", None, true)
        );
        let check = by_op("check_eligibility");
        assert_eq!(check.service, "user-service");
        assert_eq!(check.parent_id.as_deref(), Some("0000000000000001"));
        assert!(check.error, "error=true is an error status");
        assert_eq!(
            (check.start_us, check.duration_us),
            (1795674991577240, 48000)
        );
        assert!(!by_op("SELECT").error);
    }

    #[test]
    fn an_answer_that_is_not_jaeger_json_is_a_clear_error() {
        let err = parse_traces(b"<html>proxy error</html>").expect_err("refused");
        assert!(
            err.to_string().contains("not a Jaeger traces answer"),
            "{err}"
        );
    }

    #[test]
    fn the_search_url_carries_service_operation_window_and_limit() {
        let q = JaegerQuery::new("http://jaeger.example:16686/jaeger").expect("valid");
        let url = q.search_url(&TraceQuery {
            service: "policy service".into(),
            operation: Some("GET /quote".into()),
            start: k8s_openapi::jiff::Timestamp::from_second(100).expect("time"),
            end: k8s_openapi::jiff::Timestamp::from_second(160).expect("time"),
            limit: 50,
        });
        assert_eq!(
            url.as_str(),
            "http://jaeger.example:16686/jaeger/api/traces?service=policy+service&operation=GET+%2Fquote&start=100000000&end=160000000&limit=50"
        );
        assert!(JaegerQuery::new("jaeger:16686").is_err(), "no scheme");
        assert!(JaegerQuery::new("ftp://jaeger").is_err());
    }
}
