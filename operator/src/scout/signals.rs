//! Turns what a pod's status says into signals. Pure: the pod, the policy's
//! triggers and the time in, signals out.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::jiff::Timestamp;

use crate::crd::{SignalKind, Trigger};

/// One observation of trouble in one pod.
#[derive(Clone, Debug, PartialEq)]
pub struct Signal {
    pub kind: SignalKind,
    /// The pod it was seen in; none for what the operator measures itself
    /// (health checks, event rates, traces).
    pub pod: Option<String>,
    pub container: Option<String>,
    /// The reason Kubernetes gave.
    pub reason: String,
    pub message: String,
    /// When it happened (an OOM kill's finish time), or now for a state
    /// that is still present.
    pub observed_at: Timestamp,
    /// Identity of the observation, so that seeing the same status twice
    /// counts once.
    pub key: String,
    /// A state still present (a crash loop, a pending pod) rather than an
    /// event that happened at `observed_at` (an OOM kill).
    pub ongoing: bool,
}

/// What the Scout found in a pod.
#[derive(Debug, Default, PartialEq)]
pub struct PodReading {
    pub signals: Vec<Signal>,
    /// When a grace period that is running now ends, so the pod is looked at
    /// again then.
    pub recheck_after: Option<Duration>,
}

fn trigger(triggers: &[Trigger], kind: SignalKind) -> Option<&Trigger> {
    triggers.iter().find(|t| t.type_ == kind)
}

/// Pods that are going away or finished are normal churn, never trouble.
pub fn is_churn(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_some() || matches!(phase, Some("Succeeded") | Some("Failed"))
}

/// Reads the signals of a pod for the kinds the triggers list.
pub fn read_pod(pod: &Pod, triggers: &[Trigger], now: Timestamp) -> PodReading {
    let mut reading = PodReading::default();
    if is_churn(pod) {
        return reading;
    }
    let (Some(name), Some(status)) = (pod.metadata.name.clone(), pod.status.as_ref()) else {
        return reading;
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());

    let mut stuck_containers = false;
    for cs in containers {
        stuck_containers |= container_signals(&name, &uid, cs, triggers, now, &mut reading.signals);
    }

    let conditions = status.conditions.as_deref().unwrap_or_default();
    let lasting = |type_: &str, kind: SignalKind, reason_ok: &dyn Fn(Option<&str>) -> bool| {
        let t = trigger(triggers, kind)?;
        let c = conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == "False")?;
        if !reason_ok(c.reason.as_deref()) {
            return None;
        }
        let since = c.last_transition_time.as_ref().map(|t| t.0).unwrap_or(now);
        let grace = crate::limits::seconds(t.grace_period_seconds());
        let elapsed = now.duration_since(since);
        Some((
            elapsed >= grace,
            // A transition time far ahead of our clock is looked at again
            // within a week all the same.
            (grace - elapsed).unsigned_abs().min(crate::limits::WEEK),
            since,
            c.message.clone().unwrap_or_default(),
        ))
    };
    let phase = status.phase.as_deref();

    if phase == Some("Pending")
        && let Some((due, remaining, since, message)) =
            lasting("PodScheduled", SignalKind::Unschedulable, &|r| {
                r == Some("Unschedulable")
            })
    {
        if due {
            reading.signals.push(Signal {
                kind: SignalKind::Unschedulable,
                pod: Some(name.clone()),
                container: None,
                reason: "Unschedulable".into(),
                message: format!("pod {name} cannot be scheduled since {since}: {message}"),
                observed_at: now,
                key: format!("{uid}/unschedulable"),
                ongoing: true,
            });
        } else {
            reading.recheck_after = Some(remaining);
        }
    }
    // A crash loop or a bad image already explains a pod that is not ready.
    if phase == Some("Running")
        && !stuck_containers
        && let Some((due, remaining, since, _)) =
            lasting("Ready", SignalKind::ReadinessFailing, &|_| true)
    {
        if due {
            reading.signals.push(Signal {
                kind: SignalKind::ReadinessFailing,
                pod: Some(name.clone()),
                container: None,
                reason: "NotReady".into(),
                message: format!("pod {name} has not been ready since {since}"),
                observed_at: now,
                key: format!("{uid}/notready"),
                ongoing: true,
            });
        } else {
            reading.recheck_after = Some(
                reading
                    .recheck_after
                    .map_or(remaining, |r| r.min(remaining)),
            );
        }
    }
    // Messages quote the pod's status (a scheduler's or a registry's
    // words); redacted here, before they reach the Incident or an event.
    for s in &mut reading.signals {
        crate::redact::in_place(&mut s.message);
    }
    reading
}

