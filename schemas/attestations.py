"""Contracts of attestations, access-code rotation and eBox delivery."""

from __future__ import annotations

from datetime import date

from pydantic import AwareDatetime, Field

from schemas._base import Contract
from schemas.i18n import Language
from schemas.identifiers import Ssin


class AttestationRequest(Contract):
    """A student asks for an attestation (``attestation.requests``, key: SSIN)."""

    event_id: str = Field(min_length=1, max_length=128)
    attestation_id: str = Field(min_length=1, max_length=64)
    ssin: Ssin
    year: int = Field(ge=2000, le=2100)
    requested_at: AwareDatetime
    language: Language | None = Field(
        None,
        description=(
            "Language of the document (the page's language when asked from a page); "
            "absent: the service's default_language."
        ),
    )


class AttestationIssued(Contract):
    """An attestation was rendered and stored (``attestations.issued``, key: SSIN)."""

    event_id: str
    attestation_id: str
    ssin: str
    year: int
    remaining_hours: int
    quota: int
    access_code_valid_from: date
    access_code_valid_until: date
    issued_at: AwareDatetime
    sha256: str = Field(description="Hex digest of the PDF bytes.")


class EboxDelivery(Contract):
    """An attestation to put in the student's eBox (``ebox.deliveries``, key: SSIN).

    Carries the document itself: the eBox is another system and must not need ours.
    """

    event_id: str
    attestation_id: str
    ssin: str
    year: int
    title: str
    file_name: str
    content_type: str = "application/pdf"
    pdf_base64: str
    issued_at: AwareDatetime


class AccessCodeRotation(Contract):
    """Rotate the access codes of every student for a month (``access-codes.rotate``).

    Published by the monthly scheduler once per partition (key: the partition number
    as text), so the worker owning each partition rotates its own students in bulk.
    """

    event_id: str
    month: date = Field(description="First day of the month the new codes belong to.")
    partition: int = Field(ge=0)
    partitions: int = Field(ge=1)
    requested_at: AwareDatetime
