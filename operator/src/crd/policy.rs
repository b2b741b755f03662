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
    printcolumn = r#"{"name":"Last Sweep","type":"date","priority":1,"jsonPath":".status.sweep.lastRunTime"}"#,
    printcolumn = r#"{"name":"Sweep Findings","type":"integer","priority":1,"jsonPath":".status.sweep.findingCount"}"#,
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
    /// Where incidents are announced (Slack, CloudEvents webhooks), by the
    /// names of sinks the operator's administrator configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<super::NotifySpec>,
    /// Where the team's runbooks are: the Brain cites the one for the
    /// incident's workload or category in the diagnosis, the GitHub issue
    /// and the dashboard link to it. See docs/runbooks.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbooks: Option<RunbookSource>,
}

/// A ConfigMap of markdown runbooks in the policy's namespace. Its keys are
/// `workload.<name>.md` (one workload's runbook) and `category.<Category>.md`
/// (for example `category.BadRollout.md`); a workload's runbook wins over its
/// category's. Each runbook is read up to 16 KiB.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunbookSource {
    /// The ConfigMap's name, in the policy's namespace.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')").message("configMap must be a ConfigMap name"))]
    #[schemars(length(min = 1, max = 253))]
    pub config_map: String,
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
    /// request against this file instead of patching the workload, and so
    /// do Scale and Rollback on a workload Argo CD or Flux manages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitops: Option<GitOpsTarget>,
}

