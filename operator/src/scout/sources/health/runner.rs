//! Runs the HealthCheck triggers: one loop owns every check's state, follows
//! the policies, starts each probe when it is due (at most `CONCURRENCY` at
//! once), and judges each result as it comes back.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{
    CheckKey, Outcome, Target, awaits_other_checks, checks, count, endpoint_url, jitter, judge,
    next_delay, operator_network_down, ready_endpoints, summary, workload_behind,
};
use crate::allowlist::{ApiServer, Route, Shared, Tenant};
use crate::conditions::HEALTH_CHECKS_AVAILABLE;
use crate::crd::{ConditionStatus, HealthCheckTrigger, SignalKind};
use crate::scout::Context;
use crate::scout::measured::{Reading, Subject, Verdict};
use crate::scout::sources::{ConditionWriter, Rewrite, Wanted};

/// Probes in flight at once, across all policies.
const CONCURRENCY: usize = 16;
/// How often the policies are read again.
const RESYNC: Duration = Duration::from_secs(1);
/// How long the Deployment found behind a Service is trusted.
const WORKLOAD_TTL: Duration = Duration::from_secs(30);
/// How long an API call of the loop itself may take.
const API_TIMEOUT: Duration = Duration::from_secs(5);
/// Redirects followed on the same host, at most.
const MAX_REDIRECTS: usize = 5;
/// How long the API server's addresses are trusted.
const API_SERVER_TTL: Duration = Duration::from_secs(60);

/// Starts the HealthCheck source.
pub fn spawn(ctx: &Arc<Context>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(ctx.clone()))
}

/// The Deployment behind a Service, as last looked up.
type Resolved = Option<(Instant, Result<String, String>)>;

/// What the loop keeps of one check.
struct Check {
    spec: HealthCheckTrigger,
    failures: u32,
    last: Option<Outcome>,
    /// When the latest probe started.
    probed_at: Option<Instant>,
    /// When the first probe of the current run of failures started.
    failing_since: Option<Instant>,
    next_due: Instant,
    in_flight: bool,
    /// Which ready endpoint of a Service the next probe goes to: callers
    /// are spread over all of them, and so are the probes.
    turn: usize,
    workload: Resolved,
}

impl Check {
    /// The Deployment an incident is opened for, once known.
    fn workload(&self, key: &CheckKey) -> Option<String> {
        match &key.target {
            Target::Url { workload, .. } => Some(workload.clone()),
            Target::Service { .. } => self.workload.as_ref()?.1.clone().ok(),
        }
    }
}

/// A finished probe.
struct Done {
    key: CheckKey,
    started: Instant,
    outcome: Outcome,
    workload: Resolved,
}

