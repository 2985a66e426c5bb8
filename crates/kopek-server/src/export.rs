//! `kopek export` and `kopek import` (docs/storage.md, "Export and import").
//!
//! Both speak the REST API: to the server at `--addr`, or to the store named by `--data-dir`
//! (or `--database`), which they open in this process and serve to themselves on a loopback
//! port with authentication off (whoever can open the files holds the ledger anyway). So a
//! file is read and written by the same rules whichever way the ledger is reached.
//!
//! An export is JSON Lines, one object a line with one key naming what it holds:
//! `{"kopek_export": {...}}` first, then every `{"account": ...}`, every `{"transfer": ...}`
//! in commit order with its `entries`, every `{"event": ...}`, and `{"end": {counts}}` last,
//! so a file cut short is known. Each object is what the REST API answers for it.

use crate::cli::{ExportArgs, ExportFormat, ImportArgs, LedgerArgs, ServeArgs};
use anyhow::{Context, bail};
use clap::Parser;
use kopek_core::Timestamp;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufWriter, IsTerminal, Write};
use std::time::{Duration, Instant};

/// The version of the file's layout, in its first line.
const FORMAT_VERSION: u64 = 1;
/// Records per page read and per import call.
const PAGE: usize = 1_000;

/// A ledger reached over REST: a server's, or a store opened here and served on loopback.
struct Ledger {
    base: String,
    client: reqwest::Client,
    api_key: Option<String>,
    local: Option<crate::serve::App>,
}

/// The server flags of a store opened here: loopback ports, no auth.
#[derive(Parser)]
struct Local {
    #[command(flatten)]
    serve: ServeArgs,
}

impl Ledger {
    async fn open(args: &LedgerArgs) -> anyhow::Result<Ledger> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder().build().context("an HTTP client")?;
        if let Some(addr) = &args.addr {
            let base = addr.trim_end_matches('/').to_owned();
            return Ok(Ledger { base, client, api_key: args.api_key.clone(), local: None });
        }
        let loopback = ["--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"];
        let mut serve =
            Local::try_parse_from(["kopek"].into_iter().chain(loopback).chain(["--auth", "off"]))
                .context("the flags of a store opened here")?
                .serve;
        serve.store = args.store.clone();
        serve.metrics_listen = None;
        let app = crate::serve::build(serve)
            .await
            .with_context(|| format!("open {}", crate::serve::describe(&args.store)))?;
        let address = *app.http_addresses.first().context("no HTTP listener")?;
        Ok(Ledger { base: format!("http://{address}"), client, api_key: None, local: Some(app) })
    }

    /// Stops the store opened here, if any, after everything written reached it.
    async fn close(self) -> anyhow::Result<()> {
        match self.local {
            Some(app) => app.run_until(async {}).await,
            None => Ok(()),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.client.request(method, &url);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key.trim());
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(body)?);
        }
        let response = request.send().await.with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        let text = response.text().await.with_context(|| format!("read the answer of {url}"))?;
        if !status.is_success() {
            let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            match (answer["error"]["code"].as_str(), answer["error"]["message"].as_str()) {
                (Some(code), Some(message)) => bail!("{code}: {message}"),
                _ => bail!("{url} answered {status}: {text}"),
            }
        }
        serde_json::from_str(&text).with_context(|| format!("{url} answered no JSON"))
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }
}

/// A line on standard error that counts, rewritten at most five times a second, when it is a
/// terminal; nothing otherwise.
struct Progress {
    terminal: bool,
    shown: Option<Instant>,
}

impl Progress {
    fn new() -> Progress {
        Progress { terminal: std::io::stderr().is_terminal(), shown: None }
    }

    fn show(&mut self, line: impl FnOnce() -> String) {
        if !self.terminal || self.shown.is_some_and(|at| at.elapsed() < Duration::from_millis(200))
        {
            return;
        }
        self.shown = Some(Instant::now());
        eprint!("\r{}\x1b[K", line());
    }

