//! Sequences the stages: the Scout on pods, the incident state machine, and
//! the policy controller, sharing one Context.

pub mod approval;
mod claims;
mod incident;
pub mod lease;
mod ledger;
mod report;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};

use crate::crd::{Incident, RemediationPolicy, WorkloadRef};
use crate::{Error, FIELD_MANAGER, Result};

/// Settings of the operator process (not of a policy).
#[derive(Clone, Debug)]
pub struct Config {
    /// The global circuit breaker: at most this many actions ...
    pub breaker_limit: usize,
    /// ... in this window, across all policies.
    pub breaker_window: Duration,
    /// Test hook: abort the process right after an action is recorded and
    /// before it is taken, to prove a restarted operator takes it once.
    pub crash_after_record: bool,
    /// Watch and act in this namespace only; all namespaces when None.
    pub namespace: Option<String>,
    /// The percentage of the breaker's limit one namespace may use, so a
    /// storm in one namespace leaves actions for the others.
    pub namespace_share_percent: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            breaker_limit: 20,
            breaker_window: Duration::from_secs(600),
            crash_after_record: false,
            namespace: None,
            namespace_share_percent: 50,
        }
    }
}

impl Config {
    /// Reads `SRE_SPACE_WATCH_NAMESPACE`, `SRE_SPACE_BREAKER_LIMIT`,
    /// `SRE_SPACE_BREAKER_WINDOW_SECONDS`,
    /// `SRE_SPACE_BREAKER_NAMESPACE_SHARE_PERCENT` and the test hook
    /// `SRE_SPACE_TEST_CRASH_AFTER_RECORD`.
    pub fn from_env() -> Result<Self> {
        let mut c = Self::default();
        let num = |name: &str| -> Result<Option<u64>> {
            match std::env::var(name) {
                Ok(v) => v
                    .parse()
                    .map(Some)
                    .map_err(|_| Error::Invalid(format!("{name}={v:?} is not a whole number"))),
                Err(_) => Ok(None),
            }
        };
        if let Some(n) = num("SRE_SPACE_BREAKER_LIMIT")? {
            if n == 0 {
                // A policy's maxActionsPerHour: 0 is the way to stop actions.
                return Err(Error::Invalid(
                    "SRE_SPACE_BREAKER_LIMIT=0 would pause every action forever; use at least 1 (to stop one policy, set its maxActionsPerHour to 0)".into(),
                ));
            }
            c.breaker_limit = n as usize;
        }
        if let Some(n) = num("SRE_SPACE_BREAKER_WINDOW_SECONDS")? {
            c.breaker_window = Duration::from_secs(n);
        }
        if let Some(n) = num("SRE_SPACE_BREAKER_NAMESPACE_SHARE_PERCENT")? {
            if !(1..=100).contains(&n) {
                return Err(Error::Invalid(format!(
                    "SRE_SPACE_BREAKER_NAMESPACE_SHARE_PERCENT={n} must be 1 to 100 (100: one namespace may use the whole breaker)"
                )));
            }
            c.namespace_share_percent = n;
        }
        c.crash_after_record =
            std::env::var("SRE_SPACE_TEST_CRASH_AFTER_RECORD").is_ok_and(|v| v == "1");
        c.namespace = std::env::var("SRE_SPACE_WATCH_NAMESPACE")
            .ok()
            .filter(|n| !n.is_empty());
        Ok(c)
    }

    /// The most actions one namespace may take in the breaker's window: its
    /// share of the limit, at least one. None when one namespace is watched:
    /// there is no other to leave room for.
    pub fn namespace_limit(&self) -> Option<usize> {
        if self.namespace.is_some() {
            return None;
        }
        let share = self
            .breaker_limit
            .saturating_mul(self.namespace_share_percent as usize)
            / 100;
        Some(share.max(1))
    }

    fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub pods: Store<Pod>,
    pub replicasets: Store<ReplicaSet>,
    pub policies: Store<RemediationPolicy>,
    pub incidents: Store<Incident>,
    /// The language model the Brain may consult, if one is configured.
    pub model: Option<(Arc<dyn crate::llm::ChatModel>, crate::llm::LlmConfig)>,
    pub tokens: crate::llm::TokenLedger,
    /// GitHub, when credentials are configured. It serves a namespace only
    /// through `github_for`, as far as the allow-list says.
    pub github: Option<crate::github::GitHub>,
    /// The operator-side allow-list: repositories and health-check hosts
    /// per namespace.
    pub allowlist: Arc<crate::allowlist::Shared>,
    pub metrics: Arc<crate::telemetry::Metrics>,
    /// Whether this replica may act (the Lease is ours).
    pub leadership: lease::Leadership,
    /// The latest readings of the signals the operator measures itself.
    pub board: crate::scout::measured::Board,
    /// Where traces are read from, when a trace store is configured.
    pub traces: Option<Arc<dyn crate::traces::TraceStore>>,
    recorder: Recorder,
    /// Actions this process took.
    ledger: ledger::ActionLedger,
    /// The latest automatic change to each workload, by incident.
    pub claims: claims::WorkloadClaims,
}

