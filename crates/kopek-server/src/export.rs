//! `kopek export` and `kopek import` (docs/storage.md, "Export and import").
//!
//! Both speak the REST API: to the server at `--addr`, or to the store named by `--data-dir`
//! (or `--database`), which they open in this process and serve to themselves on a loopback
//! port (with no broker, and on a database in role `api`), with authentication required and
//! an admin key of their own, revoked when they are done.
//! So a file is read and written by the same rules whichever way the ledger is reached.
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
    local: Option<Local>,
}

/// A store opened here: the server on it, and the id of the key this command made for itself.
struct Local {
    app: crate::serve::App,
    key_id: String,
    store: crate::cli::StoreArgs,
}

/// The server flags of a store opened here.
#[derive(Parser)]
struct LocalFlags {
    #[command(flatten)]
    serve: ServeArgs,
}

/// How long one call may take before the command gives up on the server.
const CALL_TIMEOUT: Duration = Duration::from_secs(300);

impl Ledger {
    async fn open(args: &LedgerArgs, purpose: &str) -> anyhow::Result<Ledger> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client =
            reqwest::Client::builder().timeout(CALL_TIMEOUT).build().context("an HTTP client")?;
        if let Some(addr) = &args.addr {
            let base = addr.trim_end_matches('/').to_owned();
            return Ok(Ledger { base, client, api_key: args.api_key.clone(), local: None });
        }
        let minted = kopek_auth::mint(
            kopek_core::Tenant::DEFAULT_NAME,
            kopek_auth::Scope::Admin,
            None,
            purpose,
            kopek_clock::now(),
        )
        .context("make a key for this command")?;
        // Stored under this command's name first; `--admin-key` then finds it there.
        let store = crate::serve::open_admin_store(&args.store).await?;
        store.create_api_key(&minted.key).await.context("store this command's key")?;
        drop(store);
        // The embedded store is one process's: it runs every role. On a database, the API
        // alone: the processes that share it do the background work.
        let role = match crate::serve::backend(&args.store)? {
            crate::serve::Backend::Embedded(_) => "all",
            crate::serve::Backend::Postgres(_) => "api",
        };
        let loopback = ["--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"];
        let auth = ["--auth", "required", "--admin-key", &minted.token];
        let flags = ["kopek"].into_iter().chain(loopback).chain(["--role", role]).chain(auth);
        let mut serve =
            LocalFlags::try_parse_from(flags).context("the flags of a store opened here")?.serve;
        serve.store = args.store.clone();
        serve.metrics_listen = None;
        serve.broker = None;
        let app = crate::serve::build(serve)
            .await
            .with_context(|| format!("open {}", crate::serve::describe(&args.store)))?;
        let address = *app.http_addresses.first().context("no HTTP listener")?;
        let local = Local { app, key_id: minted.key.id.clone(), store: args.store.clone() };
        Ok(Ledger {
            base: format!("http://{address}"),
            client,
            api_key: Some(minted.token),
            local: Some(local),
        })
    }

    /// Stops the store opened here, if any, after everything written reached it, and revokes
    /// the key this command used.
    async fn close(self) -> anyhow::Result<()> {
        let Some(local) = self.local else { return Ok(()) };
        local.app.run_until(async {}).await?;
        let store = crate::serve::open_admin_store(&local.store).await?;
        store
            .revoke_api_key(&local.key_id, kopek_clock::now())
            .await
            .context("revoke this command's key")?;
        Ok(())
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.client.request(method, &url);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key.trim());
        }
        if let Some(body) = body {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
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

    /// A time the server's clock has just passed: the first whole second its `Date` header
    /// shows after the one it showed first (so at most a second's wait). Whatever committed
    /// before it committed before this call returned.
    async fn time_passed(&self) -> anyhow::Result<Timestamp> {
        let first = self.server_time().await?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = self.server_time().await?;
            if now > first {
                return Ok(now);
            }
            if Instant::now() > deadline {
                bail!("the server's clock did not move on in 5 s (its Date header)");
            }
        }
    }

    /// The server's time now, to the whole second below it (its `Date` header).
    async fn server_time(&self) -> anyhow::Result<Timestamp> {
        let url = format!("{}/healthz", self.base);
        let response =
            self.client.get(&url).send().await.with_context(|| format!("cannot reach {url}"))?;
        http_date(&response).context("the server sent no Date header")
    }
}

