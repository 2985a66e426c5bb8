//! One durable SQLite batch: load the state of 8,000 transfers between 10,000 accounts, decide
//! with `kopek_core::apply`, write every row (transfers, entries, balances, keys, outbox
//! events) and commit with `synchronous=FULL`, as the writer does per batch.
//! Run: `cargo bench -p kopek-store-sqlite`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kopek_core::{Batch, Timestamp, apply};
use kopek_store::Store;
use kopek_store_sqlite::SqliteStore;
use std::cell::Cell;

#[path = "../../kopek-core/benches/workload/mod.rs"]
mod workload;
use workload::TRANSFERS;

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

fn write_8000(c: &mut Criterion) {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path()).expect("open the store");
    runtime.block_on(async {
        for (round, batch) in workload::open_accounts().into_iter().enumerate() {
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
                let batch = workload::transfers(this);
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
