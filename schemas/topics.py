"""Every topic of the system, its contract and its configuration, in one place.

Topics are created by the project (``studentwork topics``, and at worker start) rather
than by whichever client touches them first, so partition counts, compaction and
retention are never accidents.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import BaseModel

from schemas.answers import (
    BalanceEvent,
    DeadLetter,
    DimonaAnswer,
    LedgerEvent,
    QuotaChange,
    QuotaRecompute,
)
from schemas.attestations import (
    AccessCodeRotation,
    AttestationIssued,
    AttestationRequest,
    EboxDelivery,
)
from schemas.consents import ConsentChange
from schemas.declarations import DimonaDeclaration, DmfaDeclaration

DIMONA = "dimona.declarations"
DMFA = "dmfa.declarations"
ACKS = "dimona.acks"
BALANCES = "student.balances"
LEDGER = "student.ledger"
REJECTED = "declarations.rejected"
QUOTA_CHANGES = "quota.changes"
QUOTA_RECOMPUTE = "quota.recompute"
ATTESTATION_REQUESTS = "attestation.requests"
ATTESTATIONS_ISSUED = "attestations.issued"
EBOX_DELIVERIES = "ebox.deliveries"
ACCESS_CODES_ROTATE = "access-codes.rotate"
CONSENTS = "consents"

#: The topics whose records are applied once by event id (table ``applied_events``): how
#: long they keep a record bounds how long an applied id must be remembered.
DEDUPLICATED = (
    DIMONA,
    DMFA,
    QUOTA_CHANGES,
    ATTESTATION_REQUESTS,
    ACCESS_CODES_ROTATE,
    CONSENTS,
    EBOX_DELIVERIES,
)

_DAY_MS = 24 * 3600 * 1000
_YEAR_MS = 365 * _DAY_MS


@dataclass(frozen=True)
class TopicSpec:
    name: str
    contract: type[BaseModel]
    key: str
    description: str
    #: Input topics get the configured timestamp type (lateness is judged on it).
    is_input: bool = False
    #: None: the configured partition count.
    partitions: int | None = None
    config: dict[str, str] = field(default_factory=dict)


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        DIMONA, DimonaDeclaration, "worker SSIN", "Dimona STU in/update/cancel", is_input=True
    ),
    TopicSpec(DMFA, DmfaDeclaration, "worker SSIN", "DmfA hours worked per quarter", is_input=True),
    TopicSpec(ACKS, DimonaAnswer, "employer id", "answers A/W/B to declarations"),
    TopicSpec(
        BALANCES,
        BalanceEvent,
        "SSIN:year",
        "latest balance per student and year: figures only, no employers, no wages",
        config={"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"},
    ),
    TopicSpec(
        LEDGER,
        LedgerEvent,
        "SSIN:year",
        "internal: the balance with every term (employers, gross wages)",
        config={"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"},
    ),
    TopicSpec(REJECTED, DeadLetter, "original key", "dead letters with raw bytes and reason"),
    TopicSpec(QUOTA_CHANGES, QuotaChange, "year", "quota of a year changed", partitions=1),
    TopicSpec(
        QUOTA_RECOMPUTE,
        QuotaRecompute,
        "partition number",
        "a year's balances to recompute after a quota change, one command per partition",
    ),
    TopicSpec(ATTESTATION_REQUESTS, AttestationRequest, "SSIN", "a student asks an attestation"),
    TopicSpec(ATTESTATIONS_ISSUED, AttestationIssued, "SSIN", "an attestation was issued"),
    TopicSpec(EBOX_DELIVERIES, EboxDelivery, "SSIN", "attestation PDFs for the student's eBox"),
    TopicSpec(
        ACCESS_CODES_ROTATE,
        AccessCodeRotation,
        "partition number",
        "monthly access-code rotation, one command per partition",
    ),
    TopicSpec(CONSENTS, ConsentChange, "SSIN", "student grants or revokes an agency"),
)


def topic_configs(
    spec: TopicSpec,
    *,
    timestamp_type: str,
    min_insync_replicas: int,
    dead_letter_retention_days: int,
) -> dict[str, str]:
    """The broker configuration of one topic under the given settings."""
    config = {"min.insync.replicas": str(min_insync_replicas), **spec.config}
    if spec.is_input:
        config["message.timestamp.type"] = timestamp_type
        if timestamp_type == "CreateTime":
            # Replayed records carry their historical submission time; time-based
            # retention (and segment rolling) would delete them before they are read.
            config["retention.ms"] = "-1"
            config["segment.ms"] = str(_YEAR_MS * 100)
    if spec.name == REJECTED:
        config["retention.ms"] = str(dead_letter_retention_days * _DAY_MS)
    return config


def declarant_answer_topic(declarant: str) -> str:
    """The topic a declarant that consumes Kafka itself reads its answers from (the
    ``declarant_answer_topics`` setting): ``dimona.acks.<declarant>``, same key and body
    as ``dimona.acks``, readable by that declarant alone."""
    return f"{ACKS}.{declarant}"


def topic_specs(declarants: Iterable[str] = ()) -> tuple[TopicSpec, ...]:
    """Every topic of the system: :data:`TOPICS` and the answer topic of each of
    ``declarants`` (the ``declarant_answer_topics`` setting)."""
    return TOPICS + tuple(
        TopicSpec(
            declarant_answer_topic(declarant),
            DimonaAnswer,
            "employer id",
            f"answers to declarations of {declarant}, for that declarant only",
        )
        for declarant in sorted(set(declarants))
    )