    fn done(&self) {
        if self.terminal && self.shown.is_some() {
            eprint!("\r\x1b[K");
        }
    }
}

#[derive(Default)]
struct Counts {
    accounts: u64,
    transfers: u64,
    events: u64,
}

impl Counts {
    fn line(&self, verb: &str) -> String {
        format!(
            "{verb} {} accounts, {} transfers, {} events",
            self.accounts, self.transfers, self.events
        )
    }
}

fn time_flag(value: &Option<String>, flag: &str) -> anyhow::Result<Option<Timestamp>> {
    value
        .as_deref()
        .map(|text| {
            Timestamp::parse_rfc3339(text)
                .map_err(|error| anyhow::anyhow!("--{flag} {text}: {error}"))
        })
        .transpose()
}

/// `kopek export`.
pub async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let after = time_flag(&args.after, "after")?;
    let before = time_flag(&args.before, "before")?;
    if let (Some(after), Some(before)) = (after, before)
        && after > before
    {
        bail!("--after is later than --before");
    }
    let out: Box<dyn Write + Send> = match &args.output {
        Some(path) => Box::new(
            std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout()),
    };
    let mut out = BufWriter::new(out);
    let ledger = Ledger::open(&args.ledger).await?;
    let written = write_export(&ledger, &mut out, &args, (after, before)).await;
    let closed = ledger.close().await;
    let counts = written?;
    closed?;
    out.flush().context("write the export")?;
    drop(out);
    let place =
        args.output.as_ref().map(|path| format!(" to {}", path.display())).unwrap_or_default();
    eprintln!("{}{place}", counts.line("exported"));
    Ok(())
}

async fn write_export(
    ledger: &Ledger,
    out: &mut impl Write,
    args: &ExportArgs,
    (after, before): (Option<Timestamp>, Option<Timestamp>),
) -> anyhow::Result<Counts> {
    let mut counts = Counts::default();
    let mut progress = Progress::new();
    let csv = args.format == ExportFormat::Csv;
    let line = |out: &mut dyn Write, value: Value| -> anyhow::Result<()> {
        serde_json::to_writer(&mut *out, &value)?;
        out.write_all(b"\n").context("write the export")
    };
    if csv {
        out.write_all(csv_row(CSV_COLUMNS.iter().map(|name| name.to_string())).as_bytes())?;
    } else {
        let header = json!({"kopek_export": {
            "version": FORMAT_VERSION,
            "exported_at": kopek_store::wall_clock().to_rfc3339(),
            "after": args.after,
            "before": args.before,
        }});
        line(out, header)?;
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/accounts?limit={PAGE}");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&after={}", encode(cursor)));
            }
            let page = ledger.get(&path).await?;
            for account in page["accounts"].as_array().context("a page of accounts")? {
                line(out, json!({"account": account}))?;
                counts.accounts += 1;
            }
            progress.show(|| counts.line("exporting"));
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
    }
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/transfers?order=asc&limit={PAGE}&include=entries");
        for (name, value) in [("after", &args.after), ("before", &args.before), ("cursor", &cursor)]
        {
            if let Some(value) = value {
                path.push_str(&format!("&{name}={}", encode(value)));
            }
        }
        let page = ledger.get(&path).await?;
        for transfer in page["transfers"].as_array().context("a page of transfers")? {
            if csv {
                out.write_all(csv_row(csv_fields(transfer)).as_bytes())?;
            } else {
                line(out, json!({"transfer": transfer}))?;
            }
            counts.transfers += 1;
        }
        progress.show(|| counts.line("exporting"));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    if !csv {
        let mut sequence = 0u64;
        loop {
            let page = ledger.get(&format!("/v1/events?after={sequence}&limit={PAGE}")).await?;
            for event in page["events"].as_array().context("a page of events")? {
                let at = event["at"].as_str().and_then(|at| Timestamp::parse_rfc3339(at).ok());
                let inside = at.is_some_and(|at| {
                    after.is_none_or(|after| at >= after) && before.is_none_or(|before| at < before)
                });
                if inside {
                    line(out, json!({"event": event}))?;
                    counts.events += 1;
                }
            }
            progress.show(|| counts.line("exporting"));
            match page["next_cursor"].as_u64() {
                Some(next) => sequence = next,
                None => break,
            }
        }
        let end = json!({"end": {
            "accounts": counts.accounts, "transfers": counts.transfers, "events": counts.events,
        }});
        line(out, end)?;
    }
    progress.done();
    Ok(counts)
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

