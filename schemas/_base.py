"""Shared pieces of every contract: camelCase JSON and the party identifiers."""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel

from schemas.identifiers import EnterpriseNumber, NssoNumber, Ssin


class Contract(BaseModel):
    """Base of every message: camelCase on the wire, snake_case in Python, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        # Payroll software sends more of the Dimona REST shape than the quota needs.
        extra="ignore",
    )

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()

    @classmethod
    def from_json_bytes(cls, raw: bytes) -> Self:
        return cls.model_validate_json(raw)


class EmployerRef(Contract):
    """An employer as Dimona names it: enterprise number or NSSO registration number."""

    enterprise_number: EnterpriseNumber | None = None
    nsso_registration_number: NssoNumber | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.enterprise_number is None) == (self.nsso_registration_number is None):
            raise ValueError("give exactly one of enterpriseNumber or nssoRegistrationNumber")
        return self

    @property
    def employer_id(self) -> str:
        """The one string that identifies the employer everywhere in the system.

        Enterprise numbers are ten digits; NSSO numbers are prefixed so the two
        numbering schemes can never collide.
        """
        if self.enterprise_number is not None:
            return self.enterprise_number
        return f"NSSO{self.nsso_registration_number}"


class Worker(Contract):
    ssin: Ssin


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)
