//! The QuickJS sandbox behind [`super::search`] and [`super::execute`].
//!
//! Threading: every execution gets its own OS thread (QuickJS runtimes are `!Send`) that
//! creates a runtime and context, evaluates the script and drives QuickJS's job queue itself.
//! A tool call from the script creates a JS promise, registers its resolve/reject functions
//! under a call id and spawns the invoker's future on the caller's tokio runtime (a
//! [`JoinSet`] owned by the execution). The task sends `(id, result)` back over a channel;
//! the script thread blocks on that channel (bounded by the wall deadline) whenever the job
//! queue is empty and the script's promise is still pending, then settles the promise.
//!
//! Deadlines: the interrupt handler (called by QuickJS every few thousand operations) stops
//! the script once the thread's CPU time exceeds the budget, the wall deadline has passed,
//! the caller went away or a tool-call cap was hit; the channel wait is bounded by the wall
//! deadline. When the script ends for any reason, every in-flight call is aborted and the
//! async side awaits the aborted tasks, so their futures are dropped before `execute` returns.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cpu_time::ThreadTime;
use rquickjs::context::EvalOptions;
use rquickjs::context::intrinsic;
use rquickjs::function::{Opt, Rest};
use rquickjs::promise::PromiseState;
use rquickjs::{Context, Ctx, Exception, Function, Object, Promise, Runtime, Value};
use serde_json::Value as Json;
use tokio::runtime::Handle;
use tokio::task::JoinSet;

use super::{LimitKind, Limits, Outcome, ToolInfo, ToolInvoker, sanitize_names};

/// ECMAScript built-ins the sandbox gets. Not included: `Performance` (a high-resolution
/// clock, useless for tool scripts) and `DOMException`. QuickJS has no module loader here (none
/// is installed), no `std`/`os` modules (quickjs-libc is not linked), no timers and no
/// `WebAssembly`.
type Intrinsics = (
    intrinsic::Date,
    intrinsic::Eval,
    intrinsic::RegExpCompiler,
    intrinsic::RegExp,
    intrinsic::Json,
    intrinsic::Proxy,
    intrinsic::MapSet,
    intrinsic::TypedArrays,
    intrinsic::Promise,
    intrinsic::WeakRef,
);

/// Extra stack for the script thread beyond the QuickJS stack cap: QuickJS checks its own
/// limit, Rust frames (conversions, the event loop) need the rest.
const THREAD_STACK_MARGIN: usize = 4 << 20;
/// Longest error message reported (script exception text, tool error text).
const MAX_MESSAGE_BYTES: usize = 4 << 10;
/// How long past the wall deadline `execute` waits for a script thread that does not stop.
const BACKSTOP_GRACE: Duration = Duration::from_secs(2);

enum Msg {
    Done(u64, Result<Json, String>),
    Cancel,
}

/// Tells the script thread to stop when the `execute` future is dropped.
struct CancelOnDrop {
    flag: Arc<AtomicBool>,
    tx: mpsc::Sender<Msg>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = self.tx.send(Msg::Cancel);
    }
}

struct Job {
    code: String,
    tools: Vec<ToolInfo>,
    invoker: Option<(Arc<dyn ToolInvoker>, Handle)>,
    limits: Limits,
    wall_deadline: Instant,
    tx: mpsc::Sender<Msg>,
    rx: mpsc::Receiver<Msg>,
    cancel: Arc<AtomicBool>,
}

