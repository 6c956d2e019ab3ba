"""The worker's unit of work: one batch of records applied in one transaction.

Kept apart from faust so that it can be driven by any consumer (the faust agents, a
replay tool, a test) and reasoned about alone. A batch either commits whole (ledger
rows, balances, applied event ids and every outgoing message in the outbox) or not at
all; offsets are committed after it, so a crash at any point leads to a redelivery that
the applied event ids turn into a no-op.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
from pydantic import ValidationError

from db import store
from db.store import AppliedEvent, DeadLetterPayload, EmployerIdentity, OutboxMessage
from quota import (
    AnomalyCode,
    Command,
    DeclarePeriod,
    Outcome,
    StudentLedger,
    apply_batch,
    compute_balance,
    period_id_for,
    refreshed_balances,
)
from quota.balance import Balance
from schemas.answers import AnswerAction, AnsweredRecord, QuotaChange, QuotaRecompute
from schemas.declarations import DimonaDeclaration, DmfaDeclaration
from schemas.identifiers import normalize_ssin
from schemas.settings import Settings
from schemas.topics import (
    ACKS,
    BALANCES,
    DIMONA,
    DMFA,
    LEDGER,
    QUOTA_RECOMPUTE,
    REJECTED,
    declarant_answer_topic,
)
from streams import metrics
from streams.key_hashes import fill_key_hashes
from streams.logs import record_fields
from streams.messages import (
    answer_for,
    balance_document,
    balance_event_bytes,
    body_digest,
    dead_letter,
    derived_event_id,
    describe_validation_error,
    dimona_command,
    dmfa_command,
    guess_action,
    guess_employer,
    guess_event_id,
    header_event_id,
    ledger_event_bytes,
    printable,
    refusal_answer,
    refusal_code,
    stored_balance_document,
    utc_from_millis,
)
from streams.runtime import Clock, RawRecord, describe_error, retry_transient, utc_now

log = logging.getLogger(__name__)

__all__ = ["BatchProcessor", "BatchReport", "Clock", "RawRecord", "Rejection", "utc_now"]

_Command = TypeVar("_Command", QuotaChange, QuotaRecompute)

#: Record timestamps outside these years are refused: they are a sender's clock gone
#: wrong (CreateTime topics), and lateness cannot be judged on them.
_TIMESTAMP_YEARS = range(2000, 2100)


@dataclass(frozen=True)
class Rejection:
    """A record that carries nothing applicable, and why: it becomes a dead letter."""

    record: RawRecord
    reason: str
    code: AnomalyCode = AnomalyCode.INVALID_MESSAGE

    @property
    def dedupe_id(self) -> str:
        """Unique per record, also when a topic is recreated and offsets start again:
        the record's timestamp and a digest of its bytes make a replay of the same
        record the same id, and another record at a reused offset another id."""
        r = self.record
        digest = hashlib.sha256()
        for part in (r.key, r.value):
            digest.update(b"-" if part is None else len(part).to_bytes(8, "big") + part)
        return (
            f"rejected:{r.topic}:{r.partition}:{r.offset}:{r.timestamp_ms}:"
            f"{digest.hexdigest()[:16]}"
        )


def _key_ssin(key: bytes | None) -> str | None:
    """The SSIN a record key holds: exactly 11 ASCII digits with valid check digits."""
    if key is None or len(key) != 11 or not key.isdigit():
        return None
    try:
        return normalize_ssin(key.decode())
    except ValueError:
        return None


def _balance_messages(document: dict[str, Any], version: int, now: datetime) -> list[OutboxMessage]:
    """The events of a stored balance: the figures for the student's applications, the
    terms for the service."""
    key = f"{document['ssin']}:{document['year']}".encode()
    return [
        OutboxMessage(BALANCES, key, balance_event_bytes(document, version, now)),
        OutboxMessage(LEDGER, key, ledger_event_bytes(document, version, now)),
    ]


def _balance_count(messages: Sequence[OutboxMessage]) -> int:
    """How many balances changed: each has one public and one internal message."""
    return sum(message.topic == BALANCES for message in messages)


def _period_employer(ledgers: dict[str, StudentLedger], outcome: Outcome) -> str | None:
    """Who to answer: the command's employer, or for a follow-up that named only its
    period, the employer of that period (None when the period is unknown)."""
    if outcome.command.employer is not None:
        return outcome.command.employer
    period_id = getattr(outcome.command, "period_id", None)
    ledger = ledgers.get(outcome.ssin)
    period = ledger.periods.get(period_id) if ledger is not None and period_id else None
    return period.employer if period is not None else None


@dataclass(frozen=True)
class Intake:
    """A record that parsed into a domain command, with what idempotency needs."""

    record: RawRecord
    ssin: str
    command: Command
    #: The sender's own event id (answers name it in ``inReplyTo``).
    reply_to: str
    digest: bytes
    #: (``NSSO<number>``, enterprise number) when the message names both: one employer.
    identities: tuple[str, str] | None = None
    #: Who sent it, as the message says (the declarant, else the employer); empty for a
    #: follow-up naming only its period, whose answer goes to the period's employer.
    declarant: str = ""


@dataclass
class EmployerIdsImport:
    """What an operator's import of employer identities did."""

    learned: int = 0
    #: Pairs already stored as given.
    known: int = 0
    #: Pairs naming another enterprise for a known NSSO number: refused, not stored.
    conflicts: list[EmployerIdentity] = field(default_factory=list)
    #: Students whose rows were merged, and how many of their balances changed.
    students: int = 0
    balances_changed: int = 0


