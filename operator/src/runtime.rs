//! Start-up: takes the process settings, builds each stage's inputs, starts
//! the watches and the reconcilers in the order the stages need each other,
//! and stops them. Every stage is a module of its own that takes only what
//! it uses; this module depends on all of them and none depends on it.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tracing::{info, warn};

use crate::cli::Settings;
use crate::config::Config;
use crate::crd::{Incident, RemediationPolicy};
use crate::publish::Publisher;
use crate::telemetry::Metrics;
use crate::workload::Workloads;
use crate::{Error, Result, lease};

/// The controllers the operator runs. Each one's name is the `controller`
/// label of both reconcile metrics and the field of its logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ControllerName {
    Policy,
    Scout,
    ScoutDeployment,
    ScoutStatefulSet,
    ScoutJob,
    Report,
    Notify,
    Incident,
    Jules,
}

impl ControllerName {
    #[cfg(test)]
    const ALL: [Self; 9] = [
        Self::Policy,
        Self::Scout,
        Self::ScoutDeployment,
        Self::ScoutStatefulSet,
        Self::ScoutJob,
        Self::Report,
        Self::Notify,
        Self::Incident,
        Self::Jules,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Policy => "policy",
            Self::Scout => "scout",
            Self::ScoutDeployment => "scout-deployment",
            Self::ScoutStatefulSet => "scout-statefulset",
            Self::ScoutJob => "scout-job",
            Self::Report => "report",
            Self::Notify => "notify",
            Self::Incident => "incident",
            Self::Jules => "jules",
        }
    }

    fn labels(self) -> crate::telemetry::ControllerLabels {
        crate::telemetry::ControllerLabels {
            controller: self.label().into(),
        }
    }
}

/// The namespace (empty for a cluster-scoped object) and name that a log
/// line about an object carries.
fn object_fields<K: kube::Resource>(object: &K) -> (&str, &str) {
    let meta = object.meta();
    (
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or(""),
    )
}

/// Runs a reconcile inside a span (exported as a trace when OTLP is
/// configured) and records how long it took.
async fn timed<K: kube::Resource>(
    metrics: &Metrics,
    controller: ControllerName,
    object: Arc<K>,
    reconcile: impl std::future::Future<Output = Result<Action>>,
) -> Result<Action> {
    use tracing::Instrument;
    let (namespace, name) = object_fields(object.as_ref());
    let span = tracing::info_span!(
        "reconcile",
        controller = controller.label(),
        namespace,
        object = name,
        otel.status_code = tracing::field::Empty,
    );
    let started = std::time::Instant::now();
    let result = reconcile.instrument(span.clone()).await;
    if result.is_err() {
        span.record("otel.status_code", "ERROR");
    }
    metrics
        .reconcile_seconds
        .get_or_create(&controller.labels())
        .observe(started.elapsed().as_secs_f64());
    metrics.reconciled(k8s_openapi::jiff::Timestamp::now());
    result
}

/// When a failed reconcile runs again: a conflict at once, an object that
/// is gone never (its deletion is an event of its own), anything else soon.
pub fn retry_after(error: &Error) -> Option<Duration> {
    if error.is_conflict() {
        return Some(Duration::from_millis(200));
    }
    if error.is_gone() {
        return None;
    }
    Some(Duration::from_secs(5))
}

/// Counts a failed reconcile and says when to try again; the log names the
/// object that failed.
fn error_policy<K: kube::Resource>(
    metrics: &Metrics,
    controller: ControllerName,
    object: &K,
    error: &Error,
) -> Action {
    metrics
        .reconcile_errors
        .get_or_create(&controller.labels())
        .inc();
    let (namespace, name) = object_fields(object);
    let controller = controller.label();
    match retry_after(error) {
        Some(after) if after < Duration::from_secs(1) => Action::requeue(after),
        Some(after) => {
            warn!(controller, namespace, name, %error, "reconcile failed; retrying");
            Action::requeue(after)
        }
        None => {
            info!(controller, namespace, name, %error, "the object is gone; not retrying");
            Action::await_change()
        }
    }
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
    reflect_and_tee(api, trim, |_| {})
}

