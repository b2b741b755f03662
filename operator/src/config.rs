//! Settings of the operator process (not of a policy): what it watches and
//! the circuit breaker over all policies.

use std::time::Duration;

use kube::{Api, Client};

use crate::{Error, Result};

/// Settings of the operator process (not of a policy).
#[derive(Clone, Debug)]
pub struct Config {
    /// The global circuit breaker: at most this many actions ...
    pub breaker_limit: usize,
    /// ... in this window, across all policies.
    pub breaker_window: Duration,
    /// Test hook: abort the process right after an action is recorded and
    /// before it is taken, to prove a restarted operator takes it once.
    pub crash_after_record: bool,
    /// Watch and act in this namespace only; all namespaces when None.
    pub namespace: Option<String>,
    /// The percentage of the breaker's limit one namespace may use, so a
    /// storm in one namespace leaves actions for the others.
    pub namespace_share_percent: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            breaker_limit: 20,
            breaker_window: Duration::from_secs(600),
            crash_after_record: false,
            namespace: None,
            namespace_share_percent: 50,
        }
    }
}

impl Config {
    /// Reads `SRE_SPACE_WATCH_NAMESPACE`, `SRE_SPACE_BREAKER_LIMIT`,
    /// `SRE_SPACE_BREAKER_WINDOW_SECONDS`,
    /// `SRE_SPACE_BREAKER_NAMESPACE_SHARE_PERCENT` and the test hook
    /// `SRE_SPACE_TEST_CRASH_AFTER_RECORD`.
    pub fn from_env() -> Result<Self> {
        let mut c = Self::default();
        let num = |name: &str| -> Result<Option<u64>> {
            match std::env::var(name) {
                Ok(v) => v
                    .parse()
                    .map(Some)
                    .map_err(|_| Error::Config(format!("{name}={v:?} is not a whole number"))),
                Err(_) => Ok(None),
            }
        };
        if let Some(n) = num("SRE_SPACE_BREAKER_LIMIT")? {
            if n == 0 {
                // A policy's maxActionsPerHour: 0 is the way to stop actions.
                return Err(Error::Config(
                    "SRE_SPACE_BREAKER_LIMIT=0 would pause every action forever; use at least 1 (to stop one policy, set its maxActionsPerHour to 0)".into(),
                ));
            }
            c.breaker_limit = n as usize;
        }
        if let Some(n) = num("SRE_SPACE_BREAKER_WINDOW_SECONDS")? {
            c.breaker_window = Duration::from_secs(n);
        }
        if let Some(n) = num("SRE_SPACE_BREAKER_NAMESPACE_SHARE_PERCENT")? {
            if !(1..=100).contains(&n) {
                return Err(Error::Config(format!(
                    "SRE_SPACE_BREAKER_NAMESPACE_SHARE_PERCENT={n} must be 1 to 100 (100: one namespace may use the whole breaker)"
                )));
            }
            c.namespace_share_percent = n;
        }
        c.crash_after_record =
            std::env::var("SRE_SPACE_TEST_CRASH_AFTER_RECORD").is_ok_and(|v| v == "1");
        c.namespace = std::env::var("SRE_SPACE_WATCH_NAMESPACE")
            .ok()
            .filter(|n| !n.is_empty());
        Ok(c)
    }

    /// The most actions one namespace may take in the breaker's window: its
    /// share of the limit, at least one. None when one namespace is watched:
    /// there is no other to leave room for.
    pub fn namespace_limit(&self) -> Option<usize> {
        if self.namespace.is_some() {
            return None;
        }
        let share = self
            .breaker_limit
            .saturating_mul(self.namespace_share_percent as usize)
            / 100;
        Some(share.max(1))
    }

    /// The API of a namespaced kind, over the watched namespace or all.
    pub fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_may_use_its_share_of_the_breaker_and_at_least_one_action() {
        let all = Config::default();
        assert_eq!(all.namespace_limit(), Some(10), "half of 20 by default");
        let tiny = Config {
            breaker_limit: 1,
            ..Config::default()
        };
        assert_eq!(tiny.namespace_limit(), Some(1));
        let whole = Config {
            namespace_share_percent: 100,
            ..Config::default()
        };
        assert_eq!(whole.namespace_limit(), Some(20));
        let one = Config {
            namespace: Some("shop".into()),
            ..Config::default()
        };
        assert_eq!(
            one.namespace_limit(),
            None,
            "watching one namespace, there is no other to leave room for"
        );
    }
}