/// The file that holds a workload's settings in the GitOps repository: its
/// memory limit, and for a workload a GitOps controller manages, its
/// replica count and image.
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
    /// In a Helm values file: the dotted key of the replica count, e.g.
    /// `policyService.replicas`. In a manifest (`container` set) the
    /// Deployment's `spec.replicas` is used when this is unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 200))]
    pub replicas_key: Option<String>,
    /// In a Helm values file: the dotted key of the image a rollback puts
    /// back, e.g. `policyService.image`; its value is set to the previous
    /// image reference. In a manifest the container's `image` is used when
    /// this is unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 200))]
    pub image_key: Option<String>,
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
#[x_kube(validation = Rule::new("!has(self.restartThreshold) || self.type in ['CrashLoopBackOff', 'InitContainerFailed']").message("restartThreshold applies only to CrashLoopBackOff and InitContainerFailed"))]
#[x_kube(validation = Rule::new("!has(self.gracePeriodSeconds) || self.type in ['Unschedulable', 'ReadinessFailing', 'ConfigError', 'FailedCreate', 'RolloutStalled']").message("gracePeriodSeconds applies only to Unschedulable, ReadinessFailing, ConfigError, FailedCreate and RolloutStalled"))]
#[x_kube(validation = Rule::new("!has(self.failedRuns) || self.type == 'JobFailed'").message("failedRuns applies only to JobFailed"))]
#[x_kube(validation = Rule::new("has(self.healthCheck) == (self.type == 'HealthCheck')").message("a HealthCheck trigger needs healthCheck, and only it may have one").reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new("has(self.conversion) == (self.type == 'ConversionRate')").message("a ConversionRate trigger needs conversion, and only it may have one").reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new("has(self.eventRate) == (self.type == 'EventRateDrop')").message("an EventRateDrop trigger needs eventRate, and only it may have one").reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new("has(self.traces) == (self.type in ['TraceErrorRate', 'TraceLatency'])").message("TraceErrorRate and TraceLatency triggers need traces, and only they may have one").reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new("self.type != 'TraceErrorRate' || has(self.traces.maxErrorRatio)").message("a TraceErrorRate trigger needs traces.maxErrorRatio").reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new("self.type != 'TraceLatency' || has(self.traces.maxP95Millis)").message("a TraceLatency trigger needs traces.maxP95Millis").reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new("self.type in ['Alert', 'Metric'] || has(self.workload) == (self.type in ['ConversionRate', 'EventRateDrop', 'TraceErrorRate', 'TraceLatency'] || (self.type == 'HealthCheck' && !has(self.healthCheck.service)))").message("workload names the Deployment an incident is opened for: ConversionRate, EventRateDrop, TraceErrorRate, TraceLatency and a HealthCheck by url need it; pod triggers and a HealthCheck of a Service (whose selector finds the workload) take none").reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new("has(self.alert) == (self.type == 'Alert')").message("an Alert trigger needs alert, and only it may have one").reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new("has(self.metric) == (self.type == 'Metric')").message("a Metric trigger needs metric, and only it may have one").reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new("self.type != 'Metric' || !has(self.metric) || has(self.workload) != has(self.metric.workloadLabel)").message("a Metric trigger names its Deployment either by workload (one, fixed) or by metric.workloadLabel (from each series), not both").reason(Reason::FieldValueRequired))]
pub struct Trigger {
    /// The signal kind.
    #[serde(rename = "type")]
    pub type_: SignalKind,
    /// CrashLoopBackOff and InitContainerFailed: how many restarts of a
    /// container count as a crash loop. Defaults to 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = crate::limits::MAX_RESTART_THRESHOLD))]
    pub restart_threshold: Option<i32>,
    /// Unschedulable, ReadinessFailing, ConfigError (a container held in
    /// ContainerCreating), FailedCreate and RolloutStalled: how long the
    /// condition must last before it is trouble, so ordinary start-up,
    /// scheduling and provisioning delays are not. Defaults to 60 seconds; at most a week.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = crate::limits::WEEK_SECONDS))]
    pub grace_period_seconds: Option<i64>,
    /// JobFailed, for the Jobs of a CronJob: how many of its last finished
    /// runs must all have failed before it is trouble (one failed run of a
    /// schedule that retries soon is not). Defaults to 2. A Job no CronJob
    /// owns is trouble when it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = crate::limits::MAX_FAILED_RUNS))]
    pub failed_runs: Option<i32>,
    /// The Deployment (in the policy's namespace, covered by its selector)
    /// an incident is opened for, for the signals the operator measures
    /// itself rather than reads from a pod: ConversionRate, EventRateDrop,
    /// TraceErrorRate, TraceLatency, and a HealthCheck by URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub workload: Option<String>,
    /// HealthCheck: what the operator probes, how often, and what counts as
    /// failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckTrigger>,
    /// ConversionRate: the two Kafka topics whose ratio is watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion: Option<ConversionTrigger>,
    /// EventRateDrop: the Kafka topic whose rate is watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_rate: Option<EventRateTrigger>,
    /// TraceErrorRate and TraceLatency: the service in Jaeger and its limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traces: Option<TraceTrigger>,
    /// Alert: which Alertmanager alerts the policy accepts, and which of
    /// their labels name the namespace and the workload. With `workload`
    /// set, every accepted alert of the namespace is about that Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<AlertTrigger>,
    /// Metric: the PromQL query, its threshold, and which series name the
    /// workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<MetricTrigger>,
}

impl Trigger {
    pub const DEFAULT_RESTART_THRESHOLD: i32 = 3;
    pub const DEFAULT_GRACE_PERIOD_SECONDS: i64 = 60;
    pub const DEFAULT_FAILED_RUNS: i32 = 2;

    pub fn restart_threshold(&self) -> i32 {
        self.restart_threshold
            .unwrap_or(Self::DEFAULT_RESTART_THRESHOLD)
    }

    pub fn grace_period_seconds(&self) -> i64 {
        self.grace_period_seconds
            .unwrap_or(Self::DEFAULT_GRACE_PERIOD_SECONDS)
    }

    /// How many last runs of a CronJob must all have failed, within
    /// `1..=MAX_FAILED_RUNS` whatever an older CRD let in.
    pub fn failed_runs(&self) -> usize {
        let n = self.failed_runs.unwrap_or(Self::DEFAULT_FAILED_RUNS);
        usize::try_from(i64::from(n).clamp(1, crate::limits::MAX_FAILED_RUNS)).unwrap_or(1)
    }

    /// A trigger of a kind that carries no settings of its own.
    pub fn of(type_: SignalKind) -> Self {
        Self {
            type_,
            restart_threshold: None,
            grace_period_seconds: None,
            failed_runs: None,
            workload: None,
            health_check: None,
            conversion: None,
            event_rate: None,
            traces: None,
            alert: None,
            metric: None,
        }
    }
}

