//! The Metric triggers: a PromQL query evaluated against Prometheus on a
//! jittered interval, judged per series. A series counts only when its
//! namespace label is the policy's namespace (the query may read any
//! namespace; an incident opens only in the policy's) and it names a
//! Deployment the policy covers. A series across the threshold for the
//! trigger's `forSeconds` fires; Prometheus away, a refused query or a NaN
//! is Unknown, which neither opens nor clears an incident, and the policy
//! says so in its `MetricsAvailable` condition. A trigger that selects the
//! Sequential detector also reads each value as a per-second rate and fires
//! on the detector's evidence of a drop; its threshold stays as a floor.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::{ConditionWriter, Rewrite, Wanted};
use crate::conditions::METRICS_AVAILABLE;
use crate::crd::{
    ConditionStatus, MetricTrigger, SignalKind, WorkloadKind, WorkloadRef, WorkloadSelector,
};
use crate::limits::MAX_METRIC_SERIES;
use crate::prometheus::{MetricError, MetricStore, Sample};
use crate::scout::Context;
use crate::scout::detect::{self, Evidence, Sequential, State};
use crate::scout::measured::{Reading, Subject, Verdict};

/// How often the loop looks for triggers that are due.
const TICK: Duration = Duration::from_secs(1);

/// Which trigger: its policy, its fixed workload if any, and its query.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TriggerKey {
    pub namespace: String,
    pub policy: String,
    /// The trigger's `workload`, when it names one instead of a label.
    pub workload: Option<String>,
    pub query: String,
}

/// One Metric trigger of a policy.
#[derive(Clone, Debug)]
pub struct Watched {
    pub key: TriggerKey,
    pub settings: MetricTrigger,
    /// The policy's uid: a policy created again under the same name gets
    /// its condition written afresh.
    pub policy_uid: String,
}

/// What one evaluation says of one workload's series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Observed {
    /// A series is across the threshold, at this value.
    Across(f64),
    /// A series is NaN and none is across.
    NotANumber,
    /// Every series is within the threshold (the value of the first), or
    /// the result has no series of the workload.
    Within(Option<f64>),
}

impl Observed {
    fn rank(self) -> u8 {
        match self {
            Self::Within(_) => 0,
            Self::NotANumber => 1,
            Self::Across(_) => 2,
        }
    }
}

/// A result, sorted by the workloads its series name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sorted {
    pub workloads: BTreeMap<String, Observed>,
    /// Series of the namespace past [`MAX_METRIC_SERIES`], not judged.
    pub left_out: usize,
    /// Series of the namespace that name no Deployment the policy covers
    /// (or lack the workload label).
    pub uncovered: usize,
}

/// Sorts a result's series by workload. Series of other namespaces are
/// ignored; `covered` says whether a Deployment named by a series' label is
/// one the policy covers.
pub fn sort(
    key: &TriggerKey,
    settings: &MetricTrigger,
    samples: &[Sample],
    covered: &(dyn Fn(&str) -> bool + Sync),
) -> Sorted {
    let mut out = Sorted::default();
    let mut considered = 0usize;
    for s in samples {
        if s.labels.get(&settings.namespace_label) != Some(&key.namespace) {
            continue;
        }
        if considered >= MAX_METRIC_SERIES {
            out.left_out = out.left_out.saturating_add(1);
            continue;
        }
        considered += 1;
        let workload = match (&key.workload, &settings.workload_label) {
            (Some(fixed), _) => Some(fixed.clone()),
            (None, Some(label)) => s.labels.get(label).filter(|w| covered(w)).cloned(),
            (None, None) => None,
        };
        let Some(workload) = workload else {
            out.uncovered = out.uncovered.saturating_add(1);
            continue;
        };
        let seen = if s.value.is_nan() {
            Observed::NotANumber
        } else if settings.comparison.holds(s.value, settings.threshold) {
            Observed::Across(s.value)
        } else {
            Observed::Within(Some(s.value))
        };
        let entry = out.workloads.entry(workload).or_insert(seen);
        if seen.rank() > entry.rank() {
            *entry = seen;
        }
    }
    if let Some(fixed) = &key.workload {
        out.workloads
            .entry(fixed.clone())
            .or_insert(Observed::Within(None));
    }
    out
}

