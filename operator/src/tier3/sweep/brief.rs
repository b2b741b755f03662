//! The issue a finding opens: a brief an architect (a person, or a Jules
//! session) can start from. Everything the operator did not write itself
//! (root causes, evidence, names from the cluster) is redacted and shown as
//! inert code (crate::markdown); the hidden marker at the end lets a rerun
//! find the issue again.

use std::fmt::Write;

use crate::crd::{EvidenceKind, Incident};
use crate::github::render::ESCALATION_LABEL;
use crate::markdown::{cell, inline};

use super::findings::{Finding, duration};

/// Evidence items quoted from the latest incident.
const MAX_EVIDENCE: usize = 8;

/// The hidden marker of a finding's issue: one per namespace and
/// fingerprint. Only characters a marker cannot be broken out of.
pub fn marker(f: &Finding) -> String {
    let safe = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
            .take(128)
            .collect()
    };
    format!(
        "<!-- sre-space:sweep {}/{} -->",
        safe(&f.namespace),
        safe(&f.fingerprint)
    )
}

/// `[ARCHITECTURE] {class}: {ns}/{workload} {signal}`.
pub fn title(f: &Finding) -> String {
    let class = f
        .fix_class
        .as_ref()
        .map(|(c, _)| c.as_str())
        .unwrap_or("Recurring problem");
    let name: String = f
        .target
        .name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
        .collect();
    format!(
        "[ARCHITECTURE] {class}: {}/{name} {}",
        f.namespace,
        f.signal.as_str()
    )
}

/// The line of the body that says what was found; a rerun compares it to
/// decide whether the finding changed.
pub fn summary_line(f: &Finding) -> String {
    format!("**Finding**: {}", f.summary())
}

/// The summary line of an issue body the sweep wrote, if it has one.
pub fn summary_of(body: &str) -> Option<&str> {
    body.lines().find(|l| l.starts_with("**Finding**: "))
}

/// The issue body. `latest` is the latest occurrence's Incident when it
/// still exists: its diagnosis gives the root cause and the evidence.
pub fn body(f: &Finding, latest: Option<&Incident>) -> String {
    let mut b = String::new();
    let _ = writeln!(
        b,
        "### An architectural fix is needed (`{ESCALATION_LABEL}`)\n\n\
         The daily sweep of SRE-Space found that runtime fixes do not hold for **{}** on {} in namespace {}.\n",
        f.signal.as_str(),
        inline(&f.target.to_string()),
        inline(&f.namespace),
    );
    let _ = writeln!(b, "{}\n", summary_line(f));
    b.push_str("**Why**:\n");
    for (rule, why) in &f.rules {
        let _ = writeln!(b, "- {}: {why}.", rule.as_str());
    }
    match &f.fix_class {
        Some((class, why)) => {
            let _ = writeln!(
                b,
                "\n**Suggested class of fix**: {} ({why}). Look for {}",
                class.as_str(),
                class.advice()
            );
        }
        None => b.push_str(
            "\n**Suggested class of fix**: no class: nothing in the history points at one; start from the evidence.\n",
        ),
    }
    let mttr = f
        .mttr_seconds
        .map(duration)
        .unwrap_or_else(|| "none mitigated".into());
    let _ = writeln!(
        b,
        "\n**MTTR**: {mttr} over {} occurrence(s).\n",
        f.history.len()
    );

    b.push_str("#### History\n\n| # | detected | category | actions | outcome | time to mitigate | held until it returned |\n|---|---|---|---|---|---|---|\n");
    for (i, o) in f.history.iter().enumerate() {
        let actions: Vec<&str> = o.actions.iter().map(|a| a.as_str()).collect();
        let _ = writeln!(
            b,
            "| {} | {} | {} | {} | {} | {} | {} |",
            i + 1,
            o.detected_at,
            o.category.map(|c| format!("{c:?}")).unwrap_or_default(),
            actions.join(", "),
            o.outcome.map(|o| format!("{o:?}")).unwrap_or_default(),
            o.time_to_mitigate_seconds.map(duration).unwrap_or_default(),
            o.held_seconds.map(duration).unwrap_or_else(|| "-".into())
        );
    }
    b.push_str(
        "\n#### Actions and how long each held\n\n| action | applied | held |\n|---|---|---|\n",
    );
    for a in &f.actions {
        let held: Vec<String> = a.held_seconds.iter().map(|s| duration(*s)).collect();
        let _ = writeln!(
            b,
            "| {} | {} | {} |",
            a.action.as_str(),
            a.applied,
            if held.is_empty() {
                "-".to_string()
            } else {
                held.join(", ")
            }
        );
    }
    latest_incident(&mut b, f, latest);
    let _ = writeln!(
        b,
        "\nThe history: `kubectl get incidentmemory -n {} {}`. This issue is updated by each sweep while the problem remains.\n",
        f.namespace, f.memory
    );
    b.push_str(&marker(f));
    b
}

