//! Audit log: one JSON line per request, hash-chained, written off the request path.
//!
//! [`AuditLog::log`] never blocks: events go through a bounded channel to a writer thread
//! that assigns `seq`, links `prev`, seals each line with its `hash` ([`chain`]) and writes it
//! to every sink. When the channel is full the event is dropped and counted
//! ([`AuditLog::dropped`]). Events carry detector names with counts and a hash of the
//! arguments, never argument or result values.

pub mod chain;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use chain::{GENESIS, VerifyError, VerifyReport, verify};

/// How a request ended (the `decision` field of an audit event).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Allowed and forwarded.
    #[default]
    Allow,
    /// Refused by authorization.
    Deny,
    /// Refused by DLP.
    Block,
    /// Failed (upstream or internal error).
    Error,
}

/// One audit event. Field names are the JSON names in camelCase; `seq`, `prev` and `hash` are
/// added by the writer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// RFC 3339 UTC time; [`AuditLog::log`] fills it in when empty.
    pub time: String,
    /// Portal name.
    pub portal: String,
    /// Authenticated subject (empty for anonymous).
    pub subject: String,
    /// Session id, for legacy-era sessions.
    pub session: Option<String>,
    /// Upstream McpServer name.
    pub server: Option<String>,
    /// Upstream tool name.
    pub tool: Option<String>,
    /// JSON-RPC method (`tools/call`, `tools/list`, …).
    pub method: String,
    /// `direct`, or `codemode` for a call made by a Code Mode script.
    pub origin: Option<String>,
    /// Outcome.
    pub decision: Outcome,
    /// Why (rule name, error class); never request data.
    pub reason: Option<String>,
    /// DLP detector names with match counts.
    pub detectors: BTreeMap<String, u64>,
    /// Inspection findings (rule, detector, score, where; never the text), at most
    /// [`MAX_INSPECTION_FINDINGS`]. Absent when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inspection: Vec<InspectionFinding>,
    /// Total handling time in milliseconds.
    pub duration_ms: f64,
    /// Upstream round trip in milliseconds, when the upstream was called.
    pub upstream_ms: Option<f64>,
    /// Upstream HTTP status, when the upstream was called.
    pub upstream_status: Option<u16>,
    /// [`args_hash`] of the call's arguments.
    pub args_hash: Option<String>,
    /// An LLM gateway call: the alias, the provider that answered, tokens. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmCall>,
}

/// What an audit event records of an LLM gateway call: never the prompt or the answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LlmCall {
    /// The model alias the caller named.
    pub model: String,
    /// The provider of the last target tried (`openai`, `anthropic`, ...).
    pub provider: Option<String>,
    /// The model the last target was asked for.
    pub provider_model: Option<String>,
    /// Whether the answer was streamed.
    pub stream: bool,
    /// Targets tried.
    pub attempts: u32,
    /// How the attempts before the last failed (`status_429`, `timeout`, `connect`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
    /// Prompt tokens (cached ones included), as the provider reported them.
    pub input_tokens: Option<u64>,
    /// Completion tokens, as the provider reported them.
    pub output_tokens: Option<u64>,
    /// Prompt tokens read from the provider's cache.
    pub cached_tokens: Option<u64>,
}

/// Most inspection findings one event records (the first ones, in document order).
pub const MAX_INSPECTION_FINDINGS: usize = 32;

/// One inspection finding as an audit event records it: never the text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectionFinding {
    /// Policy of the rule.
    pub policy: String,
    /// Rule name.
    pub rule: String,
    /// `promptInjection`, `toolPoisoning` or `topics`.
    pub detector: String,
    /// What fired within the detector (`classifier`, `override`, `exfilLink`, a topic's name...).
    pub signal: String,
    /// Score, 1-99.
    pub score: u8,
    /// The rule's action: `block`, `flag` or `log`.
    pub action: String,
    /// `arguments` or `results`.
    pub direction: String,
    /// JSON pointer of the string within the arguments or result.
    pub path: String,
}