pub(super) async fn run(
    code: &str,
    tools: &[ToolInfo],
    invoker: Option<Arc<dyn ToolInvoker>>,
    limits: &Limits,
) -> Outcome {
    let wall_deadline = Instant::now() + limits.wall;
    if code.len() > limits.max_code_bytes {
        return Outcome::failed(
            format!(
                "code too large ({} bytes; limit {} bytes)",
                code.len(),
                limits.max_code_bytes
            ),
            Some(LimitKind::CodeSize),
        );
    }
    let invoker = match invoker {
        None => None,
        Some(i) => match Handle::try_current() {
            Ok(h) => Some((i, h)),
            Err(_) => return Outcome::failed("sandbox unavailable", None),
        },
    };
    let (tx, rx) = mpsc::channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop {
        flag: cancel.clone(),
        tx: tx.clone(),
    };
    let job = Job {
        code: code.to_owned(),
        tools: tools.to_vec(),
        invoker,
        limits: limits.clone(),
        wall_deadline,
        tx,
        rx,
        cancel,
    };
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("codemode".into())
        .stack_size(limits.stack_bytes.saturating_add(THREAD_STACK_MARGIN))
        .spawn(move || {
            let _ = done_tx.send(job.run());
        });
    if spawned.is_err() {
        return Outcome::failed("sandbox unavailable", None);
    }
    // The script thread enforces the wall deadline itself; this backstop only matters if the
    // thread were stuck outside QuickJS's interrupt checks. The thread is then left to finish
    // on its own (the cancel flag is set when `_guard` drops).
    let backstop = wall_deadline + BACKSTOP_GRACE;
    let (outcome, mut calls) = match tokio::time::timeout_at(backstop.into(), done_rx).await {
        Ok(Ok(r)) => r,
        // The thread panicked: report no detail.
        Ok(Err(_)) => (
            Outcome::failed("internal sandbox error", None),
            JoinSet::new(),
        ),
        Err(_) => (
            Outcome::failed(
                format!(
                    "wall-clock time limit exceeded ({} ms)",
                    limits.wall.as_millis()
                ),
                Some(LimitKind::Wall),
            ),
            JoinSet::new(),
        ),
    };
    // The script thread aborted every task still running; wait until each future is gone.
    while calls.join_next().await.is_some() {}
    outcome
}

/// Stop conditions shared by the interrupt handler, the event loop and the host functions.
struct Watch {
    stop: Cell<Option<LimitKind>>,
    cancel: Arc<AtomicBool>,
    wall_deadline: Instant,
    cpu_start: Option<ThreadTime>,
    cpu_budget: Duration,
}

impl Watch {
    /// Whether the script must stop now; records why.
    fn check(&self) -> bool {
        if self.stop.get().is_some() {
            return true;
        }
        let why = if self.cancel.load(Ordering::Relaxed) {
            Some(LimitKind::Cancelled)
        } else if Instant::now() >= self.wall_deadline {
            Some(LimitKind::Wall)
        } else if self
            .cpu_start
            .as_ref()
            .is_some_and(|s| s.try_elapsed().is_ok_and(|e| e >= self.cpu_budget))
        {
            Some(LimitKind::Cpu)
        } else {
            None
        };
        self.stop.set(why);
        why.is_some()
    }

    fn trip(&self, kind: LimitKind) {
        if self.stop.get().is_none() {
            self.stop.set(Some(kind));
        }
    }
}

/// Bounded capture of `console` output.
#[derive(Default)]
struct Console {
    lines: Vec<String>,
    bytes: usize,
    dropped: usize,
    budget: usize,
}

impl Console {
    fn push(&mut self, line: String) {
        let cost = line.len() + 1;
        if self.dropped == 0 && self.bytes + cost <= self.budget {
            self.bytes += cost;
            self.lines.push(line);
        } else {
            self.dropped += cost;
        }
    }
}

/// Tool-call bookkeeping of one execution.
struct Calls<'js> {
    invoker: Arc<dyn ToolInvoker>,
    handle: Handle,
    tx: mpsc::Sender<Msg>,
    max_calls: u32,
    max_concurrent: u32,
    started: u32,
    in_flight: u32,
    next_id: u64,
    /// resolve and reject functions of the promise of each unsettled call.
    pending: HashMap<u64, (Function<'js>, Function<'js>)>,
    queue: VecDeque<(u64, String, Json)>,
    tasks: JoinSet<()>,
}

impl Calls<'_> {
    fn launch(&mut self, id: u64, name: String, arguments: Json) {
        self.in_flight += 1;
        let invoker = self.invoker.clone();
        let tx = self.tx.clone();
        self.tasks.spawn_on(
            async move {
                let r = invoker.call_tool(name, arguments).await;
                let _ = tx.send(Msg::Done(id, r));
            },
            &self.handle,
        );
    }
}

/// How a script ended, before output shaping.
enum End {
    Value(String),
    Error(String, Option<LimitKind>),
}

