//! The `kopek` binary: the ledger server and its command-line client.

mod admin;
mod backup;
mod bench;
mod cli;
mod client;
mod export;
mod rates;
mod rest_shape;
mod serve;
mod status;

use clap::Parser;
use cli::{Cli, Command, TransfersCommand};
use std::process::ExitCode;

/// mimalloc instead of the system allocator: the write path allocates and frees many small
/// values per transfer, and glibc's allocator spent a quarter of the server's CPU on them
/// (`docs/performance.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> ExitCode {
    let outcome = match command {
        Command::Serve(args) => {
            let json = args.log_format == cli::LogFormat::Json;
            let tracing = match kopek_telemetry::trace::init(json, args.otlp_endpoint.as_deref()) {
                Ok(tracing) => tracing,
                Err(message) => return report(Err(anyhow::anyhow!(message))),
            };
            let outcome = serve::run(*args).await;
            // Sends the spans not yet exported; it blocks, so not on a runtime worker.
            let _ = tokio::task::spawn_blocking(move || tracing.shutdown()).await;
            return report(outcome);
        }
        Command::Migrate(args) => return report(migrate(&args).await),
        Command::Keys(command) => return report(admin::keys(command).await),
        Command::Audit(args) => return report(admin::audit(args).await),
        Command::Status(args) => return status::run(args).await,
        Command::Rates(command) => return rates::run(command).await,
        Command::Verify(args) => return verify(args).await,
        Command::Backup(args) => return report(backup::take(args).await),
        Command::Restore(args) => return report(backup::restore(args).await),
        Command::Export(args) => return report(export::export(args).await),
        Command::Import(args) => return report(export::import(args).await),
        Command::Bench(args) => return report(bench::run(*args).await),
        Command::Accounts(command) => client::run_accounts(command).await,
        Command::Transfers(command) => {
            let TransfersCommand::List(args) = *command;
            let json = args.client.json;
            client::list_transfers(args).await.map_err(|failure| (failure, json))
        }
        Command::Deposit(args) => {
            let json = args.client.json;
            client::deposit_or_withdraw(client::Flow::Deposit, args)
                .await
                .map_err(|failure| (failure, json))
        }
        Command::Withdraw(args) => {
            let json = args.client.json;
            client::deposit_or_withdraw(client::Flow::Withdraw, args)
                .await
                .map_err(|failure| (failure, json))
        }
        Command::Transfer(args) => {
            let json = args.client.json;
            client::transfer(args).await.map_err(|failure| (failure, json))
        }
        Command::Balance(args) => {
            let json = args.client.json;
            client::balance(args).await.map_err(|failure| (failure, json))
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err((failure, json)) => failure.report(json),
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn migrate(args: &cli::StoreArgs) -> anyhow::Result<()> {
    let (applied, place) = match serve::backend(args)? {
        serve::Backend::Embedded(dir) => {
            (kopek_store_sqlite::migrate(&dir)?, dir.display().to_string())
        }
        serve::Backend::Postgres(url) => {
            let store = kopek_store_postgres::PostgresStore::open(&url).await?;
            (store.migrate().await?, serve::describe(args))
        }
    };
    if applied.is_empty() {
        println!("schema of {place} is up to date");
    } else {
        let versions: Vec<String> = applied.iter().map(ToString::to_string).collect();
        println!("applied migrations {} to {place}", versions.join(", "));
    }
    Ok(())
}

/// The store to check the books of: read-only on SQLite, so it runs next to a live server and
/// never creates an empty ledger. A journal-first ledger no server holds is opened whole, so
/// its projection first takes in every frame and memory is checked against it.
async fn open_for_verify(args: &cli::StoreArgs) -> anyhow::Result<Box<dyn kopek_store::Store>> {
    Ok(match serve::backend(args)? {
        serve::Backend::Embedded(dir) if kopek_store_sqlite::has_journal(&dir) => {
            match kopek_store_sqlite::JournalStore::open(&dir) {
                Ok(store) => Box::new(store),
                Err(kopek_store::StoreError::Unavailable(message))
                    if message.contains("in use by another") =>
                {
                    Box::new(kopek_store_sqlite::SqliteStore::open_read_only(&dir)?)
                }
                Err(error) => return Err(error.into()),
            }
        }
        serve::Backend::Embedded(dir) => {
            Box::new(kopek_store_sqlite::SqliteStore::open_read_only(&dir)?)
        }
        serve::Backend::Postgres(url) => {
            Box::new(kopek_store_postgres::PostgresStore::open(&url).await?)
        }
    })
}

async fn verify(args: cli::VerifyArgs) -> ExitCode {
    let store = match open_for_verify(&args.store).await {
        Ok(store) => store,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(2);
        }
    };
    let mut report = match store.verify().await {
        Ok(report) => report,
        Err(error) => {
            eprintln!("error: verify: {error}");
            return ExitCode::from(2);
        }
    };
    // The long checks too: a journal-first ledger's journal against its projection.
    match store.verify_history().await {
        Ok(problems) => report.problems.extend(problems),
        Err(error) => {
            eprintln!("error: verify: {error}");
            return ExitCode::from(2);
        }
    }
    if args.json {
        let json = serde_json::json!({
            "ok": report.is_ok(),
            "accounts": report.accounts,
            "transfers": report.transfers,
            "entries": report.entries,
            "events": report.events,
            "problems": report.problems,
        });
        println!("{json}");
    } else {
        println!(
            "checked {} accounts, {} transfers, {} entries, {} events",
            report.accounts, report.transfers, report.entries, report.events
        );
        for problem in &report.problems {
            println!("PROBLEM: {problem}");
        }
        if report.is_ok() {
            println!("ok: the books balance");
        } else {
            println!("FAILED: {} problem(s)", report.problems.len());
        }
    }
    if report.is_ok() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
