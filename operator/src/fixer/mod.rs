//! The Fixer: picks the next step of the policy's ladder within the
//! guardrails (`plan`, pure), then prepares and takes it (`actions`).
//!
//! Where we decide whether to act: `plan`. Where we act: `actions::execute`.

pub mod actions;
pub mod budget;
pub mod claims;
pub mod gitops;
pub mod ledger;
pub mod route;

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::crd::{
    ActionRecord, ActionState, ActionStep, ActionType, Category, Diagnosis, Guardrails,
    IncidentMemorySpec, Outcome, RemediationPolicySpec, WorkloadKind,
};
use crate::memory::similar::Recalled;
use crate::{limits, memory};

pub use crate::lease::{Fence, NotLeader, Unfenced};

/// How much of the shared budgets is already used, counted by the caller.
#[derive(Clone, Debug, Default)]
pub struct Budget {
    /// Actions taken in the last hour under the incident's policy.
    pub policy_actions_last_hour: usize,
    /// Actions taken in the breaker's window by the whole operator.
    pub global_recent_actions: usize,
    /// The global circuit breaker's limit for that window.
    pub breaker_limit: usize,
    /// Actions taken in the breaker's window in the incident's namespace.
    pub namespace_recent_actions: usize,
    /// The namespace's share of the breaker's limit, so that a storm in one
    /// namespace leaves actions for the others. None: no share (one
    /// namespace is watched).
    pub namespace_limit: Option<usize>,
    /// Pods of the workload being disrupted now (terminating).
    pub pods_disrupted: usize,
    /// The latest action another incident took on the same workload: when,
    /// which incident, what. Two signals of one fault (conversion on Kafka
    /// and errors in traces, say) must not both act: a second rollback
    /// would put the broken revision back.
    pub workload_changed: Option<claims::Change>,
}

/// Which guardrail holds a step back; the `Remediated` condition's reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitReason {
    /// The operator took its limit of actions in the breaker's window.
    CircuitBreakerOpen,
    /// The namespace used its share of the breaker.
    NamespaceShareExhausted,
    /// The policy's `maxActionsPerHour` is used up.
    RateLimited,
    /// The last action's cooldown has not passed.
    CooldownActive,
    /// Another incident changed the workload; its effect is awaited.
    WorkloadChangedByAnotherIncident,
    /// Too many of the workload's pods are going away already.
    TooManyPodsDisrupted,
}

impl WaitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CircuitBreakerOpen => "CircuitBreakerOpen",
            Self::NamespaceShareExhausted => "NamespaceShareExhausted",
            Self::RateLimited => "RateLimited",
            Self::CooldownActive => "CooldownActive",
            Self::WorkloadChangedByAnotherIncident => "WorkloadChangedByAnotherIncident",
            Self::TooManyPodsDisrupted => "TooManyPodsDisrupted",
        }
    }
}

impl std::fmt::Display for WaitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a problem is handed to people; the `Escalated` condition's reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EscalationReason {
    /// The policy's `escalateAfterAttempts` ineffective attempts were made.
    AttemptsExhausted,
    /// No step of the policy's ladder is left, or the ladder says Escalate.
    LadderExhausted,
    /// The problem returned within the recurrence window.
    Recurred,
    /// Every step of the ladder left for this category is one that cannot
    /// help it (a restart for a missing ConfigMap, say); the message lists
    /// them as NotApplicable and what a person should do instead.
    NoApplicableStep,
    /// Argo CD or Flux manages what the step would change, so a patch would
    /// be reverted, and the policy names no file to propose it in.
    ManagedByGitOps,
}

impl EscalationReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AttemptsExhausted => "AttemptsExhausted",
            Self::LadderExhausted => "LadderExhausted",
            Self::Recurred => "Recurred",
            Self::NoApplicableStep => "NoApplicableStep",
            Self::ManagedByGitOps => "ManagedByGitOps",
        }
    }
}

impl std::fmt::Display for EscalationReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the Fixer decided.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// Take (or, per the mode, record) this step now.
    Act(ActionStep),
    /// A guardrail holds the next step back; look again after `retry_after`.
    Wait {
        reason: WaitReason,
        message: String,
        retry_after: Duration,
    },
    /// Hand the problem to people.
    Escalate {
        reason: EscalationReason,
        message: String,
    },
}

/// Records that count as an attempt to fix the problem.
pub fn is_attempt(a: &ActionRecord) -> bool {
    matches!(
        a.state,
        ActionState::Succeeded | ActionState::Failed | ActionState::Blocked | ActionState::DryRun
    )
}

