use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Notifications kept in an incident's status; the oldest go first.
pub const MAX_NOTIFICATIONS: usize = 100;

/// Where a policy's incidents are announced. The sinks are named, not
/// given: their URLs and tokens are the operator's own configuration (a
/// Secret), and the operator-side allow-list says which namespaces may use
/// which sink, so a policy can never make the operator call an address of
/// its choosing.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NotifySpec {
    /// Names of sinks configured in the operator's sinks file
    /// (`SRE_SPACE_NOTIFY_SINKS_FILE`). A name the file does not hold, or
    /// one this namespace may not use, sends nothing and sets the policy's
    /// `NotificationsAvailable` condition to False.
    #[schemars(length(min = 1, max = 5), inner(length(min = 1, max = 63)))]
    pub sinks: Vec<String>,
    /// Which moments of an incident are announced; all of them when unset.
    #[serde(default = "NotifyEvent::all")]
    #[schemars(length(max = 6))]
    pub events: Vec<NotifyEvent>,
}

/// A moment of an incident's life that is announced.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub enum NotifyEvent {
    /// The incident was opened (or a resolved problem came back).
    Opened,
    /// The root cause was found.
    Diagnosed,
    /// An action was taken, failed, or (DryRun) would have been taken.
    ActionTaken,
    /// An action waits for a person's approval; the message carries the
    /// command that approves it.
    ApprovalNeeded,
    /// The signal cleared and stayed clear.
    Resolved,
    /// The incident was handed to people.
    Escalated,
}

impl NotifyEvent {
    /// Every event, in the order of an incident's life.
    pub fn all() -> Vec<Self> {
        vec![
            Self::Opened,
            Self::Diagnosed,
            Self::ActionTaken,
            Self::ApprovalNeeded,
            Self::Resolved,
            Self::Escalated,
        ]
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Opened => "Opened",
            Self::Diagnosed => "Diagnosed",
            Self::ActionTaken => "ActionTaken",
            Self::ApprovalNeeded => "ApprovalNeeded",
            Self::Resolved => "Resolved",
            Self::Escalated => "Escalated",
        }
    }
}

/// One notification delivered to one sink, kept so that a restarted or new
/// leader does not send it again.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NotificationRecord {
    /// What was announced, unique within the incident: the episode and the
    /// event (`e1/Opened`), with the action id for actions and approvals.
    #[schemars(length(max = 200))]
    pub key: String,
    /// The event announced.
    pub event: NotifyEvent,
    /// The sink it was delivered to.
    #[schemars(length(max = 63))]
    pub sink: String,
    /// The sink's id of the message: the CloudEvent's `id`, or the Slack
    /// message's `ts` (the message later events update).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 200))]
    pub message_id: Option<String>,
    /// When it was delivered.
    pub sent_at: Time,
}
