"""Attestations and monthly access codes: the agents, the scheduler and their rules.

``attestation.requests`` (key: SSIN) is consumed in small batches. For each request the
student's access code of the month is ensured (created on demand: one code per student
per month, the same in every attestation of that month), the remaining hours of the
year are read from ``balances`` (no row: the full quota), the PDF is rendered in a
process pool (never on the event loop), and then ONE transaction stores the PDF, records
the request's event id as applied and writes ``attestations.issued`` and
``ebox.deliveries`` to the outbox. The PDFs of a batch are saved as they are ready (one
transaction per group that finished together) while the pool renders the rest. A
replayed request is a no-op; a request claimed by two workers at once (a rebalance) is
written by whichever commits first.

Codes rotate monthly: a crontab (00:00 on the 1st, Brussels) publishes one
``AccessCodeRotation`` per partition of ``access-codes.rotate`` (key and partition: the
partition number), and whichever worker owns partition ``p`` creates, in bulk, the new
month's code of every student whose SSIN Kafka's default partitioner (murmur2) maps to
``p`` - the students whose declarations that partition number carries on the SSIN-keyed
topics. The partitioner hash is stored with each student (``students.key_hash``), so the
partition's students are one SQL read, and their codes are minted in a thread chunk by
chunk while the previous chunk is being inserted. A worker that was down at the boundary
publishes, when it starts, the commands of the partitions that have not been rotated this
month. Rotation is only an optimisation: an attestation creates its month's code when
missing, and the ``UNIQUE (ssin, month)`` key makes every path idempotent.

The rules that need no I/O (which years may be attested, which partition a student
belongs to) are plain functions here, so they are tested without a broker.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import faust
from pydantic import ValidationError

from db import attestations as queries
from db import reads, store
from db.store import DeadLetterPayload, OutboxMessage
from quota.access_codes import (
    AccessCodeKeys,
    CodeMint,
    code_validity,
    derive_keys,
    format_code,
    lookup_digest,
    month_start,
    unseal_code,
)
from quota.attestations import attestation_years, year_refusal
from quota.balance import compute_balance
from quota.calendar import BRUSSELS
from schemas.attestations import (
    AccessCodeRotation,
    AttestationIssued,
    AttestationRequest,
    EboxDelivery,
)
from schemas.partitioning import partition_of_key, student_key_hash
from schemas.settings import Settings
from schemas.topics import (
    ACCESS_CODES_ROTATE,
    ATTESTATION_REQUESTS,
    ATTESTATIONS_ISSUED,
    EBOX_DELIVERIES,
)
from streams import metrics
from streams.attestation_pdf import AttestationDocument, PdfRenderer
from streams.key_hashes import fill_key_hashes
from streams.messages import describe_validation_error
from streams.processor import Rejection, dead_letter_message, quarantine_record
from streams.runtime import RawRecord, RecordHandler

if TYPE_CHECKING:
    from streams.runtime import WorkerState

log = logging.getLogger(__name__)

#: Attestation requests live in their own namespace of applied event ids, apart from
#: Dimona and DmfA ids chosen by payroll software.
REQUEST_EVENT_PREFIX = "attestation:"

#: Students per chunk of a rotation: minted in one go, stored by one bulk insert in one
#: short transaction (the next chunk is minted meanwhile).
ROTATION_CHUNK = 5000


# --------------------------------------------------------------------------------------------
# Pure rules
# --------------------------------------------------------------------------------------------


def partition_of(ssin: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives the key ``ssin`` among ``partitions``.

    Java clients, aiokafka and faust all hash the key bytes with murmur2 and keep the
    positive 31 bits, so this is the partition that carries the student's events on every
    SSIN-keyed topic with that many partitions (``schemas.partitioning``; the same hash is
    stored as ``students.key_hash``).
    """
    return partition_of_key(student_key_hash(ssin), partitions)


