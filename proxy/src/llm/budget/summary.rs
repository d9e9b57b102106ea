//! The spend of every budget of a portal's policies, without naming anyone: what
//! `GET /admin/spend/summary` answers and the operator copies into each McpPolicy's
//! `status.spend`.
//!
//! A `portal` or `group` budget has one counter: its spent, reserved, remaining and reset. A
//! `user` budget has a counter per subject; the summary gives only aggregates over the subjects
//! with spend (or a call in flight) in the current window: how many, how many at or over the
//! limit, the highest spend and the total. **Subjects' names never leave this module**: the
//! summary lands in a resource status that anyone allowed to `get mcppolicies` reads (one
//! subject's spend is `GET /admin/spend?subject=..`, on the admin port only).
//!
//! The work is bounded: at most `max_subjects` counters are read per `user` budget (the store
//! lists them from its own index, never by scanning; Redis gives the most recently active
//! first), in batches of [`BATCH`]; more are reported as `truncated`.

use chrono::{SecondsFormat, TimeZone, Utc};
use crds::budget::{
    BudgetScope, BudgetSpend, PolicySpend, SpendAmount, SubjectsSpend, format_money,
};

use super::account::{Amount, CounterRef, Limit, Snapshot, Window, retry_after};
use super::{Budgets, Rule, Store, StoreError};

/// Subjects read per `user` budget unless the caller asks for another bound.
pub const DEFAULT_MAX_SUBJECTS: usize = 10_000;
/// The most subjects a caller may ask to be read per `user` budget.
pub const MAX_SUBJECTS: usize = 100_000;
/// Counters read per store operation (one lock, or one Lua script of at most 64 x 63 keys).
pub const BATCH: usize = 64;

/// The budgets of every policy (only `policy`, when given), in the order the portal's
/// configuration declares them, with their spend at `now`.
pub async fn summarize(
    budgets: &Budgets,
    store: &dyn Store,
    policy: Option<&str>,
    now: i64,
    max_subjects: usize,
) -> Result<Vec<PolicySpend>, StoreError> {
    let mut out: Vec<PolicySpend> = Vec::new();
    for r in &budgets.rules {
        let name = r.policy.metadata.name.as_deref().unwrap_or("");
        if policy.is_some_and(|p| p != name) {
            continue;
        }
        let spend = budget(r, store, now, max_subjects.clamp(1, MAX_SUBJECTS)).await?;
        match out.iter_mut().find(|p| p.policy == name) {
            Some(p) => p.budgets.push(spend),
            None => out.push(PolicySpend {
                policy: name.to_owned(),
                budgets: vec![spend],
            }),
        }
    }
    Ok(out)
}

/// One budget's spend.
async fn budget(
    r: &Rule,
    store: &dyn Store,
    now: i64,
    max_subjects: usize,
) -> Result<BudgetSpend, StoreError> {
    let prefix = format!("{}/{}/", r.name, r.window.id());
    let counter = |scope: &str| CounterRef {
        key: format!("{prefix}{scope}"),
        budget: r.name.clone(),
        window: r.window,
        limit: r.limit,
        hard: r.hard,
    };
    let mut out = BudgetSpend {
        name: r.spec.name.clone(),
        scope: r.scope,
        group: r.group.clone(),
        models: r.spec.models.clone(),
        window: r.spec.window.clone(),
        enforcement: r.spec.enforcement,
        limit: SpendAmount {
            tokens: r.limit.tokens,
            cost: r.limit.cost.map(format_money),
        },
        ..BudgetSpend::default()
    };
    let scope = match (r.scope, &r.group) {
        (BudgetScope::Portal, _) => "p".to_owned(),
        (BudgetScope::Group, Some(g)) => format!("g:{g}"),
        (BudgetScope::Group, None) => return Ok(out),
        (BudgetScope::User, _) => {
            out.subjects =
                Some(subjects(store, &prefix, &counter, r.limit, now, max_subjects).await?);
            if let Window::Calendar(_) = r.window {
                out.resets_at = rfc3339(r.window.slot_leaves(r.window.slot(now)));
            }
            return Ok(out);
        }
    };
    let c = counter(&scope);
    let s = store
        .snapshot(std::slice::from_ref(&c), now)
        .await?
        .pop()
        .unwrap_or_default();
    let room = r.limit.room(s.committed());
    out.spent = Some(both(s.spent));
    out.reserved = Some(both(s.reserved));
    out.remaining = Some(SpendAmount {
        tokens: r.limit.tokens.map(|_| room.tokens),
        cost: r.limit.cost.map(|_| format_money(room.cost)),
    });
    let idle = s.committed() == Amount::default();
    out.resets_at = match r.window {
        // Nothing in a rolling window: nothing to free, and no instant that stays put.
        Window::Rolling(_) if idle => None,
        _ => rfc3339(now + retry_after(&c, &s, now) as i64),
    };
    Ok(out)
}

