//! Webhook deliveries: the sender takes due deliveries (queued by the `notifier` consumer in
//! the transaction of its inbox marks), POSTs each event document to its subscription's URL,
//! signed, and records every attempt. A failure is retried with exponential backoff and
//! jitter; after the subscription's last attempt the delivery is dead-lettered until someone
//! redelivers it. Delivery is at least once: a receiver drops repeats by `Kopek-Event-Id`.
//!
//! Signature: `Kopek-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//! A receiver recomputes it over the raw body and refuses a stale `t`.

use crate::relay::jittered;
use crate::resolver::PublicResolver;
use futures_util::future::join_all;
use hmac::{Hmac, Mac};
use kopek_core::Timestamp;
use kopek_events::targets::Targets;
use kopek_store::wall_clock as now;
use kopek_store::{Attempt, AttemptResult, Delivery, DeliveryStatus, Store, Webhook};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Deliveries one sender takes at a time.
const CLAIM_BATCH: usize = 32;
/// How often an idle sender looks for due deliveries.
const IDLE_POLL: Duration = Duration::from_millis(250);

#[derive(Clone, Debug)]
pub struct NotifierConfig {
    /// Attempts before a delivery is dead-lettered (and again after each redelivery).
    pub max_attempts: u32,
    /// The wait after the first failure; it doubles after each further one (with jitter: the
    /// n-th wait is between half and all of `backoff_first · 2^(n-1)`), up to `backoff_max`.
    pub backoff_first: Duration,
    pub backoff_max: Duration,
    /// How long a receiver may take to answer.
    pub timeout: Duration,
    /// Which addresses deliveries may reach.
    pub targets: Targets,
}

impl Default for NotifierConfig {
    fn default() -> NotifierConfig {
        NotifierConfig {
            max_attempts: kopek_events::subscriptions::MAX_ATTEMPTS_DEFAULT,
            backoff_first: Duration::from_secs(1),
            backoff_max: Duration::from_secs(3_600),
            timeout: Duration::from_secs(10),
            targets: Targets::PublicOnly,
        }
    }
}

/// The `Kopek-Signature` header value for `body` at unix second `t`.
pub fn signature(secret: &str, t: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// The wait before attempt `failed + 1`, after `failed` failures (at least 1).
pub fn backoff(config: &NotifierConfig, failed: u32) -> Duration {
    let doublings = failed.saturating_sub(1).min(30);
    let full = config.backoff_first.saturating_mul(1 << doublings).min(config.backoff_max);
    jittered(full)
}

/// Starts the sender; it stops with `shutdown`.
pub fn start(
    store: Arc<dyn Store>,
    config: NotifierConfig,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let client = match client(&config) {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, "webhook sender could not start; no webhooks are sent");
                return;
            }
        };
        loop {
            let sent = tokio::select! {
                () = shutdown.cancelled() => return,
                sent = round(store.as_ref(), &client, &config) => sent,
            };
            if sent == 0 {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(IDLE_POLL) => {}
                }
            }
        }
    })
}

fn client(config: &NotifierConfig) -> Result<reqwest::Client, reqwest::Error> {
    // reqwest is built without a crypto provider of its own; kopek uses ring everywhere.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("kopek-webhooks/", env!("CARGO_PKG_VERSION")));
    match config.targets {
        // No proxy: a proxy would resolve the name itself, past the resolver's rule.
        Targets::PublicOnly => builder.no_proxy().dns_resolver(Arc::new(PublicResolver)).build(),
        Targets::Any => builder.build(),
    }
}

/// Sends what is due; answers how many deliveries it attempted.
async fn round(store: &dyn Store, client: &reqwest::Client, config: &NotifierConfig) -> usize {
    let started = now();
    // Long enough for every attempt of the round to finish before another sender may take it.
    let claim = config.timeout.saturating_mul(2).saturating_add(Duration::from_secs(5));
    let until = Timestamp::from_unix_micros(
        started
            .as_unix_micros()
            .saturating_add(i64::try_from(claim.as_micros()).unwrap_or(i64::MAX)),
    );
    let due = match store.claim_deliveries(started, until, CLAIM_BATCH).await {
        Ok(due) => due,
        Err(error) => {
            tracing::warn!(%error, "could not take due webhook deliveries");
            return 0;
        }
    };
    if due.is_empty() {
        return 0;
    }
    let hooks: HashMap<String, Webhook> = match store.webhooks(None).await {
        Ok(hooks) => hooks.into_iter().map(|hook| (hook.id.clone(), hook)).collect(),
        Err(error) => {
            tracing::warn!(%error, "could not read webhook subscriptions");
            return 0;
        }
    };
    let attempts = due.iter().filter_map(|delivery| {
        // A subscription deleted meanwhile: its deliveries are no longer sent.
        let hook = hooks.get(&delivery.subscription_id)?;
        Some(attempt(client, config, hook, delivery, until))
    });
    let results = join_all(attempts).await;
    let count = results.len();
    for result in results {
        match store.record_attempt(&result).await {
            Ok(true) => {
                let outcome = match result.status {
                    kopek_store::DeliveryStatus::Delivered => "delivered",
                    kopek_store::DeliveryStatus::Pending => "failed",
                    kopek_store::DeliveryStatus::Dead => "dead",
                };
                kopek_telemetry::metrics().webhook_attempts.with_label_values(&[outcome]).inc();
            }
            // Redelivered by hand (or claimed again) meanwhile: that round decides.
            Ok(false) => {
                tracing::debug!(delivery = %result.attempt.delivery_id, "webhook attempt outlived its claim");
            }
            // The claim lapses and the delivery is sent again: at least once.
            Err(error) => {
                tracing::warn!(%error, delivery = %result.attempt.delivery_id, "could not record a webhook attempt");
            }
        }
    }
    count
}

