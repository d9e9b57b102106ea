//! The provider client: one request to one target, with the target's key and timeout. The
//! client's own headers never go out: each request is built from the target's configuration
//! alone (content type, the provider's key header, Anthropic's version).

use std::time::Duration;

use bytes::Bytes;
use crds::llm::LlmProvider;
use serde_json::Value;

use super::routes::{Failure, fails_over};
use super::{Dialect, anthropic};
use crate::config::LlmTargetConfig;

/// Largest provider answer read whole (a non-streamed response or an error body).
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// The HTTP client of the gateway (pooled; TCP_NODELAY; the process's TLS settings).
pub fn client() -> reqwest::Client {
    crate::tls::client_builder()
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap_or_default()
}

/// The dialect a provider speaks.
pub fn dialect(p: LlmProvider) -> Dialect {
    match p {
        LlmProvider::Anthropic => Dialect::Anthropic,
        _ => Dialect::OpenAi,
    }
}

/// The endpoint of a target.
pub fn url(t: &LlmTargetConfig) -> String {
    match t.provider {
        LlmProvider::Anthropic => format!("{}/v1/messages", t.base_url),
        _ => format!("{}/chat/completions", t.base_url),
    }
}

/// What one attempt gave.
#[derive(Debug)]
pub enum Attempt {
    /// A non-streamed answer the client gets (2xx, or a 4xx that is not the gateway's to
    /// retry), read whole.
    Answer {
        /// HTTP status.
        status: u16,
        /// The body.
        body: Bytes,
    },
    /// A 2xx streamed answer, headers received; the body is still to be read.
    Stream(reqwest::Response),
    /// A failure that moves on to the next target; `retry_after` from a 429/529.
    Failed {
        /// How it failed.
        failure: Failure,
        /// The provider's `Retry-After`, if any.
        retry_after: Option<String>,
    },
}

/// Sends `body` to `target`: `stream` when the caller asked for a stream (then a 2xx answer is
/// returned unread). The target's timeout covers the answer's headers and, unstreamed, its body.
pub async fn send(
    client: &reqwest::Client,
    target: &LlmTargetConfig,
    body: &Value,
    stream: bool,
) -> Attempt {
    let mut req = client
        .post(url(target))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(body).expect("JSON values serialize"));
    if let Some(key) = &target.api_key {
        req = match target.provider {
            LlmProvider::Anthropic => req.header("x-api-key", key),
            LlmProvider::AzureOpenAi => req.header("api-key", key),
            LlmProvider::OpenAi | LlmProvider::OpenAiCompatible => req.bearer_auth(key),
        };
    }
    if target.provider == LlmProvider::Anthropic {
        req = req.header("anthropic-version", anthropic::VERSION);
    }
    if stream {
        req = req.header(http::header::ACCEPT, "text/event-stream");
    }
    let work = async {
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(target = %target.describe(), error = %e, "LLM provider unreachable");
                return Attempt::Failed {
                    failure: Failure::Connect,
                    retry_after: None,
                };
            }
        };
        let status = resp.status().as_u16();
        if fails_over(status) {
            let retry_after = resp
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            return Attempt::Failed {
                failure: Failure::Status(status),
                retry_after,
            };
        }
        if stream && (200..300).contains(&status) {
            return Attempt::Stream(resp);
        }
        match read_bounded(resp).await {
            Some(body) => Attempt::Answer { status, body },
            None => Attempt::Failed {
                failure: Failure::Connect,
                retry_after: None,
            },
        }
    };
    match tokio::time::timeout(target.timeout, work).await {
        Ok(a) => a,
        Err(_) => Attempt::Failed {
            failure: Failure::Timeout,
            retry_after: None,
        },
    }
}

/// The body of `resp`, refused (`None`) past [`MAX_ANSWER_BYTES`] or on a broken connection.
async fn read_bounded(mut resp: reqwest::Response) -> Option<Bytes> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.ok()? {
        if out.len() + chunk.len() > MAX_ANSWER_BYTES {
            return None;
        }
        out.extend_from_slice(&chunk);
    }
    Some(out.into())
}
