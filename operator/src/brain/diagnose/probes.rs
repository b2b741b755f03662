//! Pods that run but fail their own readiness probe.

use super::{Case, Cite, hypothesis};
use crate::crd::{ActionType, Category, Hypothesis};

pub(super) fn rules(c: &Case) -> Vec<Hypothesis> {
    let mut hypotheses = c.suspect(
        c.rollout,
        "and the new pods never become ready",
        0.6,
        &[Cite::Rollout, Cite::Signal],
    );
    hypotheses.push(hypothesis(
        Category::ProbeFailure,
        format!("{} runs but fails its readiness probe", c.target),
        0.5,
        c.cite_with_events(&[Cite::Signal]),
        Some(ActionType::RestartPod),
    ));
    hypotheses
}
