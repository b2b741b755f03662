//! Kafka, the outside system behind the business signals: which events
//! arrived on the topics the policies name, and whether the consumer can
//! vouch that it saw all of them. The Scout's source
//! (`scout::sources::kafka`) talks to it through [`EventLog`], so that its
//! logic is tested without a broker.
//!
//! The consumer reads every partition of every followed topic itself
//! (manual assignment) under its own group id, and never commits offsets:
//!
//! - a topic named when the operator starts (or when a policy first names
//!   it) is read from its end: events from before are history, and
//!   replaying them would be a burst that says nothing about now;
//! - a topic or partition that appears later is read from its beginning,
//!   since all of it is new;
//! - no group rebalance ever pauses it or hands its partitions to another
//!   process, so a second operator (a standby, another namespace's) never
//!   takes half of the events away. The group id only names the consumer to
//!   the broker (quotas, ACLs, monitoring).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, warn};

use crate::{Error, Result};

/// Where the broker is and who the consumer is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]`.
    pub bootstrap: String,
    /// The consumer's group id.
    pub group: String,
}

/// The Kafka brokers of the business signals.
#[derive(Clone, Debug, Default, clap::Args)]
#[command(next_help_heading = "Kafka")]
pub struct KafkaOptions {
    /// The brokers whose topics ConversionRate and EventRateDrop triggers
    /// watch, `host:port[,host:port...]`; unset or empty: those triggers
    /// are not measured (a bad list too: the policies say why, the operator
    /// runs on).
    #[arg(long, env = "SRE_SPACE_KAFKA_BOOTSTRAP", value_name = "BROKERS")]
    pub kafka_bootstrap: Option<String>,
    /// The consumer's group id; it only names the consumer to the broker.
    #[arg(
        long,
        env = "SRE_SPACE_KAFKA_GROUP",
        value_name = "GROUP",
        default_value = KafkaConfig::DEFAULT_GROUP,
    )]
    pub kafka_group: String,
}

impl KafkaConfig {
    pub const DEFAULT_GROUP: &'static str = "sre-space";

    /// The brokers of the options; None without any. An empty group is the
    /// default one.
    pub fn from_options(o: &KafkaOptions) -> Result<Option<Self>> {
        Self::from_vars(o.kafka_bootstrap.clone(), Some(o.kafka_group.clone()))
    }

    fn from_vars(bootstrap: Option<String>, group: Option<String>) -> Result<Option<Self>> {
        let Some(bootstrap) = bootstrap.map(|b| b.trim().to_string()) else {
            return Ok(None);
        };
        if bootstrap.is_empty() {
            return Ok(None);
        }
        if bootstrap.split(',').any(|a| {
            a.trim()
                .rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        }) {
            return Err(Error::Config(format!(
                "SRE_SPACE_KAFKA_BOOTSTRAP={bootstrap:?} is not a list of host:port"
            )));
        }
        let group = group
            .map(|g| g.trim().to_string())
            .filter(|g| !g.is_empty())
            .unwrap_or_else(|| Self::DEFAULT_GROUP.into());
        Ok(Some(Self { bootstrap, group }))
    }
}

/// One event read from a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub topic: String,
    /// The message's timestamp (its creation time as the producer set it,
    /// or the broker's append time for such topics), Unix milliseconds.
    pub created_ms: Option<i64>,
    /// When the consumer received it, Unix milliseconds.
    pub received_ms: i64,
}

/// What a probe found of one followed topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicState {
    /// Every event that was in the topic's log at `through_ms` (the previous
    /// probe) has been read; `None` right after (re)connecting, when there
    /// is no earlier probe to vouch from.
    CaughtUp { through_ms: Option<i64> },
    /// The consumer has not yet read what the log held at the previous
    /// probe; `behind` is how many events the log holds that it has not
    /// read (high watermark minus position, over the partitions).
    Lagging { behind: i64 },
    /// The broker could not be asked.
    Unreachable { error: String },
}

