-- Users (all-digit ids are allocated from the counter), and orders with their settlement.

CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO counters (name, value) VALUES ('user_number', 0);

CREATE TABLE orders (
    id              TEXT PRIMARY KEY,
    tenant          TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    amount          INTEGER NOT NULL,
    currency        TEXT NOT NULL,
    status          TEXT NOT NULL,      -- 'PENDING' | 'PAID' | 'FAILED'
    failure_code    TEXT,
    failure_message TEXT,
    payment_id      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX orders_by_user ON orders (user_id, created_at);
CREATE INDEX orders_pending ON orders (created_at) WHERE status = 'PENDING';
