//! What workload objects say that no pod shows: pods the API server refuses
//! to create, rollouts that stopped, Jobs and CronJob runs that failed.
//! Pure: the object (and what it owns), the trigger and the time in, a
//! finding out.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::{SignalKind, Trigger, WorkloadRef};
use crate::scout::measured::{Reading, Subject, Verdict};

/// How long after its last `FailedCreate` event a StatefulSet still counts
/// as refused: longer than the controller's longest retry backoff (1000 s),
/// so a refusal it keeps retrying never looks over between two attempts.
pub const REFUSAL_HORIZON: SignedDuration = SignedDuration::from_secs(20 * 60);

/// The label the StatefulSet controller puts on each pod: the revision it
/// was made from.
const REVISION_LABEL: &str = "controller-revision-hash";
/// The label the StatefulSet controller puts on each pod: its ordinal.
const INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// Where the CronJob controller writes the time a run was scheduled for.
const SCHEDULED_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// What a detector concluded about one workload for one signal kind.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub kind: SignalKind,
    pub verdict: Verdict,
    /// What was seen, in words; quotes the cluster's own messages, redacted.
    pub summary: String,
    /// When a grace period running now ends, so the workload is looked at
    /// again then.
    pub recheck_after: Option<Duration>,
}

impl Finding {
    fn new(kind: SignalKind, verdict: Verdict, summary: String) -> Self {
        Self {
            kind,
            verdict,
            summary,
            recheck_after: None,
        }
    }

    /// The reading the board takes for a workload of a policy.
    pub fn reading(
        self,
        namespace: &str,
        policy: &str,
        target: &WorkloadRef,
        now: Timestamp,
    ) -> Reading {
        Reading {
            subject: Subject {
                namespace: namespace.into(),
                policy: policy.into(),
                kind: self.kind,
                workload: target.name.clone(),
                workload_kind: target.kind,
            },
            verdict: self.verdict,
            summary: self.summary,
            value: None,
            threshold: None,
            at: now,
        }
    }
}

/// Whether a condition that began at `since` has lasted the trigger's grace
/// period: `Ok` when it has, otherwise how long is left.
fn lasted(since: Timestamp, trigger: &Trigger, now: Timestamp) -> Result<SignedDuration, Duration> {
    let grace = crate::limits::seconds(trigger.grace_period_seconds());
    let elapsed = now.duration_since(since);
    if elapsed >= grace {
        Ok(elapsed)
    } else {
        // A start far ahead of our clock is looked at again within a week
        // all the same.
        Err((grace - elapsed).unsigned_abs().min(crate::limits::WEEK))
    }
}

/// A duration the way `kubectl` prints ages: `45s`, `5m10s`, `3h2m`.
fn age(d: SignedDuration) -> String {
    let s = d.as_secs().max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

fn time(t: Option<&Time>) -> Option<Timestamp> {
    t.map(|t| t.0)
}

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

/// A condition of a workload's status, as every apps/v1 and batch/v1
/// controller writes them.
struct Cond<'a> {
    type_: &'a str,
    status: &'a str,
    reason: Option<&'a str>,
    message: Option<&'a str>,
    since: Option<Timestamp>,
}

/// A condition field, whether the type holds it optional or not.
trait Text {
    fn text(&self) -> &str;
}

impl Text for String {
    fn text(&self) -> &str {
        self
    }
}

impl Text for Option<String> {
    fn text(&self) -> &str {
        self.as_deref().unwrap_or_default()
    }
}

macro_rules! conds {
    ($list:expr) => {
        $list
            .iter()
            .flat_map(|v| v.iter())
            .map(|c| Cond {
                type_: c.type_.text(),
                status: c.status.text(),
                reason: c.reason.as_deref(),
                message: c.message.as_deref(),
                since: time(c.last_transition_time.as_ref()),
            })
            .collect::<Vec<_>>()
    };
}

fn find<'a>(conds: &'a [Cond<'a>], type_: &str, status: &str) -> Option<&'a Cond<'a>> {
    conds
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
}

/// A refusal of the API server to create a pod, in the workload's words.
struct Refusal {
    message: String,
    since: Timestamp,
}