/// Records of actions that really changed (or tried to change) the cluster.
pub fn is_executed(a: &ActionRecord) -> bool {
    matches!(a.state, ActionState::Succeeded | ActionState::Failed)
}

fn disrupts_pods(action: ActionType) -> bool {
    matches!(
        action,
        ActionType::RestartPod
            | ActionType::RolloutRestart
            | ActionType::Rollback
            | ActionType::RaiseMemoryLimit
    )
}

/// How far an action reaches into the running system, least first: handing
/// the problem to people changes nothing; restarting one pod, then all of
/// them; a changed memory limit; a changed replica count; a previous pod
/// template put back.
pub fn invasiveness(action: ActionType) -> u8 {
    match action {
        ActionType::Escalate => 0,
        ActionType::RestartPod => 1,
        ActionType::RolloutRestart => 2,
        ActionType::RaiseMemoryLimit => 3,
        ActionType::Scale => 4,
        ActionType::Rollback => 5,
    }
}

/// The less invasive of two actions.
pub fn least_invasive(a: ActionType, b: ActionType) -> ActionType {
    if invasiveness(b) < invasiveness(a) {
        b
    } else {
        a
    }
}

/// The categories whose cause lives outside the pods: the configuration,
/// an init container's input, a Job's program, storage, admission, the
/// node, the image reference or the registry, the cluster's capacity.
/// Restarting, scaling or giving more memory changes none of it.
const NOTHING_ON_THE_PODS_HELPS: [Category; 8] = [
    Category::BadImage,
    Category::Unschedulable,
    Category::ConfigError,
    Category::InitFailure,
    Category::JobFailure,
    Category::StorageUnavailable,
    Category::QuotaExceeded,
    Category::NodeFailure,
];

/// Whether an action can help a problem of this category at all: a pure
/// table the ladder consults before it takes a step. Escalating always
/// can; a rollback only undoes a bad rollout; more memory only helps what
/// ran out of it; for the categories whose cause is not in the pods
/// (`NOTHING_ON_THE_PODS_HELPS`) no restart or scale does either.
pub fn can_help(action: ActionType, category: Category) -> bool {
    match action {
        ActionType::Escalate => true,
        ActionType::Rollback => category == Category::BadRollout,
        ActionType::RaiseMemoryLimit => category == Category::OutOfMemory,
        ActionType::RestartPod | ActionType::RolloutRestart | ActionType::Scale => {
            !NOTHING_ON_THE_PODS_HELPS.contains(&category)
        }
    }
}

/// Why `action` can change nothing of a workload of this kind, whatever
/// the problem; None when it can. The step is then recorded as impossible
/// and the ladder goes on.
pub fn unfit(action: ActionType, kind: WorkloadKind) -> Option<&'static str> {
    use WorkloadKind::*;
    match (action, kind) {
        // Nothing would roll a bare pod or a Job's pods out again, nor a
        // CronJob's: its next run starts from its template anyway.
        (ActionType::RolloutRestart, Pod | Job | CronJob) => {
            Some("has no rolling update to restart its pods with")
        }
        // Evicting deletes: nothing recreates a bare pod, and a Job's pod
        // fails its attempt and reruns the work.
        (ActionType::RestartPod, Pod) => Some("has no controller to recreate it"),
        (ActionType::RestartPod, Job | CronJob) => {
            Some("runs its pods to completion: evicting one fails its attempt and reruns the work")
        }
        (ActionType::RaiseMemoryLimit, Job) => Some(
            "cannot change: a Job's pod template is fixed once the Job exists; re-create the Job with a higher limit",
        ),
        (ActionType::RaiseMemoryLimit, CronJob) => Some(
            "keeps its pod template in spec.jobTemplate, which this step does not change; raise the limit there",
        ),
        _ => None,
    }
}

