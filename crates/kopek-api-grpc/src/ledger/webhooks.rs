//! Webhook subscriptions, their deliveries and redelivery.

use super::*;

fn webhook_message(hook: &kopek_store::Webhook, with_secret: bool) -> pb::Webhook {
    pb::Webhook {
        id: hook.id.clone(),
        url: hook.url.clone(),
        event_types: hook.event_types.clone(),
        secret: if with_secret { hook.secret.clone() } else { String::new() },
        created_at: hook.created_at.to_rfc3339(),
    }
}

fn delivery_message(
    delivery: &kopek_store::Delivery,
    attempts: &[kopek_store::Attempt],
) -> pb::WebhookDelivery {
    pb::WebhookDelivery {
        id: delivery.id.clone(),
        event_id: delivery.event_id.clone(),
        event_type: delivery.event_type.clone(),
        status: delivery.status.as_str().to_owned(),
        attempts: delivery.attempts,
        next_attempt_at: if delivery.status == kopek_store::DeliveryStatus::Pending {
            delivery.next_attempt_at.to_rfc3339()
        } else {
            String::new()
        },
        last_status_code: delivery.last_status_code.map_or(0, u32::from),
        last_error: delivery.last_error.clone().unwrap_or_default(),
        created_at: delivery.created_at.to_rfc3339(),
        updated_at: delivery.updated_at.to_rfc3339(),
        attempt_log: attempts
            .iter()
            .map(|attempt| pb::WebhookAttempt {
                attempt: attempt.attempt,
                at: attempt.at.to_rfc3339(),
                status_code: attempt.status_code.map_or(0, u32::from),
                error: attempt.error.clone().unwrap_or_default(),
                duration_ms: attempt.duration_ms,
            })
            .collect(),
    }
}

impl LedgerService {
    async fn webhook(&self, tenant: &Tenant, id: &str) -> Result<kopek_store::Webhook, Status> {
        self.engine()
            .store()
            .webhooks(Some(tenant.as_str()))
            .await
            .map_err(store_status)?
            .into_iter()
            .find(|hook| hook.id == id)
            .ok_or_else(|| Status::not_found(format!("webhook {id} not found")))
    }
}

pub(super) async fn create_webhook(
    service: &LedgerService,
    request: Request<pb::CreateWebhookRequest>,
) -> Result<Response<pb::CreateWebhookResponse>, Status> {
    let caller = principal(&request)?;
    let tenant = caller.tenant.clone();
    let request = request.into_inner();
    let subscribed = subscribe(
        service.engine().store().as_ref(),
        NewWebhook {
            tenant: tenant.as_str(),
            idempotency_key: &request.idempotency_key,
            url: &request.url,
            event_types: &request.event_types,
            secret: (!request.secret.is_empty()).then_some(request.secret.as_str()),
            targets: service.webhook_targets,
        },
    )
    .await;
    match subscribed {
        Ok((hook, created)) => Ok(Response::new(pb::CreateWebhookResponse {
            webhook: Some(webhook_message(&hook, true)),
            created,
        })),
        Err(SubscribeError::Invalid(message)) => Err(Status::invalid_argument(message)),
        Err(error @ SubscribeError::KeyReused) => Err(Status::already_exists(error.to_string())),
        Err(SubscribeError::Store(error)) => Err(store_status(error)),
    }
}

pub(super) async fn list_webhooks(
    service: &LedgerService,
    request: Request<pb::ListWebhooksRequest>,
) -> Result<Response<pb::ListWebhooksResponse>, Status> {
    let caller = principal(&request)?;
    let tenant = caller.tenant.clone();
    let hooks =
        service.engine().store().webhooks(Some(tenant.as_str())).await.map_err(store_status)?;
    let webhooks = hooks.iter().map(|hook| webhook_message(hook, false)).collect();
    Ok(Response::new(pb::ListWebhooksResponse { webhooks }))
}

pub(super) async fn delete_webhook(
    service: &LedgerService,
    request: Request<pb::DeleteWebhookRequest>,
) -> Result<Response<pb::DeleteWebhookResponse>, Status> {
    let caller = principal(&request)?;
    let tenant = caller.tenant.clone();
    let id = request.into_inner().id;
    let deleted = service
        .engine()
        .store()
        .delete_webhook(tenant.as_str(), &id, kopek_store::wall_clock())
        .await
        .map_err(store_status)?;
    if deleted {
        Ok(Response::new(pb::DeleteWebhookResponse {}))
    } else {
        Err(Status::not_found(format!("webhook {id} not found")))
    }
}

pub(super) async fn list_webhook_deliveries(
    service: &LedgerService,
    request: Request<pb::ListWebhookDeliveriesRequest>,
) -> Result<Response<pb::ListWebhookDeliveriesResponse>, Status> {
    let caller = principal(&request)?;
    let tenant = caller.tenant.clone();
    let request = request.into_inner();
    let store = service.engine().store();
    let hook = service.webhook(&tenant, &request.webhook_id).await?;
    let limit = page_size(request.limit);
    let mut deliveries = Vec::new();
    for delivery in store.deliveries(&hook.id, limit).await.map_err(store_status)? {
        let attempts = store.delivery_attempts(&delivery.id).await.map_err(store_status)?;
        deliveries.push(delivery_message(&delivery, &attempts));
    }
    Ok(Response::new(pb::ListWebhookDeliveriesResponse { deliveries }))
}

pub(super) async fn redeliver_webhook(
    service: &LedgerService,
    request: Request<pb::RedeliverWebhookRequest>,
) -> Result<Response<pb::RedeliverWebhookResponse>, Status> {
    let caller = principal(&request)?;
    let tenant = caller.tenant.clone();
    let request = request.into_inner();
    let store = service.engine().store();
    let hook = service.webhook(&tenant, &request.webhook_id).await?;
    let not_found = || Status::not_found(format!("delivery {} not found", request.delivery_id));
    let redelivered = store
        .redeliver(
            &hook.id,
            &request.delivery_id,
            service.webhook_max_attempts,
            kopek_store::wall_clock(),
        )
        .await
        .map_err(store_status)?;
    if !redelivered {
        return Err(not_found());
    }
    let delivery =
        store.delivery(&request.delivery_id).await.map_err(store_status)?.ok_or_else(not_found)?;
    let attempts = store.delivery_attempts(&delivery.id).await.map_err(store_status)?;
    Ok(Response::new(pb::RedeliverWebhookResponse {
        delivery: Some(delivery_message(&delivery, &attempts)),
    }))
}
