//! kopek-fx: the exchange rates in force, cached, and the pricing of conversions.
//!
//! Rates live in the store (`Store::fx_rates`); every surface reads them through [`Fx`], which
//! keeps each tenant's rates in force for at most [`CACHE_SECONDS`] (so a rate set to apply
//! from a later time applies within that long of it) and drops them as soon as a `RateUpdated`
//! event says they changed ([`Fx::watch`], and [`Fx::invalidate`] right after a write).
//!
//! Without Redis the cache is this process's. With `--redis` it is Redis, shared by every
//! process: one process's invalidation is every process's. A load that raced an invalidation is
//! not cached (a generation counter per tenant, compared in one Lua script), so a stale set of
//! rates never outlives the event that replaced it. Redis trouble is logged and the rates are
//! read from the store: the cache is never why a price fails.
//!
//! Prices come from `kopek_core::fx`: the stored pair, its inverse, or a cross rate through
//! the base currency, less the spread, rounded half-even in minor units.

use kopek_core::fx::{self, DerivedRate, Side, Terms};
use kopek_core::{Currency, ErrorCode, FxRate, Rate, Rejection, Tenant, Timestamp};
use kopek_store::{Store, StoredEvent};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long a tenant's rates are kept without an event saying they changed.
pub const CACHE_SECONDS: u64 = 5;

/// How conversions are priced and quoted.
#[derive(Clone, Debug)]
pub struct FxConfig {
    /// Cross rates go through this currency when no pair (or its inverse) is stored.
    pub base: Currency,
    /// Spread taken from what the customer receives, in basis points, unless a request asks
    /// for less.
    pub spread_bp: u32,
    /// How long a quote lives unless a request asks for less.
    pub quote_ttl_seconds: u32,
    /// Whether a cross-currency transfer without a quote may be priced at the current rate.
    pub implicit_quotes: bool,
}

impl Default for FxConfig {
    fn default() -> FxConfig {
        FxConfig {
            base: Currency::parse("USD").expect("USD"),
            spread_bp: 0,
            quote_ttl_seconds: 30,
            implicit_quotes: false,
        }
    }
}

/// Rates in force and prices. Cheap to clone.
#[derive(Clone)]
pub struct Fx {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    config: FxConfig,
    cache: Cache,
}

enum Cache {
    Local(Mutex<LocalCache>),
    Redis { connection: redis::aio::ConnectionManager, store_if_current: redis::Script },
}

#[derive(Default)]
struct LocalCache {
    entries: HashMap<String, (Instant, Arc<Vec<FxRate>>)>,
    generations: HashMap<String, u64>,
}

/// Sets the rates only if the tenant's generation is still the one read before loading them.
const STORE_IF_CURRENT: &str = r"
if (redis.call('GET', KEYS[2]) or '0') == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
";

fn rates_key(tenant: &Tenant) -> String {
    format!("kopek:fx:rates:{tenant}")
}

fn generation_key(tenant: &Tenant) -> String {
    format!("kopek:fx:generation:{tenant}")
}

fn unavailable(error: impl std::fmt::Display) -> Rejection {
    Rejection::new(ErrorCode::Unavailable, format!("rates cannot be read: {error}"))
}

impl Fx {
    /// Rates cached in this process.
    pub fn local(store: Arc<dyn Store>, config: FxConfig) -> Fx {
        let cache = Cache::Local(Mutex::new(LocalCache::default()));
        Fx { inner: Arc::new(Inner { store, config, cache }) }
    }

    /// Rates cached in Redis at `url`, shared with every process that uses it.
    pub async fn redis(store: Arc<dyn Store>, config: FxConfig, url: &str) -> Result<Fx, String> {
        let client = redis::Client::open(url).map_err(|error| format!("{url}: {error}"))?;
        let connection = redis::aio::ConnectionManager::new(client)
            .await
            .map_err(|error| format!("{url}: {error}"))?;
        let cache =
            Cache::Redis { connection, store_if_current: redis::Script::new(STORE_IF_CURRENT) };
        Ok(Fx { inner: Arc::new(Inner { store, config, cache }) })
    }

    pub fn config(&self) -> &FxConfig {
        &self.inner.config
    }

    /// The tenant's rates in force now, by pair.
    pub async fn rates(&self, tenant: &Tenant) -> Result<Arc<Vec<FxRate>>, Rejection> {
        match &self.inner.cache {
            Cache::Local(cache) => {
                let generation = {
                    let cache = cache.lock().map_err(|_| unavailable("cache lock poisoned"))?;
                    if let Some((loaded, rates)) = cache.entries.get(tenant.as_str())
                        && loaded.elapsed() < Duration::from_secs(CACHE_SECONDS)
                    {
                        return Ok(rates.clone());
                    }
                    cache.generations.get(tenant.as_str()).copied().unwrap_or(0)
                };
                let rates = Arc::new(self.load(tenant).await?);
                let mut cache = cache.lock().map_err(|_| unavailable("cache lock poisoned"))?;
                if cache.generations.get(tenant.as_str()).copied().unwrap_or(0) == generation {
                    cache.entries.insert(tenant.to_string(), (Instant::now(), rates.clone()));
                }
                Ok(rates)
            }
            Cache::Redis { connection, store_if_current } => {
                let mut connection = connection.clone();
                match self.through_redis(tenant, &mut connection, store_if_current).await {
                    Ok(rates) => Ok(Arc::new(rates)),
                    Err(error) => {
                        tracing::warn!(%error, "rate cache in Redis failed; reading the store");
                        Ok(Arc::new(self.load(tenant).await?))
                    }
                }
            }
        }
    }

