//! `kopek-sim [--seed N] [--steps N] [--accounts N] [--layout journal|sqlite]`: runs the
//! simulation in a temp data directory and prints the seed first, so any failure can be
//! replayed.

use kopek_sim::{Layout, SimConfig, run};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut config =
        SimConfig { seed: random_seed(), steps: 200, accounts: 12, layout: Layout::Journal };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let text = args.next().unwrap_or_default();
        let value = text.parse::<u64>().ok();
        match (flag.as_str(), value, text.as_str()) {
            ("--seed", Some(value), _) => config.seed = value,
            ("--steps", Some(value), _) => config.steps = value as usize,
            ("--accounts", Some(value), _) => config.accounts = value as usize,
            ("--layout", _, "journal") => config.layout = Layout::Journal,
            ("--layout", _, "sqlite") => config.layout = Layout::Sqlite,
            _ => {
                eprintln!(
                    "usage: kopek-sim [--seed N] [--steps N] [--accounts N] [--layout journal|sqlite]"
                );
                return ExitCode::from(2);
            }
        }
    }
    println!(
        "kopek-sim seed={} steps={} accounts={} layout={:?}",
        config.seed, config.steps, config.accounts, config.layout
    );
    let Ok(dir) = tempfile::tempdir() else {
        eprintln!("error: cannot make a temp dir");
        return ExitCode::from(2);
    };
    let Ok(runtime) = tokio::runtime::Builder::new_multi_thread().enable_all().build() else {
        eprintln!("error: cannot start the runtime");
        return ExitCode::from(2);
    };
    match runtime.block_on(run(&config, dir.path())) {
        Ok(report) => {
            println!("ok: {report:?}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("FAILED (seed {}): {message}", config.seed);
            ExitCode::FAILURE
        }
    }
}

fn random_seed() -> u64 {
    let nanos = kopek_clock::unix_nanos();
    (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
}
