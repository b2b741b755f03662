use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{ActionType, Category, Outcome, SignalKind, WorkloadRef};

/// The history of one problem (one fingerprint), kept after its incidents are
/// resolved and bounded in size. The whole object is the operator's: its
/// history lives in `spec` so that it survives a backup and restore.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sre.space",
    version = "v1alpha1",
    kind = "IncidentMemory",
    plural = "incidentmemories",
    shortname = "incmem",
    category = "sre-space",
    namespaced,
    status = "IncidentMemoryStatus",
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.target.name"}"#,
    printcolumn = r#"{"name":"Signal","type":"string","jsonPath":".spec.signal"}"#,
    printcolumn = r#"{"name":"Occurrences","type":"integer","jsonPath":".status.totalOccurrences"}"#,
    printcolumn = r#"{"name":"Best Action","type":"string","jsonPath":".status.bestAction"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct IncidentMemorySpec {
    /// The fingerprint this history is about.
    #[x_kube(validation = Rule::new("self == oldSelf").message("fingerprint is immutable"))]
    pub fingerprint: String,
    /// The workload.
    pub target: WorkloadRef,
    /// The signal kind.
    pub signal: SignalKind,
    /// The most recent occurrences, oldest first; older ones are dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub occurrences: Vec<OccurrenceRecord>,
    /// For each action tried on this problem, how often it worked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub actions: Vec<ActionTally>,
    /// Terms drawn from the evidence of past occurrences, used to find similar
    /// problems of other workloads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub keywords: Vec<String>,
}

/// One past occurrence.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OccurrenceRecord {
    /// The Incident it was.
    pub incident: String,
    /// When it was detected.
    pub detected_at: Time,
    /// The diagnosed category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    /// The actions taken, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionType>,
    /// Whether it was fixed (Effective) or escalated (Ineffective).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Seconds from detection to the signal clearing, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = crate::limits::MAX_RECORDED_SECONDS))]
    pub time_to_mitigate_seconds: Option<i64>,
    /// The diagnosis in a line (category and root cause), redacted, so the
    /// history stays searchable after the Incident is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub summary: Option<String>,
}

/// How one action fared on this problem.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ActionTally {
    /// The action.
    #[serde(rename = "type")]
    pub type_: ActionType,
    /// Times it cleared the signal.
    #[serde(default)]
    #[schemars(range(min = 0, max = crate::limits::MAX_TALLY))]
    pub effective: i32,
    /// Times it did not.
    #[serde(default)]
    #[schemars(range(min = 0, max = crate::limits::MAX_TALLY))]
    pub ineffective: i32,
    /// When it was last tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_tried: Option<Time>,
}

/// A summary of the history.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IncidentMemoryStatus {
    /// All occurrences ever recorded, including those dropped from `spec`.
    #[serde(default)]
    pub total_occurrences: i64,
    /// The action that worked most often, if any did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_action: Option<ActionType>,
    /// When the problem was last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Time>,
}
