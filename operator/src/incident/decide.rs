//! The incident state machine's decisions, pure: from the incident as it is,
//! its policy, the budget, what the workload shows and the time, what to do
//! next. Nothing here reads the cluster or writes anything: `load` gathers
//! the inputs, `apply` makes the one change a decision calls for, and
//! `update` writes the status.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::approval::{ApprovalCheck, approval_for};
use crate::conditions::{self, REMEDIATED};
use crate::crd::{
    ActionRecord, ActionState, ActionType, ApprovalDecision, ConditionStatus, Incident,
    IncidentMemorySpec, IncidentStatus, Mode, Phase, RemediationPolicy,
};
use crate::fixer::{self, Budget, Plan, WaitReason};
use crate::memory::similar::Recalled;
use crate::scout::Signal;

/// How often a verifying incident looks at its workload.
pub const VERIFY_POLL: Duration = Duration::from_secs(2);

/// What one reconcile of an incident does.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Nothing until the incident changes: the Scout has not recorded its
    /// first observation, or it was escalated (people have it now).
    Idle,
    /// The written approval decides nothing: say why, then remove it.
    RefuseApproval(String),
    /// Resolved: whether the problem came back.
    Recur(Recurrence),
    /// The incident's policy does not exist (any more).
    PolicyNotFound,
    /// A step was recorded and not taken (the operator stopped in between,
    /// or another replica led): take it now, once.
    Replay,
    /// A pull request was proposed: follow it.
    FollowPull,
    /// The waiting step was approved.
    Approve,
    /// The waiting step was rejected: the next one is planned.
    Reject,
    /// A step waits for a person's decision.
    AwaitApproval,
    /// The last step was taken: judge whether it worked.
    Verify,
    /// Plan the next step.
    Plan,
}

impl Decision {
    /// Whether the step needs the incident's diagnosis first.
    pub fn needs_diagnosis(&self) -> bool {
        !matches!(
            self,
            Self::Idle | Self::RefuseApproval(_) | Self::Recur(_) | Self::PolicyNotFound
        )
    }
}

/// Decides the next step of an incident.
pub fn decide(incident: &Incident, policy: Option<&RemediationPolicy>, now: Timestamp) -> Decision {
    let Some(status) = incident.status.as_ref().filter(|s| s.occurrences > 0) else {
        return Decision::Idle;
    };
    let approval = approval_for(Some(status), incident.spec.approval.as_ref());
    if let ApprovalCheck::NotApplicable(why) = approval {
        return Decision::RefuseApproval(why);
    }
    match status.phase {
        Phase::Escalated | Phase::Failed => return Decision::Idle,
        Phase::Resolved => {
            let window = policy
                .map(|p| p.spec.guardrails.recurrence_window_seconds)
                .unwrap_or(0);
            return Decision::Recur(recurrence(status, window, now));
        }
        _ => {}
    }
    if policy.is_none() {
        return Decision::PolicyNotFound;
    }
    let Some(last) = status.actions.last() else {
        return Decision::Plan;
    };
    match last.state {
        ActionState::Pending => Decision::Replay,
        ActionState::AwaitingMerge => Decision::FollowPull,
        ActionState::AwaitingApproval => match approval {
            ApprovalCheck::Applies(ApprovalDecision::Approve) => Decision::Approve,
            ApprovalCheck::Applies(ApprovalDecision::Reject) => Decision::Reject,
            _ => Decision::AwaitApproval,
        },
        ActionState::Succeeded | ActionState::DryRun if last.outcome.is_none() => Decision::Verify,
        _ => Decision::Plan,
    }
}

/// Whether a resolved problem came back.
#[derive(Clone, Debug, PartialEq)]
pub enum Recurrence {
    /// No signal since it was resolved.
    NotReturned,
    /// It came back within the recurrence window: people take it.
    Escalate { message: String },
    /// It came back after the window: a new episode starts.
    NewEpisode { message: String },
}