impl Context {
    /// Publishes an event; failing to is logged, never fatal.
    pub async fn publish(&self, event: &Event, on: &ObjectReference) {
        // Notes quote signals and diagnoses: redacted as they leave.
        let event = Event {
            type_: event.type_,
            reason: event.reason.clone(),
            note: event.note.as_deref().map(crate::redact::string),
            action: event.action.clone(),
            secondary: event.secondary.clone(),
        };
        if let Err(e) = self.recorder.publish(&event, on).await {
            warn!(error = %e, reason = %event.reason, "could not publish event");
        }
    }

    /// The workload a pod belongs to, from the ReplicaSet store (or the API
    /// when the store has not seen the ReplicaSet yet).
    pub async fn owner_of(&self, pod: &Pod) -> Result<Option<WorkloadRef>> {
        let ns = pod.namespace().unwrap_or_default();
        let rs_name = pod
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true) && o.kind == "ReplicaSet")
            .map(|o| o.name.clone());
        let rs = match rs_name {
            Some(name) => match self.replicasets.get(&ObjectRef::new(&name).within(&ns)) {
                Some(rs) => Some((*rs).clone()),
                None => {
                    Api::<ReplicaSet>::namespaced(self.client.clone(), &ns)
                        .get_opt(&name)
                        .await?
                }
            },
            None => None,
        };
        Ok(crate::workload::owner_of_pod(pod, |_| rs.clone()))
    }

    /// The workload a pod belongs to, from the stores only (for the hot
    /// paths that look at many pods).
    pub fn cached_owner_of(&self, pod: &Pod) -> Option<WorkloadRef> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        crate::workload::owner_of_pod(pod, |name| {
            self.replicasets.get(&ObjectRef::new(name).within(ns))
        })
    }

    /// The pods of a workload in the store. Incidents being verified ask
    /// this every few seconds, so it copies no ReplicaSet and no pod.
    pub fn pods_of(&self, ns: &str, workload: &WorkloadRef) -> Vec<Arc<Pod>> {
        self.pods
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
            .filter(|p| self.cached_owner_of(p).as_ref() == Some(workload))
            .collect()
    }

    /// The namespace as the allow-list sees it.
    pub async fn tenant(&self, ns: &str) -> crate::allowlist::Tenant {
        self.allowlist.tenant(&self.client, ns).await
    }

    /// The GitHub client serving one namespace, when credentials are
    /// configured.
    pub async fn github_for(&self, ns: &str) -> Option<crate::github::GitHub> {
        let gh = self.github.as_ref()?;
        Some(gh.for_tenant(self.tenant(ns).await))
    }

    /// Notes an action taken, for the rate limit and the breaker; `action`
    /// (`namespace/incident/id`) counts once, also when it was reserved.
    pub fn note_action(&self, policy_key: String, action: String, at: Timestamp) {
        self.ledger.note(policy_key, action, at);
    }

    /// Takes a place for an automatic action under the breaker and the
    /// namespace's share, atomically; false when they filled meanwhile.
    pub fn reserve_action(
        &self,
        policy_key: String,
        action: String,
        at: Timestamp,
        limits: &ledger::BreakerLimits,
    ) -> bool {
        self.ledger.reserve(policy_key, action, at, limits)
    }

    /// Actions this process took since `since`, under one policy or all.
    pub fn ledger_count(&self, since: Timestamp, policy_key: Option<&str>) -> usize {
        self.ledger.count(since, policy_key)
    }

    /// Actions this process took since `since` in one namespace.
    pub fn ledger_count_in_namespace(&self, since: Timestamp, namespace: &str) -> usize {
        self.ledger.count_in_namespace(since, namespace)
    }
}

/// Runs a reconcile inside a span (exported as a trace when OTLP is
/// configured) and records how long it took.
async fn timed<K: kube::Resource>(
    ctx: Arc<Context>,
    controller: &'static str,
    object: Arc<K>,
    reconcile: impl std::future::Future<Output = Result<Action>>,
) -> Result<Action> {
    use tracing::Instrument;
    let span = tracing::info_span!(
        "reconcile",
        controller,
        namespace = object.meta().namespace.as_deref().unwrap_or(""),
        object = object.meta().name.as_deref().unwrap_or(""),
        otel.status_code = tracing::field::Empty,
    );
    let started = std::time::Instant::now();
    let result = reconcile.instrument(span.clone()).await;
    if result.is_err() {
        span.record("otel.status_code", "ERROR");
    }
    let labels = crate::telemetry::ControllerLabels {
        controller: controller.into(),
    };
    ctx.metrics
        .reconcile_seconds
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    result
}

