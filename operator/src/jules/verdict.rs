//! The verdict on a pull request the operator did not write (a Jules
//! session's): are its checks green, red or still pending, what does it
//! change (a CI workflow changed is a safety finding), and did the
//! incident's problem come back since the work began. Posted as one
//! comment on the pull request, updated when it changes; printed by
//! `sre-space verify-pr`. The operator never merges or approves it.

use std::fmt::Write;

use k8s_openapi::jiff::Timestamp;

use crate::crd::Incident;
use crate::github::{CheckRun, GitHub, GitHubError, PullFile};
use crate::markdown::{ends_with_marker, inline};

/// The hidden marker of the verdict comment; one per pull request.
pub const MARKER: &str = "<!-- sre-space:verdict -->";

/// The checks, together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checks {
    /// Every check finished, none failed.
    Green,
    /// At least one check failed.
    Red,
    /// Some check has not finished, or there is none yet.
    Pending,
}

impl Checks {
    pub fn word(self) -> &'static str {
        match self {
            Self::Green => "green",
            Self::Red => "red",
            Self::Pending => "pending",
        }
    }

    /// `sre-space verify-pr`'s exit code: 0 green, 1 red, 2 pending.
    pub fn exit_code(self) -> i32 {
        match self {
            Self::Green => 0,
            Self::Red => 1,
            Self::Pending => 2,
        }
    }
}

/// Whether the incident's problem came back since the session started.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recurrence {
    pub fingerprint: String,
    /// When the work began (the session was recorded).
    pub since: Option<Timestamp>,
    /// Times the signal was seen since then, when known.
    pub times: Option<i64>,
    pub last_seen: Option<Timestamp>,
}

impl Recurrence {
    /// What the incident says: its occurrences now against those when the
    /// session was recorded.
    pub fn of(incident: &Incident) -> Self {
        let status = incident.status.clone().unwrap_or_default();
        let jules = status.jules.as_ref();
        let since = jules.and_then(|j| j.started_at.as_ref()).map(|t| t.0);
        let times = jules.filter(|j| j.started_at.is_some()).map(|j| {
            status
                .occurrences
                .saturating_sub(j.occurrences_at_start)
                .max(0)
        });
        Self {
            fingerprint: incident.spec.fingerprint.clone(),
            since,
            times,
            last_seen: status.last_seen.map(|t| t.0),
        }
    }

    /// Whether it recurred: counted, or else seen after the start.
    pub fn recurred(&self) -> bool {
        match (self.times, self.since, self.last_seen) {
            (Some(n), ..) => n > 0,
            (None, Some(since), Some(seen)) => seen > since,
            _ => false,
        }
    }
}

/// What the operator concludes about one pull request.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// `owner/name#number`.
    pub pull: String,
    pub head_sha: String,
    pub checks: Checks,
    pub runs: Vec<CheckRun>,
    pub files: Vec<PullFile>,
    /// None: no incident was found to compare with.
    pub recurrence: Option<Recurrence>,
}

/// A run's outcome: Some(true) passed, Some(false) failed, None pending.
fn passed(run: &CheckRun) -> Option<bool> {
    if run.status != "completed" {
        return None;
    }
    Some(matches!(
        run.conclusion.as_deref(),
        Some("success" | "neutral" | "skipped")
    ))
}

/// The checks together: red when any failed, pending when any has not
/// finished or there are none, else green.
pub fn checks(runs: &[CheckRun]) -> Checks {
    let outcomes: Vec<Option<bool>> = runs.iter().map(passed).collect();
    if outcomes.contains(&Some(false)) {
        Checks::Red
    } else if runs.is_empty() || outcomes.contains(&None) {
        Checks::Pending
    } else {
        Checks::Green
    }
}

/// Whether a changed file is a CI workflow (under `.github/workflows/`).
pub fn is_workflow(path: &str) -> bool {
    path.trim_start_matches("./")
        .to_ascii_lowercase()
        .starts_with(".github/workflows/")
}

impl Verdict {
    pub fn new(
        pull: String,
        head_sha: String,
        runs: Vec<CheckRun>,
        files: Vec<PullFile>,
        recurrence: Option<Recurrence>,
    ) -> Self {
        Self {
            pull,
            checks: checks(&runs),
            head_sha,
            runs,
            files,
            recurrence,
        }
    }

