//! The tool-call pipeline: one path for every call, direct or from a Code Mode script.
//!
//! lookup -> authorize -> DLP on arguments -> upstream call -> DLP on the result -> audit.
//! Forwarding helpers for the other routed methods (prompts, resources, completion) live here
//! too, so timeouts, cancellation and upstream error handling are the same everywhere.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResponse, CallToolResult,
    CancelledNotificationParam, ClientRequest, JsonObject, ResultType, ServerResult,
};
use rmcp::model::{
    GetPromptRequest, GetPromptRequestParams, GetPromptResponse, ReadResourceRequest,
    ReadResourceRequestParams, ReadResourceResponse, ResourceContents,
};
use rmcp::service::Peer;
use rmcp::service::PeerRequestOptions;
use rmcp::{ErrorData, RoleClient, RoleServer};
use tokio_util::sync::CancellationToken;

use super::{Portal, guardrails};
use crate::audit::{self, Decision, Event};
use crate::dlp::Scope;
use crate::policy::AccessCounters;
use crate::upstream::ProgressRouter;
use crate::upstream::relay::{Downstream, RelayTag, Route};
use crate::upstream::{Link, Upstream};

/// Where a call comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A client's `tools/call`.
    Direct,
    /// A `codemode.<tool>()` call inside a Code Mode execution.
    CodeMode,
}

/// Everything about the caller a call needs.
#[derive(Clone)]
pub struct CallContext {
    /// Cancelled when the client cancels the request or the execution deadline passes.
    pub ct: CancellationToken,
    /// The client's request, where upstream progress, logs, sampling and elicitation for this
    /// call are relayed (`None` for Code Mode's inner calls: nothing is relayed for them).
    pub downstream: Option<Downstream>,
    /// Direct or from Code Mode.
    pub origin: Origin,
    /// Who is calling (set by the auth middleware).
    pub identity: crate::auth::Identity,
    /// The authenticated subject (empty for anonymous callers of public portals).
    pub subject: String,
    /// A short, non-reversible tag of the legacy session, for audit correlation.
    pub session: Option<String>,
}

impl CallContext {
    /// The context of a request handled by the portal's MCP handler.
    pub fn from_request(ctx: &rmcp::service::RequestContext<RoleServer>) -> Self {
        let parts = ctx.extensions.get::<http::request::Parts>();
        let session = parts
            .and_then(|p| p.headers.get("mcp-session-id"))
            .map(|v| session_tag(v.as_bytes()));
        let identity = identity_of(ctx);
        let subject = identity.subject.clone();
        CallContext {
            identity,
            ct: ctx.ct.clone(),
            downstream: Some(downstream_of(ctx)),
            origin: Origin::Direct,
            subject,
            session,
        }
    }
}

impl CallContext {
    /// The route of an upstream request to `server` made for this call, shared: a `Route` is
    /// some hundreds of bytes, and every future that carries it would carry that inline.
    pub fn route(&self, server: &str) -> Option<Arc<Route>> {
        let downstream = self.downstream.clone()?;
        Some(Arc::new(Route::new(
            server,
            downstream,
            self.identity.clone(),
            self.session.clone(),
        )))
    }
}

/// The downstream request behind a request context, for relaying upstream traffic to it.
pub fn downstream_of(ctx: &rmcp::service::RequestContext<RoleServer>) -> Downstream {
    let info = ctx.peer.peer_info();
    // A legacy session declared its capabilities in `initialize`; a 2026-07-28 request carries
    // them in its `_meta`, and cannot be sent requests (input-required results replace them).
    let accepts_requests = info
        .as_ref()
        .is_some_and(|i| i.protocol_version < rmcp::model::ProtocolVersion::V_2026_07_28)
        && ctx.meta.protocol_version().is_none();
    let capabilities = match &info {
        Some(i) if accepts_requests => i.capabilities.clone(),
        _ => ctx.meta.client_capabilities().unwrap_or_default(),
    };
    Downstream {
        peer: ctx.peer.clone(),
        request_id: ctx.id.clone(),
        progress: ctx.meta.get_progress_token(),
        capabilities,
        accepts_requests,
        session: session_id(ctx),
    }
}