/// The `traceparent` field of an event document, if it has one.
fn traceparent_of(body: &str) -> Option<String> {
    let document: serde_json::Value = serde_json::from_str(body).ok()?;
    document.get("traceparent")?.as_str().map(str::to_owned)
}

async fn attempt(
    client: &reqwest::Client,
    config: &NotifierConfig,
    hook: &Webhook,
    delivery: &Delivery,
    claimed_until: Timestamp,
) -> AttemptResult {
    let at = now();
    let started = Instant::now();
    let t = at.as_unix_micros() / 1_000_000;
    let mut request = client
        .post(&hook.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("Kopek-Signature", signature(&hook.secret, t, &delivery.body))
        .header("Kopek-Event-Id", &delivery.event_id)
        .header("Kopek-Event-Type", &delivery.event_type)
        .header("Kopek-Delivery-Id", &delivery.id);
    // The receiver joins the trace of the request behind the event.
    if let Some(traceparent) = traceparent_of(&delivery.body) {
        request = request.header(kopek_telemetry::trace::TRACEPARENT, traceparent);
    }
    // Checked again at each delivery: an address in the URL is not resolved, so the resolver
    // cannot drop it, and the rule may have changed since the subscription was made.
    let (status_code, error) = match config.targets.check_url(&hook.url) {
        Err(refused) => (None, Some(refused)),
        Ok(()) => match request.body(delivery.body.clone()).send().await {
            Ok(response) if response.status().is_success() => {
                (Some(response.status().as_u16()), None)
            }
            Ok(response) => {
                let code = response.status().as_u16();
                (Some(code), Some(format!("the receiver answered HTTP {code}")))
            }
            Err(error) => (None, Some(describe(&error.without_url()))),
        },
    };
    let number = delivery.attempts.saturating_add(1);
    let (status, next_attempt_at) = match &error {
        None => (DeliveryStatus::Delivered, at),
        Some(_) if number >= delivery.dead_after => (DeliveryStatus::Dead, at),
        Some(_) => {
            let wait = i64::try_from(backoff(config, number).as_micros()).unwrap_or(i64::MAX);
            (
                DeliveryStatus::Pending,
                Timestamp::from_unix_micros(at.as_unix_micros().saturating_add(wait)),
            )
        }
    };
    if status == DeliveryStatus::Dead {
        // The host only: webhook URLs often carry tokens.
        tracing::warn!(delivery = %delivery.id, host = %host_of(&hook.url), attempts = number, "webhook delivery dead-lettered");
    }
    AttemptResult {
        attempt: Attempt {
            delivery_id: delivery.id.clone(),
            attempt: number,
            at,
            status_code,
            error,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        },
        status,
        next_attempt_at,
        claimed_until,
    }
}

fn host_of(url: &str) -> &str {
    url.split_once("://")
        .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or_default())
        .map(|authority| authority.rsplit_once('@').map_or(authority, |(_, host)| host))
        .unwrap_or_default()
}

fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "the receiver did not answer in time".to_owned()
    } else if error.is_connect() {
        // The resolver's refusal of an internal address is a connect error; say so.
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            if cause.to_string().contains("resolves to no public address") {
                return format!("could not connect to the receiver: {cause}");
            }
            source = cause.source();
        }
        "could not connect to the receiver".to_owned()
    } else {
        format!("the request failed: {error}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body() {
        // Known answer: HMAC-SHA256("secret", "1700000000.{}") computed independently.
        let header = signature("secret", 1_700_000_000, "{}");
        assert!(header.starts_with("t=1700000000,v1="), "{header}");
        let hex = header.rsplit('=').next().expect("hex");
        assert_eq!(hex.len(), 64);
        assert_ne!(signature("other", 1_700_000_000, "{}"), header);
        assert_ne!(signature("secret", 1_700_000_001, "{}"), header);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let config = NotifierConfig {
            backoff_first: Duration::from_millis(100),
            backoff_max: Duration::from_millis(700),
            ..NotifierConfig::default()
        };
        for (failed, full) in [(1, 100), (2, 200), (3, 400), (4, 700), (20, 700)] {
            for _ in 0..100 {
                let wait = backoff(&config, failed).as_millis();
                assert!(wait >= full / 2 && wait <= full, "after {failed}: {wait} of {full}");
            }
        }
    }
}
