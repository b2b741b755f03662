//! The containers' states: OOM kills, crash loops, images that cannot be
//! pulled, configurations that cannot start, init containers that fail, and
//! containers that are never created.

use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Pod, PodStatus};

use super::{Controller, PodReading, Signal, Subject};
use crate::crd::SignalKind;

/// The waiting reasons of a container the kubelet could not create or start
/// from its spec (pkg/kubelet/container/sync_result.go).
const CONFIG_WAITING: [&str; 3] = [
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// A termination that means the command never ran: containerd's
/// `StartError` and Docker's `ContainerCannotRun` (exit code 128, e.g.
/// `exec: "x": executable file not found in $PATH`).
fn never_ran(t: &ContainerStateTerminated) -> bool {
    matches!(
        t.reason.as_deref(),
        Some("StartError" | "ContainerCannotRun")
    )
}

#[derive(Clone, Copy, PartialEq)]
enum Role {
    Main,
    /// An init container; `initialized` when the pod's Initialized condition
    /// is True, so one that still restarts is a sidecar, not a step the
    /// pod waits for.
    Init {
        initialized: bool,
    },
}

impl Role {
    fn noun(self) -> &'static str {
        match self {
            Role::Main => "container",
            Role::Init { .. } => "init container",
        }
    }
}

fn condition_true(status: &PodStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == type_ && c.status == "True")
}

fn statuses(status: &PodStatus) -> impl Iterator<Item = (Role, &ContainerStatus)> {
    let initialized = condition_true(status, "Initialized");
    let init = status
        .init_container_statuses
        .iter()
        .flatten()
        .map(move |c| (Role::Init { initialized }, c));
    let main = status
        .container_statuses
        .iter()
        .flatten()
        .map(|c| (Role::Main, c));
    init.chain(main)
}

fn terminated_now(cs: &ContainerStatus) -> Option<&ContainerStateTerminated> {
    cs.state.as_ref()?.terminated.as_ref()
}

fn last_terminated(cs: &ContainerStatus) -> Option<&ContainerStateTerminated> {
    cs.last_state.as_ref()?.terminated.as_ref()
}

fn waiting(cs: &ContainerStatus) -> (Option<&str>, Option<&str>) {
    let w = cs.state.as_ref().and_then(|s| s.waiting.as_ref());
    (
        w.and_then(|w| w.reason.as_deref()),
        w.and_then(|w| w.message.as_deref()),
    )
}

/// The OOM kill of a container: the current state while the container is
/// down, the last state once it restarted.
fn oom_kill(cs: &ContainerStatus) -> Option<&ContainerStateTerminated> {
    [terminated_now(cs), last_terminated(cs)]
        .into_iter()
        .flatten()
        .find(|t| t.reason.as_deref() == Some("OOMKilled"))
}

/// Whether a Failed pod still has something to say: a container of a Job's
/// or a bare pod ran out of memory, or a bare pod's init container failed
/// (with restartPolicy Never, the only way such a pod fails in init).
pub(super) fn failed_pod_tells(pod: &Pod, controller: Controller) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    statuses(status).any(|(role, cs)| match controller {
        Controller::Job => oom_kill(cs).is_some(),
        Controller::None => {
            oom_kill(cs).is_some()
                || (role != Role::Main && terminated_now(cs).is_some_and(|t| t.exit_code != 0))
        }
        Controller::Other => false,
    })
}

/// The signals of a Failed pod's containers: its OOM kills (once each, by
/// finish time), and for a bare pod the init container that failed.
pub(super) fn failed_pod_signals(s: &Subject, controller: Controller, out: &mut Vec<Signal>) {
    for (role, cs) in statuses(s.status) {
        let oom = oom_signal(s, role, cs, out);
        if controller == Controller::None && role != Role::Main && !oom {
            init_error(s, cs, out);
        }
    }
}

/// The signals of a live pod's containers, and of a container that is
/// never created.
pub(super) fn signals(s: &Subject, reading: &mut PodReading) {
    // Without the spec (the Scout's store drops it), a pod that fails in
    // init with restartPolicy Never is recognised by its Failed phase. A
    // Job's pod that does is the Job's failure to report.
    let restart_never = s
        .pod
        .spec
        .as_ref()
        .and_then(|p| p.restart_policy.as_deref())
        == Some("Never")
        && super::controller(s.pod) != Controller::Job;
    for (role, cs) in statuses(s.status) {
        container_signals(s, role, cs, restart_never, &mut reading.signals);
    }
    creating(s, reading);
}

