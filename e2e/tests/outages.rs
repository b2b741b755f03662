//! GitHub and the model unreachable for a minute each: the Kubernetes loop
//! goes on (faults are diagnosed by the rules and fixed), and what was
//! pending completes once when they come back. The services are the test
//! servers of `fake_github` and `fake_openai`, behind a TCP gate that makes
//! them unreachable (connections reset), not merely failing.
#![cfg(feature = "cluster")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use sre_space::crd::SignalKind;
use sre_space::crd::{ConditionStatus, Incident, Phase};
use sre_space_e2e::gate::Gate;
use sre_space_e2e::incident_of;
use sre_space_e2e::{Scenario, fake_github, wait_incident};

const OUTAGE: Duration = Duration::from_secs(60);
const LONG: Duration = Duration::from_secs(120);

fn addr_of(url: &str) -> Result<SocketAddr> {
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .context("no host")?;
    Ok(host.parse()?)
}

fn phase(i: &Incident) -> Phase {
    i.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

fn condition(i: &Incident, type_: &str) -> Option<(ConditionStatus, String)> {
    i.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status, c.reason.clone()))
}

#[tokio::test]
async fn github_unreachable_for_a_minute_delays_the_issue_but_not_the_fix() -> Result<()> {
    use sre_space_e2e::fake_github::FakeGitHub;
    let (fake, url) = FakeGitHub::start().await;
    fake.seed("acme/shop", &[]);
    let (gate, gated) = Gate::start(addr_of(&url)?).await;
    let s = Scenario::builder("e2e-gh-outage")
        .policy(|v| {
            v["spec"]["guardrails"]["cooldownSeconds"] = 5.into();
            v["spec"]["guardrails"]["verificationWindowSeconds"] = 5.into();
            v["spec"]["github"] = serde_json::json!({ "repository": "acme/shop" });
        })
        .deploy_each(&["cart"])
        .start()
        .await?;
    let api_url = format!("http://{gated}");
    let _operator = s.operator(&fake_github::operator_env(&api_url)).await?;

    gate.close();
    let outage = Instant::now();
    s.chaos("cart").oom().await?;
    let inc = wait_incident(
        &s.client,
        s.name(),
        &incident_of("cart", SignalKind::OOMKilled),
        LONG,
        "Resolved",
        |i| phase(i) == Phase::Resolved,
    )
    .await?;
    ensure!(
        outage.elapsed() < OUTAGE,
        "the fix waited for GitHub: resolved {:?} into the outage",
        outage.elapsed()
    );
    let synced = condition(&inc, "GitHubSynced");
    assert_eq!(
        synced.as_ref().map(|c| c.0),
        Some(ConditionStatus::False),
        "the incident says GitHub is behind: {synced:?}"
    );
    assert!(
        fake.issues("acme/shop").is_empty(),
        "nothing reached GitHub"
    );

    tokio::time::sleep(OUTAGE.saturating_sub(outage.elapsed())).await;
    gate.open();
    let recovered = Instant::now();
    wait_incident(
        &s.client,
        s.name(),
        &incident_of("cart", SignalKind::OOMKilled),
        LONG,
        "GitHubSynced",
        |i| condition(i, "GitHubSynced").map(|c| c.0) == Some(ConditionStatus::True),
    )
    .await?;
    println!(
        "GitHub back: the incident's issue caught up in {:.1} s",
        recovered.elapsed().as_secs_f64()
    );
    let issues = fake.issues("acme/shop");
    assert_eq!(issues.len(), 1, "one issue, not one per retry");
    let issue = &issues[0];
    assert_eq!(issue.state, "closed", "the fix already held: {issue:?}");
    assert!(issue.labels.iter().any(|l| l == "Status: Fixed"));
    let postmortems = issue
        .comments
        .iter()
        .filter(|c| c.contains("/postmortem -->"))
        .count();
    assert_eq!(postmortems, 1, "each comment once: {:#?}", issue.comments);
    let mut unique = issue.comments.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        issue.comments.len(),
        "no comment posted twice"
    );
    s.cleanup().await
}

#[tokio::test]
async fn a_model_unreachable_for_a_minute_leaves_diagnosis_to_the_rules_then_is_consulted_again()
-> Result<()> {
    use sre_space_e2e::fake_openai::{Behaviour, FakeOpenAi};
    let (fake, url) = FakeOpenAi::start().await;
    let (gate, gated) = Gate::start(addr_of(&url)?).await;
    let s = Scenario::builder("e2e-llm-outage")
        .policy(|v| {
            v["spec"]["guardrails"]["cooldownSeconds"] = 5.into();
            v["spec"]["guardrails"]["verificationWindowSeconds"] = 5.into();
        })
        .deploy_each(&["tax", "pricing"])
        .start()
        .await?;
    let base_url = format!("http://{gated}/v1");
    let _operator = s
        .operator(&[
            ("SRE_SPACE_LLM_BASE_URL", base_url.as_str()),
            ("SRE_SPACE_LLM_MODEL", "fake"),
            ("SRE_SPACE_LLM_TIMEOUT_SECONDS", "5"),
        ])
        .await?;

    gate.close();
    let outage = Instant::now();
    s.chaos("tax").oom().await?;
    let inc = wait_incident(
        &s.client,
        s.name(),
        &incident_of("tax", SignalKind::OOMKilled),
        LONG,
        "Resolved",
        |i| phase(i) == Phase::Resolved,
    )
    .await?;
    ensure!(
        outage.elapsed() < OUTAGE,
        "the fix waited for the model: resolved {:?} into the outage",
        outage.elapsed()
    );
    let status = inc.status.clone().unwrap_or_default();
    assert_eq!(
        status.diagnosis.as_ref().map(|d| d.analyzer.as_str()),
        Some("rules")
    );
    assert_eq!(
        condition(&inc, "ModelConsulted").map(|c| c.0),
        Some(ConditionStatus::False),
        "the incident says the model was not reached"
    );
    assert!(fake.requests().is_empty(), "nothing reached the model");

    tokio::time::sleep(OUTAGE.saturating_sub(outage.elapsed())).await;
    gate.open();
    let agrees = serde_json::json!({ "hypotheses": [{
        "category": "OutOfMemory", "statement": "pricing leaks memory under load", "confidence": 0.8,
        "evidence": ["e1"], "proposed_action": "RaiseMemoryLimit"
    }]});
    fake.then(Behaviour::Answer(agrees.to_string()));
    s.chaos("pricing").oom().await?;
    let inc = wait_incident(
        &s.client,
        s.name(),
        &incident_of("pricing", SignalKind::OOMKilled),
        LONG,
        "Resolved",
        |i| phase(i) == Phase::Resolved,
    )
    .await?;
    assert_eq!(
        inc.status
            .as_ref()
            .and_then(|s| s.diagnosis.as_ref())
            .map(|d| d.analyzer.as_str()),
        Some("rules+llm"),
        "the model is consulted again once it is back"
    );
    assert_eq!(fake.requests().len(), 1, "asked once");
    s.cleanup().await
}
