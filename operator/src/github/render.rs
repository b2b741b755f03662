//! What the incident's GitHub issue says, derived from the Incident alone.
//! Each comment has a key, written into it as a hidden marker, so it is
//! posted once however often the operator restarts.

use std::fmt::Write;

use crate::crd::{ActionState, Incident, Phase, SignalKind};

/// The hidden marker that ties an issue to its incident.
pub fn issue_marker(incident: &Incident) -> String {
    format!(
        "<!-- sre-space:incident {}/{} {} -->",
        incident.metadata.namespace.as_deref().unwrap_or(""),
        incident.metadata.name.as_deref().unwrap_or(""),
        incident.spec.fingerprint
    )
}

/// The hidden marker of one comment.
pub fn comment_marker(key: &str) -> String {
    format!("<!-- sre-space:comment {key} -->")
}

/// The label that hands an escalated problem to the architectural fixer.
pub const ESCALATION_LABEL: &str = "jules-fix";

/// What the issue should look like now.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredIssue {
    pub title: String,
    pub body: String,
    pub labels: Vec<String>,
    /// `open` or `closed`.
    pub state: &'static str,
    /// Comments in the order they should appear: (key, body).
    pub comments: Vec<(String, String)>,
}

fn severity(signal: SignalKind) -> &'static str {
    match signal {
        SignalKind::OOMKilled | SignalKind::CrashLoopBackOff | SignalKind::ImagePullBackOff => {
            "severity: high"
        }
        SignalKind::ConversionRate | SignalKind::EventRateDrop | SignalKind::HealthCheck => {
            "severity: high"
        }
        SignalKind::Unschedulable
        | SignalKind::ReadinessFailing
        | SignalKind::TraceErrorRate
        | SignalKind::TraceLatency => "severity: medium",
    }
}