fn container_signals(
    s: &Subject,
    role: Role,
    cs: &ContainerStatus,
    restart_never: bool,
    out: &mut Vec<Signal>,
) {
    let oom = oom_signal(s, role, cs, out);
    let (reason, message) = waiting(cs);
    match reason {
        Some(r) if CONFIG_WAITING.contains(&r) => {
            // A start that failed also left its termination, with its exit code.
            let start = (r == "RunContainerError")
                .then(|| last_terminated(cs))
                .flatten();
            config_error(s, role, cs, r, message, start, out);
        }
        // An OOM loop is an OOM problem, not a second incident.
        Some("CrashLoopBackOff") if !oom => match last_terminated(cs) {
            Some(t) if never_ran(t) => {
                let reason = t.reason.as_deref().unwrap_or("StartError");
                config_error(s, role, cs, reason, t.message.as_deref(), Some(t), out);
            }
            _ if role == (Role::Init { initialized: false }) => init_crash_loop(s, cs, out),
            _ => crash_loop(s, role, cs, out),
        },
        Some(r @ ("ImagePullBackOff" | "ErrImagePull" | "InvalidImageName")) => {
            image(s, role, cs, r, message, out);
        }
        _ => {}
    }
    if restart_never && role != Role::Main && !oom {
        init_error(s, cs, out);
    }
}

fn oom_signal(s: &Subject, role: Role, cs: &ContainerStatus, out: &mut Vec<Signal>) -> bool {
    let Some(t) = oom_kill(cs) else {
        return false;
    };
    if s.trigger(SignalKind::OOMKilled).is_some() {
        let at = t.finished_at.as_ref().map(|f| f.0).unwrap_or(s.now);
        out.push(Signal {
            container: Some(cs.name.clone()),
            observed_at: at,
            ongoing: false,
            ..s.signal(
                SignalKind::OOMKilled,
                "OOMKilled",
                format!(
                    "{} {} of pod {} was OOMKilled (exit code {}) at {at}; restarts: {}",
                    role.noun(),
                    cs.name,
                    s.name,
                    t.exit_code,
                    cs.restart_count
                ),
                format!("{}/{}/oom/{}", s.uid, cs.name, at.as_second()),
            )
        });
    }
    true
}

/// A container the kubelet cannot create or start from its spec. Whether
/// the kubelet shows it waiting with the sync error or crash-looping on the
/// failed start, it is one key per container and cause, so the same fault
/// counts once however often the kubelet retries it.
fn config_error(
    s: &Subject,
    role: Role,
    cs: &ContainerStatus,
    reason: &str,
    message: Option<&str>,
    start: Option<&ContainerStateTerminated>,
    out: &mut Vec<Signal>,
) {
    if s.trigger(SignalKind::ConfigError).is_none() {
        return;
    }
    let start = start.filter(|t| never_ran(t));
    let cause = if reason == "RunContainerError" || start.is_some() {
        "start"
    } else {
        reason
    };
    let quoted = message
        .or(start.and_then(|t| t.message.as_deref()))
        .map(|m| format!(": {}", m.trim()))
        .unwrap_or_default();
    let exit = start
        .map(|t| format!(" (exit code {})", t.exit_code))
        .unwrap_or_default();
    let what = if cause == "start" {
        "cannot run its command"
    } else {
        "cannot be created from its configuration"
    };
    out.push(Signal {
        container: Some(cs.name.clone()),
        ..s.signal(
            SignalKind::ConfigError,
            reason,
            format!(
                "{} {} of pod {} {what}: {reason}{exit}{quoted}",
                role.noun(),
                cs.name,
                s.name
            ),
            format!("{}/{}/config/{cause}", s.uid, cs.name),
        )
    });
}

fn crash_loop(s: &Subject, role: Role, cs: &ContainerStatus, out: &mut Vec<Signal>) {
    let Some(t) = s.trigger(SignalKind::CrashLoopBackOff) else {
        return;
    };
    if cs.restart_count < t.restart_threshold() {
        return;
    }
    let exit = last_terminated(cs)
        .map(|t| format!(" (last exit code {})", t.exit_code))
        .unwrap_or_default();
    out.push(Signal {
        container: Some(cs.name.clone()),
        ..s.signal(
            SignalKind::CrashLoopBackOff,
            "CrashLoopBackOff",
            format!(
                "{} {} of pod {} is crash-looping: {} restarts{exit}",
                role.noun(),
                cs.name,
                s.name,
                cs.restart_count
            ),
            format!("{}/{}/crashloop/{}", s.uid, cs.name, cs.restart_count),
        )
    });
}

/// An init container that keeps failing: the pod shows
/// `Init:CrashLoopBackOff` and its containers never start.
fn init_crash_loop(s: &Subject, cs: &ContainerStatus, out: &mut Vec<Signal>) {
    let Some(t) = s.trigger(SignalKind::InitContainerFailed) else {
        return;
    };
    if cs.restart_count < t.restart_threshold() {
        return;
    }
    let exit = last_terminated(cs)
        .map(|t| format!(", last exit code {}", t.exit_code))
        .unwrap_or_default();
    out.push(Signal {
        container: Some(cs.name.clone()),
        ..s.signal(
            SignalKind::InitContainerFailed,
            "Init:CrashLoopBackOff",
            format!(
                "init container {} of pod {} is crash-looping (Init:CrashLoopBackOff): {} restarts{exit}; the pod's containers cannot start",
                cs.name, s.name, cs.restart_count
            ),
            format!("{}/{}/init-crashloop/{}", s.uid, cs.name, cs.restart_count),
        )
    });
}

