//! The Scout: watches pods, turns their status into signals, and signals into
//! Incidents, one per problem (namespace, workload, signal kind). A repeat of
//! a problem updates its incident; the Scout never decides what to do.

pub mod detect;
pub mod measured;
mod offline;
pub mod signals;
pub mod sources;
mod verify;
pub mod workloads;

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use tracing::{debug, info, warn};

use crate::crd::{
    ConditionStatus, Incident, IncidentSpec, IncidentStatus, RemediationPolicy, SignalKind,
    SignalObservation, WorkloadRef,
};
use crate::publish::Publisher;
use crate::scout::measured::Board;
use crate::telemetry::Metrics;
use crate::workload::Workloads;
use crate::workload::{covering_policy, fingerprint, incident_name};
use crate::{FIELD_MANAGER, Result, conditions};
pub use offline::detect;
pub use signals::{Signal, read_pod};
pub use verify::signals_since;

/// What the Scout reads and writes: the policies, the workloads, the board
/// of measured signals, and the Incidents it opens.
pub struct Context {
    /// Writes Incidents and the policies' source conditions.
    pub client: kube::Client,
    pub policies: kube::runtime::reflector::Store<RemediationPolicy>,
    pub incidents: kube::runtime::reflector::Store<Incident>,
    pub workloads: Workloads,
    pub board: Board,
    pub publisher: Publisher,
    pub metrics: Arc<Metrics>,
    /// Which health-check hosts each namespace may reach.
    pub allowlist: Arc<crate::allowlist::Shared>,
    /// Where trace triggers read traces, when a trace store is configured.
    pub traces: Option<Arc<dyn crate::traces::TraceStore>>,
    /// Where Metric triggers query, when Prometheus is configured.
    pub prometheus: Option<Arc<dyn crate::prometheus::MetricStore>>,
    /// The time signals are read and judged at.
    pub clock: Arc<dyn crate::clock::Clock>,
}

