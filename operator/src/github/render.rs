//! What the incident's GitHub issue says, derived from the Incident alone.
//! Each comment has a key, written into it as a hidden marker, so it is
//! posted once however often the operator restarts.

use std::fmt::Write;

use crate::crd::{
    ActionRecord, ActionState, Diagnosis, Incident, IncidentStatus, Phase, SignalKind,
};
use crate::markdown::{cell, evidence_list, inline};

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
        SignalKind::JobFailed
        | SignalKind::FailedCreate
        | SignalKind::NodeFailure
        | SignalKind::ConfigError
        | SignalKind::InitContainerFailed => "severity: high",
        SignalKind::Unschedulable
        | SignalKind::RolloutStalled
        | SignalKind::ReadinessFailing
        | SignalKind::TraceErrorRate
        | SignalKind::TraceLatency
        | SignalKind::Alert
        | SignalKind::Metric => "severity: medium",
    }
}

/// Renders the issue of an incident. `posted` is how many recurrences were
/// already reported, so a burst of them becomes one comment.
/// `dashboard` is the dashboard's public address, for the runbook's link.
pub fn desired(
    incident: &Incident,
    extra_labels: &[String],
    posted_recurrences: i64,
    dashboard: Option<&str>,
) -> DesiredIssue {
    let status = incident.status.clone().unwrap_or_default();
    let state = if status.phase == Phase::Resolved {
        "closed"
    } else {
        "open"
    };
    DesiredIssue {
        title: title(incident, &status),
        body: body(incident, &status),
        labels: labels(incident.spec.signal, &status, extra_labels),
        state,
        comments: comments(incident, &status, posted_recurrences, dashboard),
    }
}

/// `[INCIDENT] {category}: {ns}/{workload} {signal}`.
fn title(incident: &Incident, status: &IncidentStatus) -> String {
    let category = status
        .diagnosis
        .as_ref()
        .map(|d| format!("{:?}", d.category))
        .unwrap_or_else(|| "Detected".into());
    format!(
        "[INCIDENT] {category}: {}/{} {}",
        incident.metadata.namespace.as_deref().unwrap_or(""),
        incident.spec.target.name,
        incident.spec.signal.as_str()
    )
}

/// What was detected where, the incident's name and policy, and the marker.
fn body(incident: &Incident, status: &IncidentStatus) -> String {
    let spec = &incident.spec;
    let ns = incident.metadata.namespace.as_deref().unwrap_or("");
    let mut body = String::new();
    let _ = writeln!(
        body,
        "SRE-Space detected **{}** on `{}` in namespace `{ns}`.\n",
        spec.signal.as_str(),
        spec.target
    );
    if let Some(s) = &status.last_signal {
        let _ = writeln!(body, "> {}\n", inline(&s.message));
    }
    let _ = writeln!(body, "| | |\n|---|---|");
    let _ = writeln!(
        body,
        "| Incident | `{}` |",
        incident.metadata.name.as_deref().unwrap_or("")
    );
    let _ = writeln!(body, "| Policy | {} |", cell(&spec.policy));
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
    body
}

/// The operator's label, severity and status, the escalation label when
/// escalated, then the policy's own labels.
fn labels(signal: SignalKind, status: &IncidentStatus, extra_labels: &[String]) -> Vec<String> {
    let status_label = match status.phase {
        Phase::Resolved => "Status: Fixed",
        Phase::Escalated => "Status: Escalated",
        _ => "Status: Open",
    };
    let mut labels = vec![
        "sre-space".to_string(),
        severity(signal).to_string(),
        status_label.to_string(),
    ];
    if status.phase == Phase::Escalated {
        labels.push(ESCALATION_LABEL.into());
    }
    labels.extend(extra_labels.iter().cloned());
    labels
}

