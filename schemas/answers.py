"""Output contracts: answers to employers, balance events, dead letters, quota changes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, Field

from schemas._base import Contract

AnswerStatus = Literal["A", "W", "B", "S"]
AnswerAction = Literal["in", "update", "cancel", "dmfa", "unknown"]


class AnswerAnomaly(Contract):
    code: str
    text: str
    hours: int | None = None


class DimonaAnswer(Contract):
    """The answer to one declaration on ``dimona.acks`` (key: the employer id).

    ``A`` accepted, ``W`` accepted with warnings, ``B`` refused (blocking anomalies),
    ``S`` waiting for identification of the worker (not produced: this system has no
    national register to wait for).
    """

    event_id: str = Field(description="Id of this answer (derived from inReplyTo).")
    in_reply_to: str = Field(description="Event id of the declaration answered.")
    action: AnswerAction
    status: AnswerStatus
    employer: str | None = None
    ssin: str | None = None
    period_id: str | None = None
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


class BalanceEvent(Contract):
    """A student's balance for a year on ``student.balances`` (compacted; key SSIN:year)."""

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
    terms: list[BalanceTermOut]
    computed_at: AwareDatetime


class DeadLetter(Contract):
    """A message that could not be processed, kept whole on ``declarations.rejected``."""

    event_id: str
    topic: str
    partition: int
    offset: int
    timestamp: datetime | None = None
    key_base64: str | None = None
    raw_base64: str
    reason: str
    rejected_at: AwareDatetime


class QuotaChange(Contract):
    """A change of a year's quota on ``quota.changes`` (key: the year)."""

    event_id: str = Field(min_length=1, max_length=128)
    year: int = Field(ge=2000, le=2100)
    hours: int = Field(ge=0, le=10_000)
    requested_at: AwareDatetime
    requested_by: str = "operator"
