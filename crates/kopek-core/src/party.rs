//! Users and orders: the people who own accounts, and what they buy.
//!
//! A user's account in a currency is `user:<user id>:<CUR>`, the same id on every surface. An
//! order is paid by a transfer of kind `payment` from the buyer's account to the shop's system
//! account `orders:<CUR>`, with the order id as its idempotency key; the payment and the order's
//! new status commit together.

use crate::account::{AccountKind, NewAccount, Overdraft};
use crate::error::{ErrorCode, Rejection};
use crate::ids::{AccountId, IdempotencyKey, Tenant, TransferId, check_key, tenant_keyed};
use crate::money::Currency;
use crate::time::Timestamp;

pub const USER_ID_BYTES_MAX: usize = 100;
pub const USER_NAME_BYTES_MAX: usize = 200;
pub const ORDER_ID_BYTES_MAX: usize = 64;

fn id_alphabet(text: &str, max: usize) -> bool {
    !text.is_empty()
        && text.len() <= max
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b':' | b'-'))
}

/// A user id: 1 to 100 characters of `A-Z a-z 0-9 _ . : -`. All-digit ids are the ones the
/// server allocates.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct UserId(String);

impl UserId {
    pub fn parse(text: &str) -> Result<UserId, Rejection> {
        if !id_alphabet(text, USER_ID_BYTES_MAX) {
            return Err(Rejection::invalid(format!(
                "user id must be 1 to {USER_ID_BYTES_MAX} characters of A-Z a-z 0-9 _ . : -"
            )));
        }
        Ok(UserId(text.to_owned()))
    }

    pub fn from_number(number: u64) -> UserId {
        UserId(number.to_string())
    }

    /// A user id as a store keeps it (its key; see `ids::TENANT_SEPARATOR`).
    pub fn from_key(key: &str) -> Result<UserId, Rejection> {
        check_key(key, "user", |name| id_alphabet(name, USER_ID_BYTES_MAX))?;
        Ok(UserId(key.to_owned()))
    }

    pub fn number(&self) -> Option<u64> {
        self.name().parse().ok()
    }

    /// The user's account in `currency`, in the user's tenant.
    pub fn account(&self, currency: Currency) -> AccountId {
        AccountId::parse(&format!("user:{}:{currency}", self.name()))
            .expect("user ids fit the account alphabet")
            .in_tenant(&self.tenant())
    }

    /// The request to open the user's account in `currency`, for open-on-first-use.
    pub fn new_account(&self, currency: Currency) -> NewAccount {
        NewAccount {
            id: self.account(currency),
            currency,
            owner: Some(self.name().to_owned()),
            kind: AccountKind::User,
            overdraft: Overdraft::NONE,
            metadata: Default::default(),
        }
    }
}

tenant_keyed!(UserId);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    /// User ids are global; a user is seen only by its own tenant.
    pub tenant: Tenant,
    pub name: String,
    pub created_at: Timestamp,
}

/// A request to create a user; without an id the server allocates the next number. The
/// user's account in `currency` opens with the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewUser {
    pub id: Option<UserId>,
    pub name: String,
    pub currency: Currency,
}

impl NewUser {
    pub fn validate(&self) -> Result<(), Rejection> {
        if self.name.is_empty()
            || self.name.len() > USER_NAME_BYTES_MAX
            || self.name.chars().any(char::is_control)
        {
            return Err(Rejection::invalid(format!(
                "name must be 1 to {USER_NAME_BYTES_MAX} bytes of text"
            )));
        }
        if self.id.as_ref().is_some_and(|id| id.number().is_some()) {
            return Err(Rejection::invalid("all-digit user ids are allocated by the server"));
        }
        Ok(())
    }
}

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct OrderId(String);

impl OrderId {
    pub fn parse(text: &str) -> Result<OrderId, Rejection> {
        if !id_alphabet(text, ORDER_ID_BYTES_MAX) {
            return Err(Rejection::invalid(format!(
                "order id must be 1 to {ORDER_ID_BYTES_MAX} characters of A-Z a-z 0-9 _ . : -"
            )));
        }
        Ok(OrderId(text.to_owned()))
    }

    /// An order id as a store keeps it (its key; see `ids::TENANT_SEPARATOR`).
    pub fn from_key(key: &str) -> Result<OrderId, Rejection> {
        check_key(key, "order", |name| id_alphabet(name, ORDER_ID_BYTES_MAX))?;
        Ok(OrderId(key.to_owned()))
    }

    /// The idempotency key of the order's payment: one payment per order, ever (keys are
    /// per tenant already).
    pub fn payment_key(&self) -> IdempotencyKey {
        IdempotencyKey::parse(&format!("order:{}", self.name())).expect("order ids fit a key")
    }
}

tenant_keyed!(OrderId);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderStatus {
    Pending,
    Paid,
    Failed,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Paid => "PAID",
            OrderStatus::Failed => "FAILED",
        }
    }

    pub fn parse(text: &str) -> Option<OrderStatus> {
        [OrderStatus::Pending, OrderStatus::Paid, OrderStatus::Failed]
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    pub id: OrderId,
    pub tenant: Tenant,
    pub user: UserId,
    /// Minor units of `currency`.
    pub amount: i64,
    pub currency: Currency,
    pub status: OrderStatus,
    /// Why the payment failed.
    pub failure: Option<Rejection>,
    pub payment_id: Option<TransferId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Order {
    /// The shop's account that receives payments for orders in `currency`.
    /// The account a tenant's orders are paid into: `orders:<CUR>` in the default tenant,
    /// `orders:<tenant>:<CUR>` in the others.
    pub fn shop_account(tenant: &Tenant, currency: Currency) -> AccountId {
        AccountId::parse(&format!("orders:{}{currency}", tenant.qualifier()))
            .expect("a valid account id")
            .in_tenant(tenant)
    }

    pub fn shop_new_account(tenant: &Tenant, currency: Currency) -> NewAccount {
        NewAccount {
            id: Order::shop_account(tenant, currency),
            currency,
            owner: None,
            kind: AccountKind::System,
            overdraft: Overdraft::NONE,
            metadata: Default::default(),
        }
    }
}

/// A request to create an order; the id is chosen by the caller and is its idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewOrder {
    pub id: OrderId,
    pub user: UserId,
    pub amount: i64,
    pub currency: Currency,
}

impl NewOrder {
    pub fn validate(&self) -> Result<(), Rejection> {
        if self.amount <= 0 {
            return Err(Rejection::new(
                ErrorCode::InvalidAmount,
                "an order amount must be positive",
            ));
        }
        Ok(())
    }
}
