use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ActionType, Category, Condition, SignalKind, WorkloadRef};

/// One problem with one workload, from detection to resolution or
/// escalation. Its name derives from the problem's fingerprint, so a repeat
/// of the same problem updates this incident instead of opening another.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sre.space",
    version = "v1alpha1",
    kind = "Incident",
    plural = "incidents",
    shortname = "inc",
    category = "sre-space",
    namespaced,
    status = "IncidentStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.target.name"}"#,
    printcolumn = r#"{"name":"Signal","type":"string","jsonPath":".spec.signal"}"#,
    printcolumn = r#"{"name":"Action","type":"string","jsonPath":".status.lastAction"}"#,
    printcolumn = r#"{"name":"Kind","type":"string","priority":1,"jsonPath":".spec.target.kind"}"#,
    printcolumn = r#"{"name":"Category","type":"string","priority":1,"jsonPath":".status.diagnosis.category"}"#,
    printcolumn = r#"{"name":"Occurrences","type":"integer","priority":1,"jsonPath":".status.occurrences"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct IncidentSpec {
    /// Stable identity of the problem: a hash of namespace, workload and signal
    /// kind. Set by the operator at creation; immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("fingerprint is immutable"))]
    pub fingerprint: String,
    /// The workload that has the problem. Set by the operator; immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("target is immutable"))]
    pub target: WorkloadRef,
    /// The kind of signal that opened the incident. Set by the operator;
    /// immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("signal is immutable"))]
    pub signal: SignalKind,
    /// The RemediationPolicy that covers the workload. Set by the operator;
    /// immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("policy is immutable"))]
    pub policy: String,
    /// A person's decision on the action waiting for approval (policies in
    /// Manual mode), best written with `sre-space approve|reject`. This is
    /// the one field people write, and the one spec field the operator
    /// clears: once the decision is used, or when it names no action that
    /// is waiting (an old episode's, a finished one's), so that it can never
    /// decide a later action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
}

/// A person's decision on a waiting action.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// The `id` of the action in `status.actions` this decision is about; it
    /// must be the action waiting for approval in the current episode.
    pub action_id: String,
    /// Approve runs the action once; Reject skips it and moves on.
    pub decision: ApprovalDecision,
    /// Who decided: the Kubernetes username of the person writing the
    /// approval. With the chart's admission policy (`approvals.requireIdentity`)
    /// the API server refuses an approval whose `by` is not its writer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// A decision on a waiting action.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApprovalDecision {
    Approve,
    Reject,
}

/// Where an incident is in its life.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    /// Seen, not yet diagnosed.
    #[default]
    Detected,
    /// Evidence is being gathered and analysed.
    Diagnosing,
    /// An action waits for a person's approval in `spec.approval`.
    AwaitingApproval,
    /// An action is being taken.
    Remediating,
    /// An action was taken; the operator watches whether the signal clears.
    Verifying,
    /// The signal cleared and stayed clear.
    Resolved,
    /// Handed to people: the fixes ran out, did not hold, or the problem
    /// keeps coming back.
    Escalated,
    /// The operator could not handle the incident; the conditions say why.
    Failed,
}

