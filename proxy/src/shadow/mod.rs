//! Shadow-MCP discovery: finds MCP traffic in the HTTP request logs a security team already has
//! (nginx and Envoy JSON access logs, HAR files, JSON lines) and tells which destinations no
//! portal fronts.
//!
//! [`records`] reads the formats into [`Record`]s; [`classify`] scores each record against
//! [`rules`] (data: an embedded YAML file plus `--rules` files); [`Scanner`] runs files through
//! the classifier, marks hits whose destination is a sanctioned portal or McpServer, promotes
//! weak requests to destinations with confirmed MCP traffic (a legacy `GET /sse`) and sums up
//! per destination.

pub mod classify;
pub mod records;
pub mod rules;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use classify::{Classifier, Evidence, Signal, Verdict, host_name};
pub use records::{BadRecord, Body, Format, Record};
pub use rules::ClassifierRules;

use crate::config::Manifests;
use crate::error::Result;

/// Weak requests kept per destination while waiting for a confirmed hit there.
pub const MAX_PENDING_PER_DESTINATION: usize = 10_000;
/// Weak requests kept in all.
pub const MAX_PENDING: usize = 200_000;
/// Evidence strings kept per destination in the summary.
const MAX_SUMMARY_EVIDENCE: usize = 12;

/// Destinations whose MCP traffic is sanctioned: portals and the McpServers they front.
#[derive(Debug, Clone, Default)]
pub struct Sanctioned {
    /// `host` (any port) or `host:port` entries, lower-cased.
    entries: HashSet<String>,
    /// Where each entry came from, for people.
    pub sources: Vec<(String, String)>,
}

impl Sanctioned {
    /// Nothing sanctioned.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a host, `host:port` or URL. `source` says where it came from.
    pub fn add(&mut self, host_or_url: &str, source: &str) -> std::result::Result<(), String> {
        let s = host_or_url.trim();
        let entry = if s.contains("://") {
            let u = reqwest::Url::parse(s).map_err(|e| format!("{source}: {s:?}: {e}"))?;
            let host = u
                .host_str()
                .ok_or_else(|| format!("{source}: {s:?}: no host"))?;
            match u.port() {
                Some(p) => format!("{host}:{p}"),
                None => host.to_owned(),
            }
        } else {
            s.trim_end_matches('/').to_owned()
        };
        if entry.is_empty() || entry.contains('/') || entry.contains(char::is_whitespace) {
            return Err(format!("{source}: {s:?} is not a host, host:port or URL"));
        }
        let entry = entry.to_ascii_lowercase();
        self.sources.push((entry.clone(), source.to_owned()));
        self.entries.insert(entry);
        Ok(())
    }

    /// The hosts of every McpServer's `spec.remote.url` and `status.endpoint` and every
    /// McpPortal's `spec.publicUrl` and `status.url`.
    pub fn add_manifests(&mut self, m: &Manifests) -> std::result::Result<(), String> {
        for s in &m.servers {
            let name = s.metadata.name.clone().unwrap_or_default();
            if let Some(r) = &s.spec.remote {
                self.add(&r.url, &format!("McpServer/{name} spec.remote.url"))?;
            }
            if let Some(e) = s.status.as_ref().and_then(|st| st.endpoint.as_deref()) {
                self.add(e, &format!("McpServer/{name} status.endpoint"))?;
            }
        }
        for p in &m.portals {
            let name = p.metadata.name.clone().unwrap_or_default();
            if let Some(u) = &p.spec.public_url {
                self.add(u, &format!("McpPortal/{name} spec.publicUrl"))?;
            }
            if let Some(u) = p.status.as_ref().and_then(|st| st.url.as_deref()) {
                self.add(u, &format!("McpPortal/{name} status.url"))?;
            }
        }
        Ok(())
    }

