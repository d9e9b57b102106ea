use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::*;

/// An in-process invoker that records calls and answers from a fixed script.
#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<(String, Value)>>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    slow_dropped: Arc<AtomicBool>,
}

impl Fake {
    fn names(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.0.clone())
            .collect()
    }
}

struct SetOnDrop(Arc<AtomicBool>);
impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn text(t: &str) -> Value {
    json!({ "content": [{ "type": "text", "text": t }] })
}

impl ToolInvoker for Fake {
    fn call_tool(&self, name: String, args: Value) -> BoxFuture<'static, Result<Value, String>> {
        self.calls
            .lock()
            .unwrap()
            .push((name.clone(), args.clone()));
        let in_flight = self.in_flight.clone();
        let max_in_flight = self.max_in_flight.clone();
        let slow_dropped = self.slow_dropped.clone();
        async move {
            match name.as_str() {
                "tickets_list_tickets" => Ok(json!({
                    "content": [{ "type": "text", "text": "2 tickets (text form)" }],
                    "structuredContent": {
                        "tickets": [
                            { "id": 1, "status": args["status"] },
                            { "id": 2, "status": args["status"] }
                        ]
                    }
                })),
                "tickets_get_ticket" => Ok(text(
                    &json!({ "id": args["id"], "title": format!("ticket {}", args["id"]) })
                        .to_string(),
                )),
                "docs_read" => Ok(text("hello world")),
                "tickets_fail" => Ok(json!({
                    "content": [{ "type": "text", "text": "ticket not found" }],
                    "isError": true
                })),
                "slow_wait" => {
                    let _flag = SetOnDrop(slow_dropped);
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(text("too late"))
                }
                "delay" => {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    max_in_flight.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    Ok(text("1"))
                }
                "then" | "constructor" | "my-server_tool.v2" => Ok(text(&format!("\"{name}\""))),
                _ => Err(format!("unknown tool: {name}")),
            }
        }
        .boxed()
    }
}

fn tool(name: &str, description: &str) -> ToolInfo {
    ToolInfo {
        name: name.into(),
        description: Some(description.into()),
        input_schema: json!({ "type": "object" }),
        output_schema: None,
        annotations: Some(json!({ "readOnlyHint": true })),
    }
}

fn tools() -> Vec<ToolInfo> {
    vec![
        tool("tickets_list_tickets", "List tickets by status"),
        tool("tickets_get_ticket", "Get one ticket"),
        tool("tickets_fail", "Always fails"),
        tool("docs_read", "Read a document"),
        tool("slow_wait", "Never answers in time"),
        tool("delay", "Answers after 20 ms"),
        tool("then", "A tool unluckily named then"),
        tool("constructor", "A tool named constructor"),
        tool("my-server_tool.v2", "A tool with punctuation"),
    ]
}

async fn run(code: &str) -> (Outcome, Arc<Fake>) {
    run_with(code, &Limits::default()).await
}

async fn run_with(code: &str, limits: &Limits) -> (Outcome, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let o = execute(code, &tools(), fake.clone(), limits).await;
    assert_clean(&o);
    (o, fake)
}

/// Errors are short and carry no host detail.
fn assert_clean(o: &Outcome) {
    if let Some(e) = &o.error {
        assert!(e.len() < 600, "error too long: {e}");
        for bad in ["/root", ".rs:", "cargo", "src/", "    at "] {
            assert!(!e.contains(bad), "error leaks host detail: {e}");
        }
    }
}

fn small_limits() -> Limits {
    Limits {
        // The wall budget stays large: on a loaded machine 300 ms of CPU can take seconds.
        cpu: Duration::from_millis(300),
        memory_bytes: 8 << 20,
        ..Limits::default()
    }
}

/// After a hostile script, the next one runs normally.
async fn assert_next_execution_works() {
    let (o, fake) = run(
        "async () => { const t = await codemode.tickets_get_ticket({id: 7}); return t.title; }",
    )
    .await;
    assert_eq!(o.error, None);
    assert_eq!(o.result, Some(json!("ticket 7")));
    assert_eq!(fake.names(), ["tickets_get_ticket"]);
}

// --- search -----------------------------------------------------------------------------

