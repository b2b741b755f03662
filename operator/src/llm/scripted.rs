//! A chat model for unit tests: it answers from a script, in order, and
//! remembers what it was asked, so a test can check both what the Brain did
//! with an answer and what it sent (e.g. that no secret left the cluster).

use std::collections::VecDeque;
use std::sync::Mutex;

use super::{ChatModel, Completion, Message, ModelFailure, ModelFuture};

/// What the model answers to one call.
pub type Turn = Result<Completion, ModelFailure>;

/// Answers each call with the next scripted turn; with the script used up it
/// fails as a server that cannot be reached would.
#[derive(Default)]
pub struct ScriptedModel {
    script: Mutex<VecDeque<Turn>>,
    sent: Mutex<Vec<Vec<Message>>>,
}

impl ScriptedModel {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues an answer with its token usage, as the server would count it.
    pub fn answers(self, content: impl Into<String>, tokens: u64) -> Self {
        self.then(Ok(Completion {
            content: content.into(),
            tokens,
        }))
    }

    /// Queues a failure.
    pub fn fails(self, failure: ModelFailure) -> Self {
        self.then(Err(failure))
    }

    fn then(self, turn: Turn) -> Self {
        if let Ok(mut script) = self.script.lock() {
            script.push_back(turn);
        }
        self
    }

    /// How many times the model was called.
    pub fn calls(&self) -> usize {
        self.sent.lock().map_or(0, |s| s.len())
    }

    /// The conversation of each call, in order.
    pub fn sent(&self) -> Vec<Vec<Message>> {
        self.sent.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Everything sent in all calls, as one text.
    pub fn sent_text(&self) -> String {
        self.sent()
            .iter()
            .flatten()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl ChatModel for ScriptedModel {
    fn complete<'a>(
        &'a self,
        messages: &'a [Message],
        _schema: &'a serde_json::Value,
        _max_tokens: u32,
    ) -> ModelFuture<'a> {
        if let Ok(mut sent) = self.sent.lock() {
            sent.push(messages.to_vec());
        }
        let turn = self
            .script
            .lock()
            .ok()
            .and_then(|mut s| s.pop_front())
            .unwrap_or_else(|| {
                Err(ModelFailure::Unreachable(
                    "the scripted model has no answer left".into(),
                ))
            });
        Box::pin(async move { turn })
    }
}
