//! Any OpenAI-compatible chat completions endpoint (OpenAI, vLLM, Ollama,
//! llama.cpp's server), through async-openai, with structured output.

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestMessage,
    ChatCompletionRequestSystemMessage, ChatCompletionRequestUserMessage,
    CreateChatCompletionRequestArgs, FinishReason, ResponseFormat, ResponseFormatJsonSchema,
};

use super::{ChatModel, Completion, LlmConfig, Message, ModelFailure, ModelFuture, Role};

/// The real model client.
pub struct OpenAiModel {
    client: async_openai::Client<OpenAIConfig>,
    model: String,
    timeout: std::time::Duration,
}

impl OpenAiModel {
    pub fn new(config: &LlmConfig) -> crate::Result<Self> {
        // The same TLS crypto provider as the Kubernetes client; installing
        // it again is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut c = OpenAIConfig::new().with_api_base(config.base_url.trim_end_matches('/'));
        // A local server needs no key; the client then sends none.
        c = c.with_api_key(config.api_key.clone().unwrap_or_default());
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| crate::Error::Config(format!("building the model's HTTP client: {e}")))?;
        Ok(Self {
            client: async_openai::Client::with_config(c).with_http_client(http),
            model: config.model.clone(),
            timeout: config.timeout,
        })
    }
}

fn failure(e: OpenAIError) -> ModelFailure {
    match e {
        OpenAIError::ApiError(api) => {
            let text = api.to_string();
            match api.status_code.as_u16() {
                429 => ModelFailure::RateLimited(text),
                c if c >= 500 => ModelFailure::ServerError(text),
                _ => ModelFailure::ClientError(text),
            }
        }
        OpenAIError::Reqwest(e) if e.is_timeout() => {
            ModelFailure::Unreachable(format!("timed out: {e}"))
        }
        OpenAIError::Reqwest(e) => match e.status() {
            Some(s) if s.as_u16() == 429 => ModelFailure::RateLimited(e.to_string()),
            Some(s) if s.is_server_error() => ModelFailure::ServerError(e.to_string()),
            _ => ModelFailure::Unreachable(e.to_string()),
        },
        OpenAIError::JSONDeserialize(e, _) => {
            ModelFailure::InvalidAnswer(format!("the server's reply is not a chat completion: {e}"))
        }
        other => ModelFailure::ServerError(other.to_string()),
    }
}

impl ChatModel for OpenAiModel {
    fn complete<'a>(
        &'a self,
        messages: &'a [Message],
        schema: &'a serde_json::Value,
        max_tokens: u32,
    ) -> ModelFuture<'a> {
        Box::pin(async move {
            let messages: Vec<ChatCompletionRequestMessage> = messages
                .iter()
                .map(|m| match m.role {
                    Role::System => {
                        ChatCompletionRequestSystemMessage::from(m.content.as_str()).into()
                    }
                    Role::User => ChatCompletionRequestUserMessage::from(m.content.as_str()).into(),
                    Role::Assistant => {
                        ChatCompletionRequestAssistantMessage::from(m.content.as_str()).into()
                    }
                })
                .collect();
            let request = CreateChatCompletionRequestArgs::default()
                .model(self.model.clone())
                .messages(messages)
                .max_completion_tokens(max_tokens)
                .temperature(0.0)
                .response_format(ResponseFormat::JsonSchema {
                    json_schema: ResponseFormatJsonSchema {
                        name: "diagnosis".into(),
                        description: Some(
                            "Ranked root-cause hypotheses for a Kubernetes incident".into(),
                        ),
                        schema: schema.clone(),
                        strict: Some(false),
                    },
                })
                .build()
                .map_err(|e| ModelFailure::ClientError(e.to_string()))?;
            let response = tokio::time::timeout(self.timeout, self.client.chat().create(request))
                .await
                .map_err(|_| ModelFailure::Timeout(self.timeout))?
                .map_err(failure)?;
            let tokens = response
                .usage
                .as_ref()
                .map(|u| u64::from(u.total_tokens))
                .unwrap_or(0);
            let choice = response
                .choices
                .into_iter()
                .next()
                .ok_or(ModelFailure::Empty)?;
            if let Some(refusal) = choice.message.refusal.filter(|r| !r.is_empty()) {
                return Err(ModelFailure::Refused(refusal));
            }
            if choice.finish_reason == Some(FinishReason::Length) {
                return Err(ModelFailure::Truncated);
            }
            let content = choice
                .message
                .content
                .filter(|c| !c.trim().is_empty())
                .ok_or(ModelFailure::Empty)?;
            Ok(Completion { content, tokens })
        })
    }
}
