//! The tool-call pipeline: one path for every call, direct or from a Code Mode script.
//!
//! lookup -> authorize -> DLP on arguments -> inspection of arguments -> upstream call -> DLP
//! on the result -> inspection of the result -> audit.
//! Prompts and resources take the same steps that apply to them. Who is calling is the
//! [`CallContext`] (`context`); reaching the upstream is `forward`.

use std::sync::Arc;
use std::time::Instant;

use rmcp::ErrorData;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResponse, ClientRequest, JsonObject,
    ResultType, ServerResult,
};
use rmcp::model::{
    GetPromptRequest, GetPromptRequestParams, GetPromptResponse, ReadResourceRequest,
    ReadResourceRequestParams, ReadResourceResponse, ResourceContents,
};

use super::context::CallContext;
use super::forward::{call_tool_response, send_routed};
use super::{Portal, guardrails};
use crate::audit::{self, Event, Outcome};
use crate::dlp::Scope;
use crate::inspect;

/// JSON-RPC error code of a call refused by a rate limit.
pub const RATE_LIMITED: i32 = -32029;

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
            if guard.event.decision == Outcome::Allow {
                guard.event.decision = Outcome::Error;
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
            // A stale client may call a tool of a server that is down: say so plainly, but only
            // to callers who may see that server.
            if let Some(server) = catalog.server_for_name(name)
                && catalog.tool(name).is_none()
                && policy.server_visible(identity, &catalog, server)
                && let Some(up) = self.upstreams.get(server).await
                && let Err(reason) = up.peer()
            {
                event.server = Some(server.to_owned());
                return Err(ErrorData::internal_error(reason.to_string(), None));
            }
            event.decision = Outcome::Deny;
            // The audit log names the rule and selector that hid a tool (the client only ever
            // hears "unknown").
            event.reason = Some(match catalog.tool(name) {
                Some(t) => crate::policy::access::reason(&policy.tool_access(identity, t)),
                None => "unknown or not visible".into(),
            });
            return Err(unknown_tool(name));
        };
        let checked = self
            .limiter
            .check(&identity.subject, name, &policy.limits(identity))
            .await;
        if let Some(e) = &checked.store_error {
            self.metrics.rate_limit_store_errors.inc();
            tracing::warn!(error = %e, "rate-limit store unavailable; spec.rateLimitStore.onUnavailable decides");
        }
        if let Err(limited) = checked.result {
            self.metrics.rate_limited.inc();
            event.decision = Outcome::Deny;
            event.reason = Some("rate limited".into());
            return Err(ErrorData::new(
                rmcp::model::ErrorCode(RATE_LIMITED),
                limited.to_string(),
                Some(serde_json::json!({"retryAfterMs": limited.retry_after.as_millis() as u64})),
            ));
        }
        event.server = Some(tool.server.clone());
        event.tool = Some(tool.upstream_name.clone());
        if let Some(refusal) = self.unrecorded_call_refusal() {
            event.decision = Outcome::Error;
            event.reason = Some("audit log not recording".into());
            return Err(refusal);
        }

        // DLP on arguments, before the upstream sees them.
        let engine = self.dlp_engine(ctx);
        let report =
            guardrails::scan_arguments(&engine, arguments, &tool.server, &tool.upstream_name);
        event.detectors = report.detector_counts();
        self.observe_findings(&report);
        if report.is_blocked() {
            event.decision = Outcome::Block;
            event.reason = report
                .blocked_by
                .clone()
                .map(|r| format!("dlp rule {r} (arguments)"));
            return Err(guardrails::blocked_error(&report, "request"));
        }
        // Inspection on arguments (after any redaction).
        let inspector = self.inspector(ctx);
        let report =
            guardrails::inspect_arguments(&inspector, arguments, &tool.server, &tool.upstream_name);
        self.observe_inspection(&report, inspect::Scope::Arguments, event);
        if report.is_blocked() {
            event.decision = Outcome::Block;
            event.reason = report
                .blocked_by
                .clone()
                .map(|r| format!("inspection rule {r} (arguments)"));
            return Err(guardrails::inspection_blocked_error(&report, "request"));
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
            event.decision = Outcome::Block;
            event.reason = report
                .blocked_by
                .clone()
                .map(|r| format!("dlp rule {r} (result)"));
            return Err(guardrails::blocked_error(&report, "result"));
        }
        let (result, report) = guardrails::inspect(
            &inspector,
            result,
            inspect::Scope::Results,
            &tool.server,
            inspect::Target::Tool(&tool.upstream_name),
        )?;
        self.observe_inspection(&report, inspect::Scope::Results, event);
        if report.is_blocked() {
            event.decision = Outcome::Block;
            event.reason = report
                .blocked_by
                .clone()
                .map(|r| format!("inspection rule {r} (result)"));
            return Err(guardrails::inspection_blocked_error(&report, "result"));
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
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Block => "block",
            Outcome::Error => "error",
        };
        m.request(&server, "tools/call", outcome);
        if event.decision == Outcome::Deny {
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

    /// Counts an inspection report (each rule once per scanned message, shadow rules too) and
    /// records its acting findings in `event`.
    pub(super) fn observe_inspection(
        &self,
        report: &inspect::Report,
        dir: inspect::Scope,
        event: &mut Event,
    ) {
        let mut counted: Vec<(&str, &str)> = Vec::new();
        for f in report.findings.iter().chain(&report.shadow) {
            if counted.contains(&(&*f.policy, &*f.rule)) {
                continue;
            }
            counted.push((&f.policy, &f.rule));
            self.metrics
                .inspection_hits
                .get_or_create(&crate::metrics::InspectionLabels {
                    rule: f.rule.to_string(),
                    action: f.action.id().into(),
                    direction: dir.id().into(),
                    shadow: f.shadow.to_string(),
                })
                .inc();
        }
        for f in &report.findings {
            if event.inspection.len() >= audit::MAX_INSPECTION_FINDINGS {
                break;
            }
            event.inspection.push(audit::InspectionFinding {
                policy: f.policy.to_string(),
                rule: f.rule.to_string(),
                detector: f.detector.id().into(),
                signal: f
                    .topic
                    .as_deref()
                    .map_or_else(|| f.signal.id().to_owned(), str::to_owned),
                score: f.score,
                action: f.action.id().into(),
                direction: dir.id().into(),
                path: f.path.clone(),
            });
        }
    }

    /// Inspects a prompt or resource result; writes an audit event when a rule acted (these
    /// methods have no audit event of their own otherwise). `Err` when a block rule fired.
    fn inspect_result<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        ctx: &CallContext,
        value: T,
        server: &str,
        target: inspect::Target<'_>,
        method: &str,
        what: &str,
    ) -> Result<T, ErrorData> {
        let inspector = self.inspector(ctx);
        let (value, report) =
            guardrails::inspect(&inspector, value, inspect::Scope::Results, server, target)?;
        let mut event = Event {
            portal: self.config().name.clone(),
            subject: ctx.subject.clone(),
            session: ctx.session.clone(),
            method: method.into(),
            server: Some(server.to_owned()),
            tool: Some(short(target.name())),
            origin: Some(ctx.origin.as_str().into()),
            ..Event::default()
        };
        self.observe_inspection(&report, inspect::Scope::Results, &mut event);
        if report.findings.is_empty() {
            return Ok(value);
        }
        let blocked = report.is_blocked();
        if blocked {
            event.decision = Outcome::Block;
            event.reason = report
                .blocked_by
                .clone()
                .map(|r| format!("inspection rule {r} (result)"));
        }
        self.audit(event);
        if blocked {
            return Err(guardrails::inspection_blocked_error(&report, what));
        }
        Ok(value)
    }

    /// `prompts/get` through the pipeline: forwarded, then DLP on the result.
    pub async fn get_prompt(
        &self,
        prompt: &crate::catalog::PortalPrompt,
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
                let (r, report) = guardrails::scan(
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
                let mut r = self.inspect_result(
                    ctx,
                    r,
                    &prompt.server,
                    inspect::Target::Prompt(&prompt.upstream_name),
                    "prompts/get",
                    "prompt",
                )?;
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
        catalog: &crate::catalog::Catalog,
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
                let (r, report) = guardrails::scan(&engine, r, Scope::Results, &server, &uri)?;
                self.observe_findings(&report);
                if report.is_blocked() {
                    return Err(guardrails::blocked_error(&report, "resource"));
                }
                let mut r = self.inspect_result(
                    ctx,
                    r,
                    &server,
                    inspect::Target::Resource(&uri),
                    "resources/read",
                    "resource",
                )?;
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
        identity: &crate::model::Identity,
    ) -> Result<Option<crate::model::SignedIdentity>, ErrorData> {
        let cfg = self.config();
        let Some(wanted) = cfg
            .servers
            .iter()
            .find(|s| s.name == server)
            .and_then(|s| s.identity.as_ref())
        else {
            return Ok(None);
        };
        let Some(signer) = self.signer() else {
            // `config::resolve` refuses this combination; never send an unsigned identity.
            return Err(ErrorData::internal_error(
                "the portal has no identity signing key",
                None,
            ));
        };
        match signer.sign(identity, server, wanted) {
            Ok(token) => Ok(token.map(crate::model::SignedIdentity)),
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

    /// The inspection engine for the caller.
    pub fn inspector(&self, ctx: &CallContext) -> Arc<crate::inspect::Engine> {
        self.guardrails()
            .inspector(|p| crate::policy::covers(p, &ctx.identity))
    }

    /// The error a tool call gets while the audit log cannot record it, under
    /// `spec.audit.onFailure: failClosed` (the default): the upstream never sees a call that
    /// would go unaudited. `None` when the log records, when there is none, or under
    /// `failOpen`.
    fn unrecorded_call_refusal(&self) -> Option<ErrorData> {
        let log = self.audit.as_ref()?;
        if log.recording() {
            return None;
        }
        let cfg = self.config();
        let mode = cfg
            .spec
            .audit
            .as_ref()
            .and_then(|a| a.on_failure)
            .unwrap_or_default();
        (mode == crds::portal::AuditFailureMode::FailClosed).then(|| {
            ErrorData::internal_error(
                "the audit log cannot be written: tool calls are refused until it can record them (spec.audit.onFailure: failClosed)",
                None,
            )
        })
    }

    /// Writes an audit event, when auditing is on.
    pub fn audit(&self, event: Event) {
        if let Some(log) = &self.audit {
            log.log(event);
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
            event.decision = Outcome::Error;
            event.reason = Some("cancelled before completion".into());
        }
        self.portal.observe_call(&event);
        self.portal.audit(event);
    }
}
