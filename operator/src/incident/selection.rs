//! The policy's selector may have changed since the incident opened: before
//! a step is recorded, approved or replayed, the target must still be
//! selected by the incident's policy, or nothing is done.

use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::warn;

use super::update::IncidentUpdate;
use crate::crd::{ConditionStatus, RemediationPolicy};
use crate::{Result, conditions};

/// How often an incident whose target left its policy looks again.
const RECHECK: Duration = Duration::from_secs(30);

impl IncidentUpdate {
    /// None when the policy still selects the target. Otherwise the
    /// incident says so (`Remediated=False`, `TargetNotSelected`, and an
    /// event) and this is what the reconcile returns.
    pub(super) async fn unless_selected(
        &mut self,
        policy: &RemediationPolicy,
    ) -> Result<Option<Action>> {
        match self.selection_refusal(policy).await? {
            None => Ok(None),
            Some(why) => self.not_selected(why).await.map(Some),
        }
    }

    /// Why the policy no longer selects the target, read from the
    /// workload's template and its pods; None when it still does.
    pub(super) async fn selection_refusal(
        &self,
        policy: &RemediationPolicy,
    ) -> Result<Option<String>> {
        let ns = self.ns();
        let target = &self.incident.spec.target;
        let template = crate::workload::pod_template(&self.ctx.client, &ns, target).await?;
        let pods = self.ctx.workloads.pods_of(&ns, target);
        let labels = template
            .as_ref()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.as_ref())
            .into_iter()
            .chain(pods.iter().filter_map(|p| p.metadata.labels.as_ref()));
        Ok(crate::policy::selects_target(policy, target, labels).err())
    }

    /// Says that the policy no longer selects the target, once per reason,
    /// and looks again later.
    pub(super) async fn not_selected(&mut self, why: String) -> Result<Action> {
        let before = conditions::get(&self.status().conditions, "Remediated")
            .map(|c| (c.reason.clone(), c.message.clone()));
        if before.as_ref().map(|(r, m)| (r.as_str(), m.as_str()))
            != Some(("TargetNotSelected", why.as_str()))
        {
            warn!(incident = %self.incident.name_any(), %why, "not acting: the policy no longer selects the target");
            self.condition(
                "Remediated",
                ConditionStatus::False,
                "TargetNotSelected",
                why.clone(),
            );
            self.save().await?;
            self.event(EventType::Warning, "TargetNotSelected", why)
                .await;
        }
        Ok(Action::requeue(RECHECK))
    }
}
