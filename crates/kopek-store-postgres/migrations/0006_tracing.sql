-- The W3C trace context of the span whose command caused the event (NULL: not traced, or
-- written before tracing). The relay puts it on the broker message; consumers continue it.
ALTER TABLE outbox ADD COLUMN traceparent TEXT;