const CSV_COLUMNS: [&str; 18] = [
    "id",
    "committed_at",
    "effective_at",
    "kind",
    "action",
    "status",
    "debit_account_id",
    "credit_account_id",
    "amount",
    "amount_minor",
    "currency",
    "captured_amount_minor",
    "pending_id",
    "idempotency_key",
    "category",
    "description",
    "metadata",
    "error_code",
];

/// A transfer's row, in `CSV_COLUMNS` order; metadata as a JSON object.
fn csv_fields(transfer: &Value) -> impl Iterator<Item = String> + '_ {
    CSV_COLUMNS.iter().map(move |column| {
        let value = match *column {
            "error_code" => &transfer["error"]["code"],
            name => &transfer[name],
        };
        match value {
            Value::Null => String::new(),
            Value::String(text) => text.clone(),
            Value::Object(map) if map.is_empty() => String::new(),
            other => other.to_string(),
        }
    })
}

/// One CSV row (RFC 4180): a field with a comma, quote or line break is quoted, quotes
/// doubled; a field a spreadsheet would run as a formula is prefixed with a quote mark.
fn csv_row(fields: impl Iterator<Item = String>) -> String {
    let mut row = String::new();
    for (index, field) in fields.enumerate() {
        if index > 0 {
            row.push(',');
        }
        let field = if field.starts_with(['=', '+', '@'])
            || field.starts_with("-") && field.parse::<f64>().is_err()
        {
            format!("'{field}")
        } else {
            field
        };
        if field.contains([',', '"', '\n', '\r']) {
            row.push('"');
            row.push_str(&field.replace('"', "\"\""));
            row.push('"');
        } else {
            row.push_str(&field);
        }
    }
    row.push_str("\r\n");
    row
}

/// What the first reading of a file found: whether its books balance, and what the second
/// reading needs.
#[derive(Default)]
struct Checked {
    /// Accounts by id: their currency.
    currencies: HashMap<String, String>,
    /// Each account's balance after the last entry read.
    balances: HashMap<String, i64>,
    /// Holds met so far, by their id in the file.
    holds: HashSet<String>,
    /// Accounts not active, and their status.
    statuses: Vec<(String, String)>,
    counts: Counts,
    problems: Vec<String>,
    /// Transfers and events limited to a time range: balances do not start from zero.
    ranged: bool,
}

/// Problems past this many are counted, not listed.
const PROBLEMS_SHOWN: usize = 20;

impl Checked {
    fn problem(&mut self, line: usize, text: impl Into<String>) {
        self.problems.push(format!("line {line}: {}", text.into()));
    }

