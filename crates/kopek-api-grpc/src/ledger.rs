//! `kopek.v1.Ledger`: unary RPCs and the pipelined `StreamTransfers`.

use crate::auth::{key_watch, principal};
use crate::convert;
use crate::pipeline::{Answer, AnswerStream, Started, pipelined, revoked_status};
use crate::status::{rejection_status, store_status};
use kopek_auth::{Ended, Ending, FinishOnDrop, Principal, access};
use kopek_core::fx::Side;
use kopek_core::{
    AccountResult, AccountUpdate, Currency, ErrorCode, IdempotencyKey, Linking, NewQuote,
    Overdraft, QuoteId, QuoteResult, RateResult, RateSet, Rejection, Tenant, Timestamp, limits,
};
use kopek_engine::{Engine, EngineError};
use kopek_events::Feed;
use kopek_events::filter::EventFilter;
use kopek_events::subscriptions::{NewWebhook, SubscribeError, subscribe};
use kopek_events::targets::Targets;
use kopek_intake::{Batch, Intake, fields, wire};
use kopek_proto::kopek::v1 as pb;
use kopek_store::StoredEvent;
use serde_json::Value;
use std::pin::Pin;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// Longest owner id `GetSpending` looks up.
const OWNER_BYTES_MAX: usize = 256;
/// Events a `StreamEvents` call buffers for a slow reader; past it the feed waits.
const STREAM_EVENTS_BUFFER: usize = 256;

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

/// An outbox event as the gRPC `Event`: the balances typed, the whole document as JSON.
fn event_message(event: &StoredEvent, payload: &Value) -> pb::Event {
    let text = |value: &Value, name: &str| {
        value.get(name).and_then(Value::as_str).unwrap_or_default().to_owned()
    };
    let integer = |value: &Value, name: &str| value.get(name).and_then(Value::as_i64);
    let balances = payload
        .get("balances")
        .and_then(Value::as_array)
        .map(|balances| {
            balances
                .iter()
                .map(|balance| pb::EventBalance {
                    account_id: text(balance, "account_id"),
                    currency: text(balance, "currency"),
                    posted_minor: integer(balance, "posted_minor").unwrap_or(0),
                    pending_out_minor: integer(balance, "pending_out_minor").unwrap_or(0),
                    pending_in_minor: integer(balance, "pending_in_minor").unwrap_or(0),
                    available_minor: integer(balance, "available_minor"),
                })
                .collect()
        })
        .unwrap_or_default();
    pb::Event {
        sequence: event.sequence,
        id: event.id.clone(),
        r#type: event.kind.clone(),
        tenant: event.tenant.clone(),
        at: event.at.to_rfc3339(),
        subject_type: text(payload, "subject_type"),
        subject_id: event.subject_id.clone(),
        balances,
        document_json: String::from_utf8(kopek_events::envelope::document(event))
            .unwrap_or_default(),
    }
}

pub struct LedgerService {
    /// The front door to the write path, with the rates it prices with.
    intake: Intake,
    feed: Feed,
    /// The attempts a redelivered webhook delivery gets.
    webhook_max_attempts: u32,
    /// Which addresses webhook URLs may reach.
    webhook_targets: Targets,
    /// Cancelled when the server drains: streams stop reading and finish what they took.
    shutdown: CancellationToken,
}

impl LedgerService {
    pub fn new(
        intake: Intake,
        feed: Feed,
        webhook_max_attempts: u32,
        webhook_targets: Targets,
        shutdown: CancellationToken,
    ) -> LedgerService {
        LedgerService { intake, feed, webhook_max_attempts, webhook_targets, shutdown }
    }

    fn engine(&self) -> &Engine {
        self.intake.engine()
    }

