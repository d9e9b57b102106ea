//! LLM spend in McpPolicy status: the policy controller reads each bound portal's
//! `GET /admin/spend/summary?policy=NAME` (the portal Service's admin port) every
//! [`SpendOptions::interval`] and writes `status.spend`.
//!
//! - A figure is written only when it changed: an entry whose figures are unchanged keeps the
//!   entry, `observedAt` included, so a settled policy brings no status writes.
//! - A portal that cannot be read keeps its last figures, with `error` saying why, and the
//!   `SpendReported` condition turns `False` naming the portal: nothing is dropped silently.
//! - With the memory store each replica counts alone and the Service gives one replica's
//!   figures: the entry says `store: memory` and names the `replica` (documented on the field).
//!   Summing over the ready pods would need each pod's address and another read per pod; one
//!   counter per replica is what such a portal enforces anyway.
//!
//! The read is behind [`SpendFetcher`] so controller tests answer without a network;
//! [`HttpSpendFetcher`] is the real one.

use std::time::Duration;

use crds::budget::SpendSummary;
use crds::policy::PortalSpend;
use crds::{Condition, McpPortal};
use futures::future::BoxFuture;
use kube::ResourceExt;

use crate::names;
use crate::status::condition;

/// The condition type that says whether every bound portal's spend was read.
pub const SPEND_REPORTED: &str = "SpendReported";
/// Seconds between reads of a policy's spend, unless `--spend-interval-seconds` says otherwise.
pub const DEFAULT_INTERVAL_SECS: u64 = 60;
/// How long one read of a portal may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The most bytes of a portal's answer read (a summary of many budgets is still far below).
const MAX_ANSWER_BYTES: usize = 4 << 20;

/// Reads a portal's spend summary. A trait so controller tests can answer without a network.
pub trait SpendFetcher: Send + Sync {
    /// The summary at `url`; `Err` says why there is none (no answer, an error status, not a
    /// summary), in words fit for a status.
    fn fetch(&self, url: String) -> BoxFuture<'static, Result<SpendSummary, String>>;
}

/// How the policy controller reads spend.
#[derive(Clone)]
pub struct SpendOptions {
    /// The reader; `None` turns spend reading off (`--spend-interval-seconds 0`).
    pub fetcher: Option<std::sync::Arc<dyn SpendFetcher>>,
    /// Time between reads of a policy with budgets.
    pub interval: Duration,
}

impl Default for SpendOptions {
    fn default() -> Self {
        SpendOptions {
            fetcher: None,
            interval: Duration::from_secs(DEFAULT_INTERVAL_SECS),
        }
    }
}

impl std::fmt::Debug for SpendOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpendOptions")
            .field("enabled", &self.fetcher.is_some())
            .field("interval", &self.interval)
            .finish()
    }
}

/// Reads summaries over plain HTTP (the admin port is not TLS), honouring `HTTP_PROXY`.
#[derive(Debug, Clone)]
pub struct HttpSpendFetcher {
    http: reqwest::Client,
}

impl HttpSpendFetcher {
    /// A reader whose every read is bounded by `timeout`.
    pub fn new(timeout: Duration) -> Self {
        crate::probe::install_crypto_provider();
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(timeout)
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        HttpSpendFetcher { http }
    }
}

impl SpendFetcher for HttpSpendFetcher {
    fn fetch(&self, url: String) -> BoxFuture<'static, Result<SpendSummary, String>> {
        let http = self.http.clone();
        Box::pin(async move {
            let resp = http.get(&url).send().await.map_err(|e| {
                let why = if e.is_timeout() {
                    "no answer in time"
                } else if e.is_connect() {
                    "cannot connect"
                } else {
                    "request failed"
                };
                format!("GET {url}: {why}")
            })?;
            let status = resp.status();
            let body = resp
                .bytes()
                .await
                .map_err(|_| format!("GET {url}: the answer broke off"))?;
            if body.len() > MAX_ANSWER_BYTES {
                return Err(format!(
                    "GET {url}: the answer is over {MAX_ANSWER_BYTES} bytes"
                ));
            }
            if !status.is_success() {
                let text = String::from_utf8_lossy(&body);
                let text: String = text.chars().take(200).collect();
                return Err(format!("GET {url}: {status}: {}", text.trim()));
            }
            serde_json::from_slice(&body)
                .map_err(|e| format!("GET {url}: not a spend summary: {e}"))
        })
    }
}

/// The URL of `portal`'s spend summary for `policy`, through the portal's Service.
pub fn summary_url(portal: &McpPortal, policy: &str, cluster_domain: &str) -> String {
    format!(
        "http://{}.{}.svc.{cluster_domain}:{}/admin/spend/summary?policy={policy}",
        names::portal_object_name(&portal.name_any()),
        portal.namespace().unwrap_or_default(),
        names::ADMIN_PORT,
    )
}

