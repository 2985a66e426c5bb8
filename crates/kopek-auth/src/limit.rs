//! Per-key rate limits: a token bucket per key, in this process or shared through Redis.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `rate` requests per second on average, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub rate: f64,
    pub burst: f64,
}

/// The answer for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Over the limit: a token is back after this long.
    Limited {
        retry_after: Duration,
    },
}

/// Atomically refills the key's bucket by the time since its last request, on Redis' clock,
/// then takes a token if there is one. Answers {allowed, microseconds until a token}.
const REDIS_BUCKET: &str = r"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000000)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) * 1000000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, wait}
";

struct Bucket {
    tokens: f64,
    at: Instant,
}

enum Backend {
    Unlimited,
    Local(Mutex<HashMap<String, Bucket>>),
    Redis { connection: redis::aio::ConnectionManager, script: redis::Script, prefix: String },
}

/// Cheap to clone; every surface of a process shares one.
#[derive(Clone)]
pub struct RateLimiter {
    limit: RateLimit,
    backend: Arc<Backend>,
}

impl RateLimiter {
    pub fn unlimited() -> RateLimiter {
        RateLimiter {
            limit: RateLimit { rate: 0.0, burst: 0.0 },
            backend: Arc::new(Backend::Unlimited),
        }
    }

    /// Buckets in this process only.
    pub fn local(limit: RateLimit) -> RateLimiter {
        RateLimiter { limit, backend: Arc::new(Backend::Local(Mutex::default())) }
    }

    /// Buckets in Redis, so every process sharing it enforces one limit per key. Connects now,
    /// so a wrong URL fails the start.
    pub async fn redis(limit: RateLimit, url: &str) -> Result<RateLimiter, String> {
        let client = redis::Client::open(url).map_err(|error| format!("{url}: {error}"))?;
        let connection = redis::aio::ConnectionManager::new(client)
            .await
            .map_err(|error| format!("connect to Redis: {error}"))?;
        let backend = Backend::Redis {
            connection,
            script: redis::Script::new(REDIS_BUCKET),
            prefix: "kopek:ratelimit:".to_owned(),
        };
        Ok(RateLimiter { limit, backend: Arc::new(backend) })
    }

    pub fn is_unlimited(&self) -> bool {
        matches!(*self.backend, Backend::Unlimited)
    }

    /// Takes one token from `bucket`'s bucket. If Redis cannot answer, the request is allowed
    /// (and logged): a limiter outage must not stop payments.
    pub async fn check(&self, bucket: &str) -> Verdict {
        match &*self.backend {
            Backend::Unlimited => Verdict::Allowed,
            Backend::Local(buckets) => {
                let mut buckets = buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let now = Instant::now();
                let limit = self.limit;
                let entry = buckets
                    .entry(bucket.to_owned())
                    .or_insert(Bucket { tokens: limit.burst, at: now });
                let refill = now.duration_since(entry.at).as_secs_f64() * limit.rate;
                entry.tokens = (entry.tokens + refill).min(limit.burst);
                entry.at = now;
                if entry.tokens >= 1.0 {
                    entry.tokens -= 1.0;
                    Verdict::Allowed
                } else {
                    let wait = (1.0 - entry.tokens) / limit.rate;
                    Verdict::Limited { retry_after: Duration::from_secs_f64(wait) }
                }
            }
            Backend::Redis { connection, script, prefix } => {
                let mut connection = connection.clone();
                let answer: redis::RedisResult<(i64, i64)> = script
                    .key(format!("{prefix}{bucket}"))
                    .arg(self.limit.rate)
                    .arg(self.limit.burst)
                    .invoke_async(&mut connection)
                    .await;
                match answer {
                    Ok((1, _)) => Verdict::Allowed,
                    Ok((_, wait)) => Verdict::Limited {
                        retry_after: Duration::from_micros(u64::try_from(wait).unwrap_or(0)),
                    },
                    Err(error) => {
                        tracing::warn!(%error, "rate limit unknown: Redis did not answer; allowing");
                        Verdict::Allowed
                    }
                }
            }
        }
    }

    /// Sweeps local buckets that are full again, so idle keys cost no memory.
    pub fn sweep(&self) {
        if let Backend::Local(buckets) = &*self.backend {
            let limit = self.limit;
            let now = Instant::now();
            let mut buckets = buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            buckets.retain(|_, bucket| {
                bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * limit.rate
                    < limit.burst
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_bucket_allows_its_burst_then_says_when_to_retry() {
        let limiter = RateLimiter::local(RateLimit { rate: 1.0, burst: 3.0 });
        for _ in 0..3 {
            assert_eq!(limiter.check("k1").await, Verdict::Allowed);
        }
        let Verdict::Limited { retry_after } = limiter.check("k1").await else {
            panic!("the fourth request in a burst of three is limited");
        };
        assert!(retry_after > Duration::from_millis(900) && retry_after <= Duration::from_secs(1));
        assert_eq!(limiter.check("k2").await, Verdict::Allowed, "buckets are per key");
        assert_eq!(RateLimiter::unlimited().check("k1").await, Verdict::Allowed);
    }
}
