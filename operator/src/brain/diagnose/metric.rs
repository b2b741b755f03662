//! A Metric trigger fired: a PromQL query's value for the workload crossed
//! the policy's threshold. The query says nothing of why, so the trigger's
//! own `category` decides, when the policy's author set one; otherwise a
//! rollout shortly before is the first suspect, and the rest is Unknown,
//! for which only the ladder's steps without `onCategories` run.

use super::service::recent_rollout;
use super::{Case, Cite, hypothesis};
use crate::crd::{ActionType, Category, Hypothesis};

pub(super) fn rules(c: &Case) -> Vec<Hypothesis> {
    let what = format!("a metric of {} crossed the policy's threshold", c.target);
    let recent = recent_rollout(c.facts);
    match c.facts.metric_category {
        Some(category) => {
            let mut h = vec![hypothesis(
                category,
                format!("{what} ({category:?}, as the policy's Metric trigger says)"),
                0.8,
                c.cite_with_events(&[Cite::Signal, Cite::Traces]),
                Some(action_for(category)),
            )];
            // A rollout shortly before stays on the list, below the
            // policy's word.
            h.extend(c.suspect(
                recent,
                &format!("shortly before: {what}"),
                0.5,
                &[Cite::Rollout, Cite::Signal],
            ));
            h
        }
        None => {
            let mut h = c.suspect(
                recent,
                &format!("shortly before: {what}"),
                0.7,
                &[Cite::Rollout, Cite::Signal],
            );
            h.push(hypothesis(
                Category::Unknown,
                format!("{what}; the trigger names no category"),
                if recent.is_some() { 0.4 } else { 0.6 },
                c.cite_with_events(&[Cite::Signal, Cite::Traces]),
                Some(ActionType::RolloutRestart),
            ));
            h
        }
    }
}

/// The usual step for a category.
fn action_for(category: Category) -> ActionType {
    match category {
        Category::OutOfMemory => ActionType::RaiseMemoryLimit,
        Category::BadRollout => ActionType::Rollback,
        Category::Dependency
        | Category::ConversionDrop
        | Category::TrafficDrop
        | Category::BadImage
        | Category::Unschedulable
        | Category::ConfigError
        | Category::InitFailure
        | Category::JobFailure
        | Category::StorageUnavailable
        | Category::QuotaExceeded
        | Category::NodeFailure => ActionType::Escalate,
        _ => ActionType::RolloutRestart,
    }
}
