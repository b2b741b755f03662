//! The reporter: keeps each incident's GitHub issue in line with the
//! Incident. It runs beside the incident state machine, so GitHub being slow,
//! rate limiting or down never holds up a fix; pending writes are retried
//! until done, and each is done once.

use std::sync::Arc;
use std::time::Duration;

use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use tracing::warn;

use crate::clock::Clock;
use crate::crd::{ConditionStatus, GitHubStatus, Incident, Phase};
use crate::github::{Access, sync};
use crate::{FIELD_MANAGER, Result, conditions};

/// What the reporter reads and writes.
pub struct Context {
    pub client: kube::Client,
    pub policies: kube::runtime::reflector::Store<crate::crd::RemediationPolicy>,
    pub github: Access,
    pub metrics: Arc<crate::telemetry::Metrics>,
    pub clock: Arc<dyn Clock>,
    /// The dashboard's public address, for links in the issue.
    pub dashboard_public_url: Option<String>,
}

/// Syncs one incident's issue.
pub async fn reconcile(incident: Arc<Incident>, ctx: Arc<Context>) -> Result<Action> {
    let ns = incident.namespace().unwrap_or_default();
    let Some(policy) = ctx
        .policies
        .get(&ObjectRef::new(&incident.spec.policy).within(&ns))
    else {
        return Ok(Action::await_change());
    };
    let Some(target) = policy.spec.github.clone() else {
        return Ok(Action::await_change());
    };
    let Some(status) = incident.status.as_ref().filter(|s| s.occurrences > 0) else {
        return Ok(Action::await_change());
    };
    // The issue is opened with its diagnosis, a moment after detection.
    if status.diagnosis.is_none() && status.phase == Phase::Detected {
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let mut updated = (*incident).clone();
    let (github, error, wait) = match &ctx.github.for_namespace(&ns).await {
        None => {
            let dashboard = ctx.dashboard_public_url.as_deref();
            let preview = sync::preview_linked(&incident, &target.labels, dashboard);
            let gh = GitHubStatus {
                repository: target.repository.clone(),
                preview: Some(preview),
                ..GitHubStatus::default()
            };
            (gh, None, None)
        }
        Some(gh) => {
            let dashboard = ctx.dashboard_public_url.as_deref();
            let (st, err) =
                sync::sync_linked(gh, &target.repository, &incident, &target.labels, dashboard)
                    .await;
            let result = err.as_ref().map(|e| e.reason()).unwrap_or("Synced");
            let labels = crate::telemetry::CallLabels {
                system: "github".into(),
                result: result.into(),
            };
            ctx.metrics.outside_calls.get_or_create(&labels).inc();
            let wait = err.as_ref().map(|e| e.retry_after());
            (st, err, wait)
        }
    };
    let s = updated.status.get_or_insert_with(Default::default);
    s.github = Some(github);
    let (generation, now) = (incident.metadata.generation, ctx.clock.now());
    match &error {
        None if ctx.github.configured() => conditions::set(
            &mut s.conditions,
            "GitHubSynced",
            ConditionStatus::True,
            "Synced",
            "the issue is up to date",
            generation,
            now,
        ),
        None => conditions::set(
            &mut s.conditions,
            "GitHubSynced",
            ConditionStatus::False,
            "NoCredentials",
            "no GitHub credentials are configured; the issue is previewed in status.github.preview",
            generation,
            now,
        ),
        Some(e) => {
            warn!(incident = %incident.name_any(), error = %e, "GitHub sync failed; retrying");
            let msg = format!("{e}; retrying in {:?}", e.retry_after());
            conditions::set(
                &mut s.conditions,
                "GitHubSynced",
                ConditionStatus::False,
                e.reason(),
                msg,
                generation,
                now,
            )
        }
    }
    if updated.status != incident.status {
        let api: Api<Incident> = Api::namespaced(ctx.client.clone(), &ns);
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        api.replace_status(&incident.name_any(), &pp, &updated)
            .await?;
    }
    Ok(match wait {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}
