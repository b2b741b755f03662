//! The seed's second story, end to end on real parts: the business breaks
//! while every pod looks healthy. The four demo services run as real pods on
//! the real node, customers arrive through the frontend, and the operator
//! watches purchases per quote on the real Kafka broker and reads the real
//! Jaeger's traces.
//!
//! - A release ships a broken payment configuration: the conversion drops,
//!   the Incident names policy-service and its failing operation, the rules
//!   blame the rollout, the operator rolls it back, conversion recovers, the
//!   incident is Resolved.
//! - `sre-chaos conversion` breaks payments with no rollout: the same signal,
//!   but nothing the policy allows would fix it, so it is escalated.
//!
//! Each run prints the time from the fault to the Incident and to the
//! recovered conversion (a figure, not a pass/fail limit);
//! `e2e/bench-conversion.sh` repeats it and prints the table.
#![cfg(feature = "real-node")]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use kube::Api;
use sre_chaos::load::{Plan, Tally};
use sre_space::crd::SignalKind;
use sre_space::crd::{ActionState, ActionType, Category, EvidenceKind, Incident, Phase};
use sre_space_e2e::demo::{Demo, sre_chaos};
use sre_space_e2e::incident_of;
use sre_space_e2e::{Operator, create_policy, install_crds, wait_incident, wait_until};

const LONG: Duration = Duration::from_secs(180);
/// Customers per second, and the share who buy after their quote.
const RATE: f64 = 8.0;
const BUY: f64 = 0.5;
const MIN_RATIO: f64 = 0.15;
const WINDOW: i64 = 10;

/// Each second's counts of the load, with when the second closed.
type Seconds = Arc<Mutex<Vec<(Instant, Tally)>>>;

/// Customers through the frontend until the task is aborted.
fn customers(d: &Demo) -> (tokio::task::JoinHandle<()>, Seconds) {
    let seconds: Seconds = Arc::default();
    let plan = Plan {
        frontend: d.url("frontend"),
        rate: RATE,
        buy_ratio: BUY,
        duration: Duration::from_secs(900),
        users: 50,
    };
    let record = seconds.clone();
    let task = tokio::spawn(async move {
        let _ = sre_chaos::load::run(&plan, |_, t| {
            if let Ok(mut s) = record.lock() {
                s.push((Instant::now(), t.clone()));
            }
        })
        .await;
    });
    (task, seconds)
}

/// The first moment after `since` from which three seconds in a row show
/// purchases per quote at or above the policy's minimum.
fn recovered_at(seconds: &Seconds, since: Instant) -> Option<Instant> {
    let s = seconds.lock().ok()?;
    let after: Vec<&(Instant, Tally)> = s.iter().filter(|(at, _)| *at > since).collect();
    let healthy =
        |t: &Tally| t.quotes_ok > 0 && t.purchases_ok as f64 / t.quotes_ok as f64 >= MIN_RATIO;
    after
        .windows(3)
        .find(|w| w.iter().all(|(_, t)| healthy(t)))
        .map(|w| w[0].0)
}

/// Whether payments fail now: seconds after `since` with quotes and no
/// purchase.
fn broken_since(seconds: &Seconds, since: Instant) -> bool {
    seconds.lock().is_ok_and(|s| {
        s.iter()
            .filter(|(at, _)| *at > since)
            .any(|(_, t)| t.quotes_ok > 2 && t.purchases_ok == 0 && t.purchases_failed > 0)
    })
}

/// What the policy's trace trigger is for.
enum TraceCheck {
    NameOnly,
    Errors,
}

/// A policy on the demo's business: conversion on the demo's own topics,
/// and a trace trigger for its policy-service (by the name it carries in
/// Jaeger, which the Brain reads too).
async fn business_policy(d: &Demo, ladder: serde_json::Value, traces: TraceCheck) -> Result<()> {
    let (quotes, purchases) = (d.quote_topic.clone(), d.purchase_topic.clone());
    let traced = format!("policy-service-{}", d.id);
    install_crds(&d.client).await?;
    let second = match traces {
        // A latency no purchase comes near: the conversion alone detects,
        // and the trigger tells the Brain the service's name in Jaeger.
        TraceCheck::NameOnly => serde_json::json!({
            "type": "TraceLatency",
            "workload": "policy-service",
            "traces": { "service": traced, "maxP95Millis": 30000, "windowSeconds": 30 },
        }),
        // The same fault seen in the traces too: a second incident for the
        // same workload, which must not change it a second time.
        TraceCheck::Errors => serde_json::json!({
            "type": "TraceErrorRate",
            "workload": "policy-service",
            "traces": { "service": traced, "maxErrorRatio": 0.05, "windowSeconds": 30 },
        }),
    };
    create_policy(&d.client, &d.ns.name, move |v| {
        v["spec"]["triggers"] = serde_json::json!([
            {
                "type": "ConversionRate",
                "workload": "policy-service",
                "conversion": {
                    "numeratorTopic": purchases,
                    "denominatorTopic": quotes,
                    "minRatio": MIN_RATIO,
                    "minEvents": 20,
                    "windowSeconds": WINDOW,
                },
            },
            second,
        ]);
        v["spec"]["actions"] = ladder;
        v["spec"]["guardrails"]["cooldownSeconds"] = 10.into();
        v["spec"]["guardrails"]["verificationWindowSeconds"] = 20.into();
        v["spec"]["guardrails"]["escalateAfterAttempts"] = 2.into();
    })
    .await?;
    Ok(())
}