def sealing_context(ssin: str, month: date) -> bytes:
    """What a sealed code is bound to: it cannot be moved to another student or month."""
    return f"{ssin}|{month.isoformat()}".encode()


def code_valid_on(valid_from: date, valid_until: date, on: date) -> bool:
    """Whether a stored code (validity from its row, both days inclusive) is valid ``on``."""
    return valid_from <= on <= valid_until


def request_event_key(request: AttestationRequest) -> str:
    return REQUEST_EVENT_PREFIX + request.event_id


# --------------------------------------------------------------------------------------------
# Access codes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MonthCode:
    """A student's code of one month, unsealed for printing on an attestation."""

    ssin: str
    month: date
    code: str
    valid_from: date
    valid_until: date


class AccessCodes:
    """Creates, stores and unseals access codes with the keys derived from the secret."""

    def __init__(self, settings: Settings) -> None:
        self._months = settings.access_code_validity_months
        self.keys: AccessCodeKeys = derive_keys(
            settings.access_code_secret.get_secret_value().encode()
        )
        self._mint = CodeMint(self.keys)

    def new_codes(self, ssins: Sequence[str], month: date) -> queries.NewCodes:
        """Fresh codes for ``month``, as digest and sealed form (the plain code is dropped).

        CPU-bound (random draws, HMAC, sealing): rotations run it in a thread.
        """
        valid_from, valid_until = code_validity(month, self._months)
        digests, sealed = self._mint.mint([sealing_context(s, valid_from) for s in ssins])
        return queries.NewCodes(
            month=valid_from,
            valid_from=valid_from,
            valid_until=valid_until,
            ssins=ssins,
            digests=digests,
            sealed=sealed,
        )

    def unseal(self, stored: queries.StoredCode) -> MonthCode:
        code = unseal_code(
            stored.sealed, self.keys.seal, context=sealing_context(stored.ssin, stored.month)
        )
        return MonthCode(stored.ssin, stored.month, code, stored.valid_from, stored.valid_until)

    def digest(self, typed: str) -> bytes | None:
        """The look-up digest of a typed code, or None when it cannot be a code."""
        try:
            return lookup_digest(typed, self.keys.lookup)
        except ValueError:
            return None

    def decoy_digest(self, typed: str) -> bytes:
        """A digest for input that is not a code: keyed like a real one, matching nothing.

        Malformed input still costs the caller the HMAC and the database round trip of a
        real look-up, so timing does not tell a malformed code from an unknown one.
        """
        message = b"not-a-code\x00" + typed.encode("utf-8", "replace")
        return hmac.new(self.keys.lookup, message, hashlib.sha256).digest()

    async def month_codes(
        self, conn: asyncpg.Connection, ssins: Collection[str], month: date
    ) -> dict[str, MonthCode]:
        """The codes of ``month`` for these students, creating the missing ones.

        Safe against a concurrent rotation or attestation: the first stored code of a
        (student, month) wins and every caller reads that one back.
        """
        first = month_start(month)
        stored = await queries.codes_of_month(conn, ssins, first)
        for _ in range(3):
            missing = [s for s in ssins if s not in stored]
            if not missing:
                break
            await queries.insert_codes(conn, self.new_codes(missing, first))
            stored = await queries.codes_of_month(conn, ssins, first)
        missing = [s for s in ssins if s not in stored]
        if missing:  # only a digest collision three times in a row gets here
            raise RuntimeError(f"could not store access codes for {len(missing)} students")
        return {ssin: self.unseal(code) for ssin, code in stored.items()}


async def store_rotated_codes(conn: asyncpg.Connection, new: queries.NewCodes) -> int:
    """Store a chunk of a rotation in its own transaction; return how many codes were new.

    The students were just read as lacking a code, so a plain insert is tried first (the
    cheap path); if an attestation or another rotation stored a code for one of them
    meanwhile, that transaction rolls back and the chunk goes in again skipping theirs.
    """
    try:
        async with conn.transaction():
            return await queries.insert_codes(conn, new, expect_conflicts=False)
    except asyncpg.UniqueViolationError:
        async with conn.transaction():
            return await queries.insert_codes(conn, new)


