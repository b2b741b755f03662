//! The demo business on the real node: the four services of demo-apps/ run
//! as real pods (images from `e2e/cluster/demo-images.sh`, deployed with the
//! demo chart), customers arrive through the frontend, the business events
//! land on Kafka with the request's trace context, the purchase's trace
//! reaches Jaeger across three services, `sre-chaos conversion` stops
//! purchases until `--off`, `sre-chaos latency` slows every request, and the
//! memory leak gets the container OOM-killed by the kernel.
//!
//! Compiled only with the `real-node` feature (see tests/real_node.rs).
//! Needs the demo binaries and sre-chaos built first:
//! `cargo build -p sre-space-demo -p sre-chaos --bins`.
#![cfg(feature = "real-node")]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use sre_space_demo::events::trace_of;
use sre_space_demo::telemetry::TraceContext;
use sre_space_e2e::chaos_bin;
use sre_space_e2e::demo::{Demo, drive, message_count, sre_chaos};
use sre_space_e2e::kubectl_output;

/// One business event read back from Kafka.
struct Event {
    body: Value,
    trace: Option<TraceContext>,
}

/// Reads every message of `topics` from the beginning, until `quiet` passes
/// without a new one.
fn read_all(
    bootstrap: &str,
    topics: &[&str],
    quiet: Duration,
) -> Result<BTreeMap<String, Vec<Event>>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("sre-space-e2e-demo-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let partitions = metadata
            .topics()
            .first()
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        ensure!(
            partitions > 0,
            "topic {topic} has no partitions (never written?)"
        );
        for p in 0..partitions as i32 {
            assignment.add_partition_offset(topic, p, Offset::Beginning)?;
        }
    }
    consumer.assign(&assignment)?;
    let mut out: BTreeMap<String, Vec<Event>> = BTreeMap::new();
    let mut last = Instant::now();
    while last.elapsed() < quiet {
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(e)) => bail!("consuming {topics:?}: {e}"),
            Some(Ok(m)) => {
                last = Instant::now();
                let body: Value = serde_json::from_slice(m.payload().unwrap_or_default())
                    .with_context(|| format!("a message on {} is not JSON", m.topic()))?;
                let trace = m.headers().and_then(trace_of);
                out.entry(m.topic().to_owned())
                    .or_default()
                    .push(Event { body, trace });
            }
        }
    }
    Ok(out)
}

