//! Stateful test doubles of the outside systems notifications reach: a sink
//! that behaves like Slack (a webhook that can only post, or a bot whose
//! messages are edited in place) or a CloudEvents receiver, and can be made
//! to fail; and a recorder that keeps what would go into the status.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;

use super::deliver::Recorder;
use super::{Outgoing, Pacing, Sink, SinkError};
use crate::crd::NotificationRecord;

/// How the double behaves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Behaves {
    /// A Slack incoming webhook: every delivery a new message.
    SlackWebhook,
    /// A Slack bot: the first delivery posts, later ones edit that message.
    SlackBot,
    /// A CloudEvents receiver: one event per delivery.
    CloudEvents,
}

/// A message as the receiver holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub id: String,
    /// The event keys it carries, the latest edit's for a bot.
    pub keys: Vec<String>,
    pub text: String,
    pub edits: usize,
}

#[derive(Default)]
struct State {
    messages: Vec<Message>,
    attempts: usize,
    fail_next: usize,
    fatal: bool,
}

/// A receiver that remembers what it was sent.
pub struct FakeSink {
    behaves: Behaves,
    pacing: Pacing,
    state: Mutex<State>,
}

impl FakeSink {
    pub fn new(behaves: Behaves, pacing: Pacing) -> Self {
        Self {
            behaves,
            pacing,
            state: Mutex::new(State::default()),
        }
    }

    /// Fails the next `n` deliveries (retryable unless `fatal`).
    pub fn fail_next(&self, n: usize, fatal: bool) {
        let mut s = self.state.lock().unwrap();
        s.fail_next = n;
        s.fatal = fatal;
    }

    pub fn messages(&self) -> Vec<Message> {
        self.state.lock().unwrap().messages.clone()
    }

    pub fn attempts(&self) -> usize {
        self.state.lock().unwrap().attempts
    }
}

/// Pacing for tests, in milliseconds.
pub fn pacing(coalesce_ms: u64, min_interval_ms: u64, batches: bool) -> Pacing {
    Pacing {
        coalesce: Duration::from_millis(coalesce_ms),
        min_interval: Duration::from_millis(min_interval_ms),
        batches,
    }
}

impl Sink for FakeSink {
    fn pacing(&self) -> Pacing {
        self.pacing
    }

    fn send<'a>(
        &'a self,
        m: &'a Outgoing,
        thread: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<String>, SinkError>> {
        Box::pin(async move {
            let mut s = self.state.lock().unwrap();
            s.attempts += 1;
            if s.fail_next > 0 {
                s.fail_next -= 1;
                return Err(if s.fatal {
                    SinkError::fatal("invalid_auth")
                } else {
                    SinkError::retry("the sink answered 503")
                });
            }
            let keys: Vec<String> = m.notices.iter().map(|n| n.key.clone()).collect();
            match (self.behaves, thread) {
                (Behaves::SlackBot, Some(ts)) => {
                    let Some(msg) = s.messages.iter_mut().find(|x| x.id == ts) else {
                        return Err(SinkError::fatal("message_not_found"));
                    };
                    msg.keys = m.history.iter().map(|n| n.key.clone()).collect();
                    msg.text = super::slack::story_text(m);
                    msg.edits += 1;
                    Ok(Some(ts.to_string()))
                }
                (behaves, _) => {
                    let id = format!("m{}", s.messages.len() + 1);
                    let text = match behaves {
                        Behaves::SlackBot => super::slack::story_text(m),
                        Behaves::SlackWebhook => super::slack::batch_text(m),
                        Behaves::CloudEvents => m
                            .notices
                            .iter()
                            .map(|n| super::webhook::cloud_event(m, n).to_string())
                            .collect::<Vec<_>>()
                            .join("\n"),
                    };
                    s.messages.push(Message {
                        id: id.clone(),
                        keys,
                        text,
                        edits: 0,
                    });
                    Ok(Some(id))
                }
            }
        })
    }
}

/// Keeps what the delivery task records, per incident.
#[derive(Default)]
pub struct MemoryRecorder(Mutex<BTreeMap<String, Vec<NotificationRecord>>>);

impl MemoryRecorder {
    pub fn records(&self, ns: &str, name: &str) -> Vec<NotificationRecord> {
        self.0
            .lock()
            .unwrap()
            .get(&format!("{ns}/{name}"))
            .cloned()
            .unwrap_or_default()
    }
}

impl Recorder for MemoryRecorder {
    fn record<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        records: Vec<NotificationRecord>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let mut all = self.0.lock().unwrap();
            let list = all.entry(format!("{namespace}/{name}")).or_default();
            super::notifier::merge(list, records);
            Ok(())
        })
    }
}