/// FailedCreate of a Deployment: the `ReplicaFailure` condition (reason
/// `FailedCreate`) the ReplicaSet controller writes with the API server's
/// refusal, which the Deployment controller copies into the Deployment; the
/// Deployment's own ReplicaSets are read too, in case the copy lags.
pub fn deployment_failed_create(
    d: &Deployment,
    replicasets: &[ReplicaSet],
    trigger: &Trigger,
    now: Timestamp,
) -> Finding {
    let kind = SignalKind::FailedCreate;
    let name = name_of(&d.metadata);
    let status = d.status.clone().unwrap_or_default();
    let desired = d.spec.replicas.unwrap_or(1);
    let have = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let refused = |conds: &[Cond]| {
        find(conds, "ReplicaFailure", "True")
            .filter(|c| c.reason == Some("FailedCreate"))
            .map(|c| Refusal {
                message: crate::redact::string(c.message.unwrap_or_default()),
                since: c.since.unwrap_or(now),
            })
    };
    let own = refused(&conds!(status.conditions));
    let refusal = own.or_else(|| {
        crate::workload::replicasets_of(&name, replicasets.iter().cloned())
            .iter()
            .find_map(|rs| {
                refused(&conds!(
                    rs.status.as_ref().and_then(|s| s.conditions.as_ref())
                ))
            })
    });
    let counts = format!("has {have} of {desired} pods ({available} available)");
    let Some(refusal) = refusal else {
        return Finding::new(
            kind,
            Verdict::Healthy,
            format!("Deployment/{name} {counts}; the API server refuses none of its pods"),
        );
    };
    judge_refusal(
        kind,
        &format!("Deployment/{name} {counts}"),
        refusal,
        trigger,
        now,
    )
}

fn judge_refusal(
    kind: SignalKind,
    what: &str,
    refusal: Refusal,
    trigger: &Trigger,
    now: Timestamp,
) -> Finding {
    match lasted(refusal.since, trigger, now) {
        Ok(elapsed) => Finding::new(
            kind,
            Verdict::Firing,
            format!(
                "{what}; for {} the API server has refused to create its pods: {}",
                age(elapsed),
                refusal.message
            ),
        ),
        Err(left) => Finding {
            recheck_after: Some(left),
            ..Finding::new(
                kind,
                Verdict::Unknown,
                format!(
                    "{what}; the API server has refused to create its pods since {}, within the grace period: {}",
                    refusal.since, refusal.message
                ),
            )
        },
    }
}

/// When an event was last seen: the series' last observation, the last
/// timestamp of an aggregated event, or when it happened.
fn last_seen(e: &Event) -> Option<Timestamp> {
    e.series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref())
        .map(|t| t.0)
        .or_else(|| time(e.last_timestamp.as_ref()))
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| time(e.first_timestamp.as_ref()))
}

fn first_seen(e: &Event) -> Option<Timestamp> {
    time(e.first_timestamp.as_ref())
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| last_seen(e))
}

/// FailedCreate of a StatefulSet, which has no condition for it: fewer pods
/// than it asks for, and the `FailedCreate` Warning events its controller
/// records on it ("create Pod db-1 in StatefulSet db failed error: ...")
/// within the last [`REFUSAL_HORIZON`].
pub fn statefulset_failed_create(
    s: &StatefulSet,
    events: &[Event],
    trigger: &Trigger,
    now: Timestamp,
) -> Finding {
    let kind = SignalKind::FailedCreate;
    let name = name_of(&s.metadata);
    let desired = s.spec.replicas.unwrap_or(1);
    let status = s.status.clone().unwrap_or_default();
    let (have, ready) = (status.replicas, status.ready_replicas.unwrap_or(0));
    let what = format!("StatefulSet/{name} has {have} of {desired} pods ({ready} ready)");
    if have >= desired {
        return Finding::new(kind, Verdict::Healthy, format!("{what}; none is missing"));
    }
    let uid = s.metadata.uid.as_deref();
    let mut recent: Vec<&Event> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("FailedCreate"))
        .filter(|e| {
            let o = &e.involved_object;
            o.kind.as_deref() == Some("StatefulSet")
                && o.name.as_deref() == Some(name.as_str())
                && (uid.is_none() || o.uid.is_none() || o.uid.as_deref() == uid)
        })
        .filter(|e| last_seen(e).is_some_and(|t| now.duration_since(t) <= REFUSAL_HORIZON))
        .collect();
    recent.sort_by_key(|e| last_seen(e));
    let Some(latest) = recent.last() else {
        return Finding::new(
            kind,
            Verdict::Healthy,
            format!(
                "{what}; no pod of it was refused in the last {}",
                age(REFUSAL_HORIZON)
            ),
        );
    };
    let since = recent
        .iter()
        .filter_map(|e| first_seen(e))
        .min()
        .unwrap_or(now);
    let message = latest.message.as_deref().unwrap_or_default();
    // The controller's words are "create Pod db-1 in StatefulSet db failed
    // error: <the API server's refusal>": name the pod, quote the refusal.
    let quoted = match (
        message
            .strip_prefix("create Pod ")
            .and_then(|m| m.split_once(' ')),
        message.split_once(" failed error: "),
    ) {
        (Some((pod, _)), Some((_, refusal))) => format!("pod {pod}: {refusal}"),
        _ => message.to_string(),
    };
    let times: i32 = recent.iter().map(|e| e.count.unwrap_or(1).max(1)).sum();
    judge_refusal(
        kind,
        &format!(
            "{what}, {times} refusal{}",
            if times == 1 { "" } else { "s" }
        ),
        Refusal {
            message: crate::redact::string(&quoted),
            since,
        },
        trigger,
        now,
    )
}

