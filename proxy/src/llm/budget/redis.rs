//! The Redis store: counters every replica of a portal shares. A reservation and a settlement
//! are each one Lua script over every counter of the call, so concurrent calls on any replica
//! see one another (Redis runs a script alone).
//!
//! Keys, under the portal's prefix, per counter `<key>` ([`super::account::CounterRef::key`]):
//! - `<key>:s:<slot>`: a hash `{t, c}` of the spend settled in one slot of the window (a day, a
//!   month, or 1/60 of a rolling window); it expires a day after it leaves the window.
//! - `<key>:ra`: a hash of the reservations in flight (`<id>` -> `tokens:cost`) and their totals
//!   (`t`, `c`); `<key>:rz`: their ids by expiry. A reservation not settled within
//!   [`RESERVATION_TTL_SECS`] (its replica died) is charged in full by the next script that
//!   touches the counter, so settled spend is never lost and a crash never frees budget.
//!
//! And per `user` budget, `<policy>/<budget>/<window id>/users`: the index of its subjects'
//! counters, a sorted set of scope keys (`u:<subject>`) scored by the time until which the
//! counter may hold spend or a reservation (the end of the slot last charged, or the
//! reservation's expiry, whichever is later). The same scripts keep it (a reservation, a
//! settlement or an expired reservation's charge adds the subject), so the spend summary
//! ([`super::summary`]) reads a budget's subjects without a `SCAN` of a Redis other portals may
//! share; it drops members whose time has passed before it reads them.
//!
//! Amounts are written with `HINCRBY` from the arguments as given (exact 64-bit integers) and
//! compared in Lua's doubles (exact below 2^53: 9 * 10^15 tokens, or 9,000,000 units of
//! money in nano-units).

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;

use super::account::{Amount, CounterRef, Snapshot};
use super::{RESERVATION_TTL_SECS, Reserve, Store, StoreError};
use crate::config::RedisConfig;

/// Reads every counter's state (charging expired reservations first). Sets `states` (per
/// counter: spent t, c, reserved t, c, oldest live slot position with spend or -1) and
/// `metas` (per counter: hard, limit t, limit c, ttl, first key index, index member or '',
/// index score). Keys per counter: ra, rz, the budget's subject index (ra again when the
/// counter is not a user's), then the live slots, newest first.
const READ: &str = r#"
-- HINCRBY by minus a decimal string (Redis refuses "-0").
local function sub(key, field, amount)
  if amount ~= '0' then redis.call('HINCRBY', key, field, '-' .. amount) end
end
-- Records a user's counter in its budget's subject index, until `score` (plus a day).
local function index(idx, member, score, now)
  if member ~= '' then
    redis.call('ZADD', idx, score, member)
    redis.call('EXPIRE', idx, score - now + 86400)
  end
end
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[ARGS_N])
local ki, ai = 1, ARGS_N + 1
local states, metas = {}, {}
for i = 1, n do
  local ra, rz, idx, cur = KEYS[ki], KEYS[ki + 1], KEYS[ki + 2], KEYS[ki + 3]
  local nslots = tonumber(ARGV[ai])
  local ttl = tonumber(ARGV[ai + 4])
  local member, score = ARGV[ai + 5], tonumber(ARGV[ai + 6])
  local gone = redis.call('ZRANGEBYSCORE', rz, '-inf', now)
  for _, rid in ipairs(gone) do
    local amt = redis.call('HGET', ra, rid)
    if amt then
      local t, c = string.match(amt, '^(%d+):(%d+)$')
      sub(ra, 't', t)
      sub(ra, 'c', c)
      redis.call('HDEL', ra, rid)
      redis.call('HINCRBY', cur, 't', t)
      redis.call('HINCRBY', cur, 'c', c)
      redis.call('EXPIRE', cur, ttl)
      index(idx, member, score, now)
    end
    redis.call('ZREM', rz, rid)
  end
  local st, sc, oldest = 0, 0, -1
  for k = 0, nslots - 1 do
    local v = redis.call('HMGET', KEYS[ki + 3 + k], 't', 'c')
    local t, c = tonumber(v[1] or '0'), tonumber(v[2] or '0')
    if t > 0 or c > 0 then oldest = k end
    st, sc = st + t, sc + c
  end
  local r = redis.call('HMGET', ra, 't', 'c')
  states[i] = {st, sc, tonumber(r[1] or '0'), tonumber(r[2] or '0'), oldest}
  metas[i] = {ARGV[ai + 1] == '1', tonumber(ARGV[ai + 2]), tonumber(ARGV[ai + 3]), ttl, ki, member, score}
  ki, ai = ki + 3 + nslots, ai + 7
