//! Alertmanager as a source: its webhook posts notifications to the
//! operator (`POST /webhooks/alertmanager`, see [`http`]); the firing alerts
//! are held in the leader's memory ([`book`]), and every few seconds each
//! policy's Alert triggers are judged against them. A subject (a policy's
//! Deployment) with an accepted firing alert reads Firing; one whose alerts
//! resolved or expired reads Healthy, which clears the signal the way the
//! other measured sources do.
//!
//! What the operator holds is lost when the leader changes: Alertmanager
//! sends firing alerts again at its `repeat_interval`, and until then the
//! new leader knows nothing of them (Unknown, never trouble).

pub mod book;
pub mod http;
pub mod payload;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use tokio::sync::Notify;
use tracing::warn;

use crate::clock::Clock;
use crate::crd::{Category, RemediationPolicy, SignalKind};
use crate::scout::Context;
use crate::scout::measured::{Reading, Subject, Verdict};
use book::Book;

/// How often the held alerts are judged when no notification arrives: a
/// firing subject's reading stays fresh for verification, and expired
/// alerts clear.
const TICK: Duration = Duration::from_secs(5);

/// The alerts the leader holds, shared by the webhook and the source loop.
#[derive(Clone, Default)]
pub struct Inbox {
    book: Arc<Mutex<Book>>,
    arrived: Arc<Notify>,
}

impl Inbox {
    /// Takes one notification's alerts and wakes the source loop.
    pub fn receive(&self, alerts: Vec<payload::Alert>, now: Timestamp) {
        self.book
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .receive(alerts, now);
        self.arrived.notify_one();
    }

    fn firing(&self, now: Timestamp) -> Vec<book::Held> {
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        book.expire(now);
        book.firing(now)
    }
}

/// The webhook's side: where its token is, and the leader's inbox once this
/// replica leads (a standby answers 503, so Alertmanager retries and
/// reaches the leader).
pub struct Receiver {
    /// `SRE_SPACE_ALERTMANAGER_TOKEN_FILE`; unset, the receiver is off.
    pub token_file: Option<PathBuf>,
    inbox: OnceLock<Inbox>,
    pub clock: Arc<dyn Clock>,
}

impl Receiver {
    pub fn new(token_file: Option<PathBuf>, clock: Arc<dyn Clock>) -> Self {
        Self {
            token_file,
            inbox: OnceLock::new(),
            clock,
        }
    }

    /// This replica leads: the webhook takes notifications from now on.
    pub fn lead(&self) -> Inbox {
        self.inbox.get_or_init(Inbox::default).clone()
    }

    fn inbox(&self) -> Option<&Inbox> {
        self.inbox.get()
    }
}

/// The category an Alert incident of `workload` is diagnosed with: its
/// trigger's, or ErrorRate.
pub fn category(policy: Option<&RemediationPolicy>, workload: &str) -> Category {
    policy
        .into_iter()
        .flat_map(book::triggers)
        .find(|(_, fixed)| fixed.is_none_or(|w| w == workload))
        .and_then(|(t, _)| t.category)
        .unwrap_or(crate::crd::AlertTrigger::DEFAULT_CATEGORY)
}

/// Starts the Alert triggers' loop on the leader's inbox.
pub fn spawn(ctx: Arc<Context>, inbox: Inbox) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(ctx, inbox))
}

async fn run(ctx: Arc<Context>, inbox: Inbox) {
    // The subjects that fired since this replica leads: they read Healthy
    // once their alerts are gone, until their trigger is.
    let mut known: HashSet<Subject> = HashSet::new();
    loop {
        let _ = tokio::time::timeout(TICK, inbox.arrived.notified()).await;
        let now = ctx.clock.now();
        let policies = ctx.policies.state();
        let replicasets = ctx.workloads.replicasets.state();
        let firing = book::subjects(&policies, &inbox.firing(now), &replicasets);
        let watched = |s: &Subject| {
            policies.iter().any(|p| {
                p.namespace().as_deref() == Some(s.namespace.as_str())
                    && p.name_any() == s.policy
                    && book::triggers(p).next().is_some()
            })
        };
        ctx.board
            .retain(|s| s.kind != SignalKind::Alert || watched(s));
        known.retain(|s| watched(s));
        for r in readings(&mut known, &firing, now) {
            let workload = r.subject.workload.clone();
            if let Err(e) = crate::scout::report(&ctx, r).await {
                warn!(error = %e, %workload, "could not record the alert's reading");
            }
        }
    }
}

