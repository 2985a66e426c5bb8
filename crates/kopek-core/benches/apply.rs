//! `kopek_core::apply` on one batch of 8,000 transfers between 10,000 accounts: the pure
//! decision the writer makes per batch, without storage. Run: `cargo bench -p kopek-core`.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kopek_core::memory::{MemoryLedger, SequentialIds};
use kopek_core::{Timestamp, apply};

mod workload;
use workload::TRANSFERS;

/// A ledger of the workload's accounts.
fn ledger() -> MemoryLedger {
    let mut ledger = MemoryLedger::default();
    for batch in workload::open_accounts() {
        ledger.execute(&batch, Timestamp::from_unix_micros(1), &mut SequentialIds::default());
    }
    ledger
}

fn apply_8000(c: &mut Criterion) {
    let ledger = ledger();
    let batch = workload::transfers(0);
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
