"""Tests for Belgian identifier validation, with python-stdnum as an independent oracle."""

from __future__ import annotations

from calendar import monthrange
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, ValidationError
from stdnum.be import bis as stdnum_bis
from stdnum.be import nn as stdnum_nn
from stdnum.be import vat as stdnum_vat

from schemas.identifiers import (
    EnterpriseNumber,
    NssoNumber,
    Ssin,
    format_enterprise_number,
    is_bis_number,
    is_valid_enterprise_number,
    is_valid_ssin,
    normalize_enterprise_number,
    normalize_nsso_number,
    normalize_ssin,
    ssin_birth_date,
    ssin_sex,
)

TODAY = date(2026, 11, 26)


def with_check(first9: str, *, born_2000s: bool = False) -> str:
    """Append SSIN check digits, computed independently of the module under test."""
    base = int(("2" if born_2000s else "") + first9)
    return f"{first9}{97 - base % 97:02d}"


def test_with_check_matches_worked_example() -> None:
    assert with_check("930518223") == "93051822361"


# --- SSIN: valid numbers --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ssin", "birth", "sex"),
    [
        ("93051822361", date(1993, 5, 18), "M"),  # the worked example: 97 - 36 = 61
        ("85073003328", date(1985, 7, 30), "M"),  # stdnum's documented example
        ("01031500108", date(2001, 3, 15), "M"),  # born 2001: check uses the 2-prefix
        ("01031500207", date(2001, 3, 15), "F"),
        ("05122401763", date(2005, 12, 24), "M"),
        ("00022900145", date(2000, 2, 29), "M"),  # 2000 was a leap year
        ("96022900192", date(1996, 2, 29), "M"),
    ],
)
def test_valid_national_numbers(ssin: str, birth: date, sex: str) -> None:
    assert is_valid_ssin(ssin, today=TODAY)
    assert normalize_ssin(ssin, today=TODAY) == ssin
    assert not is_bis_number(ssin, today=TODAY)
    assert ssin_birth_date(ssin, today=TODAY) == birth
    assert ssin_sex(ssin, today=TODAY) == sex


def test_2000s_number_is_built_with_the_2_prefix() -> None:
    ssin = with_check("010315001", born_2000s=True)
    assert ssin == "01031500108"
    # The same digits with the 1900s check are a different, also valid, person born in 1901.
    old = with_check("010315001")
    assert old != ssin
    assert ssin_birth_date(old, today=TODAY) == date(1901, 3, 15)


@pytest.mark.parametrize(
    ("ssin", "birth", "sex"),
    [
        ("93451822350", date(1993, 5, 18), "M"),  # month + 40: sex known
        ("93451822449", date(1993, 5, 18), "F"),
        ("93251822307", date(1993, 5, 18), None),  # month + 20: sex unknown
        ("05252401757", date(2005, 5, 24), None),  # born 2005: 2-prefix check
        ("05452401802", date(2005, 5, 24), "F"),
        ("93200022327", None, None),  # BIS with unknown month (20)
        ("93400022469", None, "F"),  # BIS with unknown month (40)
        ("98472899765", date(1998, 7, 28), "M"),  # stdnum's documented BIS example
    ],
)
def test_valid_bis_numbers(ssin: str, birth: date | None, sex: str | None) -> None:
    assert is_valid_ssin(ssin, today=TODAY)
    assert is_bis_number(ssin, today=TODAY)
    assert ssin_birth_date(ssin, today=TODAY) == birth
    assert ssin_sex(ssin, today=TODAY) == sex


@pytest.mark.parametrize(
    "ssin",
    [
        "93001822326",  # month unknown
        "93050022319",  # day unknown
        "93000022381",  # month and day unknown
        with_check("930001223"),  # month unknown, day digits used as an overflow counter
        with_check("000001001"),  # the fictitious "1900-00-01" of a fully unknown date
    ],
)
def test_unknown_birth_date_parts_are_accepted(ssin: str) -> None:
    assert is_valid_ssin(ssin, today=TODAY)
    assert ssin_birth_date(ssin, today=TODAY) is None
    assert ssin_sex(ssin, today=TODAY) == "M"


