"""Which years a student may get an attestation for (DOMAIN.md section 5)."""

from __future__ import annotations

from datetime import date


def attestation_years(today: date) -> tuple[int, ...]:
    """The years a student may get an attestation for on ``today`` (Brussels date).

    The current year always; the next one only from 1 December (DOMAIN.md section 5): a
    2027 attestation from 1 December 2026 on.
    """
    if today.month == 12:
        return (today.year, today.year + 1)
    return (today.year,)


def year_refusal(year: int, today: date) -> str | None:
    """Why an attestation for ``year`` cannot be issued on ``today``, or None if it can."""
    if year in attestation_years(today):
        return None
    if year == today.year + 1:
        return (
            f"an attestation for {year} can be requested from 1 December {today.year}; "
            f"until then only {today.year} can be attested"
        )
    allowed = " or ".join(str(y) for y in attestation_years(today))
    return f"attestations exist for the current year only ({allowed} today), not {year}"
