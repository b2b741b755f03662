//! Delivery, in one background task fed by a bounded queue. The notifier
//! offers and never waits: a full queue drops the offer (counted and
//! logged; the next reconcile offers it again). Each incident's messages to
//! each sink are paced (`Pacer`, pure): close events coalesce into one
//! message, a sink's minimum interval is kept, and a failure is retried
//! with exponential backoff a bounded number of times. A delivery is
//! recorded in the Incident's status, so nothing is sent twice across a
//! restart or a change of leader.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use super::{Notice, Outgoing, Pacing, Sink, SinkError, Subject};
use crate::clock::Clock;
use crate::crd::NotificationRecord;
use crate::telemetry::{Metrics, NotificationLabels};

/// One incident's episode as one sink sees it: its messages are paced
/// together, and a Slack bot keeps one message for it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot {
    pub namespace: String,
    pub incident: String,
    pub sink: String,
    pub episode: i64,
}

/// What the notifier offers: announcements due for one slot.
#[derive(Clone, Debug)]
pub struct Job {
    pub slot: Slot,
    pub subject: Subject,
    pub notices: Vec<Notice>,
    pub history: Vec<Notice>,
    /// The id of the slot's message delivered before (from the status).
    pub thread: Option<String>,
}

/// How failed deliveries are retried.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    pub first: Duration,
    pub max: Duration,
    /// Attempts in all, the first included.
    pub attempts: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            first: Duration::from_secs(1),
            max: Duration::from_secs(60),
            attempts: 8,
        }
    }
}

impl Retry {
    /// The wait after the `failures`th failure in a row: 1 s, 2 s, 4 s, ...
    /// up to the maximum.
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(30));
        self.first.saturating_mul(factor).min(self.max)
    }
}

type Key = (Slot, String);

#[derive(Default)]
struct LedgerState {
    /// Offered, not yet delivered or given up.
    queued: HashSet<Key>,
    /// Delivered by this process (kept until the status shows it).
    delivered: HashSet<Key>,
    /// Given up on: not offered again by this process.
    abandoned: HashSet<Key>,
}

/// What the notifier and the delivery task share: which announcements are
/// under way or done, so that none is offered twice.
#[derive(Default)]
pub struct Ledger(Mutex<LedgerState>);

/// Entries kept of each kind; past it the oldest knowledge is the status.
const LEDGER_MAX: usize = 10_000;

impl Ledger {
    fn with<T>(&self, f: impl FnOnce(&mut LedgerState) -> T) -> T {
        match self.0.lock() {
            Ok(mut g) => f(&mut g),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Whether `key` still needs offering (not queued, delivered or given
    /// up here).
    pub fn unsettled(&self, slot: &Slot, key: &str) -> bool {
        let k = (slot.clone(), key.to_string());
        self.with(|s| {
            !s.queued.contains(&k) && !s.delivered.contains(&k) && !s.abandoned.contains(&k)
        })
    }

    fn queue(&self, slot: &Slot, notices: &[Notice]) {
        self.with(|s| {
            for n in notices {
                s.queued.insert((slot.clone(), n.key.clone()));
            }
        })
    }

    fn unqueue(&self, slot: &Slot, notices: &[Notice]) {
        self.with(|s| {
            for n in notices {
                s.queued.remove(&(slot.clone(), n.key.clone()));
            }
        })
    }

    fn settle(&self, slot: &Slot, notices: &[Notice], delivered: bool) {
        self.with(|s| {
            for n in notices {
                let k = (slot.clone(), n.key.clone());
                s.queued.remove(&k);
                let set = if delivered {
                    &mut s.delivered
                } else {
                    &mut s.abandoned
                };
                if set.len() >= LEDGER_MAX {
                    set.clear();
                }
                set.insert(k);
            }
        })
    }
}

/// The notifier's end of the queue.
#[derive(Clone)]
pub struct Queue {
    tx: mpsc::Sender<Job>,
    ledger: Arc<Ledger>,
    metrics: Arc<Metrics>,
}

impl Queue {
    /// Offers a job without waiting; false when the queue is full (the
    /// job is dropped, counted and logged).
    pub fn offer(&self, job: Job) -> bool {
        self.ledger.queue(&job.slot, &job.notices);
        match self.tx.try_send(job) {
            Ok(()) => true,
            Err(e) => {
                let job = match e {
                    mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => j,
                };
                self.ledger.unqueue(&job.slot, &job.notices);
                let labels = NotificationLabels {
                    sink: job.slot.sink.clone(),
                    result: "dropped".into(),
                };
                self.metrics
                    .notifications
                    .get_or_create(&labels)
                    .inc_by(job.notices.len() as u64);
                warn!(
                    namespace = %job.slot.namespace,
                    incident = %job.slot.incident,
                    sink = %job.slot.sink,
                    "the notification queue is full; dropped, offered again later"
                );
                false
            }
        }
    }

    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }
}

/// A queue of `capacity` jobs and the receiving end for [`Deliverer::run`].
pub fn queue(
    capacity: usize,
    ledger: Arc<Ledger>,
    metrics: Arc<Metrics>,
) -> (Queue, mpsc::Receiver<Job>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        Queue {
            tx,
            ledger,
            metrics,
        },
        rx,
    )
}

struct Batch {
    subject: Subject,
    notices: Vec<Notice>,
    history: Vec<Notice>,
    pacing: Pacing,
    first_at: Instant,
    failures: u32,
    retry_at: Option<Instant>,
    sending: bool,
}

/// A message ready to go.
pub struct Ready {
    pub slot: Slot,
    pub outgoing: Outgoing,
    pub thread: Option<String>,
}

/// What became of a delivery.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Delivered(Option<String>),
    /// Tried again after this long.
    Retry(Duration),
    GaveUp(SinkError),
}

