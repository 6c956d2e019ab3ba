"""The employer of a message: enterprise number, NSSO number (either name), or both."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from schemas._base import EmployerRef


@pytest.mark.parametrize(
    "given",
    [
        {"nssoRegistrationNumber": "0197412345"},
        {"nssoRegistrationNumber": "197-4123-45"},
        {"employerId": 197412345},
        {"employerId": "0197412345"},
        {"nssoRegistrationNumber": "0197412345", "employerId": 197412345},
    ],
)
def test_an_nsso_number_is_one_identity_with_or_without_leading_zeros(
    given: dict[str, Any],
) -> None:
    employer = EmployerRef.model_validate(given)
    assert (employer.employer_id, employer.nsso_id, employer.identities) == (
        "NSSO197412345",
        "NSSO197412345",
        None,
    )


def test_a_message_naming_both_numbers_pairs_them() -> None:
    employer = EmployerRef.model_validate(
        {"enterpriseNumber": "0123.456.749", "employerId": 197412345}
    )
    assert employer.employer_id == "0123456749"
    assert employer.identities == ("NSSO197412345", "0123456749")


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ({}, "give enterpriseNumber, nssoRegistrationNumber (or employerId), or both"),
        (
            {"nssoRegistrationNumber": "197412345", "employerId": 197412346},
            "nssoRegistrationNumber and employerId both name the NSSO number and must be the "
            "same number",
        ),
        ({"employerId": 0}, "NSSO number cannot be zero"),
    ],
)
def test_an_employer_without_one_clear_identity_is_refused(
    given: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(reason)):
        EmployerRef.model_validate(given)
