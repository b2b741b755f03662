//! Jobs that fail: out of retries (BackoffLimitExceeded) or of time
//! (DeadlineExceeded), or killed at their memory limit. Restarting a Job's
//! pod repeats the same run; a person fixes the program, its input or the
//! Job's settings.

use super::{Case, Cite, checked, hypothesis};
use crate::crd::{ActionType, Category, Hypothesis};

pub(super) fn rules(c: &Case) -> Vec<Hypothesis> {
    let w = c.facts.workload.as_ref();
    let failed = w.and_then(|w| {
        w.conditions
            .iter()
            .find(|k| matches!(k.type_.as_str(), "Failed" | "FailureTarget") && k.status == "True")
    });
    let job = match (
        w.and_then(|w| w.owner.as_ref()),
        w.and_then(|w| w.run.as_ref()),
    ) {
        (Some(o), _) if o.starts_with("CronJob/") => format!("{} (run by {o})", c.target),
        (_, Some(run)) => format!("Job/{run} (run by {})", c.target),
        _ => c.target.to_string(),
    };
    let owner = c.owner();
    let reason = failed
        .and_then(|f| f.reason.clone())
        .or_else(|| c.facts.observation.as_ref().map(|o| o.reason.clone()))
        .unwrap_or_default();
    let message = failed.and_then(|f| f.message.clone()).unwrap_or_default();
    // The container's last exit, from the Job's pod.
    let terminated = c
        .facts
        .pod
        .as_ref()
        .and_then(|p| p.status.as_ref())
        .into_iter()
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        })
        .filter(|s| s.name == c.container)
        .flat_map(|s| [&s.state, &s.last_state].into_iter().flatten())
        .filter_map(|st| st.terminated.as_ref())
        .find(|t| t.exit_code != 0);
    let oom = terminated.is_some_and(|t| t.reason.as_deref() == Some("OOMKilled"));
    let evidence = c.cite_with_events(&[
        Cite::Signal,
        Cite::Workload,
        Cite::Termination,
        Cite::Log,
        Cite::Resources,
    ]);
    if oom {
        let limit = c
            .resources
            .and_then(|r| r.memory_limit.clone())
            .unwrap_or_else(|| "its limit".into());
        let at = c
            .container_path(&c.container)
            .map(|p| format!(" at {p}.resources.limits.memory of {owner}"))
            .unwrap_or_default();
        let why = if reason.is_empty() {
            String::new()
        } else {
            format!(", and the Job failed ({reason})")
        };
        return vec![checked(
            hypothesis(
                Category::OutOfMemory,
                format!(
                    "container `{}` of {job} needs more memory than {limit}: the kernel killed it (OOMKilled){why}; raise the limit{at}",
                    c.container
                ),
                0.9,
                evidence,
                Some(ActionType::RaiseMemoryLimit),
            ),
            format!("the pod's memory use reaches {limit} before each kill"),
            "the pod's last termination reason is not OOMKilled".into(),
        )];
    }
    let exit = match (terminated, c.log_line()) {
        (Some(t), Some(line)) => format!(
            "; container `{}` exits with code {}, its log says: {line:?}",
            c.container, t.exit_code
        ),
        (Some(t), None) => format!(
            "; container `{}` exits with code {}",
            c.container, t.exit_code
        ),
        (None, Some(line)) => format!("; its log says: {line:?}"),
        (None, None) => String::new(),
    };
    let quoted = if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    };
    let (statement, confirm, refute) = match reason.as_str() {
        "DeadlineExceeded" => {
            let limit = w
                .and_then(|w| w.active_deadline_seconds)
                .map(|s| format!(" of {s}s"))
                .unwrap_or_default();
            (
                format!(
                    "{job} ran longer than its activeDeadlineSeconds{limit} and was stopped (DeadlineExceeded{quoted}){exit}: make the work finish sooner, or raise spec.activeDeadlineSeconds of {owner}"
                ),
                "the Job's pods were still running when the deadline passed".to_string(),
                "the Job's pods finished before the deadline".to_string(),
            )
        }
        "BackoffLimitExceeded" => {
            let tries = match (w.and_then(|w| w.failed), w.and_then(|w| w.backoff_limit)) {
                (Some(f), Some(b)) => format!(": {f} pod(s) failed, backoffLimit is {b}"),
                (None, Some(b)) => format!(": backoffLimit is {b}"),
                _ => String::new(),
            };
            (
                format!(
                    "{job} ran out of retries (BackoffLimitExceeded{quoted}){tries}{exit}: fix what makes its pods fail; retrying runs the same program on the same input"
                ),
                "every failed pod of the Job exits the same way".to_string(),
                "a later pod of the Job succeeds without a change".to_string(),
            )
        }
        _ => {
            if failed.is_none() && terminated.is_none() && c.facts.observation.is_none() {
                return vec![];
            }
            let why = if reason.is_empty() {
                "failed".to_string()
            } else {
                format!("failed ({reason}{quoted})")
            };
            (
                format!("{job} {why}{exit}"),
                "the Job's pods exit non-zero".to_string(),
                "the Job completes when run again unchanged".to_string(),
            )
        }
    };
    vec![checked(
        hypothesis(
            Category::JobFailure,
            statement,
            0.85,
            evidence,
            Some(ActionType::Escalate),
        ),
        confirm,
        refute,
    )]
}
