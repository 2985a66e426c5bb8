//! The kopek.v1 requests the integration tests and the examples make again and again, built
//! one way: a new account, a transfer between two accounts, a deposit (all in USD).

use kopek_proto::kopek::v1 as pb;

pub fn new_account(id: &str, currency: &str) -> pb::NewAccount {
    pb::NewAccount { id: id.to_owned(), currency: currency.to_owned(), ..Default::default() }
}

/// A transfer of `minor` US cents from `debit` to `credit`, posted at once.
pub fn post(key: &str, debit: &str, credit: &str, minor: i64) -> pb::TransferRequest {
    pb::TransferRequest {
        idempotency_key: key.to_owned(),
        kind: pb::TransferKind::Transfer as i32,
        action: pb::TransferAction::Post as i32,
        debit_account_id: debit.to_owned(),
        credit_account_id: credit.to_owned(),
        amount_minor: minor,
        currency: "USD".to_owned(),
        ..Default::default()
    }
}

/// A deposit of `minor` US cents into `account` (from the world account).
pub fn deposit(key: &str, account: &str, minor: i64) -> pb::TransferRequest {
    pb::TransferRequest {
        kind: pb::TransferKind::Deposit as i32,
        debit_account_id: String::new(),
        ..post(key, "", account, minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deposit_is_a_post_from_the_world() {
        let deposit = deposit("d-1", "alice", 250);
        assert_eq!(deposit.kind, pb::TransferKind::Deposit as i32);
        assert_eq!((deposit.debit_account_id.as_str(), deposit.amount_minor), ("", 250));
        let post = post("t-1", "alice", "bob", 5);
        assert_eq!(post.action, pb::TransferAction::Post as i32);
        assert_eq!((post.credit_account_id.as_str(), post.currency.as_str()), ("bob", "USD"));
    }
}
