//! HealthCheck triggers: the operator probes a service over HTTP itself, as
//! its callers would, and after `failureThreshold` consecutive failures
//! posts a firing reading for the workload behind it. This file holds the
//! judgement (pure functions); `runner.rs` does the probing.
//!
//! Distinct from a pod's readiness probe, which the kubelet runs from the
//! node against one pod: this one goes through what callers reach (a URL,
//! or a Service's ready endpoints) and judges the service as a whole.

mod runner;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::time::Instant;

use crate::crd::{HealthCheckTrigger, RemediationPolicy, SignalKind};
use crate::scout::measured::Verdict;

pub use runner::spawn;

/// What a trigger probes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// A URL, probed as is; incidents are for `workload`.
    Url { url: String, workload: String },
    /// A port of a Service of the policy's namespace; the workload is the
    /// one Deployment the Service's selector matches.
    Service { name: String, port: i32 },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Url { url, .. } => write!(f, "{url}"),
            Target::Service { name, port } => write!(f, "Service {name} port {port}"),
        }
    }
}

/// One HealthCheck trigger of one policy: the identity the runner keeps its
/// state under. A trigger whose target changes is a new check.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CheckKey {
    pub namespace: String,
    pub policy: String,
    pub target: Target,
}

/// The HealthCheck triggers of a set of policies, with their settings.
pub fn checks<'a>(
    policies: impl IntoIterator<Item = &'a RemediationPolicy>,
) -> BTreeMap<CheckKey, HealthCheckTrigger> {
    let mut out = BTreeMap::new();
    for p in policies {
        let (Some(namespace), Some(policy)) = (&p.metadata.namespace, &p.metadata.name) else {
            continue;
        };
        for t in &p.spec.triggers {
            if t.type_ != SignalKind::HealthCheck {
                continue;
            }
            let Some(h) = &t.health_check else { continue };
            let target = match (&h.url, &h.service, &t.workload) {
                (Some(url), None, Some(workload)) => Target::Url {
                    url: url.clone(),
                    workload: workload.clone(),
                },
                (None, Some(s), _) => Target::Service {
                    name: s.name.clone(),
                    port: s.port,
                },
                // The API server's rules refuse anything else.
                _ => continue,
            };
            out.insert(
                CheckKey {
                    namespace: namespace.clone(),
                    policy: policy.clone(),
                    target,
                },
                h.clone(),
            );
        }
    }
    out
}

/// What one probe found.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The service answered with an HTTP status.
    Answered {
        url: String,
        status: u16,
        expected: u16,
        millis: u64,
    },
    /// No connection could be made (refused, unreachable, no route, name
    /// not resolved, connect timed out): the service may be down, or the
    /// operator's own network.
    Unreachable { url: String, detail: String },
    /// Connected, but no answer within the timeout.
    TimedOut { url: String, seconds: i64 },
    /// Connected, but the exchange failed otherwise (a broken response).
    Broken { url: String, detail: String },
    /// The Service has no ready endpoint for the port: callers reach
    /// nothing, so the check fails.
    NoEndpoint { detail: String },
    /// Could not probe at all (the API server did not answer, the Service
    /// is missing): says nothing about the service.
    Unmeasured { detail: String },
    /// Not probed: the target, or an address it resolved to, is outside
    /// what the operator's allow-list lets this namespace reach. No
    /// connection was made; says nothing about the service.
    NotAllowed { detail: String },
}

impl Outcome {
    /// Some(true) when the check passed, Some(false) when it failed, None
    /// when nothing was measured.
    pub fn passed(&self) -> Option<bool> {
        match self {
            Outcome::Answered {
                status, expected, ..
            } => Some(status == expected),
            Outcome::Unmeasured { .. } | Outcome::NotAllowed { .. } => None,
            _ => Some(false),
        }
    }

    /// A failure before any HTTP exchange: what the operator sees of every
    /// service when its own network is down.
    pub fn connection_level(&self) -> bool {
        matches!(self, Outcome::Unreachable { .. })
    }

    /// The host and port probed, when a connection was attempted.
    pub fn authority(&self) -> Option<String> {
        match self {
            Outcome::Answered { url, .. }
            | Outcome::Unreachable { url, .. }
            | Outcome::TimedOut { url, .. }
            | Outcome::Broken { url, .. } => Some(authority(url)),
            _ => None,
        }
    }
}