@dataclass
class BatchReport:
    applied: int = 0
    replayed: int = 0
    rejected: int = 0
    balances_changed: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    #: What the metrics count once the transaction committed: answers by status,
    #: anomalies named in them by code, dead letters by reason code.
    answers: dict[str, int] = field(default_factory=dict)
    anomalies: dict[str, int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)

    def count_refusal(self, code: str, answered: bool) -> None:
        """A rejection: its dead letter, and its ``B`` answer when an employer is known."""
        self.dead_letters[code] = self.dead_letters.get(code, 0) + 1
        if answered:
            self.answers["B"] = self.answers.get("B", 0) + 1
            self.anomalies[code] = self.anomalies.get(code, 0) + 1

    @classmethod
    def total(cls, reports: Sequence[BatchReport]) -> BatchReport:
        """The reports of a batch's parts added up, count by count."""
        total = cls()
        for report in reports:
            for name in (f.name for f in fields(cls)):
                mine, theirs = getattr(total, name), getattr(report, name)
                if isinstance(mine, dict):
                    for key, count in theirs.items():
                        mine[key] = mine.get(key, 0) + count
                else:
                    setattr(total, name, mine + theirs)
        return total

    def record_metrics(self) -> None:
        metrics.record_outcomes(self.answers, self.anomalies, self.dead_letters)
        metrics.BALANCES_CHANGED.inc(self.balances_changed)


def dead_letter_message(
    rejection: Rejection, settings: Settings, now: datetime
) -> tuple[OutboxMessage, DeadLetterPayload | None]:
    """The ``declarations.rejected`` message for a rejected record (logged as it is made).

    Also the raw bytes to store with :func:`db.store.save_dead_letter_payloads` in the
    same transaction when they are too large to travel in the letter (None otherwise).
    The log line names the record and the refusal code only: the reason may quote a
    student's SSIN, which has no place in logs.
    """
    record = rejection.record
    fields = record_fields(record.topic, record.partition, record.offset)
    log.warning("rejected %s: %s", record.origin, rejection.code.value, extra=fields)
    log.debug("rejected %s: %s", record.origin, rejection.reason, extra=fields)
    letter, payload = dead_letter(
        event_id=rejection.dedupe_id,
        topic=settings.topic(record.topic),
        partition=record.partition,
        offset=record.offset,
        timestamp=utc_from_millis(record.timestamp_ms),
        key=record.key,
        raw=record.value,
        reason=printable(f"{rejection.code.value}: {rejection.reason}"),
        now=now,
        inline_limit=settings.dead_letter_inline_bytes,
        headers=record.headers,
    )
    return OutboxMessage(REJECTED, record.key, letter.to_json_bytes()), payload


RefusalMessages = tuple[list[OutboxMessage], list[DeadLetterPayload]]


def processing_failure(record: RawRecord, error: BaseException) -> Rejection:
    """The refusal of a record that the runtime isolated because applying it failed."""
    return Rejection(
        record,
        f"this message could not be applied ({describe_error(error)}); it was set "
        "aside so that the rest of its batch could be applied",
        AnomalyCode.PROCESSING_FAILED,
    )


async def refuse_once(
    pool: asyncpg.Pool, rejection: Rejection, messages: Callable[[], RefusalMessages]
) -> None:
    """Record a rejection's id and queue its messages (with the payloads its dead letter
    keeps in PostgreSQL), in one transaction, unless that was done before."""
    async with pool.acquire() as conn, conn.transaction():
        if await store.applied_events(conn, [rejection.dedupe_id]):
            return
        await store.record_applied_events(
            conn, [(rejection.dedupe_id, None, rejection.record.origin)]
        )
        outgoing, payloads = messages()
        await store.save_dead_letter_payloads(conn, payloads)
        await store.enqueue(conn, outgoing)
    report = BatchReport()
    report.count_refusal(rejection.code.value, any(m.topic == ACKS for m in outgoing))
    report.record_metrics()


async def quarantine_record(
    pool: asyncpg.Pool, settings: Settings, record: RawRecord, error: BaseException, now: datetime
) -> None:
    """Dead-letter, once, a record that the runtime isolated because applying it failed."""
    rejection = processing_failure(record, error)

    def letter() -> RefusalMessages:
        message, payload = dead_letter_message(rejection, settings, now)
        return [message], [payload] if payload else []

    await refuse_once(pool, rejection, letter)


