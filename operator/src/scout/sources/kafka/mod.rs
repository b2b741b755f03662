//! The Kafka source: follows the topics that the policies' ConversionRate
//! and EventRateDrop triggers name, counts their events per second, and
//! every second posts a reading of each such trigger to the board. Whether
//! the consumer can measure is reported on each policy as the condition
//! `KafkaAvailable`.
//!
//! The consumer runs on a thread of its own (librdkafka's calls block); it
//! and the judging loop share the counts under a mutex held for a poll's
//! batch or one round of judgements, never across an await.

pub mod business;
mod sequential;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use tracing::{info, warn};

use super::{ConditionWriter, PolicyKey, Rewrite, Wanted};
use crate::clock::Clock;
use crate::conditions::KAFKA_AVAILABLE;
use crate::crd::{ConditionStatus, RemediationPolicy, SignalKind, Trigger};
use crate::kafka::{Event, EventLog, KafkaConfig, KafkaLog, TopicState};
use crate::scout::Context;
use crate::scout::measured::{Reading, Subject};
use business::Counts;

/// How often the consumer probes the broker for its position and lag.
const PROBE_EVERY_MS: i64 = 1000;
/// How long one poll of the consumer waits for events.
const POLL_WAIT: Duration = Duration::from_millis(100);
/// How often the policies' conditions are brought up to date.
const CONDITION_EVERY: u32 = 3;

/// What the consumer thread and the judging loop share.
#[derive(Default)]
pub struct Shared {
    counts: Mutex<Counts>,
    /// Topic → seconds to keep, as the policies ask.
    wanted: Mutex<BTreeMap<String, i64>>,
    /// The latest probe's finding per topic.
    states: Mutex<BTreeMap<String, TopicState>>,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn counts(&self) -> MutexGuard<'_, Counts> {
        lock(&self.counts)
    }

    pub fn want(&self, wanted: BTreeMap<String, i64>) {
        *lock(&self.wanted) = wanted;
    }

    pub fn states(&self) -> BTreeMap<String, TopicState> {
        lock(&self.states).clone()
    }
}

/// The consumer's side: follows what is wanted, counts what arrives, and
/// turns each probe into what the counts can vouch for.
pub struct Follower<L: EventLog> {
    log: L,
    shared: Arc<Shared>,
    following: BTreeMap<String, i64>,
    probed_ms: Option<i64>,
    batch: Vec<Event>,
}

impl<L: EventLog> Follower<L> {
    pub fn new(log: L, shared: Arc<Shared>) -> Self {
        Self {
            log,
            shared,
            following: BTreeMap::new(),
            probed_ms: None,
            batch: Vec::new(),
        }
    }

    /// Follows the wanted topics, probes the broker, and marks what the
    /// probe vouches for (complete seconds) or cannot (incomplete ones).
    pub fn probe(&mut self, now_ms: i64) {
        let wanted = lock(&self.shared.wanted).clone();
        let now = now_ms.div_euclid(1000);
        if wanted != self.following {
            let topics: BTreeSet<String> = wanted.keys().cloned().collect();
            self.log.follow(&topics);
            // The current second was partly before the topic was followed:
            // counting starts with the next whole one.
            self.shared.counts().follow(&wanted, now + 1);
            self.following = wanted;
        }
        let states = self.log.probe(now_ms);
        {
            let mut counts = self.shared.counts();
            for (topic, state) in &states {
                match state {
                    TopicState::CaughtUp {
                        through_ms: Some(t),
                    } => counts.confirm(topic, *t),
                    TopicState::CaughtUp { through_ms: None } => {}
                    TopicState::Lagging { .. } | TopicState::Unreachable { .. } => {
                        counts.mark_incomplete(topic, now_ms)
                    }
                }
            }
            counts.prune(now);
        }
        *lock(&self.shared.states) = states;
        self.probed_ms = Some(now_ms);
    }

    /// Reads what arrived and counts it.
    pub fn poll(&mut self, wait: Duration) {
        self.log.poll(wait, &mut self.batch);
        if self.batch.is_empty() {
            return;
        }
        let mut counts = self.shared.counts();
        for e in self.batch.drain(..) {
            counts.add(&e.topic, e.created_ms, e.received_ms);
        }
    }