/// Renders the issue of an incident. `posted` is how many recurrences were
/// already reported, so a burst of them becomes one comment.
pub fn desired(
    incident: &Incident,
    extra_labels: &[String],
    posted_recurrences: i64,
) -> DesiredIssue {
    let spec = &incident.spec;
    let status = incident.status.clone().unwrap_or_default();
    let ns = incident.metadata.namespace.as_deref().unwrap_or("");
    let category = status
        .diagnosis
        .as_ref()
        .map(|d| format!("{:?}", d.category))
        .unwrap_or_else(|| "Detected".into());
    let title = format!(
        "[INCIDENT] {category}: {ns}/{} {}",
        spec.target.name,
        spec.signal.as_str()
    );

    let mut body = String::new();
    let _ = writeln!(
        body,
        "SRE-Space detected **{}** on `{}` in namespace `{ns}`.\n",
        spec.signal.as_str(),
        spec.target
    );
    if let Some(s) = &status.last_signal {
        let _ = writeln!(body, "> {}\n", s.message.replace('\n', " "));
    }
    let _ = writeln!(body, "| | |\n|---|---|");
    let _ = writeln!(
        body,
        "| Incident | `{}` |",
        incident.metadata.name.as_deref().unwrap_or("")
    );
    let _ = writeln!(body, "| Policy | `{}` |", spec.policy);
    let _ = writeln!(
        body,
        "| First seen | {} |",
        status
            .first_seen
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default()
    );
    let _ = writeln!(
        body,
        "\nFollow it with `kubectl get incident -n {ns} {}`.\n",
        incident.metadata.name.as_deref().unwrap_or("")
    );
    body.push_str(&issue_marker(incident));

    let status_label = match status.phase {
        Phase::Resolved => "Status: Fixed",
        Phase::Escalated => "Status: Escalated",
        _ => "Status: Open",
    };
    let mut labels = vec![
        "sre-space".to_string(),
        severity(spec.signal).to_string(),
        status_label.to_string(),
    ];
    if status.phase == Phase::Escalated {
        labels.push(ESCALATION_LABEL.into());
    }
    labels.extend(extra_labels.iter().cloned());

    let episode = status
        .detected_at
        .as_ref()
        .or(status.first_seen.as_ref())
        .map(|t| t.0.as_second())
        .unwrap_or(0);
    let key = |k: &str| format!("{episode}/{k}");
    let mut comments = Vec::new();
    if let Some(d) = &status.diagnosis {
        let mut c = format!(
            "### Diagnosis ({}, analyser `{}`)\n\n**{:?}**, confidence {:.0}%: {}\n\n| # | hypothesis | confidence | evidence |\n|---|---|---|---|\n",
            d.diagnosed_at.0,
            d.analyzer,
            d.category,
            d.confidence * 100.0,
            d.root_cause
        );
        for (i, h) in d.hypotheses.iter().enumerate() {
            let _ = writeln!(
                c,
                "| {} | {:?}: {} | {:.0}% | {} |",
                i + 1,
                h.category,
                h.statement.replace('|', "/"),
                h.confidence * 100.0,
                h.evidence.join(", ")
            );
        }
        c.push_str("\n<details><summary>Evidence</summary>\n\n");
        for e in &d.evidence {
            let _ = writeln!(
                c,
                "- `{}` {:?} `{}`: {}",
                e.id,
                e.kind,
                e.source,
                e.summary.replace('\n', " ")
            );
        }
        c.push_str("\n</details>\n");
        comments.push((key("diagnosis"), c));
    }
    if status.occurrences > posted_recurrences.max(1) {
        let from = posted_recurrences.max(1) + 1;
        let to = status.occurrences;
        let which = if from == to {
            format!("occurrence {to}")
        } else {
            format!("occurrences {from} to {to}")
        };
        let msg = status
            .last_signal
            .as_ref()
            .map(|s| s.message.clone())
            .unwrap_or_default();
        comments.push((
            key(&format!("seen/{to}")),
            format!("### Seen again ({which})\n\n> {msg}\n"),
        ));
    }
    for a in &status.actions {
        let reported = matches!(
            a.state,
            ActionState::Succeeded
                | ActionState::Failed
                | ActionState::Blocked
                | ActionState::DryRun
                | ActionState::Rejected
                | ActionState::AwaitingApproval
                | ActionState::AwaitingMerge
                | ActionState::Superseded
        );
        if !reported || a.type_ == crate::crd::ActionType::Escalate {
            continue;
        }
        let mut c = format!(
            "### Action `{}`: {} {:?}\n\n{}\n",
            a.id,
            a.type_.as_str(),
            a.state,
            a.detail
        );
        if let (Some(from), Some(to)) = (&a.from, &a.to) {
            let _ = writeln!(c, "\nFrom `{from}` to `{to}`.");
        }
        if let Some(pr) = &a.pull_request {
            let _ = writeln!(
                c,
                "\nProposed in {} (never merged by the operator).",
                pr.url
            );
        }
        comments.push((key(&format!("action/{}/{:?}", a.id, a.state)), c));
        if let Some(outcome) = a.outcome {
            comments.push((
                key(&format!("action/{}/outcome", a.id)),
                format!("### Action `{}`: {outcome:?}\n", a.id),
            ));
        }
    }
    if status.phase == Phase::Escalated {
        comments.push((key("escalation"), escalation_brief(incident)));
    }
    if let Some(pm) = &status.post_mortem
        && matches!(status.phase, Phase::Resolved | Phase::Escalated)
    {
        comments.push((key("postmortem"), pm.clone()));
    }
    let state = if status.phase == Phase::Resolved {
        "closed"
    } else {
        "open"
    };
    DesiredIssue {
        title,
        body,
        labels,
        state,
        comments,
    }
}

/// The brief for an architectural fix, posted when an incident escalates.
pub fn escalation_brief(incident: &Incident) -> String {
    let status = incident.status.clone().unwrap_or_default();
    let mut c = format!(
        "### Escalated: an architectural fix is needed (`{ESCALATION_LABEL}`)\n\n**Why**: {}\n\n**Recurrences**: the signal was seen {} time(s).\n\n**Tried**:\n",
        status
            .escalation_reason
            .as_deref()
            .unwrap_or("the simple fixes did not hold"),
        status.occurrences
    );
    for a in status
        .actions
        .iter()
        .filter(|a| a.type_ != crate::crd::ActionType::Escalate)
    {
        let outcome = a.outcome.map(|o| format!(", {o:?}")).unwrap_or_default();
        let _ = writeln!(
            c,
            "- {} ({:?}{outcome}): {}",
            a.type_.as_str(),
            a.state,
            a.detail
        );
    }
    if let Some(d) = &status.diagnosis {
        let _ = writeln!(
            c,
            "\n**Root cause so far** ({:?}): {}\n\n**Evidence**:",
            d.category, d.root_cause
        );
        for e in d.evidence.iter().take(6) {
            let _ = writeln!(c, "- {}: {}", e.source, e.summary.replace('\n', " "));
        }
    }
    let container = status
        .last_signal
        .as_ref()
        .and_then(|s| s.container.clone())
        .unwrap_or_else(|| "its containers".into());
    let _ = writeln!(
        c,
        "\n**Where to look**: the code and configuration of {} (container `{container}`), starting from the evidence above.",
        incident.spec.target
    );
    c
}
