//! The incident state machine: diagnose, plan within the guardrails, record,
//! act, verify, resolve or escalate, remember. Each step is a stage module;
//! this file only sequences them and writes the Incident's status.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use tracing::{info, warn};

use super::Context;
use super::approval::{self, ApprovalCheck};
use crate::brain::{self, advisor, postmortem};
use crate::crd::{
    ActionRecord, ActionState, ActionType, ApprovalDecision, ConditionStatus, Incident,
    IncidentStatus, Mode, Outcome, Phase, RemediationPolicy,
};
use crate::fixer::{self, Budget, Plan, actions};
use crate::github::GitHubError;
use crate::{Error, FIELD_MANAGER, Result, conditions, memory};

/// How often a verifying incident looks at its workload.
const VERIFY_POLL: Duration = Duration::from_secs(2);

pub(super) struct Run {
    pub(super) ctx: Arc<Context>,
    pub(super) incident: Incident,
    pub(super) now: Timestamp,
}

impl Run {
    pub(super) fn status(&mut self) -> &mut IncidentStatus {
        self.incident
            .status
            .get_or_insert_with(IncidentStatus::default)
    }

    pub(super) fn condition(
        &mut self,
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
    ) {
        let (generation, now) = (self.incident.metadata.generation, self.now);
        conditions::set(
            &mut self.status().conditions,
            type_,
            status,
            reason,
            message,
            generation,
            now,
        );
    }

    pub(super) fn ns(&self) -> String {
        self.incident.namespace().unwrap_or_default()
    }

    pub(super) async fn event(&self, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        self.ctx
            .publisher
            .publish(&event, &self.incident.object_ref(&()))
            .await;
    }

    /// Writes the status, keeping the resourceVersion check: if the Scout
    /// wrote in between, this fails with a conflict and the reconcile runs
    /// again on the fresh object.
    pub(super) async fn save(&mut self) -> Result<()> {
        let generation = self.incident.metadata.generation;
        let status = self.status();
        status.last_action = status
            .actions
            .last()
            .map(|a| format!("{} {:?}", a.type_.as_str(), a.state));
        status.observed_generation = generation;
        let api: Api<Incident> = Api::namespaced(self.ctx.client.clone(), &self.ns());
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        self.incident = api
            .replace_status(&self.incident.name_any(), &pp, &self.incident)
            .await?;
        Ok(())
    }

    fn last_action(&mut self) -> Option<&mut ActionRecord> {
        self.status().actions.last_mut()
    }

    /// ` by NAME` when the approval says who decided.
    fn decided_by(&self) -> String {
        self.incident
            .spec
            .approval
            .as_ref()
            .and_then(|a| a.by.as_deref())
            .map(|by| format!(" by {by}"))
            .unwrap_or_default()
    }

    /// Removes the approval from the spec (it has been used, or decides
    /// nothing), keeping the status computed in this run.
    async fn clear_approval(&mut self) -> Result<()> {
        let Some(given) = self.incident.spec.approval.clone() else {
            return Ok(());
        };
        if let Some(updated) = approval::clear(&self.ctx.client, &self.incident, &given).await? {
            self.incident.metadata = updated.metadata;
            self.incident.spec = updated.spec;
        }
        Ok(())
    }

    /// An approval that names no waiting action of this episode: said in a
    /// condition and an event, then cleared, and nothing is run.
    async fn refuse_approval(&mut self, why: String) -> Result<Action> {
        self.condition(
            "Approved",
            ConditionStatus::False,
            "ApprovalNotApplicable",
            why.clone(),
        );
        self.save().await?;
        self.clear_approval().await?;
        warn!(incident = %self.incident.name_any(), %why, "approval not applicable");
        self.event(EventType::Warning, "ApprovalNotApplicable", why)
            .await;
        Ok(Action::requeue(Duration::from_millis(100)))
    }

