//! Accounts: open, read, list, update, statements, balances and spending.

use super::*;
use kopek_intake::account::account_request;

/// Longest owner id `GetSpending` looks up.
const OWNER_BYTES_MAX: usize = 256;

pub(super) async fn create_accounts(
    service: &LedgerService,
    request: Request<pb::CreateAccountsRequest>,
) -> Result<Response<pb::CreateAccountsResponse>, Status> {
    let caller = principal(&request)?;
    let accounts = request.into_inner().accounts;
    if accounts.len() > limits::ACCOUNTS_PER_REQUEST_MAX {
        return Err(Status::invalid_argument(format!(
            "a request opens at most {} accounts",
            limits::ACCOUNTS_PER_REQUEST_MAX
        )));
    }
    let parsed: Vec<_> = accounts
        .into_iter()
        .map(|account| {
            wire::account_input(account).and_then(|input| account_request(&caller, input))
        })
        .collect();
    let valid: Vec<_> = parsed.iter().filter_map(|item| item.as_ref().ok().cloned()).collect();
    let mut committed = if valid.is_empty() {
        Vec::new()
    } else {
        service.intake.create_accounts(&caller, valid).await.map_err(|r| rejection_status(&r))?
    }
    .into_iter();
    let results = parsed
        .into_iter()
        .map(|item| match item.map(|_| committed.next()) {
            Err(rejection) => account_result(AccountResult::Rejected(rejection)),
            Ok(Some(result)) => account_result(result),
            Ok(None) => account_result(AccountResult::Rejected(Rejection::new(
                ErrorCode::Internal,
                "missing result",
            ))),
        })
        .collect();
    Ok(Response::new(pb::CreateAccountsResponse { results }))
}

pub(super) async fn get_account(
    service: &LedgerService,
    request: Request<pb::GetAccountRequest>,
) -> Result<Response<pb::GetAccountResponse>, Status> {
    let caller = principal(&request)?;
    let id = convert::account_id(&request.into_inner().id).map_err(|r| rejection_status(&r))?;
    let account =
        service.intake.visible_account(&caller, &id).await.map_err(|r| rejection_status(&r))?;
    Ok(Response::new(pb::GetAccountResponse { account: Some(convert::account(&account)) }))
}

pub(super) async fn get_accounts(
    service: &LedgerService,
    request: Request<pb::GetAccountsRequest>,
) -> Result<Response<pb::GetAccountsResponse>, Status> {
    let caller = principal(&request)?;
    let ids = request.into_inner().ids;
    if ids.len() > limits::PAGE_SIZE_MAX {
        return Err(Status::invalid_argument(format!(
            "at most {} ids at once",
            limits::PAGE_SIZE_MAX
        )));
    }
    let mut accounts = Vec::with_capacity(ids.len());
    for text in &ids {
        let id = convert::account_id(text).map_err(|r| rejection_status(&r))?;
        let account = service.intake.account_seen(&caller, &id).await;
        if let Some(account) = account.map_err(|r| rejection_status(&r))? {
            accounts.push(convert::account(&account));
        }
    }
    Ok(Response::new(pb::GetAccountsResponse { accounts }))
}

pub(super) async fn list_accounts(
    service: &LedgerService,
    request: Request<pb::ListAccountsRequest>,
) -> Result<Response<pb::ListAccountsResponse>, Status> {
    let caller = principal(&request)?;
    let request = request.into_inner();
    let after = match request.page_token.as_str() {
        "" => None,
        token => Some(
            convert::account_id(token)
                .map_err(|_| Status::invalid_argument("page_token is not valid"))?,
        ),
    };
    let owner = (!request.owner.is_empty()).then(|| request.owner.clone());
    let size = page_size(request.page_size);
    let accounts = service.intake.list_accounts(&caller, owner, after.as_ref(), size).await;
    let accounts = accounts.map_err(|r| rejection_status(&r))?;
    let next_page_token = if accounts.len() == size {
        accounts.last().map(|a| a.id.name().to_owned()).unwrap_or_default()
    } else {
        String::new()
    };
    let accounts = accounts.iter().map(convert::account).collect();
    Ok(Response::new(pb::ListAccountsResponse { accounts, next_page_token }))
}

