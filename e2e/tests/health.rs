//! HealthCheck triggers on the real local cluster: the operator probes real
//! HTTP servers (served by this test on loopback, standing in for the
//! services' pods, which are kwok pods with fake addresses) and opens an
//! incident only for the workload whose check fails.
#![cfg(feature = "cluster")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{StatusCode, header};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use sre_space::crd::SignalKind;
use sre_space::crd::{ActionState, ConditionStatus, Phase};
use sre_space_e2e::incident_of;
use sre_space_e2e::scenario::LONG;
use sre_space_e2e::{Scenario, wait_incident, wait_until};

/// A health endpoint served by the test: answers `status` on /healthz and
/// counts the requests; closes every connection after its answer, so a
/// stopped server is unreachable at once (no pooled connection survives).
struct HealthServer {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    hits: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Served {
    status: Arc<AtomicU16>,
    hits: Arc<AtomicUsize>,
}

async fn healthz(
    State(s): State<Served>,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let code = StatusCode::from_u16(s.status.load(Ordering::SeqCst))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, [(header::CONNECTION, "close")], code.to_string())
}

impl HealthServer {
    async fn start() -> Result<Self> {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST.into()).await
    }

    async fn start_on(ip: std::net::IpAddr) -> Result<Self> {
        Self::start_at(SocketAddr::new(ip, 0)).await
    }

    async fn start_at(addr: SocketAddr) -> Result<Self> {
        let served = Served {
            status: Arc::new(AtomicU16::new(200)),
            hits: Arc::new(AtomicUsize::new(0)),
        };
        let app = axum::Router::new()
            .route("/healthz", axum::routing::get(healthz))
            .with_state(served.clone());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            addr,
            status: served.status,
            hits: served.hits,
            stop: Some(stop),
            task,
        })
    }

    fn url(&self) -> String {
        format!("http://{}/healthz", self.addr)
    }

    fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops serving, and checks that the port now refuses connections.
    async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .context("the health server did not stop")??;
        anyhow::ensure!(
            tokio::net::TcpStream::connect(self.addr).await.is_err(),
            "{} still accepts connections after the server stopped",
            self.addr
        );
        Ok(())
    }
}

/// The policy's HealthChecksAvailable condition.
trait HealthChecks {
    async fn health_condition(
        &self,
        policy: &str,
        status: ConditionStatus,
        reason: &str,
        timeout: Duration,
    ) -> Result<String>;
}

impl HealthChecks for Scenario {
    /// Waits until the policy's HealthChecksAvailable condition has
    /// `status` and `reason`, and returns its message.
    async fn health_condition(
        &self,
        policy: &str,
        status: ConditionStatus,
        reason: &str,
        timeout: Duration,
    ) -> Result<String> {
        let condition = self
            .policy_condition(policy, "HealthChecksAvailable", status, reason, timeout)
            .await?;
        Ok(condition.message)
    }
}

/// A HealthCheck trigger by URL: probe every 2 s, fail after 3.
fn by_url(url: &str, workload: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "HealthCheck",
        "workload": workload,
        "healthCheck": {
            "url": url, "periodSeconds": 2, "timeoutSeconds": 1,
            "failureThreshold": 3, "expectedStatus": 200
        }
    })
}

/// The example policy in DryRun with only `triggers`, and a short
/// verification window.
fn health_policy(v: &mut serde_json::Value, triggers: Vec<serde_json::Value>) {
    v["metadata"]["name"] = "health".into();
    v["spec"]["mode"] = "DryRun".into();
    v["spec"]["triggers"] = triggers.into();
    v["spec"]["actions"] =
        serde_json::json!([{ "type": "RolloutRestart" }, { "type": "Escalate" }]);
    v["spec"]["guardrails"]["cooldownSeconds"] = 5.into();
    v["spec"]["guardrails"]["verificationWindowSeconds"] = 10.into();
}

