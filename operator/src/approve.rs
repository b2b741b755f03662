//! `sre-space approve|reject INCIDENT [-n NS]`: a person's decision on the
//! action an incident is waiting on, written with the right action id and
//! the caller's username as the API server knows it.

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

use crate::crd::{ActionRecord, ActionState, ApprovalDecision, Incident};
use crate::{Error, Result};

/// The field manager of a person's decision, so `managedFields` tells it
/// apart from the operator's writes.
const FIELD_MANAGER: &str = "sre-space-approve";

/// The action `incident` is waiting on, or why there is none.
pub fn waiting_action(incident: &Incident) -> Result<&ActionRecord> {
    let status = incident.status.as_ref();
    match status.and_then(|s| s.actions.last()) {
        Some(a) if a.state == ActionState::AwaitingApproval => Ok(a),
        last => {
            let phase = status.map(|s| s.phase).unwrap_or_default();
            let last = last
                .map(|a| format!("; its last action is {} ({:?})", a.id, a.state))
                .unwrap_or_default();
            Err(Error::Invalid(format!(
                "incident {} is {phase:?} and has no action waiting for approval{last}",
                incident.metadata.name.as_deref().unwrap_or_default()
            )))
        }
    }
}

/// The action about to be decided, in a few lines.
pub fn describe(incident: &Incident, action: &ActionRecord) -> String {
    let mut out = format!(
        "incident {}/{}: {} of {}\n",
        incident.metadata.namespace.as_deref().unwrap_or_default(),
        incident.metadata.name.as_deref().unwrap_or_default(),
        incident.spec.signal.as_str(),
        incident.spec.target,
    );
    if let Some(d) = incident.status.as_ref().and_then(|s| s.diagnosis.as_ref()) {
        out += &format!("  diagnosis: {}\n", d.root_cause);
    }
    out += &format!("  action:    {} ({})\n", action.type_.as_str(), action.id);
    out += &format!(
        "  target:    {}\n",
        action
            .target
            .as_ref()
            .map_or("the workload".to_string(), |t| t.to_string())
    );
    if let (Some(from), Some(to)) = (&action.from, &action.to) {
        out += &format!("  change:    {from} -> {to}\n");
    }
    out += &format!("  detail:    {}\n", action.detail);
    out
}

/// The merge patch that writes the decision.
pub fn approval_patch(action_id: &str, decision: ApprovalDecision, by: &str) -> serde_json::Value {
    serde_json::json!({ "spec": { "approval": {
        "actionId": action_id,
        "decision": decision,
        "by": by,
    } } })
}

/// The caller's username, from the API server (not from the kubeconfig,
/// which may name a user the server maps differently).
pub async fn whoami(client: &Client) -> Result<String> {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(|e| {
            Error::Invalid(format!(
                "could not ask the API server who you are (a SelfSubjectReview of \
                 authentication.k8s.io/v1, Kubernetes 1.28 or later): {e}"
            ))
        })?;
    review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| Error::Invalid("the API server did not say who you are".into()))
}

/// Prints the waiting action of incident `name` and writes `decision` on
/// it as the caller. Returns what was done, in a sentence.
pub async fn decide(
    client: &Client,
    namespace: &str,
    name: &str,
    decision: ApprovalDecision,
    out: &mut impl std::io::Write,
) -> Result<String> {
    let api: Api<Incident> = Api::namespaced(client.clone(), namespace);
    let incident = api.get_opt(name).await?.ok_or_else(|| {
        Error::Invalid(format!(
            "incident {name} not found in namespace {namespace}"
        ))
    })?;
    let action = waiting_action(&incident)?;
    let _ = write!(out, "{}", describe(&incident, action));
    let by = whoami(client).await?;
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    api.patch(
        name,
        &pp,
        &Patch::Merge(approval_patch(&action.id, decision, &by)),
    )
    .await?;
    let verb = match decision {
        ApprovalDecision::Approve => "approved",
        ApprovalDecision::Reject => "rejected",
    };
    Ok(format!("{} {verb} by {by}", action.id))
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::crd::{
        ActionType, IncidentSpec, IncidentStatus, Phase, SignalKind, WorkloadKind, WorkloadRef,
    };

    fn incident(state: Option<ActionState>) -> Incident {
        let mut i = Incident::new(
            "ledger-crashloopbackoff",
            IncidentSpec {
                fingerprint: "f".into(),
                target: WorkloadRef {
                    kind: WorkloadKind::Deployment,
                    name: "ledger".into(),
                },
                signal: SignalKind::CrashLoopBackOff,
                policy: "p".into(),
                approval: None,
            },
        );
        i.metadata.namespace = Some("shop".into());
        i.status = Some(IncidentStatus {
            phase: Phase::AwaitingApproval,
            episode: Some(2),
            actions: state
                .map(|state| crate::crd::ActionRecord {
                    id: "e2-1-restartpod".into(),
                    detail: "evict pod ledger-1".into(),
                    target: "Pod/ledger-1".parse().ok(),
                    ..crate::testing::record(1, ActionType::RestartPod, state)
                })
                .into_iter()
                .collect(),
            ..IncidentStatus::default()
        });
        i
    }

    #[test]
    fn the_waiting_action_is_printed_and_named_in_the_approval() {
        let i = incident(Some(ActionState::AwaitingApproval));
        let a = waiting_action(&i).expect("an action waits");
        let text = describe(&i, a);
        for part in [
            "RestartPod (e2-1-restartpod)",
            "Pod/ledger-1",
            "evict pod ledger-1",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
        assert_eq!(
            approval_patch(&a.id, ApprovalDecision::Reject, "jane"),
            serde_json::json!({ "spec": { "approval": {
                "actionId": "e2-1-restartpod", "decision": "Reject", "by": "jane"
            } } })
        );
    }

    #[test]
    fn nothing_waiting_is_refused_with_what_the_incident_is_doing() {
        let done = incident(Some(ActionState::Succeeded));
        let err = waiting_action(&done)
            .expect_err("nothing waits")
            .to_string();
        assert!(
            err.contains(
                "has no action waiting for approval; its last action is e2-1-restartpod (Succeeded)"
            ),
            "{err}"
        );
        assert!(waiting_action(&incident(None)).is_err());
    }
}
