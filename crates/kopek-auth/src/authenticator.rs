//! From a bearer token to a principal, with the slow hash checked once per key and process.

use crate::key::{parse_token, verify};
use crate::{Principal, Scope};
use kopek_clock::Clock;
use kopek_core::{Tenant, Timestamp, UserId};
use kopek_store::{ApiKey, Store, StoreError};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How long a key checked against the store is trusted before it is read again, unless the
/// server is told otherwise (`--key-recheck-ms`): a key revoked by another process stops
/// working here within this time.
pub const RECHECK_DEFAULT: Duration = Duration::from_secs(5);

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
    #[error("send the key as Authorization: Bearer <key>")]
    NotBearer,
    #[error("keys cannot be checked now: {0}")]
    Unavailable(String),
}

struct Checked {
    key: ApiKey,
    principal: Option<Principal>,
    /// SHA-256 of the secret that verified against the key's hash.
    digest: [u8; 32],
    /// When the store last answered for the key, by the authenticator's clock.
    at: Timestamp,
}

/// Checks bearer tokens against the store's keys.
#[derive(Clone)]
pub struct Authenticator {
    store: Arc<dyn Store>,
    mode: AuthMode,
    checked: Arc<Mutex<HashMap<String, Checked>>>,
    /// Argon2 runs one at a time per process, so a flood of wrong secrets costs one core.
    hashing: Arc<Semaphore>,
    /// How long a checked key is trusted before the store is asked again.
    recheck: Duration,
    /// What "how long" is measured with: the wall clock, or a test's `ManualClock`.
    clock: Arc<dyn Clock>,
}

impl Authenticator {
    /// An authenticator that trusts what the store said about a key for `recheck`, as
    /// `clock` measures it.
    pub fn new(
        store: Arc<dyn Store>,
        mode: AuthMode,
        recheck: Duration,
        clock: Arc<dyn Clock>,
    ) -> Authenticator {
        Authenticator {
            store,
            mode,
            checked: Arc::default(),
            hashing: Arc::new(Semaphore::new(1)),
            recheck,
            clock,
        }
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The principal of a request whose `Authorization` value (gRPC: `authorization`
    /// metadata) is `header`: `Bearer <key>`, and nothing else.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        if self.mode == AuthMode::Off {
            return Ok(Principal::anonymous());
        }
        let header = header.map(str::trim).filter(|text| !text.is_empty());
        let token = strip_bearer(header.ok_or(AuthError::Missing)?).ok_or(AuthError::NotBearer)?;
        self.authenticate_token(Some(token)).await
    }

