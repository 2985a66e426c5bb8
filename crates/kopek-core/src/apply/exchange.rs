//! Currency conversion inside `apply`: rates, quotes, and transfers between accounts of two
//! currencies.
//!
//! A cross-currency transfer of `terms` from a payer in A to a payee in B commits as linked
//! legs, each an ordinary single-currency transfer record:
//! 1. payer -> `fx:A`, `sell_amount` A (the request's own key and kind: the record callers see);
//! 2. `fx:B` -> payee, `buy_amount` B (key `fx:<quote>:credit`, kind `fx_leg`);
//! 3. `fx:B` -> `fx-revenue:B`, `spread_amount` B, when there is a spread (`fx:<quote>:spread`).
//!
//! Every leg carries the conversion (`Transfer::fx`): quote id, terms, rates and path. The
//! liquidity and revenue accounts open on first use (`fx:` with no limit, `fx-revenue:` with
//! none needed); an admin who opens `fx:<CUR>` first gives it a limit, and a leg that would
//! pass it fails the whole transfer with `INSUFFICIENT_FUNDS`.
//!
//! Checks after idempotency, first failure wins: deposits and withdrawals cannot convert
//! (`INVALID_ARGUMENT`); the quote exists in the tenant (`NOT_FOUND`), is unused and live
//! (`QUOTE_EXPIRED`); `SAME_ACCOUNT`; `ACCOUNT_NOT_FOUND` (payer, then payee; they are not
//! opened on first use); `CURRENCY_MISMATCH` (payer's currency against the quote's source,
//! payee's against its target); then each leg's own checks in order (status, funds, overflow).
//!
//! A held conversion holds every leg. Capturing or voiding the debit leg resolves all of them
//! at once, with exactly the amounts held, whatever the rates did since; a capture is of the
//! whole hold. The other legs cannot be resolved on their own.

use super::{Check, Ledger, MovePlan, key_reused, not_found};
use crate::account::{AccountKind, NewAccount, Overdraft};
use crate::apply::{QuoteResult, RateResult};
use crate::error::{ErrorCode, Rejection};
use crate::event::{EventKind, Subject};
use crate::fx::{
    FxLeg, FxRate, FxTerms, LegRole, NewQuote, Quote, RateSet, SPREAD_BASIS_POINTS_MAX, Terms,
    liquidity_account, revenue_account,
};
use crate::ids::{IdempotencyKey, QuoteId, Tenant};
use crate::limits;
use crate::money::Amount;
use crate::transfer::{
    Action, Fingerprint, Movement, Transfer, TransferKind, TransferRequest, TransferStatus,
};

