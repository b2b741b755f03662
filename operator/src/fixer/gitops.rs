//! RaiseMemoryLimit through Git: a branch, a commit that changes the one
//! value, and a pull request for people to review and merge. Each step finds
//! what an earlier, interrupted attempt already did (the branch, the commit,
//! the pull request) and goes on from there, so one action opens one pull
//! request however often the operator restarts. The operator never merges.
//! Each write (branch, commit, pull request) is fenced: a replica that lost
//! the Lease between two of them stops there, and the leader goes on.

use super::Fence;
use crate::crd::{ActionRecord, ActionState, GitHubTarget, GitOpsTarget, Incident, PullRequestRef};
use crate::github::gitops::{find_container_memory, find_key, raises, replace, unified_diff};
use crate::github::{GitHub, GitHubError, check_branch, check_path};
use crate::markdown::{inline, untrusted};

/// What proposing the change did.
pub struct Proposal {
    pub state: ActionState,
    pub detail: String,
    pub pull_request: Option<PullRequestRef>,
    pub diff: Option<String>,
}

fn pull_body(
    incident: &Incident,
    record: &ActionRecord,
    target: &GitOpsTarget,
    diff: &str,
) -> String {
    let status = incident.status.clone().unwrap_or_default();
    let mut body = format!(
        "SRE-Space proposes raising the memory limit of {} (container {}) from {} to {}, \
         within the policy's cap.\n\n",
        inline(&incident.spec.target.to_string()),
        inline(record.container.as_deref().unwrap_or("?")),
        inline(record.from.as_deref().unwrap_or("?")),
        inline(record.to.as_deref().unwrap_or("?"))
    );
    if let Some(d) = &status.diagnosis {
        body.push_str(&format!(
            "### Root cause\n\n**{:?}** ({:.0}%): {}\n\n### Evidence\n\n",
            d.category,
            d.confidence * 100.0,
            inline(&d.root_cause)
        ));
        for e in d.evidence.iter().take(8) {
            body.push_str(&format!(
                "- {} {}: {}\n",
                inline(&e.id),
                inline(&e.source),
                inline(&e.summary)
            ));
        }
    }
    body.push_str(&format!(
        "\n### Change\n\n{}\n### Rolling back\n\n",
        untrusted(diff, "diff")
    ));
    body.push_str(&format!(
        "Revert this pull request, or set {} in {} back to {}.\n\n",
        inline(
            &target
                .values_key
                .clone()
                .or(target
                    .container
                    .clone()
                    .map(|c| format!("{c}: resources.limits.memory")))
                .unwrap_or_default()
        ),
        inline(&target.path),
        inline(record.from.as_deref().unwrap_or("?"))
    ));
    body.push_str(&format!(
        "Incident `{}/{}`. This pull request is a proposal: SRE-Space never merges it. Once your GitOps tool applies it, \
         SRE-Space verifies that the signal clears.\n",
        incident.metadata.namespace.as_deref().unwrap_or(""),
        incident.metadata.name.as_deref().unwrap_or("")
    ));
    body
}

