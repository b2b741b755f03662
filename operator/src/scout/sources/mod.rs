//! The sources of measured signals: health checks, Kafka event rates,
//! traces, Prometheus queries and Alertmanager alerts. Each follows the policies' triggers of its kind, posts readings
//! to the board, and tells each policy it measures for whether it can, in
//! an availability condition of its own that [`ConditionWriter`] writes.

pub mod alerts;
pub mod health;
pub mod kafka;
pub mod metrics;
pub mod traces;

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

use crate::crd::ConditionStatus;

/// How long one write of a condition may take, its conflict retries
/// included: a hanging API server must not stop a source's loop.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// A policy, by namespace and name.
pub type PolicyKey = (String, String);

/// What a source's condition should say on a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub status: ConditionStatus,
    pub reason: &'static str,
    pub message: String,
}

/// Which change of what a condition should say is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rewrite {
    /// Only a new status or reason: for messages that carry a figure that
    /// moves every round (a consumer's lag, an error's text), which would
    /// otherwise cost a write each round.
    StatusOrReason,
    /// Any change, the message's included.
    Anything,
}

/// One write of a condition on a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write<'a> {
    pub namespace: &'a str,
    pub policy: &'a str,
    pub type_: &'static str,
    pub status: ConditionStatus,
    pub reason: &'static str,
    pub message: &'a str,
}

/// Writes one source's availability condition on the policies it measures
/// for, and only when what it says changed: it remembers what it wrote
/// per policy, and when a write failed.
pub struct ConditionWriter {
    type_: &'static str,
    rewrite: Rewrite,
    /// How long after a failed write the next is tried.
    retry_after: Duration,
    /// Per policy: the version of the policy written to, and what was
    /// written.
    written: BTreeMap<PolicyKey, (String, Wanted)>,
    retry_at: BTreeMap<PolicyKey, Instant>,
}

impl ConditionWriter {
    /// A writer of the condition `type_` (one of `crate::conditions`).
    pub fn new(type_: &'static str, rewrite: Rewrite, retry_after: Duration) -> Self {
        Self {
            type_,
            rewrite,
            retry_after,
            written: BTreeMap::new(),
            retry_at: BTreeMap::new(),
        }
    }

    /// Forgets the policies the source no longer measures for: if one
    /// comes back, its condition is written afresh.
    pub fn retain(&mut self, mut keep: impl FnMut(&PolicyKey) -> bool) {
        self.written.retain(|k, _| keep(k));
        self.retry_at.retain(|k, _| keep(k));
    }

    /// Whether the condition has been written on the policy since the
    /// source began measuring for it.
    pub fn has_written(&self, key: &PolicyKey) -> bool {
        self.written.contains_key(key)
    }

