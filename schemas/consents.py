"""Contract of a student's consent to a temp agency (``consents``, key: SSIN)."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

from schemas._base import Contract
from schemas.identifiers import EnterpriseNumber, Ssin


class ConsentChange(Contract):
    """A student grants or revokes an agency's right to read their remaining hours."""

    event_id: str = Field(min_length=1, max_length=128)
    ssin: Ssin
    agency: EnterpriseNumber
    action: Literal["grant", "revoke"]
    changed_at: AwareDatetime
