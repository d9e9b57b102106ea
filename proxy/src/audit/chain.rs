//! The chain: how a line is sealed and how a log is verified.
//!
//! A line is the event's JSON object (fields in a fixed order, ending with `seq` and `prev`)
//! with its seal appended as the last member: `"hash"`, the lowercase hex SHA-256 of the line's
//! bytes *without* that member (the same text closed by `}` right after `prev`), or, when the
//! portal has a chain key (`spec.audit.keyFrom`), `"mac"`, the lowercase hex HMAC-SHA256 of the
//! same bytes under that key. `prev` is the seal of the line before; the first line of a chain
//! has `seq` 0 and `prev` = 64 zeros ([`GENESIS`]). Verification needs no parsing beyond
//! locating that suffix, so any byte edited in a line changes its seal; and without the key,
//! nobody can compute the `mac` of an edited line, so a keyed log cannot be rewritten and
//! re-chained unnoticed.

use std::io::BufRead;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// `prev` of the first line of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const HASH_KEY: &str = ",\"hash\":\"";
const MAC_KEY: &str = ",\"mac\":\"";

type HmacSha256 = Hmac<Sha256>;

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0; bytes.len() * 2];
    hex_into(bytes, &mut out);
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// Writes the lowercase hex of `bytes` to `out`, which holds exactly twice as many bytes.
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[(b >> 4) as usize];
        pair[1] = DIGITS[(b & 15) as usize];
    }
}

/// How lines are sealed: a plain hash, or an HMAC under a chain key.
#[derive(Clone)]
pub struct Sealer {
    /// The HMAC state after absorbing the key: cloned per line, so the key is not re-hashed.
    mac: Option<HmacSha256>,
}

impl std::fmt::Debug for Sealer {
    // The key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.mac.is_some() {
            "Sealer(hmac-sha256)"
        } else {
            "Sealer(sha256)"
        })
    }
}

impl Sealer {
    /// Seals with a plain SHA-256 (`hash`).
    pub fn plain() -> Sealer {
        Sealer { mac: None }
    }

    /// Seals with HMAC-SHA256 under `key` (`mac`).
    pub fn keyed(key: &[u8]) -> Sealer {
        Sealer {
            mac: Some(HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length")),
        }
    }

    /// Whether lines carry a `mac`.
    pub fn is_keyed(&self) -> bool {
        self.mac.is_some()
    }

    fn member(&self) -> &'static str {
        if self.is_keyed() { MAC_KEY } else { HASH_KEY }
    }

    fn digest(&self, unsealed: &[u8]) -> [u8; 32] {
        match &self.mac {
            Some(mac) => {
                let mut mac = mac.clone();
                mac.update(unsealed);
                mac.finalize().into_bytes().into()
            }
            None => Sha256::digest(unsealed).into(),
        }
    }

    /// Whether `seal` (lowercase hex) is this sealer's seal of `unsealed`. The comparison of
    /// MACs takes the same time wherever they differ.
    fn check(&self, unsealed: &[u8], seal: &str) -> bool {
        let mut expected = [0; 64];
        hex_into(&self.digest(unsealed), &mut expected);
        let mut diff = 0u8;
        for (a, b) in expected.iter().zip(seal.as_bytes()) {
            diff |= a ^ b;
        }
        seal.len() == 64 && diff == 0
    }

    /// Seals the JSON object `unsealed` (which must end with `}`): returns the line (without
    /// newline) and its seal.
    #[cfg(test)]
    pub(crate) fn seal(&self, unsealed: &str) -> (String, String) {
        let mut line = unsealed.as_bytes().to_vec();
        let mut seal = [0; 64];
        self.seal_in_place(&mut line, &mut seal);
        let line = String::from_utf8(line).expect("sealing keeps UTF-8");
        let seal = String::from_utf8(seal.to_vec()).expect("hex is ASCII");
        (line, seal)
    }

    /// Seals the JSON object in `line` (which must end with `}`) where it is, and writes its
    /// seal (lowercase hex) to `seal`.
    pub(crate) fn seal_in_place(&self, line: &mut Vec<u8>, seal: &mut [u8; 64]) {
        hex_into(&self.digest(&line[..]), seal);
        debug_assert_eq!(line.last(), Some(&b'}'));
        line.pop();
        line.extend_from_slice(self.member().as_bytes());
        line.extend_from_slice(seal);
        line.extend_from_slice(b"\"}");
    }

    /// The `seq` and seal of a line this sealer sealed (used to resume a chain from an existing
    /// file): `None` when the line is sealed otherwise (another key, no key) or was edited.
    pub(crate) fn tail_of(&self, line: &str) -> Option<(u64, String)> {
        let (unsealed, seal, keyed) = split(line)?;
        if keyed != self.is_keyed() || !self.check(unsealed.as_bytes(), seal) {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&unsealed).ok()?;
        Some((v.get("seq")?.as_u64()?, seal.to_string()))
    }
}