    /// The changed files that are CI workflows.
    pub fn workflow_files(&self) -> Vec<&str> {
        self.files
            .iter()
            .map(|f| f.filename.as_str())
            .filter(|f| is_workflow(f))
            .collect()
    }

    /// The verdict in markdown: names and paths from GitHub are data, shown
    /// as code.
    pub fn render(&self) -> String {
        let mut c = format!("### SRE-Space verdict: checks {}\n\n", self.checks.word());
        let short: String = self.head_sha.chars().take(12).collect();
        let count = |want: Option<bool>| self.runs.iter().filter(|r| passed(r) == want).count();
        let _ = writeln!(
            c,
            "**Checks** on {}: {} passed, {} failed, {} pending.",
            inline(&short),
            count(Some(true)),
            count(Some(false)),
            count(None)
        );
        if self.runs.is_empty() {
            let _ = writeln!(c, "- no check has reported yet");
        }
        for r in &self.runs {
            let outcome = match passed(r) {
                Some(true) => "passed",
                Some(false) => "failed",
                None => "pending",
            };
            let detail = r.conclusion.as_deref().unwrap_or(&r.status);
            let _ = writeln!(c, "- {} {outcome} ({})", inline(&r.name), inline(detail));
        }
        let (plus, minus) = self.files.iter().fold((0u64, 0u64), |(p, m), f| {
            (p.saturating_add(f.additions), m.saturating_add(f.deletions))
        });
        let _ = writeln!(
            c,
            "\n**What changed**: {} file(s), +{plus} −{minus}.",
            self.files.len()
        );
        for f in self.files.iter().take(50) {
            let _ = writeln!(
                c,
                "- {} (+{} −{})",
                inline(&f.filename),
                f.additions,
                f.deletions
            );
        }
        if self.files.len() > 50 {
            let _ = writeln!(c, "- and {} more", self.files.len().saturating_sub(50));
        }
        let workflows = self.workflow_files();
        if !workflows.is_empty() {
            let _ = writeln!(
                c,
                "\n**Safety finding**: this pull request changes CI workflows ({}); review them by hand: a workflow runs with the repository's secrets.",
                workflows
                    .iter()
                    .map(|w| inline(w))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let _ = writeln!(c, "\n**Recurrence**: {}", self.recurrence_line());
        let _ = writeln!(
            c,
            "\nThe operator never merges or approves this pull request; a person decides."
        );
        c
    }

    fn recurrence_line(&self) -> String {
        let Some(r) = &self.recurrence else {
            return "unknown: no incident names this pull request.".into();
        };
        let fp = inline(&r.fingerprint);
        let since = r.since.map(|t| format!(" since {t}")).unwrap_or_default();
        match (r.recurred(), r.times) {
            (true, Some(n)) => format!(
                "the problem {fp} recurred {n} time(s){since}{}.",
                r.last_seen
                    .map(|t| format!(", last at {t}"))
                    .unwrap_or_default()
            ),
            (true, None) => format!(
                "the problem {fp} recurred{since}{}.",
                r.last_seen
                    .map(|t| format!(", last at {t}"))
                    .unwrap_or_default()
            ),
            (false, _) if r.since.is_some() => format!("the problem {fp} did not recur{since}."),
            (false, _) => format!(
                "{fp} was last seen {}; when the work began is not known.",
                r.last_seen
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "never".into())
            ),
        }
    }
}

/// A pull request's URL, `https://{host}/{owner}/{repo}/pull/{number}`,
/// as `owner/repo` and the number.
pub fn parse_pull_url(url: &str) -> Option<(String, i64)> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let path = rest.split(['?', '#']).next()?;
    let mut parts = path.split('/').skip(1).filter(|p| !p.is_empty());
    let (owner, repo, kind, number) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if kind != "pull" {
        return None;
    }
    let number: i64 = number.parse().ok().filter(|n| *n > 0)?;
    let repo = format!("{owner}/{repo}");
    crate::allowlist::split_repository(&repo).ok()?;
    Some((repo, number))
}

