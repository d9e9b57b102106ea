//! The `portcullis-proxy` command line: subcommands and bad input.

use std::io::Write;
use std::process::{Command, Stdio};

const PROXY: &str = env!("CARGO_BIN_EXE_portcullis-proxy");

fn run(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(PROXY)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn dlp_scan_with_all_detectors_prints_one_line_per_finding_without_the_values() {
    let doc = r#"{"note": "pay with 4111 1111 1111 1111 please", "ok": "version 1.2.3.4"}"#;
    let (ok, out, err) = run(&["dlp", "scan", "--all-detectors", "-"], doc);
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert_eq!(lines[0]["detector"], "creditCard");
    assert_eq!(lines[0]["path"], "/note");
    assert_eq!(
        (lines[0]["start"].as_u64(), lines[0]["end"].as_u64()),
        (Some(9), Some(28))
    );
    assert!(!out.contains("4111"));
}

#[test]
fn dlp_scan_uses_the_portals_rules_and_names_bad_files() {
    let dir = std::env::temp_dir().join(format!("pc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifests = dir.join("p.yaml");
    std::fs::write(
        &manifests,
        "apiVersion: portcullis.dev/v1alpha1\nkind: McpPortal\nmetadata: {name: p}\nspec: {public: true}\n---\napiVersion: portcullis.dev/v1alpha1\nkind: McpPolicy\nmetadata: {name: pol}\nspec:\n  dlp:\n  - {name: tickets, patterns: ['TICKET-[0-9]+'], action: block}\n",
    )
    .unwrap();
    let m = manifests.to_str().unwrap();
    let (ok, out, err) = run(
        &["dlp", "scan", "--manifests", m, "--portal", "p"],
        "see TICKET-42 and 4111111111111111",
    );
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().count(),
        1,
        "only the portal's rule fires: {out}"
    );
    assert!(
        out.contains("\"rule\":\"tickets\"") && out.contains("\"action\":\"block\""),
        "{out}"
    );

    let (ok, _, err) = run(
        &[
            "dlp",
            "scan",
            "--manifests",
            "/nonexistent.yaml",
            "--portal",
            "p",
        ],
        "",
    );
    assert!(!ok);
    assert!(err.contains("/nonexistent.yaml"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn audit_verify_accepts_a_good_chain_and_names_an_edited_line() {
    let dir = std::env::temp_dir().join(format!("pc-audit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("audit.jsonl");
    {
        let log =
            proxy::audit::AuditLog::new(vec![proxy::audit::Sink::File(path.clone())]).unwrap();
        for i in 0..5 {
            log.log(proxy::audit::Event {
                portal: "p".into(),
                method: "tools/call".into(),
                tool: Some(format!("t{i}")),
                ..Default::default()
            });
        }
        log.flush_blocking();
    }
    let p = path.to_str().unwrap();
    let (ok, out, err) = run(&["audit", "verify", p], "");
    assert!(ok, "{err}");
    assert!(out.contains("ok: 5 lines"), "{out}");

    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("\"t2\"", "\"t9\"", 1)).unwrap();
    let (ok, _, err) = run(&["audit", "verify", p], "");
    assert!(!ok);
    assert!(err.contains("line 3"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serving_without_manifests_or_with_a_broken_file_fails_with_a_clear_message() {
    let (ok, _, err) = run(&[], "");
    assert!(!ok);
    assert!(err.contains("--manifests"), "{err}");
    let dir = std::env::temp_dir().join(format!("pc-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "apiVersion: portcullis.dev/v1alpha1\nkind: McpServer\nmetadata: {name: s}\nspec: {remote: {url: 'ftp://x'}}\n").unwrap();
    let (ok, _, err) = run(
        &[
            "--manifests",
            bad.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        "",
    );
    assert!(!ok);
    assert!(
        err.contains("bad.yaml: document 1 (McpServer/s): spec.remote.url"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn run_code(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(PROXY).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn shadow_scan_exits_1_on_shadow_mcp_0_when_sanctioned_and_2_naming_a_bad_file() {
    let dir = std::env::temp_dir().join(format!("pc-shadow-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.jsonl");
    std::fs::write(
        &log,
        concat!(
            r#"{"host":"tools.corp.test","path":"/mcp","method":"POST","headers":{"Mcp-Session-Id":"s"},"body":"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}"}"#,
            "\n",
            r#"{"host":"api.corp.test","path":"/rpc","method":"POST","body":"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"getUser\"}"}"#,
            "\n",
            "{oops\n",
        ),
    )
    .unwrap();
    let l = log.to_str().unwrap();

    let (code, out, err) = run_code(&["shadow", "scan", l]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("tools.corp.test") && out.contains("shadow"),
        "{out}"
    );
    assert!(!out.contains("api.corp.test"), "{out}");
    assert!(err.contains(&format!("{l}:3: not JSON")), "{err}");

    let (code, out, _) = run_code(&["shadow", "scan", "--json", l]);
    assert_eq!(code, Some(1));
    let hit: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(hit["host"], "tools.corp.test");
    assert_eq!(hit["line"], 1);
    assert_eq!(hit["sanctioned"], false);

    let (code, out, _) = run_code(&["shadow", "scan", "--sanctioned", "tools.corp.test", l]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("sanctioned"), "{out}");

    let (code, _, err) = run_code(&["shadow", "scan", "/nonexistent/access.log"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("/nonexistent/access.log"), "{err}");
    let rules = dir.join("rules.yaml");
    std::fs::write(&rules, "threshold: 7\n").unwrap();
    let (code, _, err) = run_code(&["shadow", "scan", "--rules", rules.to_str().unwrap(), l]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("rules.yaml") && err.contains("threshold"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
