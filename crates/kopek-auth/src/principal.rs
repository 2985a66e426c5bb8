//! Scopes and the principal a request acts as.

use kopek_core::{Account, Authority, Command, CommandBody, ErrorCode, Rejection, Tenant, UserId};

/// What a key may do. Each scope includes the ones before it: `read` reads, `write` also
/// moves money and opens accounts, `gateway` also acts for any user of its tenant named by
/// the HTTP contract's `X-User-ID`, `admin` also manages keys, webhooks and account status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Read,
    Write,
    Gateway,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Write, Scope::Gateway, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Gateway => "gateway",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == text)
    }
}

/// Who a request acts as, once its key checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The key's public id; `None` when auth is off.
    pub key_id: Option<String>,
    pub tenant: Tenant,
    pub scope: Scope,
    /// Set: the key sees and moves only this user's accounts.
    pub user: Option<UserId>,
}

impl Principal {
    /// The caller when auth is off: an admin of the default tenant, as before keys existed.
    pub fn anonymous() -> Principal {
        Principal {
            key_id: None,
            tenant: Tenant::default_tenant(),
            scope: Scope::Admin,
            user: None,
        }
    }

    pub fn may(&self, required: Scope) -> bool {
        self.scope >= required
    }

    /// The key id the audit trail records, `None` for the anonymous caller.
    pub fn actor(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    /// What the core lets the key do in its tenant: everything for an admin key (credit,
    /// system accounts, account status, rates), only the user's own money for a key bound to
    /// a user, and moving money without credit for the others.
    pub fn authority(&self) -> Authority {
        match (&self.user, self.scope) {
            (Some(user), _) => Authority::User(user.clone()),
            (None, Scope::Admin) => Authority::Ledger,
            (None, Scope::Read | Scope::Write | Scope::Gateway) => Authority::Client,
        }
    }

    /// A command in the principal's tenant, with its authority, sent by its key: the only way
    /// the surfaces make commands.
    pub fn command(&self, body: CommandBody) -> Command {
        Command::new(self.tenant.clone(), self.authority(), body).by(self.actor())
    }

    /// The owner of an account the principal opens: a key bound to a user opens accounts for
    /// that user when it names no owner (the core refuses any other owner).
    pub fn owner_of_new_account(&self, named: Option<String>) -> Option<String> {
        match &self.user {
            Some(user) if named.is_none() => Some(user.name().to_owned()),
            _ => named,
        }
    }

    /// What rate limits count against: the key, or one shared bucket when auth is off.
    pub fn bucket(&self) -> &str {
        self.key_id.as_deref().unwrap_or("anonymous")
    }
}

/// What a principal may see beyond its scope: its tenant's accounts only, and its user's when
/// the key is bound to one. The reads that apply it are the intake's (`kopek_intake::access`).
impl Principal {
    /// Whether the principal sees the account: its tenant's, and its user's when bound.
    pub fn sees(&self, account: &Account) -> bool {
        account.tenant == self.tenant
            && self.user.as_ref().is_none_or(|user| account.owner.as_deref() == Some(user.name()))
    }

    /// Whether the key may name any user of its tenant (not bound to one).
    pub fn is_bound(&self) -> bool {
        self.user.is_some()
    }

    /// Refuses what a key bound to a user may not do at all (open accounts for others,
    /// create users, follow the tenant's event stream).
    pub fn refuse_bound(&self, what: &str) -> Result<(), Rejection> {
        match &self.user {
            None => Ok(()),
            Some(_) => Err(Rejection::new(
                ErrorCode::PermissionDenied,
                format!("a key bound to a user cannot {what}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_include_the_ones_before_them() {
        let key = |scope| Principal { scope, ..Principal::anonymous() };
        assert!(key(Scope::Admin).may(Scope::Gateway));
        assert!(key(Scope::Gateway).may(Scope::Write));
        assert!(key(Scope::Write).may(Scope::Read));
        assert!(!key(Scope::Write).may(Scope::Gateway));
        assert!(!key(Scope::Read).may(Scope::Write));
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
        }
        assert_eq!(Scope::parse("Admin"), None);
    }
}
