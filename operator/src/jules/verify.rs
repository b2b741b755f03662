//! `sre-space verify-pr URL`: the verdict the operator comments on a Jules
//! pull request, printed, for a person or a CI step. It reads GitHub with
//! the operator's GitHub settings and, when a kubeconfig reaches a
//! cluster, compares with the Incident that names the pull request (its
//! `status.jules.pullRequest`) or whose fingerprint the pull request's body
//! names. Exit code: 0 green, 1 red, 2 pending or no verdict (an error).

use std::time::Duration;

use kube::Api;
use kube::api::ListParams;
use kube::core::DeserializeGuard;

use super::verdict::{self, Recurrence};
use crate::crd::Incident;
use crate::github::{GitHub, GitHubConfig, GitHubOptions};
use crate::{Error, Result};

/// How long the cluster may take to answer before the verdict is given
/// without it.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(10);

/// What `sre-space verify-pr` reads.
#[derive(Debug, clap::Args)]
pub struct VerifyPrOptions {
    /// The pull request, e.g. `https://github.com/acme/shop/pull/42`.
    pub url: String,
    /// Do not look for the incident in a cluster.
    #[arg(long)]
    pub no_cluster: bool,
    #[command(flatten)]
    pub github: GitHubOptions,
}

/// The incident a pull request belongs to, among `incidents`.
pub fn incident_for<'a>(incidents: &'a [Incident], url: &str, body: &str) -> Option<&'a Incident> {
    let named = |i: &&Incident| {
        i.status
            .as_ref()
            .and_then(|s| s.jules.as_ref())
            .and_then(|j| j.pull_request.as_deref())
            == Some(url)
    };
    incidents.iter().find(named).or_else(|| {
        incidents
            .iter()
            .find(|i| !i.spec.fingerprint.is_empty() && body.contains(&i.spec.fingerprint))
    })
}

/// The cluster's Incidents; those this version cannot read are left out.
async fn cluster_incidents() -> Option<Vec<Incident>> {
    let list = async {
        let client = kube::Client::try_default().await.ok()?;
        let api: Api<DeserializeGuard<Incident>> = Api::all(client);
        let items = api.list(&ListParams::default()).await.ok()?.items;
        Some(items.into_iter().filter_map(|g| g.0.ok()).collect())
    };
    tokio::time::timeout(CLUSTER_TIMEOUT, list)
        .await
        .ok()
        .flatten()
}

/// Prints the verdict on `o.url`; returns the exit code.
pub async fn run(o: &VerifyPrOptions, out: &mut impl std::io::Write) -> Result<i32> {
    let (repo, number) = verdict::parse_pull_url(&o.url).ok_or_else(|| {
        Error::Config(format!(
            "{:?} is not a pull request URL (https://github.com/OWNER/REPO/pull/N)",
            o.url
        ))
    })?;
    let config = GitHubConfig::from_options(&o.github)?.ok_or_else(|| {
        Error::Config("set SRE_SPACE_GITHUB_TOKEN (or the GitHub App settings)".into())
    })?;
    let gh = GitHub::new(&config)?;
    let failed = |e: crate::github::GitHubError| Error::Config(format!("{repo}#{number}: {e}"));
    let pull = gh.pull(&repo, number).await.map_err(failed)?;
    let incidents = if o.no_cluster {
        None
    } else {
        cluster_incidents().await
    };
    let recurrence = incidents.as_deref().and_then(|all| {
        incident_for(all, &o.url, pull.body.as_deref().unwrap_or_default()).map(Recurrence::of)
    });
    let v = verdict::judge(&gh, &repo, number, recurrence)
        .await
        .map_err(failed)?;
    let io = |e: std::io::Error| Error::Config(format!("writing the verdict: {e}"));
    writeln!(out, "verdict: {} ({repo}#{number})\n", v.checks.word()).map_err(io)?;
    write!(out, "{}", v.render()).map_err(io)?;
    Ok(v.checks.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{JulesStatus, Phase};
    use crate::testing;

    #[test]
    fn the_incident_is_the_one_that_recorded_the_pull_request_or_that_the_body_names() {
        let mut a = testing::incident(Phase::Escalated, vec![]);
        a.spec.fingerprint = "shop/Deployment/api/OOMKilled".into();
        let mut b = testing::incident(Phase::Escalated, vec![]);
        if let Some(s) = b.status.as_mut() {
            s.jules = Some(JulesStatus {
                pull_request: Some("https://github.com/acme/shop/pull/9".into()),
                ..JulesStatus::default()
            });
        }
        let all = [a, b];
        let found = incident_for(&all, "https://github.com/acme/shop/pull/9", "");
        assert_eq!(
            found.map(|i| i.spec.fingerprint.as_str()),
            Some("shop/Deployment/web/OOMKilled")
        );
        let found = incident_for(
            &all,
            "https://github.com/acme/shop/pull/10",
            "Fixes shop/Deployment/api/OOMKilled for good",
        );
        assert_eq!(
            found.map(|i| i.spec.fingerprint.as_str()),
            Some("shop/Deployment/api/OOMKilled")
        );
        assert!(incident_for(&all, "https://github.com/acme/shop/pull/11", "unrelated").is_none());
    }
}
