"""The worker's unit of work: one batch of records applied in one transaction.

Kept apart from faust so that it can be driven by any consumer (the faust agents, a
replay tool, a test) and reasoned about alone. A batch either commits whole (ledger
rows, balances, applied event ids and every outgoing message in the outbox) or not at
all; offsets are committed after it, so a crash at any point leads to a redelivery that
the applied event ids turn into a no-op.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
from pydantic import ValidationError

from db import store
from db.store import DeadLetterPayload, OutboxMessage
from quota import Command, Outcome, QuotaRules, StudentLedger, apply_batch, compute_balance
from quota.balance import Balance
from schemas.answers import AnswerAction, QuotaChange
from schemas.declarations import DimonaDeclaration, DmfaDeclaration
from schemas.settings import Settings
from schemas.topics import ACKS, BALANCES, DIMONA, DMFA, REJECTED
from streams.messages import (
    answer_for,
    balance_document,
    balance_event_bytes,
    dead_letter,
    describe_validation_error,
    dimona_command,
    dmfa_command,
    guess_action,
    guess_employer,
    guess_event_id,
    refusal_answer,
    utc_from_millis,
)

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RawRecord:
    """A consumed record, as the broker delivered it."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class Rejection:
    """A record that carries nothing applicable, and why: it becomes a dead letter."""

    record: RawRecord
    reason: str

    @property
    def dedupe_id(self) -> str:
        r = self.record
        return f"rejected:{r.topic}:{r.partition}:{r.offset}"


@dataclass
class BatchReport:
    applied: int = 0
    replayed: int = 0
    rejected: int = 0
    balances_changed: int = 0
    statuses: dict[str, int] = field(default_factory=dict)


def dead_letter_message(
    rejection: Rejection, settings: Settings, now: datetime
) -> tuple[OutboxMessage, DeadLetterPayload | None]:
    """The ``declarations.rejected`` message for a rejected record (logged as it is made).

    Also the raw bytes to store with :func:`db.store.save_dead_letter_payloads` in the
    same transaction when they are too large to travel in the letter (None otherwise).
    """
    record = rejection.record
    log.warning(
        "rejected %s[%d]@%d: %s", record.topic, record.partition, record.offset, rejection.reason
    )
    letter, payload = dead_letter(
        event_id=rejection.dedupe_id,
        topic=settings.topic(record.topic),
        partition=record.partition,
        offset=record.offset,
        timestamp=utc_from_millis(record.timestamp_ms),
        key=record.key,
        raw=record.value,
        reason=rejection.reason,
        now=now,
        inline_limit=settings.dead_letter_inline_bytes,
    )
    return OutboxMessage(REJECTED, record.key, letter.to_json_bytes()), payload


