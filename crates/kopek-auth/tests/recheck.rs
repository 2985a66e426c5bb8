//! A key revoked behind the authenticator's back, as another process's `kopek keys revoke`
//! does, stops working once the recheck period has passed, and not before: measured with a
//! clock the test moves, so nothing waits for five seconds to pass.

use kopek_auth::{AuthError, AuthMode, Authenticator, Scope};
use kopek_clock::{Clock, ManualClock};
use kopek_store::Store;
use std::sync::Arc;
use std::time::Duration;

const RECHECK: Duration = Duration::from_secs(5);

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    clock: ManualClock,
    token: String,
    key_id: String,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> =
        Arc::new(kopek_store_sqlite::JournalStore::open(dir.path()).expect("open store"));
    let clock = ManualClock::starting_now();
    let minted = kopek_auth::mint("default", Scope::Write, None, "test", clock.now()).expect("key");
    store.create_api_key(&minted.key).await.expect("stored");
    Fixture { _dir: dir, store, clock, token: minted.token, key_id: minted.key.id }
}

fn authenticator(fixture: &Fixture, recheck: Duration) -> Authenticator {
    let clock = Arc::new(fixture.clock.clone());
    Authenticator::new(fixture.store.clone(), AuthMode::Required, recheck, clock)
}

#[tokio::test]
async fn a_key_revoked_elsewhere_stops_working_when_the_recheck_period_has_passed() {
    let fixture = fixture().await;
    let auth = authenticator(&fixture, RECHECK);
    let header = format!("Bearer {}", fixture.token);
    let principal = auth.authenticate(Some(&header)).await.expect("a fresh key works");
    assert_eq!(principal.key_id.as_deref(), Some(fixture.key_id.as_str()));

    // Another process revokes the key: this one does not know yet.
    assert!(fixture.store.revoke_api_key(&fixture.key_id, fixture.clock.now()).await.expect("ok"));
    fixture.clock.advance(RECHECK - Duration::from_millis(1));
    assert!(auth.authenticate(Some(&header)).await.is_ok(), "trusted until the period is over");

    fixture.clock.advance(Duration::from_millis(1));
    assert_eq!(auth.authenticate(Some(&header)).await, Err(AuthError::Invalid));
    // The verdict is remembered: no clock movement brings the key back.
    fixture.clock.advance(RECHECK * 10);
    assert_eq!(auth.authenticate(Some(&header)).await, Err(AuthError::Invalid));
}

/// A wall clock stepped back after a key was checked must not make that check look recent
/// for longer than the period (an hour back would otherwise trust a revoked key for an hour).
#[tokio::test]
async fn a_clock_stepped_back_does_not_extend_the_trust() {
    let fixture = fixture().await;
    let auth = authenticator(&fixture, RECHECK);
    let header = format!("Bearer {}", fixture.token);
    let checked_at = fixture.clock.now();
    auth.authenticate(Some(&header)).await.expect("works");
    fixture.store.revoke_api_key(&fixture.key_id, checked_at).await.expect("revoked");
    let hour_back = checked_at.as_unix_micros() - 3_600_000_000;
    fixture.clock.set(kopek_core::Timestamp::from_unix_micros(hour_back));
    assert_eq!(auth.authenticate(Some(&header)).await, Err(AuthError::Invalid));
}

/// A stream's key watch ends once the key is revoked and the period has passed, and not
/// while the key stands.
#[tokio::test]
async fn a_key_watch_resolves_once_the_revocation_is_seen() {
    let fixture = fixture().await;
    let recheck = Duration::from_millis(20);
    let auth = authenticator(&fixture, recheck);
    let header = format!("Bearer {}", fixture.token);
    let principal = auth.authenticate(Some(&header)).await.expect("works");
    let watch = auth.watch(&principal);
    // The key stands: the watch keeps checking, with the clock moving, and never resolves.
    for _ in 0..5 {
        fixture.clock.advance(recheck);
        let early = tokio::time::timeout(recheck * 2, watch.revoked()).await;
        assert!(early.is_err(), "the watch ended while the key stood");
    }
    fixture.store.revoke_api_key(&fixture.key_id, fixture.clock.now()).await.expect("revoked");
    fixture.clock.advance(recheck);
    tokio::time::timeout(Duration::from_secs(5), watch.revoked())
        .await
        .expect("the watch ends once the revocation is read");
}
