-- Every outbox row was entered in five indexes as it was written; outbox_pending (id of
-- the rows not sent) served only the counts of the backlog, which the partial indexes
-- outbox_unsent (not sent, not failed) and outbox_failed answer as well. A quota change
-- writes two outbox rows for each of the year's balances, so one index entry less per
-- row is 1.4 million fewer for 700,000 students (docs/ARCHITECTURE.md).
DROP INDEX IF EXISTS outbox_pending;
