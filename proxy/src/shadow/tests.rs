//! Unit tests of the shadow-MCP classifier: formats, rules, scoring, correlation, sanctioning.

use std::io::Write;
use std::path::PathBuf;

use serde_json::json;

use super::*;

fn rec(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Record {
    Record {
        host: host.into(),
        method: method.into(),
        path: path.into(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body: body.map(|b| Body::Text(b.into())),
    }
}

fn classifier() -> Classifier {
    Classifier::new(ClassifierRules::default_rules())
}

fn is_hit(r: &Record) -> bool {
    let c = classifier();
    c.classify(r).confidence >= c.rules().threshold()
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pc-shadow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::File::create(&p)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    p
}

#[test]
fn mcp_methods_of_both_eras_are_hits_and_other_jsonrpc_methods_add_nothing() {
    let legacy = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}"#;
    assert!(is_hit(&rec("a.test", "POST", "/rpc", &[], Some(legacy))));
    let modern = r#"{"jsonrpc":"2.0","id":2,"method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
    assert!(is_hit(&rec("a.test", "POST", "/rpc", &[], Some(modern))));
    let call = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo"}}"#;
    assert!(is_hit(&rec("a.test", "POST", "/anything", &[], Some(call))));

    // JSON-RPC to a non-MCP service, even on an /mcp path at an mcp.* host with a date-shaped
    // protocolVersion, is not MCP.
    let other = r#"{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":{"protocolVersion":"2025-06-18"}}"#;
    let v = classifier().classify(&rec("mcp.example.com", "POST", "/mcp", &[], Some(other)));
    assert!(
        v.confidence < ClassifierRules::default_rules().threshold(),
        "{v:?}"
    );
    assert!(v.evidence.iter().all(|e| e.signal != Signal::Body), "{v:?}");
    // LSP's `initialize` without an MCP protocolVersion stays below the threshold.
    let lsp =
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"processId":1,"rootUri":null}}"#;
    assert!(!is_hit(&rec("lsp.test", "POST", "/", &[], Some(lsp))));
    // A "method" field without JSON-RPC.
    assert!(!is_hit(&rec(
        "a.test",
        "POST",
        "/api/messages",
        &[],
        Some(r#"{"method":"tools/call"}"#)
    )));
}

#[test]
fn mcp_headers_alone_are_hits_but_weak_paths_alone_are_not() {
    assert!(is_hit(&rec(
        "a.test",
        "DELETE",
        "/x",
        &[("mcp-session-id", "abc")],
        None
    )));
    assert!(is_hit(&rec(
        "a.test",
        "GET",
        "/x",
        &[("mcp-protocol-version", "2025-11-25")],
        None
    )));
    assert!(is_hit(&rec(
        "a.test",
        "POST",
        "/x",
        &[("mcp-method", "tools/call")],
        None
    )));
    for path in [
        "/sse",
        "/message",
        "/messages/",
        "/api/messages",
        "/message?sessionId=1",
    ] {
        let r = rec(
            "a.test",
            "GET",
            path,
            &[("accept", "text/event-stream")],
            None,
        );
        assert!(!is_hit(&r), "{path}");
    }
    assert!(!is_hit(&rec(
        "mcp-metrics.example",
        "GET",
        "/metrics",
        &[],
        None
    )));
    assert!(
        is_hit(&rec("mcp.notion.com", "GET", "/", &[], None)),
        "known SaaS host"
    );
    assert!(
        is_hit(&rec("docs.mcp.cloudflare.com:443", "GET", "/", &[], None)),
        "wildcard entry"
    );
}

#[test]
fn batches_count_their_mcp_members() {
    let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"getUser"},{"jsonrpc":"2.0","id":2,"method":"tools/list"}]"#;
    assert!(is_hit(&rec("a.test", "POST", "/", &[], Some(batch))));
    let batch =
        r#"[{"jsonrpc":"2.0","id":1,"method":"getUser"},{"jsonrpc":"2.0","id":2,"method":"sum"}]"#;
    assert!(!is_hit(&rec("a.test", "POST", "/", &[], Some(batch))));
}

