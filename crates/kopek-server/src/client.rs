//! Client commands: talk to a running server over kopek.v1 gRPC, print one readable line (or
//! JSON with `--json`), and exit non-zero with the error code on a rejection.

use crate::cli::{
    AccountsCommand, BalanceArgs, ClientArgs, CreateAccountArgs, ListTransfersArgs, MoneyArgs,
    TransferArgs,
};
use crate::rest_shape;
use kopek_core::{Amount, Currency, format_minor};
use kopek_proto::kopek::v1 as pb;
use kopek_proto::kopek::v1::ledger_client::LedgerClient;
use serde_json::json;
use std::process::ExitCode;
use tonic::Status;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Exit code of a rejection by the ledger (the code is printed).
const EXIT_REJECTED: u8 = 1;
/// Exit code of a usage, connection or server error.
const EXIT_FAILED: u8 = 2;

/// What a client command ends with.
pub enum Failure {
    /// The ledger refused: a stable code and its sentence.
    Rejected { code: String, message: String },
    /// Anything else: connection refused, bad input before sending, server error.
    Failed(String),
}

impl Failure {
    pub fn report(self, json: bool) -> ExitCode {
        match self {
            Failure::Rejected { code, message } => {
                if json {
                    println!("{}", json!({"error": {"code": code, "message": message}}));
                } else {
                    eprintln!("error: {code}: {message}");
                }
                ExitCode::from(EXIT_REJECTED)
            }
            Failure::Failed(message) => {
                eprintln!("error: {message}");
                ExitCode::from(EXIT_FAILED)
            }
        }
    }
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Failure {
        // Server rejections carry "CODE: sentence"; keep the code apart for scripts.
        match status.message().split_once(": ") {
            Some((code, message))
                if code.chars().all(|c| c.is_ascii_uppercase() || c == '_') && !code.is_empty() =>
            {
                Failure::Rejected { code: code.to_owned(), message: message.to_owned() }
            }
            _ => Failure::Failed(format!("{:?}: {}", status.code(), status.message())),
        }
    }
}

fn rejected(error: &pb::Error) -> Failure {
    let code = pb::ErrorCode::try_from(error.code)
        .map(|code| code.as_str_name().trim_start_matches("ERROR_CODE_").to_owned())
        .unwrap_or_else(|_| error.code.to_string());
    Failure::Rejected { code, message: error.message.clone() }
}

/// Sends `--api-key` (`KOPEK_API_KEY`) as `authorization: Bearer ...` on every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Client = LedgerClient<InterceptedService<Channel, Bearer>>;

/// The `authorization` header for `--api-key`, if one was given.
pub fn bearer(api_key: Option<&str>) -> Result<Bearer, Failure> {
    Ok(match api_key {
        None => Bearer(None),
        Some(key) => Bearer(Some(
            format!("Bearer {}", key.trim())
                .parse()
                .map_err(|_| Failure::Failed("--api-key is not a valid key".to_owned()))?,
        )),
    })
}

async fn connect(args: &ClientArgs) -> Result<Client, Failure> {
    let bearer = bearer(args.api_key.as_deref())?;
    let channel = Channel::from_shared(args.addr.clone())
        .map_err(|error| Failure::Failed(format!("--addr {}: {error}", args.addr)))?
        .connect()
        .await
        .map_err(|error| {
            Failure::Failed(format!("cannot reach kopek at {}: {error}", args.addr))
        })?;
    Ok(LedgerClient::with_interceptor(channel, bearer))
}

pub async fn run_accounts(command: AccountsCommand) -> Result<(), (Failure, bool)> {
    match command {
        AccountsCommand::Create(args) => {
            let json = args.client.json;
            create_account(args).await.map_err(|failure| (failure, json))
        }
        AccountsCommand::Get(args) => {
            let json = args.client.json;
            show_account(args).await.map_err(|failure| (failure, json))
        }
    }
}