/// Seals with a plain hash (tests of the unkeyed format).
#[cfg(test)]
pub(crate) fn seal(unsealed: &str) -> (String, String) {
    Sealer::plain().seal(unsealed)
}

/// Splits a sealed line into its unsealed text, its seal, and whether the seal is a `mac`.
fn split(line: &str) -> Option<(String, &str, bool)> {
    let body = line.strip_suffix("\"}")?;
    let at = body.len().checked_sub(64)?;
    let seal = body.get(at..)?;
    if !seal.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let before = &body[..at];
    let (idx, keyed) = if let Some(rest) = before.strip_suffix(MAC_KEY) {
        (rest.len(), true)
    } else if let Some(rest) = before.strip_suffix(HASH_KEY) {
        (rest.len(), false)
    } else {
        return None;
    };
    let mut unsealed = String::with_capacity(idx + 1);
    unsealed.push_str(&line[..idx]);
    unsealed.push('}');
    Some((unsealed, seal, keyed))
}

/// Summary of a verified log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Lines verified.
    pub lines: usize,
    /// `seq` of the first line (non-zero when the file starts mid-chain, e.g. after rotation).
    pub first_seq: Option<u64>,
    /// `seq` of the last line.
    pub last_seq: Option<u64>,
    /// Seal of the last line: compare with a checkpoint to detect truncation.
    pub last_hash: Option<String>,
    /// Lines after the first that start a new chain (`seq` 0, `prev` genesis): process
    /// restarts without a file to resume from.
    pub restarts: usize,
    /// Whether the lines carry a `mac` (verified under a key) rather than a plain `hash`.
    pub keyed: bool,
}

/// A checkpoint of a chain: the `seq` and seal of its head when it was taken (the proxy logs
/// one every `spec.audit.checkpointSeconds`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// `seq` of the head line.
    pub seq: u64,
    /// Its seal (64 lowercase hex digits).
    pub head: String,
}

impl std::str::FromStr for Checkpoint {
    type Err = String;

    /// `SEQ:HEAD`, as the proxy's checkpoint log line prints it.
    fn from_str(s: &str) -> Result<Checkpoint, String> {
        let (seq, head) = s
            .split_once(':')
            .ok_or_else(|| format!("checkpoint {s:?}: expected SEQ:HEAD"))?;
        let seq = seq
            .parse()
            .map_err(|_| format!("checkpoint {s:?}: SEQ is not a whole number"))?;
        if head.len() != 64 || !head.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(format!(
                "checkpoint {s:?}: HEAD is not 64 lowercase hex digits"
            ));
        }
        Ok(Checkpoint {
            seq,
            head: head.to_owned(),
        })
    }
}

/// What a verification checks beyond the chain's own consistency.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Chain keys: when any is given, every line must carry a `mac` under one of them (more
    /// than one while a key is being rotated). Without keys, lines must carry a plain `hash`.
    pub keys: Vec<Vec<u8>>,
    /// A checkpoint the log must contain: a log cut after it fails.
    pub checkpoint: Option<Checkpoint>,
}

/// Why a log failed verification. Every variant names the 1-based line number; none quotes
/// the line's content.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The line is not a sealed audit line.
    #[error("line {line}: not a sealed audit line ({detail})")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        detail: &'static str,
    },
    /// The line's content does not match its seal.
    #[error("line {line}: content does not match its hash (the line was edited)")]
    Edited {
        /// 1-based line number.
        line: usize,
    },
    /// The line's content does not match its `mac` under any key given.
    #[error(
        "line {line}: content does not match its mac under the given key(s) (the line was edited or rewritten without the key, or the key is another)"
    )]
    BadMac {
        /// 1-based line number.
        line: usize,
    },
    /// A key was given but the line carries a plain hash: anyone could have written it.
    #[error(
        "line {line}: sealed with a plain hash, not a mac under the key (anyone who can write the file could have written it)"
    )]
    NotKeyed {
        /// 1-based line number.
        line: usize,
    },
    /// The line carries a `mac` but no key was given.
    #[error("line {line}: sealed with a mac: pass the chain key (--key FILE) to verify it")]
    KeyNeeded {
        /// 1-based line number.
        line: usize,
    },
    /// The line's `prev` is not the seal of the line before it.
    #[error(
        "line {line}: prev is not the hash of line {} (a line was deleted, inserted or reordered before it)",
        line - 1
    )]
    BrokenLink {
        /// 1-based line number.
        line: usize,
    },
    /// The line's `seq` does not follow the previous line's.
    #[error(
        "line {line}: seq {found} where {expected} was expected (a line was deleted or reordered)"
    )]
    SeqGap {
        /// 1-based line number.
        line: usize,
        /// The `seq` that would follow.
        expected: u64,
        /// The `seq` found.
        found: u64,
    },
    /// The checkpoint given is not in the log.
    #[error("checkpoint seq {seq}: {}", match last_seq {
        Some(last) if last < seq => format!("the log ends at seq {last} (its tail was cut off)"),
        Some(_) => "no line has that seq and head (the log was replaced or rewritten)".to_string(),
        None => "the log is empty".to_string(),
    })]
    CheckpointMissing {
        /// The checkpoint's `seq`.
        seq: u64,
        /// The log's last `seq`.
        last_seq: Option<u64>,
    },
    /// Reading failed.
    #[error("reading the audit log: {0}")]
    Io(#[from] std::io::Error),
}