pub(super) async fn update_account(
    service: &LedgerService,
    request: Request<pb::UpdateAccountRequest>,
) -> Result<Response<pb::UpdateAccountResponse>, Status> {
    let caller = principal(&request)?;
    let request = request.into_inner();
    let reject = |r: Rejection| rejection_status(&r);
    let update = AccountUpdate {
        id: convert::account_id(&request.id).map_err(reject)?,
        overdraft: request
            .overdraft_limit_minor
            .map(Overdraft::limited)
            .transpose()
            .map_err(reject)?,
        status: request.status.map(convert::status).transpose().map_err(reject)?,
    };
    match service.intake.update_account(&caller, update).await {
        Ok(account) => Ok(Response::new(pb::UpdateAccountResponse {
            account: Some(convert::account(&account)),
        })),
        Err(rejection) => Err(rejection_status(&rejection)),
    }
}

pub(super) async fn list_entries(
    service: &LedgerService,
    request: Request<pb::ListEntriesRequest>,
) -> Result<Response<pb::ListEntriesResponse>, Status> {
    let caller = principal(&request)?;
    let request = request.into_inner();
    let id = convert::account_id(&request.account_id).map_err(|r| rejection_status(&r))?;
    let after = match request.page_token.as_str() {
        "" => None,
        token => Some(
            token
                .parse::<u64>()
                .map_err(|_| Status::invalid_argument("page_token is not valid"))?,
        ),
    };
    let store = service.engine().store();
    let account =
        service.intake.visible_account(&caller, &id).await.map_err(|r| rejection_status(&r))?;
    let page = store
        .entries(&account.id, after, page_size(request.page_size))
        .await
        .map_err(store_status)?;
    Ok(Response::new(pb::ListEntriesResponse {
        entries: page.items.iter().map(convert::entry).collect(),
        next_page_token: page.next_cursor.map(|cursor| cursor.to_string()).unwrap_or_default(),
    }))
}

pub(super) async fn get_balance(
    service: &LedgerService,
    request: Request<pb::GetBalanceRequest>,
) -> Result<Response<pb::GetBalanceResponse>, Status> {
    let caller = principal(&request)?;
    let request = request.into_inner();
    let id = convert::account_id(&request.account_id).map_err(|r| rejection_status(&r))?;
    let as_of =
        fields::timestamp(Some(&request.as_of), "as_of").map_err(|r| rejection_status(&r))?;
    let store = service.engine().store();
    let not_found = || {
        rejection_status(&Rejection::new(
            ErrorCode::AccountNotFound,
            format!("account {id} not found"),
        ))
    };
    let account =
        service.intake.visible_account(&caller, &id).await.map_err(|r| rejection_status(&r))?;
    let balance = match as_of {
        None => convert::balance(&account),
        Some(as_of) => {
            // "As of T" includes entries effective at T: everything before T + 1µs.
            let before = Timestamp::from_unix_micros(as_of.as_unix_micros().saturating_add(1));
            let posted = store
                .balance_before(&account.id, before)
                .await
                .map_err(store_status)?
                .ok_or_else(not_found)?;
            convert::posted_balance(posted, account.currency)
        }
    };
    Ok(Response::new(pb::GetBalanceResponse {
        account_id: id.to_string(),
        currency: account.currency.code().to_owned(),
        balance: Some(balance),
        as_of: as_of.map(Timestamp::to_rfc3339).unwrap_or_default(),
    }))
}

pub(super) async fn get_spending(
    service: &LedgerService,
    request: Request<pb::GetSpendingRequest>,
) -> Result<Response<pb::GetSpendingResponse>, Status> {
    let caller = principal(&request)?;
    let user = request.into_inner().user_id;
    if user.is_empty() || user.len() > OWNER_BYTES_MAX {
        return Err(Status::invalid_argument(format!(
            "user_id must be 1 to {OWNER_BYTES_MAX} bytes"
        )));
    }
    let totals = service.intake.spending(&caller, &user).await.map_err(|r| rejection_status(&r))?;
    let totals = totals
        .into_iter()
        .map(|total| pb::SpendingTotal {
            total: kopek_core::Currency::parse(&total.currency)
                .map(|currency| kopek_core::format_minor(total.total_minor, currency))
                .unwrap_or_default(),
            category: total.category,
            currency: total.currency,
            total_minor: total.total_minor,
            transfers: total.transfers,
            updated_at: total.updated_at.to_rfc3339(),
        })
        .collect();
    Ok(Response::new(pb::GetSpendingResponse { totals }))
}

fn account_result(result: AccountResult) -> pb::AccountResult {
    match result {
        AccountResult::Created(account) => pb::AccountResult {
            account: Some(convert::account(&account)),
            created: true,
            error: None,
        },
        AccountResult::Existed(account) | AccountResult::Updated(account) => pb::AccountResult {
            account: Some(convert::account(&account)),
            created: false,
            error: None,
        },
        AccountResult::Rejected(rejection) => pb::AccountResult {
            account: None,
            created: false,
            error: Some(convert::error(&rejection)),
        },
    }
}
