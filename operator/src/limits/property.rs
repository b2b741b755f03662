//! The property behind "no value the API server accepts can crash the
//! operator": RemediationPolicy specs that pass the CRD schema, every
//! number at and next to its bounds, and (as a CRD installed by an older
//! version may hold them) numbers far outside them, run through policy
//! validation, the Fixer's plan, the deadlines and the Scout's per-trigger
//! thresholds. Nothing panics, and each result is a plan or a refusal that
//! names the field.
//!
//! The bounds are read from the CRD schema the operator generates, so the
//! generator and the schema cannot drift apart.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use proptest::sample::subsequence;
use serde_json::{Value, json};

use super::*;
use crate::brain::traces::WindowStats;
use crate::crd::bounds::policy_spec_schema;
use crate::crd::{
    ActionRecord, ActionType, Category, Guardrails, RemediationPolicySpec, SignalKind,
    WorkloadKind, WorkloadRef,
};
use crate::fixer::{self, Budget, Plan};
use crate::quantity::parse_bytes;
use crate::scout::measured::Subject;
use crate::scout::signals;
use crate::scout::sources::kafka::business::{self, Counts};
use crate::scout::sources::{health, metrics, traces};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray;

/// The `minimum` and `maximum` of the integer or number at `path` of the
/// spec schema (`[]` steps into an array's items).
fn bounds(path: &str) -> (f64, f64) {
    let mut s = policy_spec_schema().expect("the policy CRD has a spec schema");
    for step in path.split('.') {
        let (name, items) = match step.strip_suffix("[]") {
            Some(n) => (n, true),
            None => (step, false),
        };
        s = s
            .properties
            .as_ref()
            .and_then(|p| p.get(name))
            .unwrap_or_else(|| panic!("{path}: no {name} in the schema"));
        if items {
            s = match &s.items {
                Some(JSONSchemaPropsOrArray::Schema(i)) => i,
                _ => panic!("{path}: {name} has no items"),
            };
        }
    }
    (
        s.minimum.unwrap_or_else(|| panic!("{path} has no minimum")),
        s.maximum.unwrap_or_else(|| panic!("{path} has no maximum")),
    )
}

/// An integer at `path`: each bound, its neighbours inside, anything in
/// between, and with `old` also values past the bounds up to the extremes
/// of its type (`wide`).
fn int(path: &str, wide: i64, old: bool) -> BoxedStrategy<i64> {
    let (min, max) = bounds(path);
    let (min, max) = (min as i64, max as i64);
    let mut options = vec![
        Just(min).boxed(),
        Just((min + 1).min(max)).boxed(),
        Just((max - 1).max(min)).boxed(),
        Just(max).boxed(),
        (min..=max).boxed(),
        (min..=max).boxed(),
    ];
    if old {
        let lowest = -wide - 1;
        options.extend([
            Just(max + 1).boxed(),
            Just(wide).boxed(),
            (max + 1..=wide).boxed(),
            Just(min - 1).boxed(),
            Just(lowest).boxed(),
            (lowest..min).boxed(),
        ]);
    }
    proptest::strategy::Union::new(options).boxed()
}

fn i64_at(path: &str, old: bool) -> BoxedStrategy<i64> {
    int(path, i64::MAX, old)
}

fn i32_at(path: &str, old: bool) -> BoxedStrategy<i64> {
    int(path, i64::from(i32::MAX), old)
}

/// A float at `path`: its bounds and anything between; with `old`, also
/// far outside.
fn float_at(path: &str, old: bool) -> BoxedStrategy<f64> {
    let (min, max) = bounds(path);
    let mut options = vec![Just(min).boxed(), Just(max).boxed(), (min..=max).boxed()];
    if old {
        options.extend([
            Just(-1.0).boxed(),
            Just(f64::MAX).boxed(),
            Just(1e300).boxed(),
        ]);
    }
    proptest::strategy::Union::new(options).boxed()
}

fn maybe<T: std::fmt::Debug + Clone + 'static>(s: BoxedStrategy<T>) -> BoxedStrategy<Option<T>> {
    proptest::option::of(s).boxed()
}

