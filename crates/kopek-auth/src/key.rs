//! The key format, minting and the secret's hash.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use kopek_core::Timestamp;
use kopek_store::ApiKey;

const PREFIX: &str = "kopek_";
/// Random bytes in the id (public) and in the secret (never stored).
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;

/// A new key: the token the caller is shown once, and the row the store keeps.
#[derive(Debug)]
pub struct MintedKey {
    pub token: String,
    pub key: ApiKey,
}

/// Makes a key with a fresh id and secret. The hash takes tens of milliseconds on purpose.
pub fn mint(
    tenant: &str,
    scope: crate::Scope,
    user_id: Option<&str>,
    name: &str,
    now: Timestamp,
) -> std::io::Result<MintedKey> {
    let id = hex(&random::<ID_BYTES>()?);
    let secret = hex(&random::<SECRET_BYTES>()?);
    let token = format!("{PREFIX}{id}_{secret}");
    let key = ApiKey {
        id,
        tenant: tenant.to_owned(),
        scope: scope.as_str().to_owned(),
        user_id: user_id.map(str::to_owned),
        name: name.to_owned(),
        secret_hash: hash(&secret)?,
        created_at: now,
        revoked_at: None,
    };
    Ok(MintedKey { token, key })
}

/// Imports a token given from outside (`--admin-key`): it must have the key format.
pub fn adopt(
    token: &str,
    tenant: &str,
    scope: crate::Scope,
    name: &str,
    now: Timestamp,
) -> std::io::Result<Option<MintedKey>> {
    let Some((id, secret)) = parse_token(token) else { return Ok(None) };
    let key = ApiKey {
        id: id.to_owned(),
        tenant: tenant.to_owned(),
        scope: scope.as_str().to_owned(),
        user_id: None,
        name: name.to_owned(),
        secret_hash: hash(secret)?,
        created_at: now,
        revoked_at: None,
    };
    Ok(Some(MintedKey { token: token.to_owned(), key }))
}

/// Splits `kopek_<id>_<secret>`; `None` unless both halves are lowercase hex of the right size.
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.strip_prefix(PREFIX)?.split_once('_')?;
    let hex_of = |text: &str, bytes: usize| {
        text.len() == bytes * 2 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    (hex_of(id, ID_BYTES) && hex_of(secret, SECRET_BYTES)).then_some((id, secret))
}

fn hash(secret: &str) -> std::io::Result<String> {
    let salt = SaltString::encode_b64(&random::<16>()?)
        .map_err(|error| std::io::Error::other(error.to_string()))?;
    argon2::Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| std::io::Error::other(error.to_string()))
}

/// Whether `secret` is the one `stored` was made from (argon2 compares in constant time).
pub(crate) fn verify(secret: &str, stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else { return false };
    argon2::Argon2::default().verify_password(secret.as_bytes(), &parsed).is_ok()
}

fn random<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|error| std::io::Error::other(error.to_string()))?;
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_parse_and_verify_only_their_own_secret() {
        let now = Timestamp::from_unix_micros(1);
        let minted = mint("default", crate::Scope::Write, None, "test", now).expect("mint");
        let (id, secret) = parse_token(&minted.token).expect("own format");
        assert_eq!(id, minted.key.id);
        assert!(!minted.key.secret_hash.contains(secret), "the secret is not stored");
        assert!(verify(secret, &minted.key.secret_hash));
        let mut wrong = secret.to_owned();
        wrong.replace_range(0..1, if secret.starts_with('0') { "1" } else { "0" });
        assert!(!verify(&wrong, &minted.key.secret_hash));
        assert!(!verify(secret, "not a hash"));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = format!("kopek_{}_{}", "a".repeat(16), "b".repeat(64));
        assert!(parse_token(&good).is_some());
        for bad in [
            String::new(),
            "kopek_".to_owned(),
            format!("kopek_{}_{}", "a".repeat(15), "b".repeat(64)),
            format!("kopek_{}_{}", "A".repeat(16), "b".repeat(64)),
            format!("kopek_{}_{}", "a".repeat(16), "b".repeat(65)),
            format!("kopek_{}-{}", "a".repeat(16), "b".repeat(64)),
            format!("other_{}_{}", "a".repeat(16), "b".repeat(64)),
        ] {
            assert!(parse_token(&bad).is_none(), "{bad}");
        }
    }
}
