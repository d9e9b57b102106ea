//! Token and money budgets of the LLM gateway (McpPolicy `budgets`): which counters a call is
//! charged to, reserving its worst case before it is sent and settling what it used after.
//!
//! - [`account`]: pure rules (windows and slots, admission, time to reset).
//! - [`estimate`]: tiktoken counts (a prompt's worst case; an answer when a provider reports no
//!   usage).
//! - [`memory`] and [`redis`]: the stores. Both apply [`account::admit`] atomically over every
//!   counter of a call (one lock; one Lua script).
//! - [`summary`]: every budget's spend without naming subjects (`GET /admin/spend/summary`,
//!   what the operator writes into McpPolicy status).
//!
//! The flow of a call ([`Ledger::reserve`], [`Hold::settle`]): the worst case is the counted
//! prompt plus the client's `max_tokens` (or, when it sets none, [`DEFAULT_OUTPUT_TOKENS`], or
//! less when less is left: the portal then sets `max_tokens` on the provider request to what it
//! reserved, so the worst case holds). A call is admitted when spent + reserved + worst case
//! fits every hard counter, and is charged what the provider reports (estimated with tiktoken
//! when it reports nothing). A call that ends without an answer is charged nothing; a
//! reservation never settled (its replica died) is charged in full after
//! [`RESERVATION_TTL_SECS`].

pub mod account;
pub mod estimate;
pub mod memory;
pub mod redis;
pub mod summary;

use std::sync::Arc;

use async_trait::async_trait;
use crds::McpPolicy;
use crds::budget::{BudgetScope, Enforcement, OnUnavailable};
use crds::glob::Glob;

use crate::config::PriceConfig;
use crate::model::Identity;
use account::{Amount, CounterRef, Limit, Snapshot, Window};

/// How long a reservation lives unsettled before it is charged in full.
pub const RESERVATION_TTL_SECS: i64 = 3600;
/// Completion tokens reserved for a call whose client sets no `max_tokens` (fewer when fewer
/// are left under a hard budget).
pub const DEFAULT_OUTPUT_TOKENS: u64 = 4096;
/// Fewest completion tokens worth admitting a call for.
pub const MIN_OUTPUT_TOKENS: u64 = 1;

/// The store could not be reached (or answered nonsense).
#[derive(Debug, Clone, thiserror::Error)]
#[error("budget store unavailable: {0}")]
pub struct StoreError(pub String);

/// What a store's reserve did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserve {
    /// Reserved on every counter; the states before the reservation.
    Admitted(Vec<Snapshot>),
    /// Refused by counter `index`; nothing was reserved.
    Refused {
        /// The counter that refused.
        index: usize,
        /// Every counter's state.
        states: Vec<Snapshot>,
    },
}

/// Where counters live. Each operation is atomic over all the counters given.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Reserves `need` under `id` on every counter, unless it does not fit a hard one.
    async fn reserve(
        &self,
        counters: &[CounterRef],
        id: &str,
        need: Amount,
        now: i64,
    ) -> Result<Reserve, StoreError>;
    /// Ends reservation `id`, charging `used` (nothing if the reservation expired and was
    /// charged in full already); the states after.
    async fn settle(
        &self,
        counters: &[CounterRef],
        id: &str,
        used: Amount,
        now: i64,
    ) -> Result<Vec<Snapshot>, StoreError>;
    /// The counters' states.
    async fn snapshot(
        &self,
        counters: &[CounterRef],
        now: i64,
    ) -> Result<Vec<Snapshot>, StoreError>;
    /// The scope keys (`u:<subject>`) of the `user` counters whose keys start with `rule`
    /// (`<policy>/<budget>/<window id>/`) and that may hold spend or a reservation at `now`:
    /// at most `cap` of them, and how many there are in all. For the spend summary
    /// ([`summary`]). Redis reads the budget's own index, never a SCAN of the database; the
    /// memory store makes one pass over this replica's counters under its lock.
    async fn users(
        &self,
        rule: &str,
        now: i64,
        cap: usize,
    ) -> Result<(Vec<String>, usize), StoreError>;
}

/// One policy budget, compiled.
#[derive(Debug)]
struct Rule {
    policy: McpPolicy,
    /// The budget as declared.
    spec: crds::budget::Budget,
    /// `<policy>/<budget>`.
    name: String,
    scope: BudgetScope,
    group: Option<String>,
    models: Vec<Glob>,
    window: Window,
    limit: Limit,
    hard: bool,
}