    fn fx(&self) -> &kopek_fx::Fx {
        self.intake.fx()
    }

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

/// Reads a transfers request through the intake: one answer per transfer, in request order.
async fn read_batch(
    intake: &Intake,
    caller: &Principal,
    requests: Vec<pb::TransferRequest>,
    linked: bool,
) -> Result<Batch, Rejection> {
    Batch::check_size(requests.len())?;
    let mut parsed = Vec::with_capacity(requests.len());
    for request in requests {
        parsed.push(match wire::transfer_input(request) {
            Ok(input) => intake.transfer(&caller.tenant, input).await,
            Err(rejection) => Err(rejection),
        });
    }
    let linking = if linked { Linking::Linked } else { Linking::Independent };
    Batch::new(parsed, linking)
}

/// Every answer of a batch as the wire's `TransferResult`, each committed one converted by
/// `convert` (the full or the compact answer).
fn wire_results(
    results: Vec<kopek_core::TransferResult>,
    convert: fn(kopek_core::TransferResult) -> pb::TransferResult,
) -> Vec<pb::TransferResult> {
    results
        .into_iter()
        .map(|result| match result {
            kopek_core::TransferResult::Rejected(rejection) => pb::TransferResult {
                transfer: None,
                replayed: false,
                error: Some(convert::error(&rejection)),
            },
            result => convert(result),
        })
        .collect()
}

/// Why the write path did not take a request (`EngineError::rejection`, shared with REST).
pub fn engine_rejection(error: EngineError) -> Rejection {
    error.rejection()
}

/// A page size from the wire (0: not given), by the intake's rule.
fn page_size(requested: u32) -> usize {
    fields::page_size(Some(usize::try_from(requested).unwrap_or(usize::MAX)))
}

#[tonic::async_trait]
impl pb::ledger_server::Ledger for LedgerService {
    async fn create_accounts(
        &self,
        request: Request<pb::CreateAccountsRequest>,
    ) -> Result<Response<pb::CreateAccountsResponse>, Status> {
        let caller = principal(&request)?;
        let accounts = request.into_inner().accounts;
        if accounts.len() > limits::ACCOUNTS_PER_REQUEST_MAX {
            return Err(Status::invalid_argument(format!(
                "a request opens at most {} accounts",
                limits::ACCOUNTS_PER_REQUEST_MAX
            )));
        }
        let parsed: Vec<_> = accounts
            .into_iter()
            .map(|account| {
                let mut account = convert::new_account(account)?;
                account.owner = caller.owner_of_new_account(account.owner.take());
                Ok(account)
            })
            .collect();
        let valid: Vec<_> = parsed.iter().filter_map(|item| item.as_ref().ok().cloned()).collect();
        let mut committed = if valid.is_empty() {
            Vec::new()
        } else {
            self.intake.create_accounts(&caller, valid).await.map_err(|r| rejection_status(&r))?
        }
        .into_iter();
        let results = parsed
            .into_iter()
            .map(|item| match item.map(|_| committed.next()) {
                Err(rejection) => account_result(AccountResult::Rejected(rejection)),
                Ok(Some(result)) => account_result(result),
                Ok(None) => account_result(AccountResult::Rejected(Rejection::new(
                    ErrorCode::Internal,
                    "missing result",
                ))),
            })
            .collect();
        Ok(Response::new(pb::CreateAccountsResponse { results }))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::GetAccountResponse>, Status> {
        let caller = principal(&request)?;
        let id = convert::account_id(&request.into_inner().id).map_err(|r| rejection_status(&r))?;
        let account = access::visible_account(self.engine().store().as_ref(), &caller, &id)
            .await
            .map_err(|r| rejection_status(&r))?;
        Ok(Response::new(pb::GetAccountResponse { account: Some(convert::account(&account)) }))
    }

    async fn get_accounts(
        &self,
        request: Request<pb::GetAccountsRequest>,
    ) -> Result<Response<pb::GetAccountsResponse>, Status> {
        let caller = principal(&request)?;
        let ids = request.into_inner().ids;
        if ids.len() > limits::PAGE_SIZE_MAX {
            return Err(Status::invalid_argument(format!(
                "at most {} ids at once",
                limits::PAGE_SIZE_MAX
            )));
        }
        let mut accounts = Vec::with_capacity(ids.len());
        for text in &ids {
            let id = convert::account_id(text).map_err(|r| rejection_status(&r))?;
            let id = id.in_tenant(&caller.tenant);
            let account = self.engine().store().account(&id).await.map_err(store_status)?;
            if let Some(account) = account.filter(|account| caller.sees(account)) {
                accounts.push(convert::account(&account));
            }
        }
        Ok(Response::new(pb::GetAccountsResponse { accounts }))
    }

    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        let caller = principal(&request)?;
        let request = request.into_inner();
        let after = match request.page_token.as_str() {
            "" => None,
            token => Some(
                convert::account_id(token)
                    .map_err(|_| Status::invalid_argument("page_token is not valid"))?
                    .in_tenant(&caller.tenant),
            ),
        };
        let asked = (!request.owner.is_empty()).then(|| request.owner.clone());
        // A key bound to a user lists that user's accounts, whatever owner it asks for.
        let bound = caller.user.as_ref().map(|user| user.name().to_owned());
        if bound.is_some() && asked.is_some() && asked != bound {
            return Ok(Response::new(pb::ListAccountsResponse::default()));
        }
        let owner = bound.or(asked);
        let size = page_size(request.page_size);
        let accounts = self
            .engine()
            .store()
            .list_accounts(Some(caller.tenant.as_str()), owner.as_deref(), after.as_ref(), size)
            .await
            .map_err(store_status)?;
        let next_page_token = if accounts.len() == size {
            accounts.last().map(|a| a.id.name().to_owned()).unwrap_or_default()
        } else {
            String::new()
        };
        let accounts = accounts.iter().map(convert::account).collect();
        Ok(Response::new(pb::ListAccountsResponse { accounts, next_page_token }))
    }