/// `host:port` of a URL, for telling targets apart.
fn authority(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.split(['/', '?', '#'])
        .next()
        .unwrap_or(rest)
        .to_string()
}

/// Consecutive failures after a probe: a pass resets the count, a failure
/// adds one, and an unmeasured probe leaves it as it was.
pub fn count(failures: u32, outcome: &Outcome) -> u32 {
    match outcome.passed() {
        Some(true) => 0,
        Some(false) => failures.saturating_add(1),
        None => failures,
    }
}

/// The verdict on a check after a probe.
pub fn judge(failures: u32, threshold: i32, outcome: &Outcome, network_down: bool) -> Verdict {
    if network_down || outcome.passed().is_none() {
        return Verdict::Unknown;
    }
    if failures >= threshold.max(1) as u32 {
        Verdict::Firing
    } else {
        Verdict::Healthy
    }
}

/// Whether the operator's own network is the likely fault: at least two
/// distinct targets (host and port) were probed, and the latest probe of
/// every check failed before any HTTP exchange. One service down refuses
/// connections; every service at once is far likelier the operator's side.
/// An HTTP answer of any status, a connection that then hung, or a Service
/// without endpoints (its own fault) rules that out.
pub fn operator_network_down<'a>(latest: impl IntoIterator<Item = &'a Outcome>) -> bool {
    let mut hosts = BTreeSet::new();
    for o in latest {
        match o {
            Outcome::Unmeasured { .. } | Outcome::NotAllowed { .. } => {}
            o if o.connection_level() => {
                hosts.extend(o.authority());
            }
            _ => return false,
        }
    }
    hosts.len() >= 2
}

/// Whether a check about to fire on a connection failure must first hear
/// from the others: one of them has not been probed since this check began
/// failing (`streak_since`), so the operator cannot yet tell this service
/// being down from its own network being down. Checks of different periods
/// are thereby compared over the same stretch of time.
pub fn awaits_other_checks(
    streak_since: Instant,
    others_probed_at: impl IntoIterator<Item = Option<Instant>>,
) -> bool {
    others_probed_at
        .into_iter()
        .any(|at| at.is_none_or(|at| at < streak_since))
}

/// Up to a tenth of a check's period, so that checks of the same period
/// spread out instead of probing together. `seed` is any number (a hash);
/// the same seed gives the same jitter.
pub fn jitter(period_seconds: i64, seed: u64) -> Duration {
    let spread = period(period_seconds).as_millis() / 10;
    Duration::from_millis(seed % (spread as u64 + 1))
}

/// The delay between two probes of a check: its period plus a jitter.
pub fn next_delay(period_seconds: i64, seed: u64) -> Duration {
    period(period_seconds) + jitter(period_seconds, seed)
}

/// A check's period within the schema's bounds, which a CRD installed by an
/// older version may not have enforced.
fn period(period_seconds: i64) -> Duration {
    crate::limits::std_seconds(period_seconds, 1, crate::limits::MAX_WINDOW_SECONDS)
}

/// The Deployment behind a Service: the one whose pod template carries
/// every label of the Service's selector. Anything other than exactly one
/// is a mistake the policy's owner must fix, said in words.
pub fn workload_behind(service: &Service, deployments: &[Deployment]) -> Result<String, String> {
    let name = service.metadata.name.as_deref().unwrap_or("?");
    let selector = service
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    if selector.is_empty() {
        return Err(format!(
            "Service {name} has no selector, so the workload behind it cannot be found; \
             give the trigger a url and a workload instead"
        ));
    }
    let matching: Vec<&str> = deployments
        .iter()
        .filter(|d| {
            let labels = d
                .spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.as_ref());
            labels.is_some_and(|l| selector.iter().all(|(k, v)| l.get(k) == Some(v)))
        })
        .filter_map(|d| d.metadata.name.as_deref())
        .collect();
    let wanted = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    match matching.as_slice() {
        [one] => Ok((*one).to_string()),
        [] => Err(format!(
            "the selector {wanted} of Service {name} matches no Deployment's pods; \
             a HealthCheck of a Service needs exactly one"
        )),
        many => Err(format!(
            "the selector {wanted} of Service {name} matches {} Deployments ({}); \
             a HealthCheck of a Service needs exactly one, or use a url and a workload",
            many.len(),
            many.join(", ")
        )),
    }
}

