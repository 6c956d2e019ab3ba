"""Publishing declarations for payroll software, and waiting for the service's answers.

Employers, agencies and social secretariats already build the Dimona REST body
(DOMAIN.md section 2); this module takes that body (or a DmfA line), checks it locally
against the same contracts the service uses, fills in what a bare REST body lacks (the
event id that makes a retry idempotent, the submission instant), publishes it keyed by
the worker's SSIN to the right topic, and matches the answers on ``dimona.acks`` by
``inReplyTo``.

Two ways in:

* :class:`DeclarationPublisher`, an async context manager for Python payroll software
  (``submit`` a declaration, then await its ``answers``);
* :func:`publish_file`, the synchronous helper behind ``studentwork publish FILE`` for a
  JSON Lines file of bare bodies or of the simulator's envelopes
  (``{"topic", "key", "timestamp", "value"}``).

Answers are read with a consumer of its own (no group, nothing committed) from the end
offsets of ``dimona.acks`` as they were *before* the first message was published, so an
answer can never slip between publishing and listening. A re-published event id is a
replay the service does not answer again; ``from_beginning`` finds its first answer.
Business rules (a period across two quarters, zero hours, the quota) are the service's
to judge: it answers B with the reason, so they are not second-guessed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import InvalidTimestampError
from aiokafka.structs import TopicPartition
from pydantic import ValidationError

from quota.calendar import BRUSSELS
from schemas.answers import DimonaAnswer
from schemas.declarations import DimonaDeclaration, DmfaDeclaration
from schemas.settings import Settings
from schemas.topics import ACKS, DIMONA, DMFA
from streams.messages import describe_validation_error, guess_employer

__all__ = [
    "AnswerListener",
    "Declaration",
    "DeclarationPublisher",
    "DeliveryFailed",
    "InvalidDeclaration",
    "Kind",
    "PreparedLine",
    "PublishReport",
    "RejectedLine",
    "describe_delivery_error",
    "detect_kind",
    "parse_timestamp",
    "publish_file",
    "publish_lines",
    "read_lines",
    "to_declaration",
]

Kind = Literal["dimona", "dmfa"]
Declaration = DimonaDeclaration | DmfaDeclaration

TOPIC_OF: dict[Kind, str] = {"dimona": DIMONA, "dmfa": DMFA}
_DIMONA_ACTIONS = (
    "dimonaIn",
    "dimonaUpdate",
    "dimonaCancel",
    "dimona_in",
    "dimona_update",
    "dimona_cancel",
)
_DMFA_FIELDS = ("hoursWorked", "hours_worked")


class InvalidDeclaration(ValueError):
    """A message the contracts refuse; ``reason`` says why, naming each JSON field."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DeliveryFailed(Exception):
    """The broker refused some messages: ``failures`` lists (event id, error)."""

    def __init__(self, failures: list[tuple[str, BaseException]]) -> None:
        first = failures[0]
        super().__init__(
            f"the broker refused {len(failures)} message(s), e.g. {first[0]}: "
            f"{describe_delivery_error(first[1])}"
        )
        self.failures = failures


def describe_delivery_error(error: BaseException) -> str:
    """Why the broker refused a message, with the likely cause of the common one."""
    text = f"{type(error).__name__}: {error}".rstrip(": ")
    if isinstance(error, InvalidTimestampError):
        text += (
            " (the record timestamp is further in the future than the topic accepts: "
            "message.timestamp.after.max.ms, one hour by default)"
        )
    return text


# ----------------------------------------------------------------------------- checks


def detect_kind(body: Mapping[str, Any]) -> Kind:
    """Tell a Dimona declaration from a DmfA line by its shape.

    A body with ``dimonaIn``, ``dimonaUpdate`` or ``dimonaCancel`` is Dimona, one with
    ``hoursWorked`` is DmfA. Raises :class:`InvalidDeclaration` otherwise.
    """
    dimona = any(k in body for k in _DIMONA_ACTIONS)
    dmfa = any(k in body for k in _DMFA_FIELDS)
    if dimona and dmfa:
        raise InvalidDeclaration(
            "both a Dimona action (dimonaIn, dimonaUpdate or dimonaCancel) and DmfA hours "
            "(hoursWorked): send them as two messages"
        )
    if dimona:
        return "dimona"
    if dmfa:
        return "dmfa"
    raise InvalidDeclaration(
        "neither a Dimona declaration (dimonaIn, dimonaUpdate or dimonaCancel) nor a DmfA "
        "line (hoursWorked)"
    )