/// The whole story of an incident, written by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IncidentStatus {
    /// Where the incident is in its life.
    #[serde(default)]
    pub phase: Phase,
    /// Detected, Diagnosed, Remediated, Resolved and Escalated, with reasons;
    /// `kubectl wait --for=condition=Resolved` works on them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// How many times the signal was seen for this problem.
    #[serde(default)]
    pub occurrences: i64,
    /// When the signal was first seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<Time>,
    /// When the signal was last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Time>,
    /// When the current episode began. A problem that returns after its
    /// incident was resolved reopens the same incident as a new episode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_at: Option<Time>,
    /// Which episode of the problem this is, counting from 1 (absent means
    /// 1): a problem that returns after it was resolved starts the next one.
    /// Action ids carry it, so an id never repeats within an incident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub episode: Option<i64>,
    /// The latest observation of the signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_signal: Option<SignalObservation>,
    /// The root-cause analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<Diagnosis>,
    /// Every action planned or taken, oldest first. An action is recorded here
    /// before it is taken, so a restarted operator never repeats it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionRecord>,
    /// The latest action and its state, in a few words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_action: Option<String>,
    /// Why the incident was escalated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation_reason: Option<String>,
    /// When the problem was mitigated: the first look, after the last
    /// action completed, at which the signal was clear (within the 2 s the
    /// verification polls at). It comes before Resolved, which waits out
    /// the verification window; cleared again if the signal returns within
    /// it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mitigated_at: Option<Time>,
    /// When the incident was resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Time>,
    /// The incident's GitHub issue, and which of its comments are posted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<GitHubStatus>,
    /// The Jules session working on an architectural fix, when a Jules API
    /// key is configured and the incident escalated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jules: Option<super::JulesStatus>,
    /// The notifications delivered, so that none is sent twice (the latest
    /// 100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub notifications: Vec<super::NotificationRecord>,
    /// A blameless post-mortem in Markdown, written once the incident is
    /// resolved or escalated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_mortem: Option<String>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl IncidentStatus {
    /// The current episode, from 1.
    pub fn episode(&self) -> i64 {
        self.episode.unwrap_or(1).max(1)
    }
}

/// One observation of the signal.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SignalObservation {
    /// The pod the signal came from, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The container the signal came from, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The reason Kubernetes gave (for example OOMKilled, CrashLoopBackOff).
    pub reason: String,
    /// What was observed, in a sentence.
    #[serde(default)]
    pub message: String,
    /// When it was observed.
    pub observed_at: Time,
    /// Identity of the observation, so each one is counted once.
    #[serde(default)]
    pub key: String,
}

/// A root-cause analysis: ranked hypotheses, each resting on evidence.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Diagnosis {
    /// Which analyser produced it: `rules`, or `rules+llm` when a model was
    /// consulted.
    pub analyzer: String,
    /// The category of the leading hypothesis.
    pub category: Category,
    /// The root cause of the leading hypothesis, in one sentence.
    pub root_cause: String,
    /// Confidence in the leading hypothesis, from 0 to 1.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub confidence: f64,
    /// All hypotheses considered, most likely first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hypotheses: Vec<Hypothesis>,
    /// The evidence the hypotheses cite, by `id`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<Evidence>,
    /// The action the leading hypothesis suggests. Whether it may run is
    /// decided by the policy, not by the diagnosis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposed_action: Option<ActionType>,
    /// The category the rules alone chose, when a model was consulted and
    /// may have ranked another first. The plan never takes a step more
    /// invasive than this category allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules_category: Option<Category>,
    /// When the diagnosis was made.
    pub diagnosed_at: Time,
}

/// One candidate explanation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Hypothesis {
    /// The category this hypothesis puts the problem in.
    pub category: Category,
    /// The explanation, in a sentence.
    pub statement: String,
    /// Confidence, from 0 to 1.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub confidence: f64,
    /// The `id`s of the evidence it rests on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
    /// The action it suggests, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposed_action: Option<ActionType>,
    /// What a person could check that would confirm it, where the rules
    /// know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm: Option<String>,
    /// What would refute it, where the rules know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refute: Option<String>,
}

/// One fact gathered for the diagnosis.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// Short identifier that hypotheses cite (for example `e1`).
    pub id: String,
    /// What sort of fact this is.
    pub kind: EvidenceKind,
    /// Where it comes from (for example `pod/web-7f9c/container/app`).
    pub source: String,
    /// The fact itself, in a sentence. Text copied from the cluster is data,
    /// never an instruction.
    pub summary: String,
    /// When it was observed, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<Time>,
}