/// The legacy session id of a request, if it has one.
pub fn session_id(ctx: &rmcp::service::RequestContext<RoleServer>) -> Option<String> {
    ctx.extensions
        .get::<http::request::Parts>()
        .and_then(|p| p.headers.get("mcp-session-id"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Who is calling: the [`crate::auth::Identity`] the auth middleware put in the HTTP request.
/// Without one (a transport that bypasses the HTTP layer): nobody, who sees nothing.
pub fn identity_of(ctx: &rmcp::service::RequestContext<RoleServer>) -> crate::auth::Identity {
    ctx.extensions
        .get::<http::request::Parts>()
        .and_then(|p| p.extensions.get::<crate::auth::Identity>())
        .cloned()
        .unwrap_or_else(crate::auth::Identity::nobody)
}

/// JSON-RPC error code of a call refused by a rate limit.
pub const RATE_LIMITED: i32 = -32029;

/// A short tag for a session id: enough to correlate audit events, useless to hijack it.
fn session_tag(id: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(id);
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl Origin {
    /// `direct` or `codemode`.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Direct => "direct",
            Origin::CodeMode => "codemode",
        }
    }
}

/// Truncates text for error messages.
pub fn short(s: &str) -> String {
    s.chars().take(300).collect()
}

/// The error for a tool the caller cannot call. Unknown and denied tools look the same.
pub fn unknown_tool(name: &str) -> ErrorData {
    ErrorData::invalid_params(format!("Unknown tool: {}", short(name)), None)
}

impl Portal {
    /// Calls a portal tool through the whole pipeline and writes its audit event — also when
    /// the call is dropped midway (client cancel, Code Mode deadline): the upstream may already
    /// have acted on it.
    pub async fn call_tool(
        &self,
        name: &str,
        mut arguments: Option<JsonObject>,
        request: Option<&CallToolRequestParams>,
        ctx: &CallContext,
    ) -> Result<CallToolResponse, ErrorData> {
        let mut guard = AuditGuard {
            portal: self,
            started: Instant::now(),
            done: false,
            event: Event {
                portal: self.config().name.clone(),
                subject: ctx.subject.clone(),
                session: ctx.session.clone(),
                method: "tools/call".into(),
                tool: Some(short(name)),
                origin: Some(ctx.origin.as_str().into()),
                args_hash: arguments.as_ref().map(audit::object_hash),
                ..Event::default()
            },
        };
        let result = self
            .call_tool_inner(name, &mut arguments, request, ctx, &mut guard.event)
            .await;
        if let Err(e) = &result {
            if guard.event.decision == Decision::Allow {
                guard.event.decision = Decision::Error;
            }
            if guard.event.reason.is_none() {
                guard.event.reason = Some(short(&e.message));
            }
        }
        guard.done = true;
        result
    }

    async fn call_tool_inner(
        &self,
        name: &str,
        arguments: &mut Option<JsonObject>,
        request: Option<&CallToolRequestParams>,
        ctx: &CallContext,
        event: &mut Event,
    ) -> Result<CallToolResponse, ErrorData> {
        let catalog = self.catalog();
        let policy = self.policy();
        let identity = &ctx.identity;
        // A hidden tool gets exactly the answer of an unknown one.
        let Some(tool) = policy.authorize_call(identity, &catalog, name) else {
            if catalog.tool(name).is_some() {
                AccessCounters::inc(&self.counters.calls_denied);
            }
            // A stale client may call a tool of a server that is down: say so plainly, but only
            // to callers who may see that server.
            if let Some(server) = catalog.server_for_name(name)
                && catalog.tool(name).is_none()
                && policy.server_visible(identity, &catalog, server)
                && let Some(up) = self.upstreams.get(server).await
                && let Err(reason) = up.peer()
            {
                event.server = Some(server.to_owned());
                return Err(ErrorData::internal_error(reason, None));
            }
            event.decision = Decision::Deny;
            event.reason = Some("unknown or not visible".into());
            return Err(unknown_tool(name));
        };
        if let Err(limited) = self
            .limiter
            .check(&identity.subject, name, &policy.limits(identity))
        {
            let counter = match limited.scope {
                crate::policy::ratelimit::Scope::Portal => &self.counters.rate_limited_portal,
                crate::policy::ratelimit::Scope::Tool => &self.counters.rate_limited_tool,
            };
            AccessCounters::inc(counter);
            self.metrics.rate_limited.inc();
            event.decision = Decision::Deny;
            event.reason = Some("rate limited".into());
            return Err(ErrorData::new(
                rmcp::model::ErrorCode(RATE_LIMITED),
                limited.to_string(),
                Some(serde_json::json!({"retryAfterMs": limited.retry_after.as_millis() as u64})),
            ));
        }
        AccessCounters::inc(&self.counters.calls_allowed);
        event.server = Some(tool.server.clone());
        event.tool = Some(tool.upstream_name.clone());

        // DLP on arguments, before the upstream sees them.
        let engine = self.dlp_engine(ctx);
        let report =
            guardrails::scan_arguments(&engine, arguments, &tool.server, &tool.upstream_name);
        event.detectors = report.detector_counts();
        self.observe_findings(&report);
        if report.is_blocked() {
            event.decision = Decision::Block;
            event.reason = report
                .blocked_by
                .clone()
                .map(|r| format!("dlp rule {r} (arguments)"));
            return Err(guardrails::blocked_error(&report, "request"));
        }

        let mut params = CallToolRequestParams::new(tool.upstream_name.clone());
        params.arguments = arguments.take();
        if let Some(r) = request {
            params.input_responses = r.input_responses.clone();
            params.request_state = r.request_state.clone();
        }
        let signed = self.signed_identity(&tool.server, identity)?;
        let upstream_started = Instant::now();
        let progress = ctx.route(&tool.server);
        let router = self.upstreams.progress().clone();
        // A stateless upstream gets the call as one POST from this task, unless the caller
        // wants progress (rmcp routes it) or the tool needs headers only rmcp computes.
        // 2026-07-28 upstreams send no server requests; their logs are relayed either way.
        let direct = tool.direct
            && progress
                .as_ref()
                .is_none_or(|r| r.downstream.progress.is_none());
        let response = self
            .forward_link(&tool.server, &ctx.ct, async move |link| {
                let answer = match link.direct.filter(|_| direct) {
                    Some(client) => client.call_tool(params, signed, progress).await,
                    None => {
                        let mut request = CallToolRequest::new(params);
                        if let Some(signed) = signed {
                            request.extensions.insert(signed);
                        }
                        let request = ClientRequest::CallToolRequest(request);
                        // Boxed: rmcp's request future is several KiB, and kept inline it
                        // would make every direct call's future (which axum boxes and copies
                        // per request) that much larger too.
                        Box::pin(send_routed(&link.peer, request, progress, &router)).await
                    }
                };
                answer.and_then(call_tool_response)
            })
            .await;
        event.upstream_ms = Some(upstream_started.elapsed().as_secs_f64() * 1000.0);
        let response = response?;

        // DLP on the result, before the client sees it.
        let CallToolResponse::Complete(result) = response else {
            return Ok(response);
        };
        let (result, report) = guardrails::scan(
            &engine,
            result,
            Scope::Results,
            &tool.server,
            &tool.upstream_name,
        )?;
        self.observe_findings(&report);
        for (k, v) in report.detector_counts() {
            *event.detectors.entry(k).or_default() += v;
        }
        if report.is_blocked() {
            event.decision = Decision::Block;
            event.reason = report
                .blocked_by
                .clone()
                .map(|r| format!("dlp rule {r} (result)"));
            return Err(guardrails::blocked_error(&report, "result"));
        }
        if result.is_error == Some(true) {
            event.reason = Some("tool returned isError".into());
        }
        let mut result = result;
        // Legacy upstreams send no resultType; 2026-07-28 clients require it (rmcp drops it
        // again for legacy clients).
        result.result_type = Some(ResultType::COMPLETE);
        Ok(CallToolResponse::Complete(result))
    }

    fn observe_call(&self, event: &Event) {
        let m = &self.metrics;
        let server = event.server.clone().unwrap_or_default();
        let outcome = match event.decision {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Block => "block",
            Decision::Error => "error",
        };
        m.request(&server, "tools/call", outcome);
        if event.decision == Decision::Deny {
            m.policy_denials
                .get_or_create(&crate::metrics::ServerLabels {
                    server: server.clone(),
                })
                .inc();
        }
        let labels = crate::metrics::ServerLabels { server };
        m.call_duration
            .get_or_create(&labels)
            .observe(event.duration_ms / 1000.0);
        if let Some(up) = event.upstream_ms {
            m.upstream_duration
                .get_or_create(&labels)
                .observe(up / 1000.0);
            m.overhead_duration
                .observe(((event.duration_ms - up) / 1000.0).max(0.0));
        }
    }

    pub(super) fn observe_findings(&self, report: &crate::dlp::Report) {
        for f in &report.findings {
            let action = match f.action {
                crds::policy::DlpAction::Log => "log",
                crds::policy::DlpAction::Redact => "redact",
                crds::policy::DlpAction::Block => "block",
            };
            self.metrics
                .dlp_findings
                .get_or_create(&crate::metrics::DlpLabels {
                    detector: f.detector.to_string(),
                    action: action.into(),
                })
                .inc();
        }
    }

    /// `prompts/get` through the pipeline: forwarded, then DLP on the result.
    pub async fn get_prompt(
        &self,
        prompt: &super::catalog::PortalPrompt,
        request: GetPromptRequestParams,
        ctx: &CallContext,
    ) -> Result<GetPromptResponse, ErrorData> {
        let mut params = GetPromptRequestParams::new(prompt.upstream_name.clone());
        params.arguments = request.arguments;
        params.input_responses = request.input_responses;
        let mut request = GetPromptRequest::new(params);
        if let Some(signed) = self.signed_identity(&prompt.server, &ctx.identity)? {
            request.extensions.insert(signed);
        }
        let progress = ctx.route(&prompt.server);
        let router = self.upstreams.progress().clone();
        let answer = self
            .forward(&prompt.server, &ctx.ct, async move |peer| {
                let request = ClientRequest::GetPromptRequest(request);
                send_routed(&peer, request, progress, &router).await
            })
            .await?;
        match answer {
            ServerResult::GetPromptResult(r) => {
                let engine = self.dlp_engine(ctx);
                let (mut r, report) = guardrails::scan(
                    &engine,
                    r,
                    Scope::Results,
                    &prompt.server,
                    &prompt.upstream_name,
                )?;
                self.observe_findings(&report);
                if report.is_blocked() {
                    return Err(guardrails::blocked_error(&report, "prompt"));
                }
                r.result_type = Some(ResultType::COMPLETE);
                Ok(GetPromptResponse::Complete(r))
            }
            ServerResult::InputRequiredResult(r) => Ok(GetPromptResponse::InputRequired(r)),
            _ => Err(ErrorData::internal_error(
                format!(
                    "upstream {} answered prompts/get with something else",
                    prompt.server
                ),
                None,
            )),
        }
    }

    /// `resources/read` through the pipeline: routed by URI, content URIs rewritten back to
    /// the portal's form, DLP on the contents.
    pub async fn read_resource(
        &self,
        catalog: &super::Catalog,
        server: String,
        uri: String,
        request: ReadResourceRequestParams,
        ctx: &CallContext,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let mut params = ReadResourceRequestParams::new(uri.clone());
        params.input_responses = request.input_responses;
        let mut request = ReadResourceRequest::new(params);
        if let Some(signed) = self.signed_identity(&server, &ctx.identity)? {
            request.extensions.insert(signed);
        }
        let progress = ctx.route(&server);
        let router = self.upstreams.progress().clone();
        let answer = self
            .forward(&server, &ctx.ct, async move |peer| {
                let request = ClientRequest::ReadResourceRequest(request);
                send_routed(&peer, request, progress, &router).await
            })
            .await?;
        match answer {
            ServerResult::ReadResourceResult(mut r) => {
                for c in &mut r.contents {
                    match c {
                        ResourceContents::TextResourceContents { uri, .. }
                        | ResourceContents::BlobResourceContents { uri, .. } => {
                            *uri = catalog.portal_uri(&server, uri);
                        }
                        _ => {}
                    }
                }
                let engine = self.dlp_engine(ctx);
                let (mut r, report) = guardrails::scan(&engine, r, Scope::Results, &server, &uri)?;
                self.observe_findings(&report);
                if report.is_blocked() {
                    return Err(guardrails::blocked_error(&report, "resource"));
                }
                r.result_type = Some(ResultType::COMPLETE);
                Ok(ReadResourceResponse::Complete(r))
            }
            ServerResult::InputRequiredResult(r) => Ok(ReadResourceResponse::InputRequired(r)),
            _ => Err(ErrorData::internal_error(
                format!("upstream {server} answered resources/read with something else"),
                None,
            )),
        }
    }

    /// The caller's signed identity for `server`, when that server opted in (`spec.identity`)
    /// and the caller is authenticated. It rides in the request's extensions, which are never
    /// serialized: only the HTTP transport of that server turns it into its header.
    pub fn signed_identity(
        &self,
        server: &str,
        identity: &crate::auth::Identity,
    ) -> Result<Option<crate::identity::SignedIdentity>, ErrorData> {
        let cfg = self.config();
        let Some(wanted) = cfg
            .servers
            .iter()
            .find(|s| s.name == server)
            .and_then(|s| s.identity.as_ref())
        else {
            return Ok(None);
        };
        let Some(signer) = &cfg.identity_signer else {
            // `config::resolve` refuses this combination; never send an unsigned identity.
            return Err(ErrorData::internal_error(
                "the portal has no identity signing key",
                None,
            ));
        };
        match signer.sign(identity, server, wanted) {
            Ok(token) => Ok(token.map(crate::identity::SignedIdentity)),
            Err(e) => {
                tracing::error!(upstream = %server, error = %e, "cannot sign the caller's identity");
                Err(ErrorData::internal_error(
                    "the portal could not sign the caller's identity",
                    None,
                ))
            }
        }
    }

    /// The DLP engine for the caller.
    pub fn dlp_engine(&self, ctx: &CallContext) -> Arc<crate::dlp::Engine> {
        self.guardrails()
            .engine(|p| crate::policy::covers(p, &ctx.identity))
    }

    /// Writes an audit event, when auditing is on.
    pub fn audit(&self, event: Event) {
        if let Some(log) = &self.audit {
            log.log(event);
        }
    }

    /// Resolves an upstream by McpServer name to a callable link and its timeout.
    async fn upstream(
        &self,
        server: &str,
    ) -> Result<(Link, Duration, std::sync::Arc<Upstream>), ErrorData> {
        let up = self.upstreams.get(server).await.ok_or_else(|| {
            ErrorData::internal_error(format!("upstream {server} is not configured"), None)
        })?;
        let link = up.link().map_err(|e| ErrorData::internal_error(e, None))?;
        Ok((link, up.config.timeout, up))
    }

    /// Whether an upstream advertises completions.
    pub async fn supports_completions(&self, server: &str) -> Result<bool, ErrorData> {
        let (link, _, _) = self.upstream(server).await?;
        Ok(link
            .peer
            .peer_info()
            .is_some_and(|i| i.capabilities.completions.is_some()))
    }

    /// Forwards one request upstream with the server's timeout and the caller's cancellation.
    pub async fn forward<T>(
        &self,
        server: &str,
        ct: &CancellationToken,
        call: impl AsyncFnOnce(Peer<RoleClient>) -> Result<T, rmcp::ServiceError>,
    ) -> Result<T, ErrorData> {
        self.forward_link(server, ct, async move |link: Link| call(link.peer).await)
            .await
    }

    /// [`Portal::forward`] for callers that may use the direct `tools/call` client: the one
    /// place where upstream timeouts, cancellation and error mapping happen.
    async fn forward_link<T>(
        &self,
        server: &str,
        ct: &CancellationToken,
        call: impl AsyncFnOnce(Link) -> Result<T, rmcp::ServiceError>,
    ) -> Result<T, ErrorData> {
        let (link, timeout, up) = self.upstream(server).await?;
        tokio::select! {
            // Dropping the call future ends the request upstream: rmcp sends
            // notifications/cancelled to legacy-era upstreams, and a stateless upstream (either
            // path) sees its HTTP exchange closed.
            _ = ct.cancelled() => Err(ErrorData::internal_error("request cancelled", None)),
            r = tokio::time::timeout(timeout, call(link)) => match r {
                Err(_) => Err(ErrorData::internal_error(
                    format!("upstream {server} did not answer within {}s", timeout.as_secs()),
                    None,
                )),
                Ok(Ok(v)) => Ok(v),
                Ok(Err(rmcp::ServiceError::McpError(e))) => Err(e),
                Ok(Err(e)) => {
                    up.report_broken();
                    tracing::warn!(upstream = %server, error = %e, "upstream request failed");
                    // Transport details (URLs, types) go to the log, not to the client.
                    Err(ErrorData::internal_error(
                        format!("upstream {server} failed to answer; try again later"),
                        None,
                    ))
                }
            }
        }
    }
}

/// Writes a call's audit event and metrics when it is dropped: on completion with the final
/// event, or midway (client cancel, Code Mode deadline) as `error`, "cancelled before
/// completion" — the upstream may already have acted on the call.
struct AuditGuard<'a> {
    portal: &'a Portal,
    started: Instant,
    done: bool,
    event: Event,
}

impl Drop for AuditGuard<'_> {
    fn drop(&mut self) {
        let mut event = std::mem::take(&mut self.event);
        event.duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        if !self.done {
            event.decision = Decision::Error;
            event.reason = Some("cancelled before completion".into());
        }
        self.portal.observe_call(&event);
        self.portal.audit(event);
    }
}

