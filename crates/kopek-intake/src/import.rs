//! Loading what `kopek export` wrote into a ledger (`POST /v1/admin/import`, `kopek import`;
//! docs/storage.md, "Export and import"). Each record is replayed through the engine as the
//! request that made it, under its own idempotency key, so loading a file twice, or into the
//! ledger it came from, changes nothing: a replay answers the transfer already there.
//!
//! What a replay cannot make again is said, not guessed:
//! - a declined transfer and an expired hold moved no money: they are skipped (their keys
//!   stay free here);
//! - a hold still pending keeps what is left of its time; one captured or voided is held
//!   without a timeout until its capture or void, later in the file, resolves it;
//! - a capture or void names its hold by the id this ledger gave it (the caller maps ids);
//! - the legs of a conversion are replayed as the single-currency transfers they are; a held
//!   conversion is refused, as its legs resolve together;
//! - accounts kopek opens itself (`orders:<CUR>`, `category:...:<CUR>`) are opened by the first
//!   transfer that names them, as kopek opened them.
//!
//! A transfer declined here is recorded declined under its key, as any declined request is:
//! its record fails, and loading the file again fails there again.

use crate::Intake;
use crate::access::unavailable;
use kopek_auth::Principal;
use kopek_core::apply::SERVER_PREFIXES;
use kopek_core::{
    AccountId, AccountKind, AccountResult, Action, Amount, Currency, Details, ErrorCode, Hold,
    IdempotencyKey, Linking, Metadata, Movement, NewAccount, Order, Overdraft, Rejection, Tenant,
    Timestamp, Transfer, TransferId, TransferKind, TransferRequest, TransferResult, TransferStatus,
    limits,
};
use serde::Deserialize;

/// At most this many records per call: a run of them is one command or one batch.
pub const RECORDS_PER_IMPORT_MAX: usize = 1_000;
const _: () = assert!(RECORDS_PER_IMPORT_MAX <= limits::TRANSFERS_PER_REQUEST_MAX);
const _: () = assert!(RECORDS_PER_IMPORT_MAX <= limits::ACCOUNTS_PER_REQUEST_MAX);

/// One line of an export: an account or a transfer, as the REST API answers them.
#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ImportRecord {
    Account(AccountRecord),
    Transfer(Box<TransferRecord>),
}

/// An account as `GET /v1/accounts/{id}` answers it; its balances are not read (the
/// transfers make them).
#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct AccountRecord {
    pub id: String,
    pub currency: String,
    pub owner: Option<String>,
    pub kind: String,
    /// Null: unbounded.
    pub overdraft_limit_minor: Option<i64>,
    #[serde(default)]
    pub metadata: Metadata,
}

/// A transfer as `GET /v1/transfers/{id}` answers it.
#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct TransferRecord {
    pub id: String,
    pub idempotency_key: String,
    pub kind: String,
    pub action: String,
    pub status: String,
    pub debit_account_id: Option<String>,
    pub credit_account_id: Option<String>,
    pub amount_minor: i64,
    pub currency: Option<String>,
    /// For a capture or void: the hold's id in the ledger imported into.
    pub pending_id: Option<String>,
    pub expires_at: Option<String>,
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub metadata: Metadata,
    pub effective_at: String,
    /// Set on the legs of a conversion.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(value_type = Option<Object>))]
    pub fx: Option<serde::de::IgnoredAny>,
}

/// What became of one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Imported {
    /// Written now; the id it has here.
    Created(String),
    /// Already here, the same: the id it has here.
    Existing(String),
    /// Not replayed, and why.
    Skipped(String),
    /// Not loaded, and why (a transfer declined here stays recorded declined).
    Failed(Rejection),
}

/// How a transfer record is replayed, from its action and status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Replay {
    /// It moved no money where it was made (declined, or a hold that expired).
    Skip(&'static str),
    /// A hold still pending: held for what is left of its time.
    PendingHold,
    /// Anything else: made again as it was.
    Again,
}

