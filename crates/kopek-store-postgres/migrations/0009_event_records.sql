-- Outbox rows keep the event as the ledger recorded it, in the record encoding
-- (`kopek_store::record`, after a format byte), and the events side renders its document
-- (`docs/events.md`) when a reader asks: the store holds no wire JSON. Rows written before
-- keep the document they were written with in `payload`, and are read as it.
--
-- Every row before this migration has its payload (it was NOT NULL), so the check is added
-- NOT VALID: existing rows are not scanned under the table's lock, which would hold up every
-- commit on a large outbox. It holds for every row written from now on.

ALTER TABLE outbox ADD COLUMN IF NOT EXISTS record BYTEA;
ALTER TABLE outbox ALTER COLUMN payload DROP NOT NULL;
ALTER TABLE outbox DROP CONSTRAINT IF EXISTS outbox_keeps_its_event;
ALTER TABLE outbox ADD CONSTRAINT outbox_keeps_its_event
    CHECK (record IS NOT NULL OR payload IS NOT NULL) NOT VALID;
