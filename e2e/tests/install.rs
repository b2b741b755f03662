//! SRE-Space installed the way users install it: `make images` built the
//! operator's image without a Docker engine, and `helm install` runs two
//! replicas as real containers on the real node, in a namespace that
//! enforces the `restricted` Pod Security level. They reach the API server
//! with in-cluster configuration (the `kubernetes` Service, through
//! kube-proxy) and the token the kubelet mounts. No operator process runs
//! on the host in this file.
//!
//! One test, in the order a user lives it: install, an OOM incident
//! resolved by the installed operator, the leader's container killed through
//! the node's runtime (failover measured), `helm upgrade` with a changed
//! value (the time with no leader measured), `helm test`, and `helm
//! uninstall`, which keeps the CRDs and every Incident.
#![cfg(feature = "real-node")]

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use sre_space::crd::{ActionState, ActionType, Incident, SignalKind};
use sre_space_e2e::{
    TestNamespace, client, helm_output, helm_run, incident_of, real_node, repo_dir,
    start_oom_story, wait_resolved, wait_until,
};

/// The chart's default lease duration (SRE_SPACE_LEASE_DURATION_SECONDS).
const LEASE_SECONDS: u64 = 15;

/// The images `make images` built, imported into the real node's containerd
/// (quick when they are there already).
fn import_images() -> Result<()> {
    let out = std::process::Command::new(repo_dir().join("e2e/cluster/images.sh"))
        .arg("import")
        .output()?;
    ensure!(
        out.status.success(),
        "the operator's image is not there: run `make images` first ({})",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn containerd_socket(node: &str) -> String {
    format!("/run/sre-space/{node}/containerd.sock")
}

/// The Lease's holder and when it was last renewed.
fn holder(lease: &Lease) -> (String, Option<Timestamp>) {
    let spec = lease.spec.clone().unwrap_or_default();
    (
        spec.holder_identity.unwrap_or_default(),
        spec.renew_time.map(|t| t.0),
    )
}

struct Installed {
    client: Client,
    ops: TestNamespace,
    apps: TestNamespace,
    release: String,
    node: String,
}

impl Installed {
    fn helm(&self, verb: &str, extra: &[&str]) -> Result<String> {
        let chart = repo_dir().join("charts/sre-space");
        let chart = chart.to_string_lossy();
        let mut args = vec![verb, &self.release];
        if verb == "install" || verb == "upgrade" {
            args.push(&chart);
        }
        args.extend(["-n", &self.ops.name]);
        args.extend(extra);
        helm_output(&args)
    }

    async fn deployment(&self) -> Result<Deployment> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.ops.name);
        let list = api.list(&ListParams::default()).await?;
        list.items
            .into_iter()
            .next()
            .context("the release has no Deployment")
    }

    /// The Lease the release's replicas elect on, as the chart names it.
    async fn lease_name(&self) -> Result<String> {
        let d = self.deployment().await?;
        let env = d
            .spec
            .template
            .spec
            .map(|s| s.containers[0].env.clone().unwrap_or_default())
            .unwrap_or_default();
        Ok(env
            .iter()
            .find(|e| e.name == "SRE_SPACE_LEASE_NAME")
            .and_then(|e| e.value.clone())
            .unwrap_or_else(|| "sre-space".into()))
    }

    async fn operator_pods(&self) -> Result<Vec<Pod>> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.ops.name);
        Ok(api
            .list(&ListParams::default().labels("app.kubernetes.io/name=sre-space"))
            .await?
            .items
            .into_iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("app.kubernetes.io/component"))
                        .is_none()
            })
            .collect())
    }
}

fn operator_container(pod: &Pod) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == "operator")
        .cloned()
}

