use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ActionType, Category, Condition, SignalKind, WorkloadRef};

/// What a platform team writes: which workloads SRE-Space looks after, what
/// counts as trouble, what it may do about it, in which mode, and within which
/// guardrails.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sre.space",
    version = "v1alpha1",
    kind = "RemediationPolicy",
    plural = "remediationpolicies",
    shortname = "rp",
    category = "sre-space",
    namespaced,
    status = "RemediationPolicyStatus",
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Matched","type":"integer","jsonPath":".status.matched"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Cooldown","type":"integer","priority":1,"jsonPath":".spec.guardrails.cooldownSeconds"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RemediationPolicySpec {
    /// Which workloads of this namespace the policy covers, by the labels of
    /// their pods (the pod template's labels). It must not be empty: a policy
    /// that covers everything is written out on purpose, not by omission.
    pub selector: WorkloadSelector,
    /// What counts as trouble. A signal of a kind not listed here opens no
    /// incident for the covered workloads.
    #[schemars(length(min = 1, max = 16))]
    pub triggers: Vec<Trigger>,
    /// The remediation ladder, tried in order: the first step that fits the
    /// diagnosis and has not already proved ineffective for this problem runs
    /// next. Actions not listed here never run, whatever the diagnosis says.
    #[schemars(length(min = 1, max = 10))]
    pub actions: Vec<ActionStep>,
    /// DryRun: record what would be done and change nothing. Manual: wait for a
    /// person to approve each action in the Incident's spec. Automatic: act
    /// within the guardrails.
    #[serde(default)]
    pub mode: Mode,
    /// Limits on how much and how often the operator may act.
    #[serde(default)]
    pub guardrails: Guardrails,
    /// Where incidents are reported and configuration changes proposed. The
    /// operator reaches GitHub with the token or GitHub App of its own
    /// configuration (a Secret); without one, the would-be issue and pull
    /// request are kept in the Incident's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<GitHubTarget>,
}

/// A GitHub repository for incident issues and GitOps pull requests.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GitHubTarget {
    /// `owner/name` of the repository.
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$')").message("repository must be owner/name"))]
    #[schemars(length(max = 200))]
    pub repository: String,
    /// Labels added to every incident issue, beside `sre-space`, the
    /// severity and the status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub labels: Vec<String>,
    /// Where configuration changes go: RaiseMemoryLimit then opens a pull
    /// request against this file instead of patching the workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitops: Option<GitOpsTarget>,
}

/// The file that holds a workload's memory limit in the GitOps repository.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.valuesKey) != has(self.container)").message("set exactly one of valuesKey (a Helm values file) and container (a manifest)"))]
pub struct GitOpsTarget {
    /// Path of the file in the repository. Never under `.github/`: the
    /// operator does not touch CI workflows.
    #[x_kube(validation = Rule::new("!self.startsWith('.github/') && !self.contains('/.github/') && !self.contains('..')").message("path may not be under .github/ or contain '..'"))]
    #[schemars(length(min = 1, max = 300))]
    pub path: String,
    /// The branch pull requests are opened against.
    #[serde(default = "GitOpsTarget::default_base_branch")]
    #[schemars(length(max = 100))]
    pub base_branch: String,
    /// In a Helm values file: the dotted key of the memory limit, e.g.
    /// `policyService.resources.limits.memory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 200))]
    pub values_key: Option<String>,
    /// In a manifest: the name of the container whose
    /// `resources.limits.memory` is raised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub container: Option<String>,
}

impl GitOpsTarget {
    fn default_base_branch() -> String {
        "main".into()
    }
}

/// A label selector over the pods of a workload, as in a Deployment's
/// `spec.selector`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)").message("selector must name at least one label in matchLabels or matchExpressions").reason(Reason::FieldValueRequired))]
pub struct WorkloadSelector {
    /// Labels the pods must all carry, with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Label requirements the pods must all meet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub match_expressions: Vec<LabelRequirement>,
}

/// One label requirement, as in Kubernetes' LabelSelectorRequirement.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)").message("In and NotIn need values; Exists and DoesNotExist take none"))]
pub struct LabelRequirement {
    /// The label key.
    pub key: String,
    /// How the label's value relates to `values`.
    pub operator: LabelOperator,
    /// The values for In and NotIn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub values: Vec<String>,
}

/// Operators of a label requirement.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// One kind of trouble the policy reacts to.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.restartThreshold) || self.type == 'CrashLoopBackOff'").message("restartThreshold applies only to CrashLoopBackOff"))]
#[x_kube(validation = Rule::new("!has(self.gracePeriodSeconds) || self.type in ['Unschedulable', 'ReadinessFailing']").message("gracePeriodSeconds applies only to Unschedulable and ReadinessFailing"))]
pub struct Trigger {
    /// The signal kind.
    #[serde(rename = "type")]
    pub type_: SignalKind,
    /// CrashLoopBackOff: how many restarts of a container count as a crash
    /// loop. Defaults to 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub restart_threshold: Option<i32>,
    /// Unschedulable and ReadinessFailing: how long the condition must last
    /// before it is trouble, so ordinary start-up and scheduling delays are
    /// not. Defaults to 60 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub grace_period_seconds: Option<i64>,
}

impl Trigger {
    pub const DEFAULT_RESTART_THRESHOLD: i32 = 3;
    pub const DEFAULT_GRACE_PERIOD_SECONDS: i64 = 60;

    pub fn restart_threshold(&self) -> i32 {
        self.restart_threshold
            .unwrap_or(Self::DEFAULT_RESTART_THRESHOLD)
    }