/// One trigger's judgement of one workload.
#[derive(Clone, Debug, PartialEq)]
pub struct Judged {
    pub verdict: Verdict,
    pub summary: String,
    pub value: Option<f64>,
    pub threshold: f64,
    pub at: Timestamp,
}

/// Whether a trigger's query answered, as its policy's condition says.
#[derive(Clone, Debug, PartialEq)]
pub enum Availability {
    Answered { left_out: usize },
    NotANumber(String),
    Refused(String),
    Unavailable(String),
    NotConfigured,
}

impl Availability {
    fn rank(&self) -> u8 {
        match self {
            Self::Answered { .. } => 0,
            Self::NotANumber(_) => 1,
            Self::Refused(_) => 2,
            Self::Unavailable(_) => 3,
            Self::NotConfigured => 4,
        }
    }

    /// The worse of the two, for one condition per policy.
    pub fn worst(self, other: Self) -> Self {
        match (self, other) {
            (Self::Answered { left_out: a }, Self::Answered { left_out: b }) => Self::Answered {
                left_out: a.saturating_add(b),
            },
            (a, b) if b.rank() > a.rank() => b,
            (a, _) => a,
        }
    }

    /// The condition's status, reason and message.
    pub fn condition(&self) -> (ConditionStatus, &'static str, String) {
        match self {
            Self::Answered { left_out: 0 } => (
                ConditionStatus::True,
                "PrometheusAnswering",
                "Prometheus answers the Metric triggers' queries".into(),
            ),
            Self::Answered { left_out } => (
                ConditionStatus::True,
                "SeriesLeftOut",
                format!(
                    "Prometheus answers, but {left_out} series of this namespace were left out \
                     (at most {MAX_METRIC_SERIES} per query are judged); aggregate the query"
                ),
            ),
            Self::NotANumber(why) => (
                ConditionStatus::False,
                "NotANumber",
                format!("{why}: those workloads are Unknown"),
            ),
            Self::Refused(why) => (
                ConditionStatus::False,
                "QueryFailed",
                format!("{why}: the trigger is Unknown until its query is fixed"),
            ),
            Self::Unavailable(why) => (
                ConditionStatus::False,
                "PrometheusUnavailable",
                format!("{why}: the Metric triggers are Unknown until it answers"),
            ),
            Self::NotConfigured => (
                ConditionStatus::False,
                "PrometheusNotConfigured",
                format!(
                    "Prometheus is not configured ({} is unset): the Metric triggers are Unknown",
                    crate::prometheus::URL_ENV
                ),
            ),
        }
    }
}

/// What the Metric triggers remember between evaluations: since when each
/// workload's series is across each trigger's threshold, and each
/// trigger's latest judgement of each workload.
#[derive(Debug, Default)]
pub struct Tracker {
    across_since: HashMap<(TriggerKey, String), Timestamp>,
    latest: BTreeMap<(TriggerKey, String), Judged>,
    /// The sequential detectors of the triggers that select one, with the
    /// settings they were built with (a policy edit builds them afresh).
    detectors: HashMap<(TriggerKey, String), (detect::Settings, Sequential)>,
}

impl Tracker {
    /// Forgets the triggers `keep` rejects.
    pub fn retain(&mut self, mut keep: impl FnMut(&TriggerKey) -> bool) {
        self.across_since.retain(|(k, _), _| keep(k));
        self.latest.retain(|(k, _), _| keep(k));
        self.detectors.retain(|(k, _), _| keep(k));
    }

    /// Feeds one evaluation's value to the slot's sequential detector, when
    /// the trigger selects one: the value is a per-second rate over the
    /// trigger's interval, so one step holds `value × interval` events.
    fn sequential(
        &mut self,
        w: &Watched,
        slot: &(TriggerKey, String),
        value: f64,
        now: Timestamp,
    ) -> Option<Evidence> {
        let d = detect::sequential(w.settings.detector.as_ref())?;
        let settings = detect::metric_settings(&w.settings, d);
        let entry = self
            .detectors
            .entry(slot.clone())
            .or_insert_with(|| (settings, Sequential::new(settings)));
        if entry.0 != settings {
            *entry = (settings, Sequential::new(settings));
        }
        let step = settings.step_seconds;
        // A negative or non-finite rate is no count: not fed.
        if !value.is_finite() || value < 0.0 {
            return None;
        }
        let events = (value * step).round().min(u64::MAX as f64) as u64;
        Some(entry.1.observe(now.as_second(), events, step))
    }

