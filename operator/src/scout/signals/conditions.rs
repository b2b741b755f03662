//! The pod's conditions: a pod that cannot be scheduled, and one whose own
//! readiness probe fails.

use std::time::Duration;

use k8s_openapi::api::core::v1::PodStatus;
use k8s_openapi::jiff::Timestamp;

use super::{PodReading, Subject};
use crate::crd::SignalKind;

/// A condition False past its trigger's grace period: whether the grace
/// period is over, how long is left of it, since when, and its message.
struct Lasting {
    due: bool,
    remaining: Duration,
    since: Timestamp,
    message: String,
}

fn lasting(s: &Subject, type_: &str, kind: SignalKind) -> Option<Lasting> {
    let t = s.trigger(kind)?;
    let c = s
        .status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_ && c.status == "False")?;
    if type_ == "PodScheduled" && c.reason.as_deref() != Some("Unschedulable") {
        return None;
    }
    let since = c
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(s.now);
    let grace = crate::limits::seconds(t.grace_period_seconds());
    let elapsed = s.now.duration_since(since);
    Some(Lasting {
        due: elapsed >= grace,
        // A transition time far ahead of our clock is looked at again
        // within a week all the same.
        remaining: (grace - elapsed).unsigned_abs().min(crate::limits::WEEK),
        since,
        message: c.message.clone().unwrap_or_default(),
    })
}

/// Adds the signals of the pod's conditions. `node_failed`: the node
/// explains the pod not being ready.
pub(super) fn signals(s: &Subject, node_failed: bool, reading: &mut PodReading) {
    let phase = s.status.phase.as_deref();
    if phase == Some("Pending")
        && let Some(l) = lasting(s, "PodScheduled", SignalKind::Unschedulable)
    {
        if l.due {
            reading.signals.push(s.signal(
                SignalKind::Unschedulable,
                "Unschedulable",
                format!(
                    "pod {} cannot be scheduled since {}: {}",
                    s.name, l.since, l.message
                ),
                format!("{}/unschedulable", s.uid),
            ));
        } else {
            reading.recheck(l.remaining);
        }
    }
    if phase == Some("Running")
        && !node_failed
        && let Some(l) = lasting(s, "Ready", SignalKind::ReadinessFailing)
        && probe_explains(s.status, l.since)
    {
        if l.due {
            reading.signals.push(s.signal(
                SignalKind::ReadinessFailing,
                "NotReady",
                format!("pod {} has not been ready since {}", s.name, l.since),
                format!("{}/notready", s.uid),
            ));
        } else {
            reading.recheck(l.remaining);
        }
    }
}

/// Whether only a readiness probe can explain the pod not being ready since
/// `since`: its not-ready containers are all running and none has
/// restarted since. A container that is waiting (crash-looping, unable to
/// pull or start, never created) or terminated fails its readiness probe
/// too, and that is its own signal, not a second problem.
fn probe_explains(status: &PodStatus, since: Timestamp) -> bool {
    let mut not_ready = status
        .container_statuses
        .iter()
        .flatten()
        .filter(|c| !c.ready)
        .peekable();
    not_ready.peek().is_some()
        && not_ready.all(|c| {
            let running = c.state.as_ref().is_some_and(|s| s.running.is_some());
            let restarted_since = c
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .and_then(|t| t.finished_at.as_ref())
                .is_some_and(|f| f.0 > since);
            running && !restarted_since
        })
}
