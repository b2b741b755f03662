//! `sre-space smoke`: the check `helm test` runs inside the cluster after an
//! install or upgrade. It passes when the installation works as a user
//! expects: the metrics Service answers (`/readyz`, and `/metrics` with the
//! operator's own series), and a replica leads: it holds the Lease and
//! renewed it within the lease's duration. Each check prints one line; the
//! exit status is non-zero when any fails.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::{Api, Client};

/// One line of the verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub what: &'static str,
    pub passed: bool,
    pub detail: String,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mark = if self.passed { "ok  " } else { "FAIL" };
        write!(f, "{mark} {}: {}", self.what, self.detail)
    }
}

/// Whether someone leads: the Lease has a holder that renewed it within its
/// duration (a released or expired Lease means no replica acts).
pub fn judge_lease(lease: Option<&Lease>, now: Timestamp) -> Check {
    let what = "a replica leads";
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return Check {
            what,
            passed: false,
            detail:
                "no Lease yet: no replica has started leading (kubectl logs the operator's pods)"
                    .into(),
        };
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder.is_empty() {
        return Check {
            what,
            passed: false,
            detail: "the Lease is released and nobody took it".into(),
        };
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    match spec.renew_time.as_ref() {
        Some(renewed) if now.duration_since(renewed.0) <= duration => Check {
            what,
            passed: true,
            detail: format!(
                "{holder}, renewed {:.1} s ago",
                now.duration_since(renewed.0).as_secs_f64()
            ),
        },
        Some(renewed) => Check {
            what,
            passed: false,
            detail: format!(
                "{holder} stopped renewing the Lease {:.0} s ago",
                now.duration_since(renewed.0).as_secs_f64()
            ),
        },
        None => Check {
            what,
            passed: false,
            detail: format!("{holder} holds the Lease but never renewed it"),
        },
    }
}

/// Whether an answer of `/metrics` is the operator's: the text format, with
/// the leader gauge every replica exports.
pub fn judge_metrics(status: u16, body: &str) -> Check {
    let what = "the metrics endpoint answers";
    let series = body.lines().filter(|l| l.starts_with("sre_space_")).count();
    let passed = status == 200 && body.lines().any(|l| l.starts_with("sre_space_leader"));
    Check {
        what,
        passed,
        detail: if passed {
            format!("{series} sre_space_ series")
        } else {
            format!("HTTP {status}, without the sre_space_leader gauge")
        },
    }
}

async fn get(http: &reqwest::Client, url: &str) -> Result<(u16, String), String> {
    let answer = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = answer.status().as_u16();
    let body = answer.text().await.map_err(|e| format!("{url}: {e}"))?;
    Ok((status, body))
}

/// Runs every check against the release: `base` is the metrics Service's
/// URL (`http://HOST:PORT`), the Lease is `namespace/lease`.
pub async fn run(client: &Client, namespace: &str, lease: &str, base: &str) -> Vec<Check> {
    let mut checks = Vec::new();
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(h) => h,
        Err(e) => {
            checks.push(Check {
                what: "an HTTP client",
                passed: false,
                detail: e.to_string(),
            });
            return checks;
        }
    };
    let base = base.trim_end_matches('/');
    checks.push(match get(&http, &format!("{base}/readyz")).await {
        Ok((status, _)) => Check {
            what: "the operator is ready",
            passed: status == 200,
            detail: format!("{base}/readyz answered HTTP {status}"),
        },
        Err(e) => Check {
            what: "the operator is ready",
            passed: false,
            detail: e,
        },
    });
    checks.push(match get(&http, &format!("{base}/metrics")).await {
        Ok((status, body)) => judge_metrics(status, &body),
        Err(e) => Check {
            what: "the metrics endpoint answers",
            passed: false,
            detail: e,
        },
    });
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    checks.push(match api.get_opt(lease).await {
        Ok(found) => judge_lease(found.as_ref(), Timestamp::now()),
        Err(e) => Check {
            what: "a replica leads",
            passed: false,
            detail: format!("reading Lease {namespace}/{lease}: {e}"),
        },
    });
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn lease(holder: &str, renewed_ago_s: Option<i64>, now: Timestamp) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(15),
                renew_time: renewed_ago_s.map(|s| MicroTime(now - SignedDuration::from_secs(s))),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn a_lease_renewed_within_its_duration_has_a_leader() {
        let now = Timestamp::now();
        let c = judge_lease(Some(&lease("sre-space-abc", Some(3), now)), now);
        assert!(c.passed, "{c}");
        assert!(c.detail.starts_with("sre-space-abc"), "{c}");
    }

    #[test]
    fn a_missing_released_stale_or_never_renewed_lease_has_no_leader() {
        let now = Timestamp::now();
        for (l, says) in [
            (None, "no Lease yet"),
            (Some(lease("", Some(1), now)), "released"),
            (Some(lease("old", Some(40), now)), "stopped renewing"),
            (Some(lease("odd", None, now)), "never renewed"),
        ] {
            let c = judge_lease(l.as_ref(), now);
            assert!(!c.passed, "{c}");
            assert!(c.detail.contains(says), "{c}");
        }
    }

    #[test]
    fn only_the_operators_own_metrics_pass() {
        let ours = "# HELP sre_space_leader 1 while leading\nsre_space_leader 0\n";
        assert!(judge_metrics(200, ours).passed);
        assert!(!judge_metrics(200, "go_goroutines 8\n").passed);
        assert!(!judge_metrics(503, ours).passed);
    }
}