/// The replay of a record, or why its action and status do not go together.
fn replay_of(action: Action, status: TransferStatus) -> Result<Replay, Rejection> {
    use TransferStatus::*;
    Ok(match (action, status) {
        (_, Declined) => Replay::Skip("declined where it was made: it moved no money"),
        (Action::Hold, Expired) => Replay::Skip("a hold that expired where it was made"),
        (Action::Hold, Pending) => Replay::PendingHold,
        (Action::Post | Action::Capture, Posted)
        | (Action::Hold, Captured | Voided)
        | (Action::Void, Voided) => Replay::Again,
        (action, status) => {
            return Err(Rejection::invalid(format!(
                "a {} transfer is never {}",
                action.as_str(),
                status.as_str()
            )));
        }
    })
}

/// Whether a record of `action` and `status` moved money where it was made, and so has its
/// entries and moves money again when replayed: a posted post or capture. The check of a
/// file before an import (`kopek import`) and the replay read records by this one rule; a
/// pair that never goes together is refused.
pub fn moved_money(action: &str, status: &str) -> Result<bool, Rejection> {
    let action = Action::parse(action)
        .ok_or_else(|| Rejection::invalid(format!("transfer action '{action}' is not known")))?;
    let status = TransferStatus::parse(status)
        .ok_or_else(|| Rejection::invalid(format!("transfer status '{status}' is not known")))?;
    let replay = replay_of(action, status)?;
    Ok(replay == Replay::Again && matches!(action, Action::Post | Action::Capture))
}

impl Intake {
    /// Replays `records` in order, in the caller's tenant: one answer each. Each run of
    /// accounts is one command and each run of transfers one batch, applied in order, so a
    /// record that fails does not stop the ones after it in its call. Only a key bound to
    /// no user imports.
    pub async fn import(
        &self,
        caller: &Principal,
        records: Vec<ImportRecord>,
    ) -> Result<Vec<Imported>, Rejection> {
        caller.refuse_bound("import a ledger")?;
        if records.len() > RECORDS_PER_IMPORT_MAX {
            return Err(Rejection::invalid(format!(
                "an import call takes at most {RECORDS_PER_IMPORT_MAX} records, not {}",
                records.len()
            )));
        }
        let mut answers = Vec::with_capacity(records.len());
        let mut accounts = Vec::new();
        let mut transfers = Vec::new();
        for record in records {
            match record {
                ImportRecord::Account(account) => {
                    if !transfers.is_empty() {
                        answers.extend(self.import_transfers(caller, transfers).await?);
                        transfers = Vec::new();
                    }
                    accounts.push(account);
                }
                ImportRecord::Transfer(transfer) => {
                    if !accounts.is_empty() {
                        answers.extend(self.import_accounts(caller, accounts).await?);
                        accounts = Vec::new();
                    }
                    transfers.push(*transfer);
                }
            }
        }
        answers.extend(self.import_accounts(caller, accounts).await?);
        answers.extend(self.import_transfers(caller, transfers).await?);
        Ok(answers)
    }

    async fn import_accounts(
        &self,
        caller: &Principal,
        run: Vec<AccountRecord>,
    ) -> Result<Vec<Imported>, Rejection> {
        // Each record's answer if it is known before the command, else its place in it.
        let mut answers: Vec<Option<Imported>> = Vec::with_capacity(run.len());
        let mut opening = Vec::new();
        for record in run {
            match new_account(&caller.tenant, record) {
                Ok(Some(account)) => {
                    opening.push(account);
                    answers.push(None);
                }
                Ok(None) => answers.push(Some(Imported::Skipped(
                    "kopek opens it with the first transfer that names it".to_owned(),
                ))),
                Err(rejection) => answers.push(Some(Imported::Failed(rejection))),
            }
        }
        let mut results = if opening.is_empty() {
            Vec::new()
        } else {
            self.create_accounts(caller, opening).await?
        }
        .into_iter();
        Ok(answers
            .into_iter()
            .map(|answer| {
                answer.unwrap_or_else(|| match results.next() {
                    Some(AccountResult::Created(account)) => {
                        Imported::Created(account.id.name().to_owned())
                    }
                    Some(AccountResult::Existed(account) | AccountResult::Updated(account)) => {
                        Imported::Existing(account.id.name().to_owned())
                    }
                    Some(AccountResult::Rejected(rejection)) => Imported::Failed(rejection),
                    None => Imported::Failed(Rejection::new(
                        ErrorCode::Internal,
                        "an account's answer is missing",
                    )),
                })
            })
            .collect())
    }