/// The budgets of a portal's policies.
#[derive(Debug, Default)]
pub struct Budgets {
    rules: Vec<Rule>,
}

impl Budgets {
    /// The budgets of `policies` (a budget the validation refuses is skipped: the reader
    /// refused the manifests before).
    pub fn of(policies: &[McpPolicy]) -> Budgets {
        let mut rules = Vec::new();
        for p in policies {
            for b in &p.spec.budgets {
                let Some(window) = Window::of(&b.window) else {
                    continue;
                };
                rules.push(Rule {
                    policy: p.clone(),
                    spec: b.clone(),
                    name: format!("{}/{}", p.metadata.name.as_deref().unwrap_or(""), b.name),
                    scope: b.scope,
                    group: b.group.clone(),
                    models: b.models.iter().map(|g| Glob::new(g)).collect(),
                    window,
                    limit: Limit {
                        tokens: b.tokens,
                        cost: b.cost.as_deref().and_then(crds::budget::parse_money),
                    },
                    hard: b.enforcement == Enforcement::Hard,
                });
            }
        }
        Budgets { rules }
    }

    /// Whether any budget is declared.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The counters a call by `identity` on `alias` is charged to (`None`: every budget that
    /// applies to the identity, whatever the alias; for the spend query).
    pub fn counters(&self, identity: &Identity, alias: Option<&str>) -> Vec<CounterRef> {
        let mut out = Vec::new();
        for r in &self.rules {
            if let Some(a) = alias
                && !r.models.is_empty()
                && !r.models.iter().any(|g| g.matches(a))
            {
                continue;
            }
            let scope = match r.scope {
                BudgetScope::User => format!("u:{}", identity.subject),
                BudgetScope::Group => match &r.group {
                    Some(g) if identity.groups.iter().any(|x| x == g) => format!("g:{g}"),
                    _ => continue,
                },
                BudgetScope::Portal => "p".into(),
            };
            if !crate::policy::covers(&r.policy, identity) {
                continue;
            }
            out.push(CounterRef {
                key: format!("{}/{}/{}", r.name, r.window.id(), scope),
                budget: r.name.clone(),
                window: r.window,
                limit: r.limit,
                hard: r.hard,
            });
        }
        out
    }
}

