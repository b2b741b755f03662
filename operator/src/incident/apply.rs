//! The changes a decision calls for: a step recorded (write-ahead) and
//! taken, a pull request proposed and followed, an approval used. Each
//! mutating call comes after the record that says it is about to happen.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::{info, warn};

use super::approval;
use super::decide::{self, PlanDecision, PullOutcome, VERIFY_POLL};
use super::routing::Routed;
use super::update::IncidentUpdate;
use crate::conditions::{APPROVED, REMEDIATED};
use crate::crd::{
    ActionRecord, ActionState, ActionStep, ConditionStatus, Phase, RemediationPolicy,
};
use crate::fixer::{self, Budget, Plan, actions};
use crate::github::GitHubError;
use crate::{Error, Result};

/// How long a pull request waits for its incident's GitHub issue, so its
/// body can link back to it.
const ISSUE_WAIT: k8s_openapi::jiff::SignedDuration =
    k8s_openapi::jiff::SignedDuration::from_secs(20);

impl IncidentUpdate {
    /// Plans the next step and records it; in Automatic mode, takes it.
    pub(super) async fn plan_next(&mut self, policy: &RemediationPolicy) -> Result<Action> {
        let super::load::Recall { memory, similar } = self.recall().await?;
        let budget = self.budget();
        let measured_healthy = self.measured_healthy();
        let status = self.status().clone();
        let inputs = decide::PlanInputs {
            policy,
            status: &status,
            memory: memory.as_ref(),
            similar: &similar,
            budget: &budget,
            measured_healthy,
            now: self.now,
        };
        let decision = decide::plan(&inputs);
        match decision {
            PlanDecision::Planned(Plan::Escalate { reason, message }) => {
                self.escalate(reason, message).await
            }
            PlanDecision::ClearedByAnotherIncident => self.resolve().await,
            PlanDecision::Planned(Plan::Wait {
                reason,
                message,
                retry_after,
            }) => self.hold(reason, message, retry_after).await,
            PlanDecision::PolicyNotReady { message } => {
                self.condition(
                    REMEDIATED,
                    ConditionStatus::False,
                    "PolicyNotReady",
                    message,
                );
                self.save().await?;
                Ok(Action::requeue(Duration::from_secs(30)))
            }
            PlanDecision::Planned(Plan::Act(step)) => {
                // Both read the workload: side by side.
                let (refusal, prepared) = tokio::join!(
                    self.selection_refusal(policy),
                    actions::prepare(&self.ctx.client, &self.incident, &step)
                );
                if let Some(why) = refusal? {
                    return self.not_selected(why).await;
                }
                if let Some(why) = decide::recalled_first(&inputs, step.type_) {
                    self.event(EventType::Normal, "RecalledSimilarFix", why)
                        .await;
                }
                self.record(policy, &step, &budget, prepared?).await
            }
        }
    }

    /// A guardrail holds the next step back: said in the `Remediated`
    /// condition, and in an event when the reason changed.
    async fn hold(
        &mut self,
        reason: fixer::WaitReason,
        message: String,
        retry_after: Duration,
    ) -> Result<Action> {
        let labels = crate::telemetry::ReasonLabels {
            reason: reason.as_str().into(),
        };
        self.ctx
            .metrics
            .guardrail_blocks
            .get_or_create(&labels)
            .inc();
        let changed = decide::remediated_reason_changes(self.status(), reason.as_str());
        self.condition(
            REMEDIATED,
            ConditionStatus::False,
            reason.as_str(),
            message.clone(),
        );
        self.status().phase = decide::waiting_phase(self.status());
        self.save().await?;
        if changed {
            self.event(EventType::Normal, reason.as_str(), message)
                .await;
        }
        Ok(Action::requeue(retry_after.max(Duration::from_millis(500))))
    }

