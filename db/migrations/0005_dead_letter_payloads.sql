-- Dead letters that always fit the broker, and an outbox relay that isolates the rows the
-- broker refuses instead of retrying them forever.

-- The raw bytes of rejected messages too large to travel inline (base64) in their dead
-- letter. The dead letter on declarations.rejected names the row (rawRef) and carries
-- the size and SHA-256, so a tool can fetch the bytes and check them. Keyed by the dead
-- letter's event id ("rejected:<topic>:<partition>:<offset>").
CREATE TABLE dead_letter_payloads (
    event_id   text PRIMARY KEY,
    raw        bytea NOT NULL,
    sha256     text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size       integer NOT NULL CHECK (size = length(raw)),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A row the broker refused for good (too large, invalid topic name) is marked failed:
-- it stays here, value included, for an operator, and the relay publishes a small dead
-- letter describing it. Clearing failed_at puts it back in the queue.
ALTER TABLE outbox
    ADD COLUMN failed_at timestamptz,
    ADD COLUMN failure   text,
    ADD CONSTRAINT outbox_sent_or_failed CHECK (sent_at IS NULL OR failed_at IS NULL);

-- What the relay reads, in id order. outbox_pending (sent_at IS NULL) stays: the health
-- view's backlog count still uses it.
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL AND failed_at IS NULL;
CREATE INDEX outbox_failed ON outbox (id) WHERE failed_at IS NOT NULL;
-- The purge after every drain (DELETE ... WHERE sent_at < ...) scanned the whole table.
CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;
