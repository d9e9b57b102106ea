//! Code Mode: two tools (`portal_codemode_search`, `portal_codemode_execute`) that let a model
//! write a small JavaScript program against the caller's tools instead of reading the whole
//! tool list and calling tools one by one.
//!
//! Each script runs in a fresh QuickJS runtime and context (rquickjs) on a dedicated OS thread
//! (QuickJS is `!Send`), with:
//! - a heap cap ([`Limits::memory_bytes`]) and a stack cap ([`Limits::stack_bytes`]);
//! - a CPU deadline measured as the thread's CPU time and enforced by the interrupt handler;
//! - a wall-clock deadline that ends the script, aborts the tokio tasks running its in-flight
//!   tool calls (dropping their futures) and drops queued calls;
//! - caps on tool calls (hard: exceeding it ends the execution), concurrent tool calls (extra
//!   calls wait in a FIFO queue and start as earlier ones settle), code size and output size;
//! - only ECMAScript built-ins (no `Performance`, no module loader, no timers, no `require`,
//!   no network or filesystem), a captured `console` and the `codemode` object.
//!
//! `codemode` is a frozen object with a `null` prototype whose only properties are the caller's
//! tools (execute) or `tools()` (search). Tool calls go through [`ToolInvoker`], which the portal
//! implements with its normal tool-call pipeline (authorization, DLP, upstream, audit). The
//! portal passes the caller's *visible* tools in `tools`; nothing else is reachable.
//!
//! The thread running a script holds no credentials; it sees tool names, schemas, arguments
//! and results only.

mod names;
mod sandbox;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rmcp::model::{CallToolResult, ContentBlock, Tool};
use serde_json::{Value, json};

pub use names::sanitize_names;
#[doc(hidden)]
pub use sandbox::{Conversions, Converted};

/// Name of the search tool.
pub const SEARCH_TOOL: &str = "portal_codemode_search";
/// Name of the execute tool.
pub const EXECUTE_TOOL: &str = "portal_codemode_execute";

/// Bounds on one execution of a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// QuickJS heap cap.
    pub memory_bytes: usize,
    /// QuickJS stack cap (the thread's stack is larger, so an overflow is a JS `RangeError`).
    pub stack_bytes: usize,
    /// CPU time of the script's thread (compile, run, value conversion).
    pub cpu: Duration,
    /// Wall-clock time of the whole execution, tool calls included.
    pub wall: Duration,
    /// Tool calls per execution; the call past it ends the execution.
    pub max_tool_calls: u32,
    /// Tool calls in flight at once; further calls wait in a FIFO queue.
    pub max_concurrent_calls: u32,
    /// Largest accepted script, in bytes.
    pub max_code_bytes: usize,
    /// Largest output (result JSON plus console lines), in bytes; the excess is cut and marked.
    pub max_output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 32 << 20,
            stack_bytes: 1 << 20,
            cpu: Duration::from_millis(2_000),
            wall: Duration::from_millis(30_000),
            max_tool_calls: 100,
            max_concurrent_calls: 8,
            max_code_bytes: 64 << 10,
            max_output_bytes: 256 << 10,
        }
    }
}

impl Limits {
    /// Limits from a portal's `codeMode` settings; unset fields take the defaults. Zero
    /// values are raised to the smallest sensible bound rather than disabling a limit.
    pub fn from_spec(spec: Option<&crds::portal::CodeModeSpec>) -> Self {
        let mut l = Limits::default();
        let Some(s) = spec else { return l };
        if let Some(v) = s.memory_mib {
            l.memory_bytes = (v.max(1) as usize) << 20;
        }
        if let Some(v) = s.cpu_ms {
            l.cpu = Duration::from_millis(v.max(1).into());
        }
        if let Some(v) = s.wall_ms {
            l.wall = Duration::from_millis(v.max(1).into());
        }
        if let Some(v) = s.max_tool_calls {
            l.max_tool_calls = v;
        }
        if let Some(v) = s.max_concurrent_calls {
            l.max_concurrent_calls = v.max(1);
        }
        if let Some(v) = s.max_code_bytes {
            l.max_code_bytes = v as usize;
        }
        if let Some(v) = s.max_output_bytes {
            l.max_output_bytes = v.max(64) as usize;
        }
        l
    }
}

/// A tool the caller may see and call, as the portal lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolInfo {
    /// Portal tool name, e.g. `tickets_list_tickets` (chars `[A-Za-z0-9_.-]`).
    pub name: String,
    pub description: Option<String>,
    pub input_schema: Value,
    pub output_schema: Option<Value>,
    pub annotations: Option<Value>,
}

/// What the portal gives the sandbox to make a tool call; the portal implements it with its
/// real pipeline (authorization, DLP, upstream call, audit).
pub trait ToolInvoker: Send + Sync + 'static {
    /// `name` is the portal tool name (not the sanitized JS name). `Ok` is the MCP
    /// `CallToolResult` as JSON (it may carry `isError: true`). `Err(message)` means the call
    /// failed; an unknown or denied tool must give the same message as a nonexistent one.
    ///
    /// The future runs on the tokio runtime that called [`execute`]; it is dropped (aborted)
    /// when the execution ends first, e.g. at the wall-clock deadline.
    fn call_tool(
        &self,
        name: String,
        arguments: Value,
    ) -> BoxFuture<'static, Result<Value, String>>;
}