/// A response's `Date` (`Sun, 06 Dec 2026 23:41:17 GMT`, RFC 9110's IMF-fixdate) as a time.
fn http_date(response: &reqwest::Response) -> Option<Timestamp> {
    let text = response.headers().get(reqwest::header::DATE)?.to_str().ok()?;
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else { return None };
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.iter().position(|name| name == month)? + 1;
    let day: u32 = day.parse().ok()?;
    Timestamp::parse_rfc3339(&format!("{year}-{month:02}-{day:02}T{time}Z")).ok()
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
    let ledger = Ledger::open(&args.ledger, "kopek export").await?;
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
    // The cut: transfers and events committed before the server's time now, read after every
    // account is (so each account a transfer names is in the file, and a read of the accounts
    // waits for the store's projection to hold them all).
    let cut = ledger.time_passed().await?;
    let before = Some(before.map_or(cut, |before| before.min(cut)));
    let (after_text, before_text) =
        (after.map(Timestamp::to_rfc3339), before.map(Timestamp::to_rfc3339));
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
            "after": after_text,
            "before": args.before,
            "cut_at": cut.to_rfc3339(),
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
        for (name, value) in [("after", &after_text), ("before", &before_text), ("cursor", &cursor)]
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
            // Events come in commit order: once one is past the cut, the rest are too.
            let past =
                page["events"].as_array().and_then(|events| events.last()).is_some_and(|event| {
                    event["at"].as_str().and_then(|at| Timestamp::parse_rfc3339(at).ok()) >= before
                });
            match page["next_cursor"].as_u64() {
                Some(next) if !past => sequence = next,
                _ => break,
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

/// What reading a file found so far: whether its books balance, and what loading it needs.
/// The check before an import reads the whole file with it; the load reads every line with
/// a second one before sending it, so a file changed in between is refused, not loaded.
#[derive(Default)]
struct Checked {
    /// Accounts by id: their currency.
    currencies: HashMap<String, String>,
    /// Each account's balance after the last entry read.
    balances: HashMap<String, i64>,
    /// Holds met so far, by their id in the file.
    holds: HashMap<String, HoldSeen>,
    /// Accounts not active, and their status.
    statuses: Vec<(String, String)>,
    counts: Counts,
    /// The first problems, and how many there were.
    problems: Vec<String>,
    problem_count: usize,
    /// Transfers from a time on: an account's balance does not start from zero.
    from_a_time: bool,
    /// Whether the end line was read.
    ended: bool,
}

/// What a capture of a hold must move: the hold's accounts, currency and at most its amount.
struct HoldSeen {
    debit: Value,
    credit: Value,
    currency: Value,
    amount: i64,
}

/// Problems past this many are counted, not listed.
const PROBLEMS_SHOWN: usize = 20;

impl Checked {
    fn problem(&mut self, line: usize, text: impl Into<String>) {
        self.problem_count += 1;
        if self.problems.len() < PROBLEMS_SHOWN {
            self.problems.push(format!("line {line}: {}", text.into()));
        }
    }

    /// Reads one line of the file.
    fn line(&mut self, number: usize, text: &str) {
        if text.trim().is_empty() {
            return;
        }
        let value: Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(error) => return self.problem(number, format!("not JSON: {error}")),
        };
        if self.ended {
            return self.problem(number, "a line after the end line");
        }
        let Some((kind, record)) =
            value.as_object().filter(|object| object.len() == 1).and_then(|o| o.iter().next())
        else {
            return self.problem(number, "not one record (an object with one key)");
        };
        match (number, kind.as_str()) {
            (1, "kopek_export") => {
                if record["version"].as_u64() != Some(FORMAT_VERSION) {
                    let version = &record["version"];
                    let text =
                        format!("export version {version}; this kopek reads {FORMAT_VERSION}");
                    return self.problem(number, text);
                }
                self.from_a_time = !record["after"].is_null();
            }
            (1, _) => self.problem(number, "not the header of a file kopek export wrote"),
            (_, "account") => self.account(number, record),
            (_, "transfer") => {
                self.transfer(number, record);
                self.counts.transfers += 1;
            }
            (_, "event") => self.counts.events += 1,
            (_, "end") => {
                self.ended = true;
                let read = [self.counts.accounts, self.counts.transfers, self.counts.events];
                let said = ["accounts", "transfers", "events"].map(|name| record[name].as_u64());
                if said != read.map(Some) {
                    let holds = self.counts.line("");
                    self.problem(
                        number,
                        format!("the end line counts {record}, but the file holds{holds}"),
                    );
                }
            }
            (_, other) => self.problem(number, format!("a record of kind '{other}'")),
        }
    }

    fn account(&mut self, line: usize, record: &Value) {
        let id = record["id"].as_str().unwrap_or_default().to_owned();
        let currency = record["currency"].as_str().unwrap_or_default().to_owned();
        if self.currencies.insert(id.clone(), currency).is_some() {
            self.problem(line, format!("account {id} is there twice"));
        }
        if let Some(status) = record["status"].as_str().filter(|status| *status != "active") {
            self.statuses.push((id, status.to_owned()));
        }
        self.counts.accounts += 1;
    }

    fn transfer(&mut self, line: usize, transfer: &Value) {
        let id = transfer["id"].as_str().unwrap_or("?").to_owned();
        let (action, status) = (
            transfer["action"].as_str().unwrap_or_default(),
            transfer["status"].as_str().unwrap_or_default(),
        );
        // The rule the replay follows: what moved money has its entries and moves it again.
        let moved = match kopek_intake::import::moved_money(action, status) {
            Ok(moved) => moved,
            Err(rejection) => {
                return self.problem(line, format!("transfer {id}: {}", rejection.message));
            }
        };
        let Some(entries) = transfer["entries"].as_array() else {
            return self.problem(line, format!("transfer {id} comes without its entries"));
        };
        let amount = transfer["amount_minor"].as_i64().unwrap_or(0);
        match action {
            "hold" if status != "declined" => {
                let seen = HoldSeen {
                    debit: transfer["debit_account_id"].clone(),
                    credit: transfer["credit_account_id"].clone(),
                    currency: transfer["currency"].clone(),
                    amount,
                };
                self.holds.insert(id.clone(), seen);
            }
            "capture" | "void" if status != "declined" => {
                let hold = transfer["pending_id"].as_str().unwrap_or_default();
                match self.holds.get(hold) {
                    None => self.problem(
                        line,
                        format!("transfer {id} resolves hold {hold}, which no earlier line holds"),
                    ),
                    Some(seen)
                        if action == "capture"
                            && (seen.debit != transfer["debit_account_id"]
                                || seen.credit != transfer["credit_account_id"]
                                || seen.currency != transfer["currency"]
                                || amount > seen.amount) =>
                    {
                        let text = format!(
                            "capture {id} moves other accounts, another currency or more than \
                             hold {hold}"
                        );
                        self.problem(line, text);
                    }
                    Some(_) => {}
                }
            }
            _ => {}
        }
        if !moved {
            if !entries.is_empty() {
                self.problem(
                    line,
                    format!(
                        "transfer {id} is {action} {status}: it moved no money, yet has entries"
                    ),
                );
            }
            return;
        }
        let sides = [("debit", "debit_account_id", -1), ("credit", "credit_account_id", 1)];
        if entries.len() != 2 || amount <= 0 {
            return self.problem(
                line,
                format!(
                    "transfer {id} moved money: it has a debit and a credit entry of its amount"
                ),
            );
        }
        for (entry, (direction, account_field, sign)) in entries.iter().zip(sides) {
            let account = entry["account_id"].as_str().unwrap_or_default();
            let well_formed = entry["transfer_id"].as_str() == Some(id.as_str())
                && entry["direction"] == direction
                && entry["amount_minor"].as_i64() == Some(amount)
                && entry["currency"] == transfer["currency"]
                && transfer[account_field].as_str() == Some(account);
            if !well_formed {
                self.problem(
                    line,
                    format!(
                        "transfer {id}: its {direction} entry does not move its amount on its \
                         {direction} account"
                    ),
                );
                continue;
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
                Some(own) if Some(own.as_str()) != entry["currency"].as_str() => {
                    self.problem(
                        line,
                        format!(
                            "transfer {id} moves {} on {account}, an account in {own}",
                            entry["currency"]
                        ),
                    );
                    continue;
                }
                Some(_) => {}
            }
            let Some(after) = entry["balance_after_minor"].as_i64() else {
                self.problem(line, format!("transfer {id}: an entry without its balance after"));
                continue;
            };
            let delta = sign * amount;
            let before = match self.balances.get(account) {
                Some(balance) => Some(*balance),
                None if self.from_a_time => after.checked_sub(delta),
                None => Some(0),
            };
            if before.and_then(|before| before.checked_add(delta)) != Some(after) {
                let before = before.map_or("?".to_owned(), |balance| balance.to_string());
                self.problem(
                    line,
                    format!(
                        "transfer {id}: {account} goes from {before} by {delta} to {after}: the \
                         lines before it are missing or changed"
                    ),
                );
            }
            self.balances.insert(account.to_owned(), after);
        }
    }

    /// The refusal of a file with problems, or none.
    fn refusal(&self, path: &std::path::Path, what: &str) -> anyhow::Result<()> {
        if self.problem_count == 0 {
            return Ok(());
        }
        let more = self.problem_count - self.problems.len();
        let more = if more > 0 { format!("\n  and {more} more") } else { String::new() };
        bail!("{} is refused; {what}:\n  {}{more}", path.display(), self.problems.join("\n  "))
    }
}

/// Reads the whole file once and refuses it unless it is a whole export whose books balance.
fn check_file(path: &std::path::Path) -> anyhow::Result<Checked> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut checked = Checked::default();
    for (index, text) in std::io::BufReader::new(file).lines().enumerate() {
        let text = text.with_context(|| format!("read {} line {}", path.display(), index + 1))?;
        checked.line(index + 1, &text);
    }
    if !checked.ended {
        checked.problem_count += 1;
        checked.problems.push("the file stops before its end line: it was cut short".to_owned());
    }
    checked.refusal(path, "nothing was imported")?;
    Ok(checked)
}

