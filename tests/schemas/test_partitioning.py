from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from schemas.partitioning import KeyHashPartitioner


def test_the_relay_partitioner_places_every_key_as_kafkas_default_does() -> None:
    partitioner = KeyHashPartitioner(keys=8)
    default = DefaultPartitioner()
    keys = [f"93051822361:{year}".encode() for year in range(2000, 2040)] + [b"", b"0123456749"]
    for partitions in ([0], [0, 1, 2], list(range(12))):
        # Twice over, with fewer kept hashes than keys: what it remembers and what it
        # hashes again place a key alike.
        for key in keys + keys:
            assert partitioner(key, partitions, partitions) == default(key, partitions, partitions)


def test_a_record_without_key_goes_to_an_available_partition() -> None:
    partitioner = KeyHashPartitioner()
    assert {partitioner(None, [0, 1, 2, 3], [2]) for _ in range(20)} == {2}
    assert {partitioner(None, [5], []) for _ in range(5)} == {5}
