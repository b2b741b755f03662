//! The operator under faults of its own: its leader killed again and again,
//! and a storm of failing pods.
#![cfg(feature = "cluster")]

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use sre_chaos::Target;
use sre_space::crd::SignalKind;
use sre_space::crd::{ActionState, ActionType, Incident};
use sre_space_e2e::incident_of;
use sre_space_e2e::{
    Operator, TestNamespace, client, create_policy, deployment, install_crds, wait_ready,
    wait_resolved, wait_until,
};

const LONG: Duration = Duration::from_secs(120);

fn holder(lease: Option<Lease>) -> Option<String> {
    lease?.spec?.holder_identity
}

fn memory_limit(d: &Deployment) -> Option<String> {
    let c = d.spec.template.spec.as_ref()?.containers.first()?;
    Some(
        c.resources
            .as_ref()?
            .limits
            .as_ref()?
            .get("memory")?
            .0
            .clone(),
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test]
async fn the_leader_killed_twenty_times_mid_incident_loses_nothing_and_repeats_nothing()
-> Result<()> {
    let iterations: usize = std::env::var("SRE_SPACE_FAILOVER_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-failover").await?;
    create_policy(&client, &ns.name, |v| {
        v["spec"]["guardrails"]["cooldownSeconds"] = 1.into();
        v["spec"]["guardrails"]["verificationWindowSeconds"] = 2.into();
        v["spec"]["guardrails"]["maxActionsPerHour"] = 1000.into();
    })
    .await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    for i in 0..iterations {
        deployments
            .create(
                &PostParams::default(),
                &deployment(&format!("svc-{i}"), 1, "64Mi"),
            )
            .await?;
    }
    for i in 0..iterations {
        wait_ready(&client, &ns.name, &format!("svc-{i}"), 1, LONG).await?;
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let start = async |id: String| {
        let env = [
            ("SRE_SPACE_LEASE_NAMESPACE", ns.name.as_str()),
            ("SRE_SPACE_LEASE_DURATION_SECONDS", "3"),
            ("POD_NAME", id.as_str()),
            ("SRE_SPACE_BREAKER_LIMIT", "1000"),
        ];
        Operator::start_standby(&ns.name, &env)
            .await
            .map(|o| (id.clone(), o))
    };
    let mut replicas = vec![
        start("replica-0".into()).await?,
        start("replica-1".into()).await?,
    ];
    let mut failovers = Vec::new();
    for i in 0..iterations {
        let deadline = tokio::time::Instant::now() + LONG;
        let leader = loop {
            let h = holder(leases.get_opt("sre-space").await?);
            if let Some(h) = h.filter(|h| replicas.iter().any(|(id, _)| id == h)) {
                break h;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "no leader among the running replicas"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let target = Target {
            client: client.clone(),
            namespace: ns.name.clone(),
            deployment: format!("svc-{i}"),
            dry_run: false,
        };
        target.oom().await?;
        // Somewhere in detection, diagnosis, recording or acting.
        tokio::time::sleep(Duration::from_millis((i as u64 * 73) % 400)).await;
        let idx = replicas
            .iter()
            .position(|(id, _)| *id == leader)
            .context("leader process")?;
        let (_, mut killed) = replicas.remove(idx);
        killed.kill();
        let at = tokio::time::Instant::now();
        let survivor = replicas[0].0.clone();
        wait_until(LONG, "the survivor to lead", || async {
            Ok(holder(leases.get_opt("sre-space").await?).as_deref() == Some(survivor.as_str()))
        })
        .await?;
        failovers.push(at.elapsed());
        // Replicas 0 and 1 started first; each kill brings a new one.
        replicas.push(start(format!("replica-{}", i + 2)).await?);
    }
    for i in 0..iterations {
        let name = incident_of(&format!("svc-{i}"), SignalKind::OOMKilled);
        let inc = wait_resolved(&client, &ns.name, &name, LONG).await?;
        let taken: Vec<_> = inc
            .status
            .iter()
            .flat_map(|s| s.actions.iter())
            .map(|a| (a.type_, a.state))
            .collect();
        assert_eq!(
            taken,
            [(ActionType::RaiseMemoryLimit, ActionState::Succeeded)],
            "{name}: one action"
        );
        let d = deployments.get(&format!("svc-{i}")).await?;
        assert_eq!(
            memory_limit(&d).as_deref(),
            Some("96Mi"),
            "svc-{i} raised exactly once (twice would be 144Mi)"
        );
    }
    failovers.sort();
    println!(
        "failover over {} SIGKILLs of the leader (lease 3 s): p50 {:?}, p99 {:?}, max {:?}",
        failovers.len(),
        percentile(&failovers, 0.5),
        percentile(&failovers, 0.99),
        failovers.last().copied().unwrap_or_default()
    );
    let incidents = Api::<Incident>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default())
        .await?;
    assert_eq!(
        incidents.items.len(),
        iterations,
        "one incident per fault, none lost, none doubled"
    );
    ns.cleanup().await
}

/// Waits until the Lease is held by one of `ids` and returns which.
async fn wait_leader(leases: &Api<Lease>, ids: &[&str]) -> Result<String> {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        if let Some(h) =
            holder(leases.get_opt("sre-space").await?).filter(|h| ids.contains(&h.as_str()))
        {
            return Ok(h);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no leader among {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_leader_stopped_by_sigterm_hands_the_lease_over_well_within_the_lease_duration()
-> Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-handover").await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    // The chart's defaults: a 15 s Lease, tried again every 5 s.
    let lease_seconds = 15u64;
    let seconds = lease_seconds.to_string();
    let start = async |id: &str| {
        Operator::start_standby(
            &ns.name,
            &[
                ("SRE_SPACE_LEASE_NAMESPACE", ns.name.as_str()),
                ("SRE_SPACE_LEASE_DURATION_SECONDS", seconds.as_str()),
                ("POD_NAME", id),
            ],
        )
        .await
    };
    let mut a = start("handover-a").await?;
    wait_leader(&leases, &["handover-a"]).await?;
    let _b = start("handover-b").await?;
    // Let the follower settle into its retry rhythm, and the leader renew.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        holder(leases.get_opt("sre-space").await?).as_deref(),
        Some("handover-a")
    );

    // A rolling upgrade stops the leader with SIGTERM.
    a.terminate()?;
    let at = tokio::time::Instant::now();
    wait_leader(&leases, &["handover-b"]).await?;
    let gap = at.elapsed();
    let status = a.wait_exit(Duration::from_secs(30)).await?;
    println!(
        "leader hand-over after SIGTERM: {gap:?} without a leader (lease {lease_seconds} s, retry {} s); the stopped leader exited with {status}",
        lease_seconds / 3
    );
    assert!(
        gap < Duration::from_secs(lease_seconds / 2),
        "the next replica led after {gap:?}: the stopped leader did not hand the Lease over (lease {lease_seconds} s)"
    );
    assert!(status.success(), "a clean stop: {status}");
    ns.cleanup().await
}

#[tokio::test]
async fn a_deposed_leader_that_still_believes_it_leads_is_refused_by_the_lease() -> Result<()> {
    use sre_space::fixer::Fence;
    use sre_space::lease::{LeaseConfig, lead};
    let client = client().await?;
    let ns = TestNamespace::create(&client, "e2e-fence").await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    // A long Lease: by its own clock this replica leads for the whole test.
    let cfg = LeaseConfig {
        namespace: ns.name.clone(),
        name: "sre-space".into(),
        identity: "paused-leader".into(),
        duration: Duration::from_secs(60),
        renew_every: Duration::from_secs(20),
    };
    let leadership = lead(client.clone(), cfg).await?;
    leadership.renew().await.context("the leader may act")?;

    // While it was paused (a long GC, a frozen VM), another replica found
    // the Lease expired and took it.
    let mut lease = leases.get("sre-space").await?;
    if let Some(spec) = lease.spec.as_mut() {
        spec.holder_identity = Some("new-leader".into());
    }
    leases
        .replace("sre-space", &PostParams::default(), &lease)
        .await?;

    assert!(
        leadership.is_held(),
        "by its local clock the old leader still holds the Lease"
    );
    let refused = leadership.renew().await;
    assert!(
        refused.is_err(),
        "the old leader may not act once another replica wrote the Lease"
    );
    assert_eq!(
        holder(leases.get_opt("sre-space").await?).as_deref(),
        Some("new-leader"),
        "and it did not take the Lease back"
    );
    ns.cleanup().await
}

/// The operator's peak resident memory, from /proc.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::test]
async fn a_storm_of_failing_pods_is_held_by_the_guardrails_and_the_breaker() -> Result<()> {
    let client: Client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-storm").await?;
    create_policy(&client, &ns.name, |v| {
        v["spec"]["guardrails"]["cooldownSeconds"] = 1.into();
        v["spec"]["guardrails"]["verificationWindowSeconds"] = 30.into();
        v["spec"]["guardrails"]["maxActionsPerHour"] = 1000.into();
    })
    .await?;
    let (workloads, replicas, breaker) = (50usize, 4usize, 20usize);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    for i in 0..workloads {
        deployments
            .create(
                &PostParams::default(),
                &deployment(&format!("w-{i}"), replicas as i32, "64Mi"),
            )
            .await?;
    }
    for i in 0..workloads {
        wait_ready(&client, &ns.name, &format!("w-{i}"), replicas, LONG).await?;
    }
    let breaker_env = breaker.to_string();
    let operator = Operator::start(
        &ns.name,
        &[("SRE_SPACE_BREAKER_LIMIT", breaker_env.as_str())],
    )
    .await?;
    let pid = operator.pid();

    // 200 pods fail at once: every pod of every workload crash-loops.
    let mut failed = 0;
    for i in 0..workloads {
        let target = Target {
            client: client.clone(),
            namespace: ns.name.clone(),
            deployment: format!("w-{i}"),
            dry_run: false,
        };
        for _ in 0..replicas {
            if target.crashloop(5).await.is_ok() {
                failed += 1;
            }
        }
    }
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns.name);
    wait_until(LONG, "an incident per workload", || async {
        Ok(incidents.list(&ListParams::default()).await?.items.len() == workloads)
    })
    .await?;
    // Give the operator time to act as much as it is allowed to.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let all = incidents.list(&ListParams::default()).await?.items;
    let taken = all
        .iter()
        .flat_map(|i| i.status.iter().flat_map(|s| s.actions.iter()))
        .filter(|a| {
            matches!(a.state, ActionState::Succeeded | ActionState::Failed)
                && a.type_ != ActionType::Escalate
        })
        .count();
    let held = all
        .iter()
        .filter(|i| {
            i.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Remediated" && c.reason == "CircuitBreakerOpen")
            })
        })
        .count();
    let peak = peak_rss_kib(pid).unwrap_or(0);
    println!(
        "storm: {failed} pods failed across {workloads} workloads; {} incidents; {taken} actions taken (breaker {breaker}); {held} incidents held by the breaker; operator peak RSS {} MiB",
        all.len(),
        peak / 1024
    );
    assert!(
        failed >= workloads * replicas * 9 / 10,
        "the storm happened: {failed} pods"
    );
    assert_eq!(
        all.len(),
        workloads,
        "one incident per workload, not per pod"
    );
    assert!(
        taken <= breaker,
        "the breaker held: {taken} actions > {breaker}"
    );
    assert!(held > 0, "the incidents say the breaker holds them back");
    assert!(
        peak > 0 && peak < 256 * 1024,
        "within the chart's 256Mi limit: {} MiB",
        peak / 1024
    );
    drop(operator);
    ns.cleanup().await
}