/// Memory sizes in every form Kubernetes writes them, including the huge
/// and the tiny.
const QUANTITIES: &[&str] = &[
    "1", "1500m", "64Mi", "512Mi", "0.5Gi", ".5Gi", "+1Gi", "1e9", "1E3", "1.5G", "2Pi", "8Ei",
    "16Ei", "1e100", "1e-100",
];
/// What only an older CRD (without the sign rules) let in.
const OLD_QUANTITIES: &[&str] = &["0", "-1Gi", "-0"];

fn quantity(old: bool) -> BoxedStrategy<String> {
    let mut all: Vec<&str> = QUANTITIES.to_vec();
    if old {
        all.extend(OLD_QUANTITIES);
    }
    proptest::sample::select(all).prop_map(String::from).boxed()
}

const WORKLOAD: &str = "web";

fn trigger(kind: SignalKind, old: bool) -> BoxedStrategy<Value> {
    let k = kind.as_str();
    let t = |rest: &str| format!("triggers[].{rest}");
    match kind {
        SignalKind::OOMKilled | SignalKind::ImagePullBackOff | SignalKind::NodeFailure => {
            Just(json!({ "type": k })).boxed()
        }
        // No numbers: only its labels and names.
        SignalKind::Alert => Just(json!({ "type": k, "alert": {
            "alertNames": ["HighErrorRate"],
            "matchers": [{"label": "severity", "operator": "Regex", "value": "page|critical"}],
        }}))
        .boxed(),
        SignalKind::JobFailed => maybe(i32_at(&t("failedRuns"), old))
            .prop_map(move |n| json!({ "type": k, "failedRuns": n }))
            .boxed(),
        SignalKind::CrashLoopBackOff | SignalKind::InitContainerFailed => {
            maybe(i32_at(&t("restartThreshold"), old))
                .prop_map(move |n| json!({ "type": k, "restartThreshold": n }))
                .boxed()
        }
        SignalKind::Unschedulable
        | SignalKind::ReadinessFailing
        | SignalKind::ConfigError
        | SignalKind::FailedCreate
        | SignalKind::RolloutStalled => maybe(i64_at(&t("gracePeriodSeconds"), old))
            .prop_map(move |n| json!({ "type": k, "gracePeriodSeconds": n }))
            .boxed(),
        SignalKind::HealthCheck => (
            i64_at(&t("healthCheck.periodSeconds"), old),
            i64_at(&t("healthCheck.timeoutSeconds"), old),
            i32_at(&t("healthCheck.failureThreshold"), old),
            i32_at(&t("healthCheck.expectedStatus"), old),
        )
            .prop_map(move |(period, timeout, failures, status)| {
                // The schema's rule: the timeout is shorter than the period.
                let (period, timeout) = if old {
                    (period, timeout)
                } else {
                    (period.max(2), timeout.min(period.max(2) - 1))
                };
                json!({ "type": k, "workload": WORKLOAD, "healthCheck": {
                    "url": "http://web:8080/healthz",
                    "periodSeconds": period, "timeoutSeconds": timeout,
                    "failureThreshold": failures, "expectedStatus": status,
                }})
            })
            .boxed(),
        SignalKind::ConversionRate => (
            float_at(&t("conversion.minRatio"), old),
            i64_at(&t("conversion.minEvents"), old),
            i64_at(&t("conversion.windowSeconds"), old),
        )
            .prop_map(move |(ratio, events, window)| {
                json!({ "type": k, "workload": WORKLOAD, "conversion": {
                    "numeratorTopic": "bought", "denominatorTopic": "quoted",
                    "minRatio": ratio, "minEvents": events, "windowSeconds": window,
                }})
            })
            .boxed(),
        SignalKind::EventRateDrop => (
            float_at(&t("eventRate.minFraction"), old),
            i64_at(&t("eventRate.windowSeconds"), old),
            i64_at(&t("eventRate.baselineSeconds"), old),
            i64_at(&t("eventRate.minBaselineEvents"), old),
        )
            .prop_map(move |(fraction, window, baseline, events)| {
                // The schema's rule: the baseline is longer than the window.
                let baseline = if old {
                    baseline
                } else {
                    baseline.max(window + 1)
                };
                json!({ "type": k, "workload": WORKLOAD, "eventRate": {
                    "topic": "quoted", "minFraction": fraction, "windowSeconds": window,
                    "baselineSeconds": baseline, "minBaselineEvents": events,
                }})
            })
            .boxed(),
        SignalKind::TraceErrorRate | SignalKind::TraceLatency => (
            float_at(&t("traces.maxErrorRatio"), old),
            i64_at(&t("traces.maxP95Millis"), old),
            i64_at(&t("traces.windowSeconds"), old),
            i64_at(&t("traces.minSpans"), old),
        )
            .prop_map(move |(ratio, p95, window, spans)| {
                let limit = if kind == SignalKind::TraceErrorRate {
                    json!({ "maxErrorRatio": ratio })
                } else {
                    json!({ "maxP95Millis": p95 })
                };
                let mut traces =
                    json!({ "service": "web", "windowSeconds": window, "minSpans": spans });
                traces
                    .as_object_mut()
                    .expect("an object")
                    .extend(limit.as_object().expect("an object").clone());
                json!({ "type": k, "workload": WORKLOAD, "traces": traces })
            })
            .boxed(),
        SignalKind::Metric => (
            float_at(&t("metric.threshold"), old),
            i64_at(&t("metric.forSeconds"), old),
            i64_at(&t("metric.intervalSeconds"), old),
        )
            .prop_map(move |(threshold, for_s, interval)| {
                json!({ "type": k, "metric": {
                    "query": "sum by (namespace, deployment) (rate(errors_total[1m]))",
                    "comparison": "GreaterThan", "threshold": threshold,
                    "forSeconds": for_s, "intervalSeconds": interval,
                    "workloadLabel": "deployment",
                }})
            })
            .boxed(),
    }
}

