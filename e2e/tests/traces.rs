#![cfg(feature = "cluster")]
//! Trace triggers and trace diagnosis against the harness's real Jaeger and
//! the real API server: requests enter at a frontend, pass through
//! policy-service and fail two hops deep in user-service; the operator's
//! TraceErrorRate trigger on policy-service opens an Incident, and its
//! diagnosis names user-service's failing operation, citing traces Jaeger
//! holds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::PostParams;
use kube::{Api, Client};
use sre_space::crd::{
    Category, ConditionStatus, EvidenceKind, Incident, RemediationPolicy, SignalKind, WorkloadKind,
    WorkloadRef,
};
use sre_space::workload::incident_name;
use sre_space_e2e::{
    Operator, TestNamespace, client, create_policy, deployment, install_crds, wait_incident,
    wait_ready, wait_until,
};

const LONG: Duration = Duration::from_secs(90);

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

fn otlp() -> String {
    env_or("SRE_SPACE_OTLP_HTTP", "http://127.0.0.1:14318")
}

fn jaeger() -> String {
    env_or("SRE_SPACE_JAEGER_QUERY", "http://127.0.0.1:16686")
}

fn http() -> Result<reqwest::Client> {
    // The workspace's reqwest has no crypto provider of its own; installing
    // one again is a no-op.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?)
}

fn nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// One request of the simulated traffic.
#[derive(Clone, Copy)]
struct Request {
    /// How long before now it ended.
    ago: Duration,
    fail: bool,
    slow_ms: u128,
}

/// The three services of one run, named uniquely so that runs sharing the
/// Jaeger do not see each other's spans.
struct Shop {
    id: String,
    frontend: String,
    policy: String,
    user: String,
    next: AtomicU64,
}

impl Shop {
    fn new() -> Self {
        // 15 hex digits of time and process: unique per run, and the trace
        // IDs built from them start with a non-zero digit, so Jaeger prints
        // them in full.
        let id = format!(
            "{:015x}",
            (nanos() as u64 ^ (u64::from(std::process::id()) << 40)) & 0x0fff_ffff_ffff_ffff
        );
        let short = &id[id.len() - 8..];
        Self {
            frontend: format!("frontend-{short}"),
            policy: format!("policy-service-{short}"),
            user: format!("user-service-{short}"),
            id,
            next: AtomicU64::new(1),
        }
    }

    /// One request ending `r.ago` before now: frontend `GET /quote` →
    /// policy-service `POST /policy` → its client call → user-service
    /// `check_eligibility` → a database query. When `r.fail`,
    /// check_eligibility fails and the error propagates up to the frontend;
    /// `r.slow_ms` more milliseconds are spent in check_eligibility itself.
    /// Returns (trace ID, OTLP resource spans).
    fn request(&self, r: &Request) -> (String, Vec<serde_json::Value>) {
        let (ago, fail, slow) = (r.ago, r.fail, r.slow_ms);
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let trace_id = format!("a{}{n:016x}", self.id);
        let span = |i: u64| format!("{n:014x}{i:02x}");
        let end = nanos() - ago.as_nanos();
        let at = |ms_before_end: u128| (end - ms_before_end * 1_000_000).to_string();
        let status = |error: bool| {
            if error {
                serde_json::json!({"code": 2, "message": "not eligible: upstream refused"})
            } else {
                serde_json::json!({"code": 1})
            }
        };
        let one = |id: u64,
                   parent: Option<u64>,
                   name: &str,
                   kind: u8,
                   from: u128,
                   to: u128,
                   error: bool| {
            let mut s = serde_json::json!({
                "traceId": trace_id,
                "spanId": span(id),
                "name": name,
                "kind": kind,
                "startTimeUnixNano": at(from),
                "endTimeUnixNano": at(to),
                "status": status(error),
            });
            if let Some(p) = parent {
                s["parentSpanId"] = serde_json::json!(span(p));
            }
            s
        };
        let resource = |service: &str, spans: Vec<serde_json::Value>| {
            serde_json::json!({
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                "scopeSpans": [{"scope": {"name": "sre-space-e2e"}, "spans": spans}]
            })
        };
        let spans = vec![
            resource(
                &self.frontend,
                vec![one(1, None, "GET /quote", 2, slow + 40, 0, fail)],
            ),
            resource(
                &self.policy,
                vec![
                    one(2, Some(1), "POST /policy", 2, slow + 35, 2, fail),
                    one(
                        3,
                        Some(2),
                        "GET user-service /eligibility",
                        3,
                        slow + 30,
                        4,
                        fail,
                    ),
                ],
            ),
            resource(
                &self.user,
                vec![
                    one(4, Some(3), "check_eligibility", 2, slow + 28, 5, fail),
                    one(5, Some(4), "SELECT users", 3, 20, 15, false),
                ],
            ),
        ];
        (trace_id, spans)
    }