/// Which limit ended (or, for [`LimitKind::Output`], cut) an execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    Cpu,
    Wall,
    Memory,
    Stack,
    ToolCalls,
    CodeSize,
    Output,
    /// The caller went away (the `execute` future was dropped).
    Cancelled,
}

/// What an execution produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// The script's return value as JSON (`undefined` -> `null`); `None` on error. When the
    /// JSON is larger than the output cap it is replaced by a string holding its cut text
    /// followed by `…[truncated N bytes]`.
    pub result: Option<Value>,
    /// Captured `console` lines (`warn`, `error`, ... prefixed with `[warn] ` etc.).
    pub console: Vec<String>,
    /// Short error message: a script exception (`TypeError: ...`) or a limit
    /// (`CPU time limit exceeded (2000 ms)`).
    pub error: Option<String>,
    /// Output was cut to fit [`Limits::max_output_bytes`].
    pub truncated: bool,
    /// Tool calls the script started (queued ones included).
    pub tool_calls: u32,
    /// The limit that ended the execution, or `Output` when only the output was cut.
    pub limit_hit: Option<LimitKind>,
    /// QuickJS heap in use when the script finished (before teardown), in bytes.
    pub memory_bytes: u64,
}

impl Outcome {
    pub(crate) fn failed(error: impl Into<String>, limit: Option<LimitKind>) -> Self {
        Outcome {
            error: Some(error.into()),
            limit_hit: limit,
            ..Default::default()
        }
    }
}

/// Runs a search script: `codemode.tools()` lists `tools`; no tool can be called.
/// Must be called within a tokio runtime with its time driver enabled.
pub async fn search(code: &str, tools: &[ToolInfo], limits: &Limits) -> Outcome {
    sandbox::run(code, tools, None, limits).await
}

/// Runs an execute script: `codemode.<js_name>(args)` calls the matching tool through
/// `invoker`. Must be called within a tokio runtime with its time driver enabled (tool calls
/// are spawned on it).
pub async fn execute(
    code: &str,
    tools: &[ToolInfo],
    invoker: Arc<dyn ToolInvoker>,
    limits: &Limits,
) -> Outcome {
    sandbox::run(code, tools, Some(invoker), limits).await
}

const SEARCH_DESCRIPTION: &str = "Find tools for portal_codemode_execute. `code` is an async \
arrow function; `codemode.tools()` returns [{name, tool, description, inputSchema, \
annotations}] (name: the function to call in execute). Return only what you need. Example: \
async () => codemode.tools().filter(t => /ticket/i.test(t.name + t.description)).map(t => \
({name: t.name, inputSchema: t.inputSchema}))";

const EXECUTE_DESCRIPTION: &str = "Run JavaScript that calls tools. `code` is an async arrow \
function; `await codemode.<name>(args)` calls a tool (names from portal_codemode_search) and \
returns its result (structured or parsed JSON; failures throw Error). Return a JSON value; \
console.log output is returned too. No network, files or timers. Example: async () => { \
const t = await codemode.tickets_list_tickets({status: \"in_progress\"}); return t; }";

fn code_schema(what: &str) -> serde_json::Map<String, Value> {
    let v = json!({
        "type": "object",
        "properties": { "code": { "type": "string", "description": what } },
        "required": ["code"]
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!("literal object"),
    }
}

/// The two Code Mode tools. Their size does not depend on the number of upstream tools.
pub fn tool_definitions() -> Vec<Tool> {
    let tool = |name: &'static str, title: &str, description: &'static str, read_only: bool| {
        let mut t = Tool::new(
            name,
            description,
            code_schema("async arrow function source"),
        );
        let mut ann = json!({ "title": title, "readOnlyHint": read_only });
        if !read_only {
            ann["openWorldHint"] = json!(true);
        }
        t.annotations = serde_json::from_value(ann).ok();
        t
    };
    vec![
        tool(SEARCH_TOOL, "Search tools", SEARCH_DESCRIPTION, true),
        tool(EXECUTE_TOOL, "Execute code", EXECUTE_DESCRIPTION, false),
    ]
}

/// The MCP result of an execution: `structuredContent` is
/// `{result, console?, error?, truncated?}`, the text content is the same object as JSON, and
/// `isError` is set when the script failed.
pub fn outcome_to_call_result(o: &Outcome) -> CallToolResult {
    let mut body = serde_json::Map::new();
    body.insert("result".into(), o.result.clone().unwrap_or(Value::Null));
    if !o.console.is_empty() {
        body.insert("console".into(), json!(o.console));
    }
    if let Some(e) = &o.error {
        body.insert("error".into(), json!(e));
    }
    if o.truncated {
        body.insert("truncated".into(), json!(true));
    }
    let body = Value::Object(body);
    let text = serde_json::to_string(&body).unwrap_or_else(|_| "{}".into());
    let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
    r.structured_content = Some(body);
    r.is_error = Some(o.error.is_some());
    r
}