/// Adds the signals of one container; returns whether the container is
/// stuck (crash-looping or unable to pull), which explains the pod not being
/// ready.
fn container_signals(
    pod: &str,
    uid: &str,
    cs: &ContainerStatus,
    triggers: &[Trigger],
    now: Timestamp,
    out: &mut Vec<Signal>,
) -> bool {
    let state = cs.state.as_ref();
    let waiting = state.and_then(|s| s.waiting.as_ref());
    let waiting_reason = waiting.and_then(|w| w.reason.as_deref());
    let terminated_now = state.and_then(|s| s.terminated.as_ref());
    let last_terminated = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref());

    // An OOM kill is an event: the current state while the container is
    // down, the last state once it restarted. Its finish time identifies it.
    let oom = [terminated_now, last_terminated]
        .into_iter()
        .flatten()
        .find(|t| t.reason.as_deref() == Some("OOMKilled"));
    if let (Some(t), Some(_)) = (oom, trigger(triggers, SignalKind::OOMKilled)) {
        let at = t.finished_at.as_ref().map(|f| f.0).unwrap_or(now);
        out.push(Signal {
            kind: SignalKind::OOMKilled,
            pod: Some(pod.to_string()),
            container: Some(cs.name.clone()),
            reason: "OOMKilled".into(),
            message: format!(
                "container {} of pod {pod} was OOMKilled (exit code {}) at {at}; restarts: {}",
                cs.name, t.exit_code, cs.restart_count
            ),
            observed_at: at,
            key: format!("{uid}/{}/oom/{}", cs.name, at.as_second()),
            ongoing: false,
        });
    }

    let mut stuck = false;
    if waiting_reason == Some("CrashLoopBackOff") {
        stuck = true;
        // An OOM loop is an OOM problem, not a second incident.
        if oom.is_none()
            && let Some(t) = trigger(triggers, SignalKind::CrashLoopBackOff)
            && cs.restart_count >= t.restart_threshold()
        {
            let exit = last_terminated
                .map(|t| format!(" (last exit code {})", t.exit_code))
                .unwrap_or_default();
            out.push(Signal {
                kind: SignalKind::CrashLoopBackOff,
                pod: Some(pod.to_string()),
                container: Some(cs.name.clone()),
                reason: "CrashLoopBackOff".into(),
                message: format!(
                    "container {} of pod {pod} is crash-looping: {} restarts{exit}",
                    cs.name, cs.restart_count
                ),
                observed_at: now,
                key: format!("{uid}/{}/crashloop/{}", cs.name, cs.restart_count),
                ongoing: true,
            });
        }
    }
    if let Some(reason @ ("ImagePullBackOff" | "ErrImagePull" | "InvalidImageName")) =
        waiting_reason
    {
        stuck = true;
        if trigger(triggers, SignalKind::ImagePullBackOff).is_some() {
            let detail = waiting.and_then(|w| w.message.clone()).unwrap_or_default();
            out.push(Signal {
                kind: SignalKind::ImagePullBackOff,
                pod: Some(pod.to_string()),
                container: Some(cs.name.clone()),
                reason: reason.to_string(),
                message: format!(
                    "image {} of container {} cannot be pulled: {reason} {detail}",
                    cs.image, cs.name
                )
                .trim_end()
                .to_string(),
                observed_at: now,
                key: format!("{uid}/{}/image/{}", cs.name, cs.image),
                ongoing: true,
            });
        }
    }
    stuck
}

#[cfg(test)]
mod tests {
    use super::*;

    fn triggers(kinds: &[SignalKind]) -> Vec<Trigger> {
        kinds.iter().map(|k| Trigger::of(*k)).collect()
    }

    fn all() -> Vec<Trigger> {
        triggers(&[
            SignalKind::OOMKilled,
            SignalKind::CrashLoopBackOff,
            SignalKind::ImagePullBackOff,
            SignalKind::Unschedulable,
            SignalKind::ReadinessFailing,
        ])
    }

    fn now() -> Timestamp {
        "2026-11-26T10:00:00Z".parse().unwrap()
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "web-1", "uid": "u1" },
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn oom_kill_in_last_state_is_one_signal_with_its_finish_time() {
        let p = pod(serde_json::json!({
            "phase": "Running",
            "containerStatuses": [{
                "name": "app", "image": "web:1", "imageID": "", "ready": true, "restartCount": 1,
                "state": { "running": {} },
                "lastState": { "terminated": { "exitCode": 137, "reason": "OOMKilled", "finishedAt": "2026-11-26T09:59:50Z" } }
            }]
        }));
        let r = read_pod(&p, &all(), now());
        assert_eq!(r.signals.len(), 1);
        let s = &r.signals[0];
        assert_eq!(s.kind, SignalKind::OOMKilled);
        assert_eq!(s.container.as_deref(), Some("app"));
        assert_eq!(
            s.observed_at,
            "2026-11-26T09:59:50Z".parse::<Timestamp>().unwrap()
        );
        assert!(s.message.contains("exit code 137"), "{}", s.message);
    }

