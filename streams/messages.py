"""Translation between the wire contracts and the domain core."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from db.store import DeadLetterPayload
from quota import (
    AnomalyCode,
    Balance,
    CancelPeriod,
    Command,
    Decision,
    DeclarePeriod,
    ReportWages,
    UpdatePeriod,
    period_id_for,
)
from schemas._base import EmployerRef
from schemas.answers import (
    AnswerAction,
    AnswerAnomaly,
    AnsweredRecord,
    DeadLetter,
    DimonaAnswer,
    RecordHeader,
)
from schemas.declarations import DimonaDeclaration, DmfaDeclaration

IdempotencyKind = Literal["dimona", "dmfa"]


def idempotency_key(kind: IdempotencyKind, declarant: str, event_id: str) -> str:
    """The key under which a sender's event id is applied once.

    Event ids are unique per declarant and kind, not globally: employer B may use the
    ``"42"`` employer A used, and a DmfA may reuse a Dimona's id. Every key a sender's id
    produces starts with its kind, so none can collide with the ids the system makes
    itself (dead letters, quota changes, rotations).
    """
    return f"{kind}:{declarant}:{event_id}"


def declared_period_id(declarant: str, event_id: str) -> str:
    """The id of the period a ``dimonaIn`` creates, which its sender can compute itself:
    12 digits from the SHA-256 of ``"dimona:<declarant>:<eventId>"``
    (:func:`quota.period_id_for`). In the rare case that the number is taken, the worker
    gives the next candidate, and the answer names it."""
    return period_id_for(idempotency_key("dimona", declarant, event_id))


def body_digest(raw: bytes) -> bytes:
    """SHA-256 of a message's content, to tell a replay from a reused event id.

    The digest is over the canonical JSON (keys sorted, no whitespace, ASCII escapes) of
    the message without ``submittedAt``: a payroll package that resends a declaration
    re-serialised, or stamped again, is replaying it, not sending another one.
    """
    return hashlib.sha256(_fast_canonical(raw) or _canonical(raw)).digest()


def _canonical(raw: bytes) -> bytes:
    """The canonical JSON :func:`body_digest` hashes, by the standard library: the
    definition, for every message."""
    data = json.loads(raw)
    if isinstance(data, dict):
        data.pop("submittedAt", None)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return canonical.encode()


def _fast_canonical(raw: bytes) -> bytes | None:
    """:func:`_canonical` by orjson where orjson writes the same bytes, else None.

    A quarter of parsing a record was the standard library reading and writing it again
    (py-spy). orjson sorts keys and separates as compactly, but differs in three things,
    each seen in its output: it writes non-ASCII characters and DEL unescaped, it writes
    some floats in another form (``0.00001``, ``1.5e-7`` for ``1e-05``, ``1.5e-07``), and
    it reads integers beyond 64 bits as floats. So a result with a byte outside printable
    ASCII, or with any number that is not a plain integer, is left to the standard
    library, as is a message orjson will not read (a BOM, NaN, a lone surrogate) or
    write (nested too deep).
    Stored digests tell replays from reused ids, so the bytes must never change.
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    data.pop("submittedAt", None)
    try:
        canonical = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # nested deeper than orjson writes
        return None
    if not canonical.isascii() or b"\x7f" in canonical or _NOT_AN_INTEGER.search(canonical):
        return None
    return canonical


#: A number with a fraction or an exponent where a value starts in compact JSON (after
#: ``:``, ``,`` or ``[``); the same inside a string only sends it the slower way.
_NOT_AN_INTEGER = re.compile(rb"[:,\[]-?[0-9]+[.eE]")


#: Kafka headers that name a record's idempotency key, in order of precedence.
EVENT_ID_HEADERS = ("idempotency-key", "eventid")


def derived_event_id(raw: bytes) -> str:
    """The event id of a message that names none: ``sha256:`` and the hex SHA-256 of the
    record's value, exactly as sent. A publisher can compute it; the same body sent twice
    by the same declarant is one declaration, two different bodies are two."""
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def header_event_id(headers: Sequence[tuple[str, bytes]]) -> str | None:
    """The event id a Kafka header gives (``idempotency-key`` or ``eventId``), if usable."""
    found = {name.lower(): value for name, value in headers}
    for name in EVENT_ID_HEADERS:
        value = found.get(name)
        if value is None:
            continue
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError:
            return None
        return _printable_id(text)
    return None


