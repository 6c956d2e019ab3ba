-- The relay purges published outbox rows past their retention (STUDENTWORK_RELAY_KEEP_SENT_HOURS):
-- without an index on sent_at each purge scanned the whole outbox.
CREATE INDEX IF NOT EXISTS outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;