/// Judges a resolved incident's latest signal against the recurrence window
/// (`window` seconds; 0: no window, every return is a new episode).
pub fn recurrence(status: &IncidentStatus, window: i64, _now: Timestamp) -> Recurrence {
    let (Some(resolved), Some(seen)) = (
        status.resolved_at.as_ref(),
        status.last_signal.as_ref().map(|s| &s.observed_at),
    ) else {
        return Recurrence::NotReturned;
    };
    if seen.0 <= resolved.0 {
        return Recurrence::NotReturned;
    }
    let after = seen.0.duration_since(resolved.0).as_secs();
    if window > 0 && after <= window {
        return Recurrence::Escalate {
            message: format!(
                "the problem returned {after} s after it was resolved (recurrence window {window} s)"
            ),
        };
    }
    Recurrence::NewEpisode {
        message: format!("the problem returned {after} s after it was resolved"),
    }
}

/// Whether the last step worked.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Nothing to judge: the step has not finished.
    NotFinished,
    /// Still in the verification window, clear so far: look again then.
    Watching { next_look: Duration },
    /// The signal came back, or was still there when the window ended.
    Ineffective { message: String },
    /// Clear for the whole window.
    Effective,
}

/// Judges the last step: ineffective as soon as a new event of the signal
/// happens, or if the signal is still present when the window ends;
/// effective if it stayed clear for the whole window. `signals` are those
/// observed since the step finished.
pub fn verdict(
    policy: &RemediationPolicy,
    last: &ActionRecord,
    signals: &[Signal],
    now: Timestamp,
) -> Verdict {
    let Some(finished) = last.finished_at.as_ref() else {
        return Verdict::NotFinished;
    };
    let deadline = fixer::verification_deadline(&policy.spec.guardrails, finished.0);
    let new_event = signals.iter().any(|s| !s.ongoing);
    if new_event || (now >= deadline && !signals.is_empty()) {
        let what = signals
            .first()
            .map(|s| s.message.clone())
            .unwrap_or_default();
        return Verdict::Ineffective {
            message: format!("{} did not clear the signal: {what}", last.type_.as_str()),
        };
    }
    if now >= deadline {
        return Verdict::Effective;
    }
    let left = deadline.duration_since(now).unsigned_abs();
    Verdict::Watching {
        next_look: left.min(VERIFY_POLL),
    }
}

/// `status.mitigatedAt` after a look at the last action: kept once set
/// while the verdict is Watching or Effective; set at the first look after
/// the action finished at which no signal fired (never before the action
/// finished); cleared when the action proved ineffective, since the next
/// step's mitigation is the one that counts.
pub fn mitigated_at(
    known: Option<Timestamp>,
    verdict: &Verdict,
    finished: Option<Timestamp>,
    clear: bool,
    now: Timestamp,
) -> Option<Timestamp> {
    match verdict {
        Verdict::Ineffective { .. } => None,
        Verdict::NotFinished => known,
        Verdict::Watching { .. } | Verdict::Effective => {
            known.or_else(|| clear.then(|| finished.map_or(now, |f| f.max(now))))
        }
    }
}

/// What planning the next step decided.
#[derive(Clone, Debug, PartialEq)]
pub enum PlanDecision {
    /// What the Fixer planned within the guardrails: act, wait or escalate.
    Planned(Plan),
    /// Another incident's action on the workload cleared this measured
    /// signal too: nothing is left to do.
    ClearedByAnotherIncident,
    /// The policy is not Ready: it must be fixed before it acts.
    PolicyNotReady { message: String },
}

/// What planning reads.
pub struct PlanInputs<'a> {
    pub policy: &'a RemediationPolicy,
    pub status: &'a IncidentStatus,
    pub memory: Option<&'a IncidentMemorySpec>,
    /// The same problem on other workloads of the namespace.
    pub similar: &'a [Recalled],
    pub budget: &'a Budget,
    /// For a signal the operator measures itself: whether it reads healthy
    /// now. Always false for a pod signal.
    pub measured_healthy: bool,
    pub now: Timestamp,
}