def _completed(body: Mapping[str, Any], submitted_at: datetime) -> dict[str, Any]:
    """The body with an event id (uuid4) and submission instant where it has none."""
    out = dict(body)
    if not (out.get("eventId") or out.get("event_id")):
        out.pop("event_id", None)
        out["eventId"] = str(uuid.uuid4())
    if not (out.get("submittedAt") or out.get("submitted_at")):
        out.pop("submitted_at", None)
        out["submittedAt"] = submitted_at.isoformat()
    return out


def to_declaration(
    declaration: Declaration | Mapping[str, Any], *, submitted_at: datetime | None = None
) -> Declaration:
    """Validate a declaration, filling in a missing event id and submission instant.

    ``submitted_at`` (default now) is used only where the body has none. Raises
    :class:`InvalidDeclaration` with the reason when the contracts refuse it.
    """
    if isinstance(declaration, DimonaDeclaration | DmfaDeclaration):
        return declaration
    body = _completed(declaration, submitted_at or datetime.now(BRUSSELS))
    contract = DimonaDeclaration if detect_kind(body) == "dimona" else DmfaDeclaration
    try:
        return contract.model_validate(body)
    except ValidationError as error:
        raise InvalidDeclaration(describe_validation_error(error)) from error


def kind_of(declaration: Declaration) -> Kind:
    return "dimona" if isinstance(declaration, DimonaDeclaration) else "dmfa"


def parse_timestamp(value: str | int | float) -> int:
    """Epoch milliseconds of an ISO date-time (Brussels time when it names no zone).

    Integers are taken as epoch milliseconds already. Raises ``ValueError``.
    """
    if isinstance(value, bool):
        raise ValueError("a timestamp is epoch milliseconds or an ISO date-time")
    if isinstance(value, int | float):
        return int(value)
    moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=BRUSSELS)
    return int(moment.timestamp() * 1000)


# ----------------------------------------------------------------------------- lines


@dataclass(frozen=True)
class PreparedLine:
    """One line of a file, ready to publish.

    ``error`` is set for a line the contracts refuse that is sent anyway
    (``send_invalid``): the service then answers B itself when it can tell the employer.
    """

    line: int
    kind: Kind
    event_id: str
    key: str
    value: bytes
    timestamp_ms: int | None
    error: str | None = None

    @property
    def expects_answer(self) -> bool:
        """Whether the service can answer: an invalid message must name its employer."""
        return self.error is None or guess_employer(self.value) is not None


@dataclass(frozen=True)
class RejectedLine:
    """A line refused locally (not published unless ``send_invalid``), and why."""

    line: int
    reason: str


def _envelope_parts(obj: dict[str, Any]) -> tuple[dict[str, Any], str | None, Any, Any] | None:
    """(value, topic, key, timestamp) when ``obj`` is a simulator envelope line."""
    value = obj.get("value")
    if isinstance(value, dict) and any(k in obj for k in ("topic", "key", "timestamp")):
        topic = obj.get("topic")
        return (
            value,
            topic if isinstance(topic, str) else None,
            obj.get("key"),
            obj.get("timestamp"),
        )
    return None