async def rotate_partition(
    pool: asyncpg.Pool,
    codes: AccessCodes,
    command: AccessCodeRotation,
    now: datetime,
    *,
    chunk: int = ROTATION_CHUNK,
) -> int:
    """Give every student of the command's partition a code for its month; return how many.

    Reads once, in SQL by their stored key hash, the partition's students lacking a code
    for the month, then mints their codes chunk by chunk in a thread while the previous
    chunk is stored (one bulk insert, its own short transaction), so Python and
    PostgreSQL work side by side. Running it again (a redelivery, a second command) finds
    nothing to do. A row in ``access_code_rotations`` records the run.
    """
    month = month_start(command.month)
    await fill_key_hashes(pool)
    async with pool.acquire() as conn:
        ssins = await queries.students_without_code(
            conn, month, partition=command.partition, partitions=command.partitions
        )
    chunks = [ssins[i : i + chunk] for i in range(0, len(ssins), chunk)]
    created = 0

    def mint(n: int) -> asyncio.Future[queries.NewCodes] | None:
        if n >= len(chunks):
            return None
        return asyncio.ensure_future(asyncio.to_thread(codes.new_codes, chunks[n], month))

    minted = 0
    minting = mint(0)
    try:
        while minting is not None:
            new = await minting
            minted += 1
            minting = mint(minted)  # the next chunk is minted while this one is stored
            async with pool.acquire() as conn:
                created += await store_rotated_codes(conn, new)
    finally:
        if minting is not None:  # an insert failed: let the thread finish, drop its codes
            await asyncio.gather(minting, return_exceptions=True)
    async with pool.acquire() as conn:
        await queries.record_rotation(
            conn,
            month=month,
            partition=command.partition,
            partitions=command.partitions,
            event_id=command.event_id,
            codes_created=created,
            at=now,
        )
    metrics.ACCESS_CODE_ROTATIONS.inc()
    log.info(
        "access codes %s, partition %d/%d: %d created",
        f"{month:%Y-%m}",
        command.partition,
        command.partitions,
        created,
    )
    return created


# --------------------------------------------------------------------------------------------
# Attestation requests
# --------------------------------------------------------------------------------------------


@dataclass
class AttestationReport:
    """What one batch of requests did (the agent yields it, tests and logs read it)."""

    issued: int = 0
    refused: int = 0
    failed: int = 0
    replayed: int = 0
    rejected: int = 0
    attestation_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Planned:
    request: AttestationRequest
    document: AttestationDocument
    code_month: date
    #: Its place in the batch: groups saved as renders finish keep the batch's order.
    position: int


