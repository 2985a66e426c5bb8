//! `MemoryLedger`: the whole ledger in maps, for tests, property checks and the simulator.
//! It loads a batch's `State` the way a store does and absorbs the `Outcome` afterwards.

use crate::account::Account;
use crate::apply::{Batch, Keys, Outcome, State, apply};
use crate::event::Event;
use crate::ids::{AccountId, IdSource, IdempotencyKey, Tenant, TransferId};
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
        let mut account_ids = keys.accounts.clone();
        for transfer in transfers.values() {
            account_ids.extend(transfer.debit_account.iter().cloned());
            account_ids.extend(transfer.credit_account.iter().cloned());
        }
        let accounts = account_ids.iter().filter_map(|id| self.accounts.get(id).cloned());
        State::new(accounts, transfers.into_values())
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