def _prepare(
    number: int,
    text: str,
    *,
    timestamp_ms: int | None,
    now: datetime,
    send_invalid: bool,
) -> PreparedLine | RejectedLine:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as error:
        return RejectedLine(number, f"not valid JSON: {error.msg} at column {error.colno}")
    if not isinstance(obj, dict):
        return RejectedLine(number, f"expected a JSON object, got {type(obj).__name__}")
    body: dict[str, Any] = obj
    envelope_key: Any = None
    line_timestamp = timestamp_ms
    envelope = _envelope_parts(obj)
    if envelope is not None:
        body, topic, envelope_key, envelope_timestamp = envelope
        if line_timestamp is None and envelope_timestamp is not None:
            try:
                line_timestamp = parse_timestamp(envelope_timestamp)
            except (ValueError, TypeError):
                return RejectedLine(
                    number, f"envelope timestamp {envelope_timestamp!r} is not epoch ms or ISO"
                )
    else:
        topic = None
    try:
        kind = detect_kind(body)
    except InvalidDeclaration as error:
        return RejectedLine(number, error.reason)
    if topic is not None and not topic.endswith(TOPIC_OF[kind]):
        return RejectedLine(
            number, f"the envelope names topic {topic} but the value belongs on {TOPIC_OF[kind]}"
        )
    submitted_at = (
        datetime.fromtimestamp(line_timestamp / 1000, BRUSSELS) if line_timestamp else now
    )
    completed = _completed(body, submitted_at)
    try:
        declaration = to_declaration(completed)
    except InvalidDeclaration as error:
        if not send_invalid:
            return RejectedLine(number, error.reason)
        worker = completed.get("worker")
        raw_ssin = worker.get("ssin") if isinstance(worker, dict) else None
        key = str(envelope_key if envelope_key is not None else raw_ssin or "")
        event_id = str(completed.get("eventId") or completed.get("event_id"))
        value = json.dumps(completed, separators=(",", ":")).encode()
        return PreparedLine(number, kind, event_id, key, value, line_timestamp, error.reason)
    assert declaration.event_id is not None  # completed above
    ssin = declaration.worker.ssin if declaration.worker is not None else envelope_key
    if not ssin:
        return RejectedLine(
            number,
            "a follow-up that names only its period needs the worker's SSIN as the line's key "
            '({"key": "<SSIN>", "value": {...}})',
        )
    return PreparedLine(
        number, kind, declaration.event_id, str(ssin), declaration.to_json_bytes(), line_timestamp
    )


def read_lines(
    lines: Iterable[str],
    *,
    timestamp_ms: int | None = None,
    now: datetime | None = None,
    send_invalid: bool = False,
) -> Iterator[PreparedLine | RejectedLine]:
    """Check and prepare JSON Lines; blank lines are skipped, numbering starts at 1.

    ``timestamp_ms`` sets every record's CreateTime (over the envelopes' own); a missing
    ``submittedAt`` becomes the record's timestamp, or ``now``. A repeated event id is
    refused: the service would take it as a replay and not answer it again.
    """
    seen: dict[str, int] = {}
    started = now or datetime.now(BRUSSELS)
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        item = _prepare(
            number, text, timestamp_ms=timestamp_ms, now=started, send_invalid=send_invalid
        )
        if isinstance(item, PreparedLine):
            # Unique across Dimona and DmfA too: answers name only the event id.
            first = seen.setdefault(item.event_id, number)
            if first != number:
                item = RejectedLine(
                    number,
                    f"eventId {item.event_id} was already used on line {first}: the service "
                    "would take it as a replay and not answer it again",
                )
        yield item


# ----------------------------------------------------------------------------- client