const KINDS: [SignalKind; 18] = SignalKind::ALL;

const STEPS: [ActionType; 5] = [
    ActionType::RestartPod,
    ActionType::RolloutRestart,
    ActionType::Rollback,
    ActionType::Scale,
    ActionType::RaiseMemoryLimit,
];

const CATEGORIES: [Category; 4] = [
    Category::OutOfMemory,
    Category::BadRollout,
    Category::CrashLoop,
    Category::Unknown,
];

fn step(t: ActionType, old: bool) -> BoxedStrategy<Value> {
    let k = t.as_str();
    let on = subsequence(CATEGORIES.to_vec(), 0..=2);
    match t {
        ActionType::Scale => (on, i32_at("actions[].maxReplicas", old))
            .prop_map(move |(on, n)| json!({ "type": k, "onCategories": on, "maxReplicas": n }))
            .boxed(),
        ActionType::RaiseMemoryLimit => (
            on,
            i32_at("actions[].memory.increasePercent", old),
            maybe(quantity(old)),
            quantity(old),
        )
            .prop_map(move |(on, percent, min, max)| {
                // The schema's rule: the cap is at least the step.
                let min = min.filter(|m| old || parse_bytes(m).ok() <= parse_bytes(&max).ok());
                json!({ "type": k, "onCategories": on, "memory": {
                    "increasePercent": percent, "minIncrease": min, "max": max,
                }})
            })
            .boxed(),
        _ => on
            .prop_map(move |on| json!({ "type": k, "onCategories": on }))
            .boxed(),
    }
}

/// A policy spec as a user (or an older CRD) could have written it.
fn spec(old: bool) -> impl Strategy<Value = Value> {
    let triggers = subsequence(KINDS.to_vec(), 1..=KINDS.len()).prop_flat_map(move |kinds| {
        kinds
            .into_iter()
            .map(|k| trigger(k, old))
            .collect::<Vec<_>>()
    });
    let actions = (subsequence(STEPS.to_vec(), 0..=STEPS.len()), any::<bool>()).prop_flat_map(
        move |(steps, escalate)| {
            let mut steps: Vec<_> = steps.into_iter().map(|s| step(s, old)).collect();
            if escalate || steps.is_empty() {
                steps.push(step(ActionType::Escalate, old));
            }
            steps
        },
    );
    let g = |name: &str| format!("guardrails.{name}");
    let guardrails = (
        i64_at(&g("cooldownSeconds"), old),
        i32_at(&g("maxActionsPerHour"), old),
        i32_at(&g("maxPodsDisrupted"), old),
        i64_at(&g("verificationWindowSeconds"), old),
        i32_at(&g("escalateAfterAttempts"), old),
        i64_at(&g("recurrenceWindowSeconds"), old),
    )
        .prop_map(|(c, a, p, v, e, r)| {
            json!({
                "cooldownSeconds": c, "maxActionsPerHour": a, "maxPodsDisrupted": p,
                "verificationWindowSeconds": v, "escalateAfterAttempts": e,
                "recurrenceWindowSeconds": r,
            })
        });
    let mode = proptest::sample::select(vec!["DryRun", "Manual", "Automatic"]);
    (triggers, actions, guardrails, mode).prop_map(|(triggers, actions, guardrails, mode)| {
        json!({
            "selector": { "matchLabels": { "app": WORKLOAD } },
            "triggers": triggers, "actions": actions, "mode": mode, "guardrails": guardrails,
        })
    })
}