/// The event log the Scout follows: a Kafka consumer in the operator, a
/// script in tests.
pub trait EventLog: Send {
    /// Follows exactly these topics from now on.
    fn follow(&mut self, topics: &BTreeSet<String>);
    /// Appends the events that arrived to `out`, waiting at most `timeout`
    /// for the first.
    fn poll(&mut self, timeout: Duration, out: &mut Vec<Event>);
    /// Asks the broker where each followed topic's log ends and compares it
    /// with what was read. Blocks for at most a few seconds.
    fn probe(&mut self, now_ms: i64) -> BTreeMap<String, TopicState>;
}

/// How long one request to the broker may take before it counts as
/// unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1500);
/// How many probes pass between metadata refreshes of topics that already
/// have partitions (new partitions are rare).
const METADATA_EVERY: u32 = 10;
/// The most events taken from the client in one poll.
const POLL_BATCH: usize = 10_000;

/// librdkafka's own logs and errors, as debug lines: the source reports
/// what matters (broker away, lag) once, in the policy's condition and the
/// log, rather than once a second per connection attempt.
pub struct Quiet;

impl ClientContext for Quiet {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        debug!(?level, facility = fac, "librdkafka: {message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        debug!(%error, reason, "librdkafka error");
    }
}

impl ConsumerContext for Quiet {}

#[derive(Clone, Debug, Default)]
struct PartitionState {
    /// The next offset to read.
    next: i64,
    /// The log's end at the previous successful probe.
    high_before: Option<i64>,
}

#[derive(Clone, Debug, Default)]
struct Followed {
    partitions: BTreeMap<i32, PartitionState>,
    /// The topic did not exist (or the broker could not say) when it was
    /// first followed: partitions found later are read from the start.
    /// Only when the broker said so: when it was unreachable, the topic is
    /// read from its end once it answers.
    absent: bool,
    /// Partitions are known (metadata answered at least once).
    known: bool,
    /// When the previous successful probe ran.
    probed_ms: Option<i64>,
}

/// The real [`EventLog`]: one librdkafka consumer, created on first use.
pub struct KafkaLog {
    config: KafkaConfig,
    consumer: Option<BaseConsumer<Quiet>>,
    followed: BTreeMap<String, Followed>,
    probes: u32,
    /// The assignment changed and must be handed to the consumer.
    dirty: bool,
}

impl KafkaLog {
    pub fn new(config: KafkaConfig) -> Self {
        Self {
            config,
            consumer: None,
            followed: BTreeMap::new(),
            probes: 0,
            dirty: false,
        }
    }

    fn consumer(&mut self) -> std::result::Result<&BaseConsumer<Quiet>, KafkaError> {
        if self.consumer.is_none() {
            let consumer: BaseConsumer<Quiet> = ClientConfig::new()
                .set("bootstrap.servers", &self.config.bootstrap)
                .set("group.id", &self.config.group)
                .set("client.id", "sre-space-scout")
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                // Only for an offset that left the log under us: go on from
                // the end rather than replay the whole topic.
                .set("auto.offset.reset", "latest")
                // Fresh events over throughput: an idle partition's fetch
                // returns within 100 ms.
                .set("fetch.wait.max.ms", "100")
                .set("socket.timeout.ms", "10000")
                .set("reconnect.backoff.max.ms", "2000")
                .create_with_context(Quiet)?;
            self.consumer = Some(consumer);
        }
        self.consumer
            .as_ref()
            .ok_or_else(|| KafkaError::ClientCreation("no consumer".into()))
    }

