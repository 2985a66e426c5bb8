-- Transfer search (docs/api.md, "Searching transfers"): the indexes a search reads its
-- candidates from, both narrow `WITHOUT ROWID` tables of two integers, like `postings`.
--
-- `transfer_tags`: one row per metadata pair of a transfer, keyed by the pair's 64-bit tag
-- (`kopek_metadata_tag`: XXH3-64 of tenant, key and value); the pair is compared on the row
-- found. Every pair is indexed; a transfer has at most 32 (`METADATA_ENTRIES_MAX`).
CREATE TABLE transfer_tags (
    tag    INTEGER NOT NULL,
    number INTEGER NOT NULL,            -- transfers.number
    PRIMARY KEY (tag, number)
) WITHOUT ROWID;
INSERT OR IGNORE INTO transfer_tags (tag, number)
SELECT kopek_metadata_tag(t.tenant, m.key, m.value), t.number
FROM transfers t, json_each(t.metadata) m
WHERE t.metadata <> '{}';

-- `mentions`: the accounts a transfer that has no postings names (a hold, a void, a declined
-- transfer), so an account's transfers are its postings and its mentions. An account is named
-- by the 64-bit hash of its id (`kopek_key_hash('', id)`), not its number: a transfer declined
-- because the account did not exist yet names it all the same. The sequence is the
-- transfer's number times two, in the same order as postings' sequences.
CREATE TABLE mentions (
    account  INTEGER NOT NULL,          -- kopek_key_hash('', account id)
    sequence INTEGER NOT NULL,          -- transfers.number * 2
    PRIMARY KEY (account, sequence)
) WITHOUT ROWID;
INSERT OR IGNORE INTO mentions (account, sequence)
SELECT kopek_key_hash('', named.account), named.number * 2
FROM (SELECT debit_account AS account, number FROM transfers
      WHERE debit_balance_after IS NULL AND credit_balance_after IS NULL AND debit_account IS NOT NULL
      UNION ALL
      SELECT credit_account, number FROM transfers
      WHERE debit_balance_after IS NULL AND credit_balance_after IS NULL AND credit_account IS NOT NULL)
     AS named;

-- Commit time, for a search's time range: it grows with the row number, so this index is only
-- ever appended to at its right edge (one cheap insert per transfer), and a range is one
-- descent of it.
CREATE INDEX transfers_by_commit_time ON transfers (committed_at);