/// A health check the operator runs itself, as the seed's Scout did every
/// ten seconds. It is distinct from the pod's own probes: it sees the
/// service as its callers do.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) != has(self.service)").message("set exactly one of url and service"))]
#[x_kube(validation = Rule::new("self.timeoutSeconds < self.periodSeconds").message("timeoutSeconds must be shorter than periodSeconds"))]
pub struct HealthCheckTrigger {
    /// An http(s) URL to probe, e.g. `http://quote-service.shop:8080/healthz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("url must start with http:// or https://"))]
    #[schemars(length(max = 2048))]
    pub url: Option<String>,
    /// A Service of the policy's namespace to probe; the workload behind it
    /// is found by the Service's selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServicePort>,
    /// The path probed on the Service. Defaults to `/healthz`.
    #[serde(default = "HealthCheckTrigger::default_path")]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("path must start with /"))]
    #[schemars(length(max = 1024))]
    pub path: String,
    /// Seconds between probes (each is jittered by up to a tenth).
    /// Defaults to 10.
    #[serde(default = "HealthCheckTrigger::default_period_seconds")]
    #[schemars(range(min = 1, max = crate::limits::MAX_WINDOW_SECONDS))]
    pub period_seconds: i64,
    /// Seconds a probe may take. Defaults to 2.
    #[serde(default = "HealthCheckTrigger::default_timeout_seconds")]
    #[schemars(range(min = 1, max = crate::limits::MAX_PROBE_TIMEOUT_SECONDS))]
    pub timeout_seconds: i64,
    /// Consecutive failed probes before the check is failing. Defaults to 3.
    #[serde(default = "HealthCheckTrigger::default_failure_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: i32,
    /// The HTTP status a healthy service answers. Defaults to 200.
    #[serde(default = "HealthCheckTrigger::default_expected_status")]
    #[schemars(range(min = 100, max = 599))]
    pub expected_status: i32,
}

impl HealthCheckTrigger {
    fn default_path() -> String {
        "/healthz".into()
    }
    fn default_period_seconds() -> i64 {
        10
    }
    fn default_timeout_seconds() -> i64 {
        2
    }
    fn default_failure_threshold() -> i32 {
        3
    }
    fn default_expected_status() -> i32 {
        200
    }
}

/// A port of a Service in the policy's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// The Service's name.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The Service's port number.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

/// A business flow watched on Kafka: of the flows that start (events on the
/// denominator topic), enough must complete (events on the numerator topic).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConversionTrigger {
    /// The topic of completions, e.g. `policy_purchased`.
    #[schemars(length(min = 1, max = 249))]
    pub numerator_topic: String,
    /// The topic of starts, e.g. `quote_requested`.
    #[schemars(length(min = 1, max = 249))]
    pub denominator_topic: String,
    /// The lowest healthy ratio of numerator to denominator events over the
    /// window, e.g. 0.2 when one quote in five is usually bought.
    #[schemars(range(min = 0.0, max = 100.0))]
    pub min_ratio: f64,
    /// Fewer denominator events than this in the window say nothing: no
    /// incident, however low the ratio. Defaults to 20.
    #[serde(default = "ConversionTrigger::default_min_events")]
    #[schemars(range(min = 1, max = crate::limits::MAX_EVENTS))]
    pub min_events: i64,
    /// The sliding window the ratio is computed over. Defaults to 60.
    #[serde(default = "ConversionTrigger::default_window_seconds")]
    #[schemars(range(min = 1, max = crate::limits::MAX_WINDOW_SECONDS))]
    pub window_seconds: i64,
    /// How the counts are judged: this window (the default), or the
    /// sequential change detector (docs/detection.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detector: Option<super::Detector>,
}

impl ConversionTrigger {
    fn default_min_events() -> i64 {
        20
    }
    fn default_window_seconds() -> i64 {
        60
    }
}

