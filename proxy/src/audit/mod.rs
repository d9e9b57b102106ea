//! Audit log: one JSON line per request, chained, written off the request path.
//!
//! [`AuditLog::log`] never blocks: events go through a bounded channel to a writer thread
//! that assigns `seq`, links `prev`, seals each line with its `hash` or, with a chain key, its
//! `mac` ([`chain`]) and writes it to every sink. When the channel is full the event is dropped
//! and counted ([`AuditLog::dropped`]). A sink that cannot be written keeps its lines (up to
//! [`MAX_BACKLOG_BYTES`]) and is retried; [`AuditLog::recording`] is false meanwhile, which is
//! what `onFailure: failClosed` refuses tool calls on. Every `checkpoint_every` the head of the
//! chain is logged ([`Checkpoint`]). Events carry detector names with counts and a hash of the
//! arguments, never argument or result values.

pub mod chain;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::metrics::AuditMetrics;
use chain::Sealer;
pub use chain::{
    Checkpoint, GENESIS, VerifyError, VerifyOptions, VerifyReport, verify, verify_with,
};

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
    /// What the call cost at its target's `price` (a decimal in the portal's currency), when
    /// the target has a price or a budget applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<String>,
    /// The token counts were counted by the portal (tiktoken), the provider reported none (or
    /// the stream was cut before it did).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub estimated: bool,
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

/// How the chain is sealed and checkpointed.
#[derive(Clone, Debug)]
pub struct Options {
    /// Events the queue holds before [`AuditLog::log`] drops them.
    pub capacity: usize,
    /// Chain key: lines carry an HMAC-SHA256 `mac` instead of a plain `hash`.
    pub key: Option<Vec<u8>>,
    /// Time between checkpoints (taken only when lines were written since the last one).
    pub checkpoint_every: Duration,
    /// Counters the writer moves (registered by the portal's metrics).
    pub metrics: AuditMetrics,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            capacity: DEFAULT_CAPACITY,
            key: None,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            metrics: AuditMetrics::new(),
        }
    }
}

enum Msg {
    Event(Box<Event>),
    Flush(SyncSender<()>),
}

struct Shared {
    metrics: AuditMetrics,
    /// Every sink took everything it was given at the last write.
    healthy: AtomicBool,
    /// The queue was found full since the writer last drained it.
    overflow: AtomicBool,
    /// The last checkpoint, once one was taken.
    checkpoint: Mutex<Option<Checkpoint>>,
}

/// Handle to the audit writer. Cheap to clone; the writer thread ends when every handle is
/// dropped, after writing what was queued.
#[derive(Clone)]
pub struct AuditLog {
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
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

/// Default time between checkpoints.
pub const DEFAULT_CHECKPOINT_EVERY: Duration = Duration::from_secs(60);

/// Most bytes a failing sink keeps to write when it recovers. Events beyond it are dropped
/// (and counted) before they are sealed, so the chain has no hole.
pub const MAX_BACKLOG_BYTES: usize = 16 * 1024 * 1024;

/// Pause of the writer after each batch, so that events queue up instead of waking it one by
/// one. At 8,192 queued events this leaves room for over 4 million events per second.
const BATCH_PAUSE: Duration = Duration::from_millis(2);

/// How often a failing sink is retried.
const RETRY_EVERY: Duration = Duration::from_millis(200);

impl AuditLog {
    /// Starts a writer for `sinks` with the default [`Options`] (no key).
    pub fn new(sinks: Vec<Sink>) -> io::Result<AuditLog> {
        AuditLog::with_options(sinks, Options::default())
    }

    /// Starts a writer whose queue holds `capacity` events.
    pub fn with_capacity(sinks: Vec<Sink>, capacity: usize) -> io::Result<AuditLog> {
        AuditLog::with_options(
            sinks,
            Options {
                capacity,
                ..Options::default()
            },
        )
    }

