//! The hash chain: how a line is sealed and how a log is verified.
//!
//! A line is the event's JSON object (fields in a fixed order, ending with `seq` and `prev`)
//! with `"hash"` appended as its last member. `hash` is the lowercase hex SHA-256 of the line's
//! bytes *without* the `,"hash":"…"` member (that is, the same text closed by `}` right after
//! `prev`). `prev` is the `hash` of the line before; the first line of a chain has `seq` 0 and
//! `prev` = 64 zeros ([`GENESIS`]). Verification needs no parsing beyond locating that suffix,
//! so any byte edited in a line changes its hash.

use std::io::BufRead;

use sha2::{Digest, Sha256};

/// `prev` of the first line of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const HASH_KEY: &str = ",\"hash\":\"";

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

/// Seals the JSON object `unsealed` (which must end with `}`): returns the line (without
/// newline) and its hash.
#[cfg(test)]
pub(crate) fn seal(unsealed: &str) -> (String, String) {
    let mut line = unsealed.as_bytes().to_vec();
    let mut hash = [0; 64];
    seal_in_place(&mut line, &mut hash);
    let line = String::from_utf8(line).expect("sealing keeps UTF-8");
    let hash = String::from_utf8(hash.to_vec()).expect("hex is ASCII");
    (line, hash)
}

/// Seals the JSON object in `line` (which must end with `}`) where it is, and writes its hash
/// (lowercase hex) to `hash`.
pub(crate) fn seal_in_place(line: &mut Vec<u8>, hash: &mut [u8; 64]) {
    hex_into(&Sha256::digest(&line[..]), hash);
    debug_assert_eq!(line.last(), Some(&b'}'));
    line.pop();
    line.extend_from_slice(HASH_KEY.as_bytes());
    line.extend_from_slice(hash);
    line.extend_from_slice(b"\"}");
}

/// The `seq` and `hash` of a sealed line whose own hash is consistent (used to resume a chain
/// from an existing file).
pub(crate) fn tail_of(line: &str) -> Option<(u64, String)> {
    let (unsealed, hash) = split(line)?;
    if hex(&Sha256::digest(unsealed.as_bytes())) != hash {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&unsealed).ok()?;
    Some((v.get("seq")?.as_u64()?, hash.to_string()))
}

fn split(line: &str) -> Option<(String, &str)> {
    let idx = line.rfind(HASH_KEY)?;
    let rest = &line[idx + HASH_KEY.len()..];
    let hash = rest.strip_suffix("\"}")?;
    if hash.len() != 64 || !hash.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut unsealed = String::with_capacity(idx + 1);
    unsealed.push_str(&line[..idx]);
    unsealed.push('}');
    Some((unsealed, hash))
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
    /// `hash` of the last line: compare with an externally kept head to detect truncation.
    pub last_hash: Option<String>,
    /// Lines after the first that start a new chain (`seq` 0, `prev` genesis): process
    /// restarts without a file to resume from.
    pub restarts: usize,
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
    /// The line's content does not match its hash.
    #[error("line {line}: content does not match its hash (the line was edited)")]
    Edited {
        /// 1-based line number.
        line: usize,
    },
    /// The line's `prev` is not the hash of the line before it.
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
            | VerifyError::BrokenLink { line }
            | VerifyError::SeqGap { line, .. } => Some(*line),
            VerifyError::Io(_) => None,
        }
    }
}

/// Verifies a log of sealed lines: every line's hash, `prev` links and `seq` continuity. The
/// first error is returned with its line number. A trailing empty line is allowed.
pub fn verify<R: BufRead>(reader: R) -> Result<VerifyReport, VerifyError> {
    let mut report = VerifyReport {
        lines: 0,
        first_seq: None,
        last_seq: None,
        last_hash: None,
        restarts: 0,
    };
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
        let Some((unsealed, hash)) = split(&line) else {
            return Err(VerifyError::Malformed {
                line: n,
                detail: "no trailing hash member",
            });
        };
        if hex(&Sha256::digest(unsealed.as_bytes())) != hash {
            return Err(VerifyError::Edited { line: n });
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
        report.lines += 1;
        report.last_seq = Some(seq);
        report.last_hash = Some(hash.to_string());
    }
    Ok(report)
}