end
local function reply(refused)
  local out = {refused}
  for i = 1, n do
    for j = 1, 5 do table.insert(out, states[i][j]) end
  end
  return out
end
"#;

/// ARGV: now, id ('' reads only), expiry, need t, need c, n, then per counter nslots, hard,
/// limit t (-1: none), limit c, slot ttl, index member, index score. Reply: 0 (admitted) or the 1-based refusing
/// counter, then the states before.
const RESERVE: &str = r#"
if ARGV[2] == '' then return reply(0) end
local nt, nc = tonumber(ARGV[4]), tonumber(ARGV[5])
for i = 1, n do
  local s, m = states[i], metas[i]
  if m[1] then
    if m[2] >= 0 and s[1] + s[3] + nt > m[2] then return reply(i) end
    if m[3] >= 0 and s[2] + s[4] + nc > m[3] then return reply(i) end
  end
end
for i = 1, n do
  local ra, rz = KEYS[metas[i][5]], KEYS[metas[i][5] + 1]
  redis.call('HINCRBY', ra, 't', ARGV[4])
  redis.call('HINCRBY', ra, 'c', ARGV[5])
  redis.call('HSET', ra, ARGV[2], ARGV[4] .. ':' .. ARGV[5])
  redis.call('ZADD', rz, ARGV[3], ARGV[2])
  redis.call('EXPIRE', ra, RES_TTL)
  redis.call('EXPIRE', rz, RES_TTL)
  index(KEYS[metas[i][5] + 2], metas[i][6], metas[i][7], tonumber(ARGV[1]))
end
return reply(0)
"#;

/// ARGV: now, id, used t, used c, n, then per counter nslots, -, -, -, slot ttl, index
/// member, index score. Ends the
/// reservation (if it is still there: an expired one was charged in full) charging `used` to
/// the current slot. Reply: 0, then the states after.
const SETTLE: &str = r#"
local id = ARGV[2]
for i = 1, n do
  local m = metas[i]
  local ra, rz, idx, cur = KEYS[m[5]], KEYS[m[5] + 1], KEYS[m[5] + 2], KEYS[m[5] + 3]
  local amt = redis.call('HGET', ra, id)
  if amt then
    local t, c = string.match(amt, '^(%d+):(%d+)$')
    sub(ra, 't', t)
    sub(ra, 'c', c)
    redis.call('HDEL', ra, id)
    redis.call('ZREM', rz, id)
    redis.call('HINCRBY', cur, 't', ARGV[3])
    redis.call('HINCRBY', cur, 'c', ARGV[4])
    redis.call('EXPIRE', cur, m[4])
    index(idx, m[6], m[7], tonumber(ARGV[1]))
    local s = states[i]
    s[1], s[2], s[3], s[4] = s[1] + tonumber(ARGV[3]), s[2] + tonumber(ARGV[4]), s[3] - tonumber(t), s[4] - tonumber(c)
    if s[5] < 0 and (tonumber(ARGV[3]) > 0 or tonumber(ARGV[4]) > 0) then s[5] = 0 end
  end
end
return reply(0)
"#;

/// Counters in a Redis every replica shares.
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    reserve: redis::Script,
    settle: redis::Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn script(args_n: usize, body: &str) -> redis::Script {
    let read = READ.replace("ARGS_N", &args_n.to_string());
    redis::Script::new(&format!(
        "{read}\n{}",
        body.replace("RES_TTL", &(RESERVATION_TTL_SECS + 60).to_string())
    ))
}

