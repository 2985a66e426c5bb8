//! `apply`: the ledger's only decision function. It takes the state a batch needs, the batch
//! and the commit time, and returns every verdict and every effect as data.
//!
//! # Order of checks
//!
//! For a transfer that moves money (`Movement::Move`), first failure wins:
//! 1. details and hold timeout within bounds, else `INVALID_ARGUMENT` (not recorded: bad input
//!    loses nothing);
//! 2. idempotency: a known key with the same fingerprint replays the original outcome, with
//!    another fingerprint it is `IDEMPOTENCY_KEY_REUSED` (not recorded). Members of a linked
//!    request have fingerprints of their own, so a key used alone never replays inside one;
//! 3. deposits must be debited from, withdrawals credited to, `world:<CUR>` (`INVALID_ARGUMENT`);
//! 4. `INVALID_AMOUNT`, when the amount is not positive;
//! 5. `SAME_ACCOUNT`;
//! 6. `ACCOUNT_NOT_FOUND`, debit account first, then credit account (accounts the request
//!    opens on first use, and `world:<CUR>` for deposits and withdrawals, count as found);
//! 7. `CURRENCY_MISMATCH`, when the transfer's currency differs from either account's;
//! 8. `ACCOUNT_CLOSED` then `ACCOUNT_FROZEN`, debit account first, then credit account;
//! 9. `INSUFFICIENT_FUNDS`, when the debit account's available balance (posted - held +
//!    overdraft limit) is below the amount;
//! 10. `BALANCE_OVERFLOW`, when a balance would leave the 64-bit range.
//!
//! A capture or void checks 1 and 2, then `PENDING_NOT_FOUND`, `PENDING_ALREADY_RESOLVED`,
//! `PENDING_EXPIRED`; a capture then checks `INVALID_AMOUNT` (more than held), 8 and 10.
//! Every rejection from step 3 on is recorded as a declined transfer, so a retry replays it.
//! A linked request commits all its transfers or none: the first failure is recorded with its
//! code and every other member with `LINKED_EVENT_FAILED`.

use crate::account::{
    Account, AccountKind, AccountStatus, AccountUpdate, Balance, NewAccount, Overdraft,
};
use crate::authority::Authority;
use crate::error::{ErrorCode, Rejection};
use crate::event::{BalanceSnapshot, Balances, Event, EventKind, Subject};
use crate::fx::{
    FxLeg, FxRate, FxTerms, NewQuote, Quote, RateSet, liquidity_account, revenue_account,
};
use crate::ids::QuoteId;
use crate::ids::{AccountId, EventId, IdSource, IdempotencyKey, Tenant, TransferId};
use crate::limits;
use crate::money::{Amount, Currency, format_minor};
use crate::party::{NewOrder, NewUser, Order, OrderId, OrderStatus, User, UserId};
use crate::time::Timestamp;
use crate::transfer::{
    Action, Direction, Entry, Fingerprint, Hold, Movement, Transfer, TransferKind, TransferRequest,
    TransferStatus,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

mod accounts;
mod exchange;
mod journal;
mod parties;
mod transfers;

/// Everything `apply` needs to know about the world: the accounts and transfers a batch
/// touches, as loaded by the store (see [`Batch::keys`]).
#[derive(Clone, Debug, Default)]
pub struct State {
    pub accounts: BTreeMap<AccountId, Account>,
    pub transfers: BTreeMap<TransferId, Transfer>,
    pub users: BTreeMap<UserId, User>,
    pub orders: BTreeMap<OrderId, Order>,
    /// The last user number the server allocated (0 before the first).
    pub last_user_number: u64,
    /// The newest rate of each pair the batch sets (by `valid_from`).
    pub rates: BTreeMap<(Tenant, Currency, Currency), FxRate>,
    /// The quotes the batch names, by id or by idempotency key.
    pub quotes: BTreeMap<QuoteId, Quote>,
}

impl State {
    pub fn new(
        accounts: impl IntoIterator<Item = Account>,
        transfers: impl IntoIterator<Item = Transfer>,
    ) -> State {
        State {
            accounts: accounts.into_iter().map(|account| (account.id.clone(), account)).collect(),
            transfers: transfers.into_iter().map(|transfer| (transfer.id, transfer)).collect(),
            ..State::default()
        }
    }
}

/// What the store must load for a batch: these accounts, the transfers recorded under these
/// idempotency keys, these transfers by id, and for every transfer it loads its accounts and,
/// for a leg of a conversion, every other transfer of the same quote (a capture or void
/// resolves all legs); the quotes by id or key, with each quote's `quote_accounts`; the
/// newest rate of each pair.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Keys {
    pub accounts: BTreeSet<AccountId>,
    pub idempotency_keys: BTreeSet<(Tenant, IdempotencyKey)>,
    pub users: BTreeSet<UserId>,
    pub orders: BTreeSet<OrderId>,
    /// One entry per user the batch creates without an id, in order: the tenant and the
    /// currency of the account that user opens. The store loads the last allocated number and
    /// the accounts `user:<next numbers>:<CUR>` in those tenants, which may exist already
    /// (opened by another surface).
    pub allocated_users: Vec<(Tenant, Currency)>,
    pub transfer_ids: BTreeSet<TransferId>,
    /// Pairs whose newest rate the store loads.
    pub rate_pairs: BTreeSet<(Tenant, Currency, Currency)>,
    /// Quotes by id, and the accounts each one's conversion moves through
    /// ([`Keys::quote_accounts`]).
    pub quotes: BTreeSet<QuoteId>,
    /// Quotes by the key they were asked with.
    pub quote_keys: BTreeSet<(Tenant, IdempotencyKey)>,
}

