//! `FaultyStore`: a real embedded store with injected write failures, when enabled. A fault
//! either refuses a batch before writing (nothing applied) or loses the answer after the
//! commit (everything applied, the caller told it failed): the case idempotency exists for.

use crate::Rng;
use async_trait::async_trait;
use kopek_core::{
    Account, AccountId, IdempotencyKey, Keys, Order, OrderId, Tenant, Timestamp, Transfer,
    TransferId, User, UserId,
};
use kopek_store::{
    ApiKey, Attempt, AttemptResult, AuditEntry, AuditQuery, Committed, Consumed, Decide, Delivery,
    Page, PendingCommit, SpendingTotal, Store, StoreError, StoreResult, StoredEntry, StoredEvent,
    VerifyReport, Watermark, Webhook,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Shared by every store the simulation opens, so faults survive restarts.
pub struct Faults {
    enabled: AtomicBool,
    percent: u64,
    rng: Mutex<Rng>,
    pub before_write: AtomicU64,
    pub after_commit: AtomicU64,
}

enum Fault {
    BeforeWrite,
    AfterCommit,
}

impl Faults {
    pub fn new(seed: u64, percent: u64) -> Arc<Faults> {
        Arc::new(Faults {
            enabled: AtomicBool::new(false),
            percent,
            rng: Mutex::new(Rng::new(seed)),
            before_write: AtomicU64::new(0),
            after_commit: AtomicU64::new(0),
        })
    }

    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::SeqCst);
    }

    /// Counts a fault before the write and says what the caller sees.
    fn before_write(&self) -> StoreError {
        self.before_write.fetch_add(1, Ordering::Relaxed);
        StoreError::Unavailable("injected fault: connection lost before the write".to_owned())
    }

    /// Counts a fault after the commit and says what the caller sees.
    fn after_commit(&self) -> StoreError {
        self.after_commit.fetch_add(1, Ordering::Relaxed);
        StoreError::Unavailable("injected fault: connection lost after the commit".to_owned())
    }

    fn roll(&self) -> Option<Fault> {
        if !self.enabled.load(Ordering::SeqCst) {
            return None;
        }
        let mut rng = self.rng.lock().ok()?;
        if !rng.chance(self.percent) {
            return None;
        }
        Some(if rng.chance(50) { Fault::BeforeWrite } else { Fault::AfterCommit })
    }
}

pub struct FaultyStore {
    pub inner: Arc<dyn Store>,
    pub faults: Arc<Faults>,
}

#[async_trait]
impl Store for FaultyStore {
    async fn write_batch(&self, keys: Keys, decide: Decide) -> StoreResult<Committed> {
        match self.faults.roll() {
            None => self.inner.write_batch(keys, decide).await,
            Some(Fault::BeforeWrite) => Err(self.faults.before_write()),
            Some(Fault::AfterCommit) => {
                self.inner.write_batch(keys, decide).await?;
                Err(self.faults.after_commit())
            }
        }
    }

    fn pipelined(&self) -> bool {
        self.inner.pipelined()
    }

    /// Rolls the fault now and hands the batch on now, so a pipelined store under it keeps
    /// the batches' order.
    fn submit_batch(self: Arc<Self>, keys: Keys, decide: Decide) -> PendingCommit {
        match self.faults.roll() {
            None => Arc::clone(&self.inner).submit_batch(keys, decide),
            Some(Fault::BeforeWrite) => {
                let refusal = self.faults.before_write();
                Box::pin(async move { Err(refusal) })
            }
            Some(Fault::AfterCommit) => {
                let pending = Arc::clone(&self.inner).submit_batch(keys, decide);
                let faults = self.faults.clone();
                Box::pin(async move {
                    pending.await?;
                    Err(faults.after_commit())
                })
            }
        }
    }

    async fn account(&self, id: &AccountId) -> StoreResult<Option<Account>> {
        self.inner.account(id).await
    }

    async fn list_accounts(
        &self,
        tenant: Option<&str>,
        owner: Option<&str>,
        after: Option<&AccountId>,
        limit: usize,
    ) -> StoreResult<Vec<Account>> {
        self.inner.list_accounts(tenant, owner, after, limit).await
    }

    async fn transfer(&self, id: TransferId) -> StoreResult<Option<Transfer>> {
        self.inner.transfer(id).await
    }

    async fn transfer_by_key(
        &self,
        tenant: &Tenant,
        key: &IdempotencyKey,
    ) -> StoreResult<Option<Transfer>> {
        self.inner.transfer_by_key(tenant, key).await
    }

    async fn search_transfers(
        &self,
        query: &kopek_store::TransferQuery,
    ) -> StoreResult<Page<Transfer>> {
        self.inner.search_transfers(query).await
    }

    async fn settle(&self) -> StoreResult<()> {
        self.inner.settle().await
    }

    async fn backup(&self) -> StoreResult<kopek_store::TakenBackup> {
        self.inner.backup().await
    }

    async fn entries(
        &self,
        account: &AccountId,
        after: Option<u64>,
        limit: usize,
    ) -> StoreResult<Page<StoredEntry>> {
        self.inner.entries(account, after, limit).await
    }

    async fn transfer_entries(&self, ids: &[TransferId]) -> StoreResult<Vec<StoredEntry>> {
        self.inner.transfer_entries(ids).await
    }

    async fn balance_before(
        &self,
        account: &AccountId,
        before: Timestamp,
    ) -> StoreResult<Option<i64>> {
        self.inner.balance_before(account, before).await
    }

