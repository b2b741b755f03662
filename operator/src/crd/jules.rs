use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The Jules session started for an escalated episode, as the operator
/// last saw it. Written before the session is created (with an empty
/// `session`), so a restarted operator finds the session it may have
/// started by `title` instead of starting a second one.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JulesStatus {
    /// The session's resource name, `sessions/{id}`; empty until created.
    #[serde(default)]
    #[schemars(length(max = 200))]
    pub session: String,
    /// The session's title, unique to the incident and episode.
    #[serde(default)]
    #[schemars(length(max = 300))]
    pub title: String,
    /// The episode of the incident the session works on.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1_000_000_000))]
    pub episode: i64,
    /// Where a person follows the session (and approves its plan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 500))]
    pub url: Option<String>,
    /// The session's state: `Starting` until created, then Jules's
    /// (`QUEUED`, `PLANNING`, `AWAITING_PLAN_APPROVAL`,
    /// `AWAITING_USER_FEEDBACK`, `IN_PROGRESS`, `PAUSED`, `FAILED`,
    /// `COMPLETED`).
    #[serde(default)]
    #[schemars(length(max = 40))]
    pub state: String,
    /// The pull request the session opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 500))]
    pub pull_request: Option<String>,
    /// The verdict on the pull request, in one word: `green`, `red` or
    /// `pending`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 20))]
    pub verdict: Option<String>,
    /// How often the signal had been seen when the session was recorded:
    /// the verdict says whether the problem recurred since.
    #[serde(default)]
    #[schemars(range(min = 0, max = crate::limits::MAX_TALLY))]
    pub occurrences_at_start: i64,
    /// When the session was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the session was last read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_polled: Option<Time>,
    /// Why the last call to Jules or GitHub failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000))]
    pub error: Option<String>,
}
