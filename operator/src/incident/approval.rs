//! A person's decision decides one action of one episode, once: action ids
//! carry the episode, an approval applies only to the action waiting now,
//! and the operator clears an approval once it is used or when it names
//! anything else.

use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use crate::crd::{ActionState, ActionType, Approval, ApprovalDecision, Incident, IncidentStatus};
use crate::{FIELD_MANAGER, Result};

/// The id of the `n`th action (from 1) of an episode. Actions are cleared
/// when a new episode starts, so without the episode ids would repeat: an
/// old approval would approve a new action, a rollout restart would write
/// the annotation value it wrote last time (and roll nothing out), and a
/// pull request's branch would be last episode's merged one.
pub fn action_id(episode: i64, n: usize, type_: ActionType) -> String {
    format!("e{episode}-{n}-{}", type_.as_str().to_lowercase())
}

/// The id of the next action of the incident's current episode.
pub fn next_action_id(status: &IncidentStatus, type_: ActionType) -> String {
    action_id(status.episode(), status.actions.len() + 1, type_)
}

/// What the AwaitingApproval condition and event tell people: the
/// command, and the patch it writes for those without it.
pub fn how_to_decide(detail: &str, name: &str, ns: &str, id: &str) -> String {
    format!(
        "{detail}: waiting for approval of {id}. Approve with `sre-space approve {name} -n {ns}` \
         (or `sre-space reject {name} -n {ns}`), or: kubectl patch incident {name} -n {ns} --type merge \
         -p '{{\"spec\":{{\"approval\":{{\"actionId\":\"{id}\",\"decision\":\"Approve\",\"by\":\"YOUR-USERNAME\"}}}}}}' \
         (`kubectl auth whoami` prints YOUR-USERNAME)"
    )
}

/// What a written approval means for the incident as it is now.
#[derive(Debug, PartialEq)]
pub enum ApprovalCheck {
    /// No approval is written.
    Absent,
    /// The approval names the action waiting for approval in this episode.
    Applies(ApprovalDecision),
    /// The approval decides nothing (an id of a past episode, of an action
    /// that is not waiting, or unknown); the message says why and what waits.
    NotApplicable(String),
}

/// Decides whether `approval` applies to the action waiting in `status`.
pub fn approval_for(status: Option<&IncidentStatus>, approval: Option<&Approval>) -> ApprovalCheck {
    let Some(approval) = approval else {
        return ApprovalCheck::Absent;
    };
    let actions = status.map(|s| s.actions.as_slice()).unwrap_or_default();
    let waiting = actions
        .last()
        .filter(|a| a.state == ActionState::AwaitingApproval);
    if waiting.is_some_and(|w| w.id == approval.action_id) {
        return ApprovalCheck::Applies(approval.decision);
    }
    let id = &approval.action_id;
    let why = match actions.iter().find(|a| &a.id == id) {
        Some(a) => format!("{id} is {:?}, not waiting for approval", a.state),
        None => {
            let episode = status.map(IncidentStatus::episode).unwrap_or(1);
            format!("{id} is not an action of the current episode ({episode})")
        }
    };
    let now = match waiting {
        Some(w) => format!(
            "{} ({} of {}) is the action waiting for approval",
            w.id,
            w.type_.as_str(),
            w.target
                .as_ref()
                .map_or("the workload".to_string(), |t| t.to_string())
        ),
        None => "no action is waiting for approval".into(),
    };
    ApprovalCheck::NotApplicable(format!(
        "spec.approval ({:?} of {why}) decides nothing and was cleared; {now}",
        approval.decision
    ))
}

