#![cfg(feature = "cluster")]
//! Business signals from Kafka on the real broker and the real API server:
//! a test producer writes quote and purchase events to topics of its own,
//! and the real operator, following them, opens (or does not open) the
//! incident a person would expect. Each test has its own namespace, topics
//! and consumer group.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use kube::Api;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sre_space::crd::{
    ActionState, ActionType, ConditionStatus, Incident, Phase, RemediationPolicy, SignalKind,
    WorkloadKind, WorkloadRef,
};
use sre_space::workload::incident_name;
use sre_space_e2e::{Operator, Scenario, repo_dir, wait_incident, wait_until};

/// The policy `create_policy` makes (examples/remediation-policy.yaml).
const POLICY: &str = "demo-services";

/// The broker is shared by the tests of this file, and one of them stops it
/// for a minute: that one holds this for writing, the others for reading.
static BROKER: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn bootstrap() -> String {
    std::env::var("SRE_SPACE_KAFKA_BOOTSTRAP").unwrap_or_else(|_| {
        let port = std::env::var("KAFKA_PORT").unwrap_or_else(|_| "19092".into());
        format!("127.0.0.1:{port}")
    })
}

/// A small deterministic generator (xorshift), seeded per run and printed,
/// so a surprising run can be replayed.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in 0..1000.
    fn per_mille(&mut self) -> u32 {
        (self.next() % 1000) as u32
    }
}

/// Quote requests at a steady rate, each followed by a purchase with the
/// given probability (random) or share (every n-th, deterministic), as the
/// demo's quote and policy services would write them. Changed while it
/// runs; stops when dropped.
struct Traffic {
    /// Sends that fail are skipped instead of ending the traffic (while
    /// the broker is away on purpose).
    lenient: Arc<AtomicBool>,
    quotes_per_second: Arc<AtomicU32>,
    purchase_per_mille: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Traffic {
    fn start(
        quotes_topic: &str,
        purchases_topic: &str,
        quotes_per_second: u32,
        purchase_per_mille: u32,
        random_seed: Option<u64>,
    ) -> Result<Self> {
        let connect = || -> Result<FutureProducer> {
            ClientConfig::new()
                .set("bootstrap.servers", bootstrap())
                .set("message.timeout.ms", "10000")
                .set("linger.ms", "5")
                .create()
                .context("creating the producer")
        };
        let mut producer = connect()?;
        let rate = Arc::new(AtomicU32::new(quotes_per_second));
        let share = Arc::new(AtomicU32::new(purchase_per_mille));
        let stop = Arc::new(AtomicBool::new(false));
        let lenient = Arc::new(AtomicBool::new(false));
        let (q, p) = (quotes_topic.to_string(), purchases_topic.to_string());
        let (rate2, share2, stop2) = (rate.clone(), share.clone(), stop.clone());
        let lenient2 = lenient.clone();
        let task = tokio::spawn(async move {
            let mut rng = random_seed.map(|s| Xorshift(s | 1));
            let mut owed = 0u32;
            let mut n = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                let per_second = rate2.load(Ordering::Relaxed);
                if per_second == 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                let pause = Duration::from_secs_f64(1.0 / f64::from(per_second));
                n += 1;
                let id = format!("q-{n}");
                let quote = serde_json::json!({ "quoteId": id, "product": "home" }).to_string();
                let sent = producer
                    .send(
                        FutureRecord::to(&q).key(&id).payload(&quote),
                        Duration::from_secs(10),
                    )
                    .await
                    .map_err(|(e, _)| e)
                    .with_context(|| format!("producing to {q}"));
                if sent.is_err() && lenient2.load(Ordering::Relaxed) {
                    // A producer that failed while the broker was away
                    // may send nothing once it is back: in a run where no
                    // incident opened, the topics' log end stayed where
                    // the outage began. A new one starts from what the
                    // broker says now.
                    if let Ok(fresh) = connect() {
                        producer = fresh;
                    }
                    tokio::time::sleep(pause).await;
                    continue;
                }
                sent?;
                let share = share2.load(Ordering::Relaxed);
                let purchase = match rng.as_mut() {
                    Some(rng) => rng.per_mille() < share,
                    None => {
                        owed += share;
                        let due = owed >= 1000;
                        if due {
                            owed -= 1000;
                        }
                        due
                    }
                };
                if purchase {
                    let bought = serde_json::json!({ "quoteId": id, "policyId": format!("p-{n}") })
                        .to_string();
                    let sent = producer
                        .send(
                            FutureRecord::to(&p).key(&id).payload(&bought),
                            Duration::from_secs(10),
                        )
                        .await
                        .map_err(|(e, _)| e)
                        .with_context(|| format!("producing to {p}"));
                    if !lenient2.load(Ordering::Relaxed) {
                        sent?;
                    }
                }
                tokio::time::sleep(pause).await;
            }
            Ok(())
        });
        Ok(Self {
            lenient,
            quotes_per_second: rate,
            purchase_per_mille: share,
            stop,
            task,
        })
    }

