//! Relaying a provider's event stream to the caller, event by event: as it came when both
//! speak the same API, translated otherwise. Usage is read on the way (an OpenAI provider is
//! always asked for its usage chunk, which is dropped when the caller did not ask for it).
//! A caller that goes away ends the relay and the provider's stream with it.

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, header};
use serde_json::Value;

use super::translate::{AnthropicToOpenAi, OpenAiToAnthropic};
use super::{Dialect, Record, Usage, anthropic, openai};
use crate::audit::Outcome;

/// Largest event accepted from a provider.
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// How provider events become caller events.
#[derive(Debug)]
pub enum Xform {
    /// OpenAI to OpenAI: events as they came, the usage chunk only if the caller asked for it.
    OpenAiPass {
        /// The caller asked for the usage chunk.
        include_usage: bool,
        /// Reported so far.
        usage: Option<Usage>,
        /// `[DONE]` was relayed.
        done: bool,
    },
    /// Anthropic to Anthropic: events as they came.
    AnthropicPass {
        /// Reported so far.
        usage: Option<Usage>,
        /// `message_stop` was relayed.
        done: bool,
    },
    /// Anthropic provider, OpenAI caller.
    ToOpenAi(AnthropicToOpenAi),
    /// OpenAI provider, Anthropic caller.
    ToAnthropic(OpenAiToAnthropic),
}

impl Xform {
    /// The relay for a `caller` and a `target` dialect.
    pub fn new(caller: Dialect, target: Dialect, include_usage: bool) -> Xform {
        match (caller, target) {
            (Dialect::OpenAi, Dialect::OpenAi) => Xform::OpenAiPass {
                include_usage,
                usage: None,
                done: false,
            },
            (Dialect::Anthropic, Dialect::Anthropic) => Xform::AnthropicPass {
                usage: None,
                done: false,
            },
            (Dialect::OpenAi, Dialect::Anthropic) => {
                Xform::ToOpenAi(AnthropicToOpenAi::new(include_usage))
            }
            (Dialect::Anthropic, Dialect::OpenAi) => {
                Xform::ToAnthropic(OpenAiToAnthropic::default())
            }
        }
    }

    fn caller(&self) -> Dialect {
        match self {
            Xform::OpenAiPass { .. } | Xform::ToOpenAi(_) => Dialect::OpenAi,
            Xform::AnthropicPass { .. } | Xform::ToAnthropic(_) => Dialect::Anthropic,
        }
    }

    /// One provider event, appending the caller's frames to `out`.
    pub fn event(&mut self, ev: &sse::Event, out: &mut Vec<u8>) {
        let data: Option<Value> = serde_json::from_str(&ev.data).ok();
        match self {
            Xform::OpenAiPass {
                include_usage,
                usage,
                done,
            } => {
                if ev.data.trim() == "[DONE]" {
                    *done = true;
                    out.extend_from_slice(openai::DONE);
                    return;
                }
                let Some(v) = data else { return };
                if let Some(u) = openai::usage(&v) {
                    *usage = Some(u);
                    let only_usage = v
                        .get("choices")
                        .and_then(Value::as_array)
                        .is_some_and(Vec::is_empty);
                    if only_usage && !*include_usage {
                        return;
                    }
                }
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(ev.data.as_bytes());
                out.extend_from_slice(b"\n\n");
            }
            Xform::AnthropicPass { usage, done } => {
                if let Some(v) = &data {
                    match v.get("type").and_then(Value::as_str) {
                        Some("message_start") => {
                            *usage = v.get("message").and_then(anthropic::usage)
                        }
                        Some("message_delta") => {
                            let u = usage.get_or_insert_default();
                            if let Some(o) =
                                v.pointer("/usage/output_tokens").and_then(Value::as_u64)
                            {
                                u.output = o;
                            }
                        }
                        Some("message_stop") => *done = true,
                        _ => {}
                    }
                }
                out.extend_from_slice(b"event: ");
                out.extend_from_slice(ev.event.as_deref().unwrap_or("message").as_bytes());
                out.extend_from_slice(b"\ndata: ");
                out.extend_from_slice(ev.data.as_bytes());
                out.extend_from_slice(b"\n\n");
            }
            Xform::ToOpenAi(t) => {
                if let Some(v) = data {
                    t.event(&v, out);
                }
            }
            Xform::ToAnthropic(t) => {
                if ev.data.trim() == "[DONE]" {
                    t.finish(out);
                } else if let Some(v) = data {
                    t.chunk(&v, out);
                }
            }
        }
    }

