//! The bounds of the numbers in our custom resources, and time arithmetic
//! that cannot overflow.
//!
//! The CRD schema takes its `maximum`s from these constants, so the API
//! server refuses anything larger. A CRD installed by an older version may
//! still let such a value in, so the code clamps it as well before it reaches
//! time arithmetic: jiff panics on an overflowing timestamp, and a panic in a
//! reconciler stops the operator for every namespace. A policy holding a
//! value outside the schema's bounds is also reported not Ready
//! (`crd::bounds::out_of_bounds`), naming the field, so it never acts.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The longest duration a policy may set: a week. Cooldowns, verification
/// and recurrence windows and grace periods beyond it are a mistake, not a
/// setting.
pub const WEEK_SECONDS: i64 = 7 * 24 * 60 * 60;
/// A week, as a standard duration.
pub const WEEK: Duration = Duration::from_secs(WEEK_SECONDS.unsigned_abs());
/// The longest sliding window a measured trigger judges (traces, Kafka) and
/// the longest health-check period.
pub const MAX_WINDOW_SECONDS: i64 = 3600;
/// The longest baseline an EventRateDrop trigger compares with.
pub const MAX_BASELINE_SECONDS: i64 = 86_400;
/// The most seconds a health check's probe may take.
pub const MAX_PROBE_TIMEOUT_SECONDS: i64 = 60;
/// Actions per hour under one policy.
pub const MAX_ACTIONS_PER_HOUR: i64 = 1000;
/// Pods of one workload the operator may disrupt at once.
pub const MAX_PODS_DISRUPTED: i64 = 1000;
/// Ineffective attempts before escalating.
pub const MAX_ATTEMPTS: i64 = 100;
/// A crash loop's restart count threshold.
pub const MAX_RESTART_THRESHOLD: i64 = 10_000;
/// The most consecutive failed runs of a CronJob a JobFailed trigger may
/// wait for (the Scout remembers that many runs of each CronJob).
pub const MAX_FAILED_RUNS: i64 = 20;
/// The most replicas a Scale step may scale a workload to.
pub const MAX_REPLICAS: i64 = 10_000;
/// Event and span counts a measured trigger needs before it judges
/// (`minEvents`, `minBaselineEvents`, `minSpans`).
pub const MAX_EVENTS: i64 = 10_000_000;
/// The highest 95th percentile latency limit: an hour, in milliseconds.
pub const MAX_P95_MILLIS: i64 = 3_600_000;
/// How long a Metric trigger's series may have to stay across its
/// threshold: a day.
pub const MAX_METRIC_FOR_SECONDS: i64 = 86_400;
/// The bounds of a Metric trigger's threshold: finite, and well inside
/// what an f64 holds exactly enough to compare.
pub const MAX_METRIC_THRESHOLD: f64 = 1e15;
pub const MIN_METRIC_THRESHOLD: f64 = -1e15;
/// The most series of one Metric trigger's result (those of the policy's
/// namespace) the Scout judges; the rest are left out, and the policy's
/// MetricsAvailable condition says so.
pub const MAX_METRIC_SERIES: usize = 200;
/// The highest percentage a memory limit is raised by in one step.
pub const MAX_INCREASE_PERCENT: i64 = 400;
/// Times an action worked or did not on one problem, as IncidentMemory
/// counts them; counting stops there.
pub const MAX_TALLY: i64 = 1_000_000;
/// The longest time to mitigate IncidentMemory records: ten years.
pub const MAX_RECORDED_SECONDS: i64 = 10 * 365 * 24 * 60 * 60;

/// The longest sweep a policy's status records: a day, in milliseconds.
pub const MAX_SWEEP_MILLIS: i64 = 86_400_000;
/// Problems one sweep reports, and occurrences it counts, per policy.
pub const MAX_SWEEP_FINDINGS: i64 = 10_000;
/// The highest GitHub issue number a status records.
pub const MAX_ISSUE_NUMBER: i64 = 1_000_000_000;

