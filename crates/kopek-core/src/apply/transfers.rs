//! Transfers: single and linked, moves, holds, captures, voids, expiry and declines.

use super::*;

impl Ledger<'_> {
    pub(super) fn create_transfers(
        &mut self,
        tenant: &Tenant,
        authority: &Authority,
        requests: &[TransferRequest],
        linking: Linking,
    ) -> Vec<TransferResult> {
        if requests.len() > limits::TRANSFERS_PER_REQUEST_MAX {
            let rejection = Rejection::invalid(format!(
                "a request holds at most {} transfers",
                limits::TRANSFERS_PER_REQUEST_MAX
            ));
            return requests.iter().map(|_| TransferResult::Rejected(rejection.clone())).collect();
        }
        match linking {
            Linking::Independent => requests
                .iter()
                .map(|request| self.transfer_once(tenant, authority, request))
                .collect(),
            Linking::Linked => self.transfer_linked(tenant, authority, requests),
        }
    }

    /// Refuses a transfer the sender may not make, before its key is looked at (so a key
    /// bound to a user cannot replay another user's transfer) and without recording it: a
    /// key bound to a user moves money only out of the user's own accounts (so makes no
    /// deposits) and resolves only the user's holds. Another user's account or hold answers
    /// as missing, so the key learns nothing of it.
    pub(super) fn permit_transfer(
        &self,
        tenant: &Tenant,
        authority: &Authority,
        request: &TransferRequest,
    ) -> Check<()> {
        let Some(user) = authority.user() else {
            return Ok(());
        };
        let owned = |id: &AccountId| {
            self.account_in(tenant, id)
                .is_some_and(|account| account.owner.as_deref() == Some(user.name()))
        };
        match &request.movement {
            Movement::Move { debit_account, .. } | Movement::Exchange { debit_account, .. } => {
                if debit_account.is_world() {
                    return Err(crate::authority::denied(
                        "a key bound to a user moves money only out of that user's accounts",
                    ));
                }
                if owned(debit_account) { Ok(()) } else { Err(not_found(debit_account)) }
            }
            Movement::Capture { pending_id, .. } | Movement::Void { pending_id } => {
                let payer = self
                    .transfers
                    .get(pending_id)
                    .filter(|hold| hold.tenant == *tenant)
                    .and_then(|hold| hold.debit_account.as_ref());
                if payer.is_some_and(owned) {
                    Ok(())
                } else {
                    Err(Rejection::new(
                        ErrorCode::PendingNotFound,
                        format!("no hold with id {pending_id}"),
                    ))
                }
            }
        }
    }

    pub(super) fn known(&self, tenant: &Tenant, key: &IdempotencyKey) -> Option<&Transfer> {
        let id = self.keys.get(&(tenant.clone(), key.clone()))?;
        self.transfers.get(id)
    }

    pub(super) fn transfer_once(
        &mut self,
        tenant: &Tenant,
        authority: &Authority,
        request: &TransferRequest,
    ) -> TransferResult {
        if let Err(rejection) = request
            .validate()
            .and_then(|()| check_effective_at(request, self.now))
            .and_then(|()| self.permit_transfer(tenant, authority, request))
        {
            return TransferResult::Rejected(rejection);
        }
        let fingerprint = request.fingerprint();
        if let Some(existing) = self.known(tenant, &request.idempotency_key) {
            return if existing.fingerprint == fingerprint {
                TransferResult::Replayed(existing.as_first_recorded())
            } else {
                TransferResult::Rejected(key_reused(&request.idempotency_key))
            };
        }
        match self.execute(tenant, request, &fingerprint) {
            Ok(transfer) => TransferResult::Committed(transfer),
            Err(rejection) => {
                TransferResult::Committed(self.decline(tenant, request, fingerprint, rejection))
            }
        }
    }

    pub(super) fn transfer_linked(
        &mut self,
        tenant: &Tenant,
        authority: &Authority,
        requests: &[TransferRequest],
    ) -> Vec<TransferResult> {
        if let Some(results) = self.linked_precheck(tenant, authority, requests) {
            return results;
        }
        let marks = self.marks();
        self.undo = Some(Vec::new());
        let mut committed = Vec::with_capacity(requests.len());
        let mut failure = None;
        for (index, request) in requests.iter().enumerate() {
            match self.execute(tenant, request, &request.fingerprint_linked()) {
                Ok(transfer) => committed.push(TransferResult::Committed(transfer)),
                Err(rejection) => {
                    failure = Some((index, rejection));
                    break;
                }
            }
        }
        let undo = self.undo.take().expect("undo log is active");
        let Some((failed_index, rejection)) = failure else {
            return committed;
        };
        self.rollback(undo, marks);
        requests
            .iter()
            .enumerate()
            .map(|(index, request)| {
                let reason = if index == failed_index {
                    rejection.clone()
                } else {
                    linked_failed(failed_index, &rejection)
                };
                TransferResult::Committed(self.decline(
                    tenant,
                    request,
                    request.fingerprint_linked(),
                    reason,
                ))
            })
            .collect()
    }

    /// Answers a linked request that must not execute: bad details, repeated keys, or keys
    /// already known (a full replay, or a reuse). `None` means: execute it.
    pub(super) fn linked_precheck(
        &self,
        tenant: &Tenant,
        authority: &Authority,
        requests: &[TransferRequest],
    ) -> Option<Vec<TransferResult>> {
        let fail_all = |culprit: usize, rejection: Rejection| -> Vec<TransferResult> {
            (0..requests.len())
                .map(|index| {
                    TransferResult::Rejected(if index == culprit {
                        rejection.clone()
                    } else {
                        linked_failed(culprit, &rejection)
                    })
                })
                .collect()
        };
        let mut seen = BTreeSet::new();
        for (index, request) in requests.iter().enumerate() {
            if let Err(rejection) = request
                .validate()
                .and_then(|()| check_effective_at(request, self.now))
                .and_then(|()| self.permit_transfer(tenant, authority, request))
            {
                return Some(fail_all(index, rejection));
            }
            if !seen.insert(&request.idempotency_key) {
                return Some(fail_all(
                    index,
                    Rejection::invalid("an idempotency key appears twice in one linked request"),
                ));
            }
        }
        let known: Vec<Option<&Transfer>> =
            requests.iter().map(|request| self.known(tenant, &request.idempotency_key)).collect();
        if known.iter().all(Option::is_none) {
            return None;
        }
        let mismatch = requests.iter().zip(&known).position(|(request, existing)| match existing {
            Some(existing) => existing.fingerprint != request.fingerprint_linked(),
            None => true,
        });
        Some(match mismatch {
            None => known
                .into_iter()
                .flatten()
                .map(|transfer| TransferResult::Replayed(transfer.as_first_recorded()))
                .collect(),
            Some(index) => {
                let rejection = match known[index] {
                    Some(_) => key_reused(&requests[index].idempotency_key),
                    None => Rejection::new(
                        ErrorCode::IdempotencyKeyReused,
                        "other keys of this linked request were already used by another request",
                    ),
                };
                fail_all(index, rejection)
            }
        })
    }

    pub(super) fn execute(
        &mut self,
        tenant: &Tenant,
        request: &TransferRequest,
        fingerprint: &Fingerprint,
    ) -> Check<Transfer> {
        match &request.movement {
            Movement::Move { .. } => {
                let plan = self.check_move(tenant, request)?;
                Ok(self.commit_move(tenant, request, fingerprint, plan))
            }
            Movement::Exchange { .. } => self.exchange(tenant, request, fingerprint),
            Movement::Capture { pending_id, amount } => {
                if let Some(legs) = self.exchange_legs(tenant, *pending_id)? {
                    return self.resolve_exchange(
                        tenant,
                        request,
                        fingerprint,
                        legs,
                        true,
                        *amount,
                    );
                }
                let plan = self.check_capture(tenant, *pending_id, *amount)?;
                Ok(self.commit_capture(tenant, request, fingerprint, plan))
            }
            Movement::Void { pending_id } => {
                if let Some(legs) = self.exchange_legs(tenant, *pending_id)? {
                    return self.resolve_exchange(tenant, request, fingerprint, legs, false, None);
                }
                let hold = self.check_pending(tenant, *pending_id)?.clone();
                Ok(self.commit_void(tenant, request, fingerprint, hold))
            }
        }
    }

    pub(super) fn check_move(&self, tenant: &Tenant, request: &TransferRequest) -> Check<MovePlan> {
        let Movement::Move {
            debit_account: debit_id,
            credit_account: credit_id,
            amount,
            currency,
            hold,
        } = &request.movement
        else {
            return Err(Rejection::new(ErrorCode::Internal, "check_move takes a move"));
        };
        let (currency, hold) = (*currency, *hold);
        // The world account's id is made only for the kinds that name it.
        let world = || AccountId::world_in(tenant, currency);
        match request.kind {
            TransferKind::Deposit if *debit_id != world() => {
                return Err(Rejection::invalid(format!(
                    "a deposit is debited from {}",
                    world().name()
                )));
            }
            TransferKind::Withdrawal if *credit_id != world() => {
                return Err(Rejection::invalid(format!(
                    "a withdrawal is credited to {}",
                    world().name()
                )));
            }
            _ => {}
        }
        let amount = Amount::new(*amount)?;
        if debit_id == credit_id {
            return Err(Rejection::new(
                ErrorCode::SameAccount,
                format!("debit and credit account are both {}", debit_id.name()),
            ));
        }
        // Accounts opened on first use: the request's own, and the currency's world account
        // for deposits and withdrawals. They open only if the transfer goes through.
        let mut templates: Vec<Account> =
            request.open_if_missing.iter().map(|new| self.new_account_from(tenant, new)).collect();
        if matches!(request.kind, TransferKind::Deposit | TransferKind::Withdrawal) {
            templates.push(world_account(tenant, currency, self.now));
        }
        // A payment moves money between customers: money outside the ledger is not a party
        // to it, so `world:` accounts are not found here.
        let hidden = |id: &AccountId| request.kind == TransferKind::Payment && id.is_world();
        let lookup = |id: &AccountId| -> Check<(Account, bool)> {
            if hidden(id) {
                return Err(not_found(id));
            }
            // Another tenant's account is not found, and is not opened over either.
            match self.accounts.get(id) {
                Some(account) if account.tenant == *tenant => Ok((account.clone(), false)),
                Some(_) => Err(not_found(id)),
                None => templates
                    .iter()
                    .find(|template| template.id == *id)
                    .map(|template| (template.clone(), true))
                    .ok_or_else(|| not_found(id)),
            }
        };
        let (mut debit, debit_opens) = lookup(debit_id)?;
        let (mut credit, credit_opens) = lookup(credit_id)?;
        let opened = [(debit_opens, &debit), (credit_opens, &credit)]
            .into_iter()
            .filter(|(opens, _)| *opens)
            .map(|(_, account)| account.clone())
            .collect();
        for account in [&debit, &credit] {
            if account.currency != currency {
                return Err(Rejection::new(
                    ErrorCode::CurrencyMismatch,
                    format!(
                        "account {} holds {}, not {currency}",
                        account.id.name(),
                        account.currency
                    ),
                ));
            }
        }
        check_status(&debit)?;
        check_status(&credit)?;
        if !debit.can_spend(amount.minor()) {
            let available = debit.available().unwrap_or_default();
            let available =
                i64::try_from(available).unwrap_or(if available < 0 { i64::MIN } else { i64::MAX });
            return Err(Rejection::new(
                ErrorCode::InsufficientFunds,
                format!(
                    "balance {} {currency} is less than {} {currency}",
                    format_minor(available, currency),
                    format_minor(amount.minor(), currency)
                ),
            ));
        }
        let minor = amount.minor();
        match hold {
            None => {
                debit.balance.posted = checked(debit.balance.posted.checked_sub(minor), &debit.id)?;
                credit.balance.posted =
                    checked(credit.balance.posted.checked_add(minor), &credit.id)?;
            }
            Some(_) => {
                debit.balance.pending_out =
                    checked(debit.balance.pending_out.checked_add(minor), &debit.id)?;
                credit.balance.pending_in =
                    checked(credit.balance.pending_in.checked_add(minor), &credit.id)?;
            }
        }
        debit.updated_at = self.now;
        credit.updated_at = self.now;
        Ok(MovePlan { debit, credit, amount, currency, hold, opened })
    }

    pub(super) fn commit_move(
        &mut self,
        tenant: &Tenant,
        request: &TransferRequest,
        fingerprint: &Fingerprint,
        plan: MovePlan,
    ) -> Transfer {
        let MovePlan { debit, credit, amount, currency, hold, opened } = plan;
        for account in opened {
            self.open(tenant, account);
        }
        let (action, status, expires_at) = match hold {
            None => (Action::Post, TransferStatus::Posted, None),
            Some(Hold { timeout_seconds }) => (
                Action::Hold,
                TransferStatus::Pending,
                timeout_seconds.map(|seconds| self.now.add_seconds(seconds)),
            ),
        };
        let transfer = self.new_transfer(
            tenant,
            request,
            fingerprint,
            action,
            status,
            &debit.id,
            &credit.id,
            amount.minor(),
            currency,
            None,
            expires_at,
        );
        if action == Action::Post {
            self.post_entries(&transfer, &debit, &credit, amount.minor(), currency);
        }
        if hold.is_none() {
            assert!(debit.can_spend(0), "a posted debit never passes the overdraft limit");
        }
        let (debit_id, credit_id) = (debit.id.clone(), credit.id.clone());
        self.put_account(debit, false);
        self.put_account(credit, false);
        self.put_transfer(transfer.clone());
        let kind =
            if action == Action::Post { EventKind::TransferPosted } else { EventKind::HoldPlaced };
        self.emit(tenant, kind, Subject::Transfer(transfer.clone()), &[&debit_id, &credit_id]);
        transfer
    }

    /// The hold a capture or void names, if it can still be resolved.
    pub(super) fn check_pending(
        &self,
        tenant: &Tenant,
        pending_id: TransferId,
    ) -> Check<&Transfer> {
        let hold = self
            .transfers
            .get(&pending_id)
            .filter(|transfer| {
                transfer.action == Action::Hold
                    && transfer.tenant == *tenant
                    && transfer.status != TransferStatus::Declined
            })
            .ok_or_else(|| {
                Rejection::new(ErrorCode::PendingNotFound, format!("no hold with id {pending_id}"))
            })?;
        if hold.status != TransferStatus::Pending {
            return Err(Rejection::new(
                ErrorCode::PendingAlreadyResolved,
                format!("hold {pending_id} is already {}", hold.status.as_str()),
            ));
        }
        if hold.expires_at.is_some_and(|expires_at| expires_at <= self.now) {
            return Err(Rejection::new(
                ErrorCode::PendingExpired,
                format!("hold {pending_id} has expired"),
            ));
        }
        Ok(hold)
    }

    pub(super) fn hold_accounts(&self, hold: &Transfer) -> Check<(Account, Account)> {
        let debit_id = hold.debit_account.as_ref().expect("a pending hold has accounts");
        let credit_id = hold.credit_account.as_ref().expect("a pending hold has accounts");
        let debit = self.accounts.get(debit_id).ok_or_else(|| not_found(debit_id))?;
        let credit = self.accounts.get(credit_id).ok_or_else(|| not_found(credit_id))?;
        Ok((debit.clone(), credit.clone()))
    }

    pub(super) fn check_capture(
        &self,
        tenant: &Tenant,
        pending_id: TransferId,
        amount: Option<Amount>,
    ) -> Check<CapturePlan> {
        let hold = self.check_pending(tenant, pending_id)?;
        let captured = amount.map_or(hold.amount, Amount::minor);
        let currency = hold.currency.expect("a pending hold has a currency");
        if captured > hold.amount {
            return Err(Rejection::new(
                ErrorCode::InvalidAmount,
                format!(
                    "capture of {} {currency} exceeds the held {} {currency}",
                    format_minor(captured, currency),
                    format_minor(hold.amount, currency)
                ),
            ));
        }
        let (mut debit, mut credit) = self.hold_accounts(hold)?;
        check_status(&debit)?;
        check_status(&credit)?;
        debit.balance.pending_out =
            checked(debit.balance.pending_out.checked_sub(hold.amount), &debit.id)?;
        credit.balance.pending_in =
            checked(credit.balance.pending_in.checked_sub(hold.amount), &credit.id)?;
        debit.balance.posted = checked(debit.balance.posted.checked_sub(captured), &debit.id)?;
        credit.balance.posted = checked(credit.balance.posted.checked_add(captured), &credit.id)?;
        debit.updated_at = self.now;
        credit.updated_at = self.now;
        Ok(CapturePlan { hold: hold.clone(), debit, credit, captured })
    }

    pub(super) fn commit_capture(
        &mut self,
        tenant: &Tenant,
        request: &TransferRequest,
        fingerprint: &Fingerprint,
        plan: CapturePlan,
    ) -> Transfer {
        let CapturePlan { mut hold, debit, credit, captured } = plan;
        let currency = hold.currency.expect("a pending hold has a currency");
        let capture = self.new_transfer(
            tenant,
            request,
            fingerprint,
            Action::Capture,
            TransferStatus::Posted,
            &debit.id,
            &credit.id,
            captured,
            currency,
            Some(hold.id),
            None,
        );
        self.post_entries(&capture, &debit, &credit, captured, currency);
        hold.status = TransferStatus::Captured;
        hold.captured_amount = captured;
        hold.updated_at = self.now;
        let (debit_id, credit_id) = (debit.id.clone(), credit.id.clone());
        self.put_account(debit, false);
        self.put_account(credit, false);
        self.put_transfer(hold);
        self.put_transfer(capture.clone());
        self.emit(
            tenant,
            EventKind::HoldCaptured,
            Subject::Transfer(capture.clone()),
            &[&debit_id, &credit_id],
        );
        capture
    }

    pub(super) fn commit_void(
        &mut self,
        tenant: &Tenant,
        request: &TransferRequest,
        fingerprint: &Fingerprint,
        hold: Transfer,
    ) -> Transfer {
        let currency = hold.currency.expect("a pending hold has a currency");
        let (debit, credit) = self.release(&hold);
        let void = self.new_transfer(
            tenant,
            request,
            fingerprint,
            Action::Void,
            TransferStatus::Voided,
            &debit,
            &credit,
            hold.amount,
            currency,
            Some(hold.id),
            None,
        );
        let mut hold = hold;
        hold.status = TransferStatus::Voided;
        hold.updated_at = self.now;
        self.put_transfer(hold);
        self.put_transfer(void.clone());
        self.emit(
            tenant,
            EventKind::HoldVoided,
            Subject::Transfer(void.clone()),
            &[&debit, &credit],
        );
        void
    }

    /// Frees what a hold reserved on both accounts; returns their ids.
    pub(super) fn release(&mut self, hold: &Transfer) -> (AccountId, AccountId) {
        let (mut debit, mut credit) =
            self.hold_accounts(hold).expect("a pending hold's accounts are loaded");
        // A pending hold's amount is inside both pending balances, so these cannot underflow.
        debit.balance.pending_out -= hold.amount;
        credit.balance.pending_in -= hold.amount;
        assert!(debit.balance.pending_out >= 0 && credit.balance.pending_in >= 0);
        debit.updated_at = self.now;
        credit.updated_at = self.now;
        let ids = (debit.id.clone(), credit.id.clone());
        self.put_account(debit, false);
        self.put_account(credit, false);
        ids
    }

    pub(super) fn expire(&mut self, pending_id: TransferId) -> Option<TransferId> {
        let hold = self.transfers.get(&pending_id)?;
        let due = hold.action == Action::Hold
            && hold.status == TransferStatus::Pending
            && hold.expires_at.is_some_and(|expires_at| expires_at <= self.now);
        if !due {
            return None;
        }
        let mut hold = hold.clone();
        let (debit, credit) = self.release(&hold);
        hold.status = TransferStatus::Expired;
        hold.updated_at = self.now;
        let tenant = hold.tenant.clone();
        self.put_transfer(hold.clone());
        self.emit(&tenant, EventKind::HoldExpired, Subject::Transfer(hold), &[&debit, &credit]);
        Some(pending_id)
    }

    pub(super) fn decline(
        &mut self,
        tenant: &Tenant,
        request: &TransferRequest,
        fingerprint: Fingerprint,
        rejection: Rejection,
    ) -> Transfer {
        let (action, debit, credit, amount, currency, pending_id) = match &request.movement {
            Movement::Move { debit_account, credit_account, amount, currency, hold } => {
                let action = if hold.is_some() { Action::Hold } else { Action::Post };
                (
                    action,
                    Some(debit_account.clone()),
                    Some(credit_account.clone()),
                    *amount,
                    Some(*currency),
                    None,
                )
            }
            Movement::Exchange { debit_account, credit_account, terms, hold } => {
                let action = if hold.is_some() { Action::Hold } else { Action::Post };
                let terms = match terms {
                    FxTerms::Quote(id) => self
                        .quotes
                        .get(id)
                        .filter(|quote| quote.tenant == *tenant)
                        .map(|quote| quote.terms.clone()),
                    FxTerms::Market(terms) => Some(terms.as_ref().clone()),
                };
                (
                    action,
                    Some(debit_account.clone()),
                    Some(credit_account.clone()),
                    terms.as_ref().map_or(0, |terms| terms.sell_amount),
                    terms.map(|terms| terms.from),
                    None,
                )
            }
            Movement::Capture { pending_id, amount } => {
                let hold = self.transfers.get(pending_id).filter(|hold| hold.tenant == *tenant);
                let amount =
                    amount.map(Amount::minor).or(hold.map(|hold| hold.amount)).unwrap_or(0);
                let (debit, credit, currency) = hold_sides(hold);
                (Action::Capture, debit, credit, amount, currency, Some(*pending_id))
            }
            Movement::Void { pending_id } => {
                let hold = self.transfers.get(pending_id).filter(|hold| hold.tenant == *tenant);
                let (debit, credit, currency) = hold_sides(hold);
                (
                    Action::Void,
                    debit,
                    credit,
                    hold.map_or(0, |hold| hold.amount),
                    currency,
                    Some(*pending_id),
                )
            }
        };
        let transfer = Transfer {
            id: TransferId(self.ids.next_ulid()),
            tenant: tenant.clone(),
            idempotency_key: request.idempotency_key.clone(),
            fingerprint,
            kind: request.kind,
            action,
            debit_account: debit,
            credit_account: credit,
            amount,
            currency,
            pending_id,
            status: TransferStatus::Declined,
            error: Some(rejection),
            expires_at: None,
            captured_amount: 0,
            details: request.details.clone(),
            effective_at: request.effective_at.unwrap_or(self.now),
            committed_at: self.now,
            updated_at: self.now,
            fx: None,
        };
        self.put_transfer(transfer.clone());
        self.emit(tenant, EventKind::TransferDeclined, Subject::Transfer(transfer.clone()), &[]);
        transfer
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn new_transfer(
        &mut self,
        tenant: &Tenant,
        request: &TransferRequest,
        fingerprint: &Fingerprint,
        action: Action,
        status: TransferStatus,
        debit: &AccountId,
        credit: &AccountId,
        amount: i64,
        currency: Currency,
        pending_id: Option<TransferId>,
        expires_at: Option<Timestamp>,
    ) -> Transfer {
        Transfer {
            id: TransferId(self.ids.next_ulid()),
            tenant: tenant.clone(),
            idempotency_key: request.idempotency_key.clone(),
            fingerprint: *fingerprint,
            kind: request.kind,
            action,
            debit_account: Some(debit.clone()),
            credit_account: Some(credit.clone()),
            amount,
            currency: Some(currency),
            pending_id,
            status,
            error: None,
            expires_at,
            captured_amount: 0,
            details: request.details.clone(),
            effective_at: request.effective_at.unwrap_or(self.now),
            committed_at: self.now,
            updated_at: self.now,
            fx: self.leg.clone().map(Box::new),
        }
    }

    /// Writes the two entries of a posted movement; `debit` and `credit` already carry the
    /// balances after it.
    pub(super) fn post_entries(
        &mut self,
        transfer: &Transfer,
        debit: &Account,
        credit: &Account,
        amount: i64,
        currency: Currency,
    ) {
        for (account, direction) in [(debit, Direction::Debit), (credit, Direction::Credit)] {
            self.entries.push(Entry {
                transfer_id: transfer.id,
                account_id: account.id.clone(),
                direction,
                amount,
                currency,
                balance_after: account.balance.posted,
                effective_at: transfer.effective_at,
                committed_at: self.now,
            });
        }
    }
}
