//! What a principal may see, beyond its scope: its tenant's accounts and transfers only, and
//! its user's only when the key is bound to a user. What it may move and open is the core's
//! decision (`kopek_core::Authority`, from `Principal::authority`). Another tenant's or user's
//! account answers "not found", never "forbidden", so keys learn nothing of what they may not
//! see.

use crate::Principal;
use kopek_core::{Account, AccountId, ErrorCode, Rejection, Transfer};
use kopek_store::{Store, StoreError};

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

fn unavailable(error: StoreError) -> Rejection {
    Rejection::new(ErrorCode::Unavailable, format!("the ledger cannot be read now: {error}"))
}

pub fn account_not_found(id: &AccountId) -> Rejection {
    Rejection::new(ErrorCode::AccountNotFound, format!("account {} not found", id.name()))
}

/// The account `id` names in the principal's tenant, if the principal sees it;
/// `ACCOUNT_NOT_FOUND` otherwise.
pub async fn visible_account(
    store: &dyn Store,
    who: &Principal,
    id: &AccountId,
) -> Result<Account, Rejection> {
    match store.account(&id.in_tenant(&who.tenant)).await.map_err(unavailable)? {
        Some(account) if who.sees(&account) => Ok(account),
        _ => Err(account_not_found(id)),
    }
}

/// Whether the principal sees a transfer: its tenant's and, for a key bound to a user, one
/// with a side in the user's accounts.
pub async fn sees_transfer(
    store: &dyn Store,
    who: &Principal,
    transfer: &Transfer,
) -> Result<bool, Rejection> {
    if transfer.tenant != who.tenant {
        return Ok(false);
    }
    if who.user.is_none() {
        return Ok(true);
    }
    for id in [&transfer.debit_account, &transfer.credit_account].into_iter().flatten() {
        if store.account(id).await.map_err(unavailable)?.is_some_and(|account| who.sees(&account)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The user `id` names in the principal's tenant, if the principal sees it: for a bound key,
/// only its own user.
pub async fn visible_user(
    store: &dyn Store,
    who: &Principal,
    id: &kopek_core::UserId,
) -> Result<Option<kopek_core::User>, Rejection> {
    let id = &id.in_tenant(&who.tenant);
    if who.user.as_ref().is_some_and(|user| user != id) {
        return Ok(None);
    }
    let user = store.user(id).await.map_err(unavailable)?;
    Ok(user.filter(|user| user.tenant == who.tenant))
}
