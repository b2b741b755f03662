//! Brings an incident's GitHub issue in line with the Incident, exactly once
//! per write: the issue is found again by its hidden marker, each comment by
//! its own, so a write that happened before a crash is recognised, not
//! repeated. What was done is returned even when a later write fails, so the
//! caller keeps the progress.

use super::render::{self, comment_marker, issue_marker};
use super::{GitHub, GitHubError};
use crate::crd::{GitHubStatus, Incident};
use crate::markdown::ends_with_marker;

/// Keys kept in `status.github.comments`.
const MAX_KEYS: usize = 200;

fn posted_recurrences(status: &GitHubStatus, episode_prefix: &str) -> i64 {
    status
        .comments
        .iter()
        .filter_map(|k| {
            k.strip_prefix(episode_prefix)?
                .strip_prefix("seen/")?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(1)
}

fn episode(incident: &Incident) -> String {
    let s = incident.status.as_ref();
    let at = s
        .and_then(|s| s.detected_at.as_ref().or(s.first_seen.as_ref()))
        .map(|t| t.0.as_second())
        .unwrap_or(0);
    format!("{at}/")
}

/// The issue as it would be opened, for the Incident's status when the
/// operator has no GitHub credentials.
pub fn preview(incident: &Incident, extra_labels: &[String]) -> String {
    preview_linked(incident, extra_labels, None)
}

/// As `preview`, with links to the dashboard at its public address.
pub fn preview_linked(
    incident: &Incident,
    extra_labels: &[String],
    dashboard: Option<&str>,
) -> String {
    let d = render::desired(incident, extra_labels, 1, dashboard);
    format!(
        "{}\n\nlabels: {}\n\n{}",
        d.title,
        d.labels.join(", "),
        d.body
    )
}

/// Syncs the issue; returns the new link state and the first error, if any.
pub async fn sync(
    gh: &GitHub,
    repo: &str,
    incident: &Incident,
    extra_labels: &[String],
) -> (GitHubStatus, Option<GitHubError>) {
    sync_linked(gh, repo, incident, extra_labels, None).await
}

/// As `sync`, with links to the dashboard at its public address
/// (`dashboard`): the cited runbook's page.
pub async fn sync_linked(
    gh: &GitHub,
    repo: &str,
    incident: &Incident,
    extra_labels: &[String],
    dashboard: Option<&str>,
) -> (GitHubStatus, Option<GitHubError>) {
    let mut st = incident
        .status
        .as_ref()
        .and_then(|s| s.github.clone())
        .unwrap_or_default();
    st.repository = repo.to_string();
    st.preview = None;
    let result = apply(gh, repo, incident, extra_labels, dashboard, &mut st).await;
    let excess = st.comments.len().saturating_sub(MAX_KEYS);
    st.comments.drain(..excess);
    (st, result.err())
}

async fn apply(
    gh: &GitHub,
    repo: &str,
    incident: &Incident,
    extra_labels: &[String],
    dashboard: Option<&str>,
    st: &mut GitHubStatus,
) -> Result<(), GitHubError> {
    let prefix = episode(incident);
    let desired = render::desired(
        incident,
        extra_labels,
        posted_recurrences(st, &prefix),
        dashboard,
    );
    let number = match st.issue_number {
        Some(n) => n,
        None => {
            let marker = issue_marker(incident);
            let found = gh.issues(repo).await?.into_iter().find(|i| {
                i.body
                    .as_deref()
                    .is_some_and(|b| ends_with_marker(b, &marker))
            });
            let issue = match found {
                Some(i) => i,
                None => {
                    gh.create_issue(repo, &desired.title, &desired.body, &desired.labels)
                        .await?
                }
            };
            st.issue_number = Some(issue.number);
            st.issue_url = Some(issue.html_url);
            issue.number
        }
    };
    let missing: Vec<&(String, String)> = desired
        .comments
        .iter()
        .filter(|(k, _)| !st.comments.contains(k))
        .collect();
    if !missing.is_empty() {
        let existing: Vec<String> = gh
            .comments(repo, number)
            .await?
            .into_iter()
            .filter_map(|c| c.body)
            .collect();
        for (key, body) in missing {
            let marker = comment_marker(key);
            if !existing.iter().any(|b| ends_with_marker(b, &marker)) {
                gh.comment(repo, number, &format!("{body}\n\n{marker}"))
                    .await?;
            }
            st.comments.push(key.clone());
        }
    }
    let applied = format!(
        "{}|{}|{}",
        desired.state,
        desired.labels.join(","),
        desired.title
    );
    let marker = format!("<!-- applied {applied} -->");
    if !st.comments.contains(&marker) {
        gh.update_issue(repo, number, &desired.title, desired.state, &desired.labels)
            .await?;
        st.comments.retain(|k| !k.starts_with("<!-- applied "));
        st.comments.push(marker);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::crd::Phase;
    use crate::github::memory::InMemoryGitHub;
    use crate::testing;

    const LIST: &str = "namespaces:\n- namespace: shop\n  github:\n  - repository: acme/deploy\n";

    /// The incident as the reporter stored it after a sync.
    fn linked(mut i: Incident, link: &GitHubStatus) -> Incident {
        if let Some(s) = i.status.as_mut() {
            s.github = Some(link.clone());
        }
        i
    }

    #[tokio::test]
    async fn an_incident_opens_one_issue_that_later_syncs_update() {
        let github = InMemoryGitHub::new();
        github.seed("acme/deploy", &[]);
        let gh = github.serving(LIST, "shop");

        let open = testing::incident(Phase::Remediating, vec![]);
        let (link, err) = sync(&gh, "acme/deploy", &open, &[]).await;
        assert_eq!(err, None);
        let issues = github.issues("acme/deploy");
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].state, "open");
        assert!(issues[0].labels.contains(&"sre-space".to_string()));
        assert_eq!(link.issue_number, Some(issues[0].number));
        assert!(
            issues[0].comments.iter().any(|c| c.contains("Diagnosis")),
            "the diagnosis is posted: {:?}",
            issues[0].comments
        );

        // Resolved: the same issue is closed, nothing posted twice.
        let resolved = linked(testing::incident(Phase::Resolved, vec![]), &link);
        let (link, err) = sync(&gh, "acme/deploy", &resolved, &[]).await;
        assert_eq!(err, None);
        let issues = github.issues("acme/deploy");
        assert_eq!(issues.len(), 1, "one issue per incident");
        assert_eq!(issues[0].state, "closed");
        let distinct: BTreeSet<&String> = issues[0].comments.iter().collect();
        assert_eq!(distinct.len(), issues[0].comments.len(), "no comment twice");

        // In line already: a third sync writes nothing.
        let writes = github.writes().len();
        let resolved = linked(testing::incident(Phase::Resolved, vec![]), &link);
        let (_, err) = sync(&gh, "acme/deploy", &resolved, &[]).await;
        assert_eq!(err, None);
        assert_eq!(
            github.writes().len(),
            writes,
            "nothing changed, nothing written"
        );

        // The link lost (a restart before the status was saved): the issue
        // is found again by its marker, and its comments are not repeated.
        let comments = issues[0].comments.len();
        let relinked = testing::incident(Phase::Resolved, vec![]);
        let (again, err) = sync(&gh, "acme/deploy", &relinked, &[]).await;
        assert_eq!(err, None);
        assert_eq!(again.issue_number, link.issue_number);
        let issues = github.issues("acme/deploy");
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].comments.len(), comments);
    }
}