impl Ledger<'_> {
    pub(super) fn set_rate(&mut self, tenant: &Tenant, request: &RateSet) -> RateResult {
        if let Err(rejection) = request.validate() {
            return RateResult::Rejected(rejection);
        }
        let valid_from = request.valid_from.unwrap_or(self.now);
        let pair = (tenant.clone(), request.base, request.quote);
        if let Some(latest) = self.rates.get(&pair) {
            let later = request.valid_from.is_none_or(|at| at >= latest.valid_from);
            if latest.rate == request.rate && latest.source == request.source && later {
                return RateResult::Unchanged(latest.clone());
            }
            if valid_from <= latest.valid_from {
                return RateResult::Rejected(Rejection::invalid(format!(
                    "{}/{} already has a rate valid from {}: rates of a pair are set in time order",
                    request.base,
                    request.quote,
                    latest.valid_from.to_rfc3339()
                )));
            }
        }
        let rate = FxRate {
            tenant: tenant.clone(),
            base: request.base,
            quote: request.quote,
            rate: request.rate,
            source: request.source.clone(),
            valid_from,
            set_at: self.now,
        };
        self.rates.insert(pair, rate.clone());
        self.rates_set.push(rate.clone());
        self.emit(tenant, EventKind::RateUpdated, Subject::Rate(rate.clone()), &[]);
        RateResult::Set(rate)
    }

    pub(super) fn create_quote(&mut self, tenant: &Tenant, request: &NewQuote) -> QuoteResult {
        if let Err(rejection) = request.validate().and_then(|()| check_terms(&request.terms)) {
            return QuoteResult::Rejected(rejection);
        }
        let existing = self.quotes.values().find(|quote| {
            quote.tenant == *tenant
                && quote.idempotency_key.as_ref() == Some(&request.idempotency_key)
        });
        if let Some(existing) = existing {
            let (old, new) = (&existing.terms, &request.terms);
            let same = old.from == new.from
                && old.to == new.to
                && old.side == new.side
                && old.requested_amount() == new.requested_amount();
            return if same {
                QuoteResult::Existed(existing.clone())
            } else {
                QuoteResult::Rejected(key_reused(&request.idempotency_key))
            };
        }
        let quote = Quote {
            id: QuoteId(self.ids.next_ulid()),
            tenant: tenant.clone(),
            idempotency_key: Some(request.idempotency_key.clone()),
            terms: request.terms.clone(),
            created_at: self.now,
            expires_at: self.now.add_seconds(request.ttl_seconds),
            used_by: None,
            used_at: None,
        };
        self.put_quote(quote.clone());
        self.emit(tenant, EventKind::QuoteCreated, Subject::Quote(quote.clone()), &[]);
        QuoteResult::Created(quote)
    }

    /// Executes a cross-currency transfer: its quote's legs, all or none.
    pub(super) fn exchange(
        &mut self,
        tenant: &Tenant,
        request: &TransferRequest,
        fingerprint: &Fingerprint,
    ) -> Check<Transfer> {
        let Movement::Exchange { debit_account, credit_account, terms, hold } = &request.movement
        else {
            return Err(Rejection::new(ErrorCode::Internal, "exchange takes an exchange"));
        };
        if matches!(request.kind, TransferKind::Deposit | TransferKind::Withdrawal) {
            return Err(Rejection::invalid(format!(
                "a {} moves one currency; convert with a transfer",
                request.kind.as_str()
            )));
        }
        let quote = match terms {
            FxTerms::Quote(id) => self.live_quote(tenant, *id)?,
            FxTerms::Market(terms) => {
                check_terms(terms)?;
                Quote {
                    id: QuoteId(self.ids.next_ulid()),
                    tenant: tenant.clone(),
                    idempotency_key: None,
                    terms: terms.as_ref().clone(),
                    created_at: self.now,
                    expires_at: self.now,
                    used_by: None,
                    used_at: None,
                }
            }
        };
        if debit_account == credit_account {
            return Err(Rejection::new(
                ErrorCode::SameAccount,
                format!("debit and credit account are both {}", debit_account.name()),
            ));
        }
        let terms = &quote.terms;
        // Both accounts are found before either currency is compared, as for any transfer.
        let payer =
            self.account_in(tenant, debit_account).ok_or_else(|| not_found(debit_account))?;
        let payee =
            self.account_in(tenant, credit_account).ok_or_else(|| not_found(credit_account))?;
        for (account, currency, side) in [(payer, terms.from, "sells"), (payee, terms.to, "buys")] {
            let id = account.id.name();
            if account.currency != currency {
                return Err(Rejection::new(
                    ErrorCode::CurrencyMismatch,
                    format!(
                        "account {id} holds {}, but the quote {side} {currency}",
                        account.currency
                    ),
                ));
            }
        }
        let leg = |role| FxLeg {
            quote_id: quote.id,
            role,
            payer: debit_account.clone(),
            payee: credit_account.clone(),
            terms: terms.clone(),
        };
        let (from_pool, to_pool) =
            (liquidity_account(tenant, terms.from), liquidity_account(tenant, terms.to));
        let revenue = revenue_account(tenant, terms.to);
        let mut legs = vec![
            (leg(LegRole::Debit), debit_account.clone(), from_pool, terms.sell_amount, terms.from),
            (
                leg(LegRole::Credit),
                to_pool.clone(),
                credit_account.clone(),
                terms.buy_amount,
                terms.to,
            ),
        ];
        if terms.spread_amount > 0 {
            legs.push((leg(LegRole::Spread), to_pool, revenue, terms.spread_amount, terms.to));
        }
        let hold = *hold;
        let mut quote = quote;
        self.atomically(|ledger| {
            let mut first = None;
            for (leg, debit, credit, amount, currency) in legs {
                let role = leg.role;
                let leg_request = match role {
                    LegRole::Debit => TransferRequest {
                        movement: Movement::Move {
                            debit_account: debit,
                            credit_account: credit,
                            amount,
                            currency,
                            hold,
                        },
                        open_if_missing: vec![pool_account(tenant, currency, role)],
                        ..request.clone()
                    },
                    LegRole::Credit | LegRole::Spread => TransferRequest {
                        idempotency_key: leg_key(quote.id, role.as_str()),
                        kind: TransferKind::FxLeg,
                        movement: Movement::Move {
                            debit_account: debit,
                            credit_account: credit.clone(),
                            amount,
                            currency,
                            hold,
                        },
                        details: request.details.clone(),
                        effective_at: request.effective_at,
                        open_if_missing: std::iter::once(pool_account(
                            tenant,
                            currency,
                            LegRole::Credit,
                        ))
                        .chain(
                            (role == LegRole::Spread).then(|| pool_account(tenant, currency, role)),
                        )
                        .collect(),
                        fingerprint_extra: String::new(),
                    },
                };
                let leg_fingerprint = match role {
                    LegRole::Debit => *fingerprint,
                    _ => leg_fingerprint(quote.id, role.as_str()),
                };
                let plan: MovePlan = ledger.check_move(tenant, &leg_request).map_err(|rejection| {
                    if role == LegRole::Debit {
                        return rejection;
                    }
                    let Movement::Move { debit_account, credit_account, .. } = &leg_request.movement
                    else {
                        return rejection;
                    };
                    Rejection::new(
                        rejection.code,
                        format!(
                            "the {} leg of the conversion ({debit_account} -> {credit_account}) \
                             failed: {}",
                            role.as_str(),
                            rejection.message
                        ),
                    )
                })?;
                ledger.leg = Some(leg);
                let transfer = ledger.commit_move(tenant, &leg_request, &leg_fingerprint, plan);
                ledger.leg = None;
                first.get_or_insert(transfer);
            }
            let first = first.expect("a conversion has a debit leg");
            quote.used_by = Some(first.id);
            quote.used_at = Some(ledger.now);
            let is_new = !ledger.quotes.contains_key(&quote.id);
            ledger.put_quote(quote.clone());
            if is_new {
                ledger.emit(tenant, EventKind::QuoteCreated, Subject::Quote(quote), &[]);
            }
            Ok(first)
        })
    }

    /// The quote `id` of the tenant, if a transfer may still use it.
    fn live_quote(&self, tenant: &Tenant, id: QuoteId) -> Check<Quote> {
        let quote = self
            .quotes
            .get(&id)
            .filter(|quote| quote.tenant == *tenant)
            .ok_or_else(|| Rejection::new(ErrorCode::NotFound, format!("no quote {id}")))?;
        if let Some(transfer) = quote.used_by {
            return Err(Rejection::new(
                ErrorCode::QuoteExpired,
                format!("quote {id} was already used by transfer {transfer}"),
            ));
        }
        if quote.expires_at <= self.now {
            return Err(Rejection::new(
                ErrorCode::QuoteExpired,
                format!("quote {id} expired at {}", quote.expires_at.to_rfc3339()),
            ));
        }
        Ok(quote.clone())
    }

    /// The held legs of the conversion whose debit leg is `pending_id`, debit leg first;
    /// `None` when `pending_id` is not a leg of a conversion.
    pub(super) fn exchange_legs(
        &self,
        tenant: &Tenant,
        pending_id: crate::ids::TransferId,
    ) -> Check<Option<Vec<Transfer>>> {
        let Some(hold) = self.transfers.get(&pending_id).filter(|hold| hold.tenant == *tenant)
        else {
            return Ok(None);
        };
        let Some(fx) = hold.fx.as_deref().filter(|_| hold.action == Action::Hold) else {
            return Ok(None);
        };
        if fx.role != LegRole::Debit {
            // The transfers are a hash map: the smallest id, not the first found.
            let debit_leg = self
                .transfers
                .values()
                .filter(|other| {
                    other.action == Action::Hold
                        && other.fx.as_deref().is_some_and(|other| {
                            other.quote_id == fx.quote_id && other.role == LegRole::Debit
                        })
                })
                .min_by_key(|leg| leg.id);
            return Err(Rejection::invalid(format!(
                "hold {pending_id} is the {} leg of a conversion; capture or void its debit leg{}",
                fx.role.as_str(),
                debit_leg.map(|leg| format!(" {}", leg.id)).unwrap_or_default()
            )));
        }
        let mut legs: Vec<Transfer> = self
            .transfers
            .values()
            .filter(|other| {
                other.action == Action::Hold
                    && other.status != TransferStatus::Declined
                    && other.fx.as_deref().is_some_and(|other| other.quote_id == fx.quote_id)
            })
            .cloned()
            .collect();
        // By role, then id: the transfers are a hash map, so the order found is arbitrary.
        legs.sort_by_key(|leg| (leg.fx.as_deref().map(|fx| fx.role as u8), leg.id));
        Ok(Some(legs))
    }

    /// Captures (in full) or voids every held leg of a conversion, all or none.
    pub(super) fn resolve_exchange(
        &mut self,
        tenant: &Tenant,
        request: &TransferRequest,
        fingerprint: &Fingerprint,
        legs: Vec<Transfer>,
        capture: bool,
        amount: Option<Amount>,
    ) -> Check<Transfer> {
        let debit_leg = &legs[0];
        if let Some(amount) = amount
            && amount.minor() != debit_leg.amount
        {
            return Err(Rejection::invalid(format!(
                "hold {} is a conversion: it is captured in full or voided",
                debit_leg.id
            )));
        }
        let what = if capture { "capture" } else { "void" };
        self.atomically(|ledger| {
            let mut first = None;
            for leg in legs {
                let fx = leg.fx.as_deref().cloned().expect("a conversion's leg has its conversion");
                let role = fx.role;
                let leg_request = if role == LegRole::Debit {
                    request.clone()
                } else {
                    TransferRequest {
                        idempotency_key: leg_key(fx.quote_id, &format!("{}:{what}", role.as_str())),
                        kind: TransferKind::FxLeg,
                        movement: if capture {
                            Movement::Capture { pending_id: leg.id, amount: None }
                        } else {
                            Movement::Void { pending_id: leg.id }
                        },
                        details: request.details.clone(),
                        effective_at: request.effective_at,
                        open_if_missing: Vec::new(),
                        fingerprint_extra: String::new(),
                    }
                };
                let leg_fingerprint = if role == LegRole::Debit {
                    *fingerprint
                } else {
                    leg_fingerprint(fx.quote_id, &format!("{}:{what}", role.as_str()))
                };
                let transfer = if capture {
                    let plan = ledger.check_capture(tenant, leg.id, None)?;
                    ledger.leg = Some(fx);
                    ledger.commit_capture(tenant, &leg_request, &leg_fingerprint, plan)
                } else {
                    let hold = ledger.check_pending(tenant, leg.id)?.clone();
                    ledger.leg = Some(fx);
                    ledger.commit_void(tenant, &leg_request, &leg_fingerprint, hold)
                };
                ledger.leg = None;
                first.get_or_insert(transfer);
            }
            Ok(first.expect("a conversion has a debit leg"))
        })
    }
}

