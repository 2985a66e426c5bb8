//! The streaming contract's `Transaction` (`shared/spec/transaction.proto`) as a transfer,
//! for `StreamTransactions` and for the same message arriving through a broker.
//!
//! Each transaction becomes one transfer on the customer's account `user:<userId>:<CUR>`:
//! - `deposit` / `topup` (any case): credit the customer from `world:<CUR>`; the customer's
//!   account opens with their first deposit;
//! - `withdrawal`: debit the customer to `world:<CUR>`;
//! - anything else is a purchase: debit the customer, credit the system account
//!   `category:<category>:<CUR>` (bytes outside `A-Z a-z 0-9 . -` written `_XX`), so spending
//!   per category is that account's balance.
//!
//! `transactionId` is the idempotency key, in this contract's own key space (`txn:`).

use kopek_core::{
    AccountId, AccountKind, Amount, Currency, Details, IdempotencyKey, Movement, NewAccount,
    Overdraft, Rejection, Tenant, Timestamp, TransferKind, TransferRequest,
};

/// The contract's message, field for field.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Transaction {
    pub transaction_id: String,
    pub user_id: String,
    pub category: String,
    /// Major units, as the contract's 32-bit float.
    pub amount: f32,
    pub currency: String,
    /// RFC 3339; a time without an offset is UTC; empty: the commit time.
    pub timestamp: String,
}

/// The customer's account in one currency, the same id on every surface.
pub fn user_account(user_id: &str, currency: Currency) -> Result<AccountId, Rejection> {
    AccountId::parse(&format!("user:{user_id}:{currency}")).map_err(|_| {
        Rejection::invalid(format!(
            "userId '{}' must be 1 to 119 characters of A-Z a-z 0-9 _ . : -",
            user_id.chars().take(64).collect::<String>()
        ))
    })
}

/// The system account that collects one spending category: `category:<category>:<CUR>` with
/// the category as sent, bytes outside `A-Z a-z 0-9 . -` written `_XX` (hex), so every distinct
/// category has its own account and the id reads back to the category.
/// Tenants other than the default have their own: `category:<tenant>:<category>:<CUR>`.
pub fn category_account(
    tenant: &Tenant,
    category: &str,
    currency: Currency,
) -> Result<AccountId, Rejection> {
    let mut escaped = String::with_capacity(category.len());
    for byte in category.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-') {
            escaped.push(char::from(byte));
        } else {
            escaped.push_str(&format!("_{byte:02X}"));
        }
    }
    AccountId::parse(&format!("category:{}{escaped}:{currency}", tenant.qualifier())).map_err(
        |_| {
            Rejection::invalid(
                "category is too long for an account id; keep it under 100 characters",
            )
        },
    )
}

