//! From a bearer token to a principal, with the slow hash checked once per key and process.

use crate::key::{parse_token, verify};
use crate::{Principal, Scope};
use kopek_core::{Tenant, UserId};
use kopek_store::{ApiKey, Store, StoreError};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How long a key checked against the store is trusted before it is read again: a revoked
/// key stops working within this time.
pub const RECHECK: Duration = Duration::from_secs(5);

/// Whether callers must present a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    Required,
    /// Every caller is [`Principal::anonymous`]: only for listeners on loopback.
    Off,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("an API key is required: send Authorization: Bearer <key>")]
    Missing,
    #[error("the API key is not valid or was revoked")]
    Invalid,
    #[error("keys cannot be checked now: {0}")]
    Unavailable(String),
}

struct Checked {
    key: ApiKey,
    principal: Option<Principal>,
    /// SHA-256 of the secret that verified against the key's hash.
    digest: [u8; 32],
    at: Instant,
}

/// Checks bearer tokens against the store's keys.
#[derive(Clone)]
pub struct Authenticator {
    store: Arc<dyn Store>,
    mode: AuthMode,
    checked: Arc<Mutex<HashMap<String, Checked>>>,
    /// Argon2 runs one at a time per process, so a flood of wrong secrets costs one core.
    hashing: Arc<Semaphore>,
}

impl Authenticator {
    pub fn new(store: Arc<dyn Store>, mode: AuthMode) -> Authenticator {
        Authenticator { store, mode, checked: Arc::default(), hashing: Arc::new(Semaphore::new(1)) }
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The principal of a request whose `Authorization` value (or WebSocket `access_token`)
    /// is `credential`.
    pub async fn authenticate(&self, credential: Option<&str>) -> Result<Principal, AuthError> {
        if self.mode == AuthMode::Off {
            return Ok(Principal::anonymous());
        }
        let credential = credential.map(str::trim).filter(|text| !text.is_empty());
        let token = credential.ok_or(AuthError::Missing)?;
        let token = strip_bearer(token).unwrap_or(token);
        let (id, secret) = parse_token(token).ok_or(AuthError::Invalid)?;
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        if let Some(answer) = self.recent(id, &digest) {
            return answer;
        }
        let key = match self.store.api_key(id).await {
            Ok(Some(key)) => key,
            Ok(None) => return Err(AuthError::Invalid),
            Err(error) => return Err(unavailable(error)),
        };
        let principal = principal_of(&key);
        let known = {
            let checked = self.lock();
            checked.get(id).is_some_and(|seen| {
                seen.key.secret_hash == key.secret_hash && same(&seen.digest, &digest)
            })
        };
        if key.revoked_at.is_some() || principal.is_none() {
            self.remember(key, None, digest);
            return Err(AuthError::Invalid);
        }
        if !known {
            let permit = self.hashing.acquire().await.map_err(|_| AuthError::Invalid)?;
            // Callers that arrived together with one new key wait here for the first one's
            // verdict instead of each paying for the hash.
            if let Some(answer) = self.recent(id, &digest) {
                return answer;
            }
            let (secret, hash) = (secret.to_owned(), key.secret_hash.clone());
            let valid =
                tokio::task::spawn_blocking(move || verify(&secret, &hash)).await.unwrap_or(false);
            drop(permit);
            if !valid {
                return Err(AuthError::Invalid);
            }
        }
        self.remember(key, principal.clone(), digest);
        principal.ok_or(AuthError::Invalid)
    }

    /// The answer for a key checked less than [`RECHECK`] ago; `None` to ask the store.
    fn recent(&self, id: &str, digest: &[u8; 32]) -> Option<Result<Principal, AuthError>> {
        let checked = self.lock();
        let seen = checked.get(id).filter(|seen| seen.at.elapsed() < RECHECK)?;
        match &seen.principal {
            None => Some(Err(AuthError::Invalid)),
            // Only one secret verifies against the hash: any other digest is a wrong secret.
            Some(principal) if same(&seen.digest, digest) => Some(Ok(principal.clone())),
            Some(_) => Some(Err(AuthError::Invalid)),
        }
    }

    fn remember(&self, key: ApiKey, principal: Option<Principal>, digest: [u8; 32]) {
        let mut checked = self.lock();
        // A revoked key keeps its old digest: a wrong secret must not replace a right one.
        let digest = match (&principal, checked.get(&key.id)) {
            (None, Some(seen)) => seen.digest,
            _ => digest,
        };
        let id = key.id.clone();
        checked.insert(id, Checked { key, principal, digest, at: Instant::now() });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Checked>> {
        self.checked.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The principal a stored key stands for; `None` if the row does not parse (never trusted).
fn principal_of(key: &ApiKey) -> Option<Principal> {
    Some(Principal {
        key_id: Some(key.id.clone()),
        tenant: Tenant::parse(&key.tenant).ok()?,
        scope: Scope::parse(&key.scope)?,
        user: match &key.user_id {
            Some(user) => Some(UserId::parse(user).ok()?),
            None => None,
        },
    })
}

fn strip_bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Constant-time equality of two digests.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unavailable(error: StoreError) -> AuthError {
    AuthError::Unavailable(error.to_string())
}