/// The aggregate over a `user` budget's subjects with spend or a reservation.
async fn subjects(
    store: &dyn Store,
    prefix: &str,
    counter: &(dyn Fn(&str) -> CounterRef + Sync),
    limit: Limit,
    now: i64,
    max_subjects: usize,
) -> Result<SubjectsSpend, StoreError> {
    let (members, total) = store.users(prefix, now, max_subjects).await?;
    let mut agg = Aggregate::default();
    for chunk in members.chunks(BATCH) {
        let counters: Vec<CounterRef> = chunk.iter().map(|m| counter(m)).collect();
        for s in store.snapshot(&counters, now).await? {
            agg.add(&s, limit);
        }
    }
    Ok(SubjectsSpend {
        count: agg.count,
        at_limit: agg.at_limit,
        highest: both(agg.highest),
        total: both(agg.total),
        reserved: both(agg.reserved),
        truncated: total > members.len(),
    })
}

/// Running figures over subjects' counters.
#[derive(Debug, Default)]
struct Aggregate {
    count: u64,
    at_limit: u64,
    highest: Amount,
    total: Amount,
    reserved: Amount,
}

impl Aggregate {
    fn add(&mut self, s: &Snapshot, limit: Limit) {
        if s.committed() == Amount::default() {
            return;
        }
        self.count += 1;
        let over = limit.tokens.is_some_and(|t| s.spent.tokens >= t)
            || limit.cost.is_some_and(|c| s.spent.cost >= c);
        self.at_limit += u64::from(over);
        self.highest.tokens = self.highest.tokens.max(s.spent.tokens);
        self.highest.cost = self.highest.cost.max(s.spent.cost);
        self.total = self.total.plus(s.spent);
        self.reserved = self.reserved.plus(s.reserved);
    }
}

/// Both dimensions of an amount.
fn both(a: Amount) -> SpendAmount {
    SpendAmount {
        tokens: Some(a.tokens),
        cost: Some(format_money(a.cost)),
    }
}