    async fn through_redis(
        &self,
        tenant: &Tenant,
        connection: &mut redis::aio::ConnectionManager,
        store_if_current: &redis::Script,
    ) -> Result<Vec<FxRate>, String> {
        let cached: Option<String> = redis::cmd("GET")
            .arg(rates_key(tenant))
            .query_async(connection)
            .await
            .map_err(|error| error.to_string())?;
        if let Some(text) = cached
            && let Ok(rates) = decode(tenant, &text)
        {
            return Ok(rates);
        }
        let generation: Option<String> = redis::cmd("GET")
            .arg(generation_key(tenant))
            .query_async(connection)
            .await
            .map_err(|error| error.to_string())?;
        let rates = self.load(tenant).await.map_err(|rejection| rejection.message)?;
        let _: i64 = store_if_current
            .key(rates_key(tenant))
            .key(generation_key(tenant))
            .arg(generation.unwrap_or_else(|| "0".to_owned()))
            .arg(encode(&rates))
            .arg(CACHE_SECONDS * 1_000)
            .invoke_async(connection)
            .await
            .map_err(|error| error.to_string())?;
        Ok(rates)
    }

    async fn load(&self, tenant: &Tenant) -> Result<Vec<FxRate>, Rejection> {
        self.inner.store.fx_rates(tenant, kopek_store::wall_clock()).await.map_err(unavailable)
    }

    /// Forgets the tenant's cached rates: the next read loads them from the store.
    pub async fn invalidate(&self, tenant: &Tenant) {
        match &self.inner.cache {
            Cache::Local(cache) => {
                if let Ok(mut cache) = cache.lock() {
                    cache.entries.remove(tenant.as_str());
                    *cache.generations.entry(tenant.to_string()).or_default() += 1;
                }
            }
            Cache::Redis { connection, .. } => {
                let mut connection = connection.clone();
                let result: redis::RedisResult<()> = redis::pipe()
                    .atomic()
                    .cmd("INCR")
                    .arg(generation_key(tenant))
                    .ignore()
                    .cmd("DEL")
                    .arg(rates_key(tenant))
                    .ignore()
                    .query_async(&mut connection)
                    .await;
                if let Err(error) = result {
                    tracing::warn!(%error, %tenant, "could not drop the rates cached in Redis");
                }
            }
        }
    }

    /// Drops a tenant's cached rates whenever one of its `RateUpdated` events goes by, until
    /// the feed ends.
    pub async fn watch(self, mut events: mpsc::Receiver<Arc<StoredEvent>>) {
        while let Some(event) = events.recv().await {
            if event.kind == kopek_core::EventKind::RateUpdated.as_str()
                && let Ok(tenant) = Tenant::parse(&event.tenant)
            {
                self.invalidate(&tenant).await;
            }
        }
    }

    /// The rate from `from` to `to` in force now and how it was found.
    pub async fn derive(
        &self,
        tenant: &Tenant,
        from: Currency,
        to: Currency,
    ) -> Result<DerivedRate, Rejection> {
        let rates = self.rates(tenant).await?;
        let base = self.inner.config.base;
        let lookup = |a: Currency, b: Currency| -> Option<Rate> {
            rates.iter().find(|rate| rate.base == a && rate.quote == b).map(|rate| rate.rate)
        };
        fx::derive(from, to, base, lookup).ok_or_else(|| {
            Rejection::new(
                ErrorCode::NotFound,
                format!("no rate from {from} to {to}: none stored, inverted or through {base}"),
            )
        })
    }

    /// Prices `amount` minor units (of `from` for a sell, of `to` for a buy) at the rate in
    /// force now, less `spread_bp` (the configured spread when `None`).
    pub async fn price(
        &self,
        tenant: &Tenant,
        from: Currency,
        to: Currency,
        side: Side,
        amount: i64,
        spread_bp: Option<u32>,
    ) -> Result<Terms, Rejection> {
        let mid = self.derive(tenant, from, to).await?;
        fx::price(from, to, side, amount, &mid, spread_bp.unwrap_or(self.inner.config.spread_bp))
    }
}

fn encode(rates: &[FxRate]) -> String {
    let rows: Vec<Value> = rates
        .iter()
        .map(|rate| {
            json!([
                rate.base.code(),
                rate.quote.code(),
                rate.rate.to_fraction_text(),
                rate.source,
                rate.valid_from.as_unix_micros(),
                rate.set_at.as_unix_micros(),
            ])
        })
        .collect();
    Value::Array(rows).to_string()
}

fn decode(tenant: &Tenant, text: &str) -> Result<Vec<FxRate>, String> {
    let rows: Vec<(String, String, String, String, i64, i64)> =
        serde_json::from_str(text).map_err(|error| error.to_string())?;
    rows.into_iter()
        .map(|(base, quote, rate, source, valid_from, set_at)| {
            Ok(FxRate {
                tenant: tenant.clone(),
                base: Currency::parse(&base).map_err(|rejection| rejection.message)?,
                quote: Currency::parse(&quote).map_err(|rejection| rejection.message)?,
                rate: Rate::parse_stored(&rate).ok_or("a cached rate does not parse")?,
                source,
                valid_from: Timestamp::from_unix_micros(valid_from),
                set_at: Timestamp::from_unix_micros(set_at),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_rates_round_trip_exactly() {
        let tenant = Tenant::default_tenant();
        let rates = vec![FxRate {
            tenant: tenant.clone(),
            base: Currency::parse("USD").expect("USD"),
            quote: Currency::parse("JPY").expect("JPY"),
            rate: Rate::parse("151.37").expect("rate").inverse(),
            source: "ecb".to_owned(),
            valid_from: Timestamp::from_unix_micros(1),
            set_at: Timestamp::from_unix_micros(2),
        }];
        assert_eq!(decode(&tenant, &encode(&rates)), Ok(rates));
        assert!(decode(&tenant, "[[\"USD\"]]").is_err());
    }
}