impl VerifyError {
    /// The 1-based line number the error is about, if any.
    pub fn line(&self) -> Option<usize> {
        match self {
            VerifyError::Malformed { line, .. }
            | VerifyError::Edited { line }
            | VerifyError::BadMac { line }
            | VerifyError::NotKeyed { line }
            | VerifyError::KeyNeeded { line }
            | VerifyError::BrokenLink { line }
            | VerifyError::SeqGap { line, .. } => Some(*line),
            VerifyError::CheckpointMissing { .. } | VerifyError::Io(_) => None,
        }
    }
}

/// Verifies a log of plain-hash lines: every line's hash, `prev` links and `seq` continuity.
/// The first error is returned with its line number. A trailing empty line is allowed.
pub fn verify<R: BufRead>(reader: R) -> Result<VerifyReport, VerifyError> {
    verify_with(reader, &VerifyOptions::default())
}

/// [`verify`] with keys (every line must carry a `mac` under one of them) and a checkpoint
/// (the log must hold its head).
pub fn verify_with<R: BufRead>(
    reader: R,
    options: &VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    let sealers: Vec<Sealer> = if options.keys.is_empty() {
        vec![Sealer::plain()]
    } else {
        options.keys.iter().map(|k| Sealer::keyed(k)).collect()
    };
    let keyed = !options.keys.is_empty();
    let mut report = VerifyReport {
        lines: 0,
        first_seq: None,
        last_seq: None,
        last_hash: None,
        restarts: 0,
        keyed,
    };
    let mut checkpoint_seen = false;
    let mut pending_empty: Option<usize> = None;
    for (i, line) in reader.lines().enumerate() {
        let n = i + 1;
        let line = line?;
        if line.is_empty() {
            pending_empty.get_or_insert(n);
            continue;
        }
        if let Some(line) = pending_empty {
            return Err(VerifyError::Malformed {
                line,
                detail: "empty line",
            });
        }
        let Some((unsealed, seal, line_keyed)) = split(&line) else {
            return Err(VerifyError::Malformed {
                line: n,
                detail: "no trailing hash or mac member",
            });
        };
        match (keyed, line_keyed) {
            (true, false) => return Err(VerifyError::NotKeyed { line: n }),
            (false, true) => return Err(VerifyError::KeyNeeded { line: n }),
            _ => {}
        }
        if !sealers.iter().any(|s| s.check(unsealed.as_bytes(), seal)) {
            return Err(if keyed {
                VerifyError::BadMac { line: n }
            } else {
                VerifyError::Edited { line: n }
            });
        }
        let v: serde_json::Value =
            serde_json::from_str(&unsealed).map_err(|_| VerifyError::Malformed {
                line: n,
                detail: "not a JSON object",
            })?;
        let (Some(seq), Some(prev)) = (
            v.get("seq").and_then(|s| s.as_u64()),
            v.get("prev").and_then(|p| p.as_str()),
        ) else {
            return Err(VerifyError::Malformed {
                line: n,
                detail: "missing seq or prev",
            });
        };
        match (&report.last_hash, report.last_seq) {
            (None, _) => report.first_seq = Some(seq),
            (Some(last_hash), Some(last_seq)) => {
                if seq == 0 && prev == GENESIS {
                    report.restarts += 1;
                } else if prev != last_hash {
                    return Err(VerifyError::BrokenLink { line: n });
                } else if seq != last_seq + 1 {
                    return Err(VerifyError::SeqGap {
                        line: n,
                        expected: last_seq + 1,
                        found: seq,
                    });
                }
            }
            (Some(_), None) => unreachable!("hash and seq are recorded together"),
        }
        if let Some(c) = &options.checkpoint
            && c.seq == seq
            && c.head == seal
        {
            checkpoint_seen = true;
        }
        report.lines += 1;
        report.last_seq = Some(seq);
        report.last_hash = Some(seal.to_string());
    }
    if let Some(c) = &options.checkpoint
        && !checkpoint_seen
    {
        return Err(VerifyError::CheckpointMissing {
            seq: c.seq,
            last_seq: report.last_seq,
        });
    }
    Ok(report)
}