    fn signals_since(
        &self,
        policy: &RemediationPolicy,
        since: Timestamp,
        action: ActionType,
    ) -> Vec<crate::scout::Signal> {
        crate::scout::signals_since(
            &self.ctx.workloads,
            &self.ctx.board,
            &self.incident,
            &policy.spec.triggers,
            since,
            action,
            self.now,
        )
    }

    /// The ledger's key of an action of this incident.
    fn action_key(&self, id: &str) -> String {
        format!("{}/{}/{id}", self.ns(), self.incident.name_any())
    }

    /// Takes the breaker's place for the automatic step `id` just before it
    /// is recorded: the plan's budget was read from a store that lags, and
    /// other incidents plan at the same time.
    fn reserve(&self, budget: &Budget, id: &str) -> bool {
        let limits = fixer::budget::breaker_limits(budget, &self.ctx.config, self.now);
        let policy_key = format!("{}/{}", self.ns(), self.incident.spec.policy);
        self.ctx
            .ledger
            .reserve(policy_key, self.action_key(id), self.now, &limits)
    }

    fn budget(&self) -> Budget {
        let pods = self
            .ctx
            .workloads
            .pods_of(&self.ns(), &self.incident.spec.target);
        fixer::budget::measure(&fixer::budget::Inputs {
            incident: &self.incident,
            incidents: &self.ctx.incidents.state(),
            pods: &pods,
            ledger: &self.ctx.ledger,
            claims: &self.ctx.claims,
            config: &self.ctx.config,
            now: self.now,
        })
    }

    fn count_action(&self, action: ActionType, state: ActionState) {
        let labels = crate::telemetry::ActionLabels {
            r#type: action.as_str().into(),
            result: format!("{state:?}"),
        };
        self.ctx.metrics.actions.get_or_create(&labels).inc();
    }

    async fn diagnose(&mut self) -> Result<()> {
        let ns = self.ns();
        let memory = memory::load(&self.ctx.client, &ns, &self.incident.name_any()).await?;
        let facts = brain::gather(
            &self.ctx.client,
            &self.incident,
            memory.map(|m| m.spec),
            self.ctx.traces.as_deref(),
        )
        .await?;
        if let Some(f) = &facts.traces {
            match &f.unavailable {
                None => self.condition(
                    "TraceEvidence",
                    ConditionStatus::True,
                    "TracesRead",
                    format!(
                        "{} traces of {} in the incident window, {} in the baseline",
                        f.window_traces, f.service, f.baseline_traces
                    ),
                ),
                Some(why) => self.condition(
                    "TraceEvidence",
                    ConditionStatus::False,
                    "NoTraceEvidence",
                    format!("no trace evidence was available: {why}"),
                ),
            }
        }
        let mut d = brain::diagnose(&facts, self.now);
        if let Some((model, config)) = &self.ctx.model {
            let name = self.incident.name_any();
            let signal = self.incident.spec.signal.as_str();
            let kind = self.incident.spec.target.kind.as_str();
            let tokens = &self.ctx.tokens;
            let key = crate::llm::IncidentKey::new(&ns, &name);
            let outcome =
                advisor::consult(model.as_ref(), config, tokens, &key, signal, kind, &d).await;
            let reason = match &outcome {
                Ok(_) => "Answered",
                Err(f) => f.reason(),
            };
            let labels = crate::telemetry::CallLabels {
                system: "llm".into(),
                result: reason.into(),
            };
            self.ctx.metrics.outside_calls.get_or_create(&labels).inc();
            match outcome {
                Ok((merged, spent)) => {
                    let lead = if merged.category == d.category {
                        "agrees with the rules"
                    } else {
                        "leads with its own hypothesis"
                    };
                    self.condition(
                        "ModelConsulted",
                        ConditionStatus::True,
                        "Answered",
                        format!("the model ({spent} tokens) {lead}"),
                    );
                    d = merged;
                }
                Err(failure) => {
                    warn!(incident = %name, %failure, "the model's answer is not used; the rules' diagnosis stands");
                    self.condition(
                        "ModelConsulted",
                        ConditionStatus::False,
                        failure.reason(),
                        format!("{failure}; the rules' diagnosis stands"),
                    );
                }
            }
        }
        let note = format!(
            "{:?} ({:.0}%): {}{}",
            d.category,
            d.confidence * 100.0,
            d.root_cause,
            d.proposed_action
                .map(|a| format!("; proposed action {}", a.as_str()))
                .unwrap_or_default()
        );
        self.condition(
            "Diagnosed",
            ConditionStatus::True,
            &format!("{:?}", d.category),
            d.root_cause.clone(),
        );
        self.status().diagnosis = Some(d);
        self.status().phase = Phase::Diagnosing;
        info!(incident = %self.incident.name_any(), %note, "diagnosed");
        self.event(EventType::Normal, "Diagnosed", note).await;
        Ok(())
    }