/// The cost of `input` prompt tokens (`cached` of them from the cache) and `output` completion
/// tokens at `price` (nano-units, rounded up).
pub fn cost(price: Option<&PriceConfig>, input: u64, cached: u64, output: u64) -> u64 {
    let Some(p) = price else { return 0 };
    let cached = cached.min(input);
    let total = u128::from(input - cached) * u128::from(p.input)
        + u128::from(cached) * u128::from(p.cached_input)
        + u128::from(output) * u128::from(p.output);
    u64::try_from(total.div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// The dearest price per dimension among `prices` (the target that will serve a call is not
/// known before failover): a worst case.
pub fn dearest<'a>(prices: impl Iterator<Item = Option<&'a PriceConfig>>) -> Option<PriceConfig> {
    let mut out: Option<PriceConfig> = None;
    for p in prices.flatten() {
        let o = out.get_or_insert_default();
        o.input = o.input.max(p.input).max(p.cached_input);
        o.output = o.output.max(p.output);
        o.cached_input = o.input;
    }
    out
}

/// What a call's reservation came to.
#[derive(Debug)]
pub enum Admission {
    /// No budget applies to the call.
    Free,
    /// Reserved; settle the hold when the call ends.
    Admitted(Hold),
    /// A hard budget has no room.
    Refused {
        /// `<policy>/<budget>`.
        budget: String,
        /// Tokens or money.
        tokens: bool,
        /// Seconds to the window's reset (or until room frees up, for a rolling window).
        retry_after: u64,
    },
    /// The store is unreachable and the call must not be served (fail closed).
    Unavailable(StoreError),
    /// The store is unreachable and the call is served uncounted (fail open).
    Unmetered(StoreError),
}

/// The budget side of one gateway: its rules, its store and what to do when the store is
/// unreachable.
#[derive(Debug)]
pub struct Ledger {
    store: Arc<dyn Store>,
    on_unavailable: Option<OnUnavailable>,
}

impl Ledger {
    /// A ledger over `store`.
    pub fn new(store: Arc<dyn Store>, on_unavailable: Option<OnUnavailable>) -> Ledger {
        Ledger {
            store,
            on_unavailable,
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Reserves a call's worst case on `counters`: `input` counted prompt tokens, `max_output`
    /// the client's `max_tokens` (`None`: [`DEFAULT_OUTPUT_TOKENS`] or what is left), priced
    /// at `price` (the dearest of the route's targets).
    pub async fn reserve(
        &self,
        counters: Vec<CounterRef>,
        input: u64,
        max_output: Option<u64>,
        price: Option<PriceConfig>,
        now: i64,
    ) -> Admission {
        if counters.is_empty() {
            return Admission::Free;
        }
        let id = format!("{:032x}", rand::random::<u128>());
        let mut output = max_output.unwrap_or(DEFAULT_OUTPUT_TOKENS);
        let any_hard = counters.iter().any(|c| c.hard);
        for _ in 0..3 {
            let need = Amount {
                tokens: input.saturating_add(output),
                cost: cost(price.as_ref(), input, 0, output),
            };
            match self.store.reserve(&counters, &id, need, now).await {
                Ok(Reserve::Admitted(_)) => {
                    return Admission::Admitted(Hold {
                        store: self.store.clone(),
                        counters,
                        id,
                        input,
                        output,
                        set_max: any_hard && max_output.is_none(),
                        open: true,
                    });
                }
                Ok(Reserve::Refused { index, states }) => {
                    let refusal = || {
                        let c = &counters[index];
                        let s = &states[index];
                        Admission::Refused {
                            budget: c.budget.clone(),
                            tokens: !c.limit.tokens.is_none_or(|t| {
                                s.committed().tokens.saturating_add(need.tokens) <= t
                            }),
                            retry_after: account::retry_after(c, s, now),
                        }
                    };
                    if max_output.is_some() {
                        return refusal();
                    }
                    // No max_tokens from the client: admit it for what is left, if enough is.
                    let room = account::room(&counters, &states);
                    let by_tokens = room.tokens.saturating_sub(input);
                    let in_cost = cost(price.as_ref(), input, 0, 0);
                    let by_cost = match price.as_ref().map(|p| p.output).filter(|p| *p > 0) {
                        Some(per_m) => u64::try_from(
                            u128::from(room.cost.saturating_sub(in_cost)) * 1_000_000
                                / u128::from(per_m),
                        )
                        .unwrap_or(u64::MAX),
                        None if room.cost < in_cost => 0,
                        None => u64::MAX,
                    };
                    let fits = output.min(by_tokens).min(by_cost);
                    if fits < MIN_OUTPUT_TOKENS || fits >= output {
                        return refusal();
                    }
                    output = fits;
                }
                Err(e) => {
                    let closed = match self.on_unavailable {
                        Some(OnUnavailable::FailClosed) => true,
                        Some(OnUnavailable::FailOpen) => false,
                        None => any_hard,
                    };
                    return if closed {
                        Admission::Unavailable(e)
                    } else {
                        Admission::Unmetered(e)
                    };
                }
            }
        }
        Admission::Refused {
            budget: counters[0].budget.clone(),
            tokens: true,
            retry_after: 1,
        }
    }
}

/// A call's reservation. [`Hold::settle`] charges what it used; a hold dropped unsettled (the
/// call ended without an answer) is released, charging nothing.
#[derive(Debug)]
pub struct Hold {
    store: Arc<dyn Store>,
    counters: Vec<CounterRef>,
    id: String,
    /// Counted prompt tokens.
    pub input: u64,
    /// Completion tokens reserved.
    pub output: u64,
    /// The client set no `max_tokens` and a hard budget applies: the provider request gets
    /// `max_tokens` = [`Hold::output`].
    pub set_max: bool,
    open: bool,
}

impl Hold {
    /// The counters charged.
    pub fn counters(&self) -> &[CounterRef] {
        &self.counters
    }

    /// Whether a hard budget applies.
    pub fn hard(&self) -> bool {
        self.counters.iter().any(|c| c.hard)
    }

    /// Charges `used`; the counters' states after (for soft-limit warnings).
    pub async fn settle(mut self, used: Amount, now: i64) -> Result<Vec<Snapshot>, StoreError> {
        self.open = false;
        self.store.settle(&self.counters, &self.id, used, now).await
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        let (store, counters, id) = (
            self.store.clone(),
            std::mem::take(&mut self.counters),
            std::mem::take(&mut self.id),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = store.settle(&counters, &id, Amount::default(), now()).await;
            });
        }
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use memory::MemoryStore;

    fn counters(tokens: u64) -> Vec<CounterRef> {
        vec![CounterRef {
            key: "p/b/d/u:alice".into(),
            budget: "p/b".into(),
            window: Window::Calendar(crds::budget::CalendarWindow::Day),
            limit: Limit {
                tokens: Some(tokens),
                cost: None,
            },
            hard: true,
        }]
    }

    #[test]
    fn cost_prices_uncached_cached_and_output_tokens_apart_rounding_up() {
        let p = PriceConfig {
            input: 2_500_000_000,
            output: 10_000_000_000,
            cached_input: 1_250_000_000,
        };
        // 1M uncached in, 1M cached in, 1M out.
        assert_eq!(
            cost(Some(&p), 2_000_000, 1_000_000, 1_000_000),
            13_750_000_000
        );
        assert_eq!(cost(Some(&p), 1, 0, 0), 2_500);
        assert_eq!(cost(None, 1_000, 0, 1_000), 0);
        let d = dearest(
            [
                Some(&p),
                None,
                Some(&PriceConfig {
                    input: 1,
                    output: 20_000_000_000,
                    cached_input: 1,
                }),
            ]
            .into_iter(),
        )
        .unwrap();
        assert_eq!((d.input, d.output), (2_500_000_000, 20_000_000_000));
    }

    #[tokio::test]
    async fn without_max_tokens_a_call_is_admitted_for_what_is_left_and_told_to_cap_the_answer() {
        let ledger = Ledger::new(Arc::new(MemoryStore::default()), None);
        // The real clock: a dropped hold is released at now().
        let t0 = now();
        let Admission::Admitted(h) = ledger.reserve(counters(2000), 100, None, None, t0).await
        else {
            panic!("admitted")
        };
        assert_eq!((h.output, h.set_max), (1900, true));
        h.settle(
            Amount {
                tokens: 1500,
                cost: 0,
            },
            t0,
        )
        .await
        .unwrap();
        // 500 left: a client max_tokens of 450 with 100 of prompt does not fit; none does, capped.
        assert!(matches!(
            ledger
                .reserve(counters(2000), 100, Some(450), None, t0)
                .await,
            Admission::Refused { tokens: true, .. }
        ));
        let Admission::Admitted(h) = ledger.reserve(counters(2000), 100, None, None, t0).await
        else {
            panic!("admitted")
        };
        assert_eq!((h.output, h.set_max), (400, true));
        drop(h);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        // The dropped hold was released: the same room is there again.
        let Admission::Admitted(h) = ledger
            .reserve(counters(2000), 100, Some(400), None, t0)
            .await
        else {
            panic!("released")
        };
        assert!(!h.set_max, "the client's own max_tokens is kept");
        h.settle(
            Amount {
                tokens: 500,
                cost: 0,
            },
            t0,
        )
        .await
        .unwrap();
        match ledger.reserve(counters(2000), 1, None, None, t0).await {
            Admission::Refused {
                retry_after,
                budget,
                ..
            } => {
                assert_eq!(retry_after, (86_400 - t0.rem_euclid(86_400)) as u64);
                assert_eq!(budget, "p/b");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_user_has_a_counter_a_group_budget_one_for_its_members_and_models_narrow_it() {
        let policy: McpPolicy = McpPolicy::new(
            "team",
            serde_json::from_value(serde_json::json!({
                "include": [{"group": "finance"}, {"group": "ops"}],
                "budgets": [
                    {"name": "each", "tokens": 10, "window": {"calendar": "day"}},
                    {"name": "shared", "scope": "group", "group": "finance", "tokens": 100,
                     "window": {"calendar": "month"}, "models": ["gpt-*"]},
                    {"name": "all", "scope": "portal", "cost": "1", "window": {"rollingSeconds": 3600},
                     "enforcement": "soft"}
                ]
            }))
            .unwrap(),
        );
        let b = Budgets::of(&[policy]);
        let alice = Identity::user("alice", ["finance"]);
        let bob = Identity::user("bob", ["ops"]);
        let keys = |id: &Identity, alias| {
            b.counters(id, alias)
                .into_iter()
                .map(|c| c.key)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys(&alice, Some("gpt-4")),
            [
                "team/each/d/u:alice",
                "team/shared/m/g:finance",
                "team/all/r3600/p"
            ]
        );
        assert_eq!(
            keys(&alice, Some("fast")),
            ["team/each/d/u:alice", "team/all/r3600/p"]
        );
        assert_eq!(
            keys(&bob, Some("gpt-4")),
            ["team/each/d/u:bob", "team/all/r3600/p"]
        );
        assert!(keys(&Identity::user("carol", ["sales"]), None).is_empty());
        assert!(!b.counters(&alice, None)[2].hard);
    }
}
