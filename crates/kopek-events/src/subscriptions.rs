//! Webhook subscriptions: what a client may register and the id its idempotency key gives.
//! The sender that delivers to them is `kopek_outbox::webhooks`.

use crate::filter::EventFilter;
use crate::targets::Targets;
use kopek_store::{Store, Webhook};

/// Attempts before a delivery is dead-lettered, unless the operator says otherwise.
pub const MAX_ATTEMPTS_DEFAULT: u32 = 10;

/// Why a subscription could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error("{0}")]
    Invalid(String),
    #[error("this idempotency key created a webhook with other fields")]
    KeyReused,
    #[error(transparent)]
    Store(#[from] kopek_store::StoreError),
}

const URL_BYTES_MAX: usize = 2_048;
const SECRET_BYTES_MIN: usize = 16;
const SECRET_BYTES_MAX: usize = 256;
/// Subscriptions per tenant at most.
pub const WEBHOOKS_MAX: usize = 100;

/// What a subscription request asks for.
pub struct NewWebhook<'a> {
    pub tenant: &'a str,
    /// Makes a retry answer the first creation: the id derives from it.
    pub idempotency_key: &'a str,
    pub url: &'a str,
    pub event_types: &'a [String],
    pub secret: Option<&'a str>,
    /// Which addresses the URL may reach.
    pub targets: Targets,
}

/// Subscribes, or answers the subscription the same idempotency key made (`false`: not new).
pub async fn subscribe(
    store: &dyn Store,
    request: NewWebhook<'_>,
) -> Result<(Webhook, bool), SubscribeError> {
    let url = request.url.trim();
    let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
    let host = url
        .split_once("://")
        .map_or("", |(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(""));
    if url.len() > URL_BYTES_MAX
        || !scheme_ok
        || host.is_empty()
        || url.contains(char::is_whitespace)
    {
        return Err(SubscribeError::Invalid(format!(
            "url must be an http:// or https:// URL with a host, at most {URL_BYTES_MAX} bytes"
        )));
    }
    request.targets.check_url(url).map_err(SubscribeError::Invalid)?;
    let event_types: Vec<String> =
        EventFilter::parse_types(request.event_types.iter().map(String::as_str))
            .map_err(SubscribeError::Invalid)?
            .into_iter()
            .map(|kind| kind.as_str().to_owned())
            .collect();
    if let Some(secret) = request.secret
        && !(SECRET_BYTES_MIN..=SECRET_BYTES_MAX).contains(&secret.len())
    {
        return Err(SubscribeError::Invalid(format!(
            "secret must be {SECRET_BYTES_MIN} to {SECRET_BYTES_MAX} bytes"
        )));
    }
    if request.idempotency_key.is_empty() || request.idempotency_key.len() > 255 {
        return Err(SubscribeError::Invalid(
            "the idempotency key must be 1 to 255 bytes".to_owned(),
        ));
    }
    // FNV-1a of tenant and key: the same key gives the same id on every version and
    // platform, and tenants' key spaces stay apart.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let scoped = format!("{}\u{0}{}", request.tenant, request.idempotency_key);
    for byte in scoped.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let id = format!("wh_{hash:016x}");
    let existing = store.webhooks(Some(request.tenant)).await?;
    if let Some(hook) = existing.iter().find(|hook| hook.id == id) {
        let same = hook.url == url
            && hook.event_types == event_types
            && request.secret.is_none_or(|secret| secret == hook.secret);
        return if same { Ok((hook.clone(), false)) } else { Err(SubscribeError::KeyReused) };
    }
    if existing.len() >= WEBHOOKS_MAX {
        return Err(SubscribeError::Invalid(format!(
            "a tenant has at most {WEBHOOKS_MAX} webhooks"
        )));
    }
    let hook = Webhook {
        id,
        tenant: request.tenant.to_owned(),
        url: url.to_owned(),
        event_types,
        secret: request.secret.map_or_else(
            || format!("whsec_{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple()),
            str::to_owned,
        ),
        created_at: kopek_store::wall_clock(),
    };
    match store.create_webhook(&hook).await {
        Ok(()) => Ok((hook, true)),
        // The id exists but was not found above: a deleted subscription had this key, or a
        // concurrent request with it won.
        Err(kopek_store::StoreError::Conflict(_)) => match store
            .webhooks(Some(request.tenant))
            .await?
            .into_iter()
            .find(|existing| existing.id == hook.id)
        {
            Some(existing)
                if existing.url == hook.url && existing.event_types == hook.event_types =>
            {
                Ok((existing, false))
            }
            _ => Err(SubscribeError::KeyReused),
        },
        Err(error) => Err(error.into()),
    }
}