/// The Service port a trigger names: its name and, when numeric, its
/// targetPort. Err when the Service has no such port, a mistake in the
/// policy rather than a failing service.
pub fn service_port(service: &Service, port: i32) -> Result<(String, Option<i32>), String> {
    let name = service.metadata.name.as_deref().unwrap_or("?");
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let Some(sp) = ports.iter().find(|p| p.port == port) else {
        let have = ports
            .iter()
            .map(|p| p.port.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(format!(
            "Service {name} has no port {port} (it has: {}); fix healthCheck.service.port",
            if have.is_empty() { "none" } else { &have }
        ));
    };
    let numeric = match &sp.target_port {
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(_)) => None,
        None => Some(sp.port),
    };
    Ok((sp.name.clone().unwrap_or_default(), numeric))
}

/// The addresses a Service's port reaches: the ready endpoints of its
/// EndpointSlices, at the port each slice gives for the Service port's name
/// (the resolved targetPort), as kube-proxy routes; a hand-written slice
/// whose port is unnamed but carries the numeric targetPort counts too.
/// Slices without the port (pods that do not declare a named targetPort)
/// are skipped. Err says why there is no address; an empty list is never
/// returned.
pub fn ready_endpoints(
    service: &Service,
    port: i32,
    slices: &[EndpointSlice],
) -> Result<Vec<(String, u16)>, String> {
    let name = service.metadata.name.as_deref().unwrap_or("?");
    let (port_name, numeric) = service_port(service, port)?;
    let mut out = Vec::new();
    for slice in slices {
        let slice_ports = slice.ports.clone().unwrap_or_default();
        let by_name = slice_ports
            .iter()
            .find(|p| p.name.clone().unwrap_or_default() == port_name);
        let by_number = || {
            slice_ports
                .iter()
                .find(|p| p.name.as_deref().unwrap_or_default().is_empty() && p.port == numeric)
        };
        let resolved = by_name.or_else(by_number).and_then(|p| p.port);
        let Some(target) = resolved.and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        for e in slice.endpoints.iter().flatten() {
            // Per the API, an unknown readiness counts as ready.
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready {
                continue;
            }
            for a in &e.addresses {
                let host = if slice.address_type == "IPv6" && !a.starts_with('[') {
                    format!("[{a}]")
                } else {
                    a.clone()
                };
                if !out.contains(&(host.clone(), target)) {
                    out.push((host, target));
                }
            }
        }
    }
    if out.is_empty() {
        return Err(format!(
            "Service {name} has no ready endpoint for port {port}{}",
            if slices.is_empty() {
                " (no EndpointSlice)".to_string()
            } else {
                String::new()
            }
        ));
    }
    out.sort();
    Ok(out)
}

/// The URL probed on an endpoint.
pub fn endpoint_url(host: &str, port: u16, path: &str) -> String {
    format!("http://{host}:{port}{path}")
}

