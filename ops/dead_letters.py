"""Dead-letter tools: list, show, replay and export what ``declarations.rejected`` holds.

Who uses it: operators, through ``studentwork dead-letters ...`` (:mod:`ops.cli`).

The dead-letter topic is the record of every refusal (90 days retention); the raw bytes
are in the letter (``rawBase64``) or, when too large, in PostgreSQL
(``dead_letter_payloads``, or the ``outbox`` row the broker refused), so every tool reads
Kafka first and PostgreSQL for the bytes it references. A letter is named by its
``eventId``.

**Replay** republishes the original record, once its cause is fixed (a contract or a
setting changed, a bug fixed), to its original topic with its original key, headers and
timestamp (on a ``LogAppendTime`` topic the broker stamps it anew, as it did the
original). Idempotency is the worker's: a replayed record that was already applied is
recognised by its idempotency key (header, ``eventId`` or the digest of its bytes) and
has no effect; refused again, it gets a new dead letter (it is a new record, at a new
offset). An outbox row the broker refused (``rawRef`` ``outbox:<id>``) is replayed by
queueing that row again (``failed_at`` cleared) for the relay.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from pydantic import ValidationError

from db import store
from schemas.answers import DeadLetter
from schemas.settings import Settings
from schemas.topics import REJECTED
from streams.admin import read_to_end
from streams.messages import PAYLOAD_REF_PREFIX

#: ``rawRef`` prefix of an outbox row the broker refused.
OUTBOX_REF_PREFIX = "outbox:"


@dataclass(frozen=True)
class StoredLetter:
    """A dead letter with where it sits on the dead-letter topic."""

    letter: DeadLetter
    partition: int
    offset: int

    @property
    def code(self) -> str:
        """The reason class: the refusal code that starts the reason."""
        head = self.letter.reason.split(":", 1)[0].strip()
        return head if head.isupper() and " " not in head else "OTHER"

    @property
    def origin(self) -> str:
        where = self.letter.topic
        if self.letter.partition is not None:
            where += f"[{self.letter.partition}]@{self.letter.offset}"
        return where


class DeadLetterError(Exception):
    """A dead letter that is not there, or cannot be replayed (the reason is the text)."""


async def read_letters(settings: Settings, *, wait: float = 60.0) -> list[StoredLetter]:
    """Every dead letter on the topic, up to its end offsets as they are now, oldest
    first. A message that is not a dead letter is skipped (nothing else writes there)."""
    try:
        records = await read_to_end(settings.kafka_bootstrap, settings.topic(REJECTED), wait=wait)
    except TimeoutError as error:
        raise DeadLetterError(str(error)) from error
    out: list[StoredLetter] = []
    for record in records:
        try:
            letter = DeadLetter.model_validate_json(record.value or b"")
        except ValidationError:
            continue
        out.append(StoredLetter(letter, record.partition, record.offset))
    out.sort(key=lambda s: (s.letter.rejected_at, s.partition, s.offset))
    return out


def select(
    letters: Iterable[StoredLetter], *, since: datetime | None = None, reason: str | None = None
) -> list[StoredLetter]:
    """The letters rejected at or after ``since`` whose reason class is ``reason``."""
    wanted = reason.upper() if reason else None
    return [
        s
        for s in letters
        if (since is None or s.letter.rejected_at >= since) and (wanted is None or s.code == wanted)
    ]


def find(letters: Iterable[StoredLetter], event_id: str) -> StoredLetter:
    for stored in letters:
        if stored.letter.event_id == event_id:
            return stored
    raise DeadLetterError(f"no dead letter {event_id!r} on the dead-letter topic")


async def raw_bytes(conn: asyncpg.Connection, letter: DeadLetter) -> bytes:
    """The original record's value, from the letter or from where it references it."""
    if letter.raw_base64 is not None:
        return base64.b64decode(letter.raw_base64)
    ref = letter.raw_ref or ""
    if ref.startswith(PAYLOAD_REF_PREFIX):
        payload = await store.dead_letter_payload(conn, ref.removeprefix(PAYLOAD_REF_PREFIX))
        if payload is None:
            raise DeadLetterError(f"{letter.event_id}: {ref} is no longer in PostgreSQL")
        return payload.raw
    if ref.startswith(OUTBOX_REF_PREFIX):
        value = await conn.fetchval(
            "SELECT value FROM outbox WHERE id = $1", int(ref.removeprefix(OUTBOX_REF_PREFIX))
        )
        if value is None:
            raise DeadLetterError(f"{letter.event_id}: {ref} is no longer in the outbox")
        return bytes(value)
    raise DeadLetterError(f"{letter.event_id}: unknown raw reference {ref!r}")


