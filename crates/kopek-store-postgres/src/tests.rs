//! The conformance suite on the machine's real PostgreSQL: each test gets a database of
//! its own. It needs KOPEK_TEST_DATABASE_URL (a server URL, e.g.
//! postgres://postgres@127.0.0.1:5432/postgres); without it the tests skip, loudly,
//! except in CI where they must run.

use super::PostgresStore;

pub struct TestDatabase {
    admin: String,
    name: String,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Best effort: the database is a throwaway either way.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async move {
                    if let Ok(pool) = sqlx::PgPool::connect(&admin).await {
                        let statement = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                        let _ = sqlx::query(&statement).execute(&pool).await;
                    }
                });
            }
        })
        .join();
    }
}

/// A fresh database on the test server, or `None` (skip) outside CI without one.
pub async fn fresh_store() -> Option<(PostgresStore, TestDatabase)> {
    let Ok(admin) = std::env::var("KOPEK_TEST_DATABASE_URL") else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must set KOPEK_TEST_DATABASE_URL for the PostgreSQL tests"
        );
        eprintln!("SKIPPED: KOPEK_TEST_DATABASE_URL is not set; PostgreSQL tests do not run");
        return None;
    };
    let name = format!("kopek_test_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(&admin).await.expect("connect to the test server");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&pool).await.expect("create database");
    pool.close().await;
    let url = match admin.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("KOPEK_TEST_DATABASE_URL must end with a database name"),
    };
    let store = PostgresStore::connect(&url).await.expect("connect and migrate");
    Some((store, TestDatabase { admin, name }))
}

kopek_store::conformance_tests!(fresh_store());

/// Issue 19, finding 5: a database written before ids belonged to their tenant (another
/// tenant's rows keyed by their bare ids) is upgraded by the migration: the rows move to
/// their tenant's keys, every reference follows, and the books verify.
#[tokio::test]
async fn another_tenants_rows_move_to_their_keys_on_upgrade() {
    use kopek_core::{AccountId, Tenant};
    use kopek_store::{Store, conformance};
    let Some((store, _database)) = fresh_store().await else { return };
    conformance::other_tenant_before_upgrade(&store).await;
    for statement in conformance::old_layout_statements(8) {
        crate::execute(store.pool(), &statement).await.expect("the old layout");
    }
    let alice = AccountId::parse("alice").expect("id");
    let acme = Tenant::parse("acme").expect("tenant");
    assert_eq!(store.account(&alice).await.expect("read").map(|a| a.tenant), Some(acme));
    // Migrations 9 and 10 run again too: they are written to find their columns in place.
    assert_eq!(store.migrate().await.expect("upgrade"), [8, 9, 10]);
    conformance::other_tenant_after_upgrade(&store).await;
}

#[tokio::test]
async fn processes_starting_together_on_an_empty_database_all_start() {
    let Some((store, _database)) = fresh_store().await else { return };
    // A second, empty database: fresh_store's own is migrated already.
    let name = format!("kopek_test_{}", uuid::Uuid::new_v4().simple());
    crate::execute(store.pool(), &format!("CREATE DATABASE {name}")).await.expect("create");
    let admin = std::env::var("KOPEK_TEST_DATABASE_URL").expect("set");
    let url = format!("{}/{name}", admin.rsplit_once('/').expect("a database name").0);
    let _empty = TestDatabase { admin, name };
    let starts = (0..6).map(|_| PostgresStore::connect(&url));
    for started in futures_util::future::join_all(starts).await {
        started.expect("every process starts");
    }
}

/// A database written before migration 9 kept each event's document as TEXT: once migrated,
/// those rows read as the documents they were written with, and new rows keep the event
/// itself (the `record` column), with no document stored.
#[tokio::test]
async fn events_written_before_records_read_as_their_documents() {
    use kopek_store::{EventBody, Store};
    let Some((store, _database)) = fresh_store().await else { return };
    let document = r#"{"at":"2026-01-01T00:00:00Z","balances":[],"id":"01J0000000000000000000000E","subject":{"id":"old"},"subject_type":"account","tenant":"default","type":"AccountOpened"}"#;
    crate::execute(
        store.pool(),
        &format!(
            "INSERT INTO outbox (id, tenant, kind, subject_id, at, payload) VALUES \
             ('01J0000000000000000000000E', 'default', 'AccountOpened', 'old', 0, '{document}')"
        ),
    )
    .await
    .expect("an old row");
    kopek_store::conformance::other_tenant_before_upgrade(&store).await;
    let events = store.events_after(None, 0, 100).await.expect("events");
    assert_eq!(events[0].body, EventBody::Document(document.to_owned()));
    assert!(events[1..].iter().all(|event| matches!(event.body, EventBody::Record(_))));
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE payload IS NOT NULL")
        .fetch_one(store.pool())
        .await
        .expect("count");
    assert_eq!(stored, 1, "only the old row keeps a document");
}