/// A probe's outcome in words a person reads, with the failure count.
pub fn summary(outcome: &Outcome, failures: u32, threshold: i32) -> String {
    let streak = |n: u32| {
        if n == 1 {
            "1 failure in a row".to_string()
        } else {
            format!("{n} failures in a row")
        }
    };
    let count = format!("{} (threshold {threshold})", streak(failures));
    match outcome {
        Outcome::Answered {
            url,
            status,
            expected,
            millis,
        } if status == expected => format!("GET {url} answered {status} in {millis} ms"),
        Outcome::Answered {
            url,
            status,
            expected,
            ..
        } => format!("GET {url} answered {status} (expected {expected}), {count}"),
        Outcome::Unreachable { url, detail } => {
            format!("GET {url} could not connect: {detail}, {count}")
        }
        Outcome::TimedOut { url, seconds } => {
            format!("GET {url} connected but got no answer within {seconds} s, {count}")
        }
        Outcome::Broken { url, detail } => format!("GET {url} failed: {detail}, {count}"),
        Outcome::NoEndpoint { detail } => format!("{detail}, so nothing answers; {count}"),
        Outcome::Unmeasured { detail } => format!("not probed: {detail}"),
        Outcome::NotAllowed { detail } => format!("not probed: {detail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16) -> Outcome {
        Outcome::Answered {
            url: "http://10.0.0.5:8083/healthz".into(),
            status,
            expected: 200,
            millis: 3,
        }
    }

    fn refused(host: &str) -> Outcome {
        Outcome::Unreachable {
            url: format!("http://{host}/healthz"),
            detail: "Connection refused (os error 111)".into(),
        }
    }

    /// Feeds outcomes through the counter and the judge, as the runner does.
    fn verdicts(outcomes: &[Outcome], threshold: i32) -> Vec<(u32, Verdict)> {
        let mut failures = 0;
        outcomes
            .iter()
            .map(|o| {
                failures = count(failures, o);
                (failures, judge(failures, threshold, o, false))
            })
            .collect()
    }

    #[test]
    fn fires_only_after_threshold_consecutive_failures_and_one_success_clears() {
        let seen = verdicts(
            &[
                answered(200),
                answered(500),
                refused("10.0.0.5:8083"),
                answered(200),
                answered(500),
                Outcome::TimedOut {
                    url: "u".into(),
                    seconds: 1,
                },
                Outcome::NoEndpoint {
                    detail: "no endpoint".into(),
                },
                answered(503),
                answered(200),
            ],
            3,
        );
        use Verdict::*;
        assert_eq!(
            seen,
            vec![
                (0, Healthy),
                (1, Healthy),
                (2, Healthy),
                (0, Healthy),
                (1, Healthy),
                (2, Healthy),
                (3, Firing),
                (4, Firing),
                (0, Healthy),
            ]
        );
    }

    #[test]
    fn an_unmeasured_probe_neither_counts_nor_clears() {
        let unmeasured = Outcome::Unmeasured {
            detail: "the API server did not answer".into(),
        };
        let seen = verdicts(
            &[
                answered(500),
                answered(500),
                unmeasured.clone(),
                answered(500),
            ],
            3,
        );
        assert_eq!(seen[2], (2, Verdict::Unknown));
        assert_eq!(seen[3], (3, Verdict::Firing));
    }

    #[test]
    fn an_unexpected_success_status_is_a_failure() {
        // A check expecting 204 is failed by a 200.
        let o = Outcome::Answered {
            url: "u".into(),
            status: 200,
            expected: 204,
            millis: 1,
        };
        assert_eq!(o.passed(), Some(false));
        assert_eq!(judge(1, 1, &o, false), Verdict::Firing);
        assert_eq!(
            judge(5, 3, &o, true),
            Verdict::Unknown,
            "the network guard wins"
        );
    }

    #[test]
    fn a_connection_failure_waits_for_every_other_check_to_be_probed_again() {
        let t0 = Instant::now();
        let since = t0 + Duration::from_secs(10);
        let after = Some(since + Duration::from_secs(1));
        let before = Some(t0);
        assert!(!awaits_other_checks(since, [after, after]));
        assert!(
            awaits_other_checks(since, [after, before]),
            "a slow check last probed before the streak says nothing about now"
        );
        assert!(
            awaits_other_checks(since, [after, None]),
            "nor does a check never probed"
        );
        assert!(
            !awaits_other_checks(since, []),
            "a lone check decides alone"
        );
    }

    #[test]
    fn jitter_stays_within_a_tenth_of_the_period_and_spreads() {
        let mut seen = BTreeSet::new();
        for seed in (0..10_000u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) {
            let j = jitter(2, seed);
            assert!(j <= Duration::from_millis(200), "{j:?}");
            let d = next_delay(2, seed);
            assert!(
                d >= Duration::from_secs(2) && d <= Duration::from_millis(2200),
                "{d:?}"
            );
            seen.insert(j.as_millis());
        }
        assert!(seen.len() > 100, "only {} distinct delays", seen.len());
        assert!(jitter(3600, u64::MAX) <= Duration::from_secs(360));
        assert!(next_delay(0, 7) >= Duration::from_secs(1), "never zero");
    }

    #[test]
    fn every_check_refused_on_two_hosts_is_the_operators_network() {
        let a = refused("10.0.0.5:8083");
        let b = refused("10.0.0.6:8080");
        assert!(operator_network_down([&a, &b]));
        let unmeasured = Outcome::Unmeasured {
            detail: "API".into(),
        };
        assert!(
            operator_network_down([&a, &b, &unmeasured]),
            "an unmeasured check says nothing either way"
        );
    }

    #[test]
    fn one_http_answer_or_one_host_is_not_the_operators_network() {
        let a = refused("10.0.0.5:8083");
        let b = refused("10.0.0.6:8080");
        assert!(
            !operator_network_down([&a]),
            "one target down is that target"
        );
        assert!(
            !operator_network_down([&a, &refused("10.0.0.5:8083")]),
            "two checks of one host are one target"
        );
        assert!(
            !operator_network_down([&a, &b, &answered(500)]),
            "a 500 proves the network works"
        );
        let hung = Outcome::TimedOut {
            url: "http://10.0.0.7:80/".into(),
            seconds: 1,
        };
        assert!(
            !operator_network_down([&a, &b, &hung]),
            "a connected probe proves it too"
        );
        let empty = Outcome::NoEndpoint {
            detail: "none".into(),
        };
        assert!(!operator_network_down([&a, &b, &empty]));
        assert!(!operator_network_down(std::iter::empty::<&Outcome>()));
    }

    fn service(selector: Option<serde_json::Value>, ports: serde_json::Value) -> Service {
        let mut spec = serde_json::json!({ "ports": ports });
        if let Some(s) = selector {
            spec["selector"] = s;
        }
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "user-service", "namespace": "shop" },
            "spec": spec
        }))
        .expect("a Service")
    }

    fn deployment(name: &str, labels: serde_json::Value) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name },
            "spec": {
                "selector": { "matchLabels": labels },
                "template": { "metadata": { "labels": labels } }
            }
        }))
        .expect("a Deployment")
    }

    fn slice(ports: serde_json::Value, endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "user-service-x", "labels": { "kubernetes.io/service-name": "user-service" } },
            "addressType": "IPv4",
            "ports": ports,
            "endpoints": endpoints
        }))
        .expect("an EndpointSlice")
    }

    #[test]
    fn the_workload_behind_a_service_is_the_one_deployment_its_selector_matches() {
        let svc = service(
            Some(serde_json::json!({ "app": "user" })),
            serde_json::json!([{ "port": 8083 }]),
        );
        let user = deployment(
            "user-service",
            serde_json::json!({ "app": "user", "tier": "api" }),
        );
        let quote = deployment("quote-service", serde_json::json!({ "app": "quote" }));
        assert_eq!(
            workload_behind(&svc, &[quote.clone(), user.clone()]),
            Ok("user-service".into())
        );
        let none = workload_behind(&svc, std::slice::from_ref(&quote)).expect_err("none");
        assert!(
            none.contains("app=user") && none.contains("matches no Deployment"),
            "{none}"
        );
        let twin = deployment("user-service-canary", serde_json::json!({ "app": "user" }));
        let two = workload_behind(&svc, &[user, twin]).expect_err("two");
        assert!(
            two.contains("2 Deployments (user-service, user-service-canary)"),
            "{two}"
        );
        let bare = service(None, serde_json::json!([{ "port": 8083 }]));
        let err = workload_behind(&bare, &[quote]).expect_err("no selector");
        assert!(err.contains("has no selector"), "{err}");
    }

    #[test]
    fn a_service_port_is_probed_at_its_ready_endpoints_target_port() {
        let svc = service(
            Some(serde_json::json!({ "app": "user" })),
            serde_json::json!([
                { "name": "metrics", "port": 9090, "targetPort": 9090 },
                { "name": "http", "port": 8083, "targetPort": "web" }
            ]),
        );
        let slices = [
            slice(
                serde_json::json!([{ "name": "http", "port": 18083 }, { "name": "metrics", "port": 9090 }]),
                serde_json::json!([
                    { "addresses": ["10.0.0.6"], "conditions": { "ready": true } },
                    { "addresses": ["10.0.0.5"] },
                    { "addresses": ["10.0.0.9"], "conditions": { "ready": false } }
                ]),
            ),
            // Pods that do not declare the named port: no address for it.
            slice(
                serde_json::json!([]),
                serde_json::json!([{ "addresses": ["10.0.0.7"] }]),
            ),
        ];
        assert_eq!(
            ready_endpoints(&svc, 8083, &slices),
            Ok(vec![
                ("10.0.0.5".to_string(), 18083),
                ("10.0.0.6".to_string(), 18083)
            ])
        );
        assert_eq!(
            ready_endpoints(&svc, 9090, &slices),
            Ok(vec![
                ("10.0.0.5".to_string(), 9090),
                ("10.0.0.6".to_string(), 9090)
            ])
        );
        let missing = ready_endpoints(&svc, 80, &slices).expect_err("no port 80");
        assert_eq!(
            missing,
            "Service user-service has no port 80 (it has: 9090, 8083); fix healthCheck.service.port"
        );
        assert_eq!(service_port(&svc, 80), Err(missing));
        assert_eq!(service_port(&svc, 8083), Ok(("http".into(), None)));
    }

    #[test]
    fn a_service_without_ready_endpoints_fails_with_a_reason() {
        let svc = service(
            Some(serde_json::json!({ "app": "user" })),
            serde_json::json!([{ "port": 8083, "targetPort": 8080 }]),
        );
        let not_ready = [slice(
            serde_json::json!([{ "port": 8080 }]),
            serde_json::json!([{ "addresses": ["10.0.0.5"], "conditions": { "ready": false } }]),
        )];
        assert_eq!(
            ready_endpoints(&svc, 8083, &not_ready),
            Err("Service user-service has no ready endpoint for port 8083".into())
        );
        assert_eq!(
            ready_endpoints(&svc, 8083, &[]),
            Err(
                "Service user-service has no ready endpoint for port 8083 (no EndpointSlice)"
                    .into()
            )
        );
        // An unnamed port in a slice that lists it.
        let ready = [slice(
            serde_json::json!([{ "port": 8080 }]),
            serde_json::json!([{ "addresses": ["10.0.0.5"] }]),
        )];
        assert_eq!(
            ready_endpoints(&svc, 8083, &ready),
            Ok(vec![("10.0.0.5".to_string(), 8080)])
        );
        // A named Service port found by its numeric targetPort in a
        // hand-written slice that names no port; a slice without ports
        // gives nothing, as kube-proxy would.
        let named = service(
            Some(serde_json::json!({ "app": "user" })),
            serde_json::json!([{ "name": "http", "port": 8083, "targetPort": 8080 }]),
        );
        assert_eq!(
            ready_endpoints(&named, 8083, &ready),
            Ok(vec![("10.0.0.5".to_string(), 8080)])
        );
        let portless = [slice(
            serde_json::json!([]),
            serde_json::json!([{ "addresses": ["10.0.0.5"] }]),
        )];
        assert!(ready_endpoints(&svc, 8083, &portless).is_err());
        assert_eq!(
            endpoint_url("10.0.0.5", 8080, "/healthz"),
            "http://10.0.0.5:8080/healthz"
        );
    }

    #[test]
    fn triggers_become_checks_keyed_by_what_they_probe() {
        let policy: RemediationPolicy = serde_yaml::from_str(
            r#"
apiVersion: sre.space/v1alpha1
kind: RemediationPolicy
metadata: {name: shop, namespace: shop}
spec:
  selector: {matchLabels: {sre.space/protected: "true"}}
  triggers:
  - type: OOMKilled
  - type: HealthCheck
    healthCheck: {service: {name: user-service, port: 8083}, path: /healthz, periodSeconds: 2, timeoutSeconds: 1, failureThreshold: 3, expectedStatus: 200}
  - type: HealthCheck
    workload: quote-service
    healthCheck: {url: "http://127.0.0.1:18081/healthz", periodSeconds: 5}
  actions: [{type: Escalate}]
"#,
        )
        .expect("a policy");
        let found = checks([&policy]);
        let keys: Vec<&Target> = found.keys().map(|k| &k.target).collect();
        assert_eq!(
            keys,
            vec![
                &Target::Url {
                    url: "http://127.0.0.1:18081/healthz".into(),
                    workload: "quote-service".into()
                },
                &Target::Service {
                    name: "user-service".into(),
                    port: 8083
                },
            ]
        );
        let quote = found.values().next().expect("a check");
        assert_eq!(
            (
                quote.period_seconds,
                quote.timeout_seconds,
                quote.failure_threshold
            ),
            (5, 2, 3),
            "defaults fill what the trigger leaves out"
        );
    }

    #[test]
    fn summaries_read_as_sentences() {
        assert_eq!(
            summary(&answered(500), 3, 3),
            "GET http://10.0.0.5:8083/healthz answered 500 (expected 200), 3 failures in a row (threshold 3)"
        );
        assert_eq!(
            summary(&answered(200), 0, 3),
            "GET http://10.0.0.5:8083/healthz answered 200 in 3 ms"
        );
        assert_eq!(
            summary(&refused("10.0.0.5:8083"), 1, 3),
            "GET http://10.0.0.5:8083/healthz could not connect: Connection refused (os error 111), 1 failure in a row (threshold 3)"
        );
        assert_eq!(
            summary(
                &Outcome::NoEndpoint {
                    detail: "Service user-service has no ready endpoint for port 8083".into()
                },
                2,
                3
            ),
            "Service user-service has no ready endpoint for port 8083, so nothing answers; 2 failures in a row (threshold 3)"
        );
    }
}
