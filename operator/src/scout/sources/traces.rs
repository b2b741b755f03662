//! The trace triggers (TraceErrorRate, TraceLatency): every few seconds, the
//! spans of a service over the trigger's window, read from the trace store
//! and judged against the policy's limits. A store that is away or too few
//! spans make the reading Unknown, never trouble; the policy says so in its
//! `TracesAvailable` condition.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::{ConditionWriter, Rewrite, Wanted};
use crate::brain::traces::WindowStats;
use crate::conditions::TRACES_AVAILABLE;
use crate::crd::{ConditionStatus, SignalKind, TraceTrigger};
use crate::scout::Context;
use crate::scout::measured::{Reading, Subject, Verdict};
use crate::traces::{Trace, TraceQuery};

/// How often the loop looks for triggers that are due.
const TICK: Duration = Duration::from_secs(1);
/// No trigger queries the store more often than this ...
const MIN_INTERVAL: Duration = Duration::from_secs(5);
/// ... nor more often than four times per window.
const QUERIES_PER_WINDOW: u32 = 4;
/// Traces read per query: enough for a ratio, bounded for the store.
const TRACE_LIMIT: usize = 500;

/// One trace trigger of a policy.
#[derive(Clone, Debug)]
struct Watched {
    subject: Subject,
    settings: TraceTrigger,
    /// The policy's uid: a policy deleted and created again under the same
    /// name gets its condition written afresh.
    policy_uid: String,
}

/// How often a trigger's window is read.
pub fn interval(settings: &TraceTrigger) -> Duration {
    let window = crate::limits::std_seconds(
        settings.window_seconds,
        0,
        crate::limits::MAX_WINDOW_SECONDS,
    );
    (window / QUERIES_PER_WINDOW).max(MIN_INTERVAL)
}

/// The spans a trigger judges: those of its service (and operation) that
/// started inside the window.
pub fn measure(
    settings: &TraceTrigger,
    traces: &[Trace],
    start: Timestamp,
    end: Timestamp,
) -> WindowStats {
    let (from, to) = (start.as_microsecond(), end.as_microsecond());
    WindowStats::of(traces.iter().flat_map(|t| &t.spans).filter(|s| {
        s.service == settings.service
            && settings
                .operation
                .as_ref()
                .is_none_or(|op| *op == s.operation)
            && (from..=to).contains(&s.start_us)
    }))
}

/// A trigger's verdict on the spans of its window: (verdict, summary, value,
/// threshold).
pub fn judge(
    kind: SignalKind,
    settings: &TraceTrigger,
    stats: &WindowStats,
) -> (Verdict, String, Option<f64>, Option<f64>) {
    let what = match &settings.operation {
        Some(op) => format!("{} {op}", settings.service),
        None => settings.service.clone(),
    };
    let window = settings.window_seconds;
    let (value, threshold, measured) = match kind {
        SignalKind::TraceLatency => (
            stats.p95_ms,
            settings.max_p95_millis.map(|m| m as f64),
            format!(
                "p95 {:.0} ms over {} spans of {what} in {window} s",
                stats.p95_ms, stats.spans
            ),
        ),
        _ => (
            stats.error_ratio(),
            settings.max_error_ratio,
            format!(
                "error ratio {:.2} ({} of {} spans of {what} in {window} s)",
                stats.error_ratio(),
                stats.errors,
                stats.spans
            ),
        ),
    };
    let Some(limit) = threshold else {
        return (
            Verdict::Unknown,
            format!(
                "{measured}; the trigger sets no limit for {}",
                kind.as_str()
            ),
            Some(value),
            None,
        );
    };
    if stats.spans < settings.min_spans.max(0).unsigned_abs() {
        return (
            Verdict::Unknown,
            format!(
                "only {} spans of {what} in {window} s, fewer than minSpans {}: not judged",
                stats.spans, settings.min_spans
            ),
            None,
            Some(limit),
        );
    }
    let unit = if kind == SignalKind::TraceLatency {
        " ms"
    } else {
        ""
    };
    if value > limit {
        (
            Verdict::Firing,
            format!("{measured}, above the maximum {limit}{unit}"),
            Some(value),
            Some(limit),
        )
    } else {
        (
            Verdict::Healthy,
            format!("{measured}, within the maximum {limit}{unit}"),
            Some(value),
            Some(limit),
        )
    }
}

