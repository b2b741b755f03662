//! Changes through Git: a branch, a commit that changes the one value (a
//! memory limit, a replica count, an image), and a pull request for people
//! to review and merge. Each step finds what an earlier, interrupted attempt
//! already did (the branch, the commit, the pull request, its labels) and
//! goes on from there, so one action opens one pull request however often
//! the operator restarts. The operator never merges. Each write (branch,
//! commit, pull request, labels, reviewers) is fenced: a replica that lost
//! the Lease between two of them stops there, and the leader goes on.

use super::Fence;
use super::route::Location;
use crate::crd::{
    ActionRecord, ActionState, ActionType, GitHubTarget, GitOpsTarget, Incident, PullRequestRef,
};
use crate::github::codeowners;
use crate::github::gitops::{
    Located, find_container_image, find_container_memory, find_key, raises, replace, unified_diff,
};
use crate::github::{GitHub, GitHubError, check_branch, check_path};
use crate::markdown::{inline, link, untrusted};

/// The label every pull request of the operator carries.
pub const LABEL: &str = "sre-space";

/// What proposing the change did.
pub struct Proposal {
    pub state: ActionState,
    pub detail: String,
    pub pull_request: Option<PullRequestRef>,
    pub diff: Option<String>,
}

/// The one value a pull request changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub action: ActionType,
    pub at: Location,
    /// The value in the cluster, for people (the file's value is read).
    pub from: String,
    pub to: String,
}

impl Change {
    /// The recorded memory raise at `at`.
    pub fn memory(record: &ActionRecord, at: Location) -> Self {
        Self {
            action: ActionType::RaiseMemoryLimit,
            at,
            from: record.from.clone().unwrap_or_default(),
            to: record.to.clone().unwrap_or_default(),
        }
    }

    /// What the value is, for people.
    fn what(&self, incident: &Incident, container: Option<&str>) -> String {
        let target = &incident.spec.target;
        let container = container.unwrap_or("?");
        match self.action {
            ActionType::Scale => format!("the replica count of {target}"),
            ActionType::Rollback => format!("the image of {target} (container {container})"),
            _ => format!("the memory limit of {target} (container {container})"),
        }
    }

    fn title(&self, incident: &Incident) -> String {
        let target = &incident.spec.target;
        let to = &self.to;
        match self.action {
            ActionType::Scale => format!("Scale {target} to {to} replicas"),
            ActionType::Rollback => format!("Roll {target} back to image {to}"),
            _ => format!("Raise the memory limit of {target} to {to}"),
        }
    }

    fn locate(&self, text: &str) -> Result<Located, String> {
        match &self.at {
            Location::Key(key) => find_key(text, key),
            Location::ContainerMemory(c) => find_container_memory(text, c),
            Location::ContainerImage(c) => find_container_image(text, c),
        }
    }

    /// Why the file's `current` value is not to be changed to `to`, if it
    /// is not: a memory limit is only raised, a replica count only set
    /// where the file holds a number.
    fn refusal(&self, current: &str) -> Option<String> {
        match self.action {
            ActionType::RaiseMemoryLimit => raises(current, &self.to).err(),
            ActionType::Scale if current.parse::<u32>().is_err() => Some(format!(
                "the file's {current:?} is not a replica count; not changing it"
            )),
            _ => None,
        }
    }
}

/// The labels of a pull request for `action`: `sre-space` and
/// `sre-space/<action>` (`sre-space/raise-memory-limit`, ...).
pub fn labels(action: ActionType) -> Vec<String> {
    let mut kebab = String::new();
    for (i, c) in action.as_str().chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            kebab.push('-');
        }
        kebab.push(c.to_ascii_lowercase());
    }
    vec![LABEL.to_string(), format!("{LABEL}/{kebab}")]
}

/// What a pull request says beyond the change: why it is a pull request,
/// and where the incident is seen.
#[derive(Clone, Debug, Default)]
pub struct PullContext {
    /// Why a pull request and not a patch, when a GitOps controller's
    /// ownership decided it.
    pub why: Option<String>,
    /// The dashboard's public URL (`SRE_SPACE_DASHBOARD_PUBLIC_URL`).
    pub dashboard_public_url: Option<String>,
}

