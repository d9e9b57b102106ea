use std::io::{self, Cursor, Write};
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::*;

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

fn event(i: usize) -> Event {
    Event {
        portal: "main".into(),
        subject: format!("user-{i}"),
        server: Some("crm".into()),
        tool: Some("search".into()),
        method: "tools/call".into(),
        decision: if i.is_multiple_of(3) {
            Outcome::Block
        } else {
            Outcome::Allow
        },
        detectors: BTreeMap::from([("email".to_string(), 2)]),
        duration_ms: 1.5,
        upstream_ms: Some(1.0),
        upstream_status: Some(200),
        args_hash: Some(args_hash(&json!({"q": i}))),
        ..Event::default()
    }
}

fn written_log(n: usize) -> Vec<String> {
    let buf = Shared::default();
    let log = AuditLog::new(vec![Sink::Writer(Box::new(buf.clone()))]).unwrap();
    for i in 0..n {
        log.log(event(i));
    }
    log.flush_blocking();
    assert_eq!(log.written(), n as u64);
    buf.text().lines().map(str::to_string).collect()
}

fn verify_lines(lines: &[String]) -> Result<VerifyReport, VerifyError> {
    verify(Cursor::new(lines.join("\n") + "\n"))
}

#[test]
fn a_written_chain_verifies() {
    let lines = written_log(6);
    let r = verify_lines(&lines).unwrap();
    assert_eq!(
        (r.lines, r.first_seq, r.last_seq, r.restarts),
        (6, Some(0), Some(5), 0)
    );
}

#[test]
fn lines_carry_the_documented_fields_in_order() {
    let lines = written_log(1);
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "time",
            "portal",
            "subject",
            "session",
            "server",
            "tool",
            "method",
            "origin",
            "decision",
            "reason",
            "detectors",
            "durationMs",
            "upstreamMs",
            "upstreamStatus",
            "argsHash",
            "seq",
            "prev",
            "hash"
        ]
    );
    assert_eq!(v["prev"], GENESIS);
    assert_eq!(v["decision"], "block");
    assert!(v["time"].as_str().unwrap().ends_with('Z'));
    assert!(chrono::DateTime::parse_from_rfc3339(v["time"].as_str().unwrap()).is_ok());
}

/// The line format as it was first defined: the event flattened into a struct that ends with
/// `seq` and `prev`. The writer builds the same bytes without serde's flatten.
#[derive(Serialize)]
struct Flattened<'a> {
    #[serde(flatten)]
    event: &'a Event,
    seq: u64,
    prev: &'a str,
}

#[test]
fn unsealed_lines_are_byte_for_byte_the_flattened_event() {
    let mut full = event(1);
    full.time = "2026-11-27T08:00:00.000Z".into();
    full.session = Some("s-1".into());
    full.origin = Some("codemode".into());
    full.reason = Some("dlp rule \"x\"\n\u{7f}é".into());
    full.detectors.insert("aws-key".into(), u64::MAX);
    let bare = Event::default();
    let prev = [b'a'; 64];
    let mut out = Vec::new();
    for (e, seq) in [(&full, 0), (&bare, 7), (&event(2), u64::MAX)] {
        write_unsealed(&mut out, e, seq, &prev);
        let expected = serde_json::to_string(&Flattened {
            event: e,
            seq,
            prev: std::str::from_utf8(&prev).unwrap(),
        })
        .unwrap();
        assert_eq!(String::from_utf8(out.clone()).unwrap(), expected);
    }
}

#[test]
fn a_deleted_line_is_detected_at_its_successor() {
    let mut lines = written_log(5);
    lines.remove(2);
    let err = verify_lines(&lines).unwrap_err();
    assert_eq!(err.line(), Some(3), "{err}");
    assert!(matches!(err, VerifyError::BrokenLink { .. }));
    assert!(err.to_string().starts_with("line 3:"));
}

#[test]
fn reordered_lines_are_detected_with_the_line_number() {
    let mut lines = written_log(5);
    lines.swap(1, 2);
    let err = verify_lines(&lines).unwrap_err();
    assert_eq!(err.line(), Some(2), "{err}");
}

