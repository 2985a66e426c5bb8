-- The ledger: accounts with balances, transfers (declined ones too, for idempotent replays),
-- entries with the balance after each, and the transactional outbox.
-- Money is INTEGER minor units; times are INTEGER microseconds since the Unix epoch.

CREATE TABLE accounts (
    id              TEXT PRIMARY KEY,
    currency        TEXT NOT NULL,
    owner           TEXT,
    kind            TEXT NOT NULL,
    overdraft_limit INTEGER,            -- NULL: unbounded (system accounts)
    status          TEXT NOT NULL,
    metadata        TEXT NOT NULL,      -- JSON object of strings
    posted          INTEGER NOT NULL,
    pending_out     INTEGER NOT NULL,
    pending_in      INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX accounts_by_owner ON accounts (owner, id) WHERE owner IS NOT NULL;

CREATE TABLE transfers (
    id              TEXT PRIMARY KEY,   -- ULID: sorts by creation time
    tenant          TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    kind            TEXT NOT NULL,
    action          TEXT NOT NULL,
    debit_account   TEXT,
    credit_account  TEXT,
    amount          INTEGER NOT NULL,
    currency        TEXT,
    pending_id      TEXT,
    status          TEXT NOT NULL,
    error_code      TEXT,
    error_message   TEXT,
    expires_at      INTEGER,
    captured_amount INTEGER NOT NULL,
    category        TEXT NOT NULL,
    description     TEXT NOT NULL,
    metadata        TEXT NOT NULL,
    effective_at    INTEGER NOT NULL,
    committed_at    INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (tenant, idempotency_key)
);
CREATE INDEX transfers_pending_by_expiry ON transfers (expires_at) WHERE status = 'pending';

CREATE TABLE entries (
    sequence      INTEGER PRIMARY KEY,  -- ledger-wide commit order; the statement cursor
    account_id    TEXT NOT NULL,
    transfer_id   TEXT NOT NULL,
    direction     TEXT NOT NULL,        -- 'debit' | 'credit'
    amount        INTEGER NOT NULL,
    currency      TEXT NOT NULL,
    balance_after INTEGER NOT NULL,
    effective_at  INTEGER NOT NULL,
    committed_at  INTEGER NOT NULL
);
CREATE INDEX entries_by_account ON entries (account_id, sequence);
CREATE INDEX entries_by_account_effective ON entries (account_id, effective_at, direction, amount);

CREATE TABLE outbox (
    sequence   INTEGER PRIMARY KEY,     -- global event order
    id         TEXT NOT NULL UNIQUE,    -- consumers deduplicate on it
    tenant     TEXT NOT NULL,
    kind       TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    at         INTEGER NOT NULL,
    payload    TEXT NOT NULL            -- JSON document
);
CREATE INDEX outbox_by_subject ON outbox (subject_id, kind);