impl RedisStore {
    /// A store on `cfg` (connects on first use, and again after the connection breaks). Must
    /// be called inside the Tokio runtime.
    pub fn new(cfg: &RedisConfig) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(cfg.url.as_str())
            .map_err(|e| StoreError(format!("the Redis URL is not valid: {:?}", e.kind())))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.timeout))
            .set_response_timeout(Some(cfg.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| StoreError(e.to_string()))?;
        Ok(RedisStore {
            conn,
            prefix: cfg.key_prefix.clone(),
            timeout: cfg.timeout,
            reserve: script(6, RESERVE),
            settle: script(5, SETTLE),
        })
    }

    /// The subject index of the `user` budget whose counter keys start with `rule`
    /// (`<policy>/<budget>/<window id>/`).
    fn index_key(&self, rule: &str) -> String {
        format!("{}{rule}users", self.prefix)
    }

    async fn run(
        &self,
        script: &redis::Script,
        counters: &[CounterRef],
        head: &[String],
        now: i64,
    ) -> Result<(i64, Vec<Snapshot>), StoreError> {
        let mut inv = script.prepare_invoke();
        for a in head {
            inv.arg(a);
        }
        for c in counters {
            let base = format!("{}{}", self.prefix, c.key);
            let user = c.user_index();
            inv.key(format!("{base}:ra")).key(format!("{base}:rz"));
            match user {
                Some((rule, _)) => inv.key(self.index_key(rule)),
                None => inv.key(format!("{base}:ra")),
            };
            let slots: Vec<i64> = c.window.live_slots(now).collect();
            for s in &slots {
                inv.key(format!("{base}:s:{s}"));
            }
            inv.arg(slots.len())
                .arg(if c.hard { "1" } else { "0" })
                .arg(c.limit.tokens.map_or(-1i128, i128::from).to_string())
                .arg(c.limit.cost.map_or(-1i128, i128::from).to_string())
                .arg(c.window.slot_ttl(now))
                .arg(user.map_or("", |(_, member)| member))
                .arg(index_score(c, now));
        }
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = tokio::time::timeout(self.timeout, inv.invoke_async(&mut conn))
            .await
            .map_err(|_| StoreError("Redis did not answer in time".into()))?
            .map_err(redis_error)?;
        if reply.len() != 1 + 5 * counters.len() {
            return Err(StoreError("Redis answered an unexpected reply".into()));
        }
        let u = |v: i64| v.max(0) as u64;
        let states = counters
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let r = &reply[1 + 5 * i..6 + 5 * i];
                Snapshot {
                    spent: Amount {
                        tokens: u(r[0]),
                        cost: u(r[1]),
                    },
                    reserved: Amount {
                        tokens: u(r[2]),
                        cost: u(r[3]),
                    },
                    oldest_slot: (r[4] >= 0).then(|| c.window.slot(now) - r[4]),
                }
            })
            .collect();
        Ok((reply[0], states))
    }
}

/// Until when a user's counter charged at `now` may hold spend or a reservation: the end of
/// the current slot's stay in the window, or the expiry of a reservation taken now (its hash
/// outlives it by a minute), whichever is later.
fn index_score(c: &CounterRef, now: i64) -> i64 {
    c.window
        .slot_leaves(c.window.slot(now))
        .max(now + RESERVATION_TTL_SECS + 60)
}

#[async_trait]
impl Store for RedisStore {
    async fn reserve(
        &self,
        counters: &[CounterRef],
        id: &str,
        need: Amount,
        now: i64,
    ) -> Result<Reserve, StoreError> {
        let head = [
            now.to_string(),
            id.to_owned(),
            (now + RESERVATION_TTL_SECS).to_string(),
            need.tokens.to_string(),
            need.cost.to_string(),
            counters.len().to_string(),
        ];
        let (refused, states) = self.run(&self.reserve, counters, &head, now).await?;
        Ok(if refused == 0 {
            Reserve::Admitted(states)
        } else {
            Reserve::Refused {
                index: (refused - 1) as usize,
                states,
            }
        })
    }

    async fn settle(
        &self,
        counters: &[CounterRef],
        id: &str,
        used: Amount,
        now: i64,
    ) -> Result<Vec<Snapshot>, StoreError> {
        let head = [
            now.to_string(),
            id.to_owned(),
            used.tokens.to_string(),
            used.cost.to_string(),
            counters.len().to_string(),
        ];
        Ok(self.run(&self.settle, counters, &head, now).await?.1)
    }

