//! A bound on the legacy sessions one replica keeps in memory (`spec.limits.maxSessions`).
//!
//! rmcp's [`LocalSessionManager`] keeps every legacy session (a worker task, the handler's
//! serve loop, their channels) until the client sends DELETE or the session idles past
//! `SessionConfig::keep_alive` (`spec.limits.sessionIdleTimeoutSeconds`). Nothing bounds how
//! many there are at once: a client opening sessions in a loop grows the replica's memory for
//! as long as the idle timeout.
//!
//! [`LimitedSessions`] wraps it. At the limit, a new session (or one restored from its sealed
//! id, [`super::session`]) first evicts the least recently used session that has no request in
//! flight: no response stream open, POST or GET. Eviction is harmless by construction — a
//! session id is a sealed token that any replica can restore a session from, so the evicted
//! client's next request restores its session here (evicting another) and is answered as if
//! nothing happened; only state the session held in memory beyond its `initialize` parameters
//! (a server-to-client request waiting for an answer, SSE events kept for resumption) is lost,
//! and an idle session has none in flight. When every session at the limit has a request in
//! flight, the new session is refused: evicting one would cut a response in progress.
//!
//! Idle sessions also leave after `spec.limits.sessionIdleTimeoutSeconds` without a request
//! ([`LimitedSessions::expire_idle`], swept by [`spawn_idle_sweeper`]). rmcp's own keep-alive
//! is not enough: its timer restarts on every message the session carries, including the
//! portal's `notifications/*/list_changed` pushed to every session whenever the catalog
//! changes (an upstream restarting, a reload). With catalog changes more often than the idle
//! timeout, a session its client abandoned without DELETE would never leave (the soak saw
//! ~5 MiB more RSS per upstream restart). Here only the client's requests count as use.
//!
//! "Recently used" is any request naming the session (rmcp asks `has_session` for each). The
//! window between rmcp's `has_session` and its use of the session is a few microseconds, and
//! `has_session` makes the session the most recently used, so eviction never picks a session
//! whose request is on its way in unless the limit is about the number of requests in flight.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::metrics::SessionMetrics;
use futures::{Stream, StreamExt};
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError,
};
use rmcp::transport::streamable_http_server::session::{
    EventStore, RestoreOutcome, ServerSseMessage, SessionId, SessionManager,
};
use tokio_util::sync::CancellationToken;

/// Why [`LimitedSessions`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// rmcp's session manager failed.
    #[error(transparent)]
    Local(#[from] LocalSessionManagerError),
    /// At the limit, with a request in flight on every session.
    #[error(
        "this replica holds its limit of {0} sessions (spec.limits.maxSessions), each with a request in flight; retry later"
    )]
    Full(usize),
}

/// The bookkeeping: last use and requests in flight per session, and the idle sessions by
/// last use (oldest first).
#[derive(Default)]
struct Lru {
    /// Ticks of a logical clock; each use takes the next.
    clock: u64,
    sessions: HashMap<SessionId, Entry>,
    /// Sessions without a request in flight, by the tick of their last use.
    idle: BTreeMap<u64, SessionId>,
    /// Slots taken by sessions being created (not yet in `sessions`).
    reserved: usize,
    /// Evicted sessions whose worker has not yet reported its end: rmcp's serve loop calls
    /// `close_session` once a worker ends, and for an evicted session that call must not close
    /// a session restored under the same id in the meantime.
    closing: HashMap<SessionId, u32>,
}

struct Entry {
    /// The tick under which the session is in `idle` (meaningful when `in_flight` is 0).
    tick: u64,
    in_flight: u32,
    /// When the client last used it (a request began or ended).
    used: Instant,
}

impl Lru {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Marks `id` used now; `Some(delta)` changes its requests in flight.
    fn touch(&mut self, id: &SessionId, delta: i32) {
        let now = self.tick();
        let Some(e) = self.sessions.get_mut(id) else {
            return;
        };
        if e.in_flight == 0 {
            self.idle.remove(&e.tick);
        }
        e.in_flight = e.in_flight.saturating_add_signed(delta);
        e.tick = now;
        e.used = Instant::now();
        if e.in_flight == 0 {
            self.idle.insert(now, id.clone());
        }
    }