/// Pacing and retries, per slot. Pure: the time is passed in.
pub struct Pacer {
    retry: Retry,
    batches: BTreeMap<Slot, Batch>,
    last_sent: HashMap<Slot, Instant>,
    threads: HashMap<Slot, String>,
}

impl Pacer {
    pub fn new(retry: Retry) -> Self {
        Self {
            retry,
            batches: BTreeMap::new(),
            last_sent: HashMap::new(),
            threads: HashMap::new(),
        }
    }

    /// Takes in a job; its notices join the slot's waiting ones.
    pub fn add(&mut self, job: Job, pacing: Pacing, now: Instant) {
        if let Some(t) = job.thread {
            self.threads.entry(job.slot.clone()).or_insert(t);
        }
        let b = self.batches.entry(job.slot).or_insert_with(|| Batch {
            subject: job.subject.clone(),
            notices: vec![],
            history: vec![],
            pacing,
            first_at: now,
            failures: 0,
            retry_at: None,
            sending: false,
        });
        if b.notices.is_empty() && !b.sending {
            b.first_at = now;
        }
        b.subject = job.subject;
        b.history = job.history;
        for n in job.notices {
            if !b.notices.iter().any(|o| o.key == n.key) {
                b.notices.push(n);
            }
        }
    }

    fn ready_at(&self, slot: &Slot, b: &Batch) -> Instant {
        let mut at = b.first_at + b.pacing.coalesce;
        if let Some(last) = self.last_sent.get(slot) {
            at = at.max(*last + b.pacing.min_interval);
        }
        if let Some(r) = b.retry_at {
            at = at.max(r);
        }
        at
    }

    /// When the next waiting message is due.
    pub fn next_wake(&self) -> Option<Instant> {
        self.batches
            .iter()
            .filter(|(_, b)| !b.sending && !b.notices.is_empty())
            .map(|(s, b)| self.ready_at(s, b))
            .min()
    }

    /// The messages due at `now`, each marked as being sent.
    pub fn take_due(&mut self, now: Instant, time: k8s_openapi::jiff::Timestamp) -> Vec<Ready> {
        let due: Vec<Slot> = self
            .batches
            .iter()
            .filter(|(s, b)| !b.sending && !b.notices.is_empty() && self.ready_at(s, b) <= now)
            .map(|(s, _)| s.clone())
            .collect();
        let mut out = vec![];
        for slot in due {
            let thread = self.threads.get(&slot).cloned();
            let Some(b) = self.batches.get_mut(&slot) else {
                continue;
            };
            let take = if b.pacing.batches { b.notices.len() } else { 1 };
            let notices: Vec<Notice> = b.notices.drain(..take).collect();
            b.sending = true;
            out.push(Ready {
                outgoing: Outgoing {
                    sink: slot.sink.clone(),
                    subject: b.subject.clone(),
                    notices,
                    history: b.history.clone(),
                    now: time,
                },
                slot,
                thread,
            });
        }
        out
    }