/// RolloutStalled of a Deployment: `Progressing=False` with reason
/// `ProgressDeadlineExceeded`, which the Deployment controller writes once
/// a rollout made no progress for `progressDeadlineSeconds`.
pub fn deployment_rollout_stalled(d: &Deployment, trigger: &Trigger, now: Timestamp) -> Finding {
    let kind = SignalKind::RolloutStalled;
    let name = name_of(&d.metadata);
    let status = d.status.clone().unwrap_or_default();
    let conds = conds!(status.conditions);
    let desired = d.spec.replicas.unwrap_or(1);
    let counts = format!(
        "{} of {desired} pods updated, {} available",
        status.updated_replicas.unwrap_or(0),
        status.available_replicas.unwrap_or(0)
    );
    let Some(stalled) = find(&conds, "Progressing", "False")
        .filter(|c| c.reason == Some("ProgressDeadlineExceeded"))
    else {
        let how = find(&conds, "Progressing", "True")
            .or_else(|| find(&conds, "Progressing", "Unknown"))
            .and_then(|c| c.reason)
            .unwrap_or("no Progressing condition");
        return Finding::new(
            kind,
            Verdict::Healthy,
            format!("Deployment/{name} is not stalled ({how}); {counts}"),
        );
    };
    let deadline = d.spec.progress_deadline_seconds.unwrap_or(600);
    let message = crate::redact::string(stalled.message.unwrap_or_default());
    let since = stalled.since.unwrap_or(now);
    match lasted(since, trigger, now) {
        Ok(elapsed) => Finding::new(
            kind,
            Verdict::Firing,
            format!(
                "Deployment/{name} rollout made no progress within its deadline of {deadline}s and has been stalled for {}: {message} {counts}",
                age(elapsed)
            ),
        ),
        Err(left) => Finding {
            recheck_after: Some(left),
            ..Finding::new(
                kind,
                Verdict::Unknown,
                format!(
                    "Deployment/{name} rollout passed its deadline at {since}, within the grace period: {message} {counts}"
                ),
            )
        },
    }
}

/// The ordinal of a StatefulSet's pod: its index label, or the number its
/// name ends with.
fn ordinal(pod: &Pod) -> Option<u32> {
    let labels = pod.metadata.labels.as_ref();
    labels
        .and_then(|l| l.get(INDEX_LABEL))
        .and_then(|i| i.parse().ok())
        .or_else(|| {
            pod.metadata
                .name
                .as_deref()?
                .rsplit_once('-')?
                .1
                .parse()
                .ok()
        })
}

/// Since when a pod has not been ready: its Ready condition's last
/// transition to not ready, or its creation when it never was.
fn not_ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    match ready {
        Some(c) if c.status == "True" => None,
        Some(c) => Some(
            time(c.last_transition_time.as_ref())
                .or_else(|| time(pod.metadata.creation_timestamp.as_ref())),
        ),
        None => Some(time(pod.metadata.creation_timestamp.as_ref())),
    }
}

/// Why a pod's first waiting container waits, as the kubelet says it.
fn waiting_reason(pod: &Pod) -> Option<String> {
    let s = pod.status.as_ref()?;
    s.init_container_statuses
        .iter()
        .flatten()
        .chain(s.container_statuses.iter().flatten())
        .find_map(|c| {
            let reason = c.state.as_ref()?.waiting.as_ref()?.reason.clone()?;
            Some(format!("container {}: {reason}", c.name))
        })
}