@pytest.mark.parametrize(
    "written",
    ["93.05.18-223.61", "930518 223 61", "93 05 18 223 61", "930518-223-61", " 93051822361\n"],
)
def test_ssin_punctuation_is_accepted(written: str) -> None:
    assert is_valid_ssin(written, today=TODAY)
    assert normalize_ssin(written, today=TODAY) == "93051822361"
    assert ssin_sex(written, today=TODAY) == "M"


def test_ssin_today_defaults_to_system_date() -> None:
    assert is_valid_ssin("93051822361")
    assert is_valid_ssin("01031500108")
    # Born in 2099 by the 2000-form check digits: only valid once that year has come.
    assert is_valid_ssin(with_check("990101001", born_2000s=True)) == (date.today().year >= 2099)


# --- SSIN: invalid numbers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ssin", "reason"),
    [
        ("", "empty"),
        ("9305182236", "11 digits, got 10"),
        ("930518223610", "11 digits, got 12"),
        ("93O51822361", "only digits"),  # letter O for zero
        ("93/05/18 223 61", "only digits"),
        ("".join(chr(0xFF10 + int(c)) for c in "93051822361"), "only digits"),  # full-width
        ("93051822362", "check digits"),
        ("93051822360", "check digits"),
        (with_check("931318223"), "month 13"),
        (with_check("933318223"), "month 33"),
        (with_check("935318223"), "month 53"),
        (with_check("930532223"), "no day 32"),
        (with_check("930231223"), "no day 31"),
        (with_check("970229001"), "no day 29"),  # 1997 was no leap year
        (with_check("000229001"), "no day 29"),  # 1900 was no leap year either
        (with_check("930045001"), "day 45"),
        (with_check("930518000"), "serial number 000"),
        (with_check("930518999"), "serial number 999"),
    ],
)
def test_invalid_ssins(ssin: str, reason: str) -> None:
    assert not is_valid_ssin(ssin, today=TODAY)
    assert not is_bis_number(ssin, today=TODAY)
    with pytest.raises(ValueError, match=reason):
        normalize_ssin(ssin, today=TODAY)
    with pytest.raises(ValueError):
        ssin_birth_date(ssin, today=TODAY)
    with pytest.raises(ValueError):
        ssin_sex(ssin, today=TODAY)


def test_error_messages_do_not_repeat_the_number() -> None:
    for bad in ["93051822362", with_check("931318223"), with_check("930518000")]:
        with pytest.raises(ValueError) as excinfo:
            normalize_ssin(bad, today=TODAY)
        assert bad not in str(excinfo.value)


def test_2000_form_only_for_birth_years_not_in_the_future() -> None:
    born_2027 = with_check("270101001", born_2000s=True)
    assert not is_valid_ssin(born_2027, today=date(2026, 12, 31))
    with pytest.raises(ValueError, match="2027, which is in the future"):
        normalize_ssin(born_2027, today=date(2026, 12, 31))
    assert is_valid_ssin(born_2027, today=date(2027, 1, 1))
    assert ssin_birth_date(born_2027, today=date(2027, 1, 1)) == date(2027, 1, 1)
    # The 1900s form of the same digits (someone born in 1927) is valid whatever today is.
    born_1927 = with_check("270101001")
    assert is_valid_ssin(born_1927, today=date(2026, 12, 31))
    assert ssin_birth_date(born_1927, today=date(2026, 12, 31)) == date(1927, 1, 1)


def test_birth_year_equal_to_current_year_is_allowed() -> None:
    born_2026 = with_check("260101001", born_2000s=True)
    assert is_valid_ssin(born_2026, today=date(2026, 1, 1))
    assert not is_valid_ssin(born_2026, today=date(2025, 12, 31))


# --- SSIN: stdnum as oracle -----------------------------------------------------------------

_digit = st.sampled_from("0123456789")


@st.composite
def ssin_candidates(draw: st.DrawFn) -> str:
    """11-digit strings, a good share of them with correct check digits of either form.

    Purely random strings almost never pass the mod-97 check, which would leave the date and
    serial rules untested; so the check digits are often computed instead of drawn.
    """
    yy = draw(st.integers(0, 99))
    # Bias months and days towards the interesting ranges, including impossible ones.
    month = draw(st.one_of(st.integers(0, 99), st.sampled_from([0, 2, 12, 13, 20, 32, 40, 52])))
    day = draw(st.one_of(st.integers(0, 99), st.sampled_from([0, 28, 29, 30, 31, 32])))
    serial = draw(st.one_of(st.integers(0, 999), st.sampled_from([0, 1, 2, 997, 998, 999])))
    first9 = f"{yy:02d}{month:02d}{day:02d}{serial:03d}"
    how = draw(st.sampled_from(["1900", "2000", "random"]))
    if how == "random":
        return first9 + "".join(draw(st.lists(_digit, min_size=2, max_size=2)))
    return with_check(first9, born_2000s=how == "2000")


