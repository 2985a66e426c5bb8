-- Transfer search (docs/api.md, "Searching transfers").
--
-- `position` orders transfers by commit: a transfer takes it from `transfer_position` while
-- its transaction holds the outbox lock, which it keeps until it commits, so a transfer that
-- commits later always has a larger position, whichever process wrote it. A search's cursor
-- is a position: paging is stable while other transactions commit. Transfers written before
-- this migration are numbered in commit-time order.
-- Written to run again safely, like 0009.
CREATE SEQUENCE IF NOT EXISTS transfer_position;
ALTER TABLE transfers ADD COLUMN IF NOT EXISTS position BIGINT;
UPDATE transfers t SET position = n.position
FROM (SELECT id, (SELECT COALESCE(max(position), 0) FROM transfers)
             + row_number() OVER (ORDER BY committed_at, id) AS position
      FROM transfers WHERE position IS NULL) n
WHERE t.id = n.id;
SELECT setval('transfer_position', COALESCE((SELECT max(position) FROM transfers), 0) + 1, false);
ALTER TABLE transfers ALTER COLUMN position SET DEFAULT nextval('transfer_position');
ALTER TABLE transfers ALTER COLUMN position SET NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS transfers_by_position ON transfers (position);
CREATE INDEX IF NOT EXISTS transfers_by_debit_account ON transfers (debit_account, position);
CREATE INDEX IF NOT EXISTS transfers_by_credit_account ON transfers (credit_account, position);
-- Every metadata pair is searchable (`metadata @> {"key": "value"}`).
CREATE INDEX IF NOT EXISTS transfers_by_metadata ON transfers USING gin ((metadata::jsonb) jsonb_path_ops);