async fn run(ctx: Arc<Context>) {
    // The same TLS crypto provider as the Kubernetes client; installing it
    // again is a no-op.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let seeds = std::collections::hash_map::RandomState::new();
    let mut rolls: u64 = 0;
    let mut seed = move || {
        rolls += 1;
        seeds.hash_one(rolls)
    };
    let limit = Arc::new(Semaphore::new(CONCURRENCY));
    let (tx, mut rx) = mpsc::channel::<Done>(CONCURRENCY * 4);
    let mut state: BTreeMap<CheckKey, Check> = BTreeMap::new();
    let mut clients: BTreeMap<i64, reqwest::Client> = BTreeMap::new();
    // The loop turns every 250 ms: a failed write waits a little.
    let mut writer = ConditionWriter::new(
        HEALTH_CHECKS_AVAILABLE,
        Rewrite::Anything,
        Duration::from_secs(5),
    );
    let mut network_down = false;
    let mut last_sync: Option<Instant> = None;
    let mut api_server: Option<(Instant, Arc<ApiServer>)> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    info!("health checks started");
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Some(done) = rx.recv() => {
                let s = seed();
                network_down = judge_probe(&ctx, &mut state, done, network_down, s).await;
                continue;
            }
        }
        let now = Instant::now();
        if last_sync.is_none_or(|t| now.duration_since(t) >= RESYNC) {
            last_sync = Some(now);
            sync(&ctx, &mut state, &mut seed, now);
            network_down = network_down
                && operator_network_down(state.values().filter_map(|c| c.last.as_ref()));
            let policies: BTreeSet<(String, String)> = state
                .keys()
                .map(|k| (k.namespace.clone(), k.policy.clone()))
                .collect();
            writer.retain(|k| policies.contains(k));
            if !state.is_empty()
                && api_server
                    .as_ref()
                    .is_none_or(|(at, _)| at.elapsed() >= API_SERVER_TTL)
            {
                api_server = Some((
                    Instant::now(),
                    Arc::new(api_server_addresses(&ctx.client).await),
                ));
            }
        }
        let api = api_server
            .as_ref()
            .map(|(_, a)| a.clone())
            .unwrap_or_default();
        for (key, check) in state.iter_mut() {
            if check.in_flight || check.next_due > now {
                continue;
            }
            let http = match client_for(&mut clients, check.spec.timeout_seconds) {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "cannot build the health-check HTTP client");
                    check.next_due = now + next_delay(check.spec.period_seconds, seed());
                    continue;
                }
            };
            check.in_flight = true;
            check.turn = check.turn.wrapping_add(1);
            let job = probe(
                ctx.client.clone(),
                Reach {
                    allow: ctx.allowlist.clone(),
                    api_server: api.clone(),
                },
                http,
                key.clone(),
                check.spec.clone(),
                check.turn,
                check.workload.clone(),
            );
            let (tx, limit) = (tx.clone(), limit.clone());
            tokio::spawn(async move {
                // The semaphore is never closed; a probe without a permit
                // would only run unbounded.
                let Ok(permit) = limit.acquire_owned().await else {
                    return;
                };
                let done = job.await;
                // The next probe may start while this result waits its turn.
                drop(permit);
                let _ = tx.send(done).await;
            });
        }
        update_conditions(&ctx, &state, network_down, &mut writer).await;
    }
}

/// Follows the policies: new triggers get a check (first probe within a
/// tenth of its period), removed ones lose theirs and their readings.
fn sync(
    ctx: &Context,
    state: &mut BTreeMap<CheckKey, Check>,
    seed: &mut impl FnMut() -> u64,
    now: Instant,
) {
    let policies = ctx.policies.state();
    let wanted = checks(policies.iter().map(|p| p.as_ref()));
    state.retain(|k, _| wanted.contains_key(k));
    for (key, spec) in wanted {
        match state.get_mut(&key) {
            Some(c) => c.spec = spec,
            None => {
                debug!(namespace = %key.namespace, policy = %key.policy, target = %key.target, "health check added");
                let first = now + jitter(spec.period_seconds, seed());
                state.insert(
                    key,
                    Check {
                        spec,
                        failures: 0,
                        last: None,
                        probed_at: None,
                        failing_since: None,
                        next_due: first,
                        in_flight: false,
                        turn: 0,
                        workload: None,
                    },
                );
            }
        }
    }
    let subjects: BTreeSet<(String, String, String)> = state
        .iter()
        .filter_map(|(k, c)| Some((k.namespace.clone(), k.policy.clone(), c.workload(k)?)))
        .collect();
    ctx.board.retain(|s| {
        s.kind != SignalKind::HealthCheck
            || subjects.contains(&(s.namespace.clone(), s.policy.clone(), s.workload.clone()))
    });
}

/// Why a check's reading is Unknown although it was probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Withheld {
    /// Judged as measured.
    No,
    /// Nothing connects anywhere: the operator's network.
    NetworkDown,
    /// About to fire on a connection failure; the other checks are probed
    /// first to rule out the operator's network.
    Confirming,
}