class DeclarationPublisher:
    """Publishes declarations and collects the answers to them.

    ``submit`` queues a message and returns its event id; ``flush`` (called by
    ``answers`` and on exit) waits until the broker acknowledged every queued message.
    The producer is idempotent (acks=all), so a student's messages keep their order.
    With ``collect_answers`` (the default) the answers topic is read from its end as of
    entering the context (``from_beginning``: from its start, each time ``answers`` is
    called, to find the answers to event ids published before, which the service does
    not answer twice).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        collect_answers: bool = True,
        from_beginning: bool = False,
        max_in_flight: int = 10_000,
    ) -> None:
        self._settings = settings or Settings()
        self._collect = collect_answers
        self._from_beginning = from_beginning
        self._max_in_flight = max_in_flight
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._assigned = False
        self._in_flight: list[tuple[str, asyncio.Future[Any]]] = []
        self._sent: set[str] = set()
        #: Event ids whose answers are collected, and the kind of message they name.
        self._submitted: dict[str, Kind] = {}
        self._answers: dict[str, DimonaAnswer] = {}
        self._arrivals: asyncio.Queue[str] = asyncio.Queue()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(flush=exc is None)

    async def start(self) -> None:
        """Connect; when collecting answers, note where the answers topic ends now."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self._settings.kafka_bootstrap,
            enable_idempotence=True,
            linger_ms=5,
        )
        await producer.start()
        self._producer = producer
        if not self._collect:
            return
        try:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._settings.kafka_bootstrap,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
            )
            await consumer.start()
            self._consumer = consumer
            if not self._from_beginning:
                await self._assign(fresh_topic=False)
        except BaseException:
            await self.close(flush=False)
            raise
        if not self._from_beginning:
            self._task = asyncio.create_task(self._collect_answers(), name="answers")

    async def close(self, *, flush: bool = True) -> None:
        """Wait for queued messages (``flush``), then disconnect."""
        try:
            if flush and self._producer is not None:
                await self.flush()
        finally:
            await self._stop_collector()
            if self._consumer is not None:
                with contextlib.suppress(Exception):
                    await self._consumer.stop()
                self._consumer = None
            if self._producer is not None:
                with contextlib.suppress(Exception):
                    await self._producer.stop()
                self._producer = None

    async def submit(
        self,
        declaration: Declaration | Mapping[str, Any],
        *,
        timestamp_ms: int | None = None,
        ssin: str | None = None,
    ) -> str:
        """Validate and queue one declaration (Dimona or DmfA); return its event id.

        A dict may be the bare REST body: a missing event id (uuid4) and submission
        instant (the timestamp, or now) are filled in. ``timestamp_ms`` sets the record's
        CreateTime (replays; in production the broker stamps LogAppendTime). Raises
        :class:`InvalidDeclaration` when the contracts refuse it, ``ValueError`` when the
        event id was already submitted through this publisher. A follow-up that names
        only its period needs ``ssin``: the record is keyed by the worker's SSIN.
        """
        at = datetime.fromtimestamp(timestamp_ms / 1000, BRUSSELS) if timestamp_ms else None
        model = to_declaration(declaration, submitted_at=at)
        key = model.worker.ssin if model.worker is not None else ssin
        if key is None:
            raise InvalidDeclaration("a follow-up that names only its period needs the ssin")
        assert model.event_id is not None  # completed by to_declaration
        await self._send(kind_of(model), model.event_id, key, model.to_json_bytes(), timestamp_ms)
        return model.event_id

    async def send_prepared(self, line: PreparedLine) -> None:
        """Queue a line prepared by :func:`read_lines` (already checked, or sent anyway)."""
        await self._send(
            line.kind, line.event_id, line.key, line.value, line.timestamp_ms, line.expects_answer
        )

    async def _send(
        self,
        kind: Kind,
        event_id: str,
        key: str,
        value: bytes,
        timestamp_ms: int | None,
        expect_answer: bool = True,
    ) -> None:
        if self._producer is None:
            raise RuntimeError("the publisher is not started (use it with 'async with')")
        if event_id in self._sent:
            raise ValueError(f"event id {event_id} was already submitted")
        self._sent.add(event_id)
        if expect_answer:
            # Registered before sending: an answer can never arrive before its question.
            self._submitted[event_id] = kind
        future = await self._producer.send(
            self._settings.topic(TOPIC_OF[kind]),
            value,
            key=key.encode(),
            timestamp_ms=timestamp_ms,
        )
        self._in_flight.append((event_id, future))
        if len(self._in_flight) >= self._max_in_flight:
            await self.flush()

    def expects_answer(self, event_id: str) -> bool:
        """Whether an answer to ``event_id`` is being collected (published, answerable)."""
        return event_id in self._submitted

    async def flush(self) -> None:
        """Wait until the broker acknowledged every queued message.

        Raises :class:`DeliveryFailed` naming the messages the broker refused (after
        waiting for all of them); the others are published.
        """
        pending, self._in_flight = self._in_flight, []
        if not pending:
            return
        results = await asyncio.gather(*(f for _, f in pending), return_exceptions=True)
        failures = [
            (event_id, result)
            for (event_id, _), result in zip(pending, results, strict=True)
            if isinstance(result, BaseException)
        ]
        for event_id, _ in failures:
            self._submitted.pop(event_id, None)
        if failures:
            raise DeliveryFailed(failures)

    async def answers(
        self,
        event_ids: Iterable[str],
        # Not asyncio.timeout: on expiry the answers found so far are returned, not lost.
        timeout: float,  # noqa: ASYNC109
        *,
        on_answer: Callable[[DimonaAnswer], None] | None = None,
    ) -> dict[str, DimonaAnswer]:
        """The answers to ``event_ids`` that arrive within ``timeout`` seconds.

        Flushes first; the timeout counts from then. Event ids still unanswered at the
        end are simply absent from the result, as are at once those never submitted
        through this publisher (nothing here would match their answers). ``on_answer``
        is called as each arrives.
        """
        if not self._collect:
            raise RuntimeError("this publisher does not collect answers")
        await self.flush()
        if self._from_beginning:
            # Read the topic from its start now that every event id is registered: an old
            # answer read before its event id was submitted would have been passed over.
            await self._stop_collector()
            await self._assign(fresh_topic=True)
            self._task = asyncio.create_task(self._collect_answers(), name="answers")
        wanted = {event_id for event_id in event_ids if event_id in self._submitted}
        found: dict[str, DimonaAnswer] = {}

        def take(event_id: str) -> None:
            if event_id in wanted and event_id in self._answers:
                wanted.discard(event_id)
                found[event_id] = self._answers[event_id]
                if on_answer is not None:
                    on_answer(found[event_id])

        for event_id in list(wanted):
            take(event_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while wanted:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            if self._task is not None and self._task.done():
                self._task.result()  # raises what stopped the collector
                break
            try:
                take(await asyncio.wait_for(self._arrivals.get(), min(remaining, 1.0)))
            except TimeoutError:
                continue
        return found

    # -- the answers consumer

    async def _stop_collector(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _assign(self, *, fresh_topic: bool) -> None:
        """Assign every partition of the answers topic, positioned where listening starts.

        A topic that did not exist when the publisher started holds only new answers,
        so it is read from its beginning once it appears.
        """
        assert self._consumer is not None
        tps = await self._answer_partitions()
        if not tps:
            return
        self._consumer.assign(tps)
        if self._from_beginning or fresh_topic:
            await self._consumer.seek_to_beginning(*tps)
        else:
            for tp, offset in (await self._consumer.end_offsets(tps)).items():
                self._consumer.seek(tp, offset)
        self._assigned = True

    async def _answer_partitions(self) -> list[TopicPartition]:
        """The partitions of the answers topic; none while the topic does not exist.

        Asked of the admin API: the consumer's metadata cache only knows topics it already
        reads, and a producer's metadata request could auto-create the topic.
        """
        topic = self._settings.topic(ACKS)
        admin = AIOKafkaAdminClient(bootstrap_servers=self._settings.kafka_bootstrap)
        await admin.start()
        try:
            described = await admin.describe_topics([topic])
        finally:
            await admin.close()
        for entry in described:
            if entry.get("topic") == topic and entry.get("error_code") == 0:
                return sorted(TopicPartition(topic, p["partition"]) for p in entry["partitions"])
        return []

    async def _collect_answers(self) -> None:
        assert self._consumer is not None
        while True:
            if not self._assigned:
                await asyncio.sleep(1.0)
                await self._assign(fresh_topic=True)
                continue
            batch = await self._consumer.getmany(timeout_ms=500, max_records=5_000)
            for records in batch.values():
                for record in records:
                    self._on_answer(record.value)

    def _on_answer(self, raw: bytes | None) -> None:
        if not raw:
            return
        try:
            answer = DimonaAnswer.model_validate_json(raw)
        except ValidationError:
            return  # not ours to judge; the topic's contract is the service's
        kind: Kind = "dmfa" if answer.action == "dmfa" else "dimona"
        if self._submitted.get(answer.in_reply_to) == kind:
            self._answers[answer.in_reply_to] = answer
            self._arrivals.put_nowait(answer.in_reply_to)


# ----------------------------------------------------------------------------- files


class AnswerListener(Protocol):
    """What :func:`publish_lines` reports as it goes: progress and each result."""

    def rejected(self, line: RejectedLine) -> None:
        """A line refused locally."""

    def sent(self, count: int) -> None:
        """``count`` lines published so far."""

    def waiting(self, expected: int) -> None:
        """Publishing is done; ``expected`` answers are awaited."""

    def answered(self, line: int, answer: DimonaAnswer) -> None:
        """The answer to the message on ``line``."""


class _Silent:
    """The listener that reports nothing."""

    def rejected(self, line: RejectedLine) -> None:
        pass

    def sent(self, count: int) -> None:
        pass

    def waiting(self, expected: int) -> None:
        pass

    def answered(self, line: int, answer: DimonaAnswer) -> None:
        pass


@dataclass
class PublishReport:
    """What :func:`publish_lines` did; ``exit_code`` follows ``studentwork publish``."""

    lines: int = 0
    sent: int = 0
    waited: bool = True
    rejected: list[RejectedLine] = field(default_factory=list)
    #: Answers by event id (when kept), with the line of the message answered.
    answers: dict[str, tuple[int, DimonaAnswer]] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)
    #: (line, event id) of the messages left without an answer at the timeout.
    missing: list[tuple[int, str]] = field(default_factory=list)

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    @property
    def exit_code(self) -> int:
        """0 when every valid line was published (and answered, when waiting), else 1."""
        return 1 if self.rejected or self.missing else 0


async def publish_lines(
    lines: Iterable[PreparedLine | RejectedLine],
    settings: Settings | None = None,
    *,
    wait: bool = True,
    answer_timeout: float = 60.0,
    from_beginning: bool = False,
    listener: AnswerListener | None = None,
    keep_answers: bool = True,
) -> PublishReport:
    """Publish prepared lines, report rejected ones, then (``wait``) collect answers.

    ``answer_timeout`` counts from the moment every line has been published.
    """
    listen: AnswerListener = listener or _Silent()
    report = PublishReport(waited=wait)
    line_of: dict[str, int] = {}
    async with DeclarationPublisher(
        settings, collect_answers=wait, from_beginning=from_beginning
    ) as publisher:

        def refused(failed: DeliveryFailed) -> None:
            for event_id, error in failed.failures:
                line = line_of.pop(event_id)
                report.sent -= 1
                rejection = RejectedLine(
                    line, f"the broker refused it: {describe_delivery_error(error)}"
                )
                report.rejected.append(rejection)
                listen.rejected(rejection)

        for item in lines:
            report.lines += 1
            if isinstance(item, RejectedLine):
                report.rejected.append(item)
                listen.rejected(item)
                continue
            if item.error is not None:
                report.rejected.append(RejectedLine(item.line, item.error))
                listen.rejected(report.rejected[-1])
            # Every line is tracked (for broker refusals); only answerable ones are awaited.
            line_of[item.event_id] = item.line
            report.sent += 1
            try:
                await publisher.send_prepared(item)
            except DeliveryFailed as failed:
                refused(failed)
            if report.sent % 1000 == 0:
                listen.sent(report.sent)
        try:
            await publisher.flush()
        except DeliveryFailed as failed:
            refused(failed)
        listen.sent(report.sent)
        if not wait:
            return report
        awaited = {e: n for e, n in line_of.items() if publisher.expects_answer(e)}
        listen.waiting(len(awaited))

        def on_answer(answer: DimonaAnswer) -> None:
            line = awaited[answer.in_reply_to]
            report.statuses[answer.status] += 1
            if keep_answers:
                report.answers[answer.in_reply_to] = (line, answer)
            listen.answered(line, answer)

        found = await publisher.answers(awaited, answer_timeout, on_answer=on_answer)
    line_of = awaited
    report.missing = sorted(
        (line, event_id) for event_id, line in line_of.items() if event_id not in found
    )
    return report


def _file_lines(path: Path | str) -> Iterator[str]:
    if str(path) == "-":
        yield from sys.stdin
        return
    with Path(path).open(encoding="utf-8") as text:
        yield from text


def publish_file(
    path: Path | str,
    settings: Settings | None = None,
    *,
    wait: bool = True,
    timeout: float = 60.0,
    timestamp_ms: int | None = None,
    send_invalid: bool = False,
    from_beginning: bool = False,
    listener: AnswerListener | None = None,
    keep_answers: bool = True,
) -> PublishReport:
    """Publish a JSON Lines file (``-``: standard input) and collect the answers.

    The synchronous form of :func:`read_lines` + :func:`publish_lines`, for scripts and
    the command line. Lines refused locally are reported (and, with ``send_invalid``,
    published all the same so that the service refuses them itself).
    """
    prepared = read_lines(_file_lines(path), timestamp_ms=timestamp_ms, send_invalid=send_invalid)
    return asyncio.run(
        publish_lines(
            prepared,
            settings,
            wait=wait,
            answer_timeout=timeout,
            from_beginning=from_beginning,
            listener=listener,
            keep_answers=keep_answers,
        )
    )
