//! `kopek_core::apply` on one batch of 8,000 transfers between 10,000 accounts: the pure
//! decision the writer makes per batch, without storage. Before timing it, the bench counts
//! the heap allocations of one `apply` with an instrumented system allocator (issue 20 asks
//! for none per plain posted transfer). Run: `cargo bench -p kopek-core`.

use criterion::{BatchSize, Criterion, Throughput, criterion_group};
use kopek_core::memory::{MemoryLedger, SequentialIds};
use kopek_core::{Timestamp, apply};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;

mod workload;
use workload::TRANSFERS;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// A ledger of the workload's accounts.
fn ledger() -> MemoryLedger {
    let mut ledger = MemoryLedger::default();
    for batch in workload::open_accounts() {
        ledger.execute(&batch, Timestamp::from_unix_micros(1), &mut SequentialIds::default());
    }
    ledger
}

/// Prints the allocations of one `apply` of the batch, its state loaded beforehand.
fn report_allocations(ledger: &MemoryLedger) {
    let batch = workload::transfers(0);
    let state = ledger.load(&batch.keys());
    let region = Region::new(GLOBAL);
    let outcome =
        apply(state, &batch, Timestamp::from_unix_micros(2), &mut SequentialIds::default());
    let change = region.change();
    assert_eq!(outcome.transfers_inserted.len(), TRANSFERS, "every transfer posts");
    let per = |count: usize| count as f64 / TRANSFERS as f64;
    println!(
        "apply allocations: {} for {TRANSFERS} plain posted transfers = {:.1} per transfer \
         ({:.0} bytes per transfer, {} reallocations)",
        change.allocations,
        per(change.allocations),
        per(change.bytes_allocated),
        change.reallocations,
    );
}

fn apply_8000(c: &mut Criterion) {
    let ledger = ledger();
    report_allocations(&ledger);
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
criterion::criterion_main!(benches);