impl Job {
    fn run(self) -> (Outcome, JoinSet<()>) {
        let watch = Rc::new(Watch {
            stop: Cell::new(None),
            cancel: self.cancel.clone(),
            wall_deadline: self.wall_deadline,
            cpu_start: ThreadTime::try_now().ok(),
            cpu_budget: self.limits.cpu,
        });
        let Ok(rt) = Runtime::new() else {
            return (Outcome::failed("sandbox unavailable", None), JoinSet::new());
        };
        rt.set_memory_limit(self.limits.memory_bytes);
        rt.set_max_stack_size(self.limits.stack_bytes);
        let w = watch.clone();
        rt.set_interrupt_handler(Some(Box::new(move || w.check())));
        let Ok(context) = Context::custom::<Intrinsics>(&rt) else {
            return (
                Outcome::failed(memory_message(&self.limits), Some(LimitKind::Memory)),
                JoinSet::new(),
            );
        };
        let console = Rc::new(RefCell::new(Console {
            budget: self.limits.max_output_bytes,
            ..Default::default()
        }));
        let mut tasks = JoinSet::new();
        let mut tool_calls = 0;
        let end = context.with(|ctx| {
            let calls = self.invoker.as_ref().map(|(invoker, handle)| {
                Rc::new(RefCell::new(Calls {
                    invoker: invoker.clone(),
                    handle: handle.clone(),
                    tx: self.tx.clone(),
                    max_calls: self.limits.max_tool_calls,
                    max_concurrent: self.limits.max_concurrent_calls.max(1),
                    started: 0,
                    in_flight: 0,
                    next_id: 0,
                    pending: HashMap::new(),
                    queue: VecDeque::new(),
                    tasks: JoinSet::new(),
                }))
            });
            let end = self.script(&ctx, &watch, &console, calls.as_ref());
            if let Some(calls) = calls {
                let mut c = calls.borrow_mut();
                // Release every JS value Rust holds before the context goes away.
                c.pending.clear();
                c.queue.clear();
                c.tasks.abort_all();
                tasks = std::mem::take(&mut c.tasks);
                tool_calls = c.started.min(c.max_calls);
            }
            end
        });
        let memory_bytes = u64::try_from(rt.memory_usage().malloc_size).unwrap_or(0);
        drop(context);
        drop(rt);
        let console = std::mem::take(&mut *console.borrow_mut());
        let mut outcome = shape(end, console, &self.limits);
        outcome.tool_calls = tool_calls;
        outcome.memory_bytes = memory_bytes;
        (outcome, tasks)
    }

