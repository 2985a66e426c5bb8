//! Identifiers, each parsed once at the edge: `AccountId`, `IdempotencyKey`, `Tenant`, and
//! ULID-based `TransferId` and `EventId`.

use crate::error::Rejection;
use crate::limits;
use std::fmt;
use std::sync::{Arc, LazyLock};

/// Ids of accounts, users and orders belong to a tenant: two tenants may both have an account
/// `alice`. Such an id is held as its *key*, the form stores keep and the core compares: the
/// name itself in the default tenant (so its ids are what they always were), and
/// `<tenant>/<name>` in the others. `/` is in neither a tenant nor a parsed id, so a key names
/// one tenant and one id; a default-tenant reference that holds a `/` is keyed
/// `default/<name>`. `Display` and `as_str` give the key, for stores; clients only ever see
/// `name()`.
const TENANT_SEPARATOR: char = '/';

/// The key of `name` in `tenant`.
pub(crate) fn scoped_key(tenant: &Tenant, name: &str) -> String {
    if tenant.is_default() && !name.contains(TENANT_SEPARATOR) {
        name.to_owned()
    } else {
        format!("{}{TENANT_SEPARATOR}{name}", tenant.0)
    }
}

/// The name part of a key.
pub(crate) fn name_of(key: &str) -> &str {
    key.split_once(TENANT_SEPARATOR).map_or(key, |(_, name)| name)
}

/// Whether a key is in `tenant`.
pub(crate) fn key_in(key: &str, tenant: &Tenant) -> bool {
    match key.split_once(TENANT_SEPARATOR) {
        Some((owner, _)) => owner == &*tenant.0,
        None => tenant.is_default(),
    }
}

/// The tenant part of a key.
pub(crate) fn tenant_of(key: &str) -> Tenant {
    match key.split_once(TENANT_SEPARATOR) {
        Some((tenant, _)) => Tenant(tenant.into()),
        None => Tenant::default_tenant(),
    }
}

/// Checks a stored key: a tenant, if any, then a name.
pub(crate) fn check_key(
    key: &str,
    what: &str,
    name_ok: impl Fn(&str) -> bool,
) -> Result<(), Rejection> {
    let (tenant_ok, name) = match key.split_once(TENANT_SEPARATOR) {
        Some((tenant, name)) => (Tenant::parse(tenant).is_ok(), name),
        None => (true, key),
    };
    if tenant_ok && name_ok(name) {
        Ok(())
    } else {
        Err(Rejection::invalid(format!("'{}' is not a stored {what} key", printable(key))))
    }
}