    pub fn grace_period_seconds(&self) -> i64 {
        self.grace_period_seconds
            .unwrap_or(Self::DEFAULT_GRACE_PERIOD_SECONDS)
    }
}

/// One step of the remediation ladder.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type != 'RaiseMemoryLimit' || has(self.memory)").message("a RaiseMemoryLimit step needs memory (at least memory.max, the cap)").reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new("!has(self.memory) || self.type == 'RaiseMemoryLimit'").message("memory applies only to RaiseMemoryLimit"))]
#[x_kube(validation = Rule::new("self.type != 'Scale' || has(self.maxReplicas)").message("a Scale step needs maxReplicas").reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new("!has(self.maxReplicas) || self.type == 'Scale'").message("maxReplicas applies only to Scale"))]
pub struct ActionStep {
    /// The action.
    #[serde(rename = "type")]
    pub type_: ActionType,
    /// Diagnosis categories this step is for; empty means any. For example
    /// RaiseMemoryLimit for OutOfMemory, Rollback for BadRollout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_categories: Vec<Category>,
    /// Scale: the most replicas the workload may be scaled to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_replicas: Option<i32>,
    /// RaiseMemoryLimit: by how much, and up to what.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryRaise>,
}

/// How a memory limit is raised.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("isQuantity(self.max)").message("memory.max must be a quantity such as 512Mi or 2Gi"))]
#[x_kube(validation = Rule::new("!has(self.minIncrease) || isQuantity(self.minIncrease)").message("memory.minIncrease must be a quantity such as 64Mi"))]
#[x_kube(validation = Rule::new("!has(self.minIncrease) || !isQuantity(self.max) || !isQuantity(self.minIncrease) || quantity(self.max).compareTo(quantity(self.minIncrease)) >= 0").message("memory.max (the cap) must be at least memory.minIncrease (the step)"))]
pub struct MemoryRaise {
    /// Raise the current limit by this many percent. Defaults to 50.
    #[serde(default = "MemoryRaise::default_increase_percent")]
    #[schemars(range(min = 1, max = 400))]
    pub increase_percent: i32,
    /// Raise by at least this much, so small limits grow by a useful step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub min_increase: Option<String>,
    /// The cap: the limit is never raised above this. A policy whose cap is
    /// below a covered container's current limit is reported not Ready.
    #[schemars(length(max = 32))]
    pub max: String,
}

impl MemoryRaise {
    fn default_increase_percent() -> i32 {
        50
    }
}

/// How the operator may act.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Record in the Incident what would be done; change nothing.
    #[default]
    DryRun,
    /// Wait until a person approves each action in the Incident's spec.
    Manual,
    /// Act within the guardrails without waiting.
    Automatic,
}

/// Limits on how much and how often the operator may act.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Guardrails {
    /// After an action on a problem, how long before another action on the
    /// same problem (same fingerprint).
    #[serde(default = "Guardrails::default_cooldown_seconds")]
    #[schemars(range(min = 0))]
    pub cooldown_seconds: i64,
    /// At most this many actions in any hour under this policy; 0 stops all
    /// actions (a kill switch for the policy).
    #[serde(default = "Guardrails::default_max_actions_per_hour")]
    #[schemars(range(min = 0))]
    pub max_actions_per_hour: i32,
    /// At most this many pods of one workload disrupted at once by the
    /// operator's actions.
    #[serde(default = "Guardrails::default_max_pods_disrupted")]
    #[schemars(range(min = 1))]
    pub max_pods_disrupted: i32,
    /// After an action, how long the signal must stay clear before the
    /// incident is Resolved.
    #[serde(default = "Guardrails::default_verification_window_seconds")]
    #[schemars(range(min = 1))]
    pub verification_window_seconds: i64,
    /// Escalate after this many actions that did not clear the signal.
    #[serde(default = "Guardrails::default_escalate_after_attempts")]
    #[schemars(range(min = 1))]
    pub escalate_after_attempts: i32,
    /// A problem that returns within this many seconds of being resolved is
    /// escalated instead of fixed the same way again; 0 turns this off.
    #[serde(default = "Guardrails::default_recurrence_window_seconds")]
    #[schemars(range(min = 0))]
    pub recurrence_window_seconds: i64,
}

impl Guardrails {
    fn default_cooldown_seconds() -> i64 {
        300
    }
    fn default_max_actions_per_hour() -> i32 {
        6
    }
    fn default_max_pods_disrupted() -> i32 {
        1
    }
    fn default_verification_window_seconds() -> i64 {
        120
    }
    fn default_escalate_after_attempts() -> i32 {
        3
    }
    fn default_recurrence_window_seconds() -> i64 {
        3600
    }
}

impl Default for Guardrails {
    fn default() -> Self {
        Self {
            cooldown_seconds: Self::default_cooldown_seconds(),
            max_actions_per_hour: Self::default_max_actions_per_hour(),
            max_pods_disrupted: Self::default_max_pods_disrupted(),
            verification_window_seconds: Self::default_verification_window_seconds(),
            escalate_after_attempts: Self::default_escalate_after_attempts(),
            recurrence_window_seconds: Self::default_recurrence_window_seconds(),
        }
    }
}

/// What the operator observed of a policy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RemediationPolicyStatus {
    /// Ready says whether the policy is valid and in force; when it is not,
    /// the message says what to fix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// How many workloads the policy covers now.
    #[serde(default)]
    pub matched: i32,
    /// The workloads the policy covers now (at most 100 are listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matched_workloads: Vec<WorkloadRef>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
