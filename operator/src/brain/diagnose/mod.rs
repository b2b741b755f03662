//! The rules that turn facts into a diagnosis. `evidence` records what the
//! facts say as numbered evidence; one file per family of signals proposes
//! the hypotheses, each citing the evidence it rests on; `history` weighs
//! them by what worked before for this very problem. Pure.

mod admission;
mod config;
mod crash;
pub(crate) mod evidence;
mod history;
mod image;
mod init;
mod jobs;
mod memory;
mod metric;
mod node;
mod probes;
mod recall;
mod scheduling;
mod service;
mod stalled;
mod storage;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::{ContainerResources, Facts, RULES, Rollout};
use crate::crd::{
    ActionType, Category, Diagnosis, Hypothesis, SignalKind, WorkloadKind, WorkloadRef,
};
use evidence::{Cite, Cited};
use k8s_openapi::api::core::v1::{Container, PodSpec};

/// Diagnoses the incident from the facts.
pub fn diagnose(facts: &Facts, now: Timestamp) -> Diagnosis {
    let (evidence, cited) = evidence::collect(facts);
    let case = Case::new(facts, cited);
    let mut hypotheses = match facts.signal {
        SignalKind::OOMKilled => memory::rules(&case),
        // A container that cannot start at all (a missing command) and one
        // its liveness probe kills both crash-loop; their own rules say why.
        SignalKind::CrashLoopBackOff => first_of([
            config::rules(&case),
            probes::liveness(&case),
            crash::rules(&case),
        ]),
        SignalKind::ImagePullBackOff => image::rules(&case),
        SignalKind::Unschedulable => first_of([storage::rules(&case), scheduling::rules(&case)]),
        SignalKind::ReadinessFailing => probes::rules(&case),
        SignalKind::HealthCheck
        | SignalKind::ConversionRate
        | SignalKind::EventRateDrop
        | SignalKind::TraceErrorRate
        | SignalKind::TraceLatency
        | SignalKind::Alert => service::rules(&case),
        SignalKind::ConfigError => first_of([config::rules(&case), storage::rules(&case)]),
        SignalKind::InitContainerFailed => first_of([config::rules(&case), init::rules(&case)]),
        SignalKind::JobFailed => jobs::rules(&case),
        SignalKind::FailedCreate => admission::rules(&case),
        SignalKind::RolloutStalled => stalled::rules(&case),
        SignalKind::NodeFailure => node::rules(&case),
        SignalKind::Metric => metric::rules(&case),
    };
    history::weigh(&mut hypotheses, facts, case.cited.history.as_ref());
    recall::weigh(&mut hypotheses, facts, &case.cited.similar);
    // Stable: of equally likely hypotheses, the one a family proposes first
    // leads.
    hypotheses.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    let lead = hypotheses.first().cloned().unwrap_or_else(|| {
        hypothesis(
            Category::Unknown,
            "the evidence does not point to a known cause".into(),
            0.1,
            vec![],
            None,
        )
    });
    Diagnosis {
        analyzer: RULES.into(),
        category: lead.category,
        root_cause: lead.statement.clone(),
        confidence: lead.confidence,
        proposed_action: lead.proposed_action,
        rules_category: None,
        hypotheses,
        evidence,
        diagnosed_at: Time(now),
    }
}

/// The hypotheses of the first family that has any.
fn first_of<const N: usize>(families: [Vec<Hypothesis>; N]) -> Vec<Hypothesis> {
    families
        .into_iter()
        .find(|h| !h.is_empty())
        .unwrap_or_default()
}

/// What every family of rules reads: the facts, the evidence recorded from
/// them, and what follows from both.
struct Case<'a> {
    facts: &'a Facts,
    target: &'a WorkloadRef,
    /// The failing container's name, or "the container".
    container: String,
    /// The failing container's memory settings in the template.
    resources: Option<&'a ContainerResources>,
    /// The latest rollout, when it changed the template and the failing pod
    /// runs it.
    rollout: Option<&'a Rollout>,
    cited: Cited,
}

impl<'a> Case<'a> {
    fn new(facts: &'a Facts, cited: Cited) -> Self {
        let failing = super::failing_container_of(facts);
        let container = failing.as_ref();
        Case {
            facts,
            target: &facts.target,
            container: container.cloned().unwrap_or_else(|| "the container".into()),
            resources: facts
                .resources
                .iter()
                .find(|r| Some(&r.container) == container),
            rollout: facts
                .rollout
                .as_ref()
                .filter(|r| r.failing_pod_is_new && !r.changes.is_empty()),
            cited,
        }
    }

