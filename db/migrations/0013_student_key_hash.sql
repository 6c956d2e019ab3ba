-- The partition-independent hash of each student's key (the SSIN): Kafka's default
-- partitioner hash, murmur2 of the key bytes keeping the positive 31 bits. The partition of
-- a student on any SSIN-keyed topic of P partitions is key_hash % P, so the monthly
-- access-code rotation picks a partition's students in SQL instead of hashing every SSIN
-- in Python once per partition. Written when the row is first inserted (db.store); rows
-- from before this migration stay NULL until the rotation fills them in (streams.attestations).
ALTER TABLE students
    ADD COLUMN key_hash integer CHECK (key_hash >= 0);

-- The rows still without their hash: empty once filled in, so finding none costs nothing.
CREATE INDEX students_without_key_hash ON students (ssin) WHERE key_hash IS NULL;