/// The records of one import call, and the file line each came from.
#[derive(Default)]
struct Call {
    records: Vec<Value>,
    lines: Vec<usize>,
    bytes: usize,
    /// File ids of the holds in this call: a capture of one waits for the next call.
    holds: HashSet<String>,
}

/// A call's body stays well under the server's 4 MiB.
const CALL_BYTES_MAX: usize = 2 * 1024 * 1024;

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
    let ledger = Ledger::open(&args.ledger, "kopek import").await?;
    let loaded = load(&ledger, &args.file, &checked).await;
    let closed = ledger.close().await;
    let tally = loaded?;
    closed?;
    eprintln!(
        "imported {}: accounts {} created, {} already there, {} opened by their transfers; \
         transfers {} created, {} already there, {} not replayed (declined, or holds that \
         expired, where they were made); {} events not replayed (this ledger writes its own)",
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
    let mut again = Checked::default();
    for (index, text) in std::io::BufReader::new(file).lines().enumerate() {
        let text = text?;
        again.line(index + 1, &text);
        again.refusal(path, "it changed since it was checked; the lines before it are imported")?;
        if text.trim().is_empty() {
            continue;
        }
        let mut value: Value = serde_json::from_str(&text)?;
        if let Some(transfer) = value.get_mut("transfer") {
            let hold = transfer["pending_id"].as_str().map(str::to_owned);
            if hold.as_ref().is_some_and(|hold| call.holds.contains(hold)) {
                send(ledger, std::mem::take(&mut call), &mut holds, &mut tally).await?;
            }
            if let Some(hold) = hold {
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
        } else if value.get("account").is_none() {
            continue;
        }
        let bytes = value.to_string().len();
        if call.records.len() == PAGE || call.bytes + bytes > CALL_BYTES_MAX {
            send(ledger, std::mem::take(&mut call), &mut holds, &mut tally).await?;
            progress.show(|| format!("importing: line {}", index + 1));
        }
        call.records.push(value);
        call.lines.push(index + 1);
        call.bytes += bytes;
    }
    send(ledger, call, &mut holds, &mut tally).await?;
    for (id, status) in &checked.statuses {
        let body = serde_json::to_vec(&json!({"status": status}))?;
        let path = format!("/v1/accounts/{}", encode(id));
        let set = ledger.call(reqwest::Method::PATCH, &path, Some(body)).await;
        set.with_context(|| format!("set account {id} {status}"))?;
    }
    progress.done();
    Ok(tally)
}

/// One call of `POST /v1/admin/import`; a record that failed ends the import after the call,
/// with every failure and its line.
async fn send(
    ledger: &Ledger,
    call: Call,
    holds: &mut HashMap<String, String>,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    if call.records.is_empty() {
        return Ok(());
    }
    let body = serde_json::to_vec(&json!({"records": call.records}))?;
    let answer = ledger.call(reqwest::Method::POST, "/v1/admin/import", Some(body)).await?;
    let results = answer["results"].as_array().context("an import's answer")?;
    if results.len() != call.records.len() {
        bail!("the import answered {} results for {} records", results.len(), call.records.len());
    }
    let mut failures = Vec::new();
    for ((record, result), line) in call.records.iter().zip(results).zip(&call.lines) {
        let side = usize::from(record.get("transfer").is_some());
        match result["outcome"].as_str() {
            Some("created") => tally.created[side] += 1,
            Some("existing") => tally.existing[side] += 1,
            Some("skipped") => tally.skipped[side] += 1,
            _ => {
                let error = &result["error"];
                failures.push(format!("line {line}: {}: {}", error["code"], error["message"]));
            }
        }
        let transfer = &record["transfer"];
        if transfer["action"] == "hold"
            && let (Some(file_id), Some(here)) = (transfer["id"].as_str(), result["id"].as_str())
        {
            holds.insert(file_id.to_owned(), here.to_owned());
        }
    }
    if let (Some(first), Some(last)) = (call.lines.first(), call.lines.last())
        && !failures.is_empty()
    {
        bail!(
            "{} of lines {first} to {last} did not load:\n  {}\nthe other lines up to {last} \
             are loaded; nothing after it was sent",
            failures.len(),
            failures.join("\n  ")
        );
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
