//! Traces: spans with W3C trace context, exported as OTLP/HTTP JSON.
//!
//! A small exporter of our own rather than the opentelemetry crates: the
//! services need four span kinds, attributes and an error status, and the
//! JSON encoding Jaeger accepts on `/v1/traces` is stable and short. A span
//! is recorded when it is dropped, so every early return still ends it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

/// The W3C `traceparent` header (and Kafka message header) name.
pub const TRACEPARENT: &str = "traceparent";

/// How many finished spans may wait for the exporter; beyond that they are
/// dropped (and counted) rather than slowing requests down.
const QUEUE: usize = 4096;
const BATCH: usize = 256;
const FLUSH_EVERY: Duration = Duration::from_millis(500);

/// Where a span sits in a trace: what the next hop needs to continue it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    pub sampled: bool,
}

impl TraceContext {
    /// Parses a `traceparent` value (version 00 layout; later versions may
    /// append fields, which are ignored as the specification asks).
    pub fn from_traceparent(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let version = parts.next()?;
        let trace_id = parts.next()?;
        let span_id = parts.next()?;
        let flags = parts.next()?;
        if version.len() != 2 || !is_hex(version) || version == "ff" {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        if trace_id.len() != 32 || !is_hex(trace_id) || trace_id.bytes().all(|b| b == b'0') {
            return None;
        }
        if span_id.len() != 16 || !is_hex(span_id) || span_id.bytes().all(|b| b == b'0') {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16)
            .ok()
            .filter(|_| flags.len() == 2)?;
        Some(Self {
            trace_id: trace_id.to_owned(),
            span_id: span_id.to_owned(),
            sampled: flags & 1 == 1,
        })
    }

    pub fn traceparent(&self) -> String {
        let flags = if self.sampled { "01" } else { "00" };
        format!("00-{}-{}-{flags}", self.trace_id, self.span_id)
    }
}

fn is_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn new_trace_id() -> String {
    format!("{:032x}", fastrand::u128(1..))
}

fn new_span_id() -> String {
    format!("{:016x}", fastrand::u64(1..))
}

/// OTLP span kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    Internal = 1,
    Server = 2,
    Client = 3,
    Producer = 4,
}

/// A finished span, as the exporter sends it.
#[derive(Clone, Debug)]
pub struct SpanData {
    pub context: TraceContext,
    pub parent_span_id: Option<String>,
    pub name: String,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(String, Value)>,
    /// `Some(message)` when the operation failed.
    pub error: Option<String>,
}

enum Message {
    Span(Box<SpanData>),
    Flush(oneshot::Sender<()>),
}

/// Makes spans for one service and hands them to its exporter. Cheap to
/// clone; without an endpoint the spans are made (so trace context still
/// propagates) but not sent.
#[derive(Clone)]
pub struct Tracer {
    inner: Arc<Inner>,
}

struct Inner {
    service: String,
    queue: Option<mpsc::Sender<Message>>,
    dropped: AtomicU64,
}

