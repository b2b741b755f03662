//! The business events on Kafka (`quote_requested`, `policy_purchased`),
//! each carrying the trace context of the request that caused it in a
//! `traceparent` message header, so a consumer can continue the trace.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, ClientContext};

use crate::telemetry::{TRACEPARENT, TraceContext};

/// How long a publish may wait for the broker's acknowledgement.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("no Kafka broker configured (KAFKA_BOOTSTRAP is unset)")]
    NotConfigured,
    #[error("the broker did not take the event: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("encoding the event: {0}")]
    Encode(#[from] serde_json::Error),
}

/// librdkafka reports a broker that is away on every reconnection attempt
/// (several a second); one log line per interval says the same.
#[derive(Default)]
pub struct QuietContext {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl ClientContext for QuietContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if last.is_some_and(|t| t.elapsed() < ERROR_LOG_INTERVAL) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(Instant::now());
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::error!(%error, reason, suppressed, "Kafka client error");
    }
}

/// The producer of one service, and whether the broker answers.
#[derive(Clone)]
pub struct Events {
    producer: Option<FutureProducer<QuietContext>>,
    connected: Arc<AtomicBool>,
}

impl Events {
    /// No broker: publishing fails, and the service never reports ready if
    /// it needs one.
    pub fn none() -> Self {
        Self {
            producer: None,
            connected: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A producer for `bootstrap`, and a task that keeps checking the broker
    /// answers (for `/readyz`). Must be called inside a Tokio runtime.
    pub fn connect(bootstrap: &str, client_id: &str) -> Result<Self, rdkafka::error::KafkaError> {
        let producer: FutureProducer<QuietContext> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("client.id", client_id)
            .set("acks", "all")
            // One event per sale even when a send is retried.
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "5000")
            .create_with_context(QuietContext::default())?;
        let events = Self {
            producer: Some(producer.clone()),
            connected: Arc::new(AtomicBool::new(false)),
        };
        let connected = events.connected.clone();
        tokio::spawn(async move {
            loop {
                let p = producer.clone();
                let ok = tokio::task::spawn_blocking(move || {
                    p.client()
                        .fetch_metadata(None, Duration::from_secs(3))
                        .is_ok()
                })
                .await
                .unwrap_or(false);
                let was = connected.swap(ok, Ordering::Relaxed);
                if was != ok {
                    if ok {
                        tracing::info!("Kafka broker reachable");
                    } else {
                        tracing::warn!("Kafka broker unreachable");
                    }
                }
                tokio::time::sleep(Duration::from_secs(if ok { 5 } else { 1 })).await;
            }
        });
        Ok(events)
    }

    pub fn configured(&self) -> bool {
        self.producer.is_some()
    }

    /// Whether the broker answered the last metadata request.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Writes one event (JSON) keyed by `key`, and waits for the broker.
    pub async fn publish(
        &self,
        topic: &str,
        key: &str,
        event: &impl serde::Serialize,
        trace: &TraceContext,
    ) -> Result<(), PublishError> {
        let producer = self.producer.as_ref().ok_or(PublishError::NotConfigured)?;
        let payload = serde_json::to_vec(event)?;
        let record = FutureRecord::to(topic)
            .key(key)
            .payload(&payload)
            .headers(trace_headers(trace));
        producer
            .send(record, DELIVERY_TIMEOUT)
            .await
            .map_err(|(e, _)| PublishError::Kafka(e))?;
        Ok(())
    }
}

/// The message headers that carry `trace` to a consumer.
pub fn trace_headers(trace: &TraceContext) -> OwnedHeaders {
    OwnedHeaders::new().insert(Header {
        key: TRACEPARENT,
        value: Some(&trace.traceparent()),
    })
}

/// The trace context a message carries, if any.
pub fn trace_of(headers: &impl Headers) -> Option<TraceContext> {
    headers.iter().find_map(|h| {
        (h.key == TRACEPARENT)
            .then_some(h.value)
            .flatten()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(TraceContext::from_traceparent)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{SpanKind, Tracer};

    #[test]
    fn the_message_headers_carry_the_producing_span() {
        let tracer = Tracer::disabled("policy-service");
        let server = tracer.span("POST /policies", SpanKind::Server, None);
        let publish = server.child("publish policy_purchased", SpanKind::Producer);
        let headers = trace_headers(&publish.context());
        let carried = trace_of(&headers).expect("a traceparent header");
        assert_eq!(carried, publish.context());
        assert_eq!(carried.trace_id, server.context().trace_id);
        assert_eq!(headers.count(), 1);
        assert_eq!(headers.get(0).key, "traceparent");
    }

    #[test]
    fn a_message_without_trace_context_has_none() {
        let headers = OwnedHeaders::new().insert(Header {
            key: "traceparent",
            value: Some("garbage"),
        });
        assert_eq!(trace_of(&headers), None);
        assert_eq!(trace_of(&OwnedHeaders::new()), None);
    }

    #[tokio::test]
    async fn publishing_without_a_broker_says_so() {
        let events = Events::none();
        let err = events
            .publish(
                "t",
                "k",
                &serde_json::json!({}),
                &Tracer::disabled("s")
                    .span("x", SpanKind::Internal, None)
                    .context(),
            )
            .await
            .expect_err("no broker");
        assert!(err.to_string().contains("KAFKA_BOOTSTRAP"), "{err}");
    }
}
