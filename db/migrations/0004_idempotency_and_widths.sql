-- Idempotency keys per declarant and kind, and columns wide enough for every sum.

-- The digest of the message first applied under a key (a later message with the same
-- key and another digest is refused as DUPLICATE_EVENT_ID, naming `origin`), and where
-- that message came from (topic[partition]@offset). Both are empty for the ids the
-- system makes itself and for rows applied before this migration.
ALTER TABLE applied_events ADD COLUMN digest bytea, ADD COLUMN origin text;

-- A year's used hours are a sum over every declaration of the student: no bound on the
-- number of declarations means no 32-bit bound on the sum.
ALTER TABLE balances ALTER COLUMN used TYPE bigint, ALTER COLUMN quota TYPE bigint,
    ALTER COLUMN remaining TYPE bigint;
