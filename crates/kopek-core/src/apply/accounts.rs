//! Accounts: opening (and answering a repeat), and updating limits and status.

use super::*;

impl Ledger<'_> {
    pub(super) fn create_account(
        &mut self,
        tenant: &Tenant,
        request: &NewAccount,
    ) -> AccountResult {
        if let Err(rejection) = request.validate().and_then(|()| check_reserved_id(tenant, request))
        {
            return AccountResult::Rejected(rejection);
        }
        if let Some(existing) = self.accounts.get(&request.id) {
            // Ids are keyed by their tenant, so an account found is the tenant's.
            assert_eq!(existing.tenant, *tenant);
            return if request.matches(existing) {
                AccountResult::Existed(existing.clone())
            } else {
                AccountResult::Rejected(Rejection::new(
                    ErrorCode::AccountExists,
                    format!("account {} already exists with other fields", request.id.name()),
                ))
            };
        }
        let account = self.new_account_from(tenant, request);
        self.open(tenant, account.clone());
        AccountResult::Created(account)
    }

    pub(super) fn new_account_from(&self, tenant: &Tenant, request: &NewAccount) -> Account {
        Account {
            id: request.id.clone(),
            tenant: tenant.clone(),
            currency: request.currency,
            owner: request.owner.clone(),
            kind: request.kind,
            overdraft: request.overdraft,
            status: AccountStatus::Active,
            metadata: request.metadata.clone(),
            balance: Balance::default(),
            created_at: self.now,
            updated_at: self.now,
        }
    }

    /// The account, if it is the tenant's.
    pub(super) fn account_in(&self, tenant: &Tenant, id: &AccountId) -> Option<&Account> {
        self.accounts.get(id).filter(|account| account.tenant == *tenant)
    }

    pub(super) fn open(&mut self, tenant: &Tenant, account: Account) {
        let id = account.id.clone();
        self.put_account(account.clone(), true);
        self.emit(tenant, EventKind::AccountOpened, Subject::Account(account), &[&id]);
    }

    pub(super) fn update_account(
        &mut self,
        tenant: &Tenant,
        update: &AccountUpdate,
    ) -> AccountResult {
        match self.check_update(tenant, update) {
            Err(rejection) => AccountResult::Rejected(rejection),
            Ok(None) => AccountResult::Updated(self.accounts[&update.id].clone()),
            Ok(Some(account)) => {
                self.put_account(account.clone(), false);
                self.emit(
                    tenant,
                    EventKind::AccountUpdated,
                    Subject::Account(account.clone()),
                    &[&update.id],
                );
                AccountResult::Updated(account)
            }
        }
    }

    /// The updated account, or `None` when the update changes nothing.
    pub(super) fn check_update(
        &self,
        tenant: &Tenant,
        update: &AccountUpdate,
    ) -> Check<Option<Account>> {
        let account = self.account_in(tenant, &update.id).ok_or_else(|| not_found(&update.id))?;
        let overdraft = update.overdraft.unwrap_or(account.overdraft);
        let status = update.status.unwrap_or(account.status);
        if overdraft == account.overdraft && status == account.status {
            return Ok(None);
        }
        if account.status == AccountStatus::Closed {
            return Err(Rejection::new(
                ErrorCode::AccountClosed,
                format!("account {} is closed", account.id.name()),
            ));
        }
        if account.kind == AccountKind::User && overdraft == Overdraft::Unbounded {
            return Err(Rejection::invalid("only system accounts may have an unbounded overdraft"));
        }
        // Lowering the limit below what the account already owes would break the invariant
        // that no available balance is below zero.
        if let Overdraft::Limited(limit) = overdraft
            && account.available_without_overdraft() + i128::from(limit) < 0
        {
            return Err(Rejection::invalid(format!(
                "overdraft limit {} {} is below what account {} already owes",
                format_minor(limit, account.currency),
                account.currency,
                account.id
            )));
        }
        if status == AccountStatus::Closed && account.balance != Balance::default() {
            return Err(Rejection::new(
                ErrorCode::AccountNotEmpty,
                format!(
                    "account {} can be closed only with a zero balance and no holds",
                    account.id
                ),
            ));
        }
        let mut updated = account.clone();
        updated.overdraft = overdraft;
        updated.status = status;
        updated.updated_at = self.now;
        Ok(Some(updated))
    }
}