    fn transfer(&mut self, line: usize, transfer: &Value) {
        let id = transfer["id"].as_str().unwrap_or("?").to_owned();
        match transfer["action"].as_str() {
            Some("hold") => {
                self.holds.insert(id.clone());
            }
            Some("capture" | "void") => {
                let hold = transfer["pending_id"].as_str().unwrap_or_default();
                if !self.holds.contains(hold) {
                    self.problem(
                        line,
                        format!("transfer {id} resolves hold {hold}, which no earlier line holds"),
                    );
                }
            }
            _ => {}
        }
        let Some(entries) = transfer["entries"].as_array() else {
            self.problem(line, format!("transfer {id} comes without its entries"));
            return;
        };
        let moved = transfer["status"] == "posted" || transfer["action"] == "capture";
        if moved && transfer["amount_minor"].as_i64().unwrap_or(0) > 0 && entries.len() < 2 {
            self.problem(
                line,
                format!("transfer {id} moved money but has {} entries", entries.len()),
            );
        }
        let mut sums: HashMap<&str, (i128, i128)> = HashMap::new();
        for entry in entries {
            let account = entry["account_id"].as_str().unwrap_or_default();
            let currency = entry["currency"].as_str().unwrap_or_default();
            let (Some(amount), Some(after)) =
                (entry["amount_minor"].as_i64(), entry["balance_after_minor"].as_i64())
            else {
                self.problem(line, format!("transfer {id}: an entry without its amounts"));
                continue;
            };
            if entry["transfer_id"].as_str() != Some(id.as_str()) || amount <= 0 {
                self.problem(
                    line,
                    format!("transfer {id}: an entry of another transfer, or not positive"),
                );
                continue;
            }
            // The transfer's own amount is what a replay moves: its entries must say the same.
            if transfer["amount_minor"].as_i64() != Some(amount) {
                self.problem(
                    line,
                    format!(
                        "transfer {id} moves {} but its entry on {account} {amount}",
                        transfer["amount_minor"]
                    ),
                );
            }
            match self.currencies.get(account) {
                None => {
                    self.problem(
                        line,
                        format!(
                            "transfer {id} has an entry on {account}, which no account line opens"
                        ),
                    );
                    continue;
                }
                Some(own) if own != currency => {
                    self.problem(line, format!("transfer {id}: an entry in {currency} on {account}, an account in {own}"));
                    continue;
                }
                Some(_) => {}
            }
            let named = match entry["direction"].as_str() {
                Some("debit") => transfer["debit_account_id"].as_str(),
                _ => transfer["credit_account_id"].as_str(),
            };
            if named.is_some_and(|named| named != account)
                || transfer["currency"].as_str() != Some(currency)
            {
                self.problem(
                    line,
                    format!(
                        "transfer {id} names other accounts or another currency than its entries"
                    ),
                );
            }
            let (delta, side) = match entry["direction"].as_str() {
                Some("credit") => (amount, &mut sums.entry(currency).or_default().1),
                Some("debit") => (-amount, &mut sums.entry(currency).or_default().0),
                other => {
                    self.problem(line, format!("transfer {id}: an entry's direction is {other:?}"));
                    continue;
                }
            };
            *side += i128::from(amount);
            let before = match self.balances.get(account) {
                Some(balance) => Some(*balance),
                None if self.ranged => after.checked_sub(delta),
                None => Some(0),
            };
            if before.and_then(|before| before.checked_add(delta)) != Some(after) {
                self.problem(
                    line,
                    format!(
                        "transfer {id}: {account} goes from {} by {delta} to {after}: the lines before it are missing or changed",
                        before.map_or("?".to_owned(), |b| b.to_string())
                    ),
                );
            }
            self.balances.insert(account.to_owned(), after);
        }
        for (currency, (debits, credits)) in sums {
            if debits != credits {
                self.problem(line, format!("transfer {id} debits {debits} and credits {credits} {currency}: it does not balance"));
            }
        }
    }
}