    async fn import_transfers(
        &self,
        caller: &Principal,
        run: Vec<TransferRecord>,
    ) -> Result<Vec<Imported>, Rejection> {
        let now = kopek_store::wall_clock();
        // Each record's answer if it is known without the ledger, else its place in the batch.
        let mut answers: Vec<Option<Imported>> = Vec::with_capacity(run.len());
        let mut sent = Vec::new();
        let mut requests = Vec::new();
        for record in run {
            match replay_request(&caller.tenant, &record, now) {
                Ok(Some(request)) => {
                    requests.push(Ok(request));
                    sent.push(record);
                    answers.push(None);
                }
                Ok(None) => answers.push(Some(Imported::Skipped(skip_reason(&record)))),
                Err(rejection) => answers.push(Some(Imported::Failed(rejection))),
            }
        }
        let results = if requests.is_empty() {
            Vec::new()
        } else {
            self.submit(caller, crate::Batch::new(requests, Linking::Independent)?).await?
        };
        let mut outcomes = Vec::with_capacity(sent.len());
        for (record, result) in sent.iter().zip(results) {
            outcomes.push(self.imported(caller, record, result).await?);
        }
        let mut outcomes = outcomes.into_iter();
        Ok(answers
            .into_iter()
            .map(|answer| {
                answer.or_else(|| outcomes.next()).unwrap_or_else(|| {
                    Imported::Failed(Rejection::new(
                        ErrorCode::Internal,
                        "a transfer's answer is missing",
                    ))
                })
            })
            .collect())
    }

    /// What the ledger's answer to a replayed record means for the import.
    async fn imported(
        &self,
        caller: &Principal,
        record: &TransferRecord,
        result: TransferResult,
    ) -> Result<Imported, Rejection> {
        Ok(match result {
            TransferResult::Committed(transfer) | TransferResult::Replayed(transfer)
                if transfer.status == TransferStatus::Declined =>
            {
                Imported::Failed(declined_here(record, &transfer))
            }
            TransferResult::Committed(transfer) => Imported::Created(transfer.id.to_string()),
            TransferResult::Replayed(transfer) => Imported::Existing(transfer.id.to_string()),
            TransferResult::Rejected(rejection)
                if rejection.code == ErrorCode::IdempotencyKeyReused =>
            {
                // The key is taken here by a request that differs in what moves no money (a
                // hold's timeout, a contract's own fields): the same movement is the same
                // transfer.
                let key = IdempotencyKey::parse(&record.idempotency_key)?;
                let found = self
                    .store()
                    .transfer_by_key(&caller.tenant, &key)
                    .await
                    .map_err(unavailable)?;
                match found {
                    Some(transfer) if transfer.status == TransferStatus::Declined => {
                        Imported::Failed(declined_here(record, &transfer))
                    }
                    Some(transfer) if same_movement(&transfer, record) => {
                        Imported::Existing(transfer.id.to_string())
                    }
                    _ => Imported::Failed(rejection),
                }
            }
            TransferResult::Rejected(rejection) => Imported::Failed(rejection),
        })
    }
}

fn skip_reason(record: &TransferRecord) -> String {
    let replay = match (Action::parse(&record.action), TransferStatus::parse(&record.status)) {
        (Some(action), Some(status)) => replay_of(action, status).ok(),
        _ => None,
    };
    match replay {
        Some(Replay::Skip(reason)) => format!("{reason}, and is not replayed"),
        _ => "not replayed".to_owned(),
    }
}

