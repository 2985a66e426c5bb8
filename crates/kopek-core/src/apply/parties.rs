//! Users and orders: creating them, and paying an order with its status in the same batch.

use super::*;

impl Ledger<'_> {
    pub(super) fn create_user(&mut self, tenant: &Tenant, request: &NewUser) -> UserResult {
        if let Err(rejection) = request.validate() {
            return UserResult::Rejected(rejection);
        }
        let id = match &request.id {
            Some(id) => {
                if let Some(existing) = self.users.get(id) {
                    // Ids are keyed by their tenant, so a user found is the tenant's.
                    assert_eq!(existing.tenant, *tenant);
                    return if existing.name == request.name {
                        UserResult::Existed(existing.clone())
                    } else {
                        UserResult::Rejected(Rejection::new(
                            ErrorCode::AccountExists,
                            format!("user {} already exists with another name", id.name()),
                        ))
                    };
                }
                id.clone()
            }
            None => {
                self.last_user_number += 1;
                self.allocated_any_user = true;
                UserId::from_number(self.last_user_number).in_tenant(tenant)
            }
        };
        let user = User {
            id: id.clone(),
            tenant: tenant.clone(),
            name: request.name.clone(),
            created_at: self.now,
        };
        let account_id = id.account(request.currency);
        // Another surface may have opened the user's account already; it is theirs either way.
        let account = match self.accounts.get(&account_id) {
            Some(account) => {
                assert_eq!(account.tenant, *tenant);
                account.clone()
            }
            None => {
                let account = self.new_account_from(tenant, &id.new_account(request.currency));
                self.open(tenant, account.clone());
                account
            }
        };
        self.users.insert(id.clone(), user.clone());
        self.users_created.push(id);
        self.emit(tenant, EventKind::UserCreated, Subject::User(user.clone()), &[&account_id]);
        UserResult::Created(user, account)
    }

    pub(super) fn create_order(&mut self, tenant: &Tenant, request: &NewOrder) -> OrderResult {
        if let Err(rejection) = request.validate() {
            return OrderResult::Rejected(rejection);
        }
        if let Some(existing) = self.orders.get(&request.id) {
            let same = existing.user == request.user
                && existing.amount == request.amount
                && existing.currency == request.currency
                && existing.tenant == *tenant;
            return if same {
                OrderResult::Existed(existing.clone())
            } else {
                OrderResult::Rejected(Rejection::new(
                    ErrorCode::IdempotencyKeyReused,
                    format!("order {} already exists with other fields", request.id.name()),
                ))
            };
        }
        let order = Order {
            id: request.id.clone(),
            tenant: tenant.clone(),
            user: request.user.clone(),
            amount: request.amount,
            currency: request.currency,
            status: OrderStatus::Pending,
            failure: None,
            payment_id: None,
            created_at: self.now,
            updated_at: self.now,
        };
        self.orders.insert(order.id.clone(), order.clone());
        self.orders_created.push(order.id.clone());
        self.emit(tenant, EventKind::OrderCreated, Subject::Order(order.clone()), &[]);
        OrderResult::Created(order)
    }

    pub(super) fn pay_order(&mut self, tenant: &Tenant, request: &NewOrder) -> OrderResult {
        let Some(order) = self.orders.get(&request.id).cloned() else {
            return OrderResult::Rejected(Rejection::invalid(format!(
                "no order {}",
                request.id.name()
            )));
        };
        let same = order.user == request.user
            && order.amount == request.amount
            && order.currency == request.currency
            && order.tenant == *tenant;
        if !same {
            return OrderResult::Rejected(Rejection::invalid(format!(
                "order {} has other fields",
                request.id.name()
            )));
        }
        if order.status != OrderStatus::Pending {
            return OrderResult::Settled(order);
        }
        let payment = TransferRequest {
            idempotency_key: order.id.payment_key(),
            kind: TransferKind::Payment,
            movement: Movement::Move {
                debit_account: order.user.account(order.currency),
                credit_account: Order::shop_account(tenant, order.currency),
                amount: order.amount,
                currency: order.currency,
                hold: None,
            },
            details: crate::transfer::Details {
                category: "order".to_owned(),
                description: format!("order {}", order.id.name()),
                metadata: Default::default(),
            },
            effective_at: None,
            open_if_missing: vec![Order::shop_new_account(tenant, order.currency)],
            fingerprint_extra: String::new(),
        };
        let (payment_id, failure) = match self.transfer_once(tenant, &Authority::Ledger, &payment) {
            TransferResult::Committed(transfer) | TransferResult::Replayed(transfer) => {
                (Some(transfer.id), transfer.error.clone())
            }
            TransferResult::Rejected(rejection) => (None, Some(rejection)),
        };
        let mut settled = order;
        settled.payment_id = payment_id;
        settled.status = if failure.is_none() { OrderStatus::Paid } else { OrderStatus::Failed };
        settled.failure = failure;
        settled.updated_at = self.now;
        self.orders.insert(settled.id.clone(), settled.clone());
        self.orders_changed.push(settled.id.clone());
        let (payment_event, order_event) = match settled.status {
            OrderStatus::Paid => (EventKind::PaymentCompleted, EventKind::OrderPaid),
            _ => (EventKind::PaymentFailed, EventKind::OrderFailed),
        };
        let buyer = settled.user.account(settled.currency);
        self.emit(tenant, payment_event, Subject::Order(settled.clone()), &[&buyer]);
        self.emit(tenant, order_event, Subject::Order(settled.clone()), &[&buyer]);
        OrderResult::Settled(settled)
    }
}