/// The new `status.spend` of `policy` and its `SpendReported` condition, from the entries it
/// has (`old`) and what each bound portal answered (`reads`, by portal name) at `now` (RFC
/// 3339). Entries of portals no longer bound go; every bound portal has one, in name order.
pub fn merge(
    policy: &str,
    old: &[PortalSpend],
    mut reads: Vec<(String, Result<SpendSummary, String>)>,
    now: &str,
    generation: Option<i64>,
) -> (Vec<PortalSpend>, Condition) {
    reads.sort_by(|a, b| a.0.cmp(&b.0));
    let mut failed = Vec::new();
    let mut out = Vec::with_capacity(reads.len());
    for (portal, read) in reads {
        let before = old.iter().find(|e| e.portal == portal);
        out.push(match read {
            Ok(summary) => {
                let fresh = PortalSpend {
                    portal: portal.clone(),
                    store: Some(summary.store),
                    replica: summary.replica,
                    observed_at: Some(now.to_owned()),
                    error: None,
                    budgets: summary
                        .policies
                        .into_iter()
                        .find(|p| p.policy == policy)
                        .map(|p| p.budgets)
                        .unwrap_or_default(),
                };
                match before {
                    Some(b) if same_figures(b, &fresh) && b.error.is_none() => b.clone(),
                    _ => fresh,
                }
            }
            Err(error) => {
                failed.push(format!("{portal}: {error}"));
                let mut kept = before.cloned().unwrap_or_else(|| PortalSpend {
                    portal: portal.clone(),
                    ..PortalSpend::default()
                });
                kept.error = Some(error);
                kept
            }
        });
    }
    let cond = if failed.is_empty() {
        condition(
            SPEND_REPORTED,
            true,
            "Read",
            format!("spend read from {} portal(s)", out.len()),
            generation,
        )
    } else {
        condition(
            SPEND_REPORTED,
            false,
            "PortalUnreachable",
            format!(
                "could not read spend from {}; their figures are the last ones read (see observedAt)",
                failed.join("; ")
            ),
            generation,
        )
    };
    (out, cond)
}

/// Whether two entries hold the same figures (the time they were read aside).
fn same_figures(a: &PortalSpend, b: &PortalSpend) -> bool {
    a.store == b.store && a.replica == b.replica && a.budgets == b.budgets
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::budget::{BudgetSpend, PolicySpend, SpendAmount};

    fn summary(policy: &str, tokens: u64) -> SpendSummary {
        SpendSummary {
            portal: "p".into(),
            store: "redis".into(),
            replica: None,
            policies: vec![
                PolicySpend {
                    policy: "someone-else".into(),
                    budgets: vec![BudgetSpend::default()],
                },
                PolicySpend {
                    policy: policy.into(),
                    budgets: vec![BudgetSpend {
                        name: "daily".into(),
                        spent: Some(SpendAmount {
                            tokens: Some(tokens),
                            cost: Some("0".into()),
                        }),
                        ..Default::default()
                    }],
                },
            ],
        }
    }

    fn spent(e: &PortalSpend) -> Option<u64> {
        e.budgets[0].spent.as_ref().and_then(|s| s.tokens)
    }

    #[test]
    fn fresh_figures_are_taken_with_their_time_and_only_the_policys_own_budgets() {
        let (spend, cond) = merge(
            "team",
            &[],
            vec![
                ("b".into(), Ok(summary("team", 5))),
                ("a".into(), Ok(summary("team", 7))),
            ],
            "T1",
            Some(3),
        );
        assert_eq!(
            spend.iter().map(|e| e.portal.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(spent(&spend[0]), Some(7));
        assert_eq!(spend[0].budgets.len(), 1, "not another policy's budgets");
        assert_eq!(spend[0].observed_at.as_deref(), Some("T1"));
        assert_eq!(spend[0].store.as_deref(), Some("redis"));
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("True", "Read")
        );
        assert_eq!(cond.observed_generation, Some(3));
    }

    #[test]
    fn unchanged_figures_keep_their_entry_so_nothing_is_written() {
        let (first, _) = merge(
            "team",
            &[],
            vec![("a".into(), Ok(summary("team", 7)))],
            "T1",
            None,
        );
        let (again, _) = merge(
            "team",
            &first,
            vec![("a".into(), Ok(summary("team", 7)))],
            "T2",
            None,
        );
        assert_eq!(again, first, "observedAt stays T1");
        let (moved, _) = merge(
            "team",
            &first,
            vec![("a".into(), Ok(summary("team", 9)))],
            "T3",
            None,
        );
        assert_eq!(
            (spent(&moved[0]), moved[0].observed_at.as_deref()),
            (Some(9), Some("T3"))
        );
    }

    #[test]
    fn an_unreachable_portal_keeps_its_last_figures_with_the_error_and_a_false_condition() {
        let (first, _) = merge(
            "team",
            &[],
            vec![("a".into(), Ok(summary("team", 7)))],
            "T1",
            None,
        );
        let (spend, cond) = merge(
            "team",
            &first,
            vec![
                ("a".into(), Err("GET http://a: cannot connect".into())),
                (
                    "new".into(),
                    Err("GET http://new: no answer in time".into()),
                ),
            ],
            "T2",
            None,
        );
        assert_eq!(spent(&spend[0]), Some(7), "kept");
        assert_eq!(spend[0].observed_at.as_deref(), Some("T1"));
        assert_eq!(
            spend[0].error.as_deref(),
            Some("GET http://a: cannot connect")
        );
        assert_eq!(spend[1].portal, "new");
        assert!(spend[1].budgets.is_empty() && spend[1].observed_at.is_none());
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("False", "PortalUnreachable")
        );
        assert!(
            cond.message.contains("a: GET http://a: cannot connect"),
            "{}",
            cond.message
        );
        assert!(
            cond.message.contains("new: GET http://new"),
            "{}",
            cond.message
        );
        // Back: fresh figures, the error gone.
        let (back, cond) = merge(
            "team",
            &spend,
            vec![("a".into(), Ok(summary("team", 7)))],
            "T3",
            None,
        );
        assert_eq!(back.len(), 1, "the portal no longer bound is gone");
        assert_eq!(
            (back[0].error.as_deref(), back[0].observed_at.as_deref()),
            (None, Some("T3"))
        );
        assert_eq!(cond.status, "True");
    }
}
