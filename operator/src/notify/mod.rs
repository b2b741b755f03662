//! Notifications out: each incident announced where its people already talk
//! (Slack, any CloudEvents webhook), on open, diagnosis, action, approval
//! needed, resolution and escalation.
//!
//! A policy names sinks; the operator's sinks file (`sinks.rs`) says what
//! they are and which namespaces may use them. The notifier (`notifier.rs`)
//! runs beside the incident state machine: it finds what is due
//! (`events.rs`) and offers it to a bounded queue, never waiting. One
//! background task (`deliver.rs`) paces each sink (coalescing and rate
//! limits for a Slack webhook, one edited message for a Slack bot), retries
//! with backoff, and records each delivery in the Incident's status, so a
//! restarted or new leader sends nothing twice.

pub mod deliver;
pub mod events;
pub mod notifier;
pub mod sinks;
pub mod slack;
pub mod webhook;

#[cfg(test)]
pub mod doubles;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::jiff::Timestamp;

pub use events::{Notice, Subject};
use sinks::{SinkKind, Sinks};

/// The variable naming the sinks file.
pub const SINKS_ENV: &str = "SRE_SPACE_NOTIFY_SINKS_FILE";

/// Where notifications go.
#[derive(Clone, Debug, Default, clap::Args)]
#[command(next_help_heading = "Notifications")]
pub struct NotifyOptions {
    /// The notification sinks file (the chart mounts `notify.sinksSecret`
    /// there): named Slack and CloudEvents webhook sinks, and the
    /// namespaces that may use each. Unset: policies that name a sink are
    /// told that none is configured.
    #[arg(long, env = SINKS_ENV, value_name = "FILE", value_parser = any_path)]
    pub notify_sinks_file: Option<PathBuf>,
}

/// A path, empty included (clap refuses an empty one): the chart sets an
/// empty variable when no Secret is mounted, which means no file.
fn any_path(v: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(PathBuf::from(v))
}

impl NotifyOptions {
    /// The sinks the file configures; none without a file.
    pub fn sinks(&self) -> Sinks {
        match self.notify_sinks_file.as_deref() {
            Some(p) if !p.as_os_str().is_empty() => Sinks::load(p),
            _ => Sinks::none(),
        }
    }
}

/// A sink with its name in the sinks file.
pub type Named = (String, Arc<dyn Sink>);

/// A batch of announcements about one incident for one sink.
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    pub sink: String,
    pub subject: Subject,
    /// What is new.
    pub notices: Vec<Notice>,
    /// Everything announced of the episode so far, the new included (a
    /// Slack bot's one message shows it all).
    pub history: Vec<Notice>,
    pub now: Timestamp,
}

/// How a sink wants its messages paced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pacing {
    /// Events of one incident within this time become one message.
    pub coalesce: Duration,
    /// At most one message per incident this often.
    pub min_interval: Duration,
    /// Whether one message may carry several events.
    pub batches: bool,
}

/// Why a delivery failed, and whether trying again may help.
#[derive(Clone, Debug, PartialEq)]
pub struct SinkError {
    pub retryable: bool,
    pub message: String,
}

impl SinkError {
    pub fn retry(message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            message: crate::redact::string(&message.into()),
        }
    }

    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            message: crate::redact::string(&message.into()),
        }
    }

    /// A transport failure: the receiver may be back soon. The URL is left
    /// out: a Slack webhook's URL is its credential.
    pub fn unreachable(e: reqwest::Error) -> Self {
        Self::retry(format!("the sink is unreachable: {}", e.without_url()))
    }

    /// An HTTP error answer: 408, 429 and 5xx are passing; other 4xx mean
    /// the request or credential is wrong.
    pub fn status(code: u16, body: &str) -> Self {
        let body: String = body.chars().take(200).collect();
        let message = format!("the sink answered {code}: {body}");
        if code == 408 || code == 429 || code >= 500 {
            Self::retry(message)
        } else {
            Self::fatal(message)
        }
    }
}

impl std::fmt::Display for SinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A place notifications go.
pub trait Sink: Send + Sync {
    fn pacing(&self) -> Pacing;

    /// Delivers a batch; returns the sink's id of the message (a Slack
    /// `ts`, a CloudEvent id). `thread` is the id an earlier delivery about
    /// the same incident returned: a sink that can edit updates that
    /// message instead of posting another.
    fn send<'a>(
        &'a self,
        m: &'a Outgoing,
        thread: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<String>, SinkError>>;
}

/// How long one delivery may take.
const TIMEOUT: Duration = Duration::from_secs(10);

fn http_client() -> Result<reqwest::Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        // A sink's URL is the administrator's; a redirect is not followed
        // to wherever it points.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))
}

/// The sinks of the file, by name, ready to send.
pub fn build(sinks: &Sinks) -> Result<Vec<Named>, String> {
    sinks
        .all()
        .iter()
        .map(|s| {
            let sink: Arc<dyn Sink> = match &s.kind {
                SinkKind::SlackWebhook { url } => Arc::new(slack::SlackWebhook::new(url)?),
                SinkKind::SlackBot {
                    token,
                    channel,
                    api_url,
                } => Arc::new(slack::SlackBot::new(token, channel, api_url)?),
                SinkKind::Webhook(w) => {
                    Arc::new(webhook::CloudEventsWebhook::new(&w.url, &w.headers)?)
                }
            };
            Ok((s.name.clone(), sink))
        })
        .collect()
}
