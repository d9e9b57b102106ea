//! Code Mode in the portal: which clients get it, and how its tools reach the pipeline.
//!
//! The sandbox itself is [`crate::codemode`]. Here: the mode a request asked for
//! (`?codemode=search_and_execute` or the portal default; `?codemode=off` opts out), the tool
//! list search sees (the caller's visible tools, from the same function `tools/list` uses), and
//! the [`ToolInvoker`] whose every call is [`Portal::call_tool`] — the same authorization, DLP,
//! upstream call and audit as a direct `tools/call`.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use rmcp::model::{CallToolResponse, CallToolResult, JsonObject};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};
use serde_json::Value;

use super::Portal;
use super::context::{CallContext, Origin};
use crate::catalog::PortalTool;
use crate::codemode::{self, EXECUTE_TOOL, Limits, SEARCH_TOOL, ToolInfo, ToolInvoker};

/// Most Code Mode executions running at once in one process (each holds an OS thread).
pub const MAX_CONCURRENT_EXECUTIONS: usize = 32;

/// Whether the request that `ctx` belongs to is in Code Mode.
pub fn requested(portal: &Portal, ctx: &RequestContext<RoleServer>) -> bool {
    let default = portal
        .config()
        .spec
        .code_mode
        .as_ref()
        .is_some_and(|c| c.default);
    let query = ctx
        .extensions
        .get::<http::request::Parts>()
        .and_then(|p| p.uri.query().map(str::to_owned));
    let Some(query) = query else {
        return default;
    };
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix("codemode=") {
            return match v {
                "search_and_execute" | "on" | "true" => true,
                "off" | "false" | "none" => false,
                _ => default,
            };
        }
    }
    default
}

/// Whether `name` is one of the two Code Mode tools.
pub fn is_code_mode_tool(name: &str) -> bool {
    name == SEARCH_TOOL || name == EXECUTE_TOOL
}

fn tool_info(t: &PortalTool) -> ToolInfo {
    ToolInfo {
        name: t.tool.name.to_string(),
        description: t.tool.description.as_ref().map(|d| d.to_string()),
        input_schema: Value::Object((*t.tool.input_schema).clone()),
        output_schema: t
            .tool
            .output_schema
            .as_ref()
            .map(|s| Value::Object((**s).clone())),
        annotations: t
            .tool
            .annotations
            .as_ref()
            .and_then(|a| serde_json::to_value(a).ok()),
    }
}

struct PortalInvoker {
    portal: Arc<Portal>,
    ctx: CallContext,
}

impl ToolInvoker for PortalInvoker {
    fn call_tool(
        &self,
        name: String,
        arguments: Value,
    ) -> BoxFuture<'static, Result<Value, String>> {
        let portal = self.portal.clone();
        let ctx = self.ctx.clone();
        async move {
            let args: Option<JsonObject> = match arguments {
                Value::Object(m) => Some(m),
                Value::Null => None,
                _ => return Err("tool arguments must be an object".to_owned()),
            };
            match portal.call_tool(&name, args, None, &ctx).await {
                Ok(CallToolResponse::Complete(r)) => {
                    serde_json::to_value(r).map_err(|_| "tool result is not JSON".to_owned())
                }
                Ok(_) => Err(format!(
                    "{name} asked for client input or started a task, which Code Mode cannot provide; call it directly"
                )),
                Err(e) => Err(e.message.to_string()),
            }
        }
        .boxed()
    }
}

/// Runs one of the two Code Mode tools for the caller.
pub async fn call(
    portal: &Arc<Portal>,
    name: &str,
    arguments: Option<JsonObject>,
    visible: Vec<PortalTool>,
    ctx: &CallContext,
) -> Result<CallToolResponse, ErrorData> {
    let code = arguments
        .as_ref()
        .and_then(|a| a.get("code"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ErrorData::invalid_params(
                "`code` (a string: an async arrow function) is required",
                None,
            )
        })?
        .to_owned();
    let limits = Limits::from_spec(portal.config().spec.code_mode.as_ref());
    let tools: Vec<ToolInfo> = visible.iter().map(tool_info).collect();
    let _permit = portal
        .executions
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ErrorData::internal_error("portal is shutting down", None))?;
    let started = std::time::Instant::now();
    let outcome = if name == SEARCH_TOOL {
        codemode::search(&code, &tools, &limits).await
    } else {
        let invoker = Arc::new(PortalInvoker {
            portal: portal.clone(),
            ctx: CallContext {
                // Inner calls stop when the client cancels the execute request.
                ct: ctx.ct.child_token(),
                downstream: None,
                origin: Origin::CodeMode,
                identity: ctx.identity.clone(),
                subject: ctx.subject.clone(),
                session: ctx.session.clone(),
            },
        });
        tokio::select! {
            o = codemode::execute(&code, &tools, invoker, &limits) => o,
            _ = ctx.ct.cancelled() => return Err(ErrorData::internal_error("request cancelled", None)),
        }
    };
    if let Some(limit) = &outcome.limit_hit {
        tracing::info!(tool = name, ?limit, "code mode limit hit");
    }
    let result_label = match (&outcome.limit_hit, &outcome.error) {
        (Some(l), _) => format!("{l:?}").to_lowercase(),
        (None, Some(_)) => "error".into(),
        (None, None) => "ok".into(),
    };
    portal
        .metrics
        .codemode_executions
        .get_or_create(&crate::metrics::CodeModeLabels {
            tool: if name == SEARCH_TOOL {
                "search"
            } else {
                "execute"
            }
            .into(),
            outcome: result_label,
        })
        .inc();
    portal.audit(crate::audit::Event {
        portal: portal.config().name.clone(),
        subject: ctx.subject.clone(),
        session: ctx.session.clone(),
        method: "tools/call".into(),
        tool: Some(name.to_owned()),
        origin: Some("direct".into()),
        decision: if outcome.error.is_some() {
            crate::audit::Outcome::Error
        } else {
            crate::audit::Outcome::Allow
        },
        reason: outcome.limit_hit.as_ref().map(|l| format!("limit: {l:?}")),
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        args_hash: Some(crate::audit::args_hash(&Value::String(code.clone()))),
        ..Default::default()
    });
    let result: CallToolResult = codemode::outcome_to_call_result(&outcome);
    Ok(CallToolResponse::Complete(result))
}
