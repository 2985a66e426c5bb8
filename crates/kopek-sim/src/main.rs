//! `kopek-sim [--seed N] [--steps N] [--accounts N]`: runs the simulation on a temp SQLite
//! file and prints the seed first, so any failure can be replayed.

use kopek_sim::{SimConfig, run};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut config = SimConfig { seed: random_seed(), steps: 200, accounts: 12 };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().and_then(|value| value.parse::<u64>().ok());
        match (flag.as_str(), value) {
            ("--seed", Some(value)) => config.seed = value,
            ("--steps", Some(value)) => config.steps = value as usize,
            ("--accounts", Some(value)) => config.accounts = value as usize,
            _ => {
                eprintln!("usage: kopek-sim [--seed N] [--steps N] [--accounts N]");
                return ExitCode::from(2);
            }
        }
    }
    println!("kopek-sim seed={} steps={} accounts={}", config.seed, config.steps, config.accounts);
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
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
}
