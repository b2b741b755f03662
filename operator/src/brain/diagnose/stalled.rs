//! Rollouts that stall (a Deployment's ProgressDeadlineExceeded): the new
//! pods are refused, cannot start, or never become ready. The rollout's
//! own changes are the first suspect; the new pods, where the signal names
//! one, say why.

use super::{Case, Cite, admission, checked, config, first_of, hypothesis, init};
use crate::crd::{ActionType, Category, Hypothesis};

pub(super) fn rules(c: &Case) -> Vec<Hypothesis> {
    // The new pods are refused: the refusal is the cause.
    let refused = if admission::refusal(c).is_some() {
        admission::rules(c)
    } else {
        vec![]
    };
    let init_fails = c
        .facts
        .pod
        .as_ref()
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.init_container_statuses.as_ref())
        .is_some_and(|s| {
            s.iter().any(|s| {
                s.state.as_ref().is_some_and(|st| {
                    st.waiting.is_some() || st.terminated.as_ref().is_some_and(|t| t.exit_code != 0)
                })
            })
        });
    let pod = if init_fails { init::rules(c) } else { vec![] };
    first_of([refused, config::rules(c), pod, stalled(c)])
}

/// The rollout itself, from the workload's Progressing condition.
fn stalled(c: &Case) -> Vec<Hypothesis> {
    let condition = c.facts.workload.as_ref().and_then(|w| {
        w.conditions
            .iter()
            .find(|k| k.type_ == "Progressing" && k.status == "False")
    });
    let why = condition
        .map(|k| {
            format!(
                "{}: {}",
                k.reason.as_deref().unwrap_or("not progressing"),
                k.message.as_deref().unwrap_or("")
            )
        })
        .or_else(|| c.facts.observation.as_ref().map(|o| o.message.clone()));
    let Some(why) = why else {
        return vec![];
    };
    let ready = c
        .facts
        .workload
        .as_ref()
        .and_then(|w| {
            Some(format!(
                ", {} of {} replicas ready",
                w.ready.unwrap_or(0),
                w.desired?
            ))
        })
        .unwrap_or_default();
    let evidence = c.cite_with_events(&[Cite::Rollout, Cite::Workload, Cite::Signal]);
    // No pod is needed to blame the rollout: it is the rollout that stalls.
    match c.facts.rollout.as_ref().filter(|r| !r.changes.is_empty()) {
        Some(r) => vec![c.bad_rollout(
            r,
            &format!(
                "and has not progressed since ({why}{ready}): roll back, or fix the new revision"
            ),
            0.8,
            evidence,
        )],
        None => vec![checked(
            hypothesis(
                Category::BadRollout,
                format!(
                    "the rollout of {} has not progressed within its progress deadline ({why}{ready}); its new pods do not become ready",
                    c.target
                ),
                0.5,
                evidence,
                Some(ActionType::Escalate),
            ),
            "the new ReplicaSet's pods are not Ready".into(),
            "the new ReplicaSet's pods are Ready and the condition stays False".into(),
        )],
    }
}