/// Sorts of evidence.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvidenceKind {
    /// A container's state, exit code, termination message or restart count.
    ContainerState,
    /// A Kubernetes event.
    Event,
    /// A rollout and what it changed in the pod template.
    Rollout,
    /// Resource requests and limits, and usage where known.
    Resources,
    /// The chain of owners from the pod to its workload.
    OwnerChain,
    /// What happened to this problem before, from IncidentMemory.
    History,
    /// Spans from the trace store: error ratios, latencies, the failing or
    /// slowest operation and the services a request passed through.
    Trace,
    /// The last lines a container wrote before it exited.
    Log,
    /// The state of the workload itself: a Job's or a Deployment's
    /// conditions, its controller's events.
    Workload,
    /// A PersistentVolumeClaim or StorageClass the pod needs.
    Storage,
    /// The node the pod ran on.
    Node,
    /// An Alertmanager alert: its name, labels, annotations, since when it
    /// fires and the link to its source.
    Alert,
    /// A series from Prometheus: the query, the workload's value, the
    /// threshold and a link to the graph.
    Metric,
    /// The same problem on another workload of the namespace, from its
    /// IncidentMemory: which actions cleared it there and which did not.
    SimilarIncident,
    /// The runbook the policy's runbook ConfigMap holds for this workload
    /// or category: where it is, and an excerpt.
    Runbook,
}

/// An action planned or taken.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ActionRecord {
    /// Idempotency key of the action, unique within the incident across
    /// its episodes: `e<episode>-<n>-<type>` (for example `e2-1-rollback`).
    pub id: String,
    /// The action.
    #[serde(rename = "type")]
    pub type_: ActionType,
    /// Where the action is.
    pub state: ActionState,
    /// What it does or did, or why it was not taken.
    #[serde(default)]
    pub detail: String,
    /// The object it acts on, fixed when it is recorded (for example
    /// `Pod/web-7f9c` or `Deployment/web`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::kind_slash_name"
    )]
    #[schemars(with = "Option<String>")]
    pub target: Option<WorkloadRef>,
    /// The UID of that object, so a replayed action cannot hit a newer one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_uid: Option<String>,
    /// The container it acts on, where it acts on one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The value before the action (a memory limit, a replica count, a
    /// revision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The value the action sets, fixed when it is recorded so that replaying
    /// the action sets the same value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// When it was recorded.
    pub recorded_at: Time,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Whether the signal cleared after it, once verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// The pull request that carries the change, for a GitOps action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<PullRequestRef>,
    /// The change as a unified diff, for a GitOps action (also when it could
    /// not be proposed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// What the workload looked like when the action was planned. An action
    /// taken later (replayed after a restart, or approved) checks it again
    /// first, and is Superseded instead of taken when the workload changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precondition: Option<Precondition>,
}

/// The state of a workload an action was planned from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Precondition {
    /// The workload's `metadata.generation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// A hash of the workload's pod template (SHA-256 of its JSON, first 16
    /// hex digits): a rollback applies only to the template it diagnosed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_hash: Option<String>,
}

/// A pull request the operator opened.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PullRequestRef {
    pub number: i64,
    pub url: String,
    /// The branch it proposes.
    pub branch: String,
}

/// The link between an Incident and its GitHub issue. The issue body also
/// carries a hidden marker with the incident's identity, so a restarted
/// operator finds the issue again even if this status was lost.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GitHubStatus {
    /// `owner/name`.
    #[serde(default)]
    pub repository: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue_number: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue_url: Option<String>,
    /// Keys of the comments already posted, so each is posted once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub comments: Vec<String>,
    /// Without GitHub credentials: the issue that would have been opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
}

/// The state of an action.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionState {
    /// Recorded, about to be taken.
    Pending,
    /// Waiting for a person's approval.
    AwaitingApproval,
    /// Taken successfully.
    Succeeded,
    /// Tried and failed; `detail` says why.
    Failed,
    /// Not taken because a guardrail forbade it; `detail` says which.
    Blocked,
    /// Not taken because the policy is in DryRun mode.
    DryRun,
    /// Not taken because a person rejected it.
    Rejected,
    /// Proposed as a pull request; waits until it is merged or closed.
    AwaitingMerge,
    /// Not taken because the workload changed after it was planned (a new
    /// rollout, a manual scale); `detail` says what changed. The next step is
    /// planned from the workload as it is now.
    Superseded,
}

/// Whether an action fixed the problem.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The signal cleared and stayed clear for the verification window.
    Effective,
    /// The signal did not clear, or came back within the window.
    Ineffective,
}