    #[test]
    fn the_same_oom_kill_seen_down_and_restarted_has_one_key() {
        let down = pod(
            serde_json::json!({ "phase": "Running", "containerStatuses": [{
                "name": "app", "image": "web:1", "imageID": "", "ready": false, "restartCount": 0,
                "state": { "terminated": { "exitCode": 137, "reason": "OOMKilled", "finishedAt": "2026-11-26T09:59:50Z" } }
            }]}),
        );
        let up = pod(
            serde_json::json!({ "phase": "Running", "containerStatuses": [{
                "name": "app", "image": "web:1", "imageID": "", "ready": true, "restartCount": 1,
                "state": { "running": {} },
                "lastState": { "terminated": { "exitCode": 137, "reason": "OOMKilled", "finishedAt": "2026-11-26T09:59:50Z" } }
            }]}),
        );
        assert_eq!(
            read_pod(&down, &all(), now()).signals[0].key,
            read_pod(&up, &all(), now()).signals[0].key
        );
    }

    #[test]
    fn crash_loop_counts_only_past_the_restart_threshold() {
        let looping = |restarts: i32| {
            pod(
                serde_json::json!({ "phase": "Running", "containerStatuses": [{
                    "name": "app", "image": "web:2", "imageID": "", "ready": false, "restartCount": restarts,
                    "state": { "waiting": { "reason": "CrashLoopBackOff" } },
                    "lastState": { "terminated": { "exitCode": 1, "reason": "Error" } }
                }]}),
            )
        };
        assert!(read_pod(&looping(2), &all(), now()).signals.is_empty());
        let r = read_pod(&looping(3), &all(), now());
        assert_eq!(r.signals.len(), 1);
        assert_eq!(r.signals[0].kind, SignalKind::CrashLoopBackOff);
        assert!(r.signals[0].message.contains("last exit code 1"));
    }

    #[test]
    fn an_oom_crash_loop_is_one_oom_signal() {
        let p = pod(
            serde_json::json!({ "phase": "Running", "containerStatuses": [{
                "name": "app", "image": "web:1", "imageID": "", "ready": false, "restartCount": 5,
                "state": { "waiting": { "reason": "CrashLoopBackOff" } },
                "lastState": { "terminated": { "exitCode": 137, "reason": "OOMKilled" } }
            }]}),
        );
        let kinds: Vec<_> = read_pod(&p, &all(), now())
            .signals
            .iter()
            .map(|s| s.kind)
            .collect();
        assert_eq!(kinds, [SignalKind::OOMKilled]);
    }

    #[test]
    fn untriggered_kinds_are_ignored() {
        let p = pod(
            serde_json::json!({ "phase": "Running", "containerStatuses": [{
                "name": "app", "image": "web:1", "imageID": "", "ready": false, "restartCount": 5,
                "state": { "waiting": { "reason": "ImagePullBackOff" } }
            }]}),
        );
        assert!(
            read_pod(&p, &triggers(&[SignalKind::OOMKilled]), now())
                .signals
                .is_empty()
        );
        assert_eq!(
            read_pod(&p, &all(), now()).signals[0].kind,
            SignalKind::ImagePullBackOff
        );
    }

    #[test]
    fn unschedulable_waits_for_its_grace_period() {
        let p = |since: &str| {
            pod(serde_json::json!({ "phase": "Pending", "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient memory.", "lastTransitionTime": since
            }]}))
        };
        let early = read_pod(&p("2026-11-26T09:59:30Z"), &all(), now());
        assert!(early.signals.is_empty());
        assert_eq!(early.recheck_after, Some(Duration::from_secs(30)));
        let late = read_pod(&p("2026-11-26T09:58:00Z"), &all(), now());
        assert_eq!(late.signals[0].kind, SignalKind::Unschedulable);
        assert!(late.signals[0].message.contains("Insufficient memory"));
    }

    #[test]
    fn not_ready_is_a_signal_only_when_nothing_else_explains_it() {
        let p = pod(serde_json::json!({ "phase": "Running",
            "conditions": [{ "type": "Ready", "status": "False", "lastTransitionTime": "2026-11-26T09:50:00Z" }],
            "containerStatuses": [{ "name": "app", "image": "web:1", "imageID": "", "ready": false,
                "restartCount": 0, "state": { "running": {} } }]
        }));
        assert_eq!(
            read_pod(&p, &all(), now()).signals[0].kind,
            SignalKind::ReadinessFailing
        );
    }

    #[test]
    fn terminating_and_completed_pods_are_churn() {
        let mut p = pod(
            serde_json::json!({ "phase": "Running", "containerStatuses": [{
                "name": "app", "image": "web:1", "imageID": "", "ready": false, "restartCount": 9,
                "state": { "waiting": { "reason": "CrashLoopBackOff" } }
            }]}),
        );
        p.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
        assert!(read_pod(&p, &all(), now()).signals.is_empty());
        let done = pod(serde_json::json!({ "phase": "Succeeded" }));
        assert!(read_pod(&done, &all(), now()).signals.is_empty());
    }
}