class AttestationService:
    """Turns batches of ``attestation.requests`` records into stored, published PDFs."""

    def __init__(self, state: WorkerState, codes: AccessCodes, renderer: PdfRenderer) -> None:
        self._state = state
        self._settings = state.settings
        self.codes = codes
        self.renderer = renderer

    async def process(self, records: Sequence[RawRecord]) -> AttestationReport:
        report = AttestationReport()
        pool = await self._state.pool()
        requests: dict[str, AttestationRequest] = {}
        rejections: list[tuple[RawRecord, str]] = []
        for record in records:
            try:
                request = AttestationRequest.model_validate_json(record.value or b"")
            except ValidationError as error:
                rejections.append((record, describe_validation_error(error)))
                continue
            requests.setdefault(request_event_key(request), request)
        if rejections:
            report.rejected = await self._reject(pool, rejections)
        if not requests:
            return report

        now = self._state.clock()
        today = self._settings.today_in_brussels(now)
        async with pool.acquire() as conn:
            done = await store.already_applied(conn, list(requests))
        report.replayed = len(done)
        fresh = [r for key, r in requests.items() if key not in done]
        refused: list[tuple[AttestationRequest, str]] = []
        wanted: list[AttestationRequest] = []
        for request in fresh:
            # Entitled on the day the student asked, or on the day we issue.
            asked_on = self._settings.today_in_brussels(request.requested_at)
            reason = year_refusal(request.year, today)
            if reason is None or year_refusal(request.year, asked_on) is None:
                wanted.append(request)
            else:
                refused.append((request, reason))

        planned = await self._plan(pool, wanted, today) if wanted else []
        await self._render_and_save(pool, planned, refused, now, report)
        return report

    async def _render_and_save(
        self,
        pool: asyncpg.Pool,
        planned: Sequence[_Planned],
        refused: Sequence[tuple[AttestationRequest, str]],
        now: datetime,
        report: AttestationReport,
    ) -> None:
        """Render every planned document and save each as soon as it is ready.

        Every document goes to the pool at once; whenever some are ready they are saved
        together in one transaction while the pool renders the others, so the pool never
        waits for the database nor the database for the last PDF of the batch. Each save
        is all or nothing for its documents and claims their request ids, so the
        guarantees of one transaction per batch hold: a replayed request is a no-op, and
        a batch stopped half-way (the worker stopping) is redelivered, its saved requests
        then replays, the others rendered again. The refusals go with the first save.
        """
        renders: dict[asyncio.Future[bytes], _Planned] = {
            asyncio.ensure_future(self._timed_render(plan.document)): plan for plan in planned
        }
        pending = set(renders)
        unsaved_refusals: Sequence[tuple[AttestationRequest, str]] = refused
        try:
            while True:
                if pending:
                    ready, pending = await asyncio.wait(
                        pending, return_when=asyncio.FIRST_COMPLETED
                    )
                else:
                    ready = set()
                issued, failed = self._outcomes([(renders[f], f) for f in ready])
                await self._save(pool, issued, unsaved_refusals, failed, now, report)
                unsaved_refusals = ()
                if not pending:
                    return
        finally:
            for render in pending:  # the batch ended early: nothing more is saved
                render.cancel()

    def _outcomes(
        self, ready: Sequence[tuple[_Planned, asyncio.Future[bytes]]]
    ) -> tuple[list[tuple[_Planned, bytes]], list[tuple[AttestationRequest, str]]]:
        """Split finished renders into PDFs to issue and requests that failed (with why)."""
        issued: list[tuple[_Planned, bytes]] = []
        failed: list[tuple[AttestationRequest, str]] = []
        # In the batch's order, so that a group's rows and messages keep it.
        for plan, render in sorted(ready, key=lambda pair: pair[0].position):
            error = render.exception()  # raises CancelledError if the render was cancelled
            if error is None:
                metrics.ATTESTATION_RENDERS.labels("ok").inc()
                issued.append((plan, render.result()))
            elif isinstance(error, Exception):
                metrics.ATTESTATION_RENDERS.labels("failed").inc()
                log.error(
                    "attestation %s could not be rendered",
                    plan.request.attestation_id,
                    exc_info=error,
                )
                failed.append((plan.request, "the document could not be produced"))
            else:
                raise error  # cancellation and other BaseExceptions end the batch
        return issued, failed

    async def _timed_render(self, document: AttestationDocument) -> bytes:
        """Render one PDF, its duration observed whether it succeeds or not."""
        started = time.perf_counter()
        try:
            return await self.renderer.render(document)
        finally:
            metrics.ATTESTATION_RENDER_DURATION.observe(time.perf_counter() - started)

    async def _plan(
        self, pool: asyncpg.Pool, requests: Sequence[AttestationRequest], today: date
    ) -> list[_Planned]:
        """Ensure the month's codes and read the balances: one short transaction."""
        async with pool.acquire() as conn, conn.transaction():
            rules = self._settings.quota_rules.with_overrides(await store.quota_overrides(conn))
            codes = await self.codes.month_codes(conn, {r.ssin for r in requests}, today)
            balances = await queries.balances_for(conn, [(r.ssin, r.year) for r in requests])
            for (ssin, year), (quota, _remaining) in list(balances.items()):
                if quota != rules.quota(year):
                    # A quota change whose chunked recompute has not reached this
                    # student yet: compute the balance with the effective quota.
                    ledger = await reads.student_ledger(conn, ssin, year)
                    fresh = compute_balance(ledger, year, rules)
                    balances[(ssin, year)] = (fresh.quota, fresh.remaining)
        planned = []
        for position, request in enumerate(requests):
            code = codes[request.ssin]
            quota, remaining = balances.get(
                (request.ssin, request.year),
                (rules.quota(request.year), rules.quota(request.year)),
            )
            document = AttestationDocument(
                attestation_id=request.attestation_id,
                ssin=request.ssin,
                year=request.year,
                remaining_hours=remaining,
                quota=quota,
                access_code=format_code(code.code),
                valid_from=code.valid_from,
                valid_until=code.valid_until,
                issued_on=today,
                language=request.language or self._settings.default_language,
            )
            planned.append(_Planned(request, document, code.month, position))
        return planned

    async def _save(
        self,
        pool: asyncpg.Pool,
        issued: Sequence[tuple[_Planned, bytes]],
        refused: Sequence[tuple[AttestationRequest, str]],
        failed: Sequence[tuple[AttestationRequest, str]],
        now: datetime,
        report: AttestationReport,
    ) -> None:
        """Store these outcomes and queue their messages, in ONE transaction.

        Adds to ``report``: a batch is saved in as many calls as its PDFs took groups.
        """
        async with pool.acquire() as conn, conn.transaction():
            keys = [request_event_key(p.request) for p, _ in issued]
            keys += [request_event_key(r) for r, _ in [*refused, *failed]]
            claimed = await queries.claim_events(conn, keys)
            rows: list[queries.IssuedAttestation] = []
            messages: list[OutboxMessage] = []
            for plan, pdf in issued:
                if request_event_key(plan.request) not in claimed:
                    report.replayed += 1
                    continue
                row, outgoing = self._issue(plan, pdf, now)
                rows.append(row)
                messages.extend(outgoing)
                report.attestation_ids.append(row.attestation_id)
            await queries.save_issued(conn, rows)
            closed = {
                "refused": [(r, why) for r, why in refused if request_event_key(r) in claimed],
                "failed": [(r, why) for r, why in failed if request_event_key(r) in claimed],
            }
            await queries.save_unissued(conn, _unissued_rows(closed["refused"]), status="refused")
            await queries.save_unissued(conn, _unissued_rows(closed["failed"]), status="failed")
            for status, outcomes in closed.items():
                for r, why in outcomes:
                    log.warning("attestation %s %s: %s", r.attestation_id, status, why)
            await store.enqueue(conn, messages)
        report.issued += len(rows)
        report.refused += len(closed["refused"])
        report.failed += len(closed["failed"])

    def _issue(
        self, plan: _Planned, pdf: bytes, now: datetime
    ) -> tuple[queries.IssuedAttestation, list[OutboxMessage]]:
        request, doc = plan.request, plan.document
        digest = hashlib.sha256(pdf).hexdigest()
        row = queries.IssuedAttestation(
            attestation_id=request.attestation_id,
            ssin=request.ssin,
            year=request.year,
            event_id=request.event_id,
            requested_at=request.requested_at,
            issued_at=now,
            issued_on=doc.issued_on,
            remaining=doc.remaining_hours,
            quota=doc.quota,
            code_month=plan.code_month,
            code_valid_from=doc.valid_from,
            code_valid_until=doc.valid_until,
            pdf=pdf,
            sha256=digest,
        )
        issued = AttestationIssued(
            event_id=f"attestation-issued:{request.attestation_id}",
            attestation_id=request.attestation_id,
            ssin=request.ssin,
            year=request.year,
            remaining_hours=doc.remaining_hours,
            quota=doc.quota,
            access_code_valid_from=doc.valid_from,
            access_code_valid_until=doc.valid_until,
            issued_at=now,
            sha256=digest,
        )
        delivery = EboxDelivery(
            event_id=f"ebox-delivery:{request.attestation_id}",
            attestation_id=request.attestation_id,
            ssin=request.ssin,
            year=request.year,
            title=f"Student@work attestation {request.year}",
            file_name=f"student-at-work-attestation-{request.year}-{doc.issued_on:%Y%m%d}.pdf",
            pdf_base64=base64.b64encode(pdf).decode(),
            issued_at=now,
        )
        key = request.ssin.encode()
        return row, [
            OutboxMessage(ATTESTATIONS_ISSUED, key, issued.to_json_bytes()),
            OutboxMessage(EBOX_DELIVERIES, key, delivery.to_json_bytes()),
        ]

    async def _reject(self, pool: asyncpg.Pool, rejections: Sequence[tuple[RawRecord, str]]) -> int:
        return await reject_records(pool, self._settings, rejections, self._state.clock())