/// Sends a request upstream on `route`: progress the upstream reports for it is relayed to the
/// caller, and so are the server requests and log messages the transport can associate with it
/// ([`crate::upstream::relay`]).
///
/// rmcp's client puts its own progress token on every request, so the progress route is keyed
/// by the token of the request actually sent. Dropping the future before the answer (client
/// cancel, deadline) tells the upstream with `notifications/cancelled`.
pub async fn send_routed(
    peer: &Peer<RoleClient>,
    mut request: ClientRequest,
    route: Option<Arc<Route>>,
    router: &Arc<ProgressRouter>,
) -> Result<ServerResult, rmcp::ServiceError> {
    use rmcp::model::GetExtensions;
    if let Some(route) = &route {
        request.extensions_mut().insert(RelayTag(route.clone()));
    }
    // Relayed requests still waiting for the caller stop when this request ends.
    let _done = route.as_ref().map(|r| r.done().clone().drop_guard());
    let handle = peer
        .send_request_with_option(request, PeerRequestOptions::no_options())
        .await?;
    let _progress = route.as_ref().and_then(|r| {
        let token = r.downstream.progress.clone()?;
        Some(router.register(
            &r.server,
            handle.progress_token.clone(),
            token,
            r.downstream.peer.clone(),
        ))
    });
    let mut guard = CancelOnDrop {
        peer: peer.clone(),
        id: Some(handle.id.clone()),
    };
    let result = handle.await_response().await;
    guard.id = None;
    // Progress and logs the upstream sent before its answer reach the caller before it.
    if let Some(route) = &route {
        route.settle(RELAY_SETTLE).await;
    }
    result
}