/// Why an action cannot help a category, for the Incident's record of the
/// skipped step.
pub fn why_not(action: ActionType, category: Category) -> &'static str {
    match (action, category) {
        (ActionType::Rollback, _) => {
            "a rollback only undoes a bad rollout, and the diagnosis does not blame the latest rollout"
        }
        (ActionType::RaiseMemoryLimit, _) => {
            "more memory only helps a container that ran out of it"
        }
        (ActionType::Scale, Category::QuotaExceeded) => {
            "more replicas are refused by the same quota or admission rule"
        }
        (ActionType::Scale, _) => "more replicas fail the same way",
        (_, Category::BadImage) => {
            "a new pod pulls the same image reference, and the kubelet already retries the pull"
        }
        (_, Category::Unschedulable) => "a new pod asks the scheduler for the same room",
        (_, Category::ConfigError) => {
            "a new pod reads the same configuration and fails the same way"
        }
        (_, Category::InitFailure) => {
            "the init container runs again on the same input and fails the same way"
        }
        (_, Category::JobFailure) => {
            "the Job's controller already retried up to its limit; a restart repeats the same run"
        }
        (_, Category::StorageUnavailable) => "a new pod waits for the same unbound claim",
        (_, Category::QuotaExceeded) => "the API server refuses the new pods the same way",
        (_, Category::NodeFailure) => {
            "the node is at fault, not the pods; their controller already replaces them"
        }
        _ => "it does not address this category",
    }
}

/// The category the ladder is walked for. A model may rank another category
/// first than the rules did (text in a log or a termination message can
/// sway it), so its category is followed only where that leads to a step no
/// more invasive than the rules' category would: the model can make the
/// plan more conservative, never bolder.
pub fn planning_category(
    policy: &RemediationPolicySpec,
    diagnosis: Option<&Diagnosis>,
    tried: &[ActionRecord],
    memory: Option<&IncidentMemorySpec>,
) -> Category {
    planning_category_recalled(policy, diagnosis, tried, History::own(memory))
}

/// As `planning_category`, with the steps ranked as `next_step_recalled`
/// ranks them, so the model's category is compared on the plan that would
/// really be taken.
pub fn planning_category_recalled(
    policy: &RemediationPolicySpec,
    diagnosis: Option<&Diagnosis>,
    tried: &[ActionRecord],
    history: History<'_>,
) -> Category {
    let Some(d) = diagnosis else {
        return Category::Unknown;
    };
    let rules = d.rules_category.unwrap_or(d.category);
    if rules == d.category {
        return rules;
    }
    // No step left is Escalate: nothing is less invasive.
    let reach = |c: Category| {
        next_step_recalled(policy, c, tried, history)
            .map(|s| invasiveness(s.type_))
            .unwrap_or(0)
    };
    if reach(d.category) <= reach(rules) {
        d.category
    } else {
        rules
    }
}

/// The steps of the ladder meant for this category (by `onCategories`)
/// that cannot help it and were not tried: they are skipped as
/// NotApplicable.
pub fn not_applicable<'a>(
    policy: &'a RemediationPolicySpec,
    category: Category,
    tried: &[ActionRecord],
) -> Vec<&'a ActionStep> {
    policy
        .actions
        .iter()
        .filter(|s| s.on_categories.is_empty() || s.on_categories.contains(&category))
        .filter(|s| !can_help(s.type_, category))
        .filter(|s| !tried.iter().any(|a| a.type_ == s.type_))
        .collect()
}

/// What the ladder knows of the past: this problem's own history, and the
/// similar problems of other workloads of the namespace
/// (`memory::similar::recall`).
#[derive(Clone, Copy, Debug, Default)]
pub struct History<'a> {
    pub own: Option<&'a IncidentMemorySpec>,
    pub similar: &'a [Recalled],
}

impl<'a> History<'a> {
    /// This problem's own history only.
    pub fn own(own: Option<&'a IncidentMemorySpec>) -> Self {
        Self { own, similar: &[] }
    }
}

/// The next step on the ladder for this diagnosis: steps for other
/// categories, steps that cannot help this category, steps already tried
/// in this episode, and steps that only ever failed on this problem are
/// skipped; a step that worked on this problem before goes first.
pub fn next_step<'a>(
    policy: &'a RemediationPolicySpec,
    category: Category,
    tried: &[ActionRecord],
    memory: Option<&IncidentMemorySpec>,
) -> Option<&'a ActionStep> {
    next_step_recalled(policy, category, tried, History::own(memory))
}