    /// Records a planned step as the mode says, and takes it when it is
    /// automatic: the record is written first (write-ahead), then the step.
    async fn record(
        &mut self,
        policy: &RemediationPolicy,
        step: &ActionStep,
        budget: &Budget,
        prepared: actions::Prepared,
    ) -> Result<Action> {
        let id = approval::next_action_id(self.status(), step.type_);
        let state = decide::record_as(prepared.impossible.is_some(), policy.spec.mode);
        if state == ActionState::Pending && !self.claim_and_reserve(step, budget, &id) {
            return Ok(Action::requeue(Duration::from_millis(200)));
        }
        let now = Time(self.now);
        let finished =
            matches!(state, ActionState::Failed | ActionState::DryRun).then(|| now.clone());
        let detail = prepared.detail.clone();
        self.status().actions.push(ActionRecord {
            id: id.clone(),
            type_: step.type_,
            state,
            detail: detail.clone(),
            target: prepared.target,
            target_uid: prepared.target_uid,
            container: prepared.container,
            from: prepared.from,
            to: prepared.to,
            recorded_at: now,
            finished_at: finished,
            outcome: None,
            pull_request: None,
            diff: None,
            precondition: prepared.precondition,
        });
        match state {
            ActionState::Failed => {
                self.condition(
                    REMEDIATED,
                    ConditionStatus::False,
                    "ActionImpossible",
                    detail.clone(),
                );
                self.save().await?;
                self.event(
                    EventType::Warning,
                    "ActionImpossible",
                    format!("{}: {detail}", step.type_.as_str()),
                )
                .await;
                Ok(Action::requeue(Duration::from_millis(100)))
            }
            ActionState::DryRun => {
                self.status().phase = Phase::Verifying;
                self.condition(
                    REMEDIATED,
                    ConditionStatus::False,
                    "DryRun",
                    format!("dry run: would {detail}"),
                );
                self.save().await?;
                self.event(EventType::Normal, "DryRun", format!("would {detail}"))
                    .await;
                Ok(Action::requeue(VERIFY_POLL))
            }
            ActionState::AwaitingApproval => {
                self.status().phase = Phase::AwaitingApproval;
                let (name, ns) = (self.incident.name_any(), self.ns());
                let how = approval::how_to_decide(&detail, &name, &ns, &id);
                self.condition(
                    REMEDIATED,
                    ConditionStatus::False,
                    "AwaitingApproval",
                    how.clone(),
                );
                self.save().await?;
                self.event(EventType::Normal, "ApprovalRequired", how).await;
                Ok(Action::await_change())
            }
            _ => {
                // Write-ahead: the intent is stored before anything changes.
                // Who manages the field is read meanwhile.
                self.status().phase = Phase::Remediating;
                let router = self.router();
                let record = self.status().actions.last().cloned();
                let (saved, routed) = tokio::join!(self.save(), async {
                    match &record {
                        Some(r) => Some(router.route(policy, r).await),
                        None => None,
                    }
                });
                if let Err(e) = saved {
                    self.release_claim();
                    return Err(e);
                }
                if self.ctx.config.crash_after_record {
                    warn!(incident = %self.incident.name_any(), action = %id, "test hook: aborting after recording the action");
                    std::process::abort();
                }
                match (record, routed) {
                    (Some(record), Some(routed)) => {
                        self.execute_routed(policy, record, routed?).await
                    }
                    _ => Ok(Action::await_change()),
                }
            }
        }
    }

    /// Claims the workload and takes the breaker's place for an automatic
    /// step, just before it is recorded; false (nothing held) when another
    /// incident changed the workload or the breaker filled while the plan
    /// was made: the next plan sees it and waits.
    fn claim_and_reserve(&self, step: &ActionStep, budget: &Budget, id: &str) -> bool {
        let (ns, name) = (self.ns(), self.incident.name_any());
        let target = &self.incident.spec.target;
        let seen = budget.workload_changed.as_ref().map(|c| c.at);
        if let Err(other) = self
            .ctx
            .claims
            .claim(&ns, target, &name, step.type_, self.now, seen)
        {
            info!(incident = %name, other = %other.by, action = other.action.as_str(), at = %other.at, "workload changed while planning; planning again");
            return false;
        }
        let limits = fixer::budget::breaker_limits(budget, &self.ctx.config, self.now);
        let policy_key = format!("{ns}/{}", self.incident.spec.policy);
        if !self
            .ctx
            .ledger
            .reserve(policy_key, self.action_key(id), self.now, &limits)
        {
            self.release_claim();
            info!(incident = %name, "the circuit breaker filled while planning; planning again");
            return false;
        }
        true
    }

    fn release_claim(&self) {
        let (ns, name) = (self.ns(), self.incident.name_any());
        self.ctx
            .claims
            .release(&ns, &self.incident.spec.target, &name);
    }