/// Looks at one pod.
pub async fn reconcile(pod: Arc<Pod>, ctx: Arc<Context>) -> Result<Action> {
    if signals::is_churn(&pod) {
        return Ok(Action::await_change());
    }
    let ns = pod.namespace().unwrap_or_default();
    let labels = pod.labels().clone();
    let policies = ctx.policies.state();
    let Some(policy) = covering_policy(policies.iter().map(|p| p.as_ref()), &ns, &labels) else {
        debug!(pod = %pod.name_any(), policies = policies.len(), "no policy covers the pod");
        return Ok(Action::await_change());
    };
    let reading = read_pod(&pod, &policy.spec.triggers, ctx.clock.now());
    debug!(pod = %pod.name_any(), policy = %policy.name_any(), signals = reading.signals.len(), "pod read");
    if !reading.signals.is_empty() {
        match ctx.workloads.owner_of(&pod).await? {
            Some(workload) => {
                for signal in &reading.signals {
                    record_signal(&ctx, &ns, &workload, signal, &policy.name_any()).await?;
                }
            }
            None => {
                debug!(pod = %pod.name_any(), "pod's owner is not a workload SRE-Space manages")
            }
        }
    }
    Ok(match reading.recheck_after {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// Posts a measured reading to the board; a firing one opens its incident,
/// or counts on the open one.
pub async fn report(ctx: &Context, reading: measured::Reading) -> Result<()> {
    let subject = reading.subject.clone();
    if let Some(signal) = ctx.board.post(reading) {
        record_signal(
            ctx,
            &subject.namespace,
            &subject.target(),
            &signal,
            &subject.policy,
        )
        .await?;
    }
    Ok(())
}

/// Starts the sources of measured signals (health checks, Kafka event
/// rates, traces). Each runs until the operator stops and degrades on its
/// own when what it measures is away.
pub fn spawn_sources(
    ctx: &Arc<Context>,
    kafka: std::result::Result<Option<crate::kafka::KafkaConfig>, String>,
) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        sources::health::spawn(ctx),
        sources::kafka::spawn(ctx, kafka),
        sources::traces::spawn(ctx.clone()),
        sources::metrics::spawn(ctx.clone()),
    ]
}

/// Opens the incident for a signal, or counts the signal on the open one.
pub async fn record_signal(
    ctx: &Context,
    ns: &str,
    workload: &WorkloadRef,
    signal: &Signal,
    policy: &str,
) -> Result<()> {
    let api: Api<Incident> = Api::namespaced(ctx.client.clone(), ns);
    let name = incident_name(workload, signal.kind);
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    // A new problem is the path that counts for time to detect: create
    // straight away when the store knows no such incident, and read the
    // existing one only when the create says it exists.
    let known = ctx
        .incidents
        .get(&ObjectRef::new(&name).within(ns))
        .is_some();
    let existing = if known {
        api.get_opt(&name).await?
    } else {
        None
    };
    let incident = match existing {
        Some(i) => i,
        None => {
            let spec = IncidentSpec {
                fingerprint: fingerprint(ns, workload, signal.kind),
                target: workload.clone(),
                signal: signal.kind,
                policy: policy.to_string(),
                approval: None,
            };
            match api.create(&pp, &Incident::new(&name, spec)).await {
                Ok(created) => {
                    let delay = ctx
                        .clock
                        .now()
                        .duration_since(signal.observed_at)
                        .as_secs_f64();
                    ctx.metrics.time_to_detect.observe(delay.max(0.0));
                    info!(incident = %name, namespace = ns, workload = %workload, signal = signal.kind.as_str(), "incident opened");
                    created
                }
                Err(kube::Error::Api(e)) if e.code == 409 => api.get(&name).await?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    if let Some(why) = refusal(&incident.spec, ns, workload, signal.kind) {
        warn!(incident = %name, namespace = ns, workload = %workload, signal = signal.kind.as_str(), %why, "signal refused");
        let event = Event {
            type_: EventType::Warning,
            reason: "FingerprintMismatch".into(),
            note: Some(why),
            action: "Detect".into(),
            secondary: None,
        };
        ctx.publisher
            .publish(&event, &incident.object_ref(&()))
            .await;
        return Ok(());
    }
    let mut status = incident.status.clone().unwrap_or_default();
    if status
        .last_signal
        .as_ref()
        .is_some_and(|s| s.key == signal.key)
    {
        return Ok(());
    }
    let first = status.occurrences == 0;
    observe(&mut status, signal, incident.metadata.generation);
    let mut updated = incident.clone();
    updated.status = Some(status);
    api.replace_status(&name, &pp, &updated).await?;
    let (reason, note) = if first {
        (
            "Detected",
            format!("{} of {workload}: {}", signal.kind.as_str(), signal.message),
        )
    } else {
        ("Recurred", format!("seen again: {}", signal.message))
    };
    let event = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note),
        action: "Detect".into(),
        secondary: None,
    };
    ctx.publisher
        .publish(&event, &incident.object_ref(&()))
        .await;
    Ok(())
}

/// Why an existing incident must not count a signal: it is bound to another
/// problem (another workload, signal or namespace), whether by a name
/// collision or because someone created it under the name the operator
/// would use. Such an incident is never updated by the signal, so one
/// workload's signals cannot drive actions on another.
pub fn refusal(
    existing: &IncidentSpec,
    ns: &str,
    workload: &WorkloadRef,
    signal: SignalKind,
) -> Option<String> {
    let expected = fingerprint(ns, workload, signal);
    let bound = existing.fingerprint == expected
        && existing.target == *workload
        && existing.signal == signal;
    (!bound).then(|| {
        format!(
            "a {} signal of {workload} (fingerprint {expected}) was not counted: this incident is bound to {} of {} (fingerprint {})",
            signal.as_str(),
            existing.signal.as_str(),
            existing.target,
            existing.fingerprint
        )
    })
}

/// Counts one observation in an incident's status.
pub fn observe(status: &mut IncidentStatus, signal: &Signal, generation: Option<i64>) {
    let at = Time(signal.observed_at);
    status.occurrences += 1;
    if status.first_seen.is_none() {
        status.first_seen = Some(at.clone());
        status.detected_at = Some(at.clone());
        conditions::set(
            &mut status.conditions,
            "Detected",
            ConditionStatus::True,
            signal.kind.as_str(),
            signal.message.clone(),
            generation,
            signal.observed_at,
        );
    }
    status.last_seen = Some(at.clone());
    status.last_signal = Some(SignalObservation {
        pod: signal.pod.clone(),
        container: signal.container.clone(),
        reason: signal.reason.clone(),
        message: signal.message.clone(),
        observed_at: at,
        key: signal.key.clone(),
    });
}

#[cfg(test)]
mod reconcile_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::WorkloadKind;

    fn deployment(name: &str) -> WorkloadRef {
        WorkloadRef {
            kind: WorkloadKind::Deployment,
            name: name.into(),
        }
    }

    fn spec_of(ns: &str, workload: &WorkloadRef, signal: SignalKind) -> IncidentSpec {
        IncidentSpec {
            fingerprint: fingerprint(ns, workload, signal),
            target: workload.clone(),
            signal,
            policy: "p".into(),
            approval: None,
        }
    }

    #[test]
    fn an_incident_counts_only_the_signals_of_its_own_fingerprint() {
        let web = deployment("web");
        let mine = spec_of("shop", &web, SignalKind::OOMKilled);
        assert_eq!(refusal(&mine, "shop", &web, SignalKind::OOMKilled), None);

        let other = WorkloadRef {
            kind: WorkloadKind::Pod,
            name: "web".into(),
        };
        let why = refusal(&mine, "shop", &other, SignalKind::OOMKilled)
            .expect("another workload's signal is refused");
        assert!(
            why.contains("Pod/web") && why.contains("Deployment/web"),
            "{why}"
        );
        assert!(refusal(&mine, "shop", &web, SignalKind::CrashLoopBackOff).is_some());
        assert!(refusal(&mine, "other", &web, SignalKind::OOMKilled).is_some());
    }

    #[test]
    fn an_incident_created_with_a_borrowed_fingerprint_is_refused() {
        // Someone creates, under the name the operator would use for web,
        // an incident whose target is another workload but whose
        // fingerprint is web's: its target decides what would be touched,
        // so it is refused too.
        let web = deployment("web");
        let mut forged = spec_of("shop", &web, SignalKind::OOMKilled);
        forged.target = deployment("payments");
        assert!(refusal(&forged, "shop", &web, SignalKind::OOMKilled).is_some());
    }
}