    /// Judges one evaluation of a trigger: `found` is the sorted result, or
    /// why there is none. Returns the workloads judged.
    pub fn judge(
        &mut self,
        w: &Watched,
        found: Result<Sorted, String>,
        link: Option<&str>,
        now: Timestamp,
    ) -> Vec<String> {
        let s = &w.settings;
        let mut workloads: BTreeSet<String> = self
            .latest
            .keys()
            .filter(|(k, _)| *k == w.key)
            .map(|(_, name)| name.clone())
            .collect();
        workloads.extend(w.key.workload.clone());
        if let Ok(sorted) = &found {
            workloads.extend(sorted.workloads.keys().cloned());
        }
        let query = format!("query {}", s.query);
        let graph = link.map(|l| format!("; graph: {l}")).unwrap_or_default();
        let test = format!("{} {}", s.comparison.symbol(), s.threshold);
        for name in &workloads {
            let target = format!("Deployment/{name}");
            let slot = (w.key.clone(), name.clone());
            let observed = match &found {
                Ok(sorted) => match sorted.workloads.get(name) {
                    Some(Observed::Across(v)) | Some(Observed::Within(Some(v))) => Some(*v),
                    _ => None,
                },
                Err(_) => None,
            };
            let evidence = observed.and_then(|v| self.sequential(w, &slot, v, now));
            let (verdict, summary, value) = match &found {
                Err(why) => (
                    Verdict::Unknown,
                    format!("{target}: not measurable ({why}); {query}"),
                    None,
                ),
                Ok(sorted) => match sorted
                    .workloads
                    .get(name)
                    .copied()
                    .unwrap_or(Observed::Within(None))
                {
                    Observed::Across(v) => {
                        let since = *self.across_since.entry(slot.clone()).or_insert(now);
                        let held = now.duration_since(since).as_secs().max(0);
                        if held
                            >= s.for_seconds
                                .clamp(0, crate::limits::MAX_METRIC_FOR_SECONDS)
                        {
                            (
                                Verdict::Firing,
                                format!(
                                    "{target}: value {v} {test} for {held} s (forSeconds {}); {query}{graph}",
                                    s.for_seconds
                                ),
                                Some(v),
                            )
                        } else {
                            (
                                Verdict::Unknown,
                                format!(
                                    "{target}: value {v} {test} for {held} s, not yet forSeconds {}: pending; {query}",
                                    s.for_seconds
                                ),
                                Some(v),
                            )
                        }
                    }
                    Observed::NotANumber => (
                        Verdict::Unknown,
                        format!(
                            "{target}: the value is NaN, neither within nor across {test}; {query}"
                        ),
                        None,
                    ),
                    Observed::Within(v) => {
                        self.across_since.remove(&slot);
                        let said = match v {
                            Some(v) => format!("value {v}, not {test}"),
                            None => format!("no series in the result, so not {test}"),
                        };
                        (Verdict::Healthy, format!("{target}: {said}; {query}"), v)
                    }
                },
            };
            // The detector adds its alarm; the threshold's verdict stands
            // as a floor.
            let (verdict, summary) = match evidence {
                Some(e) if verdict != Verdict::Firing && e.state == State::Firing => (
                    Verdict::Firing,
                    format!(
                        "{target}: {}; {query}{graph}",
                        detect::summary("the rate", &e)
                    ),
                ),
                Some(e) => (
                    verdict,
                    format!("{summary}; {}", detect::summary("the rate", &e)),
                ),
                _ => (verdict, summary),
            };
            self.latest.insert(
                slot,
                Judged {
                    verdict,
                    summary,
                    value,
                    threshold: s.threshold,
                    at: now,
                },
            );
        }
        workloads.into_iter().collect()
    }

