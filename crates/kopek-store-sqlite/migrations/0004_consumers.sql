-- Consumers: the inbox of events each consumer has handled (written in the transaction of
-- the effect, so a redelivered event is recognised), and the spending analytics they keep.

CREATE TABLE inbox (
    consumer     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    processed_at INTEGER NOT NULL,   -- unix micros
    PRIMARY KEY (consumer, event_id)
) WITHOUT ROWID;

CREATE TABLE spending (
    tenant      TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    category    TEXT NOT NULL,       -- '' when the transfer had none
    currency    TEXT NOT NULL,
    total_minor INTEGER NOT NULL,
    transfers   INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant, user_id, category, currency)
) WITHOUT ROWID;