/// A topic whose event rate should not fall far below its own recent past.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.baselineSeconds > self.windowSeconds").message("baselineSeconds must be longer than windowSeconds"))]
pub struct EventRateTrigger {
    /// The topic, e.g. `quote_requested`.
    #[schemars(length(min = 1, max = 249))]
    pub topic: String,
    /// The rate over the window must stay at or above this fraction of the
    /// baseline rate. Defaults to 0.5.
    #[serde(default = "EventRateTrigger::default_min_fraction")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_fraction: f64,
    /// The recent window whose rate is judged. Defaults to 60.
    #[serde(default = "EventRateTrigger::default_window_seconds")]
    #[schemars(range(min = 1, max = crate::limits::MAX_WINDOW_SECONDS))]
    pub window_seconds: i64,
    /// The longer window before it that sets the baseline. Defaults to 600.
    #[serde(default = "EventRateTrigger::default_baseline_seconds")]
    #[schemars(range(min = 2, max = crate::limits::MAX_BASELINE_SECONDS))]
    pub baseline_seconds: i64,
    /// A baseline with fewer events than this says nothing. Defaults to 50.
    #[serde(default = "EventRateTrigger::default_min_baseline_events")]
    #[schemars(range(min = 1, max = crate::limits::MAX_EVENTS))]
    pub min_baseline_events: i64,
    /// How the counts are judged: these windows (the default), or the
    /// sequential change detector (docs/detection.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detector: Option<super::Detector>,
}

impl EventRateTrigger {
    fn default_min_fraction() -> f64 {
        0.5
    }
    fn default_window_seconds() -> i64 {
        60
    }
    fn default_baseline_seconds() -> i64 {
        600
    }
    fn default_min_baseline_events() -> i64 {
        50
    }
}

/// A service's spans in Jaeger, judged over a sliding window.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TraceTrigger {
    /// The service name in the traces (`service.name`).
    #[schemars(length(min = 1, max = 253))]
    pub service: String,
    /// Only this operation (span name); all of the service's when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub operation: Option<String>,
    /// TraceErrorRate: the highest healthy share of spans with an error
    /// status, e.g. 0.05.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_error_ratio: Option<f64>,
    /// TraceLatency: the highest healthy 95th percentile span duration, in
    /// milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = crate::limits::MAX_P95_MILLIS))]
    pub max_p95_millis: Option<i64>,
    /// The sliding window judged. Defaults to 60.
    #[serde(default = "TraceTrigger::default_window_seconds")]
    #[schemars(range(min = 5, max = crate::limits::MAX_WINDOW_SECONDS))]
    pub window_seconds: i64,
    /// Fewer spans than this in the window say nothing. Defaults to 20.
    #[serde(default = "TraceTrigger::default_min_spans")]
    #[schemars(range(min = 1, max = crate::limits::MAX_EVENTS))]
    pub min_spans: i64,
}

impl TraceTrigger {
    fn default_window_seconds() -> i64 {
        60
    }
    fn default_min_spans() -> i64 {
        20
    }
}

/// The Alertmanager alerts a policy accepts: by name, by label matchers, or
/// both (an alert must pass both). Alert text is data: it names a workload
/// only through the labels set here, and only a Deployment the policy's
/// selector covers in the policy's own namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("size(self.alertNames) > 0 || size(self.matchers) > 0").message("an Alert trigger names the alerts it accepts: alertNames, matchers or both").reason(Reason::FieldValueRequired))]
pub struct AlertTrigger {
    /// The `alertname`s accepted; any name when empty (then `matchers`
    /// decide).
    #[serde(default)]
    #[schemars(length(max = 32), inner(length(min = 1, max = 253)))]
    pub alert_names: Vec<String>,
    /// Conditions on the alert's labels, all of which must hold.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub matchers: Vec<AlertMatcher>,
    /// The label that names the alert's namespace; it must be the policy's.
    /// Defaults to `namespace`.
    #[serde(default = "AlertTrigger::default_namespace_label")]
    #[schemars(length(min = 1, max = 128))]
    pub namespace_label: String,
    /// The label that names the Deployment (unless the trigger's `workload`
    /// is set). Defaults to `deployment`.
    #[serde(default = "AlertTrigger::default_workload_label")]
    #[schemars(length(min = 1, max = 128))]
    pub workload_label: String,
    /// The diagnosis category of an alert incident, which picks the ladder's
    /// steps by their `onCategories`. Defaults to ErrorRate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
}