/// This machine's own non-loopback IPv4 address (the one its default route
/// leaves from; a UDP "connect" sends nothing). EndpointSlices refuse
/// loopback addresses, so the server behind a Service listens here.
fn host_address() -> Result<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
    socket
        .connect("10.255.255.255:9")
        .context("this machine has no route off loopback")?;
    let ip = socket.local_addr()?.ip();
    anyhow::ensure!(
        !ip.is_loopback() && !ip.is_unspecified(),
        "this machine has no non-loopback address ({ip}) for an EndpointSlice"
    );
    Ok(ip)
}

/// A Service in front of `workload`'s pods (its selector finds the
/// Deployment), whose port 8083 targets a container port named `health`.
/// The kwok pods declare no such port, so the cluster's EndpointSlice
/// controller lists no address for it; the EndpointSlice made here gives
/// the address where the test serves the workload's health endpoint, as a
/// slice of a real cluster gives a pod's IP.
async fn service_with_loopback_endpoint(
    client: &Client,
    ns: &str,
    workload: &str,
    server: &HealthServer,
) -> Result<()> {
    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": { "name": workload },
        "spec": {
            "selector": { "app": workload },
            "ports": [{ "name": "http", "port": 8083, "targetPort": "health", "protocol": "TCP" }]
        }
    }))?;
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &service)
        .await?;
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": format!("{workload}-loopback"),
            "labels": { "kubernetes.io/service-name": workload }
        },
        "addressType": "IPv4",
        "ports": [{ "name": "http", "port": server.addr.port(), "protocol": "TCP" }],
        "endpoints": [{ "addresses": [server.addr.ip().to_string()], "conditions": { "ready": true } }]
    }))?;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    slices.create(&PostParams::default(), &slice).await?;
    // The premise: the cluster's own slice lists the kwok pod (a fake
    // address nothing answers on) without the port, which a probe must skip
    // as kube-proxy would.
    let lp = ListParams::default().labels(&format!(
        "kubernetes.io/service-name={workload},endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io"
    ));
    wait_until(
        LONG,
        "the cluster's EndpointSlice of the Service",
        || async {
            Ok(slices.list(&lp).await?.items.iter().any(|s| {
                s.endpoints.iter().flatten().count() == 1 && s.ports.iter().flatten().count() == 0
            }))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_health_check_opens_one_incident_for_its_workload_and_clears() -> Result<()> {
    let s = Scenario::builder("e2e-health").start().await?;
    let (quote, policy, user) = (
        HealthServer::start().await?,
        HealthServer::start().await?,
        HealthServer::start_on(host_address()?).await?,
    );
    s.deploy_each(&["quote-service", "policy-service", "user-service"])
        .await?;
    service_with_loopback_endpoint(&s.client, s.name(), "user-service", &user).await?;
    s.policy(|v| {
        health_policy(
            v,
            vec![
                by_url(&quote.url(), "quote-service"),
                by_url(&policy.url(), "policy-service"),
                serde_json::json!({
                    "type": "HealthCheck",
                    "healthCheck": {
                        "service": { "name": "user-service", "port": 8083 },
                        "path": "/healthz", "periodSeconds": 2, "timeoutSeconds": 1,
                        "failureThreshold": 3, "expectedStatus": 200
                    }
                }),
            ],
        )
    })
    .await?;
    let operator = s.operator(&[]).await?;

    let message = s
        .health_condition("health", ConditionStatus::True, "Probing", LONG)
        .await
        .with_context(|| operator.output())?;
    assert_eq!(message, "probing 3 health check(s)");
    // Every server, the one behind the Service too, is really probed, and
    // healthy answers open nothing.
    wait_until(LONG, "three probes of each health endpoint", || async {
        Ok([&quote, &policy, &user].iter().all(|h| h.hits() >= 3))
    })
    .await
    .with_context(|| operator.output())?;
    assert_eq!(s.incident_names().await?, Vec::<String>::new());

    user.answer(500);
    let broke = std::time::Instant::now();
    let opened = wait_incident(
        &s.client,
        s.name(),
        &incident_of("user-service", SignalKind::HealthCheck),
        LONG,
        "the HealthCheck incident of user-service",
        |i| i.status.as_ref().is_some_and(|s| s.occurrences > 0),
    )
    .await
    .with_context(|| operator.output())?;
    let detected_after = broke.elapsed();
    eprintln!(
        "HealthCheck incident opened {detected_after:?} after the endpoint began answering 500"
    );
    // Three failures 2 to 2.2 s apart, then the write: well under 20 s.
    assert!(
        detected_after < Duration::from_secs(20),
        "{detected_after:?}"
    );
    assert_eq!(opened.spec.target.name, "user-service");
    let detected = opened
        .status
        .as_ref()
        .and_then(|s| s.last_signal.as_ref())
        .map(|s| s.message.clone())
        .unwrap_or_default();
    assert!(
        detected.contains(&format!(
            "GET http://{}/healthz answered 500 (expected 200), 3 failures in a row",
            user.addr
        )),
        "the incident says what failed, probed at the Service's endpoint: {detected}"
    );
    // The DryRun ladder records what it would do and waits for the check.
    let verifying = wait_incident(
        &s.client,
        s.name(),
        &incident_of("user-service", SignalKind::HealthCheck),
        LONG,
        "a dry-run action under verification",
        |i| {
            i.status
                .as_ref()
                .is_some_and(|s| s.actions.iter().any(|a| a.state == ActionState::DryRun))
        },
    )
    .await?;
    assert_eq!(
        verifying.status.unwrap_or_default().phase,
        Phase::Verifying,
        "the check still fails, so nothing is resolved"
    );

    user.answer(200);
    let resolved = wait_incident(
        &s.client,
        s.name(),
        &incident_of("user-service", SignalKind::HealthCheck),
        LONG,
        "Resolved once the check passes for the verification window",
        |i| {
            i.status
                .as_ref()
                .is_some_and(|s| s.phase == Phase::Resolved)
        },
    )
    .await
    .with_context(|| operator.output())?;
    let status = resolved.status.unwrap_or_default();
    let cleared = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Resolved")
        .context("a Resolved condition")?;
    assert_eq!(
        (cleared.status, cleared.reason.as_str()),
        (ConditionStatus::True, "SignalCleared")
    );
    assert_eq!(status.actions.len(), 1, "{:?}", status.actions);
    assert_eq!(status.actions[0].state, ActionState::DryRun);
    assert_eq!(
        s.incident_names().await?,
        vec![incident_of("user-service", SignalKind::HealthCheck)],
        "the healthy services have no incident"
    );
    s.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_nothing_connects_the_operator_blames_its_network_not_the_services() -> Result<()> {
    let s = Scenario::builder("e2e-health-net").start().await?;
    let servers = [
        HealthServer::start().await?,
        HealthServer::start().await?,
        HealthServer::start().await?,
    ];
    let names = ["quote-service", "policy-service", "user-service"];
    s.deploy_each(&names).await?;
    s.policy(|v| {
        health_policy(
            v,
            servers
                .iter()
                .zip(names)
                .map(|(h, n)| by_url(&h.url(), n))
                .collect(),
        )
    })
    .await?;
    let operator = s.operator(&[]).await?;
    s.health_condition("health", ConditionStatus::True, "Probing", LONG)
        .await
        .with_context(|| operator.output())?;
    wait_until(LONG, "two probes of each health endpoint", || async {
        Ok(servers.iter().all(|h| h.hits() >= 2))
    })
    .await?;

    let addrs: Vec<SocketAddr> = servers.iter().map(|h| h.addr).collect();
    for server in servers {
        server.stop().await?;
    }
    let message = s
        .health_condition(
            "health",
            ConditionStatus::False,
            "OperatorNetworkUnreachable",
            LONG,
        )
        .await
        .with_context(|| operator.output())?;
    assert!(message.contains("operator's own network"), "{message}");
    // Several thresholds' worth of failed probes later, still no incident.
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(
        s.incident_names().await?,
        Vec::<String>::new(),
        "no service is blamed for the operator's network"
    );
    s.health_condition(
        "health",
        ConditionStatus::False,
        "OperatorNetworkUnreachable",
        Duration::from_secs(1),
    )
    .await?;

    // The network is back: the same addresses answer again.
    let mut back = Vec::new();
    for addr in addrs {
        back.push(HealthServer::start_at(addr).await?);
    }
    let message = s
        .health_condition("health", ConditionStatus::True, "Probing", LONG)
        .await
        .with_context(|| operator.output())?;
    assert_eq!(message, "probing 3 health check(s)");
    wait_until(LONG, "probes answered again", || async {
        Ok(back.iter().all(|h| h.hits() >= 2))
    })
    .await?;
    assert_eq!(
        s.incident_names().await?,
        Vec::<String>::new(),
        "services that answer again have nothing to blame"
    );
    s.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_in_front_of_two_deployments_is_a_policy_problem_not_an_incident() -> Result<()> {
    let s = Scenario::builder("e2e-health-svc")
        .deploy_each(&["quote-service", "policy-service"])
        .start()
        .await?;
    // Its selector matches the pods of both Deployments.
    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "shop" },
        "spec": {
            "selector": { "sre.space/protected": "true" },
            "ports": [{ "name": "http", "port": 8080, "targetPort": 8080 }]
        }
    }))?;
    Api::<Service>::namespaced(s.client.clone(), s.name())
        .create(&PostParams::default(), &service)
        .await?;
    s.policy(|v| {
        health_policy(
            v,
            vec![serde_json::json!({
                "type": "HealthCheck",
                "healthCheck": {
                    "service": { "name": "shop", "port": 8080 },
                    "periodSeconds": 2, "timeoutSeconds": 1, "failureThreshold": 1
                }
            })],
        )
    })
    .await?;
    let operator = s.operator(&[]).await?;
    let message = s
        .health_condition("health", ConditionStatus::False, "TargetUnresolved", LONG)
        .await
        .with_context(|| operator.output())?;
    assert!(
        message.contains("matches 2 Deployments (policy-service, quote-service)"),
        "{message}"
    );
    // Its endpoints are kwok pods nothing answers on: probed, they would fail
    // at once (threshold 1), but a check without its one workload posts
    // nothing.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(s.incident_names().await?, Vec::<String>::new());
    s.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_check_waits_for_a_slow_one_before_blaming_its_service() -> Result<()> {
    let s = Scenario::builder("e2e-health-slow").start().await?;
    let (fast, slow) = (HealthServer::start().await?, HealthServer::start().await?);
    s.deploy_each(&["quote-service", "policy-service"]).await?;
    let check = |url: String, workload: &str, period: i64| {
        serde_json::json!({
            "type": "HealthCheck",
            "workload": workload,
            "healthCheck": { "url": url, "periodSeconds": period, "timeoutSeconds": 1, "failureThreshold": 1 }
        })
    };
    s.policy(|v| {
        health_policy(
            v,
            vec![
                check(fast.url(), "quote-service", 2),
                check(slow.url(), "policy-service", 60),
            ],
        )
    })
    .await?;
    let operator = s.operator(&[]).await?;
    s.health_condition("health", ConditionStatus::True, "Probing", LONG)
        .await
        .with_context(|| operator.output())?;
    wait_until(LONG, "both endpoints probed", || async {
        Ok(fast.hits() >= 2 && slow.hits() >= 1)
    })
    .await?;

    // The fast check fails at its first refused connection (threshold 1);
    // the slow one's last probe, a success, is up to a minute old. Before
    // blaming quote-service, the operator probes policy-service again, and
    // finds nothing connects.
    fast.stop().await?;
    slow.stop().await?;
    let stopped = std::time::Instant::now();
    s.health_condition(
        "health",
        ConditionStatus::False,
        "OperatorNetworkUnreachable",
        LONG,
    )
    .await
    .with_context(|| operator.output())?;
    let noticed = stopped.elapsed();
    assert!(
        noticed < Duration::from_secs(20),
        "the slow check was probed early, not after its 60 s period: {noticed:?}"
    );
    assert_eq!(
        s.incident_names().await?,
        Vec::<String>::new(),
        "quote-service is not blamed for what is the operator's network"
    );
    s.cleanup().await
}
