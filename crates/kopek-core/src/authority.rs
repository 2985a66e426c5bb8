//! Who sent a command, as far as the rules care: what its sender may do inside its tenant.
//!
//! `apply` decides every permission with the state it loaded for the batch, so no surface can
//! forget a check, and no read that a surface made before the write can go stale under it.
//! Every `Command` names its authority; the surfaces derive it from the caller's key.

use crate::account::{AccountKind, NewAccount, Overdraft};
use crate::error::{ErrorCode, Rejection};
use crate::party::UserId;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authority {
    /// kopek itself (hold expiry, the order saga, consumers, the CLI on the data directory)
    /// and admin keys: everything in the tenant, including credit (overdraft limits), system
    /// accounts, account status, rates and hold expiry.
    Ledger,
    /// A key that moves money and opens accounts, without credit: no overdraft limit, no
    /// system account, no account status, no rates.
    Client,
    /// A key bound to one user: as `Client`, and it moves money only out of that user's
    /// accounts, resolves only that user's holds, opens accounts only for that user, and
    /// creates no users.
    User(UserId),
}

impl Authority {
    /// The user the sender is bound to, if any.
    pub fn user(&self) -> Option<&UserId> {
        match self {
            Authority::User(user) => Some(user),
            Authority::Ledger | Authority::Client => None,
        }
    }

    /// Refuses an account the sender may not open. Opening an account with credit (an
    /// overdraft limit, or any system account, which may be unbounded) creates money the
    /// ledger must trust, so only the ledger's own authority may.
    pub fn permit_account(&self, request: &NewAccount) -> Result<(), Rejection> {
        if *self == Authority::Ledger {
            return Ok(());
        }
        if request.kind == AccountKind::System {
            return Err(denied("only an admin key opens system accounts"));
        }
        if request.overdraft != Overdraft::NONE {
            return Err(denied("only an admin key sets an overdraft limit"));
        }
        if let Authority::User(user) = self
            && request.owner.as_deref() != Some(user.name())
        {
            return Err(denied("a key bound to a user opens accounts only for that user"));
        }
        Ok(())
    }

    /// Refuses what only the ledger's own authority does: account status and limits, rates,
    /// hold expiry.
    pub fn permit_ledger_only(&self, what: &str) -> Result<(), Rejection> {
        match self {
            Authority::Ledger => Ok(()),
            Authority::Client | Authority::User(_) => {
                Err(denied(&format!("only an admin key may {what}")))
            }
        }
    }

    /// Refuses what a key bound to a user may not do at all.
    pub fn refuse_bound(&self, what: &str) -> Result<(), Rejection> {
        match self {
            Authority::User(_) => Err(denied(&format!("a key bound to a user cannot {what}"))),
            Authority::Ledger | Authority::Client => Ok(()),
        }
    }
}

pub(crate) fn denied(message: &str) -> Rejection {
    Rejection::new(ErrorCode::PermissionDenied, message)
}