/// Plans the next step within the guardrails.
pub fn plan(i: &PlanInputs) -> PlanDecision {
    let history = fixer::History {
        own: i.memory,
        similar: i.similar,
    };
    let category = fixer::planning_category_recalled(
        &i.policy.spec,
        i.status.diagnosis.as_ref(),
        &i.status.actions,
        history,
    );
    let planned = fixer::plan_recalled(
        &i.policy.spec,
        category,
        i.status.diagnosis.as_ref().map(|d| d.root_cause.as_str()),
        &i.status.actions,
        history,
        i.budget,
        i.now,
    );
    match planned {
        Plan::Wait {
            reason: WaitReason::WorkloadChangedByAnotherIncident,
            ..
        } if i.measured_healthy => return PlanDecision::ClearedByAnotherIncident,
        Plan::Act(_) => {}
        _ => return PlanDecision::Planned(planned),
    }
    if policy_not_ready(i.policy) {
        return PlanDecision::PolicyNotReady {
            message: format!(
                "policy {} is not Ready; it must be fixed before it may act",
                i.policy.metadata.name.as_deref().unwrap_or_default()
            ),
        };
    }
    PlanDecision::Planned(planned)
}

/// Why `step` goes first because of similar problems of other workloads:
/// Some only when the ladder without them would have taken another step.
pub fn recalled_first(i: &PlanInputs, step: ActionType) -> Option<String> {
    let own = fixer::History::own(i.memory);
    let category = fixer::planning_category_recalled(
        &i.policy.spec,
        i.status.diagnosis.as_ref(),
        &i.status.actions,
        fixer::History {
            own: i.memory,
            similar: i.similar,
        },
    );
    let plain = fixer::next_step_recalled(&i.policy.spec, category, &i.status.actions, own)?;
    if plain.type_ == step {
        return None;
    }
    let why = fixer::recalled(i.similar, category, step)?;
    Some(format!(
        "{} goes before {}: {why}",
        step.as_str(),
        plain.type_.as_str()
    ))
}

fn policy_not_ready(policy: &RemediationPolicy) -> bool {
    let policy_conditions = policy
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    conditions::get(policy_conditions, conditions::READY)
        .is_some_and(|c| c.status == ConditionStatus::False)
}

/// How a planned step is recorded: Failed when it cannot be taken, else as
/// the policy's mode says.
pub fn record_as(impossible: bool, mode: Mode) -> ActionState {
    match (impossible, mode) {
        (true, _) => ActionState::Failed,
        (false, Mode::DryRun) => ActionState::DryRun,
        (false, Mode::Manual) => ActionState::AwaitingApproval,
        (false, Mode::Automatic) => ActionState::Pending,
    }
}

/// The phase a waiting incident shows: it keeps Verifying; otherwise
/// Diagnosing before its first step, Remediating after.
pub fn waiting_phase(status: &IncidentStatus) -> Phase {
    match status.phase {
        Phase::Verifying => Phase::Verifying,
        _ if status.actions.is_empty() => Phase::Diagnosing,
        _ => Phase::Remediating,
    }
}

/// Whether the `Remediated` condition would change its reason: events are
/// published on a change only, so a guardrail that holds for minutes is one
/// event, not one per look.
pub fn remediated_reason_changes(status: &IncidentStatus, reason: &str) -> bool {
    conditions::get(&status.conditions, REMEDIATED).map(|c| c.reason.as_str()) != Some(reason)
}

/// What a proposed pull request's state means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullOutcome {
    /// Merged: the change reaches the cluster through GitOps; verify it.
    Merged,
    /// Closed without merging: the next step of the ladder runs.
    Closed,
    /// Still open: look again later.
    Open,
}

/// Reads a pull request's state.
pub fn pull_outcome(merged: bool, state: &str) -> PullOutcome {
    if merged {
        PullOutcome::Merged
    } else if state == "closed" {
        PullOutcome::Closed
    } else {
        PullOutcome::Open
    }
}

#[cfg(test)]
mod tests;
