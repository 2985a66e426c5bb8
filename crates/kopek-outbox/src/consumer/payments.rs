//! The payment saga's consumer: `OrderCreated` -> pay the order. The payment and the
//! order's new status (PAID, or FAILED with the reason) commit in one `PayOrder` command,
//! keyed by the order, together with the inbox mark of the event: an order is debited once
//! however often its event arrives, and `PaymentCompleted`/`OrderPaid` (or
//! `PaymentFailed`/`OrderFailed`) follow in the same transaction.

use super::{ConsumerError, Handler, Incoming};
use async_trait::async_trait;
use kopek_core::{Currency, EventKind, InboxMark, NewOrder, OrderId, OrderResult, Tenant, UserId};
use kopek_intake::Intake;
use serde_json::Value;

pub const NAME: &str = "payments";

pub struct Payments {
    intake: Intake,
}

impl Payments {
    pub fn new(intake: Intake) -> Payments {
        Payments { intake }
    }
}

/// The order an `OrderCreated` event describes.
fn order_of(event: &Incoming) -> Result<(Tenant, NewOrder), String> {
    let text = |name: &str| {
        event
            .subject_field(name)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("the order has no {name}"))
    };
    let tenant = Tenant::parse(&event.tenant).map_err(|rejection| rejection.message)?;
    let order = NewOrder {
        id: OrderId::parse(text("id")?).map_err(|rejection| rejection.message)?,
        user: UserId::parse(text("user_id")?).map_err(|rejection| rejection.message)?,
        amount: event
            .subject_field("amount_minor")
            .and_then(Value::as_i64)
            .ok_or_else(|| "the order has no amount_minor".to_owned())?,
        currency: Currency::parse(text("currency")?).map_err(|rejection| rejection.message)?,
    };
    Ok((tenant, order))
}

#[async_trait]
impl Handler for Payments {
    fn name(&self) -> &'static str {
        NAME
    }

    fn wants(&self) -> &'static [EventKind] {
        &[EventKind::OrderCreated]
    }

    async fn handle(&self, events: &[Incoming]) -> Result<(), ConsumerError> {
        let store = self.intake.store();
        // Queue every payment first so they share the writer's batches, then wait for all.
        let mut payments = Vec::new();
        for event in events {
            let seen = store
                .inbox_contains(NAME, &event.id)
                .await
                .map_err(|error| ConsumerError(error.to_string()))?;
            if seen {
                continue;
            }
            let (tenant, order) = match order_of(event) {
                Ok(order) => order,
                Err(reason) => {
                    tracing::warn!(event = %event.id, %reason, "OrderCreated event without a payable order; skipped");
                    continue;
                }
            };
            let order_id = order.id.clone();
            let inbox = InboxMark { consumer: NAME.to_owned(), event_id: event.id.clone() };
            let payment = self
                .intake
                .pay_order_for(tenant, order, inbox)
                .await
                .map_err(|rejection| ConsumerError(rejection.message))?;
            payments.push((order_id, payment));
        }
        for (order_id, payment) in payments {
            match payment.wait().await.map_err(|rejection| ConsumerError(rejection.message))? {
                OrderResult::Settled(order) => {
                    tracing::debug!(order = %order_id, status = order.status.as_str(), "order settled");
                }
                OrderResult::Rejected(rejection) => {
                    tracing::warn!(order = %order_id, reason = %rejection.message, "order payment refused");
                }
                other @ (OrderResult::Created(_) | OrderResult::Existed(_)) => {
                    tracing::warn!(order = %order_id, ?other, "unexpected answer to PayOrder");
                }
            }
        }
        Ok(())
    }
}