    /// Whether the provider's stream ended properly.
    fn complete(&self) -> bool {
        match self {
            Xform::OpenAiPass { done, .. } | Xform::AnthropicPass { done, .. } => *done,
            Xform::ToOpenAi(t) => t.finished(),
            Xform::ToAnthropic(t) => t.finished(),
        }
    }

    /// An error event in the caller's format (the stream broke).
    fn abort(&self, message: &str, out: &mut Vec<u8>) {
        match self.caller() {
            Dialect::OpenAi => openai::frame(
                out,
                &openai::error_body(super::ErrorKind::Api, message, None),
            ),
            Dialect::Anthropic => anthropic::frame(
                out,
                "error",
                &anthropic::error_body(super::ErrorKind::Api, message),
            ),
        }
    }

    /// An error event in the caller's format: a DLP rule blocked the completion (OpenAI
    /// `content_filter`, Anthropic `permission_error`).
    fn abort_dlp(&self, message: &str, out: &mut Vec<u8>) {
        match self.caller() {
            Dialect::OpenAi => openai::frame(
                out,
                &openai::error_body(
                    super::ErrorKind::Permission,
                    message,
                    Some("content_filter"),
                ),
            ),
            Dialect::Anthropic => anthropic::frame(
                out,
                "error",
                &anthropic::error_body(super::ErrorKind::Permission, message),
            ),
        }
    }

    /// An error event in the caller's format: the stream crossed its hard budget
    /// (OpenAI `insufficient_quota`, Anthropic `rate_limit_error`).
    fn abort_budget(&self, message: &str, out: &mut Vec<u8>) {
        match self.caller() {
            Dialect::OpenAi => openai::frame(out, &openai::quota_error_body(message)),
            Dialect::Anthropic => anthropic::frame(
                out,
                "error",
                &anthropic::error_body(super::ErrorKind::RateLimit, message),
            ),
        }
    }

    /// The usage reported so far.
    pub fn usage(&self) -> Option<Usage> {
        match self {
            Xform::OpenAiPass { usage, .. } | Xform::AnthropicPass { usage, .. } => *usage,
            Xform::ToOpenAi(t) => Some(t.usage).filter(|u| *u != Usage::default()),
            Xform::ToAnthropic(t) => Some(t.usage).filter(|u| *u != Usage::default()),
        }
    }
}

/// What the relay learned of a stream, for its settlement.
#[derive(Debug, Clone, Copy, Default)]
pub struct Metered {
    /// Completion tokens counted (tiktoken) in the deltas received from the provider.
    pub counted_output: u64,
    /// The stream was ended because it crossed its hard budget.
    pub capped: bool,
    /// The provider's stream ended properly.
    pub complete: bool,
    /// When the first completion text reached the caller, from the call's start.
    pub first_token: Option<std::time::Duration>,
    /// The gateway's own time: before the first provider attempt, plus processing the
    /// provider's events (decoding, translating, metering, DLP).
    pub overhead: std::time::Duration,
}

/// When the call started and how long the gateway took before the first provider attempt.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// The call's start.
    pub started: std::time::Instant,
    /// Gateway time before the first provider attempt.
    pub before_provider: std::time::Duration,
}

/// The most completion tokens a stream may carry before it is ended (its reservation under a
/// hard budget).
#[derive(Debug, Clone, Copy)]
pub struct Cap {
    /// Completion tokens reserved.
    pub output: u64,
}

