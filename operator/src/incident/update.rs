//! The incident as one reconcile changes it, and the writes of its status:
//! conditions, events, the write-ahead record, and the endings (resolved,
//! escalated) with their post-mortem and memory.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use tracing::{info, warn};

use super::Context;
use super::approval;
use super::decide::{self, Recurrence, Verdict};
use crate::brain::postmortem;
use crate::conditions::{APPROVED, DETECTED, ESCALATED, REMEDIATED, RESOLVED};
use crate::crd::{
    ActionRecord, ActionState, ActionType, ConditionStatus, Incident, IncidentStatus, Outcome,
    Phase, RemediationPolicy,
};
use crate::fixer::EscalationReason;
use crate::{FIELD_MANAGER, Result, conditions, memory};

/// One incident as this reconcile changes it: the copy read at the start,
/// changed step by step, and written with `save`.
pub(super) struct IncidentUpdate {
    pub(super) ctx: Arc<Context>,
    pub(super) incident: Incident,
    pub(super) now: Timestamp,
    /// What was learned before, once read in this reconcile.
    pub(super) recalled: Option<super::load::Recall>,
}

impl IncidentUpdate {
    pub(super) fn new(ctx: Arc<Context>, incident: Incident) -> Self {
        let now = ctx.clock.now();
        Self {
            ctx,
            incident,
            now,
            recalled: None,
        }
    }

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
        self.ctx
            .publisher
            .note(&self.incident.object_ref(&()), type_, reason, note)
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

    pub(super) fn last_action(&mut self) -> Option<&mut ActionRecord> {
        self.status().actions.last_mut()
    }

    /// ` by NAME` when the approval says who decided.
    pub(super) fn decided_by(&self) -> String {
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
    pub(super) async fn clear_approval(&mut self) -> Result<()> {
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
    pub(super) async fn refuse_approval(&mut self, why: String) -> Result<Action> {
        self.condition(
            APPROVED,
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

    /// The ledger's key of an action of this incident.
    pub(super) fn action_key(&self, id: &str) -> String {
        format!("{}/{}/{id}", self.ns(), self.incident.name_any())
    }

    pub(super) fn count_action(&self, action: ActionType, state: ActionState) {
        let labels = crate::telemetry::ActionLabels {
            r#type: action.as_str().into(),
            result: format!("{state:?}"),
        };
        self.ctx.metrics.actions.get_or_create(&labels).inc();
    }

    pub(super) async fn escalate(
        &mut self,
        reason: EscalationReason,
        message: String,
    ) -> Result<Action> {
        let reason = reason.as_str();
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
        self.condition(ESCALATED, ConditionStatus::True, reason, message.clone());
        self.condition(
            RESOLVED,
            ConditionStatus::False,
            reason,
            "handed to people; see the escalation reason",
        );
        self.finish().await?;
        warn!(incident = %self.incident.name_any(), %message, "escalated");
        self.event(EventType::Warning, "Escalated", message).await;
        Ok(Action::await_change())
    }

    pub(super) async fn resolve(&mut self) -> Result<Action> {
        if let Some(a) = self.last_action() {
            a.outcome = Some(Outcome::Effective);
        }
        self.status().phase = Phase::Resolved;
        self.status().resolved_at = Some(Time(self.now));
        if self.status().mitigated_at.is_none() {
            // Resolved without a look at the clear signal (another
            // incident's action cleared it): mitigated now.
            self.status().mitigated_at = Some(Time(self.now));
        }
        if let (Some(started), Some(mitigated)) = (
            self.status().detected_at.clone(),
            self.status().mitigated_at.clone(),
        ) {
            let seconds = mitigated.0.duration_since(started.0).as_secs_f64();
            self.ctx.metrics.time_to_mitigate.observe(seconds.max(0.0));
        }
        let window = self
            .status()
            .actions
            .last()
            .map(|a| a.type_.as_str().to_string())
            .unwrap_or_default();
        self.condition(
            RESOLVED,
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
    pub(super) async fn finish(&mut self) -> Result<()> {
        let text = postmortem::render(&self.incident, self.now);
        self.status().post_mortem = Some(text);
        memory::remember(&self.ctx.client, &self.incident, self.now).await?;
        self.save().await
    }
}

impl IncidentUpdate {
    /// Judges the last step and writes what the verdict means.
    pub(super) async fn verify(
        &mut self,
        policy: &RemediationPolicy,
        last: &ActionRecord,
    ) -> Result<Action> {
        let since = last.finished_at.as_ref().map(|t| t.0);
        let signals = since
            .map(|since| self.signals_since(policy, since, last.type_))
            .unwrap_or_default();
        let verdict = decide::verdict(policy, last, &signals, self.now);
        let mitigated = decide::mitigated_at(
            self.status().mitigated_at.as_ref().map(|t| t.0),
            &verdict,
            since,
            signals.is_empty(),
            self.now,
        );
        let newly_mitigated = mitigated.is_some() && self.status().mitigated_at.is_none();
        self.status().mitigated_at = mitigated.map(Time);
        match verdict {
            Verdict::NotFinished => Ok(Action::await_change()),
            Verdict::Ineffective { message } => {
                if let Some(a) = self.last_action() {
                    a.outcome = Some(Outcome::Ineffective);
                }
                self.condition(
                    REMEDIATED,
                    ConditionStatus::False,
                    "ActionIneffective",
                    message.clone(),
                );
                self.status().phase = Phase::Remediating;
                self.event(EventType::Warning, "ActionIneffective", message)
                    .await;
                self.plan_next(policy).await
            }
            Verdict::Effective => self.resolve().await,
            Verdict::Watching { next_look } => {
                if self.status().phase != Phase::Verifying || newly_mitigated {
                    self.status().phase = Phase::Verifying;
                    self.save().await?;
                }
                Ok(Action::requeue(next_look))
            }
        }
    }

    /// A resolved incident whose signal came back: escalated when it came
    /// back within the recurrence window, otherwise a new episode.
    pub(super) async fn recur(&mut self, recurrence: Recurrence) -> Result<Action> {
        let message = match &recurrence {
            Recurrence::NotReturned => return Ok(Action::await_change()),
            Recurrence::Escalate { message } | Recurrence::NewEpisode { message } => {
                message.clone()
            }
        };
        let s = self.status();
        s.detected_at = s.last_signal.as_ref().map(|l| l.observed_at.clone());
        // A new episode: its action ids differ from all of the last one's.
        s.episode = Some(s.episode().saturating_add(1));
        s.actions.clear();
        s.diagnosis = None;
        s.post_mortem = None;
        s.resolved_at = None;
        s.mitigated_at = None;
        s.escalation_reason = None;
        s.conditions.retain(|c| c.type_ == DETECTED);
        if let Recurrence::Escalate { .. } = recurrence {
            return self.escalate(EscalationReason::Recurred, message).await;
        }
        self.status().phase = Phase::Detected;
        self.condition(RESOLVED, ConditionStatus::False, "Recurred", message);
        self.save().await?;
        Ok(Action::requeue(Duration::from_millis(100)))
    }

    /// The incident's policy is gone: said once in a condition; nothing
    /// else is done until it is back.
    pub(super) async fn policy_not_found(&mut self) -> Result<Action> {
        let why = format!(
            "policy {} does not exist (any more); nothing will be done until it does",
            self.incident.spec.policy
        );
        if decide::remediated_reason_changes(self.status(), "PolicyNotFound") {
            self.condition(REMEDIATED, ConditionStatus::False, "PolicyNotFound", why);
            self.save().await?;
        }
        Ok(Action::requeue(Duration::from_secs(60)))
    }
}