impl Tracer {
    /// A tracer whose spans go nowhere (tests, or no endpoint configured).
    pub fn disabled(service: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                service: service.to_owned(),
                queue: None,
                dropped: AtomicU64::new(0),
            }),
        }
    }

    /// A tracer exporting to `endpoint` (the OTLP/HTTP base URL, such as
    /// `http://127.0.0.1:4318`, or the full `.../v1/traces` URL). Must be
    /// called inside a Tokio runtime.
    pub fn exporting(service: &str, endpoint: &str, http: reqwest::Client) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let url = traces_url(endpoint);
        tokio::spawn(export(service.to_owned(), url, http, rx));
        Self {
            inner: Arc::new(Inner {
                service: service.to_owned(),
                queue: Some(tx),
                dropped: AtomicU64::new(0),
            }),
        }
    }

    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// Spans dropped because the exporter's queue was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// A span continuing `parent` (a remote or local context), or the root
    /// of a new trace.
    pub fn span(&self, name: &str, kind: SpanKind, parent: Option<&TraceContext>) -> Span {
        let (trace_id, parent_span_id, sampled) = match parent {
            Some(p) => (p.trace_id.clone(), Some(p.span_id.clone()), p.sampled),
            None => (new_trace_id(), None, true),
        };
        Span {
            tracer: self.clone(),
            data: Some(SpanData {
                context: TraceContext {
                    trace_id,
                    span_id: new_span_id(),
                    sampled,
                },
                parent_span_id,
                name: name.to_owned(),
                kind,
                start: SystemTime::now(),
                end: SystemTime::now(),
                attributes: Vec::new(),
                error: None,
            }),
        }
    }

    /// Waits until the spans finished so far have been sent (or given up
    /// on): called before the process exits.
    pub async fn flush(&self) {
        if let Some(queue) = &self.inner.queue {
            let (tx, rx) = oneshot::channel();
            if queue.send(Message::Flush(tx)).await.is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
            }
        }
    }

    fn record(&self, span: SpanData) {
        let Some(queue) = &self.inner.queue else {
            return;
        };
        if !span.context.sampled {
            return;
        }
        if queue.try_send(Message::Span(Box::new(span))).is_err() {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One operation in progress; recorded when dropped.
pub struct Span {
    tracer: Tracer,
    data: Option<SpanData>,
}

impl Span {
    /// The context a child span or the next hop continues from.
    pub fn context(&self) -> TraceContext {
        self.data
            .as_ref()
            .map(|d| d.context.clone())
            .unwrap_or_else(|| TraceContext {
                trace_id: new_trace_id(),
                span_id: new_span_id(),
                sampled: false,
            })
    }

    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        if let Some(d) = &mut self.data {
            d.attributes.push((key.to_owned(), value.into()));
        }
    }

    /// Marks the operation failed (span status ERROR) with a message.
    pub fn fail(&mut self, message: impl Into<String>) {
        if let Some(d) = &mut self.data {
            d.error = Some(message.into());
        }
    }

    pub fn failed(&self) -> bool {
        self.data.as_ref().is_some_and(|d| d.error.is_some())
    }

    /// A child span in the same service.
    pub fn child(&self, name: &str, kind: SpanKind) -> Span {
        self.tracer.span(name, kind, Some(&self.context()))
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some(mut data) = self.data.take() {
            data.end = SystemTime::now();
            self.tracer.record(data);
        }
    }
}

fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    }
}

fn nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
        .to_string()
}

fn attribute(key: &str, value: &Value) -> Value {
    let value = match value {
        Value::Bool(b) => json!({ "boolValue": b }),
        Value::Number(n) if n.is_i64() || n.is_u64() => json!({ "intValue": n.to_string() }),
        Value::Number(n) => json!({ "doubleValue": n.as_f64() }),
        Value::String(s) => json!({ "stringValue": s }),
        other => json!({ "stringValue": other.to_string() }),
    };
    json!({ "key": key, "value": value })
}

/// The OTLP/HTTP JSON request body for a batch of one service's spans.
pub fn otlp_json(service: &str, spans: &[SpanData]) -> Value {
    let spans: Vec<Value> = spans
        .iter()
        .map(|s| {
            let mut span = json!({
                "traceId": s.context.trace_id,
                "spanId": s.context.span_id,
                "name": s.name,
                "kind": s.kind as u8,
                "startTimeUnixNano": nanos(s.start),
                "endTimeUnixNano": nanos(s.end),
                "attributes": s.attributes.iter().map(|(k, v)| attribute(k, v)).collect::<Vec<_>>(),
            });
            if let Some(parent) = &s.parent_span_id {
                span["parentSpanId"] = json!(parent);
            }
            if let Some(message) = &s.error {
                // STATUS_CODE_ERROR
                span["status"] = json!({ "code": 2, "message": message });
            }
            span
        })
        .collect();
    json!({
        "resourceSpans": [{
            "resource": { "attributes": [attribute("service.name", &json!(service))] },
            "scopeSpans": [{ "scope": { "name": "sre-space-demo" }, "spans": spans }]
        }]
    })
}

/// The exporter: batches spans and posts them; a failed post is logged and
/// the batch dropped, since traces must never take a service down.
async fn export(
    service: String,
    url: String,
    http: reqwest::Client,
    mut rx: mpsc::Receiver<Message>,
) {
    let mut batch: Vec<SpanData> = Vec::new();
    let mut failures: u64 = 0;
    // A deadline, not a timeout per message: steady traffic below a full
    // batch must still be sent every FLUSH_EVERY.
    let mut deadline = tokio::time::Instant::now() + FLUSH_EVERY;
    loop {
        let message = tokio::time::timeout_at(deadline, rx.recv()).await;
        let mut flushed = None;
        match message {
            Ok(Some(Message::Span(span))) => {
                batch.push(*span);
                if batch.len() < BATCH {
                    continue;
                }
            }
            Ok(Some(Message::Flush(done))) => flushed = Some(done),
            Ok(None) => {
                send(&http, &url, &service, &mut batch, &mut failures).await;
                return;
            }
            Err(_elapsed) => {}
        }
        send(&http, &url, &service, &mut batch, &mut failures).await;
        deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        if let Some(done) = flushed {
            let _ = done.send(());
        }
    }
}