    /// Takes in how a delivery of `sent` went.
    pub fn finished(
        &mut self,
        slot: &Slot,
        sent: Vec<Notice>,
        result: Result<Option<String>, SinkError>,
        now: Instant,
    ) -> Outcome {
        let Some(b) = self.batches.get_mut(slot) else {
            return Outcome::GaveUp(SinkError::fatal("the slot is gone"));
        };
        b.sending = false;
        let outcome = match result {
            Ok(id) => {
                self.last_sent.insert(slot.clone(), now);
                if let Some(id) = &id {
                    self.threads.insert(slot.clone(), id.clone());
                }
                b.failures = 0;
                b.retry_at = None;
                if !b.notices.is_empty() {
                    b.first_at = now;
                }
                Outcome::Delivered(id)
            }
            Err(e) => {
                b.failures = b.failures.saturating_add(1);
                if e.retryable && b.failures < self.retry.attempts {
                    let wait = self.retry.backoff(b.failures);
                    b.retry_at = Some(now + wait);
                    // Back in front, in their order.
                    let later = std::mem::take(&mut b.notices);
                    b.notices = sent;
                    for n in later {
                        if !b.notices.iter().any(|o| o.key == n.key) {
                            b.notices.push(n);
                        }
                    }
                    Outcome::Retry(wait)
                } else {
                    b.failures = 0;
                    b.retry_at = None;
                    Outcome::GaveUp(e)
                }
            }
        };
        if b.notices.is_empty() && !b.sending {
            self.batches.remove(slot);
        }
        outcome
    }

    /// Forgets the slot's waiting messages (this replica no longer leads).
    pub fn forget(&mut self, slot: &Slot) -> Vec<Notice> {
        self.batches
            .remove(slot)
            .map(|b| b.notices)
            .unwrap_or_default()
    }
}

/// Writes deliveries into the Incident's status.
pub trait Recorder: Send + Sync {
    fn record<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        records: Vec<NotificationRecord>,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// The delivery task.
pub struct Deliverer {
    pub sinks: BTreeMap<String, Arc<dyn Sink>>,
    pub recorder: Arc<dyn Recorder>,
    pub ledger: Arc<Ledger>,
    pub metrics: Arc<Metrics>,
    /// Whether this replica leads: only the leader sends.
    pub leads: Arc<dyn Fn() -> bool + Send + Sync>,
    pub clock: Arc<dyn Clock>,
    pub retry: Retry,
}

type Sending = BoxFuture<'static, (Slot, Vec<Notice>, Result<Option<String>, SinkError>)>;

impl Deliverer {
    fn count(&self, sink: &str, result: &str, n: usize) {
        let labels = NotificationLabels {
            sink: sink.into(),
            result: result.into(),
        };
        self.metrics
            .notifications
            .get_or_create(&labels)
            .inc_by(n as u64);
    }

    /// Delivers until the queue is closed and everything under way is done.
    pub async fn run(self, mut rx: mpsc::Receiver<Job>) {
        let mut pacer = Pacer::new(self.retry);
        let mut sending: FuturesUnordered<Sending> = FuturesUnordered::new();
        let mut open = true;
        loop {
            let wake = pacer.next_wake();
            if !open && sending.is_empty() && wake.is_none() {
                return;
            }
            tokio::select! {
                job = rx.recv(), if open => match job {
                    Some(job) => match self.sinks.get(&job.slot.sink) {
                        Some(sink) => pacer.add(job, sink.pacing(), Instant::now()),
                        None => self.ledger.settle(&job.slot, &job.notices, false),
                    },
                    None => open = false,
                },
                Some((slot, sent, result)) = sending.next(), if !sending.is_empty() => {
                    self.settled(&mut pacer, &slot, sent, result).await;
                }
                _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
            }
            for ready in pacer.take_due(Instant::now(), self.clock.now()) {
                if !(self.leads)() {
                    let mut lost = ready.outgoing.notices;
                    lost.extend(pacer.forget(&ready.slot));
                    self.ledger.unqueue(&ready.slot, &lost);
                    continue;
                }
                let Some(sink) = self.sinks.get(&ready.slot.sink).cloned() else {
                    continue;
                };
                sending.push(Box::pin(async move {
                    let result = sink.send(&ready.outgoing, ready.thread.as_deref()).await;
                    (ready.slot, ready.outgoing.notices, result)
                }));
            }
        }
    }