    fn script<'js>(
        &self,
        ctx: &Ctx<'js>,
        watch: &Rc<Watch>,
        console: &Rc<RefCell<Console>>,
        calls: Option<&Rc<RefCell<Calls<'js>>>>,
    ) -> End {
        let limits = &self.limits;
        let fail = |e: rquickjs::Error| -> End { host_error(ctx, e, watch, limits) };
        if let Err(e) = self.install_globals(ctx, watch, console, calls) {
            return fail(e);
        }
        let mut opts = EvalOptions::default();
        opts.global = true;
        opts.strict = true;
        opts.backtrace_barrier = true;
        opts.filename = Some("codemode".into());
        let src = format!("(\n{}\n)", self.code);
        let value: Value = match ctx.eval_with_options(src, opts) {
            Ok(v) => v,
            Err(e) => return fail(e),
        };
        // The code is a function (normally async); call it. Anything else is the result.
        let value = match value.as_function() {
            Some(f) => match f.call::<_, Value>(()) {
                Ok(v) => v,
                Err(e) => return fail(e),
            },
            None => value,
        };
        let value = match value.as_promise() {
            Some(p) => match self.drive(ctx, watch, calls, p) {
                Ok(v) => v,
                Err(end) => return end,
            },
            None => value,
        };
        if let Some(kind) = watch.stop.get() {
            return limit_end(kind, limits);
        }
        if value.is_function() || value.is_symbol() {
            return End::Error(
                format!("result is not JSON-serializable (a {})", value.type_name()),
                None,
            );
        }
        match ctx.json_stringify(value) {
            Ok(None) => End::Value("null".into()),
            Ok(Some(s)) => match s.to_string() {
                Ok(s) => End::Value(s),
                Err(e) => fail(e),
            },
            Err(rquickjs::Error::Exception) if watch.stop.get().is_none() => {
                let why = describe(ctx, ctx.catch());
                End::Error(format!("result is not JSON-serializable: {why}"), None)
            }
            Err(e) => fail(e),
        }
    }

    /// Runs the job queue and waits for tool calls until `promise` settles.
    fn drive<'js>(
        &self,
        ctx: &Ctx<'js>,
        watch: &Watch,
        calls: Option<&Rc<RefCell<Calls<'js>>>>,
        promise: &Promise<'js>,
    ) -> Result<Value<'js>, End> {
        let limits = &self.limits;
        loop {
            while watch.stop.get().is_none() && ctx.execute_pending_job() {}
            if watch.check() {
                return Err(limit_end(
                    watch.stop.get().unwrap_or(LimitKind::Wall),
                    limits,
                ));
            }
            match promise.state() {
                PromiseState::Resolved => {
                    return promise
                        .result::<Value>()
                        .unwrap_or(Err(rquickjs::Error::Unknown))
                        .map_err(|e| host_error(ctx, e, watch, limits));
                }
                PromiseState::Rejected => {
                    let _ = promise.result::<Value>();
                    return Err(host_error(ctx, rquickjs::Error::Exception, watch, limits));
                }
                PromiseState::Pending => {}
            }
            let waiting = calls.is_some_and(|c| c.borrow().in_flight > 0);
            if !waiting {
                return Err(End::Error(
                    "the script's promise never settles: it awaits nothing that can complete \
                     (there are no timers; only tool calls settle)"
                        .into(),
                    None,
                ));
            }
            let left = self.wall_deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Msg::Done(id, result)) => {
                    if let Some(calls) = calls {
                        settle(ctx, calls, id, result);
                    }
                }
                Ok(Msg::Cancel) => watch.trip(LimitKind::Cancelled),
                Err(_) => watch.trip(LimitKind::Wall),
            }
        }
    }

    fn install_globals<'js>(
        &self,
        ctx: &Ctx<'js>,
        watch: &Rc<Watch>,
        console: &Rc<RefCell<Console>>,
        calls: Option<&Rc<RefCell<Calls<'js>>>>,
    ) -> rquickjs::Result<()> {
        let globals = ctx.globals();
        let object_ctor: Object = globals.get("Object")?;
        let freeze: Function = object_ctor.get("freeze")?;

        // console
        let con = Object::new(ctx.clone())?;
        for level in ["log", "info", "warn", "error", "debug"] {
            let console = console.clone();
            let f = Function::new(
                ctx.clone(),
                move |ctx: Ctx<'js>, args: Rest<Value<'js>>| -> rquickjs::Result<()> {
                    let mut line = if level == "log" {
                        String::new()
                    } else {
                        format!("[{level}] ")
                    };
                    for (i, a) in args.0.into_iter().enumerate() {
                        if i > 0 {
                            line.push(' ');
                        }
                        line.push_str(&console_text(&ctx, a)?);
                    }
                    console.borrow_mut().push(line);
                    Ok(())
                },
            )?;
            f.set_name(level)?;
            con.set(level, f)?;
        }
        freeze.call::<_, Value>((con.clone(),))?;
        globals.set("console", con)?;

        // codemode
        let cm = Object::new(ctx.clone())?;
        cm.set_prototype(None)?;
        let names = sanitize_names(&self.tools);
        match calls {
            None => {
                let by_name: HashMap<&str, &ToolInfo> =
                    self.tools.iter().map(|t| (t.name.as_str(), t)).collect();
                let list: Vec<Json> = names
                    .iter()
                    .filter_map(|(js, portal)| {
                        let t = by_name.get(portal.as_str())?;
                        let mut e = serde_json::Map::new();
                        e.insert("name".into(), Json::String(js.clone()));
                        e.insert("tool".into(), Json::String(portal.clone()));
                        e.insert(
                            "description".into(),
                            t.description
                                .clone()
                                .map(Json::String)
                                .unwrap_or(Json::Null),
                        );
                        e.insert("inputSchema".into(), t.input_schema.clone());
                        if let Some(o) = &t.output_schema {
                            e.insert("outputSchema".into(), o.clone());
                        }
                        e.insert(
                            "annotations".into(),
                            t.annotations.clone().unwrap_or(Json::Null),
                        );
                        Some(Json::Object(e))
                    })
                    .collect();
                let list = serde_json::to_string(&list).unwrap_or_else(|_| "[]".into());
                let f = Function::new(ctx.clone(), move |ctx: Ctx<'js>| {
                    ctx.json_parse(list.clone())
                })?;
                f.set_name("tools")?;
                cm.set("tools", f)?;
            }
            Some(calls) => {
                for (js, portal) in names {
                    let calls = calls.clone();
                    let watch = watch.clone();
                    let f =
                        Function::new(ctx.clone(), move |ctx: Ctx<'js>, args: Opt<Value<'js>>| {
                            call_tool(&ctx, &calls, &watch, &portal, args.0)
                        })?;
                    f.set_name(&js)?;
                    cm.set(js.as_str(), f)?;
                }
            }
        }
        freeze.call::<_, Value>((cm.clone(),))?;
        globals.set("codemode", cm)?;
        Ok(())
    }
}