/// Writes the unsealed line of `event`: its JSON object with `seq` and `prev` as the last
/// members, into `out` (cleared first). The same bytes as serializing the event flattened into
/// a struct that ends with those two fields, without serde's flatten machinery and without a
/// new string per event.
fn write_unsealed(out: &mut Vec<u8>, event: &Event, seq: u64, prev: &[u8; 64]) {
    out.clear();
    serde_json::to_writer(&mut *out, event).expect("audit events serialize");
    debug_assert_eq!(out.last(), Some(&b'}'));
    out.pop();
    out.extend_from_slice(b",\"seq\":");
    let _ = write!(out, "{seq}");
    out.extend_from_slice(b",\"prev\":\"");
    out.extend_from_slice(prev);
    out.extend_from_slice(b"\"}");
}

/// Current time as RFC 3339 UTC with milliseconds (`2026-01-31T12:00:00.123Z`).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `sha256:<hex>` of the canonical JSON of `args`: object keys sorted (by UTF-8 bytes), no
/// whitespace, strings and numbers as serde_json writes them. Equal arguments hash equally
/// whatever their key order.
pub fn args_hash(args: &Value) -> String {
    crds::canonical::sha256(args)
}

/// [`args_hash`] of an object, without building a `Value` around it.
pub fn object_hash(args: &serde_json::Map<String, Value>) -> String {
    crds::canonical::sha256_object(args)
}

/// Where audit lines go.
pub enum Sink {
    /// Standard output.
    Stdout,
    /// A file, appended to. An existing chain in it is continued.
    File(PathBuf),
    /// Any writer (tests, custom transports).
    Writer(Box<dyn Write + Send>),
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sink::Stdout => f.write_str("Stdout"),
            Sink::File(p) => f.debug_tuple("File").field(p).finish(),
            Sink::Writer(_) => f.write_str("Writer"),
        }
    }
}

enum Msg {
    Event(Box<Event>),
    Flush(SyncSender<()>),
}

#[derive(Default)]
struct Stats {
    written: AtomicU64,
    dropped: AtomicU64,
    write_errors: AtomicU64,
}

/// Handle to the audit writer. Cheap to clone; the writer thread ends when every handle is
/// dropped, after writing what was queued.
#[derive(Clone)]
pub struct AuditLog {
    tx: SyncSender<Msg>,
    stats: Arc<Stats>,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("written", &self.written())
            .field("dropped", &self.dropped())
            .finish()
    }
}

/// Default capacity of the event queue.
pub const DEFAULT_CAPACITY: usize = 8192;

/// Buffer of the stdout sink: a batch of events up to this size is one write.
const STDOUT_BUFFER: usize = 64 * 1024;

/// Pause of the writer after each batch, so that events queue up instead of waking it one by
/// one. At 8,192 queued events this leaves room for over 4 million events per second.
const BATCH_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

impl AuditLog {
    /// Starts a writer for `sinks` with [`DEFAULT_CAPACITY`].
    pub fn new(sinks: Vec<Sink>) -> io::Result<AuditLog> {
        AuditLog::with_capacity(sinks, DEFAULT_CAPACITY)
    }

