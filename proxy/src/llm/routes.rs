//! Which target a request goes to: the order of attempts on a route, which failures move on to
//! the next target, and the circuit breaker that skips a target that keeps failing. The
//! decisions are pure functions (the time and the random pick are parameters), so they are
//! tested without a provider.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crds::llm::LlmStrategy;

use crate::config::LlmRouteConfig;

/// Consecutive failover-class failures after which a target's breaker opens.
pub const BREAKER_FAILURES: u32 = 3;
/// How long an open breaker skips its target before one request may try it again.
pub const BREAKER_COOLDOWN: Duration = Duration::from_secs(30);

/// How one attempt on a target failed, when it failed in a way that moves on to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The provider answered 429, a 5xx or 529 (overloaded).
    Status(u16),
    /// No answer within the target's timeout.
    Timeout,
    /// The connection could not be made or broke before an answer.
    Connect,
}

impl Failure {
    /// A short label for audit events and metrics: `status_429`, `timeout`, `connect`.
    pub fn label(self) -> String {
        match self {
            Failure::Status(s) => format!("status_{s}"),
            Failure::Timeout => "timeout".into(),
            Failure::Connect => "connect".into(),
        }
    }
}

/// Whether a provider's HTTP status sends the request on to the next target: 429 (rate
/// limited), 5xx (including Anthropic's 529 overloaded). Anything else, a 400 content refusal
/// above all, is the provider's answer and goes back to the client: another provider would
/// refuse the same content, and failing over would hide a guardrail.
pub fn fails_over(status: u16) -> bool {
    status == 429 || (500..=599).contains(&status)
}

/// The targets of `route` in the order a request tries them. `open[i]`: target `i`'s breaker
/// is open (it is skipped). `pick`: a random number, used by a weighted route to choose its
/// first target in proportion to the weights. When every target is open they are all tried in
/// list order (a probe is better than a certain refusal).
pub fn attempt_order(route: &LlmRouteConfig, open: &[bool], pick: u64) -> Vec<usize> {
    let closed: Vec<usize> = (0..route.targets.len())
        .filter(|i| !open.get(*i).copied().unwrap_or(false))
        .collect();
    if closed.is_empty() {
        return (0..route.targets.len()).collect();
    }
    match route.strategy {
        LlmStrategy::Failover => closed,
        LlmStrategy::Weighted => {
            let total: u64 = closed
                .iter()
                .map(|i| u64::from(route.targets[*i].weight))
                .sum();
            let mut at = pick % total.max(1);
            let mut first = closed[0];
            for i in &closed {
                let w = u64::from(route.targets[*i].weight);
                if at < w {
                    first = *i;
                    break;
                }
                at -= w;
            }
            std::iter::once(first)
                .chain(closed.iter().copied().filter(|i| *i != first))
                .collect()
        }
    }
}

/// One target's breaker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Breaker {
    /// Failover-class failures in a row.
    pub failures: u32,
    /// Skipped until then.
    pub open_until: Option<Instant>,
}

impl Breaker {
    /// Whether the target is skipped at `now`.
    pub fn is_open(&self, now: Instant) -> bool {
        self.open_until.is_some_and(|t| now < t)
    }

    /// After an attempt at `now`: `failed` when it failed in a failover-class way. The
    /// [`BREAKER_FAILURES`]th failure in a row opens the breaker for [`BREAKER_COOLDOWN`]; a
    /// failure of the probe after the cool-down opens it again at once; any answer closes it.
    pub fn record(&mut self, failed: bool, now: Instant) {
        if failed {
            self.failures = self.failures.saturating_add(1);
            if self.failures >= BREAKER_FAILURES {
                self.open_until = Some(now + BREAKER_COOLDOWN);
            }
        } else {
            *self = Breaker::default();
        }
    }
}

