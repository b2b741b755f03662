//! Signals the operator measures itself, rather than reads from a pod's
//! status: health checks it runs, event rates on Kafka, error rates and
//! latencies in traces. Each source judges its triggers on its own schedule
//! and posts a [`Reading`] to the [`Board`]; a firing reading becomes a
//! signal for the trigger's workload, and the incident state machine asks the
//! board whether the signal has cleared. The dashboard reads the board too.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};

use k8s_openapi::jiff::Timestamp;

use super::Signal;
use crate::crd::{SignalKind, WorkloadKind, WorkloadRef};

/// How many past values of each subject the board keeps for charts.
pub const HISTORY: usize = 720;

/// What one trigger watches: a workload of a policy, through one kind of
/// signal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Subject {
    pub namespace: String,
    pub policy: String,
    pub kind: SignalKind,
    /// The name of the workload an incident is opened for.
    pub workload: String,
    /// Its kind: a Deployment for what the operator measures of a service
    /// (health checks, Kafka, traces); the workload object's own kind for
    /// what the Scout reads from workloads (a StatefulSet, a Job, a CronJob).
    pub workload_kind: WorkloadKind,
}

impl Subject {
    fn key(&self) -> String {
        format!(
            "{}/{}/{}/{}/{}",
            self.namespace,
            self.policy,
            self.kind.as_str(),
            self.workload_kind.as_str(),
            self.workload
        )
    }

    pub fn target(&self) -> WorkloadRef {
        WorkloadRef {
            kind: self.workload_kind,
            name: self.workload.clone(),
        }
    }
}

/// A source's judgement of a subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Measured, and within the policy's limits.
    Healthy,
    /// Measured, and outside them: trouble.
    Firing,
    /// Not measurable now (too few events, the broker away, a lagging
    /// consumer, the operator's own network down): never trouble.
    Unknown,
}

/// One judgement of a subject.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    pub subject: Subject,
    pub verdict: Verdict,
    /// What was measured, in words, e.g. "conversion 0.12 (3 policy_purchased
    /// / 25 quote_requested over 10 s), below the minimum 0.3".
    pub summary: String,
    /// The measured value, when there is one (a ratio, a rate, a share).
    pub value: Option<f64>,
    /// The policy's limit for `value`.
    pub threshold: Option<f64>,
    pub at: Timestamp,
}

/// The latest reading of a subject and, while it fires, since when.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub reading: Reading,
    pub firing_since: Option<Timestamp>,
    /// Past values, oldest first: (when, value, threshold).
    pub history: VecDeque<(Timestamp, f64, Option<f64>)>,
}

/// The latest readings of every measured subject. Cheap to clone; shared by
/// the sources, the incident state machine and the dashboard.
#[derive(Clone, Debug, Default)]
pub struct Board {
    entries: Arc<RwLock<BTreeMap<String, Entry>>>,
}

impl Board {
    /// Records a reading. Returns the signal it raises when it fires: one per
    /// firing episode (the key stays the same until the subject is healthy
    /// again), so a repeat judgement of the same trouble counts once.
    pub fn post(&self, mut reading: Reading) -> Option<Signal> {
        // Every measured source (health checks, Kafka, traces) passes here:
        // its words reach the dashboard and the Incident redacted.
        crate::redact::in_place(&mut reading.summary);
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let entry = entries
            .entry(reading.subject.key())
            .or_insert_with(|| Entry {
                reading: reading.clone(),
                firing_since: None,
                history: VecDeque::new(),
            });
        entry.firing_since = match reading.verdict {
            Verdict::Firing => Some(entry.firing_since.unwrap_or(reading.at)),
            Verdict::Healthy => None,
            // Not knowing ends nothing and starts nothing.
            Verdict::Unknown => entry.firing_since,
        };
        if let Some(v) = reading.value {
            entry.history.push_back((reading.at, v, reading.threshold));
            while entry.history.len() > HISTORY {
                entry.history.pop_front();
            }
        }
        entry.reading = reading;
        Self::signal(entry)
    }

