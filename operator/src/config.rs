//! Settings of the operator process (not of a policy): what it watches and
//! the circuit breaker over all policies.

use std::time::Duration;

use kube::{Api, Client};

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
    /// How Argo CD's tracking is recognised on workloads.
    pub gitops_detection: crate::workload::managed::DetectionOptions,
    /// The dashboard's public address, for links to an incident.
    pub dashboard_public_url: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            breaker_limit: DEFAULT_BREAKER_LIMIT,
            breaker_window: Duration::from_secs(DEFAULT_BREAKER_WINDOW_SECONDS),
            crash_after_record: false,
            namespace: None,
            namespace_share_percent: DEFAULT_SHARE_PERCENT,
            gitops_detection: Default::default(),
            dashboard_public_url: None,
        }
    }
}

/// Where the operator watches and acts.
#[derive(Clone, Debug, Default, clap::Args)]
#[command(next_help_heading = "Kubernetes")]
pub struct ScopeOptions {
    /// Watch and act in this namespace only; unset or empty: every namespace.
    #[arg(long, env = "SRE_SPACE_WATCH_NAMESPACE", value_name = "NAMESPACE")]
    pub watch_namespace: Option<String>,
}

/// The global circuit breaker over all policies.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Circuit breaker")]
pub struct BreakerOptions {
    /// At most this many actions in the breaker's window, across all
    /// policies; at least 1 (to stop one policy, set its maxActionsPerHour
    /// to 0).
    #[arg(
        long,
        env = "SRE_SPACE_BREAKER_LIMIT",
        value_name = "ACTIONS",
        default_value_t = DEFAULT_BREAKER_LIMIT,
        value_parser = breaker_limit,
    )]
    pub breaker_limit: usize,
    /// The breaker's window.
    #[arg(
        long,
        env = "SRE_SPACE_BREAKER_WINDOW_SECONDS",
        value_name = "SECONDS",
        default_value_t = DEFAULT_BREAKER_WINDOW_SECONDS,
        value_parser = whole_number,
    )]
    pub breaker_window_seconds: u64,
    /// The share of the breaker's limit one namespace may use (at least one
    /// action), so a storm in one namespace leaves actions for the others;
    /// 1 to 100. Not applied when one namespace is watched.
    #[arg(
        long,
        env = "SRE_SPACE_BREAKER_NAMESPACE_SHARE_PERCENT",
        value_name = "PERCENT",
        default_value_t = DEFAULT_SHARE_PERCENT,
        value_parser = breaker_share,
    )]
    pub breaker_namespace_share_percent: u64,
}

const DEFAULT_BREAKER_LIMIT: usize = 20;
const DEFAULT_BREAKER_WINDOW_SECONDS: u64 = 600;
const DEFAULT_SHARE_PERCENT: u64 = 50;

/// A whole number, for a setting's value parser.
pub fn whole_number(v: &str) -> std::result::Result<u64, String> {
    v.parse().map_err(|_| "not a whole number".to_string())
}

fn breaker_limit(v: &str) -> std::result::Result<usize, String> {
    match whole_number(v)? {
        // A policy's maxActionsPerHour: 0 is the way to stop actions.
        0 => Err("0 would pause every action forever; use at least 1 (to stop one policy, set its maxActionsPerHour to 0)".into()),
        n => usize::try_from(n).map_err(|_| "too large".to_string()),
    }
}

fn breaker_share(v: &str) -> std::result::Result<u64, String> {
    percent(v, "100: one namespace may use the whole breaker")
}

/// A share in percent, 1 to 100; `whole` says what 100 means.
pub fn percent(v: &str, whole: &str) -> std::result::Result<u64, String> {
    match whole_number(v)? {
        n @ 1..=100 => Ok(n),
        n => Err(format!("{n} must be 1 to 100 ({whole})")),
    }
}

impl Config {
    /// The settings as parsed from the command line and the environment;
    /// `crash_after_record` is the test hook
    /// `SRE_SPACE_TEST_CRASH_AFTER_RECORD`.
    pub fn from_options(
        scope: &ScopeOptions,
        breaker: &BreakerOptions,
        crash_after_record: bool,
    ) -> Self {
        Self {
            breaker_limit: breaker.breaker_limit,
            breaker_window: Duration::from_secs(breaker.breaker_window_seconds),
            crash_after_record,
            namespace: scope.watch_namespace.clone().filter(|n| !n.is_empty()),
            namespace_share_percent: breaker.breaker_namespace_share_percent,
            gitops_detection: Default::default(),
            dashboard_public_url: None,
        }
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
