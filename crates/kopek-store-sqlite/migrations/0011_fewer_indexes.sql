-- Fewer random B-tree inserts per transfer for the one writer (issue 20, docs/storage.md).
--
-- A balance at an effective time is summed back from the account's newest entries
-- (`entries_by_account`): an entry takes effect at most a day after its commit, so only the
-- entries committed since a day before that time can have taken effect after it. The
-- per-account effective-time index cost two random inserts per transfer for that one query.
DROP INDEX IF EXISTS entries_by_account_effective;

-- Events by subject were read only by `kopek verify`, which now counts them in one pass
-- over the outbox: the index cost a random insert per event.
DROP INDEX IF EXISTS outbox_by_subject;