/// Records a probe's outcome, judges the check and posts the reading.
/// Returns whether the operator's network is down now.
async fn judge_probe(
    ctx: &Context,
    state: &mut BTreeMap<CheckKey, Check>,
    done: Done,
    was_down: bool,
    seed: u64,
) -> bool {
    let Some(check) = state.get_mut(&done.key) else {
        // The trigger was removed while its probe ran.
        return was_down;
    };
    check.in_flight = false;
    check.failures = count(check.failures, &done.outcome);
    match done.outcome.passed() {
        Some(true) => check.failing_since = None,
        Some(false) => check.failing_since = check.failing_since.or(Some(done.started)),
        None => {}
    }
    check.probed_at = Some(done.started);
    check.last = Some(done.outcome);
    check.next_due = done.started + next_delay(check.spec.period_seconds, seed);
    if done.workload.is_some() {
        check.workload = done.workload;
    }
    let down = operator_network_down(state.values().filter_map(|c| c.last.as_ref()));
    let targets = state.len();
    if down && !was_down {
        warn!(
            checks = targets,
            "every health check failed to connect: the operator's own network is the likely fault; readings are Unknown"
        );
        // Not knowing replaces every check's judgement at once.
        for (key, check) in state.iter() {
            post(ctx, key, check, Withheld::NetworkDown, targets).await;
        }
        return down;
    }
    if !down && was_down {
        info!("a health check connected again; judging the checks again");
    }
    let withheld = if down {
        Withheld::NetworkDown
    } else if confirm_first(state, &done.key) {
        Withheld::Confirming
    } else {
        Withheld::No
    };
    if let Some(check) = state.get(&done.key) {
        post(ctx, &done.key, check, withheld, targets).await;
    }
    down
}

/// Whether a check about to fire on a connection failure must wait for the
/// other checks; if so, those not probed since it began failing are probed
/// now.
fn confirm_first(state: &mut BTreeMap<CheckKey, Check>, key: &CheckKey) -> bool {
    let Some(check) = state.get(key) else {
        return false;
    };
    let (Some(outcome), Some(since)) = (check.last.as_ref(), check.failing_since) else {
        return false;
    };
    if !outcome.connection_level()
        || judge(check.failures, check.spec.failure_threshold, outcome, false) != Verdict::Firing
    {
        return false;
    }
    let others = state.iter().filter(|(k, _)| *k != key);
    if !awaits_other_checks(since, others.map(|(_, c)| c.probed_at)) {
        return false;
    }
    let now = Instant::now();
    for (k, c) in state.iter_mut() {
        if k != key && c.probed_at.is_none_or(|at| at < since) {
            c.next_due = c.next_due.min(now);
        }
    }
    true
}

/// Posts a check's reading, when it has a workload to post it for.
async fn post(ctx: &Context, key: &CheckKey, check: &Check, withheld: Withheld, targets: usize) {
    let (Some(workload), Some(outcome)) = (check.workload(key), check.last.as_ref()) else {
        return;
    };
    let threshold = check.spec.failure_threshold;
    let verdict = judge(check.failures, threshold, outcome, withheld != Withheld::No);
    let measured = summary(outcome, check.failures, threshold);
    let summary = match withheld {
        Withheld::No => measured,
        Withheld::NetworkDown => format!(
            "not judged: none of the operator's {targets} health checks could connect, so the fault is likely \
             the operator's own network (last: {measured})"
        ),
        Withheld::Confirming => format!(
            "not judged yet: probing the other health checks first, to tell this service being down from the \
             operator's own network (last: {measured})"
        ),
    };
    if verdict == Verdict::Firing {
        debug!(namespace = %key.namespace, %workload, %summary, "health check failing");
    }
    let reading = Reading {
        subject: Subject {
            namespace: key.namespace.clone(),
            policy: key.policy.clone(),
            kind: SignalKind::HealthCheck,
            workload,
            workload_kind: crate::crd::WorkloadKind::Deployment,
        },
        verdict,
        summary,
        value: Some(f64::from(check.failures)),
        threshold: Some(f64::from(threshold)),
        at: ctx.clock.now(),
    };
    if let Err(e) = crate::scout::report(ctx, reading).await {
        warn!(error = %e, namespace = %key.namespace, target = %key.target, "could not record the health check's reading");
    }
}

