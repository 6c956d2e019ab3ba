"""Output contracts: answers to employers, balance events, dead letters, quota changes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Self

from pydantic import AwareDatetime, Field, model_validator

from quota.ledger import AnomalyCode
from schemas._base import Contract, PeriodId
from schemas.i18n import anomaly_description

AnswerStatus = Literal["A", "W", "B", "S"]
AnswerAction = Literal["in", "update", "cancel", "dmfa", "unknown"]


class AnswerAnomaly(Contract):
    """One anomaly of an answer: its code, what happened (``text``), what the code means.

    ``descriptionFr`` / ``descriptionNl`` are the code's meaning in the two languages the
    Dimona REST answer carries, from the message catalogue (:mod:`schemas.i18n`, where
    German and English are too); ``text`` stays the English sentence about this message.
    """

    code: str
    text: str
    hours: int | None = None
    description_fr: str | None = None
    description_nl: str | None = None

    @classmethod
    def of(cls, code: AnomalyCode, text: str, hours: int | None = None) -> Self:
        """The anomaly with the code's descriptions filled in from the catalogue."""
        return cls(
            code=code.value,
            text=text,
            hours=hours,
            description_fr=anomaly_description(code, "fr"),
            description_nl=anomaly_description(code, "nl"),
        )


class AnsweredRecord(Contract):
    """The record an answer answers, as the producer's delivery report named it."""

    topic: str
    partition: int
    offset: int


class DimonaAnswer(Contract):
    """The answer to one declaration on ``dimona.acks`` (key: the employer id).

    ``A`` accepted, ``W`` accepted with warnings, ``B`` refused (blocking anomalies),
    ``S`` waiting for identification of the worker (not produced: this system has no
    national register to wait for).
    """

    event_id: str = Field(description="Id of this answer (derived from inReplyTo).")
    in_reply_to: str = Field(
        description="Event id of the declaration answered (given, or derived from its bytes)."
    )
    record: AnsweredRecord | None = Field(
        default=None, description="Topic, partition and offset of the record answered."
    )
    action: AnswerAction
    status: AnswerStatus
    employer: str | None = None
    ssin: str | None = None
    period_id: PeriodId | None = Field(
        default=None, description="A number for every period declared since migration 0006."
    )
    anomalies: list[AnswerAnomaly] = Field(default_factory=list)
    reduced_hours: int = 0
    ordinary_hours: int = 0
    answered_at: AwareDatetime


class BalanceTermOut(Contract):
    employer: str
    quarter: int
    source: Literal["planned", "dmfa"]
    hours: int
    planned_hours: int
    late_hours: int
    dmfa_hours: int | None = None
    gross_wage_cents: int | None = None
    neutralised_hours: int
    reduced_hours: int
    ordinary_hours: int
    period_ids: list[str]
    late_deducted_hours: int = Field(
        0,
        description="Hours of late declarations taken out of the DmfA hours (outside the "
        "quota); 0 without a DmfA or when STUDENTWORK_DMFA_COUNTS_LATE_HOURS is set.",
    )


class BalanceEvent(Contract):
    """A student's balance for a year on ``student.balances`` (compacted; key SSIN:year).

    What the student's own applications may read: the figures of the year, never who
    employed the student nor what was paid (no employers, no wages, no terms). The
    record with every term is :class:`LedgerEvent` on the internal ``student.ledger``.
    """

    event_id: str
    ssin: str
    year: int
    quota: int
    used: int
    remaining: int
    reduced_hours: int
    ordinary_hours: int
    neutralised_hours: int
    late_hours: int
    computed_at: AwareDatetime


class LedgerEvent(BalanceEvent):
    """The internal record of a student's year on ``student.ledger`` (compacted; key
    SSIN:year): the balance with every term of its computation, per employer and
    quarter, gross wages included. Read by the service's own components only."""

    terms: list[BalanceTermOut]


class RecordHeader(Contract):
    """One Kafka header of a record, as it was consumed (kept so a replay can resend it)."""

    key: str
    value_base64: str


class DeadLetter(Contract):
    """A message that could not be processed or published, on ``declarations.rejected``.

    The raw bytes travel inline (``rawBase64``) when they are small enough
    (``STUDENTWORK_DEAD_LETTER_INLINE_BYTES``); larger ones stay in PostgreSQL and the
    letter carries ``rawRef`` (``<table>:<key>``: ``dead_letter_payloads:<eventId>`` for a
    rejected input, ``outbox:<id>`` for an outbox row the broker refused), ``rawSize`` and
    ``rawSha256`` instead, so that a dead letter always fits the broker's message limit.
    ``partition`` and ``offset`` say where a rejected input was consumed; they are absent
    for an outbox row, which never reached a partition.
    """

    event_id: str
    topic: str
    partition: int | None = None
    offset: int | None = None
    timestamp: datetime | None = None
    key_base64: str | None = None
    raw_base64: str | None = None
    raw_ref: str | None = None
    raw_sha256: str | None = Field(None, pattern="^[0-9a-f]{64}$")
    raw_size: int | None = Field(None, ge=0)
    reason: str
    rejected_at: AwareDatetime
    headers: list[RecordHeader] | None = Field(
        None,
        description="The record's Kafka headers (absent when it had none): "
        "`studentwork dead-letters replay` resends them, an idempotency-key header included.",
    )

    @model_validator(mode="after")
    def _raw_inline_or_referenced(self) -> Self:
        if (self.raw_base64 is None) == (self.raw_ref is None):
            raise ValueError("give exactly one of rawBase64 or rawRef")
        if self.raw_ref is not None and (self.raw_sha256 is None or self.raw_size is None):
            raise ValueError("rawRef needs rawSha256 and rawSize")
        return self


class QuotaChange(Contract):
    """A change of a year's quota on ``quota.changes`` (key: the year)."""

    event_id: str = Field(min_length=1, max_length=128)
    year: int = Field(ge=2000, le=2100)
    hours: int = Field(ge=0, le=10_000)
    requested_at: AwareDatetime
    requested_by: str = "operator"


class QuotaRecompute(Contract):
    """Recompute a share of a year's balances (``quota.recompute``, key: the partition).

    The quota lane writes one per partition when it applies a :class:`QuotaChange`, in
    the change's own transaction, so the workers holding those partitions recompute the
    year between them. The share is the students whose key hash falls on ``partition``
    of ``partitions`` (the partition their declarations go to); the quota is read from
    the database, not from the command, so a command redelivered after a later change
    recomputes with the quota then in force.
    """

    event_id: str = Field(min_length=1, max_length=160)
    year: int = Field(ge=2000, le=2100)
    partition: int = Field(ge=0)
    partitions: int = Field(ge=1)
    requested_at: AwareDatetime

    @model_validator(mode="after")
    def _partition_in_range(self) -> QuotaRecompute:
        if self.partition >= self.partitions:
            raise ValueError(f"partition {self.partition} is not one of {self.partitions}")
        return self