/// A PromQL query evaluated against Prometheus, judged per series. Only
/// series whose namespace label is the policy's namespace count: the query
/// may read any namespace's series, but an incident opens only here.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.detector) || self.detector.type != 'Sequential' || self.comparison == 'LessThan' || self.comparison == 'LessOrEqual'").message("the Sequential detector watches for drops: set comparison to LessThan or LessOrEqual"))]
pub struct MetricTrigger {
    /// An instant PromQL query, e.g.
    /// `sum by (namespace, deployment) (rate(http_errors_total[1m]))`. Its
    /// result must keep the namespace label (and the workload label, when
    /// `workloadLabel` is set).
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
    /// How a series' value compares with `threshold` when it is trouble.
    pub comparison: Comparison,
    /// The value the comparison is made with.
    #[schemars(range(min = crate::limits::MIN_METRIC_THRESHOLD, max = crate::limits::MAX_METRIC_THRESHOLD))]
    pub threshold: f64,
    /// How long a series must stay across the threshold before it is
    /// trouble (as a Prometheus rule's `for`). Defaults to 60; 0: at once.
    #[serde(default = "MetricTrigger::default_for_seconds")]
    #[schemars(range(min = 0, max = crate::limits::MAX_METRIC_FOR_SECONDS))]
    pub for_seconds: i64,
    /// Seconds between evaluations of the query (each jittered by up to a
    /// tenth). Defaults to 30.
    #[serde(default = "MetricTrigger::default_interval_seconds")]
    #[schemars(range(min = 5, max = crate::limits::MAX_WINDOW_SECONDS))]
    pub interval_seconds: i64,
    /// The result label that holds a series' namespace. Defaults to
    /// `namespace`.
    #[serde(default = "MetricTrigger::default_namespace_label")]
    #[x_kube(validation = Rule::new("self.matches('^[a-zA-Z_][a-zA-Z0-9_]*$')").message("namespaceLabel must be a Prometheus label name"))]
    #[schemars(length(min = 1, max = 128))]
    pub namespace_label: String,
    /// The result label that holds the name of the Deployment a series is
    /// about, e.g. `deployment`. Set this or the trigger's `workload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[a-zA-Z_][a-zA-Z0-9_]*$')").message("workloadLabel must be a Prometheus label name"))]
    #[schemars(length(min = 1, max = 128))]
    pub workload_label: Option<String>,
    /// The category the incident is diagnosed into, which picks the steps
    /// of the ladder whose `onCategories` name it. Unset: Unknown, so only
    /// steps without `onCategories` run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    /// How the series are judged. Without it (or with `FixedWindow`), by
    /// `threshold` and `forSeconds` alone. With `Sequential`, each value is
    /// also read as a per-second event rate (write the query as
    /// `sum by (...) (rate(counter[I]))` with `I` the interval, so that
    /// evaluations do not overlap) and a series fires as soon as the
    /// evidence of a drop of `minDropFraction` from its learned baseline
    /// crosses the threshold that `falseAlarmsPerDay` sets; `threshold`
    /// stays as a floor. Drops only: the comparison must be LessThan or
    /// LessOrEqual (docs/detection.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detector: Option<super::Detector>,
}

impl AlertTrigger {
    pub const DEFAULT_CATEGORY: Category = Category::ErrorRate;

    fn default_namespace_label() -> String {
        "namespace".into()
    }
    fn default_workload_label() -> String {
        "deployment".into()
    }
}

/// One condition on an alert's label, as in Alertmanager's matchers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AlertMatcher {
    /// The label's name, e.g. `severity`.
    #[schemars(length(min = 1, max = 128))]
    pub label: String,
    /// How the label's value is compared with `value`.
    #[serde(default)]
    pub operator: MatchOperator,
    /// The value, or for Regex and NotRegex a regular expression (RE2
    /// syntax, anchored at both ends, as in Alertmanager). A label that is
    /// missing has the empty value.
    #[schemars(length(max = 1024))]
    pub value: String,
}