async fn operator(d: &Demo) -> Result<Operator> {
    Operator::start(
        &d.ns.name,
        &[
            ("SRE_SPACE_KAFKA_BOOTSTRAP", d.bootstrap.as_str()),
            ("SRE_SPACE_JAEGER_QUERY", d.query.as_str()),
        ],
    )
    .await
}

/// Waits for the source to say it is consuming, and for a healthy
/// conversion over a full window.
async fn steady(d: &Demo, seconds: &Seconds) -> Result<()> {
    let policies: Api<sre_space::crd::RemediationPolicy> =
        Api::namespaced(d.client.clone(), &d.ns.name);
    wait_until(LONG, "KafkaAvailable=True on the policy", || async {
        let p = policies.get("demo-services").await?;
        Ok(p.status.iter().flat_map(|s| s.conditions.iter()).any(|c| {
            c.type_ == "KafkaAvailable" && c.status == sre_space::crd::ConditionStatus::True
        }))
    })
    .await?;
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(WINDOW as u64 + 5)).await;
    ensure!(
        recovered_at(seconds, start).is_some(),
        "the demo converts normally before the fault"
    );
    Ok(())
}

/// Waits until the conversion incident exists.
async fn opened(incidents: &Api<Incident>) -> Result<()> {
    wait_until(LONG, "the conversion incident", || async {
        Ok(incidents
            .get_opt(&incident_of("policy-service", SignalKind::ConversionRate))
            .await?
            .is_some())
    })
    .await
}

fn diagnosis_text(i: &Incident) -> String {
    let Some(d) = i.status.as_ref().and_then(|s| s.diagnosis.as_ref()) else {
        return String::new();
    };
    let mut text = d.root_cause.clone();
    for h in &d.hypotheses {
        text.push('\n');
        text.push_str(&h.statement);
    }
    for e in &d.evidence {
        text.push('\n');
        text.push_str(&e.summary);
    }
    text
}

fn trace_evidence(i: &Incident) -> Vec<String> {
    i.status
        .iter()
        .flat_map(|s| s.diagnosis.iter())
        .flat_map(|d| d.evidence.iter())
        .filter(|e| e.kind == EvidenceKind::Trace)
        .map(|e| format!("{}: {}", e.source, e.summary))
        .collect()
}