    /// The reading of a workload under a policy, from the latest judgement
    /// of each of the policy's Metric triggers: firing when any fires,
    /// else Unknown when any is, else healthy.
    pub fn reading(&self, namespace: &str, policy: &str, workload: &str) -> Option<Reading> {
        let judged = self
            .latest
            .iter()
            .filter(|((k, name), _)| {
                k.namespace == namespace && k.policy == policy && name == workload
            })
            .map(|(_, j)| j);
        let lead = judged.max_by_key(|j| match j.verdict {
            Verdict::Healthy => 0,
            Verdict::Unknown => 1,
            Verdict::Firing => 2,
        })?;
        Some(Reading {
            subject: subject(namespace, policy, workload),
            verdict: lead.verdict,
            summary: lead.summary.clone(),
            value: lead.value,
            threshold: Some(lead.threshold),
            at: lead.at,
        })
    }
}

/// The board's subject of a workload under a policy.
pub fn subject(namespace: &str, policy: &str, workload: &str) -> Subject {
    Subject {
        namespace: namespace.into(),
        policy: policy.into(),
        kind: SignalKind::Metric,
        workload: workload.into(),
        workload_kind: WorkloadKind::Deployment,
    }
}

/// Evaluates one trigger: asks the store (None: not configured), judges the
/// result, and returns the readings of the workloads it judged and whether
/// the query answered.
pub async fn evaluate(
    store: Option<&dyn MetricStore>,
    tracker: &mut Tracker,
    w: &Watched,
    covered: &(dyn Fn(&str) -> bool + Sync),
    now: Timestamp,
) -> (Vec<Reading>, Availability) {
    let (found, availability, link) = match store {
        None => (
            Err("Prometheus is not configured".to_string()),
            Availability::NotConfigured,
            None,
        ),
        Some(store) => {
            let link = store.graph_link(&w.settings.query);
            match store.query(&w.settings.query, now).await {
                Ok(samples) => {
                    let sorted = sort(&w.key, &w.settings, &samples, covered);
                    let nan: Vec<&String> = sorted
                        .workloads
                        .iter()
                        .filter(|(_, o)| **o == Observed::NotANumber)
                        .map(|(n, _)| n)
                        .collect();
                    let availability = if nan.is_empty() {
                        Availability::Answered {
                            left_out: sorted.left_out,
                        }
                    } else {
                        Availability::NotANumber(format!(
                            "query {:?} gives NaN for Deployment/{}",
                            w.settings.query,
                            nan.iter()
                                .map(|n| n.as_str())
                                .collect::<Vec<_>>()
                                .join(", Deployment/")
                        ))
                    };
                    (Ok(sorted), availability, Some(link))
                }
                Err(e) => {
                    debug!(error = %e, query = %w.settings.query, "Metric trigger not measurable");
                    let availability = match &e {
                        MetricError::Query { .. } => {
                            Availability::Refused(format!("query {:?}: {e}", w.settings.query))
                        }
                        _ => Availability::Unavailable(e.to_string()),
                    };
                    (Err(e.to_string()), availability, Some(link))
                }
            }
        }
    };
    let judged = tracker.judge(w, found, link.as_deref(), now);
    let readings = judged
        .iter()
        .filter_map(|name| tracker.reading(&w.key.namespace, &w.key.policy, name))
        .collect();
    (readings, availability)
}

/// The delay until a trigger's next evaluation: its interval plus up to a
/// tenth of it, so triggers of the same interval spread out.
pub fn next_delay(settings: &MetricTrigger, seed: u64) -> Duration {
    let interval = settings
        .interval_seconds
        .clamp(5, crate::limits::MAX_WINDOW_SECONDS);
    crate::limits::std_seconds(interval, 5, crate::limits::MAX_WINDOW_SECONDS)
        + super::health::jitter(interval, seed)
}

/// A watched trigger with what decides which Deployments it may name.
struct Found {
    watched: Watched,
    selector: WorkloadSelector,
    /// The Deployments the policy's status lists as covered.
    matched: BTreeSet<String>,
}

/// The Metric triggers of the policies the operator sees.
fn watched(ctx: &Context) -> Vec<Found> {
    let mut out = Vec::new();
    for policy in ctx.policies.state() {
        let matched: BTreeSet<String> = policy
            .status
            .iter()
            .flat_map(|s| s.matched_workloads.iter())
            .filter(|w| w.kind == WorkloadKind::Deployment)
            .map(|w| w.name.clone())
            .collect();
        for t in &policy.spec.triggers {
            let (SignalKind::Metric, Some(settings)) = (t.type_, &t.metric) else {
                continue;
            };
            out.push(Found {
                watched: Watched {
                    key: TriggerKey {
                        namespace: policy.namespace().unwrap_or_default(),
                        policy: policy.name_any(),
                        workload: t.workload.clone(),
                        query: settings.query.clone(),
                    },
                    settings: settings.clone(),
                    policy_uid: policy.uid().unwrap_or_default(),
                },
                selector: policy.spec.selector.clone(),
                matched: matched.clone(),
            });
        }
    }
    out
}

