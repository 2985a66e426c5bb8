//! `kopek_core::apply` on one batch of 8,000 transfers between 10,000 accounts: the pure
//! decision the writer makes per batch, without storage. Run: `cargo bench -p kopek-core`.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kopek_core::memory::{MemoryLedger, SequentialIds};
use kopek_core::{
    AccountId, Batch, Command, CommandBody, Currency, Details, IdempotencyKey, Linking, Movement,
    NewAccount, Overdraft, Tenant, Timestamp, TransferKind, TransferRequest, apply,
};

const ACCOUNTS: usize = 10_000;
const TRANSFERS: usize = 8_000;
/// Transfers per command, as a stream request carries them.
const PER_COMMAND: usize = 1_000;

fn account(index: usize) -> AccountId {
    AccountId::parse(&format!("acct-{index:05}")).expect("account id")
}

fn usd() -> Currency {
    Currency::parse("USD").expect("currency")
}

/// A ledger of funded accounts (each may go a long way below zero).
fn ledger() -> MemoryLedger {
    let mut ledger = MemoryLedger::default();
    let accounts = (0..ACCOUNTS)
        .map(|index| {
            let mut new = NewAccount::user(account(index), usd());
            new.overdraft = Overdraft::Limited(1_000_000_000_000);
            new
        })
        .collect::<Vec<_>>();
    for chunk in accounts.chunks(1_000) {
        let body = CommandBody::CreateAccounts(chunk.to_vec());
        let batch = Batch { commands: vec![Command::new(Tenant::default_tenant(), body)] };
        ledger.execute(&batch, Timestamp::from_unix_micros(1), &mut SequentialIds::default());
    }
    ledger
}

/// 8,000 transfers between pseudo-random pairs, with fresh keys.
fn batch() -> Batch {
    let mut seed: u64 = 42;
    let mut next = move || {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) as usize
    };
    let requests: Vec<TransferRequest> = (0..TRANSFERS)
        .map(|index| {
            let payer = next() % ACCOUNTS;
            let payee = (payer + 1 + next() % (ACCOUNTS - 1)) % ACCOUNTS;
            TransferRequest {
                idempotency_key: IdempotencyKey::parse(&format!("bench-{index}")).expect("key"),
                kind: TransferKind::Transfer,
                movement: Movement::Move {
                    debit_account: account(payer),
                    credit_account: account(payee),
                    amount: 1 + (next() % 100) as i64,
                    currency: usd(),
                    hold: None,
                },
                details: Details::default(),
                effective_at: None,
                open_if_missing: Vec::new(),
                fingerprint_extra: String::new(),
            }
        })
        .collect();
    let commands = requests
        .chunks(PER_COMMAND)
        .map(|chunk| {
            let body = CommandBody::CreateTransfers {
                transfers: chunk.to_vec(),
                linking: Linking::Independent,
            };
            Command::new(Tenant::default_tenant(), body)
        })
        .collect();
    Batch { commands }
}

fn apply_8000(c: &mut Criterion) {
    let ledger = ledger();
    let batch = batch();
    let keys = batch.keys();
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(TRANSFERS as u64));
    group.sample_size(30);
    group.bench_function("8000 transfers, 10000 accounts", |b| {
        b.iter_batched(
            || ledger.load(&keys),
            |state| {
                apply(state, &batch, Timestamp::from_unix_micros(2), &mut SequentialIds::default())
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, apply_8000);
criterion_main!(benches);
