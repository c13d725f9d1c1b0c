//! The Redis-backed limiter shared by several gateway instances.
//!
//! One round trip per decision: a Lua script runs the same GCRA as the local
//! limiter on a per-user key (`{prefix}{tier}:{user}`), using Redis's clock,
//! and answers allowed/remaining/retry/reset exactly. When Redis does not
//! answer within `redis_timeout`, the gateway falls back to its local
//! limiter (so clients see no errors, only a per-instance budget), logs the
//! transition once, counts it, and tries Redis again at most once a second
//! until it answers.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::Instant;

use super::local::LocalLimiter;
use super::{Decision, Tier};
use crate::metrics::Metrics;

const GCRA: &str = r"
local t = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local cap = t * burst
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local new_tat = tat + t * cost
if new_tat - now > cap then
  return {0, math.floor((cap - (tat - now)) / t), new_tat - cap - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, math.floor((cap - (new_tat - now)) / t), 0, new_tat - now}
";

/// How long the gateway waits before asking a failed Redis again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// See the module docs.
pub struct SharedLimiter {
    redis: ConnectionManager,
    script: redis::Script,
    prefix: String,
    timeout: Duration,
    fallback: LocalLimiter,
    up: AtomicBool,
    retry_at: Mutex<Option<Instant>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for SharedLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimiter")
            .field("prefix", &self.prefix)
            .field("up", &self.up.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl SharedLimiter {
    /// A limiter on the Redis at `url`; connects lazily, so a Redis that is
    /// down at start-up only means starting on the local fallback.
    pub fn new(
        url: &str,
        prefix: &str,
        timeout: Duration,
        tiers: &[Tier],
        metrics: Arc<Metrics>,
    ) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let redis = ConnectionManager::new_lazy_with_config(client, config)?;
        metrics.ratelimit_shared_up.set(1);
        Ok(SharedLimiter {
            redis,
            script: redis::Script::new(GCRA),
            prefix: prefix.to_owned(),
            timeout,
            fallback: LocalLimiter::new(tiers),
            up: AtomicBool::new(true),
            retry_at: Mutex::new(None),
            metrics,
        })
    }

    fn should_try_redis(&self) -> bool {
        if self.up.load(Ordering::Relaxed) {
            return true;
        }
        let mut retry_at = self.retry_at.lock().unwrap_or_else(|p| p.into_inner());
        match *retry_at {
            Some(at) if Instant::now() < at => false,
            _ => {
                // One probe per interval; everyone else stays local meanwhile.
                *retry_at = Some(Instant::now() + RETRY_AFTER_FAILURE);
                true
            }
        }
    }

    async fn ask_redis(
        &self,
        tier: &Tier,
        user: &str,
        cost: NonZeroU32,
    ) -> Result<Decision, String> {
        let key = format!("{}{}:{}", self.prefix, tier.name, user);
        let t_us = u64::try_from(tier.interval().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut conn = self.redis.clone();
        let mut invocation = self.script.key(key);
        invocation.arg(t_us).arg(tier.burst.get()).arg(cost.get());
        let call = invocation.invoke_async::<(i64, i64, i64, i64)>(&mut conn);
        let (allowed, remaining, retry_us, reset_us) = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let us = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
        let remaining = u32::try_from(remaining.max(0)).unwrap_or(0);
        Ok(if allowed == 1 {
            Decision::allowed(tier, remaining, us(reset_us))
        } else {
            let mut d = Decision::denied(tier, us(retry_us));
            d.remaining = remaining;
            d
        })
    }

    /// Decides on Redis, or locally while Redis is unreachable.
    pub async fn check(&self, tier: &Tier, user: &Arc<str>, cost: NonZeroU32) -> Decision {
        if self.should_try_redis() {
            match self.ask_redis(tier, user, cost).await {
                Ok(decision) => {
                    if !self.up.swap(true, Ordering::Relaxed) {
                        tracing::info!("redis rate limiting recovered; budgets are shared again");
                        self.metrics.ratelimit_shared_up.set(1);
                    }
                    return decision;
                }
                Err(e) => {
                    if self.up.swap(false, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "redis rate limiting unavailable; using this instance's local limiter");
                        self.metrics.ratelimit_shared_up.set(0);
                        self.metrics.ratelimit_fallbacks.inc();
                        *self.retry_at.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(Instant::now() + RETRY_AFTER_FAILURE);
                    }
                }
            }
        }
        self.fallback.check(tier, user, cost)
    }

    /// Prunes the local fallback.
    pub fn prune(&self) {
        self.fallback.prune();
    }
}
