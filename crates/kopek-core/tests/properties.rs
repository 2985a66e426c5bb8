//! Property tests of `apply` over random batches: books balance per currency, no balance
//! passes its limit, replaying a batch changes nothing, linked requests are all or none.

use kopek_core::memory::{MemoryLedger, SequentialIds};
use kopek_core::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

const ACCOUNTS: [(&str, &str, i64); 6] = [
    ("a", "USD", 0),
    ("b", "USD", 500),
    ("c", "USD", 0),
    ("d", "EUR", 0),
    ("e", "EUR", 1_000),
    ("ghost", "USD", 0),
];

/// One random operation; indexes pick accounts and earlier holds.
#[derive(Clone, Debug)]
enum Op {
    Deposit { account: usize, amount: i64 },
    Move { debit: usize, credit: usize, amount: i64, hold: bool, eur: bool },
    Capture { hold: usize, amount: Option<i64> },
    Void { hold: usize },
    Linked { moves: Vec<(usize, usize, i64)> },
    Freeze { account: usize, frozen: bool },
}

fn op() -> impl Strategy<Value = Op> {
    let index = 0..ACCOUNTS.len();
    prop_oneof![
        (index.clone(), 1i64..5_000).prop_map(|(account, amount)| Op::Deposit { account, amount }),
        (index.clone(), index.clone(), 1i64..3_000, any::<bool>(), any::<bool>()).prop_map(
            |(debit, credit, amount, hold, eur)| Op::Move { debit, credit, amount, hold, eur }
        ),
        (0usize..8, proptest::option::of(1i64..3_000))
            .prop_map(|(hold, amount)| Op::Capture { hold, amount }),
        (0usize..8).prop_map(|hold| Op::Void { hold }),
        proptest::collection::vec((index.clone(), index.clone(), 1i64..2_000), 1..4)
            .prop_map(|moves| Op::Linked { moves }),
        (index, proptest::bool::weighted(0.3))
            .prop_map(|(account, frozen)| Op::Freeze { account, frozen }),
    ]
}

struct World {
    ledger: MemoryLedger,
    ids: SequentialIds,
    now: Timestamp,
    tenant: Tenant,
    holds: Vec<TransferId>,
    next_key: u64,
}

impl World {
    fn new() -> World {
        let mut world = World {
            ledger: MemoryLedger::default(),
            ids: SequentialIds::default(),
            now: Timestamp::from_unix_micros(1_700_000_000_000_000),
            tenant: Tenant::default_tenant(),
            holds: Vec::new(),
            next_key: 0,
        };
        let accounts = ACCOUNTS
            .iter()
            .filter(|(id, _, _)| *id != "ghost")
            .map(|(id, currency, limit)| {
                let mut account = NewAccount::user(account_id(id), currency_of(currency));
                account.overdraft = Overdraft::limited(*limit).expect("limit");
                account
            })
            .collect();
        world.run(vec![CommandBody::CreateAccounts(accounts)]);
        world
    }

    fn key(&mut self) -> IdempotencyKey {
        self.next_key += 1;
        IdempotencyKey::parse(&format!("k{}", self.next_key)).expect("key")
    }

    fn request(&mut self, movement: Movement, kind: TransferKind) -> TransferRequest {
        TransferRequest {
            idempotency_key: self.key(),
            kind,
            movement,
            details: Details::default(),
            effective_at: None,
            open_if_missing: Vec::new(),
            fingerprint_extra: String::new(),
        }
    }

    fn body(&mut self, op: &Op) -> CommandBody {
        let single = |request| CommandBody::CreateTransfers {
            transfers: vec![request],
            linking: Linking::Independent,
        };
        match op {
            Op::Deposit { account, amount } => {
                let currency = currency_of(ACCOUNTS[*account].1);
                let movement = moves(
                    AccountId::world(currency),
                    account_id(ACCOUNTS[*account].0),
                    *amount,
                    currency,
                    false,
                );
                single(self.request(movement, TransferKind::Deposit))
            }
            Op::Move { debit, credit, amount, hold, eur } => {
                let currency = currency_of(if *eur { "EUR" } else { "USD" });
                let movement = moves(
                    account_id(ACCOUNTS[*debit].0),
                    account_id(ACCOUNTS[*credit].0),
                    *amount,
                    currency,
                    *hold,
                );
                single(self.request(movement, TransferKind::Transfer))
            }
            Op::Capture { hold, amount } => {
                let pending_id = self.hold(*hold);
                let amount = amount.map(|minor| Amount::new(minor).expect("positive"));
                single(
                    self.request(Movement::Capture { pending_id, amount }, TransferKind::Transfer),
                )
            }
            Op::Void { hold } => {
                let pending_id = self.hold(*hold);
                single(self.request(Movement::Void { pending_id }, TransferKind::Transfer))
            }
            Op::Linked { moves: legs } => {
                let transfers = legs
                    .iter()
                    .map(|(debit, credit, amount)| {
                        let currency = currency_of(ACCOUNTS[*debit].1);
                        let movement = moves(
                            account_id(ACCOUNTS[*debit].0),
                            account_id(ACCOUNTS[*credit].0),
                            *amount,
                            currency,
                            false,
                        );
                        self.request(movement, TransferKind::Transfer)
                    })
                    .collect();
                CommandBody::CreateTransfers { transfers, linking: Linking::Linked }
            }
            Op::Freeze { account, frozen } => CommandBody::UpdateAccount(AccountUpdate {
                id: account_id(ACCOUNTS[*account].0),
                overdraft: None,
                status: Some(if *frozen { AccountStatus::Frozen } else { AccountStatus::Active }),
            }),
        }
    }