/// The pull request's body: the change, why, the diagnosis, the diff, how
/// to roll it back, and the links back to the issue and the incident.
pub fn pull_body(
    incident: &Incident,
    record: &ActionRecord,
    change: &Change,
    file: &str,
    diff: &str,
    context: &PullContext,
) -> String {
    let status = incident.status.clone().unwrap_or_default();
    let (ns, name) = (
        incident.metadata.namespace.as_deref().unwrap_or(""),
        incident.metadata.name.as_deref().unwrap_or(""),
    );
    let what = change.what(incident, record.container.as_deref());
    let mut body = match change.action {
        ActionType::RaiseMemoryLimit => format!(
            "SRE-Space proposes raising {what} from {} to {}, within the policy's cap.\n\n",
            inline(&change.from),
            inline(&change.to)
        ),
        _ => format!(
            "SRE-Space proposes changing {what} from {} to {}.\n\n",
            inline(&change.from),
            inline(&change.to)
        ),
    };
    if let Some(why) = &context.why {
        body.push_str(&format!(
            "### Why a pull request\n\n{}\n\n",
            inline(&crate::redact::string(why))
        ));
    }
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
        inline(&change.at.to_string()),
        inline(file),
        inline(&change.from)
    ));
    body.push_str("### Links\n\n");
    if let Some(n) = status.github.as_ref().and_then(|g| g.issue_number) {
        body.push_str(&format!("- Refs #{n}\n"));
    }
    body.push_str(&format!(
        "- Incident: {}\n",
        inline(&crate::links::kubectl_command(ns, name))
    ));
    if let Some(url) = crate::links::incident_url(context.dashboard_public_url.as_deref(), ns, name)
    {
        let host = url
            .split("://")
            .nth(1)
            .and_then(|r| r.split(['/', '?', '#']).next())
            .unwrap_or_default()
            .to_string();
        body.push_str(&format!(
            "- Dashboard: {}\n",
            link("the incident on the dashboard", &url, &[host.as_str()])
        ));
    }
    body.push_str(
        "\nThis pull request is a proposal: SRE-Space never merges it. Once your GitOps tool applies it, \
         SRE-Space verifies that the signal clears.\n",
    );
    crate::redact::string(&body)
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
    let at = super::route::location(ActionType::RaiseMemoryLimit, target).ok_or_else(|| {
        GitHubError::Refused(format!(
            "{}: the policy names neither valuesKey nor container",
            target.path
        ))
    })?;
    let change = Change::memory(record, at);
    propose_change(
        gh,
        repo,
        target,
        incident,
        record,
        &change,
        &PullContext::default(),
        fence,
    )
    .await
}