/// The next step, ranked by this problem's history and then by what held
/// on similar problems of other workloads. The rule:
///
/// 1. Only the policy's steps are candidates, filtered as `next_step` does
///    (the step's `onCategories`, `can_help`, not yet tried in this
///    episode, not proved ineffective on this very problem). Nothing a
///    similar problem says brings back a step filtered out here.
/// 2. A step that worked on this problem before goes first (own history
///    outweighs everything else).
/// 3. Else, the first step, in ladder order, that held on similar problems
///    diagnosed as the same category (`memory::similar::held`: it cleared
///    one at least once and did not fail more often than it worked) goes
///    first. Escalate is never moved.
/// 4. Else the ladder's order. A step that failed on similar problems is
///    cited by the Brain but keeps its place: a different workload's
///    failure is weaker evidence than this problem's own.
pub fn next_step_recalled<'a>(
    policy: &'a RemediationPolicySpec,
    category: Category,
    tried: &[ActionRecord],
    history: History<'_>,
) -> Option<&'a ActionStep> {
    let memory = history.own;
    let eligible: Vec<&ActionStep> = policy
        .actions
        .iter()
        .filter(|s| s.on_categories.is_empty() || s.on_categories.contains(&category))
        .filter(|s| can_help(s.type_, category))
        .filter(|s| !tried.iter().any(|a| a.type_ == s.type_))
        .filter(|s| s.type_ == ActionType::Escalate || !memory::proved_ineffective(memory, s.type_))
        .collect();
    let movable = || eligible.iter().filter(|s| s.type_ != ActionType::Escalate);
    movable()
        .find(|s| memory::proved_effective(memory, s.type_))
        .or_else(|| movable().find(|s| recalled(history.similar, category, s.type_).is_some()))
        .or(eligible.first())
        .copied()
}

/// Why the ladder would move `action` up for this category: "it held on a
/// similar problem: Rollback cleared the same problem on deployment/a 2
/// time(s)", or None when similar problems say nothing in its favour.
pub fn recalled(similar: &[Recalled], category: Category, action: ActionType) -> Option<String> {
    memory::similar::held(similar, category, action)?;
    let on: Vec<String> = similar
        .iter()
        .filter(|r| r.of_category(category))
        .filter_map(|r| {
            let t = r.tally(action).filter(|t| t.effective > 0)?;
            Some(format!(
                "{} on {} {} time(s)",
                action.as_str(),
                r.target,
                t.effective
            ))
        })
        .collect();
    Some(format!(
        "it held on similar problems of other workloads: cleared {}",
        on.join(", ")
    ))
}

/// Decides what to do next for an incident whose last action (if any) has
/// finished and been judged.
pub fn plan(
    policy: &RemediationPolicySpec,
    category: Category,
    actions: &[ActionRecord],
    memory: Option<&IncidentMemorySpec>,
    budget: &Budget,
    now: Timestamp,
) -> Plan {
    plan_recalled(
        policy,
        category,
        None,
        actions,
        History::own(memory),
        budget,
        now,
    )
}

/// The escalation when the ladder has nothing left to take: the steps
/// skipped as NotApplicable, each with why, and the diagnosis's remedy.
fn ladder_escalation(
    policy: &RemediationPolicySpec,
    category: Category,
    remedy: Option<&str>,
    actions: &[ActionRecord],
    reached_escalate: bool,
) -> Plan {
    let skipped = not_applicable(policy, category, actions);
    let mut message = if skipped.is_empty() {
        if reached_escalate {
            "the policy's ladder reached Escalate".to_string()
        } else {
            format!("no step of the policy's ladder is left for a {category:?} problem")
        }
    } else {
        let listed: Vec<String> = skipped
            .iter()
            .map(|s| {
                format!(
                    "{} NotApplicable ({})",
                    s.type_.as_str(),
                    why_not(s.type_, category)
                )
            })
            .collect();
        format!(
            "no step of the policy's ladder can help a {category:?} problem; skipped: {}",
            listed.join("; ")
        )
    };
    if let Some(r) = remedy.filter(|r| !r.trim().is_empty()) {
        message.push_str(&format!(". What to do: {r}"));
    }
    Plan::Escalate {
        reason: if skipped.is_empty() {
            EscalationReason::LadderExhausted
        } else {
            EscalationReason::NoApplicableStep
        },
        message,
    }
}

/// As `plan`, with the diagnosis's remedy (its root cause sentence), which
/// an escalation from the ladder carries so that a person knows what to do.
pub fn plan_with_remedy(
    policy: &RemediationPolicySpec,
    category: Category,
    remedy: Option<&str>,
    actions: &[ActionRecord],
    memory: Option<&IncidentMemorySpec>,
    budget: &Budget,
    now: Timestamp,
) -> Plan {
    plan_recalled(
        policy,
        category,
        remedy,
        actions,
        History::own(memory),
        budget,
        now,
    )
}