    async fn update_account(
        &self,
        request: Request<pb::UpdateAccountRequest>,
    ) -> Result<Response<pb::UpdateAccountResponse>, Status> {
        let caller = principal(&request)?;
        let request = request.into_inner();
        let reject = |r: Rejection| rejection_status(&r);
        let update = AccountUpdate {
            id: convert::account_id(&request.id).map_err(reject)?,
            overdraft: request
                .overdraft_limit_minor
                .map(Overdraft::limited)
                .transpose()
                .map_err(reject)?,
            status: request.status.map(convert::status).transpose().map_err(reject)?,
        };
        match self.intake.update_account(&caller, update).await {
            Ok(account) => Ok(Response::new(pb::UpdateAccountResponse {
                account: Some(convert::account(&account)),
            })),
            Err(rejection) => Err(rejection_status(&rejection)),
        }
    }

    async fn create_transfers(
        &self,
        request: Request<pb::CreateTransfersRequest>,
    ) -> Result<Response<pb::CreateTransfersResponse>, Status> {
        let caller = principal(&request)?;
        let request = request.into_inner();
        let batch = read_batch(&self.intake, &caller, request.transfers, request.linked)
            .await
            .map_err(|r| rejection_status(&r))?;
        // Queued from the call's own span, which the batch links to.
        let results = self
            .intake
            .enqueue(&caller, batch)
            .map_err(|r| rejection_status(&r))?
            .results()
            .await
            .map_err(|r| rejection_status(&r))?;
        Ok(Response::new(pb::CreateTransfersResponse {
            results: wire_results(results, convert::transfer_result),
        }))
    }