    /// Runs until the source stops.
    pub fn run(mut self, clock: &dyn Clock) {
        while !self.shared.stop.load(Ordering::Relaxed) {
            let now = clock.now().as_millisecond();
            if self.probed_ms.is_none_or(|p| now - p >= PROBE_EVERY_MS) {
                self.probe(now);
            }
            self.poll(POLL_WAIT);
        }
    }
}

/// One trigger the source judges.
#[derive(Clone, Debug)]
pub struct Judged {
    pub subject: Subject,
    pub trigger: Trigger,
}

/// The ConversionRate and EventRateDrop triggers of the policies.
pub fn kafka_triggers<'a>(policies: impl Iterator<Item = &'a RemediationPolicy>) -> Vec<Judged> {
    let mut out = Vec::new();
    for p in policies {
        for t in &p.spec.triggers {
            let ours = matches!(
                (t.type_, &t.conversion, &t.event_rate),
                (SignalKind::ConversionRate, Some(_), _) | (SignalKind::EventRateDrop, _, Some(_))
            );
            let Some(workload) = t.workload.clone().filter(|_| ours) else {
                continue;
            };
            out.push(Judged {
                subject: Subject {
                    namespace: p.namespace().unwrap_or_default(),
                    policy: p.name_any(),
                    kind: t.type_,
                    workload,
                    workload_kind: crate::crd::WorkloadKind::Deployment,
                },
                trigger: t.clone(),
            });
        }
    }
    out
}

/// Each topic the triggers name, with the seconds the most demanding of
/// them needs kept.
pub fn wanted_topics(judged: &[Judged]) -> BTreeMap<String, i64> {
    let mut wanted: BTreeMap<String, i64> = BTreeMap::new();
    let mut need = |topic: &str, seconds: i64| {
        let e = wanted.entry(topic.to_string()).or_default();
        *e = (*e).max(seconds);
    };
    for j in judged {
        if let Some(c) = &j.trigger.conversion {
            need(&c.numerator_topic, business::conversion_seconds(c));
            need(&c.denominator_topic, business::conversion_seconds(c));
        }
        if let Some(r) = &j.trigger.event_rate {
            need(&r.topic, business::event_rate_seconds(r));
        }
    }
    wanted
}

/// Judges every trigger at `now`.
pub fn judge(judged: &[Judged], counts: &Counts, now: Timestamp) -> Vec<Reading> {
    judged
        .iter()
        .filter_map(|j| match (&j.trigger.conversion, &j.trigger.event_rate) {
            (Some(c), _) if j.subject.kind == SignalKind::ConversionRate => Some(
                business::evaluate_conversion(j.subject.clone(), c, counts, now),
            ),
            (_, Some(r)) if j.subject.kind == SignalKind::EventRateDrop => Some(
                business::evaluate_event_rate(j.subject.clone(), r, counts, now),
            ),
            _ => None,
        })
        .collect()
}

/// The topics a trigger reads.
fn topics_of(t: &Trigger) -> Vec<&str> {
    let mut out = Vec::new();
    if let Some(c) = &t.conversion {
        out.push(c.denominator_topic.as_str());
        out.push(c.numerator_topic.as_str());
    }
    if let Some(r) = &t.event_rate {
        out.push(r.topic.as_str());
    }
    out
}

/// What `KafkaAvailable` says for a policy whose triggers read `topics`;
/// None until every one of them has been probed.
pub fn availability(
    topics: &BTreeSet<&str>,
    states: &BTreeMap<String, TopicState>,
    bootstrap: &str,
) -> Option<(ConditionStatus, &'static str, String)> {
    let mut lagging = Vec::new();
    for topic in topics {
        match states.get(*topic)? {
            TopicState::Unreachable { error } => {
                return Some((
                    ConditionStatus::False,
                    "BrokerUnavailable",
                    format!(
                        "the Kafka broker at {bootstrap} does not answer ({error}); \
                         ConversionRate and EventRateDrop triggers read Unknown and open no incident until it does"
                    ),
                ));
            }
            TopicState::Lagging { behind } => lagging.push(format!("{behind} on {topic}")),
            TopicState::CaughtUp { .. } => {}
        }
    }
    if !lagging.is_empty() {
        return Some((
            ConditionStatus::False,
            "ConsumerLagging",
            format!(
                "the consumer is behind the log (events not yet read: {}); windows it has not read whole read Unknown",
                lagging.join(", ")
            ),
        ));
    }
    let names: Vec<&str> = topics.iter().copied().collect();
    Some((
        ConditionStatus::True,
        "Consuming",
        format!("consuming {} from {bootstrap}", names.join(", ")),
    ))
}