/// Reads the pull request, its files and the check runs on its head, and
/// judges it.
pub async fn judge(
    gh: &GitHub,
    repo: &str,
    number: i64,
    recurrence: Option<Recurrence>,
) -> Result<Verdict, GitHubError> {
    let pull = gh.pull(repo, number).await?;
    let head_sha = pull.head.map(|h| h.sha).unwrap_or_default();
    let runs = if head_sha.is_empty() {
        vec![]
    } else {
        gh.check_runs(repo, &head_sha).await?
    };
    let files = gh.pull_files(repo, number).await?;
    Ok(Verdict::new(
        format!("{repo}#{number}"),
        head_sha,
        runs,
        files,
        recurrence,
    ))
}

/// Posts the verdict on the pull request: one comment, found again by its
/// marker, updated only when its text changes. Returns whether anything
/// was written.
pub async fn post(
    gh: &GitHub,
    repo: &str,
    number: i64,
    verdict: &Verdict,
) -> Result<bool, GitHubError> {
    let body = format!("{}\n{MARKER}", verdict.render());
    let existing = gh.comments(repo, number).await?.into_iter().find(|c| {
        c.body
            .as_deref()
            .is_some_and(|b| ends_with_marker(b, MARKER))
    });
    match existing {
        Some(c) if c.body.as_deref().map(str::trim_end) == Some(body.trim_end()) => Ok(false),
        Some(c) => gh.update_comment(repo, c.id, &body).await.map(|_| true),
        None => gh.comment(repo, number, &body).await.map(|_| true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::github::memory::InMemoryGitHub;

    fn run(name: &str, status: &str, conclusion: Option<&str>) -> CheckRun {
        CheckRun {
            name: name.into(),
            status: status.into(),
            conclusion: conclusion.map(str::to_string),
        }
    }

    fn file(name: &str, additions: u64, deletions: u64) -> PullFile {
        PullFile {
            filename: name.into(),
            status: "modified".into(),
            additions,
            deletions,
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().expect("a timestamp")
    }

    #[test]
    fn the_verdict_is_green_only_when_every_check_passed() {
        let ok = run("build", "completed", Some("success"));
        let skipped = run("docs", "completed", Some("skipped"));
        let failed = run("test", "completed", Some("failure"));
        let timed_out = run("e2e", "completed", Some("timed_out"));
        let running = run("lint", "in_progress", None);
        assert_eq!(checks(&[ok.clone(), skipped.clone()]), Checks::Green);
        assert_eq!(
            checks(&[ok.clone(), failed.clone(), running.clone()]),
            Checks::Red
        );
        assert_eq!(checks(&[ok.clone(), timed_out]), Checks::Red);
        assert_eq!(checks(&[ok.clone(), running]), Checks::Pending);
        assert_eq!(checks(&[]), Checks::Pending, "no check yet is not green");
        assert_eq!(
            [Checks::Green, Checks::Red, Checks::Pending].map(Checks::exit_code),
            [0, 1, 2]
        );

        let v = Verdict::new(
            "acme/shop#7".into(),
            "0123456789abcdef0123".into(),
            vec![ok, failed],
            vec![file("src/cache.rs", 12, 3), file("src/lib.rs", 1, 0)],
            None,
        );
        let text = v.render();
        assert!(
            text.starts_with("### SRE-Space verdict: checks red"),
            "{text}"
        );
        assert!(text.contains("1 passed, 1 failed, 0 pending"), "{text}");
        assert!(text.contains("`test` failed (`failure`)"), "{text}");
        assert!(text.contains("2 file(s), +13 −3"), "{text}");
        assert!(text.contains("`src/cache.rs` (+12 −3)"), "{text}");
        assert!(!text.contains("Safety finding"), "{text}");
        assert!(text.contains("never merges or approves"), "{text}");
    }

    #[test]
    fn a_changed_workflow_is_flagged_as_a_safety_finding() {
        let v = Verdict::new(
            "acme/shop#7".into(),
            "abc".into(),
            vec![run("build", "completed", Some("success"))],
            vec![
                file(".github/workflows/ci.yml", 2, 1),
                file(".github/CODEOWNERS", 1, 0),
                file("src/x.rs", 1, 1),
            ],
            None,
        );
        assert_eq!(v.workflow_files(), [".github/workflows/ci.yml"]);
        let text = v.render();
        assert!(text.contains("checks green"), "{text}");
        assert!(
            text.contains("**Safety finding**") && text.contains("`.github/workflows/ci.yml`"),
            "{text}"
        );
        assert!(
            !text.contains("`.github/CODEOWNERS`);"),
            "only workflows: {text}"
        );
    }

    #[test]
    fn the_verdict_says_whether_the_problem_recurred_since_the_work_began() {
        let mut r = Recurrence {
            fingerprint: "shop/Deployment/web/OOMKilled".into(),
            since: Some(at("2026-12-01T10:00:00Z")),
            times: Some(2),
            last_seen: Some(at("2026-12-01T11:00:00Z")),
        };
        let verdict = |r: &Recurrence| {
            Verdict::new(
                "a/b#1".into(),
                "abc".into(),
                vec![],
                vec![],
                Some(r.clone()),
            )
            .render()
        };
        let text = verdict(&r);
        assert!(
            text.contains("`shop/Deployment/web/OOMKilled` recurred 2 time(s) since 2026-12-01T10:00:00Z, last at 2026-12-01T11:00:00Z"),
            "{text}"
        );
        r.times = Some(0);
        assert!(verdict(&r).contains("did not recur since 2026-12-01T10:00:00Z"));
        let none = Verdict::new("a/b#1".into(), "abc".into(), vec![], vec![], None).render();
        assert!(
            none.contains("unknown: no incident names this pull request"),
            "{none}"
        );
        assert!(none.contains("checks pending") && none.contains("no check has reported yet"));
    }

    #[test]
    fn pull_request_urls_are_parsed_and_others_refused() {
        assert_eq!(
            parse_pull_url("https://github.com/acme/shop/pull/42"),
            Some(("acme/shop".into(), 42))
        );
        assert_eq!(
            parse_pull_url("http://127.0.0.1:8080/acme/shop/pull/3/files#diff"),
            Some(("acme/shop".into(), 3))
        );
        for bad in [
            "https://github.com/acme/shop/issues/42",
            "https://github.com/acme/pull/42",
            "https://github.com/acme/shop/pull/x",
            "github.com/acme/shop/pull/1",
            "https://github.com/acme/shop/pull/-1",
        ] {
            assert_eq!(parse_pull_url(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn one_verdict_comment_is_posted_then_updated_when_it_changes() {
        let github = InMemoryGitHub::new();
        github.seed("acme/shop", &[("src/cache.rs", "x")]);
        let number = github.open_pull(
            "acme/shop",
            "jules-fix-1",
            "Bound the cache",
            "Fixes the leak.",
            &[file("src/cache.rs", 10, 2)],
        );
        let sha = github.pulls("acme/shop")[0].head_sha.clone();
        github.set_checks(
            "acme/shop",
            &sha,
            &[("build", "completed", Some("success"))],
        );
        let gh = github.serving(
            "namespaces:\n- namespace: shop\n  github:\n  - repository: acme/shop\n",
            "shop",
        );

        let v = judge(&gh, "acme/shop", number, None).await.expect("judged");
        assert_eq!(v.checks, Checks::Green);
        assert_eq!(post(&gh, "acme/shop", number, &v).await, Ok(true));
        // The same verdict again: nothing written.
        assert_eq!(post(&gh, "acme/shop", number, &v).await, Ok(false));
        let comments = &github.pulls("acme/shop")[0].comments;
        assert_eq!(comments.len(), 1);
        assert!(comments[0].contains("checks green"));

        github.set_checks(
            "acme/shop",
            &sha,
            &[
                ("build", "completed", Some("success")),
                ("test", "completed", Some("failure")),
            ],
        );
        let v = judge(&gh, "acme/shop", number, None).await.expect("judged");
        assert_eq!(post(&gh, "acme/shop", number, &v).await, Ok(true));
        let pull = &github.pulls("acme/shop")[0];
        assert_eq!(pull.comments.len(), 1, "updated, not repeated");
        assert!(
            pull.comments[0].contains("checks red"),
            "{}",
            pull.comments[0]
        );
        assert_eq!((pull.state.as_str(), pull.merged), ("open", false));
    }
}
