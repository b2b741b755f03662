//! The demo business (demo-apps/) deployed by the demo chart on the real
//! node, for the tests and benchmarks that need it: `Demo::deploy` gives a
//! namespace of its own with the four services on ports, topics and trace
//! names no other run uses.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use sre_chaos::load::{Plan, Tally};

use crate::{TestNamespace, chaos_bin, client, helm_output, real_node, repo_dir};

pub const SERVICES: [&str; 4] = [
    "frontend",
    "quote-service",
    "policy-service",
    "user-service",
];

pub fn env_or(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Four ports free now on every address of this host (the pods take them
/// on the host's network), from the kernel's ephemeral range.
pub fn free_ports() -> Result<Vec<u16>> {
    let listeners = (0..4)
        .map(|_| std::net::TcpListener::bind(("0.0.0.0", 0)))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// How many messages `topic` holds (the sum of its partitions' high marks).
pub fn message_count(bootstrap: &str, topic: &str) -> Result<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut total = 0;
    for t in metadata.topics() {
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
            total += high - low;
        }
    }
    Ok(total)
}

pub fn sre_chaos(args: &[&str]) -> Result<String> {
    let out = std::process::Command::new(chaos_bin())
        .args(args)
        .output()
        .with_context(|| format!("running {}", chaos_bin().display()))?;
    ensure!(
        out.status.success(),
        "sre-chaos {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

pub async fn drive(frontend: &str, seconds: u64) -> Result<Tally> {
    let plan = Plan {
        frontend: frontend.to_owned(),
        rate: 8.0,
        buy_ratio: 0.5,
        duration: Duration::from_secs(seconds),
        users: 50,
    };
    sre_chaos::load::run(&plan, |_, _| {})
        .await
        .map_err(anyhow::Error::msg)
}

/// The four services deployed by the demo chart in a namespace of their
/// own, on ports, topics and trace names no other run uses.
pub struct Demo {
    pub client: kube::Client,
    pub ns: TestNamespace,
    pub id: String,
    pub ports: Vec<u16>,
    pub token: String,
    pub bootstrap: String,
    pub query: String,
    pub quote_topic: String,
    pub purchase_topic: String,
    /// user-service's `eligibility_checked` events.
    pub user_topic: String,
    pub values_file: std::path::PathBuf,
}

impl Demo {
    pub async fn deploy(prefix: &str) -> Result<Self> {
        let node = real_node()?;
        let bootstrap = env_or("SRE_SPACE_KAFKA_BOOTSTRAP", "127.0.0.1:19092");
        let otlp = env_or("SRE_SPACE_OTLP_HTTP", "http://127.0.0.1:14318");
        let query = env_or("SRE_SPACE_JAEGER_QUERY", "http://127.0.0.1:16686");
        let client = client().await?;
        let ns = TestNamespace::create(&client, prefix).await?;
        let id = ns.name.trim_start_matches(&format!("{prefix}-")).to_owned();
        let quote_topic = format!("sre-space.e2e-quotes-{id}");
        let purchase_topic = format!("sre-space.e2e-purchases-{id}");
        let user_topic = format!("sre-space.e2e-users-{id}");
        let token = format!("chaos-{id}-{}", std::process::id());

        // The images: built by the script, imported when they changed.
        let started = Instant::now();
        let script = std::process::Command::new(repo_dir().join("e2e/cluster/demo-images.sh"))
            .env("SRE_SPACE_DEMO_BUILD", "0")
            .output()?;
        ensure!(
            script.status.success(),
            "demo-images.sh failed: {}",
            String::from_utf8_lossy(&script.stderr)
        );
        eprintln!(
            "{prefix}: images packed and imported in {:?}",
            started.elapsed()
        );

        let ports = free_ports()?;
        let values = serde_json::json!({
            "apps": {
                "enabled": true,
                "hostNetwork": true,
                "nodeSelector": { "sre.space/node": "real" },
                "tolerations": [{ "key": "sre.space/node", "operator": "Equal", "value": "real", "effect": "NoSchedule" }],
                "ports": SERVICES.iter().zip(&ports).map(|(s, p)| (s.to_string(), *p)).collect::<BTreeMap<_, _>>(),
                "kafkaBootstrap": bootstrap,
                "otlpEndpoint": otlp,
                "topics": { "quote": quote_topic, "purchase": purchase_topic, "user": user_topic },
                "serviceNameSuffix": format!("-{id}"),
                "chaosToken": token,
            },
            "policyService": { "replicas": 1 },
        });
        let values_file = std::env::temp_dir().join(format!("{}-values.json", ns.name));
        std::fs::write(&values_file, serde_json::to_vec(&values)?)?;
        let started = Instant::now();
        helm_output(&[
            "install",
            "demo",
            &repo_dir().join("charts/demo-services").to_string_lossy(),
            "-n",
            &ns.name,
            "-f",
            &values_file.to_string_lossy(),
            "--wait",
            "--timeout",
            "120s",
        ])?;
        eprintln!(
            "{prefix}: four pods Ready (Kafka connected) in {:?}",
            started.elapsed()
        );
        let pods = Api::<Pod>::namespaced(client.clone(), &ns.name)
            .list(&ListParams::default())
            .await?;
        ensure!(pods.items.len() == 4, "four pods: {}", pods.items.len());
        for p in &pods.items {
            let on = p.spec.as_ref().and_then(|s| s.node_name.clone());
            ensure!(
                on.as_deref() == Some(node.as_str()),
                "{:?} runs on the real node, not {on:?}",
                p.metadata.name
            );
        }
        Ok(Self {
            client,
            ns,
            id,
            ports,
            token,
            bootstrap,
            query,
            quote_topic,
            purchase_topic,
            user_topic,
            values_file,
        })
    }

    pub fn url(&self, service: &str) -> String {
        let i = SERVICES.iter().position(|s| *s == service).unwrap_or(0);
        format!("http://127.0.0.1:{}", self.ports[i])
    }

    pub async fn drive(&self, seconds: u64) -> Result<Tally> {
        drive(&self.url("frontend"), seconds).await
    }

    /// Has the harness's Prometheus scrape the four services' `/metrics`
    /// until the guards drop, each labelled with its namespace and
    /// Deployment, as Kubernetes service discovery would label them from
    /// the pods' `prometheus.io/*` annotations: what the rule
    /// `DemoServiceErrorRate` (e2e/cluster/prometheus/demo-rules.yml) groups by.
    pub fn scrape_with_prometheus(&self) -> Result<Vec<crate::prometheus::TargetGuard>> {
        let prometheus = crate::prometheus::Prometheus::from_env()?;
        SERVICES
            .iter()
            .zip(&self.ports)
            .map(|(service, port)| {
                prometheus.register_target(
                    &format!("{}-{service}", self.ns.name),
                    &format!("127.0.0.1:{port}"),
                    &[
                        ("namespace", self.ns.name.as_str()),
                        ("deployment", *service),
                    ],
                )
            })
            .collect()
    }

    pub fn helm(&self, args: &[&str]) -> Result<String> {
        let chart = repo_dir().join("charts/demo-services");
        let chart = chart.to_string_lossy();
        let mut all = vec![args[0], "demo", &chart, "-n", &self.ns.name];
        all.extend_from_slice(&args[1..]);
        helm_output(&all)
    }

    pub async fn finish(self) -> Result<()> {
        let _ = std::fs::remove_file(&self.values_file);
        helm_output(&["uninstall", "demo", "-n", &self.ns.name, "--wait"])?;
        self.ns.cleanup().await
    }
}