#[tokio::test]
async fn search_filters_codemode_tools_by_name_and_description() {
    let o = search(
        "async () => codemode.tools().filter(t => /ticket/i.test(t.name + t.description)).map(t => t.name)",
        &tools(),
        &Limits::default(),
    )
    .await;
    assert_eq!(o.error, None);
    assert_eq!(
        o.result,
        Some(json!([
            "tickets_fail",
            "tickets_get_ticket",
            "tickets_list_tickets"
        ]))
    );
}

#[tokio::test]
async fn search_entries_carry_js_name_portal_name_schema_and_annotations() {
    let o = search(
        "async () => codemode.tools().filter(t => t.tool !== t.name)",
        &tools(),
        &Limits::default(),
    )
    .await;
    assert_eq!(o.error, None);
    let list = o.result.unwrap();
    let names: Vec<(&str, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t["tool"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("constructor_", "constructor"),
            ("my_server_tool_v2", "my-server_tool.v2"),
            ("then_", "then"),
        ]
    );
    assert_eq!(list[0]["inputSchema"], json!({ "type": "object" }));
    assert_eq!(list[0]["annotations"], json!({ "readOnlyHint": true }));
    assert_eq!(list[0]["description"], json!("A tool named constructor"));
}

#[tokio::test]
async fn search_cannot_call_tools() {
    let o = search(
        "async () => typeof codemode.tickets_list_tickets",
        &tools(),
        &Limits::default(),
    )
    .await;
    assert_eq!(o.result, Some(json!("undefined")));
}

// --- execute: results ---------------------------------------------------------------------

#[tokio::test]
async fn execute_chains_two_calls_and_returns_json() {
    let (o, fake) = run(r#"async () => {
            const list = await codemode.tickets_list_tickets({status: "in_progress"});
            const first = await codemode.tickets_get_ticket({id: list.tickets[0].id});
            return { count: list.tickets.length, first };
        }"#)
    .await;
    assert_eq!(o.error, None);
    assert_eq!(
        o.result,
        Some(json!({ "count": 2, "first": { "id": 1, "title": "ticket 1" } }))
    );
    assert_eq!(o.tool_calls, 2);
    let calls = fake.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        [
            (
                "tickets_list_tickets".to_string(),
                json!({"status": "in_progress"})
            ),
            ("tickets_get_ticket".to_string(), json!({"id": 1})),
        ]
    );
}

#[tokio::test]
async fn structured_content_is_preferred_over_text() {
    let (o, _) =
        run("async () => codemode.tickets_list_tickets({status: 'open'}).then(r => r.tickets[1])")
            .await;
    assert_eq!(o.result, Some(json!({ "id": 2, "status": "open" })));
}

#[tokio::test]
async fn json_text_is_parsed_and_other_text_stays_a_string() {
    let (o, _) =
        run("async () => [await codemode.tickets_get_ticket({id: 3}), await codemode.docs_read()]")
            .await;
    assert_eq!(
        o.result,
        Some(json!([{ "id": 3, "title": "ticket 3" }, "hello world"]))
    );
}

