#![cfg(feature = "cluster")]
//! The Metric trigger against the harness's real Prometheus and the real
//! API server: the test serves its own /metrics with a gauge it controls,
//! registers it as a scrape target labelled with its namespace and a kwok
//! Deployment, and a policy's Metric trigger on that gauge opens an
//! Incident, restarts the Deployment, and resolves when the gauge goes
//! back. The same gauge, labelled with another namespace, stays high all
//! along and never counts. A counter of orders, judged by the sequential
//! detector, opens an Incident seconds after it stops.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::PostParams;
use sre_space::crd::{
    ActionType, Category, ConditionStatus, EvidenceKind, Incident, Phase, RemediationPolicy,
    SignalKind,
};
use sre_space_e2e::{
    Operator, TestNamespace, client, create_policy, deployment, incident_of, install_crds,
    serve_on_loopback, unique, wait_incident, wait_ready, wait_resolved, wait_until,
};

const LONG: Duration = Duration::from_secs(120);

fn prometheus() -> String {
    std::env::var("SRE_SPACE_PROMETHEUS_URL").unwrap_or_else(|_| "http://127.0.0.1:19490".into())
}

/// A gauge the test sets, served as Prometheus's text format.
#[derive(Clone)]
struct Gauge {
    name: String,
    value: Arc<AtomicU64>,
}

impl Gauge {
    fn new(name: &str, value: f64) -> Self {
        Self {
            name: name.into(),
            value: Arc::new(AtomicU64::new(value.to_bits())),
        }
    }

    fn set(&self, value: f64) {
        self.value.store(value.to_bits(), Ordering::SeqCst);
    }

    /// Serves /metrics on a loopback port; returns `127.0.0.1:PORT`.
    async fn serve(&self) -> String {
        let gauge = self.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let g = gauge.clone();
                async move {
                    let v = f64::from_bits(g.value.load(Ordering::SeqCst));
                    format!("# TYPE {0} gauge\n{0} {v}\n", g.name)
                }
            }),
        );
        serve_on_loopback(app).await.to_string()
    }
}

/// A file_sd file in the harness's targets folder, removed when dropped.
struct ScrapeTargets(PathBuf);

impl ScrapeTargets {
    /// Registers `(address, namespace, deployment)` scrape targets.
    fn register(name: &str, targets: &[(&str, &str, &str)]) -> Result<Self> {
        let dir = std::env::var("SRE_SPACE_PROMETHEUS_TARGETS_DIR")
            .context("SRE_SPACE_PROMETHEUS_TARGETS_DIR (cluster.sh env) names no folder")?;
        let entries: Vec<serde_json::Value> = targets
            .iter()
            .map(|(addr, ns, deployment)| {
                serde_json::json!({
                    "targets": [addr],
                    "labels": { "namespace": ns, "deployment": deployment },
                })
            })
            .collect();
        let path = PathBuf::from(dir).join(format!("{name}.json"));
        // Written whole, then renamed: Prometheus never reads half a file.
        let partial = path.with_extension("json.partial");
        std::fs::write(&partial, serde_json::to_vec(&entries)?)?;
        std::fs::rename(&partial, &path)?;
        Ok(Self(path))
    }
}