    fn insert(&mut self, id: SessionId) {
        let now = self.tick();
        if let Some(old) = self.sessions.insert(
            id.clone(),
            Entry {
                tick: now,
                in_flight: 0,
                used: Instant::now(),
            },
        ) && old.in_flight == 0
        {
            self.idle.remove(&old.tick);
        }
        self.idle.insert(now, id);
    }

    fn remove(&mut self, id: &SessionId) -> bool {
        match self.sessions.remove(id) {
            Some(e) => {
                if e.in_flight == 0 {
                    self.idle.remove(&e.tick);
                }
                true
            }
            None => false,
        }
    }

    /// Takes the least recently used idle session out, to be closed: `None` when there is none.
    fn pop_idle(&mut self, max: usize) -> Option<SessionId> {
        let (_, id) = self.idle.pop_first()?;
        self.sessions.remove(&id);
        if self.closing.len() > 2 * max + 1024 {
            // Reports that never came (a worker that ended before its eviction reported
            // already): forget them rather than grow.
            self.closing.clear();
        }
        *self.closing.entry(id.clone()).or_default() += 1;
        Some(id)
    }

    /// Makes room for one more session within `max`: reserves a slot and returns the sessions
    /// to close, or `None` when every session has a request in flight.
    fn make_room(&mut self, max: usize) -> Option<Vec<SessionId>> {
        let mut victims = Vec::new();
        while self.sessions.len() + self.reserved >= max {
            victims.push(self.pop_idle(max)?);
        }
        self.reserved += 1;
        Some(victims)
    }

    /// Takes out the sessions without a request in flight whose client has not used them for
    /// `timeout` (as of `now`), to be closed. `idle` is in order of last use, so the scan stops
    /// at the first session used more recently.
    fn expire(&mut self, now: Instant, timeout: Duration, max: usize) -> Vec<SessionId> {
        let mut expired = Vec::new();
        while let Some((_, id)) = self.idle.first_key_value() {
            let stale = self
                .sessions
                .get(id)
                .is_none_or(|e| now.saturating_duration_since(e.used) >= timeout);
            if !stale {
                break;
            }
            expired.extend(self.pop_idle(max));
        }
        expired
    }
}

/// rmcp's [`LocalSessionManager`] with at most `max` sessions: see the module documentation.
pub struct LimitedSessions {
    inner: LocalSessionManager,
    max: usize,
    /// How long a session may go without a request from its client.
    idle_timeout: Duration,
    lru: Arc<Mutex<Lru>>,
    counters: SessionMetrics,
}

impl std::fmt::Debug for LimitedSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitedSessions")
            .field("max", &self.max)
            .field("open", &self.len())
            .finish()
    }
}

impl LimitedSessions {
    /// At most `max` (at least 1) sessions of `inner`, each closed after `idle_timeout` without
    /// a request from its client (see [`LimitedSessions::expire_idle`]), counted in `counters`.
    pub fn new(
        inner: LocalSessionManager,
        max: usize,
        idle_timeout: Duration,
        counters: SessionMetrics,
    ) -> Self {
        LimitedSessions {
            inner,
            max: max.max(1),
            idle_timeout,
            lru: Arc::default(),
            counters,
        }
    }

    /// Closes the sessions without a request in flight whose client has not used them for the
    /// idle timeout; returns how many. Harmless like an eviction: the sealed id restores the
    /// session if its client comes back.
    pub async fn expire_idle(&self) -> usize {
        let expired = {
            let mut lru = self.lock();
            let expired = lru.expire(Instant::now(), self.idle_timeout, self.max);
            self.update_gauge(&lru);
            expired
        };
        self.counters.idle_closed.inc_by(expired.len() as u64);
        for id in &expired {
            tracing::debug!(session = %id, "idle legacy session closed (spec.limits.sessionIdleTimeoutSeconds)");
            let _ = self.inner.close_session(id).await;
        }
        expired.len()
    }

    /// Sessions in memory.
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Whether no session is in memory.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        // The bookkeeping stays consistent across a panic elsewhere: never poisoned in effect.
        self.lru.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update_gauge(&self, lru: &Lru) {
        self.counters.open.set(lru.sessions.len() as i64);
    }