    /// Whether traffic to `destination` (`host[:port]`) is sanctioned.
    pub fn contains(&self, destination: &str) -> bool {
        let d = destination.to_ascii_lowercase();
        self.entries.contains(&d) || self.entries.contains(host_name(&d))
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// One request classified as MCP.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// The input file.
    pub file: PathBuf,
    /// 1-based line (HAR: entry) number.
    pub line: usize,
    /// Destination (`host[:port]`).
    pub host: String,
    /// Request method.
    pub method: String,
    /// Path, without the query string (which may carry credentials).
    pub path: String,
    /// Confidence in [0, 1) (serialized rounded to 4 decimals).
    #[serde(serialize_with = "round4")]
    pub confidence: f64,
    /// Why.
    pub evidence: Vec<Evidence>,
    /// The destination is a known portal or McpServer.
    pub sanctioned: bool,
}

/// MCP traffic to one destination.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Destination {
    /// `host[:port]`.
    pub host: String,
    /// MCP requests.
    pub requests: u64,
    /// Highest confidence of its requests.
    #[serde(serialize_with = "round4")]
    pub confidence: f64,
    /// Distinct evidence seen (at most a dozen).
    pub evidence: BTreeSet<String>,
    /// A known portal or McpServer.
    pub sanctioned: bool,
}

/// What a scan found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// Files read.
    pub files: usize,
    /// Records read (good and bad).
    pub records: u64,
    /// Records that could not be read.
    pub bad_records: u64,
    /// MCP requests.
    pub hits: u64,
    /// MCP requests to destinations that are not sanctioned.
    pub shadow_hits: u64,
    /// Weak requests not kept for correlation because the buffer was full.
    pub uncorrelated: u64,
    /// Per destination, sorted by host.
    pub destinations: Vec<Destination>,
}

impl Report {
    /// Whether any MCP traffic goes to a destination that is not sanctioned.
    pub fn has_shadow(&self) -> bool {
        self.shadow_hits > 0
    }