    /// The pod's spec: the failing pod's, or else the workload's template.
    fn spec(&self) -> Option<&'a PodSpec> {
        self.facts
            .pod
            .as_ref()
            .and_then(|p| p.spec.as_ref())
            .or_else(|| self.facts.template.as_ref()?.spec.as_ref())
    }

    /// The object a person changes to fix the pods: the CronJob that runs
    /// a Job, or else the target.
    fn owner(&self) -> String {
        match self.facts.workload.as_ref().and_then(|w| w.owner.as_ref()) {
            Some(o) if o.starts_with("CronJob/") => o.clone(),
            _ => self.target.to_string(),
        }
    }

    /// Where the pod's spec is written in `owner()`.
    fn spec_path(&self) -> &'static str {
        let cron = self
            .facts
            .workload
            .as_ref()
            .and_then(|w| w.owner.as_ref())
            .is_some_and(|o| o.starts_with("CronJob/"));
        match self.target.kind {
            _ if cron => "spec.jobTemplate.spec.template.spec",
            WorkloadKind::CronJob => "spec.jobTemplate.spec.template.spec",
            WorkloadKind::Pod => "spec",
            _ => "spec.template.spec",
        }
    }

    /// `spec.template.spec.containers[0]` for a container of the pod's spec
    /// (init containers as `initContainers[i]`), or None when the spec does
    /// not have it.
    fn container_path(&self, name: &str) -> Option<String> {
        let spec = self.spec()?;
        let at = |list: &str, i: usize| format!("{}.{list}[{i}]", self.spec_path());
        spec.containers
            .iter()
            .position(|c| c.name == name)
            .map(|i| at("containers", i))
            .or_else(|| {
                spec.init_containers
                    .iter()
                    .flatten()
                    .position(|c| c.name == name)
                    .map(|i| at("initContainers", i))
            })
    }

    /// A container of the pod's spec (init containers too), by name.
    fn container_spec(&self, name: &str) -> Option<&'a Container> {
        let spec = self.spec()?;
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == name)
    }

    /// The namespace.
    fn ns(&self) -> &str {
        &self.facts.namespace
    }

    /// The line of the failing container's log that explains its exit.
    fn log_line(&self) -> Option<&str> {
        self.cited.log_line.as_deref()
    }

    /// The ids of the recorded evidence of these kinds, in this order.
    fn cite(&self, what: &[Cite]) -> Vec<String> {
        self.cited.ids(what)
    }

    /// As `cite`, followed by the pod's warning events.
    fn cite_with_events(&self, what: &[Cite]) -> Vec<String> {
        let mut ids = self.cited.ids(what);
        ids.extend(self.cited.events.iter().cloned());
        ids
    }

    /// The rollout, when there is one, as the first suspect: a list of the
    /// one `bad_rollout` hypothesis citing `what` and the warning events, or
    /// an empty list the family adds its own hypotheses to.
    fn suspect(
        &self,
        rollout: Option<&Rollout>,
        consequence: &str,
        confidence: f64,
        what: &[Cite],
    ) -> Vec<Hypothesis> {
        rollout
            .map(|r| self.bad_rollout(r, consequence, confidence, self.cite_with_events(what)))
            .into_iter()
            .collect()
    }

    /// "the rollout of {target} to revision N changed {fields} {consequence}":
    /// rolling back is the fix.
    fn bad_rollout(
        &self,
        r: &Rollout,
        consequence: &str,
        confidence: f64,
        evidence: Vec<String>,
    ) -> Hypothesis {
        let fields: Vec<&str> = r.changes.iter().map(|c| c.field.as_str()).collect();
        checked(
            hypothesis(
                Category::BadRollout,
                format!(
                    "the rollout of {} to revision {} changed {} {consequence}",
                    self.target,
                    r.revision,
                    fields.join(", ")
                ),
                confidence,
                evidence,
                Some(ActionType::Rollback),
            ),
            format!(
                "pods of revision {} ran without this failure",
                r.previous_revision
            ),
            format!("pods of revision {} fail the same way", r.previous_revision),
        )
    }
}

/// A hypothesis with what would confirm and what would refute it.
fn checked(mut h: Hypothesis, confirm: String, refute: String) -> Hypothesis {
    h.confirm = Some(crate::redact::string(&confirm));
    h.refute = Some(crate::redact::string(&refute));
    h
}

/// The first match of the pattern in any of `texts`, in order. The
/// patterns are the rules' own; one that did not compile matches nothing.
fn first_match<'t>(
    pattern: &str,
    texts: impl IntoIterator<Item = &'t str>,
) -> Option<regex::Captures<'t>> {
    let re = regex::Regex::new(pattern).ok()?;
    texts.into_iter().find_map(|t| re.captures(t))
}

/// Capture group `i` as a string, or "".
fn group(c: &regex::Captures, i: usize) -> String {
    c.get(i).map(|m| m.as_str().to_string()).unwrap_or_default()
}

fn hypothesis(
    category: Category,
    statement: String,
    confidence: f64,
    evidence: Vec<String>,
    action: Option<ActionType>,
) -> Hypothesis {
    Hypothesis {
        category,
        // Statements quote names from the traces (operations, services).
        statement: crate::redact::string(&statement),
        confidence,
        evidence,
        proposed_action: action,
        confirm: None,
        refute: None,
    }
}

#[cfg(test)]
mod tests;