/// RolloutStalled of a StatefulSet: a rolling update (`updateRevision`
/// differs from `currentRevision`) held by one ordinal, whose pod already
/// runs the update revision and has not been ready past the grace period.
/// The controller updates one ordinal at a time, from the highest down, and
/// waits for each; pods kept back by a partition are not stuck.
pub fn statefulset_rollout_stalled(
    s: &StatefulSet,
    pods: &[Pod],
    trigger: &Trigger,
    now: Timestamp,
) -> Finding {
    let kind = SignalKind::RolloutStalled;
    let name = name_of(&s.metadata);
    let status = s.status.clone().unwrap_or_default();
    let desired = s.spec.replicas.unwrap_or(1);
    let on_delete = s
        .spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.type_.as_deref())
        == Some("OnDelete");
    let (Some(update), current) = (
        status.update_revision.as_deref(),
        status.current_revision.as_deref(),
    ) else {
        return Finding::new(
            kind,
            Verdict::Healthy,
            format!("StatefulSet/{name} is not rolling out"),
        );
    };
    if Some(update) == current || on_delete {
        return Finding::new(
            kind,
            Verdict::Healthy,
            format!("StatefulSet/{name} is not rolling out (revision {update})"),
        );
    }
    let updated = format!(
        "{} of {desired} pods updated (current revision {})",
        status.updated_replicas.unwrap_or(0),
        current.unwrap_or("unknown")
    );
    let uid = s.metadata.uid.as_deref();
    let stuck = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.metadata.owner_references.iter().flatten().any(|o| {
                o.controller == Some(true)
                    && o.kind == "StatefulSet"
                    && o.name == name
                    && uid.is_none_or(|u| o.uid == u)
            })
        })
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(REVISION_LABEL))
                .map(String::as_str)
                == Some(update)
        })
        .filter_map(|p| Some((p, not_ready_since(p)?.unwrap_or(now))))
        .min_by_key(|(p, since)| (*since, ordinal(p)));
    let Some((pod, since)) = stuck else {
        return Finding::new(
            kind,
            Verdict::Healthy,
            format!(
                "StatefulSet/{name} is rolling out revision {update}: every updated pod is ready; {updated}"
            ),
        );
    };
    let pod_name = name_of(&pod.metadata);
    let at = ordinal(pod)
        .map(|o| o.to_string())
        .unwrap_or_else(|| "?".into());
    let why = waiting_reason(pod)
        .map(|w| format!(" ({w})"))
        .unwrap_or_default();
    match lasted(since, trigger, now) {
        Ok(elapsed) => Finding::new(
            kind,
            Verdict::Firing,
            crate::redact::string(&format!(
                "StatefulSet/{name} rollout to revision {update} is stuck at ordinal {at}: pod {pod_name} runs the new revision and has not been ready for {}{why}; {updated}",
                age(elapsed)
            )),
        ),
        Err(left) => Finding {
            recheck_after: Some(left),
            ..Finding::new(
                kind,
                Verdict::Unknown,
                format!(
                    "StatefulSet/{name} rollout to revision {update} waits on ordinal {at} (pod {pod_name}, not ready since {since}), within the grace period; {updated}"
                ),
            )
        },
    }
}

/// How a Job failed, in one line: the reason the Job controller wrote, the
/// failed pods, the limit it reached, and the controller's message.
fn failure_of(job: &Job) -> Option<String> {
    let status = job.status.as_ref()?;
    let conds = conds!(status.conditions);
    let failed = find(&conds, "Failed", "True")?;
    let reason = failed.reason.unwrap_or("Failed");
    let pods = status.failed.unwrap_or(0);
    let spec = job.spec.as_ref();
    let limit = match reason {
        "BackoffLimitExceeded" => Some(format!(
            "backoffLimit {}",
            spec.and_then(|s| s.backoff_limit).unwrap_or(6)
        )),
        "DeadlineExceeded" => spec
            .and_then(|s| s.active_deadline_seconds)
            .map(|d| format!("activeDeadlineSeconds {d}")),
        _ => None,
    }
    .map(|l| format!(", {l}"))
    .unwrap_or_default();
    Some(crate::redact::string(&format!(
        "{reason} after {pods} failed pod{}{limit}: {}",
        if pods == 1 { "" } else { "s" },
        failed.message.unwrap_or("no message")
    )))
}

