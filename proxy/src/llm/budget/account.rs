//! Pure accounting: windows and their slots, amounts, the admission rule and the time to a
//! window's reset. No store, no clock: the time is a parameter, so every rule is tested alone.
//! The stores ([`super::memory`], [`super::redis`]) keep counters by these rules.

use chrono::{Datelike, TimeZone, Utc};
use crds::budget::CalendarWindow;

/// Slots of a rolling window: spend leaves the window one slot (`seconds / 60`) at a time.
pub const ROLLING_SLOTS: i64 = 60;

/// Tokens and money (nano-units of the portal's currency).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Amount {
    /// Tokens (prompt, cached included, plus completion).
    pub tokens: u64,
    /// Nano-units of money.
    pub cost: u64,
}

impl Amount {
    /// Component-wise sum (saturating).
    pub fn plus(self, o: Amount) -> Amount {
        Amount {
            tokens: self.tokens.saturating_add(o.tokens),
            cost: self.cost.saturating_add(o.cost),
        }
    }

    /// Component-wise difference (saturating at 0).
    pub fn minus(self, o: Amount) -> Amount {
        Amount {
            tokens: self.tokens.saturating_sub(o.tokens),
            cost: self.cost.saturating_sub(o.cost),
        }
    }
}

/// A limit: tokens and/or money per window (`None`: that dimension is not limited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limit {
    /// Most tokens.
    pub tokens: Option<u64>,
    /// Most nano-units.
    pub cost: Option<u64>,
}

impl Limit {
    /// Whether `a` fits the limit.
    pub fn admits(&self, a: Amount) -> bool {
        self.tokens.is_none_or(|t| a.tokens <= t) && self.cost.is_none_or(|c| a.cost <= c)
    }

    /// What is left of the limit after `used` (`u64::MAX` for a dimension without a limit).
    pub fn room(&self, used: Amount) -> Amount {
        Amount {
            tokens: self
                .tokens
                .map_or(u64::MAX, |t| t.saturating_sub(used.tokens)),
            cost: self.cost.map_or(u64::MAX, |c| c.saturating_sub(used.cost)),
        }
    }
}

/// A budget's window, cut into slots: a calendar window is one slot (the day or the month), a
/// rolling one [`ROLLING_SLOTS`] slots of `seconds / 60`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// A UTC calendar day or month.
    Calendar(CalendarWindow),
    /// The last this many seconds.
    Rolling(u64),
}

impl Window {
    /// The window of a budget's `window` field (`None` when it sets neither or both).
    pub fn of(w: &crds::budget::BudgetWindow) -> Option<Window> {
        match (w.calendar, w.rolling_seconds) {
            (Some(c), None) => Some(Window::Calendar(c)),
            (None, Some(s)) => Some(Window::Rolling(u64::from(s).max(ROLLING_SLOTS as u64))),
            _ => None,
        }
    }

    /// A short id for counter keys (`d`, `m`, `r3600`): a budget whose window changes starts
    /// a new counter.
    pub fn id(&self) -> String {
        match self {
            Window::Calendar(CalendarWindow::Day) => "d".into(),
            Window::Calendar(CalendarWindow::Month) => "m".into(),
            Window::Rolling(s) => format!("r{s}"),
        }
    }

    /// How many slots make the window.
    pub fn slots(&self) -> i64 {
        match self {
            Window::Calendar(_) => 1,
            Window::Rolling(_) => ROLLING_SLOTS,
        }
    }

    fn slot_seconds(s: u64) -> i64 {
        (s as i64 / ROLLING_SLOTS).max(1)
    }

    /// The slot holding the instant `now` (seconds since the epoch): days or months since the
    /// epoch, or rolling slots since the epoch.
    pub fn slot(&self, now: i64) -> i64 {
        match self {
            Window::Calendar(CalendarWindow::Day) => now.div_euclid(86_400),
            Window::Calendar(CalendarWindow::Month) => {
                let t = Utc.timestamp_opt(now, 0).single().unwrap_or_default();
                i64::from(t.year()) * 12 + i64::from(t.month0())
            }
            Window::Rolling(s) => now.div_euclid(Self::slot_seconds(*s)),
        }
    }