/// The spans of one trace in Jaeger, once it holds `want` operations.
async fn trace_with(
    http: &reqwest::Client,
    query: &str,
    trace_id: &str,
    want: &[&str],
) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = http
            .get(format!("{query}/api/traces/{trace_id}"))
            .send()
            .await?;
        if answer.status().is_success() {
            let body: Value = answer.json().await?;
            let trace = body["data"][0].clone();
            let ops: Vec<&str> = trace["spans"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["operationName"].as_str())
                .collect();
            if want.iter().all(|w| ops.contains(w)) {
                return Ok(trace);
            }
            if Instant::now() >= deadline {
                bail!("trace {trace_id} has {ops:?}, not all of {want:?}");
            }
        } else if Instant::now() >= deadline {
            bail!(
                "trace {trace_id} not in Jaeger within 30 s ({})",
                answer.status()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_business_runs_on_the_real_node_and_each_fault_breaks_what_customers_see()
-> Result<()> {
    let d = Demo::deploy("e2e-demo").await?;
    let (bootstrap, query, token, id) = (
        d.bootstrap.as_str(),
        d.query.as_str(),
        d.token.as_str(),
        d.id.as_str(),
    );
    let (quote_topic, purchase_topic, user_topic) = (
        d.quote_topic.as_str(),
        d.purchase_topic.as_str(),
        d.user_topic.as_str(),
    );
    let client = d.client.clone();

    let frontend = d.url("frontend");
    let policy = d.url("policy-service");

    // Customers: every quote and every purchase becomes one event.
    let normal = drive(&frontend, 6).await?;
    eprintln!("normal: {}", normal.line("6 s"));
    ensure!(
        normal.quotes_ok > 10 && normal.purchases_ok > 3,
        "{normal:?}"
    );
    assert_eq!(
        normal.quotes_failed + normal.purchases_failed,
        0,
        "{normal:?}"
    );
    let events = tokio::task::block_in_place(|| {
        read_all(
            bootstrap,
            &[quote_topic, purchase_topic, user_topic],
            Duration::from_secs(3),
        )
    })?;
    let quotes = events.get(quote_topic).map_or(&[][..], Vec::as_slice);
    let purchases = events.get(purchase_topic).map_or(&[][..], Vec::as_slice);
    let checks = events.get(user_topic).map_or(&[][..], Vec::as_slice);
    assert_eq!(
        quotes.len() as u64,
        normal.quotes_ok,
        "one quote_requested per quote"
    );
    assert_eq!(
        purchases.len() as u64,
        normal.purchases_ok,
        "one policy_purchased per purchase"
    );
    for e in quotes {
        assert_eq!(e.body["event"], "quote_requested");
        assert!(
            e.body["quote_id"]
                .as_str()
                .is_some_and(|q| q.starts_with("q-")),
            "{}",
            e.body
        );
        assert!(
            e.trace.is_some(),
            "trace context in the headers: {}",
            e.body
        );
    }
    // user-service publishes too: one eligibility_checked per purchase,
    // in the purchase's own trace.
    assert_eq!(
        checks.len() as u64,
        normal.purchases_ok,
        "one eligibility_checked per purchase"
    );
    let purchase_traces: std::collections::BTreeSet<_> = purchases
        .iter()
        .filter_map(|e| e.trace.as_ref().map(|t| t.trace_id.clone()))
        .collect();
    for e in checks {
        assert_eq!(e.body["event"], "eligibility_checked");
        assert_eq!(e.body["eligible"], true, "{}", e.body);
        let trace = e.trace.as_ref().map(|t| t.trace_id.clone());
        assert!(
            trace.is_some_and(|t| purchase_traces.contains(&t)),
            "the check is part of a purchase's trace: {}",
            e.body
        );
    }
    for e in purchases {
        assert_eq!(e.body["event"], "policy_purchased");
        assert!(
            e.body["policy_id"]
                .as_str()
                .is_some_and(|q| q.starts_with("pol-")),
            "{}",
            e.body
        );
    }

    // The purchase's trace, from the event's header to Jaeger: one trace
    // ID through the frontend, policy-service and user-service.
    let trace_id = purchases
        .first()
        .and_then(|e| e.trace.as_ref())
        .map(|t| t.trace_id.clone())
        .context("a policy_purchased event with a traceparent header")?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let trace = trace_with(
        &http,
        query,
        &trace_id,
        &[
            "POST /api/purchase",
            "POST /policies",
            "check_eligibility",
            "GET /users/{id}/eligibility",
            "charge_payment",
        ],
    )
    .await?;
    let service_of = |span: &Value| {
        let pid = span["processID"].as_str().unwrap_or_default();
        trace["processes"][pid]["serviceName"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let mut by_op: BTreeMap<String, (String, String)> = BTreeMap::new();
    for span in trace["spans"].as_array().into_iter().flatten() {
        assert_eq!(span["traceID"], trace_id.as_str());
        by_op.insert(
            span["operationName"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            (
                service_of(span),
                span["spanID"].as_str().unwrap_or_default().to_owned(),
            ),
        );
    }
    assert_eq!(by_op["POST /api/purchase"].0, format!("frontend-{id}"));
    assert_eq!(by_op["POST /policies"].0, format!("policy-service-{id}"));
    assert_eq!(
        by_op["GET /users/{id}/eligibility"].0,
        format!("user-service-{id}")
    );
    // The user-service span is a child of policy-service's call.
    let user_span = trace["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["operationName"] == "GET /users/{id}/eligibility")
        .context("user-service span")?;
    assert_eq!(
        user_span["references"][0]["spanID"],
        by_op["check_eligibility"].1.as_str(),
        "{user_span}"
    );

    // The conversion fault: purchases fail with 502, quotes go on, and no
    // policy_purchased event is written.
    let said = sre_chaos(&["conversion", "--url", &policy, "--token", token])?;
    assert!(said.starts_with("changed: conversion on"), "{said}");
    let (quotes_before, purchases_before) = (
        message_count(bootstrap, quote_topic)?,
        message_count(bootstrap, purchase_topic)?,
    );
    let broken = drive(&frontend, 6).await?;
    eprintln!("conversion fault: {}", broken.line("6 s"));
    assert_eq!(broken.purchases_ok, 0, "{broken:?}");
    ensure!(
        broken.purchases_failed > 3 && broken.quotes_ok > 10,
        "{broken:?}"
    );
    assert_eq!(
        message_count(bootstrap, purchase_topic)?,
        purchases_before,
        "no policy_purchased while payments fail"
    );
    assert_eq!(
        message_count(bootstrap, quote_topic)? - quotes_before,
        broken.quotes_ok as i64,
        "quotes still recorded"
    );
    // A wrong token changes nothing.
    let refused = std::process::Command::new(chaos_bin())
        .args(["conversion", "--url", &policy, "--token", "guess", "--off"])
        .output()?;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));

    let said = sre_chaos(&["conversion", "--url", &policy, "--token", token, "--off"])?;
    assert!(said.starts_with("changed: conversion off"), "{said}");
    let restored = drive(&frontend, 6).await?;
    eprintln!("restored: {}", restored.line("6 s"));
    ensure!(restored.purchases_ok > 3, "{restored:?}");
    assert_eq!(restored.purchases_failed, 0, "{restored:?}");
    assert_eq!(
        message_count(bootstrap, purchase_topic)? - purchases_before,
        restored.purchases_ok as i64,
        "policy_purchased again, one per purchase"
    );

    // Latency on user-service: every quote and purchase waits behind it.
    let users = d.url("user-service");
    let said = sre_chaos(&[
        "latency", "--url", &users, "--token", token, "--millis", "400",
    ])?;
    assert!(said.starts_with("changed: latency on"), "{said}");
    let slow = drive(&frontend, 4).await?;
    eprintln!("latency fault: {}", slow.line("4 s"));
    ensure!(slow.quotes_ok > 5, "{slow:?}");
    assert!(
        slow.quantile_ms(0.5).is_some_and(|ms| ms >= 400),
        "{}",
        slow.line("slow")
    );
    sre_chaos(&["latency", "--url", &users, "--token", token, "--off"])?;

    // The memory leak on the real node: the kernel kills the container at
    // its limit, the kubelet restarts it, and it serves again.
    let leak = http
        .post(format!("{users}/chaos/oom"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "mib_per_second": 32 }))
        .send()
        .await?;
    assert_eq!(leak.status().as_u16(), 200);
    let started = Instant::now();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &d.ns.name);
    let restarted = loop {
        let list = pods
            .list(&ListParams::default().labels("app=user-service"))
            .await?;
        let killed = list.items.into_iter().find(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
                .is_some_and(|c| {
                    c.ready
                        && c.restart_count >= 1
                        && c.last_state
                            .as_ref()
                            .and_then(|l| l.terminated.as_ref())
                            .is_some_and(|t| t.reason.as_deref() == Some("OOMKilled"))
                })
        });
        if let Some(p) = killed {
            break p;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(90),
            "user-service was not OOM-killed and restarted within 90 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "oom fault: killed and Ready again in {:?}",
        started.elapsed()
    );
    let exit = restarted
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|c| c.into_iter().next())
        .and_then(|c| c.last_state)
        .and_then(|l| l.terminated)
        .map(|t| t.exit_code);
    assert_eq!(exit, Some(137), "SIGKILL from the kernel");
    let after = drive(&frontend, 3).await?;
    ensure!(
        after.quotes_ok > 3 && after.quotes_failed == 0,
        "serves again: {after:?}"
    );

    d.finish().await
}

/// A configuration fault: a release ships `PAYMENT_MODE=broken`, every
/// purchase fails, the fault switch cannot clear it, and rolling the
/// Deployment back to its previous revision (the remediation SRE-Space
/// takes for a bad rollout) does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_that_breaks_payments_is_undone_by_rolling_back() -> Result<()> {
    let d = Demo::deploy("e2e-demo-rollout").await?;
    let before = d.drive(4).await?;
    ensure!(
        before.purchases_ok > 2 && before.purchases_failed == 0,
        "{before:?}"
    );

    d.helm(&[
        "upgrade",
        "--reuse-values",
        "--set",
        "apps.paymentMode=broken",
        "--wait",
        "--timeout",
        "90s",
    ])?;
    let purchases = message_count(&d.bootstrap, &d.purchase_topic)?;
    let broken = d.drive(4).await?;
    eprintln!("bad release: {}", broken.line("4 s"));
    assert_eq!(broken.purchases_ok, 0, "{broken:?}");
    ensure!(
        broken.purchases_failed > 2 && broken.quotes_ok > 5,
        "{broken:?}"
    );
    // The switch is not the cause, so turning it off changes nothing.
    sre_chaos(&[
        "conversion",
        "--url",
        &d.url("policy-service"),
        "--token",
        &d.token,
        "--off",
    ])?;
    let still = d.drive(3).await?;
    assert_eq!(still.purchases_ok, 0, "{still:?}");
    assert_eq!(message_count(&d.bootstrap, &d.purchase_topic)?, purchases);

    let undo = kubectl_output(&[
        "rollout",
        "undo",
        "deployment/policy-service",
        "-n",
        &d.ns.name,
    ])?;
    assert!(undo.contains("rolled back"), "{undo}");
    kubectl_output(&[
        "rollout",
        "status",
        "deployment/policy-service",
        "-n",
        &d.ns.name,
        "--timeout",
        "90s",
    ])?;
    let after = d.drive(4).await?;
    eprintln!("rolled back: {}", after.line("4 s"));
    ensure!(after.purchases_ok > 2, "{after:?}");
    assert_eq!(after.purchases_failed, 0, "{after:?}");
    assert_eq!(
        message_count(&d.bootstrap, &d.purchase_topic)? - purchases,
        after.purchases_ok as i64
    );
    d.finish().await
}
