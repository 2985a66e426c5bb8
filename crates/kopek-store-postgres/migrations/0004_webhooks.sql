-- Webhooks: subscriptions per tenant and event type, one delivery per subscription and event
-- (enqueued by the notifier consumer with its inbox mark), and the log of every attempt.

CREATE TABLE webhook_subscriptions (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    url         TEXT NOT NULL,
    event_types TEXT NOT NULL,      -- comma-separated; empty: every type
    secret      TEXT NOT NULL,      -- signs deliveries (HMAC-SHA256)
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);
CREATE INDEX webhook_subscriptions_by_tenant ON webhook_subscriptions (tenant) WHERE deleted_at IS NULL;

CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY,
    subscription_id  TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    body             TEXT NOT NULL,
    status           TEXT NOT NULL,      -- 'pending' | 'delivered' | 'dead'
    attempts         BIGINT NOT NULL,   -- made so far, over every round
    dead_after       BIGINT NOT NULL,   -- dead-lettered once attempts reach this
    next_attempt_at  BIGINT NOT NULL,
    claimed_until    BIGINT NOT NULL,   -- a sender owns it until then
    last_status_code BIGINT,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    UNIQUE (subscription_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_subscription ON webhook_deliveries (subscription_id, created_at);

CREATE TABLE webhook_attempts (
    delivery_id TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    status_code BIGINT,
    error       TEXT,
    duration_ms BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
