//! The commands besides transfers, each with its typed answer: a surface sends the caller's
//! command and gets back what that command answers, never a `CommandResult` to match.

use crate::Intake;
use kopek_auth::Principal;
use kopek_core::{
    Account, AccountResult, AccountUpdate, Authority, Command, CommandBody, CommandResult,
    ErrorCode, InboxMark, NewAccount, NewOrder, NewQuote, NewUser, OrderResult, QuoteResult,
    RateResult, RateSet, Rejection, Tenant, UserResult,
};
use kopek_engine::{Engine, Ticket};
use tracing::Instrument;

impl Intake {
    /// Opens accounts: one answer per account, in order.
    pub async fn create_accounts(
        &self,
        caller: &Principal,
        accounts: Vec<NewAccount>,
    ) -> Result<Vec<AccountResult>, Rejection> {
        match self.ask(caller, CommandBody::CreateAccounts(accounts)).await? {
            CommandResult::Accounts(results) => Ok(results),
            other => Err(answered("create-accounts", &other)),
        }
    }

    /// Opens one account.
    pub async fn create_account(
        &self,
        caller: &Principal,
        account: NewAccount,
    ) -> Result<AccountResult, Rejection> {
        let mut results = self.create_accounts(caller, vec![account]).await?;
        match (results.pop(), results.is_empty()) {
            (Some(result), true) => Ok(result),
            _ => Err(Rejection::new(
                ErrorCode::Internal,
                "one account was answered with another count",
            )),
        }
    }

    /// Changes an account's overdraft limit or status: the account as it is now, or why not.
    pub async fn update_account(
        &self,
        caller: &Principal,
        update: AccountUpdate,
    ) -> Result<Account, Rejection> {
        match self.ask(caller, CommandBody::UpdateAccount(update)).await? {
            CommandResult::Account(AccountResult::Updated(account)) => Ok(account),
            CommandResult::Account(AccountResult::Rejected(rejection)) => Err(rejection),
            other => Err(answered("update-account", &other)),
        }
    }

    /// Creates a user with its account.
    pub async fn create_user(
        &self,
        caller: &Principal,
        user: NewUser,
    ) -> Result<UserResult, Rejection> {
        match self.ask(caller, CommandBody::CreateUser(user)).await? {
            CommandResult::User(result) => Ok(result),
            other => Err(answered("create-user", &other)),
        }
    }

    /// Places an order (paid later by the payments consumer).
    pub async fn create_order(
        &self,
        caller: &Principal,
        order: NewOrder,
    ) -> Result<OrderResult, Rejection> {
        match self.ask(caller, CommandBody::CreateOrder(order)).await? {
            CommandResult::Order(result) => Ok(result),
            other => Err(answered("create-order", &other)),
        }
    }

    /// Sets exchange rates; the process's rate cache forgets the tenant's rates at once
    /// (other processes follow the `RateUpdated` events).
    pub async fn set_rates(
        &self,
        caller: &Principal,
        rates: Vec<RateSet>,
    ) -> Result<Vec<RateResult>, Rejection> {
        let answer = self.ask(caller, CommandBody::SetRates(rates)).await;
        self.fx.invalidate(&caller.tenant).await;
        match answer? {
            CommandResult::Rates(results) => Ok(results),
            other => Err(answered("set-rates", &other)),
        }
    }

    /// Locks priced terms as a quote.
    pub async fn create_quote(
        &self,
        caller: &Principal,
        quote: NewQuote,
    ) -> Result<QuoteResult, Rejection> {
        match self.ask(caller, CommandBody::CreateQuote(quote)).await? {
            CommandResult::Quote(result) => Ok(result),
            other => Err(answered("create-quote", &other)),
        }
    }

    /// The ledger's own payment of an order (the order sweep), queued at once (`OVERLOADED`
    /// when the queue is full: the sweep tries again later); `PendingPayment::wait` answers
    /// it, in the span `ledger.submit`.
    pub fn pay_order(&self, tenant: Tenant, order: NewOrder) -> Result<PendingPayment, Rejection> {
        let command = Command::new(tenant, Authority::Ledger, CommandBody::PayOrder(order));
        let span = Engine::submit_span(&command);
        let ticket = span.in_scope(|| self.engine.enqueue_now(command));
        Ok(PendingPayment { ticket: ticket.map_err(|error| error.rejection())?, span })
    }

    /// The payment of an order an `OrderCreated` event asked for (the order saga's consumer):
    /// it waits for room in the queue, so a consumer slows down instead of failing its batch,
    /// and many share the writer's batches. `inbox` marks the event in the payment's commit.
    pub async fn pay_order_for(
        &self,
        tenant: Tenant,
        order: NewOrder,
        inbox: InboxMark,
    ) -> Result<PendingPayment, Rejection> {
        let mut command = Command::new(tenant, Authority::Ledger, CommandBody::PayOrder(order));
        command.inbox = Some(inbox);
        let span = Engine::submit_span(&command);
        let ticket = self.engine.enqueue_command(command).instrument(span.clone()).await;
        Ok(PendingPayment { ticket: ticket.map_err(|error| error.rejection())?, span })
    }

    /// Sends the caller's command (`OVERLOADED` at once on a full queue) and waits for its
    /// commit, in the span `ledger.submit`.
    async fn ask(&self, caller: &Principal, body: CommandBody) -> Result<CommandResult, Rejection> {
        self.engine.submit_command(caller.command(body)).await.map_err(|error| error.rejection())
    }
}

/// An order payment on its way through the writer.
pub struct PendingPayment {
    ticket: Ticket,
    span: tracing::Span,
}

impl PendingPayment {
    /// The order as the payment left it (PAID, or FAILED with why), or why it was refused.
    pub async fn wait(self) -> Result<OrderResult, Rejection> {
        let answer = self.ticket.wait().instrument(self.span).await;
        match answer.map_err(|error| error.rejection())? {
            CommandResult::Order(result) => Ok(result),
            other => Err(answered("pay-order", &other)),
        }
    }
}

/// A broken invariant: the engine answered a command with another command's answer.
fn answered(command: &str, other: &CommandResult) -> Rejection {
    Rejection::new(ErrorCode::Internal, format!("a {command} command was answered with {other:?}"))
}