    /// Starts a writer. File sinks are opened (created) now; the chain continues from the last
    /// line of the first file when that line was sealed the same way (same key, or none).
    pub fn with_options(sinks: Vec<Sink>, options: Options) -> io::Result<AuditLog> {
        let sealer = match &options.key {
            Some(k) => Sealer::keyed(k),
            None => Sealer::plain(),
        };
        let mut head = Head {
            seq: 0,
            prev: GENESIS.as_bytes().try_into().expect("64 zeros"),
        };
        let mut resumed = false;
        let mut outs = Vec::new();
        for s in sinks {
            let out = match s {
                Sink::Stdout => Out::Stdout,
                Sink::File(path) => {
                    if !resumed {
                        resumed = true;
                        if let Some(h) = last_head(&path, &sealer)? {
                            head = h;
                        }
                    }
                    Out::File(FileOut::open(path)?)
                }
                Sink::Writer(w) => Out::Writer(w),
            };
            outs.push(SinkState {
                out,
                backlog: Vec::new(),
                failing: false,
            });
        }
        let (tx, rx) = sync_channel(options.capacity.max(1));
        let shared = Arc::new(Shared {
            metrics: options.metrics.clone(),
            healthy: AtomicBool::new(true),
            overflow: AtomicBool::new(false),
            checkpoint: Mutex::new(None),
        });
        let writer = Writer {
            sinks: outs,
            sealer,
            head,
            shared: shared.clone(),
            checkpoint_every: options.checkpoint_every,
            checkpointed_seq: None,
        };
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))?;
        Ok(AuditLog { tx, shared })
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
                self.shared.overflow.store(true, Ordering::Relaxed);
                self.shared.metrics.events_dropped.inc();
            }
        }
    }

    /// Whether events are being recorded: every sink took what it was given at the last write
    /// and the queue has not overflowed since. Under `onFailure: failClosed` a tool call is
    /// refused while this is false.
    pub fn recording(&self) -> bool {
        self.shared.healthy.load(Ordering::Relaxed) && !self.shared.overflow.load(Ordering::Relaxed)
    }

    /// Waits until everything queued before this call was handed to the sinks (written and
    /// flushed, or kept in a failing sink's backlog). Blocks the calling thread: from async
    /// code use [`AuditLog::flush`].
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

    /// The counters the writer moves.
    pub fn metrics(&self) -> &AuditMetrics {
        &self.shared.metrics
    }

    /// The last checkpoint taken, if any.
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        self.shared
            .checkpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Events written so far.
    pub fn written(&self) -> u64 {
        self.shared.metrics.events_written.get()
    }

    /// Events dropped (queue full, or a failing sink's backlog at its bound).
    pub fn dropped(&self) -> u64 {
        self.shared.metrics.events_dropped.get()
    }

    /// Sink write failures.
    pub fn write_errors(&self) -> u64 {
        self.shared.metrics.write_errors.get()
    }
}

/// The chain's head: the `seq` the next line gets and the seal it links to.
struct Head {
    seq: u64,
    prev: [u8; 64],
}

enum Out {
    Stdout,
    File(FileOut),
    Writer(Box<dyn Write + Send>),
}

/// A file sink. The file is reopened when its path comes to name another file (removed,
/// rotated) or when it could not be written; bytes of a failed write are cut off again, so a
/// line is never left half written.
struct FileOut {
    path: PathBuf,
    file: Option<File>,
    /// Device and inode of the open file.
    id: (u64, u64),
    /// Length after the last complete write.
    len: u64,
}

impl FileOut {
    fn open(path: PathBuf) -> io::Result<FileOut> {
        let mut out = FileOut {
            path,
            file: None,
            id: (0, 0),
            len: 0,
        };
        out.reopen()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", out.path.display())))?;
        Ok(out)
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.file = None;
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let meta = f.metadata()?;
        self.id = (meta.dev(), meta.ino());
        self.len = if meta.is_file() { meta.len() } else { 0 };
        self.file = Some(f);
        Ok(())
    }

    /// Whether the path still names the open file.
    fn current(&self) -> bool {
        self.file.is_some()
            && std::fs::metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id)
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if !self.current() {
            if self.file.is_some() {
                tracing::warn!(path = %self.path.display(), "audit log file was removed or replaced: reopening it");
            }
            self.reopen()?;
        }
        let f = self.file.as_mut().expect("reopened");
        match f.write_all(bytes) {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Cut off what part of the batch made it, so the file ends with a whole line.
                // Not possible on every file (a device): then the next open starts over.
                if f.set_len(self.len).is_err() {
                    self.file = None;
                }
                Err(e)
            }
        }
    }
}

struct SinkState {
    out: Out,
    /// Sealed lines not yet written to this sink.
    backlog: Vec<u8>,
    failing: bool,
}

impl SinkState {
    fn write_backlog(&mut self) -> io::Result<()> {
        if self.backlog.is_empty() {
            return Ok(());
        }
        let bytes = &self.backlog[..];
        match &mut self.out {
            Out::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(bytes)?;
                out.flush()?;
            }
            Out::File(f) => f.write(bytes)?,
            Out::Writer(w) => {
                w.write_all(bytes)?;
                w.flush()?;
            }
        }
        self.backlog.clear();
        Ok(())
    }

    fn name(&self) -> String {
        match &self.out {
            Out::Stdout => "stdout".into(),
            Out::File(f) => f.path.display().to_string(),
            Out::Writer(_) => "writer".into(),
        }
    }
}

