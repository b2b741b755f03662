//! The alert story, end to end on real parts: the demo business runs as real
//! pods on the real node, the real Prometheus scrapes its `/metrics` and
//! evaluates the harness's rule file (`DemoServiceErrorRate`), the real
//! Alertmanager posts the alert to the operator's webhook receiver, and the
//! operator opens an `Alert` incident, rolls the bad release back, and
//! resolves when Alertmanager says the alert resolved.
//!
//! Each run prints the times from the fault to the alert firing in
//! Alertmanager, to the Incident, and to Resolved (figures, not limits).
#![cfg(feature = "real-node")]

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use kube::Api;
use sre_space::crd::{ActionState, ActionType, EvidenceKind, Incident, Phase, SignalKind};
use sre_space_e2e::demo::{Demo, free_ports};
use sre_space_e2e::prometheus::{Alertmanager, Prometheus};
use sre_space_e2e::{
    Operator, create_policy, incident_of, install_crds, wait_incident, wait_until,
};

const LONG: Duration = Duration::from_secs(180);
const ALERT: &str = "DemoServiceErrorRate";

/// Whether Alertmanager holds the demo alert for `deployment` of `ns`.
async fn alert_active(am: &Alertmanager, ns: &str, deployment: &str) -> Result<bool> {
    Ok(am.active_alerts().await?.iter().any(|a| {
        a["labels"]["alertname"] == ALERT
            && a["labels"]["namespace"] == ns
            && a["labels"]["deployment"] == deployment
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_release_fires_the_error_rate_alert_and_the_operator_rolls_it_back() -> Result<()> {
    let d = Demo::deploy("e2e-story-alert").await?;
    let prometheus = Prometheus::from_env()?;
    let alertmanager = Alertmanager::from_env()?;
    let _targets = d.scrape_with_prometheus()?;
    let policy_port = d.url("policy-service").replace("http://", "");
    prometheus
        .wait_for_target_up(&policy_port, Duration::from_secs(60))
        .await?;

    // The operator's receiver on a port of this run, with the harness's
    // token; Alertmanager's webhook points there while the guard lives.
    let port = free_ports()?[0];
    let addr = format!("127.0.0.1:{port}");
    let token_file = alertmanager.token_file().to_string_lossy().into_owned();
    let _webhook = alertmanager
        .point_webhook_at(&format!("http://{addr}/webhooks/alertmanager"), None)
        .await?;

    install_crds(&d.client).await?;
    create_policy(&d.client, &d.ns.name, |v| {
        v["spec"]["triggers"] = serde_json::json!([
            { "type": "Alert", "alert": { "alertNames": [ALERT] } },
        ]);
        v["spec"]["actions"] = serde_json::json!([
            { "type": "Rollback" },
            { "type": "Escalate" },
        ]);
        v["spec"]["guardrails"]["cooldownSeconds"] = 10.into();
        // The rule's rate spans 30 s: the alert resolves some 30 s after
        // the rollback, inside the window.
        v["spec"]["guardrails"]["verificationWindowSeconds"] = 90.into();
        v["spec"]["guardrails"]["escalateAfterAttempts"] = 2.into();
    })
    .await?;
    let _operator = Operator::start(
        &d.ns.name,
        &[
            ("SRE_SPACE_HTTP_ADDR", addr.as_str()),
            ("SRE_SPACE_ALERTMANAGER_TOKEN_FILE", token_file.as_str()),
        ],
    )
    .await?;

    // Customers buy while the release is good: no alert.
    let load_url = d.url("frontend");
    let load = tokio::spawn(async move {
        let _ = sre_space_e2e::demo::drive(&load_url, 600).await;
    });
    tokio::time::sleep(Duration::from_secs(10)).await;
    ensure!(
        !alert_active(&alertmanager, &d.ns.name, "policy-service").await?,
        "no alert while the release is good"
    );

    // The bad release: every purchase fails with a 5xx.
    let fault = Instant::now();
    d.helm(&[
        "upgrade",
        "--reuse-values",
        "--set",
        "apps.paymentMode=broken",
        "--wait",
        "--timeout",
        "90s",
    ])?;
    wait_until(LONG, "the alert to fire in Alertmanager", || async {
        alert_active(&alertmanager, &d.ns.name, "policy-service").await
    })
    .await?;
    let fired = fault.elapsed();
    let name = incident_of("policy-service", SignalKind::Alert);
    let incidents: Api<Incident> = Api::namespaced(d.client.clone(), &d.ns.name);
    wait_until(LONG, "the Alert incident", || async {
        Ok(incidents.get_opt(&name).await?.is_some())
    })
    .await?;
    let opened = fault.elapsed();

    let resolved = wait_incident(&d.client, &d.ns.name, &name, LONG, "Resolved", |i| {
        i.status.as_ref().map(|s| s.phase) == Some(Phase::Resolved)
    })
    .await?;
    let done = fault.elapsed();
    load.abort();
    println!("alert story: a release breaks payments");
    println!(
        "  fault → alert firing in Alertmanager: {:.1} s",
        fired.as_secs_f64()
    );
    println!(
        "  fault → Incident:                     {:.1} s",
        opened.as_secs_f64()
    );
    println!(
        "  alert firing → Incident:              {:.1} s",
        opened.saturating_sub(fired).as_secs_f64()
    );
    println!(
        "  fault → Resolved:                     {:.1} s",
        done.as_secs_f64()
    );

    let status = resolved.status.clone().context("a status")?;
    let changes: Vec<(ActionType, ActionState)> = status
        .actions
        .iter()
        .filter(|a| a.type_ != ActionType::Escalate)
        .map(|a| (a.type_, a.state))
        .collect();
    assert_eq!(
        changes,
        vec![(ActionType::Rollback, ActionState::Succeeded)],
        "one rollback, and it worked: {:?}",
        status.actions
    );
    let diagnosis = status.diagnosis.clone().context("a diagnosis")?;
    let alert = diagnosis
        .evidence
        .iter()
        .find(|e| e.kind == EvidenceKind::Alert)
        .context("the alert is cited as evidence")?;
    assert!(
        alert.summary.contains(ALERT) && alert.summary.contains("19490"),
        "the evidence names the alert and its generator URL: {}",
        alert.summary
    );
    ensure!(
        !alert_active(&alertmanager, &d.ns.name, "policy-service").await?,
        "the alert resolved after the rollback"
    );
    let all = incidents.list(&Default::default()).await?.items;
    let names: Vec<String> = all.iter().filter_map(|i| i.metadata.name.clone()).collect();
    assert_eq!(names, vec![name], "one incident for the alert's repeats");
    d.finish().await
}
