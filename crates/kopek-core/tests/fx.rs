//! Currency conversion in `apply`: rates, quotes, cross-currency transfers and their holds,
//! over a `MemoryLedger`, and a property test that every conversion balances per currency.

use kopek_core::fx::{self, liquidity_account, revenue_account};
use kopek_core::memory::{MemoryLedger, SequentialIds};
use kopek_core::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn currency(code: &str) -> Currency {
    Currency::parse(code).expect("currency")
}

fn id(text: &str) -> AccountId {
    AccountId::parse(text).expect("account id")
}

fn key(text: &str) -> IdempotencyKey {
    IdempotencyKey::parse(text).expect("key")
}

struct World {
    ledger: MemoryLedger,
    ids: SequentialIds,
    now: Timestamp,
    tenant: Tenant,
}

impl World {
    /// alice holds 1,000.00 USD; bob and carol hold EUR; dan holds JPY.
    fn new() -> World {
        let mut world = World {
            ledger: MemoryLedger::default(),
            ids: SequentialIds::default(),
            now: Timestamp::from_unix_micros(1_700_000_000_000_000),
            tenant: Tenant::default_tenant(),
        };
        let accounts = [("alice", "USD"), ("bob", "EUR"), ("carol", "EUR"), ("dan", "JPY")]
            .map(|(name, code)| NewAccount::user(id(name), currency(code)));
        world.run(CommandBody::CreateAccounts(accounts.to_vec()));
        world.transfer(
            "fund",
            TransferKind::Deposit,
            Movement::Move {
                debit_account: AccountId::world(currency("USD")),
                credit_account: id("alice"),
                amount: 100_000,
                currency: currency("USD"),
                hold: None,
            },
        );
        world
    }

    fn run(&mut self, body: CommandBody) -> CommandResult {
        self.now = Timestamp::from_unix_micros(self.now.as_unix_micros() + 1_000_000);
        let batch = Batch {
            commands: vec![Command::new(self.tenant.clone(), kopek_core::Authority::Ledger, body)],
        };
        let mut outcome = self.ledger.execute(&batch, self.now, &mut self.ids);
        outcome.results.remove(0)
    }

