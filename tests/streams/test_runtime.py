"""The runtime's failure semantics, alone: classification, retries, isolation by bisection.

These drive :func:`streams.runtime.apply_isolating` with a handler written here (no
broker, no database); the same code runs on the real parts in test_poison.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
from asyncpg.exceptions._base import DataError as ClientDataError

from streams.runtime import RawRecord, apply_isolating, is_transient


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (asyncpg.SerializationError("could not serialize access"), True),
        (asyncpg.DeadlockDetectedError("deadlock detected"), True),
        (asyncpg.ConnectionDoesNotExistError("connection was closed"), True),
        (asyncpg.CannotConnectNowError("the database system is starting up"), True),
        (asyncpg.AdminShutdownError("terminating connection"), True),
        (asyncpg.TooManyConnectionsError("too many clients"), True),
        (asyncpg.InterfaceError("pool is closing"), True),
        (ConnectionRefusedError(111, "refused"), True),
        (TimeoutError(), True),
        (KafkaConnectionError(), True),
        (asyncpg.NumericValueOutOfRangeError("integer out of range"), False),
        (asyncpg.CharacterNotInRepertoireError("invalid byte sequence 0x00"), False),
        (asyncpg.UniqueViolationError("duplicate key"), False),
        (asyncpg.RaiseError("injected"), False),
        (ClientDataError("invalid input for query argument $1: 2147483648"), False),
        (MessageSizeTooLargeError(), False),
        (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), False),
        (ValueError("anything else"), False),
        (KeyError("a bug"), False),
    ],
)
def test_errors_are_classified(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


def record(offset: int, value: bytes) -> RawRecord:
    return RawRecord("dimona.declarations", 0, offset, 0, b"k", value)


@dataclass
class Handler:
    """Applies all or nothing; a batch holding a poison record fails permanently."""

    transient_failures: int = 0
    applied: list[int] = field(default_factory=list)
    quarantined: list[tuple[int, str]] = field(default_factory=list)
    attempts: int = 0

    async def apply(self, records: Sequence[RawRecord]) -> object:
        self.attempts += 1
        if self.transient_failures:
            self.transient_failures -= 1
            raise ConnectionResetError("connection lost")
        if any(r.value == b"poison" for r in records):
            raise asyncpg.NumericValueOutOfRangeError("integer out of range")
        self.applied.extend(r.offset for r in records)
        return None

    async def quarantine(self, record: RawRecord, error: BaseException) -> None:
        self.quarantined.append((record.offset, type(error).__name__))


async def test_poison_records_are_isolated_and_the_rest_applied_in_order() -> None:
    values = [b"ok"] * 100
    for at in (3, 4, 57, 99):
        values[at] = b"poison"
    records = [record(n, v) for n, v in enumerate(values)]
    handler = Handler()

    quarantined = await apply_isolating(handler, records, "test batch")

    assert quarantined == 4
    assert handler.quarantined == [
        (3, "NumericValueOutOfRangeError"),
        (4, "NumericValueOutOfRangeError"),
        (57, "NumericValueOutOfRangeError"),
        (99, "NumericValueOutOfRangeError"),
    ]
    assert handler.applied == [n for n in range(100) if n not in (3, 4, 57, 99)]


async def test_a_transient_failure_is_retried_not_split() -> None:
    handler = Handler(transient_failures=2)
    records = [record(n, b"ok") for n in range(10)]

    assert await apply_isolating(handler, records, "test batch") == 0

    assert handler.applied == list(range(10))
    assert handler.attempts == 3
    assert handler.quarantined == []


async def test_a_clean_batch_is_one_attempt() -> None:
    handler = Handler()
    assert await apply_isolating(handler, [record(n, b"ok") for n in range(50)], "b") == 0
    assert handler.attempts == 1
