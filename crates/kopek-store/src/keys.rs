//! API keys as the store keeps them: never the secret, only its slow hash.

use crate::rows::Columns;
use kopek_core::Timestamp;

/// The columns each row is selected with, in the order `ApiKey::read` takes them.
pub const API_KEY_COLUMNS: &str =
    "id, tenant, scope, user_id, name, secret_hash, created_at, revoked_at";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    /// The public half of the key (`kopek_<id>_<secret>`): safe to log and to show.
    pub id: String,
    pub tenant: String,
    /// `read`, `write`, `gateway` or `admin`; each includes the ones before it.
    pub scope: String,
    /// A key bound to a user sees and moves only that user's accounts.
    pub user_id: Option<String>,
    /// What the key is for, as its creator described it.
    pub name: String,
    /// The secret's hash in PHC form (argon2id).
    pub secret_hash: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

impl ApiKey {
    pub fn read<C: Columns>(row: &C) -> Result<ApiKey, C::Error> {
        Ok(ApiKey {
            id: row.text(0)?,
            tenant: row.text(1)?,
            scope: row.text(2)?,
            user_id: row.optional_text(3)?,
            name: row.text(4)?,
            secret_hash: row.text(5)?,
            created_at: Timestamp::from_unix_micros(row.integer(6)?),
            revoked_at: row.optional_integer(7)?.map(Timestamp::from_unix_micros),
        })
    }
}

/// The columns an audit line is selected with, from the outbox.
pub const AUDIT_COLUMNS: &str = "sequence, at, actor, tenant, kind, subject_id";

/// One event a key's write caused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub sequence: u64,
    pub at: Timestamp,
    /// The key's id.
    pub actor: String,
    pub tenant: String,
    /// The event type, e.g. `TransferPosted`.
    pub kind: String,
    /// The account, transfer, user or order the event is about.
    pub subject_id: String,
}

impl AuditEntry {
    pub fn read<C: Columns>(row: &C) -> Result<AuditEntry, C::Error> {
        let kind = row.text(4)?;
        let subject = row.text(5)?;
        Ok(AuditEntry {
            sequence: u64::try_from(row.integer(0)?).unwrap_or(0),
            at: Timestamp::from_unix_micros(row.integer(1)?),
            actor: row.text(2)?,
            tenant: row.text(3)?,
            subject_id: kopek_core::event::subject_name(&kind, &subject).to_owned(),
            kind,
        })
    }
}

/// Which audit lines to list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditQuery {
    /// One key's, or every key's.
    pub actor: Option<String>,
    /// At or after.
    pub since: Timestamp,
    /// Before.
    pub until: Timestamp,
    pub limit: usize,
}