#[test]
fn the_four_formats_read_the_same_request() {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let nginx = json!({"time_local": "t", "request_method": "POST", "request_uri": "/mcp?x=1",
        "host": "Tools.Test", "http_mcp_session_id": "s1", "http_accept": "", "request_body": body});
    let envoy = json!({"start_time": "t", "method": "POST", "path": "/mcp?x=1", "authority": "tools.test",
        "response_code": 200, "mcp_session_id": "s1", "accept": "-", "request_body": body});
    let jsonl = json!({"host": "tools.test", "path": "/mcp?x=1", "method": "POST",
        "headers": {"Mcp-Session-Id": "s1"}, "body": serde_json::from_str::<serde_json::Value>(body).unwrap()});
    let har = json!({"log": {"version": "1.2", "entries": [{"request": {"method": "POST",
        "url": "http://127.0.0.1:9/mcp?x=1", "headers": [{"name": "Host", "value": "tools.test"},
        {"name": "Mcp-Session-Id", "value": "s1"}], "postData": {"mimeType": "application/json", "text": body}}}]}});
    let files = [
        temp_file("a.nginx.log", &format!("{nginx}\n")),
        temp_file("a.envoy.log", &format!("{envoy}\n")),
        temp_file("a.jsonl", &format!("{jsonl}\n")),
        temp_file("a.json", &serde_json::to_string_pretty(&har).unwrap()),
    ];
    let expected = [Format::Nginx, Format::Envoy, Format::Jsonl, Format::Har];
    for (file, want) in files.iter().zip(expected) {
        let mut got = Vec::new();
        let format =
            records::read_file(file, Format::Auto, &mut |_, r| got.push(r.unwrap())).unwrap();
        assert_eq!(format, want, "{}", file.display());
        assert_eq!(got.len(), 1);
        let r = &got[0];
        assert_eq!(
            (r.host.as_str(), r.method.as_str(), r.path.as_str()),
            ("tools.test", "POST", "/mcp?x=1")
        );
        assert!(
            r.headers.contains(&("mcp-session-id".into(), "s1".into())),
            "{:?}",
            r.headers
        );
        assert!(
            !r.headers.iter().any(|(n, _)| n == "accept"),
            "empty values are not headers"
        );
        assert!(is_hit(r));
    }
}

#[test]
fn bad_records_name_file_and_line_and_the_scan_goes_on() {
    let good =
        r#"{"host":"t.test","path":"/","method":"POST","headers":{"mcp-method":"tools/list"}}"#;
    let text = format!("{good}\nnot json\n\n{{\"host\":\"t.test\"}}\n[1]\n{good}\n");
    let file = temp_file("bad.jsonl", &text);
    let mut scanner = Scanner::new(classifier(), Sanctioned::new());
    let mut bad = Vec::new();
    let mut hits = 0;
    scanner
        .scan_file(&file, Format::Jsonl, &mut |e| match e {
            Event::Bad(b) => bad.push(b.to_string()),
            Event::Hit(_) => hits += 1,
        })
        .unwrap();
    let report = scanner.finish();
    assert_eq!((report.records, report.bad_records, hits), (5, 3, 2));
    assert!(
        bad[0].starts_with(&format!("{}:2: not JSON", file.display())),
        "{bad:?}"
    );
    assert!(bad[1].contains(":4: missing field"), "{bad:?}");
    assert!(bad[2].contains(":5: not a JSON object"), "{bad:?}");

    let err = records::read_file(
        &file.with_extension("missing"),
        Format::Auto,
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("bad.missing"), "{err}");
    let weird = temp_file("weird.log", "{\"a\":1}\n");
    let err = records::read_file(&weird, Format::Auto, &mut |_, _| {}).unwrap_err();
    assert!(
        err.to_string().contains("weird.log") && err.to_string().contains("--format"),
        "{err}"
    );
}