/// Any instant a timestamp in an object's status can hold, its extremes
/// more often than chance would pick them.
fn instant() -> BoxedStrategy<Timestamp> {
    let (lo, hi) = (Timestamp::MIN.as_second(), Timestamp::MAX.as_second());
    prop_oneof![
        Just(Timestamp::MIN),
        Just(Timestamp::MAX),
        (lo..=hi).prop_map(|s| Timestamp::from_second(s).expect("in range")),
        (-WEEK_SECONDS..=WEEK_SECONDS).prop_map(|d| now() + SignedDuration::from_secs(d)),
    ]
    .boxed()
}

fn now() -> Timestamp {
    "2026-11-26T10:00:00Z".parse().expect("a timestamp")
}

/// The circumstances a policy is applied in.
#[derive(Debug, Clone)]
struct World {
    /// The covered container's memory limit.
    limit: &'static str,
    /// When earlier actions of the incident finished, and how they went.
    history: Vec<(ActionType, &'static str, Option<Timestamp>, bool)>,
    budget: (usize, usize, usize, usize),
    changed: Option<Timestamp>,
    /// A restart count, and when a pod's condition turned.
    restarts: i32,
    since: Timestamp,
    seed: u64,
}

fn world() -> impl Strategy<Value = World> {
    let history = proptest::collection::vec(
        (
            proptest::sample::select(STEPS.to_vec()),
            proptest::sample::select(vec!["Succeeded", "Failed", "Blocked", "DryRun", "Pending"]),
            proptest::option::of(instant()),
            any::<bool>(),
        ),
        0..4,
    );
    (
        proptest::sample::select(QUANTITIES.to_vec()),
        history,
        (0usize..2000, 0usize..50, 0usize..50, 0usize..2000),
        proptest::option::of(instant()),
        prop_oneof![Just(i32::MAX), Just(0), any::<i32>()],
        instant(),
        any::<u64>(),
    )
        .prop_map(
            |(limit, history, budget, changed, restarts, since, seed)| World {
                limit,
                history,
                budget,
                changed,
                restarts,
                since,
                seed,
            },
        )
}

fn record(
    i: usize,
    (t, state, finished, effective): &(ActionType, &str, Option<Timestamp>, bool),
) -> ActionRecord {
    let mut r: ActionRecord = serde_json::from_value(json!({
        "id": format!("{i}-{}", t.as_str()), "type": t, "state": state,
        "recordedAt": "2026-11-26T09:00:00Z",
        "outcome": if *effective { "Effective" } else { "Ineffective" },
    }))
    .expect("an action record");
    r.finished_at = finished.map(Time);
    r
}

fn pods(w: &World) -> Vec<Pod> {
    let mut crash: Pod = serde_json::from_value(json!({
        "metadata": { "name": "web-1", "uid": "u1" },
        "status": { "phase": "Running", "containerStatuses": [{
            "name": "app", "image": "web:1", "imageID": "", "ready": false,
            "restartCount": w.restarts,
            "state": { "waiting": { "reason": "CrashLoopBackOff" } },
        }]},
    }))
    .expect("a pod");
    let mut pending: Pod = serde_json::from_value(json!({
        "metadata": { "name": "web-2", "uid": "u2" },
        "status": { "phase": "Pending", "conditions": [
            { "type": "PodScheduled", "status": "False", "reason": "Unschedulable" },
        ]},
    }))
    .expect("a pod");
    let mut unready: Pod = serde_json::from_value(json!({
        "metadata": { "name": "web-3", "uid": "u3" },
        "status": { "phase": "Running", "conditions": [
            { "type": "Ready", "status": "False" },
        ]},
    }))
    .expect("a pod");
    for p in [&mut pending, &mut unready] {
        for c in p
            .status
            .iter_mut()
            .flat_map(|s| s.conditions.iter_mut().flatten())
        {
            c.last_transition_time = Some(Time(w.since));
        }
    }
    crash.metadata.namespace = Some("shop".into());
    vec![crash, pending, unready]
}

/// A refusal names the field to fix, as the policy's Ready condition
/// shows it.
fn names_a_field(message: &str) -> bool {
    ["triggers[", "actions[", "guardrails."]
        .iter()
        .any(|p| message.starts_with(p))
}

fn check(value: &Value, old: bool, w: &World) -> Result<(), TestCaseError> {
    let spec: RemediationPolicySpec =
        serde_json::from_value(value.clone()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let history: Vec<ActionRecord> = w
        .history
        .iter()
        .enumerate()
        .map(|(i, h)| record(i, h))
        .collect();
    validation_refuses_by_name(&spec, old, w)?;
    fixer_plans(&spec, &history, w)?;
    deadlines_are_bounded(&spec.guardrails, &history)?;
    scout_thresholds_are_bounded(&spec, w)?;
    raised_limits_stay_under_the_cap(&spec, w)
}

/// Validation: a clear refusal, naming the field, for anything outside the
/// schema's bounds; nothing for a spec inside them.
fn validation_refuses_by_name(
    spec: &RemediationPolicySpec,
    old: bool,
    w: &World,
) -> Result<(), TestCaseError> {
    let g = &spec.guardrails;
    let covered: Vec<(WorkloadRef, k8s_openapi::api::core::v1::PodTemplateSpec)> =
        vec![(
        WorkloadRef {
            kind: WorkloadKind::Deployment,
            name: WORKLOAD.into(),
        },
        serde_json::from_value(json!({ "metadata": { "labels": { "app": WORKLOAD } }, "spec": {
            "containers": [{ "name": "app", "resources": { "limits": { "memory": w.limit } } }]
        }}))
        .map_err(|e| TestCaseError::fail(e.to_string()))?,
    )];
    let problems = crate::policy::validate(spec, &covered);
    for p in &problems {
        prop_assert!(names_a_field(&p.message), "{}: {}", p.reason, p.message);
    }
    let out_of_range: Vec<_> = problems
        .iter()
        .filter(|p| p.reason == "ValueOutOfRange")
        .collect();
    if !old {
        prop_assert!(out_of_range.is_empty(), "{out_of_range:#?}");
    }
    let guardrails = [
        ("cooldownSeconds", g.cooldown_seconds, 0, WEEK_SECONDS),
        (
            "maxActionsPerHour",
            i64::from(g.max_actions_per_hour),
            0,
            MAX_ACTIONS_PER_HOUR,
        ),
        (
            "maxPodsDisrupted",
            i64::from(g.max_pods_disrupted),
            1,
            MAX_PODS_DISRUPTED,
        ),
        (
            "verificationWindowSeconds",
            g.verification_window_seconds,
            1,
            WEEK_SECONDS,
        ),
        (
            "escalateAfterAttempts",
            i64::from(g.escalate_after_attempts),
            1,
            MAX_ATTEMPTS,
        ),
        (
            "recurrenceWindowSeconds",
            g.recurrence_window_seconds,
            0,
            WEEK_SECONDS,
        ),
    ];
    for (field, v, min, max) in guardrails {
        if v < min || v > max {
            let path = format!("guardrails.{field} is {v},");
            prop_assert!(
                out_of_range.iter().any(|p| p.message.starts_with(&path)),
                "{path} not refused: {problems:#?}"
            );
        }
    }

    Ok(())
}

/// The Fixer: a plan (a step of the ladder, a bounded wait, or an
/// escalation), whatever the numbers and the times.
fn fixer_plans(
    spec: &RemediationPolicySpec,
    history: &[ActionRecord],
    w: &World,
) -> Result<(), TestCaseError> {
    let g = &spec.guardrails;
    let (per_policy, global, limit, disrupted) = w.budget;
    let budget = Budget {
        policy_actions_last_hour: per_policy,
        global_recent_actions: global,
        breaker_limit: limit,
        // The namespace's share, as the operator derives it from the limit.
        namespace_recent_actions: global,
        namespace_limit: Some((limit / 2).max(1)),
        pods_disrupted: disrupted,
        workload_changed: w.changed.map(|t| crate::fixer::claims::Change {
            at: t,
            by: "other".into(),
            action: ActionType::RolloutRestart,
        }),
    };
    for category in CATEGORIES {
        match fixer::plan(spec, category, history, None, &budget, now()) {
            Plan::Act(step) => prop_assert!(spec.actions.contains(&step)),
            Plan::Wait {
                reason,
                message,
                retry_after,
            } => {
                prop_assert!(!message.is_empty(), "{reason}");
                prop_assert!(retry_after <= 2 * WEEK, "{reason}: {retry_after:?}");
            }
            Plan::Escalate { message, .. } => prop_assert!(!message.is_empty()),
        }
    }
    if let Some(Plan::Wait { retry_after, .. }) = fixer::workload_settling(g, &budget, now()) {
        prop_assert!(retry_after <= 2 * WEEK, "{retry_after:?}");
    }

    Ok(())
}

/// The deadlines: within a week of the action, or the end of time.
fn deadlines_are_bounded(g: &Guardrails, history: &[ActionRecord]) -> Result<(), TestCaseError> {
    let finished = history
        .iter()
        .filter_map(|a| a.finished_at.as_ref().map(|t| t.0));
    for at in finished.chain([now(), Timestamp::MIN, Timestamp::MAX]) {
        let deadline = fixer::verification_deadline(g, at);
        prop_assert!(deadline >= at);
        prop_assert!(
            deadline == Timestamp::MAX
                || deadline.duration_since(at) <= SignedDuration::from_secs(WEEK_SECONDS),
            "{at} -> {deadline}"
        );
    }

    Ok(())
}

/// The Scout's thresholds, per trigger.
fn scout_thresholds_are_bounded(
    spec: &RemediationPolicySpec,
    w: &World,
) -> Result<(), TestCaseError> {
    for pod in pods(w) {
        let reading = signals::read_pod(&pod, &spec.triggers, now());
        if let Some(after) = reading.recheck_after {
            prop_assert!(after <= WEEK, "{after:?}");
        }
    }
    let subject = |kind| Subject {
        namespace: "shop".into(),
        policy: "p".into(),
        kind,
        workload: WORKLOAD.into(),
        workload_kind: WorkloadKind::Deployment,
    };
    // A Deployment past its progress deadline, and refused pods, since the
    // time a pod's condition turned: the workload detectors' grace periods.
    let since = w.since;
    let stalled: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
        "metadata": { "name": WORKLOAD, "namespace": "shop" },
        "spec": { "selector": {}, "template": {} },
        "status": { "conditions": [
            { "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
              "lastTransitionTime": since.to_string() },
            { "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
              "lastTransitionTime": since.to_string() }
        ] }
    }))
    .expect("a Deployment");
    for t in &spec.triggers {
        use crate::scout::workloads::detect;
        let n = t.failed_runs();
        prop_assert!((1..=MAX_FAILED_RUNS as usize).contains(&n), "{n}");
        for f in [
            detect::deployment_rollout_stalled(&stalled, t, now()),
            detect::deployment_failed_create(&stalled, &[], t, now()),
            detect::cronjob_failed_runs(WORKLOAD, &[], t),
        ] {
            prop_assert!(
                f.recheck_after.is_none_or(|after| after <= WEEK),
                "{:?}",
                f.recheck_after
            );
        }
        if let Some(h) = &t.health_check {
            let delay = health::next_delay(h.period_seconds, w.seed);
            prop_assert!(delay >= Duration::from_secs(1));
            prop_assert!(delay <= Duration::from_secs(MAX_WINDOW_SECONDS as u64) * 11 / 10);
        }
        if let Some(m) = &t.metric {
            let delay = metrics::next_delay(m, w.seed);
            prop_assert!(delay >= Duration::from_secs(5));
            prop_assert!(delay <= Duration::from_secs(MAX_WINDOW_SECONDS as u64) * 11 / 10);
            let mut tracker = metrics::Tracker::default();
            let watched = metrics::Watched {
                key: metrics::TriggerKey {
                    namespace: "shop".into(),
                    policy: "p".into(),
                    workload: None,
                    query: m.query.clone(),
                },
                settings: m.clone(),
                policy_uid: String::new(),
            };
            let sorted = metrics::Sorted {
                workloads: BTreeMap::from([(
                    WORKLOAD.to_string(),
                    metrics::Observed::Across(f64::MAX),
                )]),
                ..Default::default()
            };
            for at in [now(), Timestamp::MAX] {
                tracker.judge(&watched, Ok(sorted.clone()), None, at);
            }
            prop_assert!(tracker.reading("shop", "p", WORKLOAD).is_some());
        }
        if let Some(s) = &t.traces {
            prop_assert!(traces::interval(s) <= Duration::from_secs(MAX_WINDOW_SECONDS as u64));
            let stats = WindowStats {
                spans: w.seed % 1000,
                errors: w.seed % 7,
                p50_ms: 10.0,
                p95_ms: (w.seed % 100_000) as f64,
            };
            let (_, summary, _, _) = traces::judge(t.type_, s, &stats);
            prop_assert!(!summary.is_empty());
        }
        let mut counts = Counts::default();
        let now_s = now().as_second();
        if let Some(c) = &t.conversion {
            let keep = business::conversion_seconds(c);
            prop_assert!((1..=MAX_WINDOW_SECONDS + 60).contains(&keep), "{keep}");
            counts.follow(
                &BTreeMap::from([(c.denominator_topic.clone(), keep)]),
                now_s - keep,
            );
            counts.add(&c.denominator_topic, None, now_s * 1000 - 5000);
            counts.confirm(&c.denominator_topic, now_s * 1000);
            let r = business::evaluate_conversion(subject(t.type_), c, &counts, now());
            prop_assert!(!r.summary.is_empty());
        }
        if let Some(e) = &t.event_rate {
            let keep = business::event_rate_seconds(e);
            prop_assert!(
                (1..=MAX_WINDOW_SECONDS + MAX_BASELINE_SECONDS + 60).contains(&keep),
                "{keep}"
            );
            counts.follow(&BTreeMap::from([(e.topic.clone(), keep)]), now_s - keep);
            counts.confirm(&e.topic, now_s * 1000);
            let r = business::evaluate_event_rate(subject(t.type_), e, &counts, now());
            prop_assert!(!r.summary.is_empty());
        }
    }

    Ok(())
}

