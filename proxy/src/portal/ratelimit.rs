//! Per-subject rate limits of tool calls (McpPolicy `limits`), kept where the portal says
//! (`spec.rateLimitStore`): this replica's memory ([`crate::policy::ratelimit::RateLimiter`]),
//! or a Redis every replica shares.
//!
//! The shared buckets are the same token buckets as the local ones (size `burst`, refilled at
//! `callsPerMinute` / 60 per second, one token per call), kept as a Redis hash per bucket,
//! `{k: tokens, t: last update in ms}`, under `<prefix>p:<subject>` (the portal bucket) and
//! `<prefix>t:<tool>:<subject>` (a tool's bucket; tool names hold no `:`). One Lua script per
//! call refills every bucket of the call from the Redis server's own clock (`TIME`, so the
//! replicas' clocks do not matter), refuses when any has less than one token (taking none),
//! else takes one from each: Redis runs a script alone, so concurrent calls on any replica
//! never take the same token twice. A bucket expires when it would be full again, so idle
//! subjects cost nothing. When Redis cannot be reached (or answers after `timeoutMillis`),
//! `onUnavailable` decides: this replica's buckets (`perReplica`, the default), no limit
//! (`failOpen`) or a refusal (`failClosed`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use crds::portal::RateLimitFallback;
use redis::aio::ConnectionManager;

use crate::config::RateLimitStoreConfig;
use crate::policy::RateLimits;
use crate::policy::ratelimit::{BucketSpec, RateLimited, RateLimiter, buckets};

/// KEYS: the call's buckets. ARGV: per bucket its rate per minute and its size. Reply:
/// `{0, 0}` (taken) or `{i, ms}`: bucket `i` (1-based) refused, a token is back in `ms`.
const TAKE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local left = {}
for i = 1, #KEYS do
  local rate = tonumber(ARGV[2 * i - 1]) / 60000
  local size = tonumber(ARGV[2 * i])
  local v = redis.call('HMGET', KEYS[i], 'k', 't')
  local k, last = tonumber(v[1]), tonumber(v[2])
  if k == nil or last == nil then k, last = size, now end
  local elapsed = now - last
  if elapsed < 0 then elapsed = 0 end
  k = math.min(size, k + elapsed * rate)
  if k < 1 then
    return {i, math.min(3600000, math.ceil((1 - k) / rate))}
  end
  left[i] = k - 1
end
for i = 1, #KEYS do
  local rate = tonumber(ARGV[2 * i - 1]) / 60000
  local size = tonumber(ARGV[2 * i])
  redis.call('HSET', KEYS[i], 'k', string.format('%.6f', left[i]), 't', now)
  redis.call('PEXPIRE', KEYS[i], math.ceil((size - left[i]) / rate) + 1000)
end
return {0, 0}
"#;

/// The shared buckets of one portal.
struct Shared {
    cfg: RateLimitStoreConfig,
    conn: ConnectionManager,
    script: redis::Script,
}

/// The rate limiter of a portal: shared buckets when configured, this replica's otherwise
/// (and as the `perReplica` fallback).
pub struct Limiter {
    local: RateLimiter,
    shared: ArcSwapOption<Shared>,
    /// The store configuration the shared buckets were built for (`None`: none configured, or
    /// the URL was refused and every check takes the fallback).
    built_for: Mutex<Option<RateLimitStoreConfig>>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("shared", &self.shared.load().is_some())
            .finish()
    }
}

/// What a check decided, and whether the store failed on the way.
#[derive(Debug)]
pub struct Checked {
    /// The decision.
    pub result: Result<(), RateLimited>,
    /// The store's error, when the fallback decided.
    pub store_error: Option<String>,
}

impl Limiter {
    /// A limiter over `cfg` (connects on first use). Must be called inside the Tokio runtime.
    pub fn new(cfg: Option<&RateLimitStoreConfig>) -> Limiter {
        let l = Limiter {
            local: RateLimiter::default(),
            shared: ArcSwapOption::empty(),
            built_for: Mutex::new(None),
        };
        l.reconfigure(cfg);
        l
    }

