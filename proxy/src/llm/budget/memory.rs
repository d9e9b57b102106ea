//! The in-memory store: one process's counters behind one lock (reserve and settle are atomic
//! over every counter of a call). The default, right for one replica; lost on restart.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use super::account::{Amount, CounterRef, Snapshot, admit};
use super::{RESERVATION_TTL_SECS, Reserve, Store, StoreError};

#[derive(Debug, Default)]
struct Counter {
    /// Settled spend by slot.
    slots: BTreeMap<i64, Amount>,
    /// Reservations in flight: id -> (amount, expiry).
    reservations: HashMap<String, (Amount, i64)>,
}

impl Counter {
    /// Drops slots that left the window and charges expired reservations in full (their
    /// replica never settled them).
    fn tidy(&mut self, c: &CounterRef, now: i64) {
        let cur = c.window.slot(now);
        let oldest = cur - c.window.slots() + 1;
        let expired: Vec<String> = self
            .reservations
            .iter()
            .filter(|(_, (_, exp))| *exp <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            if let Some((a, _)) = self.reservations.remove(&id) {
                let s = self.slots.entry(cur).or_default();
                *s = s.plus(a);
            }
        }
        self.slots.retain(|slot, _| *slot >= oldest);
    }

    fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        for (slot, a) in &self.slots {
            if *a != Amount::default() && s.oldest_slot.is_none() {
                s.oldest_slot = Some(*slot);
            }
            s.spent = s.spent.plus(*a);
        }
        for (a, _) in self.reservations.values() {
            s.reserved = s.reserved.plus(*a);
        }
        s
    }
}

/// Counters in this process's memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    counters: Mutex<HashMap<String, Counter>>,
}

impl MemoryStore {
    /// How many counters are held (for tests and the memory bound).
    pub fn len(&self) -> usize {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Whether no counter is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn reserve(
        &self,
        counters: &[CounterRef],
        id: &str,
        need: Amount,
        now: i64,
    ) -> Result<Reserve, StoreError> {
        let mut map = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let mut states = Vec::with_capacity(counters.len());
        for c in counters {
            let counter = map.entry(c.key.clone()).or_default();
            counter.tidy(c, now);
            states.push(counter.snapshot());
        }
        if let Err(index) = admit(counters, &states, need) {
            return Ok(Reserve::Refused { index, states });
        }
        for c in counters {
            if let Some(counter) = map.get_mut(&c.key) {
                counter
                    .reservations
                    .insert(id.to_owned(), (need, now + RESERVATION_TTL_SECS));
            }
        }
        Ok(Reserve::Admitted(states))
    }

    async fn settle(
        &self,
        counters: &[CounterRef],
        id: &str,
        used: Amount,
        now: i64,
    ) -> Result<Vec<Snapshot>, StoreError> {
        let mut map = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(counters.len());
        for c in counters {
            let counter = map.entry(c.key.clone()).or_default();
            // A reservation that expired was charged in full already.
            if counter.reservations.remove(id).is_some() {
                let s = counter.slots.entry(c.window.slot(now)).or_default();
                *s = s.plus(used);
            }
            counter.tidy(c, now);
            out.push(counter.snapshot());
        }
        Ok(out)
    }

    async fn snapshot(
        &self,
        counters: &[CounterRef],
        now: i64,
    ) -> Result<Vec<Snapshot>, StoreError> {
        let mut map = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        Ok(counters
            .iter()
            .map(|c| match map.get_mut(&c.key) {
                Some(counter) => {
                    counter.tidy(c, now);
                    counter.snapshot()
                }
                None => Snapshot::default(),
            })
            .collect())
    }

    async fn users(
        &self,
        rule: &str,
        _now: i64,
        cap: usize,
    ) -> Result<(Vec<String>, usize), StoreError> {
        let map = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        let mut total = 0;
        for key in map.keys() {
            if let Some(scope) = key.strip_prefix(rule)
                && scope.starts_with("u:")
            {
                total += 1;
                if out.len() < cap {
                    out.push(scope.to_owned());
                }
            }
        }
        Ok((out, total))
    }
}

#[cfg(test)]
mod tests {
    use super::super::account::{Limit, Window};
    use super::*;
    use crds::budget::CalendarWindow;
    use std::sync::Arc;

    fn counter(key: &str, window: Window, tokens: u64, hard: bool) -> CounterRef {
        CounterRef {
            key: key.into(),
            budget: "p/b".into(),
            window,
            limit: Limit {
                tokens: Some(tokens),
                cost: None,
            },
            hard,
        }
    }

    fn t(n: u64) -> Amount {
        Amount { tokens: n, cost: 0 }
    }

    const DAY: Window = Window::Calendar(CalendarWindow::Day);

