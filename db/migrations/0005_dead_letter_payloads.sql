-- Dead letters that always fit the broker.

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
