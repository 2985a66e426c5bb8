-- The compact projection (issue 20, docs/storage.md): an entry is no longer a row of its own
-- with a text-keyed index entry. A transfer row carries the balances after it of both its
-- accounts, and a posting is two integers, the account's number and the entry's sequence, in
-- a `WITHOUT ROWID` table: the one random insert per entry is narrow. A transfer is found by
-- its idempotency key through the key's 64-bit hash (`kopek_key_hash`, XXH3-64 of tenant and
-- key, which the store registers on the connection that migrates) instead of a unique index
-- of the two texts; the key is compared on the row found. One writer decides every key, so
-- the index need not be unique; `kopek verify` reports a key that names two transfers.
--
-- Accounts and transfers get an explicit number (`INTEGER PRIMARY KEY`, which VACUUM keeps;
-- a plain rowid it may change). An entry's sequence is its transfer's number times two, plus
-- one for the credit: commit order as before, so statements list in the same order, but
-- sequences written before this migration are renumbered to larger numbers (a statement
-- cursor taken before it resumes earlier and repeats entries; it skips none). `entries`
-- stays readable as a view with the columns it had.

CREATE TABLE accounts_v13 (
    number          INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
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
    updated_at      INTEGER NOT NULL,
    tenant          TEXT NOT NULL DEFAULT 'default'
);
INSERT INTO accounts_v13 (number, id, currency, owner, kind, overdraft_limit, status, metadata,
                          posted, pending_out, pending_in, created_at, updated_at, tenant)
SELECT rowid, id, currency, owner, kind, overdraft_limit, status, metadata,
       posted, pending_out, pending_in, created_at, updated_at, tenant
FROM accounts ORDER BY rowid;

CREATE TABLE transfers_v13 (
    number               INTEGER PRIMARY KEY,  -- commit order
    id                   TEXT NOT NULL UNIQUE, -- ULID: sorts by creation time
    tenant               TEXT NOT NULL,
    idempotency_key      TEXT NOT NULL,
    fingerprint          TEXT NOT NULL,
    kind                 TEXT NOT NULL,
    action               TEXT NOT NULL,
    debit_account        TEXT,
    credit_account       TEXT,
    amount               INTEGER NOT NULL,
    currency             TEXT,
    pending_id           TEXT,
    status               TEXT NOT NULL,
    error_code           TEXT,
    error_message        TEXT,
    expires_at           INTEGER,
    captured_amount      INTEGER NOT NULL,
    category             TEXT NOT NULL,
    description          TEXT NOT NULL,
    metadata             TEXT NOT NULL,
    effective_at         INTEGER NOT NULL,
    committed_at         INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL,
    quote_id             TEXT,
    fx                   TEXT,
    -- The posted balances of the debit and credit accounts after this transfer's entries;
    -- NULL when it has none (holds, declines).
    debit_balance_after  INTEGER,
    credit_balance_after INTEGER,
    key_hash             INTEGER NOT NULL    -- kopek_key_hash(tenant, idempotency_key)
);
CREATE INDEX entries_by_transfer_v13 ON entries (transfer_id, direction);
INSERT INTO transfers_v13 (number, id, tenant, idempotency_key, fingerprint, kind, action,
                           debit_account, credit_account, amount, currency, pending_id, status,
                           error_code, error_message, expires_at, captured_amount, category,
                           description, metadata, effective_at, committed_at, updated_at,
                           quote_id, fx, debit_balance_after, credit_balance_after, key_hash)
SELECT t.rowid, t.id, t.tenant, t.idempotency_key, t.fingerprint, t.kind, t.action,
       t.debit_account, t.credit_account, t.amount, t.currency, t.pending_id, t.status,
       t.error_code, t.error_message, t.expires_at, t.captured_amount, t.category,
       t.description, t.metadata, t.effective_at, t.committed_at, t.updated_at,
       t.quote_id, t.fx,
       (SELECT e.balance_after FROM entries e WHERE e.transfer_id = t.id AND e.direction = 'debit'),
       (SELECT e.balance_after FROM entries e WHERE e.transfer_id = t.id AND e.direction = 'credit'),
       kopek_key_hash(t.tenant, t.idempotency_key)
FROM transfers t ORDER BY t.rowid;

CREATE TABLE postings (
    account  INTEGER NOT NULL,          -- accounts.number
    sequence INTEGER NOT NULL,          -- transfers.number * 2, + 1 for the credit
    PRIMARY KEY (account, sequence)
) WITHOUT ROWID;
INSERT INTO postings (account, sequence)
SELECT a.number, t.number * 2 + (e.direction = 'credit')
FROM entries e
JOIN transfers_v13 t ON t.id = e.transfer_id
JOIN accounts_v13 a ON a.id = e.account_id;

DROP TABLE entries;
DROP TABLE transfers;
DROP TABLE accounts;
ALTER TABLE accounts_v13 RENAME TO accounts;
ALTER TABLE transfers_v13 RENAME TO transfers;
CREATE INDEX accounts_by_owner ON accounts (owner, id) WHERE owner IS NOT NULL;
CREATE INDEX accounts_by_tenant ON accounts (tenant, id);
CREATE INDEX transfers_pending_by_expiry ON transfers (expires_at) WHERE status = 'pending';
CREATE INDEX transfers_by_quote ON transfers (quote_id) WHERE quote_id IS NOT NULL;
CREATE INDEX transfers_by_key_hash ON transfers (key_hash);

-- Entries as they were: a posting, its account's id and its transfer's columns.
CREATE VIEW entries (sequence, account_id, transfer_id, direction, amount, currency,
                     balance_after, effective_at, committed_at) AS
SELECT p.sequence, a.id, t.id,
       CASE p.sequence % 2 WHEN 0 THEN 'debit' ELSE 'credit' END,
       t.amount, t.currency,
       CASE p.sequence % 2 WHEN 0 THEN t.debit_balance_after ELSE t.credit_balance_after END,
       t.effective_at, t.committed_at
FROM postings p
JOIN accounts a ON a.number = p.account
JOIN transfers t ON t.number = p.sequence / 2;