/// Proposes the recorded memory change; `fence` is asked right before each
/// write.
pub async fn propose(
    gh: Option<&GitHub>,
    repo: &GitHubTarget,
    target: &GitOpsTarget,
    incident: &Incident,
    record: &ActionRecord,
    fence: &impl Fence,
) -> Result<Proposal, GitHubError> {
    check_path(&target.path)?;
    check_branch(&target.base_branch)?;
    let to = record.to.clone().unwrap_or_default();
    let where_ = target
        .values_key
        .clone()
        .unwrap_or_else(|| format!("container {}", target.container.clone().unwrap_or_default()));
    let Some(gh) = gh else {
        let diff = format!(
            "--- a/{path}\n+++ b/{path}\n-{where_}: {}\n+{where_}: {to}\n",
            record.from.as_deref().unwrap_or("?"),
            path = target.path
        );
        return Ok(Proposal {
            state: ActionState::Blocked,
            detail: format!(
                "no GitHub credentials: the change to {} is kept in this record's diff",
                target.path
            ),
            pull_request: None,
            diff: Some(diff),
        });
    };
    let repo_name = &repo.repository;
    let (base_text, _) = gh
        .file(repo_name, &target.path, &target.base_branch)
        .await?;
    let locate = |text: &str| match (&target.values_key, &target.container) {
        (Some(key), _) => find_key(text, key),
        (None, Some(c)) => find_container_memory(text, c),
        (None, None) => Err("the policy names neither valuesKey nor container".into()),
    };
    let at =
        locate(&base_text).map_err(|e| GitHubError::Refused(format!("{}: {e}", target.path)))?;
    let new_text = replace(&base_text, &at, &to);
    // The diff's context lines are the repository's file, which may hold
    // credentials next to the memory limit; it goes into the status.
    let diff = crate::redact::string(&unified_diff(&target.path, &base_text, &new_text));
    if at.value == to {
        return Ok(Proposal {
            state: ActionState::Succeeded,
            detail: format!(
                "{} already sets {where_} to {to} on {}",
                target.path, target.base_branch
            ),
            pull_request: None,
            diff: None,
        });
    }
    if let Err(why) = raises(&at.value, &to) {
        return Ok(Proposal {
            state: ActionState::Failed,
            detail: format!("{} on {}: {where_}: {why}", target.path, target.base_branch),
            pull_request: None,
            diff: None,
        });
    }
    let name = incident.metadata.name.clone().unwrap_or_default();
    let branch = format!("sre-space/{name}-{}", record.id);
    if gh.branch_sha(repo_name, &branch).await?.is_none() {
        let base_sha = gh
            .branch_sha(repo_name, &target.base_branch)
            .await?
            .ok_or_else(|| {
                GitHubError::Refused(format!("base branch {} does not exist", target.base_branch))
            })?;
        fence.renew().await?;
        gh.create_branch(repo_name, &branch, &base_sha).await?;
    }
    let (branch_text, blob) = gh.file(repo_name, &target.path, &branch).await?;
    if branch_text != new_text {
        let message = format!(
            "Raise the memory limit of {} to {to} ({})",
            incident.spec.target, name
        );
        fence.renew().await?;
        gh.write_file(repo_name, &target.path, &branch, &new_text, &blob, &message)
            .await?;
    }
    let pull = match gh.pull_for_branch(repo_name, &branch).await? {
        Some(p) => p,
        None => {
            let title = format!(
                "[SRE-Space] Raise the memory limit of {} to {to}",
                incident.spec.target
            );
            fence.renew().await?;
            gh.create_pull(
                repo_name,
                &branch,
                &target.base_branch,
                &title,
                &pull_body(incident, record, target, &diff),
            )
            .await?
        }
    };
    Ok(Proposal {
        state: ActionState::AwaitingMerge,
        detail: format!(
            "proposed in pull request #{}: {where_} in {} from {} to {to}",
            pull.number, target.path, at.value
        ),
        pull_request: Some(PullRequestRef {
            number: pull.number,
            url: pull.html_url,
            branch,
        }),
        diff: Some(diff),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ActionType, Phase};
    use crate::github::memory::InMemoryGitHub;
    use crate::lease::Unfenced;
    use crate::testing;

    const REPO: &str = "acme/deploy";
    const PATH: &str = "apps/shop/values.yaml";
    const VALUES: &str = "web:\n  resources:\n    limits:\n      memory: 64Mi\n";
    const LIST: &str = "namespaces:\n- namespace: shop\n  github:\n  - repository: acme/deploy\n    paths: [apps/shop]\n";

    fn target() -> (GitHubTarget, GitOpsTarget) {
        let t = GitOpsTarget {
            path: PATH.into(),
            base_branch: "main".into(),
            values_key: Some("web.resources.limits.memory".into()),
            container: None,
        };
        let repo = GitHubTarget {
            repository: REPO.into(),
            labels: vec![],
            gitops: Some(t.clone()),
        };
        (repo, t)
    }

    fn raise() -> ActionRecord {
        let mut r = testing::record(1, ActionType::RaiseMemoryLimit, ActionState::Pending);
        r.container = Some("app".into());
        (r.from, r.to) = (Some("64Mi".into()), Some("96Mi".into()));
        r
    }

    #[tokio::test]
    async fn a_memory_raise_opens_one_pull_request_and_a_repeat_finds_it() {
        let github = InMemoryGitHub::new();
        github.seed(REPO, &[(PATH, VALUES)]);
        let gh = github.serving(LIST, "shop");
        let (repo, t) = target();
        let incident = testing::incident(Phase::Remediating, vec![raise()]);

        let first = propose(Some(&gh), &repo, &t, &incident, &raise(), &Unfenced)
            .await
            .expect("proposed");
        assert_eq!(first.state, ActionState::AwaitingMerge);
        let pr = first.pull_request.expect("a pull request");
        let pulls = github.pulls(REPO);
        assert_eq!(pulls.len(), 1);
        assert_eq!(
            (pulls[0].head.as_str(), pulls[0].base.as_str()),
            (pr.branch.as_str(), "main")
        );
        assert!(github.branches(REPO).contains(&pr.branch));
        let proposed = github
            .file_text(REPO, &pr.branch, PATH)
            .expect("the file on the branch");
        assert!(proposed.contains("memory: 96Mi"), "{proposed}");
        assert_eq!(
            github.file_text(REPO, "main", PATH).as_deref(),
            Some(VALUES),
            "main untouched until merged"
        );
        assert!(
            first
                .diff
                .is_some_and(|d| d.contains("+      memory: 96Mi"))
        );

        // A repeat (a restart, a replay) finds the branch, the commit and the
        // pull request, and writes nothing.
        let writes = github.writes();
        let again = propose(Some(&gh), &repo, &t, &incident, &raise(), &Unfenced)
            .await
            .expect("found");
        assert_eq!(again.pull_request.map(|p| p.number), Some(pr.number));
        assert_eq!(github.pulls(REPO).len(), 1);
        assert_eq!(github.writes(), writes);

        // Merged by a reviewer: read back as merged, and the base carries the
        // change, so proposing again has nothing to do.
        github.merge(REPO, pr.number);
        let merged = gh.pull(REPO, pr.number).await.expect("the pull request");
        assert!(merged.merged_at.is_some());
        assert_eq!(merged.state, "closed");
        let after = propose(Some(&gh), &repo, &t, &incident, &raise(), &Unfenced)
            .await
            .expect("answered");
        assert_eq!(after.state, ActionState::Succeeded);
        assert_eq!(github.pulls(REPO).len(), 1);
    }
}