class BatchProcessor:
    """Applies batches of input records to the system of record."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings, clock: Clock = utc_now) -> None:
        self._pool = pool
        self._settings = settings
        self._clock = clock

    def parse(self, record: RawRecord) -> Command | Rejection:
        """The domain command a record carries, or why it carries none."""
        received_at = utc_from_millis(record.timestamp_ms) or self._clock()
        try:
            if record.value is None:
                return Rejection(record, "empty message (no value)")
            if record.topic == DIMONA:
                dimona = DimonaDeclaration.model_validate_json(record.value)
                ssin, command = dimona.worker.ssin, dimona_command(dimona, received_at)
            elif record.topic == DMFA:
                dmfa = DmfaDeclaration.model_validate_json(record.value)
                ssin, command = dmfa.worker.ssin, dmfa_command(dmfa, received_at)
            else:
                return Rejection(record, f"no processing is defined for topic {record.topic}")
        except ValidationError as error:
            return Rejection(record, describe_validation_error(error))
        key = "".join(c for c in (record.key or b"").decode(errors="replace") if c.isdigit())
        if key != ssin:
            return Rejection(
                record,
                f"the message key must be the worker's SSIN {ssin} (got {record.key!r}): "
                "the key decides the partition that keeps a student's events in order",
            )
        return command

    async def process(self, records: Sequence[RawRecord]) -> BatchReport:
        parsed = [(record, self.parse(record)) for record in records]
        commands: list[tuple[str, Command]] = []
        for record, item in parsed:
            if not isinstance(item, Rejection):
                commands.append((self._ssin_of(record), item))
        async with self._pool.acquire() as conn, conn.transaction():
            rules = self._settings.quota_rules.with_overrides(await store.quota_overrides(conn))
            ids = [c.event_id for _, c in commands]
            ids += [item.dedupe_id for _, item in parsed if isinstance(item, Rejection)]
            done = await store.already_applied(conn, ids)
            fresh_students = {ssin for ssin, c in commands if c.event_id not in done}
            ledgers = await store.load_ledgers(conn, fresh_students)
            applied = set(done)
            result = apply_batch(ledgers, commands, applied, rules)
            return await self._save(conn, parsed, result.outcomes, result.balances, done, ledgers)

    @staticmethod
    def _ssin_of(record: RawRecord) -> str:
        # Parsing succeeded, so the key equals the normalised SSIN.
        return "".join(c for c in (record.key or b"").decode() if c.isdigit())

    async def _save(
        self,
        conn: asyncpg.Connection,
        parsed: Sequence[tuple[RawRecord, Command | Rejection]],
        outcomes: Sequence[Outcome],
        balances: Sequence[Balance],
        done: set[str],
        ledgers: dict[str, StudentLedger],
    ) -> BatchReport:
        now = self._clock()
        report = BatchReport()
        by_event = {o.command.event_id: o for o in outcomes}
        messages: list[OutboxMessage] = []
        payloads: list[DeadLetterPayload] = []
        new_ids: list[str] = []
        for _record, item in parsed:
            if isinstance(item, Rejection):
                if item.dedupe_id in done:
                    report.replayed += 1
                    continue
                new_ids.append(item.dedupe_id)
                report.rejected += 1
                rejected, kept = self._rejection_messages(item, now)
                messages.extend(rejected)
                payloads.extend(kept)
                report.statuses["B"] = report.statuses.get("B", 0) + 1
                continue
            outcome = by_event.pop(item.event_id, None)
            if outcome is None:
                report.replayed += 1
                continue
            new_ids.append(item.event_id)
            report.applied += 1
            answer = answer_for(outcome.command, outcome.ssin, outcome.decision, now)
            report.statuses[answer.status] = report.statuses.get(answer.status, 0) + 1
            messages.append(
                OutboxMessage(
                    ACKS,
                    answer.employer.encode() if answer.employer else None,
                    answer.to_json_bytes(),
                )
            )
        balance_messages = await self._changed_balances(conn, balances, now)
        report.balances_changed = len(balance_messages)
        await store.save_ledgers(conn, ledgers.values())
        await store.record_applied(conn, new_ids)
        await store.save_dead_letter_payloads(conn, payloads)
        await store.enqueue(conn, messages + balance_messages)
        return report

    def _rejection_messages(
        self, rejection: Rejection, now: datetime
    ) -> tuple[list[OutboxMessage], list[DeadLetterPayload]]:
        """The refusal (if an employer can be named) and the dead letter of a rejection.

        With the raw bytes to store beside them when the dead letter cannot carry them.
        """
        record = rejection.record
        messages = []
        employer = guess_employer(record.value)
        reply_to = guess_event_id(record.value) or rejection.dedupe_id
        if employer is not None:
            action: AnswerAction = "dmfa" if record.topic == DMFA else guess_action(record.value)
            answer = refusal_answer(reply_to, employer, rejection.reason, action, now)
            messages.append(OutboxMessage(ACKS, employer.encode(), answer.to_json_bytes()))
        letter, payload = dead_letter_message(rejection, self._settings, now)
        messages.append(letter)
        return messages, [payload] if payload is not None else []

    async def _changed_balances(
        self, conn: asyncpg.Connection, balances: Sequence[Balance], now: datetime
    ) -> list[OutboxMessage]:
        """Store the balances that changed and return their events."""
        stored = await store.stored_balances(conn, [(b.ssin, b.year) for b in balances])
        rows = []
        messages = []
        for balance in balances:
            document = balance_document(balance)
            version, previous = stored.get((balance.ssin, balance.year), (0, None))
            if previous == document:
                continue
            version += 1
            rows.append(
                (
                    balance.ssin,
                    balance.year,
                    balance.quota,
                    balance.used,
                    balance.remaining,
                    version,
                    document,
                )
            )
            key = f"{balance.ssin}:{balance.year}".encode()
            messages.append(
                OutboxMessage(BALANCES, key, balance_event_bytes(document, version, now))
            )
        await store.save_balances(conn, rows)
        return messages

    async def process_quota_change(self, record: RawRecord) -> int:
        """Apply one record of ``quota.changes``; an invalid one becomes a dead letter."""
        try:
            change = QuotaChange.model_validate_json(record.value or b"")
        except ValidationError as error:
            rejection = Rejection(record, describe_validation_error(error))
            async with self._pool.acquire() as conn, conn.transaction():
                if not await store.already_applied(conn, [rejection.dedupe_id]):
                    await store.record_applied(conn, [rejection.dedupe_id])
                    messages, payloads = self._rejection_messages(rejection, self._clock())
                    await store.save_dead_letter_payloads(conn, payloads)
                    await store.enqueue(conn, messages)
            return 0
        return await self.change_quota(change)

    async def change_quota(self, change: QuotaChange, *, chunk: int = 2000) -> int:
        """Apply a quota change and recompute every balance of its year.

        Holds the quota lock exclusively for the whole recomputation, so no batch can
        decide with the old quota meanwhile. Returns the number of balances that changed.
        """
        event_id = f"quota:{change.event_id}"
        changed = 0
        async with self._pool.acquire() as conn, conn.transaction():
            overrides = await store.quota_overrides(conn, exclusive=True)
            if await store.already_applied(conn, [event_id]):
                return 0
            await store.set_quota(conn, change.year, change.hours, change.event_id)
            await store.record_applied(conn, [event_id])
            rules: QuotaRules = self._settings.quota_rules.with_overrides(
                {**overrides, change.year: change.hours}
            )
            ssins = await store.ssins_with_data_in_year(conn, change.year)
            now = self._clock()
            for start in range(0, len(ssins), chunk):
                ledgers = await store.load_ledgers(conn, ssins[start : start + chunk])
                balances = [
                    compute_balance(ledger, change.year, rules) for ledger in ledgers.values()
                ]
                messages = await self._changed_balances(conn, balances, now)
                await store.enqueue(conn, messages)
                changed += len(messages)
        log.info(
            "quota %d set to %d hours: %d balances changed", change.year, change.hours, changed
        )
        return changed