    /// Reserves a slot for a new session, closing the sessions evicted for it.
    async fn reserve(&self) -> Result<(), LimitError> {
        let victims = {
            let mut lru = self.lock();
            let victims = lru.make_room(self.max);
            self.update_gauge(&lru);
            victims
        };
        let Some(victims) = victims else {
            self.counters.refused.inc();
            tracing::warn!(
                max = self.max,
                "legacy session refused: spec.limits.maxSessions reached and every session has a request in flight"
            );
            return Err(LimitError::Full(self.max));
        };
        for id in victims {
            self.counters.evicted.inc();
            tracing::debug!(session = %id, "idle legacy session evicted (spec.limits.maxSessions)");
            // The worker ends; rmcp's serve loop then calls `close_session` once more, which
            // finds nothing left to do.
            let _ = self.inner.close_session(&id).await;
        }
        Ok(())
    }

    /// Ends a reservation: the session `id` is in (when created) or not.
    fn settle(&self, id: Option<SessionId>) {
        let mut lru = self.lock();
        lru.reserved = lru.reserved.saturating_sub(1);
        if let Some(id) = id {
            lru.insert(id);
        }
        self.update_gauge(&lru);
    }

    fn touch(&self, id: &SessionId, delta: i32) {
        self.lock().touch(id, delta);
    }

    /// `stream`, counted as a request in flight on `id` until it is dropped.
    fn in_flight<S>(
        &self,
        id: &SessionId,
        stream: S,
    ) -> impl Stream<Item = ServerSseMessage> + Send + Sync + 'static + use<S>
    where
        S: Stream<Item = ServerSseMessage> + Send + Sync + 'static,
    {
        self.touch(id, 1);
        let guard = InFlight {
            lru: self.lru.clone(),
            id: id.clone(),
        };
        stream.map(move |m| {
            let _ = &guard;
            m
        })
    }
}

/// Runs [`LimitedSessions::expire_idle`] every tenth of the idle timeout (at least every
/// second, at most every 30 s) until `stop`, or until the sessions are dropped.
pub fn spawn_idle_sweeper(sessions: &Arc<LimitedSessions>, stop: CancellationToken) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let every = (sessions.idle_timeout / 10).clamp(Duration::from_secs(1), Duration::from_secs(30));
    let sessions: Weak<LimitedSessions> = Arc::downgrade(sessions);
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Some(sessions) = sessions.upgrade() else {
                return;
            };
            sessions.expire_idle().await;
        }
    });
}

/// A request in flight on a session; done when dropped.
struct InFlight {
    lru: Arc<Mutex<Lru>>,
    id: SessionId,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.lru
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .touch(&self.id, -1);
    }
}