    /// Sends requests over OTLP/HTTP JSON; returns their trace IDs.
    async fn send(&self, http: &reqwest::Client, requests: &[Request]) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let mut resource_spans = Vec::new();
        for r in requests {
            let (id, spans) = self.request(r);
            ids.push(id);
            resource_spans.extend(spans);
        }
        let sent = http
            .post(format!("{}/v1/traces", otlp()))
            .json(&serde_json::json!({ "resourceSpans": resource_spans }))
            .send()
            .await
            .with_context(|| format!("sending traces to {}", otlp()))?;
        ensure!(
            sent.status().is_success(),
            "OTLP/HTTP answered {}",
            sent.status()
        );
        Ok(ids)
    }
}

async fn setup(prefix: &str) -> Result<(Client, TestNamespace)> {
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, prefix).await?;
    Ok((client, ns))
}

/// A policy whose only trigger is `trigger` (its traces settings) for
/// `service`, opening incidents for the Deployment of the same name.
async fn trace_policy(
    client: &Client,
    ns: &str,
    kind: SignalKind,
    service: &str,
    limits: serde_json::Value,
) -> Result<RemediationPolicy> {
    let mut traces = serde_json::json!({
        "service": service,
        "windowSeconds": 20,
        "minSpans": 10
    });
    for (k, v) in limits.as_object().into_iter().flatten() {
        traces[k] = v.clone();
    }
    create_policy(client, ns, |p| {
        p["spec"]["mode"] = serde_json::json!("DryRun");
        p["spec"]["triggers"] = serde_json::json!([{
            "type": kind.as_str(),
            "workload": service,
            "traces": traces
        }]);
    })
    .await
}