    /// When (seconds since the epoch) spend booked in `slot` leaves the window.
    pub fn slot_leaves(&self, slot: i64) -> i64 {
        match self {
            Window::Calendar(CalendarWindow::Day) => (slot + 1) * 86_400,
            Window::Calendar(CalendarWindow::Month) => {
                let next = slot + 1;
                let (y, m) = (next.div_euclid(12), next.rem_euclid(12) as u32 + 1);
                Utc.with_ymd_and_hms(y as i32, m, 1, 0, 0, 0)
                    .single()
                    .map_or(i64::MAX, |t| t.timestamp())
            }
            Window::Rolling(s) => (slot + ROLLING_SLOTS) * Self::slot_seconds(*s),
        }
    }

    /// The slots in the window at `now`, newest first.
    pub fn live_slots(&self, now: i64) -> impl Iterator<Item = i64> {
        let cur = self.slot(now);
        (0..self.slots()).map(move |k| cur - k)
    }

    /// How long a slot's key must live in a store: until it leaves the window, plus a day of
    /// grace (for the spend query and clock skew between replicas).
    pub fn slot_ttl(&self, now: i64) -> i64 {
        (self.slot_leaves(self.slot(now)) - now).max(1) + 86_400
    }
}

/// One counter a call is charged to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterRef {
    /// The counter's key: `<policy>/<budget>/<window id>/<scope key>`, where the scope key is
    /// `u:<subject>`, `g:<group>` or `p`.
    pub key: String,
    /// `<policy>/<budget>`, for refusals, logs and metrics.
    pub budget: String,
    /// The window.
    pub window: Window,
    /// The limit.
    pub limit: Limit,
    /// Hard (refuse) or soft (count and warn).
    pub hard: bool,
}

impl CounterRef {
    /// For a `user` counter (key `<policy>/<budget>/<window id>/u:<subject>`): the key's
    /// prefix up to the scope key (what every counter of that budget and window shares) and
    /// the scope key itself. `None` for a group's or the portal's counter. Policy names,
    /// budget names and window ids hold no `/`, so the fourth segment is the scope key whatever
    /// the subject contains.
    pub fn user_index(&self) -> Option<(&str, &str)> {
        let scope = self.key.splitn(4, '/').nth(3)?;
        scope
            .starts_with("u:")
            .then(|| (&self.key[..self.key.len() - scope.len()], scope))
    }
}

/// A counter's state at an instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Settled spend in the window.
    pub spent: Amount,
    /// Reserved by calls in flight.
    pub reserved: Amount,
    /// The oldest live slot with spend in it (`None`: nothing spent).
    pub oldest_slot: Option<i64>,
}

impl Snapshot {
    /// Spent plus reserved.
    pub fn committed(&self) -> Amount {
        self.spent.plus(self.reserved)
    }
}

/// The admission rule: a call of worst case `need` is admitted when, on every hard counter,
/// spent + reserved + need fits the limit. `Err(i)`: the first counter it does not fit.
pub fn admit(counters: &[CounterRef], states: &[Snapshot], need: Amount) -> Result<(), usize> {
    for (i, (c, s)) in counters.iter().zip(states).enumerate() {
        if c.hard && !c.limit.admits(s.committed().plus(need)) {
            return Err(i);
        }
    }
    Ok(())
}

/// Seconds from `now` until a refused counter could have room: the window's reset for a
/// calendar window, the moment its oldest spend leaves a rolling one (at least 1).
pub fn retry_after(counter: &CounterRef, state: &Snapshot, now: i64) -> u64 {
    let slot = match counter.window {
        Window::Calendar(_) => counter.window.slot(now),
        Window::Rolling(_) => state
            .oldest_slot
            .unwrap_or_else(|| counter.window.slot(now)),
    };
    (counter.window.slot_leaves(slot) - now).max(1) as u64
}

