//! The payment saga's consumer: `OrderCreated` -> pay the order. The payment and the
//! order's new status (PAID, or FAILED with the reason) commit in one `PayOrder` command,
//! keyed by the order, together with the inbox mark of the event: an order is debited once
//! however often its event arrives, and `PaymentCompleted`/`OrderPaid` (or
//! `PaymentFailed`/`OrderFailed`) follow in the same transaction.

use super::{ConsumerError, Handler, Incoming};
use async_trait::async_trait;
use kopek_core::{
    Command, CommandBody, CommandResult, Currency, EventKind, InboxMark, NewOrder, OrderId,
    OrderResult, Tenant, UserId,
};
use kopek_engine::Engine;
use serde_json::Value;

pub const NAME: &str = "payments";

pub struct Payments {
    engine: Engine,
}

impl Payments {
    pub fn new(engine: Engine) -> Payments {
        Payments { engine }
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
        let store = self.engine.store();
        // Queue every payment first so they share the writer's batches, then wait for all.
        let mut tickets = Vec::new();
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
            let mut command =
                Command::new(tenant, kopek_core::Authority::Ledger, CommandBody::PayOrder(order));
            command.inbox =
                Some(InboxMark { consumer: NAME.to_owned(), event_id: event.id.clone() });
            let ticket = self
                .engine
                .enqueue_command(command)
                .await
                .map_err(|error| ConsumerError(error.to_string()))?;
            tickets.push((order_id, ticket));
        }
        for (order_id, ticket) in tickets {
            match ticket.wait().await.map_err(|error| ConsumerError(error.to_string()))? {
                CommandResult::Order(OrderResult::Settled(order)) => {
                    tracing::debug!(order = %order_id, status = order.status.as_str(), "order settled");
                }
                CommandResult::Order(OrderResult::Rejected(rejection)) => {
                    tracing::warn!(order = %order_id, reason = %rejection.message, "order payment refused");
                }
                other => tracing::warn!(order = %order_id, ?other, "unexpected answer to PayOrder"),
            }
        }
        Ok(())
    }
}
