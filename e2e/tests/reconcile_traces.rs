//! Every reconcile is a span, exported over OTLP to the real Jaeger of the
//! harness: an SRE can find how the operator handled an incident in the
//! same tracing backend as the services it looks after.
#![cfg(feature = "cluster")]

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::PostParams;
use sre_chaos::Target;
use sre_space::crd::SignalKind;
use sre_space::crd::{Incident, Phase};
use sre_space_e2e::incident_of;
use sre_space_e2e::{
    Operator, TestNamespace, client, create_policy, deployment, install_crds, wait_incident,
    wait_ready, wait_until,
};

const LONG: Duration = Duration::from_secs(120);

#[tokio::test]
async fn each_reconcile_of_an_incident_is_a_span_in_jaeger() -> Result<()> {
    let otlp =
        std::env::var("SRE_SPACE_OTLP_HTTP").unwrap_or_else(|_| "http://127.0.0.1:14318".into());
    let jaeger =
        std::env::var("SRE_SPACE_JAEGER_QUERY").unwrap_or_else(|_| "http://127.0.0.1:16686".into());
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-otel").await?;
    create_policy(&client, &ns.name, |v| {
        v["spec"]["guardrails"]["verificationWindowSeconds"] = 5.into();
    })
    .await?;
    Api::<Deployment>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &deployment("ledger", 1, "64Mi"))
        .await?;
    wait_ready(&client, &ns.name, "ledger", 1, LONG).await?;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let service = format!("sre-space-{nanos:x}");
    let _operator = Operator::start(
        &ns.name,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
            ("OTEL_SERVICE_NAME", service.as_str()),
        ],
    )
    .await?;
    Target {
        client: client.clone(),
        namespace: ns.name.clone(),
        deployment: "ledger".into(),
        dry_run: false,
    }
    .oom()
    .await?;
    wait_incident(
        &client,
        &ns.name,
        &incident_of("ledger", SignalKind::OOMKilled),
        LONG,
        "Resolved",
        |i: &Incident| i.status.as_ref().map(|s| s.phase) == Some(Phase::Resolved),
    )
    .await?;

    // The batch exporter sends every few seconds.
    let http = reqwest::Client::new();
    let url =
        format!("{jaeger}/api/traces?service={service}&operation=reconcile&limit=500&lookback=1h");
    wait_until(
        LONG,
        "reconcile spans of the incident in Jaeger",
        || async {
            let body: serde_json::Value = http.get(&url).send().await?.json().await?;
            let mut controllers = BTreeSet::new();
            for span in body["data"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|t| t["spans"].as_array().into_iter().flatten())
            {
                let tag = |k: &str| {
                    span["tags"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|t| t["key"] == k)
                        .and_then(|t| t["value"].as_str())
                        .map(str::to_string)
                };
                if tag("namespace").as_deref() == Some(ns.name.as_str())
                    && tag("object") == Some(incident_of("ledger", SignalKind::OOMKilled))
                {
                    controllers.extend(tag("controller"));
                }
            }
            Ok(controllers.contains("incident") && controllers.contains("report"))
        },
    )
    .await?;
    ns.cleanup().await
}
