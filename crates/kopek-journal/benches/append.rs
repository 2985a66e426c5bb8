//! What a durable journal write costs on this machine: one frame of a batch's size, appended
//! and synced (`fdatasync`), as the journal-first writer will do per batch. A frame of 8,000
//! transfers at about 64 bytes each is 512 KiB; one of 1,024 is 64 KiB.
//! Run: `cargo bench -p kopek-journal`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kopek_journal::{Journal, Options};

fn append_and_sync(c: &mut Criterion) {
    let mut group = c.benchmark_group("journal");
    group.sample_size(20);
    for (name, bytes) in [("frame_64KiB_synced", 64 * 1024), ("frame_512KiB_synced", 512 * 1024)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = Options { segment_bytes: 256 * 1024 * 1024, ..Options::default() };
        let (mut journal, _) = Journal::open(dir.path(), options, |_| {}).expect("open");
        let payload = vec![7u8; bytes];
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                journal.append(&payload).expect("append");
                journal.sync().expect("sync");
            })
        });
    }
    group.finish();
}

criterion_group!(benches, append_and_sync);
criterion_main!(benches);