/// `codemode.<tool>(args)`: counts the call, converts the arguments, returns a promise that
/// settles when the invoker's future completes.
fn call_tool<'js>(
    ctx: &Ctx<'js>,
    calls: &RefCell<Calls<'js>>,
    watch: &Watch,
    portal: &str,
    args: Option<Value<'js>>,
) -> rquickjs::Result<Value<'js>> {
    if watch.stop.get().is_some() {
        return Err(Exception::throw_internal(ctx, "execution stopped"));
    }
    {
        let mut c = calls.borrow_mut();
        if c.started >= c.max_calls {
            let msg = format!("tool call limit exceeded ({})", c.max_calls);
            drop(c);
            // Hard stop: the interrupt handler ends the script even if it catches this.
            watch.trip(LimitKind::ToolCalls);
            return Err(Exception::throw_range(ctx, &msg));
        }
        c.started += 1;
    }
    // Converting may run script code (toJSON, getters), which may call tools again: no
    // borrow of `calls` is held here.
    let arguments = arguments_of(ctx, args)?;
    let (promise, resolve, reject) = ctx.promise()?;
    let mut c = calls.borrow_mut();
    let id = c.next_id;
    c.next_id += 1;
    c.pending.insert(id, (resolve, reject));
    if c.in_flight < c.max_concurrent {
        c.launch(id, portal.to_string(), arguments);
    } else {
        c.queue.push_back((id, portal.to_string(), arguments));
    }
    Ok(promise.into_value())
}

/// The arguments of a tool call as JSON: none, `undefined` or `null` is `{}`; any other value
/// must stringify to a JSON object (a `TypeError` otherwise).
fn arguments_of<'js>(ctx: &Ctx<'js>, args: Option<Value<'js>>) -> rquickjs::Result<Json> {
    let v = match args {
        None => return Ok(Json::Object(Default::default())),
        Some(v) if v.is_undefined() || v.is_null() => return Ok(Json::Object(Default::default())),
        Some(v) => v,
    };
    let text = match ctx.json_stringify(v)? {
        Some(s) => s.to_string()?,
        None => "null".into(),
    };
    match serde_json::from_str::<Json>(&text) {
        Ok(j @ Json::Object(_)) => Ok(j),
        Ok(_) => Err(Exception::throw_type(
            ctx,
            "tool arguments must be an object",
        )),
        Err(e) => Err(Exception::throw_type(
            ctx,
            &format!("tool arguments are not valid JSON: {e}"),
        )),
    }
}