    fn purchases(&self, per_mille: u32) {
        self.purchase_per_mille.store(per_mille, Ordering::Relaxed);
    }

    /// Failed sends are skipped from now on (the broker goes away on
    /// purpose).
    fn tolerate_send_errors(&self) {
        self.lenient.store(true, Ordering::Relaxed);
    }

    fn quotes(&self, per_second: u32) {
        self.quotes_per_second.store(per_second, Ordering::Relaxed);
    }

    /// Fails when the producer failed: a test must not pass on traffic
    /// that never reached the broker.
    fn check(&self) -> Result<()> {
        if self.task.is_finished() && !self.stop.load(Ordering::Relaxed) {
            bail!("the test producer stopped early (see its error when the test ends)");
        }
        Ok(())
    }

    async fn finish(self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await?
    }
}

/// What a business-signal test does on top of its scenario: its own
/// topics and consumer group, a dry-run policy, and the operator following
/// the broker.
trait Business {
    fn topic(&self, base: &str) -> String;
    async fn dry_run_policy(&self, triggers: serde_json::Value, verify: i64) -> Result<()>;
    async fn kafka_operator(&self, bootstrap: &str) -> Result<Operator>;
    async fn kafka_condition(&self) -> Result<Option<(ConditionStatus, String, String)>>;
    async fn wait_kafka(&self, status: ConditionStatus, reason: &str, op: &Operator) -> Result<()>;
    async fn no_incident_for(
        &self,
        period: Duration,
        traffic: &Traffic,
        op: &Operator,
    ) -> Result<()>;
    async fn wait_opened(&self, name: &str, op: &Operator) -> Result<Incident>;
}

impl Business for Scenario {
    fn topic(&self, base: &str) -> String {
        format!("{base}.e2e-{}", self.id)
    }

    /// The demo policy with these triggers, a dry-run ladder of one
    /// rollout restart (so the incident resolves once the signal clears)
    /// and a verification window of `verify` seconds.
    async fn dry_run_policy(&self, triggers: serde_json::Value, verify: i64) -> Result<()> {
        self.policy(|v| {
            v["spec"]["triggers"] = triggers;
            v["spec"]["actions"] = serde_json::json!([
                { "type": "RolloutRestart" },
                { "type": "Escalate" }
            ]);
            v["spec"]["mode"] = "DryRun".into();
            v["spec"]["guardrails"]["verificationWindowSeconds"] = verify.into();
        })
        .await?;
        Ok(())
    }

    async fn kafka_operator(&self, bootstrap: &str) -> Result<Operator> {
        self.operator(&[
            ("SRE_SPACE_KAFKA_BOOTSTRAP", bootstrap),
            (
                "SRE_SPACE_KAFKA_GROUP",
                &format!("sre-space-e2e-{}", self.id),
            ),
        ])
        .await
    }

