"""Belgian identifiers used by Student@work: SSIN, enterprise number and NSSO number.

Students are identified by their social security identification number (SSIN, in Dutch INSZ,
in French NISS), which is either a National Register number or, for people who are not in
the National Register, a BIS number issued by the Crossroads Bank for Social Security.
Employers are identified by their enterprise number (KBO/BCE) or, alternatively, by their
NSSO (RSZ/ONSS) registration number.

Every function here is pure: it only looks at its arguments. Where the answer depends on the
current date (an SSIN's century), the date is a parameter; ``date.today()`` is only used as
the default when the caller passes nothing.

The normalized form of every identifier is its bare ASCII digits, which is what the rest of the
service stores and compares. The ``Ssin``, ``EnterpriseNumber`` and ``NssoNumber`` annotated
types bring the same validation and normalization to pydantic models.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Literal

from pydantic import AfterValidator, WithJsonSchema

__all__ = [
    "EnterpriseNumber",
    "NssoNumber",
    "Ssin",
    "format_enterprise_number",
    "is_bis_number",
    "is_valid_enterprise_number",
    "is_valid_ssin",
    "normalize_enterprise_number",
    "normalize_nsso_number",
    "normalize_ssin",
    "nsso_employer_id",
    "ssin_birth_date",
    "ssin_sex",
]

# Adding this to the first nine digits gives the check base of people born in 2000 or later,
# which is the same as prefixing the number with a "2".
_Y2K_CHECK_OFFSET = 2_000_000_000

# BIS numbers add 20 to the month when the sex was unknown at issue and 40 when it was known.
_BIS_SEX_UNKNOWN_OFFSET = 20
_BIS_SEX_KNOWN_OFFSET = 40


def _strip_separators(s: str, separators: str) -> str:
    """Remove the separators people type between digit groups, plus any whitespace."""
    if _is_ascii_digits(s):
        # The form machines send: nothing to remove (every declaration's SSIN and
        # enterprise number pass here, py-spy showed the character loop).
        return s
    return "".join(ch for ch in s if ch not in separators and not ch.isspace())


def _is_ascii_digits(s: str) -> bool:
    # str.isdigit() alone also accepts other scripts' digits and superscripts, which int()
    # would then happily turn into a different number than the one stored; among ASCII
    # characters it accepts 0-9 only.
    return s.isascii() and s.isdigit()


def _mod97_check(base: int) -> int:
    """The check number Belgian identifiers use: 97 minus the remainder, so never 0."""
    return 97 - base % 97


# --------------------------------------------------------------------------------------------
# SSIN (INSZ / NISS)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _SsinParts:
    """What a validated SSIN encodes; ``None`` stands for "not known when it was issued"."""

    digits: str
    birth_year: int
    birth_month: int | None
    birth_day: int | None
    bis: bool
    sex: Literal["M", "F"] | None


def _parse_ssin(s: str, today: date | None) -> _SsinParts:
    """Validate an SSIN and decode it, raising ``ValueError`` with the first reason it fails."""
    digits = _strip_separators(s, ".-")
    if not digits:
        raise ValueError("SSIN is empty")
    if not _is_ascii_digits(digits):
        raise ValueError(
            "SSIN must contain only digits (dots, dashes and spaces between groups are allowed)"
        )
    if len(digits) != 11:
        raise ValueError(f"SSIN must have 11 digits, got {len(digits)}")

    yy = int(digits[0:2])
    raw_month = int(digits[2:4])
    day = int(digits[4:6])
    serial = int(digits[6:9])
    check = int(digits[9:11])

    # The serial counts people born on the same day: 001-997 odd for men, 002-998 even for
    # women, so 000 and 999 are never handed out.
    if serial in (0, 999):
        raise ValueError(f"SSIN serial number {digits[6:9]} is never issued")

    base = int(digits[0:9])
    if check == _mod97_check(base):
        century = 1900
    elif check == _mod97_check(_Y2K_CHECK_OFFSET + base):
        # The 2000 form is only meaningful when that birth year has already begun; otherwise
        # the check digits merely collide by chance.
        if today is None:
            today = date.today()
        if 2000 + yy > today.year:
            raise ValueError(
                f"SSIN check digits only fit a birth year of {2000 + yy}, which is in the future"
            )
        century = 2000
    else:
        raise ValueError("SSIN check digits do not match the rest of the number")

    if raw_month <= 12:
        bis = False
        month = raw_month
    elif _BIS_SEX_UNKNOWN_OFFSET <= raw_month <= _BIS_SEX_UNKNOWN_OFFSET + 12:
        bis = True
        month = raw_month - _BIS_SEX_UNKNOWN_OFFSET
    elif _BIS_SEX_KNOWN_OFFSET <= raw_month <= _BIS_SEX_KNOWN_OFFSET + 12:
        bis = True
        month = raw_month - _BIS_SEX_KNOWN_OFFSET
    else:
        raise ValueError(
            f"SSIN month {digits[2:4]} is impossible (expected 00-12, or 20-32 / 40-52 for a BIS "
            "number)"
        )

    year = century + yy
    if month == 0:
        # Unknown month. The day is then either unknown too or a counter used when a date ran
        # out of serials; it cannot be checked against a month, but it is still a day number.
        if day > 31:
            raise ValueError(f"SSIN day {digits[4:6]} is impossible")
        birth_month: int | None = None
        birth_day: int | None = None
    else:
        birth_month = month
        days_in_month = calendar.monthrange(year, month)[1]
        if day > days_in_month:
            raise ValueError(
                f"SSIN encodes an impossible birth date: {year}-{month:02d} has no day {day}"
            )
        birth_day = day or None

    sex: Literal["M", "F"] | None = "M" if serial % 2 else "F"
    if bis and raw_month < _BIS_SEX_KNOWN_OFFSET:
        # The serial's parity carries no meaning when the sex was unknown at issue.
        sex = None

    return _SsinParts(
        digits=digits,
        birth_year=year,
        birth_month=birth_month,
        birth_day=birth_day,
        bis=bis,
        sex=sex,
    )


def normalize_ssin(s: str, *, today: date | None = None) -> str:
    """Validate an SSIN and return its 11 digits.

    Accepts the usual written forms such as ``93.05.18-223.61`` or ``930518 223 61``. Both
    National Register and BIS numbers are accepted. ``today`` decides whether the check digits of
    people born in 2000 or later may apply (the birth year must not lie in the future); it
    defaults to the system date.

    Raises ``ValueError`` whose message says why the input is not a valid SSIN. The message
    never repeats the number itself, so it is safe to log.
    """
    return _parse_ssin(s, today).digits


def is_valid_ssin(s: str, *, today: date | None = None) -> bool:
    """Tell whether ``s`` is a valid SSIN; see ``normalize_ssin`` for the accepted forms."""
    try:
        _parse_ssin(s, today)
    except ValueError:
        return False
    return True


def is_bis_number(ssin: str, *, today: date | None = None) -> bool:
    """Tell whether ``ssin`` is a valid BIS number (month raised by 20 or 40).

    Returns ``False`` for a valid National Register number and for anything that is not a valid
    SSIN at all.
    """
    try:
        return _parse_ssin(ssin, today).bis
    except ValueError:
        return False


def ssin_birth_date(ssin: str, *, today: date | None = None) -> date | None:
    """Return the birth date encoded in a valid SSIN, or ``None`` if the month or day is unknown.

    Raises ``ValueError`` if ``ssin`` is not a valid SSIN, since the century (and therefore the
    date) cannot be told otherwise.
    """
    parts = _parse_ssin(ssin, today)
    if parts.birth_month is None or parts.birth_day is None:
        return None
    return date(parts.birth_year, parts.birth_month, parts.birth_day)


def ssin_sex(ssin: str, *, today: date | None = None) -> Literal["M", "F"] | None:
    """Return the sex encoded in a valid SSIN: odd serial ``"M"``, even serial ``"F"``.

    Returns ``None`` for BIS numbers issued while the sex was unknown (month raised by 20).
    Raises ``ValueError`` if ``ssin`` is not a valid SSIN.
    """
    return _parse_ssin(ssin, today).sex


# --------------------------------------------------------------------------------------------
# Enterprise number (KBO / BCE)
# --------------------------------------------------------------------------------------------


def normalize_enterprise_number(s: str) -> str:
    """Validate a Belgian enterprise number and return its 10 digits.

    Accepts dots, dashes and spaces between groups and a ``BE`` VAT prefix in any case, e.g.
    ``BE 0123.456.749``. Old 9-digit numbers get the leading ``0`` they have since the switch
    to 10 digits. The number must start with 0 or 1 and its last two digits must equal
    97 - (first eight digits mod 97).

    Raises ``ValueError`` with the reason when the input is not a valid enterprise number.
    """
    compact = s.strip()
    if compact[:2].upper() == "BE":
        compact = compact[2:]
    digits = _strip_separators(compact, ".-")
    if not digits:
        raise ValueError("enterprise number is empty")
    if not _is_ascii_digits(digits):
        raise ValueError(
            "enterprise number must contain only digits (an optional BE prefix, dots, dashes "
            "and spaces are allowed)"
        )
    if len(digits) == 9:
        digits = "0" + digits
    if len(digits) != 10:
        raise ValueError(
            f"enterprise number must have 10 digits (or 9 in the old format), got {len(digits)}"
        )
    if digits[0] not in "01":
        raise ValueError(f"enterprise number must start with 0 or 1, not {digits[0]}")
    if int(digits[8:10]) != _mod97_check(int(digits[0:8])):
        raise ValueError("enterprise number check digits do not match the rest of the number")
    return digits


def is_valid_enterprise_number(s: str) -> bool:
    """Tell whether ``s`` is a valid enterprise number in any accepted written form."""
    try:
        normalize_enterprise_number(s)
    except ValueError:
        return False
    return True


def format_enterprise_number(digits: str) -> str:
    """Return the official display form ``0123.456.749`` of an enterprise number.

    The input is validated and normalized first, so any accepted written form works; raises
    ``ValueError`` if it is not a valid enterprise number.
    """
    n = normalize_enterprise_number(digits)
    return f"{n[0:4]}.{n[4:7]}.{n[7:10]}"


# --------------------------------------------------------------------------------------------
# NSSO (RSZ / ONSS) registration number
# --------------------------------------------------------------------------------------------


def normalize_nsso_number(s: str) -> str:
    """Normalize an employer's NSSO registration number to its digits, without leading zeros.

    Accepts 1 to 10 digits with dots, dashes, slashes and spaces between groups. Leading zeros
    are dropped: the Dimona REST interface carries the number as a JSON number
    (``employerId``), so ``"0197412345"`` written as text and ``197412345`` sent as a number
    are one employer, and must be one identity wherever the system compares employers. No
    check digits are verified: the NSSO does not publish a checksum rule that holds for all
    registration numbers in use, and rejecting a real employer would be worse than accepting
    a typo that the registry lookup will catch anyway.

    Raises ``ValueError`` when the input is empty, zero, contains other characters or is too
    long.
    """
    digits = _strip_separators(s, ".-/")
    if not digits:
        raise ValueError("NSSO number is empty")
    if not _is_ascii_digits(digits):
        raise ValueError(
            "NSSO number must contain only digits (dots, dashes, slashes and spaces are allowed)"
        )
    if len(digits) > 10:
        raise ValueError(f"NSSO number must have at most 10 digits, got {len(digits)}")
    significant = digits.lstrip("0")
    if not significant:
        raise ValueError("NSSO number cannot be zero: no employer is registered under it")
    return significant


def nsso_employer_id(nsso_number: str) -> str:
    """The employer id of an employer known only by its NSSO number: ``NSSO`` and the
    normalized digits, so it can never collide with a ten-digit enterprise number."""
    return f"NSSO{normalize_nsso_number(nsso_number)}"


# --------------------------------------------------------------------------------------------
# pydantic types
# --------------------------------------------------------------------------------------------


def _ssin_validator(value: str) -> str:
    return normalize_ssin(value)


# The JSON schemas describe the normalized form, which is what the service emits. Input with
# separators is tolerated on top of that, so a client that follows the schema is always
# understood.
Ssin = Annotated[
    str,
    AfterValidator(_ssin_validator),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^[0-9]{11}$",
            "description": "Belgian social security identification number (SSIN/INSZ/NISS): "
            "National Register or BIS number, 11 digits.",
        }
    ),
]
"""An SSIN, validated and normalized to 11 digits."""

EnterpriseNumber = Annotated[
    str,
    AfterValidator(normalize_enterprise_number),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^[01][0-9]{9}$",
            "description": "Belgian enterprise number (KBO/BCE), 10 digits.",
        }
    ),
]
"""A Belgian enterprise number, validated and normalized to 10 digits."""

NssoNumber = Annotated[
    str,
    AfterValidator(normalize_nsso_number),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^[0-9]{1,10}$",
            "description": "Employer registration number at the NSSO (RSZ/ONSS), 1-10 digits.",
        }
    ),
]
"""An NSSO registration number, normalized to its digits without leading zeros."""
