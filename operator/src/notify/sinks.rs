//! The sinks file: the notification sinks the operator's administrator
//! configured, and which namespaces may use each. It is read from the file
//! named by `SRE_SPACE_NOTIFY_SINKS_FILE` (the chart mounts a Secret there,
//! since Slack webhook URLs and tokens are credentials). A policy only names
//! a sink; the default is deny: a sink lists the namespaces that may use it.
//!
//! ```yaml
//! sinks:
//! - name: oncall-slack
//!   slack:
//!     webhookUrl: https://hooks.slack.com/services/T000/B000/XXXX
//!   namespaces: [shop, payments]
//! - name: oncall-slack-bot            # one message per incident, updated
//!   slack:
//!     botToken: xoxb-...
//!     channel: C0123456789
//!   namespaces: ["*"]                 # every namespace
//! - name: events
//!   webhook:
//!     url: https://events.example.com/sre-space
//!     headers: {Authorization: Bearer ...}
//!   namespaces: [shop]
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

/// The most sinks one file may hold.
const MAX_SINKS: usize = 50;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    sinks: Vec<FileSink>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSink {
    name: String,
    #[serde(default)]
    slack: Option<SlackConfig>,
    #[serde(default)]
    webhook: Option<WebhookConfig>,
    #[serde(default)]
    namespaces: Vec<String>,
}

/// A Slack sink: an incoming webhook (one message per event, coalesced and
/// rate limited), or a bot token and channel (one message per incident,
/// updated with `chat.update`).
#[derive(Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SlackConfig {
    #[serde(default)]
    pub webhook_url: Option<String>,
    #[serde(default)]
    pub bot_token: Option<String>,
    #[serde(default)]
    pub channel: Option<String>,
    /// Slack's Web API, `https://slack.com/api` unless set (a test's fake).
    #[serde(default)]
    pub api_url: Option<String>,
}

/// A CloudEvents webhook: each event POSTed as structured JSON.
#[derive(Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// Extra request headers (an Authorization header, say).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

// Hand-written so that a log line never prints a URL or token.
impl std::fmt::Debug for SlackConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackConfig")
            .field("webhook_url", &self.webhook_url.as_ref().map(|_| "<set>"))
            .field("bot_token", &self.bot_token.as_ref().map(|_| "<set>"))
            .field("channel", &self.channel)
            .finish()
    }
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// What a sink is.
#[derive(Clone, PartialEq)]
pub enum SinkKind {
    SlackWebhook {
        url: String,
    },
    SlackBot {
        token: String,
        channel: String,
        api_url: String,
    },
    Webhook(WebhookConfig),
}

// Hand-written: the URL and token are credentials.
impl std::fmt::Debug for SinkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SlackWebhook { .. } => f.write_str("SlackWebhook"),
            Self::SlackBot { channel, .. } => write!(f, "SlackBot({channel})"),
            Self::Webhook(w) => write!(f, "{w:?}"),
        }
    }
}

/// One configured sink.
#[derive(Clone, Debug, PartialEq)]
pub struct SinkConfig {
    pub name: String,
    pub kind: SinkKind,
    /// The namespaces that may use it; `*` is every namespace.
    pub namespaces: Vec<String>,
}

impl SinkConfig {
    fn serves(&self, ns: &str) -> bool {
        self.namespaces.iter().any(|n| n == "*" || n == ns)
    }
}

/// The parsed sinks file, or why it could not be used.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sinks {
    sinks: Vec<SinkConfig>,
    /// Set when the file could not be read or parsed: every policy that
    /// names a sink is told so, and nothing is sent.
    broken: Option<String>,
}

/// Why a policy's sink cannot be used: a reason (PascalCase) and what to
/// fix.
#[derive(Clone, Debug, PartialEq)]
pub struct Unavailable {
    pub reason: &'static str,
    pub message: String,
}

impl Sinks {
    /// No file: no sinks.
    pub fn none() -> Self {
        Self::default()
    }