/// Settles the promise of call `id` and starts the next queued call.
fn settle<'js>(ctx: &Ctx<'js>, calls: &RefCell<Calls<'js>>, id: u64, result: Result<Json, String>) {
    let entry = {
        let mut c = calls.borrow_mut();
        c.in_flight = c.in_flight.saturating_sub(1);
        if let Some((next, name, args)) = c.queue.pop_front() {
            c.launch(next, name, args);
        }
        c.pending.remove(&id)
    };
    let Some((resolve, reject)) = entry else {
        return;
    };
    let settled = match tool_result_to_js(ctx, result) {
        Ok(v) => resolve.call::<_, Value>((v,)),
        Err(e) => reject.call::<_, Value>((e,)),
    };
    if settled.is_err() {
        // Resolving can run script code (a `then` getter); its exception is not ours.
        let _ = ctx.catch();
    }
}

/// The JS value a tool call resolves to, or the `Error` it rejects with.
fn tool_result_to_js<'js>(
    ctx: &Ctx<'js>,
    result: Result<Json, String>,
) -> Result<Value<'js>, Value<'js>> {
    let error = |msg: &str| -> Value<'js> {
        match Exception::from_message(ctx.clone(), &cut(msg, MAX_MESSAGE_BYTES)) {
            Ok(e) => e.into_value(),
            Err(_) => ctx.catch(),
        }
    };
    match result {
        Err(msg) => Err(error(&msg)),
        Ok(r) => match tool_value(r) {
            Err(msg) => Err(error(&msg)),
            Ok(v) => {
                let text = serde_json::to_string(&v).unwrap_or_else(|_| "null".into());
                ctx.json_parse(text).map_err(|_| ctx.catch())
            }
        },
    }
}

/// What a tool's `CallToolResult` (as JSON) means to a script: `Err(message)` when it has
/// `isError: true`; else its `structuredContent`; else its text content, parsed as JSON when
/// it is JSON; else its content blocks as they are.
pub(crate) fn tool_value(result: Json) -> Result<Json, String> {
    let texts: Vec<&str> = result
        .get("content")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter(|b| b.get("type").and_then(Json::as_str) == Some("text"))
        .filter_map(|b| b.get("text").and_then(Json::as_str))
        .collect();
    let joined = texts.join("\n");
    if result.get("isError").and_then(Json::as_bool) == Some(true) {
        return Err(if joined.is_empty() {
            "tool call failed".into()
        } else {
            joined
        });
    }
    if let Some(sc) = result.get("structuredContent")
        && !sc.is_null()
    {
        return Ok(sc.clone());
    }
    if texts.is_empty() {
        return Ok(match result.get("content") {
            Some(Json::Array(a)) if !a.is_empty() => Json::Array(a.clone()),
            _ => Json::Null,
        });
    }
    Ok(serde_json::from_str(&joined).unwrap_or(Json::String(joined)))
}

/// One `console` argument as text: strings as they are, errors as `Name: message`, other
/// values as JSON (or their type when they have none).
fn console_text<'js>(ctx: &Ctx<'js>, v: Value<'js>) -> rquickjs::Result<String> {
    if let Some(s) = v.as_string() {
        return s.to_string();
    }
    if v.is_undefined() {
        return Ok("undefined".into());
    }
    if v.is_error() {
        return Ok(describe(ctx, v));
    }
    let ty = v.type_name();
    match ctx.json_stringify(v) {
        Ok(Some(s)) => s.to_string(),
        Ok(None) => Ok(format!("[{ty}]")),
        Err(rquickjs::Error::Exception) => {
            let _ = ctx.catch();
            Ok(format!("[{ty}]"))
        }
        Err(e) => Err(e),
    }
}

/// Short text of a thrown value: `Name: message` for errors, never the stack.
fn describe<'js>(ctx: &Ctx<'js>, v: Value<'js>) -> String {
    let text = if let Some(s) = v.as_string() {
        format!("Uncaught: {}", s.to_string().unwrap_or_default())
    } else if let Some(o) = v.as_object() {
        // Plain data properties only would be stricter, but getters run under the same
        // interrupt handler, so reading them is bounded.
        let name = o
            .get::<_, Value>("name")
            .ok()
            .and_then(|n| n.as_string()?.to_string().ok());
        let message = o
            .get::<_, Value>("message")
            .ok()
            .and_then(|m| m.as_string()?.to_string().ok());
        if ctx.has_exception() {
            let _ = ctx.catch();
        }
        match (name, message) {
            (Some(n), Some(m)) if !m.is_empty() => format!("{n}: {m}"),
            (Some(n), _) => n,
            (None, Some(m)) => format!("Uncaught: {m}"),
            (None, None) => "Uncaught exception".into(),
        }
    } else if v.is_null() || v.is_undefined() {
        "Uncaught exception".into()
    } else {
        let ty = v.type_name();
        match ctx.json_stringify(v) {
            Ok(Some(s)) => format!("Uncaught: {}", s.to_string().unwrap_or_default()),
            _ => {
                let _ = ctx.catch();
                format!("Uncaught {ty}")
            }
        }
    };
    cut(&text, MAX_MESSAGE_BYTES)
}

