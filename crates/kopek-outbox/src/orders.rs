//! The in-process payment saga: an order is created PENDING (with its `OrderCreated` event,
//! in one transaction); this worker sees the event and asks the ledger to pay the order. The
//! payment and the order's new status (PAID, or FAILED with the reason) commit together in
//! one `PayOrder`, keyed by the order id, so however often an order is offered it is paid at
//! most once. On start and every few seconds the worker also sweeps orders still pending, so
//! a crash or a failed attempt only delays a payment.

use crate::Feed;
use kopek_core::{CommandBody, NewOrder, Order, OrderId};
use kopek_engine::Engine;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const SWEEP_INTERVAL: Duration = Duration::from_secs(3);
const SWEEP_BATCH: usize = 500;

pub fn start(engine: Engine, feed: Feed, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut events = feed.subscribe_live();
        sweep(&engine).await;
        let mut sweep_timer = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                event = events.recv() => {
                    let Some(event) = event else { return };
                    if event.kind == "OrderCreated"
                        && let Ok(id) = OrderId::parse(&event.subject_id)
                    {
                        match engine.store().order(&id).await {
                            Ok(Some(order)) => pay(&engine, &order).await,
                            Ok(None) => tracing::warn!(order = %id, "created order not found"),
                            Err(error) => tracing::warn!(%error, "could not read an order; the sweep retries"),
                        }
                    }
                }
                _ = sweep_timer.tick() => sweep(&engine).await,
            }
        }
    })
}

async fn sweep(engine: &Engine) {
    match engine.store().pending_orders(SWEEP_BATCH).await {
        Ok(orders) => {
            for order in orders {
                pay(engine, &order).await;
            }
        }
        Err(error) => tracing::warn!(%error, "could not list pending orders"),
    }
}

async fn pay(engine: &Engine, order: &Order) {
    let request = NewOrder {
        id: order.id.clone(),
        user: order.user.clone(),
        amount: order.amount,
        currency: order.currency,
    };
    if let Err(error) = engine.submit(order.tenant.clone(), CommandBody::PayOrder(request)).await {
        tracing::warn!(%error, order = %order.id, "order payment not applied; the sweep retries");
    }
}
