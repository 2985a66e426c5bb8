//! The core on arbitrary batches: accounts in two tenants and two currencies, deposits,
//! withdrawals, transfers, holds, captures, voids and account updates, linked or not, with
//! reused idempotency keys. `apply` asserts its own postconditions; on top, after every batch
//! each tenant's balances sum to zero per currency, holds balance, and every account's posted
//! balance is the sum of its entries.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use kopek_core::memory::{MemoryLedger, SequentialIds};
use kopek_core::*;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

const ACCOUNTS: [&str; 4] = ["a", "b", "c", "d"];
const CURRENCIES: [&str; 2] = ["USD", "JPY"];
const TENANTS: [&str; 2] = ["default", "acme"];

#[derive(Arbitrary, Debug)]
enum Op {
    Open { account: u8, currency: u8, overdraft: u16 },
    Deposit { key: u8, account: u8, currency: u8, amount: i64 },
    Withdraw { key: u8, account: u8, currency: u8, amount: i64 },
    Move { key: u8, from: u8, to: u8, currency: u8, amount: i64, hold: bool },
    Capture { key: u8, hold: u8, amount: Option<i64> },
    Void { key: u8, hold: u8 },
    Freeze { account: u8, frozen: bool },
}

fn account(index: u8) -> AccountId {
    AccountId::parse(ACCOUNTS[usize::from(index) % ACCOUNTS.len()]).expect("id")
}

fn currency(index: u8) -> Currency {
    Currency::parse(CURRENCIES[usize::from(index) % CURRENCIES.len()]).expect("currency")
}

fn key(index: u8) -> IdempotencyKey {
    IdempotencyKey::parse(&format!("k{}", index % 16)).expect("key")
}

fn transfer(key: IdempotencyKey, kind: TransferKind, movement: Movement) -> TransferRequest {
    TransferRequest {
        idempotency_key: key,
        kind,
        movement,
        details: Default::default(),
        effective_at: None,
        open_if_missing: Vec::new(),
        fingerprint_extra: String::new(),
    }
}

fn body(op: &Op, tenant: &Tenant, holds: &[TransferId]) -> Option<CommandBody> {
    let one = |request| {
        Some(CommandBody::CreateTransfers {
            transfers: vec![request],
            linking: Linking::Independent,
        })
    };
    let hold_id = |index: u8| holds.get(usize::from(index) % holds.len().max(1)).copied();
    match *op {
        Op::Open { account: a, currency: c, overdraft } => {
            let mut new = NewAccount::user(account(a), currency(c));
            new.overdraft = Overdraft::Limited(i64::from(overdraft));
            Some(CommandBody::CreateAccounts(vec![new]))
        }
        Op::Deposit { key: k, account: a, currency: c, amount } => one(transfer(
            key(k),
            TransferKind::Deposit,
            Movement::Move {
                debit_account: AccountId::world_in(tenant, currency(c)),
                credit_account: account(a),
                amount,
                currency: currency(c),
                hold: None,
            },
        )),
        Op::Withdraw { key: k, account: a, currency: c, amount } => one(transfer(
            key(k),
            TransferKind::Withdrawal,
            Movement::Move {
                debit_account: account(a),
                credit_account: AccountId::world_in(tenant, currency(c)),
                amount,
                currency: currency(c),
                hold: None,
            },
        )),
        Op::Move { key: k, from, to, currency: c, amount, hold } => one(transfer(
            key(k),
            TransferKind::Transfer,
            Movement::Move {
                debit_account: account(from),
                credit_account: account(to),
                amount,
                currency: currency(c),
                hold: hold.then_some(Hold { timeout_seconds: None }),
            },
        )),
        Op::Capture { key: k, hold, amount } => {
            let pending_id = hold_id(hold)?;
            let amount = amount.map(Amount::new).transpose().ok()?;
            one(transfer(key(k), TransferKind::Transfer, Movement::Capture { pending_id, amount }))
        }
        Op::Void { key: k, hold } => {
            let pending_id = hold_id(hold)?;
            one(transfer(key(k), TransferKind::Transfer, Movement::Void { pending_id }))
        }
        Op::Freeze { account: a, frozen } => Some(CommandBody::UpdateAccount(AccountUpdate {
            id: account(a),
            overdraft: None,
            status: Some(if frozen { AccountStatus::Frozen } else { AccountStatus::Active }),
        })),
    }
}

fn check_books(ledger: &MemoryLedger) {
    let mut sums: BTreeMap<(String, String), (i128, i128, i128)> = BTreeMap::new();
    for account in ledger.accounts.values() {
        let entry =
            sums.entry((account.tenant.to_string(), account.currency.to_string())).or_default();
        entry.0 += i128::from(account.balance.posted);
        entry.1 += i128::from(account.balance.pending_out);
        entry.2 += i128::from(account.balance.pending_in);
    }
    for ((tenant, currency), (posted, out, held_in)) in sums {
        assert_eq!(posted, 0, "{tenant} {currency}: balances do not sum to zero");
        assert_eq!(out, held_in, "{tenant} {currency}: holds do not balance");
    }
    let mut from_entries: BTreeMap<&AccountId, i128> = BTreeMap::new();
    for entry in &ledger.entries {
        let signed = match entry.direction {
            Direction::Credit => i128::from(entry.amount),
            Direction::Debit => -i128::from(entry.amount),
        };
        *from_entries.entry(&entry.account_id).or_default() += signed;
    }
    for account in ledger.accounts.values() {
        let summed = from_entries.get(&account.id).copied().unwrap_or(0);
        assert_eq!(summed, i128::from(account.balance.posted), "{}: entries disagree", account.id);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Unstructured::new(data);
    let mut ledger = MemoryLedger::default();
    let mut ids = SequentialIds::default();
    let mut now = Timestamp::from_unix_micros(1_700_000_000_000_000);
    let mut holds: Vec<TransferId> = Vec::new();
    for _ in 0..16 {
        let Ok(size) = input.int_in_range(1..=8usize) else { break };
        let mut commands = Vec::new();
        for _ in 0..size {
            let (Ok(op), Ok(tenant)) = (Op::arbitrary(&mut input), input.int_in_range(0..=1usize))
            else {
                break;
            };
            let tenant = Tenant::parse(TENANTS[tenant]).expect("tenant");
            if let Some(body) = body(&op, &tenant, &holds) {
                commands.push(Command::new(tenant, Authority::Ledger, body));
            }
        }
        if commands.is_empty() {
            break;
        }
        now = Timestamp::from_unix_micros(now.as_unix_micros() + 1_000);
        let outcome = ledger.execute(&Batch { commands }, now, &mut ids);
        holds.extend(
            outcome
                .transfers_inserted
                .iter()
                .filter(|transfer| transfer.status == TransferStatus::Pending)
                .map(|transfer| transfer.id),
        );
        check_books(&ledger);
    }
});
