//! The `openai` backend: any OpenAI-compatible chat-completions server (OpenAI, OpenRouter,
//! vLLM, Ollama, llama.cpp server) through async-openai.
//!
//! async-openai builds and parses the requests; underneath it runs our own HTTP service, which
//! applies the per-call timeout and turns 429 and 5xx responses into typed transient errors
//! (with `Retry-After`), so the agent layer decides about retries and records each one.

use std::sync::Once;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestUserMessage, CreateChatCompletionRequest, FinishReason, ResponseFormat,
    ResponseFormatJsonSchema,
};

use super::backend::{Backend, BackendError, BoxFuture, OutputMode, Reply, Request, Role, Usage};
use super::secret::Secret;

/// The `openai` backend.
pub struct OpenAiBackend {
    client: Client<OpenAIConfig>,
    base_url: String,
    timeout: Duration,
}

impl OpenAiBackend {
    /// A client for `base_url` (e.g. `https://api.openai.com/v1`, `http://localhost:11434/v1`).
    pub fn new(base_url: &str, api_key: Option<&Secret>, timeout: Duration) -> Result<Self, BackendError> {
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(15)))
            .build()
            .map_err(|e| BackendError::Fatal { detail: format!("building the HTTP client: {e}") })?;
        let config = OpenAIConfig::new()
            .with_api_base(base_url.trim_end_matches('/'))
            .with_api_key(api_key.map(Secret::expose).unwrap_or_default());
        let client = Client::with_config(config).with_http_service(Classify { http });
        Ok(Self { client, base_url: base_url.to_string(), timeout })
    }
}

fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Another part of the process may have installed one already; either is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl Backend for OpenAiBackend {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn complete<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Reply, BackendError>> {
        Box::pin(async move {
            let body = chat_request(request, self.base_url.contains("api.openai.com"));
            let response = self.client.chat().create(body).await.map_err(|e| self.classify(e, request))?;
            let usage = response
                .usage
                .as_ref()
                .map(|u| Usage {
                    prompt_tokens: u64::from(u.prompt_tokens),
                    completion_tokens: u64::from(u.completion_tokens),
                })
                .unwrap_or_default();
            let Some(choice) = response.choices.into_iter().next() else {
                return Err(BackendError::Transient {
                    detail: "the server returned no choices".into(),
                    retry_after: None,
                });
            };
            let content = choice.message.content.or(choice.message.refusal).unwrap_or_default();
            Ok(Reply {
                content,
                usage,
                model: response.model,
                finish_reason: choice.finish_reason.map(|r| finish_reason(&r).to_string()),
            })
        })
    }
}

impl OpenAiBackend {
    fn classify(&self, error: OpenAIError, request: &Request) -> BackendError {
        match error {
            OpenAIError::Boxed(boxed) => match boxed.downcast::<HttpStatus>() {
                Ok(status) => BackendError::Transient {
                    detail: format!(
                        "HTTP {} from {}: {}",
                        status.status,
                        self.base_url,
                        excerpt(&status.body)
                    ),
                    retry_after: status.retry_after,
                },
                Err(other) => BackendError::Transient { detail: other.to_string(), retry_after: None },
            },
            OpenAIError::Reqwest(e) if e.is_timeout() => BackendError::Transient {
                detail: format!("no answer from {} within {:?}", self.base_url, self.timeout),
                retry_after: None,
            },
            OpenAIError::Reqwest(e) if e.is_connect() => BackendError::Transient {
                detail: format!("cannot connect to {}: {}", self.base_url, root_cause(&e)),
                retry_after: None,
            },
            OpenAIError::Reqwest(e) => BackendError::Transient {
                detail: format!("the response from {} broke off: {}", self.base_url, root_cause(&e)),
                retry_after: None,
            },
            OpenAIError::JSONDeserialize(e, body) => BackendError::Transient {
                detail: format!("malformed response body ({e}): {}", excerpt(&body)),
                retry_after: None,
            },
            OpenAIError::ApiError(api) => {
                let status = api.status_code.as_u16();
                let message = api.api_error.message.clone();
                if (status == 400 || status == 413) && too_long(&message) {
                    return BackendError::ContextTooLong {
                        detail: format!("HTTP {status}: {}", excerpt(&message)),
                    };
                }
                let about_format = {
                    let m = message.to_ascii_lowercase();
                    m.contains("response_format")
                        || m.contains("json_schema")
                        || m.contains("structured output")
                };
                if matches!(request.mode, OutputMode::JsonSchema { .. })
                    && (status == 400 || status == 422)
                    && about_format
                {
                    return BackendError::SchemaUnsupported {
                        detail: format!("HTTP {status}: {}", excerpt(&message)),
                    };
                }
                let what = match status {
                    401 | 403 => "the server rejected the API key",
                    404 => "the model or endpoint was not found",
                    _ => "the server rejected the request",
                };
                BackendError::Fatal {
                    detail: format!(
                        "{what} (HTTP {status} from {}, model `{}`): {}",
                        self.base_url,
                        request.model,
                        excerpt(&message)
                    ),
                }
            }
            other => BackendError::Fatal { detail: other.to_string() },
        }
    }
}