    async fn settled(
        &self,
        pacer: &mut Pacer,
        slot: &Slot,
        sent: Vec<Notice>,
        result: Result<Option<String>, SinkError>,
    ) {
        let n = sent.len();
        match pacer.finished(slot, sent.clone(), result, Instant::now()) {
            Outcome::Delivered(id) => {
                self.count(&slot.sink, "sent", n);
                self.ledger.settle(slot, &sent, true);
                let at = Time(self.clock.now());
                let records = sent
                    .iter()
                    .map(|notice| NotificationRecord {
                        key: notice.key.clone(),
                        event: notice.event,
                        sink: slot.sink.clone(),
                        message_id: id.clone(),
                        sent_at: at.clone(),
                    })
                    .collect();
                if !(self.leads)() {
                    return;
                }
                if let Err(e) = self
                    .recorder
                    .record(&slot.namespace, &slot.incident, records)
                    .await
                {
                    warn!(namespace = %slot.namespace, incident = %slot.incident, sink = %slot.sink, error = %e,
                        "a notification was delivered but not recorded in the Incident");
                }
            }
            Outcome::Retry(after) => {
                self.count(&slot.sink, "failed", n);
                info!(namespace = %slot.namespace, incident = %slot.incident, sink = %slot.sink,
                    retry_in = ?after, "a notification failed; retrying");
            }
            Outcome::GaveUp(e) => {
                self.count(&slot.sink, "failed", n);
                self.count(&slot.sink, "abandoned", n);
                self.ledger.settle(slot, &sent, false);
                warn!(namespace = %slot.namespace, incident = %slot.incident, sink = %slot.sink, error = %e,
                    "a notification could not be delivered; given up");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{NotifyEvent, Phase};
    use crate::notify::doubles::{Behaves, FakeSink, MemoryRecorder, pacing};

    fn slot(sink: &str) -> Slot {
        Slot {
            namespace: "shop".into(),
            incident: "web-oomkilled".into(),
            sink: sink.into(),
            episode: 1,
        }
    }

    fn notice(event: NotifyEvent) -> Notice {
        Notice {
            key: format!("e1/{}", event.as_str()),
            event,
            text: format!("{} happened", event.as_str()),
        }
    }

    fn job(sink: &str, events: &[NotifyEvent]) -> Job {
        let notices: Vec<Notice> = events.iter().map(|e| notice(*e)).collect();
        Job {
            slot: slot(sink),
            subject: Subject {
                namespace: "shop".into(),
                name: "web-oomkilled".into(),
                target: "Deployment/web".into(),
                signal: "OOMKilled".into(),
                phase: Phase::Detected,
                link: None,
            },
            history: notices.clone(),
            notices,
            thread: None,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    const SLACK_WEBHOOK: Pacing = Pacing {
        coalesce: Duration::from_secs(3),
        min_interval: Duration::from_secs(10),
        batches: true,
    };

    fn keys(r: &Ready) -> Vec<String> {
        r.outgoing.notices.iter().map(|n| n.key.clone()).collect()
    }

    #[test]
    fn events_close_together_become_one_slack_message() {
        let mut p = Pacer::new(Retry::default());
        let t0 = Instant::now();
        let now = crate::testing::now();
        p.add(job("slack", &[NotifyEvent::Opened]), SLACK_WEBHOOK, t0);
        p.add(
            job("slack", &[NotifyEvent::Diagnosed]),
            SLACK_WEBHOOK,
            t0 + secs(1),
        );
        assert!(p.take_due(t0 + secs(2), now).is_empty(), "still coalescing");
        let due = p.take_due(t0 + secs(3), now);
        assert_eq!(due.len(), 1);
        assert_eq!(keys(&due[0]), ["e1/Opened", "e1/Diagnosed"]);
    }

    #[test]
    fn a_webhook_incident_posts_at_most_one_message_every_ten_seconds() {
        let mut p = Pacer::new(Retry::default());
        let t0 = Instant::now();
        let now = crate::testing::now();
        p.add(job("slack", &[NotifyEvent::Opened]), SLACK_WEBHOOK, t0);
        let first = p.take_due(t0 + secs(3), now);
        assert_eq!(first.len(), 1);
        let sent = first[0].outgoing.notices.clone();
        assert_eq!(
            p.finished(&slot("slack"), sent, Ok(None), t0 + secs(3)),
            Outcome::Delivered(None)
        );
        p.add(
            job("slack", &[NotifyEvent::ActionTaken]),
            SLACK_WEBHOOK,
            t0 + secs(4),
        );
        p.add(
            job("slack", &[NotifyEvent::Resolved]),
            SLACK_WEBHOOK,
            t0 + secs(5),
        );
        assert!(p.take_due(t0 + secs(12), now).is_empty(), "rate limited");
        assert_eq!(p.next_wake(), Some(t0 + secs(13)));
        let second = p.take_due(t0 + secs(13), now);
        assert_eq!(keys(&second[0]), ["e1/ActionTaken", "e1/Resolved"]);
    }

    #[test]
    fn cloud_events_go_one_per_message_as_they_come() {
        let mut p = Pacer::new(Retry::default());
        let t0 = Instant::now();
        let now = crate::testing::now();
        let each = pacing(0, 0, false);
        p.add(
            job("events", &[NotifyEvent::Opened, NotifyEvent::Diagnosed]),
            each,
            t0,
        );
        let first = p.take_due(t0, now);
        assert_eq!(keys(&first[0]), ["e1/Opened"]);
        assert!(p.take_due(t0, now).is_empty(), "one under way at a time");
        let sent = first[0].outgoing.notices.clone();
        p.finished(&slot("events"), sent, Ok(Some("id1".into())), t0);
        assert_eq!(keys(&p.take_due(t0, now)[0]), ["e1/Diagnosed"]);
    }

    #[test]
    fn a_failed_delivery_is_retried_with_exponential_backoff_then_given_up() {
        let retry = Retry::default();
        let waits: Vec<u64> = (1..=8).map(|n| retry.backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(retry.backoff(u32::MAX), secs(60), "saturates");

        let mut p = Pacer::new(retry);
        let mut t = Instant::now();
        let now = crate::testing::now();
        p.add(job("slack", &[NotifyEvent::Opened]), pacing(0, 0, true), t);
        let mut outcomes = vec![];
        for _ in 0..retry.attempts {
            let due = p.take_due(t, now);
            assert_eq!(due.len(), 1, "tried again once its wait is over");
            let sent = due[0].outgoing.notices.clone();
            let outcome = p.finished(&slot("slack"), sent, Err(SinkError::retry("503")), t);
            if let Outcome::Retry(wait) = outcome {
                assert!(
                    p.take_due(t + wait - Duration::from_millis(1), now)
                        .is_empty()
                );
                t += wait;
            }
            outcomes.push(outcome);
        }
        assert_eq!(outcomes[0], Outcome::Retry(secs(1)));
        assert!(
            matches!(outcomes.last(), Some(Outcome::GaveUp(_))),
            "{outcomes:?}"
        );
        assert!(p.take_due(t + secs(3600), now).is_empty(), "nothing left");
    }

    #[test]
    fn a_refused_credential_is_not_retried() {
        let mut p = Pacer::new(Retry::default());
        let t = Instant::now();
        p.add(job("slack", &[NotifyEvent::Opened]), pacing(0, 0, true), t);
        let due = p.take_due(t, crate::testing::now());
        let sent = due[0].outgoing.notices.clone();
        let outcome = p.finished(
            &slot("slack"),
            sent,
            Err(SinkError::fatal("invalid_auth")),
            t,
        );
        assert!(matches!(outcome, Outcome::GaveUp(_)));
    }

    struct World {
        sink: Arc<FakeSink>,
        recorder: Arc<MemoryRecorder>,
        queue: Queue,
        metrics: Arc<Metrics>,
        task: tokio::task::JoinHandle<()>,
    }

    fn world(behaves: Behaves, pacing: Pacing, leads: bool, capacity: usize) -> World {
        let sink = Arc::new(FakeSink::new(behaves, pacing));
        let recorder = Arc::new(MemoryRecorder::default());
        let metrics = Arc::new(Metrics::default());
        let ledger = Arc::new(Ledger::default());
        let (queue, rx) = super::queue(capacity, ledger.clone(), metrics.clone());
        let sinks: BTreeMap<String, Arc<dyn Sink>> =
            [("slack".to_string(), sink.clone() as Arc<dyn Sink>)].into();
        let deliverer = Deliverer {
            sinks,
            recorder: recorder.clone(),
            ledger,
            metrics: metrics.clone(),
            leads: Arc::new(move || leads),
            clock: Arc::new(crate::clock::ManualClock::at(crate::testing::now())),
            retry: Retry {
                first: Duration::from_millis(10),
                max: Duration::from_millis(40),
                attempts: 5,
            },
        };
        World {
            sink,
            recorder,
            queue,
            metrics,
            task: tokio::spawn(deliverer.run(rx)),
        }
    }

    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    fn counted(m: &Metrics, result: &str) -> u64 {
        m.notifications
            .get(&NotificationLabels {
                sink: "slack".into(),
                result: result.into(),
            })
            .map(|c| c.get())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn a_slack_bot_keeps_one_message_per_incident_and_edits_it() {
        let w = world(Behaves::SlackBot, pacing(20, 20, true), true, 8);
        assert!(w.queue.offer(job("slack", &[NotifyEvent::Opened])));
        until("the first post", || {
            w.recorder.records("shop", "web-oomkilled").len() == 1
        })
        .await;
        let mut next = job("slack", &[NotifyEvent::Resolved]);
        next.history.insert(0, notice(NotifyEvent::Opened));
        assert!(w.queue.offer(next));
        until("the edit", || {
            w.recorder.records("shop", "web-oomkilled").len() == 2
        })
        .await;
        let messages = w.sink.messages();
        assert_eq!(messages.len(), 1, "one message per incident: {messages:?}");
        assert_eq!(messages[0].edits, 1);
        assert_eq!(messages[0].keys, ["e1/Opened", "e1/Resolved"]);
        assert!(
            messages[0].text.contains("shop/web-oomkilled"),
            "{}",
            messages[0].text
        );
        let records = w.recorder.records("shop", "web-oomkilled");
        assert!(
            records
                .iter()
                .all(|r| r.message_id.as_deref() == Some("m1")),
            "{records:?}"
        );
        w.task.abort();
    }

    #[tokio::test]
    async fn a_failing_sink_is_retried_and_the_delivery_recorded_once() {
        let w = world(Behaves::SlackWebhook, pacing(0, 0, true), true, 8);
        w.sink.fail_next(2, false);
        assert!(w.queue.offer(job("slack", &[NotifyEvent::Opened])));
        until("the delivery", || {
            w.recorder.records("shop", "web-oomkilled").len() == 1
        })
        .await;
        assert_eq!(w.sink.attempts(), 3);
        assert_eq!(w.sink.messages().len(), 1);
        assert_eq!(counted(&w.metrics, "failed"), 2);
        assert_eq!(counted(&w.metrics, "sent"), 1);
        // Delivered: the notifier does not offer it again.
        assert!(!w.queue.ledger().unsettled(&slot("slack"), "e1/Opened"));
        w.task.abort();
    }

    #[tokio::test]
    async fn a_sink_that_never_answers_is_given_up_after_its_attempts() {
        let w = world(Behaves::SlackWebhook, pacing(0, 0, true), true, 8);
        w.sink.fail_next(100, false);
        assert!(w.queue.offer(job("slack", &[NotifyEvent::Opened])));
        until("giving up", || counted(&w.metrics, "abandoned") == 1).await;
        assert_eq!(w.sink.attempts(), 5, "a bounded number of attempts");
        assert!(w.recorder.records("shop", "web-oomkilled").is_empty());
        assert!(
            !w.queue.ledger().unsettled(&slot("slack"), "e1/Opened"),
            "not offered again"
        );
        w.task.abort();
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        let (queue, _rx) =
            super::queue(1, Arc::new(Ledger::default()), Arc::new(Metrics::default()));
        let started = std::time::Instant::now();
        assert!(queue.offer(job("slack", &[NotifyEvent::Opened])));
        let mut second = job("slack", &[NotifyEvent::Resolved]);
        second.slot.incident = "api-crashloop".into();
        assert!(!queue.offer(second.clone()), "full: dropped");
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "never blocks"
        );
        assert_eq!(
            queue
                .metrics
                .notifications
                .get(&NotificationLabels {
                    sink: "slack".into(),
                    result: "dropped".into()
                })
                .map(|c| c.get()),
            Some(1)
        );
        assert!(
            queue.ledger().unsettled(&second.slot, "e1/Resolved"),
            "offered again later"
        );
    }

    #[tokio::test]
    async fn a_replica_that_does_not_lead_sends_nothing() {
        let w = world(Behaves::SlackWebhook, pacing(0, 0, true), false, 8);
        assert!(w.queue.offer(job("slack", &[NotifyEvent::Opened])));
        until("the job to be put back", || {
            w.queue.ledger().unsettled(&slot("slack"), "e1/Opened")
        })
        .await;
        assert_eq!(w.sink.attempts(), 0);
        w.task.abort();
    }
}