/// Raising a memory limit: above the current limit, never above the cap.
fn raised_limits_stay_under_the_cap(
    spec: &RemediationPolicySpec,
    w: &World,
) -> Result<(), TestCaseError> {
    for step in &spec.actions {
        let Some(m) = &step.memory else { continue };
        let (Ok(current), Ok(cap)) = (parse_bytes(w.limit), parse_bytes(&m.max)) else {
            continue;
        };
        let min = m
            .min_increase
            .as_deref()
            .map(parse_bytes)
            .transpose()
            .ok()
            .flatten();
        match fixer::actions::raised_limit(current, m.increase_percent, min, cap) {
            Some(to) => prop_assert!(current < to && to <= cap, "{current} -> {to} (cap {cap})"),
            None => prop_assert!(current >= cap),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Every spec the schema accepts, its numbers at and beside their
    /// bounds: validation finds nothing out of range, and everything after
    /// it plans without panicking.
    #[test]
    fn every_policy_the_schema_accepts_validates_plans_and_measures_without_panicking(
        value in spec(false),
        w in world(),
    ) {
        check(&value, false, &w)?;
    }

    /// Specs with numbers far past the bounds, as a CRD installed by an
    /// older version may hold: refused by name, and still no panic.
    #[test]
    fn a_policy_with_numbers_an_old_crd_let_in_is_refused_by_name_and_crashes_nothing(
        value in spec(true),
        w in world(),
    ) {
        check(&value, true, &w)?;
    }
}

/// The crash measured on the local cluster: an action finished and its
/// verification window is `verificationWindowSeconds` of 999999999999 (or
/// anything up to `i64::MAX`). The deadline saturates instead of panicking.
#[test]
fn the_verify_deadline_of_a_huge_window_saturates_instead_of_panicking() {
    for window in [999_999_999_999, i64::MAX, i64::MIN, -1] {
        let g = Guardrails {
            verification_window_seconds: window,
            cooldown_seconds: window,
            ..Guardrails::default()
        };
        for finished in [now(), Timestamp::MAX, Timestamp::MIN] {
            let deadline = fixer::verification_deadline(&g, finished);
            assert!(deadline >= finished, "{window}: {deadline}");
            let budget = Budget {
                breaker_limit: 10,
                workload_changed: Some(crate::fixer::claims::Change {
                    at: finished,
                    by: "other".into(),
                    action: ActionType::RestartPod,
                }),
                ..Budget::default()
            };
            let _ = fixer::workload_settling(&g, &budget, now());
        }
        assert_eq!(
            fixer::verification_deadline(&g, now()),
            if window > 0 {
                now() + SignedDuration::from_secs(WEEK_SECONDS)
            } else {
                now()
            },
            "a window past a week is a week"
        );
    }
}

/// IncidentMemory is written by the operator, but its tallies and times can
/// hold anything an older CRD (or a person) let in: recording one more
/// episode neither overflows nor writes a value the API server refuses.
#[test]
fn recording_into_a_memory_with_huge_tallies_saturates_within_the_schema() {
    let incident: crate::crd::Incident = serde_json::from_value(json!({
        "apiVersion": "sre.space/v1alpha1", "kind": "Incident",
        "metadata": { "name": "web-oomkilled", "namespace": "shop" },
        "spec": { "fingerprint": "f", "target": { "kind": "Deployment", "name": "web" },
                  "signal": "OOMKilled", "policy": "p" },
        "status": { "phase": "Resolved",
                    "detectedAt": "2026-11-26T09:00:00Z", "resolvedAt": "2026-11-26T09:10:00Z",
                    "actions": [
                        { "id": "1-RestartPod", "type": "RestartPod", "state": "Succeeded",
                          "recordedAt": "2026-11-26T09:01:00Z", "outcome": "Effective" },
                        { "id": "2-Scale", "type": "Scale", "state": "Failed",
                          "recordedAt": "2026-11-26T09:02:00Z", "outcome": "Ineffective" },
                    ] },
    }))
    .expect("an incident");
    let memory: crate::crd::IncidentMemory = serde_json::from_value(json!({
        "apiVersion": "sre.space/v1alpha1", "kind": "IncidentMemory",
        "metadata": { "name": "f", "namespace": "shop" },
        "spec": { "fingerprint": "f", "target": { "kind": "Deployment", "name": "web" },
                  "signal": "OOMKilled",
                  "occurrences": [{ "incident": "old", "detectedAt": "2026-01-01T00:00:00Z",
                                    "timeToMitigateSeconds": i64::MAX }],
                  "actions": [
                      { "type": "RestartPod", "effective": i32::MAX, "ineffective": -3 },
                      { "type": "Scale", "effective": 0, "ineffective": i32::MAX },
                  ] },
        "status": { "totalOccurrences": i64::MAX },
    }))
    .expect("a memory");
    let (spec, status) =
        crate::memory::record(Some(&memory), &incident, now()).expect("a new episode");
    for t in &spec.actions {
        assert!((0..=MAX_TALLY).contains(&i64::from(t.effective)), "{t:?}");
        assert!((0..=MAX_TALLY).contains(&i64::from(t.ineffective)), "{t:?}");
    }
    for o in &spec.occurrences {
        let s = o.time_to_mitigate_seconds.unwrap_or(0);
        assert!((0..=MAX_RECORDED_SECONDS).contains(&s), "{o:?}");
    }
    assert_eq!(status.total_occurrences, i64::MAX);
    assert_eq!(
        spec.occurrences
            .last()
            .and_then(|o| o.time_to_mitigate_seconds),
        Some(600)
    );
}