    /// The principal of a WebSocket whose `access_token` query parameter is `token`: the bare
    /// key (browsers cannot set headers on a WebSocket).
    pub async fn authenticate_token(&self, token: Option<&str>) -> Result<Principal, AuthError> {
        if self.mode == AuthMode::Off {
            return Ok(Principal::anonymous());
        }
        let token = token.map(str::trim).filter(|text| !text.is_empty());
        let token = token.ok_or(AuthError::Missing)?;
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

    /// A watch on the key of a long-lived call (a stream, a WebSocket), which must end once
    /// the key is revoked, as unary calls stop working then.
    pub fn watch(&self, principal: &Principal) -> KeyWatch {
        KeyWatch { auth: self.clone(), key_id: principal.key_id.clone() }
    }

    /// Whether the key `id` still stands, from what was checked less than `recheck` ago or
    /// else from the store. A store that cannot answer now keeps the key standing: the key
    /// was valid, and a stream should not end because of one failed read.
    async fn still_valid(&self, id: &str) -> bool {
        {
            let checked = self.lock();
            if let Some(seen) = checked.get(id).filter(|seen| self.fresh(seen)) {
                return seen.principal.is_some();
            }
        }
        let key = match self.store.api_key(id).await {
            Ok(Some(key)) => key,
            Ok(None) => return false,
            Err(error) => {
                tracing::warn!(%error, key_id = id, "keys cannot be checked now; the stream goes on");
                return true;
            }
        };
        let mut checked = self.lock();
        let Some(seen) = checked.get_mut(id) else {
            return key.revoked_at.is_none() && principal_of(&key).is_some();
        };
        if key.revoked_at.is_some() || key.secret_hash != seen.key.secret_hash {
            seen.principal = None;
        }
        seen.at = self.clock.now();
        seen.key = key;
        seen.principal.is_some()
    }

    /// Whether what the store said about a key is recent enough to trust. A clock that went
    /// back since counts as stale: a revoked key is not trusted for longer than `recheck`.
    fn fresh(&self, seen: &Checked) -> bool {
        let age = self.clock.now().as_unix_micros().checked_sub(seen.at.as_unix_micros());
        age.and_then(|age| u64::try_from(age).ok())
            .is_some_and(|age| u128::from(age) < self.recheck.as_micros())
    }

    /// The answer for a key checked less than `recheck` ago; `None` to ask the store.
    fn recent(&self, id: &str, digest: &[u8; 32]) -> Option<Result<Principal, AuthError>> {
        let checked = self.lock();
        let seen = checked.get(id).filter(|seen| self.fresh(seen))?;
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
        let at = self.clock.now();
        checked.insert(id, Checked { key, principal, digest, at });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Checked>> {
        self.checked.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The key behind a long-lived call, checked again every `recheck`.
#[derive(Clone)]
pub struct KeyWatch {
    auth: Authenticator,
    /// `None`: auth is off, and nothing is ever revoked.
    key_id: Option<String>,
}

impl KeyWatch {
    /// Resolves once the key no longer stands (revoked or deleted), at most `recheck` after
    /// that happened; never when auth is off.
    pub async fn revoked(&self) {
        let Some(id) = &self.key_id else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(self.auth.recheck).await;
            if !self.auth.still_valid(id).await {
                return;
            }
        }
    }
}

/// Why a long-lived call (a stream, a WebSocket) ended before its client closed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The server is draining.
    Shutdown,
    /// The call's key was revoked.
    Revoked,
}

/// The end of one long-lived call: the server's shutdown, or its key's revocation, noticed
/// by a task that checks the key every `recheck`. Call [`Ending::finish`] when the call is
/// over, so the check stops.
#[derive(Clone)]
pub struct Ending {
    token: CancellationToken,
    revoked: Arc<AtomicBool>,
}

impl Ending {
    pub fn new(shutdown: &CancellationToken, key: Option<KeyWatch>) -> Ending {
        let token = shutdown.child_token();
        let revoked = Arc::new(AtomicBool::new(false));
        if let Some(key) = key {
            let (token, revoked) = (token.clone(), revoked.clone());
            tokio::spawn(async move {
                tokio::select! {
                    () = key.revoked() => {
                        revoked.store(true, Ordering::SeqCst);
                        token.cancel();
                    }
                    () = token.cancelled() => {}
                }
            });
        }
        Ending { token, revoked }
    }

    /// Resolves once the call must end, with why.
    pub async fn ended(&self) -> Ended {
        self.token.cancelled().await;
        if self.revoked.load(Ordering::SeqCst) { Ended::Revoked } else { Ended::Shutdown }
    }

    /// The call is over: stops watching its key.
    pub fn finish(&self) {
        self.token.cancel();
    }
}

/// Finishes an [`Ending`] when dropped: held by the task that serves the call.
pub struct FinishOnDrop(pub Ending);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// The principal a stored key stands for; `None` if the row does not parse (never trusted).
fn principal_of(key: &ApiKey) -> Option<Principal> {
    let tenant = Tenant::parse(&key.tenant).ok()?;
    Some(Principal {
        key_id: Some(key.id.clone()),
        scope: Scope::parse(&key.scope)?,
        // The key names its user; the user is its tenant's.
        user: match &key.user_id {
            Some(user) => Some(UserId::parse(user).ok()?.in_tenant(&tenant)),
            None => None,
        },
        tenant,
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
