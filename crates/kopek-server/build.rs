//! Builds the PostgreSQL run of the integration tests (`tests/it_postgres`) only when a test
//! database server is configured, so a machine without PostgreSQL skips it loudly instead of
//! failing every test.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(kopek_postgres_tests)");
    println!("cargo::rerun-if-env-changed=KOPEK_TEST_DATABASE_URL");
    if std::env::var_os("KOPEK_TEST_DATABASE_URL").is_some() {
        println!("cargo::rustc-cfg=kopek_postgres_tests");
    }
}
