//! The simulation as tests: pinned seeds (paste a failing seed here to keep it forever) and one
//! fresh seed per run, printed so a failure can be replayed with `kopek-sim --seed N`.

use kopek_sim::{Layout, SimConfig, run};

async fn simulate(seed: u64, steps: usize, layout: Layout) {
    println!("kopek-sim seed={seed} steps={steps} layout={layout:?}");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = SimConfig { seed, steps, accounts: 12, layout };
    match run(&config, dir.path()).await {
        Ok(report) => {
            println!("seed {seed}: {report:?}");
            assert!(
                report.applied > 0 && report.declined > 0 && report.replays > 0,
                "the workload exercised too little: {report:?}"
            );
        }
        Err(message) => panic!(
            "simulation failed; replay with `cargo run -p kopek-sim -- --seed {seed} --steps {steps} \
             --layout {}`: {message}",
            format!("{layout:?}").to_lowercase()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_seeds() {
    for seed in [1, 2, 3, 0xDEAD_BEEF] {
        simulate(seed, 120, Layout::Journal).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_seeds_on_the_sqlite_layout() {
    for seed in [1, 0xDEAD_BEEF] {
        simulate(seed, 120, Layout::Sqlite).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_seed() {
    let seed = std::env::var("KOPEK_SIM_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| kopek_clock::unix_nanos() as u64);
    simulate(seed, 150, Layout::Journal).await;
}