/// The breakers of every target, keyed by what identifies the endpoint (provider, base URL,
/// model): a target that appears in two routes is one endpoint.
#[derive(Debug, Default)]
pub struct Breakers {
    map: Mutex<HashMap<String, Breaker>>,
}

impl Breakers {
    /// Which of `keys` are open at `now`.
    pub fn open(&self, keys: &[String], now: Instant) -> Vec<bool> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        keys.iter()
            .map(|k| map.get(k).is_some_and(|b| b.is_open(now)))
            .collect()
    }

    /// Records an attempt's result.
    pub fn record(&self, key: &str, failed: bool, now: Instant) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if failed {
            map.entry(key.to_owned()).or_default().record(true, now);
        } else {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LlmTargetConfig;
    use crds::llm::LlmProvider;

    fn route(strategy: LlmStrategy, weights: &[u32]) -> LlmRouteConfig {
        LlmRouteConfig {
            alias: "fast".into(),
            strategy,
            targets: weights
                .iter()
                .enumerate()
                .map(|(i, w)| LlmTargetConfig {
                    provider: LlmProvider::OpenAiCompatible,
                    base_url: format!("http://127.0.0.1:{i}"),
                    model: "m".into(),
                    api_key: None,
                    weight: *w,
                    timeout: Duration::from_secs(1),
                    price: None,
                })
                .collect(),
        }
    }

    #[test]
    fn failover_only_on_rate_limits_server_errors_and_overload() {
        for s in [429, 500, 502, 503, 504, 529] {
            assert!(fails_over(s), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 408, 413, 422] {
            assert!(!fails_over(s), "{s}");
        }
    }

    #[test]
    fn a_failover_route_tries_targets_in_list_order_skipping_open_breakers() {
        let r = route(LlmStrategy::Failover, &[1, 1, 1]);
        assert_eq!(attempt_order(&r, &[false; 3], 7), [0, 1, 2]);
        assert_eq!(attempt_order(&r, &[true, false, false], 7), [1, 2]);
        // Everything open: probe them all rather than refuse.
        assert_eq!(attempt_order(&r, &[true; 3], 7), [0, 1, 2]);
    }

    #[test]
    fn a_weighted_route_picks_the_first_target_by_weight_then_fails_over_in_order() {
        let r = route(LlmStrategy::Weighted, &[1, 3, 1]);
        let firsts: Vec<usize> = (0..5)
            .map(|p| attempt_order(&r, &[false; 3], p)[0])
            .collect();
        assert_eq!(firsts, [0, 1, 1, 1, 2]);
        assert_eq!(attempt_order(&r, &[false; 3], 2), [1, 0, 2]);
        // An open target takes no share.
        assert_eq!(attempt_order(&r, &[false, true, false], 1), [2, 0]);
    }

    #[test]
    fn the_breaker_opens_after_three_failures_in_a_row_and_closes_on_an_answer() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        b.record(true, t0);
        b.record(true, t0);
        assert!(!b.is_open(t0));
        b.record(false, t0);
        b.record(true, t0);
        b.record(true, t0);
        assert!(!b.is_open(t0), "an answer in between resets the count");
        b.record(true, t0);
        assert!(b.is_open(t0 + Duration::from_secs(29)));
        let later = t0 + BREAKER_COOLDOWN;
        assert!(!b.is_open(later), "retried after the cool-down");
        b.record(true, later);
        assert!(b.is_open(later), "a failed probe opens it again at once");
        b.record(false, later);
        assert_eq!(b, Breaker::default());
    }

    #[test]
    fn breakers_are_shared_by_endpoint_key() {
        let t0 = Instant::now();
        let bs = Breakers::default();
        for _ in 0..BREAKER_FAILURES {
            bs.record("a", true, t0);
        }
        assert_eq!(bs.open(&["a".into(), "b".into()], t0), [true, false]);
        bs.record("a", false, t0);
        assert_eq!(bs.open(&["a".into()], t0), [false]);
    }
}