    fn hold(&self, index: usize) -> TransferId {
        self.holds
            .get(index % self.holds.len().max(1))
            .copied()
            .unwrap_or(TransferId(Ulid::from_u128(7)))
    }

    fn run(&mut self, bodies: Vec<CommandBody>) -> (Batch, Outcome) {
        self.now = Timestamp::from_unix_micros(self.now.as_unix_micros() + 1_000);
        let commands = bodies
            .into_iter()
            .map(|body| Command::new(self.tenant.clone(), kopek_core::Authority::Ledger, body))
            .collect();
        let batch = Batch { commands };
        let outcome = self.ledger.execute(&batch, self.now, &mut self.ids);
        for transfer in &outcome.transfers_inserted {
            if transfer.status == TransferStatus::Pending {
                self.holds.push(transfer.id);
            }
        }
        (batch, outcome)
    }

    fn check_books(&self) -> Result<(), TestCaseError> {
        let mut posted_by_currency: BTreeMap<Currency, i128> = BTreeMap::new();
        for account in self.ledger.accounts.values() {
            *posted_by_currency.entry(account.currency).or_default() +=
                i128::from(account.balance.posted);
            prop_assert!(
                account.available().is_none_or(|available| available >= 0),
                "{account:?} passed its limit"
            );
            let from_entries: i64 = self
                .ledger
                .entries
                .iter()
                .filter(|entry| entry.account_id == account.id)
                .map(Entry::signed_amount)
                .sum();
            prop_assert_eq!(from_entries, account.balance.posted);
            let held: i64 = self
                .ledger
                .transfers
                .values()
                .filter(|t| {
                    t.status == TransferStatus::Pending
                        && t.debit_account.as_ref() == Some(&account.id)
                })
                .map(|t| t.amount)
                .sum();
            prop_assert_eq!(held, account.balance.pending_out);
        }
        for (currency, total) in posted_by_currency {
            prop_assert_eq!(total, 0, "posted balances of {} must sum to zero", currency);
        }
        Ok(())
    }
}

fn moves(
    debit: AccountId,
    credit: AccountId,
    amount: i64,
    currency: Currency,
    hold: bool,
) -> Movement {
    Movement::Move {
        debit_account: debit,
        credit_account: credit,
        amount,
        currency,
        hold: hold.then_some(Hold { timeout_seconds: None }),
    }
}

fn account_id(text: &str) -> AccountId {
    AccountId::parse(text).expect("account id")
}

fn currency_of(code: &str) -> Currency {
    Currency::parse(code).expect("currency")
}

fn transfer_results(outcome: &Outcome) -> impl Iterator<Item = &Vec<TransferResult>> {
    outcome.results.iter().filter_map(|result| match result {
        CommandResult::Transfers(results) => Some(results),
        _ => None,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_batches_keep_the_books(batches in proptest::collection::vec(proptest::collection::vec(op(), 1..12), 1..12)) {
        let mut world = World::new();
        for ops in &batches {
            let bodies: Vec<CommandBody> = ops.iter().map(|op| world.body(op)).collect();
            let (batch, outcome) = world.run(bodies);
            world.check_books()?;

            // A linked request is all or none.
            for (command, results) in batch.commands.iter().zip(&outcome.results) {
                if let (CommandBody::CreateTransfers { linking: Linking::Linked, .. }, CommandResult::Transfers(results)) =
                    (&command.body, results)
                {
                    let declined = results.iter().filter(|result| match result {
                        TransferResult::Committed(t) | TransferResult::Replayed(t) => t.status == TransferStatus::Declined,
                        TransferResult::Rejected(_) => true,
                    }).count();
                    prop_assert!(declined == 0 || declined == results.len(), "linked request partly applied: {results:?}");
                }
            }

            // Replaying the batch's transfers changes nothing and answers each one the same way.
            let transfers_only = Batch {
                commands: batch.commands.iter().filter(|command| matches!(command.body, CommandBody::CreateTransfers { .. })).cloned().collect(),
            };
            let accounts_before = world.ledger.accounts.clone();
            let entries_before = world.ledger.entries.len();
            let events_before = world.ledger.events.len();
            world.now = Timestamp::from_unix_micros(world.now.as_unix_micros() + 1_000);
            let replay = world.ledger.execute(&transfers_only, world.now, &mut world.ids);
            prop_assert_eq!(&accounts_before, &world.ledger.accounts);
            prop_assert_eq!(entries_before, world.ledger.entries.len());
            prop_assert_eq!(events_before, world.ledger.events.len());
            for (first, again) in transfer_results(&outcome).zip(transfer_results(&replay)) {
                for (first, again) in first.iter().zip(again) {
                    match (first, again) {
                        (TransferResult::Committed(a), TransferResult::Replayed(b)) => {
                            prop_assert_eq!(a.id, b.id);
                            prop_assert_eq!(a.error_code(), b.error_code());
                        }
                        (TransferResult::Rejected(a), TransferResult::Rejected(b)) => prop_assert_eq!(a.code, b.code),
                        other => prop_assert!(false, "replay answered differently: {other:?}"),
                    }
                }
            }
        }
    }
}
