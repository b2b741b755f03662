//! A stateful GitHub in memory, for unit tests: issues with labels, state
//! and comments, branches at commits, files per branch with their blob sha,
//! and pull requests a test merges or closes as a reviewer would. It answers
//! as GitHub does where the operator relies on it: numbers shared by issues
//! and pull requests, 404 for what does not exist, 422 for a branch that
//! exists already or a second open pull request for one branch, 409 for a
//! write with a stale blob sha. Every call is logged as `method repo`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    CheckRun, Comment, GitHub, GitHubApi, GitHubError, GitHubFuture, Issue, PullFile, PullHead,
    PullRequest,
};
use crate::allowlist::{Shared, Tenant, parse};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct IssueRec {
    pub number: i64,
    pub title: String,
    pub body: String,
    pub state: String,
    pub labels: Vec<String>,
    pub comments: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PullRec {
    pub number: i64,
    pub title: String,
    pub body: String,
    pub head: String,
    pub base: String,
    pub state: String,
    pub merged: bool,
    pub labels: Vec<String>,
    /// Logins asked for a review.
    pub reviewers: Vec<String>,
    /// Team slugs asked for a review.
    pub team_reviewers: Vec<String>,
    /// The commit the head branch pointed at when the pull request was
    /// opened.
    pub head_sha: String,
    /// What the pull request changes.
    pub files: Vec<PullFile>,
    /// Its conversation, oldest first (a pull request is an issue too).
    pub comments: Vec<String>,
}

#[derive(Clone, Debug, Default)]
struct Repo {
    issues: Vec<IssueRec>,
    /// branch → commit sha
    branches: BTreeMap<String, String>,
    /// commit sha → path → text
    commits: BTreeMap<String, BTreeMap<String, String>>,
    pulls: Vec<PullRec>,
    /// Issues and pull requests share one sequence, as on GitHub.
    last_number: i64,
    /// Who may be asked for a review; None: anyone.
    collaborators: Option<Vec<String>>,
    /// commit sha → its check runs
    checks: BTreeMap<String, Vec<CheckRun>>,
}

impl Repo {
    fn tree(&self, branch: &str) -> Option<&BTreeMap<String, String>> {
        self.commits.get(self.branches.get(branch)?)
    }

    /// A new commit on `branch` with `files`; returns its sha.
    fn commit(&mut self, branch: &str, files: BTreeMap<String, String>) -> String {
        let sha = sha_of(&format!("commit {} {branch}", self.commits.len()));
        self.commits.insert(sha.clone(), files);
        self.branches.insert(branch.to_string(), sha.clone());
        sha
    }
}

#[derive(Default)]
struct State {
    repos: BTreeMap<String, Repo>,
    calls: Vec<String>,
    failures: VecDeque<GitHubError>,
}

/// GitHub in memory. Clones share one state.
#[derive(Clone, Default)]
pub struct InMemoryGitHub {
    state: Arc<Mutex<State>>,
}

/// A blob or commit sha: 40 hex digits, the same for the same text.
fn sha_of(text: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    format!("{:040x}", u128::from(h.finish()))
}

fn refused(status: u16, message: &str) -> GitHubError {
    GitHubError::Refused(format!("{status}: {message}"))
}

fn not_found() -> GitHubError {
    refused(404, "Not Found")
}

fn html_url(repo: &str, kind: &str, number: i64) -> String {
    format!("https://github.test/{repo}/{kind}/{number}")
}

fn issue(repo: &str, i: &IssueRec) -> Issue {
    Issue {
        number: i.number,
        html_url: html_url(repo, "issues", i.number),
        state: i.state.clone(),
        body: Some(i.body.clone()),
        pull_request: None,
    }
}

fn pull(repo: &str, p: &PullRec) -> PullRequest {
    PullRequest {
        number: p.number,
        html_url: html_url(repo, "pull", p.number),
        state: p.state.clone(),
        merged_at: p.merged.then(|| "2026-11-26T00:00:00Z".to_string()),
        labels: p
            .labels
            .iter()
            .map(|name| super::Label { name: name.clone() })
            .collect(),
        title: Some(p.title.clone()),
        body: Some(p.body.clone()),
        head: Some(PullHead {
            sha: p.head_sha.clone(),
            branch: p.head.clone(),
        }),
    }
}

/// Comment ids are unique in a repository: the thread's number times this,
/// plus the comment's place in it.
const COMMENTS_PER_THREAD: i64 = 100_000;

fn comment_id(number: i64, index: usize) -> i64 {
    number
        .saturating_mul(COMMENTS_PER_THREAD)
        .saturating_add(i64::try_from(index).unwrap_or(i64::MAX).saturating_add(1))
}

/// The conversation of an issue or a pull request.
fn thread_mut(r: &mut Repo, number: i64) -> Result<&mut Vec<String>, GitHubError> {
    if let Some(i) = r.pulls.iter().position(|p| p.number == number) {
        return Ok(&mut r.pulls[i].comments);
    }
    Ok(&mut issue_mut(r, number)?.comments)
}

impl InMemoryGitHub {
    pub fn new() -> Self {
        Self::default()
    }

    /// This GitHub as the transport of a `GitHub`.
    pub fn api(&self) -> Arc<dyn GitHubApi> {
        Arc::new(self.clone())
    }

    /// The operator's guarded client over this GitHub, serving namespace
    /// `ns` under the allow-list `list` (the chart's YAML).
    pub fn serving(&self, list: &str, ns: &str) -> GitHub {
        let allow = Shared::fixed(parse(list).expect("a valid allow-list"));
        GitHub::guarding(self.api(), allow).for_tenant(Tenant::named(ns))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a repository whose branch `main` holds these files.
    pub fn seed(&self, repo: &str, files: &[(&str, &str)]) {
        let mut st = self.lock();
        let r = st.repos.entry(repo.to_string()).or_default();
        let tree = files
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect();
        r.commit("main", tree);
    }

    /// Only these users and teams (slugs) may be asked for a review of the
    /// repository's pull requests; others are refused with 422, as GitHub
    /// refuses a reviewer who is not a collaborator.
    pub fn collaborators(&self, repo: &str, names: &[&str]) {
        let mut st = self.lock();
        let r = st.repos.entry(repo.to_string()).or_default();
        r.collaborators = Some(names.iter().map(|n| n.to_string()).collect());
    }

    /// The next calls fail with these errors, one each, before touching
    /// any state.
    pub fn fail_next(&self, errors: impl IntoIterator<Item = GitHubError>) {
        self.lock().failures.extend(errors);
    }

    /// Every call received, as `method repo`, in order.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// The calls that change something.
    pub fn writes(&self) -> Vec<String> {
        const WRITES: [&str; 10] = [
            "update_comment",
            "create_issue",
            "update_issue",
            "update_issue_body",
            "comment",
            "create_branch",
            "write_file",
            "create_pull",
            "add_labels",
            "request_reviewers",
        ];
        self.calls()
            .into_iter()
            .filter(|c| WRITES.iter().any(|w| c.split(' ').next() == Some(w)))
            .collect()
    }

    pub fn issues(&self, repo: &str) -> Vec<IssueRec> {
        let st = self.lock();
        st.repos
            .get(repo)
            .map(|r| r.issues.clone())
            .unwrap_or_default()
    }

    pub fn pulls(&self, repo: &str) -> Vec<PullRec> {
        let st = self.lock();
        st.repos
            .get(repo)
            .map(|r| r.pulls.clone())
            .unwrap_or_default()
    }

    pub fn branches(&self, repo: &str) -> Vec<String> {
        let st = self.lock();
        st.repos
            .get(repo)
            .map(|r| r.branches.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn file_text(&self, repo: &str, branch: &str, path: &str) -> Option<String> {
        let st = self.lock();
        st.repos.get(repo)?.tree(branch)?.get(path).cloned()
    }

    /// A reviewer merges the pull request: its branch's files land on its
    /// base in a new commit, and it is closed as merged.
    pub fn merge(&self, repo: &str, number: i64) {
        let mut st = self.lock();
        let Some(r) = st.repos.get_mut(repo) else {
            return;
        };
        let Some(p) = r.pulls.iter_mut().find(|p| p.number == number) else {
            return;
        };
        p.merged = true;
        p.state = "closed".into();
        let (head, base) = (p.head.clone(), p.base.clone());
        let mut tree = r.tree(&base).cloned().unwrap_or_default();
        tree.extend(r.tree(&head).cloned().unwrap_or_default());
        r.commit(&base, tree);
    }

    /// A reviewer closes the pull request without merging.
    pub fn close(&self, repo: &str, number: i64) {
        let mut st = self.lock();
        if let Some(p) = st
            .repos
            .get_mut(repo)
            .and_then(|r| r.pulls.iter_mut().find(|p| p.number == number))
        {
            p.state = "closed".into();
        }
    }

    /// Someone else (a Jules session) opens a pull request from a new
    /// branch `branch` off `main`, changing `files`; returns its number.
    pub fn open_pull(
        &self,
        repo: &str,
        branch: &str,
        title: &str,
        body: &str,
        files: &[PullFile],
    ) -> i64 {
        let mut st = self.lock();
        let r = st.repos.entry(repo.to_string()).or_default();
        let tree = r.tree("main").cloned().unwrap_or_default();
        let head_sha = r.commit(branch, tree);
        r.last_number += 1;
        r.pulls.push(PullRec {
            number: r.last_number,
            title: title.into(),
            body: body.into(),
            head: branch.into(),
            base: "main".into(),
            state: "open".into(),
            head_sha,
            files: files.to_vec(),
            ..PullRec::default()
        });
        r.last_number
    }

    /// CI reports these check runs on commit `sha` (replacing earlier ones).
    pub fn set_checks(&self, repo: &str, sha: &str, runs: &[(&str, &str, Option<&str>)]) {
        let mut st = self.lock();
        let r = st.repos.entry(repo.to_string()).or_default();
        let runs = runs
            .iter()
            .map(|(name, status, conclusion)| CheckRun {
                name: name.to_string(),
                status: status.to_string(),
                conclusion: conclusion.map(str::to_string),
            })
            .collect();
        r.checks.insert(sha.to_string(), runs);
    }

    /// Logs the call, fails it when a failure is queued, else runs `f` on
    /// the repository (404 when there is none).
    fn call<T>(
        &self,
        method: &str,
        repo: &str,
        f: impl FnOnce(&mut Repo) -> Result<T, GitHubError>,
    ) -> Result<T, GitHubError> {
        let mut st = self.lock();
        st.calls.push(format!("{method} {repo}"));
        if let Some(e) = st.failures.pop_front() {
            return Err(e);
        }
        let r = st.repos.get_mut(repo).ok_or_else(not_found)?;
        f(r)
    }

    fn answer<'a, T: Send + 'a>(result: Result<T, GitHubError>) -> GitHubFuture<'a, T> {
        Box::pin(std::future::ready(result))
    }
}

fn issue_mut(r: &mut Repo, number: i64) -> Result<&mut IssueRec, GitHubError> {
    r.issues
        .iter_mut()
        .find(|i| i.number == number)
        .ok_or_else(not_found)
}

impl GitHubApi for InMemoryGitHub {
    fn issues<'a>(&'a self, repo: &'a str) -> GitHubFuture<'a, Vec<Issue>> {
        Self::answer(self.call("issues", repo, |r| {
            Ok(r.issues
                .iter()
                .rev()
                .filter(|i| i.labels.iter().any(|l| l == "sre-space"))
                .take(100)
                .map(|i| issue(repo, i))
                .collect())
        }))
    }

    fn create_issue<'a>(
        &'a self,
        repo: &'a str,
        title: &'a str,
        body: &'a str,
        labels: &'a [String],
    ) -> GitHubFuture<'a, Issue> {
        Self::answer(self.call("create_issue", repo, |r| {
            if title.is_empty() {
                return Err(refused(422, "Validation Failed: title"));
            }
            r.last_number += 1;
            let i = IssueRec {
                number: r.last_number,
                title: title.into(),
                body: body.into(),
                state: "open".into(),
                labels: labels.to_vec(),
                comments: vec![],
            };
            let out = issue(repo, &i);
            r.issues.push(i);
            Ok(out)
        }))
    }

    fn update_issue<'a>(
        &'a self,
        repo: &'a str,
        number: i64,
        title: &'a str,
        state: &'a str,
        labels: &'a [String],
    ) -> GitHubFuture<'a, Issue> {
        Self::answer(self.call("update_issue", repo, |r| {
            if !matches!(state, "open" | "closed") {
                return Err(refused(422, "Validation Failed: state"));
            }
            let i = issue_mut(r, number)?;
            i.title = title.into();
            i.state = state.into();
            i.labels = labels.to_vec();
            Ok(issue(repo, i))
        }))
    }

    fn update_issue_body<'a>(
        &'a self,
        repo: &'a str,
        number: i64,
        body: &'a str,
    ) -> GitHubFuture<'a, Issue> {
        Self::answer(self.call("update_issue_body", repo, |r| {
            let i = issue_mut(r, number)?;
            i.body = body.into();
            Ok(issue(repo, i))
        }))
    }

    fn comments<'a>(&'a self, repo: &'a str, number: i64) -> GitHubFuture<'a, Vec<Comment>> {
        Self::answer(self.call("comments", repo, |r| {
            Ok(thread_mut(r, number)?
                .iter()
                .enumerate()
                .map(|(i, b)| Comment {
                    id: comment_id(number, i),
                    body: Some(b.clone()),
                })
                .collect())
        }))
    }

    fn comment<'a>(
        &'a self,
        repo: &'a str,
        number: i64,
        body: &'a str,
    ) -> GitHubFuture<'a, Comment> {
        Self::answer(self.call("comment", repo, |r| {
            let thread = thread_mut(r, number)?;
            thread.push(body.into());
            Ok(Comment {
                id: comment_id(number, thread.len().saturating_sub(1)),
                body: Some(body.into()),
            })
        }))
    }

    fn branch_sha<'a>(
        &'a self,
        repo: &'a str,
        branch: &'a str,
    ) -> GitHubFuture<'a, Option<String>> {
        Self::answer(self.call("branch_sha", repo, |r| Ok(r.branches.get(branch).cloned())))
    }

    fn create_branch<'a>(
        &'a self,
        repo: &'a str,
        branch: &'a str,
        sha: &'a str,
    ) -> GitHubFuture<'a, ()> {
        Self::answer(self.call("create_branch", repo, |r| {
            if r.branches.contains_key(branch) {
                return Err(refused(422, "Reference already exists"));
            }
            if !r.commits.contains_key(sha) {
                return Err(refused(422, "Object does not exist"));
            }
            r.branches.insert(branch.into(), sha.into());
            Ok(())
        }))
    }

    fn file<'a>(
        &'a self,
        repo: &'a str,
        path: &'a str,
        branch: &'a str,
    ) -> GitHubFuture<'a, (String, String)> {
        Self::answer(self.call("file", repo, |r| {
            let text = r
                .tree(branch)
                .and_then(|t| t.get(path))
                .ok_or_else(not_found)?;
            Ok((text.clone(), sha_of(text)))
        }))
    }

    fn write_file<'a>(
        &'a self,
        repo: &'a str,
        path: &'a str,
        branch: &'a str,
        text: &'a str,
        sha: &'a str,
        _message: &'a str,
    ) -> GitHubFuture<'a, ()> {
        Self::answer(self.call("write_file", repo, |r| {
            let mut tree = r
                .tree(branch)
                .cloned()
                .ok_or_else(|| refused(404, &format!("Branch {branch} not found")))?;
            match tree.get(path) {
                Some(_) if sha.is_empty() => {
                    return Err(refused(
                        422,
                        &format!("Invalid request: \"sha\" wasn't supplied for {path}"),
                    ));
                }
                Some(current) if sha_of(current) != sha => {
                    return Err(refused(409, &format!("{path} does not match {sha}")));
                }
                _ => {}
            }
            tree.insert(path.into(), text.into());
            r.commit(branch, tree);
            Ok(())
        }))
    }

    fn pull_for_branch<'a>(
        &'a self,
        repo: &'a str,
        branch: &'a str,
    ) -> GitHubFuture<'a, Option<PullRequest>> {
        Self::answer(self.call("pull_for_branch", repo, |r| {
            // Newest first, as GitHub lists them.
            Ok(r.pulls
                .iter()
                .rev()
                .find(|p| p.head == branch)
                .map(|p| pull(repo, p)))
        }))
    }

    fn create_pull<'a>(
        &'a self,
        repo: &'a str,
        branch: &'a str,
        base: &'a str,
        title: &'a str,
        body: &'a str,
    ) -> GitHubFuture<'a, PullRequest> {
        Self::answer(self.call("create_pull", repo, |r| {
            if !r.branches.contains_key(branch) {
                return Err(refused(422, "Validation Failed: head"));
            }
            if !r.branches.contains_key(base) {
                return Err(refused(422, "Validation Failed: base"));
            }
            if r.pulls
                .iter()
                .any(|p| p.head == branch && p.state == "open")
            {
                return Err(refused(
                    422,
                    &format!("A pull request already exists for {branch}"),
                ));
            }
            r.last_number += 1;
            let p = PullRec {
                number: r.last_number,
                title: title.into(),
                body: body.into(),
                head: branch.into(),
                base: base.into(),
                state: "open".into(),
                merged: false,
                labels: vec![],
                reviewers: vec![],
                team_reviewers: vec![],
                head_sha: r.branches.get(branch).cloned().unwrap_or_default(),
                files: vec![],
                comments: vec![],
            };
            let out = pull(repo, &p);
            r.pulls.push(p);
            Ok(out)
        }))
    }

    fn pull<'a>(&'a self, repo: &'a str, number: i64) -> GitHubFuture<'a, PullRequest> {
        Self::answer(self.call("pull", repo, |r| {
            r.pulls
                .iter()
                .find(|p| p.number == number)
                .map(|p| pull(repo, p))
                .ok_or_else(not_found)
        }))
    }

    fn add_labels<'a>(
        &'a self,
        repo: &'a str,
        number: i64,
        labels: &'a [String],
    ) -> GitHubFuture<'a, ()> {
        Self::answer(self.call("add_labels", repo, |r| {
            let on = match r.pulls.iter_mut().find(|p| p.number == number) {
                Some(p) => &mut p.labels,
                None => &mut issue_mut(r, number)?.labels,
            };
            for l in labels {
                if !on.contains(l) {
                    on.push(l.clone());
                }
            }
            Ok(())
        }))
    }

    fn request_reviewers<'a>(
        &'a self,
        repo: &'a str,
        number: i64,
        users: &'a [String],
        teams: &'a [String],
    ) -> GitHubFuture<'a, ()> {
        Self::answer(self.call("request_reviewers", repo, |r| {
            if let Some(allowed) = &r.collaborators
                && let Some(who) = users.iter().chain(teams).find(|n| !allowed.contains(n))
            {
                return Err(refused(
                    422,
                    &format!(
                        "Reviews may only be requested from collaborators. One or more of the users or teams you specified is not a collaborator of the {repo} repository: {who}"
                    ),
                ));
            }
            let p = r
                .pulls
                .iter_mut()
                .find(|p| p.number == number)
                .ok_or_else(not_found)?;
            for (to, from) in [(&mut p.reviewers, users), (&mut p.team_reviewers, teams)] {
                for n in from {
                    if !to.contains(n) {
                        to.push(n.clone());
                    }
                }
            }
            Ok(())
        }))
    }

    fn pull_files<'a>(&'a self, repo: &'a str, number: i64) -> GitHubFuture<'a, Vec<PullFile>> {
        Self::answer(self.pull_files_of(repo, number))
    }

    fn check_runs<'a>(&'a self, repo: &'a str, sha: &'a str) -> GitHubFuture<'a, Vec<CheckRun>> {
        Self::answer(self.call("check_runs", repo, |r| {
            Ok(r.checks.get(sha).cloned().unwrap_or_default())
        }))
    }

    fn update_comment<'a>(
        &'a self,
        repo: &'a str,
        id: i64,
        body: &'a str,
    ) -> GitHubFuture<'a, Comment> {
        Self::answer(self.call("update_comment", repo, |r| {
            let number = id / COMMENTS_PER_THREAD;
            let index = usize::try_from((id % COMMENTS_PER_THREAD).saturating_sub(1))
                .map_err(|_| not_found())?;
            let slot = thread_mut(r, number)?
                .get_mut(index)
                .ok_or_else(not_found)?;
            *slot = body.into();
            Ok(Comment {
                id,
                body: Some(body.into()),
            })
        }))
    }
}

