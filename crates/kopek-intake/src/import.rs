//! Loading what `kopek export` wrote into a ledger (`POST /v1/admin/import`, `kopek import`;
//! docs/storage.md, "Export and import"). Each record is replayed through the engine as
//! the request that made it, under its own idempotency key, so loading a file twice, or into
//! the ledger it came from, changes nothing: a replay answers the transfer already there.
//!
//! What a replay cannot make again is said, not guessed:
//! - a declined transfer moved no money: it is skipped (its key stays free here);
//! - a hold still pending keeps what is left of its time; one that expired is held again for
//!   one second, and then expires here too;
//! - a capture or void names its hold by the id this ledger gave it (the caller maps the ids);
//! - the legs of a conversion are replayed as the single-currency transfers they are; a held
//!   conversion is refused, as its legs resolve together;
//! - accounts kopek opens itself (`orders:`, `category:`) are opened by the first transfer
//!   that names them, as kopek opened them.

use crate::Intake;
use crate::access::unavailable;
use kopek_auth::Principal;
use kopek_core::apply::SERVER_PREFIXES;
use kopek_core::{
    AccountId, AccountKind, AccountResult, Action, Amount, Currency, Details, ErrorCode, Hold,
    IdempotencyKey, Metadata, Movement, NewAccount, Overdraft, Rejection, Timestamp, TransferId,
    TransferKind, TransferRequest, TransferResult, TransferStatus,
};
use serde::Deserialize;

/// At most this many records per call.
pub const RECORDS_MAX: usize = 1_000;

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
}

impl Intake {
    /// Replays `records` in order, in the caller's tenant: one answer each, or the first
    /// record that cannot be loaded as it was (the ones before it stay loaded; loading the
    /// file again goes on from there). Each run of accounts is one command and each run of
    /// transfers one batch, applied in order. Only a key bound to no user imports.
    pub async fn import(
        &self,
        caller: &Principal,
        records: Vec<ImportRecord>,
    ) -> Result<Vec<Imported>, Rejection> {
        caller.refuse_bound("import a ledger")?;
        if records.len() > RECORDS_MAX {
            return Err(Rejection::invalid(format!(
                "an import call takes at most {RECORDS_MAX} records, not {}",
                records.len()
            )));
        }
        let mut answers = Vec::with_capacity(records.len());
        let mut records = records.into_iter().peekable();
        while let Some(first) = records.next() {
            let is_account = matches!(first, ImportRecord::Account(_));
            let mut run = vec![first];
            while let Some(next) =
                records.next_if(|next| matches!(next, ImportRecord::Account(_)) == is_account)
            {
                run.push(next);
            }
            let offset = answers.len();
            let at = |index: usize, rejection: Rejection| {
                Rejection::new(
                    rejection.code,
                    format!("record {}: {}", offset + index, rejection.message),
                )
            };
            let run_answers = if is_account {
                self.import_accounts(caller, run).await
            } else {
                self.import_transfers(caller, run).await
            };
            for (index, answer) in run_answers?.into_iter().enumerate() {
                answers.push(answer.map_err(|rejection| at(index, rejection))?);
            }
        }
        Ok(answers)
    }