struct Writer {
    sinks: Vec<SinkState>,
    sealer: Sealer,
    head: Head,
    shared: Arc<Shared>,
    checkpoint_every: Duration,
    checkpointed_seq: Option<u64>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        // The line being sealed, reused for every event.
        let mut line = Vec::with_capacity(1024);
        let mut next_checkpoint = Instant::now() + self.checkpoint_every;
        loop {
            let now = Instant::now();
            let wait = if self.shared.healthy.load(Ordering::Relaxed) {
                next_checkpoint.saturating_duration_since(now)
            } else {
                RETRY_EVERY.min(next_checkpoint.saturating_duration_since(now))
            };
            let first = match rx.recv_timeout(wait) {
                Ok(msg) => Some(msg),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut acks = Vec::new();
            let mut next = first;
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Event(event) => self.seal(&event, &mut line),
                    Msg::Flush(ack) => acks.push(ack),
                }
                next = rx.try_recv().ok();
            }
            // Queue drained: it has room again.
            self.shared.overflow.store(false, Ordering::Relaxed);
            self.write_all();
            for ack in acks {
                let _ = ack.send(());
            }
            if Instant::now() >= next_checkpoint {
                self.checkpoint();
                next_checkpoint = Instant::now() + self.checkpoint_every;
            }
            // Under load, let events gather before the next batch: a writer parked on the
            // queue is woken by every event (a futex wake and a write per call), one that is
            // busy is not. Costs an event at most BATCH_PAUSE before it reaches the sinks.
            std::thread::sleep(BATCH_PAUSE);
        }
        self.write_all();
        self.checkpoint();
    }

    /// Seals `event` into every sink's backlog, or drops it (before it takes a `seq`) when a
    /// failing sink's backlog is full.
    fn seal(&mut self, event: &Event, line: &mut Vec<u8>) {
        if self
            .sinks
            .iter()
            .any(|s| s.backlog.len() >= MAX_BACKLOG_BYTES)
        {
            self.shared.metrics.events_dropped.inc();
            return;
        }
        write_unsealed(line, event, self.head.seq, &self.head.prev);
        self.sealer.seal_in_place(line, &mut self.head.prev);
        line.push(b'\n');
        for s in &mut self.sinks {
            s.backlog.extend_from_slice(line);
        }
        self.head.seq += 1;
        self.shared.metrics.events_written.inc();
    }

    /// Writes every sink's backlog; records whether all of them took it.
    fn write_all(&mut self) {
        let mut healthy = true;
        for s in &mut self.sinks {
            match s.write_backlog() {
                Ok(()) => {
                    if s.failing {
                        tracing::info!(sink = %s.name(), "audit sink writable again: its backlog was written");
                        s.failing = false;
                    }
                }
                Err(e) => {
                    self.shared.metrics.write_errors.inc();
                    if !s.failing {
                        tracing::error!(sink = %s.name(), error = %e, "audit sink cannot be written: events are kept and retried");
                        s.failing = true;
                    }
                    healthy = false;
                }
            }
        }
        self.shared.healthy.store(healthy, Ordering::Relaxed);
        self.shared.metrics.sink_up.set(i64::from(healthy));
    }

    /// Logs the chain's head when lines were written (to every sink) since the last
    /// checkpoint.
    fn checkpoint(&mut self) {
        let Some(seq) = self.head.seq.checked_sub(1) else {
            return;
        };
        if self.checkpointed_seq == Some(seq) || !self.shared.healthy.load(Ordering::Relaxed) {
            return;
        }
        let head = String::from_utf8(self.head.prev.to_vec()).expect("hex is ASCII");
        self.shared.metrics.checkpoint_sequence.set(seq as i64);
        self.shared.metrics.checkpoints.inc();
        tracing::info!(
            target: "portcullis::audit",
            checkpoint = %format_args!("{seq}:{head}"),
            "audit checkpoint (verify a log against it: portcullis-proxy audit verify FILE --checkpoint SEQ:HEAD)"
        );
        *self
            .shared
            .checkpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Checkpoint { seq, head });
        self.checkpointed_seq = Some(seq);
    }
}

/// The head of the chain in the regular file `path`, when its last line was sealed by
/// `sealer`; `None` for a missing, empty or non-regular file (a device such as /dev/stdout
/// reads forever), or one whose last line another key (or none) sealed: a new chain starts.
fn last_head(path: &Path, sealer: &Sealer) -> io::Result<Option<Head>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Ok(None);
    }
    let len = meta.len();
    let start = len.saturating_sub(256 * 1024);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(256 * 1024).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let Some(last) = text.lines().rev().find(|l| !l.is_empty()) else {
        return Ok(None);
    };
    match sealer.tail_of(last) {
        Some((seq, seal)) => Ok(Some(Head {
            seq: seq + 1,
            prev: seal.as_bytes().try_into().expect("a seal is 64 hex digits"),
        })),
        None => {
            tracing::warn!(
                path = %path.display(),
                keyed = sealer.is_keyed(),
                "the audit log's last line was not sealed with this chain's key (or was edited): a new chain starts at seq 0"
            );
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests;