    /// The per-destination summary as a table.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let width = self
            .destinations
            .iter()
            .map(|d| d.host.len())
            .max()
            .unwrap_or(0)
            .max(11);
        if !self.destinations.is_empty() {
            let _ = writeln!(
                out,
                "{:<width$}  {:>8}  {:>10}  {:<10}  EVIDENCE",
                "DESTINATION", "REQUESTS", "CONFIDENCE", "STATUS"
            );
        }
        for d in &self.destinations {
            let _ = writeln!(
                out,
                "{:<width$}  {:>8}  {:>10.2}  {:<10}  {}",
                d.host,
                d.requests,
                d.confidence,
                if d.sanctioned { "sanctioned" } else { "shadow" },
                d.evidence.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        let shadow = self.destinations.iter().filter(|d| !d.sanctioned).count();
        let _ = writeln!(
            out,
            "{} records in {} file(s), {} bad; {} MCP requests to {} destination(s): {} shadow, {} sanctioned",
            self.records,
            self.files,
            self.bad_records,
            self.hits,
            self.destinations.len(),
            shadow,
            self.destinations.len() - shadow
        );
        out
    }
}

/// Something the scan reports as it goes.
#[derive(Debug)]
pub enum Event<'a> {
    /// An MCP request.
    Hit(&'a Hit),
    /// A record that could not be read.
    Bad(&'a BadRecord),
}

/// Runs files through a [`Classifier`]; memory is bounded by the number of destinations and the
/// correlation buffer, not by the size of the input.
#[derive(Debug)]
pub struct Scanner {
    classifier: Classifier,
    sanctioned: Sanctioned,
    report: Report,
    destinations: BTreeMap<String, Destination>,
    pending: HashMap<String, Vec<Hit>>,
    pending_total: usize,
}

impl Scanner {
    /// A scanner over `classifier`, marking `sanctioned` destinations.
    pub fn new(classifier: Classifier, sanctioned: Sanctioned) -> Self {
        Self {
            classifier,
            sanctioned,
            report: Report::default(),
            destinations: BTreeMap::new(),
            pending: HashMap::new(),
            pending_total: 0,
        }
    }

    /// Reads and classifies every record of one file. Errors only when the file cannot be read
    /// or its format cannot be told; bad records are reported through `on` and counted.
    pub fn scan_file(
        &mut self,
        path: &Path,
        format: Format,
        on: &mut dyn FnMut(Event<'_>),
    ) -> Result<Format> {
        let file = path.to_path_buf();
        let format = records::read_file(path, format, &mut |line, record| {
            self.report.records += 1;
            match record {
                Ok(r) => self.scan_record(&file, line, &r, on),
                Err(message) => {
                    self.report.bad_records += 1;
                    on(Event::Bad(&BadRecord {
                        file: file.clone(),
                        line,
                        message,
                    }));
                }
            }
        })?;
        self.report.files += 1;
        Ok(format)
    }

    /// Classifies one record.
    pub fn scan_record(
        &mut self,
        file: &Path,
        line: usize,
        r: &Record,
        on: &mut dyn FnMut(Event<'_>),
    ) {
        let verdict = self.classifier.classify(r);
        let rules = self.classifier.rules();
        let corr = rules.correlation;
        let is_hit = verdict.confidence >= rules.threshold();
        let candidate = !is_hit && corr.weight > 0.0 && verdict.confidence >= corr.min_confidence;
        if !is_hit && !candidate {
            return;
        }
        let path = r.path.split('?').next().unwrap_or_default().to_owned();
        let mut hit = Hit {
            file: file.to_path_buf(),
            line,
            host: r.host.clone(),
            method: r.method.clone(),
            path,
            confidence: verdict.confidence,
            evidence: verdict.evidence,
            sanctioned: self.sanctioned.contains(&r.host),
        };
        if is_hit {
            self.record_hit(&hit, on);
            // Weak requests seen earlier at this destination are MCP too.
            if let Some(waiting) = self.pending.remove(&r.host) {
                self.pending_total -= waiting.len();
                for mut w in waiting {
                    promote(&mut w, corr.weight);
                    self.record_hit(&w, on);
                }
            }
        } else if self.destinations.contains_key(&r.host) {
            promote(&mut hit, corr.weight);
            self.record_hit(&hit, on);
        } else {
            let list = self.pending.entry(r.host.clone()).or_default();
            if list.len() < MAX_PENDING_PER_DESTINATION && self.pending_total < MAX_PENDING {
                list.push(hit);
                self.pending_total += 1;
            } else {
                self.report.uncorrelated += 1;
            }
        }
    }

    fn record_hit(&mut self, hit: &Hit, on: &mut dyn FnMut(Event<'_>)) {
        self.report.hits += 1;
        if !hit.sanctioned {
            self.report.shadow_hits += 1;
        }
        let d = self
            .destinations
            .entry(hit.host.clone())
            .or_insert_with(|| Destination {
                host: hit.host.clone(),
                requests: 0,
                confidence: 0.0,
                evidence: BTreeSet::new(),
                sanctioned: hit.sanctioned,
            });
        d.requests += 1;
        d.confidence = d.confidence.max(hit.confidence);
        for e in &hit.evidence {
            if d.evidence.len() >= MAX_SUMMARY_EVIDENCE {
                break;
            }
            if !d.evidence.contains(&e.detail) {
                d.evidence.insert(e.detail.clone());
            }
        }
        on(Event::Hit(hit));
    }

    /// The summary. Weak requests to destinations that never had a confirmed hit are dropped.
    pub fn finish(mut self) -> Report {
        self.report.destinations = std::mem::take(&mut self.destinations)
            .into_values()
            .collect();
        self.report
    }
}

fn round4<S: serde::Serializer>(v: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64((v * 1e4).round() / 1e4)
}

fn promote(hit: &mut Hit, weight: f64) {
    let mut v = Verdict {
        confidence: hit.confidence,
        evidence: std::mem::take(&mut hit.evidence),
    };
    v.add(
        Signal::Correlation,
        "destination has confirmed MCP traffic".into(),
        weight,
    );
    hit.confidence = v.confidence;
    hit.evidence = v.evidence;
}