    fn transfer(
        &mut self,
        key_text: &str,
        kind: TransferKind,
        movement: Movement,
    ) -> TransferResult {
        let request = TransferRequest {
            idempotency_key: key(key_text),
            kind,
            movement,
            details: Details::default(),
            effective_at: None,
            open_if_missing: Vec::new(),
            fingerprint_extra: String::new(),
        };
        let body = CommandBody::CreateTransfers {
            transfers: vec![request],
            linking: Linking::Independent,
        };
        match self.run(body) {
            CommandResult::Transfers(mut results) => results.remove(0),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn set_rate(&mut self, base: &str, quote: &str, rate: &str) -> RateResult {
        let request = RateSet {
            base: currency(base),
            quote: currency(quote),
            rate: Rate::parse(rate).expect("rate"),
            source: "test".to_owned(),
            valid_from: None,
        };
        match self.run(CommandBody::SetRates(vec![request])) {
            CommandResult::Rates(mut results) => results.remove(0),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Prices a conversion from the ledger's rates through USD, as the surfaces do.
    fn terms(&self, from: &str, to: &str, side: Side, amount: i64, spread_bp: u32) -> Terms {
        let lookup = |a: Currency, b: Currency| {
            self.ledger
                .rates
                .iter()
                .rev()
                .find(|rate| rate.base == a && rate.quote == b)
                .map(|rate| rate.rate)
        };
        let mid =
            fx::derive(currency(from), currency(to), currency("USD"), lookup).expect("a rate");
        fx::price(currency(from), currency(to), side, amount, &mid, spread_bp).expect("priced")
    }

    fn quote(&mut self, key_text: &str, terms: Terms, ttl_seconds: u32) -> Quote {
        let request = NewQuote { idempotency_key: key(key_text), terms, ttl_seconds };
        match self.run(CommandBody::CreateQuote(request)) {
            CommandResult::Quote(QuoteResult::Created(quote) | QuoteResult::Existed(quote)) => {
                quote
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    fn exchange(
        &mut self,
        key_text: &str,
        debit: &str,
        credit: &str,
        terms: FxTerms,
        hold: bool,
    ) -> TransferResult {
        let movement = Movement::Exchange {
            debit_account: id(debit),
            credit_account: id(credit),
            terms,
            hold: hold.then_some(Hold { timeout_seconds: None }),
        };
        self.transfer(key_text, TransferKind::Transfer, movement)
    }

    fn posted(&self, account: &AccountId) -> i64 {
        self.ledger.accounts.get(account).map_or(0, |account| account.balance.posted)
    }

    fn balances(&self) -> BTreeMap<String, (i64, i64, i64)> {
        self.ledger
            .accounts
            .values()
            .map(|a| {
                (a.id.to_string(), (a.balance.posted, a.balance.pending_out, a.balance.pending_in))
            })
            .collect()
    }

    fn later(&mut self, seconds: i64) {
        self.now = Timestamp::from_unix_micros(self.now.as_unix_micros() + seconds * 1_000_000);
    }
}

fn committed(result: TransferResult) -> Transfer {
    match result {
        TransferResult::Committed(transfer) => transfer,
        other => panic!("expected a committed transfer, got {other:?}"),
    }
}

fn code(result: &TransferResult) -> Option<ErrorCode> {
    match result {
        TransferResult::Committed(transfer) | TransferResult::Replayed(transfer) => {
            transfer.error_code()
        }
        TransferResult::Rejected(rejection) => Some(rejection.code),
    }
}

#[test]
fn rates_are_set_in_time_order_and_a_repeat_changes_nothing() {
    let mut world = World::new();
    let RateResult::Set(first) = world.set_rate("USD", "EUR", "0.9234") else { panic!() };
    assert_eq!(first.rate, Rate::parse("0.9234").expect("present"));
    assert!(matches!(world.set_rate("USD", "EUR", "0.9234"), RateResult::Unchanged(_)));
    assert!(matches!(world.set_rate("USD", "EUR", "0.9240"), RateResult::Set(_)));
    let kinds: Vec<EventKind> = world.ledger.events.iter().map(|event| event.kind).collect();
    assert_eq!(kinds.iter().filter(|kind| **kind == EventKind::RateUpdated).count(), 2);
    // Back in time is refused; so is a pair of one currency.
    let mut stale = RateSet {
        base: currency("USD"),
        quote: currency("EUR"),
        rate: Rate::parse("0.5").expect("present"),
        source: "test".to_owned(),
        valid_from: Some(first.valid_from),
    };
    let CommandResult::Rates(results) = world.run(CommandBody::SetRates(vec![stale.clone()]))
    else {
        panic!()
    };
    assert!(matches!(&results[0], RateResult::Rejected(r) if r.code == ErrorCode::InvalidArgument));
    stale.quote = currency("USD");
    stale.valid_from = None;
    let CommandResult::Rates(results) = world.run(CommandBody::SetRates(vec![stale])) else {
        panic!()
    };
    assert!(matches!(&results[0], RateResult::Rejected(_)));
}

#[test]
fn a_quoted_conversion_moves_both_currencies_through_the_liquidity_accounts() {
    let mut world = World::new();
    world.set_rate("USD", "EUR", "0.9234");
    let terms = world.terms("USD", "EUR", Side::Sell, 10_000, 50);
    // 100.00 USD at 0.9234 is 92.34 EUR at mid; less 50 bp the customer gets 91.8783 -> 91.88.
    assert_eq!(
        (terms.sell_amount, terms.mid_amount, terms.buy_amount, terms.spread_amount),
        (10_000, 9_234, 9_188, 46)
    );
    let quote = world.quote("q1", terms, 30);
    let transfer =
        committed(world.exchange("pay-bob", "alice", "bob", FxTerms::Quote(quote.id), false));
    assert_eq!(transfer.status, TransferStatus::Posted);
    assert_eq!(transfer.debit_account, Some(id("alice")));
    assert_eq!(transfer.credit_account, Some(liquidity_account(&world.tenant, currency("USD"))));
    let fx = transfer.fx.as_deref().expect("the debit leg carries its conversion");
    assert_eq!((fx.quote_id, fx.role, fx.payee.clone()), (quote.id, LegRole::Debit, id("bob")));
    assert_eq!(fx.terms.path, "USDEUR");
    let tenant = world.tenant.clone();
    assert_eq!(world.posted(&id("alice")), 90_000);
    assert_eq!(world.posted(&id("bob")), 9_188);
    assert_eq!(world.posted(&liquidity_account(&tenant, currency("USD"))), 10_000);
    assert_eq!(world.posted(&liquidity_account(&tenant, currency("EUR"))), -9_234);
    assert_eq!(world.posted(&revenue_account(&tenant, currency("EUR"))), 46);
    // Three legs, each with the quote; the quote is used.
    let legs: Vec<&Transfer> = world
        .ledger
        .transfers
        .values()
        .filter(|t| t.fx.as_deref().is_some_and(|fx| fx.quote_id == quote.id))
        .collect();
    assert_eq!(legs.len(), 3);
    assert_eq!(world.ledger.quotes[&quote.id].used_by, Some(transfer.id));
    // The same request again replays; another request with the quote finds it used.
    let replay = world.exchange("pay-bob", "alice", "bob", FxTerms::Quote(quote.id), false);
    assert!(matches!(&replay, TransferResult::Replayed(t) if t.id == transfer.id));
    let reuse = world.exchange("pay-carol", "alice", "carol", FxTerms::Quote(quote.id), false);
    assert_eq!(code(&reuse), Some(ErrorCode::QuoteExpired));
    assert_eq!(world.posted(&id("carol")), 0);
}

#[test]
fn expired_unknown_and_mismatched_quotes_are_declined_and_move_nothing() {
    let mut world = World::new();
    world.set_rate("USD", "EUR", "0.9234");
    let terms = world.terms("USD", "EUR", Side::Sell, 10_000, 0);
    let quote = world.quote("q1", terms.clone(), 30);
    // The same key for the same conversion is the same quote; for another, a reuse.
    assert_eq!(world.quote("q1", terms.clone(), 30).id, quote.id);
    let other = world.terms("USD", "EUR", Side::Sell, 20_000, 0);
    let CommandResult::Quote(QuoteResult::Rejected(rejection)) =
        world.run(CommandBody::CreateQuote(NewQuote {
            idempotency_key: key("q1"),
            terms: other,
            ttl_seconds: 30,
        }))
    else {
        panic!()
    };
    assert_eq!(rejection.code, ErrorCode::IdempotencyKeyReused);
    let before = world.balances();
    world.later(31);
    let expired = world.exchange("late", "alice", "bob", FxTerms::Quote(quote.id), false);
    assert_eq!(code(&expired), Some(ErrorCode::QuoteExpired));
    let unknown = world.exchange(
        "unknown",
        "alice",
        "bob",
        FxTerms::Quote(QuoteId(Ulid::from_u128(7))),
        false,
    );
    assert_eq!(code(&unknown), Some(ErrorCode::NotFound));
    let fresh = world.quote("q2", terms, 30);
    let mismatch = world.exchange("mismatch", "alice", "dan", FxTerms::Quote(fresh.id), false);
    assert_eq!(code(&mismatch), Some(ErrorCode::CurrencyMismatch));
    assert_eq!(world.balances(), before, "declined conversions move nothing");
    // The declines are recorded: a retry answers the same.
    let again = world.exchange("late", "alice", "bob", FxTerms::Quote(quote.id), false);
    assert!(
        matches!(again, TransferResult::Replayed(t) if t.error_code() == Some(ErrorCode::QuoteExpired))
    );
}

#[test]
fn cross_rates_go_through_the_base_and_record_their_path() {
    let mut world = World::new();
    world.set_rate("EUR", "USD", "1.08");
    world.set_rate("USD", "JPY", "151.37");
    let terms = world.terms("EUR", "JPY", Side::Sell, 10_000, 0);
    assert_eq!(terms.path, "EURUSD * USDJPY");
    // 100.00 EUR * 1.08 * 151.37 = 16,347.96 JPY -> 16,348 (JPY has no minor digits).
    assert_eq!(terms.buy_amount, 16_348);
    let inverse = world.terms("JPY", "USD", Side::Buy, 10_000, 0);
    assert_eq!(inverse.path, "1/USDJPY");
    // 100.00 USD cost 15,137 JPY.
    assert_eq!(inverse.sell_amount, 15_137);
}

#[test]
fn a_market_priced_conversion_records_its_own_quote() {
    let mut world = World::new();
    world.set_rate("USD", "EUR", "0.9234");
    let terms = world.terms("USD", "EUR", Side::Buy, 5_000, 25);
    let transfer = committed(world.exchange(
        "m1",
        "alice",
        "bob",
        FxTerms::Market(Box::new(terms.clone())),
        false,
    ));
    let fx = transfer.fx.as_deref().expect("present");
    let quote = &world.ledger.quotes[&fx.quote_id];
    assert_eq!(quote.used_by, Some(transfer.id));
    assert_eq!(quote.idempotency_key, None);
    assert_eq!(world.posted(&id("bob")), 5_000, "a buy delivers exactly the amount asked");
    assert_eq!(world.posted(&id("alice")), 100_000 - terms.sell_amount);
    // A retry after the rate moved replays the original, not a new price.
    world.set_rate("USD", "EUR", "0.5");
    let moved = world.terms("USD", "EUR", Side::Buy, 5_000, 25);
    let replay = world.exchange("m1", "alice", "bob", FxTerms::Market(Box::new(moved)), false);
    assert!(matches!(replay, TransferResult::Replayed(t) if t.id == transfer.id));
    assert_eq!(world.posted(&id("bob")), 5_000);
}

#[test]
fn a_held_conversion_captures_and_voids_exactly_what_it_reserved_after_the_rate_changed() {
    let mut world = World::new();
    world.set_rate("USD", "EUR", "0.9234");
    let terms = world.terms("USD", "EUR", Side::Sell, 10_000, 50);
    let quote = world.quote("qh", terms.clone(), 30);
    let hold = committed(world.exchange("hold-1", "alice", "bob", FxTerms::Quote(quote.id), true));
    assert_eq!(hold.status, TransferStatus::Pending);
    let alice = &world.ledger.accounts[&id("alice")];
    assert_eq!((alice.balance.posted, alice.balance.pending_out), (100_000, 10_000));
    assert_eq!(world.ledger.accounts[&id("bob")].balance.pending_in, 9_188);
    world.set_rate("USD", "EUR", "0.5000");
    // A leg other than the debit leg cannot be resolved alone; nor can a part be captured.
    let credit_leg = world
        .ledger
        .transfers
        .values()
        .find(|t| {
            t.fx.as_deref().is_some_and(|fx| fx.quote_id == quote.id && fx.role == LegRole::Credit)
        })
        .map(|t| t.id)
        .expect("present");
    let alone =
        world.transfer("alone", TransferKind::Transfer, Movement::Void { pending_id: credit_leg });
    assert_eq!(code(&alone), Some(ErrorCode::InvalidArgument));
    let part = world.transfer(
        "part",
        TransferKind::Transfer,
        Movement::Capture {
            pending_id: hold.id,
            amount: Some(Amount::new(5_000).expect("present")),
        },
    );
    assert_eq!(code(&part), Some(ErrorCode::InvalidArgument));
    let capture = committed(world.transfer(
        "capture-1",
        TransferKind::Transfer,
        Movement::Capture { pending_id: hold.id, amount: None },
    ));
    assert_eq!((capture.status, capture.amount), (TransferStatus::Posted, 10_000));
    assert_eq!(world.posted(&id("alice")), 90_000);
    assert_eq!(world.posted(&id("bob")), 9_188, "the quote's amount, not today's rate");
    assert_eq!(world.posted(&revenue_account(&world.tenant, currency("EUR"))), 46);
    for account in world.ledger.accounts.values() {
        assert_eq!(
            (account.balance.pending_out, account.balance.pending_in),
            (0, 0),
            "{}",
            account.id
        );
    }
    // A second hold, voided: everything it reserved comes back, nothing posts.
    let quote = world.quote("qv", terms, 30);
    let before = world.balances();
    let hold = committed(world.exchange("hold-2", "alice", "bob", FxTerms::Quote(quote.id), true));
    world.set_rate("USD", "EUR", "0.7");
    let void = committed(world.transfer(
        "void-2",
        TransferKind::Transfer,
        Movement::Void { pending_id: hold.id },
    ));
    assert_eq!(void.status, TransferStatus::Voided);
    let after: BTreeMap<String, (i64, i64, i64)> = world.balances();
    assert_eq!(after, before);
    let voided = world.ledger.transfers.values().filter(|t| {
        t.fx.as_deref().is_some_and(|fx| fx.quote_id == quote.id) && t.action == Action::Hold
    });
    assert!(
        voided.clone().count() == 3
            && voided.into_iter().all(|t| t.status == TransferStatus::Voided)
    );
}

#[test]
fn a_liquidity_account_with_a_limit_runs_out_cleanly() {
    let mut world = World::new();
    world.set_rate("USD", "EUR", "0.9234");
    let pool = liquidity_account(&world.tenant, currency("EUR"));
    let opened = world.run(CommandBody::CreateAccounts(vec![NewAccount {
        id: pool.clone(),
        currency: currency("EUR"),
        owner: None,
        kind: AccountKind::System,
        overdraft: Overdraft::NONE,
        metadata: Default::default(),
    }]));
    assert!(
        matches!(opened, CommandResult::Accounts(ref r) if matches!(r[0], AccountResult::Created(_)))
    );
    // A user account cannot take a reserved id.
    let squat = world
        .run(CommandBody::CreateAccounts(vec![NewAccount::user(id("fx:GBP"), currency("GBP"))]));
    assert!(
        matches!(squat, CommandResult::Accounts(ref r) if matches!(r[0], AccountResult::Rejected(_)))
    );
    let before = world.balances();
    let terms = world.terms("USD", "EUR", Side::Sell, 10_000, 0);
    let result = world.exchange("dry", "alice", "bob", FxTerms::Market(Box::new(terms)), false);
    assert_eq!(code(&result), Some(ErrorCode::InsufficientFunds));
    let TransferResult::Committed(declined) = &result else { panic!() };
    assert!(declined.error.as_ref().expect("present").message.contains("fx:EUR"), "{declined:?}");
    assert_eq!(world.balances(), before);
    assert!(world.ledger.quotes.is_empty(), "the declined conversion's quote is not kept");
}

#[test]
fn leg_keys_are_reserved_for_the_ledger() {
    assert!(IdempotencyKey::parse_client("fx:01J:credit").is_err());
    assert!(IdempotencyKey::parse_client("fxx").is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random conversions, holds, captures and voids: every batch's entries balance in each
    /// currency, customers move exactly the quoted amounts, and nothing is left reserved
    /// once every hold is resolved.
    #[test]
    fn every_conversion_balances_per_currency(
        ops in proptest::collection::vec(
            (0usize..4, 0usize..4, 1i64..2_000_000, any::<bool>(), 0u32..200, 0u8..3, any::<bool>()),
            1..24,
        ),
        rate_digits in proptest::collection::vec(1u64..10_000_000, 3),
    ) {
        let mut world = World::new();
        for (name, code) in [("bob", "EUR"), ("dan", "JPY")] {
            world.transfer(&format!("fund-{name}"), TransferKind::Deposit, Movement::Move {
                debit_account: AccountId::world(currency(code)),
                credit_account: id(name),
                amount: 10_000_000,
                currency: currency(code),
                hold: None,
            });
        }
        let [eur, jpy, bhd] = [rate_digits[0], rate_digits[1], rate_digits[2]];
        world.set_rate("USD", "EUR", &format!("0.{eur:07}"));
        world.set_rate("USD", "JPY", &format!("{jpy}.5"));
        world.set_rate("BHD", "USD", &format!("2.{bhd:07}"));
        let accounts = [("alice", "USD"), ("bob", "EUR"), ("dan", "JPY"), ("carol", "EUR")];
        let mut holds = Vec::new();
        for (index, (from, to, amount, buy, spread, action, hold)) in ops.into_iter().enumerate() {
            let (payer, from_code) = accounts[from];
            let (payee, to_code) = accounts[to];
            if from_code == to_code {
                continue;
            }
            let side = if buy { Side::Buy } else { Side::Sell };
            let lookup = |a: Currency, b: Currency| world.ledger.rates.iter().rev()
                .find(|rate| rate.base == a && rate.quote == b).map(|rate| rate.rate);
            let mid = fx::derive(currency(from_code), currency(to_code), currency("USD"), lookup).expect("present");
            let Ok(terms) = fx::price(currency(from_code), currency(to_code), side, amount, &mid, spread) else {
                continue;
            };
            let events_before = world.ledger.entries.len();
            let result = world.exchange(&format!("x{index}"), payer, payee, FxTerms::Market(Box::new(terms.clone())), hold);
            let mut net: BTreeMap<Currency, i128> = BTreeMap::new();
            for entry in &world.ledger.entries[events_before..] {
                *net.entry(entry.currency).or_default() += i128::from(entry.signed_amount());
            }
            prop_assert!(net.values().all(|sum| *sum == 0), "unbalanced: {:?}", net);
            if let TransferResult::Committed(transfer) = result && transfer.error.is_none() {
                prop_assert_eq!(transfer.amount, terms.sell_amount);
                if hold {
                    holds.push((transfer.id, action));
                } else {
                    let credited: i64 = world.ledger.entries[events_before..].iter()
                        .filter(|e| e.account_id == id(payee)).map(|e| e.amount).sum();
                    prop_assert_eq!(credited, terms.buy_amount);
                }
            }
        }
        for (index, (hold, action)) in holds.into_iter().enumerate() {
            let movement = if action == 0 {
                Movement::Void { pending_id: hold }
            } else {
                Movement::Capture { pending_id: hold, amount: None }
            };
            let entries_before = world.ledger.entries.len();
            let result = world.transfer(&format!("resolve{index}"), TransferKind::Transfer, movement);
            prop_assert_eq!(code(&result), None);
            let mut net: BTreeMap<Currency, i128> = BTreeMap::new();
            for entry in &world.ledger.entries[entries_before..] {
                *net.entry(entry.currency).or_default() += i128::from(entry.signed_amount());
            }
            prop_assert!(net.values().all(|sum| *sum == 0));
        }
        let mut totals: BTreeMap<Currency, i128> = BTreeMap::new();
        for account in world.ledger.accounts.values() {
            prop_assert_eq!((account.balance.pending_out, account.balance.pending_in), (0, 0));
            *totals.entry(account.currency).or_default() += i128::from(account.balance.posted);
        }
        prop_assert!(totals.values().all(|sum| *sum == 0), "books: {:?}", totals);
    }
}

#[test]
fn a_missing_account_is_found_out_before_a_currency_mismatch() {
    let mut world = World::new();
    world.set_rate("USD", "EUR", "0.9234");
    // alice holds USD, the quote sells EUR, and the payee does not exist: not found wins.
    let terms = world.terms("EUR", "USD", Side::Sell, 1_000, 0);
    let result =
        world.exchange("order", "alice", "ghost", FxTerms::Market(Box::new(terms.clone())), false);
    assert_eq!(code(&result), Some(ErrorCode::AccountNotFound));
    let result = world.exchange("order-2", "alice", "bob", FxTerms::Market(Box::new(terms)), false);
    assert_eq!(code(&result), Some(ErrorCode::CurrencyMismatch));
}