async fn create_account(args: CreateAccountArgs) -> Result<(), Failure> {
    let currency = Currency::parse(&args.currency)
        .map_err(|r| Failure::Rejected { code: r.code.to_string(), message: r.message })?;
    let overdraft_limit_minor = match &args.overdraft_limit {
        None => 0,
        Some(text) => kopek_core::money::parse_decimal_minor(text, currency.minor_digits())
            .map_err(|reason| Failure::Rejected {
                code: "INVALID_AMOUNT".to_owned(),
                message: format!("overdraft limit '{text}': {reason}"),
            })?,
    };
    let mut client = connect(&args.client).await?;
    let request = pb::CreateAccountsRequest {
        accounts: vec![pb::NewAccount {
            id: args.id.clone(),
            currency: currency.code().to_owned(),
            owner: args.owner.clone().unwrap_or_default(),
            kind: if args.system { pb::AccountKind::System } else { pb::AccountKind::User } as i32,
            overdraft_limit_minor,
            unbounded_overdraft: args.system,
            metadata: Default::default(),
        }],
    };
    let response = client.create_accounts(request).await?.into_inner();
    let result = response
        .results
        .into_iter()
        .next()
        .ok_or_else(|| Failure::Failed("empty response".to_owned()))?;
    if let Some(error) = &result.error {
        return Err(rejected(error));
    }
    let account =
        result.account.ok_or_else(|| Failure::Failed("response without account".to_owned()))?;
    if args.client.json {
        println!(
            "{}",
            json!({"created": result.created, "account": rest_shape::account(&account)})
        );
    } else if result.created {
        println!("opened account {} ({})", account.id, account.currency);
    } else {
        println!("account {} already exists ({}); nothing changed", account.id, account.currency);
    }
    Ok(())
}

async fn fetch_account(client: &mut Client, id: &str) -> Result<pb::Account, Failure> {
    let response =
        client.get_account(pb::GetAccountRequest { id: id.to_owned() }).await?.into_inner();
    response.account.ok_or_else(|| Failure::Failed("response without account".to_owned()))
}

async fn show_account(args: BalanceArgs) -> Result<(), Failure> {
    let mut client = connect(&args.client).await?;
    let account = fetch_account(&mut client, &args.account).await?;
    if args.client.json {
        println!("{}", json!(rest_shape::account(&account)));
    } else {
        let status =
            pb::AccountStatus::try_from(account.status).map(|s| s.as_str_name()).unwrap_or("?");
        println!(
            "{} {} {} owner={} {}",
            account.id,
            account.currency,
            status.trim_start_matches("ACCOUNT_STATUS_").to_lowercase(),
            if account.owner.is_empty() { "-" } else { &account.owner },
            balance_line(account.balance.as_ref(), &account.currency)
        );
    }
    Ok(())
}

pub async fn balance(args: BalanceArgs) -> Result<(), Failure> {
    let mut client = connect(&args.client).await?;
    let request = pb::GetBalanceRequest { account_id: args.account.clone(), as_of: String::new() };
    let response = client.get_balance(request).await?.into_inner();
    if args.client.json {
        println!("{}", json!(rest_shape::balance_at(&response)));
    } else {
        println!(
            "{}: {}",
            response.account_id,
            balance_line(response.balance.as_ref(), &response.currency)
        );
    }
    Ok(())
}

pub enum Flow {
    Deposit,
    Withdraw,
}

pub async fn deposit_or_withdraw(flow: Flow, args: MoneyArgs) -> Result<(), Failure> {
    let mut client = connect(&args.client).await?;
    let account = fetch_account(&mut client, &args.account).await?;
    let world = format!("world:{}", account.currency);
    let (kind, debit, credit) = match flow {
        Flow::Deposit => (pb::TransferKind::Deposit, world, account.id.clone()),
        Flow::Withdraw => (pb::TransferKind::Withdrawal, account.id.clone(), world),
    };
    post(
        &mut client,
        &args.client,
        kind,
        debit,
        credit,
        &account.currency,
        &args.amount,
        args.idempotency_key,
    )
    .await
}