    async fn get_transfer(
        &self,
        request: Request<pb::GetTransferRequest>,
    ) -> Result<Response<pb::GetTransferResponse>, Status> {
        let caller = principal(&request)?;
        let tenant = caller.tenant.clone();
        let store = self.engine().store();
        let found = match request.into_inner().lookup {
            Some(pb::get_transfer_request::Lookup::Id(id)) => {
                let id = kopek_core::TransferId::parse(&id).map_err(|r| rejection_status(&r))?;
                store
                    .transfer(id)
                    .await
                    .map_err(store_status)?
                    .filter(|transfer| transfer.tenant == tenant)
            }
            Some(pb::get_transfer_request::Lookup::IdempotencyKey(key)) => {
                let key =
                    kopek_core::IdempotencyKey::parse(&key).map_err(|r| rejection_status(&r))?;
                store.transfer_by_key(&tenant, &key).await.map_err(store_status)?
            }
            None => return Err(Status::invalid_argument("give id or idempotency_key")),
        };
        let visible = match &found {
            Some(transfer) => access::sees_transfer(store.as_ref(), &caller, transfer)
                .await
                .map_err(|r| rejection_status(&r))?,
            None => false,
        };
        match found.filter(|_| visible) {
            Some(transfer) => Ok(Response::new(pb::GetTransferResponse {
                transfer: Some(convert::transfer(&transfer)),
            })),
            None => Err(Status::not_found("transfer not found")),
        }
    }

    async fn list_entries(
        &self,
        request: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<pb::ListEntriesResponse>, Status> {
        let caller = principal(&request)?;
        let request = request.into_inner();
        let id = convert::account_id(&request.account_id).map_err(|r| rejection_status(&r))?;
        let after = match request.page_token.as_str() {
            "" => None,
            token => Some(
                token
                    .parse::<u64>()
                    .map_err(|_| Status::invalid_argument("page_token is not valid"))?,
            ),
        };
        let store = self.engine().store();
        let account = access::visible_account(store.as_ref(), &caller, &id)
            .await
            .map_err(|r| rejection_status(&r))?;
        let page = store
            .entries(&account.id, after, page_size(request.page_size))
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::ListEntriesResponse {
            entries: page.items.iter().map(convert::entry).collect(),
            next_page_token: page.next_cursor.map(|cursor| cursor.to_string()).unwrap_or_default(),
        }))
    }

    async fn get_balance(
        &self,
        request: Request<pb::GetBalanceRequest>,
    ) -> Result<Response<pb::GetBalanceResponse>, Status> {
        let caller = principal(&request)?;
        let request = request.into_inner();
        let id = convert::account_id(&request.account_id).map_err(|r| rejection_status(&r))?;
        let as_of =
            convert::timestamp(&request.as_of, "as_of").map_err(|r| rejection_status(&r))?;
        let store = self.engine().store();
        let not_found = || {
            rejection_status(&Rejection::new(
                ErrorCode::AccountNotFound,
                format!("account {id} not found"),
            ))
        };
        let account = access::visible_account(store.as_ref(), &caller, &id)
            .await
            .map_err(|r| rejection_status(&r))?;
        let balance = match as_of {
            None => convert::balance(&account),
            Some(as_of) => {
                // "As of T" includes entries effective at T: everything before T + 1µs.
                let before = Timestamp::from_unix_micros(as_of.as_unix_micros().saturating_add(1));
                let posted = store
                    .balance_before(&account.id, before)
                    .await
                    .map_err(store_status)?
                    .ok_or_else(not_found)?;
                convert::posted_balance(posted, account.currency)
            }
        };
        Ok(Response::new(pb::GetBalanceResponse {
            account_id: id.to_string(),
            currency: account.currency.code().to_owned(),
            balance: Some(balance),
            as_of: as_of.map(Timestamp::to_rfc3339).unwrap_or_default(),
        }))
    }

