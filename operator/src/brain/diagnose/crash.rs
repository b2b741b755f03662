//! Crash loops: the container exits again and again.

use super::{Case, Cite, checked, hypothesis};
use crate::crd::{ActionType, Category, Hypothesis};

pub(super) fn rules(c: &Case) -> Vec<Hypothesis> {
    let mut hypotheses = c.suspect(
        c.rollout,
        "and the new pods crash",
        0.85,
        &[Cite::Rollout, Cite::Signal, Cite::Termination],
    );
    // The line of its log that explains the exit, where one was read.
    let said = c
        .log_line()
        .map(|l| format!("; its log says: {l:?}"))
        .unwrap_or_default();
    hypotheses.push(checked(
        hypothesis(
            Category::CrashLoop,
            format!(
                "{} of {} exits repeatedly{said}; a restart may clear a bad state",
                c.container, c.target
            ),
            if c.rollout.is_some() { 0.3 } else { 0.6 },
            c.cite_with_events(&[Cite::Signal, Cite::Termination, Cite::Log]),
            Some(ActionType::RestartPod),
        ),
        "the previous instance's log ends with the same error each time".into(),
        "the container stays up after a restart".into(),
    ));
    hypotheses
}