/// As `plan_with_remedy`, with the steps ranked by `next_step_recalled`.
pub fn plan_recalled(
    policy: &RemediationPolicySpec,
    category: Category,
    remedy: Option<&str>,
    actions: &[ActionRecord],
    history: History<'_>,
    budget: &Budget,
    now: Timestamp,
) -> Plan {
    let g = &policy.guardrails;
    let failed: Vec<&ActionRecord> = actions
        .iter()
        .filter(|a| is_attempt(a) && a.outcome != Some(Outcome::Effective))
        .collect();
    if failed.len() >= g.escalate_after_attempts.max(1) as usize {
        let tried: Vec<&str> = failed.iter().map(|a| a.type_.as_str()).collect();
        return Plan::Escalate {
            reason: EscalationReason::AttemptsExhausted,
            message: format!(
                "{} attempt(s) did not clear the signal: {}",
                failed.len(),
                tried.join(", ")
            ),
        };
    }
    let Some(step) = next_step_recalled(policy, category, actions, history) else {
        return ladder_escalation(policy, category, remedy, actions, false);
    };
    if step.type_ == ActionType::Escalate {
        return ladder_escalation(policy, category, remedy, actions, true);
    }
    if budget.global_recent_actions >= budget.breaker_limit {
        return Plan::Wait {
            reason: WaitReason::CircuitBreakerOpen,
            message: format!(
                "the operator took {} actions recently, its limit; automatic actions are paused",
                budget.global_recent_actions
            ),
            retry_after: Duration::from_secs(30),
        };
    }
    if let Some(limit) = budget.namespace_limit
        && budget.namespace_recent_actions >= limit
    {
        return Plan::Wait {
            reason: WaitReason::NamespaceShareExhausted,
            message: format!(
                "this namespace took {} of the operator's recent actions, its share of the circuit breaker ({limit} of {}); \
                 its automatic actions wait while other namespaces still act",
                budget.namespace_recent_actions, budget.breaker_limit
            ),
            retry_after: Duration::from_secs(30),
        };
    }
    if budget.policy_actions_last_hour >= g.max_actions_per_hour.max(0) as usize {
        return Plan::Wait {
            reason: WaitReason::RateLimited,
            message: format!(
                "{} action(s) in the last hour under this policy; maxActionsPerHour is {}",
                budget.policy_actions_last_hour, g.max_actions_per_hour
            ),
            retry_after: Duration::from_secs(60),
        };
    }
    let last_acted = actions
        .iter()
        .filter(|a| is_attempt(a))
        .filter_map(|a| a.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    if let Some(last) = last_acted {
        // A time ahead of our clock counts as now: a skewed or forged
        // status cannot hold the problem back longer than the cooldown.
        let ready_at = limits::after(last.min(now), g.cooldown_seconds);
        if now < ready_at {
            return Plan::Wait {
                reason: WaitReason::CooldownActive,
                message: format!("the last action finished at {last}; cooldown until {ready_at}"),
                retry_after: ready_at.duration_since(now).unsigned_abs(),
            };
        }
    }
    if let Some(wait) = workload_settling(g, budget, now) {
        return wait;
    }
    if disrupts_pods(step.type_) && budget.pods_disrupted >= g.max_pods_disrupted.max(1) as usize {
        return Plan::Wait {
            reason: WaitReason::TooManyPodsDisrupted,
            message: format!(
                "{} pod(s) of the workload are already going away; maxPodsDisrupted is {}",
                budget.pods_disrupted, g.max_pods_disrupted
            ),
            retry_after: Duration::from_secs(5),
        };
    }
    Plan::Act(step.clone())
}

/// Holds a step back while another incident's change to the same workload
/// is in its cooldown and verification window: it may clear this signal too.
/// Approved steps wait for it as well.
pub fn workload_settling(g: &Guardrails, budget: &Budget, now: Timestamp) -> Option<Plan> {
    let claims::Change {
        at,
        by,
        action: what,
    } = budget.workload_changed.as_ref()?;
    // A time ahead of our clock counts as now, as for the cooldown.
    let settled = verification_deadline(g, limits::after((*at).min(now), g.cooldown_seconds));
    (now < settled).then(|| Plan::Wait {
        reason: WaitReason::WorkloadChangedByAnotherIncident,
        message: format!(
            "incident {by} took {} on this workload at {at}; waiting until {settled} to see whether it cleared this signal too",
            what.as_str()
        ),
        retry_after: settled.duration_since(now).unsigned_abs(),
    })
}

/// When the verification window of an action that finished at `finished`
/// ends. Saturates: a window an old CRD let in cannot overflow the clock.
pub fn verification_deadline(g: &Guardrails, finished: Timestamp) -> Timestamp {
    limits::after(finished, g.verification_window_seconds)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod recall_tests;