/// The room left on the tightest hard counter after what is committed (`u64::MAX` per
/// dimension when no hard counter limits it).
pub fn room(counters: &[CounterRef], states: &[Snapshot]) -> Amount {
    let mut out = Amount {
        tokens: u64::MAX,
        cost: u64::MAX,
    };
    for (c, s) in counters.iter().zip(states) {
        if c.hard {
            let r = c.limit.room(s.committed());
            out.tokens = out.tokens.min(r.tokens);
            out.cost = out.cost.min(r.cost);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(window: Window, tokens: u64, hard: bool) -> CounterRef {
        CounterRef {
            key: "p/b/x/u:alice".into(),
            budget: "p/b".into(),
            window,
            limit: Limit {
                tokens: Some(tokens),
                cost: None,
            },
            hard,
        }
    }

    fn at(y: i32, m: u32, d: u32, h: u32, min: u32, s: u32) -> i64 {
        Utc.with_ymd_and_hms(y, m, d, h, min, s)
            .unwrap()
            .timestamp()
    }

    #[test]
    fn a_day_window_resets_at_utc_midnight_and_a_month_window_on_the_first() {
        let day = Window::Calendar(CalendarWindow::Day);
        let now = at(2026, 12, 4, 23, 59, 30);
        assert_eq!(day.slot_leaves(day.slot(now)) - now, 30);
        assert_ne!(
            day.slot(now),
            day.slot(now + 30),
            "the next second is a new day"
        );
        let month = Window::Calendar(CalendarWindow::Month);
        let now = at(2026, 12, 31, 23, 0, 0);
        assert_eq!(month.slot_leaves(month.slot(now)), at(2027, 1, 1, 0, 0, 0));
        assert_eq!(month.slot(at(2026, 12, 1, 0, 0, 0)), month.slot(now));
        assert_ne!(month.slot(at(2026, 11, 30, 23, 59, 59)), month.slot(now));
        // February of a leap year.
        assert_eq!(
            month.slot_leaves(month.slot(at(2028, 2, 10, 0, 0, 0))),
            at(2028, 3, 1, 0, 0, 0)
        );
    }

    #[test]
    fn a_rolling_window_keeps_sixty_slots_and_spend_leaves_one_slot_at_a_time() {
        let w = Window::Rolling(3600);
        let now = 1_000_000;
        let live: Vec<i64> = w.live_slots(now).collect();
        assert_eq!(live.len(), 60);
        assert_eq!(live[0], now / 60);
        assert_eq!(live[59], now / 60 - 59);
        // Spend booked now leaves 60 slots (an hour, give or take a slot) later.
        let leaves = w.slot_leaves(w.slot(now));
        assert!(
            leaves - now > 3540 && leaves - now <= 3600,
            "{}",
            leaves - now
        );
    }

    #[test]
    fn a_call_is_admitted_only_when_spent_reserved_and_its_worst_case_fit_every_hard_limit() {
        let cs = [
            counter(Window::Calendar(CalendarWindow::Day), 1000, true),
            counter(Window::Calendar(CalendarWindow::Day), 10, false),
        ];
        let s = |spent, reserved| Snapshot {
            spent: Amount {
                tokens: spent,
                cost: 0,
            },
            reserved: Amount {
                tokens: reserved,
                cost: 0,
            },
            oldest_slot: None,
        };
        let need = Amount {
            tokens: 300,
            cost: 0,
        };
        assert_eq!(admit(&cs, &[s(500, 200), s(900, 0)], need), Ok(()));
        assert_eq!(admit(&cs, &[s(500, 201), s(0, 0)], need), Err(0));
        // A soft budget never refuses, however far over it is.
        assert_eq!(admit(&cs, &[s(0, 0), s(5000, 5000)], need), Ok(()));
        assert_eq!(room(&cs, &[s(500, 200), s(5000, 0)]).tokens, 300);
        assert_eq!(room(&cs, &[s(500, 200), s(5000, 0)]).cost, u64::MAX);
    }

    #[test]
    fn money_and_tokens_are_limited_separately() {
        let l = Limit {
            tokens: None,
            cost: Some(1_000),
        };
        assert!(l.admits(Amount {
            tokens: u64::MAX,
            cost: 1_000
        }));
        assert!(!l.admits(Amount {
            tokens: 0,
            cost: 1_001
        }));
    }

    #[test]
    fn retry_after_is_the_calendar_reset_or_when_the_oldest_rolling_spend_leaves() {
        let now = at(2026, 12, 4, 12, 0, 0);
        let day = counter(Window::Calendar(CalendarWindow::Day), 1, true);
        assert_eq!(retry_after(&day, &Snapshot::default(), now), 12 * 3600);
        let rolling = counter(Window::Rolling(600), 1, true);
        let w = rolling.window;
        let oldest = w.slot(now - 300);
        let s = Snapshot {
            oldest_slot: Some(oldest),
            ..Default::default()
        };
        assert_eq!(retry_after(&rolling, &s, now), 300);
    }
}