    /// Takes an approved step, unless another incident changed the workload
    /// since: then the step waits, approved, until that change has had its
    /// cooldown and verification window, as an automatic step would.
    pub(super) async fn approved(
        &mut self,
        policy: &RemediationPolicy,
        step: &ActionRecord,
    ) -> Result<Action> {
        if let Some(wait) = self.unless_selected(policy).await? {
            return Ok(wait);
        }
        let budget = self.budget();
        if let Some(Plan::Wait {
            reason,
            message,
            retry_after,
        }) = fixer::workload_settling(&policy.spec.guardrails, &budget, self.now)
        {
            let changed = decide::remediated_reason_changes(self.status(), reason.as_str());
            let message = format!("{} is approved; {message}", step.id);
            self.condition(
                REMEDIATED,
                ConditionStatus::False,
                reason.as_str(),
                message.clone(),
            );
            self.save().await?;
            if changed {
                self.event(EventType::Normal, reason.as_str(), message)
                    .await;
            }
            return Ok(Action::requeue(retry_after.max(Duration::from_millis(500))));
        }
        let (ns, name) = (self.ns(), self.incident.name_any());
        let target = self.incident.spec.target.clone();
        let seen = budget.workload_changed.as_ref().map(|c| c.at);
        if self
            .ctx
            .claims
            .claim(&ns, &target, &name, step.type_, self.now, seen)
            .is_err()
        {
            return Ok(Action::requeue(Duration::from_millis(200)));
        }
        if let Some(r) = self.last_action() {
            r.state = ActionState::Pending;
        }
        self.status().phase = Phase::Remediating;
        let by = self.decided_by();
        self.condition(
            APPROVED,
            ConditionStatus::True,
            "Approved",
            format!("{} was approved{by}", step.id),
        );
        if let Err(e) = self.save().await {
            self.release_claim();
            return Err(e);
        }
        // The decision is spent once the action is recorded Pending; if
        // clearing fails, the next reconcile clears it as not applicable.
        if let Err(e) = self.clear_approval().await {
            warn!(incident = %name, error = %e, "could not clear the used approval");
        }
        self.event(
            EventType::Normal,
            "Approved",
            format!("{} approved{by}", step.id),
        )
        .await;
        self.execute_pending(policy).await
    }

    /// The waiting step was rejected: recorded, the decision spent, and the
    /// next step planned.
    pub(super) async fn rejected(
        &mut self,
        policy: &RemediationPolicy,
        step: &ActionRecord,
    ) -> Result<Action> {
        let now = Time(self.now);
        if let Some(r) = self.last_action() {
            r.state = ActionState::Rejected;
            r.finished_at = Some(now);
        }
        let by = self.decided_by();
        self.condition(
            APPROVED,
            ConditionStatus::False,
            "Rejected",
            format!("{} was rejected{by}", step.id),
        );
        // Recorded first, then the decision is spent.
        self.save().await?;
        self.clear_approval().await?;
        self.event(
            EventType::Normal,
            "Rejected",
            format!("{} rejected", step.id),
        )
        .await;
        self.plan_next(policy).await
    }

    /// Takes the recorded Pending action.
    pub(super) async fn execute_pending(&mut self, policy: &RemediationPolicy) -> Result<Action> {
        let Some(record) = self.status().actions.last().cloned() else {
            return Ok(Action::await_change());
        };
        let routed = self.router().route(policy, &record).await?;
        self.execute_routed(policy, record, routed).await
    }

