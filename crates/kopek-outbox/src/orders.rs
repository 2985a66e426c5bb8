//! The safety net of the payment saga. The `payments` consumer pays each order when its
//! `OrderCreated` event arrives; should an order still be pending a while later (no consumer
//! running, a broker that lost the event, a consumer stuck on a broken batch), this sweep
//! pays it. The payment is keyed by the order, so the sweep and the consumer together still
//! pay an order at most once.

use kopek_core::{NewOrder, Order};
use kopek_intake::Intake;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const SWEEP_INTERVAL: Duration = Duration::from_secs(3);
/// How old a pending order must be before the sweep pays it instead of the consumer.
const SWEEP_AFTER: Duration = Duration::from_secs(30);
const SWEEP_BATCH: usize = 500;

pub fn start(intake: Intake, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut sweep_timer = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = sweep_timer.tick() => sweep(&intake).await,
            }
        }
    })
}

async fn sweep(intake: &Intake) {
    let now = kopek_store::wall_clock().as_unix_micros();
    let after = i64::try_from(SWEEP_AFTER.as_micros()).unwrap_or(i64::MAX);
    match intake.store().pending_orders(SWEEP_BATCH).await {
        Ok(orders) => {
            for order in orders {
                if now.saturating_sub(order.created_at.as_unix_micros()) >= after {
                    tracing::info!(order = %order.id, "order still pending; the sweep pays it");
                    pay(intake, &order).await;
                }
            }
        }
        Err(error) => tracing::warn!(%error, "could not list pending orders"),
    }
}

async fn pay(intake: &Intake, order: &Order) {
    let request = NewOrder {
        id: order.id.clone(),
        user: order.user.clone(),
        amount: order.amount,
        currency: order.currency,
    };
    let paid = match intake.pay_order(order.tenant.clone(), request) {
        Ok(payment) => payment.wait().await.map(|_| ()),
        Err(rejection) => Err(rejection),
    };
    if let Err(rejection) = paid {
        let error = rejection.message;
        tracing::warn!(%error, order = %order.id, "order payment not applied; the sweep retries");
    }
}