/// Stops the consumer thread when the source's task ends or is aborted.
struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

/// Starts the Kafka source. Without brokers (`SRE_SPACE_KAFKA_BOOTSTRAP`),
/// or with a bad list (the error), it says so once in the log, and on each
/// policy that has Kafka triggers as `KafkaAvailable` False `NotConfigured`,
/// so that the person who wrote the trigger learns why nothing is measured.
pub fn spawn(
    ctx: &Arc<Context>,
    config: std::result::Result<Option<KafkaConfig>, String>,
) -> tokio::task::JoinHandle<()> {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let why = match config {
            Ok(Some(c)) => return run(ctx, c).await,
            Ok(None) => "SRE_SPACE_KAFKA_BOOTSTRAP is not set on the operator".to_string(),
            Err(e) => e,
        };
        info!(reason = %why, "the Kafka source is off: ConversionRate and EventRateDrop triggers are not measured");
        not_configured(ctx, why).await;
    })
}

/// Tells each policy with Kafka triggers that they are not measured.
async fn not_configured(ctx: Arc<Context>, why: String) {
    let wanted = Wanted {
        status: ConditionStatus::False,
        reason: "NotConfigured",
        message: format!("{why}: ConversionRate and EventRateDrop triggers are not measured"),
    };
    let mut writer = condition_writer();
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        let policies = ctx.policies.state();
        let judged = kafka_triggers(policies.iter().map(|p| p.as_ref()));
        let measured: BTreeSet<PolicyKey> = judged
            .iter()
            .map(|j| (j.subject.namespace.clone(), j.subject.policy.clone()))
            .collect();
        writer.retain(|k| measured.contains(k));
        let now = tokio::time::Instant::now();
        for key in &measured {
            writer.write(&ctx.client, key, "", &wanted, now).await;
        }
    }
}