/// Writes each policy's HealthChecksAvailable condition when what it
/// should say changed.
async fn update_conditions(
    ctx: &Context,
    state: &BTreeMap<CheckKey, Check>,
    network_down: bool,
    writer: &mut ConditionWriter,
) {
    let mut per_policy: BTreeMap<(String, String), Vec<(&CheckKey, &Check)>> = BTreeMap::new();
    for (k, c) in state {
        per_policy
            .entry((k.namespace.clone(), k.policy.clone()))
            .or_default()
            .push((k, c));
    }
    let now = Instant::now();
    for ((ns, name), list) in per_policy {
        let Some(policy) = ctx
            .policies
            .get(&kube::runtime::reflector::ObjectRef::new(&name).within(&ns))
        else {
            continue;
        };
        // A new policy of the same name, or a new generation (whose
        // observedGeneration the condition carries), is written afresh.
        let uid = format!(
            "{}/{}",
            policy.uid().unwrap_or_default(),
            policy.metadata.generation.unwrap_or_default()
        );
        let wanted = condition_for(&list, network_down);
        writer
            .write(&ctx.client, &(ns, name), &uid, &wanted, now)
            .await;
    }
}

/// What a policy's condition says about its checks.
fn condition_for(list: &[(&CheckKey, &Check)], network_down: bool) -> Wanted {
    if network_down {
        return Wanted {
            status: ConditionStatus::False,
            reason: "OperatorNetworkUnreachable",
            message: "every health check of the operator failed to connect at once, so the fault is \
                      likely the operator's own network, not every service: check the operator pod's \
                      egress (NetworkPolicy, proxy, firewall) and that it can reach the services' \
                      endpoints; readings are Unknown and open no incident until a probe connects"
                .into(),
        };
    }
    let refused: Vec<String> = list
        .iter()
        .filter_map(|(_, c)| match &c.last {
            Some(Outcome::NotAllowed { detail }) => Some(detail.clone()),
            _ => None,
        })
        .collect();
    if !refused.is_empty() {
        return Wanted {
            status: ConditionStatus::False,
            reason: "HealthCheckTargetNotAllowed",
            message: refused.join("; "),
        };
    }
    let problems: Vec<String> = list
        .iter()
        .filter_map(|(_, c)| c.workload.as_ref()?.1.clone().err())
        .collect();
    if !problems.is_empty() {
        return Wanted {
            status: ConditionStatus::False,
            reason: "TargetUnresolved",
            message: problems.join("; "),
        };
    }
    Wanted {
        status: ConditionStatus::True,
        reason: "Probing",
        message: format!("probing {} health check(s)", list.len()),
    }
}

/// One HTTP client per timeout: the connect timeout is the client's.
fn client_for(
    clients: &mut BTreeMap<i64, reqwest::Client>,
    timeout_seconds: i64,
) -> Result<reqwest::Client, reqwest::Error> {
    if let Some(c) = clients.get(&timeout_seconds) {
        return Ok(c.clone());
    }
    let c = builder(timeout_seconds).build()?;
    clients.insert(timeout_seconds, c.clone());
    Ok(c)
}

/// The settings every probe's client shares.
fn builder(timeout_seconds: i64) -> reqwest::ClientBuilder {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        let same_host = attempt.previous().first().is_some_and(|first| {
            first.host_str() == attempt.url().host_str()
                && first.port_or_known_default() == attempt.url().port_or_known_default()
        });
        if same_host && attempt.previous().len() <= MAX_REDIRECTS {
            attempt.follow()
        } else {
            // The redirect's own status is then the answer judged.
            attempt.stop()
        }
    });
    reqwest::Client::builder()
        .connect_timeout(probe_timeout(timeout_seconds))
        .redirect(policy)
        // Probes go straight to the service, as its in-cluster callers do.
        .no_proxy()
        .user_agent(concat!(
            "sre-space-health-check/",
            env!("CARGO_PKG_VERSION")
        ))
}