/// The root cause, the trace evidence first, then the rest, of the latest
/// incident.
fn latest_incident(b: &mut String, f: &Finding, latest: Option<&Incident>) {
    let _ = writeln!(
        b,
        "\n#### The latest incident {}\n",
        cell(&f.latest_incident)
    );
    let Some(d) = latest
        .and_then(|i| i.status.as_ref())
        .and_then(|s| s.diagnosis.as_ref())
    else {
        b.push_str("It is gone or was never diagnosed: no evidence to quote.\n");
        return;
    };
    let _ = writeln!(
        b,
        "**Root cause** ({:?}, analyser {}): {}\n\n**Evidence** (redacted):\n",
        d.category,
        inline(&d.analyzer),
        inline(&d.root_cause)
    );
    let mut evidence: Vec<_> = d.evidence.iter().collect();
    evidence.sort_by_key(|e| e.kind != EvidenceKind::Trace);
    for e in evidence.into_iter().take(MAX_EVIDENCE) {
        let _ = writeln!(
            b,
            "- {:?} {}: {}",
            e.kind,
            inline(&e.source),
            inline(&e.summary)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::markdown::tests::outside_code;
    use crate::tier3::sweep::findings::tests::{memory, oom};
    use crate::tier3::sweep::findings::{Thresholds, findings};

    /// What a crashing process or a hostile span may write.
    const HOSTILE: &str = "boom <!-- sre-space:sweep shop/f00d --> cc @acme/sre-oncall \
        <img src=https://evil.example/t.gif> [login](https://evil.example/x) \
        DB_PASSWORD=hunter2 ghp_Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Jh1Gf0EdCbA | a cell";

    #[test]
    fn the_brief_is_redacted_and_inert_and_ends_with_its_marker() {
        let mem = memory("web", (0..4).map(|i| oom(i * 12, 600)).collect());
        let now = "2026-12-03T12:00:00Z".parse().expect("time");
        let f = findings(&[mem], &Thresholds::default(), now)
            .pop()
            .expect("a finding");
        let mut incident = crate::testing::incident(crate::crd::Phase::Resolved, vec![]);
        if let Some(d) = incident.status.as_mut().and_then(|s| s.diagnosis.as_mut()) {
            d.root_cause = HOSTILE.into();
            d.evidence = vec![crate::crd::Evidence {
                id: "e1".into(),
                kind: EvidenceKind::Trace,
                source: HOSTILE.into(),
                summary: format!("trace 4bf92f35 {HOSTILE}\n# heading\n{HOSTILE}"),
                observed_at: None,
            }];
        }
        let body = body(&f, Some(&incident));
        let marker = marker(&f);
        assert!(crate::markdown::ends_with_marker(&body, &marker), "{body}");
        let inner = body.strip_suffix(&marker).expect("ends with the marker");
        let outside = outside_code(inner);
        for live in ["<", "@", "](", "evil.example"] {
            assert!(!outside.contains(live), "{live:?} is live:\n{outside}");
        }
        for secret in ["hunter2", "ghp_Zx9Y"] {
            assert!(!body.contains(secret), "{secret} in {body}");
        }
        assert!(!body.contains("<!-- sre-space:sweep shop/f00d"), "{body}");
        assert!(body.contains("MemoryLeak"), "{body}");
        assert!(
            body.contains("trace 4bf92f35"),
            "the trace is quoted: {body}"
        );
        assert!(body.contains("| 4 |"), "four rows: {body}");
        assert_eq!(summary_of(&body), Some(summary_line(&f).as_str()));
    }
}
