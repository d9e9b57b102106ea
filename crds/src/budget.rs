//! Budgets of the LLM gateway: how many tokens (or how much money) the callers an McpPolicy
//! covers may spend through a portal's `/llm/` endpoints in a window, and the price table of a
//! provider target. The meaning of both (money amounts, windows) lives here, below the proxy
//! and the operator.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The syntax of a money amount: a decimal with up to 9 digits before and 9 after the point.
pub const MONEY_PATTERN: &str = r"^[0-9]{1,9}(\.[0-9]{1,9})?$";

/// Nano-units in one unit of money (amounts are kept as integers of 10^-9).
pub const NANOS_PER_UNIT: u64 = 1_000_000_000;

/// The largest budget `cost`, in units (counters stay exact in the stores below 2^53
/// nano-units).
pub const MAX_BUDGET_COST: u64 = 1_000_000;

/// A money amount (`"2.50"`) in nano-units (10^-9 of the unit); `None` when it does not match
/// [`MONEY_PATTERN`].
pub fn parse_money(s: &str) -> Option<u64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty()
        || int.len() > 9
        || frac.len() > 9
        || (s.contains('.') && frac.is_empty())
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let int: u64 = int.parse().ok()?;
    let mut f: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    for _ in frac.len()..9 {
        f *= 10;
    }
    Some(int * NANOS_PER_UNIT + f)
}

/// Nano-units as a decimal (`2500000000` -> `"2.5"`).
pub fn format_money(nanos: u64) -> String {
    let int = nanos / NANOS_PER_UNIT;
    let frac = nanos % NANOS_PER_UNIT;
    if frac == 0 {
        return int.to_string();
    }
    let f = format!("{frac:09}");
    format!("{int}.{}", f.trim_end_matches('0'))
}

/// What one million tokens of a target cost, in the portal's currency (one currency for the
/// whole portal, for example USD). Amounts are decimals written as strings (`"2.50"`): up to 9
/// digits before and 9 after the point.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Price {
    /// Price of one million prompt tokens that were not read from the provider's cache.
    #[schemars(regex(pattern = r"^[0-9]{1,9}(\.[0-9]{1,9})?$"))]
    pub input: String,
    /// Price of one million completion tokens.
    #[schemars(regex(pattern = r"^[0-9]{1,9}(\.[0-9]{1,9})?$"))]
    pub output: String,
    /// Price of one million prompt tokens read from the provider's cache. Defaults to `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,9}(\.[0-9]{1,9})?$"))]
    pub cached_input: Option<String>,
}

/// One budget: the most the covered callers may spend through the portal's `/llm/` endpoints
/// in a window, in tokens and/or money. A call is admitted only when what was spent, plus what
/// calls in flight have reserved, plus the call's worst case (its counted prompt tokens and its
/// `max_tokens`) fits every hard budget that applies to it; it is then charged what the provider
/// reports it used.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.tokens) || has(self.cost)",
    "message": "set tokens or cost (or both): a budget without a limit limits nothing"
}, {
    "rule": "(self.scope == 'group') == has(self.group)",
    "message": "group is required with scope group and applies only to it",
    "fieldPath": ".group"
}]))]
pub struct Budget {
    /// The budget's name, unique in the policy: it names the budget in refusals, in
    /// `/admin/spend` and in the counters' keys. 1-63 characters of `[a-z0-9-]`.
    #[schemars(regex(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"))]
    pub name: String,
    /// Whose spending one counter holds: `user` (default: each subject, the token's `sub`, has
    /// its own counter), `group` (one counter shared by every covered caller in `group`) or
    /// `portal` (one counter shared by every caller the policy covers).
    #[serde(default)]
    pub scope: BudgetScope,
    /// The group whose members share the counter of a `group` budget (only with scope
    /// `group`). Callers the policy covers who are not in it are not limited by this budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub group: Option<String>,
    /// The model aliases (globs over `spec.llm.routes[].alias`) whose calls count. Empty: every
    /// alias. Glob syntax: 1-128 characters of `[A-Za-z0-9_.-]` and `*`, which matches any run
    /// of characters (also none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(regex(pattern = r"^[A-Za-z0-9_.*-]{1,128}$")))]
    pub models: Vec<String>,
    /// The most tokens (prompt tokens, cached ones included, plus completion tokens) per
    /// window, 1-10^12.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000_000_000u64))]
    pub tokens: Option<u64>,
    /// The most money per window, in the currency of the targets' `price` (a decimal string
    /// such as `"25.00"`, up to 1000000). A call to a target without a `price` costs nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,9}(\.[0-9]{1,9})?$"))]
    pub cost: Option<String>,
    /// The window the limit applies to: a calendar `day` or `month` (UTC), or a rolling
    /// duration.
    pub window: BudgetWindow,
    /// `hard` (default: a call that could cross the limit is refused with 429, a stream that
    /// crosses it is ended) or `soft` (calls are allowed and counted; crossing the limit is
    /// logged and counted in `portcullis_llm_budget_exceeded_total`).
    #[serde(default)]
    pub enforcement: Enforcement,
}

