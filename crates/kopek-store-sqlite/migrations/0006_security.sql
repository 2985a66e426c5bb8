-- API keys (only the secret's slow hash is kept), tenants on accounts and users, and the key
-- behind every outbox event for the audit trail.

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    scope       TEXT NOT NULL,      -- 'read' | 'write' | 'gateway' | 'admin'
    user_id     TEXT,               -- set: the key sees and moves only this user's accounts
    name        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,      -- argon2id, PHC string
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant, created_at);

-- Account and user ids stay global; each belongs to one tenant, which alone sees it.
ALTER TABLE accounts ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE users ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
CREATE INDEX accounts_by_tenant ON accounts (tenant, id);
CREATE INDEX outbox_by_tenant ON outbox (tenant, sequence);

-- The API key that caused the event (NULL: kopek itself, or auth off).
ALTER TABLE outbox ADD COLUMN actor TEXT;
CREATE INDEX outbox_by_actor ON outbox (actor, sequence) WHERE actor IS NOT NULL;
