//! One durable SQLite batch: load the state of 8,000 transfers between 10,000 accounts, decide
//! with `kopek_core::apply`, write every row (transfers, entries, balances, keys, outbox
//! events) and commit with `synchronous=FULL`, as the writer does per batch.
//! Run: `cargo bench -p kopek-store-sqlite`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kopek_core::{
    AccountId, Batch, Command, CommandBody, Currency, Details, IdempotencyKey, Linking, Movement,
    NewAccount, Overdraft, Tenant, Timestamp, TransferKind, TransferRequest, apply,
};
use kopek_store::Store;
use kopek_store_sqlite::SqliteStore;
use std::cell::Cell;

const ACCOUNTS: usize = 10_000;
const TRANSFERS: usize = 8_000;
const PER_COMMAND: usize = 1_000;

fn account(index: usize) -> AccountId {
    AccountId::parse(&format!("acct-{index:05}")).expect("account id")
}

fn usd() -> Currency {
    Currency::parse("USD").expect("currency")
}

/// Ids from a counter that starts at the batch's own offset: unique across iterations.
struct Ids(u128);

impl kopek_core::IdSource for Ids {
    fn next_ulid(&mut self) -> kopek_core::Ulid {
        self.0 += 1;
        kopek_core::Ulid::from_u128(self.0)
    }
}

async fn write(store: &SqliteStore, batch: Batch, at: i64) {
    let keys = batch.keys();
    let now = Timestamp::from_unix_micros(at);
    let outcome = store
        .write_batch(
            keys,
            Box::new(move |state| Ok(apply(state, &batch, now, &mut Ids((at as u128) << 32)))),
        )
        .await
        .expect("write the batch");
    assert!(!outcome.results.is_empty());
}

fn transfers(round: u64) -> Batch {
    let mut seed = round.wrapping_add(7);
    let mut next = move || {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) as usize
    };
    let requests: Vec<TransferRequest> = (0..TRANSFERS)
        .map(|index| {
            let payer = next() % ACCOUNTS;
            let payee = (payer + 1 + next() % (ACCOUNTS - 1)) % ACCOUNTS;
            TransferRequest {
                idempotency_key: IdempotencyKey::parse(&format!("r{round}-{index}")).expect("key"),
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

fn write_8000(c: &mut Criterion) {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path()).expect("open the store");
    runtime.block_on(async {
        let accounts: Vec<NewAccount> = (0..ACCOUNTS)
            .map(|index| {
                let mut new = NewAccount::user(account(index), usd());
                new.overdraft = Overdraft::Limited(1_000_000_000_000);
                new
            })
            .collect();
        for (round, chunk) in accounts.chunks(1_000).enumerate() {
            let body = CommandBody::CreateAccounts(chunk.to_vec());
            let batch = Batch { commands: vec![Command::new(Tenant::default_tenant(), body)] };
            write(&store, batch, round as i64 + 1).await;
        }
    });
    let round = Cell::new(100u64);
    let mut group = c.benchmark_group("sqlite");
    group.throughput(Throughput::Elements(TRANSFERS as u64));
    group.sample_size(20);
    group.bench_function("write_batch 8000 transfers, durable", |b| {
        b.iter_custom(|iterations| {
            let mut spent = std::time::Duration::ZERO;
            for _ in 0..iterations {
                let this = round.get();
                round.set(this + 1);
                let batch = transfers(this);
                let started = std::time::Instant::now();
                runtime.block_on(write(&store, batch, this as i64));
                spent += started.elapsed();
            }
            spent
        })
    });
    group.finish();
}

criterion_group!(benches, write_8000);
criterion_main!(benches);