/// Whose spending a budget counter holds.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum BudgetScope {
    /// One counter per subject.
    #[default]
    User,
    /// One counter for the members of `group`.
    Group,
    /// One counter for every covered caller of the portal.
    Portal,
}

impl BudgetScope {
    /// The name as written in manifests.
    pub fn id(self) -> &'static str {
        match self {
            BudgetScope::User => "user",
            BudgetScope::Group => "group",
            BudgetScope::Portal => "portal",
        }
    }
}

/// A budget's window. Set exactly one of `calendar` and `rollingSeconds`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.calendar) != has(self.rollingSeconds)",
    "message": "set exactly one of calendar and rollingSeconds"
}]))]
pub struct BudgetWindow {
    /// A calendar window in UTC: `day` (resets at 00:00 UTC) or `month` (resets at 00:00 UTC
    /// on the first of the month).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar: Option<CalendarWindow>,
    /// A rolling window of this many seconds, 60-31536000 (a year): what was spent in the
    /// last `rollingSeconds` counts, kept in 60 slots of `rollingSeconds/60` each (spend
    /// leaves the window one slot at a time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 60, max = 31_536_000))]
    pub rolling_seconds: Option<u32>,
}

/// A calendar window.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum CalendarWindow {
    /// A UTC day.
    Day,
    /// A UTC calendar month.
    Month,
}

/// What crossing a budget does.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Enforcement {
    /// Refuse calls that could cross the limit; end a stream that crosses it.
    #[default]
    Hard,
    /// Allow, count, and log and count the crossing.
    Soft,
}

impl Enforcement {
    /// The name as written in manifests.
    pub fn id(self) -> &'static str {
        match self {
            Enforcement::Hard => "hard",
            Enforcement::Soft => "soft",
        }
    }
}

/// Where a portal keeps its budget counters (`spec.llm.budgetStore`). Absent: in the memory of
/// each replica (right for one replica; with several, each would count alone).
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BudgetStore {
    /// A Redis server every replica shares: reservations and settlements are atomic (one Lua
    /// script per call), so the replicas of a portal enforce one limit together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisStore>,
    /// What a call under a budget does while the store cannot be reached: `failClosed` (it is
    /// refused with 503) or `failOpen` (it is served and not counted; logged and counted in
    /// `portcullis_llm_budget_store_errors_total`). Absent: closed when a hard budget applies to
    /// the call, open when only soft ones do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_unavailable: Option<OnUnavailable>,
}

/// A Redis budget store.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RedisStore {
    /// Secret key holding the Redis URL (`redis://[:password@]host:port[/db]`; `rediss://`
    /// is not supported). The URL never reaches a log.
    pub url_from: crate::common::SecretKeyRef,
    /// Prefix of every key the portal writes, 1-64 characters of `[A-Za-z0-9:_.-]`. Defaults
    /// to `portcullis:budget:<portal>:`; portals sharing a Redis keep apart by their names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9:_.-]{1,64}$"))]
    pub key_prefix: Option<String>,
    /// How long a call may wait for Redis, in milliseconds, 10-10000. Defaults to 500.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 10_000))]
    pub timeout_millis: Option<u32>,
}

/// What a call under a budget does while the store cannot be reached.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum OnUnavailable {
    /// Refuse the call (503).
    FailClosed,
    /// Serve the call without counting it.
    FailOpen,
}

/// An amount of tokens and/or money, as spend figures report it. A dimension the budget does
/// not limit may be absent from a limit and from what remains.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SpendAmount {
    /// Tokens (prompt tokens, cached ones included, plus completion tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// Money in the currency of the targets' `price`, a decimal string (`"0.0042"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<String>,
}