/// Reads the whole file once and refuses it unless it is a whole export whose books balance.
fn check_file(path: &std::path::Path) -> anyhow::Result<Checked> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut checked = Checked::default();
    let mut end: Option<(usize, Value)> = None;
    for (index, text) in std::io::BufReader::new(file).lines().enumerate() {
        let number = index + 1;
        let text = text.with_context(|| format!("read {} line {number}", path.display()))?;
        if text.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} line {number} is not JSON", path.display()))?;
        if end.is_some() {
            checked.problem(number, "a line after the end line");
            break;
        }
        let Some((kind, record)) =
            value.as_object().filter(|o| o.len() == 1).and_then(|o| o.iter().next())
        else {
            checked.problem(number, "not one record (an object with one key)");
            continue;
        };
        if number == 1 {
            if kind != "kopek_export" {
                bail!(
                    "{} is not a file kopek export wrote: it does not begin with its header",
                    path.display()
                );
            }
            if record["version"].as_u64() != Some(FORMAT_VERSION) {
                bail!(
                    "{} is of export version {}, and this kopek reads {FORMAT_VERSION}",
                    path.display(),
                    record["version"]
                );
            }
            checked.ranged = !record["after"].is_null() || !record["before"].is_null();
            continue;
        }
        match kind.as_str() {
            "account" => {
                let id = record["id"].as_str().unwrap_or_default().to_owned();
                let currency = record["currency"].as_str().unwrap_or_default().to_owned();
                if checked.currencies.insert(id.clone(), currency).is_some() {
                    checked.problem(number, format!("account {id} is there twice"));
                }
                if let Some(status) = record["status"].as_str().filter(|s| *s != "active") {
                    checked.statuses.push((id, status.to_owned()));
                }
                checked.counts.accounts += 1;
            }
            "transfer" => {
                checked.transfer(number, record);
                checked.counts.transfers += 1;
            }
            "event" => checked.counts.events += 1,
            "end" => end = Some((number, record.clone())),
            other => checked.problem(number, format!("a record of kind '{other}'")),
        }
    }
    match end {
        None => {
            checked.problems.push("the file stops before its end line: it was cut short".to_owned())
        }
        Some((number, counts)) => {
            let read = [checked.counts.accounts, checked.counts.transfers, checked.counts.events];
            let said = ["accounts", "transfers", "events"].map(|name| counts[name].as_u64());
            if said != read.map(Some) {
                checked.problem(
                    number,
                    format!(
                        "the end line counts {counts}, but the file holds {}",
                        checked.counts.line("").trim()
                    ),
                );
            }
        }
    }
    if !checked.problems.is_empty() {
        let shown = checked.problems.iter().take(PROBLEMS_SHOWN).cloned().collect::<Vec<_>>();
        let more = checked.problems.len().saturating_sub(PROBLEMS_SHOWN);
        let more = if more > 0 { format!("\n  and {more} more") } else { String::new() };
        bail!(
            "{} is refused; nothing was imported:\n  {}{more}",
            path.display(),
            shown.join("\n  ")
        );
    }
    Ok(checked)
}

/// The records of one import call, and the file line each came from.
#[derive(Default)]
struct Call {
    records: Vec<Value>,
    lines: Vec<usize>,
    /// File ids of the holds in this call: a capture of one waits for the next call.
    holds: HashSet<String>,
}

#[derive(Default)]
struct Tally {
    created: [u64; 2],
    existing: [u64; 2],
    skipped: [u64; 2],
}

/// `kopek import`.
pub async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let path = args.file.clone();
    let checked = tokio::task::spawn_blocking(move || check_file(&path))
        .await
        .context("the check stopped")??;
    let ledger = Ledger::open(&args.ledger).await?;
    let loaded = load(&ledger, &args.file, &checked).await;
    let closed = ledger.close().await;
    let tally = loaded?;
    closed?;
    eprintln!(
        "imported {}: accounts {} created, {} already there, {} opened by their transfers; \
         transfers {} created, {} already there, {} declined where they were made (not replayed); \
         {} events not replayed (this ledger writes its own)",
        args.file.display(),
        tally.created[0],
        tally.existing[0],
        tally.skipped[0],
        tally.created[1],
        tally.existing[1],
        tally.skipped[1],
        checked.counts.events,
    );
    Ok(())
}

