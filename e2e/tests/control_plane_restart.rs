//! Faults detected while etcd and the API server crash and come back: each
//! fault still gets exactly one incident. This file is its own test binary,
//! so no other test shares the cluster while its control plane restarts.
#![cfg(feature = "cluster")]

use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{ListParams, PostParams};
use sre_chaos::Target;
use sre_space::crd::Incident;
use sre_space_e2e::{
    Operator, TestNamespace, client, create_policy, deployment, install_crds, repo_dir, wait_ready,
    wait_until,
};

const LONG: Duration = Duration::from_secs(120);

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
    let _operator = Operator::start(&ns.name, &[])?;
    let inject = |name: &str| Target {
        client: client.clone(),
        namespace: ns.name.clone(),
        deployment: name.into(),
        dry_run: false,
    };

    // Two faults just before the crash, while detection is in flight.
    inject(&names[0]).oom().await?;
    inject(&names[1]).oom().await?;
    let restart = tokio::task::spawn_blocking(|| {
        Command::new(repo_dir().join("e2e/cluster/cluster.sh"))
            .args(["restart", "etcd", "kube-apiserver"])
            .output()
    });
    // Two more while the control plane is down or coming back: retried
    // until the API server takes them.
    for name in &names[2..4] {
        wait_until(LONG, "the fault to be written", || async {
            Ok(inject(name).oom().await.is_ok())
        })
        .await?;
    }
    let out = restart.await??;
    anyhow::ensure!(
        out.status.success(),
        "restart failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And two after.
    for name in &names[4..] {
        wait_until(LONG, "the fault to be written", || async {
            Ok(inject(name).oom().await.is_ok())
        })
        .await?;
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
