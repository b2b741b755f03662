use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// The last run of the Tier 3 sweep, as this policy saw it: when it ran,
/// how long it took, and the architectural problems it found among the
/// workloads this policy covers. Written by the leader only.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SweepStatus {
    /// When the last sweep started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_time: Option<Time>,
    /// The scheduled time the last sweep ran for (a catch-up run started
    /// later than this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// How long the last sweep took, in milliseconds.
    #[serde(default)]
    #[schemars(range(min = 0, max = crate::limits::MAX_SWEEP_MILLIS))]
    pub duration_millis: i64,
    /// A scheduled time that passed without a run and was skipped, because
    /// the operator came back later than the starting deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed_schedule_time: Option<Time>,
    /// How many problems the last sweep found here.
    #[serde(default)]
    #[schemars(range(min = 0, max = crate::limits::MAX_SWEEP_FINDINGS))]
    pub finding_count: i32,
    /// The problems the last sweep found (at most 50 are listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub findings: Vec<SweepFinding>,
}

/// One architectural problem the sweep found.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SweepFinding {
    /// The IncidentMemory (one per fingerprint) it was found in.
    #[schemars(length(max = 253))]
    pub memory: String,
    /// The problem's fingerprint.
    #[schemars(length(max = 128))]
    pub fingerprint: String,
    /// The rules it met, comma separated: Recurring, ShortHold, SameFix.
    #[schemars(length(max = 64))]
    pub rule: String,
    /// The class of fix the sweep suggests; empty when nothing in the
    /// history points at one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 64))]
    pub fix_class: String,
    /// Occurrences within the sweep's window.
    #[serde(default)]
    #[schemars(range(min = 0, max = crate::limits::MAX_SWEEP_FINDINGS))]
    pub occurrences: i32,
    /// The `jules-fix` issue that carries the brief.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 500))]
    pub issue_url: Option<String>,
    /// Its number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = crate::limits::MAX_ISSUE_NUMBER))]
    pub issue_number: Option<i64>,
    /// The Jules session working on it (its URL, else its name), when a
    /// Jules key is configured; the latest Incident's `status.jules`
    /// follows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 500))]
    pub jules_session: Option<String>,
    /// Why there is no issue (no repository, GitHub off, not allowed, a
    /// GitHub error), or why no Jules session started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 500))]
    pub reason: Option<String>,
}
