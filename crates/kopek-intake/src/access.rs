//! What a caller may read, decided once for every surface. A key sees its tenant's accounts,
//! transfers, users and spending only, and a key bound to a user only that user's; what it
//! may not see answers exactly as what does not exist ("not found", never "forbidden"), so a
//! key learns nothing of others. What a key may write is the core's decision
//! (`kopek_core::Authority`, from `Principal::authority`), made when the command applies.

use crate::Intake;
use kopek_auth::Principal;
use kopek_core::{
    Account, AccountId, ErrorCode, IdempotencyKey, Order, OrderId, Rejection, Transfer, TransferId,
    User, UserId,
};
use kopek_store::{SpendingTotal, StoreError};

/// How a caller names a transfer.
#[derive(Clone, Copy, Debug)]
pub enum TransferLookup<'a> {
    Id(TransferId),
    /// The idempotency key it was made with, in the caller's tenant.
    Key(&'a IdempotencyKey),
}

impl Intake {
    /// The account `id` names in the caller's tenant if the caller sees it;
    /// `ACCOUNT_NOT_FOUND` otherwise.
    pub async fn visible_account(
        &self,
        caller: &Principal,
        id: &AccountId,
    ) -> Result<Account, Rejection> {
        self.account_seen(caller, id).await?.ok_or_else(|| Rejection::account_not_found(id))
    }

    /// The account `id` names in the caller's tenant, if it exists and the caller sees it.
    pub async fn account_seen(
        &self,
        caller: &Principal,
        id: &AccountId,
    ) -> Result<Option<Account>, Rejection> {
        let account = self.store().account(&id.in_tenant(&caller.tenant)).await;
        Ok(account.map_err(unavailable)?.filter(|account| caller.sees(account)))
    }

    /// A page of the caller's tenant's accounts, `owner`'s only when given. A key bound to a
    /// user lists that user's accounts, and nothing when it asks for another owner.
    pub async fn list_accounts(
        &self,
        caller: &Principal,
        owner: Option<String>,
        after: Option<&AccountId>,
        size: usize,
    ) -> Result<Vec<Account>, Rejection> {
        let bound = caller.user.as_ref().map(|user| user.name().to_owned());
        if bound.is_some() && owner.is_some() && owner != bound {
            return Ok(Vec::new());
        }
        let owner = bound.or(owner);
        let after = after.map(|id| id.in_tenant(&caller.tenant));
        let tenant = Some(caller.tenant.as_str());
        let accounts = self.store().list_accounts(tenant, owner.as_deref(), after.as_ref(), size);
        accounts.await.map_err(unavailable)
    }

    /// The transfer the caller names, if it exists and the caller sees it: its tenant's and,
    /// for a key bound to a user, one with a side in that user's accounts.
    pub async fn visible_transfer(
        &self,
        caller: &Principal,
        lookup: TransferLookup<'_>,
    ) -> Result<Option<Transfer>, Rejection> {
        let store = self.store();
        let found = match lookup {
            TransferLookup::Id(id) => store.transfer(id).await,
            TransferLookup::Key(key) => store.transfer_by_key(&caller.tenant, key).await,
        };
        let Some(transfer) = found.map_err(unavailable)? else { return Ok(None) };
        if transfer.tenant != caller.tenant {
            return Ok(None);
        }
        if caller.user.is_none() {
            return Ok(Some(transfer));
        }
        let mut seen = false;
        for id in [&transfer.debit_account, &transfer.credit_account].into_iter().flatten() {
            let account = store.account(id).await.map_err(unavailable)?;
            if account.is_some_and(|account| caller.sees(&account)) {
                seen = true;
                break;
            }
        }
        Ok(seen.then_some(transfer))
    }

    /// The events about a transfer the caller sees, in order (at most
    /// `EVENTS_OF_TRANSFER_MAX`; a transfer has one to three); `None` if it sees no such
    /// transfer. Events carry both accounts' balances, so, as the event log, not for a key
    /// bound to a user.
    pub async fn transfer_events(
        &self,
        caller: &Principal,
        id: kopek_core::TransferId,
    ) -> Result<Option<Vec<kopek_store::StoredEvent>>, Rejection> {
        may_read_event_log(caller)?;
        if self.visible_transfer(caller, TransferLookup::Id(id)).await?.is_none() {
            return Ok(None);
        }
        let subject = id.to_string();
        let events =
            self.store().events_of(caller.tenant.as_str(), &subject, EVENTS_OF_TRANSFER_MAX);
        Ok(Some(events.await.map_err(unavailable)?))
    }

