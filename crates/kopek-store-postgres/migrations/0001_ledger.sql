-- The ledger on PostgreSQL: the same tables as the embedded store. Money is BIGINT minor
-- units, times are BIGINT microseconds since the Unix epoch, ids are TEXT. Only portable SQL:
-- no advisory locks, no extensions, so CockroachDB and YugabyteDB can run it too.

CREATE TABLE accounts (
    id              TEXT PRIMARY KEY,
    currency        TEXT NOT NULL,
    owner           TEXT,
    kind            TEXT NOT NULL,
    overdraft_limit BIGINT,
    status          TEXT NOT NULL,
    metadata        TEXT NOT NULL,
    posted          BIGINT NOT NULL,
    pending_out     BIGINT NOT NULL,
    pending_in      BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX accounts_by_owner ON accounts (owner, id) WHERE owner IS NOT NULL;

CREATE TABLE transfers (
    id              TEXT PRIMARY KEY,
    tenant          TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    kind            TEXT NOT NULL,
    action          TEXT NOT NULL,
    debit_account   TEXT,
    credit_account  TEXT,
    amount          BIGINT NOT NULL,
    currency        TEXT,
    pending_id      TEXT,
    status          TEXT NOT NULL,
    error_code      TEXT,
    error_message   TEXT,
    expires_at      BIGINT,
    captured_amount BIGINT NOT NULL,
    category        TEXT NOT NULL,
    description     TEXT NOT NULL,
    metadata        TEXT NOT NULL,
    effective_at    BIGINT NOT NULL,
    committed_at    BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (tenant, idempotency_key)
);
CREATE INDEX transfers_pending_by_expiry ON transfers (expires_at) WHERE status = 'pending';
CREATE INDEX transfers_by_pending_id ON transfers (pending_id) WHERE pending_id IS NOT NULL;

CREATE TABLE entries (
    sequence      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id    TEXT NOT NULL,
    transfer_id   TEXT NOT NULL,
    direction     TEXT NOT NULL,
    amount        BIGINT NOT NULL,
    currency      TEXT NOT NULL,
    balance_after BIGINT NOT NULL,
    effective_at  BIGINT NOT NULL,
    committed_at  BIGINT NOT NULL
);
CREATE INDEX entries_by_account ON entries (account_id, sequence);
CREATE INDEX entries_by_account_effective ON entries (account_id, effective_at);
CREATE INDEX entries_by_transfer ON entries (transfer_id);

CREATE TABLE outbox (
    sequence   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    tenant     TEXT NOT NULL,
    kind       TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    at         BIGINT NOT NULL,
    payload    TEXT NOT NULL
);
CREATE INDEX outbox_by_subject ON outbox (subject_id, kind);

CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- 'user_number' allocates user ids; 'outbox' is locked by every batch that appends events, so
-- outbox sequences are taken in commit order and a tailer never skips a later-committed row.
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('user_number', 0), ('outbox', 0);

CREATE TABLE orders (
    id              TEXT PRIMARY KEY,
    tenant          TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    amount          BIGINT NOT NULL,
    currency        TEXT NOT NULL,
    status          TEXT NOT NULL,
    failure_code    TEXT,
    failure_message TEXT,
    payment_id      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX orders_by_user ON orders (user_id, created_at);
CREATE INDEX orders_pending ON orders (created_at) WHERE status = 'PENDING';
