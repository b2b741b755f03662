//! The routing step before a changing action is taken: who manages the
//! field it changes (read from the workload), then `fixer::route` decides
//! between a patch, a pull request, an escalation and not taking it.

use crate::crd::{
    ActionRecord, ActionType, GitHubTarget, GitOpsTarget, RemediationPolicy, WorkloadKind,
    WorkloadRef,
};
use crate::fixer::gitops::Change;
use crate::fixer::route::{self, Route};
use crate::workload::managed::{self, DetectionOptions};

use super::update::IncidentUpdate;

/// What to do with the recorded action.
pub(super) enum Routed {
    /// Take it through the API, as always.
    Patch,
    /// Propose it as a pull request; `why` when a GitOps controller chose it.
    Propose {
        repo: Box<GitHubTarget>,
        target: Box<GitOpsTarget>,
        change: Change,
        why: Option<String>,
    },
    /// Not taken; the incident escalates with reason ManagedByGitOps.
    Escalate(String),
    /// Not taken; the ladder goes on.
    NotTaken(String),
}

/// What routing reads, apart from the incident it came from: so that it
/// can read while the incident's status is written.
pub(super) struct Router {
    client: kube::Client,
    ns: String,
    target: WorkloadRef,
    detection: DetectionOptions,
}

impl IncidentUpdate {
    pub(super) fn router(&self) -> Router {
        Router {
            client: self.ctx.client.clone(),
            ns: self.ns(),
            target: self.incident.spec.target.clone(),
            detection: self.ctx.config.gitops_detection.clone(),
        }
    }
}

impl Router {
    pub(super) async fn route(
        &self,
        policy: &RemediationPolicy,
        record: &ActionRecord,
    ) -> crate::Result<Routed> {
        let repo = policy.spec.github.as_ref();
        let gitops = repo.and_then(|g| g.gitops.as_ref());
        let target = &self.target;
        let ns = self.ns.clone();
        let client = &self.client;
        // A rollback, as Git sees it, puts the previous image back.
        let rollback = match (record.type_, target.kind) {
            (ActionType::Rollback, WorkloadKind::Deployment) => {
                route::rollback_image(client, &ns, target).await?
            }
            _ => None,
        };
        let container = match &rollback {
            Some((c, _, _)) => Some(c.clone()),
            None => record.container.clone(),
        };
        let Some(field) = route::field_of(record.type_, container.as_deref()) else {
            return Ok(Routed::Patch);
        };
        let managed = managed::workload_meta(client, &ns, target)
            .await?
            .and_then(|meta| managed::managed_by(&meta, &field, &self.detection));
        Ok(
            match (
                route::route(record.type_, target, managed.as_ref(), gitops),
                repo,
                gitops,
            ) {
                (Route::Patch, ..) => Routed::Patch,
                (Route::Escalate(why), ..) => Routed::Escalate(why),
                (Route::NotTaken(why), ..) => Routed::NotTaken(why),
                // A pull request is only routed to where the policy names a file.
                (Route::PullRequest { .. }, None, _) | (Route::PullRequest { .. }, _, None) => {
                    Routed::Escalate(format!(
                        "{target}: the policy names no GitOps file for {}",
                        record.type_.as_str()
                    ))
                }
                (Route::PullRequest { at, why }, Some(repo), Some(gitops)) => {
                    let (from, to) = match (record.type_, rollback) {
                        (ActionType::Rollback, Some((c, from, to))) if from == to => {
                            return Ok(Routed::Escalate(format!(
                                "{}; its last rollout did not change the image of container {c}, so \
                             no single value in Git puts the previous revision back: revert that \
                             change in Git",
                                why.unwrap_or_else(|| format!("{target} is managed by GitOps"))
                            )));
                        }
                        (ActionType::Rollback, Some((_, from, to))) => (from, to),
                        (ActionType::Rollback, None) => {
                            return Ok(Routed::NotTaken(format!(
                                "{target} has no previous revision whose image to propose"
                            )));
                        }
                        _ => (
                            record.from.clone().unwrap_or_default(),
                            record.to.clone().unwrap_or_default(),
                        ),
                    };
                    Routed::Propose {
                        repo: Box::new(repo.clone()),
                        target: Box::new(gitops.clone()),
                        change: Change {
                            action: record.type_,
                            at,
                            from,
                            to,
                        },
                        why,
                    }
                }
            },
        )
    }
}