/// As `reflect`, and `tee` sees every watch event before the store does.
fn reflect_and_tee<K>(
    api: Api<K>,
    trim: fn(&mut K),
    mut tee: impl FnMut(&watcher::Event<K>) + Send + 'static,
) -> Reflected<K>
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
            .modify(trim)
            .inspect(move |event| {
                if let Ok(event) = event {
                    tee(event);
                }
            }),
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

/// The policies, watched so that one this version cannot read does not stop
/// the watch of all the others: the policy controller sees every policy (an
/// unreadable one to say so in its status), the stages only readable ones.
fn reflect_policies(
    api: Api<DeserializeGuard<RemediationPolicy>>,
) -> (
    Reflected<DeserializeGuard<RemediationPolicy>>,
    Store<RemediationPolicy>,
) {
    let (readable, mut writer) = reflector::store::<RemediationPolicy>();
    let guarded = reflect_and_tee(api, trim_managed_fields, move |event| {
        if let Some(event) = readable_event(event) {
            writer.apply_watcher_event(&event);
        }
    });
    (guarded, readable)
}

/// A watch event of the readable policies: an unreadable policy is removed
/// (it may have been readable before this change), or skipped while the
/// watch lists.
fn readable_event(
    event: &watcher::Event<DeserializeGuard<RemediationPolicy>>,
) -> Option<watcher::Event<RemediationPolicy>> {
    use watcher::Event::{Apply, Delete, Init, InitApply, InitDone};
    let gone = |invalid: &kube::core::error_boundary::InvalidObject| RemediationPolicy {
        metadata: invalid.metadata.clone(),
        // Only its name counts, to remove it from the store.
        spec: crate::crd::RemediationPolicySpec {
            selector: Default::default(),
            triggers: vec![],
            actions: vec![],
            mode: Default::default(),
            guardrails: Default::default(),
            github: None,
            notify: None,
            runbooks: None,
        },
        status: None,
    };
    Some(match event {
        Apply(DeserializeGuard(Ok(p))) => Apply(p.clone()),
        Apply(DeserializeGuard(Err(invalid))) => Delete(gone(invalid)),
        Delete(DeserializeGuard(Ok(p))) => Delete(p.clone()),
        Delete(DeserializeGuard(Err(invalid))) => Delete(gone(invalid)),
        InitApply(DeserializeGuard(Ok(p))) => InitApply(p.clone()),
        InitApply(DeserializeGuard(Err(_))) => return None,
        Init => Init,
        InitDone => InitDone,
    })
}

/// What the stores need of an object: never its managed fields.
fn trim_managed_fields<K: kube::Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
}

/// What the stages read of a stored pod: its identity, labels, owners and
/// status, its node and restart policy. The rest of the spec and the
/// annotations are dropped from the store (the Brain reads a pod fresh from
/// the API when it needs more), which is most of a pod's size.
fn trim_pod(p: &mut Pod) {
    trim_managed_fields(p);
    p.metadata.annotations = None;
    // Of the spec (most of a pod's size), only what the Scout's readings
    // name: the node a NodeFailure blames, and whether a failed init
    // container will be run again.
    p.spec = p.spec.take().map(|s| k8s_openapi::api::core::v1::PodSpec {
        node_name: s.node_name,
        restart_policy: s.restart_policy,
        ..Default::default()
    });
}

/// What the Scout reads of a stored workload: its status, its pod
/// template's labels and its owners. The pod spec (most of its size) and the
/// annotations are dropped; a Job keeps its annotations, where the CronJob
/// controller writes when the run was scheduled.
fn trim_deployment(d: &mut Deployment) {
    trim_managed_fields(d);
    d.metadata.annotations = None;
    d.spec.template.spec = None;
}

fn trim_statefulset(s: &mut StatefulSet) {
    trim_managed_fields(s);
    s.metadata.annotations = None;
    s.spec.template.spec = None;
    s.spec.volume_claim_templates = None;
}

fn trim_job(j: &mut Job) {
    trim_managed_fields(j);
    if let Some(spec) = j.spec.as_mut() {
        spec.template.spec = None;
    }
}

async fn until_ready(mut ready: tokio::sync::watch::Receiver<bool>, what: &str) -> Result<()> {
    ready
        .wait_for(|r| *r)
        .await
        .map(|_| ())
        .map_err(|_| Error::Stopped(format!("the {what} watch ended before it was ready")))
}

