//! Pods no node can take: a person has to change the request, the affinity
//! or the nodes.

use super::{Case, Cite, checked, hypothesis};
use crate::crd::{ActionType, Category, Hypothesis};

pub(super) fn rules(c: &Case) -> Vec<Hypothesis> {
    vec![checked(
        hypothesis(
            Category::Unschedulable,
            format!(
                "no node can take the pods of {} (resources, affinity or taints)",
                c.target
            ),
            0.85,
            c.cite_with_events(&[Cite::Signal]),
            Some(ActionType::Escalate),
        ),
        "the FailedScheduling event names the resource, affinity or taint no node satisfies".into(),
        "a node has room and matching labels and taints".into(),
    )]
}