async fn send(
    http: &reqwest::Client,
    url: &str,
    service: &str,
    batch: &mut Vec<SpanData>,
    failures: &mut u64,
) {
    if batch.is_empty() {
        return;
    }
    let body = otlp_json(service, batch);
    let count = batch.len();
    batch.clear();
    let result = http
        .post(url)
        .timeout(Duration::from_secs(5))
        .json(&body)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status);
    match result {
        Ok(_) => {
            if *failures > 0 {
                tracing::info!(url, "trace export works again");
            }
            *failures = 0;
        }
        Err(error) => {
            *failures += 1;
            // One line per outage streak, not per batch.
            if *failures == 1 || failures.is_power_of_two() {
                tracing::warn!(url, %error, count, failures = *failures, "trace export failed; spans dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips() {
        let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = TraceContext::from_traceparent(v).expect("valid");
        assert_eq!(ctx.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.span_id, "00f067aa0ba902b7");
        assert!(ctx.sampled);
        assert_eq!(ctx.traceparent(), v);
    }

    #[test]
    fn malformed_traceparents_start_a_new_trace() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::from_traceparent(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_child_span_keeps_the_trace_and_points_at_its_parent() {
        let tracer = Tracer::disabled("t");
        let remote = TraceContext::from_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        let server = tracer.span("POST /policies", SpanKind::Server, remote.as_ref());
        let child = server.child("charge_payment", SpanKind::Internal);
        assert_eq!(child.context().trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(child.context().span_id, server.context().span_id);
        assert_eq!(
            child.data.as_ref().and_then(|d| d.parent_span_id.clone()),
            Some(server.context().span_id)
        );
    }

    #[test]
    fn a_failed_span_is_exported_with_status_error_and_its_parent() {
        let tracer = Tracer::disabled("policy-service");
        let root = tracer.span("POST /policies", SpanKind::Server, None);
        let mut span = root.child("charge_payment", SpanKind::Internal);
        span.set("payment.amount_cents", 4200);
        span.fail("declined");
        let data = span.data.clone().expect("live span");
        let body = otlp_json("policy-service", std::slice::from_ref(&data));
        let rs = &body["resourceSpans"][0];
        assert_eq!(
            rs["resource"]["attributes"][0]["value"]["stringValue"],
            "policy-service"
        );
        let s = &rs["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], root.context().trace_id.as_str());
        assert_eq!(s["parentSpanId"], root.context().span_id.as_str());
        assert_eq!(s["kind"], 1);
        assert_eq!(s["status"]["code"], 2);
        assert_eq!(s["status"]["message"], "declined");
        assert_eq!(s["attributes"][0]["value"]["intValue"], "4200");
        // Nanosecond timestamps are strings of digits, as OTLP JSON wants.
        assert!(
            s["startTimeUnixNano"]
                .as_str()
                .is_some_and(|t| t.len() >= 19 && t.bytes().all(|b| b.is_ascii_digit()))
        );
    }

    /// Spans trickling in below a full batch still leave within about
    /// FLUSH_EVERY, without a flush.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn steady_traffic_is_exported_without_waiting_for_a_full_batch() {
        use std::sync::Mutex;
        let got: Arc<Mutex<Vec<String>>> = Arc::default();
        let g = got.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| async move {
                let spans = &body["resourceSpans"][0]["scopeSpans"][0]["spans"];
                for s in spans.as_array().into_iter().flatten() {
                    g.lock()
                        .expect("lock")
                        .push(s["name"].as_str().unwrap_or("").to_owned());
                }
                "{}"
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tracer = Tracer::exporting("t", &format!("http://{addr}"), reqwest::Client::new());
        // One span every 100 ms for 1.5 s: each wait is shorter than
        // FLUSH_EVERY, and the batch never fills.
        for i in 0..15 {
            drop(tracer.span(&format!("op{i}"), SpanKind::Internal, None));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let sent = got.lock().expect("lock").len();
        assert!(
            sent >= 5,
            "only {sent} of 15 spans exported before any flush"
        );
        tracer.flush().await;
        assert_eq!(got.lock().expect("lock").len(), 15);
    }

    #[test]
    fn the_endpoint_gets_the_traces_path_once() {
        assert_eq!(
            traces_url("http://127.0.0.1:14318"),
            "http://127.0.0.1:14318/v1/traces"
        );
        assert_eq!(
            traces_url("http://127.0.0.1:14318/v1/traces"),
            "http://127.0.0.1:14318/v1/traces"
        );
    }
}