/// The outside systems the stages may use, from the settings.
#[derive(Clone)]
struct Outside {
    model: Option<(Arc<dyn crate::llm::ChatModel>, crate::llm::LlmConfig)>,
    allowlist: Arc<crate::allowlist::Shared>,
    github: Option<crate::github::GitHub>,
    traces: Option<Arc<dyn crate::traces::TraceStore>>,
    prometheus: Option<Arc<dyn crate::prometheus::MetricStore>>,
    dashboard: Option<crate::dashboard::DashboardConfig>,
}

fn outside(settings: &mut Settings) -> Result<Outside> {
    let model: Option<(Arc<dyn crate::llm::ChatModel>, crate::llm::LlmConfig)> = match settings
        .llm
        .take()
    {
        Some(c) => {
            info!(base_url = %c.base_url, model = %c.model, "the Brain may consult a language model");
            Some((Arc::new(crate::llm::OpenAiModel::new(&c)?), c))
        }
        None => {
            info!("no language model configured; the Brain uses its rules");
            None
        }
    };
    let allowlist = crate::allowlist::Shared::from_options(&settings.allowlist);
    let github = match settings.github.take() {
        Some(c) => {
            info!(api = %c.api_url, "incidents are reported to GitHub");
            Some(crate::github::GitHub::guarded(&c, allowlist.clone())?)
        }
        None => {
            info!("no GitHub credentials; issues and pull requests are previewed in the Incidents");
            None
        }
    };
    let traces: Option<Arc<dyn crate::traces::TraceStore>> = match settings.traces.take() {
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
    let prometheus: Option<Arc<dyn crate::prometheus::MetricStore>> =
        match settings.prometheus.take() {
            Some(p) => {
                info!(url = %p.base(), "the Metric triggers query Prometheus");
                Some(Arc::new(p))
            }
            None => {
                info!("no Prometheus configured; Metric triggers are Unknown");
                None
            }
        };
    Ok(Outside {
        model,
        allowlist,
        github,
        traces,
        prometheus,
        // Checked with the settings, before anything starts: a dashboard
        // open to the network without a token never gets this far.
        dashboard: settings.dashboard.take(),
    })
}

/// Runs a controller until the operator stops: each reconcile timed and
/// traced, each failure counted and retried as `retry_after` says.
async fn drive<K, C, F, Fut>(
    controller: Controller<K>,
    name: ControllerName,
    metrics: Arc<Metrics>,
    ctx: Arc<C>,
    reconcile: F,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    C: Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<C>) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<Action>> + Send + 'static,
{
    let m = metrics.clone();
    controller
        .shutdown_on_signal()
        .run(
            move |o, c| {
                let (m, reconcile) = (m.clone(), reconcile.clone());
                async move { timed(&m, name, o.clone(), reconcile(o, c)).await }
            },
            move |object, e, _| error_policy(&metrics, name, object.as_ref(), e),
            ctx,
        )
        // Errors are counted and logged by error_policy; the stream only
        // needs draining.
        .for_each(|_| async {})
        .await;
}

/// The shared parts every stage's inputs are made of.
struct Shared {
    client: Client,
    metrics: Arc<Metrics>,
    publisher: Publisher,
    workloads: Workloads,
    board: crate::scout::measured::Board,
    policies: Store<RemediationPolicy>,
    incidents: Store<Incident>,
    github: crate::github::Access,
}

impl Shared {
    fn new(
        client: &Client,
        outside: &Outside,
        metrics: &Arc<Metrics>,
        watched: (
            &Reflected<Pod>,
            &Reflected<ReplicaSet>,
            &Store<RemediationPolicy>,
        ),
        incidents: &Controller<Incident>,
        instance: &str,
    ) -> Self {
        let (pods, replicasets, policies) = watched;
        Shared {
            client: client.clone(),
            metrics: metrics.clone(),
            publisher: Publisher::new(client.clone(), instance.to_string()),
            workloads: Workloads::new(
                client.clone(),
                pods.store.clone(),
                replicasets.store.clone(),
            ),
            board: crate::scout::measured::Board::default(),
            policies: policies.clone(),
            incidents: incidents.store(),
            github: crate::github::Access::new(
                outside.github.clone(),
                outside.allowlist.clone(),
                client.clone(),
            ),
        }
    }

    /// What the dashboard reads.
    fn dashboard(&self) -> crate::dashboard::Stores {
        crate::dashboard::Stores {
            client: self.client.clone(),
            incidents: self.incidents.clone(),
            policies: self.policies.clone(),
            workloads: self.workloads.clone(),
            board: self.board.clone(),
        }
    }
}

fn scout_context(s: &Shared, outside: &Outside) -> Arc<crate::scout::Context> {
    Arc::new(crate::scout::Context {
        client: s.client.clone(),
        policies: s.policies.clone(),
        incidents: s.incidents.clone(),
        workloads: s.workloads.clone(),
        board: s.board.clone(),
        publisher: s.publisher.clone(),
        metrics: s.metrics.clone(),
        allowlist: outside.allowlist.clone(),
        traces: outside.traces.clone(),
        prometheus: outside.prometheus.clone(),
        clock: Arc::new(crate::clock::SystemClock),
    })
}

fn incident_context(
    s: Shared,
    config: Config,
    outside: Outside,
    leadership: lease::Leadership,
    events: crate::brain::events::EventIndex,
) -> Arc<crate::incident::Context> {
    Arc::new(crate::incident::Context {
        client: s.client,
        config,
        workloads: s.workloads,
        policies: s.policies,
        incidents: s.incidents,
        model: outside.model,
        tokens: crate::llm::TokenLedger::default(),
        github: s.github,
        metrics: s.metrics,
        leadership,
        board: s.board,
        traces: outside.traces,
        events: Some(events),
        publisher: s.publisher,
        ledger: crate::fixer::ledger::ActionLedger::default(),
        claims: crate::fixer::claims::WorkloadClaims::default(),
        clock: Arc::new(crate::clock::SystemClock),
    })
}

/// Notifications: the policies' `NotificationsAvailable` condition, and,
/// when sinks are configured, the notifier beside the state machine and
/// the one delivery task it feeds.
fn start_notifications(
    client: &Client,
    config: &Config,
    policies: Store<RemediationPolicy>,
    metrics: &Arc<Metrics>,
    options: &crate::notify::NotifyOptions,
    leadership: lease::Leadership,
) -> Vec<tokio::task::JoinHandle<()>> {
    use crate::notify::{deliver, notifier};
    let sinks = Arc::new(options.sinks());
    let mut tasks = vec![tokio::spawn(notifier::report_policies(
        client.clone(),
        policies.clone(),
        sinks.clone(),
    ))];
    let built = match crate::notify::build(&sinks) {
        Ok(built) => built,
        Err(e) => {
            warn!(error = %e, "the notification sinks cannot be used; nothing is sent");
            vec![]
        }
    };
    if built.is_empty() {
        info!("no notification sinks configured; incidents are not announced");
        return tasks;
    }
    info!(
        sinks = built.len(),
        "incidents are announced to the configured sinks"
    );
    let ledger = notifier::ledger();
    let (queue, rx) = deliver::queue(1024, ledger.clone(), metrics.clone());
    let leads = leadership.clone();
    let deliverer = deliver::Deliverer {
        sinks: built.into_iter().collect(),
        recorder: Arc::new(notifier::KubeRecorder {
            client: client.clone(),
            leadership,
        }),
        ledger,
        metrics: metrics.clone(),
        leads: Arc::new(move || leads.is_held()),
        clock: Arc::new(crate::clock::SystemClock),
        retry: deliver::Retry::default(),
    };
    tasks.push(tokio::spawn(deliverer.run(rx)));
    let ctx = Arc::new(notifier::Context {
        policies,
        sinks,
        queue,
        dashboard: config.dashboard_public_url.clone(),
    });
    tasks.push(tokio::spawn(drive(
        Controller::new(config.api::<Incident>(client), watcher::Config::default()),
        ControllerName::Notify,
        metrics.clone(),
        ctx,
        notifier::reconcile,
    )));
    tasks
}

/// Serves metrics, health and the Alertmanager webhook when an address is
/// set.
async fn serve_telemetry(
    addr: Option<String>,
    metrics: &Arc<Metrics>,
    incidents: Store<Incident>,
    config: &Config,
    alerts: &Arc<crate::scout::sources::alerts::Receiver>,
) -> Result<()> {
    if let Some(addr) = addr {
        let served = crate::telemetry::Served {
            metrics: metrics.clone(),
            incidents,
            config: config.clone(),
            clock: Arc::new(crate::clock::SystemClock),
            alerts: alerts.clone(),
        };
        crate::telemetry::serve(addr, Arc::new(served)).await?;
    }
    Ok(())
}

/// Runs the operator until it is told to stop.
pub async fn run(client: Client, mut settings: Settings) -> Result<()> {
    let outside = outside(&mut settings)?;
    let config = settings.config;
    let allowlist_task = outside.allowlist.spawn_reloader();
    let metrics = Arc::new(Metrics::default());
    let incidents_controller =
        Controller::new(config.api::<Incident>(&client), watcher::Config::default());
    // Served before this replica leads: a standby answers Alertmanager 503.
    let alerts = Arc::new(crate::scout::sources::alerts::Receiver::new(
        settings.alertmanager_token_file.clone(),
        Arc::new(crate::clock::SystemClock),
    ));
    serve_telemetry(
        settings.http_addr.clone(),
        &metrics,
        incidents_controller.store(),
        &config,
        &alerts,
    )
    .await?;
    // A follower is a healthy standby: ready, not acting.
    metrics.set_ready();
    let leadership = match settings.lease {
        Some(cfg) => lease::lead(client.clone(), cfg).await?,
        None => lease::Leadership::sole(),
    };
    metrics.set_leader(true);
    // Leading counts as alive until the first reconcile finishes.
    metrics.reconciled(k8s_openapi::jiff::Timestamp::now());
    let pods = reflect(config.api::<Pod>(&client), trim_pod);
    let (policies, readable_policies) =
        reflect_policies(config.api::<DeserializeGuard<RemediationPolicy>>(&client));
    let replicasets = reflect(config.api::<ReplicaSet>(&client), trim_managed_fields);
    metrics.count_policies(readable_policies.clone());
    let watched = (&pods, &replicasets, &readable_policies);
    let shared = Shared::new(
        &client,
        &outside,
        &metrics,
        watched,
        &incidents_controller,
        &settings.instance,
    );
    // Next to the telemetry server, but it reads the stores and the board,
    // so only now.
    if let Some(dashboard) = outside.dashboard.clone() {
        crate::dashboard::serve(dashboard, shared.dashboard()).await?;
    }

    // Started in the order the stages need each other: the Scout reads
    // policies and owners; the incident state machine must see the pods
    // before it judges whether a signal cleared.
    let policy_ctx = Arc::new(crate::policy::Context {
        client: client.clone(),
        publisher: shared.publisher.clone(),
        allowlist: outside.allowlist.clone(),
        clock: Arc::new(crate::clock::SystemClock),
    });
    let policy_controller = Controller::for_stream(policies.stream, policies.store.clone());
    let policy_task = tokio::spawn(drive(
        policy_controller,
        ControllerName::Policy,
        metrics.clone(),
        policy_ctx,
        crate::policy::reconcile,
    ));
    let mut rs_stream = replicasets.stream;
    let rs_task = tokio::spawn(async move {
        // Errors are logged where the stream is made.
        while rs_stream.next().await.is_some() {}
    });
    until_ready(policies.ready, "policy").await?;
    until_ready(replicasets.ready, "ReplicaSet").await?;

    let scout_ctx = scout_context(&shared, &outside);
    let scout_task = tokio::spawn(drive(
        Controller::for_stream(pods.stream, pods.store),
        ControllerName::Scout,
        metrics.clone(),
        scout_ctx.clone(),
        crate::scout::reconcile,
    ));
    until_ready(pods.ready, "pod").await?;

    // What no pod shows: refused pods, stalled rollouts, failed Jobs and
    // CronJob runs, read from the workload objects themselves.
    let deployments = reflect(config.api::<Deployment>(&client), trim_deployment);
    let statefulsets = reflect(config.api::<StatefulSet>(&client), trim_statefulset);
    let jobs = reflect(config.api::<Job>(&client), trim_job);
    let workloads_ctx = Arc::new(crate::scout::workloads::Context {
        scout: scout_ctx.clone(),
        jobs: jobs.store.clone(),
        runs: Default::default(),
    });
    let workload_tasks = [
        tokio::spawn(drive(
            Controller::for_stream(deployments.stream, deployments.store),
            ControllerName::ScoutDeployment,
            metrics.clone(),
            workloads_ctx.clone(),
            crate::scout::workloads::reconcile_deployment,
        )),
        tokio::spawn(drive(
            Controller::for_stream(statefulsets.stream, statefulsets.store),
            ControllerName::ScoutStatefulSet,
            metrics.clone(),
            workloads_ctx.clone(),
            crate::scout::workloads::reconcile_statefulset,
        )),
        tokio::spawn(drive(
            Controller::for_stream(jobs.stream, jobs.store),
            ControllerName::ScoutJob,
            metrics.clone(),
            workloads_ctx,
            crate::scout::workloads::reconcile_job,
        )),
    ];

    let reporter_ctx = Arc::new(crate::github::reporter::Context {
        client: client.clone(),
        policies: shared.policies.clone(),
        github: shared.github.clone(),
        metrics: metrics.clone(),
        clock: Arc::new(crate::clock::SystemClock),
        dashboard_public_url: config.dashboard_public_url.clone(),
    });
    let report_task = tokio::spawn(drive(
        Controller::new(config.api::<Incident>(&client), watcher::Config::default()),
        ControllerName::Report,
        metrics.clone(),
        reporter_ctx,
        crate::github::reporter::reconcile,
    ));
    // Jules sessions for escalated incidents and sweep findings, only with
    // a key.
    let sweep_jules = settings.jules.clone();
    let jules_task = settings.jules.take().map(|jules| {
        let ctx = Arc::new(crate::jules::follow::Context {
            client: client.clone(),
            policies: shared.policies.clone(),
            github: shared.github.clone(),
            jules,
            leadership: leadership.clone(),
            clock: Arc::new(crate::clock::SystemClock),
        });
        tokio::spawn(drive(
            Controller::new(config.api::<Incident>(&client), watcher::Config::default()),
            ControllerName::Jules,
            metrics.clone(),
            ctx,
            crate::jules::follow::reconcile,
        ))
    });
    let mut sources = crate::scout::spawn_sources(&scout_ctx, settings.kafka);
    if alerts.token_file.is_some() {
        sources.push(crate::scout::sources::alerts::spawn(
            scout_ctx.clone(),
            alerts.lead(),
        ));
    }
    let notify_tasks = start_notifications(
        &client,
        &config,
        shared.policies.clone(),
        &metrics,
        &settings.notify,
        leadership.clone(),
    );

    info!(
        namespace = config.namespace.as_deref().unwrap_or("(all)"),
        "sre-space operator started"
    );
    // The Tier 3 sweep: this replica leads by now.
    let sweep_task = settings.sweep.take().map(|cfg| {
        let sweeper = crate::tier3::sweep::Sweeper {
            client: client.clone(),
            namespace: config.namespace.clone(),
            github: shared.github.clone(),
            clock: Arc::new(crate::clock::SystemClock),
            config: cfg,
            sink: None,
            jules: sweep_jules,
            tick: Duration::from_secs(30),
        };
        let fence = leadership.clone();
        tokio::spawn(async move { sweeper.run(&fence).await })
    });
    // The events the rules read, kept rather than listed by each diagnosis.
    let (events, watch_events) = crate::brain::events::EventIndex::watch(
        config.api::<k8s_openapi::api::core::v1::Event>(&client),
    );
    let events_task = tokio::spawn(watch_events);
    let incident_ctx = incident_context(shared, config, outside, leadership, events);
    drive(
        incidents_controller,
        ControllerName::Incident,
        metrics,
        incident_ctx.clone(),
        crate::incident::reconcile,
    )
    .await;
    for task in [scout_task, policy_task, rs_task, report_task, events_task]
        .into_iter()
        .chain(workload_tasks)
        .chain(sources)
        .chain(notify_tasks)
        .chain(allowlist_task)
        .chain(sweep_task)
        .chain(jules_task)
    {
        task.abort();
    }
    // A rolling upgrade stops the leader first: handing the Lease over now
    // lets the next replica lead at its next attempt, not a lease later.
    incident_ctx.leadership.release().await;
    info!("sre-space operator stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_that_is_gone_is_not_retried() {
        let gone = Error::Kube(kube::Error::Api(
            kube::core::Status::failure("namespaces \"shop\" not found", "NotFound")
                .with_code(404)
                .boxed(),
        ));
        assert_eq!(retry_after(&gone), None);
        let conflict = Error::Kube(kube::Error::Api(
            kube::core::Status::failure("the object has been modified", "Conflict")
                .with_code(409)
                .boxed(),
        ));
        assert_eq!(retry_after(&conflict), Some(Duration::from_millis(200)));
        let away = Error::Invalid("the API server is away".into());
        assert_eq!(retry_after(&away), Some(Duration::from_secs(5)));
    }

    /// What the operator logs while `f` runs, one JSON object a line.
    fn logged(f: impl FnOnce()) -> Vec<serde_json::Value> {
        #[derive(Clone, Default)]
        struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The `web-oomkilled` Incident of the namespace `shop`.
    fn incident() -> Incident {
        crate::testing::incident(crate::crd::Phase::Detected, vec![])
    }

    #[test]
    fn a_failed_reconcile_is_logged_with_the_object_it_failed_on() {
        let metrics = Metrics::default();
        let object = incident();
        let error = Error::Invalid("the API server is away".into());
        let lines = logged(|| {
            error_policy(&metrics, ControllerName::Incident, &object, &error);
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        let fields = &lines[0]["fields"];
        assert_eq!(fields["message"], "reconcile failed; retrying");
        assert_eq!(fields["controller"], "incident");
        assert_eq!(fields["namespace"], "shop");
        assert_eq!(fields["name"], "web-oomkilled");
        assert_eq!(fields["error"], "the API server is away");
    }

    #[tokio::test]
    async fn each_controller_has_one_lowercase_name_in_both_reconcile_metrics() {
        let metrics = Metrics::default();
        let object = Arc::new(incident());
        let mut names = std::collections::BTreeSet::new();
        for controller in ControllerName::ALL {
            let failed = timed(&metrics, controller, object.clone(), async {
                Err(Error::Invalid("failed".into()))
            })
            .await;
            let error = failed.expect_err("the reconcile failed");
            error_policy(&metrics, controller, object.as_ref(), &error);
            let label = controller.label();
            assert_eq!(label, label.to_lowercase());
            assert!(names.insert(label), "{label} names two controllers");
            let labels = controller.labels();
            assert!(
                metrics.reconcile_seconds.get(&labels).is_some(),
                "{label} has no reconcile_duration_seconds"
            );
            assert_eq!(
                metrics.reconcile_errors.get(&labels).map(|c| c.get()),
                Some(1),
                "{label}'s error is counted under its own name"
            );
        }
        for kind in ["Incident", "RemediationPolicy", "Pod"] {
            let labels = crate::telemetry::ControllerLabels {
                controller: kind.into(),
            };
            assert!(metrics.reconcile_errors.get(&labels).is_none(), "{kind}");
        }
    }

    #[test]
    fn a_policy_that_becomes_unreadable_leaves_the_stages_store() {
        let (store, mut writer) = reflector::store::<RemediationPolicy>();
        let readable = crate::testing::policy(crate::crd::Mode::Automatic);
        let mut raw = serde_json::to_value(&readable).unwrap();
        let guard = |v: serde_json::Value| -> DeserializeGuard<RemediationPolicy> {
            serde_json::from_value(v).unwrap()
        };
        for event in [
            watcher::Event::Init,
            watcher::Event::InitApply(guard(raw.clone())),
            watcher::Event::InitDone,
        ] {
            if let Some(e) = readable_event(&event) {
                writer.apply_watcher_event(&e);
            }
        }
        assert_eq!(store.state().len(), 1);
        raw["spec"]["mode"] = "Sometimes".into();
        let changed = watcher::Event::Apply(guard(raw));
        if let Some(e) = readable_event(&changed) {
            writer.apply_watcher_event(&e);
        }
        assert!(
            store.state().is_empty(),
            "no stage acts on a policy it can no longer read"
        );
    }
}
