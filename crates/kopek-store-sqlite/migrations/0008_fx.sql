-- Currency conversion: rates (every one ever set, per tenant and pair), quotes, and each
-- transfer's conversion when it is a leg of one. Rates are exact fractions as text
-- ("4617/5000"); a quote's terms and a leg's conversion are JSON documents.

CREATE TABLE fx_rates (
    tenant     TEXT NOT NULL,
    base       TEXT NOT NULL,
    quote      TEXT NOT NULL,
    rate       TEXT NOT NULL,
    source     TEXT NOT NULL,
    valid_from INTEGER NOT NULL,
    set_at     INTEGER NOT NULL,
    PRIMARY KEY (tenant, base, quote, valid_from)
);

CREATE TABLE fx_quotes (
    id              TEXT PRIMARY KEY,
    tenant          TEXT NOT NULL,
    idempotency_key TEXT,               -- NULL: priced by the transfer that used it
    terms           TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    used_by         TEXT,
    used_at         INTEGER
);
CREATE UNIQUE INDEX fx_quotes_by_key ON fx_quotes (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

ALTER TABLE transfers ADD COLUMN quote_id TEXT;
ALTER TABLE transfers ADD COLUMN fx TEXT;
CREATE INDEX transfers_by_quote ON transfers (quote_id) WHERE quote_id IS NOT NULL;