/// What a probe may reach: the allow-list, and where the API server is.
struct Reach {
    allow: Arc<Shared>,
    api_server: Arc<ApiServer>,
}

/// Where the Kubernetes API server listens: the `kubernetes` Service of
/// `default` (its cluster addresses, and its endpoints with their ports)
/// and, in a pod, `KUBERNETES_SERVICE_HOST`. What cannot be read is left
/// out (an operator bound to one namespace may not read `default`).
async fn api_server_addresses(client: &kube::Client) -> ApiServer {
    let mut out = ApiServer::default();
    if let Ok(host) = std::env::var("KUBERNETES_SERVICE_HOST")
        && let Ok(ip) = host.parse()
    {
        out.any_port.push(ip);
    }
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    if let Ok(Ok(Some(svc))) =
        tokio::time::timeout(API_TIMEOUT, services.get_opt("kubernetes")).await
    {
        let spec = svc.spec.unwrap_or_default();
        for ip in spec
            .cluster_ips
            .unwrap_or_default()
            .into_iter()
            .chain(spec.cluster_ip)
        {
            if let Ok(ip) = ip.parse() {
                out.any_port.push(ip);
            }
        }
    }
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let lp = ListParams::default().labels("kubernetes.io/service-name=kubernetes");
    if let Ok(Ok(list)) = tokio::time::timeout(API_TIMEOUT, slices.list(&lp)).await {
        for slice in list.items {
            let ports: Vec<u16> = slice
                .ports
                .iter()
                .flatten()
                .filter_map(|p| p.port.and_then(|p| u16::try_from(p).ok()))
                .collect();
            for e in slice.endpoints.into_iter().flatten() {
                for a in e.addresses {
                    if let Ok(ip) = a.parse() {
                        out.sockets.extend(ports.iter().map(|p| (ip, *p)));
                    }
                }
            }
        }
    }
    out
}

/// The addresses a URL's host resolves to, each checked against the
/// allow-list, or why it may not be probed. A host name is looked up once
/// here, and the probe connects to exactly these addresses, so an answer
/// that changes between the check and the connection (DNS rebinding)
/// reaches nothing unchecked.
async fn resolve_url(
    client: &kube::Client,
    reach: &Reach,
    tenant: &Tenant,
    url: &str,
) -> Result<Option<(String, Vec<std::net::SocketAddr>)>, Outcome> {
    let refuse = |detail: String| Outcome::NotAllowed { detail };
    let allow = reach.allow.current();
    let planned = allow.plan_health_url(tenant, url).map_err(refuse)?;
    let port = planned.port;
    let host = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    let ips: Vec<std::net::IpAddr> = match &planned.route {
        Route::Address(ip) => vec![*ip],
        Route::Dns(name) => {
            let looked =
                tokio::time::timeout(API_TIMEOUT, tokio::net::lookup_host((name.as_str(), port)));
            match looked.await {
                Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
                Ok(Err(e)) => {
                    return Err(Outcome::Unreachable {
                        url: url.to_string(),
                        detail: format!("{name} did not resolve: {e}"),
                    });
                }
                Err(_) => {
                    return Err(Outcome::Unreachable {
                        url: url.to_string(),
                        detail: format!("looking up {name} timed out"),
                    });
                }
            }
        }
        Route::OwnService(svc) => {
            own_service_addresses(client, &tenant.namespace, svc, url).await?
        }
    };
    if ips.is_empty() {
        return Err(Outcome::Unreachable {
            url: url.to_string(),
            detail: format!("{host} has no address"),
        });
    }
    for ip in &ips {
        allow
            .check_address(tenant, *ip, port, &reach.api_server)
            .map_err(|why| refuse(format!("health check {url}: {why}")))?;
    }
    Ok(match planned.route {
        // An address in the URL: nothing to resolve.
        Route::Address(_) => None,
        _ => Some((
            host,
            ips.into_iter()
                .map(|ip| std::net::SocketAddr::new(ip, port))
                .collect(),
        )),
    })
}