/// Healthy traffic for a while, then `trouble` every second; returns the
/// shop and its incident once diagnosed.
async fn diagnosed(
    client: &Client,
    ns: &str,
    kind: SignalKind,
    limits: serde_json::Value,
    trouble: impl Fn(u64) -> Request + Send + Sync + 'static,
) -> Result<(std::sync::Arc<Shop>, Incident)> {
    let shop = std::sync::Arc::new(Shop::new());
    let http = http()?;
    // Healthy traffic before: the baseline the incident window is compared
    // with (sent with past timestamps, as a service running for minutes
    // would have recorded them).
    let baseline: Vec<Request> = (0..30)
        .map(|i| Request {
            ago: Duration::from_secs(75 + i),
            fail: false,
            slow_ms: 0,
        })
        .collect();
    shop.send(&http, &baseline).await?;

    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &deployment(&shop.policy, 1, "64Mi"))
        .await?;
    wait_ready(client, ns, &shop.policy, 1, LONG).await?;
    trace_policy(client, ns, kind, &shop.policy, limits).await?;
    let operator = Operator::start(ns, &[("SRE_SPACE_JAEGER_QUERY", &jaeger())]).await?;

    // The trouble lasts as long as the test runs.
    let task = {
        let shop = shop.clone();
        tokio::spawn(async move {
            loop {
                let batch: Vec<Request> = (0..6).map(&trouble).collect();
                if let Err(e) = shop.send(&http, &batch).await {
                    eprintln!("sending traces: {e:#}");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let name = incident_name(
        &WorkloadRef {
            kind: WorkloadKind::Deployment,
            name: shop.policy.clone(),
        },
        kind,
    );
    let incident = wait_incident(client, ns, &name, LONG, "a diagnosis", |i: &Incident| {
        i.status.as_ref().is_some_and(|s| s.diagnosis.is_some())
    })
    .await
    .with_context(|| format!("operator log:\n{}", operator.output()));
    task.abort();
    let incident = incident?;
    let status = incident.status.clone().unwrap_or_default();
    let read = status
        .conditions
        .iter()
        .find(|c| c.type_ == "TraceEvidence")
        .context("a TraceEvidence condition")?;
    assert_eq!(
        (read.status, read.reason.as_str()),
        (ConditionStatus::True, "TracesRead"),
        "{}",
        read.message
    );
    Ok((shop, incident))
}

/// The trace IDs of this run the lead hypothesis cites, checked to exist in
/// Jaeger and to contain `check` for user-service's check_eligibility span.
async fn cited_traces(
    shop: &Shop,
    d: &sre_space::crd::Diagnosis,
    check: impl Fn(&serde_json::Value) -> bool,
) -> Result<usize> {
    let http = http()?;
    let cited = &d.hypotheses[0].evidence;
    let evidence = d
        .evidence
        .iter()
        .find(|e| e.kind == EvidenceKind::Trace && cited.contains(&e.id))
        .context("the lead hypothesis cites trace evidence")?;
    let ids: Vec<&str> = evidence
        .summary
        .split(|c: char| !c.is_ascii_hexdigit())
        .filter(|w| w.len() == 32 && w.starts_with('a') && w[1..].starts_with(&shop.id))
        .collect();
    ensure!(
        !ids.is_empty(),
        "no trace IDs of this run cited: {}",
        evidence.summary
    );
    for id in &ids {
        let found: serde_json::Value = http
            .get(format!("{}/api/traces/{id}", jaeger()))
            .send()
            .await?
            .json()
            .await?;
        let trace = &found["data"][0];
        assert_eq!(trace["traceID"], *id, "Jaeger holds the cited trace");
        let span = trace["spans"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["operationName"] == "check_eligibility")
            .with_context(|| format!("trace {id} has no check_eligibility span"))?;
        assert!(check(span), "trace {id}: {span}");
    }
    Ok(ids.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_spans_two_hops_deep_open_an_incident_naming_the_failing_service_and_operation()
-> Result<()> {
    let (client, ns) = setup("e2e-traces").await?;
    // Two requests in three fail in user-service.
    let (shop, incident) = diagnosed(
        &client,
        &ns.name,
        SignalKind::TraceErrorRate,
        serde_json::json!({"maxErrorRatio": 0.2}),
        |i| Request {
            ago: Duration::from_millis(100 * i),
            fail: i % 3 != 0,
            slow_ms: 0,
        },
    )
    .await?;
    let status = incident.status.clone().unwrap_or_default();
    let signal = status.last_signal.clone().context("the signal")?;
    assert!(
        signal.message.contains("error ratio") && signal.message.contains(&shop.policy),
        "the signal says what was measured: {}",
        signal.message
    );
    let d = status.diagnosis.context("a diagnosis")?;
    assert_eq!(d.category, Category::Dependency, "{}", d.root_cause);
    let chain = format!("{} → {} → {}", shop.frontend, shop.policy, shop.user);
    assert!(
        d.root_cause.contains(&format!(
            "operation check_eligibility of service {} fails",
            shop.user
        )) && d.root_cause.contains(&chain)
            && d.root_cause.contains("up from 0% in the baseline"),
        "the root cause names the failing service, operation and path: {}",
        d.root_cause
    );
    cited_traces(&shop, &d, |span| {
        span["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["key"] == "otel.status_code" && t["value"] == "ERROR")
    })
    .await?;
    ns.cleanup().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_spans_two_hops_deep_open_a_latency_incident_naming_the_slow_operation() -> Result<()>
{
    let (client, ns) = setup("e2e-traces-slow").await?;
    // Every request spends 600 ms more in user-service's check_eligibility.
    let (shop, incident) = diagnosed(
        &client,
        &ns.name,
        SignalKind::TraceLatency,
        serde_json::json!({"maxP95Millis": 300}),
        |i| Request {
            ago: Duration::from_millis(100 * i),
            fail: false,
            slow_ms: 600,
        },
    )
    .await?;
    let status = incident.status.clone().unwrap_or_default();
    let signal = status.last_signal.clone().context("the signal")?;
    assert!(
        signal.message.contains("p95") && signal.message.contains("above the maximum 300 ms"),
        "{}",
        signal.message
    );
    let d = status.diagnosis.context("a diagnosis")?;
    assert_eq!(d.category, Category::Dependency, "{}", d.root_cause);
    assert!(
        d.root_cause.contains(&format!(
            "operation check_eligibility of service {} is slow",
            shop.user
        )) && d.root_cause.contains(&format!(
            "reached through {} → {} → {}",
            shop.frontend, shop.policy, shop.user
        )),
        "{}",
        d.root_cause
    );
    cited_traces(&shop, &d, |span| {
        span["duration"].as_i64().unwrap_or(0) >= 600_000
    })
    .await?;
    ns.cleanup().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_jaeger_makes_the_trigger_unknown_and_says_so_on_the_policy() -> Result<()> {
    let (client, ns) = setup("e2e-traces-down").await?;
    let service = format!("policy-service-{:08x}", nanos() as u32);
    Api::<Deployment>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &deployment(&service, 1, "64Mi"))
        .await?;
    trace_policy(
        &client,
        &ns.name,
        SignalKind::TraceErrorRate,
        &service,
        serde_json::json!({"maxErrorRatio": 0.2}),
    )
    .await?;
    // Nothing listens on port 9 of the loopback.
    let operator = Operator::start(
        &ns.name,
        &[("SRE_SPACE_JAEGER_QUERY", "http://127.0.0.1:9")],
    )
    .await?;
    let policies: Api<RemediationPolicy> = Api::namespaced(client.clone(), &ns.name);
    wait_until(LONG, "TracesAvailable False JaegerUnavailable", || async {
        let p = policies.get("demo-services").await?;
        Ok(p.status.iter().flat_map(|s| &s.conditions).any(|c| {
            c.type_ == "TracesAvailable"
                && c.status == ConditionStatus::False
                && c.reason == "JaegerUnavailable"
                && c.message.contains("127.0.0.1:9")
        }))
    })
    .await
    .with_context(|| format!("operator log:\n{}", operator.output()))?;
    // Not being able to measure is never trouble.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let incidents = Api::<Incident>::namespaced(client.clone(), &ns.name)
        .list(&Default::default())
        .await?;
    assert!(
        incidents.items.is_empty(),
        "no incident while Jaeger is away"
    );
    assert!(
        operator.output().contains("sre-space operator started"),
        "the operator runs on"
    );
    ns.cleanup().await?;
    Ok(())
}