    async fn import_accounts(
        &self,
        caller: &Principal,
        run: Vec<ImportRecord>,
    ) -> Result<Vec<Result<Imported, Rejection>>, Rejection> {
        let mut answers: Vec<Option<Result<Imported, Rejection>>> = Vec::with_capacity(run.len());
        let mut opening = Vec::new();
        for record in run {
            let ImportRecord::Account(record) = record else { unreachable!("a run of accounts") };
            match new_account(caller, record) {
                Ok(Some(account)) => {
                    opening.push(account);
                    answers.push(None);
                }
                Ok(None) => answers.push(Some(Ok(Imported::Skipped(
                    "kopek opens it with the first transfer that names it".to_owned(),
                )))),
                Err(rejection) => answers.push(Some(Err(rejection))),
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
                        Ok(Imported::Created(account.id.name().to_owned()))
                    }
                    Some(AccountResult::Existed(account) | AccountResult::Updated(account)) => {
                        Ok(Imported::Existing(account.id.name().to_owned()))
                    }
                    Some(AccountResult::Rejected(rejection)) => Err(rejection),
                    None => {
                        Err(Rejection::new(ErrorCode::Internal, "an account's answer is missing"))
                    }
                })
            })
            .collect())
    }

    async fn import_transfers(
        &self,
        caller: &Principal,
        run: Vec<ImportRecord>,
    ) -> Result<Vec<Result<Imported, Rejection>>, Rejection> {
        let now = kopek_store::wall_clock();
        let mut records = Vec::with_capacity(run.len());
        let mut requests = Vec::new();
        // A record that cannot be read as a request ends the run there: the ones before it
        // are sent, and it answers why.
        let mut refused = None;
        for record in run {
            let ImportRecord::Transfer(record) = record else { unreachable!("a run of transfers") };
            let replay = match TransferStatus::parse(&record.status) {
                None => Err(Rejection::invalid(format!(
                    "transfer status '{}' is not known",
                    record.status
                ))),
                Some(TransferStatus::Declined) => Ok(None),
                Some(_) => replay_request(caller, &record, now).map(Some),
            };
            match replay {
                Ok(Some(request)) => {
                    requests.push(Ok(request));
                    records.push((record, true));
                }
                Ok(None) => records.push((record, false)),
                Err(rejection) => {
                    refused = Some(rejection);
                    break;
                }
            }
        }
        let results = if requests.is_empty() {
            Vec::new()
        } else {
            self.submit(caller, crate::Batch::new(requests, kopek_core::Linking::Independent)?)
                .await?
        };
        let mut results = results.into_iter();
        let mut answers = Vec::with_capacity(records.len());
        for (record, sent) in records {
            if !sent {
                answers.push(Ok(Imported::Skipped(
                    "declined where it was made: it moved no money, and is not replayed".to_owned(),
                )));
                continue;
            }
            let result = results.next().ok_or_else(|| {
                Rejection::new(ErrorCode::Internal, "a transfer's answer is missing")
            })?;
            answers.push(self.imported(caller, &record, result).await);
        }
        answers.extend(refused.map(Err));
        Ok(answers)
    }

    /// What the ledger's answer to a replayed record means for the import.
    async fn imported(
        &self,
        caller: &Principal,
        record: &TransferRecord,
        result: TransferResult,
    ) -> Result<Imported, Rejection> {
        match result {
            TransferResult::Committed(transfer) if transfer.status == TransferStatus::Declined => {
                let reason = transfer.error.map(|e| format!("{}: {}", e.code, e.message));
                Err(Rejection::new(
                    ErrorCode::InvalidArgument,
                    format!(
                        "transfer {} ({}) was {} where it was made, but is declined here: {}",
                        record.id,
                        record.idempotency_key,
                        record.status,
                        reason.unwrap_or_default()
                    ),
                ))
            }
            TransferResult::Committed(transfer) => Ok(Imported::Created(transfer.id.to_string())),
            TransferResult::Replayed(transfer) => Ok(Imported::Existing(transfer.id.to_string())),
            TransferResult::Rejected(rejection)
                if rejection.code == ErrorCode::IdempotencyKeyReused =>
            {
                // The key is taken here by a request that differs in what is not money (a
                // hold's remaining time, a contract's own fields): the same movement is the
                // same transfer.
                let key = IdempotencyKey::parse(&record.idempotency_key)?;
                let found = self
                    .store()
                    .transfer_by_key(&caller.tenant, &key)
                    .await
                    .map_err(unavailable)?;
                match found {
                    Some(transfer) if same_movement(&transfer, record) => {
                        Ok(Imported::Existing(transfer.id.to_string()))
                    }
                    _ => Err(rejection),
                }
            }
            TransferResult::Rejected(rejection) => Err(rejection),
        }
    }
}