/// The addresses of a Service of the policy's own namespace, from the API:
/// its cluster addresses, or a headless Service's ready endpoints. An
/// ExternalName Service is a name elsewhere, which only the allow-list may
/// open.
async fn own_service_addresses(
    client: &kube::Client,
    ns: &str,
    name: &str,
    url: &str,
) -> Result<Vec<std::net::IpAddr>, Outcome> {
    let unmeasured = |detail: String| Outcome::Unmeasured { detail };
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let svc = match tokio::time::timeout(API_TIMEOUT, services.get_opt(name)).await {
        Ok(Ok(Some(s))) => s,
        Ok(Ok(None)) => {
            return Err(unmeasured(format!(
                "{url}: Service {name} does not exist in namespace {ns}"
            )));
        }
        Ok(Err(e)) => return Err(unmeasured(format!("reading Service {name}: {e}"))),
        Err(_) => return Err(unmeasured(format!("reading Service {name} timed out"))),
    };
    let spec = svc.spec.unwrap_or_default();
    if spec.type_.as_deref() == Some("ExternalName") {
        return Err(Outcome::NotAllowed {
            detail: format!(
                "health check {url}: Service {name} is an ExternalName for {}; probe that host by its \
                 own name, once the operator's allow-list gives it to namespace {ns}",
                spec.external_name.unwrap_or_default()
            ),
        });
    }
    let cluster: Vec<std::net::IpAddr> = spec
        .cluster_ips
        .unwrap_or_default()
        .into_iter()
        .chain(spec.cluster_ip)
        .filter_map(|ip| ip.parse().ok())
        .collect();
    if !cluster.is_empty() {
        return Ok(cluster);
    }
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={name}"));
    match tokio::time::timeout(API_TIMEOUT, slices.list(&lp)).await {
        Ok(Ok(list)) => Ok(list
            .items
            .into_iter()
            .flat_map(|s| s.endpoints.into_iter().flatten())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .flat_map(|e| e.addresses)
            .filter_map(|a| a.parse().ok())
            .collect()),
        Ok(Err(e)) => Err(unmeasured(format!("listing EndpointSlices of {name}: {e}"))),
        Err(_) => Err(unmeasured(format!(
            "listing EndpointSlices of {name} timed out"
        ))),
    }
}

/// Probes a URL once the allow-list lets it, connecting only to the
/// addresses checked.
async fn probe_url(
    client: &kube::Client,
    reach: &Reach,
    ns: &str,
    http: &reqwest::Client,
    url: &str,
    spec: &HealthCheckTrigger,
) -> Outcome {
    let tenant = reach.allow.tenant(client, ns).await;
    match resolve_url(client, reach, &tenant, url).await {
        Err(outcome) => outcome,
        Ok(None) => get(http, url, spec).await,
        Ok(Some((host, addrs))) => {
            match builder(spec.timeout_seconds)
                .resolve_to_addrs(&host, &addrs)
                .build()
            {
                Ok(pinned) => get(&pinned, url, spec).await,
                Err(e) => Outcome::Unmeasured {
                    detail: format!("cannot build the client for {url}: {}", innermost(&e)),
                },
            }
        }
    }
}

/// One probe of a check, with what it learnt of the workload behind a
/// Service.
async fn probe(
    client: kube::Client,
    reach: Reach,
    http: reqwest::Client,
    key: CheckKey,
    spec: HealthCheckTrigger,
    turn: usize,
    cached: Resolved,
) -> Done {
    let started = Instant::now();
    let (outcome, workload) = match &key.target {
        Target::Url { url, .. } => (
            probe_url(&client, &reach, &key.namespace, &http, url, &spec).await,
            None,
        ),
        Target::Service { name, port } => {
            probe_service(
                &client,
                &reach,
                &http,
                &key.namespace,
                name,
                *port,
                &spec,
                turn,
                cached,
            )
            .await
        }
    };
    Done {
        key,
        started,
        outcome,
        workload,
    }
}