    fn signal(entry: &Entry) -> Option<Signal> {
        let r = &entry.reading;
        if r.verdict != Verdict::Firing {
            return None;
        }
        let since = entry.firing_since.unwrap_or(r.at);
        Some(Signal {
            kind: r.subject.kind,
            pod: None,
            container: None,
            reason: r.subject.kind.as_str().to_string(),
            message: r.summary.clone(),
            observed_at: r.at,
            key: format!(
                "{}:{}:{}",
                r.subject.kind.as_str(),
                r.subject.workload,
                since.as_second()
            ),
            ongoing: true,
        })
    }

    /// The signal of kind `kind` for a workload, if a subject of it fires
    /// now (any policy of the namespace).
    pub fn firing(&self, namespace: &str, workload: &str, kind: SignalKind) -> Option<Signal> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .values()
            .filter(|e| {
                let s = &e.reading.subject;
                s.namespace == namespace && s.workload == workload && s.kind == kind
            })
            .find_map(Self::signal)
    }

    /// Whether the latest reading of every subject of kind `kind` for a
    /// workload was Healthy: known to be clear, not merely not firing (a
    /// board just started, or a source that cannot measure, knows nothing).
    pub fn healthy(&self, namespace: &str, workload: &str, kind: SignalKind) -> bool {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let mut of = entries.values().filter(|e| {
            let s = &e.reading.subject;
            s.namespace == namespace && s.workload == workload && s.kind == kind
        });
        let mut any = false;
        let all = of.all(|e| {
            any = true;
            e.reading.verdict == Verdict::Healthy
        });
        any && all
    }

    /// Every entry, for the dashboard and the metrics.
    pub fn snapshot(&self) -> Vec<Entry> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.values().cloned().collect()
    }

    /// Forgets the subjects `keep` rejects (a trigger removed from its
    /// policy, a policy deleted).
    pub fn retain(&self, mut keep: impl FnMut(&Subject) -> bool) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, e| keep(&e.reading.subject));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(verdict: Verdict, at: i64) -> Reading {
        Reading {
            subject: Subject {
                namespace: "shop".into(),
                policy: "business".into(),
                kind: SignalKind::ConversionRate,
                workload: "policy-service".into(),
                workload_kind: WorkloadKind::Deployment,
            },
            verdict,
            summary: "conversion 0.1".into(),
            value: Some(0.1),
            threshold: Some(0.3),
            at: Timestamp::from_second(at).expect("time"),
        }
    }

    #[test]
    fn one_firing_episode_is_one_signal_key_and_unknown_neither_starts_nor_ends_it() {
        let board = Board::default();
        assert_eq!(board.post(reading(Verdict::Healthy, 100)), None);
        let first = board.post(reading(Verdict::Firing, 110)).expect("fires");
        assert!(first.pod.is_none() && first.ongoing);
        assert_eq!(board.post(reading(Verdict::Unknown, 115)), None);
        assert_eq!(
            board.firing("shop", "policy-service", SignalKind::ConversionRate),
            None,
            "an unknown reading is not trouble"
        );
        let again = board.post(reading(Verdict::Firing, 120)).expect("fires");
        assert_eq!(again.key, first.key, "the same episode");
        assert!(
            board
                .firing("shop", "policy-service", SignalKind::ConversionRate)
                .is_some()
        );
        assert!(!board.healthy("shop", "policy-service", SignalKind::ConversionRate));
        board.post(reading(Verdict::Healthy, 130));
        assert!(board.healthy("shop", "policy-service", SignalKind::ConversionRate));
        assert!(
            !board.healthy("shop", "quote-service", SignalKind::ConversionRate),
            "nothing known is not healthy"
        );
        assert_eq!(
            board.firing("shop", "policy-service", SignalKind::ConversionRate),
            None
        );
        let next = board.post(reading(Verdict::Firing, 140)).expect("fires");
        assert_ne!(next.key, first.key, "a new episode");
        assert_eq!(board.snapshot()[0].history.len(), 6);
    }
}