    /// The policy's KafkaAvailable condition: (status, reason, message).
    async fn kafka_condition(&self) -> Result<Option<(ConditionStatus, String, String)>> {
        let policy = Api::<RemediationPolicy>::namespaced(self.client.clone(), self.name())
            .get(POLICY)
            .await?;
        Ok(policy
            .status
            .unwrap_or_default()
            .conditions
            .into_iter()
            .find(|c| c.type_ == "KafkaAvailable")
            .map(|c| (c.status, c.reason, c.message)))
    }

    async fn wait_kafka(&self, status: ConditionStatus, reason: &str, op: &Operator) -> Result<()> {
        let waited = wait_until(
            Duration::from_secs(60),
            &format!("KafkaAvailable={status:?} {reason} on the policy"),
            || async {
                Ok(self
                    .kafka_condition()
                    .await?
                    .is_some_and(|(s, r, _)| s == status && r == reason))
            },
        )
        .await;
        if let Err(e) = waited {
            let now = self.kafka_condition().await.ok().flatten();
            bail!(
                "{e:#}; the condition is {now:?}; operator log:\n{}",
                op.output()
            );
        }
        Ok(())
    }

    /// Fails as soon as any incident opens, for `period`.
    async fn no_incident_for(
        &self,
        period: Duration,
        traffic: &Traffic,
        op: &Operator,
    ) -> Result<()> {
        let until = Instant::now() + period;
        while Instant::now() < until {
            traffic.check()?;
            let open = self.incidents().await?;
            if let Some(i) = open.first() {
                bail!(
                    "an incident opened where none should: {} ({}); operator log:\n{}",
                    i.metadata.name.as_deref().unwrap_or("?"),
                    i.status
                        .as_ref()
                        .and_then(|s| s.last_signal.as_ref())
                        .map(|s| s.message.as_str())
                        .unwrap_or_default(),
                    op.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    }

    async fn wait_opened(&self, name: &str, op: &Operator) -> Result<Incident> {
        wait_incident(
            &self.client,
            self.name(),
            name,
            Duration::from_secs(60),
            "the incident to open",
            |i| i.status.as_ref().is_some_and(|s| s.occurrences > 0),
        )
        .await
        .with_context(|| format!("operator log:\n{}", op.output()))
    }
}

fn conversion_trigger(
    quotes: &str,
    purchases: &str,
    min_events: i64,
    window: i64,
) -> serde_json::Value {
    serde_json::json!({
        "type": "ConversionRate",
        "workload": "policy-service",
        "conversion": {
            "numeratorTopic": purchases,
            "denominatorTopic": quotes,
            "minRatio": 0.2,
            "minEvents": min_events,
            "windowSeconds": window
        }
    })
}

fn conversion_incident() -> String {
    incident_name(
        &WorkloadRef {
            kind: WorkloadKind::Deployment,
            name: "policy-service".into(),
        },
        SignalKind::ConversionRate,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purchases_stopping_opens_one_conversion_incident_that_resolves_when_they_return()
-> Result<()> {
    let _broker = BROKER.read().await;
    let s = Scenario::builder("e2e-conversion").start().await?;
    let (quotes, purchases) = (s.topic("quote_requested"), s.topic("policy_purchased"));
    // 10 quotes a second, every third-or-so bought: 30%.
    let traffic = Traffic::start(&quotes, &purchases, 10, 300, None)?;
    s.deploy_each(&["policy-service"]).await?;
    s.dry_run_policy(
        serde_json::json!([conversion_trigger(&quotes, &purchases, 20, 10)]),
        40,
    )
    .await?;
    let op = s.kafka_operator(&bootstrap()).await?;
    s.wait_kafka(ConditionStatus::True, "Consuming", &op)
        .await?;
    // A full window of healthy conversion: nothing opens.
    s.no_incident_for(Duration::from_secs(20), &traffic, &op)
        .await?;

    traffic.purchases(0);
    let fault = Instant::now();
    let name = conversion_incident();
    assert!(
        name.starts_with("policy-service-conversionrate-"),
        "readable: {name}"
    );
    let inc = s.wait_opened(&name, &op).await?;
    let detected = fault.elapsed();
    println!(
        "fault to incident: {:.1} s (window 10 s, minRatio 0.2, 30% before the fault)",
        detected.as_secs_f64()
    );
    let status = inc.status.clone().unwrap_or_default();
    let said = status.last_signal.map(|s| s.message).unwrap_or_default();
    assert!(
        said.starts_with("conversion 0.")
            && said.contains(&format!("{purchases} / "))
            && said.ends_with("is below the minimum 0.2"),
        "the incident says what was measured: {said}"
    );
    assert_eq!(inc.spec.signal, SignalKind::ConversionRate);

    // Purchases return: the signal clears within the verification window
    // and the incident resolves.
    traffic.purchases(300);
    let resolved = wait_incident(
        &s.client,
        s.name(),
        &name,
        Duration::from_secs(120),
        "Resolved",
        |i| {
            i.status
                .as_ref()
                .is_some_and(|s| s.phase == Phase::Resolved)
        },
    )
    .await
    .with_context(|| format!("operator log:\n{}", op.output()))?;
    let status = resolved.status.clone().unwrap_or_default();
    let cleared = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Resolved")
        .map(|c| (c.status, c.reason.clone()));
    assert_eq!(
        cleared,
        Some((ConditionStatus::True, "SignalCleared".to_string()))
    );
    let actions: Vec<(ActionType, ActionState)> =
        status.actions.iter().map(|a| (a.type_, a.state)).collect();
    assert_eq!(
        actions,
        [(ActionType::RolloutRestart, ActionState::DryRun)],
        "a dry run changes nothing and is the only step"
    );
    // It stays resolved, and it was the only incident.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let all = s.incidents().await?;
    let names: Vec<_> = all
        .iter()
        .map(|i| i.metadata.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(names, [name]);
    assert_eq!(
        all[0].status.as_ref().map(|s| (s.phase, s.occurrences)),
        Some((Phase::Resolved, 1)),
        "one episode, still resolved"
    );

    traffic.finish().await?;
    s.cleanup().await
}

/// The conversion story judged by the sequential detector, up to the
/// fault: the policy-service deployed, a dry-run policy whose ConversionRate
/// trigger selects `detector`, the operator consuming, and `learn` of
/// traffic during which nothing opens.
async fn sequential_story(
    s: &Scenario,
    traffic: &Traffic,
    detector: serde_json::Value,
    learn: Duration,
) -> Result<Operator> {
    let (quotes, purchases) = (s.topic("quote_requested"), s.topic("policy_purchased"));
    s.deploy_each(&["policy-service"]).await?;
    let mut trigger = conversion_trigger(&quotes, &purchases, 20, 10);
    trigger["conversion"]["detector"] = detector;
    s.dry_run_policy(serde_json::json!([trigger]), 40).await?;
    let op = s.kafka_operator(&bootstrap()).await?;
    s.wait_kafka(ConditionStatus::True, "Consuming", &op)
        .await?;
    s.no_incident_for(learn, traffic, &op).await?;
    Ok(op)
}

/// Waits for the conversion incident to open; how long after `fault` it
/// did, and what its last signal said.
async fn opened_since(s: &Scenario, op: &Operator, fault: Instant) -> Result<(Duration, String)> {
    let inc = s.wait_opened(&conversion_incident(), op).await?;
    let detected = fault.elapsed();
    let said = inc
        .status
        .unwrap_or_default()
        .last_signal
        .map(|s| s.message)
        .unwrap_or_default();
    Ok((detected, said))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_sequential_detector_purchases_stopping_opens_the_incident_within_seconds()
-> Result<()> {
    let _broker = BROKER.read().await;
    let s = Scenario::builder("e2e-sequential").start().await?;
    let (quotes, purchases) = (s.topic("quote_requested"), s.topic("policy_purchased"));
    // 10 quotes a second, 30% bought: 3 purchases a second.
    let traffic = Traffic::start(&quotes, &purchases, 10, 300, None)?;
    // A short memory, so that the baseline is learned within the test: a
    // half-life, then judged, and nothing opens.
    let op = sequential_story(
        &s,
        &traffic,
        serde_json::json!({"type": "Sequential", "falseAlarmsPerDay": 1, "halfLifeSeconds": 20}),
        Duration::from_secs(45),
    )
    .await?;

    traffic.purchases(0);
    let fault = Instant::now();
    let (detected, said) = opened_since(&s, &op, fault).await?;
    let name = conversion_incident();
    println!(
        "fault to incident with the sequential detector: {:.1} s (3 purchases/s before the fault)",
        detected.as_secs_f64()
    );
    assert!(
        said.starts_with("sequential detector (")
            && said.contains(&format!("{purchases} per {quotes}: a drop"))
            && said.contains("evidence since second"),
        "the incident says which rule judged and its evidence: {said}"
    );
    assert!(
        detected < Duration::from_secs(15),
        "a full stop at 3/s is evidence within a few seconds: {detected:?}"
    );

    // Purchases return: the evidence clears and the incident resolves.
    traffic.purchases(300);
    wait_incident(
        &s.client,
        s.name(),
        &name,
        Duration::from_secs(120),
        "Resolved",
        |i| {
            i.status
                .as_ref()
                .is_some_and(|s| s.phase == Phase::Resolved)
        },
    )
    .await
    .with_context(|| format!("operator log:\n{}", op.output()))?;

    traffic.finish().await?;
    s.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_sequential_detector_purchases_halving_opens_the_incident_within_seconds()
-> Result<()> {
    let _broker = BROKER.read().await;
    let s = Scenario::builder("e2e-sequential-half").start().await?;
    let (quotes, purchases) = (s.topic("quote_requested"), s.topic("policy_purchased"));
    // 40 quotes a second asked for (the producer awaits each send, so
    // about 29 arrive), each bought with probability 0.2 (seeded draws):
    // about 6 purchases a second, judged in the binomial form. At 20 asked
    // for (17 arriving, 3.4 purchases a second) a baseline learned for 75 s
    // is noisy enough that one halving in a hundred takes 49 s or more
    // (400 offline runs: p50 16 s, p95 36 s, slowest 72 s); at this rate,
    // p50 9 s, p99 25 s, slowest 36 s.
    let seed = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    println!("purchase draws seeded with {seed}");
    let traffic = Traffic::start(&quotes, &purchases, 40, 200, Some(seed))?;
    // A minute's memory, so that the baseline is learned within the test
    // and rests on a few hundred purchases: a half-life of learning, then
    // a quarter of a minute judged, and nothing opens on the draws' noise.
    let op = sequential_story(
        &s,
        &traffic,
        serde_json::json!({
            "type": "Sequential",
            "falseAlarmsPerDay": 1,
            "minDropFraction": 0.5,
            "halfLifeSeconds": 60
        }),
        Duration::from_secs(75),
    )
    .await?;

    traffic.purchases(100);
    let (detected, said) = opened_since(&s, &op, Instant::now()).await?;
    println!(
        "fault to incident with the sequential detector, purchases halved: {:.1} s",
        detected.as_secs_f64()
    );
    println!("the incident's signal: {said}");
    // The halving is the policy's chart's to see: the near-stop chart
    // tests for 90%, which a halving is evidence against.
    assert!(
        said.starts_with("sequential detector (50% drop)")
            && said.contains(&format!("{purchases} per {quotes}: a drop")),
        "the incident says which chart judged and its evidence: {said}"
    );
    // One live drop is one draw of the distribution above, plus the
    // watermark's second or two and the Incident's write.
    assert!(
        detected < Duration::from_secs(45),
        "a halving at 6 purchases/s is evidence within seconds: {detected:?}"
    );

    traffic.finish().await?;
    s.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_quotes_open_nothing_however_low_the_conversion() -> Result<()> {
    let _broker = BROKER.read().await;
    let s = Scenario::builder("e2e-few-events").start().await?;
    let (quotes, purchases) = (s.topic("quote_requested"), s.topic("policy_purchased"));
    // One quote a second and no purchase at all: 10 quotes per 10 s
    // window, half the 20 the policy needs.
    let traffic = Traffic::start(&quotes, &purchases, 1, 0, None)?;
    s.deploy_each(&["policy-service"]).await?;
    s.dry_run_policy(
        serde_json::json!([conversion_trigger(&quotes, &purchases, 20, 10)]),
        30,
    )
    .await?;
    let op = s.kafka_operator(&bootstrap()).await?;
    s.wait_kafka(ConditionStatus::True, "Consuming", &op)
        .await?;
    s.no_incident_for(Duration::from_secs(30), &traffic, &op)
        .await?;

    // The same zero conversion with enough quotes does open one: the quiet
    // above was the minimum at work, not a source that measures nothing.
    traffic.quotes(10);
    let fault = Instant::now();
    s.wait_opened(&conversion_incident(), &op).await?;
    println!(
        "enough quotes to incident: {:.1} s",
        fault.elapsed().as_secs_f64()
    );

    traffic.finish().await?;
    s.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_traffic_with_random_variance_opens_no_incident_for_minutes() -> Result<()> {
    let _broker = BROKER.read().await;
    let s = Scenario::builder("e2e-business-noop").start().await?;
    let (quotes, purchases) = (s.topic("quote_requested"), s.topic("policy_purchased"));
    let seed = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    println!("purchase draws seeded with {seed}");
    // Each quote bought with probability 0.3, independently.
    let traffic = Traffic::start(&quotes, &purchases, 10, 300, Some(seed))?;
    s.deploy_each(&["policy-service"]).await?;
    s.deploy_each(&["quote-service"]).await?;
    s.dry_run_policy(
        serde_json::json!([
            conversion_trigger(&quotes, &purchases, 20, 30),
            {
                "type": "EventRateDrop",
                "workload": "quote-service",
                "eventRate": {
                    "topic": quotes,
                    "minFraction": 0.5,
                    "windowSeconds": 10,
                    "baselineSeconds": 60,
                    "minBaselineEvents": 50
                }
            }
        ]),
        30,
    )
    .await?;
    let op = s.kafka_operator(&bootstrap()).await?;
    s.wait_kafka(ConditionStatus::True, "Consuming", &op)
        .await?;
    let cpu_before = cpu_seconds(op.pid());
    s.no_incident_for(Duration::from_secs(150), &traffic, &op)
        .await?;
    println!(
        "operator over 150 s of 10 quotes/s with two triggers: {:.1} s of CPU, {} KiB resident",
        cpu_seconds(op.pid()) - cpu_before,
        sre_space_e2e::rss_kib(op.pid())
    );
    assert_eq!(
        s.kafka_condition().await?.map(|(st, r, _)| (st, r)),
        Some((ConditionStatus::True, "Consuming".to_string()))
    );

    // The quotes stop: the rate trigger, watching all along, fires.
    traffic.quotes(0);
    let fault = Instant::now();
    let name = incident_name(
        &WorkloadRef {
            kind: WorkloadKind::Deployment,
            name: "quote-service".into(),
        },
        SignalKind::EventRateDrop,
    );
    let inc = s.wait_opened(&name, &op).await?;
    println!(
        "quotes stopping to EventRateDrop incident: {:.1} s",
        fault.elapsed().as_secs_f64()
    );
    let said = inc
        .status
        .and_then(|s| s.last_signal)
        .map(|s| s.message)
        .unwrap_or_default();
    assert!(said.contains("below the minimum 50%"), "{said}");

    traffic.finish().await?;
    s.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_bootstrap_the_policy_says_its_kafka_triggers_are_not_measured() -> Result<()> {
    let s = Scenario::builder("e2e-kafka-off").start().await?;
    let (quotes, purchases) = (s.topic("quote_requested"), s.topic("policy_purchased"));
    s.deploy_each(&["policy-service"]).await?;
    s.dry_run_policy(
        serde_json::json!([conversion_trigger(&quotes, &purchases, 20, 10)]),
        30,
    )
    .await?;
    let op = s.kafka_operator("").await?;
    s.wait_kafka(ConditionStatus::False, "NotConfigured", &op)
        .await?;
    let message = s
        .kafka_condition()
        .await?
        .map(|(_, _, m)| m)
        .unwrap_or_default();
    assert!(
        message.contains("SRE_SPACE_KAFKA_BOOTSTRAP is not set"),
        "{message}"
    );
    let log = op.output();
    assert_eq!(
        log.matches("the Kafka source is off").count(),
        1,
        "said once in the log:\n{log}"
    );
    s.cleanup().await
}

/// CPU seconds a process has used, from /proc (0 when unknown; Linux
/// counts in hundredths of a second).
fn cpu_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses.
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

/// Forwards every connection on `listener` to `to` until dropped.
async fn forward(listener: tokio::net::TcpListener, to: String) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        let to = to.clone();
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(&to).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_opens_no_incident_says_so_and_detection_starts_when_it_answers()
-> Result<()> {
    let _broker = BROKER.read().await;
    let s = Scenario::builder("e2e-broker-away").start().await?;
    let (quotes, purchases) = (s.topic("quote_requested"), s.topic("policy_purchased"));
    // The conversion is already zero: a source that guessed would fire.
    let traffic = Traffic::start(&quotes, &purchases, 10, 0, None)?;
    s.deploy_each(&["policy-service"]).await?;
    s.dry_run_policy(
        serde_json::json!([conversion_trigger(&quotes, &purchases, 20, 10)]),
        30,
    )
    .await?;
    // A loopback port nobody listens on (yet).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let away = format!("127.0.0.1:{port}");
    let op = s.kafka_operator(&away).await?;
    s.wait_kafka(ConditionStatus::False, "BrokerUnavailable", &op)
        .await?;
    let message = s
        .kafka_condition()
        .await?
        .map(|(_, _, m)| m)
        .unwrap_or_default();
    assert!(message.contains(&away), "{message}");
    s.no_incident_for(Duration::from_secs(25), &traffic, &op)
        .await?;
    assert!(
        op.output().contains("Kafka triggers cannot be measured"),
        "the log says why"
    );

    // The broker answers on that address (a forwarder to the real one; it
    // advertises its own address, so the operator then talks to it
    // directly).
    let listener = tokio::net::TcpListener::bind(&away).await?;
    let forwarder = tokio::spawn(forward(listener, bootstrap()));
    s.wait_kafka(ConditionStatus::True, "Consuming", &op)
        .await?;
    let back = Instant::now();
    s.wait_opened(&conversion_incident(), &op).await?;
    println!(
        "broker answering to incident: {:.1} s (a whole 10 s window must be read first)",
        back.elapsed().as_secs_f64()
    );

    forwarder.abort();
    traffic.finish().await?;
    s.cleanup().await
}

/// Runs the harness's signals script (`kafka-stop`, `kafka-start`).
fn signals(command: &str) -> Result<()> {
    let out = std::process::Command::new(repo_dir().join("e2e/cluster/signals.sh"))
        .arg(command)
        .output()
        .context("running e2e/cluster/signals.sh")?;
    anyhow::ensure!(
        out.status.success(),
        "signals.sh {command} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_away_for_a_minute_opens_no_incident_and_detection_resumes_after() -> Result<()> {
    let _broker = BROKER.write().await;
    let s = Scenario::builder("e2e-broker-outage").start().await?;
    let (quotes, purchases) = (s.topic("quote_requested"), s.topic("policy_purchased"));
    let traffic = Traffic::start(&quotes, &purchases, 10, 300, None)?;
    s.deploy_each(&["policy-service"]).await?;
    s.dry_run_policy(
        serde_json::json!([conversion_trigger(&quotes, &purchases, 20, 10)]),
        20,
    )
    .await?;
    let op = s.kafka_operator(&bootstrap()).await?;
    s.wait_kafka(ConditionStatus::True, "Consuming", &op)
        .await?;
    s.no_incident_for(Duration::from_secs(15), &traffic, &op)
        .await?;

    // The broker goes away for a minute: no quotes and no purchases reach
    // it, which must read as "cannot measure", never as a conversion drop.
    traffic.tolerate_send_errors();
    let outage = Instant::now();
    tokio::task::spawn_blocking(|| signals("kafka-stop")).await??;
    s.wait_kafka(ConditionStatus::False, "BrokerUnavailable", &op)
        .await?;
    s.no_incident_for(
        Duration::from_secs(60).saturating_sub(outage.elapsed()),
        &traffic,
        &op,
    )
    .await?;
    tokio::task::spawn_blocking(|| signals("kafka-start")).await??;
    s.wait_kafka(ConditionStatus::True, "Consuming", &op)
        .await?;
    println!(
        "broker back after {:.0} s; the source consumes again",
        outage.elapsed().as_secs_f64()
    );
    // The events buffered during the outage arrive late: still no incident
    // over a full window after the return.
    s.no_incident_for(Duration::from_secs(15), &traffic, &op)
        .await?;

    // Detection works again.
    traffic.purchases(0);
    let fault = Instant::now();
    s.wait_opened(&conversion_incident(), &op).await?;
    println!(
        "after the outage, fault to incident: {:.1} s",
        fault.elapsed().as_secs_f64()
    );
    traffic.finish().await?;
    s.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_services_producer_publishes_again_once_the_broker_is_back() -> Result<()> {
    use sre_space_demo::events::Events;
    use sre_space_demo::telemetry::TraceContext;

    let _broker = BROKER.write().await;
    let s = Scenario::builder("e2e-demo-producer").start().await?;
    let topic = s.topic("quote_requested");
    // The demo services' own producer (idempotent, acks=all), as
    // quote-service makes it.
    let events = Events::connect(&bootstrap(), "e2e-demo-producer")?;
    let trace = TraceContext {
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        span_id: "00f067aa0ba902b7".into(),
        sampled: true,
    };
    let event = serde_json::json!({ "quoteId": "q-0", "product": "home" });
    events
        .publish(&topic, "q-0", &event, &trace)
        .await
        .context("publishing with the broker up")?;

    let outage = Instant::now();
    tokio::task::spawn_blocking(|| signals("kafka-stop")).await??;
    // Two sends time out (an idempotent producer whose messages time out
    // must move to a new epoch, not stop), as a service's would.
    for n in 1..3 {
        let failed = events
            .publish(&topic, &format!("q-{n}"), &event, &trace)
            .await;
        assert!(
            failed.is_err(),
            "a publish with no broker fails: {failed:?}"
        );
    }
    tokio::task::spawn_blocking(|| signals("kafka-start")).await??;
    let back = Instant::now();
    println!("broker back after {:.0} s", outage.elapsed().as_secs_f64());
    // The same producer publishes again: a service must not need a
    // restart after its broker's.
    let mut last = None;
    while back.elapsed() < Duration::from_secs(60) {
        match events.publish(&topic, "q-again", &event, &trace).await {
            Ok(()) => {
                println!(
                    "published again {:.1} s after the broker's return",
                    back.elapsed().as_secs_f64()
                );
                return s.cleanup().await;
            }
            Err(e) => last = Some(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("the producer did not publish within 60 s of the broker's return: {last:?}")
}
