//! The journaled mutations, the only places that change the ledger's state, and the undo that
//! rolls a failed atomic step back.

use super::*;

impl Ledger<'_> {
    pub(super) fn put_account(&mut self, account: Account, is_new: bool) {
        let old = self.accounts.insert(account.id.clone(), account.clone());
        assert_eq!(old.is_none(), is_new);
        if is_new {
            self.opened.push(account.id.clone());
        } else {
            self.changed.push(account.id.clone());
        }
        if let Some(undo) = &mut self.undo {
            undo.push(Undo::Account(account.id, old));
        }
    }

    pub(super) fn put_transfer(&mut self, transfer: Transfer) {
        let id = transfer.id;
        let key = (transfer.tenant.clone(), transfer.idempotency_key.clone());
        let old = self.transfers.insert(id, transfer);
        if old.is_none() {
            self.inserted.push(id);
            let previous_key = self.keys.insert(key.clone(), id);
            assert!(previous_key.is_none(), "a key names one transfer");
            if let Some(undo) = &mut self.undo {
                undo.push(Undo::Key(key));
            }
        } else {
            self.updated.push(id);
        }
        if let Some(undo) = &mut self.undo {
            undo.push(Undo::Transfer(id, old));
        }
    }

    pub(super) fn emit(
        &mut self,
        tenant: &Tenant,
        kind: EventKind,
        subject: Subject,
        accounts: &[&AccountId],
    ) {
        // Every caller names at most a movement's two accounts.
        debug_assert!(accounts.len() <= Balances::MAX, "an event carries at most two balances");
        let mut balances = Balances::default();
        for account in accounts.iter().filter_map(|id| self.accounts.get(*id)) {
            if balances.push(BalanceSnapshot::of(account)).is_err() {
                break;
            }
        }
        let id = EventId(self.ids.next_ulid());
        self.events.push(Event {
            id,
            tenant: tenant.clone(),
            actor: self.actor.clone(),
            trace: self.trace.clone(),
            kind,
            at: self.now,
            subject,
            balances,
        });
    }

    pub(super) fn marks(&self) -> Marks {
        Marks {
            opened: self.opened.len(),
            changed: self.changed.len(),
            inserted: self.inserted.len(),
            updated: self.updated.len(),
            entries: self.entries.len(),
            events: self.events.len(),
            quotes_created: self.quotes_created.len(),
            quotes_used: self.quotes_used.len(),
        }
    }

    pub(super) fn put_quote(&mut self, quote: Quote) {
        let id = quote.id;
        let old = self.quotes.insert(id, quote);
        if old.is_none() {
            self.quotes_created.push(id);
        } else {
            self.quotes_used.push(id);
        }
        if let Some(undo) = &mut self.undo {
            undo.push(Undo::Quote(id, old));
        }
    }

    /// Runs `body` all or nothing: on an error every change it journaled is undone. Inside a
    /// linked request the request's own journal covers it.
    pub(super) fn atomically<T>(&mut self, body: impl FnOnce(&mut Self) -> Check<T>) -> Check<T> {
        if self.undo.is_some() {
            return body(self);
        }
        let marks = self.marks();
        self.undo = Some(Vec::new());
        let result = body(self);
        let undo = self.undo.take().expect("undo log is active");
        if result.is_err() {
            self.rollback(undo, marks);
        }
        result
    }

    pub(super) fn rollback(&mut self, undo: Vec<Undo>, marks: Marks) {
        for record in undo.into_iter().rev() {
            match record {
                Undo::Account(id, Some(old)) => {
                    self.accounts.insert(id, old);
                }
                Undo::Account(id, None) => {
                    self.accounts.remove(&id);
                }
                Undo::Transfer(id, Some(old)) => {
                    self.transfers.insert(id, old);
                }
                Undo::Transfer(id, None) => {
                    self.transfers.remove(&id);
                }
                Undo::Key(key) => {
                    self.keys.remove(&key);
                }
                Undo::Quote(id, Some(old)) => {
                    self.quotes.insert(id, old);
                }
                Undo::Quote(id, None) => {
                    self.quotes.remove(&id);
                }
            }
        }
        self.opened.truncate(marks.opened);
        self.changed.truncate(marks.changed);
        self.inserted.truncate(marks.inserted);
        self.updated.truncate(marks.updated);
        self.entries.truncate(marks.entries);
        self.events.truncate(marks.events);
        self.quotes_created.truncate(marks.quotes_created);
        self.quotes_used.truncate(marks.quotes_used);
    }
}