def _known_stdnum_difference(ssin: str) -> bool:
    """Inputs where our stricter rules knowingly reject what stdnum 2.2 accepts.

    * Serial 000 and 999 are never issued (men 001-997, women 002-998); stdnum does not check.
    * A day beyond the month's length (31 February, 29 February of a common year, day 45):
      stdnum reads it as "day unknown", we reject it as an impossible date. With an unknown
      month we still require a day of 00-31.
    """
    serial = int(ssin[6:9])
    if serial in (0, 999):
        return True
    day = int(ssin[4:6])
    month = int(ssin[2:4]) % 20
    if month == 0:
        return day > 31
    if not 1 <= month <= 12:
        return False
    # The century (and with it 29 February) follows from which check form matched.
    century = 1900 if ssin[9:11] == f"{97 - int(ssin[:9]) % 97:02d}" else 2000
    year = century + int(ssin[:2])
    return day > monthrange(year, month)[1]


@settings(max_examples=2000)
@given(ssin_candidates())
def test_ssin_agrees_with_stdnum(ssin: str) -> None:
    # stdnum reads the system clock for the 2000-form rule, so compare against the same date.
    ours = is_valid_ssin(ssin, today=date.today())
    theirs = stdnum_nn.is_valid(ssin) or stdnum_bis.is_valid(ssin)
    if ours:
        # We never accept anything stdnum rejects.
        assert theirs
        assert is_bis_number(ssin) == stdnum_bis.is_valid(ssin)
        module = stdnum_bis if is_bis_number(ssin) else stdnum_nn
        assert ssin_birth_date(ssin) == module.get_birth_date(ssin)
        expected_sex = module.get_gender(ssin)
        assert ssin_sex(ssin) == expected_sex
    elif theirs:
        assert _known_stdnum_difference(ssin), ssin


# --- Enterprise numbers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "written",
    [
        "0123456749",
        "0123.456.749",
        "BE 0123 456 749",
        "BE0123456749",
        "be0123.456.749",
        "Be 0123-456-749",
        "123456749",  # old 9-digit form
        "BE 123.456.749",
        "  0123 456 749  ",
    ],
)
def test_valid_enterprise_numbers(written: str) -> None:
    assert is_valid_enterprise_number(written)
    assert normalize_enterprise_number(written) == "0123456749"
    assert format_enterprise_number(written) == "0123.456.749"


def test_enterprise_numbers_starting_with_1() -> None:
    first8 = "12345678"
    number = f"{first8}{97 - int(first8) % 97:02d}"
    assert number == "1234567894"
    assert normalize_enterprise_number(number) == number
    assert format_enterprise_number(number) == "1234.567.894"


def test_check_digits_are_always_between_01_and_97() -> None:
    first8 = f"{97 * 127267:08d}"
    assert is_valid_enterprise_number(first8 + "97")
    assert not is_valid_enterprise_number(first8 + "00")  # stdnum accepts this one
    assert is_valid_enterprise_number("0409495002")
    assert not is_valid_enterprise_number("0409495099")  # 02 + 97; stdnum accepts this one


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("", "empty"),
        ("BE", "empty"),
        ("0123456748", "check digits"),
        ("0123456750", "check digits"),
        ("2123456749", "start with 0 or 1"),
        ("012345674", "check digits"),  # old 9-digit form, padded to 0012345674: bad check
        ("01234567", "got 8"),
        ("01234567490", "got 11"),
        ("0123 456 74X", "only digits"),
        ("NL0123456749", "only digits"),
        ("0123/456/749", "only digits"),
    ],
)
def test_invalid_enterprise_numbers(written: str, reason: str) -> None:
    assert not is_valid_enterprise_number(written)
    with pytest.raises(ValueError, match=reason):
        normalize_enterprise_number(written)
    with pytest.raises(ValueError):
        format_enterprise_number(written)