    async fn escalate(&mut self, reason: &str, message: String) -> Result<Action> {
        let now = Time(self.now);
        let id = approval::next_action_id(self.status(), ActionType::Escalate);
        self.status().actions.push(ActionRecord {
            id,
            type_: ActionType::Escalate,
            state: ActionState::Succeeded,
            detail: message.clone(),
            target: None,
            target_uid: None,
            container: None,
            from: None,
            to: None,
            recorded_at: now.clone(),
            finished_at: Some(now),
            outcome: None,
            pull_request: None,
            diff: None,
            precondition: None,
        });
        self.status().phase = Phase::Escalated;
        self.status().escalation_reason = Some(message.clone());
        self.condition("Escalated", ConditionStatus::True, reason, message.clone());
        self.condition(
            "Resolved",
            ConditionStatus::False,
            reason,
            "handed to people; see the escalation reason",
        );
        self.finish().await?;
        warn!(incident = %self.incident.name_any(), %message, "escalated");
        self.event(EventType::Warning, "Escalated", message).await;
        Ok(Action::await_change())
    }

    async fn resolve(&mut self) -> Result<Action> {
        if let Some(a) = self.last_action() {
            a.outcome = Some(Outcome::Effective);
        }
        self.status().phase = Phase::Resolved;
        self.status().resolved_at = Some(Time(self.now));
        if let Some(started) = self.status().detected_at.clone() {
            let seconds = self.now.duration_since(started.0).as_secs_f64();
            self.ctx.metrics.time_to_mitigate.observe(seconds.max(0.0));
        }
        let window = self
            .status()
            .actions
            .last()
            .map(|a| a.type_.as_str().to_string())
            .unwrap_or_default();
        self.condition(
            "Resolved",
            ConditionStatus::True,
            "SignalCleared",
            format!("the signal cleared after {window} and stayed clear"),
        );
        self.finish().await?;
        info!(incident = %self.incident.name_any(), "resolved");
        self.event(
            EventType::Normal,
            "Resolved",
            "the signal cleared and stayed clear for the verification window".into(),
        )
        .await;
        Ok(Action::await_change())
    }

    /// Writes the post-mortem and the memory, then the status. Memory goes
    /// first: if the write of the status fails, the next run records the
    /// episode again, which memory ignores.
    async fn finish(&mut self) -> Result<()> {
        let text = postmortem::render(&self.incident, self.now);
        self.status().post_mortem = Some(text);
        memory::remember(&self.ctx.client, &self.incident, self.now).await?;
        self.save().await
    }