def _sender_id(given: str | None, event_id: str | None) -> str:
    chosen = event_id or given
    if chosen is None:
        raise ValueError("the message has no event id: derive one with derived_event_id")
    return chosen


def dimona_command(
    msg: DimonaDeclaration, received_at: datetime, event_id: str | None = None
) -> Command:
    """The domain command of a Dimona message; ``event_id`` overrides the body's."""
    employer = msg.employer.employer_id if msg.employer is not None else None
    key = idempotency_key("dimona", msg.declarant_id, _sender_id(msg.event_id, event_id))
    if msg.dimona_in is not None:
        body = msg.dimona_in
        using = body.using_employer.enterprise_number if body.using_employer else None
        assert employer is not None  # the contract requires it of a dimonaIn
        return DeclarePeriod(
            event_id=key,
            employer=employer,
            declarant=msg.declarant_id,
            start=body.starting_date,
            end=body.end,
            planned_hours=body.planned_hours_number,
            received_at=received_at,
            worker_type=body.dimona_features.worker_type,
            joint_commission=body.dimona_features.joint_commission_number,
            using_employer=using,
        )
    if msg.dimona_update is not None:
        update = msg.dimona_update
        return UpdatePeriod(
            event_id=key,
            employer=employer,
            period_id=update.period_id,
            end=update.end,
            planned_hours=update.planned_hours_number,
            received_at=received_at,
            start=update.starting_date,
        )
    assert msg.dimona_cancel is not None
    return CancelPeriod(key, employer, msg.dimona_cancel.period_id, received_at)


def dmfa_command(
    msg: DmfaDeclaration, received_at: datetime, event_id: str | None = None
) -> ReportWages:
    """The domain command of a DmfA line; ``event_id`` overrides the body's."""
    return ReportWages(
        event_id=idempotency_key(
            "dmfa", msg.employer.employer_id, _sender_id(msg.event_id, event_id)
        ),
        employer=msg.employer.employer_id,
        year=msg.year,
        quarter=msg.quarter,
        hours_worked=msg.hours_worked,
        gross_wage_cents=msg.gross_wage_cents,
        received_at=received_at,
    )


def action_of(command: Command) -> AnswerAction:
    if isinstance(command, DeclarePeriod):
        return "in"
    if isinstance(command, UpdatePeriod):
        return "update"
    if isinstance(command, CancelPeriod):
        return "cancel"
    return "dmfa"


def answer_for(
    command: Command,
    ssin: str,
    decision: Decision,
    now: datetime,
    *,
    reply_to: str,
    record: AnsweredRecord | None = None,
    employer: str | None = None,
) -> DimonaAnswer:
    """The answer to an applied command; ``reply_to`` is the sender's own event id and
    ``employer`` the period's employer when the command named none."""
    return DimonaAnswer(
        event_id=f"ack:{command.event_id}",
        in_reply_to=reply_to,
        record=record,
        action=action_of(command),
        status=decision.status.value,
        employer=employer or command.employer,
        ssin=ssin,
        period_id=decision.period_id,
        anomalies=[AnswerAnomaly.of(a.code, a.text, a.hours) for a in decision.anomalies],
        reduced_hours=decision.reduced_hours,
        ordinary_hours=decision.ordinary_hours,
        answered_at=now,
    )


def balance_document(balance: Balance) -> dict[str, Any]:
    """The balance as stored and published (``BalanceEvent`` without its event fields).

    Built as plain JSON rather than through the pydantic models: it runs for every
    balance a batch touches, and the contract test checks that it validates.
    """
    terms = [
        {
            "employer": t.employer,
            "quarter": t.quarter,
            "source": t.source.value,
            "hours": t.hours,
            "plannedHours": t.planned_hours,
            "lateHours": t.late_hours,
            "dmfaHours": t.dmfa_hours,
            "grossWageCents": t.gross_wage_cents,
            "neutralisedHours": t.neutralised_hours,
            "reducedHours": t.reduced_hours,
            "ordinaryHours": t.ordinary_hours,
            "periodIds": [p.period_id for p in t.periods],
            "lateDeductedHours": t.late_deducted_hours,
        }
        for t in balance.terms
    ]
    return {
        "ssin": balance.ssin,
        "year": balance.year,
        "quota": balance.quota,
        "used": balance.used,
        "remaining": balance.remaining,
        "reducedHours": balance.reduced_hours,
        "ordinaryHours": balance.ordinary_hours,
        "neutralisedHours": balance.neutralised_hours,
        "lateHours": balance.late_hours,
        "terms": terms,
    }