    /// Learns a topic's partitions; new ones start at the log's end, or at
    /// its beginning when the topic appeared after it was followed.
    fn refresh(&mut self, topic: &str) -> std::result::Result<(), KafkaError> {
        let metadata = self
            .consumer()?
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Ok(());
        };
        let exists = found.error().is_none() && !found.partitions().is_empty();
        let ids: Vec<i32> = if exists {
            found.partitions().iter().map(|p| p.id()).collect()
        } else {
            match found.error() {
                Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) | None => {}
                Some(e) => return Err(KafkaError::MetadataFetch(e.into())),
            }
            Vec::new()
        };
        let Some(state) = self.followed.get(topic).cloned() else {
            return Ok(());
        };
        // A topic's partitions that appear after it was known are new.
        let from_start = state.absent || state.known;
        let mut added = BTreeMap::new();
        for id in ids {
            if state.partitions.contains_key(&id) {
                continue;
            }
            let next = if from_start {
                self.consumer()?
                    .fetch_watermarks(topic, id, REQUEST_TIMEOUT)?
                    .0
            } else {
                self.consumer()?
                    .fetch_watermarks(topic, id, REQUEST_TIMEOUT)?
                    .1
            };
            added.insert(
                id,
                PartitionState {
                    next,
                    high_before: None,
                },
            );
        }
        if let Some(f) = self.followed.get_mut(topic) {
            if !exists && !f.known {
                f.absent = true;
            }
            f.known = true;
            if !added.is_empty() {
                debug!(topic, partitions = ?added.keys().collect::<Vec<_>>(), "following new partitions");
                f.partitions.extend(added);
                self.dirty = true;
            }
        }
        Ok(())
    }

    /// Hands the current assignment, at the offsets read so far, to the
    /// consumer.
    fn assign(&mut self) -> std::result::Result<(), KafkaError> {
        if !self.dirty {
            return Ok(());
        }
        let mut list = TopicPartitionList::new();
        for (topic, f) in &self.followed {
            for (id, p) in &f.partitions {
                list.add_partition_offset(topic, *id, Offset::Offset(p.next))?;
            }
        }
        self.consumer()?.assign(&list)?;
        self.dirty = false;
        Ok(())
    }
}

impl EventLog for KafkaLog {
    fn follow(&mut self, topics: &BTreeSet<String>) {
        let before = self.followed.len();
        self.followed.retain(|t, _| topics.contains(t));
        if self.followed.len() != before {
            self.dirty = true;
        }
        let mut reachable = true;
        for topic in topics {
            if !self.followed.contains_key(topic) {
                self.followed.insert(topic.clone(), Followed::default());
                // After one failure the others wait for the next probe
                // rather than a timeout each.
                if reachable && let Err(e) = self.refresh(topic) {
                    debug!(topic, error = %e, "could not learn the topic's partitions yet");
                    reachable = false;
                }
            }
        }
        if let Err(e) = self.assign() {
            warn!(error = %e, "could not assign the followed partitions; retrying");
        }
    }

    fn poll(&mut self, timeout: Duration, out: &mut Vec<Event>) {
        let Some(consumer) = self.consumer.as_ref() else {
            std::thread::sleep(timeout);
            return;
        };
        if self.followed.values().all(|f| f.partitions.is_empty()) {
            std::thread::sleep(timeout);
            return;
        }
        let mut wait = timeout;
        for _ in 0..POLL_BATCH {
            match consumer.poll(wait) {
                None => break,
                Some(Err(e)) => {
                    debug!(error = %e, "consumer error");
                    break;
                }
                Some(Ok(m)) => {
                    let received_ms = now_ms();
                    if let Some(p) = self
                        .followed
                        .get_mut(m.topic())
                        .and_then(|f| f.partitions.get_mut(&m.partition()))
                    {
                        p.next = p.next.max(m.offset() + 1);
                    }
                    out.push(Event {
                        topic: m.topic().to_string(),
                        created_ms: m.timestamp().to_millis(),
                        received_ms,
                    });
                }
            }
            wait = Duration::ZERO;
        }
    }