    async fn holds_due(&self, now: Timestamp, limit: usize) -> StoreResult<Vec<TransferId>> {
        self.inner.holds_due(now, limit).await
    }

    async fn next_hold_expiry(&self) -> StoreResult<Option<Timestamp>> {
        self.inner.next_hold_expiry().await
    }

    async fn events_of(
        &self,
        tenant: &str,
        subject: &str,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        self.inner.events_of(tenant, subject, limit).await
    }

    async fn last_event_sequence(&self) -> StoreResult<u64> {
        self.inner.last_event_sequence().await
    }

    async fn events_after(
        &self,
        tenant: Option<&str>,
        sequence: u64,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        self.inner.events_after(tenant, sequence, limit).await
    }

    async fn watermark(&self) -> StoreResult<Watermark> {
        self.inner.watermark().await
    }

    async fn user(&self, id: &UserId) -> StoreResult<Option<User>> {
        self.inner.user(id).await
    }

    async fn order(&self, id: &OrderId) -> StoreResult<Option<Order>> {
        self.inner.order(id).await
    }

    async fn orders_of_user(&self, user: &UserId, limit: usize) -> StoreResult<Vec<Order>> {
        self.inner.orders_of_user(user, limit).await
    }

    async fn pending_orders(&self, limit: usize) -> StoreResult<Vec<Order>> {
        self.inner.pending_orders(limit).await
    }

    async fn verify(&self) -> StoreResult<VerifyReport> {
        self.inner.verify().await
    }

    async fn relay_claim(
        &self,
        sink: &str,
        holder: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> StoreResult<Option<u64>> {
        self.inner.relay_claim(sink, holder, now, until).await
    }

    async fn relay_advance(
        &self,
        sink: &str,
        holder: &str,
        sequence: u64,
        until: Timestamp,
    ) -> StoreResult<bool> {
        self.inner.relay_advance(sink, holder, sequence, until).await
    }

    async fn relay_cursors(&self) -> StoreResult<Vec<(String, u64)>> {
        self.inner.relay_cursors().await
    }

    async fn inbox_contains(&self, consumer: &str, event_id: &str) -> StoreResult<bool> {
        self.inner.inbox_contains(consumer, event_id).await
    }

    async fn consume(
        &self,
        consumer: &str,
        items: Vec<Consumed>,
        now: Timestamp,
    ) -> StoreResult<usize> {
        self.inner.consume(consumer, items, now).await
    }

    async fn spending(&self, tenant: &str, user: &str) -> StoreResult<Vec<SpendingTotal>> {
        self.inner.spending(tenant, user).await
    }

    async fn fx_rates(
        &self,
        tenant: &kopek_core::Tenant,
        at: Timestamp,
    ) -> StoreResult<Vec<kopek_core::FxRate>> {
        self.inner.fx_rates(tenant, at).await
    }

    async fn quote(&self, id: kopek_core::QuoteId) -> StoreResult<Option<kopek_core::Quote>> {
        self.inner.quote(id).await
    }

    async fn fx_accounts(&self, tenant: &kopek_core::Tenant) -> StoreResult<Vec<Account>> {
        self.inner.fx_accounts(tenant).await
    }

    async fn fx_revenue(
        &self,
        tenant: &kopek_core::Tenant,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<Vec<kopek_store::FxRevenue>> {
        self.inner.fx_revenue(tenant, from, to).await
    }

    async fn create_webhook(&self, webhook: &Webhook) -> StoreResult<()> {
        self.inner.create_webhook(webhook).await
    }

    async fn webhooks(&self, tenant: Option<&str>) -> StoreResult<Vec<Webhook>> {
        self.inner.webhooks(tenant).await
    }

    async fn delete_webhook(&self, tenant: &str, id: &str, now: Timestamp) -> StoreResult<bool> {
        self.inner.delete_webhook(tenant, id, now).await
    }

    async fn claim_deliveries(
        &self,
        now: Timestamp,
        until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        self.inner.claim_deliveries(now, until, limit).await
    }

    async fn record_attempt(&self, result: &AttemptResult) -> StoreResult<bool> {
        self.inner.record_attempt(result).await
    }

    async fn deliveries(&self, subscription_id: &str, limit: usize) -> StoreResult<Vec<Delivery>> {
        self.inner.deliveries(subscription_id, limit).await
    }

    async fn delivery(&self, id: &str) -> StoreResult<Option<Delivery>> {
        self.inner.delivery(id).await
    }

    async fn delivery_attempts(&self, delivery_id: &str) -> StoreResult<Vec<Attempt>> {
        self.inner.delivery_attempts(delivery_id).await
    }

    async fn redeliver(
        &self,
        subscription_id: &str,
        delivery_id: &str,
        max_attempts: u32,
        now: Timestamp,
    ) -> StoreResult<bool> {
        self.inner.redeliver(subscription_id, delivery_id, max_attempts, now).await
    }

    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        self.inner.create_api_key(key).await
    }

    async fn api_key(&self, id: &str) -> StoreResult<Option<ApiKey>> {
        self.inner.api_key(id).await
    }

    async fn api_keys(&self, tenant: Option<&str>) -> StoreResult<Vec<ApiKey>> {
        self.inner.api_keys(tenant).await
    }

    async fn revoke_api_key(&self, id: &str, now: Timestamp) -> StoreResult<bool> {
        self.inner.revoke_api_key(id, now).await
    }

    fn pool_usage(&self) -> (usize, usize) {
        self.inner.pool_usage()
    }

    async fn audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        self.inner.audit(query).await
    }
}
