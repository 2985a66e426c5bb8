//! kopek-auth: who is calling and what they may do.
//!
//! An API key is `kopek_<id>_<secret>`: the id is public (logs, the audit trail, `kopek keys
//! list`), the secret is shown once at creation and kept only as an argon2id hash. Every
//! surface turns the `Authorization: Bearer` header (gRPC: `authorization` metadata) into a
//! [`Principal`] with [`Authenticator::authenticate`], checks the route's [`Scope`], and acts
//! in the principal's tenant, as its user when the key is bound to one (what such a key may see
//! is `Principal::sees`; the reads that apply it are `kopek_intake::access`). [`RateLimiter`] is the
//! per-key token bucket, in process or shared through Redis.

mod authenticator;
mod key;
mod limit;
mod principal;

pub use authenticator::{
    AuthError, AuthMode, Authenticator, Ended, Ending, FinishOnDrop, KeyWatch, RECHECK_DEFAULT,
};
pub use key::{MintedKey, adopt, mint, parse_token};
pub use limit::{RateLimit, RateLimiter, Verdict};
pub use principal::{Principal, Scope};