/// The largest Alertmanager webhook body the receiver reads: 1 MiB.
pub const MAX_ALERT_PAYLOAD_BYTES: usize = 1024 * 1024;
/// Alerts in one webhook payload.
pub const MAX_ALERTS_PER_PAYLOAD: usize = 1000;
/// Labels (and, separately, annotations) of one alert.
pub const MAX_ALERT_LABELS: usize = 64;
/// The longest label or annotation name of an alert, in bytes.
pub const MAX_ALERT_LABEL_NAME_BYTES: usize = 128;
/// The longest label value of an alert, in bytes.
pub const MAX_ALERT_LABEL_VALUE_BYTES: usize = 1024;
/// Annotation values are cut to this many bytes.
pub const MAX_ALERT_ANNOTATION_BYTES: usize = 2048;
/// Firing alerts the leader holds at once; beyond it, the one due to
/// expire first is dropped.
pub const MAX_HELD_ALERTS: usize = 10_000;

/// `secs` as a duration, clamped to between zero and a week.
pub fn seconds(secs: i64) -> SignedDuration {
    SignedDuration::from_secs(secs.clamp(0, WEEK_SECONDS))
}

/// `t` plus `secs` seconds (clamped as [`seconds`] does), saturating at the
/// last instant a timestamp can hold instead of panicking.
pub fn after(t: Timestamp, secs: i64) -> Timestamp {
    t.checked_add(seconds(secs)).unwrap_or(Timestamp::MAX)
}

/// `t` minus `secs` seconds (clamped as [`seconds`] does), saturating at
/// the first instant a timestamp can hold.
pub fn before(t: Timestamp, secs: i64) -> Timestamp {
    t.checked_sub(seconds(secs)).unwrap_or(Timestamp::MIN)
}

/// `secs` clamped to `[min, max]`, as a standard duration.
pub fn std_seconds(secs: i64, min: i64, max: i64) -> Duration {
    Duration::from_secs(secs.clamp(min, max).unsigned_abs())
}

#[cfg(test)]
mod property;

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
        JSONSchemaProps, JSONSchemaPropsOrArray,
    };

    #[test]
    fn time_arithmetic_saturates_instead_of_panicking() {
        let t = Timestamp::UNIX_EPOCH;
        assert_eq!(after(t, 60), t + SignedDuration::from_secs(60));
        assert_eq!(
            after(t, i64::MAX),
            t + SignedDuration::from_secs(WEEK_SECONDS)
        );
        assert_eq!(after(t, -5), t, "a negative duration is no duration");
        assert_eq!(after(Timestamp::MAX, i64::MAX), Timestamp::MAX);
        assert_eq!(before(Timestamp::MIN, i64::MAX), Timestamp::MIN);
        assert_eq!(std_seconds(i64::MAX, 1, 60), Duration::from_secs(60));
        assert_eq!(std_seconds(i64::MIN, 1, 60), Duration::from_secs(1));
    }

    /// The hook of the project's checks, in a test: every integer of every
    /// CRD's spec has a maximum, so no value the API server accepts is
    /// unbounded.
    #[test]
    fn every_integer_in_a_crd_spec_has_a_maximum() {
        fn walk(s: &JSONSchemaProps, path: &str, bad: &mut Vec<String>) {
            if s.type_.as_deref() == Some("integer") && s.maximum.is_none() {
                bad.push(path.to_string());
            }
            for (k, v) in s.properties.iter().flatten() {
                walk(v, &format!("{path}.{k}"), bad);
            }
            if let Some(JSONSchemaPropsOrArray::Schema(items)) = &s.items {
                walk(items, &format!("{path}[]"), bad);
            }
        }
        let mut bad = Vec::new();
        for crd in crate::crd::all_crds() {
            for v in &crd.spec.versions {
                let spec = v
                    .schema
                    .as_ref()
                    .and_then(|s| s.open_api_v3_schema.as_ref())
                    .and_then(|s| s.properties.as_ref())
                    .and_then(|p| p.get("spec"));
                if let Some(spec) = spec {
                    walk(spec, &format!("{}.spec", crd.spec.names.kind), &mut bad);
                }
            }
        }
        assert_eq!(bad, Vec::<String>::new());
    }
}