impl SessionManager for LimitedSessions {
    type Error = LimitError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        self.reserve().await?;
        match self.inner.create_session().await {
            Ok((id, transport)) => {
                self.settle(Some(id.clone()));
                Ok((id, transport))
            }
            Err(e) => {
                self.settle(None);
                Err(e.into())
            }
        }
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        self.touch(id, 0);
        Ok(self.inner.initialize_session(id, message).await?)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        self.touch(id, 0);
        Ok(self.inner.has_session(id).await?)
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        {
            let mut lru = self.lock();
            if let Some(n) = lru.closing.get_mut(id) {
                // The end of an evicted session's worker, already closed: nothing to do (and
                // the session may live again, restored).
                *n -= 1;
                if *n == 0 {
                    lru.closing.remove(id);
                }
                return Ok(());
            }
            if lru.remove(id) {
                self.update_gauge(&lru);
            }
        }
        Ok(self.inner.close_session(id).await?)
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let stream = self.inner.create_stream(id, message).await?;
        Ok(self.in_flight(id, stream))
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        self.touch(id, 0);
        Ok(self.inner.accept_message(id, message).await?)
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let stream = self.inner.create_standalone_stream(id).await?;
        Ok(self.in_flight(id, stream))
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let stream = self.inner.resume(id, last_event_id).await?;
        Ok(self.in_flight(id, stream))
    }

    async fn restore_session(
        &self,
        id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        if self.lock().sessions.contains_key(&id) {
            return Ok(RestoreOutcome::AlreadyPresent);
        }
        self.reserve().await?;
        match self.inner.restore_session(id.clone()).await {
            Ok(RestoreOutcome::Restored(t)) => {
                self.settle(Some(id));
                Ok(RestoreOutcome::Restored(t))
            }
            Ok(other) => {
                self.settle(None);
                Ok(other)
            }
            Err(e) => {
                self.settle(None);
                Err(e.into())
            }
        }
    }

    fn event_store(&self) -> Option<Arc<dyn EventStore>> {
        self.inner.event_store()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<SessionId> {
        (0..n).map(|i| SessionId::from(format!("s{i}"))).collect()
    }

    #[test]
    fn the_least_recently_used_idle_session_is_evicted_first() {
        let mut lru = Lru::default();
        let s = ids(4);
        for id in &s[..3] {
            assert_eq!(lru.make_room(3), Some(vec![]));
            lru.reserved -= 1;
            lru.insert(id.clone());
        }
        // s0 used again: s1 is now the least recently used.
        lru.touch(&s[0], 0);
        assert_eq!(lru.make_room(3), Some(vec![s[1].clone()]));
        lru.reserved -= 1;
        lru.insert(s[3].clone());
        assert_eq!(lru.sessions.len(), 3);
        assert!(!lru.sessions.contains_key(&s[1]));
    }

    #[test]
    fn a_session_with_a_request_in_flight_is_never_evicted() {
        let mut lru = Lru::default();
        let s = ids(3);
        for id in &s[..2] {
            lru.insert(id.clone());
        }
        // s0 is the oldest but busy: s1 goes.
        lru.touch(&s[0], 1);
        assert_eq!(lru.make_room(2), Some(vec![s[1].clone()]));
        lru.reserved -= 1;
        lru.insert(s[2].clone());
        lru.touch(&s[2], 1);
        // Both busy: no room.
        assert_eq!(lru.make_room(2), None);
        // s0's request ends: it can go.
        lru.touch(&s[0], -1);
        assert_eq!(lru.make_room(2), Some(vec![s[0].clone()]));
    }

    #[test]
    fn an_evicted_session_awaits_one_report_of_its_end() {
        let mut lru = Lru::default();
        let s = ids(2);
        lru.insert(s[0].clone());
        assert_eq!(lru.make_room(1), Some(vec![s[0].clone()]));
        assert_eq!(lru.closing.get(&s[0]), Some(&1));
    }

    #[test]
    fn sessions_being_created_count_against_the_limit() {
        let mut lru = Lru::default();
        assert_eq!(lru.make_room(2), Some(vec![]));
        assert_eq!(lru.make_room(2), Some(vec![]));
        // Two reserved, none idle to evict.
        assert_eq!(lru.make_room(2), None);
        lru.reserved -= 1;
        lru.insert(ids(1)[0].clone());
        assert_eq!(lru.make_room(2), Some(vec![ids(1)[0].clone()]));
    }

    #[test]
    fn sessions_unused_for_the_idle_timeout_expire_unless_busy() {
        let mut lru = Lru::default();
        let s = ids(3);
        for id in &s {
            lru.insert(id.clone());
        }
        let timeout = Duration::from_secs(60);
        let now = Instant::now();
        // Nothing is stale yet.
        assert!(lru.expire(now, timeout, 10).is_empty());
        // s1 has a request in flight; s2 is used again later.
        lru.touch(&s[1], 1);
        let later = now + Duration::from_secs(61);
        lru.sessions.get_mut(&s[2]).unwrap().used = later;
        assert_eq!(lru.expire(later, timeout, 10), vec![s[0].clone()]);
        assert_eq!(lru.sessions.len(), 2);
        // s0's worker still reports its end once, like an evicted session's.
        assert_eq!(lru.closing.get(&s[0]), Some(&1));
        // s1's request ends: it was used just now, so it stays.
        lru.touch(&s[1], -1);
        assert!(lru.expire(later, timeout, 10).is_empty());
        let much_later = Instant::now() + Duration::from_secs(3600);
        let mut gone = lru.expire(much_later, timeout, 10);
        gone.sort();
        assert_eq!(gone, vec![s[1].clone(), s[2].clone()]);
        assert!(lru.sessions.is_empty() && lru.idle.is_empty());
    }

    #[test]
    fn a_removed_session_leaves_no_trace_in_the_order() {
        let mut lru = Lru::default();
        let s = ids(2);
        lru.insert(s[0].clone());
        lru.insert(s[1].clone());
        lru.touch(&s[1], 1);
        assert!(lru.remove(&s[0]));
        assert!(lru.remove(&s[1]));
        assert!(!lru.remove(&s[1]));
        assert!(lru.idle.is_empty() && lru.sessions.is_empty());
        // Touching a session that is gone does nothing.
        lru.touch(&s[0], 1);
        assert!(lru.idle.is_empty() && lru.sessions.is_empty());
    }
}
