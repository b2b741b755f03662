#![cfg(feature = "cluster")]
//! The harness's real Prometheus and Alertmanager (`e2e/cluster/signals.sh`,
//! docs/prometheus.md), without Kubernetes: a service in this test is
//! registered by file_sd and scraped; when it answers too many requests with
//! 5xx, the repository's rule `DemoServiceErrorRate` fires, and Alertmanager
//! posts the alert to a webhook receiver in this test, then posts it
//! resolved once the service is healthy again. The times are printed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use serde_json::Value;
use sre_space_e2e::prometheus::{Alertmanager, Prometheus};
use sre_space_e2e::{serve_on_loopback, unique};

/// A service's request counts, as the demo services count them.
#[derive(Default)]
struct Service {
    ok: AtomicU64,
    errors: AtomicU64,
    failing: AtomicBool,
}

impl Service {
    /// Ten requests a second; while failing, every other one is a 502.
    fn start_traffic(self: &Arc<Self>) {
        let service = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut n = 0u64;
            loop {
                tick.tick().await;
                n = n.wrapping_add(1);
                if service.failing.load(Ordering::Relaxed) && n.is_multiple_of(2) {
                    service.errors.fetch_add(1, Ordering::Relaxed);
                } else {
                    service.ok.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
}

async fn metrics(State(service): State<Arc<Service>>) -> impl axum::response::IntoResponse {
    let ok = service.ok.load(Ordering::Relaxed);
    let errors = service.errors.load(Ordering::Relaxed);
    let text = format!(
        "# HELP http_requests_total HTTP requests answered, by route, method and status.\n\
         # TYPE http_requests_total counter\n\
         http_requests_total{{route=\"/api/purchase\",method=\"POST\",status=\"201\"}} {ok}\n\
         http_requests_total{{route=\"/api/purchase\",method=\"POST\",status=\"502\"}} {errors}\n"
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// A webhook receiver as an operator would run one: it keeps the payloads
/// that carry the right bearer token and refuses the others.
#[derive(Default)]
struct Receiver {
    token: String,
    payloads: Mutex<Vec<Value>>,
    refused: AtomicU64,
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    axum::Json(payload): axum::Json<Value>,
) -> StatusCode {
    let expected = format!("Bearer {}", receiver.token);
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if given != Some(expected.as_str()) {
        receiver.refused.fetch_add(1, Ordering::Relaxed);
        return StatusCode::UNAUTHORIZED;
    }
    if let Ok(mut payloads) = receiver.payloads.lock() {
        payloads.push(payload);
    }
    StatusCode::OK
}

impl Receiver {
    /// Waits for a payload about `namespace` with `status` and returns it.
    async fn wait_for(&self, namespace: &str, status: &str, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .payloads
                .lock()
                .map_err(|_| anyhow::anyhow!("receiver lock poisoned"))?
                .iter()
                .find(|p| p["commonLabels"]["namespace"] == namespace && p["status"] == status)
                .cloned();
            if let Some(payload) = found {
                return Ok(payload);
            }
            if Instant::now() >= deadline {
                let seen = self.payloads.lock().map(|p| p.len()).unwrap_or_default();
                bail!(
                    "no {status} webhook about namespace {namespace} within {timeout:?} ({seen} payloads \
                     received, {} refused)",
                    self.refused.load(Ordering::Relaxed)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_with_many_errors_fires_the_demo_alert_through_alertmanager_and_resolves()
-> Result<()> {
    let prometheus = Prometheus::from_env()?;
    let alertmanager = Alertmanager::from_env()?;
    let namespace = format!("e2e-prom-{}", unique());

    // The receiver, and Alertmanager's webhook pointed at it for this test.
    let receiver = Arc::new(Receiver {
        token: alertmanager.token()?,
        ..Receiver::default()
    });
    let receiver_addr = serve_on_loopback(
        Router::new()
            .route("/webhooks/alertmanager", post(receive))
            .with_state(receiver.clone()),
    )
    .await;
    let _webhook = alertmanager
        .point_webhook_at(
            &format!("http://{receiver_addr}/webhooks/alertmanager"),
            None,
        )
        .await?;

    // The service, registered as the demo services are: by a file_sd file
    // whose labels name its namespace and Deployment.
    let service = Arc::new(Service::default());
    service.start_traffic();
    let addr = serve_on_loopback(
        Router::new()
            .route("/metrics", get(metrics))
            .with_state(service.clone()),
    )
    .await
    .to_string();
    let started = Instant::now();
    let _target = prometheus.register_target(
        &namespace,
        &addr,
        &[
            ("namespace", namespace.as_str()),
            ("deployment", "checkout"),
        ],
    )?;
    let up = prometheus
        .wait_for_target_up(&addr, Duration::from_secs(30))
        .await?;
    println!("target registered -> scraped (up == 1): {up:?}");
    let series = prometheus
        .query(&format!(
            "http_requests_total{{namespace=\"{namespace}\",deployment=\"checkout\"}}"
        ))
        .await?;
    assert_eq!(series.len(), 2, "both statuses scraped: {series:?}");

    // Half the requests fail: the rule fires after its 5 s `for`, and
    // Alertmanager posts the alert to the receiver.
    let failing = Instant::now();
    service.failing.store(true, Ordering::Relaxed);
    let firing = receiver
        .wait_for(&namespace, "firing", Duration::from_secs(60))
        .await?;
    let fired_after = failing.elapsed();
    println!("errors start -> firing webhook received: {fired_after:?}");
    assert_eq!(firing["version"], "4", "{firing:#}");
    assert_eq!(firing["receiver"], "sre-space", "{firing:#}");
    let alert = firing["alerts"]
        .as_array()
        .and_then(|a| a.first())
        .context("an alert in the payload")?;
    assert_eq!(alert["status"], "firing", "{firing:#}");
    assert_eq!(alert["labels"]["alertname"], "DemoServiceErrorRate");
    assert_eq!(alert["labels"]["namespace"], namespace.as_str());
    assert_eq!(alert["labels"]["deployment"], "checkout");
    assert_eq!(alert["labels"]["severity"], "warning");
    let summary = alert["annotations"]["summary"].as_str().unwrap_or_default();
    assert!(summary.starts_with("checkout answers "), "{summary}");
    let generator = alert["generatorURL"].as_str().unwrap_or_default();
    assert!(
        generator.starts_with(&format!("{}/graph?", prometheus.url())),
        "a link to the rule's query in this Prometheus: {generator}"
    );
    assert!(alert["fingerprint"].as_str().is_some_and(|f| !f.is_empty()));
    assert_eq!(firing["groupLabels"]["alertname"], "DemoServiceErrorRate");
    assert_eq!(firing["commonLabels"]["deployment"], "checkout");
    let active = alertmanager.active_alerts().await?;
    assert!(
        active
            .iter()
            .any(|a| a["labels"]["namespace"] == namespace.as_str()),
        "Alertmanager lists the alert as active: {active:#?}"
    );

    // Healthy again: once the errors fall below a fifth of the last 30 s of
    // requests, the alert resolves and Alertmanager says so.
    let healed = Instant::now();
    service.failing.store(false, Ordering::Relaxed);
    let resolved = receiver
        .wait_for(&namespace, "resolved", Duration::from_secs(90))
        .await?;
    println!(
        "errors stop -> resolved webhook received: {:?} (the rule's 30 s window must drain first)",
        healed.elapsed()
    );
    let alert = &resolved["alerts"][0];
    assert_eq!(alert["status"], "resolved", "{resolved:#}");
    assert_eq!(alert["labels"]["alertname"], "DemoServiceErrorRate");
    assert!(
        alert["endsAt"]
            .as_str()
            .is_some_and(|e| !e.starts_with("0001")),
        "a resolved alert has its end time: {resolved:#}"
    );
    assert_eq!(receiver.refused.load(Ordering::Relaxed), 0);
    println!("whole story: {:?}", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_file_is_loaded_on_reload_and_gone_when_its_guard_drops() -> Result<()> {
    let prometheus = Prometheus::from_env()?;
    let name = format!("HarnessRuleCheck{}", unique().replace('-', ""));
    let rules = format!(
        "groups:\n  - name: {name}\n    rules:\n      - alert: {name}\n        expr: vector(1)\n        labels:\n          severity: none\n"
    );
    let loaded = Instant::now();
    let guard = prometheus.write_rule_file(&name, &rules).await?;
    let state = prometheus.alerting_rules().await?;
    assert!(state.contains_key(&name), "loaded on reload: {state:?}");
    assert!(
        state.contains_key("DemoServiceErrorRate"),
        "the repository's rule stays: {state:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while prometheus
        .query(&format!(
            "ALERTS{{alertname=\"{name}\",alertstate=\"firing\"}}"
        ))
        .await?
        .is_empty()
    {
        if Instant::now() >= deadline {
            bail!("{name} did not fire within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("rule file written -> alert firing: {:?}", loaded.elapsed());

    drop(guard);
    let state = prometheus.alerting_rules().await?;
    assert!(!state.contains_key(&name), "removed: {state:?}");

    // A file Prometheus refuses is not left behind to break later reloads.
    let refused = prometheus
        .write_rule_file(
            "harness-broken",
            "groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: \"rate(\"\n",
        )
        .await;
    assert!(refused.is_err(), "a broken rule file is refused");
    prometheus.reload().await?;
    Ok(())
}
