//! Actions this process took, for the policies' rate limits, the
//! namespaces' shares and the global circuit breaker. The incident store
//! lags our own writes by a moment; this does not.

use std::sync::Mutex;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Actions taken, newest last: when, under which policy
/// (`namespace/policy`), and which action (`namespace/incident/id`), so an
/// action reserved when it is recorded and noted when it finishes counts
/// once.
#[derive(Default)]
pub struct ActionLedger {
    entries: Mutex<Vec<Entry>>,
}

struct Entry {
    at: Timestamp,
    policy_key: String,
    action: String,
}

/// What the circuit breaker allows in its window, and what the incident
/// store already showed when the step was planned (after a restart it knows
/// more than this process's ledger).
pub struct BreakerLimits {
    pub since: Timestamp,
    pub global: usize,
    pub global_seen: usize,
    pub namespace: Option<usize>,
    pub namespace_seen: usize,
}

impl ActionLedger {
    /// Notes an action taken under `policy_key` (`namespace/policy`); an
    /// action already reserved or noted is not counted again. Entries older
    /// than an hour are dropped, so the ledger stays small; beyond that the
    /// incidents' own records count.
    pub fn note(&self, policy_key: String, action: String, at: Timestamp) {
        if let Ok(mut l) = self.entries.lock() {
            Self::push(&mut l, policy_key, action, at);
        }
    }

    /// Takes a place for an action under the circuit breaker and the
    /// namespace's share, atomically: two incidents planning at once cannot
    /// both take the last place (the incident store lags their records).
    /// False: the breaker or the share filled since the step was planned.
    pub fn reserve(
        &self,
        policy_key: String,
        action: String,
        at: Timestamp,
        limits: &BreakerLimits,
    ) -> bool {
        let Ok(mut l) = self.entries.lock() else {
            return false;
        };
        if l.iter().any(|e| e.action == action) {
            return true;
        }
        let recent = l.iter().filter(|e| e.at > limits.since);
        let global = recent.clone().count().max(limits.global_seen);
        let namespace = policy_key.split_once('/').map(|(ns, _)| ns);
        let in_namespace = recent
            .filter(|e| e.policy_key.split_once('/').map(|(n, _)| n) == namespace)
            .count()
            .max(limits.namespace_seen);
        if global >= limits.global || limits.namespace.is_some_and(|n| in_namespace >= n) {
            return false;
        }
        Self::push(&mut l, policy_key, action, at);
        true
    }

    fn push(l: &mut Vec<Entry>, policy_key: String, action: String, at: Timestamp) {
        if l.iter().any(|e| e.action == action) {
            return;
        }
        l.push(Entry {
            at,
            policy_key,
            action,
        });
        let horizon = at
            .checked_sub(SignedDuration::from_hours(1))
            .unwrap_or(Timestamp::MIN);
        l.retain(|e| e.at > horizon);
    }

    /// Actions since `since`, under one policy (`namespace/policy`) or all.
    pub fn count(&self, since: Timestamp, policy_key: Option<&str>) -> usize {
        self.count_where(since, |p| policy_key.is_none_or(|k| k == p))
    }

    /// Actions since `since` under any policy of one namespace.
    pub fn count_in_namespace(&self, since: Timestamp, namespace: &str) -> usize {
        self.count_where(since, |p| {
            p.split_once('/').map(|(ns, _)| ns) == Some(namespace)
        })
    }

    fn count_where(&self, since: Timestamp, keep: impl Fn(&str) -> bool) -> usize {
        self.entries
            .lock()
            .map(|l| {
                l.iter()
                    .filter(|e| e.at > since && keep(&e.policy_key))
                    .count()
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_namespace_counts_only_its_own_actions() {
        let ledger = ActionLedger::default();
        for minute in 0..5 {
            ledger.note(
                "storm/policy".into(),
                format!("storm-{minute}"),
                at("2026-11-26T10:00:00Z") + SignedDuration::from_mins(minute),
            );
        }
        ledger.note(
            "calm/policy".into(),
            "calm-1".into(),
            at("2026-11-26T10:05:00Z"),
        );
        let since = at("2026-11-26T09:59:00Z");
        assert_eq!(ledger.count_in_namespace(since, "storm"), 5);
        assert_eq!(ledger.count_in_namespace(since, "calm"), 1);
        assert_eq!(
            ledger.count_in_namespace(since, "sto"),
            0,
            "not a prefix match"
        );
        assert_eq!(ledger.count(since, None), 6);
        assert_eq!(ledger.count(since, Some("calm/policy")), 1);
    }

    #[test]
    fn old_actions_drop_out_of_the_ledger() {
        let ledger = ActionLedger::default();
        ledger.note("a/p".into(), "a-1".into(), at("2026-11-26T08:00:00Z"));
        ledger.note("a/p".into(), "a-2".into(), at("2026-11-26T10:00:00Z"));
        assert_eq!(ledger.count(Timestamp::UNIX_EPOCH, None), 1);
    }

    #[test]
    fn two_incidents_planning_at_once_cannot_both_take_the_breakers_last_place() {
        let ledger = ActionLedger::default();
        let now = at("2026-11-26T10:00:00Z");
        let limits = BreakerLimits {
            since: at("2026-11-26T09:50:00Z"),
            global: 2,
            global_seen: 0,
            namespace: None,
            namespace_seen: 0,
        };
        ledger.note("a/p".into(), "a/one/e1-1-restartpod".into(), now);
        assert!(ledger.reserve("a/p".into(), "a/two/e1-1-restartpod".into(), now, &limits));
        assert!(
            !ledger.reserve("b/p".into(), "b/three/e1-1-restartpod".into(), now, &limits),
            "the breaker is full"
        );
        // The reserved action, noted when it finishes, still counts once.
        ledger.note("a/p".into(), "a/two/e1-1-restartpod".into(), now);
        assert_eq!(ledger.count(limits.since, None), 2);
        // What the incident store saw counts too (after a restart).
        let fresh = ActionLedger::default();
        let seen = BreakerLimits {
            global_seen: 2,
            ..limits
        };
        assert!(!fresh.reserve("a/p".into(), "a/four/e1-1-restartpod".into(), now, &seen));
    }

    #[test]
    fn a_namespace_past_its_share_cannot_reserve_while_another_can() {
        let ledger = ActionLedger::default();
        let now = at("2026-11-26T10:00:00Z");
        let limits = BreakerLimits {
            since: at("2026-11-26T09:50:00Z"),
            global: 10,
            global_seen: 0,
            namespace: Some(1),
            namespace_seen: 0,
        };
        assert!(ledger.reserve(
            "storm/p".into(),
            "storm/a/e1-1-restartpod".into(),
            now,
            &limits
        ));
        assert!(!ledger.reserve(
            "storm/p".into(),
            "storm/b/e1-1-restartpod".into(),
            now,
            &limits
        ));
        assert!(ledger.reserve(
            "calm/p".into(),
            "calm/c/e1-1-restartpod".into(),
            now,
            &limits
        ));
    }
}
