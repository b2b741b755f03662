//! Slack: an incoming webhook (one message per batch of events; it cannot
//! edit what it posted) or the Web API with a bot token (one message per
//! incident, posted once with `chat.postMessage` and then kept current with
//! `chat.update`). Every outside text is escaped for Slack's mrkdwn, so
//! nothing in an incident can ping a channel, mention someone or hide a
//! link.

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::json;

use super::{Outgoing, Pacing, Sink, SinkError, http_client};
use crate::crd::NotifyEvent;

/// Escapes outside text for a Slack mrkdwn message: `&`, `<` and `>` as
/// Slack asks (so `<!channel>`, `<@U123>` and `<url|label>` stay text), a
/// broadcast word broken so it cannot notify, and backticks and asterisks
/// (which would restyle the message) made plain.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '`' => out.push('\''),
            '*' | '_' | '~' => out.push(' '),
            c if c.is_control() && c != '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    for word in ["channel", "here", "everyone"] {
        let lower = out.to_ascii_lowercase();
        let needle = format!("@{word}");
        if lower.contains(&needle) {
            let mut fixed = String::with_capacity(out.len() + 8);
            let mut rest = out.as_str();
            while let Some(at) = rest.to_ascii_lowercase().find(&needle) {
                fixed.push_str(&rest[..=at]);
                // A zero-width space: shown the same, never a broadcast.
                fixed.push('\u{200B}');
                rest = &rest[at + 1..];
            }
            fixed.push_str(rest);
            out = fixed;
        }
    }
    out
}

fn title(m: &Outgoing) -> String {
    let s = &m.subject;
    format!(
        "*SRE-Space incident `{}`* ({} of {}): {:?}",
        escape(&s.path()),
        escape(&s.signal),
        escape(&s.target),
        s.phase
    )
}

fn line(event: NotifyEvent, text: &str) -> String {
    format!("• *{}*: {}", event.as_str(), escape(text))
}

fn link(m: &Outgoing) -> Option<String> {
    // Our own URL (the operator's setting), but still kept from closing
    // the link early.
    m.subject
        .link
        .as_ref()
        .map(|l| format!("<{}|Open in the dashboard>", l.replace(['<', '>', '|'], "")))
}

/// The text of one batch: the incident, then each new event.
pub fn batch_text(m: &Outgoing) -> String {
    let mut lines = vec![title(m)];
    lines.extend(m.notices.iter().map(|n| line(n.event, &n.text)));
    lines.extend(link(m));
    lines.join("\n")
}

/// The text of the incident's one message: the incident, then its story
/// so far.
pub fn story_text(m: &Outgoing) -> String {
    let mut lines = vec![title(m)];
    lines.extend(m.history.iter().map(|n| line(n.event, &n.text)));
    lines.extend(link(m));
    lines.join("\n")
}

/// A Slack incoming webhook.
pub struct SlackWebhook {
    url: String,
    http: reqwest::Client,
}

impl SlackWebhook {
    pub fn new(url: &str) -> Result<Self, String> {
        Ok(Self {
            url: url.to_string(),
            http: http_client()?,
        })
    }
}

impl Sink for SlackWebhook {
    fn pacing(&self) -> Pacing {
        // It cannot edit: events close together become one message, and an
        // incident never posts more than one message every 10 s.
        Pacing {
            coalesce: Duration::from_secs(3),
            min_interval: Duration::from_secs(10),
            batches: true,
        }
    }

    fn send<'a>(
        &'a self,
        m: &'a Outgoing,
        _thread: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<String>, SinkError>> {
        Box::pin(async move {
            let body =
                json!({ "text": batch_text(m), "unfurl_links": false, "unfurl_media": false });
            let response = self
                .http
                .post(&self.url)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .map_err(SinkError::unreachable)?;
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            if status.is_success() {
                Ok(None)
            } else {
                Err(SinkError::status(status.as_u16(), &text))
            }
        })
    }
}

/// Slack's Web API with a bot token.
pub struct SlackBot {
    token: String,
    channel: String,
    api_url: String,
    http: reqwest::Client,
}

impl SlackBot {
    pub fn new(token: &str, channel: &str, api_url: &str) -> Result<Self, String> {
        Ok(Self {
            token: token.to_string(),
            channel: channel.to_string(),
            api_url: api_url.trim_end_matches('/').to_string(),
            http: http_client()?,
        })
    }

    async fn call(
        &self,
        method: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, SinkError> {
        let response = self
            .http
            .post(format!("{}/{method}", self.api_url))
            .bearer_auth(&self.token)
            .header("content-type", "application/json; charset=utf-8")
            .body(body.to_string())
            .send()
            .await
            .map_err(SinkError::unreachable)?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(SinkError::status(status.as_u16(), &text));
        }
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| SinkError::retry(format!("Slack answered {method} with no JSON: {e}")))?;
        if v["ok"] == true {
            return Ok(v);
        }
        let error = v["error"].as_str().unwrap_or("unknown_error").to_string();
        // Slack's own words for a passing trouble; anything else (a bad
        // token, a channel the bot is not in) will not mend by retrying.
        let passing = matches!(
            error.as_str(),
            "ratelimited"
                | "rate_limited"
                | "internal_error"
                | "fatal_error"
                | "service_unavailable"
                | "request_timeout"
        );
        let message = format!("Slack {method}: {error}");
        Err(if passing {
            SinkError::retry(message)
        } else {
            SinkError::fatal(message)
        })
    }
}

impl Sink for SlackBot {
    fn pacing(&self) -> Pacing {
        // One message, edited: close events become one edit.
        Pacing {
            coalesce: Duration::from_secs(2),
            min_interval: Duration::from_secs(1),
            batches: true,
        }
    }

    fn send<'a>(
        &'a self,
        m: &'a Outgoing,
        thread: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<String>, SinkError>> {
        Box::pin(async move {
            let text = story_text(m);
            if let Some(ts) = thread {
                let updated = self
                    .call(
                        "chat.update",
                        json!({ "channel": self.channel, "ts": ts, "text": text }),
                    )
                    .await;
                match updated {
                    Ok(_) => return Ok(Some(ts.to_string())),
                    // Deleted by someone: post it again.
                    Err(e) if e.message.contains("message_not_found") => {}
                    Err(e) => return Err(e),
                }
            }
            let v = self
                .call(
                    "chat.postMessage",
                    json!({ "channel": self.channel, "text": text, "unfurl_links": false }),
                )
                .await?;
            Ok(v["ts"].as_str().map(str::to_string))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attacker_markup_stays_text() {
        let e = escape("<!channel> see <https://evil.example|docs> & @here `rm` *bold*");
        assert!(!e.contains('<') && !e.contains('>'), "{e}");
        assert!(e.contains("&lt;!channel&gt;"), "{e}");
        assert!(e.contains("&amp;"), "{e}");
        assert!(!e.contains("@here"), "{e}");
        assert!(!e.contains('`') && !e.contains('*'), "{e}");
        assert!(
            !escape("ping @Channel now")
                .to_lowercase()
                .contains("@channel")
        );
    }
}
