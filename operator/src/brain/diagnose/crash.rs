//! Crash loops: the container exits again and again.

use super::{Case, Cite, hypothesis};
use crate::crd::{ActionType, Category, Hypothesis};

pub(super) fn rules(c: &Case) -> Vec<Hypothesis> {
    let mut hypotheses = c.suspect(
        c.rollout,
        "and the new pods crash",
        0.85,
        &[Cite::Rollout, Cite::Signal, Cite::Termination],
    );
    hypotheses.push(hypothesis(
        Category::CrashLoop,
        format!(
            "{} of {} exits repeatedly; a restart may clear a bad state",
            c.container, c.target
        ),
        if c.rollout.is_some() { 0.3 } else { 0.6 },
        c.cite_with_events(&[Cite::Signal, Cite::Termination]),
        Some(ActionType::RestartPod),
    ));
    hypotheses
}
