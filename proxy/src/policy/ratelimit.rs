//! Per-subject token buckets: one per (subject, portal) and one per (subject, tool).
//!
//! The buckets here live in this process: with N replicas behind a Service without affinity a
//! subject gets up to N times the configured rate. With `spec.rateLimitStore` the portal keeps
//! the same buckets in Redis instead (the portal's limiter), and these decide only while
//! Redis cannot be reached (`onUnavailable: perReplica`). Anonymous users of a public portal
//! are never limited ([`super::PolicySet::limits`] gives them none).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::RateLimits;

/// Most buckets kept; past it, full (idle) buckets are dropped.
const MAX_BUCKETS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant, per_minute: u32, burst: u32) {
        let rate = f64::from(per_minute) / 60.0;
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(burst.max(1)));
        self.last = now;
    }

    fn wait(&self, per_minute: u32) -> Duration {
        let rate = f64::from(per_minute.max(1)) / 60.0;
        Duration::from_secs_f64(((1.0 - self.tokens).max(0.0) / rate).min(3600.0))
    }
}

/// Which limit refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Calls per minute per subject on the portal.
    Portal,
    /// Calls per minute per subject per tool.
    Tool,
}

/// A refused call: which limit, its rate, and when a token will be available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimited {
    /// The limit that refused.
    pub scope: Scope,
    /// Its sustained rate.
    pub per_minute: u32,
    /// Time until the next call would be accepted.
    pub retry_after: Duration,
}

impl std::fmt::Display for RateLimited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.scope {
            Scope::Portal => "calls per minute on this portal",
            Scope::Tool => "calls per minute to this tool",
        };
        write!(
            f,
            "Rate limit exceeded: {} {what}; retry in {} ms",
            self.per_minute,
            self.retry_after.as_millis().max(1)
        )
    }
}

/// One bucket a call takes a token from: its scope, the tool it counts (`None`: the portal
/// bucket), its sustained rate and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketSpec<'a> {
    /// Which limit.
    pub scope: Scope,
    /// The tool of a per-tool bucket.
    pub tool: Option<&'a str>,
    /// Sustained calls per minute.
    pub per_minute: u32,
    /// Bucket size (at least 1).
    pub burst: u32,
}

/// The buckets a call of `tool` takes a token from under `limits` (none, one or two; the
/// portal bucket first).
pub fn buckets<'a>(tool: &'a str, limits: &RateLimits) -> Vec<BucketSpec<'a>> {
    let portal = limits.calls_per_minute.map(|r| BucketSpec {
        scope: Scope::Portal,
        tool: None,
        per_minute: r,
        burst: limits.burst.unwrap_or(r).max(1),
    });
    let per_tool = limits.calls_per_minute_per_tool.map(|r| BucketSpec {
        scope: Scope::Tool,
        tool: Some(tool),
        per_minute: r,
        burst: limits.tool_burst.unwrap_or(r).max(1),
    });
    portal.into_iter().chain(per_tool).collect()
}

/// The token buckets of one portal.
#[derive(Debug, Default)]
pub struct RateLimiter {
    /// (subject, "" for the portal bucket or "\u{1}" + tool name) -> bucket.
    buckets: Mutex<HashMap<(String, String), Bucket>>,
}

impl RateLimiter {
    /// Takes one token from the subject's portal bucket and from its bucket for `tool`, or
    /// neither when either is empty.
    pub fn check(&self, subject: &str, tool: &str, limits: &RateLimits) -> Result<(), RateLimited> {
        self.check_at(subject, tool, limits, Instant::now())
    }

    fn check_at(
        &self,
        subject: &str,
        tool: &str,
        limits: &RateLimits,
        now: Instant,
    ) -> Result<(), RateLimited> {
        let specs = buckets(tool, limits);
        if specs.is_empty() {
            return Ok(());
        }
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() > MAX_BUCKETS {
            buckets.retain(|_, b| now.saturating_duration_since(b.last) < Duration::from_secs(600));
            if buckets.len() > MAX_BUCKETS {
                buckets.clear();
            }
        }
        let wanted: Vec<_> = specs
            .iter()
            .map(|b| {
                let key = b.tool.map_or_else(String::new, |t| format!("\u{1}{t}"));
                (b.scope, key, b.per_minute, b.burst)
            })
            .collect();
        for (scope, key, per_minute, burst) in &wanted {
            let b = buckets
                .entry((subject.to_owned(), key.clone()))
                .or_insert(Bucket {
                    tokens: f64::from((*burst).max(1)),
                    last: now,
                });
            b.refill(now, *per_minute, *burst);
            if b.tokens < 1.0 {
                return Err(RateLimited {
                    scope: *scope,
                    per_minute: *per_minute,
                    retry_after: b.wait(*per_minute),
                });
            }
        }
        for (_, key, _, _) in &wanted {
            if let Some(b) = buckets.get_mut(&(subject.to_owned(), key.clone())) {
                b.tokens -= 1.0;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(portal: Option<u32>, tool: Option<u32>, burst: Option<u32>) -> RateLimits {
        RateLimits {
            calls_per_minute: portal,
            calls_per_minute_per_tool: tool,
            burst: burst.or(portal),
            tool_burst: burst.or(tool),
        }
    }

    #[test]
    fn a_burst_is_served_then_calls_are_refused_until_tokens_refill() {
        let rl = RateLimiter::default();
        let l = limits(Some(60), None, Some(3));
        let t0 = Instant::now();
        for _ in 0..3 {
            rl.check_at("alice", "t", &l, t0).unwrap();
        }
        let e = rl.check_at("alice", "t", &l, t0).unwrap_err();
        assert_eq!(e.scope, Scope::Portal);
        assert!(e.retry_after <= Duration::from_secs(1), "{e:?}");
        assert!(
            e.to_string()
                .contains("Rate limit exceeded: 60 calls per minute on this portal")
        );
        // Another subject has its own bucket.
        rl.check_at("bob", "t", &l, t0).unwrap();
        // One second later one token (60/min) is back.
        rl.check_at("alice", "t", &l, t0 + Duration::from_millis(1001))
            .unwrap();
        rl.check_at("alice", "t", &l, t0 + Duration::from_millis(1002))
            .unwrap_err();
    }

    #[test]
    fn per_tool_limits_are_per_tool_and_a_refusal_takes_no_portal_token() {
        let rl = RateLimiter::default();
        let l = limits(Some(10), Some(1), Some(1));
        let l = RateLimits {
            burst: Some(10),
            ..l
        };
        let t0 = Instant::now();
        rl.check_at("a", "x", &l, t0).unwrap();
        assert_eq!(
            rl.check_at("a", "x", &l, t0).unwrap_err().scope,
            Scope::Tool
        );
        // 1 portal token taken so far; 9 left for other tools.
        for i in 0..9 {
            rl.check_at("a", &format!("y{i}"), &l, t0).unwrap();
        }
        assert_eq!(
            rl.check_at("a", "z", &l, t0).unwrap_err().scope,
            Scope::Portal
        );
    }

    #[test]
    fn no_limits_means_no_buckets() {
        let rl = RateLimiter::default();
        for _ in 0..1000 {
            rl.check("a", "x", &RateLimits::default()).unwrap();
        }
        assert!(rl.buckets.lock().unwrap().is_empty());
    }
}
