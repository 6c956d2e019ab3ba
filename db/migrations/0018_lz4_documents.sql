-- Balance documents and outbox messages of more than about 2 kB (a student with several
-- employers: a quarter of a simulated year's balances, and their student.ledger events)
-- are compressed by PostgreSQL. lz4 does that in a fraction of pglz's CPU: a quota change
-- rewrites every balance document and writes two outbox rows for each, and with lz4
-- PostgreSQL's statements of a recompute took an eighth less time (docs/ARCHITECTURE.md).
-- Only values written from now on are compressed so; the others are read as they are.
-- A server built without lz4 keeps pglz, as before.
DO $$
BEGIN
    ALTER TABLE balances ALTER COLUMN document SET COMPRESSION lz4;
    ALTER TABLE outbox ALTER COLUMN value SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this PostgreSQL server has no lz4: values stay compressed with pglz';
END
$$;
