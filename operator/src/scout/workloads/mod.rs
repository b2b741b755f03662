//! The Scout's look at workload objects, for what no pod shows: a workload
//! whose pods the API server refuses has no pod to watch, a stalled rollout
//! may have no failing pod, and a failed Job's pods are finished (churn to
//! the pod reconciler). One reconciler per watched kind reads the object
//! into findings (`detect`, pure) and posts them to the board as measured
//! readings (`scout::report`), which opens the incident, counts it, and
//! clears it on a healthy reading.

pub mod detect;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};
use tracing::debug;

use self::detect::{Finding, Run};
use crate::Result;
use crate::crd::{RemediationPolicy, SignalKind, Trigger, WorkloadKind, WorkloadRef};
use crate::scout::measured::Verdict;
use crate::workload::covering_policy;

/// How often a StatefulSet with fewer pods than it asks for is looked at
/// again: its refusals are events, which do not wake its reconciler.
const SHORT_RECHECK: Duration = Duration::from_secs(30);

/// How often a firing workload is read again while nothing about it
/// changes: an incident judges its steps by readings newer than the step
/// (`scout::signals_since`), so a workload still failing must keep saying so.
pub const FIRING_REFRESH: Duration = Duration::from_secs(10);

/// What the workload reconcilers read beyond the Scout's own inputs.
pub struct Context {
    pub scout: Arc<super::Context>,
    /// The watched Jobs: the runs of a CronJob still kept.
    pub jobs: Store<Job>,
    /// The runs of each CronJob seen finishing, kept past the Jobs its
    /// controller deletes (by default it keeps one failed Job).
    pub runs: Runs,
}

/// The last finished runs of each CronJob, at most
/// [`crate::limits::MAX_FAILED_RUNS`] each. Cheap to clone.
#[derive(Clone, Default)]
pub struct Runs(Arc<Mutex<BTreeMap<CronJobKey, BTreeMap<String, Run>>>>);

/// A CronJob: its namespace and name.
type CronJobKey = (String, String);

impl Runs {
    /// Remembers `seen` runs of a CronJob and returns every run known of
    /// it, newest first.
    pub fn merge(&self, ns: &str, cronjob: &str, seen: impl IntoIterator<Item = Run>) -> Vec<Run> {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let runs = all.entry((ns.into(), cronjob.into())).or_default();
        for run in seen {
            runs.insert(run.job.clone(), run);
        }
        let mut newest: Vec<Run> = runs.values().cloned().collect();
        newest.sort_by(|a, b| {
            b.scheduled
                .cmp(&a.scheduled)
                .then_with(|| b.job.cmp(&a.job))
        });
        newest.truncate(usize::try_from(crate::limits::MAX_FAILED_RUNS).unwrap_or(20));
        runs.retain(|job, _| newest.iter().any(|r| &r.job == job));
        newest
    }
}

fn trigger(policy: &RemediationPolicy, kind: SignalKind) -> Option<&Trigger> {
    policy.spec.triggers.iter().find(|t| t.type_ == kind)
}

/// The policy covering a workload, by its pod template's labels.
fn policy_of(
    ctx: &super::Context,
    ns: &str,
    template: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>,
) -> Option<RemediationPolicy> {
    let labels = template
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let policies = ctx.policies.state();
    covering_policy(policies.iter().map(|p| p.as_ref()), ns, &labels).cloned()
}

/// Posts the findings and says when to look again.
async fn post(
    ctx: &super::Context,
    ns: &str,
    policy: &RemediationPolicy,
    target: &WorkloadRef,
    findings: Vec<Finding>,
    now: Timestamp,
) -> Result<Option<Duration>> {
    let mut recheck: Option<Duration> = None;
    for f in findings {
        debug!(workload = %target, signal = f.kind.as_str(), verdict = ?f.verdict, "workload read");
        let after = match f.verdict {
            Verdict::Firing => Some(FIRING_REFRESH),
            _ => f.recheck_after,
        };
        if let Some(after) = after {
            recheck = Some(recheck.map_or(after, |r| r.min(after)));
        }
        super::report(ctx, f.reading(ns, &policy.name_any(), target, now)).await?;
    }
    Ok(recheck)
}

fn action(recheck: Option<Duration>) -> Action {
    match recheck {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    }
}