/// Starts the Metric triggers' loop.
pub fn spawn(ctx: Arc<Context>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(ctx))
}

async fn run(ctx: Arc<Context>) {
    let mut due: HashMap<TriggerKey, Instant> = HashMap::new();
    // Each trigger's latest: a policy's condition is the worst of its
    // triggers', whichever was evaluated last.
    let mut answered: HashMap<TriggerKey, (String, Availability)> = HashMap::new();
    let mut tracker = Tracker::default();
    // An error's text moves; only a new status or reason is written.
    let mut writer =
        ConditionWriter::new(METRICS_AVAILABLE, Rewrite::StatusOrReason, Duration::ZERO);
    let seeds = std::collections::hash_map::RandomState::new();
    let mut round: u64 = 0;
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        round = round.wrapping_add(1);
        let triggers = watched(&ctx);
        let keys: BTreeSet<&TriggerKey> = triggers.iter().map(|f| &f.watched.key).collect();
        tracker.retain(|k| keys.contains(k));
        due.retain(|k, _| keys.contains(k));
        answered.retain(|k, _| keys.contains(k));
        // Workloads no trigger of their policy judges any more leave the
        // board.
        ctx.board.retain(|s| {
            s.kind != SignalKind::Metric
                || tracker
                    .reading(&s.namespace, &s.policy, &s.workload)
                    .is_some()
        });
        writer.retain(|(ns, name)| keys.iter().any(|k| (&k.namespace, &k.policy) == (ns, name)));
        let now = Instant::now();
        let ready: Vec<&Found> = triggers
            .iter()
            .filter(|f| due.get(&f.watched.key).is_none_or(|at| *at <= now))
            .collect();
        if ready.is_empty() {
            continue;
        }
        let at = ctx.clock.now();
        for f in ready {
            let w = &f.watched;
            let seed = seeds.hash_one((&w.key, round));
            due.insert(w.key.clone(), now + next_delay(&w.settings, seed));
            let ns = w.key.namespace.clone();
            let covered = |name: &str| {
                f.matched.contains(name)
                    || ctx
                        .workloads
                        .pods_of(
                            &ns,
                            &WorkloadRef {
                                kind: WorkloadKind::Deployment,
                                name: name.to_string(),
                            },
                        )
                        .iter()
                        .any(|p| crate::workload::selector_matches(&f.selector, p.labels()))
            };
            let store = ctx.prometheus.as_deref();
            let (readings, availability) = evaluate(store, &mut tracker, w, &covered, at).await;
            if store.is_some() {
                let result = match availability {
                    Availability::Unavailable(_) => "Unreachable",
                    _ => "Answered",
                };
                let labels = crate::telemetry::CallLabels {
                    system: "prometheus".into(),
                    result: result.into(),
                };
                ctx.metrics.outside_calls.get_or_create(&labels).inc();
            }
            for reading in readings {
                let workload = reading.subject.workload.clone();
                if let Err(e) = crate::scout::report(&ctx, reading).await {
                    warn!(error = %e, %workload, "could not record the Metric trigger's reading");
                }
            }
            answered.insert(w.key.clone(), (w.policy_uid.clone(), availability));
        }
        let mut per_policy: BTreeMap<(String, String, String), Availability> = BTreeMap::new();
        for (k, (uid, availability)) in &answered {
            let entry = per_policy
                .entry((k.namespace.clone(), k.policy.clone(), uid.clone()))
                .or_insert(Availability::Answered { left_out: 0 });
            *entry =
                std::mem::replace(entry, Availability::NotConfigured).worst(availability.clone());
        }
        for ((ns, name, uid), availability) in per_policy {
            let (status, reason, message) = availability.condition();
            let wanted = Wanted {
                status,
                reason,
                message,
            };
            writer
                .write(&ctx.client, &(ns, name), &uid, &wanted, now)
                .await;
        }
    }
}

#[cfg(test)]
mod tests;
