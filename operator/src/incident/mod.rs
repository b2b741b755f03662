//! The incident state machine: diagnose, plan within the guardrails, record,
//! act, verify, resolve or escalate, remember. Each step is a stage module
//! (`brain`, `fixer`, `memory`); this folder sequences them and writes the
//! Incident's status.

mod apply;
pub mod approval;
pub mod decide;
mod diagnose;
mod load;
mod routing;
mod selection;
mod update;

use std::sync::Arc;

use kube::Client;
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;

use crate::Result;
use crate::clock::Clock;
use crate::config::Config;
use crate::crd::{Incident, RemediationPolicy};
use crate::fixer::claims::WorkloadClaims;
use crate::fixer::ledger::ActionLedger;
use crate::lease::Leadership;
use crate::publish::Publisher;
use crate::scout::measured::Board;
use crate::telemetry::Metrics;
use crate::workload::Workloads;

use decide::Decision;
use update::IncidentUpdate;

/// What the incident reconciler reads and writes.
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub workloads: Workloads,
    pub policies: Store<RemediationPolicy>,
    pub incidents: Store<Incident>,
    /// The language model the Brain may consult, if one is configured.
    pub model: Option<(Arc<dyn crate::llm::ChatModel>, crate::llm::LlmConfig)>,
    pub tokens: crate::llm::TokenLedger,
    /// GitHub, as far as the allow-list lets each namespace use it.
    pub github: crate::github::Access,
    pub metrics: Arc<Metrics>,
    /// Whether this replica may act (the Lease is ours).
    pub leadership: Leadership,
    /// The latest readings of the signals the operator measures itself.
    pub board: Board,
    /// Where traces are read from, when a trace store is configured.
    pub traces: Option<Arc<dyn crate::traces::TraceStore>>,
    /// The events the rules read, when the operator watches them.
    pub events: Option<crate::brain::events::EventIndex>,
    pub publisher: Publisher,
    /// Actions this process took.
    pub ledger: ActionLedger,
    /// The latest automatic change to each workload, by incident.
    pub claims: WorkloadClaims,
    pub clock: Arc<dyn Clock>,
}

/// Moves an incident one or more steps along: reads what the decision
/// needs, decides (pure), and applies the decision.
pub async fn reconcile(incident: Arc<Incident>, ctx: Arc<Context>) -> Result<Action> {
    let mut update = IncidentUpdate::new(ctx, (*incident).clone());
    let policy = update.policy();
    match (
        decide::decide(&incident, policy.as_deref(), update.now),
        policy,
    ) {
        (Decision::Idle, _) => Ok(Action::await_change()),
        (Decision::RefuseApproval(why), _) => update.refuse_approval(why).await,
        (Decision::Recur(recurrence), _) => update.recur(recurrence).await,
        (Decision::PolicyNotFound, _) | (_, None) => update.policy_not_found().await,
        (decision, Some(policy)) => {
            if decision.needs_diagnosis() && update.status().diagnosis.is_none() {
                let announce = update.diagnose().await?;
                let (_, next) = tokio::join!(announce, apply(update, decision, &policy, &incident));
                return next;
            }
            apply(update, decision, &policy, &incident).await
        }
    }
}

/// Takes the step a decision names, on the incident as read (`read`) and
/// diagnosed.
async fn apply(
    mut update: IncidentUpdate,
    decision: Decision,
    policy: &RemediationPolicy,
    read: &Incident,
) -> Result<Action> {
    let last = update.status().actions.last().cloned();
    match (decision, last) {
        (Decision::Replay, _) => match update.unless_selected(policy).await? {
            Some(wait) => Ok(wait),
            None => update.execute_pending(policy).await,
        },
        (Decision::FollowPull, Some(last)) => update.follow_pull(policy, &last).await,
        (Decision::Approve, Some(last)) => update.approved(policy, &last).await,
        (Decision::Reject, Some(last)) => update.rejected(policy, &last).await,
        (Decision::AwaitApproval, _) => {
            // The diagnosis may have just been written.
            if update.incident.status != read.status {
                update.save().await?;
            }
            Ok(Action::await_change())
        }
        (Decision::Verify, Some(last)) => update.verify(policy, &last).await,
        _ => update.plan_next(policy).await,
    }
}

#[cfg(test)]
mod routing_tests;
#[cfg(test)]
mod tests;
