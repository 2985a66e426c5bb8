-- The compact projection's last step (issue 20, docs/storage.md): a posted transfer's
-- `TransferPosted` event is not an outbox row of its own. Its transfers row carries what the
-- event adds to the row: its place in the event order, its id, the API key and trace behind
-- it, and of each account's balance what the row does not hold (the pending amounts and the
-- overdraft limit; the posted balance after is already there). The document is rendered from
-- these when a reader asks, as from an outbox row. The writer carries an event only when the
-- event rendered back from the row equals the one `apply` decided; any other event (and any
-- stored before this migration) stays an outbox row. Event sequences are one order across
-- both tables, assigned by the writer.
ALTER TABLE transfers ADD COLUMN event_sequence INTEGER;   -- NULL: no event carried
ALTER TABLE transfers ADD COLUMN event_id TEXT;
ALTER TABLE transfers ADD COLUMN event_actor TEXT;
ALTER TABLE transfers ADD COLUMN event_trace TEXT;
ALTER TABLE transfers ADD COLUMN debit_pending_out INTEGER;
ALTER TABLE transfers ADD COLUMN debit_pending_in INTEGER;
ALTER TABLE transfers ADD COLUMN debit_limit INTEGER;      -- NULL: unbounded
ALTER TABLE transfers ADD COLUMN credit_pending_out INTEGER;
ALTER TABLE transfers ADD COLUMN credit_pending_in INTEGER;
ALTER TABLE transfers ADD COLUMN credit_limit INTEGER;
CREATE UNIQUE INDEX transfers_by_event ON transfers (event_sequence)
    WHERE event_sequence IS NOT NULL;
CREATE INDEX transfers_by_tenant_event ON transfers (tenant, event_sequence)
    WHERE event_sequence IS NOT NULL;

-- Every event's row, in either table, without its document: for counts and checks.
CREATE VIEW events (sequence, id, tenant, kind, subject_id, at, actor, traceparent) AS
SELECT sequence, id, tenant, kind, subject_id, at, actor, traceparent FROM outbox
UNION ALL
SELECT event_sequence, event_id, tenant, 'TransferPosted', id, committed_at, event_actor,
       event_trace
FROM transfers WHERE event_sequence IS NOT NULL;
