//! The operator-side allow-list on the real local cluster: a policy cannot
//! point the operator's GitHub credential at a repository its namespace was
//! not given, nor its health checks at loopback or the cloud metadata
//! address; what is refused is said in conditions, and nothing is sent.
#![cfg(feature = "cluster")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use sre_chaos::Target;
use sre_space::crd::{ConditionStatus, SignalKind};
use sre_space_e2e::fake_github::{self, FakeGitHub};
use sre_space_e2e::scenario::LONG;
use sre_space_e2e::{Scenario, allowlist_file, incident_of, wait_incident, wait_until};

#[tokio::test]
async fn a_policy_naming_a_repository_outside_its_allow_list_is_not_ready_and_github_hears_nothing()
-> Result<()> {
    let values = "policyService:\n  resources:\n    limits:\n      memory: 64Mi\n";
    let (fake, url) = FakeGitHub::start().await;
    // Another team's repository, which the operator's token could reach.
    fake.seed("victim/secrets", &[("deploy/values.yaml", values)]);
    let s = Scenario::builder("e2e-allow-repo")
        .policy(|v| {
        v["spec"]["guardrails"]["cooldownSeconds"] = 5.into();
        v["spec"]["github"] = serde_json::json!({
            "repository": "victim/secrets",
            "gitops": { "path": "deploy/values.yaml", "valuesKey": "policyService.resources.limits.memory" }
        });
    })
        .deploy_each(&["checkout"])
        .start()
        .await?;
    // The harness's allow-list gives this namespace acme/* only.
    let operator = s.operator(&fake_github::operator_env(&url)).await?;

    let ready = s
        .policy_condition(
            "demo-services",
            "Ready",
            ConditionStatus::False,
            "RepositoryNotAllowed",
            LONG,
        )
        .await
        .with_context(|| operator.output())?;
    assert!(
        ready.message.contains("victim/secrets") && ready.message.contains("allowList"),
        "the message names the repository and how to allow it: {}",
        ready.message
    );

    // An incident of the namespace: the reporter tries to open its issue
    // in the policy's repository, and is stopped before any request.
    Target {
        client: s.client.clone(),
        namespace: s.name().to_string(),
        deployment: "checkout".into(),
        dry_run: false,
    }
    .oom()
    .await?;
    let inc = wait_incident(
        &s.client,
        s.name(),
        &incident_of("checkout", SignalKind::OOMKilled),
        LONG,
        "GitHubSynced=False RepositoryNotAllowed",
        |i| {
            i.status.as_ref().is_some_and(|st| {
                st.conditions.iter().any(|c| {
                    c.type_ == "GitHubSynced"
                        && c.status == ConditionStatus::False
                        && c.reason == "RepositoryNotAllowed"
                })
            })
        },
    )
    .await
    .with_context(|| operator.output())?;
    let synced = inc
        .status
        .iter()
        .flat_map(|s| s.conditions.iter())
        .find(|c| c.type_ == "GitHubSynced")
        .context("GitHubSynced")?;
    assert!(
        synced.message.contains("victim/secrets"),
        "{}",
        synced.message
    );
    assert!(
        inc.status
            .iter()
            .flat_map(|s| s.actions.iter())
            .all(|a| a.pull_request.is_none()),
        "no pull request was proposed"
    );
    assert_eq!(
        fake.requests(),
        Vec::<String>::new(),
        "the operator's credential was never used on the repository"
    );
    drop(operator);
    s.cleanup().await
}

/// A TCP listener on loopback that counts the connections it accepts.
async fn counting_listener() -> Result<(std::net::SocketAddr, Arc<AtomicUsize>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((_stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    Ok((addr, accepted))
}

fn by_url(url: &str, workload: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "HealthCheck",
        "workload": workload,
        "healthCheck": {
            "url": url, "periodSeconds": 2, "timeoutSeconds": 1,
            "failureThreshold": 1, "expectedStatus": 200
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_to_loopback_or_the_metadata_address_are_refused_without_a_connection()
-> Result<()> {
    let (addr, accepted) = counting_listener().await?;
    let s = Scenario::builder("e2e-allow-health")
        .deploy_each(&["web", "api", "worker"])
        .start()
        .await?;
    let port = addr.port();
    s.policy(|v| {
        v["metadata"]["name"] = "health".into();
        v["spec"]["mode"] = "DryRun".into();
        v["spec"]["actions"] = serde_json::json!([{ "type": "Escalate" }]);
        v["spec"]["triggers"] = serde_json::json!([
            by_url(&format!("http://127.0.0.1:{port}/healthz"), "web"),
            by_url("http://169.254.169.254/latest/meta-data/", "api"),
            // A listed host name that resolves to loopback: checked again
            // after the lookup, and refused.
            by_url(&format!("http://localhost:{port}/healthz"), "worker"),
        ]);
    })
    .await?;
    // This namespace may reach `localhost` by name, and no address.
    let list = allowlist_file(
        s.name(),
        &format!(
            "namespaces:\n- namespace: {}\n  healthCheckHosts: [localhost]\n",
            s.name()
        ),
    )?;
    let list = list.to_string_lossy().to_string();
    let operator = s
        .operator(&[("SRE_SPACE_ALLOWLIST", list.as_str())])
        .await?;

    let ready = s
        .policy_condition(
            "health",
            "Ready",
            ConditionStatus::False,
            "HealthCheckTargetNotAllowed",
            LONG,
        )
        .await
        .with_context(|| operator.output())?;
    assert!(
        ready.message.contains(&format!("127.0.0.1 (port {port})"))
            && ready.message.contains("169.254.169.254")
            && ready.message.contains("healthCheckHosts"),
        "the message names each refused target and how to allow it: {}",
        ready.message
    );
    let available = s
        .policy_condition(
            "health",
            "HealthChecksAvailable",
            ConditionStatus::False,
            "HealthCheckTargetNotAllowed",
            LONG,
        )
        .await
        .with_context(|| operator.output())?;
    // The condition gathers the refusals as the probes come due.
    wait_until(LONG, "every refusal in the condition", || async {
        let c = s
            .policy_condition(
                "health",
                "HealthChecksAvailable",
                ConditionStatus::False,
                "HealthCheckTargetNotAllowed",
                LONG,
            )
            .await?;
        Ok(c.message.contains("169.254.169.254")
            && c.message.contains(&format!("127.0.0.1:{port}"))
            && c.message.contains(&format!("localhost:{port}")))
    })
    .await
    .with_context(|| available.message.clone())?;
    // Several periods of probes later: not one connection, no incident.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "no probe connected to loopback"
    );
    assert_eq!(s.incident_names().await?, Vec::<String>::new());
    drop(operator);
    s.cleanup().await
}