    /// Reads the file; one that cannot be used is kept as the reason.
    pub fn load(path: &std::path::Path) -> Self {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).unwrap_or_else(|e| Self {
                sinks: vec![],
                broken: Some(format!("the sinks file {} is invalid: {e}", path.display())),
            }),
            Err(e) => Self {
                sinks: vec![],
                broken: Some(format!(
                    "the sinks file {} cannot be read: {e}",
                    path.display()
                )),
            },
        }
    }

    /// Parses the sinks file (YAML, or JSON, which YAML reads).
    pub fn parse(text: &str) -> Result<Self, String> {
        let doc: FileDoc = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        if doc.sinks.len() > MAX_SINKS {
            return Err(format!("at most {MAX_SINKS} sinks"));
        }
        let mut sinks: Vec<SinkConfig> = vec![];
        for s in doc.sinks {
            if s.name.is_empty() || s.name.len() > 63 {
                return Err(format!(
                    "sink name {:?} must have 1 to 63 characters",
                    s.name
                ));
            }
            if sinks.iter().any(|o| o.name == s.name) {
                return Err(format!("sink {} is named twice", s.name));
            }
            let kind = match (s.slack, s.webhook) {
                (Some(slack), None) => slack_kind(&s.name, slack)?,
                (None, Some(w)) => {
                    http_url(&s.name, &w.url)?;
                    SinkKind::Webhook(w)
                }
                _ => {
                    return Err(format!(
                        "sink {} must have exactly one of slack and webhook",
                        s.name
                    ));
                }
            };
            sinks.push(SinkConfig {
                name: s.name,
                kind,
                namespaces: s.namespaces,
            });
        }
        Ok(Self {
            sinks,
            broken: None,
        })
    }

    /// Whether any sink is configured.
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Every sink.
    pub fn all(&self) -> &[SinkConfig] {
        &self.sinks
    }

    /// The sinks a policy of namespace `ns` names, or why one of them
    /// cannot be used: then nothing is sent for the policy, so that a
    /// mistake is noticed and fixed rather than half-working.
    pub fn resolve<'a>(
        &'a self,
        ns: &str,
        names: &[String],
    ) -> Result<Vec<&'a SinkConfig>, Unavailable> {
        if let Some(why) = &self.broken {
            return Err(Unavailable {
                reason: "SinksFileInvalid",
                message: format!("{why}; the operator's administrator must fix it"),
            });
        }
        let mut out = vec![];
        for name in names {
            let Some(sink) = self.sinks.iter().find(|s| &s.name == name) else {
                let known: Vec<&str> = self.sinks.iter().map(|s| s.name.as_str()).collect();
                return Err(Unavailable {
                    reason: "UnknownSink",
                    message: format!(
                        "spec.notify.sinks names {name:?}, which the operator's sinks file does not hold \
                         (it holds: {}); use one of those, or ask the operator's administrator to add it",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                });
            };
            if !sink.serves(ns) {
                return Err(Unavailable {
                    reason: "SinkNotAllowed",
                    message: format!(
                        "namespace {ns} may not use the sink {name:?}; the operator's administrator \
                         lists the namespaces that may use it in the sinks file (namespaces: [{ns}])"
                    ),
                });
            }
            if !out.contains(&sink) {
                out.push(sink);
            }
        }
        Ok(out)
    }
}

fn slack_kind(name: &str, c: SlackConfig) -> Result<SinkKind, String> {
    match (c.webhook_url, c.bot_token, c.channel) {
        (Some(url), None, None) => {
            http_url(name, &url)?;
            Ok(SinkKind::SlackWebhook { url })
        }
        (None, Some(token), Some(channel)) => {
            let api_url = c
                .api_url
                .unwrap_or_else(|| "https://slack.com/api".to_string());
            http_url(name, &api_url)?;
            Ok(SinkKind::SlackBot {
                token,
                channel,
                api_url: api_url.trim_end_matches('/').to_string(),
            })
        }
        _ => Err(format!(
            "slack sink {name} needs webhookUrl, or botToken and channel"
        )),
    }
}

fn http_url(name: &str, url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("sink {name}: bad URL: {e}"))?;
    match parsed.scheme() {
        "http" | "https" => Ok(()),
        other => Err(format!("sink {name}: URL scheme {other} is not http(s)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "
sinks:
- name: oncall
  slack: {webhookUrl: 'https://hooks.slack.com/services/T/B/X'}
  namespaces: [shop]
- name: events
  webhook: {url: 'http://127.0.0.1:9000/e', headers: {Authorization: Bearer t}}
  namespaces: ['*']
";

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_namespace_uses_only_the_sinks_listed_for_it() {
        let sinks = Sinks::parse(FILE).unwrap();
        let got = sinks
            .resolve("shop", &names(&["oncall", "events"]))
            .unwrap();
        assert_eq!(got.len(), 2);
        let refused = sinks.resolve("other", &names(&["oncall"])).unwrap_err();
        assert_eq!(refused.reason, "SinkNotAllowed");
        assert!(
            refused.message.contains("namespace other may not use"),
            "{}",
            refused.message
        );
        assert_eq!(
            sinks.resolve("other", &names(&["events"])).unwrap().len(),
            1
        );
    }

    #[test]
    fn an_unknown_sink_says_which_ones_exist() {
        let sinks = Sinks::parse(FILE).unwrap();
        let e = sinks.resolve("shop", &names(&["pager"])).unwrap_err();
        assert_eq!(e.reason, "UnknownSink");
        assert!(e.message.contains("oncall, events"), "{}", e.message);
        let none = Sinks::none()
            .resolve("shop", &names(&["pager"]))
            .unwrap_err();
        assert!(none.message.contains("holds: none"), "{}", none.message);
    }

    #[test]
    fn a_broken_file_refuses_every_sink_and_never_prints_a_secret() {
        let sinks = Sinks::parse("sinks:\n- name: x\n  slack: {}\n");
        assert!(sinks.is_err());
        let bad = Sinks::parse("sinks:\n- name: x\n  webhook: {url: 'file:///etc/passwd'}\n");
        assert!(bad.unwrap_err().contains("not http(s)"));
        let dir = std::env::temp_dir().join("sre-space-no-such-sinks-file.yaml");
        let e = Sinks::load(&dir)
            .resolve("shop", &names(&["oncall"]))
            .unwrap_err();
        assert_eq!(e.reason, "SinksFileInvalid");
        let parsed = Sinks::parse(FILE).unwrap();
        let shown = format!("{parsed:?}");
        assert!(
            !shown.contains("hooks.slack.com") && !shown.contains("Bearer"),
            "{shown}"
        );
    }
}