/// Removes `approval` from the incident's spec, only if it is still the
/// one written there: a JSON patch that tests the value first, so a newer
/// decision written in between is never lost. Returns the updated incident,
/// or None when the approval was already changed or removed.
pub async fn clear(
    client: &Client,
    incident: &Incident,
    approval: &Approval,
) -> Result<Option<Incident>> {
    let api: Api<Incident> =
        Api::namespaced(client.clone(), &incident.namespace().unwrap_or_default());
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        { "op": "test", "path": "/spec/approval", "value": approval },
        { "op": "remove", "path": "/spec/approval" },
    ]))?;
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    match api
        .patch(&incident.name_any(), &pp, &Patch::<()>::Json(patch))
        .await
    {
        Ok(updated) => Ok(Some(updated)),
        // The test failed: someone wrote another decision, which the next
        // reconcile judges on its own.
        Err(kube::Error::Api(s)) if s.code == 422 || s.code == 409 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::crd::ActionRecord;

    fn record(id: &str, type_: ActionType, state: ActionState) -> ActionRecord {
        ActionRecord {
            id: id.into(),
            detail: String::new(),
            target: "Pod/ledger-1".parse().ok(),
            ..crate::testing::record(1, type_, state)
        }
    }

    fn approve(id: &str) -> Approval {
        Approval {
            action_id: id.into(),
            decision: ApprovalDecision::Approve,
            by: Some("oncall".into()),
        }
    }

    fn waiting_in(episode: Option<i64>, id: &str) -> IncidentStatus {
        IncidentStatus {
            episode,
            actions: vec![record(
                id,
                ActionType::RestartPod,
                ActionState::AwaitingApproval,
            )],
            ..IncidentStatus::default()
        }
    }

    #[test]
    fn action_ids_name_the_episode_so_a_returning_problem_never_reuses_one() {
        let mut status = IncidentStatus::default();
        assert_eq!(
            status.episode(),
            1,
            "an incident without the field is in episode 1"
        );
        let first = next_action_id(&status, ActionType::Rollback);
        assert_eq!(first, "e1-1-rollback");
        status
            .actions
            .push(record(&first, ActionType::Rollback, ActionState::Succeeded));
        assert_eq!(
            next_action_id(&status, ActionType::RolloutRestart),
            "e1-2-rolloutrestart"
        );
        // The problem returns: actions are cleared, the episode moves on.
        status.actions.clear();
        status.episode = Some(2);
        let again = next_action_id(&status, ActionType::Rollback);
        assert_eq!(again, "e2-1-rollback");
        assert_ne!(again, first);
    }

    #[test]
    fn an_approval_of_the_waiting_action_applies_with_its_decision() {
        let status = waiting_in(Some(2), "e2-1-restartpod");
        assert_eq!(
            approval_for(Some(&status), Some(&approve("e2-1-restartpod"))),
            ApprovalCheck::Applies(ApprovalDecision::Approve)
        );
        let reject = Approval {
            decision: ApprovalDecision::Reject,
            ..approve("e2-1-restartpod")
        };
        assert_eq!(
            approval_for(Some(&status), Some(&reject)),
            ApprovalCheck::Applies(ApprovalDecision::Reject)
        );
        assert_eq!(approval_for(Some(&status), None), ApprovalCheck::Absent);
    }

    #[test]
    fn last_episodes_approval_does_not_approve_this_episodes_action() {
        // Before episodes, both were `1-restartpod`.
        let status = waiting_in(Some(2), "e2-1-restartpod");
        let ApprovalCheck::NotApplicable(why) =
            approval_for(Some(&status), Some(&approve("e1-1-restartpod")))
        else {
            panic!("an old episode's approval must not apply");
        };
        assert!(
            why.contains("e1-1-restartpod is not an action of the current episode (2)"),
            "{why}"
        );
        assert!(
            why.contains("e2-1-restartpod (RestartPod of Pod/ledger-1) is the action waiting"),
            "{why}"
        );
        // An id written before episodes existed, on an incident whose status
        // predates them too.
        let old = waiting_in(None, "e1-1-restartpod");
        assert!(matches!(
            approval_for(Some(&old), Some(&approve("1-restartpod"))),
            ApprovalCheck::NotApplicable(_)
        ));
    }

    #[test]
    fn an_approval_of_an_action_that_is_not_waiting_decides_nothing() {
        let mut status = waiting_in(None, "e1-1-restartpod");
        status.actions[0].state = ActionState::Succeeded;
        let ApprovalCheck::NotApplicable(why) =
            approval_for(Some(&status), Some(&approve("e1-1-restartpod")))
        else {
            panic!("a used approval must not apply again");
        };
        assert!(
            why.contains("e1-1-restartpod is Succeeded, not waiting"),
            "{why}"
        );
        assert!(why.contains("no action is waiting for approval"), "{why}");
        // The waiting action is the last one; an earlier one that once
        // waited is not approvable.
        status.actions.push(record(
            "e1-2-rolloutrestart",
            ActionType::RolloutRestart,
            ActionState::AwaitingApproval,
        ));
        assert!(matches!(
            approval_for(Some(&status), Some(&approve("e1-1-restartpod"))),
            ApprovalCheck::NotApplicable(_)
        ));
        assert!(matches!(
            approval_for(None, Some(&approve("e1-1-restartpod"))),
            ApprovalCheck::NotApplicable(_)
        ));
    }
}
