//! Notifications out, on the real local cluster with the operator as a host
//! process: an OOM incident is announced in order to a fake Slack (incoming
//! webhook and bot) and a fake CloudEvents receiver, and a failing sink is
//! retried while the incident resolves regardless.
#![cfg(feature = "cluster")]

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use sre_space::crd::{ConditionStatus, Incident, NotifyEvent, SignalKind};
use sre_space_e2e::fake_notify::{self, FakeNotify};
use sre_space_e2e::scenario::LONG;
use sre_space_e2e::{Scenario, incident_of, wait_until};

const DASHBOARD: &str = "https://sre.example.com";

fn fast(v: &mut Value, sinks: &[&str]) {
    v["spec"]["guardrails"]["cooldownSeconds"] = 5.into();
    v["spec"]["guardrails"]["verificationWindowSeconds"] = 5.into();
    v["spec"]["notify"] = serde_json::json!({ "sinks": sinks });
}

/// The sinks file for the fake's receivers, in a folder of the test's own.
fn sinks_file(urls: &fake_notify::Urls, ns: &str) -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("sre-space-notify-{ns}"));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("sinks.json");
    std::fs::write(&path, fake_notify::sinks_file(urls, ns))?;
    Ok(path)
}

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn recorded(i: &Incident, sink: &str) -> Vec<NotifyEvent> {
    i.status
        .iter()
        .flat_map(|s| s.notifications.iter())
        .filter(|r| r.sink == sink)
        .map(|r| r.event)
        .collect()
}

#[tokio::test]
async fn an_oom_incident_is_announced_in_order_to_slack_and_cloudevents() -> Result<()> {
    let (fake, urls) = FakeNotify::start().await;
    let s = Scenario::builder("e2e-notify")
        .policy(|v| fast(v, &["slack-webhook", "slack-bot", "events"]))
        .deploy("quote", 2, "64Mi")
        .start()
        .await?;
    let file = sinks_file(&urls, s.name())?;
    let file = file.to_string_lossy().into_owned();
    let _operator = s
        .operator(&[
            ("SRE_SPACE_NOTIFY_SINKS_FILE", &file),
            ("SRE_SPACE_DASHBOARD_PUBLIC_URL", DASHBOARD),
        ])
        .await?;
    s.policy_condition(
        "demo-services",
        "NotificationsAvailable",
        ConditionStatus::True,
        "SinksAvailable",
        LONG,
    )
    .await?;

    s.chaos("quote").oom().await?;
    let name = incident_of("quote", SignalKind::OOMKilled);
    s.resolved(&name).await?;
    wait_until(LONG, "the resolution's CloudEvent", || async {
        Ok(types(&fake.cloud_events()).contains(&"space.sre.incident.resolved".to_string()))
    })
    .await?;

    // CloudEvents: one per moment, in the order of the incident's life.
    let events = fake.cloud_events();
    let seen = types(&events);
    let order = [
        "space.sre.incident.opened",
        "space.sre.incident.diagnosed",
        "space.sre.incident.action_taken",
        "space.sre.incident.resolved",
    ];
    let positions: Vec<usize> = order
        .iter()
        .map(|t| {
            seen.iter()
                .position(|s| s == t)
                .context(format!("{t} in {seen:?}"))
        })
        .collect::<Result<_>>()?;
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    let subject = format!("{}/{name}", s.name());
    for e in &events {
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["subject"], subject.as_str(), "{e}");
        assert_eq!(e["datacontenttype"], "application/json");
        assert!(e["time"].as_str().is_some_and(|t| !t.is_empty()), "{e}");
        assert_eq!(e["data"]["incident"], name.as_str());
        assert_eq!(
            e["data"]["link"],
            format!("{DASHBOARD}/incidents/{}/{name}", s.name()).as_str()
        );
    }
    let ids: std::collections::BTreeSet<&str> =
        events.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids.len(), events.len(), "every event has its own id");

    // Slack: the bot keeps one message, edited to the end of the story;
    // the webhook posts few messages, each naming the incident.
    wait_until(LONG, "the bot's message to say Resolved", || async {
        Ok(fake
            .slack_messages()
            .iter()
            .any(|m| m.via == "bot" && m.text.contains("Resolved")))
    })
    .await?;
    let messages = fake.slack_messages();
    let bot: Vec<_> = messages.iter().filter(|m| m.via == "bot").collect();
    assert_eq!(bot.len(), 1, "one message per incident: {bot:?}");
    assert!(bot[0].edits >= 1, "{bot:?}");
    let hook: Vec<_> = messages.iter().filter(|m| m.via == "webhook").collect();
    assert!(!hook.is_empty() && hook.len() <= 4, "coalesced: {hook:?}");
    for m in &messages {
        assert!(m.text.contains(&subject), "{}", m.text);
        assert!(!m.text.contains("<!"), "no broadcast markup: {}", m.text);
    }

    // Recorded, so a restarted operator sends nothing again.
    let incident = s
        .incidents()
        .await?
        .into_iter()
        .find(|i| i.metadata.name.as_deref() == Some(name.as_str()))
        .context("the incident")?;
    let for_events = recorded(&incident, "events");
    assert!(for_events.contains(&NotifyEvent::Opened), "{for_events:?}");
    assert!(
        for_events.contains(&NotifyEvent::Resolved),
        "{for_events:?}"
    );
    s.cleanup().await
}

#[tokio::test]
async fn a_failing_sink_is_retried_and_the_incident_still_resolves() -> Result<()> {
    let (fake, urls) = FakeNotify::start().await;
    // The first deliveries fail with Slack's and a receiver's 503.
    fake.fail_next(3, 503);
    let s = Scenario::builder("e2e-notify-fail")
        .policy(|v| fast(v, &["events"]))
        .deploy("cart", 2, "64Mi")
        .start()
        .await?;
    let file = sinks_file(&urls, s.name())?;
    let file = file.to_string_lossy().into_owned();
    let _operator = s
        .operator(&[("SRE_SPACE_NOTIFY_SINKS_FILE", &file)])
        .await?;

    s.chaos("cart").oom().await?;
    let name = incident_of("cart", SignalKind::OOMKilled);
    s.resolved(&name).await?;
    wait_until(LONG, "every event delivered after the failures", || async {
        let seen = types(&fake.cloud_events());
        Ok(
            seen.first().map(String::as_str) == Some("space.sre.incident.opened")
                && seen.contains(&"space.sre.incident.resolved".to_string()),
        )
    })
    .await?;
    let failed = fake
        .requests()
        .iter()
        .filter(|r| r.ends_with(" 503"))
        .count();
    assert_eq!(failed, 3, "{:?}", fake.requests());
    // Retried with the same id: the receiver holds each event once.
    let events = fake.cloud_events();
    let opened = types(&events)
        .iter()
        .filter(|t| *t == "space.sre.incident.opened")
        .count();
    assert_eq!(opened, 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    s.cleanup().await
}
