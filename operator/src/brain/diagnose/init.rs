//! Init containers that fail: the app containers never start. Which init
//! container, how it fails (exit code, image), and the line of its log
//! that explains the exit.

use k8s_openapi::api::core::v1::ContainerStatus;

use super::{Case, Cite, checked, hypothesis};
use crate::crd::{ActionType, Category, Hypothesis};

/// The init container that fails: the one the signal names, or else the
/// first that waits or exited non-zero.
fn failing<'a>(c: &Case<'a>) -> Option<&'a ContainerStatus> {
    let statuses = c
        .facts
        .pod
        .as_ref()?
        .status
        .as_ref()?
        .init_container_statuses
        .as_ref()?;
    statuses.iter().find(|s| s.name == c.container).or_else(|| {
        statuses.iter().find(|s| {
            let waits = s
                .state
                .as_ref()
                .and_then(|st| st.waiting.as_ref())
                .is_some();
            let failed = [&s.state, &s.last_state]
                .into_iter()
                .flatten()
                .filter_map(|st| st.terminated.as_ref())
                .any(|t| t.exit_code != 0);
            failed || waits
        })
    })
}

pub(super) fn rules(c: &Case) -> Vec<Hypothesis> {
    let status = failing(c);
    let name = status
        .map(|s| s.name.clone())
        .unwrap_or_else(|| c.container.clone());
    let owner = c.owner();
    let at = c
        .container_path(&name)
        .map(|p| format!(" ({p})"))
        .unwrap_or_default();
    let waiting = status
        .and_then(|s| s.state.as_ref())
        .and_then(|s| s.waiting.as_ref());
    let terminated = status.and_then(|s| {
        [&s.last_state, &s.state]
            .into_iter()
            .flatten()
            .filter_map(|st| st.terminated.as_ref())
            .find(|t| t.exit_code != 0)
    });
    let pull = waiting
        .and_then(|w| w.reason.as_deref())
        .filter(|r| matches!(*r, "ImagePullBackOff" | "ErrImagePull" | "InvalidImageName"));
    let restarts = status.map(|s| s.restart_count).unwrap_or(0);
    let (how, confirm, refute) = match (pull, terminated) {
        (Some(reason), _) => {
            let image = status.map(|s| s.image.clone()).unwrap_or_default();
            (
                format!(
                    "cannot pull its image `{image}` ({reason}): fix the image reference or the registry's credentials"
                ),
                format!("pulling `{image}` from the node fails"),
                format!("`{image}` pulls from the node"),
            )
        }
        (None, Some(t)) => {
            let said = match (c.log_line(), t.message.as_deref()) {
                (Some(line), _) => format!("; its log says: {line:?}"),
                (None, Some(m)) if !m.is_empty() => format!("; its termination message: {m:?}"),
                _ => String::new(),
            };
            (
                format!(
                    "exits with code {}{}{said} ({restarts} {}): fix what it needs, or the init container itself",
                    t.exit_code,
                    t.reason
                        .as_deref()
                        .filter(|r| *r != "Error")
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default(),
                    if restarts == 1 { "restart" } else { "restarts" },
                ),
                format!("`kubectl logs <pod> -c {name} --previous` shows the same error"),
                format!("`{name}` completes with exit code 0 and the pod still does not start"),
            )
        }
        (None, None) => {
            if c.facts.observation.is_none() && status.is_none() {
                return vec![];
            }
            (
                "does not complete".into(),
                format!("the init container `{name}` never reaches exit code 0"),
                format!("`{name}` completes and the pod still does not start"),
            )
        }
    };
    let statement = format!(
        "init container `{name}`{at} of {owner} {how}; until it completes, the app containers never start"
    );
    let mut hypotheses = Vec::new();
    // A rollout that added or changed this init container is the cause.
    if let Some(r) = c.rollout.filter(|r| {
        r.changes
            .iter()
            .any(|ch| ch.field.starts_with(&format!("initContainers[{name}]")))
    }) {
        hypotheses.push(c.bad_rollout(
            r,
            &format!("and since then {statement}"),
            0.9,
            c.cite_with_events(&[Cite::Rollout, Cite::Signal, Cite::Termination, Cite::Log]),
        ));
    }
    hypotheses.push(checked(
        hypothesis(
            Category::InitFailure,
            statement,
            0.85,
            c.cite_with_events(&[Cite::Signal, Cite::Termination, Cite::Log]),
            Some(ActionType::Escalate),
        ),
        confirm,
        refute,
    ));
    hypotheses
}
