//! The notifier: beside the incident state machine, it finds what each
//! incident has to announce and offers it to the delivery queue; it never
//! waits on a sink. It also tells each policy whether the sinks it names
//! can be used (`NotificationsAvailable`), and records deliveries in the
//! Incident's status.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};

use super::deliver::{Job, Ledger, Queue, Recorder, Slot};
use super::events::{self, Subject};
use super::sinks::{Sinks, Unavailable};
use crate::crd::{
    ConditionStatus, Incident, MAX_NOTIFICATIONS, NotificationRecord, RemediationPolicy,
};
use crate::{FIELD_MANAGER, Result};

/// The condition a policy with `spec.notify` carries.
pub const NOTIFICATIONS_AVAILABLE: &str = "NotificationsAvailable";

/// What the notifier reads.
pub struct Context {
    pub policies: Store<RemediationPolicy>,
    pub sinks: Arc<Sinks>,
    pub queue: Queue,
    pub dashboard: Option<String>,
}

/// Offers what the incident has not yet announced to each of its sinks.
pub async fn reconcile(incident: Arc<Incident>, ctx: Arc<Context>) -> Result<Action> {
    Ok(offer(&incident, &ctx))
}

/// The pure part of a reconcile: the jobs offered, and when to look again.
pub fn offer(incident: &Incident, ctx: &Context) -> Action {
    let ns = incident.namespace().unwrap_or_default();
    let name = incident.name_any();
    let Some(policy) = ctx
        .policies
        .get(&ObjectRef::new(&incident.spec.policy).within(&ns))
    else {
        return Action::await_change();
    };
    let Some(spec) = policy.spec.notify.as_ref() else {
        return Action::await_change();
    };
    // A sink the namespace may not use sends nothing; the policy says why.
    let Ok(sinks) = ctx.sinks.resolve(&ns, &spec.sinks) else {
        return Action::await_change();
    };
    let Some(status) = incident.status.as_ref() else {
        return Action::await_change();
    };
    let due = events::due(incident, &spec.events);
    let subject = Subject::of(incident, ctx.dashboard.as_deref());
    let episode = status.episode();
    let this_episode = format!("e{episode}/");
    let ledger = ctx.queue.ledger();
    let mut all_offered = true;
    for sink in sinks {
        let slot = Slot {
            namespace: ns.clone(),
            incident: name.clone(),
            sink: sink.name.clone(),
            episode,
        };
        let recorded = |key: &str| {
            status
                .notifications
                .iter()
                .any(|r| r.sink == sink.name && r.key == key)
        };
        let notices: Vec<_> = due
            .iter()
            .filter(|n| !recorded(&n.key) && ledger.unsettled(&slot, &n.key))
            .cloned()
            .collect();
        if notices.is_empty() {
            continue;
        }
        let thread = status
            .notifications
            .iter()
            .rev()
            .filter(|r| r.sink == sink.name && r.key.starts_with(&this_episode))
            .find_map(|r| r.message_id.clone());
        all_offered &= ctx.queue.offer(Job {
            slot,
            subject: subject.clone(),
            notices,
            history: due.clone(),
            thread,
        });
    }
    if all_offered {
        Action::await_change()
    } else {
        Action::requeue(Duration::from_secs(10))
    }
}

/// Merges deliveries into the incident's notifications, the latest kept.
pub fn merge(existing: &mut Vec<NotificationRecord>, records: Vec<NotificationRecord>) {
    for r in records {
        if !existing.iter().any(|o| o.sink == r.sink && o.key == r.key) {
            existing.push(r);
        }
    }
    let excess = existing.len().saturating_sub(MAX_NOTIFICATIONS);
    existing.drain(..excess);
}

/// Records deliveries in the Incident's status, as the other status writers
/// do: the freshest copy, written with its resourceVersion, retried on a
/// conflict, and only while this replica leads.
pub struct KubeRecorder {
    pub client: kube::Client,
    pub leadership: crate::lease::Leadership,
}

