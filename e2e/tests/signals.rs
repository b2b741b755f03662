#![cfg(feature = "cluster")]
//! The business-signal services of the harness (`e2e/cluster/signals.sh`,
//! started by `make cluster-up` and `make test`): a message written to and
//! read back from the Kafka broker with librdkafka, and a trace sent to Jaeger
//! over OTLP/HTTP and found again through its query API.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sre_space_e2e::unique;

/// An address from the variable `signals.sh env` exports, or the default port.
fn address(var: &str, port_var: &str, default_port: u16, scheme: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        let port = std::env::var(port_var)
            .ok()
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(default_port);
        format!("{scheme}127.0.0.1:{port}")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_goes_through_the_kafka_broker() -> Result<()> {
    let bootstrap = address("SRE_SPACE_KAFKA_BOOTSTRAP", "KAFKA_PORT", 19092, "");
    let id = unique();
    // The broker creates topics on first use (auto.create.topics.enable).
    let topic = format!("sre-space.e2e-signals-{id}");
    let payload = format!("{{\"incident\":\"e2e-{id}\"}}");

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .create()
        .context("creating the producer")?;
    let delivered = producer
        .send(
            FutureRecord::to(&topic).key(id.as_str()).payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .with_context(|| format!("producing to {topic} at {bootstrap}"))?;
    let delivery = (delivered.partition, delivered.offset);

    // Read the partition directly: no consumer group to join.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", format!("sre-space-e2e-{id}"))
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the consumer")?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(&topic, delivery.0, Offset::Offset(delivery.1))?;
    consumer.assign(&assignment)?;

    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        // poll blocks; keep it off the async runtime's threads.
        let got = tokio::task::block_in_place(|| {
            consumer.poll(Duration::from_millis(500)).map(|r| {
                r.map(|m| {
                    (
                        m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                        m.payload().map(|p| String::from_utf8_lossy(p).into_owned()),
                        m.offset(),
                    )
                })
            })
        });
        match got {
            None => continue,
            Some(Err(e)) => bail!("consuming {topic}: {e}"),
            Some(Ok((key, value, offset))) => {
                assert_eq!(key.as_deref(), Some(id.as_str()));
                assert_eq!(value.as_deref(), Some(payload.as_str()));
                assert_eq!(offset, delivery.1);
                return Ok(());
            }
        }
    }
    bail!(
        "the message written to {topic} (partition {}, offset {}) was not read back within 30 s",
        delivery.0,
        delivery.1
    )
}

#[tokio::test]
async fn a_trace_sent_over_otlp_is_found_in_jaeger() -> Result<()> {
    let otlp = address(
        "SRE_SPACE_OTLP_HTTP",
        "JAEGER_OTLP_HTTP_PORT",
        14318,
        "http://",
    );
    let query = address(
        "SRE_SPACE_JAEGER_QUERY",
        "JAEGER_QUERY_PORT",
        16686,
        "http://",
    );
    let service = "sre-space-e2e-signals";
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    // 32 and 16 hex digits, different on every run.
    let trace_id = format!("{:032x}", nanos ^ (u128::from(std::process::id()) << 64));
    let span_id = format!("{:016x}", (nanos as u64) | 1);
    let body = serde_json::json!({
        "resourceSpans": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": service}}
            ]},
            "scopeSpans": [{
                "scope": {"name": "sre-space-e2e"},
                "spans": [{
                    "traceId": trace_id,
                    "spanId": span_id,
                    "name": "remediate",
                    "kind": 1,
                    "startTimeUnixNano": (nanos - 5_000_000).to_string(),
                    "endTimeUnixNano": nanos.to_string(),
                    "attributes": [
                        {"key": "sre.incident", "value": {"stringValue": "e2e"}}
                    ]
                }]
            }]
        }]
    });

    // The workspace's reqwest has no crypto provider of its own; installing
    // one again is a no-op.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let sent = http
        .post(format!("{otlp}/v1/traces"))
        .json(&body)
        .send()
        .await
        .with_context(|| format!("sending the trace to {otlp}"))?;
    assert!(
        sent.status().is_success(),
        "OTLP/HTTP answered {}",
        sent.status()
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = http
            .get(format!("{query}/api/traces/{trace_id}"))
            .send()
            .await
            .with_context(|| format!("querying {query}"))?;
        if found.status().is_success() {
            let trace: serde_json::Value = found.json().await?;
            let data = &trace["data"][0];
            assert_eq!(data["traceID"], trace_id.as_str());
            let span = &data["spans"][0];
            assert_eq!(span["operationName"], "remediate");
            assert_eq!(span["spanID"], span_id.as_str());
            let process = &data["processes"][span["processID"].as_str().unwrap_or_default()];
            assert_eq!(process["serviceName"], service);
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "trace {trace_id} not found at {query} within 30 s (last answer {})",
                found.status()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