#[test]
fn tool_value_follows_structured_then_json_then_text() {
    use super::sandbox::tool_value;
    assert_eq!(
        tool_value(
            json!({"content": [{"type": "text", "text": "[1]"}], "structuredContent": {"a": 1}})
        ),
        Ok(json!({"a": 1}))
    );
    assert_eq!(tool_value(text("[1, 2]")), Ok(json!([1, 2])));
    assert_eq!(
        tool_value(
            json!({"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]})
        ),
        Ok(json!("a\nb"))
    );
    assert_eq!(
        tool_value(json!({"content": [], "isError": true})),
        Err("tool call failed".into())
    );
    assert_eq!(tool_value(json!({"content": []})), Ok(Value::Null));
}

#[tokio::test]
async fn is_error_result_becomes_an_error_the_script_can_catch() {
    let (o, _) = run(
        "async () => { try { await codemode.tickets_fail({}); return 'no'; } \
         catch (e) { return [e instanceof Error, e.message]; } }",
    )
    .await;
    assert_eq!(o.result, Some(json!([true, "ticket not found"])));
}

#[tokio::test]
async fn uncaught_tool_error_becomes_the_outcome_error() {
    let (o, _) = run("async () => { await codemode.tickets_fail({}); }").await;
    assert_eq!(o.error.as_deref(), Some("Error: ticket not found"));
    assert_eq!(o.result, None);
}

#[tokio::test]
async fn failed_call_rejects_with_the_invokers_message() {
    // A tool the portal knows but the caller may not see is simply absent from `codemode`;
    // the invoker's message for an unknown tool passes through unchanged.
    let fake = Arc::new(Fake::default());
    let mut list = tools();
    list.push(tool("ghost_tool", "not served by the fake"));
    let o = execute(
        "async () => codemode.ghost_tool({}).catch(e => e.message)",
        &list,
        fake,
        &Limits::default(),
    )
    .await;
    assert_eq!(o.result, Some(json!("unknown tool: ghost_tool")));
}

#[tokio::test]
async fn tool_arguments_must_be_an_object() {
    let (o, fake) = run("async () => codemode.docs_read([1, 2])").await;
    assert_eq!(
        o.error.as_deref(),
        Some("TypeError: tool arguments must be an object")
    );
    assert!(fake.names().is_empty());
}

#[tokio::test]
async fn console_output_is_captured() {
    let (o, _) = run(
        "async () => { console.log('a', 1, {b: 2}); console.warn('careful'); \
         console.error(new TypeError('bad')); return null; }",
    )
    .await;
    assert_eq!(o.error, None);
    assert_eq!(
        o.console,
        ["a 1 {\"b\":2}", "[warn] careful", "[error] TypeError: bad"]
    );
}

#[tokio::test]
async fn undefined_result_is_null() {
    let (o, _) = run("async () => { }").await;
    assert_eq!((o.result, o.error), (Some(Value::Null), None));
}

#[tokio::test]
async fn non_serializable_results_give_a_clear_error() {
    let (o, _) = run("async () => { const a = {}; a.self = a; return a; }").await;
    assert!(
        o.error
            .as_deref()
            .unwrap()
            .starts_with("result is not JSON-serializable: TypeError"),
        "{o:?}"
    );
    let (o, _) = run("async () => 10n").await;
    assert!(
        o.error
            .as_deref()
            .unwrap()
            .starts_with("result is not JSON-serializable"),
        "{o:?}"
    );
    let (o, _) = run("async () => () => 1").await;
    assert_eq!(
        o.error.as_deref(),
        Some("result is not JSON-serializable (a function)")
    );
}

#[tokio::test]
async fn large_output_is_truncated_with_a_marker() {
    let limits = Limits {
        max_output_bytes: 1_000,
        ..Limits::default()
    };
    let (o, _) = run_with("async () => 'x'.repeat(5000)", &limits).await;
    assert!(o.truncated);
    assert_eq!(o.limit_hit, Some(LimitKind::Output));
    let s = o.result.unwrap();
    let s = s.as_str().unwrap();
    assert!(s.starts_with("\"xxx"));
    assert!(s.ends_with("…[truncated 4002 bytes]"), "{s}");

    let (o, _) = run_with(
        "async () => { for (let i = 0; i < 1000; i++) console.log('line ' + i); return 1; }",
        &limits,
    )
    .await;
    assert!(o.truncated);
    assert_eq!(o.result, Some(json!(1)));
    assert!(o.console.len() < 200);
    let last = o.console.last().unwrap();
    assert!(
        last.starts_with("…[truncated ") && last.ends_with(" bytes]"),
        "{last}"
    );
}

#[tokio::test]
async fn syntax_errors_are_reported_briefly() {
    let (o, fake) = run("async () => { return ; ) }").await;
    let e = o.error.unwrap();
    assert!(e.starts_with("SyntaxError: "), "{e}");
    assert!(fake.names().is_empty());
}

#[tokio::test]
async fn plain_expressions_and_sync_functions_also_work() {
    let (o, _) = run("() => 1 + 1").await;
    assert_eq!(o.result, Some(json!(2)));
    let (o, _) = run("[1, 2, 3].map(x => x * 2)").await;
    assert_eq!(o.result, Some(json!([2, 4, 6])));
}

// --- execute: limits and hostile scripts ------------------------------------------------

#[tokio::test]
async fn infinite_loop_ends_at_the_cpu_deadline() {
    let t = Instant::now();
    let (o, _) = run_with("async () => { while (true) {} }", &small_limits()).await;
    assert_eq!(o.error.as_deref(), Some("CPU time limit exceeded (300 ms)"));
    assert_eq!(o.limit_hit, Some(LimitKind::Cpu));
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_next_execution_works().await;
}

#[tokio::test]
async fn catching_the_interrupt_does_not_escape_the_cpu_deadline() {
    let (o, _) = run_with(
        "async () => { for (;;) { try { while (true) {} } catch (e) {} } }",
        &small_limits(),
    )
    .await;
    assert_eq!(o.limit_hit, Some(LimitKind::Cpu));
}

#[tokio::test]
async fn unbounded_recursion_hits_the_stack_limit() {
    let (o, _) = run("async () => { const f = n => f(n + 1) + 1; return f(0); }").await;
    assert_eq!(
        o.error.as_deref(),
        Some("stack size limit exceeded (1024 KiB)")
    );
    assert_eq!(o.limit_hit, Some(LimitKind::Stack));
    assert_next_execution_works().await;
}

#[tokio::test]
async fn allocating_until_the_cap_hits_the_memory_limit() {
    let (o, _) = run_with(
        "async () => { const a = []; for (;;) a.push('x'.repeat(1 << 16) + a.length); }",
        &small_limits(),
    )
    .await;
    assert_eq!(o.error.as_deref(), Some("memory limit exceeded (8 MiB)"));
    assert_eq!(o.limit_hit, Some(LimitKind::Memory));
    assert_next_execution_works().await;
}

#[tokio::test]
async fn deeply_nested_source_is_rejected_by_the_parser_stack_check() {
    let code = format!("async () => {}{}", "[".repeat(30_000), "]".repeat(30_000));
    let (o, _) = run(&code).await;
    assert!(o.error.is_some(), "{o:?}");
    assert!(o.result.is_none());
    assert_next_execution_works().await;
}

#[tokio::test]
async fn catastrophic_regex_backtracking_ends_at_the_cpu_deadline() {
    let (o, _) = run_with(
        "async () => /^(a+)+$/.test('a'.repeat(40) + 'b')",
        &small_limits(),
    )
    .await;
    assert_eq!(o.limit_hit, Some(LimitKind::Cpu), "{o:?}");
}

#[tokio::test]
async fn atomics_wait_cannot_block_the_script_thread() {
    let t = Instant::now();
    let (o, _) = run(
        "async () => { try { return Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0); } \
         catch (e) { return e.name + ': ' + e.message; } }",
    )
    .await;
    assert_eq!(
        o.result,
        Some(json!("TypeError: cannot block in this thread"))
    );
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_promise_that_never_settles_ends_at_once() {
    let t = Instant::now();
    let (o, _) = run("async () => { await new Promise(() => {}); }").await;
    assert!(
        o.error
            .as_deref()
            .unwrap()
            .starts_with("the script's promise never settles"),
        "{o:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_next_execution_works().await;
}

#[tokio::test]
async fn wall_deadline_ends_the_script_and_drops_in_flight_calls() {
    let limits = Limits {
        wall: Duration::from_millis(300),
        ..Limits::default()
    };
    let t = Instant::now();
    let (o, fake) = run_with("async () => await codemode.slow_wait({})", &limits).await;
    assert_eq!(
        o.error.as_deref(),
        Some("wall-clock time limit exceeded (300 ms)")
    );
    assert_eq!(o.limit_hit, Some(LimitKind::Wall));
    assert!(t.elapsed() < Duration::from_secs(10));
    // The future was dropped before execute returned.
    assert!(fake.slow_dropped.load(Ordering::SeqCst));
    assert_next_execution_works().await;
}

#[tokio::test]
async fn dropping_the_execute_future_cancels_the_script_and_its_calls() {
    let fake = Arc::new(Fake::default());
    let list = tools();
    let limits = Limits::default();
    let fut = execute(
        "async () => await codemode.slow_wait({})",
        &list,
        fake.clone(),
        &limits,
    );
    let r = tokio::time::timeout(Duration::from_millis(200), fut).await;
    assert!(r.is_err());
    // The script thread sees the cancel and aborts the task; give it a moment.
    for _ in 0..100 {
        if fake.slow_dropped.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(fake.slow_dropped.load(Ordering::SeqCst));
}

#[tokio::test]
async fn ten_thousand_tool_calls_hit_the_call_cap() {
    let (o, fake) = run(
        "async () => { const ps = []; for (let i = 0; i < 10000; i++) \
         { try { ps.push(codemode.docs_read({})); } catch (e) {} } \
         await Promise.all(ps); return ps.length; }",
    )
    .await;
    assert_eq!(o.error.as_deref(), Some("tool call limit exceeded (100)"));
    assert_eq!(o.limit_hit, Some(LimitKind::ToolCalls));
    assert_eq!(o.tool_calls, 100);
    assert!(fake.names().len() <= 100);
    assert_next_execution_works().await;
}

#[tokio::test]
async fn calls_beyond_the_concurrency_cap_wait_their_turn() {
    let limits = Limits {
        max_concurrent_calls: 3,
        ..Limits::default()
    };
    let (o, fake) = run_with(
        "async () => (await Promise.all(Array.from({length: 12}, () => codemode.delay()))).length",
        &limits,
    )
    .await;
    assert_eq!(o.result, Some(json!(12)));
    assert_eq!(fake.names().len(), 12);
    assert_eq!(fake.max_in_flight.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn prototype_pollution_does_not_reach_the_next_execution() {
    let (o, _) = run(
        "async () => { Object.prototype.polluted = 'yes'; Array.prototype.map = null; \
         return ({}).polluted; }",
    )
    .await;
    assert_eq!(o.result, Some(json!("yes")));
    let (o, _) = run("async () => [({}).polluted ?? 'clean', typeof [].map]").await;
    assert_eq!(o.result, Some(json!(["clean", "function"])));
}

#[tokio::test]
async fn function_constructor_reaches_only_the_sandbox_global() {
    let (o, _) = run(
        "async () => { const g = this.constructor.constructor('return this')(); \
         return [g === globalThis, Object.getOwnPropertyNames(g).filter(n => \
         !/^[A-Z]/.test(n)).sort()]; }",
    )
    .await;
    assert_eq!(o.error, None);
    let r = o.result.unwrap();
    assert_eq!(r[0], json!(true));
    // Only ECMAScript's lower-case globals plus ours: no process, std, os, require, fetch.
    let names: Vec<&str> = r[1]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for n in &names {
        assert!(
            [
                "codemode",
                "console",
                "decodeURI",
                "decodeURIComponent",
                "encodeURI",
                "encodeURIComponent",
                "escape",
                "eval",
                "globalThis",
                "isFinite",
                "isNaN",
                "parseFloat",
                "parseInt",
                "queueMicrotask",
                "undefined",
                "unescape",
            ]
            .contains(n),
            "unexpected global {n}: {names:?}"
        );
    }
}

#[tokio::test]
async fn host_capabilities_are_absent() {
    let (o, _) = run(
        "async () => [typeof require, typeof fetch, typeof setTimeout, typeof setInterval, \
         typeof WebAssembly, typeof process, typeof std, typeof os, typeof performance, \
         typeof XMLHttpRequest, typeof Deno, typeof Bun]",
    )
    .await;
    assert_eq!(o.result, Some(json!(vec!["undefined"; 12])));
}

#[tokio::test]
async fn dynamic_import_fails() {
    let (o, _) = run("async () => { await import('fs'); return 'imported'; }").await;
    assert!(o.result.is_none(), "{o:?}");
    let (o, _) =
        run("async () => import('data:text/javascript,1').then(() => 'imported', e => 'failed')")
            .await;
    assert_eq!(o.result, Some(json!("failed")));
}

#[tokio::test]
async fn reading_the_environment_is_impossible() {
    let (o, _) = run("async () => process.env.HOME").await;
    assert_eq!(
        o.error.as_deref(),
        Some("ReferenceError: process is not defined")
    );
    let (o, _) =
        run("async () => { try { return std.getenv('HOME'); } catch (e) { return e.name; } }")
            .await;
    assert_eq!(o.result, Some(json!("ReferenceError")));
}

#[tokio::test]
async fn awaiting_codemode_or_reading_then_calls_nothing() {
    let (o, fake) = run("async () => { const c = await codemode; \
         return [c === codemode, typeof codemode.then, Object.getPrototypeOf(codemode), \
         Object.isFrozen(codemode), typeof codemode.constructor]; }")
    .await;
    assert_eq!(o.error, None);
    assert_eq!(
        o.result,
        Some(json!([true, "undefined", null, true, "undefined"]))
    );
    assert!(fake.names().is_empty());
}

#[tokio::test]
async fn tools_named_then_and_constructor_are_renamed_and_still_callable() {
    let (o, fake) =
        run("async () => [await codemode.then_(), await codemode.constructor_(), await codemode.my_server_tool_v2()]")
            .await;
    assert_eq!(o.error, None);
    assert_eq!(
        o.result,
        Some(json!(["then", "constructor", "my-server_tool.v2"]))
    );
    assert_eq!(fake.names(), ["then", "constructor", "my-server_tool.v2"]);
}

#[tokio::test]
async fn code_over_the_size_cap_is_rejected_without_running() {
    let code = format!("async () => {{ /* {} */ }}", "x".repeat(70_000));
    let (o, _) = run(&code).await;
    assert_eq!(
        o.error,
        Some(format!(
            "code too large ({} bytes; limit 65536 bytes)",
            code.len()
        ))
    );
    assert_eq!(o.limit_hit, Some(LimitKind::CodeSize));
}

// --- names, definitions, limits ---------------------------------------------------------

fn names_of(list: &[&str]) -> Vec<(String, String)> {
    let infos: Vec<ToolInfo> = list.iter().map(|n| tool(n, "")).collect();
    sanitize_names(&infos)
}

#[test]
fn punctuated_names_become_valid_identifiers() {
    assert_eq!(
        names_of(&["my-server_tool.v2", "9lives", "then", "__proto__", "tools"]),
        [
            ("_9lives".to_string(), "9lives".to_string()),
            ("__proto___".to_string(), "__proto__".to_string()),
            (
                "my_server_tool_v2".to_string(),
                "my-server_tool.v2".to_string()
            ),
            ("then_".to_string(), "then".to_string()),
            ("tools_".to_string(), "tools".to_string()),
        ]
    );
}

#[test]
fn name_collisions_are_resolved_deterministically() {
    let a = names_of(&["a-b", "a.b", "a_b", "a_b_2"]);
    let b = names_of(&["a_b_2", "a_b", "a.b", "a-b", "a-b"]);
    assert_eq!(a, b);
    let pairs: Vec<(&str, &str)> = a.iter().map(|(j, p)| (j.as_str(), p.as_str())).collect();
    assert_eq!(
        pairs,
        [
            ("a_b_3", "a-b"),
            ("a_b_4", "a.b"),
            ("a_b", "a_b"),
            ("a_b_2", "a_b_2"),
        ]
    );
}

#[test]
fn the_two_tool_definitions_are_small_and_fixed() {
    let defs = tool_definitions();
    assert_eq!(
        defs.iter().map(|t| t.name.as_ref()).collect::<Vec<_>>(),
        [SEARCH_TOOL, EXECUTE_TOOL]
    );
    let json = serde_json::to_string(&defs).unwrap();
    println!("tool definitions: {} chars", json.len());
    assert!(json.len() <= 1_600, "{} chars: {json}", json.len());
    assert!(json.contains("codemode.tools()"));
    assert!(json.contains("codemode.tickets_list_tickets"));
}

#[test]
fn outcome_becomes_a_call_result_with_structured_content() {
    let ok = outcome_to_call_result(&Outcome {
        result: Some(json!({"n": 1})),
        console: vec!["hi".into()],
        ..Default::default()
    });
    assert_eq!(ok.is_error, Some(false));
    assert_eq!(
        ok.structured_content,
        Some(json!({"result": {"n": 1}, "console": ["hi"]}))
    );
    let err = outcome_to_call_result(&Outcome::failed("boom", None));
    assert_eq!(err.is_error, Some(true));
    assert_eq!(
        err.structured_content,
        Some(json!({"result": null, "error": "boom"}))
    );
}

#[test]
fn limits_come_from_the_portal_spec_with_safe_defaults() {
    assert_eq!(Limits::from_spec(None), Limits::default());
    let spec = crds::portal::CodeModeSpec {
        memory_mib: Some(64),
        cpu_ms: Some(500),
        max_concurrent_calls: Some(0),
        ..Default::default()
    };
    let l = Limits::from_spec(Some(&spec));
    assert_eq!(l.memory_bytes, 64 << 20);
    assert_eq!(l.cpu, Duration::from_millis(500));
    assert_eq!(l.max_concurrent_calls, 1);
    assert_eq!(l.wall, Duration::from_secs(30));
}