def decoded(raw: bytes) -> Any:
    """The raw bytes as an operator reads them: JSON, else text, else base64."""
    try:
        return json.loads(raw)
    except ValueError:
        pass
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(raw).decode()}


def text_or_base64(raw: bytes) -> Any:
    """A key or header value: its text when it is UTF-8, else its base64."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(raw).decode()}


def summary(stored: StoredLetter) -> dict[str, Any]:
    """One line of ``list`` (and of ``export`` without the bytes)."""
    return {
        "eventId": stored.letter.event_id,
        "rejectedAt": stored.letter.rejected_at.isoformat(),
        "reasonCode": stored.code,
        "origin": stored.origin,
        "deadLetter": f"{REJECTED}[{stored.partition}]@{stored.offset}",
    }


async def details(settings: Settings, stored: StoredLetter) -> dict[str, Any]:
    """Everything of one letter, the raw bytes decoded where possible (``show``)."""
    letter = stored.letter
    conn = await asyncpg.connect(settings.database_url)
    try:
        try:
            raw: Any = decoded(await raw_bytes(conn, letter))
        except DeadLetterError as error:
            raw = {"unavailable": str(error)}
    finally:
        await conn.close()
    key = base64.b64decode(letter.key_base64) if letter.key_base64 is not None else None
    return {
        **summary(stored),
        "reason": letter.reason,
        "topic": letter.topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "timestamp": letter.timestamp.isoformat() if letter.timestamp else None,
        "key": text_or_base64(key) if key is not None else None,
        "headers": {
            h.key: text_or_base64(base64.b64decode(h.value_base64)) for h in letter.headers or []
        },
        "rawSize": letter.raw_size,
        "rawSha256": letter.raw_sha256,
        "raw": raw,
    }


async def export(settings: Settings, letters: Iterable[StoredLetter]) -> list[dict[str, Any]]:
    """Each letter as one JSON object (``export`` writes them as JSON Lines): the letter
    as published, where it sits, and its raw bytes in base64 also when kept aside."""
    out = []
    conn = await asyncpg.connect(settings.database_url)
    try:
        for stored in letters:
            document = stored.letter.model_dump(mode="json", by_alias=True, exclude_none=True)
            try:
                raw = await raw_bytes(conn, stored.letter)
                document["rawBase64"] = base64.b64encode(raw).decode()
            except DeadLetterError as error:
                document["rawUnavailable"] = str(error)
            out.append({**summary(stored), "letter": document})
    finally:
        await conn.close()
    return out


async def replay(settings: Settings, letters: Iterable[StoredLetter]) -> list[str]:
    """Republish each letter's original record; return one line per letter saying where."""
    done: list[str] = []
    conn = await asyncpg.connect(settings.database_url)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=True, acks="all"
    )
    await producer.start()
    try:
        for stored in letters:
            letter = stored.letter
            ref = letter.raw_ref or ""
            if ref.startswith(OUTBOX_REF_PREFIX):
                row = int(ref.removeprefix(OUTBOX_REF_PREFIX))
                status = await conn.execute(
                    "UPDATE outbox SET failed_at = NULL, failure = NULL"
                    " WHERE id = $1 AND failed_at IS NOT NULL",
                    row,
                )
                if status != "UPDATE 1":
                    raise DeadLetterError(f"{letter.event_id}: outbox row {row} is not failed")
                done.append(f"{letter.event_id}: outbox row {row} queued again for the relay")
                continue
            if letter.partition is None:
                raise DeadLetterError(f"{letter.event_id}: no original record to replay")
            value = await raw_bytes(conn, letter)
            key = base64.b64decode(letter.key_base64) if letter.key_base64 is not None else None
            headers = [(h.key, base64.b64decode(h.value_base64)) for h in letter.headers or []]
            timestamp = (
                int(letter.timestamp.timestamp() * 1000) if letter.timestamp is not None else None
            )
            sent = await producer.send_and_wait(
                letter.topic, value, key=key, headers=headers or None, timestamp_ms=timestamp
            )
            done.append(
                f"{letter.event_id}: replayed {stored.origin} as "
                f"{sent.topic}[{sent.partition}]@{sent.offset}"
            )
    finally:
        await producer.stop()
        await conn.close()
    return done
