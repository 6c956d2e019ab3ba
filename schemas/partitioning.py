"""Which partition a record key goes to: the hash of Kafka's default partitioner.

Java clients, aiokafka and faust all hash the key bytes with murmur2 (Kafka's variant, seed
``0x9747b28c``) and keep the positive 31 bits; the partition among ``P`` is that hash
modulo ``P``. The hash itself does not depend on ``P``, so it is stored once per student
(``students.key_hash``) and the students of any partition of any SSIN-keyed topic are
then chosen in SQL (``key_hash % P = p``), the way the monthly access-code rotation does.

aiokafka's own ``murmur2`` is used, so the result is bit-identical to what its producer
does; it is pure Python (about 2.4 us per SSIN), paid once per student when the row is
first written.
"""

from __future__ import annotations

from aiokafka.partitioner import murmur2

__all__ = ["KEY_HASH_MASK", "key_hash", "partition_of_key", "student_key_hash"]

KEY_HASH_MASK = 0x7FFFFFFF
"""The positive 31 bits Kafka keeps of murmur2 (``Utils.toPositive``)."""


def key_hash(key: bytes) -> int:
    """Kafka's default-partitioner hash of a record key: 0 <= hash < 2**31."""
    return int(murmur2(key)) & KEY_HASH_MASK


def student_key_hash(ssin: str) -> int:
    """The key hash of a student's records, keyed by the SSIN's ASCII bytes."""
    return key_hash(ssin.encode())


def partition_of_key(hash_: int, partitions: int) -> int:
    """The partition among ``partitions`` that a key of hash ``hash_`` goes to."""
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, got {partitions}")
    return hash_ % partitions
