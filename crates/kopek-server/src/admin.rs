//! `kopek keys` and `kopek audit`: key management and the audit trail, on the database
//! directly, so they work before the first start and while the server runs.

use crate::cli::{AuditArgs, CreateKeyArgs, KeysCommand, ListKeysArgs, RevokeKeyArgs};
use crate::serve::open_admin_store as open_store;
use anyhow::{Context, bail};
use kopek_auth::Scope;
use kopek_core::{Tenant, Timestamp, UserId};
use kopek_store::{ApiKey, AuditQuery};
use serde_json::json;

pub async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create(args) => create(args).await,
        KeysCommand::List(args) => list(args).await,
        KeysCommand::Revoke(args) => revoke(args).await,
    }
}

/// Checks a key's fields the way the server will read them back.
pub fn check_key_fields(scope: &str, tenant: &str, user: Option<&str>) -> anyhow::Result<Scope> {
    let scope = Scope::parse(scope)
        .with_context(|| format!("--scope {scope:?}: use read, write, gateway or admin"))?;
    Tenant::parse(tenant)
        .map_err(|rejection| anyhow::anyhow!("--tenant: {}", rejection.message))?;
    if let Some(user) = user {
        UserId::parse(user)
            .map_err(|rejection| anyhow::anyhow!("--user: {}", rejection.message))?;
        if scope > Scope::Write {
            bail!("a key bound to a user has scope read or write: it acts only as that user");
        }
    }
    Ok(scope)
}

async fn create(args: CreateKeyArgs) -> anyhow::Result<()> {
    let scope = check_key_fields(&args.scope, &args.tenant, args.user.as_deref())?;
    let store = open_store(&args.store).await?;
    let minted =
        kopek_auth::mint(&args.tenant, scope, args.user.as_deref(), &args.name, kopek_clock::now())
            .context("make a key")?;
    store.create_api_key(&minted.key).await.context("store the key")?;
    if args.json {
        println!(
            "{}",
            json!({"key": minted.token, "id": minted.key.id, "tenant": args.tenant, "scope": scope.as_str(), "user": args.user})
        );
    } else {
        println!("{}", minted.token);
        eprintln!(
            "created key {} ({} in tenant {}{}): shown once, only its hash is kept",
            minted.key.id,
            scope.as_str(),
            args.tenant,
            args.user.as_deref().map(|user| format!(", user {user}")).unwrap_or_default()
        );
    }
    Ok(())
}

fn key_json(key: &ApiKey) -> serde_json::Value {
    json!({
        "id": key.id,
        "tenant": key.tenant,
        "scope": key.scope,
        "user": key.user_id,
        "name": key.name,
        "created_at": key.created_at.to_rfc3339(),
        "revoked_at": key.revoked_at.map(Timestamp::to_rfc3339),
    })
}

async fn list(args: ListKeysArgs) -> anyhow::Result<()> {
    let store = open_store(&args.store).await?;
    let keys = store.api_keys(args.tenant.as_deref()).await?;
    if args.json {
        let keys: Vec<_> = keys.iter().map(key_json).collect();
        println!("{}", serde_json::Value::Array(keys));
        return Ok(());
    }
    println!(
        "{:<16}  {:<12}  {:<7}  {:<12}  {:<27}  {:<8}  NAME",
        "ID", "TENANT", "SCOPE", "USER", "CREATED", "STATUS"
    );
    for key in &keys {
        println!(
            "{:<16}  {:<12}  {:<7}  {:<12}  {:<27}  {:<8}  {}",
            key.id,
            key.tenant,
            key.scope,
            key.user_id.as_deref().unwrap_or("-"),
            key.created_at.to_rfc3339(),
            if key.revoked_at.is_some() { "revoked" } else { "active" },
            key.name
        );
    }
    Ok(())
}

async fn revoke(args: RevokeKeyArgs) -> anyhow::Result<()> {
    let id = kopek_auth::parse_token(&args.id).map_or(args.id.as_str(), |(id, _)| id);
    let store = open_store(&args.store).await?;
    if store.revoke_api_key(id, kopek_clock::now()).await? {
        println!("revoked key {id}");
        Ok(())
    } else if store.api_key(id).await?.is_some() {
        bail!("key {id} was revoked already")
    } else {
        bail!("no key {id}")
    }
}

pub async fn audit(args: AuditArgs) -> anyhow::Result<()> {
    let time = |text: Option<&str>, name: &str, default: Timestamp| match text {
        None => Ok(default),
        Some(text) => {
            Timestamp::parse_rfc3339(text).map_err(|error| anyhow::anyhow!("--{name}: {error}"))
        }
    };
    let query = AuditQuery {
        actor: args.key.clone(),
        since: time(args.since.as_deref(), "since", Timestamp::from_unix_micros(0))?,
        until: time(args.until.as_deref(), "until", Timestamp::from_unix_micros(i64::MAX))?,
        limit: args.limit.clamp(1, 100_000),
    };
    let store = open_store(&args.store).await?;
    for entry in store.audit(&query).await? {
        if args.json {
            println!(
                "{}",
                json!({"sequence": entry.sequence, "at": entry.at.to_rfc3339(), "key": entry.actor,
                       "tenant": entry.tenant, "event": entry.kind, "subject": entry.subject_id})
            );
        } else {
            println!(
                "{}  {:>8}  key {}  {}  {} {}",
                entry.at.to_rfc3339(),
                entry.sequence,
                entry.actor,
                entry.tenant,
                entry.kind,
                entry.subject_id
            );
        }
    }
    Ok(())
}