    async fn snapshot(
        &self,
        counters: &[CounterRef],
        now: i64,
    ) -> Result<Vec<Snapshot>, StoreError> {
        let head = [
            now.to_string(),
            String::new(),
            "0".into(),
            "0".into(),
            "0".into(),
            counters.len().to_string(),
        ];
        Ok(self.run(&self.reserve, counters, &head, now).await?.1)
    }

    async fn users(
        &self,
        rule: &str,
        now: i64,
        cap: usize,
    ) -> Result<(Vec<String>, usize), StoreError> {
        let idx = self.index_key(rule);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&idx)
            .arg("-inf")
            .arg(format!("({now}"))
            .ignore()
            .cmd("ZCARD")
            .arg(&idx)
            .cmd("ZREVRANGE")
            .arg(&idx)
            .arg(0)
            .arg(cap.max(1) - 1);
        let mut conn = self.conn.clone();
        let (total, members): (usize, Vec<String>) =
            tokio::time::timeout(self.timeout, pipe.query_async(&mut conn))
                .await
                .map_err(|_| StoreError("Redis did not answer in time".into()))?
                .map_err(redis_error)?;
        Ok((members, total))
    }
}

fn redis_error(e: redis::RedisError) -> StoreError {
    StoreError(format!(
        "Redis: {:?}: {}",
        e.kind(),
        e.detail().unwrap_or("")
    ))
}

#[cfg(test)]
mod tests {
    use super::super::account::{Limit, Window};
    use super::*;
    use crds::budget::CalendarWindow;
    use std::sync::Arc;

    /// A real redis-server (Debian's, installed by e2e/setup.sh) on a free port, killed on drop.
    struct Server(std::process::Child, u16);

