-- The outbox relay's place per sink (broker), and the lease that lets one relay at a time
-- advance it: a relay may move the cursor only while it holds an unexpired lease.

CREATE TABLE relay_cursors (
    sink        TEXT PRIMARY KEY,
    sequence    BIGINT NOT NULL,   -- the last outbox sequence the sink confirmed
    holder      TEXT NOT NULL,     -- the relay process holding the lease
    lease_until BIGINT NOT NULL    -- unix micros
);