/// A record that moved money where it was made, declined here: with the decline's own code.
fn declined_here(record: &TransferRecord, transfer: &Transfer) -> Rejection {
    let (code, reason) = match &transfer.error {
        Some(error) => (error.code, format!("{}: {}", error.code, error.message)),
        None => (ErrorCode::InvalidArgument, "declined".to_owned()),
    };
    Rejection::new(
        code,
        format!(
            "transfer {} ({}) was {} where it was made, but is declined here ({reason}); it \
             stays recorded declined under its key",
            record.id, record.idempotency_key, record.status
        ),
    )
}

/// The account `record` describes, in `tenant`; `None` for one kopek opens itself with the
/// first transfer that names it.
fn new_account(tenant: &Tenant, record: AccountRecord) -> Result<Option<NewAccount>, Rejection> {
    let id = AccountId::parse(&record.id)?.in_tenant(tenant);
    let currency = Currency::parse(&record.currency)?;
    if kopek_opens(&id) {
        kopek_opened(tenant, &id, currency)?;
        return Ok(None);
    }
    Ok(Some(NewAccount {
        id,
        currency,
        owner: record.owner,
        kind: AccountKind::parse(&record.kind).ok_or_else(|| {
            Rejection::invalid(format!("account kind '{}' is not known", record.kind))
        })?,
        overdraft: match record.overdraft_limit_minor {
            None => Overdraft::Unbounded,
            Some(minor) => Overdraft::limited(minor)?,
        },
        metadata: record.metadata,
    }))
}

/// Whether `id` has a prefix of the accounts kopek opens itself (`SERVER_PREFIXES`).
fn kopek_opens(id: &AccountId) -> bool {
    SERVER_PREFIXES.iter().any(|prefix| id.name().starts_with(prefix))
}

/// The account kopek opens itself that `id` names, in `currency` (the tenant's shop account
/// of orders, or a spending category's), as kopek opens it; anything else with their
/// prefixes is refused.
fn kopek_opened(
    tenant: &Tenant,
    id: &AccountId,
    currency: Currency,
) -> Result<NewAccount, Rejection> {
    if *id == Order::shop_account(tenant, currency) {
        return Ok(Order::shop_new_account(tenant, currency));
    }
    let category = format!("category:{}", tenant.qualifier());
    let suffix = format!(":{currency}");
    if id.name().starts_with(&category) && id.name().ends_with(&suffix) {
        return Ok(NewAccount {
            id: id.clone(),
            currency,
            owner: None,
            kind: AccountKind::System,
            overdraft: Overdraft::NONE,
            metadata: Metadata::default(),
        });
    }
    Err(Rejection::invalid(format!(
        "account {} is not one kopek opens itself in {currency} in this tenant",
        id.name()
    )))
}

