//! Which incident last changed each workload, as this process knows it.
//!
//! The incident store shows another incident's recorded action a moment after
//! it is written. Two incidents of one workload (a conversion drop and a
//! trace error rate of the same bad release, say) that plan within that
//! moment would both act, and a second rollback puts the broken revision
//! back. So an incident claims its workload, atomically, just before it
//! records an automatic action, and the claim fails when another incident
//! changed the workload after the plan was made. Only the leader acts, so
//! one process holds every claim that matters; a new leader starts from the
//! stored records, which are complete by then.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::{ActionType, WorkloadRef};

/// A change one incident made to a workload.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// When it was recorded.
    pub at: Timestamp,
    /// The incident that made it.
    pub by: String,
    /// What it did.
    pub action: ActionType,
}

/// Claims older than this are forgotten; every guardrail window is shorter.
const KEEP: SignedDuration = SignedDuration::from_hours(6);

#[derive(Default)]
pub struct WorkloadClaims(Mutex<HashMap<String, Change>>);

fn key(namespace: &str, workload: &WorkloadRef) -> String {
    format!("{namespace}/{workload}")
}

impl WorkloadClaims {
    /// The latest change to the workload claimed by an incident other than
    /// `me`.
    pub fn latest_by_other(
        &self,
        namespace: &str,
        workload: &WorkloadRef,
        me: &str,
    ) -> Option<Change> {
        let claims = self.0.lock().ok()?;
        claims
            .get(&key(namespace, workload))
            .filter(|c| c.by != me)
            .cloned()
    }

    /// Claims the workload for `me`, unless another incident changed it after
    /// `seen` (the latest change the plan knew about). On refusal, returns
    /// that change: the plan must be made again.
    pub fn claim(
        &self,
        namespace: &str,
        workload: &WorkloadRef,
        me: &str,
        action: ActionType,
        at: Timestamp,
        seen: Option<Timestamp>,
    ) -> Result<(), Change> {
        let Ok(mut claims) = self.0.lock() else {
            // A poisoned lock means a panic elsewhere; acting unguarded is
            // what the store-based check alone would do.
            return Ok(());
        };
        let k = key(namespace, workload);
        if let Some(prev) = claims.get(&k)
            && prev.by != me
            && seen.is_none_or(|s| prev.at > s)
        {
            return Err(prev.clone());
        }
        claims.retain(|_, c| c.at > at - KEEP);
        claims.insert(
            k,
            Change {
                at,
                by: me.to_string(),
                action,
            },
        );
        Ok(())
    }

    /// Drops `me`'s claim when its action was never recorded.
    pub fn release(&self, namespace: &str, workload: &WorkloadRef, me: &str) {
        if let Ok(mut claims) = self.0.lock() {
            let k = key(namespace, workload);
            if claims.get(&k).is_some_and(|c| c.by == me) {
                claims.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::WorkloadKind;

    fn checkout() -> WorkloadRef {
        WorkloadRef {
            kind: WorkloadKind::Deployment,
            name: "checkout".into(),
        }
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("valid time")
    }

    #[test]
    fn second_incident_planning_in_the_same_moment_is_refused() {
        let claims = WorkloadClaims::default();
        let w = checkout();
        // Both planned seeing no earlier change.
        assert!(
            claims
                .claim(
                    "shop",
                    &w,
                    "checkout-conversionrate",
                    ActionType::Rollback,
                    t(0),
                    None
                )
                .is_ok()
        );
        let refused = claims
            .claim(
                "shop",
                &w,
                "checkout-traceerrorrate",
                ActionType::Rollback,
                t(0),
                None,
            )
            .expect_err("the second rollback must not go ahead");
        assert_eq!(refused.by, "checkout-conversionrate");
        // Re-planning sees the change through latest_by_other.
        let seen = claims.latest_by_other("shop", &w, "checkout-traceerrorrate");
        assert_eq!(seen.as_ref().map(|c| c.action), Some(ActionType::Rollback));
    }

    #[test]
    fn a_plan_that_knew_the_last_change_may_claim() {
        let claims = WorkloadClaims::default();
        let w = checkout();
        claims
            .claim("shop", &w, "a", ActionType::RolloutRestart, t(0), None)
            .expect("first claim");
        // The fixer saw a's change, waited out its window, and decided to act.
        assert!(
            claims
                .claim("shop", &w, "b", ActionType::Rollback, t(300), Some(t(0)))
                .is_ok()
        );
        assert_eq!(
            claims.latest_by_other("shop", &w, "a").map(|c| c.by),
            Some("b".to_string())
        );
    }

    #[test]
    fn own_claims_and_other_workloads_do_not_block() {
        let claims = WorkloadClaims::default();
        let w = checkout();
        claims
            .claim("shop", &w, "a", ActionType::RestartPod, t(0), None)
            .expect("first claim");
        assert!(
            claims
                .claim("shop", &w, "a", ActionType::RolloutRestart, t(1), None)
                .is_ok()
        );
        assert!(claims.latest_by_other("shop", &w, "a").is_none());
        let other = WorkloadRef {
            kind: WorkloadKind::Deployment,
            name: "billing".into(),
        };
        assert!(
            claims
                .claim("shop", &other, "b", ActionType::RestartPod, t(1), None)
                .is_ok()
        );
        assert!(
            claims
                .claim("other-ns", &w, "c", ActionType::RestartPod, t(1), None)
                .is_ok()
        );
    }

    #[test]
    fn a_released_claim_does_not_hold_others_back() {
        let claims = WorkloadClaims::default();
        let w = checkout();
        claims
            .claim("shop", &w, "a", ActionType::Rollback, t(0), None)
            .expect("first claim");
        claims.release("shop", &w, "a");
        assert!(claims.latest_by_other("shop", &w, "b").is_none());
        assert!(
            claims
                .claim("shop", &w, "b", ActionType::Rollback, t(1), None)
                .is_ok()
        );
        // Releasing someone else's claim does nothing.
        claims.release("shop", &w, "a");
        assert!(claims.latest_by_other("shop", &w, "a").is_some());
    }
}
