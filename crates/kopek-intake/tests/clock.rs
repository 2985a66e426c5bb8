//! Time through the intake reads the engine's clock: a test moves a `ManualClock` past a
//! quote's life instead of waiting for it to pass.

use kopek_auth::Principal;
use kopek_clock::ManualClock;
use kopek_core::fx::{Rate, RateSet};
use kopek_core::{
    AccountId, Currency, ErrorCode, IdempotencyKey, NewAccount, QuoteResult, TransferKind,
    TransferResult, TransferStatus,
};
use kopek_engine::{Engine, EngineConfig};
use kopek_intake::conversion::{ConversionInput, QuoteInput};
use kopek_intake::{Intake, TransferInput};
use std::sync::Arc;
use std::time::Duration;

fn key(text: &str) -> IdempotencyKey {
    IdempotencyKey::parse_client(text).expect("a valid key")
}

/// A quote of 10.00 USD in EUR that lives one second.
async fn quote(intake: &Intake, caller: &Principal, name: &str) -> String {
    let input = QuoteInput {
        idempotency_key: key(name),
        conversion: ConversionInput {
            from: "USD".into(),
            to: "EUR".into(),
            side: None,
            amount: Some("10.00".into()),
            amount_minor: None,
        },
        spread_bp: None,
        ttl_seconds: Some(1),
    };
    match intake.quote(caller, input).await.expect("quoted") {
        QuoteResult::Created(quote) => quote.id.to_string(),
        other => panic!("no quote: {other:?}"),
    }
}

/// Pays alice -> bob at `quote`'s terms: the answer.
async fn pay(intake: &Intake, caller: &Principal, name: &str, quote: String) -> TransferResult {
    let mut input = TransferInput::new(key(name));
    input.debit_account_id = Some("alice".into());
    input.credit_account_id = Some("bob".into());
    input.quote_id = Some(quote);
    let request = intake.transfer(&caller.tenant, input).await.expect("readable");
    intake.submit_one(caller, request).await.expect("answered")
}

#[tokio::test]
async fn a_quote_expires_when_the_clock_passes_its_life_not_before() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn kopek_store::Store> =
        Arc::new(kopek_store_sqlite::SqliteStore::open(dir.path()).expect("open"));
    let clock = ManualClock::starting_now();
    let config = EngineConfig { clock: Arc::new(clock.clone()), ..EngineConfig::default() };
    let (engine, _writer) = Engine::start(store.clone(), config);
    let fx = kopek_fx::Fx::local(store, kopek_fx::FxConfig::default());
    let intake = Intake::new(engine, fx);
    let caller = Principal::anonymous();
    let (usd, eur) = (Currency::parse("USD").expect("USD"), Currency::parse("EUR").expect("EUR"));
    let accounts = vec![
        NewAccount::user(AccountId::parse("alice").expect("id"), usd),
        NewAccount::user(AccountId::parse("bob").expect("id"), eur),
    ];
    intake.create_accounts(&caller, accounts).await.expect("opened");
    let mut fund = TransferInput::new(key("fund"));
    fund.kind = TransferKind::Deposit;
    fund.credit_account_id = Some("alice".into());
    fund.amount = Some("100.00".into());
    fund.currency = Some("USD".into());
    let fund = intake.transfer(&caller.tenant, fund).await.expect("readable");
    intake.submit_one(&caller, fund).await.expect("funded");
    let rate = RateSet {
        base: usd,
        quote: eur,
        rate: Rate::parse("0.9").expect("rate"),
        source: "test".into(),
        valid_from: None,
    };
    intake.set_rates(&caller, vec![rate]).await.expect("rate set");

    // Within its second a quote pays: the clock has not moved.
    let live = quote(&intake, &caller, "q-live").await;
    let TransferResult::Committed(paid) = pay(&intake, &caller, "pay-live", live).await else {
        panic!("the live quote was not used")
    };
    assert_eq!(paid.status, TransferStatus::Posted, "{paid:?}");

    // Past it, the same request is declined, and recorded as such.
    let late = quote(&intake, &caller, "q-late").await;
    clock.advance(Duration::from_secs(2));
    let TransferResult::Committed(declined) = pay(&intake, &caller, "pay-late", late).await else {
        panic!("the late transfer was not recorded")
    };
    assert_eq!(declined.status, TransferStatus::Declined);
    assert_eq!(declined.error.map(|error| error.code), Some(ErrorCode::QuoteExpired));
}