/// The request that makes `record` again, at `now`; `None` when it is not replayed.
fn replay_request(
    tenant: &Tenant,
    record: &TransferRecord,
    now: Timestamp,
) -> Result<Option<TransferRequest>, Rejection> {
    let kind = TransferKind::parse(&record.kind).ok_or_else(|| {
        Rejection::invalid(format!("transfer kind '{}' is not known", record.kind))
    })?;
    let action = Action::parse(&record.action).ok_or_else(|| {
        Rejection::invalid(format!("transfer action '{}' is not known", record.action))
    })?;
    let status = TransferStatus::parse(&record.status).ok_or_else(|| {
        Rejection::invalid(format!("transfer status '{}' is not known", record.status))
    })?;
    let replay = replay_of(action, status)?;
    if let Replay::Skip(_) = replay {
        return Ok(None);
    }
    let account = |text: &Option<String>, side: &str| -> Result<AccountId, Rejection> {
        let text = text.as_deref().ok_or_else(|| {
            Rejection::invalid(format!("transfer {} has no {side} account", record.id))
        })?;
        Ok(AccountId::parse(text)?.in_tenant(tenant))
    };
    let pending = || -> Result<TransferId, Rejection> {
        let text = record.pending_id.as_deref().unwrap_or_default();
        TransferId::parse(text).map_err(|_| {
            Rejection::invalid(format!("transfer {} names no hold it resolves", record.id))
        })
    };
    let movement = match action {
        Action::Post | Action::Hold => {
            if action == Action::Hold && record.fx.is_some() {
                return Err(Rejection::invalid(format!(
                    "transfer {} is a leg of a held conversion: its legs resolve together, \
                     which a replay of one leg cannot",
                    record.id
                )));
            }
            let hold = match replay {
                Replay::PendingHold => Some(Hold { timeout_seconds: remaining(record, now)? }),
                _ if action == Action::Hold => Some(Hold { timeout_seconds: None }),
                _ => None,
            };
            Movement::Move {
                debit_account: account(&record.debit_account_id, "debit")?,
                credit_account: account(&record.credit_account_id, "credit")?,
                amount: record.amount_minor,
                currency: Currency::parse(record.currency.as_deref().unwrap_or_default())?,
                hold,
            }
        }
        Action::Capture => Movement::Capture {
            pending_id: pending()?,
            amount: Some(Amount::new(record.amount_minor)?),
        },
        Action::Void => Movement::Void { pending_id: pending()? },
    };
    let mut open_if_missing = Vec::new();
    if let Movement::Move { debit_account, credit_account, currency, .. } = &movement {
        for id in [debit_account, credit_account] {
            if kopek_opens(id) {
                open_if_missing.push(kopek_opened(tenant, id, *currency)?);
            }
        }
    }
    Ok(Some(TransferRequest {
        idempotency_key: IdempotencyKey::parse(&record.idempotency_key)?,
        kind,
        movement,
        details: Details {
            category: record.category.clone(),
            description: record.description.clone(),
            metadata: record.metadata.clone(),
        },
        effective_at: Some(Timestamp::parse_rfc3339(&record.effective_at).map_err(|error| {
            Rejection::invalid(format!("transfer {} effective_at: {error}", record.id))
        })?),
        open_if_missing,
        fingerprint_extra: String::new(),
    }))
}

/// A pending hold's timeout: whole seconds from `now` until it expires, at least one (it
/// expires here a second later when its time has passed meanwhile); none if it never expires.
fn remaining(record: &TransferRecord, now: Timestamp) -> Result<Option<u32>, Rejection> {
    let Some(text) = record.expires_at.as_deref() else { return Ok(None) };
    let at = Timestamp::parse_rfc3339(text).map_err(|error| {
        Rejection::invalid(format!("transfer {} expires_at: {error}", record.id))
    })?;
    let seconds = (at.as_unix_micros() - now.as_unix_micros()) / 1_000_000;
    let most = i64::from(limits::HOLD_TIMEOUT_SECONDS_MAX);
    Ok(Some(u32::try_from(seconds.clamp(1, most)).unwrap_or(1)))
}

