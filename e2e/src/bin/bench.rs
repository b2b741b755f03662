//! `make bench`: the operator's costs at scale on the local cluster, each
//! beside a baseline measured in the same run, printed as a table. Not a
//! pass/fail test.
//!
//! - detection latency: a pod's status changes (an OOM kill) → the Incident
//!   exists, beside a bare kube-runtime watcher seeing the same change, and
//!   beside that watcher writing an Incident (into a namespace the operator
//!   does not watch) as soon as it sees it: the least any detector that
//!   records what it saw as an Incident must pay;
//! - resident memory after the initial sync, beside a plain reflector that
//!   stores full Pods;
//! - no-op reconcile throughput: the Scout's first pass over every pod;
//! - start-up to ready;
//! - fault to the first mitigating API call on the rules path: an OOM kill
//!   under an Automatic policy → the Deployment's memory limit raised (its
//!   spec written, generation 2), beside the bare watcher seeing the same
//!   fault; for faults one at a time, then for a burst.
//!
//! Scale: `BENCH_NODES` kwok nodes (default 1000), `BENCH_PODS` pods
//! (default 10000, in Deployments of 50) and `BENCH_FAULTS` OOM kills, one
//! per Deployment, 250 ms apart (default 100), on the half of the
//! Deployments a DryRun policy watches; then OOM kills on the other
//! half, which an Automatic policy remedies with its default guardrails
//! but for `maxActionsPerHour`: first `BENCH_SINGLE` (default 5) one at a
//! time, each 2 s after the call for the last, then a burst of
//! `BENCH_ACTIONS` (default 20), `BENCH_ACTION_GAP_MS` apart (default 250: each raise starts a rollout,
//! so later faults meet a busier API server). The operator's breaker is
//! set to let all of them through.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use sre_chaos::Target;
use sre_space::crd::{Incident, IncidentSpec, SignalKind, WorkloadKind, WorkloadRef};
use sre_space_e2e::{
    TestNamespace, create_policy, deployment, install_crds, operator_bin, rss_kib,
};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v.get(((v.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn running_pods(pods: &Api<Pod>) -> Result<usize> {
    let list = pods.list(&ListParams::default()).await?;
    Ok(list
        .items
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .count())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts the full-Pod reflector on one namespace and waits until it has
/// synced.
fn start_bare_reflector(namespace: &str) -> Result<std::process::Child> {
    let bin_dir = operator_bin().parent().context("target dir")?.to_path_buf();
    let mut bare = Command::new(bin_dir.join("bare-reflector"))
        .arg(namespace)
        .stdout(Stdio::piped())
        .spawn()?;
    let out = bare.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx.recv_timeout(Duration::from_secs(300))
        .context("the bare reflector did not sync")?;
    Ok(bare)
}

/// Starts the operator on one namespace; returns it and how long it took to
/// say it started (its stores synced).
async fn start_operator(namespace: &str, port: u16) -> Result<(std::process::Child, Duration)> {
    let log = std::env::temp_dir().join(format!("{namespace}-operator.log"));
    let launched = Instant::now();
    let operator = Command::new(operator_bin())
        .env("SRE_SPACE_WATCH_NAMESPACE", namespace)
        .env("SRE_SPACE_HTTP_ADDR", format!("127.0.0.1:{port}"))
        // BENCH_OPERATOR_LOG: e.g. `info,kube=warn,kube_client=debug` logs
        // each API request the operator starts, inside its reconcile's span.
        .env(
            "RUST_LOG",
            std::env::var("BENCH_OPERATOR_LOG").unwrap_or_else(|_| "info,kube=warn".into()),
        )
        // The remedied half's faults, one at a time and in a burst, all
        // within the breaker's window.
        .env(
            "SRE_SPACE_BREAKER_LIMIT",
            (env("BENCH_SINGLE", 5) + env("BENCH_ACTIONS", 20)).to_string(),
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    while !std::fs::read_to_string(&log)?.contains("operator started") {
        anyhow::ensure!(
            launched.elapsed() < Duration::from_secs(300),
            "the operator did not start (see {})",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((operator, launched.elapsed()))
}

/// The pod label that puts a Deployment in the watched or the remedied half.
const GROUP: &str = "sre.space/bench-group";

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (nodes, pods_wanted, faults, actions) = (
        env("BENCH_NODES", 1000),
        env("BENCH_PODS", 10000),
        env("BENCH_FAULTS", 100),
        env("BENCH_ACTIONS", 20),
    );
    let client = sre_space_e2e::client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "bench").await?;
    println!(
        "== scale: {nodes} kwok nodes, {pods_wanted} pods, {faults} faults (namespace {})",
        ns.name
    );

    let node_api: Api<Node> = Api::all(client.clone());
    for i in 0..nodes {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": { "name": format!("bench-node-{i}"), "annotations": { "kwok.x-k8s.io/node": "fake" },
                          "labels": { "type": "kwok", "sre.space/bench": "true" } },
            "status": { "allocatable": { "cpu": "64", "memory": "512Gi", "pods": "250" },
                        "capacity": { "cpu": "64", "memory": "512Gi", "pods": "250" } }
        }))?;
        let _ = node_api.create(&PostParams::default(), &node).await;
    }
    // Two halves: one watched in DryRun (detection), one remedied
    // (mitigation), so that the actions' rollouts never slow the detection
    // measured on the other half.
    create_policy(&client, &ns.name, |v| {
        v["metadata"]["name"] = "bench-watch".into();
        v["spec"]["selector"] = serde_json::json!({ "matchLabels": { GROUP: "watch" } });
        v["spec"]["mode"] = "DryRun".into();
        v["spec"]["triggers"] = serde_json::json!([{ "type": "OOMKilled" }]);
    })
    .await?;
    create_policy(&client, &ns.name, |v| {
        v["metadata"]["name"] = "bench-act".into();
        v["spec"]["selector"] = serde_json::json!({ "matchLabels": { GROUP: "act" } });
        v["spec"]["triggers"] = serde_json::json!([{ "type": "OOMKilled" }]);
        v["spec"]["guardrails"]["maxActionsPerHour"] = 1000.into();
    })
    .await?;
    let per = 50usize;
    let count = pods_wanted.div_ceil(per);
    let halves = count / 2;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    for d in 0..count {
        let replicas = per.min(pods_wanted - d * per) as i32;
        let group = if d < halves { "watch" } else { "act" };
        let mut object = serde_json::to_value(deployment(&format!("b-{d}"), replicas, "64Mi"))?;
        object["spec"]["template"]["metadata"]["labels"][GROUP] = group.into();
        let object: Deployment = serde_json::from_value(object)?;
        deployments.create(&PostParams::default(), &object).await?;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let started = Instant::now();
    while running_pods(&pods).await? < pods_wanted {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(900),
            "pods did not all start in 15 minutes"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    println!(
        "== {pods_wanted} pods running after {:.0} s",
        started.elapsed().as_secs_f64()
    );

    // Memory baseline: a plain reflector of full Pods.
    let mut bare = start_bare_reflector(&ns.name)?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let bare_rss = rss_kib(bare.id());

    // What each binary costs with nothing to watch: the part of its memory
    // that does not grow with the pods.
    let empty = TestNamespace::create(&client, "bench-empty").await?;
    let (idle, _) = start_operator(&empty.name, free_port()?).await?;
    let idle_bare = start_bare_reflector(&empty.name)?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (idle_rss, idle_bare_rss) = (rss_kib(idle.id()), rss_kib(idle_bare.id()));
    for mut p in [idle, idle_bare] {
        let _ = p.kill();
        let _ = p.wait();
    }
    empty.cleanup().await?;

    // The operator, with its metrics served.
    let port = free_port()?;
    let (mut operator, ready_after) = start_operator(&ns.name, port).await?;
    // The Scout's first pass: one reconcile per pod.
    let scout_count = || -> u64 {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return 0;
        };
        use std::io::{Read, Write};
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.lines()
            .find(|l| {
                l.starts_with("sre_space_reconcile_duration_seconds_count{controller=\"scout\"}")
            })
            .and_then(|l| l.split_whitespace().last()?.parse().ok())
            .unwrap_or(0)
    };
    let pass = Instant::now();
    while scout_count() < pods_wanted as u64 {
        anyhow::ensure!(
            pass.elapsed() < Duration::from_secs(600),
            "the Scout did not look at every pod"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reconciled = scout_count();
    let throughput = reconciled as f64 / (ready_after + pass.elapsed()).as_secs_f64();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let operator_rss = rss_kib(operator.id());

    // Detection latency, beside a bare watcher of the same pods.
    let seen_bare: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
    let seen_incident: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
    let seen_written: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
    let elsewhere = TestNamespace::create(&client, "bench-writer").await?;
    let notes: Api<Incident> = Api::namespaced(client.clone(), &elsewhere.name);
    {
        let seen = seen_bare.clone();
        let writer = notes.clone();
        let stream = watcher(pods.clone(), watcher::Config::default()).applied_objects();
        tokio::spawn(stream.for_each(move |p| {
            if let Ok(p) = p {
                let oom = p
                    .status
                    .iter()
                    .flat_map(|s| s.container_statuses.iter().flatten())
                    .any(|c| {
                        c.last_state
                            .as_ref()
                            .and_then(|l| l.terminated.as_ref())
                            .and_then(|t| t.reason.as_deref())
                            == Some("OOMKilled")
                    });
                if oom
                    && let Some(owner) = p.labels().get("app")
                    && let Ok(mut s) = seen.lock()
                    && !s.contains_key(owner)
                {
                    s.insert(owner.clone(), Instant::now());
                    // The write baseline: record the sighting at once.
                    let (writer, owner) = (writer.clone(), owner.clone());
                    tokio::spawn(async move {
                        let note = Incident::new(
                            &format!("{owner}-oomkilled"),
                            IncidentSpec {
                                fingerprint: format!("bench/{owner}"),
                                target: WorkloadRef {
                                    kind: WorkloadKind::Deployment,
                                    name: owner,
                                },
                                signal: SignalKind::OOMKilled,
                                policy: "bench".into(),
                                approval: None,
                            },
                        );
                        let _ = writer.create(&PostParams::default(), &note).await;
                    });
                }
            }
            async {}
        }));
        let seen = seen_written.clone();
        let stream = watcher(notes.clone(), watcher::Config::default()).applied_objects();
        tokio::spawn(stream.for_each(move |i| {
            if let Ok(i) = i
                && let Ok(mut s) = seen.lock()
            {
                s.entry(i.spec.target.name.clone())
                    .or_insert_with(Instant::now);
            }
            async {}
        }));
        let seen = seen_incident.clone();
        let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns.name);
        let stream = watcher(incidents, watcher::Config::default()).applied_objects();
        tokio::spawn(stream.for_each(move |i| {
            if let Ok(i) = i
                && let Ok(mut s) = seen.lock()
            {
                s.entry(i.spec.target.name.clone())
                    .or_insert_with(Instant::now);
            }
            async {}
        }));
    }
    // The first write to each Deployment's spec (generation 2): for the
    // remedied half, the operator's raised memory limit.
    let seen_mitigated: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
    {
        let seen = seen_mitigated.clone();
        let stream = watcher(deployments.clone(), watcher::Config::default()).applied_objects();
        tokio::spawn(stream.for_each(move |d| {
            if let Ok(d) = d
                && d.metadata.generation.unwrap_or(1) > 1
                && let Ok(mut s) = seen.lock()
            {
                s.entry(d.name_any()).or_insert_with(Instant::now);
            }
            async {}
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let inject = |range: std::ops::Range<usize>, gap: Duration| {
        let (client, namespace) = (client.clone(), ns.name.clone());
        async move {
            let mut injected = BTreeMap::new();
            for f in range {
                let name = format!("b-{f}");
                let target = Target {
                    client: client.clone(),
                    namespace: namespace.clone(),
                    deployment: name.clone(),
                    dry_run: false,
                };
                injected.insert(name, Instant::now());
                target.oom().await?;
                tokio::time::sleep(gap).await;
            }
            anyhow::Ok(injected)
        }
    };
    let snapshot =
        |m: &Arc<Mutex<BTreeMap<String, Instant>>>| m.lock().map(|s| s.clone()).unwrap_or_default();
    let injected = inject(0..faults.min(halves), Duration::from_millis(250)).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    // One fault at a time: the next comes 2 s after the call for the last
    // (or 10 s after it, if none came).
    let singles = env("BENCH_SINGLE", 5).min(count - halves);
    let mut single = BTreeMap::new();
    for f in halves..halves + singles {
        single.extend(inject(f..f + 1, Duration::ZERO).await?);
        let waiting = Instant::now();
        while !snapshot(&seen_mitigated).contains_key(&format!("b-{f}"))
            && waiting.elapsed() < Duration::from_secs(10)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let gap = Duration::from_millis(env("BENCH_ACTION_GAP_MS", 250) as u64);
    let first = halves + singles;
    let remedied = inject(first..first + actions.min(count - first), gap).await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (mut bare_lat, mut op_lat, mut write_lat) = (vec![], vec![], vec![]);
    let (sb, si, sw) = (
        snapshot(&seen_bare),
        snapshot(&seen_incident),
        snapshot(&seen_written),
    );
    for (name, t0) in &injected {
        if let (Some(b), Some(i), Some(w)) = (sb.get(name), si.get(name), sw.get(name)) {
            bare_lat.push(b.duration_since(*t0));
            op_lat.push(i.duration_since(*t0));
            write_lat.push(w.duration_since(*t0));
        }
    }
    let measured = op_lat.len();
    let (sb, sm) = (snapshot(&seen_bare), snapshot(&seen_mitigated));
    // (bare watcher's sighting, the call) after each fault that was acted on.
    let delays = |faults: &BTreeMap<String, Instant>| {
        let (mut bare, mut call) = (vec![], vec![]);
        for (name, t0) in faults {
            if let (Some(b), Some(m)) = (sb.get(name), sm.get(name)) {
                bare.push(b.duration_since(*t0));
                call.push(m.duration_since(*t0));
            }
        }
        (bare, call)
    };
    let (mut act_bare, mut act_lat) = delays(&remedied);
    let (acted, missed) = (act_lat.len(), remedied.len() - act_lat.len());
    let (mut one_bare, mut one_lat) = delays(&single);
    let (one_acted, one_missed) = (one_lat.len(), single.len() - one_lat.len());
    let _ = operator.kill();
    let _ = bare.kill();

    println!();
    println!("| measure | SRE-Space | baseline (same run) | ratio / difference | goal |");
    println!("|---|---|---|---|---|");
    let (b50, b99, o50, o99, w50, w99) = (
        pct(&mut bare_lat, 0.5),
        pct(&mut bare_lat, 0.99),
        pct(&mut op_lat, 0.5),
        pct(&mut op_lat, 0.99),
        pct(&mut write_lat, 0.5),
        pct(&mut write_lat, 0.99),
    );
    let signed = |a: Duration, b: Duration| {
        let d = a.as_secs_f64() - b.as_secs_f64();
        format!(
            "{}{:.1} ms",
            if d < 0.0 { "−" } else { "+" },
            d.abs() * 1000.0
        )
    };
    println!(
        "| detection latency p50 ({measured} faults) | {} | bare watcher {} | {} | ≤ +10 ms |",
        ms(o50),
        ms(b50),
        signed(o50, b50)
    );
    println!(
        "| detection latency p99 | {} | bare watcher {} | {} | ≤ +50 ms |",
        ms(o99),
        ms(b99),
        signed(o99, b99)
    );
    println!(
        "| detection latency p50, against a watcher that writes | {} | watcher + one Incident write {} | {} | |",
        ms(o50),
        ms(w50),
        signed(o50, w50)
    );
    println!(
        "| detection latency p99, against a watcher that writes | {} | watcher + one Incident write {} | {} | |",
        ms(o99),
        ms(w99),
        signed(o99, w99)
    );
    let (ob50, o1_50, o1_max) = (
        pct(&mut one_bare, 0.5),
        pct(&mut one_lat, 0.5),
        pct(&mut one_lat, 1.0),
    );
    println!(
        "| fault → first mitigating API call p50, one fault at a time ({one_acted} faults, {one_missed} not acted on in 10 s) | {} | bare watcher sees the fault {} | {} | ≤ 1 s |",
        ms(o1_50),
        ms(ob50),
        signed(o1_50, ob50)
    );
    println!(
        "| fault → first mitigating API call, slowest of those | {} | | | |",
        ms(o1_max)
    );
    let (ab50, ab99, a50, a99) = (
        pct(&mut act_bare, 0.5),
        pct(&mut act_bare, 0.99),
        pct(&mut act_lat, 0.5),
        pct(&mut act_lat, 0.99),
    );
    println!(
        "| fault → first mitigating API call p50, a burst ({acted} faults {} ms apart, {missed} not acted on in 10 s) | {} | bare watcher sees the fault {} | {} | |",
        gap.as_millis(),
        ms(a50),
        ms(ab50),
        signed(a50, ab50)
    );
    println!(
        "| fault → first mitigating API call p99, the burst | {} | bare watcher sees the fault {} | {} | |",
        ms(a99),
        ms(ab99),
        signed(a99, ab99)
    );
    println!(
        "| resident memory after sync | {} MiB | full-Pod reflector {} MiB | {:.2}× | ≤ 0.6× |",
        operator_rss / 1024,
        bare_rss / 1024,
        operator_rss as f64 / bare_rss.max(1) as f64
    );
    let (grown, bare_grown) = (
        operator_rss.saturating_sub(idle_rss),
        bare_rss.saturating_sub(idle_bare_rss),
    );
    println!(
        "| memory that grows with the pods | {:.1} KiB a pod | full-Pod reflector {:.1} KiB a pod | {:.2}× | |",
        grown as f64 / pods_wanted.max(1) as f64,
        bare_grown as f64 / pods_wanted.max(1) as f64,
        grown as f64 / bare_grown.max(1) as f64
    );
    println!(
        "| resident memory watching an empty namespace | {} MiB | full-Pod reflector {} MiB | | |",
        idle_rss / 1024,
        idle_bare_rss / 1024
    );
    println!(
        "| no-op reconciles (first pass over {reconciled} pods) | {throughput:.0}/s | | | ≥ 500/s |"
    );
    println!(
        "| start-up to ready ({pods_wanted} pods) | {:.2} s | | | |",
        ready_after.as_secs_f64()
    );

    for i in 0..nodes {
        let _ = node_api
            .delete(&format!("bench-node-{i}"), &DeleteParams::default())
            .await;
    }
    elsewhere.cleanup().await?;
    ns.cleanup().await
}