/// Looks at one Deployment: pods refused (FailedCreate), a rollout past its
/// deadline (RolloutStalled).
pub async fn reconcile_deployment(d: Arc<Deployment>, ctx: Arc<Context>) -> Result<Action> {
    let scout = &ctx.scout;
    let ns = d.namespace().unwrap_or_default();
    let Some(policy) = policy_of(scout, &ns, Some(&d.spec.template)) else {
        return Ok(Action::await_change());
    };
    let now = scout.clock.now();
    let mut findings = Vec::new();
    if let Some(t) = trigger(&policy, SignalKind::FailedCreate) {
        let replicasets = scout.workloads.replicasets_in(&ns);
        findings.push(detect::deployment_failed_create(&d, &replicasets, t, now));
    }
    if let Some(t) = trigger(&policy, SignalKind::RolloutStalled) {
        findings.push(detect::deployment_rollout_stalled(&d, t, now));
    }
    let target = WorkloadRef {
        kind: WorkloadKind::Deployment,
        name: d.name_any(),
    };
    Ok(action(
        post(scout, &ns, &policy, &target, findings, now).await?,
    ))
}

/// Looks at one StatefulSet: pods refused (its FailedCreate events, read
/// only while it has fewer pods than it asks for), a rollout stuck on one
/// ordinal.
pub async fn reconcile_statefulset(s: Arc<StatefulSet>, ctx: Arc<Context>) -> Result<Action> {
    let scout = &ctx.scout;
    let ns = s.namespace().unwrap_or_default();
    let Some(policy) = policy_of(scout, &ns, Some(&s.spec.template)) else {
        return Ok(Action::await_change());
    };
    let now = scout.clock.now();
    let target = WorkloadRef {
        kind: WorkloadKind::StatefulSet,
        name: s.name_any(),
    };
    let desired = s.spec.replicas.unwrap_or(1);
    let short = s.status.as_ref().map_or(0, |st| st.replicas) < desired;
    let mut findings = Vec::new();
    if let Some(t) = trigger(&policy, SignalKind::FailedCreate) {
        let events = if short {
            let fields = format!(
                "involvedObject.kind=StatefulSet,involvedObject.name={},reason=FailedCreate",
                target.name
            );
            Api::<Event>::namespaced(scout.client.clone(), &ns)
                .list(&ListParams::default().fields(&fields))
                .await?
                .items
        } else {
            Vec::new()
        };
        findings.push(detect::statefulset_failed_create(&s, &events, t, now));
    }
    if let Some(t) = trigger(&policy, SignalKind::RolloutStalled) {
        let pods: Vec<Pod> = scout
            .workloads
            .pods_of(&ns, &target)
            .iter()
            .map(|p| (**p).clone())
            .collect();
        findings.push(detect::statefulset_rollout_stalled(&s, &pods, t, now));
    }
    let listed = trigger(&policy, SignalKind::FailedCreate).is_some();
    let recheck = post(scout, &ns, &policy, &target, findings, now).await?;
    Ok(action(if short && listed {
        Some(recheck.map_or(SHORT_RECHECK, |r| r.min(SHORT_RECHECK)))
    } else {
        recheck
    }))
}

/// Looks at one Job: a Job of its own fails when it fails; the Jobs of a
/// CronJob are its runs, and the CronJob fails when its last runs did.
pub async fn reconcile_job(job: Arc<Job>, ctx: Arc<Context>) -> Result<Action> {
    let scout = &ctx.scout;
    let ns = job.namespace().unwrap_or_default();
    let Some(policy) = policy_of(scout, &ns, job.spec.as_ref().map(|s| &s.template)) else {
        return Ok(Action::await_change());
    };
    let Some(t) = trigger(&policy, SignalKind::JobFailed) else {
        return Ok(Action::await_change());
    };
    let now = scout.clock.now();
    let (target, finding) = match detect::cronjob_of(&job) {
        Some(cronjob) => {
            let kept = ctx
                .jobs
                .state()
                .into_iter()
                .filter(|j| j.namespace().as_deref() == Some(ns.as_str()))
                .filter(|j| detect::cronjob_of(j).as_deref() == Some(cronjob.as_str()))
                .chain([job.clone()])
                .filter_map(|j| detect::run_of(&j))
                .collect::<Vec<_>>();
            let runs = ctx.runs.merge(&ns, &cronjob, kept);
            let finding = detect::cronjob_failed_runs(&cronjob, &runs, t);
            let target = WorkloadRef {
                kind: WorkloadKind::CronJob,
                name: cronjob,
            };
            (target, finding)
        }
        None => {
            let target = WorkloadRef {
                kind: WorkloadKind::Job,
                name: job.name_any(),
            };
            // One fault, one incident: a Job whose pods ran out of memory
            // is the OOMKilled incident of its pods, not a second one.
            if detect::any_oom_killed(&scout.workloads.pods_of(&ns, &target)) {
                return Ok(Action::await_change());
            }
            (target, detect::job_failed(&job))
        }
    };
    Ok(action(
        post(scout, &ns, &policy, &target, vec![finding], now).await?,
    ))
}

#[cfg(test)]
mod reconcile_tests;