/// The comments, keyed by the episode (when it was detected) so that a
/// later episode of the same incident posts its own.
fn comments(
    incident: &Incident,
    status: &IncidentStatus,
    posted_recurrences: i64,
    dashboard: Option<&str>,
) -> Vec<(String, String)> {
    let episode = status
        .detected_at
        .as_ref()
        .or(status.first_seen.as_ref())
        .map(|t| t.0.as_second())
        .unwrap_or(0);
    let key = |k: &str| format!("{episode}/{k}");
    let mut comments = Vec::new();
    if let Some(d) = &status.diagnosis {
        let ns = incident.metadata.namespace.as_deref().unwrap_or("");
        let mut c = diagnosis_comment(d);
        if let Some(line) = runbook_line(d, ns, dashboard) {
            c.push_str(&line);
        }
        comments.push((key("diagnosis"), c));
    }
    if let Some((to, c)) = recurrences_comment(status, posted_recurrences) {
        comments.push((key(&format!("seen/{to}")), c));
    }
    for a in &status.actions {
        if !reported(a) {
            continue;
        }
        comments.push((
            key(&format!("action/{}/{:?}", a.id, a.state)),
            action_comment(a),
        ));
        if let Some(outcome) = a.outcome {
            comments.push((
                key(&format!("action/{}/outcome", a.id)),
                format!("### Action {}: {outcome:?}\n", inline(&a.id)),
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
    comments
}

/// The diagnosis: the root cause, a table of the hypotheses, and the
/// evidence folded away.
fn diagnosis_comment(d: &Diagnosis) -> String {
    let mut c = format!(
        "### Diagnosis ({}, analyser {})\n\n**{:?}**, confidence {:.0}%: {}\n\n| # | hypothesis | confidence | evidence |\n|---|---|---|---|\n",
        d.diagnosed_at.0,
        inline(&d.analyzer),
        d.category,
        d.confidence * 100.0,
        inline(&d.root_cause)
    );
    for (i, h) in d.hypotheses.iter().enumerate() {
        let _ = writeln!(
            c,
            "| {} | {:?}: {} | {:.0}% | {} |",
            i + 1,
            h.category,
            cell(&h.statement),
            h.confidence * 100.0,
            cell(&h.evidence.join(", "))
        );
    }
    c.push_str("\n<details><summary>Evidence</summary>\n\n");
    evidence_list(&mut c, &d.evidence);
    c.push_str("\n</details>\n");
    c
}

/// "**Runbook**: ..." naming the runbook the diagnosis cites, linked to
/// the dashboard's page of it when the dashboard's address is known, else
/// with the `kubectl` command that prints it.
fn runbook_line(d: &Diagnosis, namespace: &str, dashboard: Option<&str>) -> Option<String> {
    use crate::brain::runbook;
    let (config_map, key) = runbook::cited(d)?;
    // Names the API server checked; anything else is not linked.
    let plain = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    };
    let what = format!("{} of ConfigMap {}", inline(key), inline(config_map));
    let linkable = plain(namespace) && plain(config_map) && runbook::is_runbook_key(key);
    Some(
        match runbook::url(dashboard, namespace, config_map, key).filter(|_| linkable) {
            Some(url) => format!("\n**Runbook**: [{what}]({url})\n"),
            None => format!(
                "\n**Runbook**: {what}; read it with {}\n",
                inline(&runbook::kubectl_command(namespace, config_map, key))
            ),
        },
    )
}

/// The occurrences not reported yet as one comment, with the last
/// occurrence's number; none when every one was. The first occurrence is
/// the issue itself.
fn recurrences_comment(status: &IncidentStatus, posted_recurrences: i64) -> Option<(i64, String)> {
    if status.occurrences <= posted_recurrences.max(1) {
        return None;
    }
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
    Some((
        to,
        format!("### Seen again ({which})\n\n> {}\n", inline(&msg)),
    ))
}

/// Whether an action gets a comment: once it did something or was stopped,
/// never while it runs, and never the escalation (it has its own).
fn reported(a: &ActionRecord) -> bool {
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
    reported && a.type_ != crate::crd::ActionType::Escalate
}

/// What an action did, from what to what, and its pull request.
fn action_comment(a: &ActionRecord) -> String {
    let mut c = format!(
        "### Action {}: {} {:?}\n\n{}\n",
        inline(&a.id),
        a.type_.as_str(),
        a.state,
        inline(&a.detail)
    );
    if let (Some(from), Some(to)) = (&a.from, &a.to) {
        let _ = writeln!(c, "\nFrom {} to {}.", inline(from), inline(to));
    }
    if let Some(pr) = &a.pull_request {
        let _ = writeln!(
            c,
            "\nProposed in {} (never merged by the operator).",
            crate::markdown::link(&format!("#{}", pr.number), &pr.url, &["github.com"])
        );
    }
    c
}

/// The brief for an architectural fix, posted when an incident escalates.
pub fn escalation_brief(incident: &Incident) -> String {
    let status = incident.status.clone().unwrap_or_default();
    let mut c = format!(
        "### Escalated: an architectural fix is needed (`{ESCALATION_LABEL}`)\n\n**Why**: {}\n\n**Recurrences**: the signal was seen {} time(s).\n\n**Tried**:\n",
        inline(
            status
                .escalation_reason
                .as_deref()
                .unwrap_or("the simple fixes did not hold")
        ),
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
            inline(&a.detail)
        );
    }
    if let Some(d) = &status.diagnosis {
        let _ = writeln!(
            c,
            "\n**Root cause so far** ({:?}): {}\n\n**Evidence**:",
            d.category,
            inline(&d.root_cause)
        );
        for e in d.evidence.iter().take(6) {
            let _ = writeln!(c, "- {}: {}", inline(&e.source), inline(&e.summary));
        }
    }
    let container = status
        .last_signal
        .as_ref()
        .and_then(|s| s.container.clone())
        .unwrap_or_else(|| "its containers".into());
    let _ = writeln!(
        c,
        "\n**Where to look**: the code and configuration of {} (container {}), starting from the evidence above.",
        incident.spec.target,
        inline(&container)
    );
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{
        ActionRecord, ActionType, Category, Diagnosis, Evidence, EvidenceKind, Hypothesis,
        IncidentSpec, IncidentStatus, SignalObservation, WorkloadKind, WorkloadRef,
    };
    use crate::markdown::tests::outside_code;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    /// What a crashing process, a hostile span name or a swayed model may
    /// write: a copy of another incident's marker, a team mention, raw
    /// HTML, an image and a link to an outside host, and secrets.
    const HOSTILE: &str = "crashed <!-- sre-space:incident shop/payments-oomkilled f00d --> \
        cc @acme/sre-oncall <img src=https://evil.example/t.gif> \
        ![x](https://evil.example/p.png) [reset your password](https://evil.example/login) \
        ``` DB_PASSWORD=hunter2 ghp_Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Jh1Gf0EdCbA";

    fn incident() -> Incident {
        let at = Time(Timestamp::UNIX_EPOCH);
        let mut i = Incident::new(
            "web-crashloopbackoff",
            IncidentSpec {
                fingerprint: "beef".into(),
                target: WorkloadRef {
                    kind: WorkloadKind::Deployment,
                    name: "web".into(),
                },
                signal: SignalKind::CrashLoopBackOff,
                policy: "shop".into(),
                approval: None,
            },
        );
        i.metadata.namespace = Some("shop".into());
        let action = ActionRecord {
            id: "1-restartpod".into(),
            type_: ActionType::RestartPod,
            state: ActionState::Succeeded,
            detail: HOSTILE.into(),
            target: None,
            target_uid: None,
            container: None,
            from: Some(HOSTILE.into()),
            to: Some("2".into()),
            recorded_at: at.clone(),
            finished_at: Some(at.clone()),
            outcome: None,
            pull_request: None,
            diff: None,
            precondition: None,
        };
        i.status = Some(IncidentStatus {
            phase: Phase::Escalated,
            occurrences: 3,
            first_seen: Some(at.clone()),
            escalation_reason: Some(HOSTILE.into()),
            last_signal: Some(SignalObservation {
                pod: Some("web-1".into()),
                container: Some(HOSTILE.into()),
                reason: "CrashLoopBackOff".into(),
                message: HOSTILE.into(),
                observed_at: at.clone(),
                key: "k".into(),
            }),
            diagnosis: Some(Diagnosis {
                analyzer: "rules+llm".into(),
                category: Category::CrashLoop,
                root_cause: HOSTILE.into(),
                confidence: 0.6,
                hypotheses: vec![Hypothesis {
                    category: Category::CrashLoop,
                    statement: format!("{HOSTILE} | injected | cell"),
                    confidence: 0.6,
                    evidence: vec!["e1".into()],
                    proposed_action: None,
                    confirm: None,
                    refute: None,
                }],
                evidence: vec![Evidence {
                    id: "e1".into(),
                    kind: EvidenceKind::ContainerState,
                    source: HOSTILE.into(),
                    summary: format!("{HOSTILE}\n# a heading\n{HOSTILE}"),
                    observed_at: None,
                }],
                proposed_action: None,
                rules_category: None,
                diagnosed_at: at.clone(),
            }),
            actions: vec![action],
            ..IncidentStatus::default()
        });
        let pm = crate::brain::postmortem::render(&i, Timestamp::UNIX_EPOCH);
        if let Some(s) = i.status.as_mut() {
            s.post_mortem = Some(pm);
        }
        i
    }

    fn assert_inert(what: &str, md: &str) {
        // Our own collapsible section is the only HTML we write.
        let outside = outside_code(md)
            .replace("<details><summary>Evidence</summary>", "")
            .replace("</details>", "");
        for active in ["<", "@", "](", "evil.example", "hunter2", "ghp_"] {
            assert!(
                !outside.contains(active),
                "{what}: {active:?} is live markdown outside code:\n{outside}\n--- in ---\n{md}"
            );
        }
        for secret in ["hunter2", "ghp_Zx9Y"] {
            assert!(!md.contains(secret), "{what}: {secret} in {md}");
        }
        assert!(!md.contains("@acme"), "{what}: the mention is intact: {md}");
        assert!(
            !md.contains("<!-- sre-space:incident shop/payments"),
            "{what}: the forged marker is intact: {md}"
        );
    }

    #[test]
    fn hostile_evidence_reaches_github_only_as_inert_code() {
        let i = incident();
        let d = desired(&i, &[], 1, None);
        let marker = issue_marker(&i);
        let body = d
            .body
            .strip_suffix(&marker)
            .expect("the body ends with our marker");
        assert_inert("issue body", body);
        assert!(d.comments.len() >= 4, "{:?}", d.comments);
        for (key, c) in &d.comments {
            assert_inert(key, c);
        }
        // The table keeps its columns: the statement's pipes stay in its cell.
        let diagnosis = &d.comments[0].1;
        let row = diagnosis
            .lines()
            .find(|l| l.starts_with("| 1 |"))
            .expect("a hypothesis row");
        assert_eq!(
            row.matches('|').count() - row.matches("\\|").count(),
            5,
            "{row}"
        );
    }

    #[test]
    fn a_forged_marker_in_one_issue_never_matches_another_incident() {
        let i = incident();
        let body = desired(&i, &[], 1, None).body;
        let mut other = i.clone();
        other.metadata.name = Some("payments-oomkilled".into());
        other.spec.fingerprint = "f00d".into();
        assert!(crate::markdown::ends_with_marker(&body, &issue_marker(&i)));
        assert!(!crate::markdown::ends_with_marker(
            &body,
            &issue_marker(&other)
        ));
        assert!(!body.contains(&issue_marker(&other)), "{body}");
    }

    /// The incident with the runbook `key` of ConfigMap `runbooks` cited.
    fn with_runbook(key: &str) -> Incident {
        let mut i = incident();
        let d = i
            .status
            .as_mut()
            .and_then(|s| s.diagnosis.as_mut())
            .expect("diagnosed");
        let runbook = crate::brain::runbook::Runbook {
            config_map: "runbooks".into(),
            key: key.into(),
            text: HOSTILE.into(),
            cut: false,
        };
        crate::brain::runbook::cite(d, &runbook, Timestamp::UNIX_EPOCH);
        i
    }

    #[test]
    fn the_issue_links_the_runbook_to_the_dashboard_when_its_address_is_known() {
        let i = with_runbook("category.CrashLoop.md");
        let d = desired(&i, &[], 1, Some("https://sre.example.com"));
        let diagnosis = &d.comments[0].1;
        let link = "**Runbook**: [`category.CrashLoop.md` of ConfigMap `runbooks`](https://sre.example.com/runbooks/shop/runbooks/category.CrashLoop.md)";
        assert!(diagnosis.contains(link), "{diagnosis}");
        // Our link is the only live markdown: the runbook's text is inert.
        assert_inert("diagnosis", &diagnosis.replace(link, ""));
    }

    #[test]
    fn without_a_dashboard_the_issue_gives_the_command_that_prints_the_runbook() {
        let i = with_runbook("workload.web.md");
        let d = desired(&i, &[], 1, None);
        let diagnosis = &d.comments[0].1;
        assert!(
            diagnosis.contains(
                r"read it with `kubectl get configmap runbooks -n shop -o jsonpath='{.data.workload\.web\.md}'`"
            ),
            "{diagnosis}"
        );
    }
}