#[allow(clippy::too_many_arguments)]
async fn probe_service(
    client: &kube::Client,
    reach: &Reach,
    http: &reqwest::Client,
    ns: &str,
    name: &str,
    port: i32,
    spec: &HealthCheckTrigger,
    turn: usize,
    cached: Resolved,
) -> (Outcome, Resolved) {
    let unmeasured = |detail: String| Outcome::Unmeasured { detail };
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let service = match tokio::time::timeout(API_TIMEOUT, services.get_opt(name)).await {
        Ok(Ok(Some(s))) => s,
        Ok(Ok(None)) => {
            let why = format!("Service {name} does not exist in namespace {ns}");
            return (unmeasured(why.clone()), Some((Instant::now(), Err(why))));
        }
        Ok(Err(e)) => return (unmeasured(format!("reading Service {name}: {e}")), cached),
        Err(_) => {
            return (
                unmeasured(format!("reading Service {name} timed out")),
                cached,
            );
        }
    };
    // A port the Service lacks is the policy's mistake: said in the
    // condition, never blamed on the service.
    if let Err(why) = super::service_port(&service, port) {
        return (unmeasured(why.clone()), Some((Instant::now(), Err(why))));
    }
    let workload = match cached {
        Some((at, w)) if at.elapsed() < WORKLOAD_TTL => Some((at, w)),
        _ => {
            let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
            match tokio::time::timeout(API_TIMEOUT, deployments.list(&ListParams::default())).await
            {
                Ok(Ok(list)) => Some((Instant::now(), workload_behind(&service, &list.items))),
                Ok(Err(e)) => {
                    return (unmeasured(format!("listing Deployments: {e}")), None);
                }
                Err(_) => return (unmeasured("listing Deployments timed out".into()), None),
            }
        }
    };
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={name}"));
    let slices = match tokio::time::timeout(API_TIMEOUT, slices.list(&lp)).await {
        Ok(Ok(list)) => list.items,
        Ok(Err(e)) => {
            return (
                unmeasured(format!("listing EndpointSlices of {name}: {e}")),
                workload,
            );
        }
        Err(_) => {
            return (
                unmeasured(format!("listing EndpointSlices of {name} timed out")),
                workload,
            );
        }
    };
    let outcome = match ready_endpoints(&service, port, &slices) {
        Ok(endpoints) => {
            let (host, p) = &endpoints[turn % endpoints.len()];
            let url = endpoint_url(host, *p, &spec.path);
            // The namespace's own endpoints are allowed, but an
            // EndpointSlice is written by hand as easily as a URL: its
            // addresses pass the same address rules.
            let ip = host.trim_start_matches('[').trim_end_matches(']').parse();
            let tenant = reach.allow.tenant(client, ns).await;
            match ip.map(|ip| {
                reach
                    .allow
                    .current()
                    .check_address(&tenant, ip, *p, &reach.api_server)
            }) {
                Ok(Ok(())) => get(http, &url, spec).await,
                Ok(Err(why)) => Outcome::NotAllowed {
                    detail: format!("Service {name}: endpoint {url}: {why}"),
                },
                Err(_) => Outcome::NotAllowed {
                    detail: format!("Service {name}: endpoint address {host} is not an IP address"),
                },
            }
        }
        Err(detail) => Outcome::NoEndpoint { detail },
    };
    (outcome, workload)
}