/// An init container that exited non-zero in a pod whose restartPolicy is
/// Never: the pod shows `Init:Error` and will not try again.
fn init_error(s: &Subject, cs: &ContainerStatus, out: &mut Vec<Signal>) {
    let Some(t) = terminated_now(cs).filter(|t| t.exit_code != 0) else {
        return;
    };
    if never_ran(t) {
        let reason = t.reason.as_deref().unwrap_or("StartError");
        let role = Role::Init { initialized: false };
        return config_error(s, role, cs, reason, t.message.as_deref(), Some(t), out);
    }
    if s.trigger(SignalKind::InitContainerFailed).is_none() {
        return;
    }
    let quoted = t
        .message
        .as_deref()
        .map(|m| format!(": {}", m.trim()))
        .unwrap_or_default();
    out.push(Signal {
        container: Some(cs.name.clone()),
        observed_at: t.finished_at.as_ref().map(|f| f.0).unwrap_or(s.now),
        ongoing: false,
        ..s.signal(
            SignalKind::InitContainerFailed,
            "Init:Error",
            format!(
                "init container {} of pod {} failed with exit code {} (Init:Error) and the pod's restartPolicy is Never, so its containers will not start{quoted}",
                cs.name, s.name, t.exit_code
            ),
            format!("{}/{}/init-error", s.uid, cs.name),
        )
    });
}

fn image(
    s: &Subject,
    role: Role,
    cs: &ContainerStatus,
    reason: &str,
    message: Option<&str>,
    out: &mut Vec<Signal>,
) {
    if s.trigger(SignalKind::ImagePullBackOff).is_none() {
        return;
    }
    let detail = message.unwrap_or_default();
    out.push(Signal {
        container: Some(cs.name.clone()),
        ..s.signal(
            SignalKind::ImagePullBackOff,
            reason,
            format!(
                "image {} of {} {} cannot be pulled: {reason} {detail}",
                cs.image,
                role.noun(),
                cs.name
            )
            .trim_end()
            .to_string(),
            format!("{}/{}/image/{}", s.uid, cs.name, cs.image),
        )
    });
}

/// A container still waiting to be created long after its pod was
/// scheduled (and its init containers done): the kubelet shows
/// `ContainerCreating` (`PodInitializing` for an init container) while a
/// volume cannot be mounted, which its FailedMount events then say, and
/// also while an image is still being pulled, which is what the grace
/// period leaves room for.
fn creating(s: &Subject, reading: &mut PodReading) {
    let Some(t) = s.trigger(SignalKind::ConfigError) else {
        return;
    };
    let conditions = s.status.conditions.iter().flatten();
    let transition = |type_: &str| {
        conditions
            .clone()
            .find(|c| c.type_ == type_ && c.status == "True")
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0)
    };
    let Some(scheduled) = transition("PodScheduled") else {
        return;
    };
    // Each container is measured from when it could first be created: the
    // pod's scheduling, the end of the init container before it, or the
    // end of initialisation for the main containers.
    let mut ready_since = Some(scheduled);
    let mut stuck = None;
    for (role, cs) in statuses(s.status) {
        let Some(since) = ready_since else { break };
        let untouched = cs.restart_count == 0 && last_terminated(cs).is_none();
        let (reason, _) = waiting(cs);
        let waiting_creation = match role {
            Role::Main => reason == Some("ContainerCreating"),
            Role::Init { .. } => reason == Some("PodInitializing"),
        };
        if untouched && waiting_creation {
            let since = match role {
                Role::Main => transition("Initialized").map_or(since, |i| i.max(since)),
                Role::Init { .. } => since,
            };
            stuck = Some((role, cs, since, reason.unwrap_or_default()));
            break;
        }
        if role != Role::Main {
            // The next init container starts only after this one completed.
            ready_since = terminated_now(cs)
                .filter(|t| t.exit_code == 0)
                .map(|t| t.finished_at.as_ref().map_or(since, |f| f.0.max(since)));
        }
    }
    let Some((role, cs, since, reason)) = stuck else {
        return;
    };
    let grace = crate::limits::seconds(t.grace_period_seconds());
    let elapsed = s.now.duration_since(since);
    if elapsed < grace {
        // A transition time far ahead of our clock is looked at again
        // within a week all the same.
        reading.recheck((grace - elapsed).unsigned_abs().min(crate::limits::WEEK));
        return;
    }
    reading.signals.push(Signal {
        container: Some(cs.name.clone()),
        ..s.signal(
            SignalKind::ConfigError,
            reason,
            format!(
                "{} {} of pod {} is still {reason} {}s after it could start (since {since}): a volume it mounts may be missing (a ConfigMap, Secret or PersistentVolumeClaim; see the pod's FailedMount events), or its image is still being pulled",
                role.noun(),
                cs.name,
                s.name,
                elapsed.as_secs()
            ),
            format!("{}/config/creating", s.uid),
        )
    });
}