class BatchProcessor:
    """Applies batches of ``dimona.declarations`` and ``dmfa.declarations`` records.

    It is the :class:`streams.runtime.RecordHandler` of both topics: :meth:`apply`
    decides a batch in one transaction, :meth:`quarantine` refuses a record that the
    runtime isolated because applying it failed.
    """

    def __init__(self, pool: asyncpg.Pool, settings: Settings, clock: Clock = utc_now) -> None:
        self._pool = pool
        self._settings = settings
        self._clock = clock
        self._declarant_topics = frozenset(settings.declarant_answer_topics)

    def parse(self, record: RawRecord) -> Intake | Rejection:
        """The domain command a record carries, or why it carries none."""
        if record.value is None:
            return Rejection(record, "empty message (no value)")
        if record.timestamp_ms is None:
            received_at = self._clock()
        else:
            moment = utc_from_millis(record.timestamp_ms)
            if moment is None or moment.year not in _TIMESTAMP_YEARS:
                return Rejection(
                    record,
                    f"the record timestamp {record.timestamp_ms} ms is not a moment between "
                    f"{_TIMESTAMP_YEARS.start} and {_TIMESTAMP_YEARS.stop - 1}: lateness "
                    "is judged on it",
                    AnomalyCode.INVALID_TIMESTAMP,
                )
            received_at = moment
        try:
            if record.topic == DIMONA:
                dimona = DimonaDeclaration.model_validate_json(record.value)
                reply_to = self._event_id(record, dimona.event_id)
                command: Command = dimona_command(dimona, received_at, reply_to)
                named = dimona.worker.ssin if dimona.worker is not None else None
                identities = dimona.employer.identities if dimona.employer else None
                declarant = dimona.declarant_id
            elif record.topic == DMFA:
                dmfa = DmfaDeclaration.model_validate_json(record.value)
                reply_to = self._event_id(record, dmfa.event_id)
                command = dmfa_command(dmfa, received_at, reply_to)
                named = dmfa.worker.ssin
                identities = dmfa.employer.identities
                declarant = dmfa.employer.employer_id
            else:
                return Rejection(record, f"no processing is defined for topic {record.topic}")
        except ValidationError as error:
            return Rejection(record, describe_validation_error(error), refusal_code(error))
        # The body's SSIN was validated already: a key that is its 11 digits needs no
        # second validation (a twentieth of the parse, by py-spy).
        if named is not None and record.key == named.encode():
            ssin: str | None = named
        else:
            ssin = _key_ssin(record.key)
        if ssin is None or (named is not None and ssin != named):
            return Rejection(
                record,
                "the message key must be the worker's SSIN as 11 ASCII digits: the key "
                "decides the partition that keeps a student's events in order",
                AnomalyCode.INVALID_KEY,
            )
        horizon = self._settings.declaration_horizon_days
        if (
            isinstance(command, DeclarePeriod)
            and (command.start - received_at.date()).days > horizon
        ):
            return Rejection(
                record,
                f"the period starts {command.start}, more than {horizon} days after the "
                "declaration was received",
                AnomalyCode.DATE_OUT_OF_RANGE,
            )
        return Intake(
            record,
            ssin,
            command,
            reply_to,
            body_digest(record.value),
            identities,
            declarant=declarant,
        )

    @staticmethod
    def _event_id(record: RawRecord, given: str | None) -> str:
        """A Kafka header wins over the body's id; without either, the id is derived from
        the exact bytes (:func:`streams.messages.derived_event_id`)."""
        assert record.value is not None
        return header_event_id(record.headers) or given or derived_event_id(record.value)

    async def apply(self, records: Sequence[RawRecord]) -> BatchReport:
        """Decide and store a batch (the runtime commits its offsets after it).

        The batch is cut by partition number into ``ledger_concurrency`` parts
        (:meth:`_parts`), each decided and stored in a transaction of its own, all at
        once: while one part waits for PostgreSQL, the worker decides another. A
        student's records all share one partition number (the key decides it, and the
        declaration topics are co-partitioned), so the parts concern different students,
        as the batches of two workers do. A part that fails takes nothing of the others
        back: the runtime applies the batch again, where what was stored is a replay.
        """
        parsed = [self.parse(record) for record in records]
        parts = await self._parts(parsed)
        if len(parts) == 1:
            report = await self._apply_parsed(parts[0])
            report.record_metrics()
            return report
        results = await asyncio.gather(
            *(self._apply_parsed(part) for part in parts), return_exceptions=True
        )
        reports = [result for result in results if isinstance(result, BatchReport)]
        for report in reports:
            report.record_metrics()
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return BatchReport.total(reports)

    async def _parts(self, parsed: list[Intake | Rejection]) -> list[list[Intake | Rejection]]:
        """The parts of a batch applied at once, each in the batch's order; the whole
        batch as one part when its parts are entangled (:meth:`_entangled`)."""
        count = self._settings.ledger_concurrency
        if count == 1:
            return [parsed]
        cut: list[list[Intake | Rejection]] = [[] for _ in range(count)]
        for item in parsed:
            cut[item.record.partition % count].append(item)
        parts = [part for part in cut if part]
        if len(parts) > 1 and await self._entangled(parts):
            return [parsed]
        return parts

    async def _entangled(self, parts: Sequence[Sequence[Intake | Rejection]]) -> bool:
        """Whether deciding the parts apart could decide otherwise than together.

        Different students share three things a batch decides on: an idempotency key
        (one declarant reusing an id for two students: the earlier record is the one
        applied), a new period's id (a hash that two declarations may share), and an
        NSSO number whose enterprise the batch learns (every record naming it is then
        decided under the enterprise number). In one transaction the batch's order
        settles each; in parts it would be whichever commits first. So a batch where one
        of them occurs in two parts is applied whole, as before. Learned numbers are
        read first: a number's enterprise, once stored, never changes.
        """
        owner: dict[str, int] = {}
        learnable: set[str] = set()
        for index, part in enumerate(parts):
            for item in part:
                if not isinstance(item, Intake):
                    continue  # a refusal's key names its own partition
                command = item.command
                keys = [command.event_id]
                if isinstance(command, DeclarePeriod):
                    keys.append(f"period {command.period_id or period_id_for(command.event_id)}")
                if any(owner.setdefault(key, index) != index for key in keys):
                    return True
                if item.identities is not None:
                    learnable.add(item.identities[0])
        if not learnable:
            return False
        async with self._pool.acquire() as conn:
            learning = learnable - (await store.employer_identities(conn, learnable)).keys()
        named: dict[str, int] = {}
        for index, part in enumerate(parts):
            for item in part:
                if isinstance(item, Intake):
                    numbers = {item.command.employer}
                    if item.identities is not None:
                        numbers.add(item.identities[0])
                    for number in learning.intersection(numbers):
                        if named.setdefault(number, index) != index:
                            return True
        return False

    async def _apply_parsed(self, parsed: list[Intake | Rejection]) -> BatchReport:
        """Decide and store parsed records in one transaction."""
        async with self._pool.acquire() as conn, conn.transaction():
            rules = self._settings.quota_rules.with_overrides(await store.quota_overrides(conn))
            parsed, merged = await self._one_employer_identity(conn, parsed)
            ids = [item.command.event_id for item in parsed if isinstance(item, Intake)]
            ids += [item.dedupe_id for item in parsed if isinstance(item, Rejection)]
            stored = await store.applied_events(conn, ids)
            parsed = self._refuse_reused_ids(parsed, stored)
            duplicates = [
                item.dedupe_id
                for item in parsed
                if isinstance(item, Rejection) and item.code is AnomalyCode.DUPLICATE_EVENT_ID
            ]
            if duplicates:
                stored.update(await store.applied_events(conn, duplicates))
            fresh = [
                item
                for item in parsed
                if isinstance(item, Intake) and item.command.event_id not in stored
            ]
            fresh = await self._free_period_ids(conn, fresh)
            ledgers = await store.load_ledgers(conn, {item.ssin for item in fresh} | merged)
            result = apply_batch(ledgers, [(i.ssin, i.command) for i in fresh], set(), rules)
            computed = {(b.ssin, b.year) for b in result.balances}
            balances = result.balances + refreshed_balances(ledgers, merged, rules, skip=computed)
            return await self._save(conn, parsed, result.outcomes, balances, stored, ledgers)

    @staticmethod
    async def _one_employer_identity(
        conn: asyncpg.Connection, parsed: Sequence[Intake | Rejection]
    ) -> tuple[list[Intake | Rejection], set[str]]:
        """One employer, one identity: learn the NSSO numbers the batch's messages pair
        with an enterprise number, and give every command the enterprise number its
        NSSO number belongs to.

        A newly learned pair moves what was stored under the NSSO number to the
        enterprise number (:func:`db.store.merge_employer_rows`); the students concerned
        are returned, to be recomputed. A message pairing a known NSSO number with
        another enterprise is refused (``EMPLOYER_IDS_CONFLICT``): a mapping is never
        changed by a message. Idempotency keys keep the identifiers as written, so a
        replay stays a replay after a mapping is learned.
        """
        intakes = [item for item in parsed if isinstance(item, Intake)]
        named = {i.command.employer for i in intakes if i.command.employer} | {
            i.identities[0] for i in intakes if i.identities is not None
        }
        nsso_ids = {employer for employer in named if employer.startswith("NSSO")}
        if not nsso_ids:
            return list(parsed), set()
        known = await store.employer_identities(conn, nsso_ids)
        unknown = nsso_ids - known.keys()
        if unknown:
            # Another transaction may be learning one of them: wait for it, then read
            # again (and make it wait for this one), so that no record naming a number is
            # stored under it after its rows were merged (db.store.lock_employer_ids).
            learners = {i.identities[0] for i in intakes if i.identities is not None}
            await store.lock_employer_ids(conn, learning=unknown & learners, naming=unknown)
            known.update(await store.employer_identities(conn, unknown))
        candidates: dict[str, EmployerIdentity] = {}
        for intake in intakes:
            if intake.identities is not None and intake.identities[0] not in known:
                nsso_id, enterprise = intake.identities
                candidates.setdefault(
                    nsso_id, EmployerIdentity(nsso_id, enterprise, "message", intake.record.origin)
                )
        learned = await store.learn_employer_identities(conn, list(candidates.values()))
        # A pair another worker stored meanwhile is read back: it is the one that stands.
        known.update(
            await store.employer_identities(conn, set(candidates) - {i.nsso_id for i in learned})
        )
        known.update({i.nsso_id: i.enterprise_number for i in learned})
        merged: set[str] = set()
        for identity in learned:
            merged |= await store.merge_employer_rows(
                conn, identity.nsso_id, identity.enterprise_number
            )
        out: list[Intake | Rejection] = []
        for item in parsed:
            if isinstance(item, Rejection):
                out.append(item)
                continue
            if item.identities is not None and known[item.identities[0]] != item.identities[1]:
                nsso_id, enterprise = item.identities
                out.append(
                    Rejection(
                        item.record,
                        f"NSSO number {nsso_id.removeprefix('NSSO')} belongs to another "
                        f"enterprise than {enterprise} in the records of this service; "
                        "send the enterprise number alone, or ask the operator to check "
                        "the mapping",
                        AnomalyCode.EMPLOYER_IDS_CONFLICT,
                    )
                )
                continue
            employer = item.command.employer
            if employer is not None and employer in known:
                item = replace(item, command=replace(item.command, employer=known[employer]))
            out.append(item)
        return out, merged

    async def import_employer_identities(
        self, identities: Sequence[EmployerIdentity]
    ) -> EmployerIdsImport:
        """Store an operator's (NSSO number, enterprise number) pairs, merge what was
        stored under each new NSSO number and recompute and publish the balances of the
        students concerned, in one transaction (under the quota lock, shared, as a
        batch). A known NSSO number with the same enterprise is left as it is; with
        another it is refused and reported, never changed."""
        report = EmployerIdsImport()
        async with self._pool.acquire() as conn, conn.transaction():
            rules = self._settings.quota_rules.with_overrides(await store.quota_overrides(conn))
            await store.lock_employer_ids(conn, learning={i.nsso_id for i in identities})
            known = await store.employer_identities(conn, [i.nsso_id for i in identities])
            fresh: dict[str, EmployerIdentity] = {}
            for identity in identities:
                standing = known.get(identity.nsso_id) or (
                    fresh[identity.nsso_id].enterprise_number if identity.nsso_id in fresh else None
                )
                if standing is None:
                    fresh[identity.nsso_id] = identity
                elif standing == identity.enterprise_number:
                    report.known += 1
                else:
                    report.conflicts.append(identity)
            learned = await store.learn_employer_identities(conn, list(fresh.values()))
            report.learned = len(learned)
            merged: set[str] = set()
            for identity in learned:
                merged |= await store.merge_employer_rows(
                    conn, identity.nsso_id, identity.enterprise_number
                )
            ledgers = await store.load_ledgers(conn, merged)
            messages = await self._changed_balances(
                conn, refreshed_balances(ledgers, merged, rules), self._clock()
            )
            await store.save_ledgers(conn, ledgers.values())
            await store.enqueue(conn, messages)
            report.students = len(merged)
            report.balances_changed = _balance_count(messages)
        return report

    @staticmethod
    async def _free_period_ids(conn: asyncpg.Connection, fresh: list[Intake]) -> list[Intake]:
        """Give each new period an id no other period has (ids are 12-digit hashes)."""
        declared = [i for i in fresh if isinstance(i.command, DeclarePeriod)]
        if not declared:
            return fresh
        taken = await store.existing_period_ids(
            conn, [period_id_for(i.command.event_id) for i in declared]
        )
        out = []
        for item in fresh:
            command = item.command
            if isinstance(command, DeclarePeriod):
                attempt = 0
                candidate = period_id_for(command.event_id)
                while candidate in taken:
                    attempt += 1
                    candidate = period_id_for(command.event_id, attempt)
                    if candidate not in taken:  # also ask the database about the new one
                        taken |= await store.existing_period_ids(conn, [candidate])
                taken.add(candidate)
                if attempt:
                    item = replace(item, command=replace(command, period_id=candidate))
            out.append(item)
        return out

    @staticmethod
    def _refuse_reused_ids(
        parsed: Sequence[Intake | Rejection], stored: dict[str, AppliedEvent]
    ) -> list[Intake | Rejection]:
        """Replace each reuse of an applied (or earlier in the batch) key with another body
        by a ``DUPLICATE_EVENT_ID`` refusal naming the first message."""
        first: dict[str, AppliedEvent] = {}
        out: list[Intake | Rejection] = []
        for item in parsed:
            if isinstance(item, Rejection):
                out.append(item)
                continue
            key = item.command.event_id
            prior = stored.get(key) or first.get(key)
            if prior is None:
                first[key] = AppliedEvent(item.digest, item.record.origin)
            elif prior.digest is not None and prior.digest != item.digest:
                out.append(
                    Rejection(
                        item.record,
                        f"event id {item.reply_to!r} was already used by this declarant for "
                        f"another message ({prior.origin or 'an earlier record'}); give each "
                        "message its own id, or resend the first one unchanged",
                        AnomalyCode.DUPLICATE_EVENT_ID,
                    )
                )
                continue
            out.append(item)
        return out

    async def _save(
        self,
        conn: asyncpg.Connection,
        parsed: Sequence[Intake | Rejection],
        outcomes: Sequence[Outcome],
        balances: Sequence[Balance],
        stored: dict[str, AppliedEvent],
        ledgers: dict[str, StudentLedger],
    ) -> BatchReport:
        now = self._clock()
        report = BatchReport()
        by_event = {o.command.event_id: o for o in outcomes}
        messages: list[OutboxMessage] = []
        payloads: list[DeadLetterPayload] = []
        new_ids: list[tuple[str, bytes | None, str]] = []
        for item in parsed:
            if isinstance(item, Rejection):
                if item.dedupe_id in stored:
                    report.replayed += 1
                    continue
                stored[item.dedupe_id] = AppliedEvent(None, item.record.origin)
                new_ids.append((item.dedupe_id, None, item.record.origin))
                report.rejected += 1
                rejected, kept = self._rejection_messages(item, now)
                report.count_refusal(item.code.value, any(m.topic == ACKS for m in rejected))
                messages.extend(rejected)
                payloads.extend(kept)
                report.statuses["B"] = report.statuses.get("B", 0) + 1
                continue
            outcome = by_event.pop(item.command.event_id, None)
            if outcome is None:
                report.replayed += 1
                continue
            new_ids.append((item.command.event_id, item.digest, item.record.origin))
            report.applied += 1
            answer = answer_for(
                outcome.command,
                outcome.ssin,
                outcome.decision,
                now,
                reply_to=item.reply_to,
                record=self._answered(item.record),
                employer=_period_employer(ledgers, outcome),
            )
            report.statuses[answer.status] = report.statuses.get(answer.status, 0) + 1
            report.answers[answer.status] = report.answers.get(answer.status, 0) + 1
            for anomaly in answer.anomalies:
                code = str(anomaly.code)
                report.anomalies[code] = report.anomalies.get(code, 0) + 1
            messages += self._answer_messages(
                item.declarant or answer.employer or "",
                answer.employer.encode() if answer.employer else None,
                answer.to_json_bytes(),
            )
        balance_messages = await self._changed_balances(conn, balances, now)
        report.balances_changed = _balance_count(balance_messages)
        await store.save_ledgers(conn, ledgers.values())
        await store.record_applied_events(conn, new_ids)
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
        if employer is not None:
            sender_id = guess_event_id(record.value)
            action: AnswerAction = "dmfa" if record.topic == DMFA else guess_action(record.value)
            answer = refusal_answer(
                answer_id=f"ack:{rejection.dedupe_id}",
                reply_to=sender_id or rejection.dedupe_id,
                employer=employer,
                code=rejection.code,
                reason=rejection.reason,
                action=action,
                now=now,
                record=self._answered(record),
            )
            # The declarant of a body that could not be read is unknown: the employer it
            # names is the one that may read the refusal.
            messages += self._answer_messages(employer, employer.encode(), answer.to_json_bytes())
        letter, payload = dead_letter_message(rejection, self._settings, now)
        messages.append(letter)
        return messages, [payload] if payload is not None else []

    def _answer_messages(
        self, declarant: str, key: bytes | None, answer: bytes
    ) -> list[OutboxMessage]:
        """An answer on ``dimona.acks`` (internal) and, for a declarant that consumes Kafka
        itself (``declarant_answer_topics``), on its own ``dimona.acks.<declarant>``."""
        messages = [OutboxMessage(ACKS, key, answer)]
        if declarant in self._declarant_topics:
            messages.append(OutboxMessage(declarant_answer_topic(declarant), key, answer))
        return messages

    def _answered(self, record: RawRecord) -> AnsweredRecord:
        return AnsweredRecord(
            topic=self._settings.topic(record.topic),
            partition=record.partition,
            offset=record.offset,
        )

    async def quarantine(self, record: RawRecord, error: BaseException) -> None:
        """Refuse a record whose application failed permanently, exactly once."""
        await self._refuse(processing_failure(record, error))

    async def _refuse(self, rejection: Rejection) -> None:
        await refuse_once(
            self._pool, rejection, lambda: self._rejection_messages(rejection, self._clock())
        )

    async def _changed_balances(
        self, conn: asyncpg.Connection, balances: Sequence[Balance], now: datetime
    ) -> list[OutboxMessage]:
        """Store the balances that changed and return their events, in the order of
        ``balances`` (which balances changed is decided by :func:`db.store.save_balances`)."""
        # A balance listed twice is stored and published once, as last computed.
        latest = {(b.ssin, b.year): (b, balance_document(b)) for b in balances}
        versions = await store.save_balances(
            conn,
            [(b.ssin, b.year, b.quota, b.used, b.remaining, doc) for b, doc in latest.values()],
        )
        messages = []
        for balance, document in latest.values():
            version = versions.get((balance.ssin, balance.year))
            if version is not None:
                messages += _balance_messages(document, version, now)
        return messages

    async def _command(self, record: RawRecord, contract: type[_Command]) -> _Command | None:
        """The record's body as ``contract``; None (and a dead letter) when invalid."""
        try:
            return contract.model_validate_json(record.value or b"")
        except ValidationError as error:
            await self._refuse(
                Rejection(record, describe_validation_error(error), refusal_code(error))
            )
            return None

    async def process_quota_change(self, record: RawRecord) -> int:
        """Apply one record of ``quota.changes``; an invalid one becomes a dead letter."""
        change = await self._command(record, QuotaChange)
        return 0 if change is None else await self.change_quota(change)

    async def change_quota(self, change: QuotaChange) -> int:
        """Apply a quota change and write the commands that recompute its year.

        The change is one short transaction under the exclusive quota lock: once it
        commits, every batch (which reads the quota under the shared lock) decides with
        the new quota. The same transaction writes one :class:`QuotaRecompute` per
        partition of ``quota.recompute`` to the outbox, so the workers holding those
        partitions recompute the balances stored before it between them
        (:meth:`recompute_share`), chunk by chunk, while batches go on; the change is
        never applied without its commands. A change already applied (a redelivery)
        writes nothing again. Returns the number of commands written.
        """
        event_id = f"quota:{change.event_id}"
        async with self._pool.acquire() as conn, conn.transaction():
            await store.quota_overrides(conn, exclusive=True)
            if await store.already_applied(conn, [event_id]):
                return 0
            await store.set_quota(conn, change.year, change.hours, change.event_id)
            await store.record_applied(conn, [event_id])
            written = await self._request_recompute(
                conn, event_id, change.year, change.hours, change.requested_at
            )
        metrics.QUOTA_RECOMPUTATIONS.labels("change").inc()
        log.info(
            "quota %d set to %d hours: its balances are recomputed in %d shares",
            change.year,
            change.hours,
            written,
        )
        return written

    async def _request_recompute(
        self, conn: asyncpg.Connection, event_id: str, year: int, hours: int, at: datetime
    ) -> int:
        """Write one :class:`QuotaRecompute` per partition of ``quota.recompute`` to the
        outbox, and record the request (``quota_recomputes``), in the caller's
        transaction, which holds the exclusive quota lock. Returns the commands written."""
        partitions = self._settings.partitions
        commands = [
            QuotaRecompute(
                event_id=f"{event_id}:{partition}/{partitions}",
                year=year,
                partition=partition,
                partitions=partitions,
                requested_at=at,
            )
            for partition in range(partitions)
        ]
        await store.enqueue(
            conn,
            [
                OutboxMessage(
                    QUOTA_RECOMPUTE,
                    str(c.partition).encode(),
                    c.to_json_bytes(),
                    partition=c.partition,
                )
                for c in commands
            ],
        )
        await store.request_recompute(conn, year, hours, event_id)
        return len(commands)

    async def process_recompute(self, record: RawRecord) -> int:
        """Apply one record of ``quota.recompute``; an invalid one becomes a dead letter."""
        command = await self._command(record, QuotaRecompute)
        return 0 if command is None else await self.recompute_share(command)

    async def recompute_share(self, command: QuotaRecompute) -> int:
        """Recompute, store and publish the balances of the command's share of its year.

        The share is the students whose key hash falls on the command's partition. Run
        again (a redelivery after a crash or a rebalance mid-share), it stores and
        publishes only what is still different. Returns the number of balances changed.
        """
        await fill_key_hashes(self._pool)
        changed = await self._recompute_year(command.year, (command.partition, command.partitions))
        metrics.BALANCES_CHANGED.inc(changed)
        log.info(
            "balances of %d, share %d of %d, recomputed: %d changed",
            command.year,
            command.partition,
            command.partitions,
            changed,
        )
        return changed

    async def reconcile_quota(self) -> dict[int, int]:
        """Have every year recomputed whose stored balances were computed with another
        quota than the effective one (configuration, then the operators' changes).

        A quota changed only in configuration (``STUDENTWORK_QUOTA_HOURS``) reaches the
        balances of students who send nothing more only this way; the worker calls it at
        start. It writes the year's recompute commands, one per partition of
        ``quota.recompute``, as a quota change does, so the workers recompute the year
        between them while batches go on (the worker starts consuming at once). The
        stored balances say which quota they were computed with, and
        ``quota_recomputes`` which recompute was requested last, so a year already being
        recomputed to that quota (by a change, or by another worker that started first,
        under the same exclusive lock) is not requested twice, and once the shares are
        done a worker starting finds nothing to do. Returns the commands written per
        year.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            # Shared lock first: the usual start finds nothing and holds no batch back.
            stale, under_way = await self._stale_years(conn)
        if stale:
            now = self._clock()
            async with self._pool.acquire() as conn, conn.transaction():
                stale, under_way = await self._stale_years(conn, exclusive=True)
                written = {
                    year: await self._request_recompute(
                        conn, f"reconcile:{year}:{quota}:{uuid.uuid4().hex}", year, quota, now
                    )
                    for year, quota in stale.items()
                }
        else:
            written = {}
        for year, quota in under_way.items():
            log.info("quota %d: a recompute to %d hours is under way already", year, quota)
        for year, count in written.items():
            metrics.QUOTA_RECOMPUTATIONS.labels("reconcile").inc()
            log.info(
                "quota %d is %d hours, its stored balances were computed with another: "
                "they are recomputed in %d shares",
                year,
                stale[year],
                count,
            )
        return written

    async def _stale_years(
        self, conn: asyncpg.Connection, *, exclusive: bool = False
    ) -> tuple[dict[int, int], dict[int, int]]:
        """The years whose stored balances carry another quota than the effective one,
        with that quota: those to recompute, and those whose recompute to it was
        requested already."""
        overrides = await store.quota_overrides(conn, exclusive=exclusive)
        rules = self._settings.quota_rules.with_overrides(overrides)
        stored = await store.stored_quotas(conn)
        requested = await store.requested_recomputes(conn)
        stale: dict[int, int] = {}
        under_way: dict[int, int] = {}
        for year in sorted(stored):
            quota = rules.quota(year)
            if stored[year] != {quota}:
                (under_way if requested.get(year) == quota else stale)[year] = quota
        return stale, under_way

    async def _recompute_year(self, year: int, share: tuple[int, int]) -> int:
        """Recompute, store and publish every balance of ``year`` of the students of
        ``share``, a (partition, partitions) pair, that the quota changes.

        Why no batch decides with a stale quota: the quota is read in every batch under
        the shared quota lock, and the change committed under the exclusive one before
        this starts (its commands are written in its transaction), so a batch either
        committed before the change (and its students are in the list read below,
        recomputed by a chunk) or reads the new quota. A chunk takes the shared lock and
        its students' row locks (in SSIN order, as a batch does) and reads the quota
        again, so it and a batch on the same student serialise and the later one
        computes from the other's committed ledger. Students who get their first period
        of the year after the list was read are decided by batches with the new quota.
        """
        size = self._settings.quota_recompute_chunk
        async with self._pool.acquire() as conn:
            ssins = await store.ssins_with_data_in_year(conn, year, share)
        changed = 0
        for start in range(0, len(ssins), size):
            changed += await retry_transient(
                f"recompute of {year}", self._recompute_chunk, year, ssins[start : start + size]
            )
        return changed

    async def _recompute_chunk(self, year: int, ssins: Sequence[str]) -> int:
        """One chunk of :meth:`_recompute_year`, in its own transaction.

        The balances whose used hours fit within the old quota and the new one change
        only in their quota and remaining hours, set in place (:func:`db.store.requota_balances`:
        98 % of a simulated year's balances for 650 to 625 hours); the others are computed
        from their ledgers. The events go out in SSIN order either way.
        """
        now = self._clock()
        async with self._pool.acquire() as conn, conn.transaction():
            rules = self._settings.quota_rules.with_overrides(await store.quota_overrides(conn))
            next_seqs = await store.lock_students(conn, ssins, create=False)
            requoted = await store.requota_balances(conn, ssins, year, rules.quota(year))
            messages = [
                message
                for version, text in requoted.values()
                for message in _balance_messages(stored_balance_document(text), version, now)
            ]
            ledgers = await store.read_ledgers(
                conn, {s: seq for s, seq in next_seqs.items() if s not in requoted}, year
            )
            balances = [compute_balance(ledger, year, rules) for ledger in ledgers.values()]
            messages += await self._changed_balances(conn, balances, now)
            # Stable: each balance's two events stay in their order.
            messages.sort(key=lambda message: message.key or b"")
            await store.enqueue(conn, messages)
        return _balance_count(messages)


async def reconcile_configured_quota(settings: Settings, clock: Clock = utc_now) -> dict[int, int]:
    """:meth:`BatchProcessor.reconcile_quota` on a pool of its own (worker start-up)."""
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        return await BatchProcessor(pool, settings, clock).reconcile_quota()
    finally:
        await pool.close()


class OneByOne:
    """A :class:`streams.runtime.RecordHandler` that applies each record of a batch alone
    (``apply_one``, returning a count): quota changes, each its own short transaction
    writing the commands that recompute its year (:meth:`BatchProcessor.change_quota`),
    and those commands, each recomputing its share of a year in chunks
    (:meth:`BatchProcessor.recompute_share`) in the ``quota.recompute`` lane, beside the
    ledger's, never in front of its batches. A record the runtime isolates becomes a
    dead letter."""

    def __init__(
        self, processor: BatchProcessor, apply_one: Callable[[RawRecord], Awaitable[int]]
    ) -> None:
        self._processor = processor
        self._apply_one = apply_one

    async def apply(self, records: Sequence[RawRecord]) -> int:
        done = 0
        for record in records:
            done += await self._apply_one(record)
        return done

    async def quarantine(self, record: RawRecord, error: BaseException) -> None:
        await self._processor.quarantine(record, error)