/// Parses one transaction into the transfer it asks for.
pub fn transfer_request(
    transaction: &Transaction,
    tenant: &Tenant,
) -> Result<TransferRequest, Rejection> {
    if transaction.transaction_id.is_empty() {
        return Err(Rejection::invalid("transactionId is required"));
    }
    let idempotency_key = IdempotencyKey::scoped("txn", &transaction.transaction_id)?;
    if transaction.user_id.is_empty() {
        return Err(Rejection::invalid("userId is required"));
    }
    if transaction.currency.is_empty() {
        return Err(Rejection::invalid("currency is required"));
    }
    let currency = Currency::parse(&transaction.currency)?;
    let amount = Amount::from_f32_major(transaction.amount, currency)?;
    let user = user_account(&transaction.user_id, currency)?;
    let effective_at = match transaction.timestamp.as_str() {
        "" => None,
        text => Some(
            Timestamp::parse_rfc3339(text)
                .map_err(|error| Rejection::invalid(format!("timestamp: {error}")))?,
        ),
    };
    let category = transaction.category.trim();
    let world = AccountId::world_in(tenant, currency);
    let (kind, debit_account, credit_account, open_if_missing) =
        match category.to_lowercase().as_str() {
            "" => return Err(Rejection::invalid("category is required")),
            "deposit" | "topup" => {
                let mut account = NewAccount::user(user.clone(), currency);
                account.owner = Some(transaction.user_id.clone());
                (TransferKind::Deposit, world, user, vec![account])
            }
            "withdrawal" => (TransferKind::Withdrawal, user, world, Vec::new()),
            _ => {
                let collector = category_account(tenant, category, currency)?;
                let account = NewAccount {
                    id: collector.clone(),
                    currency,
                    owner: None,
                    kind: AccountKind::System,
                    overdraft: Overdraft::NONE,
                    metadata: Default::default(),
                };
                (TransferKind::Purchase, user, collector, vec![account])
            }
        };
    let request = TransferRequest {
        idempotency_key,
        kind,
        movement: Movement::Move {
            debit_account,
            credit_account,
            amount: amount.minor(),
            currency,
            hold: None,
        },
        details: Details {
            category: category.to_owned(),
            description: String::new(),
            metadata: Default::default(),
        },
        effective_at,
        open_if_missing,
        // The contract counts these as content too: a resend with another timestamp or
        // category text is a reuse of the id, not a replay.
        fingerprint_extra: format!(
            "ts={}|category={category}",
            effective_at.map(Timestamp::to_rfc3339).unwrap_or_default()
        ),
    };
    request.validate()?;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kopek_core::ErrorCode;

    fn transaction(category: &str, amount: f32, currency: &str) -> Transaction {
        Transaction {
            transaction_id: "t1".into(),
            user_id: "u-1".into(),
            category: category.into(),
            amount,
            currency: currency.into(),
            timestamp: String::new(),
        }
    }

    fn movement(request: &TransferRequest) -> (String, String, i64) {
        match &request.movement {
            Movement::Move { debit_account, credit_account, amount, .. } => {
                (debit_account.to_string(), credit_account.to_string(), *amount)
            }
            other => panic!("a move was expected, not {other:?}"),
        }
    }

    #[test]
    fn categories_decide_the_movement() {
        let deposit =
            transfer_request(&transaction("TopUp", 19.99, "usd"), &Tenant::default_tenant())
                .expect("valid");
        assert_eq!(movement(&deposit), ("world:USD".into(), "user:u-1:USD".into(), 1_999));
        assert_eq!(deposit.open_if_missing.len(), 1, "the first deposit opens the account");
        let withdrawal =
            transfer_request(&transaction("WITHDRAWAL", 5.0, "EUR"), &Tenant::default_tenant())
                .expect("valid");
        assert_eq!(movement(&withdrawal), ("user:u-1:EUR".into(), "world:EUR".into(), 500));
        assert!(withdrawal.open_if_missing.is_empty());
        let purchase =
            transfer_request(&transaction("Eating Out", 12.5, "USD"), &Tenant::default_tenant())
                .expect("valid");
        assert_eq!(
            movement(&purchase),
            ("user:u-1:USD".into(), "category:Eating_20Out:USD".into(), 1_250)
        );
        assert_eq!(purchase.details.category, "Eating Out");
        let cafe = transfer_request(&transaction("Café_1", 1.0, "USD"), &Tenant::default_tenant())
            .expect("valid");
        assert_eq!(movement(&cafe).1, "category:Caf_C3_A9_5F1:USD");
        let food = transfer_request(&transaction("Food", 1.0, "USD"), &Tenant::default_tenant())
            .expect("valid");
        assert_eq!(movement(&food).1, "category:Food:USD", "a plain category is its own name");
        assert_eq!(
            purchase.idempotency_key.as_str(),
            "txn:t1",
            "the contract has a key space of its own"
        );
    }

    #[test]
    fn timestamp_and_category_take_part_in_the_replay_comparison() {
        let fingerprint = |t: Transaction| {
            transfer_request(&t, &Tenant::default_tenant()).expect("valid").fingerprint()
        };
        let base = transaction("deposit", 1.0, "USD");
        let later = Transaction { timestamp: "2024-01-01T00:00:00Z".into(), ..base.clone() };
        let shouted = Transaction { category: "DEPOSIT".into(), ..base.clone() };
        assert_ne!(fingerprint(base.clone()), fingerprint(later));
        assert_ne!(fingerprint(base.clone()), fingerprint(shouted));
        let same_instant =
            Transaction { timestamp: "2024-01-01T02:00:00+02:00".into(), ..base.clone() };
        let utc = Transaction { timestamp: "2024-01-01T00:00:00".into(), ..base };
        assert_eq!(
            fingerprint(same_instant),
            fingerprint(utc),
            "one instant written two ways is the same content"
        );
    }

    #[test]
    fn malformed_transactions_fail_with_a_clear_code() {
        let code =
            |t: Transaction| transfer_request(&t, &Tenant::default_tenant()).err().map(|r| r.code);
        assert_eq!(code(transaction("Food", 19.995, "USD")), Some(ErrorCode::InvalidAmount));
        assert_eq!(code(transaction("Food", 0.0, "USD")), Some(ErrorCode::InvalidAmount));
        assert_eq!(code(transaction("Food", -1.0, "USD")), Some(ErrorCode::InvalidAmount));
        assert_eq!(code(transaction("Food", f32::NAN, "USD")), Some(ErrorCode::InvalidAmount));
        assert_eq!(code(transaction("Food", f32::INFINITY, "USD")), Some(ErrorCode::InvalidAmount));
        assert_eq!(code(transaction("Food", 1.5, "JPY")), Some(ErrorCode::InvalidAmount));
        assert_eq!(code(transaction("Food", 150_000.07, "USD")), Some(ErrorCode::InvalidAmount));
        assert_eq!(code(transaction("Food", 1.0, "XXX")), Some(ErrorCode::UnknownCurrency));
        assert_eq!(code(transaction("", 1.0, "USD")), Some(ErrorCode::InvalidArgument));
        let user = Transaction { user_id: "a b".into(), ..transaction("Food", 1.0, "USD") };
        assert_eq!(code(user), Some(ErrorCode::InvalidArgument));
        let missing_id =
            Transaction { transaction_id: String::new(), ..transaction("Food", 1.0, "USD") };
        assert_eq!(code(missing_id), Some(ErrorCode::InvalidArgument));
        let bad_time = Transaction { timestamp: "soon".into(), ..transaction("Food", 1.0, "USD") };
        assert_eq!(code(bad_time), Some(ErrorCode::InvalidArgument));
        let naive = Transaction {
            timestamp: "2023-01-04T00:00:00".into(),
            ..transaction("Food", 1.0, "USD")
        };
        let parsed =
            transfer_request(&naive, &Tenant::default_tenant()).expect("a naive time is UTC");
        assert_eq!(
            parsed.effective_at.map(Timestamp::to_rfc3339),
            Some("2023-01-04T00:00:00.000000Z".into())
        );
    }
}