    type StreamTransfersStream = AnswerStream<pb::StreamTransfersResponse>;
    async fn get_spending(
        &self,
        request: Request<pb::GetSpendingRequest>,
    ) -> Result<Response<pb::GetSpendingResponse>, Status> {
        let caller = principal(&request)?;
        let tenant = caller.tenant.clone();
        let user = request.into_inner().user_id;
        if user.is_empty() || user.len() > OWNER_BYTES_MAX {
            return Err(Status::invalid_argument(format!(
                "user_id must be 1 to {OWNER_BYTES_MAX} bytes"
            )));
        }
        if caller.user.as_ref().is_some_and(|bound| bound.name() != user) {
            return Err(Status::not_found(format!("user {user} not found")));
        }
        let totals =
            self.engine().store().spending(tenant.as_str(), &user).await.map_err(store_status)?;
        let totals = totals
            .into_iter()
            .map(|total| pb::SpendingTotal {
                total: kopek_core::Currency::parse(&total.currency)
                    .map(|currency| kopek_core::format_minor(total.total_minor, currency))
                    .unwrap_or_default(),
                category: total.category,
                currency: total.currency,
                total_minor: total.total_minor,
                transfers: total.transfers,
                updated_at: total.updated_at.to_rfc3339(),
            })
            .collect();
        Ok(Response::new(pb::GetSpendingResponse { totals }))
    }

    async fn create_webhook(
        &self,
        request: Request<pb::CreateWebhookRequest>,
    ) -> Result<Response<pb::CreateWebhookResponse>, Status> {
        let caller = principal(&request)?;
        let tenant = caller.tenant.clone();
        let request = request.into_inner();
        let subscribed = subscribe(
            self.engine().store().as_ref(),
            NewWebhook {
                tenant: tenant.as_str(),
                idempotency_key: &request.idempotency_key,
                url: &request.url,
                event_types: &request.event_types,
                secret: (!request.secret.is_empty()).then_some(request.secret.as_str()),
                targets: self.webhook_targets,
            },
        )
        .await;
        match subscribed {
            Ok((hook, created)) => Ok(Response::new(pb::CreateWebhookResponse {
                webhook: Some(webhook_message(&hook, true)),
                created,
            })),
            Err(SubscribeError::Invalid(message)) => Err(Status::invalid_argument(message)),
            Err(error @ SubscribeError::KeyReused) => {
                Err(Status::already_exists(error.to_string()))
            }
            Err(SubscribeError::Store(error)) => Err(store_status(error)),
        }
    }

    async fn list_webhooks(
        &self,
        request: Request<pb::ListWebhooksRequest>,
    ) -> Result<Response<pb::ListWebhooksResponse>, Status> {
        let caller = principal(&request)?;
        let tenant = caller.tenant.clone();
        let hooks =
            self.engine().store().webhooks(Some(tenant.as_str())).await.map_err(store_status)?;
        let webhooks = hooks.iter().map(|hook| webhook_message(hook, false)).collect();
        Ok(Response::new(pb::ListWebhooksResponse { webhooks }))
    }

