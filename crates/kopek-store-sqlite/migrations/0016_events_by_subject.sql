-- The events of one transfer, account or order, for the console's pages (issue 22). Migration
-- 0011 dropped the outbox's subject index because it cost a random insert per event; since
-- migration 0014 a posted transfer's event is carried by its transfers row, found by the
-- transfer's id, so the outbox holds the other events only (holds, declines, accounts,
-- users, orders): each of those pays one more index insert, and a posted transfer none.
CREATE INDEX outbox_by_subject ON outbox (subject_id, sequence);
