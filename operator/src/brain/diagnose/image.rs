//! Image pulls that fail: a missing image, a registry that refuses it, or a
//! rollout to an image that cannot be pulled.

use super::{Case, Cite, checked, hypothesis};
use crate::crd::{ActionType, Category, Hypothesis};

pub(super) fn rules(c: &Case) -> Vec<Hypothesis> {
    let image_change = c
        .rollout
        .filter(|r| r.changes.iter().any(|ch| ch.field.ends_with(".image")));
    let mut hypotheses = c.suspect(
        image_change,
        "and the new image cannot be pulled",
        0.85,
        &[Cite::Rollout, Cite::Signal],
    );
    hypotheses.push(checked(
        hypothesis(
            Category::BadImage,
            format!(
                "the image of {} of {} does not exist or the registry refuses it",
                c.container, c.target
            ),
            if image_change.is_some() { 0.5 } else { 0.85 },
            c.cite_with_events(&[Cite::Signal]),
            Some(ActionType::Escalate),
        ),
        "pulling the image from the node fails with the same error".into(),
        "the image pulls from the node".into(),
    ));
    hypotheses
}