    /// Starts a writer whose queue holds `capacity` events. File sinks are opened (created)
    /// now; the chain continues from the last sealed line of the first file, if any.
    pub fn with_capacity(sinks: Vec<Sink>, capacity: usize) -> io::Result<AuditLog> {
        let mut seq = 0;
        let mut prev: [u8; 64] = GENESIS.as_bytes().try_into().expect("64 zeros");
        let mut resumed = false;
        let mut writers: Vec<Box<dyn Write + Send>> = Vec::new();
        for s in sinks {
            match s {
                // Stdout is line-buffered: one write per event. Buffered here, a batch is one
                // write (the writer flushes after every batch).
                Sink::Stdout => writers.push(Box::new(io::BufWriter::with_capacity(
                    STDOUT_BUFFER,
                    io::stdout(),
                ))),
                Sink::File(path) => {
                    if !resumed && let Some((last_seq, last_hash)) = last_sealed_line(&path)? {
                        seq = last_seq + 1;
                        prev = last_hash.as_bytes().try_into().map_err(|_| {
                            io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("{}: last audit line has a malformed hash", path.display()),
                            )
                        })?;
                        resumed = true;
                    }
                    let f = OpenOptions::new().create(true).append(true).open(&path)?;
                    writers.push(Box::new(io::BufWriter::new(f)));
                }
                Sink::Writer(w) => writers.push(w),
            }
        }
        let (tx, rx) = sync_channel(capacity.max(1));
        let stats = Arc::new(Stats::default());
        let st = stats.clone();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer_loop(rx, writers, seq, prev, st))?;
        Ok(AuditLog { tx, stats })
    }

    /// Queues `event` without blocking; fills in `time` when empty. When the queue is full the
    /// event is dropped and counted.
    pub fn log(&self, mut event: Event) {
        if event.time.is_empty() {
            event.time = now_rfc3339();
        }
        match self.tx.try_send(Msg::Event(Box::new(event))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits until everything queued before this call is written and flushed. Blocks the
    /// calling thread: from async code use [`AuditLog::flush`].
    pub fn flush_blocking(&self) {
        let (ack_tx, ack_rx) = sync_channel(1);
        if self.tx.send(Msg::Flush(ack_tx)).is_ok() {
            let _ = ack_rx.recv();
        }
    }

    /// Async [`AuditLog::flush_blocking`] (for graceful shutdown).
    pub async fn flush(&self) {
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || this.flush_blocking()).await;
    }

    /// Events written so far.
    pub fn written(&self) -> u64 {
        self.stats.written.load(Ordering::Relaxed)
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.stats.dropped.load(Ordering::Relaxed)
    }

    /// Sink write failures.
    pub fn write_errors(&self) -> u64 {
        self.stats.write_errors.load(Ordering::Relaxed)
    }
}

fn writer_loop(
    rx: Receiver<Msg>,
    mut writers: Vec<Box<dyn Write + Send>>,
    mut seq: u64,
    mut prev: [u8; 64],
    stats: Arc<Stats>,
) {
    // The line being written, reused for every event.
    let mut line = Vec::with_capacity(1024);
    let flush_all = |writers: &mut Vec<Box<dyn Write + Send>>| {
        for w in writers.iter_mut() {
            if w.flush().is_err() {
                stats.write_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Event(event) => {
                    write_unsealed(&mut line, &event, seq, &prev);
                    chain::seal_in_place(&mut line, &mut prev);
                    line.push(b'\n');
                    for w in writers.iter_mut() {
                        if w.write_all(&line).is_err() {
                            stats.write_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    seq += 1;
                    stats.written.fetch_add(1, Ordering::Relaxed);
                }
                Msg::Flush(ack) => {
                    flush_all(&mut writers);
                    let _ = ack.send(());
                }
            }
            next = rx.try_recv().ok();
        }
        // Queue drained: push what we have to the sinks.
        flush_all(&mut writers);
        // Under load, let events gather before the next batch: a writer parked on the queue is
        // woken by every event (a futex wake and a write per call), one that is busy is not.
        // Costs an event at most BATCH_PAUSE before it reaches the sinks.
        std::thread::sleep(BATCH_PAUSE);
    }
    flush_all(&mut writers);
}

/// `seq` and `hash` of the last line of `path` when it is a sealed audit line.
fn last_sealed_line(path: &Path) -> io::Result<Option<(u64, String)>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let start = len.saturating_sub(256 * 1024);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    Ok(text
        .lines()
        .rev()
        .find(|l| !l.is_empty())
        .and_then(chain::tail_of))
}

#[cfg(test)]
mod tests;
