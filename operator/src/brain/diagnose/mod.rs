//! The rules that turn facts into a diagnosis. `evidence` records what the
//! facts say as numbered evidence; one file per family of signals proposes
//! the hypotheses, each citing the evidence it rests on; `history` weighs
//! them by what worked before for this very problem. Pure.

mod crash;
mod evidence;
mod history;
mod image;
mod memory;
mod probes;
mod scheduling;
mod service;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::{ContainerResources, Facts, RULES, Rollout};
use crate::crd::{ActionType, Category, Diagnosis, Hypothesis, SignalKind, WorkloadRef};
use evidence::{Cite, Cited};

/// Diagnoses the incident from the facts.
pub fn diagnose(facts: &Facts, now: Timestamp) -> Diagnosis {
    let (evidence, cited) = evidence::collect(facts);
    let case = Case::new(facts, cited);
    let mut hypotheses = match facts.signal {
        SignalKind::OOMKilled => memory::rules(&case),
        SignalKind::CrashLoopBackOff => crash::rules(&case),
        SignalKind::ImagePullBackOff => image::rules(&case),
        SignalKind::Unschedulable => scheduling::rules(&case),
        SignalKind::ReadinessFailing => probes::rules(&case),
        SignalKind::HealthCheck
        | SignalKind::ConversionRate
        | SignalKind::EventRateDrop
        | SignalKind::TraceErrorRate
        | SignalKind::TraceLatency => service::rules(&case),
        // Rules for these signals follow in their own families.
        SignalKind::ConfigError
        | SignalKind::InitContainerFailed
        | SignalKind::JobFailed
        | SignalKind::FailedCreate
        | SignalKind::RolloutStalled
        | SignalKind::NodeFailure => vec![],
    };
    history::weigh(&mut hypotheses, facts, case.cited.history.as_ref());
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
        let container = facts
            .observation
            .as_ref()
            .and_then(|o| o.container.as_ref());
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
        )
    }
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
    }
}