fn error_policy<K>(_obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    let kind = std::any::type_name::<K>()
        .rsplit("::")
        .next()
        .unwrap_or("?")
        .to_string();
    ctx.metrics
        .reconcile_errors
        .get_or_create(&crate::telemetry::ControllerLabels { controller: kind })
        .inc();
    if error.is_conflict() {
        return Action::requeue(Duration::from_millis(200));
    }
    warn!(%error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// A watched kind: its store, the stream that keeps the store current (to
/// drive a Controller or to be drained), and a readiness flag that any number
/// of tasks may await. (The store's own readiness is a single-waiter channel,
/// already awaited by the Controller it feeds.)
struct Reflected<K: kube::Resource + 'static>
where
    K::DynamicType: std::hash::Hash + Eq,
{
    store: Store<K>,
    stream: futures::stream::BoxStream<'static, std::result::Result<K, watcher::Error>>,
    ready: tokio::sync::watch::Receiver<bool>,
}

fn reflect<K>(api: Api<K>, trim: fn(&mut K)) -> Reflected<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let (flag, ready) = tokio::sync::watch::channel(false);
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(trim),
    )
    .inspect(move |event| match event {
        Ok(watcher::Event::InitDone) => {
            flag.send_replace(true);
        }
        // 410 Gone: the resource version we resume from was compacted
        // away. The watcher lists again, and the reconcilers see every
        // object anew; nothing is lost.
        Err(watcher::Error::WatchError(status)) if status.code == 410 => {
            warn!(kind = K::kind(&()).as_ref(), gone = true, message = %status.message, "watch expired (410 Gone); listing again");
        }
        Err(e) => {
            warn!(kind = K::kind(&()).as_ref(), error = %e, "watch error; the watcher retries with backoff");
        }
        Ok(_) => {}
    })
    .touched_objects()
    .boxed();
    Reflected {
        store,
        stream,
        ready,
    }
}

/// What the stores need of an object: never its managed fields.
fn trim_managed_fields<K: kube::Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
}

/// What the stages read of a stored pod: its identity, labels, owners and
/// status. The spec and annotations are dropped from the store (the Brain
/// reads a pod fresh from the API when it needs more), which is most of a
/// pod's size.
fn trim_pod(p: &mut Pod) {
    trim_managed_fields(p);
    p.metadata.annotations = None;
    p.spec = None;
}

async fn until_ready(mut ready: tokio::sync::watch::Receiver<bool>, what: &str) -> Result<()> {
    ready
        .wait_for(|r| *r)
        .await
        .map(|_| ())
        .map_err(|_| Error::Invalid(format!("the {what} watch ended before it was ready")))
}