#[test]
fn an_edited_line_is_detected_with_the_line_number() {
    let mut lines = written_log(5);
    let edited = lines[2].replace("\"decision\":\"allow\"", "\"decision\":\"deny\"");
    assert_ne!(edited, lines[2]);
    lines[2] = edited;
    let err = verify_lines(&lines).unwrap_err();
    assert!(matches!(err, VerifyError::Edited { line: 3 }), "{err}");
}

#[test]
fn an_edited_and_resealed_line_breaks_the_link_of_the_next_line() {
    let mut lines = written_log(5);
    let tampered = lines[1].replace("user-1", "user-X");
    let unsealed = format!("{}}}", &tampered[..tampered.rfind(",\"hash\"").unwrap()]);
    lines[1] = chain::seal(&unsealed).0;
    let err = verify_lines(&lines).unwrap_err();
    assert!(matches!(err, VerifyError::BrokenLink { line: 3 }), "{err}");
}

#[test]
fn truncated_or_garbage_lines_are_malformed() {
    let mut lines = written_log(3);
    lines[1].truncate(40);
    assert!(matches!(
        verify_lines(&lines).unwrap_err(),
        VerifyError::Malformed { line: 2, .. }
    ));
}

#[test]
fn a_file_sink_continues_the_chain_across_restarts() {
    let dir = std::env::temp_dir().join(format!("portcullis-audit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("audit.jsonl");
    let _ = std::fs::remove_file(&path);
    for round in 0..2 {
        let log = AuditLog::new(vec![Sink::File(path.clone())]).unwrap();
        for i in 0..3 {
            log.log(event(round * 3 + i));
        }
        log.flush_blocking();
    }
    let r = verify(io::BufReader::new(std::fs::File::open(&path).unwrap())).unwrap();
    assert_eq!((r.lines, r.last_seq, r.restarts), (6, Some(5), 0));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A sink that blocks until released, to fill the queue.
struct Gate(Arc<Mutex<()>>);

impl Write for Gate {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        drop(self.0.lock().unwrap());
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_full_queue_counts_drops_instead_of_blocking() {
    let gate = Arc::new(Mutex::new(()));
    let held = gate.lock().unwrap();
    let log = AuditLog::with_capacity(vec![Sink::Writer(Box::new(Gate(gate.clone())))], 4).unwrap();
    for i in 0..50 {
        log.log(event(i));
    }
    assert!(log.dropped() >= 40, "dropped {}", log.dropped());
    drop(held);
    log.flush_blocking();
    assert_eq!(log.written() + log.dropped(), 50);
}

#[test]
fn args_hash_is_the_sha256_of_the_canonical_json() {
    // Python: json.dumps(v, ensure_ascii=False, separators=(",", ":"), sort_keys=True) gives
    // {"a":[1,"x\"y\n",null,true,1.5],"b":{"B":-3,"c":"é"}}, and its SHA-256 is this.
    let v = json!({"b": {"c": "é", "B": -3}, "a": [1, "x\"y\n", null, true, 1.5]});
    assert_eq!(
        args_hash(&v),
        "sha256:bdf01a9f86afc0e62d868ad7ead4793291f91c054a163dbf6da3d1cfa81a0d2a"
    );
}

#[test]
fn args_hash_ignores_key_order_and_never_contains_the_arguments() {
    let a = args_hash(&json!({"b": [1, {"y": 2, "x": "4111111111111111"}], "a": null}));
    let object = json!({"a": null, "b": [1, {"x": "4111111111111111", "y": 2}]});
    assert_eq!(
        object_hash(object.as_object().unwrap()),
        a,
        "same hash without a Value"
    );
    let b = args_hash(&json!({"a": null, "b": [1, {"x": "4111111111111111", "y": 2}]}));
    assert_eq!(a, b);
    assert!(a.starts_with("sha256:") && a.len() == 7 + 64);
    assert_ne!(
        a,
        args_hash(&json!({"a": null, "b": [1, {"x": "4111111111111112", "y": 2}]}))
    );
}