/// How an alert matcher compares.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MatchOperator {
    #[default]
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl MetricTrigger {
    pub const DEFAULT_FOR_SECONDS: i64 = 60;

    fn default_for_seconds() -> i64 {
        Self::DEFAULT_FOR_SECONDS
    }
    fn default_interval_seconds() -> i64 {
        30
    }
    fn default_namespace_label() -> String {
        "namespace".into()
    }
}

/// How a value compares with a threshold.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparison {
    GreaterThan,
    GreaterOrEqual,
    LessThan,
    LessOrEqual,
}

impl Comparison {
    /// Whether `value` compares so with `threshold`; never for NaN.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::GreaterThan => value > threshold,
            Self::GreaterOrEqual => value >= threshold,
            Self::LessThan => value < threshold,
            Self::LessOrEqual => value <= threshold,
        }
    }

    /// The operator, as PromQL writes it.
    pub fn symbol(self) -> &'static str {
        match self {
            Self::GreaterThan => ">",
            Self::GreaterOrEqual => ">=",
            Self::LessThan => "<",
            Self::LessOrEqual => "<=",
        }
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
    /// Scale: the most replicas the workload may be scaled to (at most
    /// 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = crate::limits::MAX_REPLICAS))]
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
#[x_kube(validation = Rule::new("!isQuantity(self.max) || quantity(self.max).compareTo(quantity('0')) > 0").message("memory.max must be above zero"))]
#[x_kube(validation = Rule::new("!has(self.minIncrease) || !isQuantity(self.minIncrease) || quantity(self.minIncrease).compareTo(quantity('0')) >= 0").message("memory.minIncrease must not be negative"))]
#[x_kube(validation = Rule::new("!has(self.minIncrease) || !isQuantity(self.max) || !isQuantity(self.minIncrease) || quantity(self.max).compareTo(quantity(self.minIncrease)) >= 0").message("memory.max (the cap) must be at least memory.minIncrease (the step)"))]
pub struct MemoryRaise {
    /// Raise the current limit by this many percent. Defaults to 50.
    #[serde(default = "MemoryRaise::default_increase_percent")]
    #[schemars(range(min = 1, max = crate::limits::MAX_INCREASE_PERCENT))]
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
    /// same problem (same fingerprint). At most a week.
    #[serde(default = "Guardrails::default_cooldown_seconds")]
    #[schemars(range(min = 0, max = crate::limits::WEEK_SECONDS))]
    pub cooldown_seconds: i64,
    /// At most this many actions in any hour under this policy; 0 stops all
    /// actions (a kill switch for the policy). At most 1000.
    #[serde(default = "Guardrails::default_max_actions_per_hour")]
    #[schemars(range(min = 0, max = crate::limits::MAX_ACTIONS_PER_HOUR))]
    pub max_actions_per_hour: i32,
    /// At most this many pods of one workload disrupted at once by the
    /// operator's actions. At most 1000.
    #[serde(default = "Guardrails::default_max_pods_disrupted")]
    #[schemars(range(min = 1, max = crate::limits::MAX_PODS_DISRUPTED))]
    pub max_pods_disrupted: i32,
    /// After an action, how long the signal must stay clear before the
    /// incident is Resolved. At most a week.
    #[serde(default = "Guardrails::default_verification_window_seconds")]
    #[schemars(range(min = 1, max = crate::limits::WEEK_SECONDS))]
    pub verification_window_seconds: i64,
    /// Escalate after this many actions that did not clear the signal (at
    /// most 100).
    #[serde(default = "Guardrails::default_escalate_after_attempts")]
    #[schemars(range(min = 1, max = crate::limits::MAX_ATTEMPTS))]
    pub escalate_after_attempts: i32,
    /// A problem that returns within this many seconds of being resolved is
    /// escalated instead of fixed the same way again; 0 turns this off. At
    /// most a week.
    #[serde(default = "Guardrails::default_recurrence_window_seconds")]
    #[schemars(range(min = 0, max = crate::limits::WEEK_SECONDS))]
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
    /// The last run of the Tier 3 sweep (docs/sweep.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<super::SweepStatus>,
}
