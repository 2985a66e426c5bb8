//! The kopek.v1 protobuf messages that ask for transfers, read as the intake's inputs: what
//! `CreateTransfers`, `StreamTransfers` and a broker message in protobuf say. Proto3 cannot
//! tell an absent field from its default, so `""` and `0` mean "not given" here.

use crate::account::AccountInput;
use crate::contract::Transaction;
use crate::transfer::{Action, TransferInput};
use kopek_core::{AccountKind, IdempotencyKey, Rejection, TransferKind};
use kopek_proto::kopek::v1 as pb;
use kopek_proto::transaction as contract;

/// A kopek.v1 `TransferRequest` in the intake's words.
pub fn transfer_input(request: pb::TransferRequest) -> Result<TransferInput, Rejection> {
    let idempotency_key = IdempotencyKey::parse_client(&request.idempotency_key)?;
    let kind = kind(request.kind)?;
    let action = match pb::TransferAction::try_from(request.action) {
        Ok(pb::TransferAction::Unspecified | pb::TransferAction::Post) => Action::Post,
        Ok(pb::TransferAction::Hold) => Action::Hold {
            timeout_seconds: (request.timeout_seconds > 0).then_some(request.timeout_seconds),
        },
        Ok(pb::TransferAction::Capture) => Action::Capture { pending_id: request.pending_id },
        Ok(pb::TransferAction::Void) => Action::Void { pending_id: request.pending_id },
        Err(_) => {
            return Err(Rejection::invalid(format!("unknown transfer action {}", request.action)));
        }
    };
    let text = |text: String| (!text.is_empty()).then_some(text);
    Ok(TransferInput {
        idempotency_key,
        kind,
        action,
        debit_account_id: text(request.debit_account_id),
        credit_account_id: text(request.credit_account_id),
        amount: text(request.amount),
        amount_minor: (request.amount_minor != 0).then_some(request.amount_minor),
        currency: text(request.currency),
        category: text(request.category),
        description: text(request.description),
        metadata: request.metadata.into_iter().collect(),
        effective_at: text(request.effective_at),
        quote_id: text(request.quote_id),
        to_currency: None,
    })
}

/// A kopek.v1 `NewAccount` in the intake's words.
pub fn account_input(account: pb::NewAccount) -> Result<AccountInput, Rejection> {
    let kind = match pb::AccountKind::try_from(account.kind) {
        Ok(pb::AccountKind::Unspecified | pb::AccountKind::User) => AccountKind::User,
        Ok(pb::AccountKind::System) => AccountKind::System,
        Err(_) => return Err(Rejection::invalid(format!("unknown account kind {}", account.kind))),
    };
    Ok(AccountInput {
        id: account.id,
        currency: Some(account.currency),
        owner: Some(account.owner),
        kind,
        overdraft_limit: None,
        // 0 is proto3's "not given": no overdraft either way.
        overdraft_limit_minor: (account.overdraft_limit_minor != 0)
            .then_some(account.overdraft_limit_minor),
        unbounded_overdraft: account.unbounded_overdraft,
        metadata: account.metadata.into_iter().collect(),
    })
}

/// The streaming contract's message in the intake's words.
pub fn transaction(message: contract::Transaction) -> Transaction {
    Transaction {
        transaction_id: message.transaction_id,
        user_id: message.user_id,
        category: message.category,
        amount: message.amount,
        currency: message.currency,
        timestamp: message.timestamp,
    }
}

fn kind(value: i32) -> Result<TransferKind, Rejection> {
    Ok(match pb::TransferKind::try_from(value) {
        Ok(pb::TransferKind::Unspecified | pb::TransferKind::Transfer) => TransferKind::Transfer,
        Ok(pb::TransferKind::Deposit) => TransferKind::Deposit,
        Ok(pb::TransferKind::Withdrawal) => TransferKind::Withdrawal,
        Ok(pb::TransferKind::Payment) => TransferKind::Payment,
        Ok(pb::TransferKind::Purchase) => TransferKind::Purchase,
        Ok(pb::TransferKind::Fee) => TransferKind::Fee,
        Ok(pb::TransferKind::Reversal) => TransferKind::Reversal,
        Ok(pb::TransferKind::FxLeg) => TransferKind::FxLeg,
        Err(_) => return Err(Rejection::invalid(format!("unknown transfer kind {value}"))),
    })
}