/// Relays `resp` through `xform` as a `text/event-stream` answer; `done` gets the call's
/// record (and what was metered) when the stream ends or the caller leaves. With a `cap`, the
/// completion tokens of the provider's deltas are counted as they arrive; the event that would
/// take them past the cap is not relayed, and the stream ends with an error event in the
/// caller's format (the provider's stream is dropped with it).
#[allow(clippy::too_many_arguments)]
pub(super) fn relay<F, Fut>(
    mut resp: reqwest::Response,
    mut xform: Xform,
    mut rec: Record,
    cap: Option<Cap>,
    meter: bool,
    mut guard: Option<super::guard::StreamGuard>,
    timing: Timing,
    done: F,
) -> Response
where
    F: FnOnce(Record, Metered, Outcome, Option<String>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let mut decoder = sse::Decoder::new(MAX_EVENT_BYTES);
        let mut events = Vec::new();
        let mut out = Vec::new();
        let mut failure: Option<String> = None;
        let mut gone = false;
        let mut metered = Metered {
            overhead: timing.before_provider,
            ..Metered::default()
        };
        let mut blocked: Option<super::guard::Blocked> = None;
        let mut frames = Vec::new();
        let mut text_seen = false;
        loop {
            let next = resp.chunk().await;
            let t0 = std::time::Instant::now();
            match next {
                Ok(Some(chunk)) => {
                    if let Err(e) = decoder.feed(&chunk, &mut events) {
                        failure = Some(format!("provider stream refused: {e}"));
                    }
                }
                Ok(None) => break,
                Err(e) => failure = Some(format!("provider stream broke: {e}")),
            }
            for ev in events.drain(..) {
                if meter || cap.is_some() {
                    if let Ok(v) = serde_json::from_str::<Value>(&ev.data) {
                        let text = super::budget::estimate::delta_text(&v);
                        metered.counted_output += super::budget::estimate::tokens(&text);
                    }
                    let reported = xform.usage().map_or(0, |u| u.output);
                    if let Some(c) = cap
                        && metered.counted_output.max(reported) > c.output
                    {
                        metered.capped = true;
                        failure = Some(format!(
                            "the stream was ended: it reached the {} completion tokens its budget allowed",
                            c.output
                        ));
                        break;
                    }
                }
                if !text_seen && let Ok(v) = serde_json::from_str::<Value>(&ev.data) {
                    text_seen = !super::budget::estimate::delta_text(&v).is_empty();
                }
                match guard.as_mut() {
                    None => xform.event(&ev, &mut out),
                    Some(g) => {
                        frames.clear();
                        xform.event(&ev, &mut frames);
                        if let Err(b) = g.filter(&frames, &mut out) {
                            failure = Some(b.message("the answer was"));
                            blocked = Some(b);
                            break;
                        }
                    }
                }
            }
            metered.overhead += t0.elapsed();
            if failure.is_some() {
                break;
            }
            if metered.first_token.is_none()
                && text_seen
                && guard.as_ref().is_none_or(|g| g.released_any())
                && !out.is_empty()
            {
                metered.first_token = Some(timing.started.elapsed());
            }
            if !out.is_empty()
                && tx
                    .send(Bytes::from(std::mem::take(&mut out)))
                    .await
                    .is_err()
            {
                gone = true;
                break;
            }
        }
        metered.complete = xform.complete();
        if !gone {
            if failure.is_none() && !xform.complete() {
                failure = Some("the provider's stream ended early".into());
            }
            if let Some(f) = &failure {
                if blocked.is_some() {
                    xform.abort_dlp(f, &mut out);
                } else if metered.capped {
                    xform.abort_budget(f, &mut out);
                } else {
                    xform.abort(f, &mut out);
                }
            }
            if !out.is_empty() {
                let _ = tx.send(Bytes::from(out)).await;
            }
        }
        rec.usage = xform.usage();
        if let Some(g) = guard {
            rec.findings.merge(g.found);
        }
        let (outcome, reason) = match (gone, failure) {
            (true, _) => (
                Outcome::Error,
                Some("the caller left during the stream".into()),
            ),
            (false, Some(_)) if blocked.is_some() => {
                (Outcome::Block, blocked.as_ref().map(|b| b.reason("answer")))
            }
            (false, Some(f)) => (Outcome::Error, Some(f)),
            (false, None) => (Outcome::Allow, None),
        };
        done(rec, metered, outcome, reason).await;
    });
    let body = axum::body::Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    }));
    let mut resp = (http::StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
