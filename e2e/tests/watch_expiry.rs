//! A watch whose resource version has been compacted away (410 Gone): the
//! operator lists again and carries on, losing and repeating nothing. This
//! file is its own test binary, so no other test shares the cluster while its
//! API server restarts.
#![cfg(feature = "cluster")]

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use base64::Engine;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{ListParams, PostParams};
use sre_chaos::Target;
use sre_space::crd::Incident;
use sre_space::crd::SignalKind;
use sre_space_e2e::incident_of;
use sre_space_e2e::{
    Operator, TestNamespace, client, create_policy, deployment, install_crds, repo_dir, wait_ready,
    wait_until,
};

const LONG: Duration = Duration::from_secs(120);

/// etcd's JSON gateway on loopback (the harness runs it without TLS).
fn etcd() -> String {
    let port = std::env::var("ETCD_PORT").unwrap_or_else(|_| "12379".into());
    format!("http://127.0.0.1:{port}")
}

/// Moves etcd's revision past everything the operator has seen, with keys
/// outside the API server's prefix, then compacts the history up to it: a
/// watch resuming from an older resource version can only get 410 Gone.
async fn advance_and_compact(http: &reqwest::Client) -> Result<i64> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut revision = 0;
    for i in 0..20 {
        let put: serde_json::Value = http
            .post(format!("{}/v3/kv/put", etcd()))
            .json(&serde_json::json!({ "key": b64(&format!("/sre-space-test/expiry/{i}")), "value": b64("x") }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        revision = put["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .context("etcd answered a put without a revision")?;
    }
    http.post(format!("{}/v3/kv/compaction", etcd()))
        .json(&serde_json::json!({ "revision": revision.to_string(), "physical": true }))
        .send()
        .await?
        .error_for_status()?;
    Ok(revision)
}

#[tokio::test]
async fn a_watch_expired_by_compaction_is_listed_again_and_no_fault_is_lost_or_doubled()
-> Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-expiry").await?;
    create_policy(&client, &ns.name, |v| v["spec"]["mode"] = "DryRun".into()).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    for name in ["before", "after"] {
        deployments
            .create(&PostParams::default(), &deployment(name, 1, "64Mi"))
            .await?;
        wait_ready(&client, &ns.name, name, 1, LONG).await?;
    }
    let operator = Operator::start(&ns.name, &[]).await?;
    let target = |name: &str| Target {
        client: client.clone(),
        namespace: ns.name.clone(),
        deployment: name.into(),
        dry_run: false,
    };
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns.name);
    target("before").oom().await?;
    wait_until(LONG, "the first incident", || async {
        Ok(incidents
            .get_opt(&incident_of("before", SignalKind::OOMKilled))
            .await?
            .is_some())
    })
    .await?;

    let http = reqwest::Client::new();
    advance_and_compact(&http).await?;
    let out = tokio::task::spawn_blocking(|| {
        Command::new(repo_dir().join("e2e/cluster/cluster.sh"))
            .args(["restart", "kube-apiserver"])
            .output()
    })
    .await??;
    ensure!(
        out.status.success(),
        "restart failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(LONG, "the operator to see its watches expire", || async {
        Ok(operator.output().contains("watch expired (410 Gone)"))
    })
    .await?;

    // A fault after the relist is detected, once; the one before is not
    // counted again.
    wait_until(LONG, "the fault after the relist to be written", || async {
        Ok(target("after").oom().await.is_ok())
    })
    .await?;
    wait_until(LONG, "the second incident", || async {
        Ok(incidents
            .get_opt(&incident_of("after", SignalKind::OOMKilled))
            .await?
            .is_some())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = incidents.list(&ListParams::default()).await?.items;
    let mut seen: Vec<(String, i64)> = all
        .iter()
        .map(|i| {
            (
                i.spec.target.name.clone(),
                i.status.as_ref().map(|s| s.occurrences).unwrap_or(0),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [("after".to_string(), 1), ("before".to_string(), 1)],
        "one incident per fault, each counted once"
    );
    ns.cleanup().await
}
