//! Out of memory: the kernel killed the container at its memory limit.

use super::{Case, Cite, checked, hypothesis};
use crate::crd::{ActionType, Category, Hypothesis};

pub(super) fn rules(c: &Case) -> Vec<Hypothesis> {
    let limit = c
        .resources
        .and_then(|r| r.memory_limit.clone())
        .unwrap_or_else(|| "its limit".into());
    let mut hypotheses = vec![checked(
        hypothesis(
            Category::OutOfMemory,
            format!(
                "{} of {} needs more memory than {limit}: the kernel killed it (OOMKilled)",
                c.container, c.target
            ),
            0.9,
            c.cite_with_events(&[Cite::Signal, Cite::Termination, Cite::Resources]),
            Some(ActionType::RaiseMemoryLimit),
        ),
        format!("the container's memory use reaches {limit} just before each kill"),
        "the last termination reason is not OOMKilled, or usage stays well below the limit".into(),
    )];
    // A rollout may have lowered the limit or raised the need; raising the
    // limit stays the first answer.
    if let Some(r) = c.rollout {
        hypotheses.push(c.bad_rollout(
            r,
            &format!("made {} use or get less memory", c.container),
            0.4,
            c.cite(&[Cite::Rollout]),
        ));
    }
    hypotheses
}