/// Proposes `change` in the policy's GitOps file as a pull request with
/// its labels, and the file's code owners asked to review it.
#[allow(clippy::too_many_arguments)]
pub async fn propose_change(
    gh: Option<&GitHub>,
    repo: &GitHubTarget,
    target: &GitOpsTarget,
    incident: &Incident,
    record: &ActionRecord,
    change: &Change,
    context: &PullContext,
    fence: &impl Fence,
) -> Result<Proposal, GitHubError> {
    check_path(&target.path)?;
    check_branch(&target.base_branch)?;
    let to = change.to.clone();
    let where_ = change.at.to_string();
    let Some(gh) = gh else {
        let diff = format!(
            "--- a/{path}\n+++ b/{path}\n-{where_}: {}\n+{where_}: {to}\n",
            change.from,
            path = target.path
        );
        return Ok(Proposal {
            state: ActionState::Blocked,
            detail: format!(
                "no GitHub credentials: the change to {} is kept in this record's diff",
                target.path
            ),
            pull_request: None,
            diff: Some(crate::redact::string(&diff)),
        });
    };
    let repo_name = &repo.repository;
    let (base_text, _) = gh
        .file(repo_name, &target.path, &target.base_branch)
        .await?;
    let at = change
        .locate(&base_text)
        .map_err(|e| GitHubError::Refused(format!("{}: {e}", target.path)))?;
    let new_text = replace(&base_text, &at, &to);
    // The diff's context lines are the repository's file, which may hold
    // credentials next to the value; it goes into the status.
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
    if let Some(why) = change.refusal(&at.value) {
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
    let title = change.title(incident);
    if branch_text != new_text {
        let message = format!("{title} ({name})");
        fence.renew().await?;
        gh.write_file(repo_name, &target.path, &branch, &new_text, &blob, &message)
            .await?;
    }
    let pull = match gh.pull_for_branch(repo_name, &branch).await? {
        Some(p) => p,
        None => {
            fence.renew().await?;
            gh.create_pull(
                repo_name,
                &branch,
                &target.base_branch,
                &format!("[SRE-Space] {title}"),
                &pull_body(incident, record, change, &target.path, &diff, context),
            )
            .await?
        }
    };
    // Labels go on last: a pull request carrying them was asked for its
    // reviewers already, so a replay asks nobody twice.
    let mut notes = String::new();
    if !pull.labels.iter().any(|l| l.name == LABEL) {
        let owners = match gh.codeowners(repo_name, &target.base_branch).await? {
            Some(text) => codeowners::owners(&text, &target.path),
            None => codeowners::Reviewers::default(),
        };
        if !owners.is_empty() {
            fence.renew().await?;
            match gh.request_reviewers(repo_name, pull.number, &owners).await {
                Ok(()) => notes.push_str(&format!(
                    "; review asked of {}",
                    owners
                        .users
                        .iter()
                        .map(|u| format!("@{u}"))
                        .chain(owners.teams.iter().map(|t| format!("team {t}")))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                // A code owner GitHub will not ask (not a collaborator, the
                // author): the pull request stands without.
                Err(GitHubError::Refused(why)) => {
                    notes.push_str(&format!("; reviewers not requested: {why}"))
                }
                Err(e) => return Err(e),
            }
        }
        fence.renew().await?;
        gh.add_labels(repo_name, pull.number, &labels(change.action))
            .await?;
    }
    let why = context
        .why
        .as_deref()
        .map(|w| format!(" ({w})"))
        .unwrap_or_default();
    Ok(Proposal {
        state: ActionState::AwaitingMerge,
        detail: crate::redact::string(&format!(
            "proposed in pull request #{}: {where_} in {} from {} to {to}{why}{notes}",
            pull.number, target.path, at.value
        )),
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
            replicas_key: None,
            image_key: None,
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
    #[tokio::test]
    async fn a_rollback_in_a_manifest_puts_back_the_previous_image_and_nothing_else() {
        const MANIFEST: &str = "apiVersion: apps/v1\nkind: Deployment\nspec:\n  replicas: 2\n  template:\n    spec:\n      containers:\n      - name: app\n        image: \"web:2\" # bad release\n";
        let github = InMemoryGitHub::new();
        github.seed(REPO, &[("apps/shop/web.yaml", MANIFEST)]);
        let gh = github.serving(LIST, "shop");
        let t = GitOpsTarget {
            path: "apps/shop/web.yaml".into(),
            base_branch: "main".into(),
            values_key: None,
            container: Some("app".into()),
            replicas_key: None,
            image_key: None,
        };
        let repo = GitHubTarget {
            repository: REPO.into(),
            labels: vec![],
            gitops: Some(t.clone()),
        };
        let record = testing::record(1, ActionType::Rollback, ActionState::Pending);
        let change = Change {
            action: ActionType::Rollback,
            at: crate::fixer::route::location(ActionType::Rollback, &t).expect("a location"),
            from: "web:2".into(),
            to: "web:1".into(),
        };
        let incident = testing::incident(Phase::Remediating, vec![record.clone()]);
        let p = propose_change(
            Some(&gh),
            &repo,
            &t,
            &incident,
            &record,
            &change,
            &PullContext::default(),
            &Unfenced,
        )
        .await
        .expect("proposed");
        let pr = p.pull_request.expect("a pull request");
        assert_eq!(
            github
                .file_text(REPO, &pr.branch, "apps/shop/web.yaml")
                .as_deref(),
            Some(MANIFEST.replace("\"web:2\"", "\"web:1\"").as_str())
        );
        let pulls = github.pulls(REPO);
        assert_eq!(pulls[0].labels, ["sre-space", "sre-space/rollback"]);
        assert!(pulls[0].reviewers.is_empty(), "no CODEOWNERS: nobody asked");
        assert!(!pulls[0].body.contains("Refs #"), "no issue, no reference");
    }

    #[tokio::test]
    async fn a_code_owner_github_will_not_ask_leaves_the_pull_request_labelled_and_standing() {
        let github = InMemoryGitHub::new();
        github.seed(REPO, &[(PATH, VALUES), ("CODEOWNERS", "* @outsider\n")]);
        github.collaborators(REPO, &["someone-else"]);
        let gh = github.serving(LIST, "shop");
        let (repo, t) = target();
        let incident = testing::incident(Phase::Remediating, vec![raise()]);
        let p = propose(Some(&gh), &repo, &t, &incident, &raise(), &Unfenced)
            .await
            .expect("proposed");
        assert_eq!(p.state, ActionState::AwaitingMerge);
        assert!(
            p.detail.contains("reviewers not requested: 422"),
            "{}",
            p.detail
        );
        let pulls = github.pulls(REPO);
        assert_eq!(
            pulls[0].labels,
            ["sre-space", "sre-space/raise-memory-limit"]
        );
        assert!(pulls[0].reviewers.is_empty());
    }

    #[test]
    fn each_action_has_its_own_label() {
        assert_eq!(labels(ActionType::Scale), ["sre-space", "sre-space/scale"]);
        assert_eq!(
            labels(ActionType::RaiseMemoryLimit),
            ["sre-space", "sre-space/raise-memory-limit"]
        );
    }
}