/// One GET, judged by its status; the body is not read.
async fn get(http: &reqwest::Client, url: &str, spec: &HealthCheckTrigger) -> Outcome {
    let timeout = probe_timeout(spec.timeout_seconds);
    let expected = u16::try_from(spec.expected_status).unwrap_or(200);
    let started = std::time::Instant::now();
    // The connect timeout (the client's) ends first when nothing answers
    // the connection; this one when the service connects and then hangs.
    let sent = tokio::time::timeout(timeout + Duration::from_millis(250), http.get(url).send());
    match sent.await {
        Ok(Ok(response)) => Outcome::Answered {
            url: url.to_string(),
            status: response.status().as_u16(),
            expected,
            millis: started.elapsed().as_millis() as u64,
        },
        Ok(Err(e)) if e.is_connect() => Outcome::Unreachable {
            url: url.to_string(),
            detail: if e.is_timeout() {
                format!("no connection within {} s", spec.timeout_seconds)
            } else {
                innermost(&e)
            },
        },
        Ok(Err(e)) if e.is_timeout() => Outcome::TimedOut {
            url: url.to_string(),
            seconds: spec.timeout_seconds,
        },
        Ok(Err(e)) if e.is_builder() => Outcome::Unmeasured {
            detail: format!("{url} cannot be requested: {}", innermost(&e)),
        },
        Ok(Err(e)) => Outcome::Broken {
            url: url.to_string(),
            detail: innermost(&e),
        },
        Err(_) => Outcome::TimedOut {
            url: url.to_string(),
            seconds: spec.timeout_seconds,
        },
    }
}

/// The root cause of an error, which is what a person needs ("Connection
/// refused (os error 111)"), not the wrapping ("error sending request").
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// A probe's timeout within the schema's bounds, which a CRD installed by an
/// older version may not have enforced.
fn probe_timeout(seconds: i64) -> Duration {
    crate::limits::std_seconds(seconds, 1, crate::limits::MAX_PROBE_TIMEOUT_SECONDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(workload: Resolved) -> Check {
        Check {
            spec: serde_json::from_value(serde_json::json!({ "url": "http://a/" }))
                .expect("a trigger"),
            failures: 0,
            last: None,
            probed_at: None,
            failing_since: None,
            next_due: Instant::now(),
            in_flight: false,
            turn: 0,
            workload,
        }
    }

    fn key(port: i32) -> CheckKey {
        CheckKey {
            namespace: "shop".into(),
            policy: "p".into(),
            target: Target::Service {
                name: "user-service".into(),
                port,
            },
        }
    }

    #[test]
    fn the_condition_says_what_to_fix() {
        let (k1, k2) = (key(1), key(2));
        let fine = check(Some((Instant::now(), Ok("user-service".into()))));
        let twin = check(Some((
            Instant::now(),
            Err("the selector app=user of Service user-service matches 2 Deployments".into()),
        )));
        let probing = condition_for(&[(&k1, &fine), (&k2, &check(None))], false);
        assert_eq!(
            (probing.status, probing.reason),
            (ConditionStatus::True, "Probing")
        );
        assert_eq!(probing.message, "probing 2 health check(s)");
        let unresolved = condition_for(&[(&k1, &fine), (&k2, &twin)], false);
        assert_eq!(
            (unresolved.status, unresolved.reason),
            (ConditionStatus::False, "TargetUnresolved")
        );
        assert!(unresolved.message.contains("matches 2 Deployments"));
        let mut refused = check(Some((Instant::now(), Ok("user-service".into()))));
        refused.last = Some(Outcome::NotAllowed {
            detail: "health check http://169.254.169.254/: address 169.254.169.254 (port 80) is not on the allow-list".into(),
        });
        let not_allowed = condition_for(&[(&k1, &refused), (&k2, &twin)], false);
        assert_eq!(
            (not_allowed.status, not_allowed.reason),
            (ConditionStatus::False, "HealthCheckTargetNotAllowed"),
            "a refused target is said first: it is the policy's to fix"
        );
        assert!(not_allowed.message.contains("169.254.169.254"));
        let down = condition_for(&[(&k1, &fine), (&k2, &twin)], true);
        assert_eq!(
            (down.status, down.reason),
            (ConditionStatus::False, "OperatorNetworkUnreachable")
        );
        assert!(down.message.contains("operator's own network"));
    }
}