async fn load(ledger: &Ledger, path: &std::path::Path, checked: &Checked) -> anyhow::Result<Tally> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut tally = Tally::default();
    // File ids of holds to their ids here, for the captures and voids that name them.
    let mut holds: HashMap<String, String> = HashMap::new();
    let mut call = Call::default();
    let mut progress = Progress::new();
    let mut sent = Counts::default();
    for (index, text) in std::io::BufReader::new(file).lines().enumerate() {
        let text = text?;
        if text.trim().is_empty() {
            continue;
        }
        let mut value: Value = serde_json::from_str(&text)?;
        if let Some(transfer) = value.get_mut("transfer") {
            let waits =
                transfer["pending_id"].as_str().is_some_and(|hold| call.holds.contains(hold));
            if waits {
                send(ledger, std::mem::take(&mut call), &mut holds, &mut tally).await?;
            }
            if let Some(hold) = transfer["pending_id"].as_str().map(str::to_owned) {
                let here = holds
                    .get(&hold)
                    .with_context(|| format!("line {}: hold {hold} was not imported", index + 1))?;
                transfer["pending_id"] = json!(here);
            }
            if transfer["action"] == "hold" {
                call.holds.insert(transfer["id"].as_str().unwrap_or_default().to_owned());
            }
            if let Some(object) = transfer.as_object_mut() {
                object.remove("entries");
            }
            sent.transfers += 1;
        } else if value.get("account").is_some() {
            sent.accounts += 1;
        } else {
            continue;
        }
        call.records.push(value);
        call.lines.push(index + 1);
        if call.records.len() == PAGE {
            send(ledger, std::mem::take(&mut call), &mut holds, &mut tally).await?;
            progress.show(|| sent.line("importing"));
        }
    }
    send(ledger, call, &mut holds, &mut tally).await?;
    for (id, status) in &checked.statuses {
        ledger
            .call(
                reqwest::Method::PATCH,
                &format!("/v1/accounts/{}", encode(id)),
                Some(&json!({"status": status})),
            )
            .await
            .with_context(|| format!("set account {id} {status}"))?;
    }
    progress.done();
    Ok(tally)
}

async fn send(
    ledger: &Ledger,
    call: Call,
    holds: &mut HashMap<String, String>,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    if call.records.is_empty() {
        return Ok(());
    }
    let body = json!({"records": call.records});
    let answer = ledger.call(reqwest::Method::POST, "/v1/admin/import", Some(&body)).await.map_err(|error| {
        // "record N: ..." names the record in this call: say its line.
        let text = error.to_string();
        let line = text
            .split_once("record ")
            .and_then(|(_, rest)| rest.split_once(':'))
            .and_then(|(number, _)| number.parse::<usize>().ok())
            .and_then(|number| call.lines.get(number));
        match line {
            Some(line) => anyhow::anyhow!("line {line}: {text}; the lines before it are imported, and importing the file again goes on from there"),
            None => error,
        }
    })?;
    let results = answer["results"].as_array().context("an import's answer")?;
    if results.len() != call.records.len() {
        bail!("the import answered {} results for {} records", results.len(), call.records.len());
    }
    for (record, result) in call.records.iter().zip(results) {
        let side = usize::from(record.get("transfer").is_some());
        match result["outcome"].as_str() {
            Some("created") => tally.created[side] += 1,
            Some("existing") => tally.existing[side] += 1,
            _ => tally.skipped[side] += 1,
        }
        let transfer = &record["transfer"];
        if transfer["action"] == "hold"
            && let (Some(file_id), Some(here)) = (transfer["id"].as_str(), result["id"].as_str())
        {
            holds.insert(file_id.to_owned(), here.to_owned());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_it_and_defuses_formulas() {
        let row = csv_row(
            ["a", "b,c", "say \"hi\"", "=SUM(A1)", "-12.50", "-x"].map(String::from).into_iter(),
        );
        assert_eq!(row, "a,\"b,c\",\"say \"\"hi\"\"\",'=SUM(A1),-12.50,'-x\r\n");
    }
}