/// Maps an error from rquickjs to how the script ended, preferring a tripped limit.
fn host_error<'js>(ctx: &Ctx<'js>, e: rquickjs::Error, watch: &Watch, limits: &Limits) -> End {
    if let Some(kind) = watch.stop.get() {
        let _ = ctx.catch();
        return limit_end(kind, limits);
    }
    let text = match e {
        rquickjs::Error::Exception => describe(ctx, ctx.catch()),
        rquickjs::Error::Allocation => {
            return End::Error(memory_message(limits), Some(LimitKind::Memory));
        }
        other => cut(&other.to_string(), MAX_MESSAGE_BYTES),
    };
    if let Some(kind) = watch.stop.get() {
        return limit_end(kind, limits);
    }
    if text == "InternalError: out of memory" {
        return End::Error(memory_message(limits), Some(LimitKind::Memory));
    }
    if text == "RangeError: Maximum call stack size exceeded"
        || text.starts_with("InternalError: stack overflow")
    {
        return End::Error(
            format!(
                "stack size limit exceeded ({} KiB)",
                limits.stack_bytes >> 10
            ),
            Some(LimitKind::Stack),
        );
    }
    End::Error(text, None)
}

fn memory_message(limits: &Limits) -> String {
    format!("memory limit exceeded ({} MiB)", limits.memory_bytes >> 20)
}

fn limit_end(kind: LimitKind, limits: &Limits) -> End {
    let msg = match kind {
        LimitKind::Cpu => format!("CPU time limit exceeded ({} ms)", limits.cpu.as_millis()),
        LimitKind::Wall => format!(
            "wall-clock time limit exceeded ({} ms)",
            limits.wall.as_millis()
        ),
        LimitKind::Memory => memory_message(limits),
        LimitKind::Stack => format!(
            "stack size limit exceeded ({} KiB)",
            limits.stack_bytes >> 10
        ),
        LimitKind::ToolCalls => format!("tool call limit exceeded ({})", limits.max_tool_calls),
        LimitKind::CodeSize => format!("code too large (limit {} bytes)", limits.max_code_bytes),
        LimitKind::Output => format!("output too large (limit {} bytes)", limits.max_output_bytes),
        LimitKind::Cancelled => "execution cancelled".into(),
    };
    End::Error(msg, Some(kind))
}

/// The longest prefix of `s` within `max` bytes that ends on a char boundary.
fn prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn marker(n: usize) -> String {
    format!("…[truncated {n} bytes]")
}

/// `s` cut to `max` bytes, with a marker when cut.
fn cut(s: &str, max: usize) -> String {
    let p = prefix(s, max);
    if p.len() == s.len() {
        s.to_string()
    } else {
        format!("{p}{}", marker(s.len() - p.len()))
    }
}

/// Builds the outcome within the output cap: the result first, console lines in what is left.
fn shape(end: End, mut console: Console, limits: &Limits) -> Outcome {
    let max = limits.max_output_bytes;
    let mut out = Outcome::default();
    let used = match end {
        End::Error(msg, kind) => {
            out.error = Some(msg);
            out.limit_hit = kind;
            0
        }
        End::Value(text) if text.len() > max => {
            out.truncated = true;
            out.result = Some(Json::String(cut(&text, max)));
            max
        }
        End::Value(text) => match serde_json::from_str::<Json>(&text) {
            Ok(v) => {
                out.result = Some(v);
                text.len()
            }
            Err(e) => {
                out.error = Some(format!("result is not JSON-serializable: {e}"));
                0
            }
        },
    };
    let room = max.saturating_sub(used);
    let mut total = 0;
    let mut dropped = console.dropped;
    for line in console.lines.drain(..) {
        let cost = line.len() + 1;
        if dropped == 0 && total + cost <= room {
            total += cost;
            out.console.push(line);
        } else {
            dropped += cost;
        }
    }
    if dropped > 0 {
        out.console.push(marker(dropped));
        out.truncated = true;
    }
    if out.truncated && out.limit_hit.is_none() {
        out.limit_hit = Some(LimitKind::Output);
    }
    out
}