    /// Follows a configuration change: the shared buckets are rebuilt when the store changed.
    pub fn reconfigure(&self, cfg: Option<&RateLimitStoreConfig>) {
        let Ok(mut built) = self.built_for.lock() else {
            return;
        };
        if built.as_ref() == cfg && (cfg.is_none() || self.shared.load().is_some()) {
            return;
        }
        *built = cfg.cloned();
        self.shared.store(cfg.and_then(|c| match shared(c) {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => {
                tracing::error!(error = %e, "spec.rateLimitStore.redis: cannot be used");
                None
            }
        }));
    }

    /// Whether the shared store is configured (usable or not).
    fn configured(&self) -> Option<RateLimitFallback> {
        self.built_for
            .lock()
            .ok()
            .and_then(|b| b.as_ref().map(|c| c.on_unavailable))
    }

    /// Takes a token from each of the call's buckets, or from none when one is empty.
    pub async fn check(&self, subject: &str, tool: &str, limits: &RateLimits) -> Checked {
        let specs = buckets(tool, limits);
        if specs.is_empty() {
            return Checked {
                result: Ok(()),
                store_error: None,
            };
        }
        let Some(fallback) = self.configured() else {
            return Checked {
                result: self.local.check(subject, tool, limits),
                store_error: None,
            };
        };
        let error = match self.shared.load_full() {
            Some(s) => match s.take(subject, &specs).await {
                Ok(result) => {
                    return Checked {
                        result,
                        store_error: None,
                    };
                }
                Err(e) => e,
            },
            None => "the Redis URL was refused".to_owned(),
        };
        let result = match fallback {
            RateLimitFallback::PerReplica => self.local.check(subject, tool, limits),
            RateLimitFallback::FailOpen => Ok(()),
            RateLimitFallback::FailClosed => Err(RateLimited {
                scope: specs[0].scope,
                per_minute: specs[0].per_minute,
                retry_after: Duration::from_secs(1),
            }),
        };
        Checked {
            result,
            store_error: Some(error),
        }
    }
}

fn shared(cfg: &RateLimitStoreConfig) -> Result<Shared, String> {
    let client = redis::Client::open(cfg.redis.url.as_str())
        .map_err(|e| format!("the Redis URL is not valid: {:?}", e.kind()))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(cfg.redis.timeout))
        .set_response_timeout(Some(cfg.redis.timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(200));
    let conn =
        ConnectionManager::new_lazy_with_config(client, config).map_err(|e| e.to_string())?;
    Ok(Shared {
        cfg: cfg.clone(),
        conn,
        script: redis::Script::new(TAKE),
    })
}

impl Shared {
    async fn take(
        &self,
        subject: &str,
        specs: &[BucketSpec<'_>],
    ) -> Result<Result<(), RateLimited>, String> {
        let mut inv = self.script.prepare_invoke();
        for b in specs {
            let key = match b.tool {
                None => format!("{}p:{subject}", self.cfg.redis.key_prefix),
                Some(t) => format!("{}t:{t}:{subject}", self.cfg.redis.key_prefix),
            };
            inv.key(key).arg(b.per_minute.max(1)).arg(b.burst);
        }
        let mut conn = self.conn.clone();
        let reply: Vec<i64> =
            tokio::time::timeout(self.cfg.redis.timeout, inv.invoke_async(&mut conn))
                .await
                .map_err(|_| "Redis did not answer in time".to_owned())?
                .map_err(|e| format!("Redis: {:?}: {}", e.kind(), e.detail().unwrap_or("")))?;
        match reply.as_slice() {
            [0, _] => Ok(Ok(())),
            [i, ms] if *i >= 1 && (*i as usize) <= specs.len() => {
                let b = &specs[*i as usize - 1];
                Ok(Err(RateLimited {
                    scope: b.scope,
                    per_minute: b.per_minute,
                    retry_after: Duration::from_millis((*ms).max(1) as u64),
                }))
            }
            _ => Err("Redis answered an unexpected reply".to_owned()),
        }
    }
}
