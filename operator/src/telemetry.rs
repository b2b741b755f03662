//! Prometheus metrics, `/healthz` and `/readyz`, and the Alertmanager
//! webhook, served on `SRE_SPACE_HTTP_ADDR` (the chart sets
//! `0.0.0.0:8080`; unset, no server).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::clock::Clock;
use crate::config::Config;
use crate::crd::{Incident, RemediationPolicy};

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

/// A notification's fate: `sent`, `failed` (an attempt; it is retried),
/// `abandoned` (no more attempts) or `dropped` (the queue was full).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    pub sink: String,
    pub result: String,
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
    /// Notifications by sink and result.
    pub notifications: Family<NotificationLabels, Counter>,
    incidents: Family<IncidentLabels, Gauge>,
    leader: Gauge,
    /// When this replica last finished a reconcile (or began to lead), Unix
    /// seconds: with policies to recheck every 30 s, a leader whose stamp
    /// grows old has a stalled loop.
    last_reconcile: Gauge,
    /// 1 while the operator took its limit of actions in the breaker's
    /// window: automatic actions are paused.
    breaker_open: Gauge,
    breaker_window_actions: Gauge,
    policies: Gauge,
    /// The readable policies, once this replica leads and watches them.
    policy_store: OnceLock<Store<RemediationPolicy>>,
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
        let last_reconcile = Gauge::default();
        let breaker_open = Gauge::default();
        let breaker_window_actions = Gauge::default();
        let policies = Gauge::default();
        let kafka_lag = Family::<TopicLabels, Gauge>::default();
        let kafka_available = Gauge::default();
        let notifications = Family::<NotificationLabels, Counter>::default();
        registry.register(
            "notifications",
            "Notifications by sink and result (sent, failed, abandoned, dropped)",
            notifications.clone(),
        );
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
            "From detection to mitigation (status.mitigatedAt) of resolved incidents",
            time_to_mitigate.clone(),
        );
        registry.register(
            "incidents",
            "Incidents by phase and category",
            incidents.clone(),
        );
        registry.register("leader", "1 when this replica leads", leader.clone());
        registry.register(
            "last_reconcile_timestamp_seconds",
            "When this replica last finished a reconcile or began to lead, Unix seconds",
            last_reconcile.clone(),
        );
        registry.register(
            "circuit_breaker_open",
            "1 while the global circuit breaker pauses automatic actions (the leader's view)",
            breaker_open.clone(),
        );
        registry.register(
            "circuit_breaker_window_actions",
            "Actions taken in the circuit breaker's window (the leader's view)",
            breaker_window_actions.clone(),
        );
        registry.register(
            "policies",
            "RemediationPolicies the leader reads (0 on a standby)",
            policies.clone(),
        );
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
            notifications,
            incidents,
            leader,
            last_reconcile,
            breaker_open,
            breaker_window_actions,
            policies,
            policy_store: OnceLock::new(),
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

    /// A reconcile finished (or leading began) at `at`.
    pub fn reconciled(&self, at: Timestamp) {
        self.last_reconcile.set(at.as_second());
    }

    /// Counts the policies of this store from now on (the leader's).
    pub fn count_policies(&self, store: Store<RemediationPolicy>) {
        let _ = self.policy_store.set(store);
    }

    /// The metrics as of `now`; the gauges of the stores (incidents,
    /// policies, the circuit breaker) are computed here, so they are never
    /// staler than the scrape. The breaker closes by time passing, with no
    /// event to update it on.
    fn encode(&self, incidents: &[Arc<Incident>], config: &Config, now: Timestamp) -> String {
        let actions = crate::fixer::budget::breaker_window_actions(incidents, config, now);
        self.breaker_window_actions
            .set(i64::try_from(actions).unwrap_or(i64::MAX));
        self.breaker_open
            .set(i64::from(actions >= config.breaker_limit));
        let policies = self.policy_store.get().map_or(0, |s| s.state().len());
        self.policies
            .set(i64::try_from(policies).unwrap_or(i64::MAX));
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
    pub incidents: Store<Incident>,
    /// The circuit breaker's limit and window.
    pub config: Config,
    pub clock: Arc<dyn Clock>,
    /// The Alertmanager webhook, served on the same address.
    pub alerts: Arc<crate::scout::sources::alerts::Receiver>,
}

async fn metrics(State(s): State<Arc<Served>>) -> impl IntoResponse {
    let body = s
        .metrics
        .encode(&s.incidents.state(), &s.config, s.clock.now());
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
    let alerts = crate::scout::sources::alerts::http::router(served.alerts.clone());
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(served)
        .merge(alerts);
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::crd::{ActionState, ActionType, Mode, Phase};
    use crate::testing::{self, record};

    /// The value of an unlabelled metric in the text a scrape returns.
    fn value(text: &str, name: &str) -> Option<i64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// Two incidents with one action taken each, two minutes before `now()`.
    fn two_actions() -> Vec<Arc<Incident>> {
        ["a", "b"]
            .map(|name| {
                let mut i = testing::incident(
                    Phase::Verifying,
                    vec![record(1, ActionType::RestartPod, ActionState::Succeeded)],
                );
                i.metadata.name = Some(name.into());
                Arc::new(i)
            })
            .into()
    }

    #[test]
    fn the_breaker_is_open_while_its_limit_of_actions_is_in_the_window_and_closes_after() {
        let metrics = Metrics::default();
        let config = Config {
            breaker_limit: 2,
            breaker_window: Duration::from_secs(600),
            ..Config::default()
        };
        let text = metrics.encode(&two_actions(), &config, testing::now());
        assert_eq!(value(&text, "sre_space_circuit_breaker_open"), Some(1));
        assert_eq!(
            value(&text, "sre_space_circuit_breaker_window_actions"),
            Some(2)
        );

        // The same actions, once the window has passed them: closed again,
        // with no event in between.
        let later = testing::now() + k8s_openapi::jiff::SignedDuration::from_mins(9);
        let text = metrics.encode(&two_actions(), &config, later);
        assert_eq!(value(&text, "sre_space_circuit_breaker_open"), Some(0));
        assert_eq!(
            value(&text, "sre_space_circuit_breaker_window_actions"),
            Some(0)
        );

        // One action short of the limit is not open.
        let roomy = Config {
            breaker_limit: 3,
            ..config
        };
        let text = metrics.encode(&two_actions(), &roomy, testing::now());
        assert_eq!(value(&text, "sre_space_circuit_breaker_open"), Some(0));
    }

    #[test]
    fn a_scrape_says_when_the_loop_last_reconciled_and_how_many_policies_the_leader_reads() {
        let metrics = Metrics::default();
        let config = Config::default();
        let text = metrics.encode(&[], &config, testing::now());
        assert_eq!(
            value(&text, "sre_space_policies"),
            Some(0),
            "a standby reads no policies"
        );
        assert_eq!(
            value(&text, "sre_space_last_reconcile_timestamp_seconds"),
            Some(0)
        );

        metrics.count_policies(testing::store(vec![testing::policy(Mode::Automatic)]));
        metrics.reconciled(testing::now());
        let text = metrics.encode(&[], &config, testing::now());
        assert_eq!(value(&text, "sre_space_policies"), Some(1));
        assert_eq!(
            value(&text, "sre_space_last_reconcile_timestamp_seconds"),
            Some(testing::now().as_second())
        );
    }
}