impl InMemoryGitHub {
    fn pull_files_of(&self, repo: &str, number: i64) -> Result<Vec<PullFile>, GitHubError> {
        self.call("pull_files", repo, |r| {
            r.pulls
                .iter()
                .find(|p| p.number == number)
                .map(|p| p.files.clone())
                .ok_or_else(not_found)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn branches_files_and_pulls_answer_as_github_does() {
        let github = InMemoryGitHub::new();
        github.seed("acme/deploy", &[("values.yaml", "a: 1\n")]);
        let api = github.api();
        let main = api.branch_sha("acme/deploy", "main").await;
        let main = main.expect("answers").expect("main exists");
        api.create_branch("acme/deploy", "fix", &main)
            .await
            .expect("created");
        let again = api.create_branch("acme/deploy", "fix", &main).await;
        assert_eq!(again, Err(refused(422, "Reference already exists")));

        let (text, blob) = api
            .file("acme/deploy", "values.yaml", "fix")
            .await
            .expect("file");
        assert_eq!(text, "a: 1\n");
        let stale = api
            .write_file("acme/deploy", "values.yaml", "fix", "a: 2\n", "0", "m")
            .await;
        assert_eq!(stale.map_err(|e| e.status()), Err(Some(409)));
        api.write_file("acme/deploy", "values.yaml", "fix", "a: 2\n", &blob, "m")
            .await
            .expect("written");
        assert_eq!(
            github
                .file_text("acme/deploy", "main", "values.yaml")
                .as_deref(),
            Some("a: 1\n")
        );

        let p = api
            .create_pull("acme/deploy", "fix", "main", "t", "b")
            .await
            .expect("opened");
        let twice = api
            .create_pull("acme/deploy", "fix", "main", "t", "b")
            .await;
        assert_eq!(twice.map_err(|e| e.status()).err(), Some(Some(422)));
        github.close("acme/deploy", p.number);
        let closed = api.pull("acme/deploy", p.number).await.expect("pull");
        assert_eq!((closed.state.as_str(), closed.merged_at), ("closed", None));
        let gone = api.pull("acme/deploy", p.number + 1).await;
        assert_eq!(gone.map_err(|e| e.status()).err(), Some(Some(404)));
    }
}