    impl Server {
        fn start() -> Server {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = std::process::Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                ])
                .args(["--appendonly", "no", "--logfile", "/dev/null"])
                .spawn()
                .expect("redis-server (apt-get install redis-server; e2e/setup.sh does)");
            // Killed and waited for on drop, also when it never listens.
            let server = Server(child, port);
            for _ in 0..200 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return server;
                }
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            panic!("redis-server did not listen on {port}");
        }

        fn store(&self) -> RedisStore {
            RedisStore::new(&RedisConfig {
                url: format!("redis://127.0.0.1:{}/0", self.1),
                key_prefix: "test:".into(),
                timeout: Duration::from_secs(2),
            })
            .unwrap()
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn counter(key: &str, window: Window, limit: Limit, hard: bool) -> CounterRef {
        CounterRef {
            key: key.into(),
            budget: "p/b".into(),
            window,
            limit,
            hard,
        }
    }

    fn t(tokens: u64, cost: u64) -> Amount {
        Amount { tokens, cost }
    }

    const DAY: Window = Window::Calendar(CalendarWindow::Day);

    #[tokio::test]
    async fn the_lua_scripts_reserve_settle_expire_and_refuse_like_the_memory_store() {
        let server = Server::start();
        let s = server.store();
        let limit = Limit {
            tokens: Some(1000),
            cost: Some(5_000_000_000_000),
        };
        let cs = [
            counter("a", DAY, limit, true),
            counter(
                "soft",
                Window::Rolling(600),
                Limit {
                    tokens: Some(1),
                    cost: None,
                },
                false,
            ),
        ];
        let now = 86_400 * 300 + 5;
        assert!(matches!(
            s.reserve(&cs, "r1", t(600, 3_000_000_000_000), now)
                .await
                .unwrap(),
            Reserve::Admitted(_)
        ));
        match s.reserve(&cs, "r2", t(500, 1), now).await.unwrap() {
            Reserve::Refused { index, states } => {
                assert_eq!(index, 0);
                assert_eq!(states[0].reserved, t(600, 3_000_000_000_000));
            }
            other => panic!("{other:?}"),
        }
        // Money alone refuses too (amounts past 2^32 stay exact).
        assert!(matches!(
            s.reserve(&cs, "r3", t(1, 2_000_000_000_001), now)
                .await
                .unwrap(),
            Reserve::Refused { index: 0, .. }
        ));
        let after = s.settle(&cs, "r1", t(120, 7), now).await.unwrap();
        assert_eq!((after[0].spent, after[0].reserved), (t(120, 7), t(0, 0)));
        assert_eq!(
            after[1].spent,
            t(120, 7),
            "a soft counter counts past its limit"
        );
        // Settling twice charges once.
        let again = s.settle(&cs, "r1", t(120, 7), now).await.unwrap();
        assert_eq!(again[0].spent, t(120, 7));
        // The next day is a new window; the rolling counter still holds the spend.
        let next = s.snapshot(&cs, now + 86_400).await.unwrap();
        assert_eq!((next[0].spent, next[1].spent), (t(0, 0), t(0, 0)));
        let later = s.snapshot(&cs, now + 500).await.unwrap();
        assert_eq!(later[1].spent, t(120, 7));
        assert_eq!(later[1].oldest_slot, Some(Window::Rolling(600).slot(now)));
        // A reservation never settled is charged in full once it expires.
        s.reserve(&cs, "lost", t(300, 0), now).await.unwrap();
        let st = s.snapshot(&cs, now + RESERVATION_TTL_SECS).await.unwrap();
        assert_eq!((st[0].spent, st[0].reserved), (t(420, 7), t(0, 0)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_reservations_through_two_connections_never_commit_more_than_the_limit() {
        let server = Server::start();
        let stores = [Arc::new(server.store()), Arc::new(server.store())];
        let cs = Arc::new([counter(
            "c",
            DAY,
            Limit {
                tokens: Some(1000),
                cost: None,
            },
            true,
        )]);
        let mut tasks = Vec::new();
        for i in 0..200 {
            let (s, cs) = (stores[i % 2].clone(), cs.clone());
            tasks.push(tokio::spawn(async move {
                let id = format!("r{i}");
                match s.reserve(&cs[..], &id, t(30, 0), 0).await.unwrap() {
                    Reserve::Admitted(_) => {
                        s.settle(&cs[..], &id, t(25, 0), 0).await.unwrap();
                        1u64
                    }
                    Reserve::Refused { .. } => 0,
                }
            }));
        }
        let mut admitted = 0;
        for task in tasks {
            admitted += task.await.unwrap();
        }
        let st = stores[0].snapshot(&cs[..], 0).await.unwrap();
        assert_eq!(st[0].spent.tokens, 25 * admitted);
        assert!(st[0].spent.tokens <= 1000);
        assert!(admitted >= 33, "{admitted}");
    }

    #[tokio::test]
    async fn the_summary_reads_a_budgets_subjects_from_its_index_without_scanning_redis() {
        let server = Server::start();
        let store = Arc::new(server.store());
        let now = 1_796_385_600; // 2026-12-04 12:00 UTC
        super::super::summary::tests::spend_is_summed_without_names(store.clone(), now).await;
        let mut conn = store.conn.clone();
        // One index per user budget, holding scope keys; the day's was emptied once its
        // window passed (the summary of the next day), the month's still holds three.
        let day: usize = redis::cmd("ZCARD")
            .arg("test:team/each/d/users")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(day, 0);
        let month: Vec<String> = redis::cmd("ZRANGE")
            .arg("test:team/monthly/m/users")
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(month.len(), 3);
        assert!(month.iter().all(|m| m.starts_with("u:")), "{month:?}");
        let ttl: i64 = redis::cmd("TTL")
            .arg("test:team/monthly/m/users")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(
            ttl > 86_400,
            "the index expires after its last member: {ttl}"
        );
        // Group and portal counters are not indexed.
        let exists: usize = redis::cmd("EXISTS")
            .arg("test:team/shared/m/users")
            .arg("test:team/all/r3600/users")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(exists, 0);
        // Nothing walked the keyspace.
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(stats.contains("cmdstat_zrevrange"), "{stats}");
        for walk in ["cmdstat_scan:", "cmdstat_keys:"] {
            assert!(!stats.contains(walk), "{walk} in {stats}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_an_error_not_a_hang() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let s = RedisStore::new(&RedisConfig {
            url: format!("redis://127.0.0.1:{port}/0"),
            key_prefix: "x:".into(),
            timeout: Duration::from_millis(200),
        })
        .unwrap();
        let started = std::time::Instant::now();
        let cs = [counter("a", DAY, Limit::default(), true)];
        assert!(s.reserve(&cs, "r", t(1, 0), 0).await.is_err());
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
