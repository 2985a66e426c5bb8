//! `MemoryLedger`: the whole ledger in maps, for tests, property checks and the simulator.
//! It loads a batch's `State` the way a store does and absorbs the `Outcome` afterwards.

use crate::account::Account;
use crate::apply::{Batch, Keys, Outcome, State, apply};
use crate::event::Event;
use crate::fx::{FxRate, Quote};
use crate::ids::{AccountId, IdSource, IdempotencyKey, QuoteId, Tenant, TransferId};
use crate::time::Timestamp;
use crate::transfer::{Entry, Transfer};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default)]
pub struct MemoryLedger {
    pub accounts: BTreeMap<AccountId, Account>,
    pub transfers: BTreeMap<TransferId, Transfer>,
    pub keys: BTreeMap<(Tenant, IdempotencyKey), TransferId>,
    pub entries: Vec<Entry>,
    pub events: Vec<Event>,
    pub users: BTreeMap<crate::UserId, crate::User>,
    pub orders: BTreeMap<crate::OrderId, crate::Order>,
    pub last_user_number: u64,
    /// Every rate set, in order.
    pub rates: Vec<FxRate>,
    pub quotes: BTreeMap<QuoteId, Quote>,
}

impl MemoryLedger {
    /// The state a store would load for `keys`, following the same rules.
    pub fn load(&self, keys: &Keys) -> State {
        let mut transfers = BTreeMap::new();
        let by_key = keys.idempotency_keys.iter().filter_map(|key| self.keys.get(key));
        for id in by_key.chain(keys.transfer_ids.iter()) {
            if let Some(transfer) = self.transfers.get(id) {
                transfers.insert(*id, transfer.clone());
            }
        }
        // The other records of every conversion a loaded transfer belongs to.
        let conversions: Vec<QuoteId> = transfers
            .values()
            .filter_map(|t: &Transfer| t.fx.as_ref().map(|fx| fx.quote_id))
            .collect();
        for transfer in self.transfers.values() {
            if transfer.fx.as_ref().is_some_and(|fx| conversions.contains(&fx.quote_id)) {
                transfers.insert(transfer.id, transfer.clone());
            }
        }
        let quotes: BTreeMap<QuoteId, Quote> = self
            .quotes
            .values()
            .filter(|quote| {
                keys.quotes.contains(&quote.id)
                    || quote.idempotency_key.as_ref().is_some_and(|key| {
                        keys.quote_keys.contains(&(quote.tenant.clone(), key.clone()))
                    })
            })
            .map(|quote| (quote.id, quote.clone()))
            .collect();
        let mut account_ids = keys.accounts.clone();
        for quote in quotes.values() {
            account_ids.extend(Keys::quote_accounts(quote));
        }
        for transfer in transfers.values() {
            account_ids.extend(transfer.debit_account.iter().cloned());
            account_ids.extend(transfer.credit_account.iter().cloned());
        }
        for (offset, (tenant, currency)) in keys.allocated_users.iter().enumerate() {
            account_ids.insert(
                crate::UserId::from_number(self.last_user_number + 1 + offset as u64)
                    .in_tenant(tenant)
                    .account(*currency),
            );
        }
        let accounts = account_ids.iter().filter_map(|id| self.accounts.get(id).cloned());
        let mut state = State::new(accounts, transfers.into_values());
        state.users = keys
            .users
            .iter()
            .filter_map(|id| self.users.get(id).map(|user| (id.clone(), user.clone())))
            .collect();
        state.orders = keys
            .orders
            .iter()
            .filter_map(|id| self.orders.get(id).map(|order| (id.clone(), order.clone())))
            .collect();
        state.last_user_number = self.last_user_number;
        state.quotes = quotes;
        for rate in &self.rates {
            let pair = (rate.tenant.clone(), rate.base, rate.quote);
            if keys.rate_pairs.contains(&pair) {
                let newer =
                    state.rates.get(&pair).is_none_or(|old| rate.valid_from >= old.valid_from);
                if newer {
                    state.rates.insert(pair, rate.clone());
                }
            }
        }
        state
    }

    pub fn absorb(&mut self, outcome: &Outcome) {
        for account in outcome.accounts_opened.iter().chain(&outcome.accounts_changed) {
            self.accounts.insert(account.id.clone(), account.clone());
        }
        for transfer in outcome.transfers_inserted.iter().chain(&outcome.transfers_updated) {
            self.keys
                .insert((transfer.tenant.clone(), transfer.idempotency_key.clone()), transfer.id);
            self.transfers.insert(transfer.id, transfer.clone());
        }
        for user in &outcome.users_created {
            self.users.insert(user.id.clone(), user.clone());
        }
        for order in outcome.orders_created.iter().chain(&outcome.orders_changed) {
            self.orders.insert(order.id.clone(), order.clone());
        }
        if let Some(number) = outcome.last_user_number {
            self.last_user_number = number;
        }
        self.rates.extend(outcome.rates_set.iter().cloned());
        for quote in outcome.quotes_created.iter().chain(&outcome.quotes_used) {
            self.quotes.insert(quote.id, quote.clone());
        }
        self.entries.extend(outcome.entries.iter().cloned());
        self.events.extend(outcome.events.iter().cloned());
    }

    /// Loads, applies and absorbs one batch.
    pub fn execute(&mut self, batch: &Batch, now: Timestamp, ids: &mut dyn IdSource) -> Outcome {
        let state = self.load(&batch.keys());
        let outcome = apply(state, batch, now, ids);
        self.absorb(&outcome);
        outcome
    }

    pub fn transfer_by_key(&self, tenant: &Tenant, key: &IdempotencyKey) -> Option<&Transfer> {
        self.keys.get(&(tenant.clone(), key.clone())).and_then(|id| self.transfers.get(id))
    }
}

/// Ids from a counter: deterministic and increasing, for tests and the simulator.
#[derive(Clone, Debug, Default)]
pub struct SequentialIds {
    next: u128,
}

impl IdSource for SequentialIds {
    fn next_ulid(&mut self) -> crate::Ulid {
        self.next += 1;
        crate::Ulid::from_u128(self.next)
    }
}