pub async fn transfer(args: TransferArgs) -> Result<(), Failure> {
    let mut client = connect(&args.client).await?;
    let account = fetch_account(&mut client, &args.from).await?;
    let kind = pb::TransferKind::Transfer;
    post(
        &mut client,
        &args.client,
        kind,
        args.from,
        args.to,
        &account.currency,
        &args.amount,
        args.idempotency_key,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn post(
    client: &mut Client,
    args: &ClientArgs,
    kind: pb::TransferKind,
    debit: String,
    credit: String,
    currency: &str,
    amount: &str,
    idempotency_key: Option<String>,
) -> Result<(), Failure> {
    let currency = Currency::parse(currency).map_err(|r| Failure::Failed(r.message))?;
    // Checked here too so a typo fails before anything is sent.
    Amount::parse_major(amount, currency)
        .map_err(|r| Failure::Rejected { code: r.code.to_string(), message: r.message })?;
    let idempotency_key = idempotency_key.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let request = pb::CreateTransfersRequest {
        transfers: vec![pb::TransferRequest {
            idempotency_key: idempotency_key.clone(),
            kind: kind as i32,
            debit_account_id: debit,
            credit_account_id: credit,
            amount: amount.to_owned(),
            currency: currency.code().to_owned(),
            ..Default::default()
        }],
        linked: false,
    };
    let response = client.create_transfers(request).await?.into_inner();
    let result = response
        .results
        .into_iter()
        .next()
        .ok_or_else(|| Failure::Failed("empty response".to_owned()))?;
    let Some(transfer) = result.transfer else {
        return Err(result
            .error
            .as_ref()
            .map_or_else(|| Failure::Failed("response without transfer".to_owned()), rejected));
    };
    if let Some(error) = &transfer.error {
        return Err(rejected(error));
    }
    if args.json {
        println!(
            "{}",
            json!({"replayed": result.replayed, "transfer": rest_shape::transfer(&transfer)})
        );
    } else {
        let replay =
            if result.replayed { " (replayed: already applied with this key)" } else { "" };
        println!(
            "posted {} {} {} -> {} transfer {} key {}{replay}",
            transfer.amount,
            transfer.currency,
            transfer.debit_account_id,
            transfer.credit_account_id,
            transfer.id,
            idempotency_key
        );
    }
    Ok(())
}

/// `kopek transfers list`: one page of a search, a line per transfer (or the REST page object
/// with `--json`), and the next page's cursor on stderr.
pub async fn list_transfers(args: ListTransfersArgs) -> Result<(), Failure> {
    let enumerated =
        |flag: &str, text: &Option<String>, prefix: &str, known: fn(&str) -> Option<i32>| {
            let Some(text) = text.as_deref().filter(|text| !text.is_empty()) else { return Ok(0) };
            let value =
                known(&format!("{prefix}{}", text.to_uppercase())).filter(|value| *value != 0);
            value.ok_or_else(|| Failure::Rejected {
                code: "INVALID_ARGUMENT".to_owned(),
                message: format!("--{flag} '{text}' is not one kopek knows"),
            })
        };
    let kind = enumerated("kind", &args.kind, "TRANSFER_KIND_", |name| {
        pb::TransferKind::from_str_name(name).map(|kind| kind as i32)
    })?;
    let status = enumerated("status", &args.status, "TRANSFER_STATUS_", |name| {
        pb::TransferStatus::from_str_name(name).map(|status| status as i32)
    })?;
    let mut metadata = std::collections::HashMap::new();
    for pair in &args.metadata {
        let (key, value) = pair.split_once('=').ok_or_else(|| Failure::Rejected {
            code: "INVALID_ARGUMENT".to_owned(),
            message: format!("--metadata '{pair}' is not KEY=VALUE"),
        })?;
        if metadata.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(Failure::Rejected {
                code: "INVALID_ARGUMENT".to_owned(),
                message: format!("--metadata {key} is given twice"),
            });
        }
    }
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    let request = pb::ListTransfersRequest {
        account_id: text(&args.account),
        idempotency_key: text(&args.idempotency_key),
        committed_after: text(&args.after),
        committed_before: text(&args.before),
        effective_after: text(&args.effective_after),
        effective_before: text(&args.effective_before),
        kind,
        status,
        currency: text(&args.currency),
        min_amount: text(&args.min_amount),
        max_amount: text(&args.max_amount),
        metadata,
        ascending: args.ascending,
        page_size: args.limit.unwrap_or(0),
        page_token: text(&args.cursor),
    };
    let mut client = connect(&args.client).await?;
    let page = client.list_transfers(request).await?.into_inner();
    let next_cursor = (!page.next_page_token.is_empty()).then_some(&page.next_page_token);
    if args.client.json {
        let transfers: Vec<_> = page.transfers.iter().map(rest_shape::transfer).collect();
        println!("{}", json!({"transfers": transfers, "next_cursor": next_cursor}));
        return Ok(());
    }
    for transfer in &page.transfers {
        let shown = rest_shape::transfer(transfer);
        println!(
            "{} {} {} {} {} {} {} -> {} key {}",
            transfer.committed_at,
            transfer.id,
            shown.kind,
            shown.status,
            transfer.amount,
            transfer.currency,
            or_dash(&transfer.debit_account_id),
            or_dash(&transfer.credit_account_id),
            transfer.idempotency_key,
        );
    }
    if page.transfers.is_empty() {
        eprintln!("no transfers on this page");
    }
    if let Some(cursor) = next_cursor {
        eprintln!("more may follow: --cursor {cursor}");
    }
    Ok(())
}

fn or_dash(text: &str) -> &str {
    if text.is_empty() { "-" } else { text }
}

fn balance_line(balance: Option<&pb::Balance>, currency: &str) -> String {
    let Some(balance) = balance else {
        return "no balance".to_owned();
    };
    let digits = Currency::parse(currency).ok();
    let money =
        |minor: i64| digits.map_or(minor.to_string(), |currency| format_minor(minor, currency));
    let available = if balance.available.is_empty() {
        "unbounded".to_owned()
    } else {
        format!("{} {currency}", balance.available)
    };
    format!(
        "posted {} {currency}, available {available}, held {} {currency}",
        balance.posted,
        money(balance.pending_out_minor)
    )
}