    /// The write `wanted` needs on the policy at `now`, if any. `version`
    /// names what of the policy a condition is bound to (its uid, or uid
    /// and generation, or nothing): a new one is written afresh.
    pub fn plan<'a>(
        &self,
        key: &'a PolicyKey,
        version: &str,
        wanted: &'a Wanted,
        now: Instant,
    ) -> Option<Write<'a>> {
        if self.retry_at.get(key).is_some_and(|at| *at > now) {
            return None;
        }
        let same = self.written.get(key).is_some_and(|(v, w)| {
            v == version
                && match self.rewrite {
                    Rewrite::StatusOrReason => {
                        (w.status, w.reason) == (wanted.status, wanted.reason)
                    }
                    Rewrite::Anything => w == wanted,
                }
        });
        (!same).then_some(Write {
            namespace: &key.0,
            policy: &key.1,
            type_: self.type_,
            status: wanted.status,
            reason: wanted.reason,
            message: &wanted.message,
        })
    }

    /// Notes a write that succeeded.
    fn wrote(&mut self, key: &PolicyKey, version: &str, wanted: &Wanted) {
        self.retry_at.remove(key);
        self.written
            .insert(key.clone(), (version.to_string(), wanted.clone()));
    }

    /// Notes a write that failed at `now`.
    fn failed(&mut self, key: &PolicyKey, now: Instant) {
        self.retry_at.insert(key.clone(), now + self.retry_after);
    }

    /// Writes the condition on the policy when what it says changed (see
    /// [`Self::plan`]); a failure is logged and tried again later.
    pub async fn write(
        &mut self,
        client: &kube::Client,
        key: &PolicyKey,
        version: &str,
        wanted: &Wanted,
        now: Instant,
    ) {
        let Some(w) = self.plan(key, version, wanted, now) else {
            return;
        };
        let write = crate::policy::set_condition(
            client,
            w.namespace,
            w.policy,
            w.type_,
            w.status,
            w.reason,
            w.message,
        );
        let (ns, policy) = key;
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(Ok(())) => self.wrote(key, version, wanted),
            Ok(Err(e)) => {
                warn!(error = %e, namespace = %ns, policy = %policy, "could not write the {} condition; retrying", self.type_);
                self.failed(key, now);
            }
            Err(_) => {
                warn!(namespace = %ns, policy = %policy, "writing the {} condition timed out; retrying", self.type_);
                self.failed(key, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::{HEALTH_CHECKS_AVAILABLE, KAFKA_AVAILABLE, TRACES_AVAILABLE};

    fn key() -> PolicyKey {
        ("shop".into(), "checks".into())
    }

    fn wanted(status: ConditionStatus, reason: &'static str, message: &str) -> Wanted {
        Wanted {
            status,
            reason,
            message: message.into(),
        }
    }

    fn probing(n: usize) -> Wanted {
        wanted(
            ConditionStatus::True,
            "Probing",
            &format!("probing {n} health check(s)"),
        )
    }

    #[test]
    fn the_first_write_carries_the_sources_condition_type_reason_and_message() {
        let w = ConditionWriter::new(HEALTH_CHECKS_AVAILABLE, Rewrite::Anything, Duration::ZERO);
        let (k, want) = (key(), probing(2));
        assert_eq!(
            w.plan(&k, "uid/1", &want, Instant::now()),
            Some(Write {
                namespace: "shop",
                policy: "checks",
                type_: "HealthChecksAvailable",
                status: ConditionStatus::True,
                reason: "Probing",
                message: "probing 2 health check(s)",
            })
        );
    }

    #[test]
    fn what_was_written_is_not_written_again_until_it_changes() {
        let mut w =
            ConditionWriter::new(HEALTH_CHECKS_AVAILABLE, Rewrite::Anything, Duration::ZERO);
        let (k, now) = (key(), Instant::now());
        w.wrote(&k, "uid/1", &probing(2));
        assert_eq!(w.plan(&k, "uid/1", &probing(2), now), None);
        assert!(
            w.plan(&k, "uid/1", &probing(3), now).is_some(),
            "a new message"
        );
        let refused = wanted(ConditionStatus::False, "HealthCheckTargetNotAllowed", "x");
        assert!(w.plan(&k, "uid/1", &refused, now).is_some(), "a new reason");
    }

    #[test]
    fn a_moving_message_alone_is_not_written_where_only_status_and_reason_count() {
        let mut w = ConditionWriter::new(KAFKA_AVAILABLE, Rewrite::StatusOrReason, Duration::ZERO);
        let (k, now) = (key(), Instant::now());
        let lag = |n: u32| {
            wanted(
                ConditionStatus::False,
                "ConsumerLagging",
                &format!("events not yet read: {n} on quotes"),
            )
        };
        w.wrote(&k, "", &lag(10));
        assert_eq!(w.plan(&k, "", &lag(900), now), None);
        let consuming = wanted(ConditionStatus::True, "Consuming", "consuming quotes");
        assert!(w.plan(&k, "", &consuming, now).is_some());
    }

    #[test]
    fn a_policy_created_again_or_edited_gets_its_condition_again() {
        let mut w =
            ConditionWriter::new(HEALTH_CHECKS_AVAILABLE, Rewrite::Anything, Duration::ZERO);
        let (k, now) = (key(), Instant::now());
        w.wrote(&k, "uid/1", &probing(2));
        assert!(w.plan(&k, "uid/2", &probing(2), now).is_some());
        assert!(w.plan(&k, "other-uid/1", &probing(2), now).is_some());
    }

    #[test]
    fn a_forgotten_policy_is_written_again_and_others_are_kept() {
        let mut w =
            ConditionWriter::new(HEALTH_CHECKS_AVAILABLE, Rewrite::Anything, Duration::ZERO);
        let now = Instant::now();
        let other: PolicyKey = ("shop".into(), "other".into());
        w.wrote(&key(), "", &probing(1));
        w.wrote(&other, "", &probing(1));
        w.retain(|k| *k == other);
        assert!(!w.has_written(&key()));
        assert!(w.plan(&key(), "", &probing(1), now).is_some());
        assert_eq!(w.plan(&other, "", &probing(1), now), None);
    }

    #[test]
    fn a_failed_write_is_tried_again_only_after_the_pause() {
        let mut w = ConditionWriter::new(
            HEALTH_CHECKS_AVAILABLE,
            Rewrite::Anything,
            Duration::from_secs(5),
        );
        let (k, now) = (key(), Instant::now());
        w.failed(&k, now);
        assert_eq!(w.plan(&k, "", &probing(1), now), None);
        assert_eq!(
            w.plan(&k, "", &probing(1), now + Duration::from_secs(4)),
            None
        );
        assert!(
            w.plan(&k, "", &probing(1), now + Duration::from_secs(5))
                .is_some()
        );
        w.wrote(&k, "", &probing(1));
        assert!(w.plan(&k, "", &probing(2), now).is_some(), "the pause ends");
    }

    #[test]
    fn without_a_pause_a_failed_write_is_tried_on_the_next_round() {
        let mut w = ConditionWriter::new(TRACES_AVAILABLE, Rewrite::StatusOrReason, Duration::ZERO);
        let (k, now) = (key(), Instant::now());
        w.failed(&k, now);
        assert!(w.plan(&k, "uid", &probing(1), now).is_some());
        assert!(!w.has_written(&k));
    }
}