/// The spend of a `user`-scoped budget over every subject that has a counter in the current
/// window, without naming anyone (see [`BudgetSpend::subjects`]).
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SubjectsSpend {
    /// Subjects with spend (or a call in flight) in the current window.
    pub count: u64,
    /// Of those, how many have spent at or over the limit (in tokens or in money).
    pub at_limit: u64,
    /// The most one subject has spent, per dimension (the most tokens and the most money may
    /// be two different subjects').
    pub highest: SpendAmount,
    /// What all of them spent together.
    pub total: SpendAmount,
    /// Reserved by calls in flight, all subjects together.
    pub reserved: SpendAmount,
    /// True when the budget has more subjects than the portal reads for one summary (10,000
    /// by default, the most recently active first with a Redis store): the figures above then
    /// cover only those read.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// One budget of a policy with its spend in the current window, as a portal counts it. The
/// declaration (`name`, `scope`, `group`, `models`, `window`, `enforcement`, `limit`) is the
/// budget's spec; the figures depend on `scope`: `portal` and `group` budgets have one counter
/// (`spent`, `reserved`, `remaining`, `resetsAt`); `user` budgets have one per subject, shown
/// only in aggregate (`subjects`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BudgetSpend {
    /// The budget's name (`spec.budgets[].name`).
    pub name: String,
    /// Whose spending one counter holds: `user`, `group` or `portal`.
    pub scope: BudgetScope,
    /// The group of a `group` budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The alias globs whose calls count (empty: every alias).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// The window.
    pub window: BudgetWindow,
    /// `hard` or `soft`.
    pub enforcement: Enforcement,
    /// The limit per window (per subject for a `user` budget).
    pub limit: SpendAmount,
    /// Settled spend in the current window (`portal` and `group` budgets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent: Option<SpendAmount>,
    /// Reserved by calls in flight (`portal` and `group` budgets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved: Option<SpendAmount>,
    /// What is left of the limit after what is spent and reserved (`portal` and `group`
    /// budgets; only the limited dimensions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<SpendAmount>,
    /// When the counter next frees up (RFC 3339): the end of a calendar window, or when the
    /// oldest spend leaves a rolling one. Absent when nothing is spent in a rolling window.
    /// For a `user` budget with a calendar window, the end of the window (every subject's
    /// counter resets then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<String>,
    /// The subjects of a `user` budget, in aggregate. Subjects are never named here: this
    /// figure ends up in the McpPolicy's status, which anyone allowed to `get mcppolicies`
    /// reads. Ask the portal's admin endpoint (`GET /admin/spend?subject=..`) for one
    /// subject's spend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subjects: Option<SubjectsSpend>,
}

/// The budgets of one policy in a spend summary.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpend {
    /// The McpPolicy's name.
    pub policy: String,
    /// Its budgets, in the order of `spec.budgets`.
    pub budgets: Vec<BudgetSpend>,
}

/// What a portal answers on its admin port at `GET /admin/spend/summary[?policy=NAME]`: the
/// spend of every budget of its policies, without naming any subject. The operator copies it
/// into each McpPolicy's `status.spend`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SpendSummary {
    /// The McpPortal.
    pub portal: String,
    /// Where the counters live: `redis` (shared by every replica: the figures are the
    /// portal's) or `memory` (each replica counts alone: the figures are `replica`'s).
    pub store: String,
    /// The replica (its host name: the pod's name) that answered, with the `memory` store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// The policies with budgets, by name.
    pub policies: Vec<PolicySpend>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_read_to_the_nano_unit_and_written_back_without_trailing_zeros() {
        assert_eq!(parse_money("2.50"), Some(2_500_000_000));
        assert_eq!(parse_money("0.000000001"), Some(1));
        assert_eq!(parse_money("7"), Some(7 * NANOS_PER_UNIT));
        for bad in [
            "",
            ".5",
            "5.",
            "-1",
            "1e3",
            "1.0000000001",
            "1234567890",
            " 1",
        ] {
            assert_eq!(parse_money(bad), None, "{bad:?}");
        }
        assert_eq!(format_money(2_500_000_000), "2.5");
        assert_eq!(format_money(3 * NANOS_PER_UNIT), "3");
        assert_eq!(format_money(1), "0.000000001");
    }
}