    /// Takes the recorded Pending action `record` the way it was routed.
    async fn execute_routed(
        &mut self,
        policy: &RemediationPolicy,
        record: ActionRecord,
        routed: Routed,
    ) -> Result<Action> {
        // Fencing: a replica that may have been deposed does not act; the
        // recorded action waits for the leader.
        if !self.ctx.leadership.is_held() {
            warn!(incident = %self.incident.name_any(), "not acting: this replica does not hold the Lease");
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
        let policy_key = format!("{}/{}", self.ns(), policy.name_any());
        // A GitOps controller would revert a patch: the change goes to Git,
        // or is not made.
        match routed {
            Routed::Patch => {}
            Routed::Propose {
                repo,
                target,
                change,
                why,
            } => {
                return self
                    .propose(policy_key, &record, &repo, &target, &change, why)
                    .await;
            }
            Routed::NotTaken(why) => return self.superseded(policy, why).await,
            Routed::Escalate(why) => {
                let now = Time(self.now);
                if let Some(a) = self.last_action() {
                    a.state = ActionState::Blocked;
                    a.detail = format!("not taken: {why}");
                    a.finished_at = Some(now);
                }
                self.count_action(record.type_, ActionState::Blocked);
                return self
                    .escalate(fixer::EscalationReason::ManagedByGitOps, why)
                    .await;
            }
        }
        let leader = &self.ctx.leadership;
        let result = actions::execute(&self.ctx.client, &self.incident, &record, leader).await;
        let (state, detail) = match result {
            Ok(done) if done.state == ActionState::Superseded => {
                return self.superseded(policy, done.detail).await;
            }
            Ok(done) => (done.state, done.detail),
            Err(Error::NotLeader(why)) => {
                warn!(incident = %self.incident.name_any(), %why, "not acting; the recorded action waits for the leader");
                return Ok(Action::requeue(Duration::from_secs(5)));
            }
            // A refusal that retrying cannot fix fails the step; anything
            // else (the API server away) is retried with the record kept.
            Err(Error::Refused(why)) => (ActionState::Failed, why),
            Err(Error::Kube(kube::Error::Api(s)))
                if (400..500).contains(&s.code) && s.code != 409 && s.code != 429 =>
            {
                (
                    ActionState::Failed,
                    format!("the API server refused: {}", s.message),
                )
            }
            Err(e) => return Err(e),
        };
        let now = Time(self.now);
        if let Some(a) = self.last_action() {
            a.state = state;
            a.detail = detail.clone();
            a.finished_at = Some(now);
        }
        self.count_action(record.type_, state);
        if state == ActionState::Succeeded || state == ActionState::Failed {
            self.ctx
                .ledger
                .note(policy_key, self.action_key(&record.id), self.now);
        }
        let (kind, reason) = match state {
            ActionState::Succeeded => {
                self.status().phase = Phase::Verifying;
                self.condition(
                    REMEDIATED,
                    ConditionStatus::True,
                    "ActionTaken",
                    detail.clone(),
                );
                (EventType::Normal, "ActionTaken")
            }
            ActionState::Blocked => {
                self.condition(
                    REMEDIATED,
                    ConditionStatus::False,
                    "ActionBlocked",
                    detail.clone(),
                );
                (EventType::Warning, "ActionBlocked")
            }
            _ => {
                self.condition(
                    REMEDIATED,
                    ConditionStatus::False,
                    "ActionFailed",
                    detail.clone(),
                );
                (EventType::Warning, "ActionFailed")
            }
        };
        self.save().await?;
        info!(incident = %self.incident.name_any(), action = record.type_.as_str(), ?state, %detail, "action finished");
        self.event(kind, reason, format!("{}: {detail}", record.type_.as_str()))
            .await;
        Ok(Action::requeue(VERIFY_POLL))
    }

    /// The workload changed since the last action was planned: the action is
    /// not taken, says why, and the next step is planned from the workload as
    /// it is now. The superseded step is not planned again in this episode.
    async fn superseded(&mut self, policy: &RemediationPolicy, why: String) -> Result<Action> {
        let now = Time(self.now);
        let Some(a) = self.last_action() else {
            return Ok(Action::await_change());
        };
        a.state = ActionState::Superseded;
        a.detail = why.clone();
        a.finished_at = Some(now);
        let what = a.type_;
        self.count_action(what, ActionState::Superseded);
        let message = format!("{} not taken: {why}", what.as_str());
        self.condition(
            REMEDIATED,
            ConditionStatus::False,
            "ActionSuperseded",
            message.clone(),
        );
        info!(incident = %self.incident.name_any(), action = what.as_str(), %why, "superseded");
        self.event(EventType::Normal, "ActionSuperseded", message)
            .await;
        // Boxed: planning may take the next step, which may be superseded.
        Box::pin(self.plan_next(policy)).await
    }

    /// Proposes the recorded change as a pull request.
    async fn propose(
        &mut self,
        policy_key: String,
        record: &ActionRecord,
        repo: &crate::crd::GitHubTarget,
        target: &crate::crd::GitOpsTarget,
        change: &fixer::gitops::Change,
        why: Option<String>,
    ) -> Result<Action> {
        let gh = self.ctx.github.for_namespace(&self.ns()).await;
        // The pull request links back to the incident's issue, which the
        // GitHub sync opens beside this: a new incident's issue is waited
        // for a little, never long, so that a GitHub that will not take
        // the issue does not hold the change back.
        let issue = self.status().github.as_ref().and_then(|g| g.issue_number);
        let waited = self.now.duration_since(record.recorded_at.0);
        if gh.is_some() && issue.is_none() && waited < ISSUE_WAIT {
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
        let context = fixer::gitops::PullContext {
            why,
            dashboard_public_url: self.ctx.config.dashboard_public_url.clone(),
        };
        let proposal = match fixer::gitops::propose_change(
            gh.as_ref(),
            repo,
            target,
            &self.incident,
            record,
            change,
            &context,
            &self.ctx.leadership,
        )
        .await
        {
            Ok(p) => p,
            Err(GitHubError::NotLeader(why)) => {
                // Whatever was written so far is found again by the
                // leader's replay.
                warn!(incident = %self.incident.name_any(), %why, "not proposing; the recorded action waits for the leader");
                return Ok(Action::requeue(Duration::from_secs(5)));
            }
            Err(e @ (GitHubError::RateLimited(_) | GitHubError::Unavailable(_))) => {
                // The record stays Pending and is proposed when GitHub is back.
                let msg = format!("{e}; the pull request will be opened when GitHub answers");
                self.condition(REMEDIATED, ConditionStatus::False, e.reason(), msg);
                self.save().await?;
                return Ok(Action::requeue(e.retry_after()));
            }
            Err(e) => fixer::gitops::Proposal {
                state: ActionState::Failed,
                detail: e.to_string(),
                pull_request: None,
                diff: None,
            },
        };
        let now = Time(self.now);
        let state = proposal.state;
        self.count_action(record.type_, state);
        if let Some(a) = self.last_action() {
            a.state = proposal.state;
            a.detail = proposal.detail.clone();
            a.pull_request = proposal.pull_request.clone();
            a.diff = proposal.diff.clone();
            if state != ActionState::AwaitingMerge {
                a.finished_at = Some(now);
            }
        }
        let (reason, kind) = match state {
            ActionState::AwaitingMerge => ("AwaitingMerge", EventType::Normal),
            ActionState::Succeeded => ("ActionTaken", EventType::Normal),
            ActionState::Blocked => ("ActionBlocked", EventType::Warning),
            _ => ("ActionFailed", EventType::Warning),
        };
        if state == ActionState::Succeeded {
            self.status().phase = Phase::Verifying;
            self.ctx
                .ledger
                .note(policy_key, self.action_key(&record.id), self.now);
        }
        self.condition(
            REMEDIATED,
            if state == ActionState::Succeeded {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            },
            reason,
            proposal.detail.clone(),
        );
        self.save().await?;
        self.event(kind, reason, proposal.detail).await;
        Ok(Action::requeue(Duration::from_secs(2)))
    }

    /// Follows a proposed pull request: merged, the change is on its way and
    /// is verified; closed unmerged, the next step of the ladder runs.
    pub(super) async fn follow_pull(
        &mut self,
        policy: &RemediationPolicy,
        record: &ActionRecord,
    ) -> Result<Action> {
        let (Some(gh), Some(pr), Some(repo)) = (
            self.ctx.github.for_namespace(&self.ns()).await,
            record.pull_request.clone(),
            policy.spec.github.as_ref().map(|g| g.repository.clone()),
        ) else {
            return Ok(Action::requeue(Duration::from_secs(60)));
        };
        let pull = match gh.pull(&repo, pr.number).await {
            Ok(p) => p,
            Err(e @ GitHubError::NotAllowed(_)) => {
                // The allow-list changed since the pull request was opened.
                self.condition(
                    REMEDIATED,
                    ConditionStatus::False,
                    e.reason(),
                    e.to_string(),
                );
                self.save().await?;
                return Ok(Action::requeue(e.retry_after()));
            }
            Err(e) => return Ok(Action::requeue(e.retry_after())),
        };
        let now = Time(self.now);
        let outcome = decide::pull_outcome(pull.merged_at.is_some(), &pull.state);
        if outcome == PullOutcome::Merged {
            if let Some(a) = self.last_action() {
                a.state = ActionState::Succeeded;
                a.detail = format!(
                    "pull request #{} was merged; the change reaches the cluster through GitOps",
                    pr.number
                );
                a.finished_at = Some(now);
            }
            self.ctx.ledger.note(
                format!("{}/{}", self.ns(), policy.name_any()),
                self.action_key(&record.id),
                self.now,
            );
            self.status().phase = Phase::Verifying;
            self.condition(
                REMEDIATED,
                ConditionStatus::True,
                "PullRequestMerged",
                format!("{} was merged", pr.url),
            );
            self.save().await?;
            self.event(EventType::Normal, "PullRequestMerged", pr.url.clone())
                .await;
            return Ok(Action::requeue(VERIFY_POLL));
        }
        if outcome == PullOutcome::Closed {
            if let Some(a) = self.last_action() {
                a.state = ActionState::Failed;
                a.detail = format!("pull request #{} was closed without merging", pr.number);
                a.finished_at = Some(now);
            }
            self.event(EventType::Warning, "PullRequestClosed", pr.url.clone())
                .await;
            return self.plan_next(policy).await;
        }
        Ok(Action::requeue(Duration::from_secs(20)))
    }
}