/// The readings of one round: Firing for each subject with accepted
/// alerts, Healthy for each that fired before and has none now.
fn readings(
    known: &mut HashSet<Subject>,
    firing: &HashMap<Subject, Vec<book::Held>>,
    now: Timestamp,
) -> Vec<Reading> {
    let mut out: Vec<Reading> = Vec::new();
    for (subject, alerts) in firing {
        known.insert(subject.clone());
        out.push(reading(
            subject,
            Verdict::Firing,
            book::summary(alerts),
            now,
        ));
    }
    for subject in known.iter().filter(|s| !firing.contains_key(*s)) {
        let summary = "no accepted alert fires: resolved or expired".to_string();
        out.push(reading(subject, Verdict::Healthy, summary, now));
    }
    out
}

fn reading(subject: &Subject, verdict: Verdict, summary: String, at: Timestamp) -> Reading {
    Reading {
        subject: subject.clone(),
        verdict,
        summary,
        value: None,
        threshold: None,
        at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::WorkloadKind;
    use crate::scout::measured::Board;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("time")
    }

    fn subject() -> Subject {
        Subject {
            namespace: "shop".into(),
            policy: "alerts".into(),
            kind: SignalKind::Alert,
            workload: "policy-service".into(),
            workload_kind: WorkloadKind::Deployment,
        }
    }

    fn firing(inbox: &Inbox, now: Timestamp) -> HashMap<Subject, Vec<book::Held>> {
        let held = inbox.firing(now);
        if held.is_empty() {
            HashMap::new()
        } else {
            [(subject(), held)].into()
        }
    }

    /// The test payload with every alert in `status`.
    fn notification(status: &str) -> Vec<payload::Alert> {
        let text = payload::tests::firing_payload().replace(
            "\"status\": \"firing\",\n      \"labels\"",
            &format!("\"status\": \"{status}\",\n      \"labels\""),
        );
        payload::parse(text.as_bytes()).expect("parses")
    }

    #[test]
    fn repeats_are_one_signal_and_a_resolved_alert_clears_it() {
        let (board, inbox) = (Board::default(), Inbox::default());
        let mut known = HashSet::new();
        let mut post = |now| {
            readings(&mut known, &firing(&inbox, now), now)
                .into_iter()
                .filter_map(|r| board.post(r))
                .collect::<Vec<_>>()
        };
        inbox.receive(notification("firing"), at(0));
        let first = post(at(1));
        assert_eq!(first.len(), 1);
        assert!(
            first[0]
                .message
                .starts_with("alert HighErrorRate firing since"),
            "{}",
            first[0].message
        );
        inbox.receive(notification("firing"), at(30));
        let again = post(at(31));
        assert_eq!(again[0].key, first[0].key, "the same firing episode");
        assert!(
            board
                .firing("shop", "policy-service", SignalKind::Alert)
                .is_some()
        );

        inbox.receive(notification("resolved"), at(60));
        assert!(post(at(61)).is_empty());
        assert!(board.healthy("shop", "policy-service", SignalKind::Alert));
        assert_eq!(
            board.firing("shop", "policy-service", SignalKind::Alert),
            None
        );
    }

    #[test]
    fn a_new_leader_knows_nothing_until_alertmanager_sends_again() {
        let (board, inbox) = (Board::default(), Inbox::default());
        let mut known = HashSet::new();
        for r in readings(&mut known, &firing(&inbox, at(0)), at(0)) {
            board.post(r);
        }
        assert!(!board.healthy("shop", "policy-service", SignalKind::Alert));
        assert_eq!(
            board.firing("shop", "policy-service", SignalKind::Alert),
            None
        );
    }

    #[test]
    fn an_alert_incident_takes_its_triggers_category() {
        let mut p = crate::testing::policy(crate::crd::Mode::Automatic);
        let mut t = crate::crd::Trigger::of(SignalKind::Alert);
        t.alert = Some(crate::crd::AlertTrigger {
            alert_names: vec!["DiskFull".into()],
            matchers: vec![],
            namespace_label: "namespace".into(),
            workload_label: "deployment".into(),
            category: Some(Category::Dependency),
        });
        p.spec.triggers.push(t);
        assert_eq!(category(Some(&p), "web"), Category::Dependency);
        assert_eq!(category(None, "web"), Category::ErrorRate);
    }
}