/// The key of a conversion's own records: `fx:<quote>:<what>`, in the reserved `fx` scope.
fn leg_key(quote: QuoteId, what: &str) -> IdempotencyKey {
    IdempotencyKey::scoped("fx", &format!("{quote}:{what}")).expect("a valid key")
}

fn leg_fingerprint(quote: QuoteId, what: &str) -> Fingerprint {
    use std::fmt::Write as _;
    let mut hasher = crate::transfer::FingerprintHasher::default();
    // Writing to a hash cannot fail.
    let _ = write!(hasher, "v1|fx_leg|{quote}|{what}");
    hasher.finish()
}

/// The system account a leg opens on first use: the currency's liquidity account (no limit
/// until an admin gives it one) or its revenue account.
fn pool_account(tenant: &Tenant, currency: crate::money::Currency, role: LegRole) -> NewAccount {
    let (id, overdraft) = match role {
        LegRole::Spread => (revenue_account(tenant, currency), Overdraft::NONE),
        LegRole::Debit | LegRole::Credit => {
            (liquidity_account(tenant, currency), Overdraft::Unbounded)
        }
    };
    NewAccount {
        id,
        currency,
        owner: None,
        kind: AccountKind::System,
        overdraft,
        metadata: Default::default(),
    }
}

/// Terms priced outside the core must hang together: two ISO currencies, positive amounts
/// within bounds, and the spread equal to what the mid rate gives beyond the buy amount.
fn check_terms(terms: &Terms) -> Check<()> {
    let invalid = |why: &str| Err(Rejection::invalid(format!("the conversion's terms {why}")));
    if terms.from == terms.to || !terms.from.is_iso() || !terms.to.is_iso() {
        return invalid("need two ISO 4217 currencies");
    }
    let amounts = [terms.sell_amount, terms.buy_amount, terms.mid_amount];
    if amounts.iter().any(|amount| !(1..=limits::AMOUNT_MINOR_MAX).contains(amount)) {
        return invalid("need amounts of 1 to 10^15 minor units");
    }
    if terms.spread_bp > SPREAD_BASIS_POINTS_MAX
        || terms.mid_amount.checked_sub(terms.buy_amount) != Some(terms.spread_amount)
        || terms.spread_amount < 0
    {
        return invalid("have a spread that does not add up");
    }
    Ok(())
}
