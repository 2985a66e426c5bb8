//! The REST shapes of gRPC answers, for the client commands' `--json`: a script reads the same
//! object from `kopek ... --json` as from the REST API (`kopek_api_http::dto`), whichever door
//! it used. Built into the REST structs themselves, so a field added there is a field to fill
//! here.

use kopek_api_http::dto::{AccountDto, BalanceAtDto, BalanceDto, TransferDto};
use kopek_api_http::error::ErrorDetail;
use kopek_api_http::fx::{TermsDto, TransferFxDto};
use kopek_proto::kopek::v1 as pb;

/// `TRANSFER_STATUS_POSTED` -> `posted`: the REST word of a wire enum value.
fn word(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_ascii_lowercase()
}

/// Empty text is absent (proto3 cannot say null).
fn given(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

pub fn balance(balance: Option<&pb::Balance>) -> BalanceDto {
    let balance = balance.cloned().unwrap_or_default();
    BalanceDto {
        posted: balance.posted,
        posted_minor: balance.posted_minor,
        pending_out_minor: balance.pending_out_minor,
        pending_in_minor: balance.pending_in_minor,
        available: given(&balance.available),
        available_minor: balance.available_minor,
    }
}

pub fn balance_at(response: &pb::GetBalanceResponse) -> BalanceAtDto {
    BalanceAtDto {
        account_id: response.account_id.clone(),
        currency: response.currency.clone(),
        balance: balance(response.balance.as_ref()),
        as_of: given(&response.as_of),
    }
}

pub fn account(account: &pb::Account) -> AccountDto {
    let kind = pb::AccountKind::try_from(account.kind).map_or("", |kind| kind.as_str_name());
    let status =
        pb::AccountStatus::try_from(account.status).map_or("", |status| status.as_str_name());
    AccountDto {
        id: account.id.clone(),
        currency: account.currency.clone(),
        owner: given(&account.owner),
        kind: word(kind, "ACCOUNT_KIND_"),
        overdraft_limit_minor: account.overdraft_limit_minor,
        status: word(status, "ACCOUNT_STATUS_"),
        metadata: account.metadata.clone().into_iter().collect(),
        balance: balance(account.balance.as_ref()),
        created_at: account.created_at.clone(),
        updated_at: account.updated_at.clone(),
    }
}

pub fn error(error: &pb::Error) -> ErrorDetail {
    let code = pb::ErrorCode::try_from(error.code).map_or_else(
        |_| error.code.to_string(),
        |code| code.as_str_name().trim_start_matches("ERROR_CODE_").to_owned(),
    );
    ErrorDetail { code, message: error.message.clone() }
}

fn terms(terms: &pb::ConversionTerms) -> TermsDto {
    let side = pb::ConversionSide::try_from(terms.side).map_or("", |side| side.as_str_name());
    TermsDto {
        from: terms.from.clone(),
        to: terms.to.clone(),
        side: word(side, "CONVERSION_SIDE_"),
        sell_amount: terms.sell_amount.clone(),
        sell_amount_minor: terms.sell_amount_minor,
        buy_amount: terms.buy_amount.clone(),
        buy_amount_minor: terms.buy_amount_minor,
        spread_amount: terms.spread_amount.clone(),
        spread_amount_minor: terms.spread_amount_minor,
        spread_bp: terms.spread_bp,
        rate: terms.rate.clone(),
        rate_exact: terms.rate_exact.clone(),
        mid_rate: terms.mid_rate.clone(),
        rate_path: terms.rate_path.clone(),
        rounding: "half_even".to_owned(),
    }
}

pub fn transfer(transfer: &pb::Transfer) -> TransferDto {
    let kind = pb::TransferKind::try_from(transfer.kind).map_or("", |kind| kind.as_str_name());
    let action =
        pb::TransferAction::try_from(transfer.action).map_or("", |action| action.as_str_name());
    let status =
        pb::TransferStatus::try_from(transfer.status).map_or("", |status| status.as_str_name());
    TransferDto {
        id: transfer.id.clone(),
        idempotency_key: transfer.idempotency_key.clone(),
        kind: word(kind, "TRANSFER_KIND_"),
        action: word(action, "TRANSFER_ACTION_"),
        status: word(status, "TRANSFER_STATUS_"),
        debit_account_id: given(&transfer.debit_account_id),
        credit_account_id: given(&transfer.credit_account_id),
        amount: given(&transfer.amount),
        amount_minor: transfer.amount_minor,
        currency: given(&transfer.currency),
        pending_id: given(&transfer.pending_id),
        error: transfer.error.as_ref().map(error),
        expires_at: given(&transfer.expires_at),
        captured_amount_minor: transfer.captured_amount_minor,
        category: transfer.category.clone(),
        description: transfer.description.clone(),
        metadata: transfer.metadata.clone().into_iter().collect(),
        effective_at: transfer.effective_at.clone(),
        committed_at: transfer.committed_at.clone(),
        updated_at: transfer.updated_at.clone(),
        fx: transfer.fx.as_ref().map(|fx| TransferFxDto {
            quote_id: fx.quote_id.clone(),
            leg: fx.leg.clone(),
            payer_account_id: fx.payer_account_id.clone(),
            payee_account_id: fx.payee_account_id.clone(),
            terms: fx.terms.as_ref().map(terms).unwrap_or_else(|| terms(&Default::default())),
        }),
        entries: None,
    }
}