fn print_figures(story: &str, detected: Duration, recovered: Option<Duration>) {
    println!(
        "conversion story ({story}): {RATE} customers/s, {:.0}% buying, window {WINDOW} s, minimum {MIN_RATIO}",
        BUY * 100.0
    );
    println!(
        "  fault → Incident:            {:.1} s",
        detected.as_secs_f64()
    );
    match recovered {
        Some(r) => println!("  fault → conversion recovered: {:.1} s", r.as_secs_f64()),
        None => println!("  fault → conversion recovered: not recovered (escalated)"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_that_breaks_purchases_is_detected_on_kafka_and_rolled_back() -> Result<()> {
    let d = Demo::deploy("e2e-story-rollout").await?;
    business_policy(
        &d,
        serde_json::json!([
            { "type": "Rollback", "onCategories": ["BadRollout"] },
            { "type": "Escalate" },
        ]),
        TraceCheck::NameOnly,
    )
    .await?;
    let _operator = operator(&d).await?;
    let (load, seconds) = customers(&d);
    steady(&d, &seconds).await?;

    // The bad release: every purchase fails, every pod stays Ready.
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
    wait_until(LONG, "purchases to fail", || async {
        Ok(broken_since(&seconds, fault))
    })
    .await?;
    let incidents: Api<Incident> = Api::namespaced(d.client.clone(), &d.ns.name);
    opened(&incidents).await?;
    let detected = fault.elapsed();

    wait_incident(
        &d.client,
        &d.ns.name,
        &incident_of("policy-service", SignalKind::ConversionRate),
        LONG,
        "Resolved",
        |i| i.status.as_ref().map(|s| s.phase) == Some(Phase::Resolved),
    )
    .await?;
    let recovered = recovered_at(&seconds, fault).map(|at| at.duration_since(fault));
    print_figures("bad release, rolled back", detected, recovered);
    ensure!(
        recovered.is_some(),
        "conversion recovered after the rollback"
    );
    // The traces saw the same fault; that incident, if it opened, ends
    // Resolved as well, without acting again.
    if incidents
        .get_opt(&incident_of("policy-service", SignalKind::TraceErrorRate))
        .await?
        .is_some()
    {
        wait_incident(
            &d.client,
            &d.ns.name,
            &incident_of("policy-service", SignalKind::TraceErrorRate),
            LONG,
            "Resolved",
            |i| i.status.as_ref().map(|s| s.phase) == Some(Phase::Resolved),
        )
        .await?;
    }
    load.abort();

    let all = incidents.list(&Default::default()).await?.items;
    let names: Vec<String> = all.iter().filter_map(|i| i.metadata.name.clone()).collect();
    assert!(
        names.iter().all(
            |n| *n == incident_of("policy-service", SignalKind::ConversionRate)
                || *n == incident_of("policy-service", SignalKind::TraceErrorRate)
        ),
        "one incident per signal of the fault: {names:?}"
    );
    let rollbacks: Vec<(String, ActionState)> = all
        .iter()
        .flat_map(|i| {
            i.status
                .iter()
                .flat_map(|s| s.actions.iter())
                .filter(|a| a.type_ != ActionType::Escalate)
                .map(|a| (format!("{:?} by {:?}", a.type_, i.metadata.name), a.state))
        })
        .collect();
    assert_eq!(
        rollbacks.len(),
        1,
        "exactly one change to the workload, whichever signal came first: {rollbacks:?}"
    );
    assert!(rollbacks[0].0.starts_with("Rollback"), "{rollbacks:?}");
    assert_eq!(rollbacks[0].1, ActionState::Succeeded);
    // The incident that acted blamed the release, naming the failing
    // operation from the traces.
    let acted = all
        .iter()
        .find(|i| {
            i.status
                .iter()
                .flat_map(|s| s.actions.iter())
                .any(|a| a.type_ == ActionType::Rollback)
        })
        .context("the incident that rolled back")?;
    let diagnosis = acted
        .status
        .as_ref()
        .and_then(|s| s.diagnosis.clone())
        .context("a diagnosis")?;
    assert_eq!(diagnosis.category, Category::BadRollout, "{diagnosis:#?}");
    let text = diagnosis_text(acted);
    assert!(
        text.contains("charge_payment"),
        "the diagnosis names the failing operation: {text}"
    );
    assert!(
        !trace_evidence(acted).is_empty(),
        "trace evidence from Jaeger: {text}"
    );
    d.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payments_failing_without_a_rollout_are_escalated_naming_the_failing_operation()
-> Result<()> {
    let d = Demo::deploy("e2e-story-switch").await?;
    business_policy(
        &d,
        serde_json::json!([
            { "type": "Rollback", "onCategories": ["BadRollout"] },
            { "type": "Escalate" },
        ]),
        TraceCheck::Errors,
    )
    .await?;
    let _operator = operator(&d).await?;
    let (load, seconds) = customers(&d);
    steady(&d, &seconds).await?;

    let fault = Instant::now();
    sre_chaos(&[
        "conversion",
        "--url",
        &d.url("policy-service"),
        "--token",
        &d.token,
    ])?;
    let incidents: Api<Incident> = Api::namespaced(d.client.clone(), &d.ns.name);
    opened(&incidents).await?;
    let detected = fault.elapsed();
    let inc = wait_incident(
        &d.client,
        &d.ns.name,
        &incident_of("policy-service", SignalKind::ConversionRate),
        LONG,
        "Escalated",
        |i| i.status.as_ref().map(|s| s.phase) == Some(Phase::Escalated),
    )
    .await?;
    print_figures("payments switched off, escalated", detected, None);

    let status = inc.status.clone().unwrap_or_default();
    let diagnosis = status.diagnosis.clone().context("a diagnosis")?;
    assert_ne!(
        diagnosis.category,
        Category::BadRollout,
        "no rollout to blame: {diagnosis:#?}"
    );
    let text = diagnosis_text(&inc);
    assert!(
        text.contains("charge_payment") && text.contains(&format!("policy-service-{}", d.id)),
        "the diagnosis names the failing service and operation: {text}"
    );
    assert!(
        status
            .actions
            .iter()
            .all(|a| a.type_ == ActionType::Escalate),
        "nothing the policy allows fits, so nothing was changed: {:?}",
        status.actions
    );
    let all = incidents.list(&Default::default()).await?.items;
    assert!(
        all.iter()
            .flat_map(|i| i.status.iter().flat_map(|s| s.actions.iter()))
            .all(|a| a.type_ == ActionType::Escalate),
        "no incident changed the workload"
    );

    // Switched back on, customers buy again.
    sre_chaos(&[
        "conversion",
        "--url",
        &d.url("policy-service"),
        "--token",
        &d.token,
        "--off",
    ])?;
    let off = Instant::now();
    wait_until(LONG, "conversion to recover", || async {
        Ok(recovered_at(&seconds, off).is_some())
    })
    .await?;
    load.abort();
    d.finish().await
}