def _unissued_rows(
    outcomes: Sequence[tuple[AttestationRequest, str]],
) -> list[tuple[str, str, int, str, datetime, str]]:
    return [
        (r.attestation_id, r.ssin, r.year, r.event_id, r.requested_at, why) for r, why in outcomes
    ]


async def reject_records(
    pool: asyncpg.Pool,
    settings: Settings,
    rejections: Sequence[tuple[RawRecord, str]],
    now: datetime,
) -> int:
    """Turn unparseable records into dead letters, once each; return how many are new."""
    ids = [Rejection(r, reason).dedupe_id for r, reason in rejections]
    async with pool.acquire() as conn, conn.transaction():
        claimed = await queries.claim_events(conn, ids)
        messages: list[OutboxMessage] = []
        payloads: list[DeadLetterPayload] = []
        for (record, reason), event_id in zip(rejections, ids, strict=True):
            if event_id not in claimed:
                continue
            letter, payload = dead_letter_message(Rejection(record, reason), settings, now)
            messages.append(letter)
            if payload is not None:
                payloads.append(payload)
        await store.save_dead_letter_payloads(conn, payloads)
        await store.enqueue(conn, messages)
    return len(messages)


# --------------------------------------------------------------------------------------------
# Wiring into the worker
# --------------------------------------------------------------------------------------------