/// The account `record` describes, in the caller's tenant; `None` for one kopek opens itself.
fn new_account(caller: &Principal, record: AccountRecord) -> Result<Option<NewAccount>, Rejection> {
    if SERVER_PREFIXES.iter().any(|prefix| record.id.starts_with(prefix)) {
        return Ok(None);
    }
    Ok(Some(NewAccount {
        id: AccountId::parse_reference(&record.id)?.in_tenant(&caller.tenant),
        currency: Currency::parse(&record.currency)?,
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

/// The request that makes `record` again, at `now`.
fn replay_request(
    caller: &Principal,
    record: &TransferRecord,
    now: Timestamp,
) -> Result<TransferRequest, Rejection> {
    let tenant = &caller.tenant;
    let kind = TransferKind::parse(&record.kind).ok_or_else(|| {
        Rejection::invalid(format!("transfer kind '{}' is not known", record.kind))
    })?;
    let action = Action::parse(&record.action).ok_or_else(|| {
        Rejection::invalid(format!("transfer action '{}' is not known", record.action))
    })?;
    let account = |text: &Option<String>, side: &str| -> Result<AccountId, Rejection> {
        let text = text.as_deref().ok_or_else(|| {
            Rejection::invalid(format!("transfer {} has no {side} account", record.id))
        })?;
        Ok(AccountId::parse_reference(text)?.in_tenant(tenant))
    };
    let currency = || -> Result<Currency, Rejection> {
        Currency::parse(record.currency.as_deref().unwrap_or_default())
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
            let hold = (action == Action::Hold).then(|| Hold {
                timeout_seconds: record.expires_at.as_deref().map(|at| remaining(at, now)),
            });
            Movement::Move {
                debit_account: account(&record.debit_account_id, "debit")?,
                credit_account: account(&record.credit_account_id, "credit")?,
                amount: record.amount_minor,
                currency: currency()?,
                hold,
            }
        }
        Action::Capture => Movement::Capture {
            pending_id: pending()?,
            amount: Some(Amount::new(record.amount_minor)?),
        },
        Action::Void => Movement::Void { pending_id: pending()? },
    };
    let open_if_missing = match &movement {
        Movement::Move { debit_account, credit_account, currency, .. } => {
            [debit_account, credit_account]
                .into_iter()
                .filter(|id| SERVER_PREFIXES.iter().any(|prefix| id.name().starts_with(prefix)))
                .map(|id| NewAccount {
                    id: id.clone(),
                    currency: *currency,
                    owner: None,
                    kind: AccountKind::System,
                    overdraft: Overdraft::NONE,
                    metadata: Metadata::default(),
                })
                .collect()
        }
        _ => Vec::new(),
    };
    Ok(TransferRequest {
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
    })
}

/// Whole seconds from `now` until `expires_at`, at least one: a hold that expired where it
/// was made expires here a second after it is held again.
fn remaining(expires_at: &str, now: Timestamp) -> u32 {
    let Ok(at) = Timestamp::parse_rfc3339(expires_at) else {
        return 1;
    };
    let seconds = (at.as_unix_micros() - now.as_unix_micros()) / 1_000_000;
    u32::try_from(seconds.max(1)).unwrap_or(u32::MAX)
}

/// Whether `transfer` moves what `record` moved: kind, action, accounts, amount, currency.
fn same_movement(transfer: &kopek_core::Transfer, record: &TransferRecord) -> bool {
    let name = |id: &Option<AccountId>| id.as_ref().map(|id| id.name().to_owned());
    transfer.kind.as_str() == record.kind
        && transfer.action.as_str() == record.action
        && name(&transfer.debit_account) == record.debit_account_id
        && name(&transfer.credit_account) == record.credit_account_id
        && transfer.amount == record.amount_minor
        && transfer.currency.map(|c| c.code().to_owned()) == record.currency
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(action: &str, expires_at: Option<&str>) -> TransferRecord {
        TransferRecord {
            id: "01J00000000000000000000000".into(),
            idempotency_key: "k-1".into(),
            kind: "transfer".into(),
            action: action.into(),
            status: "pending".into(),
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

    #[test]
    fn a_hold_keeps_what_is_left_of_its_time_and_an_expired_one_a_second() {
        let now = Timestamp::parse_rfc3339("2026-01-02T00:00:00Z").expect("time");
        let caller = Principal::anonymous();
        let hold = |expires: &str| {
            let request = replay_request(&caller, &record("hold", Some(expires)), now).expect("ok");
            match request.movement {
                Movement::Move { hold: Some(hold), .. } => hold.timeout_seconds,
                other => panic!("a hold, not {other:?}"),
            }
        };
        assert_eq!(hold("2026-01-02T00:01:00Z"), Some(60));
        assert_eq!(hold("2026-01-01T00:00:00Z"), Some(1));
    }

    #[test]
    fn a_replay_keeps_the_key_and_opens_the_accounts_kopek_opens_itself() {
        let now = Timestamp::parse_rfc3339("2026-01-02T00:00:00Z").expect("time");
        let request =
            replay_request(&Principal::anonymous(), &record("post", None), now).expect("ok");
        assert_eq!(request.idempotency_key.as_str(), "k-1");
        assert_eq!(request.open_if_missing.len(), 1, "orders:USD, not a");
        assert_eq!(request.open_if_missing[0].id.name(), "orders:USD");
        assert_eq!(request.details.description, "d");
        let mut leg = record("hold", None);
        leg.fx = Some(serde::de::IgnoredAny);
        let refused = replay_request(&Principal::anonymous(), &leg, now).expect_err("refused");
        assert!(refused.message.contains("held conversion"), "{}", refused.message);
        let mut capture = record("capture", None);
        capture.pending_id = Some("nonsense".into());
        assert!(replay_request(&Principal::anonymous(), &capture, now).is_err());
    }
}
