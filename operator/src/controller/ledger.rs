//! Actions this process took, for the policies' rate limits, the
//! namespaces' shares and the global circuit breaker. The incident store
//! lags our own writes by a moment; this does not.

use std::sync::Mutex;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Actions taken, newest last: when, and under which policy
/// (`namespace/policy`).
#[derive(Default)]
pub struct ActionLedger {
    entries: Mutex<Vec<(Timestamp, String)>>,
}

impl ActionLedger {
    /// Notes an action taken under `policy_key` (`namespace/policy`).
    /// Entries older than an hour are dropped, so the ledger stays small;
    /// beyond that the incidents' own records count.
    pub fn note(&self, policy_key: String, at: Timestamp) {
        if let Ok(mut l) = self.entries.lock() {
            l.push((at, policy_key));
            let horizon = at
                .checked_sub(SignedDuration::from_hours(1))
                .unwrap_or(Timestamp::MIN);
            l.retain(|(t, _)| *t > horizon);
        }
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
            .map(|l| l.iter().filter(|(t, p)| *t > since && keep(p)).count())
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
                at("2026-11-26T10:00:00Z") + SignedDuration::from_mins(minute),
            );
        }
        ledger.note("calm/policy".into(), at("2026-11-26T10:05:00Z"));
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
        ledger.note("a/p".into(), at("2026-11-26T08:00:00Z"));
        ledger.note("a/p".into(), at("2026-11-26T10:00:00Z"));
        assert_eq!(ledger.count(Timestamp::UNIX_EPOCH, None), 1);
    }
}