#: Publishes the rotation commands of a month (the scheduler's, injected by the caller
#: that assembles the worker, so that this package does not import producers).
RotationPublisher = Callable[..., Awaitable[list[int]]]


class _Handler:
    """A :class:`streams.runtime.RecordHandler` from an apply function; a record the
    runtime isolates becomes a dead letter."""

    def __init__(
        self, state: WorkerState, apply: Callable[[Sequence[RawRecord]], Awaitable[object]]
    ) -> None:
        self._state = state
        self._apply = apply

    async def apply(self, records: Sequence[RawRecord]) -> object:
        return await self._apply(records)

    async def quarantine(self, record: RawRecord, error: BaseException) -> None:
        pool = await self._state.pool()
        await quarantine_record(pool, self._state.settings, record, error, self._state.clock())


def register_agents(
    app: faust.App, state: WorkerState, publish_rotation: RotationPublisher
) -> dict[str, tuple[RecordHandler, int]]:
    """Add the monthly crontab and start-up tasks; return the input handlers.

    The result maps the logical topics (attestation requests, code rotations) to their
    handler and the largest batch it takes.
    """
    settings = state.settings
    codes = AccessCodes(settings)
    renderer = PdfRenderer(settings.pdf_processes)
    service = AttestationService(state, codes, renderer)
    # A batch renders every request in it before its offsets are committed: keep it to a
    # few documents per process so a burst never holds a partition for long.
    batch = max(1, min(settings.batch_size, 4 * settings.pdf_processes))

    async def rotate_all(records: Sequence[RawRecord]) -> int:
        return sum([await _rotate(record) for record in records])

    async def _rotate(record: RawRecord) -> int:
        pool = await state.pool()
        try:
            command = AccessCodeRotation.model_validate_json(record.value or b"")
        except ValidationError as error:
            reason = describe_validation_error(error)
            return await reject_records(pool, settings, [(record, reason)], state.clock())
        current = month_start(settings.today_in_brussels(state.clock()))
        if month_start(command.month) < current:
            log.info("skipping the rotation of past month %s", f"{command.month:%Y-%m}")
            return 0
        return await rotate_partition(pool, codes, command, state.clock())

    async def publish_month(month: date, *, skip: Collection[int] = ()) -> None:
        for attempt in range(5):
            try:
                sent = await publish_rotation(settings, month, state.clock(), skip=skip)
            except Exception as error:  # broker hiccup: try again, codes come on demand anyway
                log.warning("publishing the %s code rotation failed: %s", f"{month:%Y-%m}", error)
                await asyncio.sleep(2**attempt)
                continue
            if sent:
                log.info("published the %s code rotation to partitions %s", f"{month:%Y-%m}", sent)
            return
        log.error("gave up publishing the %s code rotation", f"{month:%Y-%m}")

    @app.crontab("0 0 1 * *", timezone=BRUSSELS, on_leader=True)
    async def monthly_rotation() -> None:
        # A minute ahead: a timer waking a hair before midnight must still name the new month.
        moment = state.clock() + timedelta(minutes=1)
        await publish_month(month_start(settings.today_in_brussels(moment)))

    async def catch_up_rotation() -> None:
        """Rotate now if this worker (or every worker) was down when the month began."""
        month = month_start(settings.today_in_brussels(state.clock()))
        try:
            pool = await state.pool()
            async with pool.acquire() as conn:
                done = await queries.rotated_partitions(conn, month)
        except (OSError, asyncpg.PostgresError) as error:
            log.warning("could not check this month's code rotation: %s", error)
            return
        await publish_month(month, skip=done)

    async def fill_student_key_hashes() -> None:
        """Fill in the key hashes of older rows now, so the month's rotation need not."""
        try:
            filled = await fill_key_hashes(await state.pool())
        except (OSError, asyncpg.PostgresError) as error:  # the rotation fills them anyway
            log.warning("could not fill in the students' key hashes: %s", error)
            return
        if filled:
            log.info("filled in the key hash of %d students", filled)

    async def warm_pdf_renderer() -> None:
        try:
            await renderer.warm_up()
        except Exception:
            log.exception("PDF renderer warm-up failed; rendering will retry per request")

    async def purge_lookup_failures() -> None:
        window = timedelta(seconds=settings.lookup_failure_window_seconds)
        try:
            pool = await state.pool()
            async with pool.acquire() as conn:
                await queries.purge_failures(conn, state.clock() - window)
        except (OSError, asyncpg.PostgresError) as error:
            log.warning("could not purge old look-up failures: %s", error)

    async def stop_renderer(_sender: Any, **_kwargs: Any) -> None:
        await asyncio.to_thread(renderer.close)

    app.task(catch_up_rotation)
    app.task(fill_student_key_hashes)
    app.task(warm_pdf_renderer)
    app.timer(interval=300.0)(purge_lookup_failures)
    # (mode's handler type does not admit an ``async def``; the signal awaits it anyway.)
    shutdown_signal: Any = app.on_before_shutdown
    shutdown_signal.connect(stop_renderer)
    return {
        ATTESTATION_REQUESTS: (_Handler(state, service.process), batch),
        ACCESS_CODES_ROTATE: (_Handler(state, rotate_all), 1),
    }


__all__ = [
    "AccessCodes",
    "AttestationService",
    "MonthCode",
    "attestation_years",
    "code_valid_on",
    "partition_of",
    "register_agents",
    "rotate_partition",
    "store_rotated_codes",
    "year_refusal",
]
