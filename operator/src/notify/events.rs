//! Which moments of an incident are due to be announced, and what each
//! says. Pure: the incident and the policy's choice in, notices out. Every
//! text from the incident (a root cause, an action's detail, an escalation
//! reason) is outside data: it is redacted here, and each sink escapes it
//! for its own format.

use crate::crd::{ActionState, Incident, NotifyEvent, Phase};

/// One moment to announce.
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    /// Unique within the incident: `e{episode}/{Event}`, with the action id
    /// for actions and approvals.
    pub key: String,
    pub event: NotifyEvent,
    /// One line, redacted, not yet escaped.
    pub text: String,
}

/// The incident as a notification shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Subject {
    pub namespace: String,
    pub name: String,
    /// `Kind/name` of the workload.
    pub target: String,
    pub signal: String,
    pub phase: Phase,
    /// The incident's page on the dashboard, when a public URL is set.
    pub link: Option<String>,
}

impl Subject {
    pub fn of(incident: &Incident, dashboard: Option<&str>) -> Self {
        let namespace = incident.metadata.namespace.clone().unwrap_or_default();
        let name = incident.metadata.name.clone().unwrap_or_default();
        let link = dashboard.map(|base| {
            format!(
                "{}/incidents/{namespace}/{name}",
                base.trim_end_matches('/')
            )
        });
        Self {
            target: incident.spec.target.to_string(),
            signal: incident.spec.signal.as_str().to_string(),
            phase: incident
                .status
                .as_ref()
                .map(|s| s.phase)
                .unwrap_or_default(),
            namespace,
            name,
            link,
        }
    }

    /// `namespace/name`, the CloudEvent's subject.
    pub fn path(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The moments of the incident's current episode that `events` asks for,
/// in the order they happened.
pub fn due(incident: &Incident, events: &[NotifyEvent]) -> Vec<Notice> {
    let Some(s) = incident.status.as_ref().filter(|s| s.occurrences > 0) else {
        return vec![];
    };
    let ns = incident.metadata.namespace.as_deref().unwrap_or_default();
    let name = incident.metadata.name.as_deref().unwrap_or_default();
    let episode = s.episode();
    let mut out = vec![];
    let mut push = |event: NotifyEvent, suffix: &str, text: String| {
        if events.contains(&event) {
            out.push(Notice {
                key: format!("e{episode}/{}{suffix}", event.as_str()),
                event,
                text: crate::redact::string(&text),
            });
        }
    };
    let reason = s
        .last_signal
        .as_ref()
        .map(|o| format!(": {}", o.message))
        .unwrap_or_default();
    push(
        NotifyEvent::Opened,
        "",
        format!(
            "{} of {} in {ns} opened incident {name}{reason}",
            incident.spec.signal.as_str(),
            incident.spec.target
        ),
    );
    if let Some(d) = &s.diagnosis {
        push(
            NotifyEvent::Diagnosed,
            "",
            format!(
                "diagnosed {:?} ({:.0}% confidence): {}",
                d.category,
                (d.confidence.clamp(0.0, 1.0) * 100.0),
                d.root_cause
            ),
        );
    }
    let prefix = format!("e{episode}-");
    for a in s.actions.iter().filter(|a| a.id.starts_with(&prefix)) {
        let suffix = format!("/{}", a.id);
        let what = a.type_.as_str();
        match a.state {
            ActionState::AwaitingApproval => push(
                NotifyEvent::ApprovalNeeded,
                &suffix,
                crate::incident::approval::how_to_decide(
                    &format!("{what} needs approval ({})", a.detail),
                    name,
                    ns,
                    &a.id,
                ),
            ),
            ActionState::Succeeded => push(
                NotifyEvent::ActionTaken,
                &suffix,
                format!("{what} succeeded: {}", a.detail),
            ),
            ActionState::Failed => push(
                NotifyEvent::ActionTaken,
                &suffix,
                format!("{what} failed: {}", a.detail),
            ),
            ActionState::DryRun => push(
                NotifyEvent::ActionTaken,
                &suffix,
                format!("{what} would run (DryRun): {}", a.detail),
            ),
            _ => {}
        }
    }
    match s.phase {
        Phase::Resolved => push(
            NotifyEvent::Resolved,
            "",
            format!("resolved: the signal cleared and stayed clear ({name})"),
        ),
        Phase::Escalated => push(
            NotifyEvent::Escalated,
            "",
            format!(
                "escalated to people: {}",
                s.escalation_reason
                    .as_deref()
                    .unwrap_or("the fixes ran out")
            ),
        ),
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ActionType;
    use crate::testing::{self, record};

    #[test]
    fn an_incident_announces_each_moment_once_in_order() {
        let mut i = testing::incident(
            Phase::Resolved,
            vec![record(1, ActionType::RestartPod, ActionState::Succeeded)],
        );
        let all = due(&i, &NotifyEvent::all());
        let events: Vec<NotifyEvent> = all.iter().map(|n| n.event).collect();
        assert_eq!(
            events,
            [
                NotifyEvent::Opened,
                NotifyEvent::Diagnosed,
                NotifyEvent::ActionTaken,
                NotifyEvent::Resolved
            ]
        );
        assert_eq!(all[2].key, "e1/ActionTaken/e1-1-restartpod");
        assert!(
            all[0]
                .text
                .contains("OOMKilled of Deployment/web in shop opened incident web-oomkilled")
        );
        // Only what the policy asks for.
        let few = due(&i, &[NotifyEvent::Resolved]);
        assert_eq!(few.len(), 1);
        // A new episode announces afresh, under new keys.
        if let Some(s) = i.status.as_mut() {
            s.episode = Some(2);
            s.phase = Phase::Detected;
        }
        let next = due(&i, &NotifyEvent::all());
        assert_eq!(next[0].key, "e2/Opened");
        assert!(
            next.iter().all(|n| n.event != NotifyEvent::ActionTaken),
            "last episode's action is not news"
        );
    }

    #[test]
    fn approval_needed_carries_the_exact_approve_command() {
        let i = testing::incident(
            Phase::AwaitingApproval,
            vec![record(
                1,
                ActionType::RestartPod,
                ActionState::AwaitingApproval,
            )],
        );
        let n = due(&i, &[NotifyEvent::ApprovalNeeded]);
        assert_eq!(n.len(), 1);
        assert!(
            n[0].text
                .contains("sre-space approve web-oomkilled -n shop"),
            "{}",
            n[0].text
        );
        assert!(n[0].text.contains("e1-1-restartpod"), "{}", n[0].text);
    }

    #[test]
    fn a_secret_in_the_diagnosis_is_not_announced() {
        let mut i = testing::incident(Phase::Diagnosing, vec![]);
        if let Some(d) = i.status.as_mut().and_then(|s| s.diagnosis.as_mut()) {
            d.root_cause = "crashed: DB_PASSWORD=hunter2 in env".into();
        }
        let n = due(&i, &[NotifyEvent::Diagnosed]);
        assert!(!n[0].text.contains("hunter2"), "{}", n[0].text);
    }
}
