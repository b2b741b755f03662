//! What the guardrails count before a step: actions taken under the policy,
//! in the namespace and by the whole operator, pods being disrupted, and the
//! latest change another incident made to the same workload.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use super::claims::{Change, WorkloadClaims};
use super::ledger::{ActionLedger, BreakerLimits};
use super::{Budget, is_executed};
use crate::config::Config;
use crate::crd::{ActionState, ActionType, Incident};

/// The start of the circuit breaker's window.
pub fn breaker_window_start(config: &Config, now: Timestamp) -> Timestamp {
    now - SignedDuration::try_from(config.breaker_window).unwrap_or(SignedDuration::from_mins(10))
}

/// Actions the whole operator took in the circuit breaker's window, as the
/// incident store records them: the breaker is open while this is at its
/// limit. (`measure` also counts this process's ledger, which is ahead of
/// the store by a moment.)
pub fn breaker_window_actions(
    incidents: &[Arc<Incident>],
    config: &Config,
    now: Timestamp,
) -> usize {
    let window_start = breaker_window_start(config, now);
    incidents
        .iter()
        .flat_map(|inc| inc.status.iter().flat_map(|s| s.actions.iter()))
        .filter(|a| is_executed(a) && a.recorded_at.0 > window_start)
        .count()
}

/// Everything the budget of one incident is measured from.
pub struct Inputs<'a> {
    pub incident: &'a Incident,
    /// Every incident in the store (the incident's own included).
    pub incidents: &'a [Arc<Incident>],
    /// The pods of the incident's workload.
    pub pods: &'a [Arc<Pod>],
    pub ledger: &'a ActionLedger,
    pub claims: &'a WorkloadClaims,
    pub config: &'a Config,
    pub now: Timestamp,
}

/// The budget of one incident. The stored records and this process's ledger
/// are both counted, and the larger count holds: the store lags behind the
/// ledger, and the ledger forgets what a previous leader did.
pub fn measure(i: &Inputs) -> Budget {
    let ns = i.incident.namespace().unwrap_or_default();
    let policy = &i.incident.spec.policy;
    let hour_ago = i.now - SignedDuration::from_hours(1);
    let window_start = breaker_window_start(i.config, i.now);
    let (mut policy_count, mut namespace_count) = (0, 0);
    for inc in i.incidents {
        let same_ns = inc.namespace().as_deref() == Some(ns.as_str());
        let same_policy = same_ns && &inc.spec.policy == policy;
        for a in inc
            .status
            .iter()
            .flat_map(|s| s.actions.iter())
            .filter(|a| is_executed(a))
        {
            policy_count += usize::from(same_policy && a.recorded_at.0 > hour_ago);
            namespace_count += usize::from(same_ns && a.recorded_at.0 > window_start);
        }
    }
    let key = format!("{ns}/{policy}");
    let pods_disrupted = i
        .pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some())
        .count();
    Budget {
        workload_changed: workload_changed(i, &ns),
        policy_actions_last_hour: policy_count.max(i.ledger.count(hour_ago, Some(&key))),
        global_recent_actions: breaker_window_actions(i.incidents, i.config, i.now)
            .max(i.ledger.count(window_start, None)),
        breaker_limit: i.config.breaker_limit,
        namespace_recent_actions: namespace_count
            .max(i.ledger.count_in_namespace(window_start, &ns)),
        namespace_limit: i.config.namespace_limit(),
        pods_disrupted,
    }
}

/// The latest change another incident made to the same workload, from the
/// store and from this process's claims.
fn workload_changed(i: &Inputs, ns: &str) -> Option<Change> {
    let target = &i.incident.spec.target;
    let me = i.incident.name_any();
    i.incidents
        .iter()
        .filter(|o| o.namespace().as_deref() == Some(ns))
        .filter(|o| &o.spec.target == target && o.name_any() != me)
        .flat_map(|o| {
            let name = o.name_any();
            o.status
                .iter()
                .flat_map(|s| s.actions.iter())
                .filter(|a| {
                    a.type_ != ActionType::Escalate
                        && matches!(
                            a.state,
                            ActionState::Pending
                                | ActionState::Succeeded
                                | ActionState::Failed
                                | ActionState::AwaitingMerge
                        )
                })
                .map(move |a| Change {
                    at: a.recorded_at.0,
                    by: name.clone(),
                    action: a.type_,
                })
                .collect::<Vec<_>>()
        })
        .chain(i.claims.latest_by_other(ns, target, &me))
        .max_by_key(|c| c.at)
}

/// The breaker's limits for one incident's automatic step, as its budget saw
/// them: the ledger checks them again as it takes the place.
pub fn breaker_limits(budget: &Budget, config: &Config, now: Timestamp) -> BreakerLimits {
    BreakerLimits {
        since: breaker_window_start(config, now),
        global: budget.breaker_limit,
        global_seen: budget.global_recent_actions,
        namespace: budget.namespace_limit,
        namespace_seen: budget.namespace_recent_actions,
    }
}