/// Runs the operator until it is told to stop.
pub async fn run(client: Client, config: Config) -> Result<()> {
    let model: Option<(Arc<dyn crate::llm::ChatModel>, crate::llm::LlmConfig)> =
        match crate::llm::LlmConfig::from_env()? {
            Some(mut c) => {
                if config.namespace.is_some() {
                    // One namespace watched: no other to leave room for.
                    c.namespace_share_percent = 100;
                }
                info!(base_url = %c.base_url, model = %c.model, "the Brain may consult a language model");
                Some((Arc::new(crate::llm::OpenAiModel::new(&c)?), c))
            }
            None => {
                info!("no language model configured; the Brain uses its rules");
                None
            }
        };
    let allowlist = crate::allowlist::Shared::from_env();
    let allowlist_task = allowlist.spawn_reloader();
    let github = match crate::github::GitHubConfig::from_env()? {
        Some(c) => {
            info!(api = %c.api_url, "incidents are reported to GitHub");
            Some(crate::github::GitHub::guarded(&c, allowlist.clone())?)
        }
        None => {
            info!("no GitHub credentials; issues and pull requests are previewed in the Incidents");
            None
        }
    };
    // Checked before anything starts: a dashboard open to the network
    // without a token is refused here, not after the leader election.
    let dashboard = crate::dashboard::DashboardConfig::from_env()?;
    let traces: Option<Arc<dyn crate::traces::TraceStore>> = match crate::traces::from_env()? {
        Some(jaeger) => {
            info!(query = %jaeger.base(), "the Brain and the trace triggers read traces from Jaeger");
            Some(Arc::new(jaeger))
        }
        None => {
            info!(
                "no trace store configured; diagnoses carry no trace evidence and trace triggers are Unknown"
            );
            None
        }
    };
    let metrics = Arc::new(crate::telemetry::Metrics::default());
    let incidents_controller =
        Controller::new(config.api::<Incident>(&client), watcher::Config::default())
            .shutdown_on_signal();
    if let Ok(addr) = std::env::var("SRE_SPACE_HTTP_ADDR") {
        let served = crate::telemetry::Served {
            metrics: metrics.clone(),
            incidents: incidents_controller.store(),
        };
        crate::telemetry::serve(addr, Arc::new(served)).await?;
    }
    // A follower is a healthy standby: ready, not acting.
    metrics.set_ready();
    let leadership = match lease::LeaseConfig::from_env()? {
        Some(cfg) => lease::lead(client.clone(), cfg).await?,
        None => lease::Leadership::sole(),
    };
    metrics.set_leader(true);
    let pods = reflect(config.api::<Pod>(&client), trim_pod);
    let policies = reflect(
        config.api::<RemediationPolicy>(&client),
        trim_managed_fields,
    );
    let replicasets = reflect(config.api::<ReplicaSet>(&client), trim_managed_fields);

    let instance = std::env::var("POD_NAME").unwrap_or_else(|_| "local".into());
    let ctx = Arc::new(Context {
        client: client.clone(),
        config,
        pods: pods.store.clone(),
        replicasets: replicasets.store.clone(),
        policies: policies.store.clone(),
        incidents: incidents_controller.store(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: Some(instance),
            },
        ),
        ledger: ledger::ActionLedger::default(),
        claims: claims::WorkloadClaims::default(),
        model,
        tokens: crate::llm::TokenLedger::default(),
        github,
        allowlist,
        metrics: metrics.clone(),
        leadership,
        board: crate::scout::measured::Board::default(),
        traces,
    });
    // Next to the telemetry server, but it reads the Context's stores and
    // board, so only now.
    if let Some(config) = dashboard {
        crate::dashboard::serve(config, ctx.clone()).await?;
    }

    // Started in the order the stages need each other: the Scout reads
    // policies and owners; the incident state machine must see the pods
    // before it judges whether a signal cleared.
    let policy_controller = Controller::for_stream(policies.stream, policies.store)
        .shutdown_on_signal()
        .run(
            |o, c: Arc<Context>| {
                timed(
                    c.clone(),
                    "policy",
                    o.clone(),
                    crate::policy::reconcile(o, c),
                )
            },
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});
    let policy_task = tokio::spawn(policy_controller);
    let mut rs_stream = replicasets.stream;
    let rs_task = tokio::spawn(async move {
        // Errors are logged where the stream is made.
        while rs_stream.next().await.is_some() {}
    });
    until_ready(policies.ready, "policy").await?;
    until_ready(replicasets.ready, "ReplicaSet").await?;

    let scout = Controller::for_stream(pods.stream, pods.store)
        .shutdown_on_signal()
        .run(
            |o, c: Arc<Context>| {
                timed(c.clone(), "scout", o.clone(), crate::scout::reconcile(o, c))
            },
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});
    let scout_task = tokio::spawn(scout);
    until_ready(pods.ready, "pod").await?;

    let reporter = Controller::new(
        ctx.config.api::<Incident>(&client),
        watcher::Config::default(),
    )
    .shutdown_on_signal()
    .run(
        |o, c: Arc<Context>| timed(c.clone(), "report", o.clone(), report::reconcile(o, c)),
        error_policy,
        ctx.clone(),
    )
    .for_each(|_| async {});
    let report_task = tokio::spawn(reporter);
    let sources = crate::scout::spawn_sources(&ctx);

    info!(
        namespace = ctx.config.namespace.as_deref().unwrap_or("(all)"),
        "sre-space operator started"
    );
    // Errors are logged by error_policy; the streams only need draining.
    incidents_controller
        .run(
            |o, c: Arc<Context>| timed(c.clone(), "incident", o.clone(), incident::reconcile(o, c)),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {})
        .await;
    scout_task.abort();
    policy_task.abort();
    rs_task.abort();
    report_task.abort();
    for source in sources {
        source.abort();
    }
    if let Some(task) = allowlist_task {
        task.abort();
    }
    // A rolling upgrade stops the leader first: handing the Lease over now
    // lets the next replica lead at its next attempt, not a lease later.
    ctx.leadership.release().await;
    info!("sre-space operator stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_may_use_its_share_of_the_breaker_and_at_least_one_action() {
        let all = Config::default();
        assert_eq!(all.namespace_limit(), Some(10), "half of 20 by default");
        let tiny = Config {
            breaker_limit: 1,
            ..Config::default()
        };
        assert_eq!(tiny.namespace_limit(), Some(1));
        let whole = Config {
            namespace_share_percent: 100,
            ..Config::default()
        };
        assert_eq!(whole.namespace_limit(), Some(20));
        let one = Config {
            namespace: Some("shop".into()),
            ..Config::default()
        };
        assert_eq!(
            one.namespace_limit(),
            None,
            "watching one namespace, there is no other to leave room for"
        );
    }
}
