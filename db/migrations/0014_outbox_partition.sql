-- A message can name the partition it is for. The quota lane writes one recompute command
-- per partition of quota.recompute (streams.processor), so that the workers holding those
-- partitions recompute a year between them; the default partitioner would hash the
-- commands' keys onto fewer partitions than there are commands. NULL (every other
-- message): the partition of the key, as before. Adding a nullable column rewrites nothing.
ALTER TABLE outbox ADD COLUMN partition integer CHECK (partition >= 0);