#: The fields of a stored balance document that the public ``student.balances`` carries
#: (``BalanceEvent``): the figures of the year, no employers, no wages.
PUBLIC_BALANCE_FIELDS = (
    "ssin",
    "year",
    "quota",
    "used",
    "remaining",
    "reducedHours",
    "ordinaryHours",
    "neutralisedHours",
    "lateHours",
)


#: The keys of a balance document and of each of its terms, in the order
#: :func:`balance_document` writes them (a test holds the two together).
DOCUMENT_KEYS = (*PUBLIC_BALANCE_FIELDS, "terms")
TERM_KEYS = (
    "employer",
    "quarter",
    "source",
    "hours",
    "plannedHours",
    "lateHours",
    "dmfaHours",
    "grossWageCents",
    "neutralisedHours",
    "reducedHours",
    "ordinaryHours",
    "periodIds",
    "lateDeductedHours",
)


def _in_order(stored: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    ordered = {key: stored[key] for key in keys if key in stored}
    # A key this release does not write (a document of another one) keeps its place last.
    return ordered | stored if len(ordered) < len(stored) else ordered


def stored_balance_document(text: str) -> dict[str, Any]:
    """A balance document as PostgreSQL returns it, in the order of
    :func:`balance_document`: ``jsonb`` keeps no key order, and the events made of a
    stored document are then byte for byte those of the same balance computed anew."""
    stored = orjson.loads(text)
    document = _in_order(stored, DOCUMENT_KEYS)
    document["terms"] = [_in_order(term, TERM_KEYS) for term in stored["terms"]]
    return document


def _event_bytes(document: dict[str, Any], event_id: str, now: datetime) -> bytes:
    # orjson: two of these per changed balance, the standard encoder cost 5 % of a
    # worker's CPU (py-spy). Balance documents hold ASCII names and integers only.
    encoded = orjson.dumps(
        {"eventId": event_id, **document, "computedAt": now.isoformat().replace("+00:00", "Z")}
    )
    # Copied to its size: orjson's result keeps its 4 KiB buffer, and a batch holds
    # thousands of these until its transaction commits (tracemalloc: 39 MB at once).
    return bytes(memoryview(encoded))


def balance_event_bytes(document: dict[str, Any], version: int, now: datetime) -> bytes:
    """The public ``student.balances`` message for a stored balance document: only the
    figures the student's own applications may see (:data:`PUBLIC_BALANCE_FIELDS`)."""
    public = {name: document[name] for name in PUBLIC_BALANCE_FIELDS}
    return _event_bytes(public, f"balance:{document['ssin']}:{document['year']}:{version}", now)


def ledger_event_bytes(document: dict[str, Any], version: int, now: datetime) -> bytes:
    """The internal ``student.ledger`` message: the whole stored document, every term
    with its employer and gross wage."""
    return _event_bytes(document, f"ledger:{document['ssin']}:{document['year']}:{version}", now)


def printable(text: str, limit: int = 2000) -> str:
    """``text`` with anything unprintable (NUL, control characters, lone surrogates)
    replaced, cut to ``limit`` characters: safe in JSON, in PostgreSQL text and in logs."""
    return "".join(c if c.isprintable() else "\ufffd" for c in text[:limit])


def describe_validation_error(error: ValidationError) -> str:
    """One readable line per problem, naming the JSON path of each field."""
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "message"
        parts.append(f"{where}: {item['msg']}")
    return printable("; ".join(parts))


#: Refusal codes of the contract violations that have one of their own (pydantic error
#: types raised by the validators in :mod:`schemas._base`).
_CODE_OF_ERROR_TYPE = {
    "hours_not_integer": AnomalyCode.HOURS_NOT_INTEGER,
    "hours_out_of_range": AnomalyCode.HOURS_OUT_OF_RANGE,
    "date_out_of_range": AnomalyCode.DATE_OUT_OF_RANGE,
    "amount_not_integer": AnomalyCode.AMOUNT_OUT_OF_RANGE,
    "amount_out_of_range": AnomalyCode.AMOUNT_OUT_OF_RANGE,
    "invalid_text": AnomalyCode.INVALID_TEXT,
    "missing_end_date": AnomalyCode.MISSING_END_DATE,
}


def refusal_code(error: ValidationError) -> AnomalyCode:
    """The anomaly code of a refused message: the first problem that has its own code."""
    for item in error.errors(include_url=False):
        code = _CODE_OF_ERROR_TYPE.get(item["type"])
        if code is not None:
            return code
    return AnomalyCode.INVALID_MESSAGE


def _json_object(raw: bytes | None) -> dict[str, Any] | None:
    try:
        data = json.loads(raw or b"")
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _printable_id(value: object, limit: int = 128) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    return text if text and len(text) <= limit and text.isprintable() else None


def guess_employer(raw: bytes | None) -> str | None:
    """The employer of an invalid message, when one can be identified, to answer it.

    Read with the contract's own rules (:class:`schemas._base.EmployerRef`: an enterprise
    number, or an NSSO number also given as ``employerId``), so only a valid identifier is
    returned: an answer goes to that employer alone.
    """
    data = _json_object(raw)
    employer = data.get("employer") if data else None
    if not isinstance(employer, dict):
        return None
    try:
        return EmployerRef.model_validate(employer).employer_id
    except ValidationError:
        return None


def guess_action(raw: bytes | None) -> AnswerAction:
    """Which Dimona action an invalid message attempted, read from its shape."""
    data = _json_object(raw)
    if data is None:
        return "unknown"
    actions: tuple[tuple[str, AnswerAction], ...] = (
        ("dimonaIn", "in"),
        ("dimonaUpdate", "update"),
        ("dimonaCancel", "cancel"),
    )
    for key, action in actions:
        if key in data:
            return action
    return "unknown"


def guess_event_id(raw: bytes | None) -> str | None:
    """The sender's event id of an invalid message, if it is a usable one."""
    data = _json_object(raw)
    return _printable_id(data.get("eventId")) if data else None


def refusal_answer(
    *,
    answer_id: str,
    reply_to: str,
    employer: str,
    code: AnomalyCode,
    reason: str,
    action: AnswerAction,
    now: datetime,
    record: AnsweredRecord | None = None,
) -> DimonaAnswer:
    return DimonaAnswer(
        event_id=answer_id,
        in_reply_to=reply_to,
        record=record,
        action=action,
        status="B",
        employer=employer,
        anomalies=[AnswerAnomaly.of(code, printable(reason))],
        answered_at=now,
    )


#: How a dead letter names raw bytes kept in PostgreSQL: ``<table>:<key>``.
PAYLOAD_REF_PREFIX = "dead_letter_payloads:"


def dead_letter(
    *,
    event_id: str,
    topic: str,
    partition: int,
    offset: int,
    timestamp: datetime | None,
    key: bytes | None,
    raw: bytes | None,
    reason: str,
    now: datetime,
    inline_limit: int,
    headers: tuple[tuple[str, bytes], ...] = (),
) -> tuple[DeadLetter, DeadLetterPayload | None]:
    """The dead letter of a rejected record, and the raw bytes to keep aside, if any.

    Raw bytes up to ``inline_limit`` travel in the letter (base64). Larger ones would make
    the letter itself too large for the broker (base64 adds a third), so the letter then
    names them by reference with their size and SHA-256, and the caller stores the
    returned payload in the transaction that enqueues the letter.
    """
    body = raw or b""
    payload: DeadLetterPayload | None = None
    if len(body) > inline_limit:
        payload = DeadLetterPayload(event_id, body, hashlib.sha256(body).hexdigest(), len(body))
    letter = DeadLetter(
        event_id=event_id,
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp=timestamp,
        key_base64=base64.b64encode(key).decode() if key is not None else None,
        raw_base64=base64.b64encode(body).decode() if payload is None else None,
        raw_ref=PAYLOAD_REF_PREFIX + event_id if payload is not None else None,
        raw_sha256=payload.sha256 if payload is not None else None,
        raw_size=payload.size if payload is not None else None,
        reason=reason,
        rejected_at=now,
        headers=[
            RecordHeader(key=name, value_base64=base64.b64encode(value or b"").decode())
            for name, value in headers
        ]
        or None,
    )
    return letter, payload


def utc_from_millis(ms: int | float | None) -> datetime | None:
    """The moment of a record timestamp; None when absent or beyond what a date holds."""
    if ms is None or ms < 0:
        return None
    try:
        return datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None
