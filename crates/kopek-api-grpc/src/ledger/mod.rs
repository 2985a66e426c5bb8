//! `kopek.v1.Ledger`: unary RPCs and the pipelined `StreamTransfers`. The service is here;
//! each resource's RPCs are in a module of their own, as the REST handlers are.

use crate::auth::{key_watch, principal};
use crate::convert;
use crate::pipeline::{Answer, AnswerStream, Started, pipelined, revoked_status};
use crate::status::{rejection_status, store_status};
use kopek_auth::{Ended, Ending, FinishOnDrop, Principal};
use kopek_core::fx::Side;
use kopek_core::{
    AccountResult, AccountUpdate, Currency, ErrorCode, IdempotencyKey, Linking, Overdraft, QuoteId,
    QuoteResult, RateResult, RateSet, Rejection, Tenant, Timestamp, limits,
};
use kopek_engine::Engine;
use kopek_events::filter::EventFilter;
use kopek_events::subscriptions::{NewWebhook, SubscribeError, subscribe};
use kopek_events::targets::Targets;
use kopek_events::{EventDocument, Feed};
use kopek_intake::access::{self, TransferLookup};
use kopek_intake::search::SearchInput;
use kopek_intake::{Batch, Intake, fields, wire};
use kopek_proto::kopek::v1 as pb;
use kopek_store::StoredEvent;
use std::pin::Pin;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

mod accounts;
mod events;
mod fx;
mod transfers;
mod webhooks;

/// What `StreamEvents` answers with.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

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
}

/// A page size from the wire (0: not given), by the intake's rule.
fn page_size(requested: u32) -> usize {
    fields::page_size(Some(usize::try_from(requested).unwrap_or(usize::MAX)))
}

#[tonic::async_trait]
impl pb::ledger_server::Ledger for LedgerService {
    type StreamTransfersStream = AnswerStream<pb::StreamTransfersResponse>;
    type StreamEventsStream = EventStream;

    async fn create_accounts(
        &self,
        request: Request<pb::CreateAccountsRequest>,
    ) -> Result<Response<pb::CreateAccountsResponse>, Status> {
        accounts::create_accounts(self, request).await
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::GetAccountResponse>, Status> {
        accounts::get_account(self, request).await
    }

    async fn get_accounts(
        &self,
        request: Request<pb::GetAccountsRequest>,
    ) -> Result<Response<pb::GetAccountsResponse>, Status> {
        accounts::get_accounts(self, request).await
    }

    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        accounts::list_accounts(self, request).await
    }

    async fn update_account(
        &self,
        request: Request<pb::UpdateAccountRequest>,
    ) -> Result<Response<pb::UpdateAccountResponse>, Status> {
        accounts::update_account(self, request).await
    }

    async fn create_transfers(
        &self,
        request: Request<pb::CreateTransfersRequest>,
    ) -> Result<Response<pb::CreateTransfersResponse>, Status> {
        transfers::create_transfers(self, request).await
    }

    async fn get_transfer(
        &self,
        request: Request<pb::GetTransferRequest>,
    ) -> Result<Response<pb::GetTransferResponse>, Status> {
        transfers::get_transfer(self, request).await
    }

    async fn list_transfers(
        &self,
        request: Request<pb::ListTransfersRequest>,
    ) -> Result<Response<pb::ListTransfersResponse>, Status> {
        transfers::list_transfers(self, request).await
    }

    async fn list_entries(
        &self,
        request: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<pb::ListEntriesResponse>, Status> {
        accounts::list_entries(self, request).await
    }

    async fn get_balance(
        &self,
        request: Request<pb::GetBalanceRequest>,
    ) -> Result<Response<pb::GetBalanceResponse>, Status> {
        accounts::get_balance(self, request).await
    }

    async fn get_spending(
        &self,
        request: Request<pb::GetSpendingRequest>,
    ) -> Result<Response<pb::GetSpendingResponse>, Status> {
        accounts::get_spending(self, request).await
    }

    async fn create_webhook(
        &self,
        request: Request<pb::CreateWebhookRequest>,
    ) -> Result<Response<pb::CreateWebhookResponse>, Status> {
        webhooks::create_webhook(self, request).await
    }

    async fn list_webhooks(
        &self,
        request: Request<pb::ListWebhooksRequest>,
    ) -> Result<Response<pb::ListWebhooksResponse>, Status> {
        webhooks::list_webhooks(self, request).await
    }

    async fn delete_webhook(
        &self,
        request: Request<pb::DeleteWebhookRequest>,
    ) -> Result<Response<pb::DeleteWebhookResponse>, Status> {
        webhooks::delete_webhook(self, request).await
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::ListWebhookDeliveriesResponse>, Status> {
        webhooks::list_webhook_deliveries(self, request).await
    }

    async fn redeliver_webhook(
        &self,
        request: Request<pb::RedeliverWebhookRequest>,
    ) -> Result<Response<pb::RedeliverWebhookResponse>, Status> {
        webhooks::redeliver_webhook(self, request).await
    }

    async fn set_rates(
        &self,
        request: Request<pb::SetRatesRequest>,
    ) -> Result<Response<pb::SetRatesResponse>, Status> {
        fx::set_rates(self, request).await
    }

    async fn list_rates(
        &self,
        request: Request<pb::ListRatesRequest>,
    ) -> Result<Response<pb::ListRatesResponse>, Status> {
        fx::list_rates(self, request).await
    }

    async fn create_quote(
        &self,
        request: Request<pb::CreateQuoteRequest>,
    ) -> Result<Response<pb::CreateQuoteResponse>, Status> {
        fx::create_quote(self, request).await
    }

    async fn get_quote(
        &self,
        request: Request<pb::GetQuoteRequest>,
    ) -> Result<Response<pb::GetQuoteResponse>, Status> {
        fx::get_quote(self, request).await
    }

    async fn convert(
        &self,
        request: Request<pb::ConvertRequest>,
    ) -> Result<Response<pb::ConvertResponse>, Status> {
        fx::convert(self, request).await
    }

    async fn stream_events(
        &self,
        request: Request<pb::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        events::stream_events(self, request).await
    }

    async fn stream_transfers(
        &self,
        request: Request<Streaming<pb::StreamTransfersRequest>>,
    ) -> Result<Response<Self::StreamTransfersStream>, Status> {
        transfers::stream_transfers(self, request).await
    }
}