/// Longest wait for notifications that arrived before an answer to be relayed.
const RELAY_SETTLE: Duration = Duration::from_millis(500);

struct CancelOnDrop {
    peer: Peer<RoleClient>,
    id: Option<rmcp::model::RequestId>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let peer = self.peer.clone();
            tokio::spawn(async move {
                let params = CancelledNotificationParam::new(
                    Some(id),
                    Some("cancelled by the portal's client".into()),
                );
                let _ = peer.notify_cancelled(params).await;
            });
        }
    }
}

/// Maps a `tools/call` answer the way rmcp's `call_tool_once` does.
pub fn call_tool_response(result: ServerResult) -> Result<CallToolResponse, rmcp::ServiceError> {
    match result {
        ServerResult::CallToolResult(r) => Ok(CallToolResponse::Complete(r)),
        ServerResult::InputRequiredResult(r) => Ok(CallToolResponse::InputRequired(r)),
        ServerResult::CreateTaskResult(r) => Ok(CallToolResponse::Task(r)),
        // Some servers answer a content-less tool with an empty object.
        ServerResult::EmptyResult(_) => {
            Ok(CallToolResponse::Complete(CallToolResult::success(vec![])))
        }
        _ => Err(rmcp::ServiceError::UnexpectedResponse),
    }
}