/// Whether `transfer` moves what `record` moved: kind, action, accounts, amount, currency,
/// and for a capture or void the hold it resolves.
fn same_movement(transfer: &Transfer, record: &TransferRecord) -> bool {
    let name = |id: &Option<AccountId>| id.as_ref().map(|id| id.name().to_owned());
    transfer.kind.as_str() == record.kind
        && transfer.action.as_str() == record.action
        && name(&transfer.debit_account) == record.debit_account_id
        && name(&transfer.credit_account) == record.credit_account_id
        && transfer.amount == record.amount_minor
        && transfer.currency.map(|c| c.code().to_owned()) == record.currency
        && transfer.pending_id.map(|id| id.to_string()) == record.pending_id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(action: &str, status: &str, expires_at: Option<&str>) -> TransferRecord {
        TransferRecord {
            id: "01J00000000000000000000000".into(),
            idempotency_key: "k-1".into(),
            kind: "transfer".into(),
            action: action.into(),
            status: status.into(),
            debit_account_id: Some("a".into()),
            credit_account_id: Some("orders:USD".into()),
            amount_minor: 250,
            currency: Some("USD".into()),
            pending_id: None,
            expires_at: expires_at.map(str::to_owned),
            category: String::new(),
            description: "d".into(),
            metadata: Metadata::default(),
            effective_at: "2026-01-02T03:04:05Z".into(),
            fx: None,
        }
    }

    fn now() -> Timestamp {
        Timestamp::parse_rfc3339("2026-01-02T00:00:00Z").expect("time")
    }

    fn timeout(record: &TransferRecord) -> Option<u32> {
        let request = replay_request(&Tenant::default_tenant(), record, now()).expect("ok");
        match request.expect("replayed").movement {
            Movement::Move { hold: Some(hold), .. } => hold.timeout_seconds,
            other => panic!("a hold, not {other:?}"),
        }
    }

    #[test]
    fn a_pending_hold_keeps_what_is_left_of_its_time_and_a_resolved_one_waits() {
        assert_eq!(timeout(&record("hold", "pending", Some("2026-01-02T00:01:00Z"))), Some(60));
        assert_eq!(timeout(&record("hold", "pending", Some("2026-01-01T00:00:00Z"))), Some(1));
        assert_eq!(timeout(&record("hold", "pending", None)), None);
        // Its capture comes later in the file, whenever the hold was to expire.
        assert_eq!(timeout(&record("hold", "captured", Some("2026-01-01T00:00:00Z"))), None);
        let tenant = Tenant::default_tenant();
        let bad = record("hold", "pending", Some("tomorrow"));
        assert!(replay_request(&tenant, &bad, now()).is_err(), "an unreadable expiry");
        for (action, status) in [("hold", "expired"), ("post", "declined"), ("void", "declined")] {
            let skipped = replay_request(&tenant, &record(action, status, None), now());
            assert!(skipped.expect("ok").is_none(), "{action} {status} moved no money");
        }
    }

    #[test]
    fn an_action_and_a_status_that_never_go_together_are_refused() {
        let tenant = Tenant::default_tenant();
        for (action, status) in [("post", "pending"), ("hold", "posted"), ("capture", "voided")] {
            let refused = replay_request(&tenant, &record(action, status, None), now());
            let message = refused.expect_err("refused").message;
            assert!(message.contains("is never"), "{action} {status}: {message}");
        }
    }

    #[test]
    fn a_replay_keeps_the_key_and_opens_only_the_accounts_kopek_opens_itself() {
        let tenant = Tenant::default_tenant();
        let request = replay_request(&tenant, &record("post", "posted", None), now());
        let request = request.expect("ok").expect("replayed");
        assert_eq!(request.idempotency_key.as_str(), "k-1");
        assert_eq!(request.open_if_missing.len(), 1, "orders:USD, not a");
        assert_eq!(
            request.open_if_missing[0],
            Order::shop_new_account(&tenant, Currency::parse("USD").expect("USD"))
        );
        // The shop's account of another currency, or an id kopek never opens, is refused.
        let mut other = record("post", "posted", None);
        other.credit_account_id = Some("orders:EUR".into());
        assert!(replay_request(&tenant, &other, now()).is_err());
        other.credit_account_id = Some("orders:anything".into());
        assert!(replay_request(&tenant, &other, now()).is_err());
        let mut leg = record("hold", "pending", None);
        leg.fx = Some(serde::de::IgnoredAny);
        let refused = replay_request(&tenant, &leg, now()).expect_err("refused");
        assert!(refused.message.contains("held conversion"), "{}", refused.message);
        let mut capture = record("capture", "posted", None);
        capture.pending_id = Some("nonsense".into());
        assert!(replay_request(&tenant, &capture, now()).is_err());
    }
}