async fn run(ctx: Arc<Context>, config: KafkaConfig) {
    info!(bootstrap = %config.bootstrap, group = %config.group, "the Kafka source follows the topics of ConversionRate and EventRateDrop triggers");
    let shared = Arc::new(Shared::default());
    let _stop = StopOnDrop(shared.clone());
    let Some(mut consumer) = start_consumer(&ctx, &config, &shared) else {
        return;
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut writer = condition_writer();
    let mut rounds: u32 = 0;
    let mut detectors = sequential::Detectors::default();
    loop {
        tick.tick().await;
        rounds = rounds.wrapping_add(1);
        if consumer.is_finished() {
            // Only a bug ends it; until a new one has read whole windows,
            // every reading is Unknown.
            warn!("the Kafka consumer thread ended; starting it again");
            *lock(&shared.counts) = Counts::default();
            match start_consumer(&ctx, &config, &shared) {
                Some(c) => consumer = c,
                None => return,
            }
        }
        let policies = ctx.policies.state();
        let judged = kafka_triggers(policies.iter().map(|p| p.as_ref()));
        shared.want(wanted_topics(&judged));
        let readings = detectors.judge(&judged, &shared.counts(), ctx.clock.now());
        for reading in readings {
            let subject = reading.subject.clone();
            if let Err(e) = crate::scout::report(&ctx, reading).await {
                warn!(error = %e, namespace = %subject.namespace, workload = %subject.workload, kind = subject.kind.as_str(), "could not record a business signal; judged again in a second");
            }
        }
        // Forget the subjects of triggers that are gone; other sources'
        // subjects are theirs to keep.
        ctx.board.retain(|s| {
            !matches!(
                s.kind,
                SignalKind::ConversionRate | SignalKind::EventRateDrop
            ) || judged.iter().any(|j| &j.subject == s)
        });
        if rounds.is_multiple_of(CONDITION_EVERY) {
            let states = shared.states();
            update_metrics(&ctx, &states);
            update_conditions(&ctx, &config, &judged, &states, &mut writer).await;
        }
    }
}

/// What `KafkaAvailable` says, written on a change of status or reason: a
/// lagging consumer's message moves every round.
fn condition_writer() -> ConditionWriter {
    ConditionWriter::new(KAFKA_AVAILABLE, Rewrite::StatusOrReason, Duration::ZERO)
}

/// Runs the consumer on a thread of its own.
fn start_consumer(
    ctx: &Context,
    config: &KafkaConfig,
    shared: &Arc<Shared>,
) -> Option<std::thread::JoinHandle<()>> {
    let follower = Follower::new(KafkaLog::new(config.clone()), shared.clone());
    let clock = ctx.clock.clone();
    match std::thread::Builder::new()
        .name("sre-space-kafka".into())
        .spawn(move || follower.run(clock.as_ref()))
    {
        Ok(handle) => Some(handle),
        Err(e) => {
            warn!(error = %e, "could not start the Kafka consumer thread; the Kafka source is off");
            None
        }
    }
}

fn update_metrics(ctx: &Context, states: &BTreeMap<String, TopicState>) {
    ctx.metrics.kafka_lag.clear();
    for (topic, state) in states {
        let labels = crate::telemetry::TopicLabels {
            topic: topic.clone(),
        };
        let lag = match state {
            TopicState::Lagging { behind } => *behind,
            TopicState::CaughtUp { .. } => 0,
            TopicState::Unreachable { .. } => continue,
        };
        ctx.metrics.kafka_lag.get_or_create(&labels).set(lag);
    }
    let reachable = !states
        .values()
        .any(|s| matches!(s, TopicState::Unreachable { .. }));
    ctx.metrics.kafka_available.set(i64::from(reachable));
}

async fn update_conditions(
    ctx: &Context,
    config: &KafkaConfig,
    judged: &[Judged],
    states: &BTreeMap<String, TopicState>,
    writer: &mut ConditionWriter,
) {
    let mut topics: BTreeMap<(String, String), BTreeSet<&str>> = BTreeMap::new();
    for j in judged {
        topics
            .entry((j.subject.namespace.clone(), j.subject.policy.clone()))
            .or_default()
            .extend(topics_of(&j.trigger));
    }
    writer.retain(|k| topics.contains_key(k));
    let now = tokio::time::Instant::now();
    for (key, topics) in topics {
        let Some((status, reason, message)) = availability(&topics, states, &config.bootstrap)
        else {
            continue;
        };
        let wanted = Wanted {
            status,
            reason,
            message,
        };
        if writer.plan(&key, "", &wanted, now).is_none() {
            continue;
        }
        let (ns, policy) = &key;
        if status == ConditionStatus::False {
            warn!(namespace = %ns, policy = %policy, reason, message = %wanted.message, "Kafka triggers cannot be measured");
        } else if writer.has_written(&key) {
            info!(namespace = %ns, policy = %policy, "Kafka triggers are measured again");
        }
        writer.write(&ctx.client, &key, "", &wanted, now).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ConversionTrigger;
    use crate::scout::measured::Verdict;
    use std::collections::VecDeque;

    /// A broker that answers as scripted: events to hand out, and whether
    /// the next probe finds it reachable and caught up.
    #[derive(Default)]
    struct Script {
        followed: BTreeSet<String>,
        pending: VecDeque<Event>,
        down: bool,
        probed: Option<i64>,
    }

    impl EventLog for Script {
        fn follow(&mut self, topics: &BTreeSet<String>) {
            self.followed = topics.clone();
        }
        fn poll(&mut self, _: Duration, out: &mut Vec<Event>) {
            if !self.down {
                out.extend(self.pending.drain(..));
            }
        }
        fn probe(&mut self, now_ms: i64) -> BTreeMap<String, TopicState> {
            let state = if self.down {
                self.probed = None;
                TopicState::Unreachable {
                    error: "connection refused".into(),
                }
            } else {
                let through_ms = self.probed;
                self.probed = Some(now_ms);
                TopicState::CaughtUp { through_ms }
            };
            self.followed
                .iter()
                .map(|t| (t.clone(), state.clone()))
                .collect()
        }
    }

    fn judged() -> Vec<Judged> {
        let mut t = Trigger::of(SignalKind::ConversionRate);
        t.workload = Some("policy-service".into());
        t.conversion = Some(ConversionTrigger {
            numerator_topic: "policy_purchased".into(),
            denominator_topic: "quote_requested".into(),
            min_ratio: 0.2,
            min_events: 20,
            window_seconds: 10,
            detector: None,
        });
        vec![Judged {
            subject: Subject {
                namespace: "shop".into(),
                policy: "business".into(),
                kind: SignalKind::ConversionRate,
                workload: "policy-service".into(),
                workload_kind: crate::crd::WorkloadKind::Deployment,
            },
            trigger: t,
        }]
    }

    /// One simulated second: ten quotes, `purchases` purchases, a poll, a
    /// probe, then a judgement.
    fn second(f: &mut Follower<Script>, s: i64, purchases: usize) -> Reading {
        for i in 0..10 {
            let ms = s * 1000 + i * 100;
            f.log.pending.push_back(Event {
                topic: "quote_requested".into(),
                created_ms: Some(ms),
                received_ms: ms + 5,
            });
            if (i as usize) < purchases {
                f.log.pending.push_back(Event {
                    topic: "policy_purchased".into(),
                    created_ms: Some(ms + 1),
                    received_ms: ms + 6,
                });
            }
        }
        f.poll(Duration::ZERO);
        f.probe(s * 1000 + 999);
        let now = Timestamp::from_second(s + 1).expect("time");
        judge(&judged(), &f.shared.counts(), now).remove(0)
    }

    #[test]
    fn a_broker_lost_mid_stream_reads_unknown_not_firing_and_detection_works_after_it_returns() {
        let shared = Arc::new(Shared::default());
        shared.want(wanted_topics(&judged()));
        let mut f = Follower::new(Script::default(), shared.clone());
        f.probe(999_000);
        let mut verdicts = Vec::new();
        for s in 1000..1030 {
            verdicts.push(second(&mut f, s, 3).verdict);
        }
        assert_eq!(verdicts.last(), Some(&Verdict::Healthy), "{verdicts:?}");
        assert!(!verdicts.contains(&Verdict::Firing));
        // The broker goes away: nothing arrives, which looks like no
        // purchases and no quotes at all.
        f.log.down = true;
        for s in 1030..1060 {
            let r = second(&mut f, s, 3);
            assert_ne!(r.verdict, Verdict::Firing, "at {s}: {}", r.summary);
            if s >= 1035 {
                assert_eq!(r.verdict, Verdict::Unknown, "at {s}: {}", r.summary);
            }
        }
        let states = shared.states();
        let topics = BTreeSet::from(["quote_requested", "policy_purchased"]);
        let said = availability(&topics, &states, "127.0.0.1:1");
        assert_eq!(
            said.map(|(s, r, _)| (s, r)),
            Some((ConditionStatus::False, "BrokerUnavailable"))
        );
        // It returns, and purchases have stopped: once a whole window has
        // been seen again, the drop fires.
        f.log.down = false;
        f.log.pending.clear();
        let mut first_firing = None;
        for s in 1060..1090 {
            let r = second(&mut f, s, 0);
            if r.verdict == Verdict::Firing && first_firing.is_none() {
                first_firing = Some(s);
            }
            if s < 1060 + 10 {
                assert_eq!(r.verdict, Verdict::Unknown, "at {s}: {}", r.summary);
            }
        }
        assert!(first_firing.is_some_and(|s| s < 1080), "{first_firing:?}");
        let said = availability(&topics, &shared.states(), "127.0.0.1:1");
        assert_eq!(
            said.map(|(s, r, _)| (s, r)),
            Some((ConditionStatus::True, "Consuming"))
        );
        // Bounded: no more seconds kept than the window needs.
        assert!(shared.counts().seconds_kept() <= 2 * 16);
    }

    #[test]
    fn topics_are_the_union_of_the_triggers_each_kept_for_its_longest_need() {
        let mut j = judged();
        let mut rate = Trigger::of(SignalKind::EventRateDrop);
        rate.workload = Some("quote-service".into());
        rate.event_rate = Some(crate::crd::EventRateTrigger {
            topic: "quote_requested".into(),
            min_fraction: 0.5,
            window_seconds: 30,
            baseline_seconds: 300,
            min_baseline_events: 50,
            detector: None,
        });
        j.push(Judged {
            subject: Subject {
                kind: SignalKind::EventRateDrop,
                workload: "quote-service".into(),
                workload_kind: crate::crd::WorkloadKind::Deployment,
                ..j[0].subject.clone()
            },
            trigger: rate,
        });
        let wanted = wanted_topics(&j);
        assert_eq!(
            wanted,
            BTreeMap::from([
                (
                    "policy_purchased".to_string(),
                    10 + business::MAX_WATERMARK_LAG_SECONDS + 1
                ),
                (
                    "quote_requested".to_string(),
                    330 + business::MAX_WATERMARK_LAG_SECONDS + 1
                ),
            ])
        );
    }
}