impl Recorder for KubeRecorder {
    fn record<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        records: Vec<NotificationRecord>,
    ) -> BoxFuture<'a, std::result::Result<(), String>> {
        Box::pin(async move {
            let api: Api<Incident> = Api::namespaced(self.client.clone(), namespace);
            let pp = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PostParams::default()
            };
            for _ in 0..5 {
                if !self.leadership.is_held() {
                    return Err("not the leader".into());
                }
                let Some(mut incident) = api.get_opt(name).await.map_err(|e| e.to_string())? else {
                    return Ok(());
                };
                let status = incident.status.get_or_insert_with(Default::default);
                let before = status.notifications.clone();
                merge(&mut status.notifications, records.clone());
                if status.notifications == before {
                    return Ok(());
                }
                incident.metadata.managed_fields = None;
                match api.replace_status(name, &pp, &incident).await {
                    Ok(_) => return Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 409 => continue,
                    Err(e) => return Err(e.to_string()),
                }
            }
            Err("the Incident kept changing; not recorded".into())
        })
    }
}

/// Whether the sinks a policy names can be used, as its condition says it.
pub fn availability(
    sinks: &Sinks,
    policy: &RemediationPolicy,
) -> Option<(ConditionStatus, &'static str, String)> {
    let spec = policy.spec.notify.as_ref()?;
    let ns = policy.namespace().unwrap_or_default();
    Some(match sinks.resolve(&ns, &spec.sinks) {
        Ok(list) => (
            ConditionStatus::True,
            "SinksAvailable",
            format!(
                "notifications go to {}",
                list.iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Err(Unavailable { reason, message }) => (
            ConditionStatus::False,
            reason,
            format!("{message}; nothing is sent for this policy until then"),
        ),
    })
}

/// Keeps every notifying policy's `NotificationsAvailable` condition true
/// to the sinks file, writing only on a change.
pub async fn report_policies(
    client: kube::Client,
    policies: Store<RemediationPolicy>,
    sinks: Arc<Sinks>,
) {
    let mut written: HashMap<(String, String), (Option<i64>, ConditionStatus, String)> =
        HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        for policy in policies.state() {
            let Some((status, reason, message)) = availability(&sinks, &policy) else {
                continue;
            };
            let key = (policy.namespace().unwrap_or_default(), policy.name_any());
            let wanted = (policy.metadata.generation, status, message.clone());
            if written.get(&key) == Some(&wanted) {
                continue;
            }
            let result = crate::policy::set_condition(
                &client,
                &key.0,
                &key.1,
                NOTIFICATIONS_AVAILABLE,
                status,
                reason,
                &message,
            )
            .await;
            match result {
                Ok(()) => {
                    written.insert(key, wanted);
                }
                Err(e) => {
                    tracing::warn!(namespace = %key.0, policy = %key.1, error = %e,
                        "could not write NotificationsAvailable; retrying");
                }
            }
        }
    }
}

/// The ledger a test or the runtime shares between notifier and deliverer.
pub fn ledger() -> Arc<Ledger> {
    Arc::new(Ledger::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Mode, NotifyEvent, NotifySpec, Phase};
    use crate::notify::deliver;
    use crate::testing;

    const FILE: &str = "
sinks:
- name: oncall
  slack: {webhookUrl: 'https://hooks.slack.com/services/T/B/X'}
  namespaces: [shop]
- name: elsewhere
  webhook: {url: 'http://127.0.0.1:9/e'}
  namespaces: [payments]
";

    fn notifying(sinks: &[&str]) -> RemediationPolicy {
        let mut p = testing::policy(Mode::Automatic);
        p.spec.notify = Some(NotifySpec {
            sinks: sinks.iter().map(|s| s.to_string()).collect(),
            events: NotifyEvent::all(),
        });
        p
    }

    fn context(policy: RemediationPolicy) -> (Context, tokio::sync::mpsc::Receiver<deliver::Job>) {
        let (queue, rx) =
            deliver::queue(8, ledger(), Arc::new(crate::telemetry::Metrics::default()));
        let ctx = Context {
            policies: testing::store(vec![policy]),
            sinks: Arc::new(Sinks::parse(FILE).unwrap()),
            queue,
            dashboard: Some("https://sre.example.com/".into()),
        };
        (ctx, rx)
    }

    #[test]
    fn a_policy_naming_a_disallowed_sink_is_told_why_and_nothing_is_sent() {
        let policy = notifying(&["elsewhere"]);
        let sinks = Sinks::parse(FILE).unwrap();
        let (status, reason, message) = availability(&sinks, &policy).unwrap();
        assert_eq!(status, ConditionStatus::False);
        assert_eq!(reason, "SinkNotAllowed");
        assert!(
            message.contains("namespace shop may not use the sink \"elsewhere\""),
            "{message}"
        );
        assert!(message.contains("nothing is sent"), "{message}");

        let (ctx, mut rx) = context(policy);
        offer(&testing::incident(Phase::Resolved, vec![]), &ctx);
        assert!(rx.try_recv().is_err(), "nothing offered");

        let unknown = availability(&sinks, &notifying(&["pager"])).unwrap();
        assert_eq!(
            (unknown.0, unknown.1),
            (ConditionStatus::False, "UnknownSink")
        );
        let fine = availability(&sinks, &notifying(&["oncall"])).unwrap();
        assert_eq!((fine.0, fine.1), (ConditionStatus::True, "SinksAvailable"));
        assert_eq!(
            availability(&sinks, &testing::policy(Mode::Automatic)),
            None
        );
    }

    #[test]
    fn what_the_status_records_as_delivered_is_not_sent_again_after_a_restart() {
        let (ctx, mut rx) = context(notifying(&["oncall"]));
        let mut incident = testing::incident(Phase::Diagnosing, vec![]);
        if let Some(s) = incident.status.as_mut() {
            s.notifications.push(NotificationRecord {
                key: "e1/Opened".into(),
                event: NotifyEvent::Opened,
                sink: "oncall".into(),
                message_id: None,
                sent_at: testing::at(-10),
            });
        }
        offer(&incident, &ctx);
        let job = rx.try_recv().expect("the diagnosis is offered");
        let keys: Vec<&str> = job.notices.iter().map(|n| n.key.as_str()).collect();
        assert_eq!(keys, ["e1/Diagnosed"]);
        assert_eq!(
            job.subject.link.as_deref(),
            Some("https://sre.example.com/incidents/shop/web-oomkilled")
        );
        // Offered once: a second reconcile before delivery offers nothing.
        offer(&incident, &ctx);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn the_status_keeps_the_latest_notifications_within_its_bound() {
        let record = |n: usize| NotificationRecord {
            key: format!("e{n}/Opened"),
            event: NotifyEvent::Opened,
            sink: "oncall".into(),
            message_id: None,
            sent_at: testing::at(0),
        };
        let mut list = vec![];
        merge(&mut list, (0..150).map(record).collect());
        merge(&mut list, vec![record(149)]);
        assert_eq!(list.len(), MAX_NOTIFICATIONS);
        assert_eq!(list.last().map(|r| r.key.as_str()), Some("e149/Opened"));
    }

    #[test]
    fn a_slack_message_names_the_incident_and_carries_no_secret_or_markup() {
        let mut incident = testing::incident(Phase::Detected, vec![]);
        if let Some(o) = incident
            .status
            .as_mut()
            .and_then(|s| s.last_signal.as_mut())
        {
            o.message = "<!channel> @here DB_PASSWORD=hunter2 <https://evil.example|click>".into();
        }
        let notices = events::due(&incident, &[NotifyEvent::Opened]);
        let m = crate::notify::Outgoing {
            sink: "oncall".into(),
            subject: Subject::of(&incident, None),
            history: notices.clone(),
            notices,
            now: testing::now(),
        };
        let text = crate::notify::slack::batch_text(&m);
        assert!(text.contains("shop/web-oomkilled"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            !text.contains("<!channel>") && !text.contains("<https://evil"),
            "{text}"
        );
        assert!(!text.contains("@here"), "{text}");
    }
}