// Two workers: the Lease is watched while helm (a blocking call) upgrades.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_runs_the_operator_image_on_the_node_through_an_oom_a_kill_an_upgrade_and_an_uninstall()
-> Result<()> {
    let node = real_node()?;
    import_images()?;
    let client = client().await?;
    let ops = TestNamespace::create(&client, "e2e-install").await?;
    let apps = TestNamespace::create(&client, "e2e-install-apps").await?;
    // The operator's namespace admits only `restricted` pods.
    Api::<Namespace>::all(client.clone())
        .patch(
            &ops.name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "metadata": { "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            }}})),
        )
        .await?;
    let release = format!("inst{}", &ops.name[ops.name.len() - 6..]);
    let t = Installed {
        client: client.clone(),
        ops,
        apps,
        release,
        node: node.clone(),
    };

    // --- helm install -----------------------------------------------------
    // The README's values for the local cluster, and a namespace to watch
    // so that the other tests' namespaces are left alone.
    let local = repo_dir().join("examples/local-values.yaml");
    let local = local.to_string_lossy().into_owned();
    let values = serde_json::json!({ "operator": { "watchNamespace": t.apps.name } });
    let values_file = std::env::temp_dir().join(format!("{}-values.json", t.ops.name));
    std::fs::write(&values_file, serde_json::to_vec(&values)?)?;
    let values_path = values_file.to_string_lossy().into_owned();
    let started = Instant::now();
    // The other tests applied the CRDs without Helm: the release adopts them.
    t.helm(
        "install",
        &[
            "-f",
            &local,
            "-f",
            &values_path,
            "--take-ownership",
            "--wait",
            "--timeout",
            "240s",
        ],
    )?;
    let installed_in = started.elapsed();
    let pods = t.operator_pods().await?;
    ensure!(pods.len() == 2, "two replicas run: {}", pods.len());
    for p in &pods {
        let spec = p.spec.as_ref().context("a pod spec")?;
        assert_eq!(
            spec.node_name.as_deref(),
            Some(node.as_str()),
            "on the real node"
        );
        let c = operator_container(p).context("the operator's container")?;
        assert!(
            c.ready,
            "{} is ready",
            p.metadata.name.as_deref().unwrap_or("")
        );
        assert!(
            c.image.ends_with("sre-space/operator:0.1.0"),
            "the image make images built: {}",
            c.image
        );
        assert!(
            spec.volumes
                .iter()
                .flatten()
                .any(|v| v.name.starts_with("kube-api-access-")),
            "the kubelet mounts the ServiceAccount token"
        );
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), &t.ops.name);
    let lease_name = t.lease_name().await?;
    let names: Vec<String> = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    wait_until(Duration::from_secs(60), "a replica to lead", || async {
        let lease = leases.get_opt(&lease_name).await?;
        Ok(lease.is_some_and(|l| names.contains(&holder(&l).0)))
    })
    .await?;
    eprintln!("install: helm install --wait took {installed_in:.1?}; two replicas ready on {node}");

    // --- the OOM story, resolved by the installed operator ---------------
    start_oom_story(&client, &t.apps.name).await?;
    let incident_name = incident_of("hungry", SignalKind::OOMKilled);
    let inc = wait_resolved(
        &client,
        &t.apps.name,
        &incident_name,
        Duration::from_secs(240),
    )
    .await?;
    let action = inc
        .status
        .as_ref()
        .and_then(|s| s.actions.first().cloned())
        .context("an action")?;
    assert_eq!(
        (action.type_, action.state),
        (ActionType::RaiseMemoryLimit, ActionState::Succeeded)
    );
    assert_eq!(
        (action.from.as_deref(), action.to.as_deref()),
        (Some("32Mi"), Some("96Mi"))
    );
    // The decisions were published by one of the installed pods.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), &t.apps.name);
    let instances: Vec<String> = events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("sre-space"))
        .filter_map(|e| e.reporting_instance)
        .collect();
    assert!(
        instances.iter().any(|i| names.contains(i)),
        "the installed pods {names:?} published the incident's events: {instances:?}"
    );
    eprintln!("install: the OOM incident resolved by the installed operator");

    // --- the leader's container killed through the node's runtime --------
    let (leader, _) = holder(&leases.get(&lease_name).await?);
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &t.ops.name);
    let before = operator_container(&pods_api.get(&leader).await?).context("its container")?;
    let id = before
        .container_id
        .as_deref()
        .and_then(|c| c.strip_prefix("containerd://"))
        .context("a containerd container id")?
        .to_owned();
    let killed_at = Timestamp::now();
    let clock = Instant::now();
    let kill = std::process::Command::new("ctr")
        .args([
            "--address",
            &containerd_socket(&t.node),
            "--namespace",
            "k8s.io",
            "tasks",
            "kill",
            "--signal",
            "SIGKILL",
            &id,
        ])
        .output()?;
    ensure!(
        kill.status.success(),
        "ctr tasks kill: {}",
        String::from_utf8_lossy(&kill.stderr)
    );
    wait_until(
        Duration::from_secs(90),
        "a leader after the kill",
        || async {
            let (who, renewed) = holder(&leases.get(&lease_name).await?);
            Ok(!who.is_empty() && renewed.is_some_and(|r| r > killed_at))
        },
    )
    .await?;
    let failover = clock.elapsed();
    let (new_leader, _) = holder(&leases.get(&lease_name).await?);
    // The kill was real: the kubelet saw the container die and restarted it.
    wait_until(
        Duration::from_secs(60),
        "the killed container's restart",
        || {
            let pods_api = pods_api.clone();
            let leader = leader.clone();
            let restarts = before.restart_count;
            async move {
                let c = operator_container(&pods_api.get(&leader).await?);
                Ok(c.is_some_and(|c| {
                    c.restart_count > restarts
                        && c.last_state
                            .and_then(|s| s.terminated)
                            .is_some_and(|t| t.exit_code == 137)
                }))
            }
        },
    )
    .await?;
    eprintln!(
        "install: failover after SIGKILL of the leader's container {leader}: {failover:.2?} until {new_leader} renewed the Lease"
    );

    // --- helm upgrade with a changed value: the time with no leader ------
    let observed = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(Instant, String)>::new()));
    let watch = {
        let observed = observed.clone();
        let stream = watcher(
            leases.clone(),
            watcher::Config::default().fields(&format!("metadata.name={lease_name}")),
        );
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                if let Ok(watcher::Event::Apply(l) | watcher::Event::InitApply(l)) = event
                    && let Ok(mut seen) = observed.lock()
                {
                    seen.push((Instant::now(), holder(&l).0));
                }
            }
        })
    };
    // The watch has seen the Lease as it is before the upgrade starts.
    wait_until(
        Duration::from_secs(30),
        "the Lease's watch to start",
        || async { Ok(observed.lock().map(|s| !s.is_empty()).unwrap_or(false)) },
    )
    .await?;
    let old_pods = names.clone();
    t.helm(
        "upgrade",
        &[
            "--reuse-values",
            "--set",
            "operator.logLevel=debug\\,kube=warn",
            "--wait",
            "--timeout",
            "240s",
        ],
    )?;
    let new_pods: Vec<String> = t
        .operator_pods()
        .await?
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    ensure!(
        new_pods.iter().all(|p| !old_pods.contains(p)),
        "the upgrade replaced every pod: {old_pods:?} -> {new_pods:?}"
    );
    wait_until(Duration::from_secs(60), "a new pod to lead", || async {
        Ok(new_pods.contains(&holder(&leases.get(&lease_name).await?).0))
    })
    .await?;
    watch.abort();
    let seen = observed.lock().map(|s| s.clone()).unwrap_or_default();
    let mut gaps = Vec::new();
    for (i, (at, who)) in seen.iter().enumerate() {
        if !who.is_empty() {
            continue;
        }
        if let Some((next, taker)) = seen[i + 1..].iter().find(|(_, w)| !w.is_empty()) {
            gaps.push((next.duration_since(*at), taker.clone()));
        }
    }
    let holders: Vec<&str> = seen.iter().map(|(_, w)| w.as_str()).collect();
    ensure!(
        !gaps.is_empty(),
        "the leader released the Lease when the upgrade stopped it: holders seen {holders:?}"
    );
    let worst = gaps.iter().map(|(g, _)| *g).max().unwrap_or_default();
    eprintln!(
        "install: helm upgrade: {} release(s) of the Lease, time with no leader {}; holders {holders:?}",
        gaps.len(),
        gaps.iter()
            .map(|(g, w)| format!("{:.0} ms (to {w})", g.as_secs_f64() * 1000.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // A release, not an expiry: the next replica took the Lease long before
    // the old one would have run out.
    assert!(
        worst < Duration::from_secs(LEASE_SECONDS),
        "no leader for {worst:?} during the upgrade"
    );
    let env = t
        .deployment()
        .await?
        .spec
        .template
        .spec
        .and_then(|s| s.containers[0].env.clone())
        .unwrap_or_default();
    assert!(
        env.iter()
            .any(|e| e.name == "RUST_LOG" && e.value.as_deref() == Some("debug,kube=warn")),
        "the changed value reached the pods"
    );

    // --- helm test ---------------------------------------------------------
    let tested = helm_run(&[
        "test",
        &t.release,
        "-n",
        &t.ops.name,
        "--timeout",
        "120s",
        "--logs",
    ])?;
    ensure!(
        tested.success,
        "helm test failed:\n{}\n{}",
        tested.stdout,
        tested.stderr
    );
    assert!(
        tested.stdout.contains("a replica leads"),
        "the smoke test's checks are in its log:\n{}",
        tested.stdout
    );
    eprintln!("install: helm test passed");

    // --- helm uninstall keeps the CRDs and every Incident ------------------
    t.helm("uninstall", &["--wait", "--timeout", "120s"])?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [
        "incidents.sre.space",
        "remediationpolicies.sre.space",
        "incidentmemories.sre.space",
    ] {
        assert!(crds.get_opt(crd).await?.is_some(), "{crd} is kept");
    }
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &t.apps.name);
    assert!(
        incidents.get_opt(&incident_name).await?.is_some(),
        "the incident is kept"
    );
    wait_until(
        Duration::from_secs(60),
        "the operator's pods to go",
        || async { Ok(t.operator_pods().await?.is_empty()) },
    )
    .await?;
    if t.deployment().await.is_ok() {
        bail!("the Deployment outlived helm uninstall");
    }
    let _ = std::fs::remove_file(&values_file);
    t.apps.cleanup().await?;
    t.ops.cleanup().await
}