    /// The user `id` names in the caller's tenant, if the caller sees it: for a bound key,
    /// only its own user.
    pub async fn visible_user(
        &self,
        caller: &Principal,
        id: &UserId,
    ) -> Result<Option<User>, Rejection> {
        let id = &id.in_tenant(&caller.tenant);
        if !sees_user(caller, id.name()) {
            return Ok(None);
        }
        let user = self.store().user(id).await.map_err(unavailable)?;
        Ok(user.filter(|user| user.tenant == caller.tenant))
    }

    /// The order `id` names in the caller's tenant, if the caller sees it: a key bound to a
    /// user sees that user's orders only.
    pub async fn visible_order(
        &self,
        caller: &Principal,
        id: &OrderId,
    ) -> Result<Option<Order>, Rejection> {
        let order = self.store().order(&id.in_tenant(&caller.tenant)).await;
        Ok(order
            .map_err(unavailable)?
            .filter(|order| order.tenant == caller.tenant && sees_user(caller, order.user.name())))
    }

    /// A user's spending totals (`user` is an account owner's name); another user's, for a
    /// key bound to a user, answers "not found".
    pub async fn spending(
        &self,
        caller: &Principal,
        user: &str,
    ) -> Result<Vec<SpendingTotal>, Rejection> {
        if !sees_user(caller, user) {
            return Err(Rejection::new(ErrorCode::NotFound, format!("user {user} not found")));
        }
        self.store().spending(caller.tenant.as_str(), user).await.map_err(unavailable)
    }
}

/// Whether the caller may see the user named `user`: any of its tenant's, or, bound to a
/// user, that one.
pub fn sees_user(caller: &Principal, user: &str) -> bool {
    caller.user.as_ref().is_none_or(|bound| bound.name() == user)
}

/// Whether the caller may follow its tenant's live events (`StreamEvents`, `/v1/ws`): not
/// with a key bound to a user.
pub fn may_follow_events(caller: &Principal) -> Result<(), Rejection> {
    caller.refuse_bound("follow the tenant's event stream")
}

/// More events than any transfer has: its posting, placing, decline or resolution.
pub const EVENTS_OF_TRANSFER_MAX: usize = 100;

/// Whether the caller may page through its tenant's event log (`/v1/events`).
pub fn may_read_event_log(caller: &Principal) -> Result<(), Rejection> {
    caller.refuse_bound("read the tenant's event log")
}

/// Whether the caller may take a backup: it holds every tenant's ledger, so only an admin key
/// of the default tenant that is bound to no user (the operator's; the scope is checked where
/// the call is admitted), or any caller with authentication off.
pub fn may_take_backup(caller: &Principal) -> Result<(), Rejection> {
    caller.refuse_bound("take a backup")?;
    if caller.tenant != kopek_core::Tenant::default_tenant() {
        return Err(Rejection::new(
            ErrorCode::PermissionDenied,
            "a backup holds every tenant's ledger: only the default tenant's admin key takes one",
        ));
    }
    Ok(())
}

impl Intake {
    /// A consistent backup of the whole ledger, taken while it serves (`Store::backup`).
    pub async fn backup(&self, caller: &Principal) -> Result<kopek_store::TakenBackup, Rejection> {
        may_take_backup(caller)?;
        self.store().backup().await.map_err(|error| match error {
            StoreError::Unavailable(reason) => Rejection::new(ErrorCode::Unavailable, reason),
            other => unavailable(other),
        })
    }
}

/// A failed read: the cause goes to the log, the caller learns only that it may retry. Every
/// surface answers a failed store read with it.
pub fn unavailable(error: StoreError) -> Rejection {
    tracing::error!(%error, "store read failed");
    Rejection::new(ErrorCode::Unavailable, "the ledger could not be read; retry")
}