    async fn delete_webhook(
        &self,
        request: Request<pb::DeleteWebhookRequest>,
    ) -> Result<Response<pb::DeleteWebhookResponse>, Status> {
        let caller = principal(&request)?;
        let tenant = caller.tenant.clone();
        let id = request.into_inner().id;
        let deleted = self
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

    async fn list_webhook_deliveries(
        &self,
        request: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::ListWebhookDeliveriesResponse>, Status> {
        let caller = principal(&request)?;
        let tenant = caller.tenant.clone();
        let request = request.into_inner();
        let store = self.engine().store();
        let hook = self.webhook(&tenant, &request.webhook_id).await?;
        let limit = page_size(request.limit);
        let mut deliveries = Vec::new();
        for delivery in store.deliveries(&hook.id, limit).await.map_err(store_status)? {
            let attempts = store.delivery_attempts(&delivery.id).await.map_err(store_status)?;
            deliveries.push(delivery_message(&delivery, &attempts));
        }
        Ok(Response::new(pb::ListWebhookDeliveriesResponse { deliveries }))
    }

    async fn redeliver_webhook(
        &self,
        request: Request<pb::RedeliverWebhookRequest>,
    ) -> Result<Response<pb::RedeliverWebhookResponse>, Status> {
        let caller = principal(&request)?;
        let tenant = caller.tenant.clone();
        let request = request.into_inner();
        let store = self.engine().store();
        let hook = self.webhook(&tenant, &request.webhook_id).await?;
        let not_found = || Status::not_found(format!("delivery {} not found", request.delivery_id));
        let redelivered = store
            .redeliver(
                &hook.id,
                &request.delivery_id,
                self.webhook_max_attempts,
                kopek_store::wall_clock(),
            )
            .await
            .map_err(store_status)?;
        if !redelivered {
            return Err(not_found());
        }
        let delivery = store
            .delivery(&request.delivery_id)
            .await
            .map_err(store_status)?
            .ok_or_else(not_found)?;
        let attempts = store.delivery_attempts(&delivery.id).await.map_err(store_status)?;
        Ok(Response::new(pb::RedeliverWebhookResponse {
            delivery: Some(delivery_message(&delivery, &attempts)),
        }))
    }

    async fn set_rates(
        &self,
        request: Request<pb::SetRatesRequest>,
    ) -> Result<Response<pb::SetRatesResponse>, Status> {
        let caller = principal(&request)?;
        let inputs = request.into_inner().rates;
        if inputs.is_empty() || inputs.len() > limits::TRANSFERS_PER_REQUEST_MAX {
            return Err(Status::invalid_argument(format!(
                "INVALID_ARGUMENT: a request sets 1 to {} rates",
                limits::TRANSFERS_PER_REQUEST_MAX
            )));
        }
        let parsed: Vec<Result<RateSet, Rejection>> = inputs
            .into_iter()
            .map(|input| {
                Ok(RateSet {
                    base: Currency::parse(&input.base)?,
                    quote: Currency::parse(&input.quote)?,
                    rate: kopek_core::Rate::parse(&input.rate)?,
                    source: if input.source.is_empty() {
                        kopek_core::fx::DEFAULT_RATE_SOURCE.to_owned()
                    } else {
                        input.source
                    },
                    valid_from: convert::timestamp(&input.valid_from, "valid_from")?,
                })
            })
            .collect();
        let valid: Vec<RateSet> =
            parsed.iter().filter_map(|item| item.as_ref().ok().cloned()).collect();
        let mut committed = if valid.is_empty() {
            Vec::new()
        } else {
            self.intake.set_rates(&caller, valid).await.map_err(|r| rejection_status(&r))?
        }
        .into_iter();
        let results = parsed
            .into_iter()
            .map(|item| {
                let result = match item {
                    Err(rejection) => RateResult::Rejected(rejection),
                    Ok(_) => committed.next().unwrap_or_else(|| {
                        RateResult::Rejected(Rejection::new(
                            ErrorCode::Internal,
                            "a result is missing",
                        ))
                    }),
                };
                match result {
                    RateResult::Set(rate) => pb::RateResult {
                        rate: Some(convert::exchange_rate(&rate)),
                        changed: true,
                        error: None,
                    },
                    RateResult::Unchanged(rate) => pb::RateResult {
                        rate: Some(convert::exchange_rate(&rate)),
                        changed: false,
                        error: None,
                    },
                    RateResult::Rejected(rejection) => pb::RateResult {
                        rate: None,
                        changed: false,
                        error: Some(convert::error(&rejection)),
                    },
                }
            })
            .collect();
        Ok(Response::new(pb::SetRatesResponse { results }))
    }

    async fn list_rates(
        &self,
        request: Request<pb::ListRatesRequest>,
    ) -> Result<Response<pb::ListRatesResponse>, Status> {
        let caller = principal(&request)?;
        let rates = self.fx().rates(&caller.tenant).await.map_err(|r| rejection_status(&r))?;
        Ok(Response::new(pb::ListRatesResponse {
            base_currency: self.fx().config().base.to_string(),
            rates: rates.iter().map(convert::exchange_rate).collect(),
        }))
    }

    async fn create_quote(
        &self,
        request: Request<pb::CreateQuoteRequest>,
    ) -> Result<Response<pb::CreateQuoteResponse>, Status> {
        let caller = principal(&request)?;
        let request = request.into_inner();
        let priced = async {
            let key = IdempotencyKey::parse_client(&request.idempotency_key)?;
            let (from, to) = (Currency::parse(&request.from)?, Currency::parse(&request.to)?);
            let side = convert::side(request.side)?;
            let currency = if side == Side::Sell { from } else { to };
            let amount = convert::money(request.amount_minor, &request.amount, currency)?;
            let config = self.fx().config();
            if request.spread_bp.is_some_and(|spread| spread > config.spread_bp) {
                return Err(Rejection::invalid(format!(
                    "spread_bp may only lower the server's spread of {} basis points",
                    config.spread_bp
                )));
            }
            let ttl_seconds = if request.ttl_seconds == 0 {
                config.quote_ttl_seconds
            } else {
                request.ttl_seconds
            };
            let terms =
                self.fx().price(&caller.tenant, from, to, side, amount, request.spread_bp).await?;
            Ok(NewQuote { idempotency_key: key, terms, ttl_seconds })
        };
        let new_quote = priced.await.map_err(|r: Rejection| rejection_status(&r))?;
        let result =
            self.intake.create_quote(&caller, new_quote).await.map_err(|r| rejection_status(&r))?;
        let (quote, replayed) = match result {
            QuoteResult::Created(quote) => (quote, false),
            QuoteResult::Existed(quote) => (quote, true),
            QuoteResult::Rejected(rejection) => return Err(rejection_status(&rejection)),
        };
        Ok(Response::new(pb::CreateQuoteResponse { quote: Some(convert::quote(&quote)), replayed }))
    }

    async fn get_quote(
        &self,
        request: Request<pb::GetQuoteRequest>,
    ) -> Result<Response<pb::GetQuoteResponse>, Status> {
        let caller = principal(&request)?;
        let id = request.into_inner().id;
        let not_found = || Status::not_found(format!("NOT_FOUND: no quote {id}"));
        let quote_id = QuoteId::parse(&id).map_err(|_| not_found())?;
        let quote = self
            .engine()
            .store()
            .quote(quote_id)
            .await
            .map_err(store_status)?
            .filter(|quote| quote.tenant == caller.tenant)
            .ok_or_else(not_found)?;
        Ok(Response::new(pb::GetQuoteResponse { quote: Some(convert::quote(&quote)) }))
    }

    async fn convert(
        &self,
        request: Request<pb::ConvertRequest>,
    ) -> Result<Response<pb::ConvertResponse>, Status> {
        let caller = principal(&request)?;
        let request = request.into_inner();
        let priced = async {
            let from = Currency::parse(&request.from_currency)?;
            let to = Currency::parse(&request.to_currency)?;
            let side = convert::side(request.side)?;
            let currency = if side == Side::Sell { from } else { to };
            let amount = convert::money(request.amount_minor, &request.amount, currency)?;
            self.fx().price(&caller.tenant, from, to, side, amount, None).await
        };
        let terms = priced.await.map_err(|r: Rejection| rejection_status(&r))?;
        let (converted, currency) = match terms.side {
            Side::Sell => (terms.buy_amount, terms.to),
            Side::Buy => (terms.sell_amount, terms.from),
        };
        Ok(Response::new(pb::ConvertResponse {
            converted_amount_minor: converted,
            converted_amount: kopek_core::format_minor(converted, currency),
            terms: Some(convert::conversion_terms(&terms)),
        }))
    }

    type StreamEventsStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

    async fn stream_events(
        &self,
        request: Request<pb::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let caller = principal(&request)?;
        caller
            .refuse_bound("follow the tenant's event stream")
            .map_err(|r| rejection_status(&r))?;
        let key = key_watch(&request);
        let tenant = caller.tenant.clone();
        let request = request.into_inner();
        let types = EventFilter::parse_types(request.types.iter().map(String::as_str))
            .map_err(Status::invalid_argument)?;
        let given = |text: String| (!text.is_empty()).then_some(text);
        let filter = EventFilter {
            tenant: Some(tenant.as_str().to_owned()),
            types,
            account: given(request.account_id),
            user: given(request.user_id),
            order: given(request.order_id),
        };
        let mut events = if request.from_now {
            self.feed.subscribe_live()
        } else {
            self.feed.subscribe_after(request.after_sequence)
        };
        let (sender, receiver) = tokio::sync::mpsc::channel(STREAM_EVENTS_BUFFER);
        // Made once the request checked out, and finished with the task that serves it.
        let ending = Ending::new(&self.shutdown, key);
        let finish = FinishOnDrop(ending.clone());
        tokio::spawn(async move {
            let _finish = finish;
            loop {
                tokio::select! {
                    event = events.recv() => {
                        let Some(event) = event else { return };
                        let payload: Value = serde_json::from_str(&event.payload).unwrap_or(Value::Null);
                        if filter.matches(&event, &payload) && sender.send(Ok(event_message(&event, &payload))).await.is_err() {
                            return;
                        }
                    }
                    () = sender.closed() => return,
                    why = ending.ended() => {
                        let status = match why {
                            Ended::Shutdown => Status::unavailable(
                                "the server is shutting down; resume after the last sequence received",
                            ),
                            Ended::Revoked => revoked_status(),
                        };
                        let _ = sender.send(Err(status)).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))))
    }

    async fn stream_transfers(
        &self,
        request: Request<Streaming<pb::StreamTransfersRequest>>,
    ) -> Result<Response<Self::StreamTransfersStream>, Status> {
        let caller = principal(&request)?;
        let intake = self.intake.clone();
        let start =
            move |message: pb::StreamTransfersRequest| -> Started<pb::StreamTransfersResponse> {
                let (intake, caller) = (intake.clone(), caller.clone());
                Box::pin(async move {
                    let request_id = message.request_id;
                    let answer_as = if message.compact {
                        convert::compact_transfer_result
                    } else {
                        convert::transfer_result
                    };
                    let pending =
                        match read_batch(&intake, &caller, message.transfers, message.linked).await
                        {
                            Ok(batch) => intake.enqueue_waiting(&caller, batch).await,
                            Err(rejection) => Err(rejection),
                        };
                    let answer: Answer<pb::StreamTransfersResponse> = Box::pin(async move {
                        let results = match pending {
                            Ok(pending) => pending
                                .results()
                                .await
                                .map(|results| wire_results(results, answer_as)),
                            Err(rejection) => Err(rejection),
                        };
                        Ok(match results {
                            Ok(results) => {
                                pb::StreamTransfersResponse { request_id, results, error: None }
                            }
                            Err(rejection) => refused(request_id, &rejection),
                        })
                    });
                    answer
                })
            };
        let ending = Ending::new(&self.shutdown, key_watch(&request));
        Ok(Response::new(pipelined(request.into_inner(), ending, start)))
    }
}

fn refused(request_id: u64, rejection: &Rejection) -> pb::StreamTransfersResponse {
    pb::StreamTransfersResponse {
        request_id,
        results: Vec::new(),
        error: Some(convert::error(rejection)),
    }
}

fn account_result(result: AccountResult) -> pb::AccountResult {
    match result {
        AccountResult::Created(account) => pb::AccountResult {
            account: Some(convert::account(&account)),
            created: true,
            error: None,
        },
        AccountResult::Existed(account) | AccountResult::Updated(account) => pb::AccountResult {
            account: Some(convert::account(&account)),
            created: false,
            error: None,
        },
        AccountResult::Rejected(rejection) => pb::AccountResult {
            account: None,
            created: false,
            error: Some(convert::error(&rejection)),
        },
    }
}