/// JobFailed of a Job no CronJob owns: its `Failed=True` condition
/// (`BackoffLimitExceeded`, `DeadlineExceeded`, `PodFailurePolicy`,
/// `MaxFailedIndexesExceeded`, `FailedIndexes`). A Job that completed or
/// still runs is healthy; one whose pods are being stopped after a failure
/// (`FailureTarget`) is not judged until the controller says `Failed`.
/// Whether a container of these pods was killed at its memory limit: a Job
/// that failed after it failed because of it, and the pods' OOMKilled
/// incident is the one that names the cause.
pub fn any_oom_killed<P: std::ops::Deref<Target = Pod>>(pods: &[P]) -> bool {
    pods.iter().any(|p| {
        p.status.iter().any(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
                .flat_map(|c| [c.state.as_ref(), c.last_state.as_ref()])
                .flatten()
                .filter_map(|st| st.terminated.as_ref())
                .any(|t| t.reason.as_deref() == Some("OOMKilled"))
        })
    })
}

pub fn job_failed(job: &Job) -> Finding {
    let kind = SignalKind::JobFailed;
    let name = name_of(&job.metadata);
    if let Some(failure) = failure_of(job) {
        return Finding::new(
            kind,
            Verdict::Firing,
            format!("Job/{name} failed: {failure}"),
        );
    }
    let conds = conds!(job.status.as_ref().and_then(|s| s.conditions.as_ref()));
    if find(&conds, "Complete", "True").is_some() {
        return Finding::new(kind, Verdict::Healthy, format!("Job/{name} completed"));
    }
    if find(&conds, "FailureTarget", "True").is_some() {
        return Finding::new(
            kind,
            Verdict::Unknown,
            format!("Job/{name} is failing; its pods are being stopped"),
        );
    }
    Finding::new(kind, Verdict::Healthy, format!("Job/{name} is running"))
}

/// One finished run of a CronJob.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    /// The Job of the run.
    pub job: String,
    /// The time the run was scheduled for, or the Job's creation.
    pub scheduled: Timestamp,
    /// How it failed; None when it completed.
    pub failure: Option<String>,
}

/// The CronJob that owns a Job, if one does.
pub fn cronjob_of(job: &Job) -> Option<String> {
    job.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && o.kind == "CronJob")
        .map(|o| o.name.clone())
}

/// The run a finished Job of a CronJob was; None while it runs.
pub fn run_of(job: &Job) -> Option<Run> {
    let failure = failure_of(job);
    let conds = conds!(job.status.as_ref().and_then(|s| s.conditions.as_ref()));
    if failure.is_none() && find(&conds, "Complete", "True").is_none() {
        return None;
    }
    let scheduled = job
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SCHEDULED_ANNOTATION))
        .and_then(|t| t.parse().ok())
        .or_else(|| time(job.metadata.creation_timestamp.as_ref()))?;
    Some(Run {
        job: name_of(&job.metadata),
        scheduled,
        failure,
    })
}

/// JobFailed of a CronJob: its last `failedRuns` finished runs all failed.
/// A last run that completed clears it; fewer failed runs than that, with
/// nothing known before them, is not judged.
pub fn cronjob_failed_runs(cronjob: &str, runs: &[Run], trigger: &Trigger) -> Finding {
    let kind = SignalKind::JobFailed;
    let n = trigger.failed_runs();
    let mut runs: Vec<&Run> = runs.iter().collect();
    runs.sort_by(|a, b| {
        b.scheduled
            .cmp(&a.scheduled)
            .then_with(|| b.job.cmp(&a.job))
    });
    let Some(last) = runs.first() else {
        return Finding::new(
            kind,
            Verdict::Unknown,
            format!("CronJob/{cronjob} has no finished run seen"),
        );
    };
    if last.failure.is_none() {
        return Finding::new(
            kind,
            Verdict::Healthy,
            format!("CronJob/{cronjob}: its last run {} completed", last.job),
        );
    }
    let failed: Vec<&&Run> = runs.iter().take_while(|r| r.failure.is_some()).collect();
    let listed = failed
        .iter()
        .take(n)
        .map(|r| format!("{} ({})", r.job, r.failure.as_deref().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join("; ");
    if failed.len() >= n {
        return Finding::new(
            kind,
            Verdict::Firing,
            format!(
                "CronJob/{cronjob}: its last {n} run{} failed: {listed}",
                if n == 1 { "" } else { "s" }
            ),
        );
    }
    let verdict = if failed.len() < runs.len() {
        // A completed run before the failures: fewer than n in a row.
        Verdict::Healthy
    } else {
        Verdict::Unknown
    };
    Finding::new(
        kind,
        verdict,
        format!(
            "CronJob/{cronjob}: {} of its last {n} runs failed: {listed}",
            failed.len()
        ),
    )
}

#[cfg(test)]
mod tests;
