use std::io::{self, Cursor, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    // How many the writer thread took before it blocked depends on scheduling (it failed at 31
    // under a loaded machine with `>= 40`); that the loop ended while the sink was blocked, and
    // that every event is either written or counted, do not.
    assert!(log.dropped() >= 1, "dropped {}", log.dropped());
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

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef-chain-key";

fn keyed_log(n: usize, key: &[u8]) -> Vec<String> {
    let buf = Shared::default();
    let log = AuditLog::with_options(
        vec![Sink::Writer(Box::new(buf.clone()))],
        Options {
            key: Some(key.to_vec()),
            ..Options::default()
        },
    )
    .unwrap();
    for i in 0..n {
        log.log(event(i));
    }
    log.flush_blocking();
    buf.text().lines().map(str::to_string).collect()
}

fn verify_keyed(lines: &[String], keys: &[&[u8]]) -> Result<VerifyReport, VerifyError> {
    verify_with(
        Cursor::new(lines.join("\n") + "\n"),
        &VerifyOptions {
            keys: keys.iter().map(|k| k.to_vec()).collect(),
            checkpoint: None,
        },
    )
}

/// Re-chains `lines` from index `from` on with `sealer`, as someone who can write the file
/// would after editing it.
fn rechain(lines: &mut [String], from: usize, sealer: &chain::Sealer) {
    let mut prev = if from == 0 {
        GENESIS.to_string()
    } else {
        let v: serde_json::Value = serde_json::from_str(&lines[from - 1]).unwrap();
        v.get("mac")
            .or(v.get("hash"))
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    };
    for line in &mut lines[from..] {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        let o = v.as_object_mut().unwrap();
        o.remove("mac");
        o.remove("hash");
        o.insert("prev".into(), prev.clone().into());
        let (sealed, seal) = sealer.seal(&serde_json::to_string(&v).unwrap());
        *line = sealed;
        prev = seal;
    }
}

#[test]
fn a_keyed_chain_verifies_only_under_its_key() {
    let lines = keyed_log(5, KEY);
    assert!(
        lines
            .iter()
            .all(|l| l.contains("\"mac\":\"") && !l.contains("\"hash\":\""))
    );
    let r = verify_keyed(&lines, &[KEY]).unwrap();
    assert_eq!((r.lines, r.last_seq, r.keyed), (5, Some(4), true));
    // While a key is rotated, either key verifies.
    verify_keyed(&lines, &[b"another key, 32 bytes or longer....", KEY]).unwrap();
    let e = verify_keyed(&lines, &[b"another key, 32 bytes or longer...."]).unwrap_err();
    assert!(matches!(e, VerifyError::BadMac { line: 1 }), "{e}");
    let e = verify_lines(&lines).unwrap_err();
    assert!(matches!(e, VerifyError::KeyNeeded { line: 1 }), "{e}");
    assert!(e.to_string().contains("--key"), "{e}");
}

#[test]
fn an_edited_keyed_log_rechained_without_the_key_is_refused() {
    let mut lines = keyed_log(6, KEY);
    // The attack a plain hash chain cannot see: edit a line, re-chain everything after it.
    lines[2] = lines[2].replace("user-2", "user-X");
    let mut plain = lines.clone();
    rechain(&mut plain, 0, &chain::Sealer::plain());
    verify_lines(&plain).expect("a plain re-chain is consistent on its own");
    let e = verify_keyed(&plain, &[KEY]).unwrap_err();
    assert!(matches!(e, VerifyError::NotKeyed { line: 1 }), "{e}");
    // Re-chained with a key of the attacker's own, from the edited line on.
    let mut forged = lines.clone();
    rechain(
        &mut forged,
        2,
        &chain::Sealer::keyed(b"the attacker's key, 32 bytes long"),
    );
    let e = verify_keyed(&forged, &[KEY]).unwrap_err();
    assert!(matches!(e, VerifyError::BadMac { line: 3 }), "{e}");
    // The control: re-chained under the real key it verifies (the test's forgery is sound).
    rechain(&mut forged, 2, &chain::Sealer::keyed(KEY));
    verify_keyed(&forged, &[KEY]).unwrap();
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("portcullis-audit-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn verify_file(path: &Path, options: &VerifyOptions) -> Result<VerifyReport, VerifyError> {
    verify_with(
        io::BufReader::new(std::fs::File::open(path).unwrap()),
        options,
    )
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_keyed_file_resumes_under_its_key_and_restarts_under_another() {
    let dir = temp_dir("resume");
    let path = dir.join("audit.jsonl");
    let open = |key: &[u8]| {
        AuditLog::with_options(
            vec![Sink::File(path.clone())],
            Options {
                key: Some(key.to_vec()),
                ..Options::default()
            },
        )
        .unwrap()
    };
    for round in 0..2 {
        let log = open(KEY);
        log.log(event(round));
        log.flush_blocking();
    }
    let keys = VerifyOptions {
        keys: vec![KEY.to_vec()],
        checkpoint: None,
    };
    let r = verify_file(&path, &keys).unwrap();
    assert_eq!((r.lines, r.last_seq, r.restarts), (2, Some(1), 0));
    // Another key cannot continue the chain: it starts a new one, which its key verifies.
    let other = b"a rotated chain key, 32 bytes long".as_slice();
    let log = open(other);
    log.log(event(9));
    log.flush_blocking();
    let both = VerifyOptions {
        keys: vec![KEY.to_vec(), other.to_vec()],
        checkpoint: None,
    };
    let r = verify_file(&path, &both).unwrap();
    assert_eq!((r.lines, r.last_seq, r.restarts), (3, Some(0), 1));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_checkpoint_catches_a_cut_tail() {
    let dir = temp_dir("checkpoint");
    let path = dir.join("audit.jsonl");
    let log = AuditLog::with_options(
        vec![Sink::File(path.clone())],
        Options {
            key: Some(KEY.to_vec()),
            checkpoint_every: Duration::from_millis(20),
            ..Options::default()
        },
    )
    .unwrap();
    for i in 0..5 {
        log.log(event(i));
    }
    log.flush_blocking();
    wait_for("a checkpoint at seq 4", || {
        log.checkpoint().is_some_and(|c| c.seq == 4)
    });
    assert_eq!(log.metrics().checkpoint_sequence.get(), 4);
    let checkpoint = log.checkpoint().unwrap();
    let options = VerifyOptions {
        keys: vec![KEY.to_vec()],
        checkpoint: Some(checkpoint.clone()),
    };
    verify_file(&path, &options).unwrap();
    // Cut the last two lines: the rest still chains, but the checkpoint's head is gone.
    let text = std::fs::read_to_string(&path).unwrap();
    let kept: Vec<&str> = text.lines().take(3).collect();
    let cut = dir.join("cut.jsonl");
    std::fs::write(&cut, kept.join("\n") + "\n").unwrap();
    verify_file(
        &cut,
        &VerifyOptions {
            checkpoint: None,
            ..options.clone()
        },
    )
    .unwrap();
    let e = verify_file(&cut, &options).unwrap_err();
    assert!(
        matches!(
            e,
            VerifyError::CheckpointMissing {
                seq: 4,
                last_seq: Some(2)
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("cut off"), "{e}");
    assert_eq!(
        format!("4:{}", checkpoint.head)
            .parse::<Checkpoint>()
            .unwrap(),
        checkpoint
    );
    assert!("4".parse::<Checkpoint>().is_err());
    assert!("x:ab".parse::<Checkpoint>().is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_full_disk_stops_recording_keeps_the_events_and_writes_them_when_it_recovers() {
    let dir = temp_dir("full");
    let path = dir.join("audit.jsonl");
    std::fs::write(&path, "").unwrap();
    let log = AuditLog::new(vec![Sink::File(path.clone())]).unwrap();
    log.log(event(0));
    log.flush_blocking();
    assert!(log.recording());
    // The disk fills up: the path now names a device whose every write fails (ENOSPC).
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink("/dev/full", &path).unwrap();
    for i in 1..4 {
        log.log(event(i));
    }
    log.flush_blocking();
    assert!(!log.recording(), "a sink that fails is not recording");
    assert!(log.write_errors() >= 1);
    assert_eq!(log.metrics().sink_up.get(), 0);
    // Space again: the writer's retry reopens the path and writes what it kept, in order.
    std::fs::remove_file(&path).unwrap();
    wait_for("the sink to recover", || log.recording());
    assert_eq!(log.metrics().sink_up.get(), 1);
    log.log(event(4));
    log.flush_blocking();
    let r = verify_file(&path, &VerifyOptions::default()).unwrap();
    assert_eq!(
        (r.lines, r.first_seq, r.last_seq),
        (4, Some(1), Some(4)),
        "the kept events and the next one, chained to the line in the removed file"
    );
    assert_eq!(log.dropped(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_removed_file_is_recreated_and_the_chain_goes_on_in_it() {
    let dir = temp_dir("removed");
    let path = dir.join("audit.jsonl");
    let log = AuditLog::new(vec![Sink::File(path.clone())]).unwrap();
    log.log(event(0));
    log.log(event(1));
    log.flush_blocking();
    std::fs::remove_file(&path).unwrap();
    log.log(event(2));
    log.flush_blocking();
    assert!(log.recording());
    let r = verify_file(&path, &VerifyOptions::default()).unwrap();
    assert_eq!((r.lines, r.first_seq), (1, Some(2)));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A sink whose every write fails.
struct Broken;

impl Write for Broken {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::other("broken sink"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failing_sinks_backlog_is_bounded_and_events_beyond_it_are_dropped_before_sealing() {
    let good = Shared::default();
    let log = AuditLog::with_capacity(
        vec![
            Sink::Writer(Box::new(good.clone())),
            Sink::Writer(Box::new(Broken)),
        ],
        1 << 16,
    )
    .unwrap();
    let line_len = written_log(1)[0].len() + 1;
    let n = MAX_BACKLOG_BYTES / line_len + 200;
    for i in 0..n {
        log.log(event(i));
        if i % 4096 == 0 {
            log.flush_blocking();
        }
    }
    log.flush_blocking();
    assert!(!log.recording());
    assert!(log.dropped() >= 100, "dropped {}", log.dropped());
    assert_eq!(log.written() + log.dropped(), n as u64);
    // What the healthy sink got is one unbroken chain: the dropped events never took a seq.
    let lines: Vec<String> = good.text().lines().map(str::to_string).collect();
    let r = verify_lines(&lines).unwrap();
    assert_eq!(r.lines as u64, log.written());
}

#[test]
fn a_full_queue_stops_recording_until_the_writer_drains_it() {
    let gate = Arc::new(Mutex::new(()));
    let held = gate.lock().unwrap();
    let log = AuditLog::with_capacity(vec![Sink::Writer(Box::new(Gate(gate.clone())))], 2).unwrap();
    for i in 0..10 {
        log.log(event(i));
    }
    assert!(log.dropped() > 0 && !log.recording());
    drop(held);
    log.flush_blocking();
    assert!(log.recording());
}