    #[tokio::test]
    async fn reserve_then_settle_charges_what_was_used_and_frees_the_rest() {
        let s = MemoryStore::default();
        let cs = [counter("a", DAY, 1000, true)];
        let now = 86_400 * 100 + 10;
        assert!(matches!(
            s.reserve(&cs, "r1", t(600), now).await.unwrap(),
            Reserve::Admitted(_)
        ));
        // 600 reserved: a second worst case of 500 does not fit.
        assert!(matches!(
            s.reserve(&cs, "r2", t(500), now).await.unwrap(),
            Reserve::Refused { index: 0, .. }
        ));
        let after = s.settle(&cs, "r1", t(120), now).await.unwrap();
        assert_eq!(after[0].spent, t(120));
        assert_eq!(after[0].reserved, t(0));
        assert!(matches!(
            s.reserve(&cs, "r2", t(500), now).await.unwrap(),
            Reserve::Admitted(_)
        ));
        // Settling twice charges once.
        s.settle(&cs, "r2", t(500), now).await.unwrap();
        let again = s.settle(&cs, "r2", t(500), now).await.unwrap();
        assert_eq!(again[0].spent, t(620));
    }

    #[tokio::test]
    async fn the_window_resets_at_its_end() {
        let s = MemoryStore::default();
        let cs = [counter("a", DAY, 100, true)];
        let day = 86_400 * 200;
        s.reserve(&cs, "r1", t(100), day + 5).await.unwrap();
        s.settle(&cs, "r1", t(100), day + 5).await.unwrap();
        assert!(matches!(
            s.reserve(&cs, "r2", t(1), day + 86_399).await.unwrap(),
            Reserve::Refused { .. }
        ));
        assert!(matches!(
            s.reserve(&cs, "r3", t(100), day + 86_400).await.unwrap(),
            Reserve::Admitted(_)
        ));
        // A rolling window frees spend slot by slot.
        let r = [counter("b", Window::Rolling(600), 100, true)];
        s.reserve(&r, "x", t(60), 0).await.unwrap();
        s.settle(&r, "x", t(60), 0).await.unwrap();
        s.reserve(&r, "y", t(40), 300).await.unwrap();
        s.settle(&r, "y", t(40), 300).await.unwrap();
        assert_eq!(s.snapshot(&r, 599).await.unwrap()[0].spent, t(100));
        assert_eq!(s.snapshot(&r, 600).await.unwrap()[0].spent, t(40));
        assert_eq!(s.snapshot(&r, 900).await.unwrap()[0].spent, t(0));
    }

    #[tokio::test]
    async fn a_soft_budget_counts_past_its_limit_and_a_hard_one_beside_it_still_refuses() {
        let s = MemoryStore::default();
        let soft = [counter("soft", DAY, 10, false)];
        s.reserve(&soft, "a", t(50), 0).await.unwrap();
        let st = s.settle(&soft, "a", t(50), 0).await.unwrap();
        assert_eq!(st[0].spent, t(50), "counted past the limit");
        let both = [
            counter("soft", DAY, 10, false),
            counter("hard", DAY, 60, true),
        ];
        assert!(matches!(
            s.reserve(&both, "b", t(60), 0).await.unwrap(),
            Reserve::Admitted(_)
        ));
        assert!(matches!(
            s.reserve(&both, "c", t(1), 0).await.unwrap(),
            Reserve::Refused { index: 1, .. }
        ));
        // A refused call reserved nothing anywhere.
        let st = s.snapshot(&both, 0).await.unwrap();
        assert_eq!(st[0].reserved, t(60));
    }

    #[tokio::test]
    async fn an_unsettled_reservation_is_charged_in_full_when_it_expires() {
        let s = MemoryStore::default();
        let cs = [counter(
            "a",
            Window::Calendar(CalendarWindow::Month),
            1000,
            true,
        )];
        s.reserve(&cs, "lost", t(300), 0).await.unwrap();
        let st = s.snapshot(&cs, RESERVATION_TTL_SECS).await.unwrap();
        assert_eq!((st[0].spent, st[0].reserved), (t(300), t(0)));
        // Its late settlement changes nothing.
        let st = s
            .settle(&cs, "lost", t(1), RESERVATION_TTL_SECS)
            .await
            .unwrap();
        assert_eq!(st[0].spent, t(300));
    }

    #[tokio::test]
    async fn concurrent_reservations_never_commit_more_than_the_limit() {
        let s = Arc::new(MemoryStore::default());
        let cs = Arc::new([counter("a", DAY, 1000, true)]);
        let mut tasks = Vec::new();
        for i in 0..200 {
            let (s, cs) = (s.clone(), cs.clone());
            tasks.push(tokio::spawn(async move {
                let id = format!("r{i}");
                match s.reserve(&cs[..], &id, t(30), 0).await.unwrap() {
                    Reserve::Admitted(_) => {
                        tokio::task::yield_now().await;
                        s.settle(&cs[..], &id, t(25), 0).await.unwrap();
                        true
                    }
                    Reserve::Refused { .. } => false,
                }
            }));
        }
        let mut admitted = 0;
        for task in tasks {
            admitted += u64::from(task.await.unwrap());
        }
        let st = s.snapshot(&cs[..], 0).await.unwrap();
        assert_eq!(st[0].spent, t(25 * admitted));
        assert!(st[0].spent.tokens <= 1000);
        // At least 1000/30 calls fit even if all were in flight at once.
        assert!(admitted >= 33, "{admitted}");
    }
}
