//! Jules in memory, for unit tests: sources, sessions created as Jules
//! creates them (QUEUED, with a URL), activities appended as a session
//! moves, pages of two so pagination is exercised. A test moves a session
//! through its states and attaches a pull request, as Jules would. Every
//! call is logged.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    Activity, ActivityPage, Failure, GitHubRepo, Jules, JulesApi, JulesError, JulesFuture,
    NewSession, PullRequestOutput, Session, SessionOutput, SessionPage, Source, SourcePage,
};

/// Items per page, small so that callers must follow `nextPageToken`.
const PAGE: usize = 2;

#[derive(Default)]
struct State {
    sources: Vec<Source>,
    sessions: Vec<Session>,
    /// The bodies sessions were created with, by id.
    created: BTreeMap<String, NewSession>,
    activities: BTreeMap<String, Vec<Activity>>,
    calls: Vec<String>,
}

/// Jules in memory. Clones share one state.
#[derive(Clone, Default)]
pub struct InMemoryJules {
    state: Arc<Mutex<State>>,
}

fn paged<T: Clone>(
    items: &[T],
    token: Option<&str>,
) -> Result<(Vec<T>, Option<String>), JulesError> {
    let start: usize = match token {
        None => 0,
        Some(t) => t
            .parse()
            .map_err(|_| JulesError::Refused("400: invalid page token".into()))?,
    };
    let end = start.saturating_add(PAGE).min(items.len());
    let page = items.get(start..end).unwrap_or_default().to_vec();
    let next = (end < items.len()).then(|| end.to_string());
    Ok((page, next))
}

fn not_found() -> JulesError {
    JulesError::Refused("404: Requested entity was not found.".into())
}

impl InMemoryJules {
    pub fn new() -> Self {
        Self::default()
    }

    /// The operator's Jules over this double, starting from `main`.
    pub fn jules(&self) -> Jules {
        Jules::new(Arc::new(self.clone()), "main".into())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Jules's GitHub app is installed on these repositories (`owner/repo`).
    pub fn sources(&self, repos: &[&str]) {
        let mut st = self.lock();
        for repo in repos {
            let (owner, name) = repo.split_once('/').unwrap_or((repo, ""));
            st.sources.push(Source {
                name: format!("sources/github/{owner}/{name}"),
                id: format!("github/{owner}/{name}"),
                github_repo: Some(GitHubRepo {
                    owner: owner.into(),
                    repo: name.into(),
                }),
            });
        }
    }

    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    pub fn sessions_started(&self) -> Vec<NewSession> {
        self.lock().created.values().cloned().collect()
    }

    /// Moves a session to `state`, with the activity that says so.
    pub fn advance(&self, id: &str, state: &str) {
        let mut st = self.lock();
        if let Some(s) = st.sessions.iter_mut().find(|s| s.id == id) {
            s.state = state.into();
        }
        let activity = Activity {
            name: format!("sessions/{id}/activities/{state}"),
            plan_generated: (state == "AWAITING_PLAN_APPROVAL").then(|| serde_json::json!({})),
            session_completed: (state == "COMPLETED").then(|| serde_json::json!({})),
            session_failed: (state == "FAILED").then(|| Failure {
                reason: "the tests did not pass".into(),
            }),
            ..Activity::default()
        };
        st.activities.entry(id.into()).or_default().push(activity);
    }

    /// The session opened a pull request.
    pub fn attach_pull(&self, id: &str, url: &str) {
        let mut st = self.lock();
        if let Some(s) = st.sessions.iter_mut().find(|s| s.id == id) {
            s.outputs.push(SessionOutput {
                pull_request: Some(PullRequestOutput {
                    url: url.into(),
                    title: "Fix the leak".into(),
                    description: "Bounds the cache.".into(),
                }),
            });
        }
    }

    fn answer<'a, T: Send + 'a>(
        &self,
        call: String,
        f: impl FnOnce(&mut State) -> Result<T, JulesError>,
    ) -> JulesFuture<'a, T> {
        let mut st = self.lock();
        st.calls.push(call);
        let result = f(&mut st);
        Box::pin(std::future::ready(result))
    }
}

impl JulesApi for InMemoryJules {
    fn sources<'a>(&'a self, page_token: Option<&'a str>) -> JulesFuture<'a, SourcePage> {
        self.answer("sources".into(), |st| {
            let (sources, next_page_token) = paged(&st.sources, page_token)?;
            Ok(SourcePage {
                sources,
                next_page_token,
            })
        })
    }

    fn sessions<'a>(&'a self, page_token: Option<&'a str>) -> JulesFuture<'a, SessionPage> {
        self.answer("sessions".into(), |st| {
            let (sessions, next_page_token) = paged(&st.sessions, page_token)?;
            Ok(SessionPage {
                sessions,
                next_page_token,
            })
        })
    }

    fn create_session<'a>(&'a self, new: &'a NewSession) -> JulesFuture<'a, Session> {
        self.answer(format!("create_session {}", new.source), |st| {
            if !st.sources.iter().any(|s| s.name == new.source) {
                return Err(not_found());
            }
            let id = format!("{}", 1000 + st.sessions.len());
            let session = Session {
                name: format!("sessions/{id}"),
                id: id.clone(),
                title: new.title.clone(),
                url: format!("https://jules.google.com/session/{id}"),
                state: "QUEUED".into(),
                outputs: vec![],
            };
            st.sessions.push(session.clone());
            st.created.insert(id, new.clone());
            Ok(session)
        })
    }

    fn session<'a>(&'a self, id: &'a str) -> JulesFuture<'a, Session> {
        self.answer(format!("session {id}"), |st| {
            st.sessions
                .iter()
                .find(|s| s.id == id)
                .cloned()
                .ok_or_else(not_found)
        })
    }

    fn activities<'a>(
        &'a self,
        id: &'a str,
        page_token: Option<&'a str>,
    ) -> JulesFuture<'a, ActivityPage> {
        self.answer(format!("activities {id}"), |st| {
            let all = st.activities.get(id).cloned().unwrap_or_default();
            let (activities, next_page_token) = paged(&all, page_token)?;
            Ok(ActivityPage {
                activities,
                next_page_token,
            })
        })
    }
}