    fn probe(&mut self, now: i64) -> BTreeMap<String, TopicState> {
        self.probes = self.probes.wrapping_add(1);
        let topics: Vec<String> = self.followed.keys().cloned().collect();
        let mut states = BTreeMap::new();
        let mut unreachable: Option<String> = None;
        for topic in topics {
            if let Some(error) = &unreachable {
                // One unanswered request is enough: do not wait out a
                // timeout per partition.
                states.insert(
                    topic,
                    TopicState::Unreachable {
                        error: error.clone(),
                    },
                );
                continue;
            }
            // A topic without partitions yet is looked up at every probe,
            // so that a topic created later is read from its first event.
            let settled = self
                .followed
                .get(&topic)
                .is_some_and(|f| f.known && !f.partitions.is_empty());
            if (!settled || self.probes.is_multiple_of(METADATA_EVERY))
                && let Err(e) = self.refresh(&topic)
            {
                let error = e.to_string();
                unreachable = Some(error.clone());
                states.insert(topic, TopicState::Unreachable { error });
                continue;
            }
            match self.probe_topic(&topic, now) {
                Ok(state) => {
                    states.insert(topic, state);
                }
                Err(e) => {
                    let error = e.to_string();
                    unreachable = Some(error.clone());
                    states.insert(topic, TopicState::Unreachable { error });
                }
            }
        }
        if unreachable.is_some() {
            // Nothing vouched for until two probes in a row succeed.
            for f in self.followed.values_mut() {
                f.probed_ms = None;
                for p in f.partitions.values_mut() {
                    p.high_before = None;
                }
            }
        }
        if let Err(e) = self.assign() {
            warn!(error = %e, "could not assign the followed partitions; retrying");
        }
        states
    }
}

impl KafkaLog {
    fn probe_topic(
        &mut self,
        topic: &str,
        now: i64,
    ) -> std::result::Result<TopicState, KafkaError> {
        let ids: Vec<i32> = self
            .followed
            .get(topic)
            .map(|f| f.partitions.keys().copied().collect())
            .unwrap_or_default();
        let mut highs = Vec::with_capacity(ids.len());
        for id in &ids {
            let (_, high) = self
                .consumer()?
                .fetch_watermarks(topic, *id, REQUEST_TIMEOUT)?;
            highs.push((*id, high));
        }
        // librdkafka's own position also steps over what is never handed
        // to the application (transaction markers), which would otherwise
        // look like a lag that never ends.
        let positions = self.consumer()?.position()?;
        let Some(f) = self.followed.get_mut(topic) else {
            return Ok(TopicState::CaughtUp { through_ms: None });
        };
        for e in positions.elements_for_topic(topic) {
            if let (Some(p), Offset::Offset(at)) =
                (f.partitions.get_mut(&e.partition()), e.offset())
            {
                p.next = p.next.max(at);
            }
        }
        let mut behind = 0;
        let mut caught_up = true;
        // Vouching needs the previous probe's end of every partition.
        let mut vouched = f.probed_ms.is_some();
        for (id, high) in highs {
            if let Some(p) = f.partitions.get_mut(&id) {
                behind += (high - p.next).max(0);
                match p.high_before {
                    Some(before) if p.next < before => caught_up = false,
                    Some(_) => {}
                    None => vouched = false,
                }
                p.high_before = Some(high);
            }
        }
        let through_ms = if vouched { f.probed_ms } else { None };
        f.probed_ms = Some(now);
        Ok(if caught_up {
            TopicState::CaughtUp { through_ms }
        } else {
            TopicState::Lagging { behind }
        })
    }
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_millisecond()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_is_off_without_a_bootstrap_and_bad_addresses_are_refused_clearly() {
        assert_eq!(KafkaConfig::from_vars(None, None).ok(), Some(None));
        assert_eq!(
            KafkaConfig::from_vars(Some(" ".into()), None).ok(),
            Some(None)
        );
        let c = KafkaConfig::from_vars(Some("127.0.0.1:19092,kafka:9092".into()), None)
            .ok()
            .flatten();
        assert_eq!(
            c.map(|c| c.group),
            Some(KafkaConfig::DEFAULT_GROUP.to_string())
        );
        let c = KafkaConfig::from_vars(Some("k:1".into()), Some("mine".into()))
            .ok()
            .flatten();
        assert_eq!(c.map(|c| c.group), Some("mine".to_string()));
        let e = KafkaConfig::from_vars(Some("kafka".into()), None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("not a list of host:port"), "{e}");
    }
}