/// What every id that belongs to a tenant has: its key (`as_str`, `Display`: what stores keep
/// and compare), its `name` (what clients see), its `tenant`, and the same name in another
/// tenant.
macro_rules! tenant_keyed {
    ($type:ident) => {
        impl $type {
            /// The key: what stores keep and compare (`<tenant>/<name>` outside the default
            /// tenant).
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as its clients name it, without its tenant.
            pub fn name(&self) -> &str {
                $crate::ids::name_of(&self.0)
            }

            pub fn tenant(&self) -> $crate::ids::Tenant {
                $crate::ids::tenant_of(&self.0)
            }

            /// The same name in `tenant`.
            pub fn in_tenant(&self, tenant: &$crate::ids::Tenant) -> $type {
                $type($crate::ids::scoped_key(tenant, self.name()).into())
            }

            /// Moves the id into `tenant`, if it is not there already.
            pub fn scope_to(&mut self, tenant: &$crate::ids::Tenant) {
                if !$crate::ids::key_in(&self.0, tenant) {
                    *self = self.in_tenant(tenant);
                }
            }
        }

        /// The key, as stores keep it: what `to_string` gives. Clients see `name()`.
        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
pub(crate) use tenant_keyed;

/// A client-chosen or server-made account id: `[A-Za-z0-9_.:-]{1,128}`, in its tenant (see
/// [`TENANT_SEPARATOR`]). Shared, not copied: a clone (records, entries, events and the
/// state all name accounts) costs no allocation.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountId(Arc<str>);

impl AccountId {
    pub fn parse(text: &str) -> Result<AccountId, Rejection> {
        let allowed =
            |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b':' | b'-');
        if text.is_empty()
            || text.len() > limits::ACCOUNT_ID_BYTES_MAX
            || !text.bytes().all(allowed)
        {
            return Err(Rejection::invalid(format!(
                "account id '{}' must be 1 to {} characters of A-Z a-z 0-9 _ . : -",
                printable(text),
                limits::ACCOUNT_ID_BYTES_MAX
            )));
        }
        Ok(AccountId(text.into()))
    }

    /// An id as a reference to an account that may not exist: any printable text up to 128
    /// bytes. Accounts are only ever opened with `parse`'s ids, so one outside that alphabet is
    /// simply not found; the contracts decline it (and record the decline) rather than refuse it.
    pub fn parse_reference(text: &str) -> Result<AccountId, Rejection> {
        if !reference_ok(text) {
            return Err(Rejection::invalid(format!(
                "account id must be 1 to {} bytes of printable text",
                limits::ACCOUNT_ID_BYTES_MAX
            )));
        }
        Ok(AccountId(scoped_key(&Tenant::default_tenant(), text).into()))
    }

    /// An id as a store keeps it (its key).
    pub fn from_key(key: &str) -> Result<AccountId, Rejection> {
        check_key(key, "account", reference_ok)?;
        Ok(AccountId(key.into()))
    }

    pub fn is_world(&self) -> bool {
        self.name().starts_with("world:")
    }

    /// The system account that stands for money outside the ledger in one currency, in the
    /// default tenant: `world:<CUR>`.
    pub fn world(currency: crate::Currency) -> AccountId {
        AccountId(format!("world:{currency}").into())
    }

    /// A tenant's own account of money outside the ledger: `world:<CUR>` in the default
    /// tenant, `world:<tenant>:<CUR>` in the others (the name data written before ids
    /// belonged to tenants carries).
    pub fn world_in(tenant: &Tenant, currency: crate::Currency) -> AccountId {
        AccountId(scoped_key(tenant, &format!("world:{}{currency}", tenant.qualifier())).into())
    }
}

fn reference_ok(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= limits::ACCOUNT_ID_BYTES_MAX
        && !text.chars().any(char::is_control)
}

tenant_keyed!(AccountId);

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client's idempotency key: 1 to 255 bytes of printable text. Shared, not copied.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct IdempotencyKey(Arc<str>);

impl IdempotencyKey {
    /// A client's key: 1 to 255 characters of printable text.
    pub fn parse(text: &str) -> Result<IdempotencyKey, Rejection> {
        if text.is_empty()
            || text.chars().count() > limits::IDEMPOTENCY_KEY_CHARS_MAX
            || text.chars().any(char::is_control)
        {
            return Err(Rejection::invalid(format!(
                "idempotency key must be 1 to {} characters of printable text",
                limits::IDEMPOTENCY_KEY_CHARS_MAX
            )));
        }
        Ok(IdempotencyKey(text.into()))
    }

    /// A key sent to kopek's own APIs (kopek.v1, REST): as `parse`, but the scopes kopek keeps
    /// for its contracts and its order payments are refused, so no client can take the key of
    /// a payment kopek will make (an order's) or of another surface's request.
    pub fn parse_client(text: &str) -> Result<IdempotencyKey, Rejection> {
        let key = IdempotencyKey::parse(text)?;
        if let Some((scope, _)) = text.split_once(':')
            && IdempotencyKey::RESERVED_SCOPES.contains(&scope)
        {
            return Err(Rejection::invalid(format!(
                "idempotency keys starting with '{scope}:' are reserved"
            )));
        }
        Ok(key)
    }

    /// Key spaces of the contracts, of order payments and of the legs of conversions.
    pub const RESERVED_SCOPES: [&'static str; 6] =
        ["txn", "pay", "usertxn", "topup", "order", "fx"];

    /// A client's key inside a key space of its own (`scope:key`), so clients of different
    /// surfaces never collide: the streaming contract's "1" is not the payment contract's "1".
    pub fn scoped(scope: &str, text: &str) -> Result<IdempotencyKey, Rejection> {
        let key = IdempotencyKey::parse(text)?;
        Ok(IdempotencyKey(format!("{scope}:{}", key.0).into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The caller's scope: idempotency keys and events belong to one tenant. Shared, not copied.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Tenant(Arc<str>);

/// The default tenant's name, shared by every `Tenant::default_tenant()`.
static DEFAULT_TENANT: LazyLock<Arc<str>> = LazyLock::new(|| Tenant::DEFAULT_NAME.into());

impl Tenant {
    pub const DEFAULT_NAME: &'static str = "default";

    pub fn parse(text: &str) -> Result<Tenant, Rejection> {
        let allowed = |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-');
        if text.is_empty() || text.len() > limits::TENANT_BYTES_MAX || !text.bytes().all(allowed) {
            return Err(Rejection::invalid("tenant must be 1 to 64 characters of A-Z a-z 0-9 _ -"));
        }
        Ok(Tenant(text.into()))
    }

    pub fn default_tenant() -> Tenant {
        Tenant(Arc::clone(&DEFAULT_TENANT))
    }

    pub fn is_default(&self) -> bool {
        &*self.0 == Tenant::DEFAULT_NAME
    }

    /// What a tenant's system account ids carry before the currency: nothing for the default
    /// tenant (`world:USD`), `<tenant>:` for the others (`world:acme:USD`).
    pub fn qualifier(&self) -> String {
        if self.is_default() { String::new() } else { format!("{}:", self.0) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What the keys of this tenant's ids start with: nothing in the default tenant,
    /// `<tenant>/` in the others (see `TENANT_SEPARATOR`).
    pub fn key_prefix(&self) -> String {
        if self.is_default() { String::new() } else { format!("{}{TENANT_SEPARATOR}", self.0) }
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A ULID: 48 bits of milliseconds then 80 random bits, written as 26 Crockford base32
/// characters so ids sort by creation time. The core only formats and parses them; the
/// engine makes them from its clock and random source.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ulid(u128);

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

impl Ulid {
    pub fn from_parts(unix_millis: u64, random: u128) -> Ulid {
        let time = u128::from(unix_millis & ((1 << 48) - 1)) << 80;
        Ulid(time | (random & ((1 << 80) - 1)))
    }

    pub fn from_u128(value: u128) -> Ulid {
        Ulid(value)
    }

    pub fn as_u128(self) -> u128 {
        self.0
    }

    pub fn unix_millis(self) -> u64 {
        (self.0 >> 80) as u64
    }

    pub fn parse(text: &str) -> Result<Ulid, Rejection> {
        let error =
            || Rejection::invalid(format!("'{}' is not a 26-character ULID", printable(text)));
        if text.len() != 26 {
            return Err(error());
        }
        let mut value: u128 = 0;
        for (index, byte) in text.bytes().enumerate() {
            let digit = match byte.to_ascii_uppercase() {
                b'O' => 0,
                b'I' | b'L' => 1,
                upper => CROCKFORD.iter().position(|&c| c == upper).ok_or_else(error)? as u128,
            };
            // The first character carries only 3 bits: 26 * 5 = 130 = 128 + 2.
            if index == 0 && digit > 7 {
                return Err(error());
            }
            value = (value << 5) | digit;
        }
        Ok(Ulid(value))
    }
}

impl Ulid {
    /// Its 26 Crockford base32 characters, written into `out` (no allocation, for the rows
    /// a store writes per transfer).
    pub fn text(self, out: &mut [u8; 26]) -> &str {
        for (index, slot) in out.iter_mut().enumerate() {
            let shift = 5 * (25 - index);
            *slot = CROCKFORD[((self.0 >> shift) & 0x1f) as usize];
        }
        // Every Crockford character is ASCII, so this never falls back.
        std::str::from_utf8(out).unwrap_or_default()
    }
}

impl fmt::Display for Ulid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text(&mut [0; 26]))
    }
}

impl fmt::Debug for Ulid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

macro_rules! ulid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
        pub struct $name(pub Ulid);

        impl $name {
            pub fn parse(text: &str) -> Result<$name, Rejection> {
                Ulid::parse(text).map($name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

ulid_id!(
    /// The server's id of a transfer (also of a declined one).
    TransferId
);
ulid_id!(
    /// The id of an outbox event; consumers deduplicate on it.
    EventId
);
ulid_id!(
    /// The id of an FX quote.
    QuoteId
);

/// Where the core needs fresh ids it asks this source, so `apply` stays deterministic.
pub trait IdSource {
    fn next_ulid(&mut self) -> Ulid;
}

/// Clips untrusted text for an error message.
pub(crate) fn printable(text: &str) -> String {
    text.chars().take(64).map(|c| if c.is_control() { '?' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn account_ids_follow_the_alphabet() {
        assert!(AccountId::parse("user:42:USD").is_ok());
        assert!(AccountId::parse("a.b-c_d").is_ok());
        for bad in ["", "has space", "naïve", &"x".repeat(129)] {
            assert!(AccountId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ulid_text_is_26_crockford_characters() {
        let ulid = Ulid::from_parts(1_700_000_000_000, 42);
        let text = ulid.to_string();
        assert_eq!(text.len(), 26);
        assert_eq!(Ulid::parse(&text), Ok(ulid));
        assert_eq!(Ulid::parse(&text.to_lowercase()), Ok(ulid));
        assert_eq!(ulid.unix_millis(), 1_700_000_000_000);
        assert!(Ulid::parse("8ZZZZZZZZZZZZZZZZZZZZZZZZZ").is_err());
        assert!(Ulid::parse("01ARZ3NDEKTSV4RRFFQ69G5FA").is_err());
    }

    proptest! {
        #[test]
        fn ulids_round_trip_and_sort_like_text(a: u128, b: u128) {
            let (x, y) = (Ulid::from_u128(a), Ulid::from_u128(b));
            prop_assert_eq!(Ulid::parse(&x.to_string()), Ok(x));
            prop_assert_eq!(x.cmp(&y), x.to_string().cmp(&y.to_string()));
        }
    }
}