/// The trace triggers of the policies the operator sees.
fn watched(ctx: &Context) -> Vec<Watched> {
    let mut out = Vec::new();
    for policy in ctx.policies.state() {
        for t in &policy.spec.triggers {
            if !matches!(
                t.type_,
                SignalKind::TraceErrorRate | SignalKind::TraceLatency
            ) {
                continue;
            }
            let (Some(settings), Some(workload)) = (&t.traces, &t.workload) else {
                continue;
            };
            out.push(Watched {
                subject: Subject {
                    namespace: policy.namespace().unwrap_or_default(),
                    policy: policy.name_any(),
                    kind: t.type_,
                    workload: workload.clone(),
                    workload_kind: crate::crd::WorkloadKind::Deployment,
                },
                settings: settings.clone(),
                policy_uid: policy.uid().unwrap_or_default(),
            });
        }
    }
    out
}

/// Starts the trace triggers' loop.
pub fn spawn(ctx: Arc<Context>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(ctx))
}

async fn run(ctx: Arc<Context>) {
    let mut due: HashMap<Subject, Instant> = HashMap::new();
    // A policy's condition is bound to its uid; a store's error text moves,
    // so only a new status or reason is written.
    let mut writer =
        ConditionWriter::new(TRACES_AVAILABLE, Rewrite::StatusOrReason, Duration::ZERO);
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let triggers = watched(&ctx);
        let is_trace =
            |k: SignalKind| matches!(k, SignalKind::TraceErrorRate | SignalKind::TraceLatency);
        // Triggers removed from their policy leave the board.
        ctx.board
            .retain(|s| !is_trace(s.kind) || triggers.iter().any(|w| &w.subject == s));
        due.retain(|s, _| triggers.iter().any(|w| &w.subject == s));
        writer.retain(|(ns, name)| {
            triggers
                .iter()
                .any(|w| (&w.subject.namespace, &w.subject.policy) == (ns, name))
        });
        let now = Instant::now();
        let ready: Vec<Watched> = triggers
            .into_iter()
            .filter(|w| due.get(&w.subject).is_none_or(|at| *at <= now))
            .collect();
        if ready.is_empty() {
            continue;
        }
        for w in &ready {
            due.insert(w.subject.clone(), now + interval(&w.settings));
        }
        let outcomes = futures::future::join_all(ready.iter().map(|w| judge_one(&ctx, w))).await;
        // One condition per policy: unavailable when any of its queries
        // failed.
        let mut per_policy: BTreeMap<(String, String, String), Availability> = BTreeMap::new();
        for (w, outcome) in ready.iter().zip(outcomes) {
            let key = (
                w.subject.namespace.clone(),
                w.subject.policy.clone(),
                w.policy_uid.clone(),
            );
            let entry = per_policy.entry(key).or_insert(Availability::Reachable);
            if outcome.worse_than(entry) {
                *entry = outcome;
            }
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

/// Whether a trigger's query reached the store.
#[derive(Clone, Debug, PartialEq)]
enum Availability {
    Reachable,
    NotConfigured,
    Unavailable(String),
}

impl Availability {
    fn rank(&self) -> u8 {
        match self {
            Self::Reachable => 0,
            Self::Unavailable(_) => 1,
            Self::NotConfigured => 2,
        }
    }

    fn worse_than(&self, other: &Self) -> bool {
        self.rank() > other.rank()
    }

    fn condition(&self) -> (ConditionStatus, &'static str, String) {
        match self {
            Self::Reachable => (
                ConditionStatus::True,
                "JaegerReachable",
                "the trace store answers the trace triggers' queries".into(),
            ),
            Self::NotConfigured => (
                ConditionStatus::False,
                "JaegerNotConfigured",
                format!(
                    "no trace store is configured ({} is unset): the trace triggers are Unknown",
                    crate::traces::QUERY_ENV
                ),
            ),
            Self::Unavailable(why) => (
                ConditionStatus::False,
                "JaegerUnavailable",
                format!("{why}: the trace triggers are Unknown until it answers"),
            ),
        }
    }
}

/// Reads and judges one trigger's window and posts the reading.
async fn judge_one(ctx: &Context, w: &Watched) -> Availability {
    let end = ctx.clock.now();
    let start = crate::limits::before(
        end,
        w.settings
            .window_seconds
            .clamp(1, crate::limits::MAX_WINDOW_SECONDS),
    );
    let (reading, availability) = match &ctx.traces {
        None => (
            (
                Verdict::Unknown,
                format!(
                    "no trace store is configured ({} is unset)",
                    crate::traces::QUERY_ENV
                ),
                None,
                None,
            ),
            Availability::NotConfigured,
        ),
        Some(store) => {
            let query = TraceQuery {
                service: w.settings.service.clone(),
                operation: w.settings.operation.clone(),
                start,
                end,
                limit: TRACE_LIMIT,
            };
            let found = store.find_traces(&query).await;
            let labels = crate::telemetry::CallLabels {
                system: "jaeger".into(),
                result: if found.is_ok() {
                    "Answered"
                } else {
                    "Unreachable"
                }
                .into(),
            };
            ctx.metrics.outside_calls.get_or_create(&labels).inc();
            match found {
                Ok(traces) => {
                    let stats = measure(&w.settings, &traces, start, end);
                    (
                        judge(w.subject.kind, &w.settings, &stats),
                        Availability::Reachable,
                    )
                }
                Err(e) => {
                    debug!(error = %e, service = %w.settings.service, "trace trigger not measurable");
                    (
                        (
                            Verdict::Unknown,
                            format!("traces not readable: {e}"),
                            None,
                            None,
                        ),
                        Availability::Unavailable(e.to_string()),
                    )
                }
            }
        }
    };
    let (verdict, summary, value, threshold) = reading;
    let reading = Reading {
        subject: w.subject.clone(),
        verdict,
        summary,
        value,
        threshold,
        at: end,
    };
    if let Err(e) = crate::scout::report(ctx, reading).await {
        warn!(error = %e, workload = %w.subject.workload, "could not record the trace trigger's reading");
    }
    availability
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traces::Span;

    fn settings(max_error_ratio: Option<f64>, max_p95_millis: Option<i64>) -> TraceTrigger {
        TraceTrigger {
            service: "policy-service".into(),
            operation: None,
            max_error_ratio,
            max_p95_millis,
            window_seconds: 60,
            min_spans: 10,
        }
    }

    fn stats(spans: u64, errors: u64, p95_ms: f64) -> WindowStats {
        WindowStats {
            spans,
            errors,
            p50_ms: p95_ms / 2.0,
            p95_ms,
        }
    }

    #[test]
    fn an_error_ratio_above_the_maximum_fires_and_at_it_is_healthy() {
        let s = settings(Some(0.1), None);
        let (v, summary, value, threshold) =
            judge(SignalKind::TraceErrorRate, &s, &stats(20, 6, 5.0));
        assert_eq!(v, Verdict::Firing);
        assert_eq!((value, threshold), (Some(0.3), Some(0.1)));
        assert_eq!(
            summary,
            "error ratio 0.30 (6 of 20 spans of policy-service in 60 s), above the maximum 0.1"
        );
        let (v, ..) = judge(SignalKind::TraceErrorRate, &s, &stats(20, 2, 5.0));
        assert_eq!(v, Verdict::Healthy);
    }

    #[test]
    fn a_p95_above_the_maximum_fires() {
        let s = settings(None, Some(250));
        let (v, summary, value, threshold) =
            judge(SignalKind::TraceLatency, &s, &stats(50, 0, 900.0));
        assert_eq!(v, Verdict::Firing);
        assert_eq!((value, threshold), (Some(900.0), Some(250.0)));
        assert!(summary.contains("above the maximum 250 ms"), "{summary}");
        assert_eq!(
            judge(SignalKind::TraceLatency, &s, &stats(50, 0, 200.0)).0,
            Verdict::Healthy
        );
    }

    #[test]
    fn too_few_spans_are_unknown_however_many_fail() {
        let s = settings(Some(0.1), None);
        let (v, summary, value, _) = judge(SignalKind::TraceErrorRate, &s, &stats(9, 9, 5.0));
        assert_eq!(v, Verdict::Unknown);
        assert_eq!(value, None);
        assert!(summary.contains("fewer than minSpans 10"), "{summary}");
    }

    #[test]
    fn only_the_services_operation_in_the_window_is_measured() {
        let at = |s: i64| Timestamp::from_second(s).expect("time");
        let span = |service: &str, op: &str, start_s: i64, error: bool| Span {
            span_id: format!("{service}{op}{start_s}"),
            parent_id: None,
            service: service.into(),
            operation: op.into(),
            start_us: start_s * 1_000_000,
            duration_us: 1000,
            error,
        };
        let traces = vec![Trace {
            trace_id: "t".into(),
            spans: vec![
                span("policy-service", "quote", 110, true),
                span("policy-service", "quote", 120, false),
                span("policy-service", "health", 120, false),
                span("policy-service", "quote", 90, true),
                span("user-service", "quote", 120, true),
            ],
        }];
        let mut s = settings(Some(0.1), None);
        let all = measure(&s, &traces, at(100), at(160));
        assert_eq!((all.spans, all.errors), (3, 1));
        s.operation = Some("quote".into());
        let quote = measure(&s, &traces, at(100), at(160));
        assert_eq!((quote.spans, quote.errors), (2, 1));
    }

    #[test]
    fn a_trigger_reads_its_window_at_most_four_times_and_at_least_every_five_seconds() {
        let mut s = settings(Some(0.1), None);
        assert_eq!(interval(&s), Duration::from_secs(15));
        s.window_seconds = 10;
        assert_eq!(interval(&s), MIN_INTERVAL);
    }
}