impl Drop for ScrapeTargets {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The value Prometheus has for `query`'s first series, if any.
async fn value_of(http: &reqwest::Client, query: &str) -> Result<Option<f64>> {
    let url = reqwest::Url::parse_with_params(
        &format!("{}/api/v1/query", prometheus()),
        [("query", query)],
    )?;
    let answer: serde_json::Value = http.get(url).send().await?.json().await?;
    Ok(answer["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gauge_above_its_threshold_opens_an_incident_restarts_the_deployment_and_resolves_when_it_falls()
-> Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-metrics").await?;
    let ns_name = ns.name.clone();
    let run = unique().replace('-', "_");
    let metric = format!("sre_space_e2e_queue_depth_{run}");

    Api::<Deployment>::namespaced(client.clone(), &ns_name)
        .create(&PostParams::default(), &deployment("web", 1, "64Mi"))
        .await?;
    wait_ready(&client, &ns_name, "web", 1, LONG).await?;

    let ours = Gauge::new(&metric, 1.0);
    let theirs = Gauge::new(&metric, 500.0);
    let (ours_addr, theirs_addr) = (ours.serve().await, theirs.serve().await);
    let elsewhere = format!("elsewhere-{run}");
    let _targets = ScrapeTargets::register(
        &format!("e2e-metrics-{run}"),
        &[
            (&ours_addr, &ns_name, "web"),
            // Another namespace's web, far above the threshold all along.
            (&theirs_addr, &elsewhere, "web"),
        ],
    )?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let ours_query = format!("{metric}{{namespace=\"{ns_name}\"}}");
    wait_until(LONG, "Prometheus scrapes the test's gauge", || async {
        Ok(value_of(&http, &ours_query).await? == Some(1.0))
    })
    .await?;

    let query = format!("max by (namespace, deployment) ({metric})");
    create_policy(&client, &ns_name, |p| {
        p["metadata"]["name"] = "metrics".into();
        p["spec"]["mode"] = "Automatic".into();
        p["spec"]["triggers"] = serde_json::json!([{
            "type": "Metric",
            "metric": {
                "query": query,
                "comparison": "GreaterThan",
                "threshold": 100,
                "forSeconds": 3,
                "intervalSeconds": 5,
                "workloadLabel": "deployment",
                "category": "Latency",
            }
        }]);
        p["spec"]["actions"] = serde_json::json!([
            { "type": "RolloutRestart", "onCategories": ["Latency"] },
            { "type": "Escalate" }
        ]);
        p["spec"]["guardrails"]["cooldownSeconds"] = 5.into();
        p["spec"]["guardrails"]["verificationWindowSeconds"] = 15.into();
    })
    .await?;
    let operator =
        Operator::start(&ns_name, &[("SRE_SPACE_PROMETHEUS_URL", &prometheus())]).await?;

    // The policy says its queries answer; the other namespace's 500 opened
    // nothing here.
    let policies: Api<RemediationPolicy> = Api::namespaced(client.clone(), &ns_name);
    wait_until(LONG, "MetricsAvailable=True on the policy", || async {
        let p = policies.get("metrics").await?;
        Ok(p.status.iter().flat_map(|s| &s.conditions).any(|c| {
            c.type_ == "MetricsAvailable"
                && c.status == ConditionStatus::True
                && c.reason == "PrometheusAnswering"
        }))
    })
    .await
    .with_context(|| format!("operator log:\n{}", operator.output()))?;
    let name = incident_of("web", SignalKind::Metric);
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns_name);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        incidents.get_opt(&name).await?.is_none(),
        "another namespace's series opened an incident here"
    );

    ours.set(250.0);
    let restarted = wait_incident(
        &client,
        &ns_name,
        &name,
        LONG,
        "a RolloutRestart taken",
        |i: &Incident| {
            i.status.as_ref().is_some_and(|s| {
                s.actions
                    .iter()
                    .any(|a| a.type_ == ActionType::RolloutRestart)
            })
        },
    )
    .await
    .with_context(|| format!("operator log:\n{}", operator.output()))?;
    let status = restarted.status.clone().unwrap_or_default();
    let signal = status.last_signal.clone().context("the signal")?;
    assert!(
        signal.message.contains("value 250 > 100") && signal.message.contains(&query),
        "the signal cites value, threshold and query: {}",
        signal.message
    );
    let d = status.diagnosis.context("a diagnosis")?;
    assert_eq!(d.category, Category::Latency, "{}", d.root_cause);
    let series = d
        .evidence
        .iter()
        .find(|e| e.kind == EvidenceKind::Metric)
        .context("the series is evidence")?;
    assert!(
        series.summary.contains("/graph?g0.expr="),
        "a graph link: {}",
        series.summary
    );

    // The gauge falls: the same query says the fix holds.
    ours.set(2.0);
    let resolved = wait_resolved(&client, &ns_name, &name, LONG)
        .await
        .with_context(|| format!("operator log:\n{}", operator.output()))?;
    assert_eq!(
        resolved.status.map(|s| s.phase),
        Some(Phase::Resolved),
        "resolved while the other namespace's series stays at 500"
    );
    drop(operator);
    ns.cleanup().await?;
    Ok(())
}

/// A counter the test drives at a rate it sets, served as Prometheus's text
/// format: a business event count such as orders.
#[derive(Clone)]
struct Counter {
    name: String,
    count: Arc<AtomicU64>,
    per_tick: Arc<AtomicU64>,
}

impl Counter {
    /// Starts counting `per_second` events a second (in tenths of a second).
    fn start(name: &str, per_second: u64) -> Self {
        let c = Self {
            name: name.into(),
            count: Arc::new(AtomicU64::new(0)),
            per_tick: Arc::new(AtomicU64::new(per_second / 10)),
        };
        let (count, per_tick) = (c.count.clone(), c.per_tick.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                count.fetch_add(per_tick.load(Ordering::SeqCst), Ordering::SeqCst);
            }
        });
        c
    }

    fn stop(&self) {
        self.per_tick.store(0, Ordering::SeqCst);
    }

    async fn serve(&self) -> String {
        let counter = self.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let c = counter.clone();
                async move {
                    let v = c.count.load(Ordering::SeqCst);
                    format!("# TYPE {0} counter\n{0} {v}\n", c.name)
                }
            }),
        );
        serve_on_loopback(app).await.to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequential_metric_trigger_opens_an_incident_seconds_after_an_event_rate_stops()
-> Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-metric-seq").await?;
    let ns_name = ns.name.clone();
    let run = unique().replace('-', "_");
    let metric = format!("sre_space_e2e_orders_total_{run}");

    Api::<Deployment>::namespaced(client.clone(), &ns_name)
        .create(&PostParams::default(), &deployment("orders", 1, "64Mi"))
        .await?;
    wait_ready(&client, &ns_name, "orders", 1, LONG).await?;

    // 40 orders a second.
    let orders = Counter::start(&metric, 40);
    let addr = orders.serve().await;
    let _targets = ScrapeTargets::register(
        &format!("e2e-metric-seq-{run}"),
        &[(&addr, &ns_name, "orders")],
    )?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let query = format!("sum by (namespace, deployment) (rate({metric}[5s]))");
    wait_until(LONG, "Prometheus has the order rate", || async {
        Ok(value_of(&http, &query).await?.is_some_and(|v| v > 20.0))
    })
    .await?;

    let trigger = |comparison: &str| {
        serde_json::json!([{
            "type": "Metric",
            "metric": {
                "query": query,
                "comparison": comparison,
                // A floor that could not fire within this test.
                "threshold": 0.5,
                "forSeconds": 900,
                "intervalSeconds": 5,
                "workloadLabel": "deployment",
                "detector": { "type": "Sequential", "falseAlarmsPerDay": 1, "halfLifeSeconds": 20 },
            }
        }])
    };
    // The detector watches for drops: a rise is refused by the API server,
    // with the field to fix.
    let refused = create_policy(&client, &ns_name, |p| {
        p["metadata"]["name"] = "rises".into();
        p["spec"]["triggers"] = trigger("GreaterThan");
    })
    .await;
    let said = format!("{:#}", refused.err().context("a rise is refused")?);
    assert!(
        said.contains("the Sequential detector watches for drops"),
        "{said}"
    );

    create_policy(&client, &ns_name, |p| {
        p["metadata"]["name"] = "orders".into();
        p["spec"]["mode"] = "DryRun".into();
        p["spec"]["triggers"] = trigger("LessThan");
    })
    .await?;
    let operator =
        Operator::start(&ns_name, &[("SRE_SPACE_PROMETHEUS_URL", &prometheus())]).await?;

    // A minute of steady orders: learned, and nothing opened.
    let name = incident_of("orders", SignalKind::Metric);
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns_name);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        incidents.get_opt(&name).await?.is_none(),
        "steady traffic opened an incident; operator log:\n{}",
        operator.output()
    );

    // Orders stop: the detector fires within a few evaluations, long before
    // the floor's 900 s.
    let stopped = std::time::Instant::now();
    orders.stop();
    wait_until(
        Duration::from_secs(60),
        "an incident for the stopped orders",
        || async { Ok(incidents.get_opt(&name).await?.is_some()) },
    )
    .await
    .with_context(|| format!("operator log:\n{}", operator.output()))?;
    let after = stopped.elapsed();
    let opened = wait_incident(
        &client,
        &ns_name,
        &name,
        LONG,
        "the incident's signal",
        |i: &Incident| i.status.as_ref().is_some_and(|s| s.last_signal.is_some()),
    )
    .await?;
    println!(
        "orders stopped → incident: {:.1} s (5 s rate range, 5 s evaluations)",
        after.as_secs_f64()
    );
    assert!(after < Duration::from_secs(30), "{after:?}");
    let signal = opened
        .status
        .and_then(|s| s.last_signal)
        .context("the signal")?;
    // Which chart leads (the policy's 50% or the near-stop 90% beside it)
    // depends on how much of the stop the evaluation's range held.
    for cited in [
        "sequential detector (",
        "% drop): the rate: a drop;",
        &metric,
    ] {
        assert!(
            signal.message.contains(cited),
            "{cited} in {}",
            signal.message
        );
    }
    drop(operator);
    ns.cleanup().await?;
    Ok(())
}