/// The conversions between the portal's JSON and a script's values, for the fuzz targets
/// (`proxy/fuzz`): one QuickJS runtime and context kept across inputs, with the sandbox's
/// intrinsics and heap and stack caps. Not part of the portal's API.
#[doc(hidden)]
pub struct Conversions {
    // Dropped before the runtime.
    context: Context,
    _runtime: Runtime,
    limits: Limits,
}

/// What [`Conversions::round_trip`] made of a tool result.
#[doc(hidden)]
#[derive(Debug)]
pub struct Converted {
    /// What the script's `await codemode.tool()` gives, as JSON (`Err`: the rejection's text).
    pub received: Result<Json, String>,
    /// The value `wrap` made of it, converted as tool-call arguments (`Err`: the exception).
    pub arguments: Result<Json, String>,
    /// The same value returned as the script's result.
    pub returned: Outcome,
}

impl Conversions {
    /// A runtime and context under `limits` (memory, stack and output caps).
    pub fn new(limits: Limits) -> Option<Conversions> {
        let runtime = Runtime::new().ok()?;
        runtime.set_memory_limit(limits.memory_bytes);
        runtime.set_max_stack_size(limits.stack_bytes);
        let context = Context::custom::<Intrinsics>(&runtime).ok()?;
        Some(Conversions {
            context,
            _runtime: runtime,
            limits,
        })
    }

    /// `result` (a tool's `CallToolResult` as JSON) as a script receives it, then passed to
    /// `wrap` (the source of a JS function of one argument), whose value is converted back as
    /// tool-call arguments and as a script's result.
    pub fn round_trip(&self, result: Json, wrap: &str) -> Converted {
        self.context.with(|ctx| {
            let received = match tool_result_to_js(&ctx, Ok(result)) {
                Ok(v) => v,
                Err(e) => {
                    let e = describe(&ctx, e);
                    return Converted {
                        received: Err(e.clone()),
                        arguments: Err(e.clone()),
                        returned: Outcome::failed(e, None),
                    };
                }
            };
            let received_json = match ctx.json_stringify(received.clone()) {
                Ok(Some(s)) => s
                    .to_string()
                    .map_err(|e| e.to_string())
                    .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string())),
                Ok(None) => Ok(Json::Null),
                Err(_) => Err(describe(&ctx, ctx.catch())),
            };
            let wrapped = ctx
                .eval::<Function, _>(format!("({wrap})"))
                .and_then(|f| f.call::<_, Value>((received,)));
            let wrapped = match wrapped {
                Ok(v) => v,
                Err(_) => {
                    let e = describe(&ctx, ctx.catch());
                    return Converted {
                        received: received_json,
                        arguments: Err(e.clone()),
                        returned: Outcome::failed(e, None),
                    };
                }
            };
            let arguments =
                arguments_of(&ctx, Some(wrapped.clone())).map_err(|_| describe(&ctx, ctx.catch()));
            let end = if wrapped.is_function() || wrapped.is_symbol() {
                End::Error("not JSON-serializable".into(), None)
            } else {
                match ctx.json_stringify(wrapped) {
                    Ok(None) => End::Value("null".into()),
                    Ok(Some(s)) => match s.to_string() {
                        Ok(s) => End::Value(s),
                        Err(e) => End::Error(e.to_string(), None),
                    },
                    Err(_) => End::Error(describe(&ctx, ctx.catch()), None),
                }
            };
            Converted {
                received: received_json,
                arguments,
                returned: shape(end, Console::default(), &self.limits),
            }
        })
    }
}
