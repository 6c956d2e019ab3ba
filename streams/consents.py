"""The consent agent: applies students' grants and revocations to the ``consents`` table.

A student lets a temporary work agency read their remaining hours, and can withdraw
that at any time (DOMAIN.md section 2). Changes arrive on ``consents`` keyed by SSIN,
so one student's changes stay in order on one partition; the agent applies each batch
in one transaction, in stream order (the latest change per (ssin, agency) wins), and
records the applied event ids so a redelivery changes nothing. Messages that cannot be
applied become dead letters on ``declarations.rejected``: they never stall a partition.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg
from pydantic import ValidationError

from db import consents as consent_db
from db import store
from db.store import DeadLetterPayload, OutboxMessage
from schemas.consents import ConsentChange
from schemas.settings import Settings
from schemas.topics import CONSENTS
from streams.messages import describe_validation_error
from streams.processor import Rejection, dead_letter_message, quarantine_record
from streams.runtime import Clock, RawRecord, RecordHandler

if TYPE_CHECKING:
    from streams.runtime import WorkerState

log = logging.getLogger(__name__)

#: Consent event ids get their own namespace in ``applied_events``: a client reusing an
#: id of a Dimona declaration must not see its consent skipped as a replay.
EVENT_PREFIX = "consent:"


@dataclass
class ConsentReport:
    """What one batch did (returned by the agent, handy in tests and logs)."""

    applied: int = 0
    replayed: int = 0
    rejected: int = 0


def parse(record: RawRecord) -> ConsentChange | Rejection:
    """The change a record carries, or why it carries none.

    The key must be the student's SSIN: it decides the partition, and only one
    partition per student keeps a grant and its revocation in order.
    """
    if record.value is None:
        return Rejection(record, "empty message (no value)")
    try:
        change = ConsentChange.model_validate_json(record.value)
    except ValidationError as error:
        return Rejection(record, describe_validation_error(error))
    key = "".join(c for c in (record.key or b"").decode(errors="replace") if c.isdigit())
    if key != change.ssin:
        return Rejection(
            record,
            f"the message key must be the student's SSIN (got {record.key!r}): the key "
            "decides the partition that keeps a student's consent changes in order",
        )
    return change


class ConsentApplier:
    """Applies batches of ``consents`` records to PostgreSQL, one transaction each."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings, clock: Clock) -> None:
        self._pool = pool
        self._settings = settings
        self._clock = clock

    async def apply(self, records: Sequence[RawRecord]) -> ConsentReport:
        report = ConsentReport()
        parsed = [parse(r) for r in records]
        ids = [
            item.dedupe_id if isinstance(item, Rejection) else EVENT_PREFIX + item.event_id
            for item in parsed
        ]
        async with self._pool.acquire() as conn, conn.transaction():
            seen = await store.already_applied(conn, ids)
            changes: list[ConsentChange] = []
            letters: list[OutboxMessage] = []
            payloads: list[DeadLetterPayload] = []
            new_ids: list[str] = []
            for item, event_id in zip(parsed, ids, strict=True):
                if event_id in seen:
                    report.replayed += 1
                    continue
                seen.add(event_id)  # the same event twice in one batch applies once
                new_ids.append(event_id)
                if isinstance(item, Rejection):
                    report.rejected += 1
                    letter, payload = dead_letter_message(item, self._settings, self._clock())
                    letters.append(letter)
                    if payload is not None:
                        payloads.append(payload)
                else:
                    report.applied += 1
                    changes.append(item)
            await consent_db.apply_changes(conn, changes)
            await store.record_applied(conn, new_ids)
            await store.save_dead_letter_payloads(conn, payloads)
            await store.enqueue(conn, letters)
        return report


class ConsentHandler:
    """The :class:`streams.runtime.RecordHandler` of ``consents``."""

    def __init__(self, state: WorkerState) -> None:
        self._state = state
        self._applier: ConsentApplier | None = None

    async def apply(self, records: Sequence[RawRecord]) -> ConsentReport:
        if self._applier is None:
            pool = await self._state.pool()
            self._applier = ConsentApplier(pool, self._state.settings, self._state.clock)
        return await self._applier.apply(records)

    async def quarantine(self, record: RawRecord, error: BaseException) -> None:
        pool = await self._state.pool()
        await quarantine_record(pool, self._state.settings, record, error, self._state.clock())


def handlers(state: WorkerState) -> dict[str, RecordHandler]:
    """The input handler of the consent topic."""
    return {CONSENTS: ConsentHandler(state)}
