//! Prometheus metrics, `/healthz` and `/readyz`, served on
//! `SRE_SPACE_HTTP_ADDR` (the chart sets `0.0.0.0:8080`; unset, no server).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::crd::Incident;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub r#type: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub system: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IncidentLabels {
    pub phase: String,
    pub category: String,
}

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    pub actions: Family<ActionLabels, Counter>,
    pub guardrail_blocks: Family<ReasonLabels, Counter>,
    pub outside_calls: Family<CallLabels, Counter>,
    pub reconcile_errors: Family<ControllerLabels, Counter>,
    pub reconcile_seconds: Family<ControllerLabels, Histogram>,
    pub time_to_detect: Histogram,
    pub time_to_mitigate: Histogram,
    /// Events the Kafka source has not read yet, by topic.
    pub kafka_lag: Family<TopicLabels, Gauge>,
    /// 1 while the Kafka source reaches its broker.
    pub kafka_available: Gauge,
    incidents: Family<IncidentLabels, Gauge>,
    leader: Gauge,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sre_space");
        let actions = Family::<ActionLabels, Counter>::default();
        let guardrail_blocks = Family::<ReasonLabels, Counter>::default();
        let outside_calls = Family::<CallLabels, Counter>::default();
        let reconcile_errors = Family::<ControllerLabels, Counter>::default();
        let reconcile_seconds = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 14))
        });
        let time_to_detect = Histogram::new(exponential_buckets(0.05, 2.0, 12));
        let time_to_mitigate = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        let incidents = Family::<IncidentLabels, Gauge>::default();
        let leader = Gauge::default();
        let kafka_lag = Family::<TopicLabels, Gauge>::default();
        let kafka_available = Gauge::default();
        registry.register(
            "kafka_consumer_lag",
            "Events on a followed topic that the Kafka source has not read yet",
            kafka_lag.clone(),
        );
        registry.register(
            "kafka_available",
            "1 while the Kafka source reaches its broker",
            kafka_available.clone(),
        );
        registry.register("actions", "Actions by type and result", actions.clone());
        registry.register(
            "guardrail_blocks",
            "Actions held back by a guardrail, by reason",
            guardrail_blocks.clone(),
        );
        registry.register(
            "outside_calls",
            "Calls to GitHub and the model, by result",
            outside_calls.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by controller",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration, by controller",
            reconcile_seconds.clone(),
        );
        registry.register(
            "time_to_detect_seconds",
            "From a signal's observation to its incident",
            time_to_detect.clone(),
        );
        registry.register(
            "time_to_mitigate_seconds",
            "From detection to resolution",
            time_to_mitigate.clone(),
        );
        registry.register(
            "incidents",
            "Incidents by phase and category",
            incidents.clone(),
        );
        registry.register("leader", "1 when this replica leads", leader.clone());
        Self {
            registry,
            actions,
            guardrail_blocks,
            outside_calls,
            reconcile_errors,
            reconcile_seconds,
            time_to_detect,
            time_to_mitigate,
            kafka_lag,
            kafka_available,
            incidents,
            leader,
            ready: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    fn encode(&self, incidents: &[Arc<Incident>]) -> String {
        self.incidents.clear();
        for i in incidents {
            let s = i.status.clone().unwrap_or_default();
            let labels = IncidentLabels {
                phase: format!("{:?}", s.phase),
                category: s
                    .diagnosis
                    .map(|d| format!("{:?}", d.category))
                    .unwrap_or_else(|| "None".into()),
            };
            self.incidents.get_or_create(&labels).inc();
        }
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// What the HTTP server reads.
pub struct Served {
    pub metrics: Arc<Metrics>,
    pub incidents: kube::runtime::reflector::Store<Incident>,
}

async fn metrics(State(s): State<Arc<Served>>) -> impl IntoResponse {
    let body = s.metrics.encode(&s.incidents.state());
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

async fn ready(State(s): State<Arc<Served>>) -> impl IntoResponse {
    if s.metrics.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

/// Serves until the process ends.
pub async fn serve(addr: String, served: Arc<Served>) -> crate::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(served);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| crate::Error::Config(format!("SRE_SPACE_HTTP_ADDR={addr}: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the metrics server stopped");
        }
    });
    Ok(())
}
