-- The journal-first store (issue 20) keeps these tables as the projection of its journal:
-- `frame` is the sequence of the last journal frame they hold, written in the same
-- transaction as that frame's rows. 0 for a ledger that has no journal.
CREATE TABLE IF NOT EXISTS projection (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    frame INTEGER NOT NULL
);
INSERT OR IGNORE INTO projection (id, frame) VALUES (1, 0);