/// Whether a server's message says the request exceeds the model's context (OpenAI, vLLM,
/// llama.cpp, Ollama, OpenRouter word it differently).
fn too_long(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "context length",
        "context_length",
        "maximum context",
        "context size",
        "context window",
        "too many tokens",
        "prompt is too long",
        "input is too long",
        "reduce the length",
        "exceeds the",
        "too long",
    ]
    .iter()
    .any(|p| m.contains(p))
        && !m.contains("json_schema")
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn excerpt(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > 300 {
        format!("{}...", flat.chars().take(300).collect::<String>())
    } else {
        flat
    }
}

fn finish_reason(reason: &FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::FunctionCall => "function_call",
    }
}

// OpenAI marks `seed` deprecated, but vLLM, llama.cpp and others still honour it.
#[expect(deprecated)]
fn chat_request(request: &Request, openai_itself: bool) -> CreateChatCompletionRequest {
    // The clock note (time left, run times) follows the conversation as a last user message;
    // it is kept out of `messages` so that a replay, whose timing differs, asks the same.
    let clock = request.clock_note.as_ref().map(|note| super::backend::Message::user(note.clone()));
    let messages = request
        .messages
        .iter()
        .chain(clock.as_ref())
        .map(|m| match m.role {
            Role::System => ChatCompletionRequestMessage::System(ChatCompletionRequestSystemMessage {
                content: m.content.clone().into(),
                name: None,
            }),
            Role::User => ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage {
                content: m.content.clone().into(),
                name: None,
            }),
            Role::Assistant => {
                ChatCompletionRequestMessage::Assistant(ChatCompletionRequestAssistantMessage {
                    content: Some(m.content.clone().into()),
                    ..Default::default()
                })
            }
        })
        .collect();
    let response_format = match request.mode {
        OutputMode::JsonSchema { strict } => Some(ResponseFormat::JsonSchema {
            json_schema: ResponseFormatJsonSchema {
                description: None,
                name: request.schema_name.clone(),
                schema: request.schema.clone(),
                strict: Some(strict),
            },
        }),
        OutputMode::Prompt => None,
    };
    CreateChatCompletionRequest {
        messages,
        model: request.model.clone(),
        response_format,
        temperature: request.temperature,
        // OpenAI's newer models accept only `max_completion_tokens`; OpenAI-compatible
        // servers (llama.cpp, vLLM, Ollama) read `max_tokens`.
        max_completion_tokens: request.max_tokens.filter(|_| openai_itself),
        max_tokens: request.max_tokens.filter(|_| !openai_itself),
        seed: request.seed,
        ..Default::default()
    }
}

/// A 429 or 5xx, stopped before async-openai reads it, so its `Retry-After` survives.
#[derive(Debug)]
struct HttpStatus {
    status: u16,
    retry_after: Option<Duration>,
    body: String,
}

impl std::fmt::Display for HttpStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.status, excerpt(&self.body))
    }
}

impl std::error::Error for HttpStatus {}

/// The HTTP service under async-openai: sends, and classifies retryable statuses.
#[derive(Clone)]
struct Classify {
    http: reqwest::Client,
}

impl tower::Service<HttpRequestFactory> for Classify {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future = BoxFuture<'static, Result<reqwest::Response, OpenAIError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, factory: HttpRequestFactory) -> Self::Future {
        let http = self.http.clone();
        Box::pin(async move {
            let request = factory.build().await?;
            let response = http.execute(request).await.map_err(OpenAIError::Reqwest)?;
            let status = response.status();
            if status.as_u16() == 429 || status.is_server_error() {
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                let body = response.text().await.unwrap_or_default();
                return Err(OpenAIError::Boxed(Box::new(HttpStatus {
                    status: status.as_u16(),
                    retry_after,
                    body,
                })));
            }
            Ok(response)
        })
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = httpdate_parse(value)?;
    Some(when.duration_since(SystemTime::now()).unwrap_or_default())
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form servers send.
fn httpdate_parse(value: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = value.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        .iter()
        .position(|m| m == month)? as u32
        + 1;
    let text = format!("{year}-{month:02}-{day:0>2}T{time}Z");
    humantime::parse_rfc3339(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_errors_are_recognised() {
        assert!(too_long("This model's maximum context length is 8192 tokens."));
        assert!(too_long("the request exceeds the available context size, try increasing it"));
        assert!(!too_long("response_format json_schema is not supported"));
        assert!(!too_long("invalid model"));
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
