//! Opening an account, as every surface reads it: REST `POST /v1/accounts` and gRPC
//! `CreateAccounts` decode their shapes into an [`AccountInput`], and `account_request` reads
//! it by one set of rules.

use crate::fields;
use kopek_auth::Principal;
use kopek_core::{AccountKind, NewAccount, Overdraft, Rejection};
use std::collections::BTreeMap;

/// An account to open, in the surfaces' common words.
#[derive(Clone, Debug)]
pub struct AccountInput {
    pub id: String,
    pub currency: Option<String>,
    /// The user the account belongs to; a key bound to a user opens its user's accounts.
    pub owner: Option<String>,
    pub kind: AccountKind,
    /// How far below zero the balance may go, in major units (`"100.00"`).
    pub overdraft_limit: Option<String>,
    pub overdraft_limit_minor: Option<i64>,
    /// System accounts only: no overdraft limit at all (any limit given is then ignored).
    pub unbounded_overdraft: bool,
    pub metadata: BTreeMap<String, String>,
}

/// The core's request to open `input` for `caller`.
pub fn account_request(caller: &Principal, input: AccountInput) -> Result<NewAccount, Rejection> {
    let id = fields::account_id(&input.id)?;
    let currency = fields::currency(input.currency.as_deref())?;
    let overdraft = if input.unbounded_overdraft {
        Overdraft::Unbounded
    } else {
        fields::overdraft(input.overdraft_limit.as_deref(), input.overdraft_limit_minor, currency)?
            .unwrap_or(Overdraft::NONE)
    };
    let owner =
        caller.owner_of_new_account(fields::given(input.owner.as_deref()).map(str::to_owned));
    let account =
        NewAccount { id, currency, owner, kind: input.kind, overdraft, metadata: input.metadata };
    account.validate()?;
    Ok(account)
}