    /// Takes the recorded Pending action.
    async fn execute_pending(&mut self, policy: &RemediationPolicy) -> Result<Action> {
        // Fencing: a replica that may have been deposed does not act; the
        // recorded action waits for the leader.
        if !self.ctx.leadership.is_held() {
            warn!(incident = %self.incident.name_any(), "not acting: this replica does not hold the Lease");
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
        let policy_key = format!("{}/{}", self.ns(), policy.name_any());
        let Some(record) = self.status().actions.last().cloned() else {
            return Ok(Action::await_change());
        };
        let gitops = policy
            .spec
            .github
            .as_ref()
            .and_then(|g| g.gitops.as_ref().map(|o| (g, o)));
        if let (ActionType::RaiseMemoryLimit, Some((repo, target))) = (record.type_, gitops) {
            return self.propose(policy_key, &record, repo, target).await;
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
                    "Remediated",
                    ConditionStatus::True,
                    "ActionTaken",
                    detail.clone(),
                );
                (EventType::Normal, "ActionTaken")
            }
            ActionState::Blocked => {
                self.condition(
                    "Remediated",
                    ConditionStatus::False,
                    "ActionBlocked",
                    detail.clone(),
                );
                (EventType::Warning, "ActionBlocked")
            }
            _ => {
                self.condition(
                    "Remediated",
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
            "Remediated",
            ConditionStatus::False,
            "ActionSuperseded",
            message.clone(),
        );
        info!(incident = %self.incident.name_any(), action = what.as_str(), %why, "superseded");
        self.event(EventType::Normal, "ActionSuperseded", message)
            .await;
        // Boxed: planning may take the next step, which may be superseded.
        Box::pin(self.plan(policy)).await
    }

    /// Proposes the recorded memory change as a pull request.
    async fn propose(
        &mut self,
        policy_key: String,
        record: &ActionRecord,
        repo: &crate::crd::GitHubTarget,
        target: &crate::crd::GitOpsTarget,
    ) -> Result<Action> {
        let gh = self.ctx.github.for_namespace(&self.ns()).await;
        let proposal = match fixer::gitops::propose(
            gh.as_ref(),
            repo,
            target,
            &self.incident,
            record,
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
                self.condition("Remediated", ConditionStatus::False, e.reason(), msg);
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
            "Remediated",
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
    async fn follow_pull(
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
                    "Remediated",
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
        if pull.merged_at.is_some() {
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
                "Remediated",
                ConditionStatus::True,
                "PullRequestMerged",
                format!("{} was merged", pr.url),
            );
            self.save().await?;
            self.event(EventType::Normal, "PullRequestMerged", pr.url.clone())
                .await;
            return Ok(Action::requeue(VERIFY_POLL));
        }
        if pull.state == "closed" {
            if let Some(a) = self.last_action() {
                a.state = ActionState::Failed;
                a.detail = format!("pull request #{} was closed without merging", pr.number);
                a.finished_at = Some(now);
            }
            self.event(EventType::Warning, "PullRequestClosed", pr.url.clone())
                .await;
            return self.plan(policy).await;
        }
        Ok(Action::requeue(Duration::from_secs(20)))
    }

    /// Plans the next step and records it; in Automatic mode, takes it.
    async fn plan(&mut self, policy: &RemediationPolicy) -> Result<Action> {
        let ns = self.ns();
        let memory = memory::load(&self.ctx.client, &ns, &self.incident.name_any())
            .await?
            .map(|m| m.spec);
        let budget = self.budget();
        let actions = self.status().actions.clone();
        let category = fixer::planning_category(
            &policy.spec,
            self.status().diagnosis.as_ref(),
            &actions,
            memory.as_ref(),
        );
        let step = match fixer::plan(
            &policy.spec,
            category,
            &actions,
            memory.as_ref(),
            &budget,
            self.now,
        ) {
            Plan::Escalate { reason } => {
                let why = if reason.contains("attempt") {
                    "AttemptsExhausted"
                } else {
                    "LadderExhausted"
                };
                return self.escalate(why, reason).await;
            }
            Plan::Wait {
                reason: "WorkloadChangedByAnotherIncident",
                ..
            } if !self.incident.spec.signal.is_pod_signal()
                && self.ctx.board.healthy(
                    &ns,
                    &self.incident.spec.target.name,
                    self.incident.spec.signal,
                ) =>
            {
                // Another incident's action on this workload cleared this
                // signal too: nothing is left to do.
                return self.resolve().await;
            }
            Plan::Wait {
                reason,
                message,
                retry_after,
            } => {
                let labels = crate::telemetry::ReasonLabels {
                    reason: reason.into(),
                };
                self.ctx
                    .metrics
                    .guardrail_blocks
                    .get_or_create(&labels)
                    .inc();
                let changed = conditions::get(&self.status().conditions, "Remediated")
                    .map(|c| c.reason.as_str())
                    != Some(reason);
                self.condition(
                    "Remediated",
                    ConditionStatus::False,
                    reason,
                    message.clone(),
                );
                if self.status().phase != Phase::Verifying {
                    self.status().phase = if actions.is_empty() {
                        Phase::Diagnosing
                    } else {
                        Phase::Remediating
                    };
                }
                self.save().await?;
                if changed {
                    self.event(EventType::Normal, reason, message).await;
                }
                return Ok(Action::requeue(retry_after.max(Duration::from_millis(500))));
            }
            Plan::Act(step) => step,
        };
        let policy_conditions = policy
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        if conditions::get(policy_conditions, "Ready")
            .is_some_and(|c| c.status == ConditionStatus::False)
        {
            let why = format!(
                "policy {} is not Ready; it must be fixed before it may act",
                policy.name_any()
            );
            self.condition("Remediated", ConditionStatus::False, "PolicyNotReady", why);
            self.save().await?;
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
        if let Some(wait) = self.unless_selected(policy).await? {
            return Ok(wait);
        }

        let prepared = actions::prepare(&self.ctx.client, &self.incident, &step).await?;
        let id = approval::next_action_id(self.status(), step.type_);
        let mode = policy.spec.mode;
        let state = match (&prepared.impossible, mode) {
            (Some(_), _) => ActionState::Failed,
            (None, Mode::DryRun) => ActionState::DryRun,
            (None, Mode::Manual) => ActionState::AwaitingApproval,
            (None, Mode::Automatic) => ActionState::Pending,
        };
        let name = self.incident.name_any();
        let target = self.incident.spec.target.clone();
        if state == ActionState::Pending
            && let Err((at, by, what)) = self.ctx.claims.claim(
                &ns,
                &target,
                &name,
                step.type_,
                self.now,
                budget.workload_changed.as_ref().map(|c| c.0),
            )
        {
            // Another incident acted on this workload while this plan was
            // made; the next plan sees its change and waits for it.
            info!(incident = %name, other = %by, action = what.as_str(), %at, "workload changed while planning; planning again");
            return Ok(Action::requeue(Duration::from_millis(200)));
        }
        if state == ActionState::Pending && !self.reserve(&budget, &id) {
            // The breaker or the namespace's share filled while this plan
            // was made; the next plan sees it and waits.
            self.ctx.claims.release(&ns, &target, &name);
            info!(incident = %name, "the circuit breaker filled while planning; planning again");
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
                    "Remediated",
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
                    "Remediated",
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
                let how = approval::how_to_decide(&detail, &name, &ns, &id);
                self.condition(
                    "Remediated",
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
                self.status().phase = Phase::Remediating;
                if let Err(e) = self.save().await {
                    self.ctx.claims.release(&ns, &target, &name);
                    return Err(e);
                }
                if self.ctx.config.crash_after_record {
                    warn!(incident = %name, action = %id, "test hook: aborting after recording the action");
                    std::process::abort();
                }
                self.execute_pending(policy).await
            }
        }
    }

    /// Takes an approved step, unless another incident changed the workload
    /// since: then the step waits, approved, until that change has had its
    /// cooldown and verification window, as an automatic step would.
    async fn approved(
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
            let changed = conditions::get(&self.status().conditions, "Remediated")
                .map(|c| c.reason.as_str())
                != Some(reason);
            let message = format!("{} is approved; {message}", step.id);
            self.condition(
                "Remediated",
                ConditionStatus::False,
                reason,
                message.clone(),
            );
            self.save().await?;
            if changed {
                self.event(EventType::Normal, reason, message).await;
            }
            return Ok(Action::requeue(retry_after.max(Duration::from_millis(500))));
        }
        let (ns, name) = (self.ns(), self.incident.name_any());
        let target = self.incident.spec.target.clone();
        if self
            .ctx
            .claims
            .claim(
                &ns,
                &target,
                &name,
                step.type_,
                self.now,
                budget.workload_changed.as_ref().map(|c| c.0),
            )
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
            "Approved",
            ConditionStatus::True,
            "Approved",
            format!("{} was approved{by}", step.id),
        );
        if let Err(e) = self.save().await {
            self.ctx.claims.release(&ns, &target, &name);
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

    /// Judges the last action: ineffective as soon as a new event of the
    /// signal happens, or if the signal is still present when the window
    /// ends; effective if it stayed clear for the whole window.
    async fn verify(&mut self, policy: &RemediationPolicy) -> Result<Action> {
        let Some(finished) = self
            .status()
            .actions
            .last()
            .and_then(|a| a.finished_at.clone())
        else {
            return Ok(Action::await_change());
        };
        let deadline = crate::fixer::verification_deadline(&policy.spec.guardrails, finished.0);
        let action = self
            .status()
            .actions
            .last()
            .map(|a| a.type_)
            .unwrap_or(ActionType::Escalate);
        let signals = self.signals_since(policy, finished.0, action);
        let new_event = signals.iter().any(|s| !s.ongoing);
        if new_event || (self.now >= deadline && !signals.is_empty()) {
            let what = signals
                .first()
                .map(|s| s.message.clone())
                .unwrap_or_default();
            if let Some(a) = self.last_action() {
                a.outcome = Some(Outcome::Ineffective);
            }
            let kind = self
                .status()
                .actions
                .last()
                .map(|a| a.type_.as_str())
                .unwrap_or_default();
            let message = format!("{kind} did not clear the signal: {what}");
            self.condition(
                "Remediated",
                ConditionStatus::False,
                "ActionIneffective",
                message.clone(),
            );
            self.status().phase = Phase::Remediating;
            self.event(EventType::Warning, "ActionIneffective", message)
                .await;
            return self.plan(policy).await;
        }
        if self.now >= deadline {
            return self.resolve().await;
        }
        if self.status().phase != Phase::Verifying {
            self.status().phase = Phase::Verifying;
            self.save().await?;
        }
        let left = deadline.duration_since(self.now).unsigned_abs();
        Ok(Action::requeue(left.min(VERIFY_POLL)))
    }

    /// A resolved incident whose signal came back: escalate when it came
    /// back within the recurrence window, otherwise open a new episode.
    async fn recur(&mut self, policy: Option<&RemediationPolicy>) -> Result<Action> {
        let status = self.status().clone();
        let (Some(resolved), Some(seen)) = (
            status.resolved_at,
            status.last_signal.map(|s| s.observed_at),
        ) else {
            return Ok(Action::await_change());
        };
        if seen.0 <= resolved.0 {
            return Ok(Action::await_change());
        }
        let after = seen.0.duration_since(resolved.0).as_secs();
        let window = policy
            .map(|p| p.spec.guardrails.recurrence_window_seconds)
            .unwrap_or(0);
        let s = self.status();
        s.detected_at = Some(seen.clone());
        // A new episode: its action ids differ from all of the last one's.
        s.episode = Some(s.episode().saturating_add(1));
        s.actions.clear();
        s.diagnosis = None;
        s.post_mortem = None;
        s.resolved_at = None;
        s.escalation_reason = None;
        s.conditions.retain(|c| c.type_ == "Detected");
        if window > 0 && after <= window {
            let message = format!(
                "the problem returned {after} s after it was resolved (recurrence window {window} s)"
            );
            return self.escalate("Recurred", message).await;
        }
        self.status().phase = Phase::Detected;
        self.condition(
            "Resolved",
            ConditionStatus::False,
            "Recurred",
            format!("the problem returned {after} s after it was resolved"),
        );
        self.save().await?;
        Ok(Action::requeue(Duration::from_millis(100)))
    }
}

/// Moves an incident one or more steps along.
pub async fn reconcile(incident: Arc<Incident>, ctx: Arc<Context>) -> Result<Action> {
    let Some(phase) = incident
        .status
        .as_ref()
        .filter(|s| s.occurrences > 0)
        .map(|s| s.phase)
    else {
        // The Scout has not recorded the first observation yet.
        return Ok(Action::await_change());
    };
    let ns = incident.namespace().unwrap_or_default();
    let policy = ctx
        .policies
        .get(&ObjectRef::new(&incident.spec.policy).within(&ns));
    let mut run = Run {
        ctx: ctx.clone(),
        incident: (*incident).clone(),
        now: ctx.clock.now(),
    };
    if let ApprovalCheck::NotApplicable(why) =
        approval::approval_for(incident.status.as_ref(), incident.spec.approval.as_ref())
    {
        return run.refuse_approval(why).await;
    }
    match phase {
        Phase::Escalated | Phase::Failed => return Ok(Action::await_change()),
        Phase::Resolved => return run.recur(policy.as_deref()).await,
        _ => {}
    }
    let Some(policy) = policy else {
        let why = format!(
            "policy {} does not exist (any more); nothing will be done until it does",
            incident.spec.policy
        );
        if conditions::get(&run.status().conditions, "Remediated").map(|c| c.reason.as_str())
            != Some("PolicyNotFound")
        {
            run.condition("Remediated", ConditionStatus::False, "PolicyNotFound", why);
            run.save().await?;
        }
        return Ok(Action::requeue(Duration::from_secs(60)));
    };
    if run.status().diagnosis.is_none() {
        run.diagnose().await?;
    }
    let last = run.status().actions.last().cloned();
    match last {
        Some(a) if a.state == ActionState::Pending => match run.unless_selected(&policy).await? {
            Some(wait) => Ok(wait),
            None => run.execute_pending(&policy).await,
        },
        Some(a) if a.state == ActionState::AwaitingMerge => run.follow_pull(&policy, &a).await,
        Some(a) if a.state == ActionState::AwaitingApproval => {
            let decision = match approval::approval_for(
                incident.status.as_ref(),
                incident.spec.approval.as_ref(),
            ) {
                ApprovalCheck::Applies(d) => Some(d),
                _ => None,
            };
            match decision {
                Some(ApprovalDecision::Approve) => run.approved(&policy, &a).await,
                Some(ApprovalDecision::Reject) => {
                    let now = Time(run.now);
                    if let Some(r) = run.last_action() {
                        r.state = ActionState::Rejected;
                        r.finished_at = Some(now);
                    }
                    let by = run.decided_by();
                    run.condition(
                        "Approved",
                        ConditionStatus::False,
                        "Rejected",
                        format!("{} was rejected{by}", a.id),
                    );
                    // Recorded first, then the decision is spent.
                    run.save().await?;
                    run.clear_approval().await?;
                    run.event(EventType::Normal, "Rejected", format!("{} rejected", a.id))
                        .await;
                    run.plan(&policy).await
                }
                None => {
                    // Diagnosis may have just been written.
                    if run.incident.status != incident.status {
                        run.save().await?;
                    }
                    Ok(Action::await_change())
                }
            }
        }
        Some(a)
            if matches!(a.state, ActionState::Succeeded | ActionState::DryRun)
                && a.outcome.is_none() =>
        {
            run.verify(&policy).await
        }
        _ => run.plan(&policy).await,
    }
}