@st.composite
def enterprise_candidates(draw: st.DrawFn) -> str:
    first8 = "".join(draw(st.lists(_digit, min_size=8, max_size=8)))
    how = draw(st.sampled_from(["valid", "plus-97", "random"]))
    check = 97 - int(first8) % 97
    if how == "valid":
        number = f"{first8}{check:02d}"
    elif how == "plus-97":
        # Check digits off by 97 where that still fits in two digits (00, 98, 99).
        base = max(int(first8) // 97 - 1, 0) * 97 + draw(st.sampled_from([0, 95, 96]))
        off_by_97 = {97: 0, 1: 98, 2: 99}[97 - base % 97]
        number = f"{base:08d}{off_by_97:02d}"
    else:
        number = first8 + "".join(draw(st.lists(_digit, min_size=2, max_size=2)))
    if draw(st.booleans()) and number[0] == "0":
        number = number[1:]  # the old 9-digit form
    return number


@settings(max_examples=1000)
@given(enterprise_candidates())
def test_enterprise_number_agrees_with_stdnum(number: str) -> None:
    ours = is_valid_enterprise_number(number)
    theirs = stdnum_vat.is_valid(number)
    # stdnum only tests "(first8 + check) % 97 == 0", so it also takes check digits outside
    # 01-97 that are congruent to the right ones: 00 instead of 97, 98 instead of 01 and 99
    # instead of 02. The published rule, 97 - (first8 mod 97), only ever gives 01-97.
    # (All zeros is rejected by both, stdnum because it refuses the number 0.)
    padded = number.zfill(10)
    check = int(padded[8:])
    stdnum_only = (
        padded[0] in "01"
        and check in (0, 98, 99)
        and (int(padded[:8]) + check) % 97 == 0
        and int(padded) > 0
    )
    if stdnum_only:
        assert theirs
        assert not ours
    else:
        assert ours == theirs
    if ours:
        assert normalize_enterprise_number(number) == stdnum_vat.compact(number)


# --- NSSO numbers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "digits"),
    [
        ("1", "1"),
        # Leading zeros go: the Dimona REST interface sends the number as a JSON number.
        ("0123456789", "123456789"),
        ("012345-67", "1234567"),
        ("0197412345", "197412345"),
        ("123.4567.89", "123456789"),
        ("1234567 / 89", "123456789"),
    ],
)
def test_nsso_numbers(written: str, digits: str) -> None:
    assert normalize_nsso_number(written) == digits


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("", "empty"),
        (" - ", "empty"),
        ("12345678901", "at most 10"),
        ("12A45", "only digits"),
        ("000", "cannot be zero"),
    ],
)
def test_invalid_nsso_numbers(written: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        normalize_nsso_number(written)


# --- pydantic types -------------------------------------------------------------------------


class Employment(BaseModel):
    student: Ssin
    employer: EnterpriseNumber
    nsso: NssoNumber | None = None


def test_pydantic_types_normalize() -> None:
    model = Employment(student="93.05.18-223.61", employer="BE 0123 456 749", nsso="012345-67")
    assert model.student == "93051822361"
    assert model.employer == "0123456749"
    assert model.nsso == "1234567"
    assert Employment.model_validate_json(model.model_dump_json()) == model


def test_pydantic_types_report_the_reason() -> None:
    with pytest.raises(ValidationError) as excinfo:
        Employment(student="93051822362", employer="2123456749")
    errors = {str(e["loc"][0]): e["msg"] for e in excinfo.value.errors()}
    assert "check digits do not match" in errors["student"]
    assert "start with 0 or 1" in errors["employer"]


def test_pydantic_types_reject_non_strings() -> None:
    # An integer would already have lost any leading zero, so it is not silently converted.
    with pytest.raises(ValidationError):
        TypeAdapter(Ssin).validate_python(93051822361)


def test_json_schema_export() -> None:
    schema = Employment.model_json_schema()
    props = schema["properties"]
    assert props["student"]["pattern"] == "^[0-9]{11}$"
    assert props["student"]["type"] == "string"
    assert props["employer"]["pattern"] == "^[01][0-9]{9}$"
    nsso_patterns = [s.get("pattern") for s in props["nsso"]["anyOf"]]
    assert "^[0-9]{1,10}$" in nsso_patterns
    serialized = Employment.model_json_schema(mode="serialization")["properties"]
    assert serialized["student"]["pattern"] == "^[0-9]{11}$"