#[test]
fn a_weak_request_is_a_hit_only_at_a_destination_with_confirmed_mcp_traffic() {
    let mut scanner = Scanner::new(classifier(), Sanctioned::new());
    let mut hits = Vec::new();
    let sse = rec(
        "legacy.test",
        "GET",
        "/sse",
        &[("accept", "text/event-stream")],
        None,
    );
    let post = rec(
        "legacy.test",
        "POST",
        "/message?sessionId=9",
        &[],
        Some(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
    );
    let plain_sse = rec(
        "news.test",
        "GET",
        "/sse",
        &[("accept", "text/event-stream")],
        None,
    );
    let f = Path::new("f");
    for (i, r) in [&sse, &plain_sse, &post, &sse].into_iter().enumerate() {
        scanner.scan_record(f, i + 1, r, &mut |e| {
            if let Event::Hit(h) = e {
                hits.push((h.line, h.host.clone(), h.path.clone()))
            }
        });
    }
    let report = scanner.finish();
    hits.sort();
    assert_eq!(
        hits,
        vec![
            (1, "legacy.test".into(), "/sse".into()),
            (3, "legacy.test".into(), "/message".into()),
            (4, "legacy.test".into(), "/sse".into())
        ],
        "the query string is not reported"
    );
    assert_eq!(report.destinations.len(), 1);
    assert_eq!(report.destinations[0].requests, 3);
}

#[test]
fn sanctioned_destinations_come_from_manifests_and_flags() {
    let yaml = r#"
apiVersion: portcullis.dev/v1alpha1
kind: McpServer
metadata: {name: tools}
spec: {remote: {url: "https://Tools.Corp.Test/mcp"}}
---
apiVersion: portcullis.dev/v1alpha1
kind: McpPortal
metadata: {name: p}
spec: {public: true, publicUrl: "https://portal.corp.test:8443"}
"#;
    let mut m = crate::config::Manifests::default();
    crate::config::manifests::parse_into(&mut m, Path::new("m.yaml"), yaml).unwrap();
    let mut s = Sanctioned::new();
    s.add_manifests(&m).unwrap();
    s.add("extra.test", "--sanctioned").unwrap();
    assert!(s.contains("tools.corp.test") && s.contains("tools.corp.test:443"));
    assert!(s.contains("portal.corp.test:8443") && !s.contains("portal.corp.test:9000"));
    assert!(s.contains("EXTRA.test:80") && !s.contains("other.test"));
    assert!(
        s.add("not a host/x", "--sanctioned")
            .unwrap_err()
            .contains("--sanctioned")
    );
}

#[test]
fn rules_files_extend_the_defaults_and_errors_name_the_file_and_field() {
    let extra = temp_file(
        "extra-rules.yaml",
        "hosts:\n  known:\n    names: [tools.acme.test]\njsonrpc:\n  methods: [acme/run]\n",
    );
    let rules = ClassifierRules::load(&[&extra]).unwrap();
    let c = Classifier::new(rules);
    assert!(
        c.classify(&rec("tools.acme.test", "GET", "/", &[], None))
            .confidence
            >= 0.6
    );
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"acme/run"}"#;
    assert!(
        c.classify(&rec("x.test", "POST", "/", &[], Some(body)))
            .confidence
            >= 0.6
    );
    assert!(
        c.classify(&rec("mcp.notion.com", "GET", "/", &[], None))
            .confidence
            >= 0.6,
        "defaults kept"
    );

    let replace = temp_file(
        "replace-rules.yaml",
        "replace: true\nthreshold: 0.5\nheaders: [{name: x-acme-mcp, weight: 0.9}]\n",
    );
    let c = Classifier::new(ClassifierRules::load(&[&replace]).unwrap());
    assert!(
        c.classify(&rec("a", "GET", "/", &[("mcp-session-id", "1")], None))
            .confidence
            < 0.5
    );
    assert!(
        c.classify(&rec("a", "GET", "/", &[("x-acme-mcp", "1")], None))
            .confidence
            >= 0.5
    );

    let bad = temp_file("bad-rules.yaml", "paths:\n  - {regex: '(', weight: 0.5}\n");
    let err = ClassifierRules::load(&[&bad]).unwrap_err().to_string();
    assert!(
        err.contains("bad-rules.yaml") && err.contains("paths"),
        "{err}"
    );
    let bad = temp_file("bad-rules2.yaml", "headers:\n  - {name: x, weight: 2}\n");
    let err = ClassifierRules::load(&[&bad]).unwrap_err().to_string();
    assert!(
        err.contains("bad-rules2.yaml") && err.contains("headers[0]"),
        "{err}"
    );
    let bad = temp_file("bad-rules3.yaml", "hosts: {knwon: {names: [a]}}\n");
    let err = ClassifierRules::load(&[&bad]).unwrap_err().to_string();
    assert!(
        err.contains("bad-rules3.yaml") && err.contains("knwon"),
        "{err}"
    );
}

#[test]
fn a_first_record_longer_than_the_read_buffer_is_still_detected() {
    let big = "x".repeat(600 << 10);
    let line = json!({"time_local": "t", "request_method": "POST", "request_uri": "/upload",
        "host": "files.test", "request_body": big});
    let file = temp_file("big.log", &format!("{line}\n{line}\n"));
    let mut n = 0;
    let format = records::read_file(&file, Format::Auto, &mut |_, r| {
        r.unwrap();
        n += 1
    })
    .unwrap();
    assert_eq!((format, n), (Format::Nginx, 2));
}