/// Seconds since the epoch as RFC 3339 (UTC, whole seconds).
fn rfc3339(t: i64) -> Option<String> {
    Utc.timestamp_opt(t, 0)
        .single()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::memory::MemoryStore;
    use super::super::{Admission, Ledger};
    use super::*;
    use crate::model::Identity;
    use crds::McpPolicy;
    use std::sync::Arc;

    /// A policy `team` of four budgets: per user (day), per group `finance` (month, models
    /// `gpt-*`), the whole portal (rolling hour, money), and a soft per-user one on the month.
    pub(crate) fn team() -> Budgets {
        let policy: McpPolicy = McpPolicy::new(
            "team",
            serde_json::from_value(serde_json::json!({
                "budgets": [
                    {"name": "each", "tokens": 100, "window": {"calendar": "day"}},
                    {"name": "shared", "scope": "group", "group": "finance", "tokens": 1000,
                     "window": {"calendar": "month"}, "models": ["gpt-*"]},
                    {"name": "all", "scope": "portal", "cost": "1", "window": {"rollingSeconds": 3600}},
                    {"name": "monthly", "tokens": 50, "window": {"calendar": "month"}, "enforcement": "soft"}
                ]
            }))
            .unwrap(),
        );
        let other: McpPolicy = McpPolicy::new(
            "other",
            serde_json::from_value(serde_json::json!({
                "budgets": [{"name": "x", "scope": "portal", "tokens": 5, "window": {"calendar": "day"},
                             "models": ["claude-*"]}]
            }))
            .unwrap(),
        );
        Budgets::of(&[policy, other])
    }

    /// Charges `tokens` (and `cost` nano-units) to every counter a call by `who` on `alias`
    /// is charged to, through the ledger as a call would.
    pub(crate) async fn charge(
        ledger: &Ledger,
        budgets: &Budgets,
        who: &Identity,
        alias: &str,
        tokens: u64,
        cost: u64,
        now: i64,
    ) {
        let counters = budgets.counters(who, Some(alias));
        match ledger.reserve(counters, 0, Some(tokens), None, now).await {
            Admission::Admitted(h) => {
                h.settle(Amount { tokens, cost }, now).await.unwrap();
            }
            other => panic!("{other:?}"),
        }
    }

    /// Checks the summary of [`team`] after alice (finance) spent 100 tokens on `gpt-4`, bob
    /// (ops) 40, carol (finance) 7 on `fast` with a call still in flight; shared by both
    /// stores' tests.
    pub(crate) async fn spend_is_summed_without_names(store: Arc<dyn Store>, now: i64) {
        let ledger = Ledger::new(store.clone(), None);
        let b = team();
        let alice = Identity::user("alice", ["finance"]);
        let bob = Identity::user("bob", ["ops"]);
        let carol = Identity::user("carol", ["finance"]);
        charge(&ledger, &b, &alice, "gpt-4", 100, 250_000_000, now).await;
        charge(&ledger, &b, &bob, "gpt-4", 40, 100_000_000, now).await;
        charge(&ledger, &b, &carol, "fast", 7, 1, now).await;
        // A call of carol's still in flight: reserved, not spent.
        let Admission::Admitted(hold) = ledger
            .reserve(b.counters(&carol, Some("fast")), 3, Some(2), None, now)
            .await
        else {
            panic!("admitted")
        };

        let all = summarize(&b, store.as_ref(), None, now, DEFAULT_MAX_SUBJECTS)
            .await
            .unwrap();
        let text = serde_json::to_string(&all).unwrap();
        for name in ["alice", "bob", "carol"] {
            assert!(
                !text.contains(name),
                "a subject's name in the summary: {text}"
            );
        }
        assert_eq!(
            all.iter().map(|p| p.policy.as_str()).collect::<Vec<_>>(),
            ["team", "other"]
        );
        let team = &all[0].budgets;
        assert_eq!(
            team.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(),
            ["each", "shared", "all", "monthly"]
        );
        // Per user: alice 100 (at the limit), bob 40, carol 7 + 5 reserved.
        let each = team[0].subjects.as_ref().unwrap();
        assert_eq!((each.count, each.at_limit), (3, 1));
        assert_eq!(each.highest.tokens, Some(100));
        assert_eq!(each.total.tokens, Some(147));
        assert_eq!(each.reserved.tokens, Some(5));
        assert_eq!(each.total.cost.as_deref(), Some("0.350000001"));
        assert!(!each.truncated);
        assert_eq!(team[0].limit.tokens, Some(100));
        assert_eq!(team[0].spent, None, "no single counter for a user budget");
        let midnight = (now.div_euclid(86_400) + 1) * 86_400;
        assert_eq!(team[0].resets_at, rfc3339(midnight));
        // Group finance on gpt-* only: alice's 100.
        let shared = &team[1];
        assert_eq!(shared.group.as_deref(), Some("finance"));
        assert_eq!(shared.spent.as_ref().unwrap().tokens, Some(100));
        assert_eq!(shared.remaining.as_ref().unwrap().tokens, Some(900));
        assert_eq!(shared.remaining.as_ref().unwrap().cost, None, "not limited");
        // The portal, in money over a rolling hour: everyone's cost.
        let portal = &team[2];
        assert_eq!(
            portal.spent.as_ref().unwrap().cost.as_deref(),
            Some("0.350000001")
        );
        assert_eq!(portal.reserved.as_ref().unwrap().tokens, Some(5));
        assert_eq!(
            portal.remaining.as_ref().unwrap().cost.as_deref(),
            Some("0.649999999")
        );
        assert_eq!(portal.remaining.as_ref().unwrap().tokens, None);
        assert!(portal.resets_at.is_some());
        // Soft, 50 a month: alice over it, counted past the limit.
        let monthly = team[3].subjects.as_ref().unwrap();
        assert_eq!((monthly.count, monthly.at_limit), (3, 1));
        // The other policy's budget, untouched.
        let x = &all[1].budgets[0];
        assert_eq!(x.spent.as_ref().unwrap().tokens, Some(0));
        assert_eq!(x.remaining.as_ref().unwrap().tokens, Some(5));

        // One policy only; and a bound of 2 subjects is reported as truncated.
        let one = summarize(&b, store.as_ref(), Some("team"), now, 2)
            .await
            .unwrap();
        assert_eq!(one.len(), 1);
        let each = one[0].budgets[0].subjects.as_ref().unwrap();
        assert!(each.truncated);
        assert_eq!(each.count, 2);
        hold.settle(Amount::default(), now).await.unwrap();

        // The next day: the day budget's window is empty, the month's still counts.
        let tomorrow = summarize(&b, store.as_ref(), Some("team"), midnight + 10, 100)
            .await
            .unwrap();
        let each = tomorrow[0].budgets[0].subjects.as_ref().unwrap();
        assert_eq!((each.count, each.total.tokens), (0, Some(0)));
        if Window::Calendar(crds::budget::CalendarWindow::Month).slot(midnight + 10)
            == Window::Calendar(crds::budget::CalendarWindow::Month).slot(now)
        {
            let monthly = tomorrow[0].budgets[3].subjects.as_ref().unwrap();
            assert_eq!(monthly.count, 3);
        }
    }

    #[tokio::test]
    async fn the_memory_store_summarizes_every_budget_without_naming_subjects() {
        // 2026-12-04 12:00 UTC: the next day is in the same month.
        spend_is_summed_without_names(Arc::new(MemoryStore::default()), 1_796_385_600).await;
    }

    #[test]
    fn a_user_counter_key_gives_its_budget_prefix_and_scope_key() {
        let b = team();
        let who = Identity::user("a/u:b", ["finance"]);
        let cs = b.counters(&who, Some("gpt-4"));
        assert_eq!(cs[0].user_index(), Some(("team/each/d/", "u:a/u:b")));
        assert_eq!(cs[1].user_index(), None, "a group counter");
        assert_eq!(cs[2].user_index(), None, "the portal counter");
    }
}
