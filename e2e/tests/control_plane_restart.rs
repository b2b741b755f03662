//! Faults detected while etcd and the API server crash and come back: each
//! fault still gets exactly one incident. This file is its own test binary,
//! so no other test shares the cluster while its control plane restarts.
#![cfg(feature = "cluster")]

use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use sre_chaos::Target;
use sre_space::crd::Incident;
use sre_space_e2e::{
    Operator, TestNamespace, client, create_policy, deployment, install_crds, repo_dir, wait_ready,
    wait_until,
};

const LONG: Duration = Duration::from_secs(120);

/// Whether a deployment's pod already shows an OOM kill.
async fn oom_landed(pods: &Api<Pod>, app: &str) -> Result<bool> {
    let list = pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await?;
    Ok(list.items.iter().any(|p| {
        p.status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten())
            .any(|c| {
                c.last_state
                    .as_ref()
                    .and_then(|l| l.terminated.as_ref())
                    .and_then(|t| t.reason.as_deref())
                    == Some("OOMKilled")
            })
    }))
}

/// Injects one OOM kill, retrying while the API server is away. A retry
/// after a write that did land would inject a second kill, so each retry
/// first checks whether the first one landed.
async fn inject_once(client: &Client, ns: &str, app: &str) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let target = Target {
        client: client.clone(),
        namespace: ns.into(),
        deployment: app.into(),
        dry_run: false,
    };
    wait_until(LONG, "the fault to be written once", || async {
        if oom_landed(&pods, app).await.unwrap_or(false) {
            return Ok(true);
        }
        Ok(target.oom().await.is_ok())
    })
    .await
}

#[tokio::test]
async fn faults_detected_across_an_etcd_and_api_server_restart_get_one_incident_each() -> Result<()>
{
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-restart").await?;
    create_policy(&client, &ns.name, |v| v["spec"]["mode"] = "DryRun".into()).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let names: Vec<String> = (0..6).map(|i| format!("api-{i}")).collect();
    for n in &names {
        deployments
            .create(&PostParams::default(), &deployment(n, 1, "64Mi"))
            .await?;
    }
    for n in &names {
        wait_ready(&client, &ns.name, n, 1, LONG).await?;
    }
    let _operator = Operator::start(&ns.name, &[]).await?;

    // Two faults just before the crash, while detection is in flight.
    inject_once(&client, &ns.name, &names[0]).await?;
    inject_once(&client, &ns.name, &names[1]).await?;
    let restart = tokio::task::spawn_blocking(|| {
        Command::new(repo_dir().join("e2e/cluster/cluster.sh"))
            .args(["restart", "etcd", "kube-apiserver"])
            .output()
    });
    // Two more while the control plane is down or coming back.
    for name in &names[2..4] {
        inject_once(&client, &ns.name, name).await?;
    }
    let out = restart.await??;
    anyhow::ensure!(
        out.status.success(),
        "restart failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And two after.
    for name in &names[4..] {
        inject_once(&client, &ns.name, name).await?;
    }

    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns.name);
    wait_until(LONG, "an incident per fault", || async {
        Ok(incidents.list(&ListParams::default()).await?.items.len() >= names.len())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = incidents.list(&ListParams::default()).await?.items;
    let mut targets: Vec<String> = all.iter().map(|i| i.spec.target.name.clone()).collect();
    targets.sort();
    assert_eq!(targets, names, "exactly one incident per fault");
    for i in &all {
        let occurrences = i.status.as_ref().map(|s| s.occurrences).unwrap_or(0);
        assert_eq!(
            occurrences, 1,
            "{}: each fault counted once",
            i.spec.target.name
        );
    }
    ns.cleanup().await
}
