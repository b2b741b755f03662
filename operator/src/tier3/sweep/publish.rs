//! One `jules-fix` issue per finding, opened once and updated by every
//! rerun: found again by the number the policy's status remembers, or by
//! its hidden marker, never opened twice. A comment is added only when the
//! finding changed, keyed by the run so a replayed run posts it once.

use crate::github::render::{ESCALATION_LABEL, comment_marker};
use crate::github::{GitHub, GitHubError};
use crate::lease::Fence;
use crate::markdown::ends_with_marker;

use super::brief;

/// What a finding's issue should say.
pub struct Desired<'a> {
    pub repository: &'a str,
    pub title: &'a str,
    pub body: &'a str,
    /// The hidden marker the body ends with.
    pub marker: &'a str,
    /// The policy's own labels, beside `sre-space` and `jules-fix`.
    pub extra_labels: &'a [String],
    /// The issue a previous run recorded, if any.
    pub known: Option<i64>,
    /// The scheduled time of this run, in seconds: the key of its comment.
    pub run: i64,
}

/// The issue after the run.
#[derive(Clone, Debug, PartialEq)]
pub struct Published {
    pub number: i64,
    pub url: String,
    pub opened: bool,
    pub commented: bool,
}

/// Opens the finding's issue, or brings the existing one up to date.
pub async fn publish(
    gh: &GitHub,
    d: &Desired<'_>,
    fence: &impl Fence,
) -> Result<Published, GitHubError> {
    let repo = d.repository;
    let existing = gh.issues(repo).await?.into_iter().find(|i| {
        i.body
            .as_deref()
            .is_some_and(|b| ends_with_marker(b, d.marker))
            || (Some(i.number) == d.known && i.pull_request.is_none())
    });
    let Some(issue) = existing else {
        let mut labels = vec!["sre-space".to_string(), ESCALATION_LABEL.to_string()];
        labels.extend(d.extra_labels.iter().cloned());
        fence.renew().await?;
        let issue = gh.create_issue(repo, d.title, d.body, &labels).await?;
        return Ok(Published {
            number: issue.number,
            url: issue.html_url,
            opened: true,
            commented: false,
        });
    };
    let old = issue.body.clone().unwrap_or_default();
    let changed = brief::summary_of(&old) != brief::summary_of(d.body);
    let mut url = issue.html_url.clone();
    if old != d.body {
        fence.renew().await?;
        url = gh
            .update_issue_body(repo, issue.number, d.body)
            .await?
            .html_url;
    }
    let mut commented = false;
    if changed {
        let key = comment_marker(&format!("sweep/{}", d.run));
        let posted = gh
            .comments(repo, issue.number)
            .await?
            .into_iter()
            .filter_map(|c| c.body)
            .any(|b| ends_with_marker(&b, &key));
        if !posted {
            let line = brief::summary_of(d.body).unwrap_or_default();
            let text = format!(
                "### The sweep found this problem again, changed\n\n{line}\n\nThe description above is up to date.\n\n{key}"
            );
            fence.renew().await?;
            gh.comment(repo, issue.number, &text).await?;
            commented = true;
        }
    }
    Ok(Published {
        number: issue.number,
        url,
        opened: false,
        commented,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::github::memory::InMemoryGitHub;
    use crate::lease::Unfenced;
    use crate::tier3::sweep::findings::tests::{memory, oom};
    use crate::tier3::sweep::findings::{Thresholds, findings};

    const LIST: &str = "namespaces:\n- namespace: shop\n  github:\n  - repository: acme/deploy\n";

    fn finding(occurrences: i64) -> crate::tier3::sweep::Finding {
        let m = memory("web", (0..occurrences).map(|i| oom(i * 10, 600)).collect());
        let now = crate::tier3::sweep::findings::shift(
            "2026-12-01T00:00:00Z".parse().expect("t"),
            60 * 3600,
        );
        findings(&[m], &Thresholds::default(), now)
            .pop()
            .expect("a finding")
    }

    async fn run(gh: &GitHub, occurrences: i64, known: Option<i64>, run: i64) -> Published {
        let f = finding(occurrences);
        let (title, body, marker) = (brief::title(&f), brief::body(&f, None), brief::marker(&f));
        let d = Desired {
            repository: "acme/deploy",
            title: &title,
            body: &body,
            marker: &marker,
            extra_labels: &["team-web".to_string()],
            known,
            run,
        };
        publish(gh, &d, &Unfenced).await.expect("published")
    }

    #[tokio::test]
    async fn a_rerun_updates_the_issue_instead_of_opening_another() {
        let github = InMemoryGitHub::new();
        github.seed("acme/deploy", &[]);
        let gh = github.serving(LIST, "shop");

        let first = run(&gh, 4, None, 1).await;
        assert!(first.opened);
        let issues = github.issues("acme/deploy");
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].labels, ["sre-space", "jules-fix", "team-web"]);
        assert!(
            issues[0]
                .title
                .starts_with("[ARCHITECTURE] MemoryLeak: shop/web")
        );
        assert!(
            issues[0].body.contains("4 occurrence(s)"),
            "{}",
            issues[0].body
        );

        // The same finding the next day: nothing changes, nothing is written.
        let writes = github.writes().len();
        let same = run(&gh, 4, Some(first.number), 2).await;
        assert_eq!(
            (same.number, same.opened, same.commented),
            (first.number, false, false)
        );
        assert_eq!(
            github.writes().len(),
            writes,
            "nothing changed, nothing written"
        );

        // One more occurrence, and the status lost the number: found by its
        // marker, its body updated, one comment.
        let changed = run(&gh, 5, None, 3).await;
        assert_eq!(
            (changed.number, changed.opened, changed.commented),
            (first.number, false, true)
        );
        let issues = github.issues("acme/deploy");
        assert_eq!(issues.len(), 1, "never a second issue");
        assert!(
            issues[0].body.contains("5 occurrence(s)"),
            "{}",
            issues[0].body
        );
        assert_eq!(issues[0].comments.len(), 1);

        // The same run replayed (a restart mid-run): no second comment.
        let replay = run(&gh, 5, Some(first.number), 3).await;
        assert!(!replay.commented);
        assert_eq!(github.issues("acme/deploy")[0].comments.len(), 1);
    }

    #[tokio::test]
    async fn a_repository_the_allow_list_does_not_name_gets_no_issue() {
        let github = InMemoryGitHub::new();
        github.seed("acme/other", &[]);
        let gh = github.serving(LIST, "shop");
        let f = finding(4);
        let (title, body, marker) = (brief::title(&f), brief::body(&f, None), brief::marker(&f));
        let d = Desired {
            repository: "acme/other",
            title: &title,
            body: &body,
            marker: &marker,
            extra_labels: &[],
            known: None,
            run: 1,
        };
        let err = publish(&gh, &d, &Unfenced).await.expect_err("refused");
        assert_eq!(err.reason(), "RepositoryNotAllowed");
        assert!(github.issues("acme/other").is_empty());
    }
}