impl Keys {
    /// The accounts a conversion of `quote` moves through: the two liquidity accounts and the
    /// revenue account. The store loads them with every quote it loads.
    pub fn quote_accounts(quote: &Quote) -> [AccountId; 3] {
        Keys::conversion_accounts(&quote.tenant, &quote.terms)
    }

    /// The liquidity accounts of both currencies of `terms` and the revenue account.
    pub fn conversion_accounts(tenant: &Tenant, terms: &crate::fx::Terms) -> [AccountId; 3] {
        [
            liquidity_account(tenant, terms.from),
            liquidity_account(tenant, terms.to),
            revenue_account(tenant, terms.to),
        ]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Linking {
    /// Each transfer succeeds or fails on its own.
    Independent,
    /// All transfers commit, or none does.
    Linked,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandBody {
    CreateAccounts(Vec<NewAccount>),
    UpdateAccount(AccountUpdate),
    CreateTransfers {
        transfers: Vec<TransferRequest>,
        linking: Linking,
    },
    /// Expire these holds if they are still pending and their time has come.
    ExpireHolds(Vec<TransferId>),
    CreateUser(NewUser),
    CreateOrder(NewOrder),
    /// Pay a pending order (the same fields it was created with): the payment and the order's
    /// new status commit together. A settled order answers as it is.
    PayOrder(NewOrder),
    /// Set exchange rates, each with a `RateUpdated` event.
    SetRates(Vec<RateSet>),
    /// Lock priced terms as a quote.
    CreateQuote(NewQuote),
}

impl CommandBody {
    /// How many items the command carries, the unit of batch limits.
    pub fn size(&self) -> usize {
        match self {
            CommandBody::CreateTransfers { transfers, .. } => transfers.len(),
            CommandBody::CreateAccounts(accounts) => accounts.len(),
            CommandBody::ExpireHolds(ids) => ids.len(),
            CommandBody::SetRates(rates) => rates.len(),
            CommandBody::CreateQuote(_)
            | CommandBody::UpdateAccount(_)
            | CommandBody::CreateUser(_)
            | CommandBody::CreateOrder(_)
            | CommandBody::PayOrder(_) => 1,
        }
    }
}

impl CommandBody {
    /// Moves every account, user and order id of the body into `tenant`.
    fn scope_to(&mut self, tenant: &Tenant) {
        match self {
            CommandBody::CreateAccounts(accounts) => {
                accounts.iter_mut().for_each(|account| account.id.scope_to(tenant));
            }
            CommandBody::UpdateAccount(update) => update.id.scope_to(tenant),
            CommandBody::CreateTransfers { transfers, .. } => {
                for request in transfers {
                    match &mut request.movement {
                        Movement::Move { debit_account, credit_account, .. }
                        | Movement::Exchange { debit_account, credit_account, .. } => {
                            debit_account.scope_to(tenant);
                            credit_account.scope_to(tenant);
                        }
                        Movement::Capture { .. } | Movement::Void { .. } => {}
                    }
                    for account in &mut request.open_if_missing {
                        account.id.scope_to(tenant);
                    }
                }
            }
            CommandBody::CreateUser(user) => {
                if let Some(id) = &mut user.id {
                    id.scope_to(tenant);
                }
            }
            CommandBody::CreateOrder(order) | CommandBody::PayOrder(order) => {
                order.id.scope_to(tenant);
                order.user.scope_to(tenant);
            }
            CommandBody::ExpireHolds(_)
            | CommandBody::SetRates(_)
            | CommandBody::CreateQuote(_) => {}
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub tenant: Tenant,
    /// What the sender may do in its tenant: `apply` refuses the rest.
    pub authority: Authority,
    pub body: CommandBody,
    /// Set when a consumer runs the command in answer to an event: the store records the
    /// mark in the same transaction as the command's effects.
    pub inbox: Option<InboxMark>,
    /// The API key that sent the command (`None`: kopek itself, or auth off). Every event
    /// the command causes carries it: the audit trail.
    pub actor: Option<String>,
    /// The W3C `traceparent` of the span that sent the command (a request, a consumer). Every
    /// event the command causes carries it, so whoever acts on the event joins that trace.
    pub trace: Option<String>,
}

impl Command {
    /// A command in `tenant`: every account, user and order id in `body` is taken as the
    /// tenant's (ids belong to their tenant; see `ids`), whatever tenant it was parsed in.
    pub fn new(tenant: Tenant, authority: Authority, mut body: CommandBody) -> Command {
        body.scope_to(&tenant);
        Command { tenant, authority, body, inbox: None, actor: None, trace: None }
    }

    /// The idempotency key of the command's first transfer, if it moves money: what a log
    /// line or a span names it by.
    pub fn idempotency_key(&self) -> Option<&str> {
        match &self.body {
            CommandBody::CreateTransfers { transfers, .. } => {
                transfers.first().map(|transfer| transfer.idempotency_key.as_str())
            }
            _ => None,
        }
    }

    /// The same command, sent by the key `actor`.
    pub fn by(mut self, actor: Option<&str>) -> Command {
        self.actor = actor.map(str::to_owned);
        self
    }
}

/// A consumer's note that it handled an event. Written with the effects the event caused, in
/// one transaction, so a redelivered event is recognised and its effects are not repeated.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct InboxMark {
    pub consumer: String,
    pub event_id: String,
}

/// The commands the writer drained from its queue, applied in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub commands: Vec<Command>,
}

impl Batch {
    pub fn keys(&self) -> Keys {
        let mut keys = Keys::default();
        for command in &self.commands {
            match &command.body {
                CommandBody::CreateAccounts(accounts) => {
                    keys.accounts.extend(accounts.iter().map(|account| account.id.clone()));
                }
                CommandBody::UpdateAccount(update) => {
                    keys.accounts.insert(update.id.clone());
                }
                CommandBody::CreateTransfers { transfers, .. } => {
                    for request in transfers {
                        keys.idempotency_keys
                            .insert((command.tenant.clone(), request.idempotency_key.clone()));
                        match &request.movement {
                            Movement::Move { debit_account, credit_account, .. } => {
                                keys.accounts.insert(debit_account.clone());
                                keys.accounts.insert(credit_account.clone());
                            }
                            Movement::Exchange { debit_account, credit_account, terms, .. } => {
                                keys.accounts.insert(debit_account.clone());
                                keys.accounts.insert(credit_account.clone());
                                match terms {
                                    FxTerms::Quote(id) => {
                                        keys.quotes.insert(*id);
                                    }
                                    FxTerms::Market(terms) => keys
                                        .accounts
                                        .extend(Keys::conversion_accounts(&command.tenant, terms)),
                                }
                            }
                            Movement::Capture { pending_id, .. }
                            | Movement::Void { pending_id } => {
                                keys.transfer_ids.insert(*pending_id);
                            }
                        }
                    }
                }
                CommandBody::ExpireHolds(ids) => keys.transfer_ids.extend(ids.iter().copied()),
                CommandBody::CreateUser(user) => match &user.id {
                    Some(id) => {
                        keys.users.insert(id.clone());
                        keys.accounts.insert(id.account(user.currency));
                    }
                    None => keys.allocated_users.push((command.tenant.clone(), user.currency)),
                },
                CommandBody::CreateOrder(order) => {
                    keys.orders.insert(order.id.clone());
                }
                CommandBody::SetRates(rates) => keys.rate_pairs.extend(
                    rates.iter().map(|rate| (command.tenant.clone(), rate.base, rate.quote)),
                ),
                CommandBody::CreateQuote(quote) => {
                    keys.quote_keys.insert((command.tenant.clone(), quote.idempotency_key.clone()));
                }
                CommandBody::PayOrder(order) => {
                    keys.orders.insert(order.id.clone());
                    keys.accounts.insert(order.user.account(order.currency));
                    keys.accounts.insert(Order::shop_account(&command.tenant, order.currency));
                    keys.idempotency_keys.insert((command.tenant.clone(), order.id.payment_key()));
                }
            }
        }
        keys
    }

    /// How many items (transfers, accounts, holds, ...) the batch holds: its weight.
    pub fn transfer_count(&self) -> usize {
        self.commands.iter().map(|command| command.body.size()).sum()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountResult {
    Created(Account),
    /// The account already existed with exactly these fields: a replay.
    Existed(Account),
    /// The account after an update (unchanged when the update asked for nothing new).
    Updated(Account),
    Rejected(Rejection),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferResult {
    /// Recorded in this batch: posted, pending, or declined with its error.
    Committed(Transfer),
    /// The key was known with the same fingerprint: the transfer as it is now.
    Replayed(Transfer),
    /// Refused and not recorded (malformed input, or a reused idempotency key).
    Rejected(Rejection),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandResult {
    Accounts(Vec<AccountResult>),
    Account(AccountResult),
    Transfers(Vec<TransferResult>),
    Expired(Vec<TransferId>),
    User(UserResult),
    Order(OrderResult),
    Rates(Vec<RateResult>),
    Quote(QuoteResult),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RateResult {
    Set(FxRate),
    /// The pair's newest rate already has this value and source: nothing changed.
    Unchanged(FxRate),
    Rejected(Rejection),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuoteResult {
    Created(Quote),
    /// The key was used for a quote of the same conversion: that quote, as it is now.
    Existed(Quote),
    Rejected(Rejection),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserResult {
    /// With the account it opened (or found, if another surface opened it first).
    Created(User, Account),
    Existed(User),
    Rejected(Rejection),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderResult {
    Created(Order),
    /// The order already existed with these fields (a replay), as it is now.
    Existed(Order),
    /// After `PayOrder`: the order as it is now, paid or failed.
    Settled(Order),
    Rejected(Rejection),
}

/// Every effect of a batch, for the store to write in one database transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// One per command, in batch order.
    pub results: Vec<CommandResult>,
    /// Accounts that did not exist before, in their final state.
    pub accounts_opened: Vec<Account>,
    /// Accounts that existed and changed, in their final state.
    pub accounts_changed: Vec<Account>,
    /// New transfer records, in order.
    pub transfers_inserted: Vec<Transfer>,
    /// Existing transfer records (holds) whose status changed, in their final state.
    pub transfers_updated: Vec<Transfer>,
    pub entries: Vec<Entry>,
    pub events: Vec<Event>,
    pub users_created: Vec<User>,
    pub orders_created: Vec<Order>,
    /// Orders that existed and changed status, in their final state.
    pub orders_changed: Vec<Order>,
    /// The new last allocated user number, when the batch allocated any.
    pub last_user_number: Option<u64>,
    /// The inbox marks of the batch's commands; a mark already recorded is kept as it is.
    pub inbox: Vec<InboxMark>,
    pub rates_set: Vec<FxRate>,
    /// New quotes, in their final state (a quote a transfer priced itself is used at once).
    pub quotes_created: Vec<Quote>,
    /// Quotes that existed and were used.
    pub quotes_used: Vec<Quote>,
}

/// Applies a batch. Pure: the same state, batch, time and ids give the same outcome.
pub fn apply(state: State, batch: &Batch, now: Timestamp, ids: &mut dyn IdSource) -> Outcome {
    assert!(batch.commands.len() <= limits::COMMANDS_PER_BATCH_MAX);
    // The decision's own maps are hash maps sized for the batch up front: a plain transfer
    // then allocates nothing (B-tree maps allocate a node every few inserts). Their order
    // must never reach the outcome: they are looked up, and the one walk over transfers
    // (a conversion's legs, `exchange_legs`) sorts what it finds.
    let items: usize = batch.commands.iter().map(|command| command.body.size()).sum();
    let mut initial_posted: HashMap<AccountId, i64> = HashMap::with_capacity(state.accounts.len());
    initial_posted
        .extend(state.accounts.iter().map(|(id, account)| (id.clone(), account.balance.posted)));
    let mut ledger = Ledger::new(state, now, ids, items);
    let results = batch.commands.iter().map(|command| ledger.run(command)).collect();
    let mut outcome = ledger.finish(results);
    outcome.inbox = batch.commands.iter().filter_map(|command| command.inbox.clone()).collect();
    check_outcome(&outcome, &initial_posted);
    outcome
}

/// Postconditions: entries balance per currency, every balance moved by exactly its entries,
/// every change has one event.
fn check_outcome(outcome: &Outcome, initial_posted: &HashMap<AccountId, i64>) {
    let mut net_by_currency: BTreeMap<Currency, i128> = BTreeMap::new();
    let mut net_by_account: HashMap<&AccountId, i128> =
        HashMap::with_capacity(outcome.accounts_opened.len() + outcome.accounts_changed.len());
    for entry in &outcome.entries {
        assert!(entry.amount > 0);
        *net_by_currency.entry(entry.currency).or_default() += i128::from(entry.signed_amount());
        *net_by_account.entry(&entry.account_id).or_default() += i128::from(entry.signed_amount());
    }
    for net in net_by_currency.values() {
        assert_eq!(*net, 0, "debits must equal credits in every currency");
    }
    for account in outcome.accounts_opened.iter().chain(&outcome.accounts_changed) {
        let before = initial_posted.get(&account.id).copied().unwrap_or(0);
        let moved = net_by_account.get(&account.id).copied().unwrap_or(0);
        assert_eq!(
            i128::from(account.balance.posted),
            i128::from(before) + moved,
            "posted balance must equal its entries"
        );
        assert!(account.balance.pending_out >= 0 && account.balance.pending_in >= 0);
    }
    let transfer_events =
        outcome.events.iter().filter(|event| event.kind.creates_transfer()).count();
    assert_eq!(transfer_events, outcome.transfers_inserted.len(), "one event per new transfer");
    let opened_events =
        outcome.events.iter().filter(|event| event.kind == EventKind::AccountOpened).count();
    assert_eq!(opened_events, outcome.accounts_opened.len(), "one event per opened account");
    let order_events =
        outcome.events.iter().filter(|event| event.kind == EventKind::OrderCreated).count();
    assert_eq!(order_events, outcome.orders_created.len(), "one event per new order");
    let rate_events =
        outcome.events.iter().filter(|event| event.kind == EventKind::RateUpdated).count();
    assert_eq!(rate_events, outcome.rates_set.len(), "one event per rate set");
    let quote_events =
        outcome.events.iter().filter(|event| event.kind == EventKind::QuoteCreated).count();
    assert_eq!(quote_events, outcome.quotes_created.len(), "one event per new quote");
}

/// Undo records for a linked request, restored in reverse on failure.
enum Undo {
    Account(AccountId, Option<Account>),
    Transfer(TransferId, Option<Transfer>),
    Key((Tenant, IdempotencyKey)),
    Quote(QuoteId, Option<Quote>),
}

struct Marks {
    opened: usize,
    changed: usize,
    inserted: usize,
    updated: usize,
    entries: usize,
    events: usize,
    quotes_created: usize,
    quotes_used: usize,
}

struct Ledger<'a> {
    now: Timestamp,
    ids: &'a mut dyn IdSource,
    accounts: BTreeMap<AccountId, Account>,
    transfers: HashMap<TransferId, Transfer>,
    keys: HashMap<(Tenant, IdempotencyKey), TransferId>,
    opened: Vec<AccountId>,
    changed: Vec<AccountId>,
    inserted: Vec<TransferId>,
    updated: Vec<TransferId>,
    entries: Vec<Entry>,
    events: Vec<Event>,
    undo: Option<Vec<Undo>>,
    users: BTreeMap<UserId, User>,
    orders: BTreeMap<OrderId, Order>,
    users_created: Vec<UserId>,
    orders_created: Vec<OrderId>,
    orders_changed: Vec<OrderId>,
    last_user_number: u64,
    allocated_any_user: bool,
    /// The key behind the command being applied, and the span that sent it.
    actor: Option<String>,
    trace: Option<String>,
    rates: BTreeMap<(Tenant, Currency, Currency), FxRate>,
    rates_set: Vec<FxRate>,
    quotes: BTreeMap<QuoteId, Quote>,
    quotes_created: Vec<QuoteId>,
    quotes_used: Vec<QuoteId>,
    /// The conversion of the leg being recorded: every transfer record made meanwhile
    /// carries it.
    leg: Option<FxLeg>,
}

/// A pure check's verdict before anything changes.
type Check<T> = Result<T, Rejection>;

impl<'a> Ledger<'a> {
    /// `items`: how many the batch carries (`CommandBody::size`), to size its maps once.
    fn new(state: State, now: Timestamp, ids: &'a mut dyn IdSource, items: usize) -> Ledger<'a> {
        // A transfer may record up to three (a conversion's legs).
        let records = state.transfers.len() + 3 * items;
        let mut keys = HashMap::with_capacity(records);
        keys.extend(state.transfers.values().map(|transfer| {
            ((transfer.tenant.clone(), transfer.idempotency_key.clone()), transfer.id)
        }));
        let mut transfers = HashMap::with_capacity(records);
        transfers.extend(state.transfers);
        Ledger {
            now,
            ids,
            accounts: state.accounts,
            transfers,
            keys,
            opened: Vec::new(),
            changed: Vec::with_capacity(2 * items),
            inserted: Vec::with_capacity(items),
            updated: Vec::new(),
            entries: Vec::with_capacity(2 * items),
            events: Vec::with_capacity(items),
            undo: None,
            users: state.users,
            orders: state.orders,
            users_created: Vec::new(),
            orders_created: Vec::new(),
            orders_changed: Vec::new(),
            last_user_number: state.last_user_number,
            allocated_any_user: false,
            actor: None,
            trace: None,
            rates: state.rates,
            rates_set: Vec::new(),
            quotes: state.quotes,
            quotes_created: Vec::new(),
            quotes_used: Vec::new(),
            leg: None,
        }
    }

    fn run(&mut self, command: &Command) -> CommandResult {
        self.actor.clone_from(&command.actor);
        self.trace.clone_from(&command.trace);
        let tenant = &command.tenant;
        let authority = &command.authority;
        match &command.body {
            CommandBody::CreateAccounts(accounts) => CommandResult::Accounts(
                accounts
                    .iter()
                    .map(|account| match authority.permit_account(account) {
                        Ok(()) => self.create_account(tenant, account),
                        Err(rejection) => AccountResult::Rejected(rejection),
                    })
                    .collect(),
            ),
            CommandBody::UpdateAccount(update) => CommandResult::Account(
                match authority.permit_ledger_only("change an account's status or limit") {
                    Ok(()) => self.update_account(tenant, update),
                    Err(rejection) => AccountResult::Rejected(rejection),
                },
            ),
            CommandBody::CreateTransfers { transfers, linking } => CommandResult::Transfers(
                self.create_transfers(tenant, authority, transfers, *linking),
            ),
            CommandBody::ExpireHolds(ids) => {
                CommandResult::Expired(match authority.permit_ledger_only("expire holds") {
                    Ok(()) => ids.iter().filter_map(|id| self.expire(*id)).collect(),
                    Err(_) => Vec::new(),
                })
            }
            CommandBody::CreateUser(user) => {
                CommandResult::User(match authority.refuse_bound("create users") {
                    Ok(()) => self.create_user(tenant, user),
                    Err(rejection) => UserResult::Rejected(rejection),
                })
            }
            CommandBody::CreateOrder(order) => {
                CommandResult::Order(match permit_order(authority, order) {
                    Ok(()) => self.create_order(tenant, order),
                    Err(rejection) => OrderResult::Rejected(rejection),
                })
            }
            CommandBody::PayOrder(order) => {
                CommandResult::Order(match permit_order(authority, order) {
                    Ok(()) => self.pay_order(tenant, order),
                    Err(rejection) => OrderResult::Rejected(rejection),
                })
            }
            CommandBody::SetRates(rates) => CommandResult::Rates(
                rates
                    .iter()
                    .map(|rate| match authority.permit_ledger_only("set rates") {
                        Ok(()) => self.set_rate(tenant, rate),
                        Err(rejection) => RateResult::Rejected(rejection),
                    })
                    .collect(),
            ),
            CommandBody::CreateQuote(quote) => {
                CommandResult::Quote(self.create_quote(tenant, quote))
            }
        }
    }

    fn finish(self, results: Vec<CommandResult>) -> Outcome {
        let opened: HashSet<&AccountId> = self.opened.iter().collect();
        let mut inserted: HashSet<&TransferId> = HashSet::with_capacity(self.inserted.len());
        inserted.extend(&self.inserted);
        let account =
            |id: &AccountId| self.accounts.get(id).cloned().expect("journaled account exists");
        let transfer =
            |id: &TransferId| self.transfers.get(id).cloned().expect("journaled transfer exists");
        let mut changed_seen = HashSet::with_capacity(self.changed.len());
        let accounts_changed = self
            .changed
            .iter()
            .filter(|id| !opened.contains(id) && changed_seen.insert(*id))
            .map(account)
            .collect();
        let mut updated_seen = BTreeSet::new();
        let transfers_updated = self
            .updated
            .iter()
            .filter(|id| !inserted.contains(id) && updated_seen.insert(**id))
            .map(transfer)
            .collect();
        let order = |id: &OrderId| self.orders.get(id).cloned().expect("journaled order exists");
        let created_orders: BTreeSet<&OrderId> = self.orders_created.iter().collect();
        let mut orders_seen = BTreeSet::new();
        let orders_changed = self
            .orders_changed
            .iter()
            .filter(|id| !created_orders.contains(id) && orders_seen.insert(*id))
            .map(order)
            .collect();
        let quote = |id: &QuoteId| self.quotes.get(id).cloned().expect("journaled quote exists");
        let created_quotes: BTreeSet<&QuoteId> = self.quotes_created.iter().collect();
        let mut quotes_seen = BTreeSet::new();
        let quotes_used = self
            .quotes_used
            .iter()
            .filter(|id| !created_quotes.contains(id) && quotes_seen.insert(**id))
            .map(quote)
            .collect();
        let quotes_created = self.quotes_created.iter().map(quote).collect();
        Outcome {
            results,
            accounts_opened: self.opened.iter().map(account).collect(),
            accounts_changed,
            transfers_inserted: self.inserted.iter().map(transfer).collect(),
            transfers_updated,
            users_created: self
                .users_created
                .iter()
                .map(|id| self.users.get(id).cloned().expect("journaled user exists"))
                .collect(),
            orders_created: self.orders_created.iter().map(order).collect(),
            orders_changed,
            last_user_number: self.allocated_any_user.then_some(self.last_user_number),
            entries: self.entries,
            events: self.events,
            inbox: Vec::new(),
            rates_set: self.rates_set,
            quotes_created,
            quotes_used,
        }
    }
}

struct MovePlan {
    debit: Account,
    credit: Account,
    amount: Amount,
    currency: Currency,
    hold: Option<Hold>,
    /// Accounts opened on first use by this transfer, as they were before it.
    opened: Vec<Account>,
}

struct CapturePlan {
    hold: Transfer,
    debit: Account,
    credit: Account,
    captured: i64,
}

fn world_account(tenant: &Tenant, currency: Currency, now: Timestamp) -> Account {
    Account {
        id: AccountId::world_in(tenant, currency),
        tenant: tenant.clone(),
        currency,
        owner: None,
        kind: AccountKind::System,
        overdraft: Overdraft::Unbounded,
        status: AccountStatus::Active,
        metadata: Default::default(),
        balance: Balance::default(),
        created_at: now,
        updated_at: now,
    }
}

/// `world:`, `fx:` and `fx-revenue:` ids are reserved for each tenant's system accounts of
/// their own currency. An admin may open `fx:<CUR>` ahead of use to give it a limit.
/// Refuses an effective time outside its window: from the Unix epoch to a day after the
/// commit time (`limits::EFFECTIVE_AT_AHEAD_SECONDS_MAX`). Bad input, not recorded.
fn check_effective_at(request: &TransferRequest, now: Timestamp) -> Check<()> {
    let Some(at) = request.effective_at else {
        return Ok(());
    };
    let latest =
        now.as_unix_micros().saturating_add(limits::EFFECTIVE_AT_AHEAD_SECONDS_MAX * 1_000_000);
    if at.as_unix_micros() < 0 || at.as_unix_micros() > latest {
        return Err(Rejection::invalid(format!(
            "effective_at {} must be between 1970-01-01T00:00:00Z and a day after the commit \
             time",
            at.to_rfc3339()
        )));
    }
    Ok(())
}

/// Refuses an order a key bound to a user places or pays for another user.
fn permit_order(authority: &Authority, order: &NewOrder) -> Check<()> {
    match authority.user() {
        Some(user) if *user != order.user => {
            Err(crate::authority::denied("a key bound to a user orders only for that user"))
        }
        _ => Ok(()),
    }
}

/// Prefixes of the accounts kopek opens by itself on first use (the shop's account of orders,
/// the streaming contract's categories): no request opens one, so no tenant can take
/// another's, or its own before kopek opens it with the right fields.
pub const SERVER_PREFIXES: [&str; 2] = ["orders:", "category:"];

/// Refuses an account id kopek keeps for itself: the [`SERVER_PREFIXES`] not at all;
/// `user:<id>:<CUR>` only as that user's own account (owned by the user, kind user, no
/// credit), as the HTTP contract opens it; `world:`, `fx:` and `fx-revenue:` only as the
/// tenant's own system account of that currency.
fn check_reserved_id(tenant: &Tenant, request: &NewAccount) -> Check<()> {
    if let Some(prefix) =
        SERVER_PREFIXES.iter().find(|prefix| request.id.name().starts_with(**prefix))
    {
        return Err(Rejection::invalid(format!(
            "ids starting with '{prefix}' are reserved for the accounts kopek opens itself"
        )));
    }
    if request.id.name().starts_with("user:") {
        let owner = request.owner.as_deref().and_then(|owner| UserId::parse(owner).ok());
        let own = owner.is_some_and(|owner| {
            let derived = owner.in_tenant(tenant).new_account(request.currency);
            derived.id == request.id
                && derived.kind == request.kind
                && derived.overdraft == request.overdraft
        });
        if !own {
            return Err(Rejection::invalid(
                "ids starting with 'user:' are reserved for user:<id>:<CUR>, the account of user \
                 <id> (owned by that user, of kind user, without overdraft)",
            ));
        }
    }
    let reserved = [
        ("world:", AccountId::world_in(tenant, request.currency)),
        ("fx:", liquidity_account(tenant, request.currency)),
        ("fx-revenue:", revenue_account(tenant, request.currency)),
    ];
    for (prefix, allowed) in reserved {
        if request.id.name().starts_with(prefix)
            && (request.id != allowed || request.kind != AccountKind::System)
        {
            return Err(Rejection::invalid(format!(
                "ids starting with '{prefix}' are reserved for {prefix}<CUR> system accounts"
            )));
        }
    }
    Ok(())
}

fn check_status(account: &Account) -> Check<()> {
    match account.status {
        AccountStatus::Active => Ok(()),
        AccountStatus::Closed => Err(Rejection::new(
            ErrorCode::AccountClosed,
            format!("account {} is closed", account.id.name()),
        )),
        AccountStatus::Frozen => Err(Rejection::new(
            ErrorCode::AccountFrozen,
            format!("account {} is frozen", account.id.name()),
        )),
    }
}

fn checked(value: Option<i64>, account: &AccountId) -> Check<i64> {
    value.ok_or_else(|| {
        Rejection::new(
            ErrorCode::BalanceOverflow,
            format!("a balance of account {} would overflow", account.name()),
        )
    })
}

fn not_found(id: &AccountId) -> Rejection {
    Rejection::account_not_found(id)
}

fn key_reused(key: &IdempotencyKey) -> Rejection {
    Rejection::new(
        ErrorCode::IdempotencyKeyReused,
        format!("idempotency key '{key}' was already used with other parameters"),
    )
}

/// What every other transfer of a linked request answers when the one at `culprit` failed
/// with `rejection`: the same sentence whether the failure was found at intake or in `apply`.
pub fn linked_failed(culprit: usize, rejection: &Rejection) -> Rejection {
    Rejection::new(
        ErrorCode::LinkedEventFailed,
        format!(
            "the transfer at index {culprit} of this linked request failed with {}",
            rejection.code
        ),
    )
}

fn hold_sides(hold: Option<&Transfer>) -> (Option<AccountId>, Option<AccountId>, Option<Currency>) {
    match hold {
        Some(hold) => (hold.debit_account.clone(), hold.credit_account.clone(), hold.currency),
        None => (None, None, None),
    }
}
